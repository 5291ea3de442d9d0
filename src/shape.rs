//! Parameter structs for the spatial ops, each owning its shape math.

use crate::error::{Error, Result};

/// Output size of a sliding window: `⌊(len + 2·pad − kernel)/stride⌋ + 1`.
pub fn window_out(len: usize, kernel: usize, stride: usize, pad: usize) -> usize {
    (len + 2 * pad - kernel) / stride + 1
}

/// How a convolution pads its input (zeros), per spatial axis `[d, h, w]`.
///
/// Axes an op does not have are ignored (a 2-D convolution ignores `d`, a 1-D one `d` and `h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// `begin` zeros before and `end` zeros after the input along each axis
    /// (`valid` is all zeros; PyTorch's symmetric `padding=p` is `begin = end = p`).
    Explicit { begin: [usize; 3], end: [usize; 3] },
    /// Keras/TensorFlow `same`: the output has `⌈len/s⌉` positions; the total padding
    /// `max((out−1)·s + (k−1)·dil + 1 − len, 0)` is split with the odd zero at the end
    /// (bottom/right), so stride 2 on an even length pads asymmetrically.
    Same,
    /// The kernel element `anchor` (the seed article's "central element") sits on the
    /// output position: `begin = anchor·dil`, `end = (k−1−anchor)·dil`, so the output has
    /// `⌈len/s⌉` positions and the window is shifted, not just padded evenly.
    ///
    /// With [`ConvParams::flipped`] (true convolution) the kernel is flipped about its
    /// anchor, `y[i] = Σ_t w[t]·x[i·s + (anchor − t)·dil]`, so the padding mirrors:
    /// `begin = (k−1−anchor)·dil`, `end = anchor·dil`. Without the flip,
    /// `y[i] = Σ_t w[t]·x[i·s + (t − anchor)·dil]`. Pooling windows follow the same rule.
    Anchor([usize; 3]),
}

/// Convolution parameters for 1-, 2- and 3-D convolutions, per spatial axis `[d, h, w]`.
///
/// `y[n,o,z,i,j] = b[o] + Σ_{c∈group(o)} Σ_e Σ_a Σ_b w[o,c,e,a,b]·x[n,c, z·sd+e·dd−pd, i·sh+a·dh−ph, j·sw+b·dw−pw]`
///
/// (cross-correlation, the default), where `p` is the padding before each axis. With
/// [`ConvParams::flipped`] the kernel is used rotated by 180° (true convolution):
/// `w[o,c,kd−1−e,kh−1−a,kw−1−b]`. With `groups = G` the `C` input and `O` output channels
/// are split into `G` groups; output channel `o` sees only the `C/G` inputs of its group and
/// the weight is `[O, C/G, kd, kh, kw]` (`G = C`: depthwise).
///
/// The builder methods set every axis; the axes an op does not have are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    /// Stride `[sd, sh, sw]` (default 1).
    pub stride: [usize; 3],
    /// Dilation `[dd, dh, dw]`: spacing between kernel taps (default 1).
    pub dilation: [usize; 3],
    /// Zero padding (default none).
    pub padding: Padding,
    /// Channel groups (default 1).
    pub groups: usize,
    /// True convolution (kernel flipped) instead of cross-correlation (default false).
    pub flip: bool,
}

/// 2-D convolution parameters as PyTorch's `Conv2d` takes them: stride `[sh, sw]` and
/// symmetric zero padding `[ph, pw]` (default stride 1, no padding). Every 2-D convolution
/// also takes a [`ConvParams`] (dilation, groups, Keras `same`, per-side padding, flip):
/// a `Conv2dParams` converts into one.
///
/// ```
/// use wgcnn::{Conv2dParams, ConvParams};
/// let p = Conv2dParams { stride: [2, 2], ..Default::default() };
/// assert_eq!(ConvParams::from(p), ConvParams::new2([2, 2], [0, 0]));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: [1, 1],
            padding: [0, 0],
        }
    }
}

