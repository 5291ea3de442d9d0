// norm.wgsl — batch normalisation (PyTorch BatchNorm1d/2d), forward (train and eval) and backward.
//
// x is viewed as [N, C, S] (S = H·W for [N,C,H,W], S = 1 for [N,F]); per channel c the
// statistics run over the M = N·S elements x[n,c,s]:
//   train:     μ = (1/M) Σ x;  σ² = (1/M) Σ (x − μ)²;  inv = 1/√(σ² + eps);  x̂ = (x − μ)·inv
//              y = γ·x̂ + β;  saved = [μ_0..μ_{C−1}, inv_0..inv_{C−1}]
//              running_mean ← (1 − m)·running_mean + m·μ
//              running_var  ← (1 − m)·running_var  + m·σ²·M/(M − 1)   (unbiased, as PyTorch)
//   eval:      y = γ·(x − running_mean)/√(running_var + eps) + β
//   backward:  dβ = Σ dy;  dγ = Σ dy·x̂;  dx = γ·inv·(dy − dβ/M − x̂·dγ/M)
// Dispatch: train and backward, ONE workgroup of 64 invocations per channel (folded grid);
// each invocation strides over the M elements and the partial sums are reduced in workgroup
// memory in a fixed tree order (deterministic, no atomics). Eval: one invocation per element.
// Bindings:
//   batch_norm_forward_train: 0 x, 1 gamma, 2 beta, 3 y, 4 saved, 5 running_mean, 6 running_var, 7 p
//   batch_norm_forward_eval:  0 x, 1 gamma, 2 beta, 3 running_mean, 4 running_var, 5 y, 6 p
//   batch_norm_backward:      0 x, 1 dy, 2 gamma, 3 saved, 4 dx, 5 dgamma, 6 dbeta, 7 p

struct NormUniform {
    n: u32, c: u32, s: u32, _pad0: u32,
    momentum: f32, eps: f32, _pad1: u32, _pad2: u32,
}

var<workgroup> part_a: array<f32, 64>;
var<workgroup> part_b: array<f32, 64>;

// Tree-reduces part_a and part_b; the totals end in element 0, visible to every invocation.
fn reduce_ab(li: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (li < s) {
            part_a[li] += part_a[li + s];
            part_b[li] += part_b[li + s];
        }
        workgroupBarrier();
    }
}

// The elements i = li, li + WG, li + 2·WG, … (i < N·S) of channel c, walked as positions
// (n, s) = (i / S, i % S) without a division per element: each step adds (q, r) = (WG / S,
// WG % S) and carries once.
fn bn_start(li: u32, s: u32) -> vec2<u32> { return vec2<u32>(li / s, li % s); }
fn bn_step(pos: vec2<u32>, q: u32, r: u32, s: u32) -> vec2<u32> {
    var n = pos.x + q;
    var t = pos.y + r;
    if (t >= s) { t -= s; n += 1u; }
    return vec2<u32>(n, t);
}
// Flat index of position (n, s) of channel c.
fn bn_index(pos: vec2<u32>, c: u32, nc: u32, s: u32) -> u32 {
    return (pos.x * nc + c) * s + pos.y;
}

// ---- forward, training ------------------------------------------------------------------
@group(0) @binding(0) var<storage, read> ft_x: array<f32>;
@group(0) @binding(1) var<storage, read> ft_g: array<f32>;
@group(0) @binding(2) var<storage, read> ft_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> ft_y: array<f32>;
@group(0) @binding(4) var<storage, read_write> ft_saved: array<f32>;
@group(0) @binding(5) var<storage, read_write> ft_rm: array<f32>;
@group(0) @binding(6) var<storage, read_write> ft_rv: array<f32>;
@group(0) @binding(7) var<uniform> ft_p: NormUniform;

