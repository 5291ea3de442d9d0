//! Parameter initialisers ([`Init`]), settable per layer and as a graph-wide default.
//!
//! Fans follow PyTorch's `_calculate_fan_in_and_fan_out` ([`fan_in_and_fan_out`]): a
//! weight `[O, C/groups, k…]` has `fan_in = C/groups·∏k` and `fan_out = O·∏k` (grouped
//! and depthwise convolutions included); a linear weight `[out, in]` has `fan_in = in`,
//! `fan_out = out`. A bias takes the fans of its layer's weight.
//!
//! Which init a parameter gets ([`crate::graph::Graph::param_init`]), first match wins:
//! 1. its layer's own setting (`Conv2d::new(..).init(..)` / `.bias_init(..)`, see
//!    [`crate::nn::Initialized`]) or [`crate::graph::Graph::set_param_init`];
//! 2. batch norm: γ = 1 ([`Init::Ones`]), β = 0 ([`Init::Zeros`]), as PyTorch;
//! 3. weights: the graph default ([`crate::graph::Graph::set_default_init`],
//!    [`crate::nn::Sequential::default_init`]), else [`Init::PytorchDefault`];
//! 4. biases: the graph's bias default ([`crate::graph::Graph::set_default_bias_init`]),
//!    else PyTorch's bias rule when their weight's init is [`Init::PytorchDefault`], else
//!    [`Init::Zeros`] (Keras initialises biases to zeros under its kernel initialisers).
//!
//! Keras's default (Glorot-uniform kernels, zero biases) and the numpy article's
//! `0.1·randn` weights are then one call each:
//!
//! ```
//! use wgcnn::init::Init;
//! use wgcnn::nn::{Conv2d, Flatten, Linear, Sequential};
//! # fn main() -> Result<(), wgcnn::Error> {
//! let keras = Sequential::new(&[1, 28, 28])
//!     .default_init(Init::XavierUniform)                     // biases: zeros
//!     .add("c1", Conv2d::new(1, 8, 3).init(Init::KaimingNormal)) // this layer: He normal
//!     .add("flat", Flatten)
//!     .add("fc", Linear::new(8 * 26 * 26, 10))
//!     .cross_entropy()?;
//! assert_eq!(keras.param_init(0), Init::KaimingNormal);     // c1.weight
//! assert_eq!(keras.param_init(1), Init::Zeros);             // c1.bias
//! assert_eq!(keras.param_init(2), Init::XavierUniform);     // fc.weight
//!
//! let numpy_article = Sequential::new(&[1, 28, 28])
//!     .default_init(Init::Normal(0.1))
//!     .add("c1", Conv2d::new(1, 8, 3))
//!     .add("flat", Flatten)
//!     .add("fc", Linear::new(8 * 26 * 26, 10).bias_init(Init::Constant(0.01)))
//!     .cross_entropy()?;
//! assert_eq!(numpy_article.param_init(3), Init::Constant(0.01)); // fc.bias
//! # Ok(()) }
//! ```
//!
//! Values are drawn from the executor's seed: PyTorch-default values always come from one
//! `StdRng::seed_from_u64(seed)` stream in parameter order (every parameter's draws are
//! taken even when another init overwrites them, so a model with no init set is bitwise
//! what it always was, and one layer's init never shifts another's values); every other
//! random init draws from a stream of its own, seeded from `seed` and the parameter's
//! index ([`param_seed`]).

use rand::{Rng, RngCore};

use crate::error::{Error, Result};

/// How a parameter tensor is initialised. `gain` is 1 for Xavier and `√2` for Kaiming
/// (PyTorch's defaults: `a = 0`, `mode='fan_in'`, `nonlinearity='leaky_relu'`, i.e.
/// `√(2/(1+a²))`); other gains are a [`Init::Normal`] or [`Init::Uniform`] with the
/// std or bound computed by hand. Normal draws are not truncated (PyTorch, not Keras's
/// `he_normal`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// PyTorch's `Conv*d`/`Linear` default: `U(−1/√fan_in, 1/√fan_in)` for weights
    /// (Kaiming-uniform with `a = √5`) and for biases (the layer's `fan_in`).
    PytorchDefault,
    /// `N(0, std²)`.
    Normal(f32),
    /// `U(−a, a)`.
    Uniform(f32),
    /// Glorot/Xavier uniform: `U(−b, b)`, `b = √(6/(fan_in + fan_out))` (Keras's default).
    XavierUniform,
    /// Glorot/Xavier normal: `N(0, 2/(fan_in + fan_out))`.
    XavierNormal,
    /// He/Kaiming uniform: `U(−b, b)`, `b = √2·√(3/fan_in) = √(6/fan_in)`.
    KaimingUniform,
    /// He/Kaiming normal: `N(0, 2/fan_in)`.
    KaimingNormal,
    /// All 0.
    Zeros,
    /// All 1.
    Ones,
    /// All `v`.
    Constant(f32),
}