impl Conv2dParams {
    /// The same stride and symmetric padding on both axes.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams {
            stride: [stride; 2],
            padding: [padding; 2],
        }
    }

    /// Stride `[sh, sw]` and symmetric padding `[ph, pw]`.
    pub fn new2(stride: [usize; 2], padding: [usize; 2]) -> Self {
        Conv2dParams { stride, padding }
    }

    /// Checks `x [N,C,H,W]` against `w [O,C,kh,kw]` and returns the output shape
    /// `[N,O,oh,ow]` (see [`ConvParams::out_shape`]).
    pub fn out_shape(&self, op: &str, x: [usize; 4], w: [usize; 4]) -> Result<[usize; 4]> {
        ConvParams::from(*self).out_shape(op, x, w)
    }

    /// The resolved geometry (see [`ConvParams::dims2`]).
    pub fn dims2(&self, op: &str, x: [usize; 4], w: [usize; 4]) -> Result<ConvDims> {
        ConvParams::from(*self).dims2(op, x, w)
    }
}

impl From<Conv2dParams> for ConvParams {
    fn from(p: Conv2dParams) -> Self {
        ConvParams::new2(p.stride, p.padding)
    }
}

impl Default for ConvParams {
    fn default() -> Self {
        ConvParams {
            stride: [1; 3],
            dilation: [1; 3],
            padding: Padding::Explicit {
                begin: [0; 3],
                end: [0; 3],
            },
            groups: 1,
            flip: false,
        }
    }
}

