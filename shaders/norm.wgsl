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
// each invocation strides over the channel's elements in units of V = 1 or 4 consecutive
// floats (unit i = li, li + 64, …; unit (n, t) holds x[n, c, V·t .. V·t + V)), keeps V
// partial sums, adds them as (p0 + p1) + (p2 + p3), and the 64 partials are reduced in
// workgroup memory in a fixed tree order (deterministic, no atomics). The `_v4` entry points
// (V = 4, x/y/dy/dx bound as vec4 arrays; the host picks them when S % 4 == 0, so every unit
// lies in one plane) exist because a CPU adapter gathers a storage access lane by lane, and a
// vec4 costs about what one float does there (4× fewer gathers; a 128-bit load on a GPU).
// Eval: one invocation per element.
// Bindings:
//   batch_norm_forward_train(_v4): 0 x, 1 gamma, 2 beta, 3 y, 4 saved, 5 running_mean, 6 running_var, 7 p
//   batch_norm_forward_eval:       0 x, 1 gamma, 2 beta, 3 running_mean, 4 running_var, 5 y, 6 p
//   batch_norm_backward(_v4):      0 x, 1 dy, 2 gamma, 3 saved, 4 dx, 5 dgamma, 6 dbeta, 7 p

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

// The workgroup totals of the invocations' partial sums a and b (every invocation gets
// them; the parts are free again on return).
fn bn_total(li: u32, a: f32, b: f32) -> vec2<f32> {
    part_a[li] = a;
    part_b[li] = b;
    reduce_ab(li);
    let t = vec2<f32>(part_a[0], part_b[0]);
    workgroupBarrier();
    return t;
}

// A vec4's partial sums added in the fixed order (p0 + p1) + (p2 + p3).
fn sum4(v: vec4<f32>) -> f32 { return (v.x + v.y) + (v.z + v.w); }

// The units i = li, li + WG, li + 2·WG, … (i < N·T, T = S/V units per plane) of channel c,
// walked as positions (n, t) = (i / T, i % T) without a division per unit: each step adds
// (q, r) = (WG / T, WG % T) and carries once.
fn bn_start(li: u32, s: u32) -> vec2<u32> { return vec2<u32>(li / s, li % s); }
fn bn_step(pos: vec2<u32>, q: u32, r: u32, s: u32) -> vec2<u32> {
    var n = pos.x + q;
    var t = pos.y + r;
    if (t >= s) { t -= s; n += 1u; }
    return vec2<u32>(n, t);
}
// Flat index (in units) of position (n, t) of channel c, T units per plane.
fn bn_index(pos: vec2<u32>, c: u32, nc: u32, t: u32) -> u32 {
    return (pos.x * nc + c) * t + pos.y;
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
// the same x and y, 4 floats a unit (batch_norm_forward_train_v4)
@group(0) @binding(0) var<storage, read> ft_x4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> ft_y4: array<vec4<f32>>;

// saved and the running statistics of channel c from its mean and Σ (x − μ)² over m.
fn bn_train_stats(c: u32, mean: f32, sq: f32, m: u32) {
    let p = ft_p;
    ft_saved[c] = mean;
    ft_saved[p.c + c] = 1.0 / sqrt(sq / f32(m) + p.eps);
    let var_u = sq / f32(max(m, 2u) - 1u);
    ft_rm[c] = (1.0 - p.momentum) * ft_rm[c] + p.momentum * mean;
    ft_rv[c] = (1.0 - p.momentum) * ft_rv[c] + p.momentum * var_u;
}

@compute @workgroup_size(64)
fn batch_norm_forward_train(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) li: u32) {
    let p = ft_p;
    let c = flat_group(wid, nwg);
    // c is uniform across the workgroup, so every invocation leaves together
    if (c >= p.c) { return; }
    let m = p.n * p.s;
    let q = WG / p.s;
    let r = WG % p.s;
    var sum = 0.0;
    var pos = bn_start(li, p.s);
    for (var i = li; i < m; i += WG) {
        sum += ft_x[bn_index(pos, c, p.c, p.s)];
        pos = bn_step(pos, q, r, p.s);
    }
    let mean = bn_total(li, sum, 0.0).x / f32(m);
    var sq = 0.0;
    pos = bn_start(li, p.s);
    for (var i = li; i < m; i += WG) {
        let d = ft_x[bn_index(pos, c, p.c, p.s)] - mean;
        sq += d * d;
        pos = bn_step(pos, q, r, p.s);
    }
    let sq_t = bn_total(li, sq, 0.0).x;
    let inv = 1.0 / sqrt(sq_t / f32(m) + p.eps);
    let g = ft_g[c];
    let b = ft_b[c];
    pos = bn_start(li, p.s);
    for (var i = li; i < m; i += WG) {
        let k = bn_index(pos, c, p.c, p.s);
        ft_y[k] = (ft_x[k] - mean) * inv * g + b;
        pos = bn_step(pos, q, r, p.s);
    }
    if (li == 0u) { bn_train_stats(c, mean, sq_t, m); }
}