impl Init {
    /// Whether it needs the tensor's fans (Xavier, Kaiming, PyTorch's default).
    pub fn uses_fans(self) -> bool {
        matches!(
            self,
            Init::PytorchDefault
                | Init::XavierUniform
                | Init::XavierNormal
                | Init::KaimingUniform
                | Init::KaimingNormal
        )
    }

    /// Rejects a negative or non-finite std, bound or constant.
    pub fn validate(self) -> Result<()> {
        let (what, v) = match self {
            Init::Normal(s) => ("Normal std", s),
            Init::Uniform(a) => ("Uniform bound", a),
            Init::Constant(v) if v.is_finite() => return Ok(()),
            Init::Constant(v) => ("Constant value", v),
            _ => return Ok(()),
        };
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(Error::invalid(
                "init",
                format!("{what} must be finite and non-negative, got {v}"),
            ))
        }
    }

    /// The distribution for fans `(fan_in, fan_out)`.
    pub fn dist(self, fan_in: usize, fan_out: usize) -> Dist {
        let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        match self {
            Init::PytorchDefault => Dist::Uniform((1.0 / fi.sqrt()) as f32),
            Init::Normal(s) => Dist::Normal(s),
            Init::Uniform(a) => Dist::Uniform(a),
            Init::XavierUniform => Dist::Uniform((6.0 / (fi + fo)).sqrt() as f32),
            Init::XavierNormal => Dist::Normal((2.0 / (fi + fo)).sqrt() as f32),
            Init::KaimingUniform => Dist::Uniform((6.0 / fi).sqrt() as f32),
            Init::KaimingNormal => Dist::Normal((2.0 / fi).sqrt() as f32),
            Init::Zeros => Dist::Constant(0.0),
            Init::Ones => Dist::Constant(1.0),
            Init::Constant(v) => Dist::Constant(v),
        }
    }

    /// Fills `out` for fans `(fan_in, fan_out)` with values drawn from `rng`.
    pub fn fill(self, out: &mut [f32], fans: (usize, usize), rng: &mut impl RngCore) {
        self.dist(fans.0, fans.1).fill(out, rng)
    }
}

/// A distribution an [`Init`] resolves to for given fans.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// `U(−a, a)` (all 0 when `a = 0`).
    Uniform(f32),
    /// `N(0, std²)`.
    Normal(f32),
    /// Every element `v`.
    Constant(f32),
}

impl Dist {
    /// Fills `out` with draws from `rng` (normals by Box–Muller in f64, two per pair of
    /// uniforms).
    pub fn fill(self, out: &mut [f32], rng: &mut impl RngCore) {
        match self {
            Dist::Constant(v) => out.fill(v),
            Dist::Uniform(a) if a > 0.0 => {
                for v in out.iter_mut() {
                    *v = rng.random_range(-a..a);
                }
            }
            Dist::Uniform(_) => out.fill(0.0),
            Dist::Normal(std) => {
                for pair in out.chunks_mut(2) {
                    // u1 in (0, 1] keeps ln finite
                    let u1 = 1.0 - rng.random::<f64>();
                    let u2 = rng.random::<f64>();
                    let r = (-2.0 * u1.ln()).sqrt() * std as f64;
                    let t = std::f64::consts::TAU * u2;
                    pair[0] = (r * t.cos()) as f32;
                    if let Some(v) = pair.get_mut(1) {
                        *v = (r * t.sin()) as f32;
                    }
                }
            }
        }
    }

    /// The distribution's standard deviation (`a/√3` for `U(−a, a)`, 0 for a constant).
    pub fn std(self) -> f32 {
        match self {
            Dist::Uniform(a) => a / 3f32.sqrt(),
            Dist::Normal(s) => s,
            Dist::Constant(_) => 0.0,
        }
    }
}

/// PyTorch's `_calculate_fan_in_and_fan_out`: for `shape = [O, I, k…]`,
/// `(I·∏k, O·∏k)`; `None` for fewer than 2 dimensions (PyTorch raises).
///
/// ```
/// use wgcnn::init::fan_in_and_fan_out;
/// assert_eq!(fan_in_and_fan_out(&[128, 16, 5, 5]), Some((400, 3200))); // conv 64→128, groups 4
/// assert_eq!(fan_in_and_fan_out(&[10, 84]), Some((84, 10)));           // Linear(84, 10)
/// assert_eq!(fan_in_and_fan_out(&[10]), None);
/// ```
pub fn fan_in_and_fan_out(shape: &[usize]) -> Option<(usize, usize)> {
    if shape.len() < 2 {
        return None;
    }
    let receptive: usize = shape[2..].iter().product();
    Some((shape[1] * receptive, shape[0] * receptive))
}

/// The seed of parameter `index`'s own stream under executor seed `seed` (a
/// Weyl-sequence mix; `StdRng::seed_from_u64` expands it further).
pub fn param_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
