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
