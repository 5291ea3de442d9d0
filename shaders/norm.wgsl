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
// each invocation strides over the channel's planes in units (unit i = li, li + 64, …, as
// position (n, t) = (i / T, i % T), T units per plane), keeps a partial sum per unit
// component, adds them as (p0 + p1) + (p2 + p3), and the 64 partials are reduced in
// workgroup memory in a fixed tree order (deterministic, no atomics). Units, chosen by the
// host from C and S only (so every batch size runs the same pipeline; the CPU twin sums the
// same elements one at a time, which agrees to a few ulp):
//   `_v4`  S % 4 == 0: vec4 units, T = S/4, every unit inside its plane; y/dx stored as vec4.
//   `_u4`  else if C·S % 4 == 0: vec4 units of the tensor, T = (S + 2)/4 + 1 per plane
//          (enough for any offset of the plane in its first unit); a unit's components outside
//          the plane are masked (added as 0) and y/dx are stored component by component.
//   plain  otherwise: one float per unit, T = S.
// vec4 units exist for CPU adapters, which gather a storage access lane by lane: a vec4
// costs there about what one float does (a 128-bit load on a GPU).
// Eval: one invocation per element.
// Bindings:
//   batch_norm_forward_train(_v4, _u4): 0 x, 1 gamma, 2 beta, 3 y, 4 saved, 5 running_mean, 6 running_var, 7 p
//   batch_norm_forward_eval:            0 x, 1 gamma, 2 beta, 3 running_mean, 4 running_var, 5 y, 6 p
//   batch_norm_backward(_v4, _u4):      0 x, 1 dy, 2 gamma, 3 saved, 4 dx, 5 dgamma, 6 dbeta, 7 p

struct NormUniform {
    n: u32, c: u32, s: u32, _pad0: u32,
    momentum: f32, eps: f32, _pad1: u32, _pad2: u32,
}

var<workgroup> part_a: array<f32, 64>;
var<workgroup> part_b: array<f32, 64>;

// How the 64 partial sums are reduced, in the same fixed tree order either way (the host
// specialises it per adapter): 0 = every invocation takes part, a barrier per level (GPUs);
// 1 = invocation 0 walks the tree alone between two barriers (CPU adapters, where a barrier
// costs a switch through every invocation of the workgroup).
const SERIAL_TREE: u32 = 0u;

