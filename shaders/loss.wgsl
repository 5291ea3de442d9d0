// loss.wgsl — row-wise softmax; softmax + cross-entropy and MSE with their gradients and metrics.
//
//   softmax:        s[r,c] = exp(x[r,c] − max_r) / Σ_c' exp(x[r,c'] − max_r)
//   softmax_backward: dx[r,c] = y[r,c] · (dy[r,c] − Σ_c' dy[r,c']·y[r,c'])   (y = softmax output)
//   cross_entropy:  ℓ_r = logsumexp(x[r,·]) − x[r, t_r];  loss = (1/R) Σ_r ℓ_r
//                   dx[r,c] = (s[r,c] − [c = t_r]) · scale          (scale = 1/R)
//                   With label smoothing ε (PyTorch's `label_smoothing`) the target is
//                   q_c = (1 − ε)·[c = t_r] + ε/C: ℓ_r = (1 − ε)(lse − x_t) + ε(lse − Σ_c x_c / C),
//                   dx[r,c] = (s[r,c] − q_c) · scale  (ε = 0 runs the lines above unchanged)
//   mse:            loss = (1/L) Σ_i (p[i] − q[i])²;  dp[i] = 2 (p[i] − q[i]) · scale   (scale = 1/L)
//   bce_logits:     ℓ_i = w_c·t_i·softplus(−x_i) + (1 − t_i)·softplus(x_i)   (w_c = pos_weight[c] when
//                   POS_WEIGHT = 1, else 1; softplus(z) = max(z, 0) + log(1 + e^(−|z|)));  loss = (1/L) Σ_i ℓ_i
//                   dx[i] = (σ(x_i)·(w_c·t_i + 1 − t_i) − w_c·t_i) · scale   (scale = 1/L; PyTorch's
//                   BCEWithLogitsLoss); metrics: [R·loss, Σ_r (correct labels of row r)/C with
//                   x > 0 ⇔ t > ½, R, non-finite]
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
//   bce_logits:       0 x, 1 targets, 2 pos_weight ([C], unused unless POS_WEIGHT), 3 dx, 4 metrics, 5 p

struct LossUniform {
    rows: u32, cols: u32, accumulate: u32, has_grad: u32,
    scale: f32, smoothing: f32, _pad1: u32, _pad2: u32,
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
        let lse = mx + log(sum);
        let eps = p.smoothing;
        if (eps == 0.0) {
            lsum += lse - ce_x[base + t];
        } else {
            var xsum = 0.0;
            for (var c = 0u; c < p.cols; c++) { xsum += ce_x[base + c]; }
            lsum += (1.0 - eps) * (lse - ce_x[base + t]) + eps * (lse - xsum / f32(p.cols));
        }
        hits += select(0.0, 1.0, arg == t);
        if (p.has_grad == 1u) {
            for (var c = 0u; c < p.cols; c++) {
                let s = exp(ce_x[base + c] - mx) / sum;
                var q = select(0.0, 1.0, c == t);
                if (eps != 0.0) { q = (1.0 - eps) * q + eps / f32(p.cols); }
                ce_dx[base + c] = (s - q) * p.scale;
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

// ---- binary cross-entropy with logits ----------------------------------------------------
const POS_WEIGHT: u32 = 0u;   // 1: weigh the positive term by pos_weight[column]

@group(0) @binding(0) var<storage, read> bc_x: array<f32>;
@group(0) @binding(1) var<storage, read> bc_t: array<f32>;
@group(0) @binding(2) var<storage, read> bc_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> bc_dx: array<f32>;
@group(0) @binding(4) var<storage, read_write> bc_m: array<f32>;
@group(0) @binding(5) var<uniform> bc_p: LossUniform;

fn softplus(z: f32) -> f32 {
    return max(z, 0.0) + log(1.0 + exp(-abs(z)));
}

@compute @workgroup_size(64)
fn bce_logits(@builtin(local_invocation_index) li: u32) {
    let p = bc_p;
    let len = p.rows * p.cols;
    var lsum = 0.0;
    var hits = 0.0;
    for (var i = li; i < len; i += WG) {
        let x = bc_x[i];
        let t = bc_t[i];
        var w = 1.0;
        if (POS_WEIGHT == 1u) { w = bc_w[i % p.cols]; }
        lsum += w * t * softplus(-x) + (1.0 - t) * softplus(x);
        hits += select(0.0, 1.0, (x > 0.0) == (t > 0.5));
        if (p.has_grad == 1u) {
            let s = 1.0 / (1.0 + exp(-x));
            bc_dx[i] = (s * (w * t + 1.0 - t) - w * t) * p.scale;
        }
    }
    part_loss[li] = lsum;
    part_hit[li] = hits;
    reduce_parts(li);
    if (li == 0u) {
        let l = part_loss[0] * p.scale * f32(p.rows);
        let h = part_hit[0] / f32(p.cols);
        let bad = select(0.0, 1.0, non_finite(l));
        if (p.accumulate == 1u) {
            bc_m[0] += l;
            bc_m[1] += h;
            bc_m[2] += f32(p.rows);
            bc_m[3] = max(bc_m[3], bad);
        } else {
            bc_m[0] = l;
            bc_m[1] = h;
            bc_m[2] = f32(p.rows);
            bc_m[3] = bad;
        }
    }
}