impl ConvParams {
    /// Stride `stride` and symmetric zero padding `padding` on every axis.
    pub fn new(stride: usize, padding: usize) -> Self {
        ConvParams::default().stride(stride).padding(padding)
    }
    /// A 2-D convolution's stride `[sh, sw]` and symmetric padding `[ph, pw]` per axis.
    pub fn new2(stride: [usize; 2], padding: [usize; 2]) -> Self {
        let mut p = ConvParams::default().padding(0);
        p.stride = [1, stride[0], stride[1]];
        p.padding = Padding::Explicit {
            begin: [0, padding[0], padding[1]],
            end: [0, padding[0], padding[1]],
        };
        p
    }
    /// The same stride on every axis.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s; 3];
        self
    }
    /// Symmetric zero padding `p` on every axis (PyTorch `padding=p`).
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = Padding::Explicit {
            begin: [p; 3],
            end: [p; 3],
        };
        self
    }
    /// No padding (Keras `valid`).
    pub fn valid(self) -> Self {
        self.padding(0)
    }
    /// Keras/TensorFlow `same` padding (asymmetric when the total is odd).
    pub fn same(mut self) -> Self {
        self.padding = Padding::Same;
        self
    }
    /// Explicit per-side padding: `begin` and `end` zeros per axis `[d, h, w]`.
    pub fn pad_sides(mut self, begin: [usize; 3], end: [usize; 3]) -> Self {
        self.padding = Padding::Explicit { begin, end };
        self
    }
    /// Kernel anchor per axis `[d, h, w]` (see [`Padding::Anchor`]).
    pub fn anchor(mut self, anchor: [usize; 3]) -> Self {
        self.padding = Padding::Anchor(anchor);
        self
    }
    /// The same dilation on every axis.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d; 3];
        self
    }
    /// Channel groups (`groups = in_channels`: depthwise).
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// True convolution: the kernel is rotated by 180° before the sliding dot products.
    pub fn flipped(mut self, flip: bool) -> Self {
        self.flip = flip;
        self
    }

    /// These parameters with the first `3 − dims` axes made neutral (stride, dilation 1,
    /// no padding, anchor 0): a `dims`-D convolution ignores them.
    pub fn for_dims(mut self, dims: usize) -> Self {
        for a in 0..3 - dims {
            self.stride[a] = 1;
            self.dilation[a] = 1;
            match &mut self.padding {
                Padding::Explicit { begin, end } => {
                    begin[a] = 0;
                    end[a] = 0;
                }
                Padding::Anchor(anchor) => anchor[a] = 0,
                Padding::Same => {}
            }
        }
        self
    }

    /// Checks a 2-D convolution of `x [N,C,H,W]` with `w [O,C/groups,kh,kw]` and returns the
    /// output shape `[N,O,oh,ow]`.
    pub fn out_shape(&self, op: &str, x: [usize; 4], w: [usize; 4]) -> Result<[usize; 4]> {
        let d = self.dims2(op, x, w)?;
        Ok([d.y[0], d.y[1], d.y[3], d.y[4]])
    }

    /// [`ConvParams::dims`] for a 2-D convolution (`x [N,C,H,W]`, `w [O,C/groups,kh,kw]`).
    pub fn dims2(&self, op: &str, x: [usize; 4], w: [usize; 4]) -> Result<ConvDims> {
        self.for_dims(2)
            .dims(op, [x[0], x[1], 1, x[2], x[3]], [w[0], w[1], 1, w[2], w[3]])
    }

    /// Checks `x [N,C,D,H,W]` against `w [O,C/groups,kd,kh,kw]` and resolves the padding:
    /// the geometry every pass of the convolution uses. Messages show the `x`, `w` and
    /// kernel shapes with the spatial axes of size 1 in front of the last non-trivial
    /// one dropped.
    pub fn dims(&self, op: &str, x: [usize; 5], w: [usize; 5]) -> Result<ConvDims> {
        // the number of spatial axes to show: 2 unless it is a genuine 3-D (or 1-D) op
        let sp = if x[2] != 1 || w[2] != 1 { 3 } else { 2 };
        self.dims_shown(op, x, w, sp)
    }

    /// [`ConvParams::dims`], showing `sp` spatial axes in messages.
    pub(crate) fn dims_shown(
        &self,
        op: &str,
        x: [usize; 5],
        w: [usize; 5],
        sp: usize,
    ) -> Result<ConvDims> {
        let [n, c, ..] = x;
        let [o, wc, ..] = w;
        let show = |a: &[usize; 5]| {
            let mut v = a[..2].to_vec();
            v.extend_from_slice(&a[5 - sp..]);
            format!("{v:?}")
        };
        let by = |v: &[usize]| {
            v[3 - sp..]
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join("x")
        };
        if x.contains(&0) || w.contains(&0) {
            return Err(Error::shape(
                op,
                format!("zero-sized dimension: x {}, w {}", show(&x), show(&w)),
            ));
        }
        let g = self.groups;
        if g == 0 {
            return Err(Error::invalid(op, "groups must be at least 1"));
        }
        if c % g != 0 || o % g != 0 {
            return Err(Error::invalid(
                op,
                format!("{c} input and {o} output channels must both divide into {g} groups"),
            ));
        }
        if c / g != wc {
            let per = if g > 1 {
                format!(" ({} per group of {g})", c / g)
            } else {
                String::new()
            };
            return Err(Error::shape(
                op,
                format!(
                    "input has {c} channels{per} but the weight expects {wc} (x {}, w {})",
                    show(&x),
                    show(&w)
                ),
            ));
        }
        if self.stride.contains(&0) {
            return Err(Error::invalid(op, "stride must be at least 1"));
        }
        if self.dilation.contains(&0) {
            return Err(Error::invalid(op, "dilation must be at least 1"));
        }
        let kernel = [w[2], w[3], w[4]];
        let mut pad = [0usize; 3];
        let mut padded = [0usize; 3];
        let mut ext = [0usize; 3];
        for a in 0..3 {
            (ext[a], pad[a], padded[a]) = self.resolve_axis(op, a, x[a + 2], kernel, &by)?;
        }
        if (0..3).any(|a| ext[a] > padded[a]) {
            let dil = if self.dilation[3 - sp..].iter().any(|&d| d > 1) {
                format!(" (dilation {}, extent {})", by(&self.dilation), by(&ext))
            } else {
                String::new()
            };
            return Err(Error::invalid(
                op,
                format!(
                    "kernel {}{dil} is larger than the padded input {}",
                    by(&kernel),
                    by(&padded)
                ),
            ));
        }
        let mut y = [n, o, 0, 0, 0];
        for a in 0..3 {
            y[a + 2] = (padded[a] - ext[a]) / self.stride[a] + 1;
        }
        Ok(ConvDims {
            x,
            w,
            y,
            stride: self.stride,
            dilation: self.dilation,
            pad,
            groups: g,
            flip: self.flip,
        })
    }

    /// Axis `a` of an input of length `len`: the dilated kernel's extent `(k−1)·dil + 1`, the
    /// zeros before it, and the padded length.
    fn resolve_axis(
        &self,
        op: &str,
        a: usize,
        len: usize,
        kernel: [usize; 3],
        by: &dyn Fn(&[usize]) -> String,
    ) -> Result<(usize, usize, usize)> {
        let (k, s, dil) = (kernel[a], self.stride[a], self.dilation[a]);
        let ext = (k - 1)
            .checked_mul(dil)
            .and_then(|e| e.checked_add(1))
            .ok_or_else(|| {
                Error::invalid(op, format!("kernel {k} with dilation {dil} is too large"))
            })?;
        let (begin, end) = match self.padding {
            Padding::Explicit { begin, end } => (begin[a], end[a]),
            Padding::Same => {
                let out = len.div_ceil(s);
                let total = ((out - 1) * s + ext).saturating_sub(len);
                (total / 2, total - total / 2)
            }
            Padding::Anchor(anchor) => {
                if anchor[a] >= k {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "anchor {} lies outside the kernel {}",
                            by(&anchor),
                            by(&kernel)
                        ),
                    ));
                }
                let (before, after) = (anchor[a] * dil, (k - 1 - anchor[a]) * dil);
                // the flipped kernel has its anchor at k−1−a: the padding mirrors
                if self.flip {
                    (after, before)
                } else {
                    (before, after)
                }
            }
        };
        let padded = len
            .checked_add(begin)
            .and_then(|v| v.checked_add(end))
            .ok_or_else(|| {
                Error::invalid(op, format!("padding {:?} is too large", self.padding))
            })?;
        Ok((ext, begin, padded))
    }
}

