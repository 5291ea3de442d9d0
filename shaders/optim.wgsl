// optim.wgsl — gradient clipping by global norm, and one optimizer step over a flat
// parameter vector (PyTorch's formulas).
//
//   grad_norm_scale:  scale = min(1, max_norm / (‖grad‖₂ + 1e-6))   (torch.nn.utils.clip_grad_norm_)
//   optimizer_step:   with g = scale·grad + m·l1·sign(p) + m·wd·p (the L2 term is skipped for AdamW),
//                     m = decay[i] when the uniform's `masked` is set (regularisation per
//                     parameter group: 0 leaves the element undecayed), else 1:
//   0 SGD       p ← p − lr·g
//   1 Momentum  b ← μ·b + g;               p ← p − lr·b
//   2 Nesterov  b ← μ·b + g;               p ← p − lr·(g + μ·b)
//   3 RMSProp   v ← α·v + (1−α)·g²;  d = √v + ε;  μ>0: b ← μ·b + g/d, p ← p − lr·b;  else p ← p − lr·g/d
//   4 Adam      m ← m + (1−β₁)(g − m);  v ← β₂·v + (1−β₂)·g²;  p ← p − step·m/(√v/bc2 + ε)
//   5 AdamW     p ← p·(1 − lr·m·wd), then Adam
// step = lr/(1 − β₁ᵗ) and bc2 = √(1 − β₂ᵗ) are computed on the host in f64 each step.
// State s1 = momentum buffer b (kinds 1–3) or m (Adam); s2 = v. Both start at zero.
// scale[1] ≠ 0 skips the step, leaving parameters and state untouched: mixed precision's
// overflow (precision.wgsl's amp_unscale sets it; amp_update clears it after the step).
// scale[2] = the steps skipped so far, which Adam's bias corrections do not count (as
// PyTorch's GradScaler, which skips optimizer.step()): with any, step and bc2 are computed
// here in f32 for t − scale[2] (the uniform's `t`) instead of taken from the host.
// After the update, a non-finite parameter sets flag[3] = 1 (the NaN slot of the training
// metrics), so a NaN that no loss shows (a ReLU can map NaN to 0) still stops training.
// Dispatch: grad_norm_scale, ONE workgroup of 64 invocations striding over the vector and
// reducing in workgroup memory in a fixed order; optimizer_step, one invocation per element,
// 64 per workgroup, grid folded past 65,535 workgroups.
// Bindings:
//   grad_norm_scale:  0 grad, 1 scale (3 floats: writes the first), 2 n
//   optimizer_step:   0 grad, 1 scale (3 floats: factor, skip flag, skipped steps), 2 decay (the flat length, or a 1-float dummy
//                     when not masked), 3 param, 4 s1, 5 s2, 6 flag (4 floats), 7 p

struct ClipUniform {
    len: u32, max_norm: f32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<storage, read> n_g: array<f32>;
@group(0) @binding(1) var<storage, read_write> n_scale: array<f32>;
@group(0) @binding(2) var<uniform> n_params: ClipUniform;

var<workgroup> n_part: array<f32, 64>;

@compute @workgroup_size(64)
fn grad_norm_scale(@builtin(local_invocation_index) li: u32) {
    let q = n_params;
    var acc = 0.0;
    for (var i = li; i < q.len; i += WG) {
        let g = n_g[i];
        acc += g * g;
    }
    n_part[li] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (li < s) { n_part[li] += n_part[li + s]; }
        workgroupBarrier();
    }
    if (li == 0u) {
        n_scale[0] = min(1.0, q.max_norm / (sqrt(n_part[0]) + 1e-6));
    }
}

// The optimizer kind of optimizer_step (0-5 above), specialised per pipeline on the host,
// not branched on from the uniform: lavapipe (Mesa 22.x) recompiles a shader that
// branches on a uniform value with the value inlined at every bind of the pipeline and
// keeps every copy until the pipeline is destroyed (~120 KB of host memory per step).
const KIND: u32 = 0u;

struct OptUniform {
    kind: u32, len: u32, lr: f32, momentum: f32,
    alpha: f32, beta1: f32, beta2: f32, eps: f32,
    wd: f32, l1: f32, step: f32, bc2: f32,
    masked: u32, t: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<storage, read> o_g: array<f32>;
@group(0) @binding(1) var<storage, read> o_scale: array<f32>;
@group(0) @binding(2) var<storage, read> o_decay: array<f32>;
@group(0) @binding(3) var<storage, read_write> o_p: array<f32>;
@group(0) @binding(4) var<storage, read_write> o_s1: array<f32>;
@group(0) @binding(5) var<storage, read_write> o_s2: array<f32>;
@group(0) @binding(6) var<storage, read_write> o_flag: array<f32>;
@group(0) @binding(7) var<uniform> o_params: OptUniform;

@compute @workgroup_size(64)
fn optimizer_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let q = o_params;
    let i = flat_id(wid, nwg, li);
    if (i >= q.len || o_scale[1] != 0.0) { return; }
    var p = o_p[i];
    var g = o_g[i] * o_scale[0];
    // m·x is exact for m = 1, so an unmasked step is bitwise the unmasked formula
    var m = 1.0;
    if (q.masked != 0u) { m = o_decay[i]; }
    let l1 = q.l1 * m;
    let wd = q.wd * m;
    if (l1 != 0.0) { g += l1 * sign(p); }
    if (KIND != 5u && wd != 0.0) { g += wd * p; }
    switch KIND {
        case 0u: { p -= q.lr * g; }
        case 1u, 2u: {
            let b = q.momentum * o_s1[i] + g;
            o_s1[i] = b;
            if (KIND == 2u) { p -= q.lr * (g + q.momentum * b); } else { p -= q.lr * b; }
        }
        case 3u: {
            let v = q.alpha * o_s2[i] + (1.0 - q.alpha) * g * g;
            o_s2[i] = v;
            let d = sqrt(v) + q.eps;
            if (q.momentum > 0.0) {
                let b = q.momentum * o_s1[i] + g / d;
                o_s1[i] = b;
                p -= q.lr * b;
            } else {
                p -= q.lr * g / d;
            }
        }
        default: {
            if (KIND == 5u) { p *= 1.0 - q.lr * wd; }
            let m = o_s1[i] + (1.0 - q.beta1) * (g - o_s1[i]);
            let v = q.beta2 * o_s2[i] + (1.0 - q.beta2) * g * g;
            o_s1[i] = m;
            o_s2[i] = v;
            var step = q.step;
            var bc2 = q.bc2;
            if (o_scale[2] > 0.0) {
                // skipped steps do not count (mixed precision): bias corrections of t − skipped
                let t = f32(q.t) - o_scale[2];
                step = q.lr / (1.0 - pow(q.beta1, t));
                bc2 = sqrt(1.0 - pow(q.beta2, t));
            }
            p -= step * m / (sqrt(v) / bc2 + q.eps);
        }
    }
    o_p[i] = p;
    // every writer stores the same value
    if (non_finite(p)) { o_flag[3] = 1.0; }
}