// V = 4: S % 4 == 0, T = S/4 vec4 units per plane.
@compute @workgroup_size(64)
fn batch_norm_forward_train_v4(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) li: u32) {
    let p = ft_p;
    let c = flat_group(wid, nwg);
    if (c >= p.c) { return; }
    let t = p.s / 4u;
    let mu = p.n * t;
    let q = WG / t;
    let r = WG % t;
    var sum = vec4<f32>(0.0);
    var pos = bn_start(li, t);
    for (var i = li; i < mu; i += WG) {
        sum += ft_x4[bn_index(pos, c, p.c, t)];
        pos = bn_step(pos, q, r, t);
    }
    let m = p.n * p.s;
    let mean = bn_total(li, sum4(sum), 0.0).x / f32(m);
    var sq = vec4<f32>(0.0);
    pos = bn_start(li, t);
    for (var i = li; i < mu; i += WG) {
        let d = ft_x4[bn_index(pos, c, p.c, t)] - mean;
        sq += d * d;
        pos = bn_step(pos, q, r, t);
    }
    let sq_t = bn_total(li, sum4(sq), 0.0).x;
    let inv = 1.0 / sqrt(sq_t / f32(m) + p.eps);
    let g = ft_g[c];
    let b = ft_b[c];
    pos = bn_start(li, t);
    for (var i = li; i < mu; i += WG) {
        let k = bn_index(pos, c, p.c, t);
        ft_y4[k] = (ft_x4[k] - mean) * inv * g + b;
        pos = bn_step(pos, q, r, t);
    }
    if (li == 0u) { bn_train_stats(c, mean, sq_t, m); }
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
// the same x, dy and dx, 4 floats a unit (batch_norm_backward_v4)
@group(0) @binding(0) var<storage, read> bw_x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> bw_dy4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> bw_dx4: array<vec4<f32>>;

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
    let q = WG / p.s;
    let r = WG % p.s;
    var sdy = 0.0;
    var sdyx = 0.0;
    var pos = bn_start(li, p.s);
    for (var i = li; i < m; i += WG) {
        let k = bn_index(pos, c, p.c, p.s);
        let dy = bw_dy[k];
        sdy += dy;
        sdyx += dy * ((bw_x[k] - mean) * inv);
        pos = bn_step(pos, q, r, p.s);
    }
    let t = bn_total(li, sdy, sdyx);
    let scale = bw_g[c] * inv;
    let fm = f32(m);
    pos = bn_start(li, p.s);
    for (var i = li; i < m; i += WG) {
        let k = bn_index(pos, c, p.c, p.s);
        let xh = (bw_x[k] - mean) * inv;
        bw_dx[k] = scale * (bw_dy[k] - t.x / fm - xh * t.y / fm);
        pos = bn_step(pos, q, r, p.s);
    }
    if (li == 0u) {
        bw_dg[c] = t.y;
        bw_db[c] = t.x;
    }
}

// V = 4: S % 4 == 0, T = S/4 vec4 units per plane.
@compute @workgroup_size(64)
fn batch_norm_backward_v4(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let p = bw_p;
    let c = flat_group(wid, nwg);
    if (c >= p.c) { return; }
    let tu = p.s / 4u;
    let mu = p.n * tu;
    let mean = bw_saved[c];
    let inv = bw_saved[p.c + c];
    let q = WG / tu;
    let r = WG % tu;
    var sdy = vec4<f32>(0.0);
    var sdyx = vec4<f32>(0.0);
    var pos = bn_start(li, tu);
    for (var i = li; i < mu; i += WG) {
        let k = bn_index(pos, c, p.c, tu);
        let dy = bw_dy4[k];
        sdy += dy;
        sdyx += dy * ((bw_x4[k] - mean) * inv);
        pos = bn_step(pos, q, r, tu);
    }
    let t = bn_total(li, sum4(sdy), sum4(sdyx));
    let scale = bw_g[c] * inv;
    let fm = f32(p.n * p.s);
    pos = bn_start(li, tu);
    for (var i = li; i < mu; i += WG) {
        let k = bn_index(pos, c, p.c, tu);
        let xh = (bw_x4[k] - mean) * inv;
        bw_dx4[k] = scale * (bw_dy4[k] - t.x / fm - xh * t.y / fm);
        pos = bn_step(pos, q, r, tu);
    }
    if (li == 0u) {
        bw_dg[c] = t.y;
        bw_db[c] = t.x;
    }
}