// Tree-reduces part_a and part_b; the totals end in element 0, visible to every invocation.
fn reduce_ab(li: u32) {
    workgroupBarrier();
    if (SERIAL_TREE == 1u) {
        if (li == 0u) {
            for (var s = WG / 2u; s > 0u; s = s / 2u) {
                for (var l = 0u; l < s; l++) {
                    part_a[l] += part_a[l + s];
                    part_b[l] += part_b[l + s];
                }
            }
        }
        workgroupBarrier();
        return;
    }
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

// The units i = li, li + WG, li + 2·WG, … (i < N·T, T units per plane) of channel c,
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

// vec4 units (`_v4`, `_u4`): units per plane, the unit index of position (n, t) of channel
// c (plane start b = (n·C + c)·S, unit b/4 + t), and which of its components lie in the plane
// (element 4t + k − b % 4 of it, in [0, S)).
fn bn_units4(s: u32) -> u32 { return select((s + 2u) / 4u + 1u, s / 4u, s % 4u == 0u); }
fn bn_unit4(pos: vec2<u32>, c: u32, p: NormUniform) -> u32 {
    return (pos.x * p.c + c) * p.s / 4u + pos.y;
}
fn bn_mask4(pos: vec2<u32>, c: u32, p: NormUniform) -> vec4<bool> {
    let r = (pos.x * p.c + c) * p.s % 4u;
    let e = vec4<i32>(i32(4u * pos.y) - i32(r)) + vec4<i32>(0, 1, 2, 3);
    return (e >= vec4<i32>(0)) & (e < vec4<i32>(i32(p.s)));
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

// (μ, Σ (x − μ)²) of channel c over vec4 units (`_v4`, `_u4`).
fn ft_stats4(li: u32, c: u32) -> vec2<f32> {
    let p = ft_p;
    let t = bn_units4(p.s);
    let mu = p.n * t;
    let q = WG / t;
    let r = WG % t;
    var sum = vec4<f32>(0.0);
    var pos = bn_start(li, t);
    for (var i = li; i < mu; i += WG) {
        sum += select(vec4<f32>(0.0), ft_x4[bn_unit4(pos, c, p)], bn_mask4(pos, c, p));
        pos = bn_step(pos, q, r, t);
    }
    let mean = bn_total(li, sum4(sum), 0.0).x / f32(p.n * p.s);
    var sq = vec4<f32>(0.0);
    pos = bn_start(li, t);
    for (var i = li; i < mu; i += WG) {
        let d = select(vec4<f32>(0.0), ft_x4[bn_unit4(pos, c, p)] - mean, bn_mask4(pos, c, p));
        sq += d * d;
        pos = bn_step(pos, q, r, t);
    }
    return vec2<f32>(mean, bn_total(li, sum4(sq), 0.0).x);
}

@compute @workgroup_size(64)
fn batch_norm_forward_train_v4(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) li: u32) {
    let p = ft_p;
    let c = flat_group(wid, nwg);
    if (c >= p.c) { return; }
    let st = ft_stats4(li, c);
    let m = p.n * p.s;
    let inv = 1.0 / sqrt(st.y / f32(m) + p.eps);
    let g = ft_g[c];
    let b = ft_b[c];
    let t = p.s / 4u;
    var pos = bn_start(li, t);
    for (var i = li; i < p.n * t; i += WG) {
        let k = bn_unit4(pos, c, p);
        ft_y4[k] = (ft_x4[k] - st.x) * inv * g + b;
        pos = bn_step(pos, WG / t, WG % t, t);
    }
    if (li == 0u) { bn_train_stats(c, st.x, st.y, m); }
}

@compute @workgroup_size(64)
fn batch_norm_forward_train_u4(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) li: u32) {
    let p = ft_p;
    let c = flat_group(wid, nwg);
    if (c >= p.c) { return; }
    let st = ft_stats4(li, c);
    let m = p.n * p.s;
    let inv = 1.0 / sqrt(st.y / f32(m) + p.eps);
    let g = ft_g[c];
    let b = ft_b[c];
    let t = bn_units4(p.s);
    var pos = bn_start(li, t);
    for (var i = li; i < p.n * t; i += WG) {
        let k = bn_unit4(pos, c, p);
        let y = (ft_x4[k] - st.x) * inv * g + b;
        let mask = bn_mask4(pos, c, p);
        for (var j = 0u; j < 4u; j++) {
            if (mask[j]) { ft_y[4u * k + j] = y[j]; }
        }
        pos = bn_step(pos, WG / t, WG % t, t);
    }
    if (li == 0u) { bn_train_stats(c, st.x, st.y, m); }
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

// (Σ dy, Σ dy·x̂) of channel c over vec4 units (`_v4`, `_u4`).
fn bw_sums4(li: u32, c: u32, mean: f32, inv: f32) -> vec2<f32> {
    let p = bw_p;
    let t = bn_units4(p.s);
    let q = WG / t;
    let r = WG % t;
    var sdy = vec4<f32>(0.0);
    var sdyx = vec4<f32>(0.0);
    var pos = bn_start(li, t);
    for (var i = li; i < p.n * t; i += WG) {
        let k = bn_unit4(pos, c, p);
        let mask = bn_mask4(pos, c, p);
        let dy = bw_dy4[k];
        sdy += select(vec4<f32>(0.0), dy, mask);
        sdyx += select(vec4<f32>(0.0), dy * ((bw_x4[k] - mean) * inv), mask);
        pos = bn_step(pos, q, r, t);
    }
    return bn_total(li, sum4(sdy), sum4(sdyx));
}

@compute @workgroup_size(64)
fn batch_norm_backward_v4(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let p = bw_p;
    let c = flat_group(wid, nwg);
    if (c >= p.c) { return; }
    let mean = bw_saved[c];
    let inv = bw_saved[p.c + c];
    let sums = bw_sums4(li, c, mean, inv);
    let scale = bw_g[c] * inv;
    let fm = f32(p.n * p.s);
    let t = p.s / 4u;
    var pos = bn_start(li, t);
    for (var i = li; i < p.n * t; i += WG) {
        let k = bn_unit4(pos, c, p);
        let xh = (bw_x4[k] - mean) * inv;
        bw_dx4[k] = scale * (bw_dy4[k] - sums.x / fm - xh * sums.y / fm);
        pos = bn_step(pos, WG / t, WG % t, t);
    }
    if (li == 0u) {
        bw_dg[c] = sums.y;
        bw_db[c] = sums.x;
    }
}

@compute @workgroup_size(64)
fn batch_norm_backward_u4(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let p = bw_p;
    let c = flat_group(wid, nwg);
    if (c >= p.c) { return; }
    let mean = bw_saved[c];
    let inv = bw_saved[p.c + c];
    let sums = bw_sums4(li, c, mean, inv);
    let scale = bw_g[c] * inv;
    let fm = f32(p.n * p.s);
    let t = bn_units4(p.s);
    var pos = bn_start(li, t);
    for (var i = li; i < p.n * t; i += WG) {
        let k = bn_unit4(pos, c, p);
        let xh = (bw_x4[k] - mean) * inv;
        let dx = scale * (bw_dy4[k] - sums.x / fm - xh * sums.y / fm);
        let mask = bn_mask4(pos, c, p);
        for (var j = 0u; j < 4u; j++) {
            if (mask[j]) { bw_dx[4u * k + j] = dx[j]; }
        }
        pos = bn_step(pos, WG / t, WG % t, t);
    }
    if (li == 0u) {
        bw_dg[c] = sums.y;
        bw_db[c] = sums.x;
    }
}