/// The resolved geometry of one convolution, shared by its three passes (the CPU twins, the
/// GPU uniforms). 2-D convolutions have `D = kd = od = 1`, 1-D ones also `H = kh = oh = 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    /// Input `[N, C, D, H, W]`.
    pub x: [usize; 5],
    /// Weight `[O, C/groups, kd, kh, kw]`.
    pub w: [usize; 5],
    /// Output `[N, O, od, oh, ow]`.
    pub y: [usize; 5],
    pub stride: [usize; 3],
    pub dilation: [usize; 3],
    /// Zeros before each axis (those after only shorten the output).
    pub pad: [usize; 3],
    pub groups: usize,
    pub flip: bool,
}

/// 2-D pooling parameters. Padding counts as `−∞` for max-pooling (PyTorch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window `[kh, kw]` (default 2×2).
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]` (default 2).
    pub stride: [usize; 2],
    /// Padding `[ph, pw]` on both sides, at most half the kernel (default 0).
    pub padding: [usize; 2],
}

impl Default for Pool2dParams {
    fn default() -> Self {
        Pool2dParams {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
        }
    }
}

impl Pool2dParams {
    /// Square window `k`, stride `k`, no padding.
    pub fn new(k: usize) -> Self {
        Pool2dParams {
            kernel: [k, k],
            stride: [k, k],
            padding: [0, 0],
        }
    }

    /// Checks `x [N,C,H,W]` and returns the output shape `[N,C,oh,ow]`.
    pub fn out_shape(&self, op: &str, x: [usize; 4]) -> Result<[usize; 4]> {
        let [n, c, h, w] = x;
        let [kh, kw] = self.kernel;
        if x.contains(&0) || self.kernel.contains(&0) {
            return Err(Error::shape(
                op,
                format!("zero-sized dimension: x {x:?}, kernel {:?}", self.kernel),
            ));
        }
        if self.stride.contains(&0) {
            return Err(Error::invalid(op, "stride must be at least 1"));
        }
        let [ph, pw] = self.padding;
        if ph > kh / 2 || pw > kw / 2 {
            return Err(Error::invalid(
                op,
                format!(
                    "padding {:?} must be at most half the kernel {:?}",
                    self.padding, self.kernel
                ),
            ));
        }
        if kh > h + 2 * ph || kw > w + 2 * pw {
            return Err(Error::invalid(
                op,
                format!(
                    "kernel {kh}x{kw} is larger than the padded input {}x{}",
                    h + 2 * ph,
                    w + 2 * pw
                ),
            ));
        }
        Ok([
            n,
            c,
            window_out(h, kh, self.stride[0], ph),
            window_out(w, kw, self.stride[1], pw),
        ])
    }
}

/// Checks one axis of a pooling window (`len` input elements, window `k`, stride `s`,
/// padding `p` on both sides, at most `k/2`) and returns its output length
/// `⌊(len + 2p − k)/s⌋ + 1`.
fn pool_axis(op: &str, axis: &str, len: usize, k: usize, s: usize, p: usize) -> Result<usize> {
    if len == 0 || k == 0 {
        return Err(Error::shape(
            op,
            format!("zero-sized dimension along {axis}: input {len}, kernel {k}"),
        ));
    }
    if s == 0 {
        return Err(Error::invalid(op, "stride must be at least 1"));
    }
    if p > k / 2 {
        return Err(Error::invalid(
            op,
            format!("padding {p} along {axis} must be at most half the kernel {k}"),
        ));
    }
    if k > len + 2 * p {
        return Err(Error::invalid(
            op,
            format!(
                "kernel {k} along {axis} is larger than the padded input {}",
                len + 2 * p
            ),
        ));
    }
    Ok(window_out(len, k, s, p))
}

/// 1-D pooling parameters (PyTorch `max_pool1d` / `avg_pool1d`, `ceil_mode=False`).
///
/// `y[n,c,i] = max_{a<k} x[n,c, i·s+a−p]` (padding −∞), or the mean with padding counted
/// as 0 and divisor `k` (`count_include_pad=True`). It runs as 2-D pooling of the
/// `[C, 1, L]` view with a `1×k` window ([`Pool1dParams::as_2d`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool1dParams {
    /// Window length.
    pub kernel: usize,
    /// Stride (PyTorch's default: the kernel).
    pub stride: usize,
    /// Padding on both sides, at most half the kernel (default 0).
    pub padding: usize,
}

impl Pool1dParams {
    /// Window `k`, stride `k`, no padding.
    pub fn new(k: usize) -> Self {
        Pool1dParams {
            kernel: k,
            stride: k,
            padding: 0,
        }
    }

    /// Checks `x [N,C,L]` and returns the output shape `[N,C,ol]`,
    /// `ol = ⌊(L + 2p − k)/s⌋ + 1`.
    pub fn out_shape(&self, op: &str, x: [usize; 3]) -> Result<[usize; 3]> {
        let [n, c, l] = x;
        if n == 0 || c == 0 {
            return Err(Error::shape(op, format!("zero-sized dimension: x {x:?}")));
        }
        let ol = pool_axis(op, "L", l, self.kernel, self.stride, self.padding)?;
        Ok([n, c, ol])
    }

    /// The same window on the `[C, 1, L]` view: `1×k`, stride `1×s`, padding `0×p`.
    pub fn as_2d(&self) -> Pool2dParams {
        Pool2dParams {
            kernel: [1, self.kernel],
            stride: [1, self.stride],
            padding: [0, self.padding],
        }
    }
}

/// 3-D pooling parameters (PyTorch `max_pool3d` / `avg_pool3d`, `ceil_mode=False`), per
/// axis `[d, h, w]`.
///
/// `y[n,c,i,j,l] = max_{a<kd, b<kh, e<kw} x[n,c, i·sd+a−pd, j·sh+b−ph, l·sw+e−pw]` (padding
/// −∞; the first maximum in `(d, h, w)` order on ties), or the mean with padding counted as 0
/// and divisor `kd·kh·kw` (`count_include_pad=True`).
///
/// Both are separable and run as two 2-D poolings: over `(h, w)` on the `[C·D, H, W]` view
/// ([`Pool3dParams::hw`]), then over depth on the `[C, D, OH·OW]` view with a `kd×1` window
/// ([`Pool3dParams::depth`]). For max-pooling the two argmaxes compose into the first
/// maximum in `(d, h, w)` order (the earliest depth holding the maximum, and within it the
/// first `(h, w)`), and −∞ padding composes; for the mean, `Σ_d (Σ_hw x)/(kh·kw)/kd` is the
/// mean over the 3-D window with zero padding counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool3dParams {
    /// Window `[kd, kh, kw]`.
    pub kernel: [usize; 3],
    /// Stride `[sd, sh, sw]` (PyTorch's default: the kernel).
    pub stride: [usize; 3],
    /// Padding `[pd, ph, pw]` on both sides, each at most half its kernel (default 0).
    pub padding: [usize; 3],
}

impl Pool3dParams {
    /// Cubic window `k`, stride `k`, no padding.
    pub fn new(k: usize) -> Self {
        Pool3dParams {
            kernel: [k; 3],
            stride: [k; 3],
            padding: [0; 3],
        }
    }

    /// Checks `x [N,C,D,H,W]` and returns the output shape `[N,C,od,oh,ow]`.
    pub fn out_shape(&self, op: &str, x: [usize; 5]) -> Result<[usize; 5]> {
        let [n, c, d, h, w] = x;
        if n == 0 || c == 0 {
            return Err(Error::shape(op, format!("zero-sized dimension: x {x:?}")));
        }
        let mut out = [n, c, 0, 0, 0];
        for (a, (axis, len)) in [("D", d), ("H", h), ("W", w)].into_iter().enumerate() {
            out[2 + a] = pool_axis(
                op,
                axis,
                len,
                self.kernel[a],
                self.stride[a],
                self.padding[a],
            )?;
        }
        Ok(out)
    }

    /// The first stage: the `(h, w)` window on every depth slice (`[C·D, H, W]` view).
    pub fn hw(&self) -> Pool2dParams {
        Pool2dParams {
            kernel: [self.kernel[1], self.kernel[2]],
            stride: [self.stride[1], self.stride[2]],
            padding: [self.padding[1], self.padding[2]],
        }
    }

    /// The second stage: the depth window on the `[C, D, OH·OW]` view (`kd×1`, stride
    /// `sd×1`, padding `pd×0`).
    pub fn depth(&self) -> Pool2dParams {
        Pool2dParams {
            kernel: [self.kernel[0], 1],
            stride: [self.stride[0], 1],
            padding: [self.padding[0], 0],
        }
    }
}

/// Which reduction a pooling window applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// The maximum (padding counts as `−∞`); the gradient goes to the first maximum.
    Max,
    /// The minimum (padding counts as `+∞`; the seed article's MinPool).
    Min,
    /// The mean; the divisor is set by [`PoolParams::count_include_pad`].
    Avg,
}

/// Pooling parameters for 1-, 2- and 3-D pooling, per spatial axis `[d, h, w]`, with every
/// window placement the articles use: PyTorch's symmetric padding and `ceil_mode`, Keras's
/// `same`, and the seed article's anchor with the true-convolution flip.
///
/// Window `i` along an axis covers the inputs `i·s − begin + t` for `t < k` (inputs outside
/// `[0, len)` are padding), where `begin` comes from [`PoolParams::padding`]:
/// * [`Padding::Explicit`]: `begin`, `end` as given, each at most `k − 1` (so no window lies
///   wholly in the padding; PyTorch allows at most `k/2`); output
///   `⌊(len + begin + end − k)/s⌋ + 1`, or with `ceil_mode` `⌈…⌉ + 1` less the last window
///   if it would start in the end padding (PyTorch's rule);
/// * [`Padding::Same`] (Keras): output `⌈len/s⌉`, the total padding split with the odd one at
///   the end;
/// * [`Padding::Anchor`]`(a)`: the window element `a` sits on the output position, `begin = a`,
///   `end = k − 1 − a`; with [`PoolParams::flipped`] the window is flipped about its anchor,
///   `y[i] = max_t x[i·s + a − t]`, so `begin = k − 1 − a`, `end = a` (as the convolution).
///
/// Average pooling divides by `k` per axis when [`PoolParams::count_include_pad`] is set and
/// every window lies inside the padded input; windows that `ceil_mode` lets run past the end
/// padding divide by their part inside `[−begin, len + end)` (PyTorch); without
/// `count_include_pad` (Keras `same`, PyTorch `count_include_pad=False`) by the number of
/// real inputs in the window.
///
/// The builder methods set every axis; a pooling over fewer axes ignores the leading ones.
///
/// ```
/// use wgcnn::{PoolKind, PoolParams};
/// // Keras MaxPooling2D(3, strides=2, padding="same") on 15×15: 8×8 outputs
/// let p = PoolParams::new(3).stride(2).same();
/// assert_eq!(p.out_spatial("pool", &[15, 15])?, vec![8, 8]);
/// // PyTorch MaxPool2d(2, ceil_mode=True) on 5×5: 3×3
/// let p = PoolParams::new(2).ceil_mode(true);
/// assert_eq!(p.out_spatial("pool", &[5, 5])?, vec![3, 3]);
/// # let _ = PoolKind::Max;
/// # Ok::<(), wgcnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolParams {
    /// Window `[kd, kh, kw]`.
    pub kernel: [usize; 3],
    /// Stride `[sd, sh, sw]`.
    pub stride: [usize; 3],
    /// Window placement (default: no padding).
    pub padding: Padding,
    /// Flip the window about its anchor (true convolution's rule; only moves the window when
    /// the padding is an anchor).
    pub flip: bool,
    /// PyTorch `ceil_mode`: round the output size up.
    pub ceil_mode: bool,
    /// Average pooling counts padding in the divisor (PyTorch's default `true`; Keras `same`
    /// does not).
    pub count_include_pad: bool,
}

