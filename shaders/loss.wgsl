// loss.wgsl — row-wise softmax; softmax + cross-entropy and MSE with their gradients and metrics.
//
//   softmax:        s[r,c] = exp(x[r,c] − max_r) / Σ_c' exp(x[r,c'] − max_r)
//   softmax_backward: dx[r,c] = y[r,c] · (dy[r,c] − Σ_c' dy[r,c']·y[r,c'])   (y = softmax output)
//   cross_entropy:  ℓ_r = logsumexp(x[r,·]) − x[r, t_r];  loss = (1/R) Σ_r ℓ_r
//                   dx[r,c] = (s[r,c] − [c = t_r]) · scale          (scale = 1/R)
//   mse:            loss = (1/L) Σ_i (p[i] − q[i])²;  dp[i] = 2 (p[i] − q[i]) · scale   (scale = 1/L)
//
// Metrics (4 floats): [Σ_r ℓ_r (or R·mse), correct predictions (argmax = target), rows, non-finite flag].
// With accumulate = 1 the kernel adds to the metrics (a training epoch), else it overwrites them.
// Dispatch: softmax_forward/backward, one invocation per row; the losses, ONE workgroup of 64 invocations that
// stride over the rows/elements and reduce in workgroup memory in a fixed order (deterministic).
// Bindings:
//   softmax_forward:  0 x, 1 s, 2 p
//   softmax_backward: 0 y, 1 dy, 2 dx, 3 p
//   cross_entropy:    0 x, 1 targets (u32), 2 dx, 3 metrics, 4 p
//   mse:              0 pred, 1 target, 2 dpred, 3 metrics, 4 p

struct LossUniform {
    rows: u32, cols: u32, accumulate: u32, has_grad: u32,
    scale: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

var<workgroup> part_loss: array<f32, 64>;
var<workgroup> part_hit: array<f32, 64>;

fn reduce_parts(li: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (li < s) {
            part_loss[li] += part_loss[li + s];
            part_hit[li] += part_hit[li + s];
        }
        workgroupBarrier();
    }
}

// ---- softmax ----------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read> sm_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> sm_s: array<f32>;
@group(0) @binding(2) var<uniform> sm_p: LossUniform;

@compute @workgroup_size(64)
fn softmax_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let r = flat_id(wid, nwg, li);
    if (r >= sm_p.rows) { return; }
    let base = r * sm_p.cols;
    var mx = sm_x[base];
    for (var c = 1u; c < sm_p.cols; c++) { mx = max(mx, sm_x[base + c]); }
    var sum = 0.0;
    for (var c = 0u; c < sm_p.cols; c++) { sum += exp(sm_x[base + c] - mx); }
    for (var c = 0u; c < sm_p.cols; c++) { sm_s[base + c] = exp(sm_x[base + c] - mx) / sum; }
}

@group(0) @binding(0) var<storage, read> sb_y: array<f32>;
@group(0) @binding(1) var<storage, read> sb_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> sb_dx: array<f32>;
@group(0) @binding(3) var<uniform> sb_p: LossUniform;

@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let r = flat_id(wid, nwg, li);
    if (r >= sb_p.rows) { return; }
    let base = r * sb_p.cols;
    var dot = 0.0;
    for (var c = 0u; c < sb_p.cols; c++) { dot += sb_dy[base + c] * sb_y[base + c]; }
    for (var c = 0u; c < sb_p.cols; c++) {
        sb_dx[base + c] = sb_y[base + c] * (sb_dy[base + c] - dot);
    }
}

// ---- softmax + cross-entropy ------------------------------------------------------------
@group(0) @binding(0) var<storage, read> ce_x: array<f32>;
@group(0) @binding(1) var<storage, read> ce_t: array<u32>;
@group(0) @binding(2) var<storage, read_write> ce_dx: array<f32>;
@group(0) @binding(3) var<storage, read_write> ce_m: array<f32>;
@group(0) @binding(4) var<uniform> ce_p: LossUniform;

@compute @workgroup_size(64)
fn cross_entropy(@builtin(local_invocation_index) li: u32) {
    let p = ce_p;
    var lsum = 0.0;
    var hits = 0.0;
    for (var r = li; r < p.rows; r += WG) {
        let base = r * p.cols;
        let t = ce_t[r];
        var mx = ce_x[base];
        var arg = 0u;
        for (var c = 1u; c < p.cols; c++) {
            let v = ce_x[base + c];
            if (v > mx) { mx = v; arg = c; }
        }
        var sum = 0.0;
        for (var c = 0u; c < p.cols; c++) { sum += exp(ce_x[base + c] - mx); }
        lsum += (mx + log(sum)) - ce_x[base + t];
        hits += select(0.0, 1.0, arg == t);
        if (p.has_grad == 1u) {
            for (var c = 0u; c < p.cols; c++) {
                let s = exp(ce_x[base + c] - mx) / sum;
                ce_dx[base + c] = (s - select(0.0, 1.0, c == t)) * p.scale;
            }
        }
    }
    part_loss[li] = lsum;
    part_hit[li] = hits;
    reduce_parts(li);
    if (li == 0u) {
        let l = part_loss[0];
        let bad = select(0.0, 1.0, non_finite(l));
        if (p.accumulate == 1u) {
            ce_m[0] += l;
            ce_m[1] += part_hit[0];
            ce_m[2] += f32(p.rows);
            ce_m[3] = max(ce_m[3], bad);
        } else {
            ce_m[0] = l;
            ce_m[1] = part_hit[0];
            ce_m[2] = f32(p.rows);
            ce_m[3] = bad;
        }
    }
}

// ---- mean squared error ------------------------------------------------------------------
@group(0) @binding(0) var<storage, read> ms_pred: array<f32>;
@group(0) @binding(1) var<storage, read> ms_tgt: array<f32>;
@group(0) @binding(2) var<storage, read_write> ms_dp: array<f32>;
@group(0) @binding(3) var<storage, read_write> ms_m: array<f32>;
@group(0) @binding(4) var<uniform> ms_p: LossUniform;

@compute @workgroup_size(64)
fn mse(@builtin(local_invocation_index) li: u32) {
    let p = ms_p;
    let len = p.rows * p.cols;
    var lsum = 0.0;
    for (var i = li; i < len; i += WG) {
        let d = ms_pred[i] - ms_tgt[i];
        lsum += d * d;
        if (p.has_grad == 1u) { ms_dp[i] = 2.0 * d * p.scale; }
    }
    part_loss[li] = lsum;
    part_hit[li] = 0.0;
    reduce_parts(li);
    if (li == 0u) {
        // per-row loss sum: R · mean
        let l = part_loss[0] * p.scale * f32(p.rows);
        let bad = select(0.0, 1.0, non_finite(l));
        if (p.accumulate == 1u) {
            ms_m[0] += l;
            ms_m[2] += f32(p.rows);
            ms_m[3] = max(ms_m[3], bad);
        } else {
            ms_m[0] = l;
            ms_m[1] = 0.0;
            ms_m[2] = f32(p.rows);
            ms_m[3] = bad;
        }
    }
}
