// common.wgsl — helpers prepended to every shader family.
//
// Dispatch geometry used by every 1-D kernel: @workgroup_size(64); the workgroup grid
// is folded into up to 3 dimensions on the host so no dimension exceeds
// max_compute_workgroups_per_dimension (65,535); `flat_group` unfolds it.
//
// Activation codes (shared with src/shape.rs): 0 none, 1 ReLU, 2 LeakyReLU(α),
// 3 ELU(α), 4 Sigmoid, 5 Tanh, 6 Step (Heaviside).

const WG: u32 = 64u;

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

// y = f(x)
fn act_fwd(x: f32, code: u32, alpha: f32) -> f32 {
    switch code {
        case 1u: { return select(x, 0.0, x < 0.0); } // NaN propagates, like PyTorch
        case 2u: { return select(alpha * x, x, x > 0.0); }
        case 3u: { return select(alpha * (exp(x) - 1.0), x, x > 0.0); }
        case 4u: { return 1.0 / (1.0 + exp(-x)); }
        case 5u: { return tanh(clamp(x, -15.0, 15.0)); }
        case 6u: { return select(0.0, 1.0, x > 0.0); }
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
        default: { return false; }
    }
}

// f'(x) for an activation fused into its producer, from what the producer kept: x for
// activations that keep their input, else y = f(x).
fn act_grad_fused(v: f32, code: u32, alpha: f32) -> f32 {
    if (act_keeps_input(code)) { return act_grad_x(v, code, alpha); }
    return act_grad_y(v, code, alpha);
}
