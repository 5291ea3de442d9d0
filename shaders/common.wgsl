// common.wgsl — helpers prepended to every shader family.
//
// Dispatch geometry used by every 1-D kernel: @workgroup_size(64); the workgroup grid
// is folded into up to 3 dimensions on the host so no dimension exceeds
// max_compute_workgroups_per_dimension (65,535); `flat_group` unfolds it.
//
// Activation codes (shared with src/shape.rs): 0 none, 1 ReLU, 2 LeakyReLU(α),
// 3 ELU(α), 4 Sigmoid, 5 Tanh, 6 Step (Heaviside), 7 GELU, 8 GELU (tanh approximation),
// 9 SiLU.

const WG: u32 = 64u;

// Subgroup row sharing (the pointwise kernels' SG_ROWS = 1, only where the device has
// subgroups of exactly 8 invocations): the 8 invocations li = 8·ly + lx (lx = 0..7) of a
// subgroup share ly and so their register tile's rows; each loads every 8th row and
// `subgroupBroadcast(v, k)` hands lane k's value to all. Where the device has no subgroups
// the host renames those (never executed) calls to this stand-in, so the module still
// validates.
fn sg_absent(v: vec4<f32>, k: u32) -> vec4<f32> { return v; }

fn flat_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
}

fn flat_id(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return flat_group(wid, nwg) * WG + li;
}

// ±∞ or NaN: all exponent bits set. Tested on the bits, which no fast-math
// optimisation of a float comparison can fold away.
fn non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// 1 + erf(u), without cancellation for u < 0: Abramowitz & Stegun 7.1.26 gives
// erfc(|u|) = q(t)·e^(−u²), t = 1/(1 + 0.3275911·|u|), with |error| ≤ 1.5e-7.
fn one_plus_erf(u: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * abs(u));
    let q = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
        + t * (-1.453152027 + t * 1.061405429)))) * exp(-u * u);
    return select(q, 2.0 - q, u >= 0.0);
}

// tanh(√(2/π)·(x + 0.044715·x³)), the GELU tanh approximation's inner term
fn gelu_tanh_t(x: f32) -> f32 {
    return tanh(clamp(0.7978845608 * (x + 0.044715 * x * x * x), -15.0, 15.0));
}

// y = f(x)
fn act_fwd(x: f32, code: u32, alpha: f32) -> f32 {
    switch code {
        case 1u: { return select(x, 0.0, x < 0.0); } // NaN propagates, like PyTorch
        case 2u: { return select(alpha * x, x, x > 0.0); }
        case 3u: { return select(alpha * (exp(x) - 1.0), x, x > 0.0); }
        case 4u: { return 1.0 / (1.0 + exp(-x)); }
        case 5u: { return tanh(clamp(x, -15.0, 15.0)); }
        case 6u: { return select(0.0, 1.0, x > 0.0); }
        case 7u: { return 0.5 * x * one_plus_erf(x * 0.70710678); }
        case 8u: { return 0.5 * x * (1.0 + gelu_tanh_t(x)); }
        case 9u: { return x / (1.0 + exp(-x)); }
        default: { return x; }
    }
}

// f'(x), from the input x
fn act_grad_x(x: f32, code: u32, alpha: f32) -> f32 {
    switch code {
        case 1u: { return select(0.0, 1.0, x > 0.0); }
        case 2u: { return select(alpha, 1.0, x > 0.0); }
        case 3u: { return select(alpha * exp(x), 1.0, x > 0.0); }
        case 4u: { let s = 1.0 / (1.0 + exp(-x)); return s * (1.0 - s); }
        case 5u: { let t = tanh(clamp(x, -15.0, 15.0)); return 1.0 - t * t; }
        case 6u: { return 0.0; }
        case 7u: { return 0.5 * one_plus_erf(x * 0.70710678) + 0.39894228 * x * exp(-0.5 * x * x); }
        case 8u: {
            let t = gelu_tanh_t(x);
            let dinner = 0.7978845608 * (1.0 + 3.0 * 0.044715 * x * x);
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner;
        }
        case 9u: { let s = 1.0 / (1.0 + exp(-x)); return s * (1.0 + x * (1.0 - s)); }
        default: { return 1.0; }
    }
}

// f'(x), from the output y = f(x) (used when the activation is fused into the
// producing kernel and only y is kept). Needs α > 0 for LeakyReLU and ELU.
fn act_grad_y(y: f32, code: u32, alpha: f32) -> f32 {
    switch code {
        case 1u: { return select(0.0, 1.0, y > 0.0); }
        case 2u: { return select(alpha, 1.0, y > 0.0); }
        case 3u: { return select(y + alpha, 1.0, y > 0.0); }
        case 4u: { return y * (1.0 - y); }
        case 5u: { return 1.0 - y * y; }
        case 6u: { return 0.0; }
        default: { return 1.0; }
    }
}

// Whether a fused activation's derivative needs its input x (the producer then also keeps
// the pre-activation, KEEP_Z): f is not invertible from y = f(x).
fn act_keeps_input(code: u32) -> bool {
    switch code {
        case 7u, 8u, 9u: { return true; }
        default: { return false; }
    }
}

// f'(x) for an activation fused into its producer, from what the producer kept: x for
// activations that keep their input, else y = f(x).
fn act_grad_fused(v: f32, code: u32, alpha: f32) -> f32 {
    if (act_keeps_input(code)) { return act_grad_x(v, code, alpha); }
    return act_grad_y(v, code, alpha);
}
