//! CPU twin of `shaders/optim.wgsl` (formulas in [`crate::optim`]).

use crate::optim::{Optimizer, OptimizerKind};

/// Host-side per-step constants: `(lr/(1−β₁ᵗ), √(1−β₂ᵗ))`, computed in f64 like PyTorch.
pub fn adam_constants(opt: &Optimizer, t: u64) -> (f32, f32) {
    let t = t.max(1) as i32;
    let bc1 = 1.0 - (opt.beta1 as f64).powi(t);
    let bc2 = 1.0 - (opt.beta2 as f64).powi(t);
    ((opt.lr as f64 / bc1) as f32, bc2.sqrt() as f32)
}

/// The CPU twin of `grad_norm_scale`: `min(1, max_norm / (‖g‖₂ + 1e-6))`, summing the
/// squares in 64 strided partial sums reduced pairwise, as the kernel does.
pub fn grad_norm_scale(g: &[f32], max_norm: f32) -> f32 {
    let mut part = [0.0f32; 64];
    for (l, acc) in part.iter_mut().enumerate() {
        for v in g.iter().skip(l).step_by(64) {
            *acc += v * v;
        }
    }
    let mut s = 32;
    while s > 0 {
        for l in 0..s {
            part[l] += part[l + s];
        }
        s /= 2;
    }
    (max_norm / (part[0].sqrt() + 1e-6)).min(1.0)
}

/// One optimizer step at step number `t` (from 1) on flat `p` with gradient `scale·g`
/// and state `s1`, `s2` (zero-initialised, same length as `p`; unused slots may be
/// empty). Returns whether any updated parameter is non-finite.
pub fn optimizer_step(
    opt: &Optimizer,
    t: u64,
    p: &mut [f32],
    g: &[f32],
    s1: &mut [f32],
    s2: &mut [f32],
    scale: f32,
) -> bool {
    optimizer_step_masked(opt, t, p, g, s1, s2, scale, &[])
}

/// [`optimizer_step`] with the L1, L2 and decoupled decay of element `i` multiplied by
/// `decay[i]` (regularisation per parameter group: 0 exempts the element); an empty
/// `decay` applies them everywhere, bitwise as [`optimizer_step`].
#[allow(clippy::too_many_arguments)]
pub fn optimizer_step_masked(
    opt: &Optimizer,
    t: u64,
    p: &mut [f32],
    g: &[f32],
    s1: &mut [f32],
    s2: &mut [f32],
    scale: f32,
    decay: &[f32],
) -> bool {
    let (step, bc2) = adam_constants(opt, t);
    let mut non_finite = false;
    for i in 0..p.len() {
        let mut pi = p[i];
        let mut gi = g[i] * scale;
        let m = decay.get(i).copied().unwrap_or(1.0);
        let (l1, wd) = (opt.l1 * m, opt.weight_decay * m);
        if l1 != 0.0 {
            gi += l1 * sign(pi);
        }
        if opt.kind != OptimizerKind::AdamW && wd != 0.0 {
            gi += wd * pi;
        }
        match opt.kind {
            OptimizerKind::Sgd => pi -= opt.lr * gi,
            OptimizerKind::Momentum | OptimizerKind::Nesterov => {
                let b = opt.momentum * s1[i] + gi;
                s1[i] = b;
                if opt.kind == OptimizerKind::Nesterov {
                    pi -= opt.lr * (gi + opt.momentum * b);
                } else {
                    pi -= opt.lr * b;
                }
            }
            OptimizerKind::RmsProp => {
                let v = opt.alpha * s2[i] + (1.0 - opt.alpha) * gi * gi;
                s2[i] = v;
                let d = v.sqrt() + opt.eps;
                if opt.momentum > 0.0 {
                    let b = opt.momentum * s1[i] + gi / d;
                    s1[i] = b;
                    pi -= opt.lr * b;
                } else {
                    pi -= opt.lr * gi / d;
                }
            }
            OptimizerKind::Adam | OptimizerKind::AdamW => {
                if opt.kind == OptimizerKind::AdamW {
                    pi *= 1.0 - opt.lr * wd;
                }
                let m = s1[i] + (1.0 - opt.beta1) * (gi - s1[i]);
                let v = opt.beta2 * s2[i] + (1.0 - opt.beta2) * gi * gi;
                s1[i] = m;
                s2[i] = v;
                pi -= step * m / (v.sqrt() / bc2 + opt.eps);
            }
        }
        p[i] = pi;
        non_finite |= !pi.is_finite();
    }
    non_finite
}

/// `torch.sign`: −1, 0 or 1.
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}
