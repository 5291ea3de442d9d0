//! CPU twins of `shaders/elementwise.wgsl` and the activation helpers of `common.wgsl`.

use crate::shape::Activation;

/// `f(x)` for activation code `code` (0 = identity), as `act_fwd` in common.wgsl.
pub fn act_fwd(x: f32, code: u32, alpha: f32) -> f32 {
    match code {
        1 => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        2 => {
            if x > 0.0 {
                x
            } else {
                alpha * x
            }
        }
        3 => {
            if x > 0.0 {
                x
            } else {
                alpha * (x.exp() - 1.0)
            }
        }
        4 => 1.0 / (1.0 + (-x).exp()),
        5 => x.clamp(-15.0, 15.0).tanh(),
        6 => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        7 => 0.5 * x * one_plus_erf(x * std::f32::consts::FRAC_1_SQRT_2),
        8 => 0.5 * x * (1.0 + gelu_tanh_t(x)),
        9 => x / (1.0 + (-x).exp()),
        _ => x,
    }
}

/// `1 + erf(u)` without cancellation for `u < 0`, as `one_plus_erf` in common.wgsl:
/// Abramowitz & Stegun 7.1.26, `erfc(|u|) = q(t)·e^(−u²)`, `t = 1/(1 + 0.3275911·|u|)`,
/// |error| ≤ 1.5·10⁻⁷ (the published coefficients, as in the shader).
#[allow(clippy::excessive_precision)]
pub fn one_plus_erf(u: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * u.abs());
    let q = t
        * (0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        * (-u * u).exp();
    if u >= 0.0 {
        2.0 - q
    } else {
        q
    }
}

/// `tanh(√(2/π)·(x + 0.044715·x³))`, as `gelu_tanh_t` in common.wgsl.
#[allow(clippy::excessive_precision)]
fn gelu_tanh_t(x: f32) -> f32 {
    (0.7978845608 * (x + 0.044715 * x * x * x))
        .clamp(-15.0, 15.0)
        .tanh()
}

/// `f'(x)` from the input `x`, as `act_grad_x` in common.wgsl.
pub fn act_grad_x(x: f32, code: u32, alpha: f32) -> f32 {
    match code {
        1 => (x > 0.0) as u32 as f32,
        2 => {
            if x > 0.0 {
                1.0
            } else {
                alpha
            }
        }
        3 => {
            if x > 0.0 {
                1.0
            } else {
                alpha * x.exp()
            }
        }
        4 => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 - s)
        }
        5 => {
            let t = x.clamp(-15.0, 15.0).tanh();
            1.0 - t * t
        }
        6 => 0.0,
        7 => {
            0.5 * one_plus_erf(x * std::f32::consts::FRAC_1_SQRT_2)
                + 0.398_942_3 * x * (-0.5 * x * x).exp()
        }
        8 => {
            let t = gelu_tanh_t(x);
            let dinner = 0.797_884_6 * (1.0 + 3.0 * 0.044715 * x * x);
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner
        }
        9 => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 + x * (1.0 - s))
        }
        _ => 1.0,
    }
}

/// `f'(x)` from the output `y = f(x)`, as `act_grad_y` in common.wgsl (α > 0).
pub fn act_grad_y(y: f32, code: u32, alpha: f32) -> f32 {
    match code {
        1 => (y > 0.0) as u32 as f32,
        2 => {
            if y > 0.0 {
                1.0
            } else {
                alpha
            }
        }
        3 => {
            if y > 0.0 {
                1.0
            } else {
                y + alpha
            }
        }
        4 => y * (1.0 - y),
        5 => 1.0 - y * y,
        6 => 0.0,
        _ => 1.0,
    }
}

/// Whether a fused activation's derivative needs its input `x` (the producer then also
/// keeps the pre-activation), as `act_keeps_input` in common.wgsl.
pub fn act_keeps_input(code: u32) -> bool {
    matches!(code, 7..=9)
}

/// `f'(x)` of a fused activation from what its producer kept (`x` if it keeps its input,
/// else `y = f(x)`), as `act_grad_fused` in common.wgsl.
pub fn act_grad_fused(v: f32, code: u32, alpha: f32) -> f32 {
    if act_keeps_input(code) {
        act_grad_x(v, code, alpha)
    } else {
        act_grad_y(v, code, alpha)
    }
}

/// `dy'[i] = dy[i] · f'(·)` for a fused activation (`code`, `alpha`) from the kept tensor
/// `v` (see [`act_grad_fused`]); `dy` unchanged if the code is 0.
pub fn fused_grad(dy: &[f32], v: &[f32], code: u32, alpha: f32) -> Vec<f32> {
    if code == 0 {
        return dy.to_vec();
    }
    dy.iter()
        .zip(v)
        .map(|(&d, &v)| d * act_grad_fused(v, code, alpha))
        .collect()
}

/// `y[i] = f(x[i])`
pub fn activation_forward(act: Activation, x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| act_fwd(v, act.code(), act.alpha()))
        .collect()
}

/// `dx[i] = dy[i] · f'(x[i])`
pub fn activation_backward(act: Activation, x: &[f32], dy: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(dy)
        .map(|(&v, &d)| d * act_grad_x(v, act.code(), act.alpha()))
        .collect()
}

/// `c[i] = a[i] + b[i]`
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// PCG-RXS-M-XS 32-bit hash, as `pcg` in elementwise.wgsl.
pub fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// Whether dropout keeps element `i`: `u = (h >> 8)/2²⁴ ≥ p` with
/// `h = pcg(i ^ pcg(seed ^ pcg(step)))`, as `dropout_keep` in elementwise.wgsl.
pub fn dropout_keep(i: u32, seed: u32, step: u32, p: f32) -> bool {
    let h = pcg(i ^ pcg(seed ^ pcg(step)));
    let u = (h >> 8) as f32 * (1.0 / 16777216.0);
    u >= p
}

/// The scale of kept units, `1/(1−p)` in f32 (the GPU receives this same value).
pub fn dropout_scale(p: f32) -> f32 {
    1.0 / (1.0 - p)
}

/// `y[i] = keep(i) ? x[i]·scale : 0`.
pub fn dropout_forward(seed: u32, step: u32, p: f32, x: &[f32]) -> Vec<f32> {
    let s = dropout_scale(p);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if dropout_keep(i as u32, seed, step, p) {
                v * s
            } else {
                0.0
            }
        })
        .collect()
}

/// `dx[i] = keep(i) ? dy[i]·scale : 0` (the same mask as the forward pass).
pub fn dropout_backward(seed: u32, step: u32, p: f32, dy: &[f32]) -> Vec<f32> {
    dropout_forward(seed, step, p, dy)
}

/// `y[i] = x[i]·scale + offset` (backward: `rescale(dy, scale, 0)`).
pub fn rescale(scale: f32, offset: f32, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| v * scale + offset).collect()
}

/// `v[i] = Σ_q parts[q·(la+lb) + i]`, added in the order `q = 0, 1, …` (as the kernel does),
/// split into `(v[..la], v[la..])`. Shapes: parts `[P, la+lb]` → `[la]`, `[lb]`.
pub fn sum_parts(parts: &[f32], la: usize, lb: usize) -> (Vec<f32>, Vec<f32>) {
    let len = la + lb;
    let mut v = vec![0.0f32; len];
    for part in parts.chunks_exact(len.max(1)) {
        for (s, p) in v.iter_mut().zip(part) {
            *s += p;
        }
    }
    let b = v.split_off(la);
    (v, b)
}
