//! Optimizer configurations, following PyTorch's update formulas exactly.
//!
//! The update kernels live with the other shaders (`shaders/optim.wgsl`) and their
//! CPU twin in `src/cpu/optim.rs`. With `g = ∇p (+ wd·p for L2) (+ l1·sign(p))`:
//!
//! | kind | update (t = 1, 2, …; state starts at zero) |
//! |---|---|
//! | `Sgd` | `p ← p − lr·g` |
//! | `Momentum` | `b ← μ·b + g;  p ← p − lr·b` |
//! | `Nesterov` | `b ← μ·b + g;  p ← p − lr·(g + μ·b)` |
//! | `RmsProp` | `v ← α·v + (1−α)·g²;  p ← p − lr·g/(√v + ε)` (with momentum μ>0: `b ← μ·b + g/(√v+ε); p ← p − lr·b`) |
//! | `Adam` | `m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  p ← p − (lr/(1−β₁ᵗ))·m/(√v/√(1−β₂ᵗ) + ε)` |
//! | `AdamW` | `p ← p·(1 − lr·wd)`, then Adam with no L2 term |
//!
//! **Parameter groups.** L1, L2 and AdamW's decay apply to every parameter unless an
//! executor is told otherwise with [`crate::Executor::set_regularized`] and a
//! [`ParamSelect`] (the update kernel then multiplies them by a 0/1 mask per element).

use crate::error::{Error, Result};
use crate::graph::{Graph, ParamKind};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptimizerKind {
    Sgd,
    Momentum,
    Nesterov,
    RmsProp,
    Adam,
    AdamW,
}

impl OptimizerKind {
    pub(crate) fn code(self) -> u32 {
        match self {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Momentum => 1,
            OptimizerKind::Nesterov => 2,
            OptimizerKind::RmsProp => 3,
            OptimizerKind::Adam => 4,
            OptimizerKind::AdamW => 5,
        }
    }

    /// Number of state tensors per parameter (momentum buffer, second moment, ...).
    pub fn state_slots(self) -> usize {
        match self {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Momentum | OptimizerKind::Nesterov => 1,
            OptimizerKind::RmsProp | OptimizerKind::Adam | OptimizerKind::AdamW => 2,
        }
    }

    /// Parses `sgd|momentum|nesterov|rmsprop|adam|adamw`.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "sgd" => OptimizerKind::Sgd,
            "momentum" => OptimizerKind::Momentum,
            "nesterov" => OptimizerKind::Nesterov,
            "rmsprop" => OptimizerKind::RmsProp,
            "adam" => OptimizerKind::Adam,
            "adamw" => OptimizerKind::AdamW,
            other => {
                return Err(Error::invalid(
                    "optimizer",
                    format!(
                        "unknown optimizer '{other}' (expected sgd|momentum|nesterov|rmsprop|adam|adamw)"
                    ),
                ))
            }
        })
    }
}

/// An optimizer: its kind and hyper-parameters (PyTorch's names and defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    /// Learning rate; may be changed between steps.
    pub lr: f32,
    /// Momentum μ (Momentum, Nesterov, RmsProp).
    pub momentum: f32,
    /// RMSProp smoothing α (PyTorch default 0.99).
    pub alpha: f32,
    /// Adam β₁ (0.9).
    pub beta1: f32,
    /// Adam β₂ (0.999).
    pub beta2: f32,
    /// ε added to the denominator (1e-8).
    pub eps: f32,
    /// L2 weight decay (`g += wd·p`); decoupled for AdamW.
    pub weight_decay: f32,
    /// L1 penalty (`g += l1·sign(p)`).
    pub l1: f32,
    /// Gradient clipping by global norm (`torch.nn.utils.clip_grad_norm_`): before the
    /// update, all gradients are scaled by `min(1, max/(‖g‖₂ + 1e-6))`. 0 = off.
    pub clip_grad_norm: f32,
}

impl Optimizer {
    fn base(kind: OptimizerKind, lr: f32) -> Self {
        Optimizer {
            kind,
            lr,
            momentum: 0.0,
            alpha: 0.99,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            l1: 0.0,
            clip_grad_norm: 0.0,
        }
    }
    /// Plain SGD.
    pub fn sgd(lr: f32) -> Self {
        Self::base(OptimizerKind::Sgd, lr)
    }
    /// SGD with (heavy-ball) momentum μ.
    pub fn momentum(lr: f32, momentum: f32) -> Self {
        Optimizer {
            momentum,
            ..Self::base(OptimizerKind::Momentum, lr)
        }
    }
    /// SGD with Nesterov momentum μ.
    pub fn nesterov(lr: f32, momentum: f32) -> Self {
        Optimizer {
            momentum,
            ..Self::base(OptimizerKind::Nesterov, lr)
        }
    }
    /// RMSProp (α = 0.99, ε = 1e-8, no momentum).
    pub fn rmsprop(lr: f32) -> Self {
        Self::base(OptimizerKind::RmsProp, lr)
    }
    /// Adam (β = (0.9, 0.999), ε = 1e-8).
    pub fn adam(lr: f32) -> Self {
        Self::base(OptimizerKind::Adam, lr)
    }
    /// AdamW with decoupled weight decay (PyTorch default 0.01).
    pub fn adamw(lr: f32, weight_decay: f32) -> Self {
        Optimizer {
            weight_decay,
            ..Self::base(OptimizerKind::AdamW, lr)
        }
    }
    /// The optimizer `kind` with PyTorch's default hyper-parameters and the given `lr`
    /// (momentum 0.9 for Momentum/Nesterov, weight decay 0.01 for AdamW).
    pub fn from_kind(kind: OptimizerKind, lr: f32) -> Self {
        match kind {
            OptimizerKind::Sgd => Self::sgd(lr),
            OptimizerKind::Momentum => Self::momentum(lr, 0.9),
            OptimizerKind::Nesterov => Self::nesterov(lr, 0.9),
            OptimizerKind::RmsProp => Self::rmsprop(lr),
            OptimizerKind::Adam => Self::adam(lr),
            OptimizerKind::AdamW => Self::adamw(lr, 0.01),
        }
    }
    /// Sets the L2 weight decay.
    pub fn weight_decay(mut self, wd: f32) -> Self {
        self.weight_decay = wd;
        self
    }
    /// Sets the L1 penalty.
    pub fn l1(mut self, l1: f32) -> Self {
        self.l1 = l1;
        self
    }
    /// Clips gradients to global L2 norm `max` before each update (0 = off).
    pub fn clip_grad_norm(mut self, max: f32) -> Self {
        self.clip_grad_norm = max;
        self
    }
    /// Sets the momentum μ.
    pub fn with_momentum(mut self, m: f32) -> Self {
        self.momentum = m;
        self
    }