/// How one 2-D average-pooling stage divides each window's sum (the kernels' `DIV`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvgDivisor {
    /// `kh·kw` for every window (padding counted; every window inside the padded input).
    Window,
    /// The window's part inside the padded input `[−begin, len + end)`, with the padding
    /// `end` after each axis `[h, w]` (PyTorch's `ceil_mode` windows).
    Padded([usize; 2]),
    /// The real inputs in the window (padding not counted).
    Valid,
}

/// One axis of a resolved pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolAxis {
    pub k: usize,
    pub s: usize,
    pub begin: usize,
    pub end: usize,
    pub out: usize,
    /// The input length.
    pub len: usize,
}

impl PoolAxis {
    /// The axis of a view that pools nothing: window 1, stride 1, output 1.
    pub(crate) fn unit() -> Self {
        PoolAxis {
            k: 1,
            s: 1,
            begin: 0,
            end: 0,
            out: 1,
            len: 1,
        }
    }
}

impl PoolParams {
    /// Window `k` on every axis, stride `k` (PyTorch's default), no padding.
    pub fn new(k: usize) -> Self {
        PoolParams {
            kernel: [k; 3],
            stride: [k; 3],
            padding: Padding::Explicit {
                begin: [0; 3],
                end: [0; 3],
            },
            flip: false,
            ceil_mode: false,
            count_include_pad: true,
        }
    }
    /// Window `[kd, kh, kw]`; the stride follows it.
    pub fn kernel3(mut self, k: [usize; 3]) -> Self {
        self.kernel = k;
        self.stride = k;
        self
    }
    /// The same stride on every axis.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s; 3];
        self
    }
    /// Stride `[sd, sh, sw]`.
    pub fn stride3(mut self, s: [usize; 3]) -> Self {
        self.stride = s;
        self
    }
    /// Symmetric padding `p` on every axis (PyTorch `padding=p`).
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = Padding::Explicit {
            begin: [p; 3],
            end: [p; 3],
        };
        self
    }
    /// Explicit padding per side and axis `[d, h, w]`.
    pub fn pad_sides(mut self, begin: [usize; 3], end: [usize; 3]) -> Self {
        self.padding = Padding::Explicit { begin, end };
        self
    }
    /// Keras `padding="same"`; average pooling then excludes the padding from the divisor,
    /// as Keras does (call [`PoolParams::count_include_pad`] after to change it).
    pub fn same(mut self) -> Self {
        self.padding = Padding::Same;
        self.count_include_pad = false;
        self
    }
    /// The window element `anchor` per axis `[d, h, w]` sits on the output position.
    pub fn anchor(mut self, anchor: [usize; 3]) -> Self {
        self.padding = Padding::Anchor(anchor);
        self
    }
    /// Flip the window about its anchor (see the type's documentation).
    pub fn flipped(mut self, flip: bool) -> Self {
        self.flip = flip;
        self
    }
    /// PyTorch `ceil_mode`.
    pub fn ceil_mode(mut self, on: bool) -> Self {
        self.ceil_mode = on;
        self
    }
    /// Whether average pooling counts padding in its divisor.
    pub fn count_include_pad(mut self, on: bool) -> Self {
        self.count_include_pad = on;
        self
    }

    /// Checks a pooling of the trailing `spatial.len()` (1-3) axes and returns their output
    /// sizes.
    pub fn out_spatial(&self, op: &str, spatial: &[usize]) -> Result<Vec<usize>> {
        Ok(self.axes(op, spatial)?.iter().map(|a| a.out).collect())
    }

    /// The resolved window per axis of `spatial` (the trailing axes of `[d, h, w]`).
    pub(crate) fn axes(&self, op: &str, spatial: &[usize]) -> Result<Vec<PoolAxis>> {
        let first = 3 - spatial.len().clamp(1, 3);
        let names = ["D", "H", "W"];
        (first..3)
            .zip(spatial)
            .map(|(a, &len)| self.axis(op, names[a], a, len))
            .collect()
    }

    /// One axis `a` of length `len` (see the type's documentation for the rules).
    fn axis(&self, op: &str, name: &str, a: usize, len: usize) -> Result<PoolAxis> {
        let (k, s) = (self.kernel[a], self.stride[a]);
        if len == 0 || k == 0 {
            return Err(Error::shape(
                op,
                format!("zero-sized dimension along {name}: input {len}, kernel {k}"),
            ));
        }
        if s == 0 {
            return Err(Error::invalid(op, "stride must be at least 1"));
        }
        let (begin, end) = match self.padding {
            Padding::Explicit { begin, end } => (begin[a], end[a]),
            Padding::Same => {
                let total = ((len.div_ceil(s) - 1) * s + k).saturating_sub(len);
                (total / 2, total - total / 2)
            }
            Padding::Anchor(anchor) if anchor[a] >= k => {
                return Err(Error::invalid(
                    op,
                    format!(
                        "anchor {} along {name} lies outside the window {k}",
                        anchor[a]
                    ),
                ))
            }
            Padding::Anchor(anchor) if self.flip => (k - 1 - anchor[a], anchor[a]),
            Padding::Anchor(anchor) => (anchor[a], k - 1 - anchor[a]),
        };
        if begin >= k || end >= k {
            return Err(Error::invalid(
                op,
                format!("padding {begin}+{end} along {name} must be less than the window {k}"),
            ));
        }
        let padded = len + begin + end;
        if k > padded {
            return Err(Error::invalid(
                op,
                format!("window {k} along {name} is larger than the padded input {padded}"),
            ));
        }
        let span = padded - k;
        let mut out = if self.ceil_mode {
            span.div_ceil(s)
        } else {
            span / s
        } + 1;
        // PyTorch: the last window must start inside the input or the begin padding
        if self.ceil_mode && (out - 1) * s >= len + begin {
            out -= 1;
        }
        Ok(PoolAxis {
            k,
            s,
            begin,
            end,
            out,
            len,
        })
    }
}

