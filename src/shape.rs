//! Parameter structs for the spatial ops, each owning its shape math.

use crate::error::{Error, Result};

/// Output size of a sliding window: `⌊(len + 2·pad − kernel)/stride⌋ + 1`.
pub fn window_out(len: usize, kernel: usize, stride: usize, pad: usize) -> usize {
    (len + 2 * pad - kernel) / stride + 1
}

/// 2-D convolution (cross-correlation) parameters.
///
/// `y[n,o,i,j] = b[o] + Σ_c Σ_a Σ_b w[o,c,a,b]·x[n,c,i·s+a−p, j·s+b−p]`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Stride `[sh, sw]` (default 1).
    pub stride: [usize; 2],
    /// Zero padding `[ph, pw]` added on both sides (default 0).
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
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams {
            stride: [stride, stride],
            padding: [padding, padding],
        }
    }

    /// Checks `x [N,C,H,W]` against `w [O,C,kh,kw]` and returns the output shape `[N,O,oh,ow]`.
    pub fn out_shape(&self, op: &str, x: [usize; 4], w: [usize; 4]) -> Result<[usize; 4]> {
        let [n, c, h, wd] = x;
        let [o, wc, kh, kw] = w;
        if x.contains(&0) || w.contains(&0) {
            return Err(Error::shape(
                op,
                format!("zero-sized dimension: x {x:?}, w {w:?}"),
            ));
        }
        if c != wc {
            return Err(Error::shape(
                op,
                format!("input has {c} channels but the weight expects {wc} (x {x:?}, w {w:?})"),
            ));
        }
        if self.stride.contains(&0) {
            return Err(Error::invalid(op, "stride must be at least 1"));
        }
        let [ph, pw] = self.padding;
        let padded = |len: usize, pad: usize| pad.checked_mul(2).and_then(|p| p.checked_add(len));
        let (Some(hp), Some(wp)) = (padded(h, ph), padded(wd, pw)) else {
            return Err(Error::invalid(
                op,
                format!("padding {:?} is too large", self.padding),
            ));
        };
        if kh > hp || kw > wp {
            return Err(Error::invalid(
                op,
                format!("kernel {kh}x{kw} is larger than the padded input {hp}x{wp}"),
            ));
        }
        Ok([
            n,
            o,
            window_out(h, kh, self.stride[0], ph),
            window_out(wd, kw, self.stride[1], pw),
        ])
    }
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
        }
    }

    pub(crate) fn alpha(self) -> f32 {
        match self {
            Activation::LeakyRelu(a) | Activation::Elu(a) => a,
            _ => 0.0,
        }
    }
}