    /// Rejects non-finite or negative hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("lr", self.lr),
            ("momentum", self.momentum),
            ("alpha", self.alpha),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
            ("eps", self.eps),
            ("weight_decay", self.weight_decay),
            ("l1", self.l1),
            ("clip_grad_norm", self.clip_grad_norm),
        ];
        for (name, v) in fields {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::invalid(
                    "optimizer",
                    format!("{name} must be finite and non-negative, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

/// Which parameters L1, L2 and decoupled weight decay apply to (PyTorch users build
/// parameter groups with `weight_decay=0` for the rest). Patterns are globs over
/// parameter names (`c1.weight`, `fc.bias`, `block1.sep1.pointwise.weight`, batch norm
/// `bn.weight` / `bn.bias`) where `*` matches any run of characters, dots included, and
/// everything else matches itself: `*.weight`, `conv*`, `fc.bias`. Each pattern must match
/// at least one parameter.
///
/// ```
/// use wgcnn::nn::{BatchNorm2d, Conv2d, Flatten, Linear, Sequential};
/// use wgcnn::optim::ParamSelect;
/// # fn main() -> Result<(), wgcnn::Error> {
/// let g = Sequential::new(&[1, 8, 8])
///     .add("conv", Conv2d::new(1, 4, 3))
///     .add("bn", BatchNorm2d::new(4))
///     .add("flat", Flatten)
///     .add("fc", Linear::new(4 * 6 * 6, 2))
///     .cross_entropy()?;
/// let names = |s: ParamSelect| s.select(&g).map(|v| {
///     g.params().iter().zip(v).filter(|(_, on)| *on).map(|(p, _)| p.name.clone()).collect::<Vec<_>>()
/// });
/// assert_eq!(names(ParamSelect::ExcludeBiasAndNorm)?, ["conv.weight", "fc.weight"]);
/// assert_eq!(names(ParamSelect::matching(&["fc.*"]))?, ["fc.weight", "fc.bias"]);
/// assert_eq!(names(ParamSelect::excluding(&["bn.*", "*.bias"]))?, ["conv.weight", "fc.weight"]);
/// assert!(ParamSelect::matching(&["fc2.*"]).select(&g).is_err()); // matches nothing
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ParamSelect {
    /// Every parameter (the default).
    #[default]
    All,
    /// Conv and linear weights only: no biases, no batch-norm γ/β (the numpy article
    /// regularises weights only; the usual AdamW recipe).
    ExcludeBiasAndNorm,
    /// The parameters whose name matches any of the patterns.
    Matching(Vec<String>),
    /// Every parameter except those whose name matches any of the patterns.
    Excluding(Vec<String>),
}

impl ParamSelect {
    /// [`ParamSelect::Matching`] from string slices.
    pub fn matching(patterns: &[&str]) -> Self {
        ParamSelect::Matching(patterns.iter().map(|p| p.to_string()).collect())
    }

    /// [`ParamSelect::Excluding`] from string slices.
    pub fn excluding(patterns: &[&str]) -> Self {
        ParamSelect::Excluding(patterns.iter().map(|p| p.to_string()).collect())
    }

    /// Per parameter of `graph` (in [`Graph::params`] order): whether it is regularised.
    /// A pattern matching no parameter is an [`Error::InvalidArgument`] naming it.
    pub fn select(&self, graph: &Graph) -> Result<Vec<bool>> {
        let names: Vec<&str> = graph.params().iter().map(|p| p.name.as_str()).collect();
        let hits = |pats: &[String]| -> Result<Vec<bool>> {
            for pat in pats {
                if !names.iter().any(|n| glob_match(pat, n)) {
                    return Err(Error::invalid(
                        "regularization",
                        format!(
                            "the pattern '{pat}' matches no parameter (names are like '{}')",
                            names.first().copied().unwrap_or("")
                        ),
                    ));
                }
            }
            Ok(names
                .iter()
                .map(|n| pats.iter().any(|p| glob_match(p, n)))
                .collect())
        };
        Ok(match self {
            ParamSelect::All => vec![true; names.len()],
            ParamSelect::ExcludeBiasAndNorm => (0..names.len())
                .map(|p| graph.param_kind(p) == ParamKind::Weight)
                .collect(),
            ParamSelect::Matching(pats) => hits(pats)?,
            ParamSelect::Excluding(pats) => hits(pats)?.into_iter().map(|h| !h).collect(),
        })
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no '*': an exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}