impl From<Pool2dParams> for PoolParams {
    fn from(p: Pool2dParams) -> Self {
        let [kh, kw] = p.kernel;
        let [sh, sw] = p.stride;
        let [ph, pw] = p.padding;
        PoolParams::new(1)
            .kernel3([1, kh, kw])
            .stride3([1, sh, sw])
            .pad_sides([0, ph, pw], [0, ph, pw])
    }
}

impl From<Pool1dParams> for PoolParams {
    fn from(p: Pool1dParams) -> Self {
        let q = p.padding;
        PoolParams::new(1)
            .kernel3([1, 1, p.kernel])
            .stride3([1, 1, p.stride])
            .pad_sides([0, 0, q], [0, 0, q])
    }
}

impl From<Pool3dParams> for PoolParams {
    fn from(p: Pool3dParams) -> Self {
        PoolParams::new(1)
            .kernel3(p.kernel)
            .stride3(p.stride)
            .pad_sides(p.padding, p.padding)
    }
}

/// Elementwise activation functions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`
    Relu,
    /// `x` if `x > 0` else `α·x`
    LeakyRelu(f32),
    /// `x` if `x > 0` else `α·(eˣ − 1)`
    Elu(f32),
    /// `1 / (1 + e⁻ˣ)`
    Sigmoid,
    /// `tanh x`
    Tanh,
    /// Heaviside: `1` if `x > 0` else `0`; its gradient is zero.
    Step,
    /// `x·Φ(x) = ½x·(1 + erf(x/√2))` (PyTorch `nn.GELU()`, `approximate='none'`); erf by
    /// Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5·10⁻⁷).
    Gelu,
    /// `½x·(1 + tanh(√(2/π)·(x + 0.044715x³)))` (PyTorch `nn.GELU(approximate='tanh')`).
    GeluTanh,
    /// `x·σ(x) = x/(1 + e⁻ˣ)` (PyTorch `nn.SiLU()`, swish).
    Silu,
}

impl Activation {
    /// Code used by the shaders (`0` means "no activation").
    pub(crate) fn code(self) -> u32 {
        match self {
            Activation::Relu => 1,
            Activation::LeakyRelu(_) => 2,
            Activation::Elu(_) => 3,
            Activation::Sigmoid => 4,
            Activation::Tanh => 5,
            Activation::Step => 6,
            Activation::Gelu => 7,
            Activation::GeluTanh => 8,
            Activation::Silu => 9,
        }
    }

    pub(crate) fn alpha(self) -> f32 {
        match self {
            Activation::LeakyRelu(a) | Activation::Elu(a) => a,
            _ => 0.0,
        }
    }

    /// Whether its derivative needs the input `x` (f is not invertible from `y = f(x)`): fused
    /// into a conv or linear output, the producer then also keeps the pre-activation.
    pub fn keeps_input(self) -> bool {
        crate::cpu::elementwise::act_keeps_input(self.code())
    }
}