@compute @workgroup_size(64)
fn batch_norm_forward_train(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) li: u32) {
    let p = ft_p;
    let c = flat_group(wid, nwg);
    // c is uniform across the workgroup, so every invocation leaves together
    if (c >= p.c) { return; }
    let m = p.n * p.s;
    var sum = 0.0;
    let q = WG / p.s;
    let r = WG % p.s;
    var pos = bn_start(li, p.s);
    for (var i = li; i < m; i += WG) {
        sum += ft_x[bn_index(pos, c, p.c, p.s)];
        pos = bn_step(pos, q, r, p.s);
    }
    part_a[li] = sum;
    part_b[li] = 0.0;
    reduce_ab(li);
    let mean = part_a[0] / f32(m);
    workgroupBarrier();
    var sq = 0.0;
    pos = bn_start(li, p.s);
    for (var i = li; i < m; i += WG) {
        let d = ft_x[bn_index(pos, c, p.c, p.s)] - mean;
        sq += d * d;
        pos = bn_step(pos, q, r, p.s);
    }
    part_a[li] = sq;
    part_b[li] = 0.0;
    reduce_ab(li);
    let var_b = part_a[0] / f32(m);
    let inv = 1.0 / sqrt(var_b + p.eps);
    let g = ft_g[c];
    let b = ft_b[c];
    pos = bn_start(li, p.s);
    for (var i = li; i < m; i += WG) {
        let k = bn_index(pos, c, p.c, p.s);
        ft_y[k] = (ft_x[k] - mean) * inv * g + b;
        pos = bn_step(pos, q, r, p.s);
    }
    if (li == 0u) {
        ft_saved[c] = mean;
        ft_saved[p.c + c] = inv;
        let var_u = part_a[0] / f32(max(m, 2u) - 1u);
        ft_rm[c] = (1.0 - p.momentum) * ft_rm[c] + p.momentum * mean;
        ft_rv[c] = (1.0 - p.momentum) * ft_rv[c] + p.momentum * var_u;
    }
}

// ---- forward, evaluation ----------------------------------------------------------------
@group(0) @binding(0) var<storage, read> fe_x: array<f32>;
@group(0) @binding(1) var<storage, read> fe_g: array<f32>;
@group(0) @binding(2) var<storage, read> fe_b: array<f32>;
@group(0) @binding(3) var<storage, read> fe_rm: array<f32>;
@group(0) @binding(4) var<storage, read> fe_rv: array<f32>;
@group(0) @binding(5) var<storage, read_write> fe_y: array<f32>;
@group(0) @binding(6) var<uniform> fe_p: NormUniform;

@compute @workgroup_size(64)
fn batch_norm_forward_eval(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) li: u32) {
    let p = fe_p;
    let k = flat_id(wid, nwg, li);
    if (k >= p.n * p.c * p.s) { return; }
    let c = (k / p.s) % p.c;
    let inv = 1.0 / sqrt(fe_rv[c] + p.eps);
    fe_y[k] = (fe_x[k] - fe_rm[c]) * inv * fe_g[c] + fe_b[c];
}

// ---- backward ---------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read> bw_x: array<f32>;
@group(0) @binding(1) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bw_g: array<f32>;
@group(0) @binding(3) var<storage, read> bw_saved: array<f32>;
@group(0) @binding(4) var<storage, read_write> bw_dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> bw_dg: array<f32>;
@group(0) @binding(6) var<storage, read_write> bw_db: array<f32>;
@group(0) @binding(7) var<uniform> bw_p: NormUniform;

@compute @workgroup_size(64)
fn batch_norm_backward(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let p = bw_p;
    let c = flat_group(wid, nwg);
    if (c >= p.c) { return; }
    let m = p.n * p.s;
    let mean = bw_saved[c];
    let inv = bw_saved[p.c + c];
    var sdy = 0.0;
    var sdyx = 0.0;
    let q = WG / p.s;
    let r = WG % p.s;
    var pos = bn_start(li, p.s);
    for (var i = li; i < m; i += WG) {
        let k = bn_index(pos, c, p.c, p.s);
        let dy = bw_dy[k];
        sdy += dy;
        sdyx += dy * ((bw_x[k] - mean) * inv);
        pos = bn_step(pos, q, r, p.s);
    }
    part_a[li] = sdy;
    part_b[li] = sdyx;
    reduce_ab(li);
    let db = part_a[0];
    let dg = part_b[0];
    let scale = bw_g[c] * inv;
    let fm = f32(m);
    pos = bn_start(li, p.s);
    for (var i = li; i < m; i += WG) {
        let k = bn_index(pos, c, p.c, p.s);
        let xh = (bw_x[k] - mean) * inv;
        bw_dx[k] = scale * (bw_dy[k] - db / fm - xh * dg / fm);
        pos = bn_step(pos, q, r, p.s);
    }
    if (li == 0u) {
        bw_dg[c] = dg;
        bw_db[c] = db;
    }
}
