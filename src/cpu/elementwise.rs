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
        _ => x,
    }
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
pub fn act_keeps_input(_code: u32) -> bool {
    false
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
