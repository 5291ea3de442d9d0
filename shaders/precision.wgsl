// precision.wgsl — mixed-precision training (`Precision::F16Mixed`, src/ops/precision.rs): the
// f32 → f16 casts of the tensors the conv and linear kernels read as f16, and the dynamic loss
// scale S with PyTorch's GradScaler semantics. Portable: the f16 values are written as bits,
// two per 32-bit word, so the family needs no device feature (the kernels that *read* them do).
//
//   cast_f16:     h[i] = f16(x[i])   round to nearest, ties to even; |x| past the f16 range → ±∞,
//                 NaN → NaN (done on the bits: WGSL leaves pack2x16float of an out-of-range
//                 value indeterminate, and the overflow must reach the gradients as ∞)
//   loss_scale:   d[i] ← S·d[i]      (the loss gradient, before the backward pass)
//   amp_unscale:  g[i] ← g[i]·(1/S); any non-finite result sets flags[1] = 1 (every writer
//                 stores the same value, so the order of writes does not matter)
//   amp_update:   one invocation. flags[1] ≠ 0 (the optimizer skipped the step): S ← S·backoff,
//                 good ← 0, skipped += 1; else good += 1 and, when good reaches the interval,
//                 S ← S·growth (if that is finite), good ← 0. Then flags[1] ← 0 for the next step,
//                 and flags[2] ← skipped (Adam's bias corrections leave skipped steps out).
// Shapes: x [len] f32, h [⌈len/2⌉] words (element 2w in the low half of word w), d, g [len];
// state [4] = (S, good steps, skipped steps, 0), counts held exactly in f32 up to 2²⁴;
// flags [3] = (the optimizer's gradient factor, skip flag, skipped steps) — the optimizer
// reads all three.
// Dispatch: one invocation per word (cast_f16) or element, 64 per workgroup, grid folded;
// amp_update one workgroup.
// Bindings: cast_f16: 0 x, 1 h, 2 p · loss_scale: 0 state, 1 d, 2 p ·
//           amp_unscale: 0 state, 1 g, 2 flags, 3 p · amp_update: 0 flags, 1 state, 2 p

struct LenUniform {
    len: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

struct ScalerUniform {
    growth: f32, backoff: f32, interval: u32, _pad: u32,
}

// The bits of the f16 nearest to x (ties to even), in the low 16 bits; twin cpu::matmul::f16_bits.
fn f16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let ex = i32((b >> 23u) & 0xffu);
    let man = b & 0x7fffffu;
    if (ex == 0xff) { return sign | 0x7c00u | select(0u, 0x200u, man != 0u); }
    let e = ex - 112; // the f16 exponent: − 127 + 15
    if (e >= 0x1f) { return sign | 0x7c00u; }
    if (e < -10) { return sign; }
    let full = man | 0x800000u;
    // normal: drop 13 of the 23 fraction bits; subnormal: the implicit bit moves in too
    let shift = select(u32(14 - e), 13u, e >= 1);
    let kept = full >> shift;
    let rest = full & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    let up = rest > half || (rest == half && (kept & 1u) == 1u);
    let k = kept + select(0u, 1u, up);
    if (e >= 1) {
        // k is 1.fraction with the implicit bit at 2^10; a carry moves up the exponent
        return sign | min((u32(e) << 10u) + (k - 0x400u), 0x7c00u);
    }
    return sign | k;
}

@group(0) @binding(0) var<storage, read> c_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> c_h: array<u32>;
@group(0) @binding(2) var<uniform> c_p: LenUniform;

@compute @workgroup_size(64)
fn cast_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let w = flat_id(wid, nwg, li);
    let len = c_p.len;
    if (2u * w >= len) { return; }
    let lo = f16_bits(c_x[2u * w]);
    var hi = 0u;
    if (2u * w + 1u < len) { hi = f16_bits(c_x[2u * w + 1u]); }
    c_h[w] = lo | (hi << 16u);
}

@group(0) @binding(0) var<storage, read> ls_state: array<f32>;
@group(0) @binding(1) var<storage, read_write> ls_d: array<f32>;
@group(0) @binding(2) var<uniform> ls_p: LenUniform;

@compute @workgroup_size(64)
fn loss_scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= ls_p.len) { return; }
    ls_d[i] = ls_d[i] * ls_state[0];
}

@group(0) @binding(0) var<storage, read> us_state: array<f32>;
@group(0) @binding(1) var<storage, read_write> us_g: array<f32>;
@group(0) @binding(2) var<storage, read_write> us_flags: array<f32>;
@group(0) @binding(3) var<uniform> us_p: LenUniform;

@compute @workgroup_size(64)
fn amp_unscale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= us_p.len) { return; }
    let g = us_g[i] * (1.0 / us_state[0]);
    us_g[i] = g;
    if (non_finite(g)) { us_flags[1] = 1.0; }
}

@group(0) @binding(0) var<storage, read_write> up_flags: array<f32>;
@group(0) @binding(1) var<storage, read_write> up_state: array<f32>;
@group(0) @binding(2) var<uniform> up_p: ScalerUniform;

@compute @workgroup_size(64)
fn amp_update(@builtin(local_invocation_index) li: u32) {
    if (li != 0u) { return; }
    if (up_flags[1] != 0.0) {
        up_state[0] = up_state[0] * up_p.backoff;
        up_state[1] = 0.0;
        up_state[2] = up_state[2] + 1.0;
    } else {
        let good = up_state[1] + 1.0;
        if (u32(good) >= up_p.interval) {
            let grown = up_state[0] * up_p.growth;
            if (!non_finite(grown)) { up_state[0] = grown; }
            up_state[1] = 0.0;
        } else {
            up_state[1] = good;
        }
    }
    up_flags[1] = 0.0;
    up_flags[2] = up_state[2];
}
