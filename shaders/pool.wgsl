// pool.wgsl — 2-D max-pooling with recorded argmax, and its backward pass.
//
//   forward:   y[n,c,i,j]   = max_{a<KH, b<KW} x[n,c, i·sh+a−ph, j·sw+b−pw]   (padding counts as −∞)
//              idx[n,c,i,j] = h·W + w of that maximum inside its input plane (the first one on ties),
//                             PyTorch's `return_indices` convention.
//   backward:  dx[n,c,h,w]  = Σ_{(i,j) whose window holds (h,w)} dy[n,c,i,j] · [idx[n,c,i,j] == h·W+w]
//              — a gather over the few windows that can contain (h,w), so overlapping windows
//              (stride < kernel) sum correctly without float atomics, in a fixed order.
//
// Shapes: x/dx [N,C,H,W], y/dy/idx [N,C,OH,OW].
// Specialisation: for the executor's pooling layers the host replaces the `const`s below
// (GEO = 1 and the per-sample geometry: all of the uniform but N and C; src/ops/pool.rs), so
// the index arithmetic divides by constants — integer division by a uniform is scalarised on
// a CPU adapter and dominated these kernels there (2–3× faster specialised). The functional
// API keeps GEO = 0 so that arbitrary shapes share one pipeline.
// Dispatch: one invocation per output element (forward) or input element (backward), 64 per
// workgroup; the executor's strided max-pool backward runs max_pool2d_backward_blocks (below).
// Bindings:
//   max_pool2d_forward:   0 x, 1 y, 2 idx (u32), 3 p
//   max_pool2d_backward(_blocks):  0 dy, 1 idx (u32), 2 dx, 3 p

// ph, pw: the padding before each axis (windows start at i·sh − ph); eh, ew: the padding
// after it, which only the average's divisor reads (DIV = 1).
struct PoolUniform {
    n: u32, c: u32, h: u32, w: u32,
    kh: u32, kw: u32, sh: u32, sw: u32,
    ph: u32, pw: u32, oh: u32, ow: u32,
    eh: u32, ew: u32, _pad2: u32, _pad3: u32,
}

// ---- specialisation constants (GEO = 0: everything from the uniform) ----------------------
const GEO: u32 = 0u;
const S_H: u32 = 1u;
const S_W: u32 = 1u;
const S_KH: u32 = 1u;
const S_KW: u32 = 1u;
const S_SH: u32 = 1u;
const S_SW: u32 = 1u;
const S_PH: u32 = 0u;
const S_PW: u32 = 0u;
const S_OH: u32 = 1u;
const S_OW: u32 = 1u;
const S_EH: u32 = 0u;
const S_EW: u32 = 0u;
// The average's divisor (always specialised): 0 = KH·KW for every window; 1 = the window's
// part inside the padded input [−ph, H + eh) (PyTorch `ceil_mode` windows past the end);
// 2 = the real inputs in the window (padding not counted: Keras `same`,
// `count_include_pad=False`).
const DIV: u32 = 0u;

// The parameters with the specialised geometry substituted (constants when GEO = 1).
fn spec(p: PoolUniform) -> PoolUniform {
    if (GEO == 1u) {
        return PoolUniform(p.n, p.c, S_H, S_W, S_KH, S_KW, S_SH, S_SW, S_PH, S_PW, S_OH, S_OW,
                          S_EH, S_EW, 0u, 0u);
    }
    return p;
}

@group(0) @binding(0) var<storage, read> f_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_idx: array<u32>;
@group(0) @binding(3) var<uniform> f_p: PoolUniform;

// The window's extremum (the maximum, or the minimum when `is_min`) and its first index;
// shared by max_pool2d_forward and min_pool2d_forward, which bind the same layout.
fn arg_pool(wid: vec3<u32>, nwg: vec3<u32>, li: u32, is_min: bool) {
    let p = spec(f_p);
    let id = flat_id(wid, nwg, li);
    if (id >= p.n * p.c * p.oh * p.ow) { return; }
    let j = id % p.ow;
    let i = (id / p.ow) % p.oh;
    let plane = id / (p.ow * p.oh);
    let base = plane * p.h * p.w;
    // padding counts as −∞ for max and +∞ for min
    var best = bitcast<f32>(select(0xff800000u, 0x7f800000u, is_min));
    var arg = 0u;
    var found = false;
    for (var a = 0u; a < p.kh; a++) {
        let ih = i32(i * p.sh + a) - i32(p.ph);
        if (ih < 0 || ih >= i32(p.h)) { continue; }
        for (var b = 0u; b < p.kw; b++) {
            let iw = i32(j * p.sw + b) - i32(p.pw);
            if (iw < 0 || iw >= i32(p.w)) { continue; }
            let k = u32(ih) * p.w + u32(iw);
            let v = f_x[base + k];
            if (!found || select(v > best, v < best, is_min)) {
                best = v;
                arg = k;
                found = true;
            }
        }
    }
    f_y[id] = best;
    f_idx[id] = arg;
}

@compute @workgroup_size(64)
fn max_pool2d_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    arg_pool(wid, nwg, li, false);
}

@group(0) @binding(0) var<storage, read> b_dy: array<f32>;
@group(0) @binding(1) var<storage, read> b_idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> b_dx: array<f32>;
@group(0) @binding(3) var<uniform> b_p: PoolUniform;

@compute @workgroup_size(64)
fn max_pool2d_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let p = spec(b_p);
    let id = flat_id(wid, nwg, li);
    if (id >= p.n * p.c * p.h * p.w) { return; }
    let xw = id % p.w;
    let xh = (id / p.w) % p.h;
    let plane = id / (p.w * p.h);
    let k = xh * p.w + xw;
    // windows i with i·sh − ph ≤ xh ≤ i·sh − ph + kh − 1
    let th = xh + p.ph;
    let tw = xw + p.pw;
    var i0 = 0u;
    if (th + 1u > p.kh) { i0 = (th + 1u - p.kh + p.sh - 1u) / p.sh; }
    let i1 = min(th / p.sh, p.oh - 1u);
    var j0 = 0u;
    if (tw + 1u > p.kw) { j0 = (tw + 1u - p.kw + p.sw - 1u) / p.sw; }
    let j1 = min(tw / p.sw, p.ow - 1u);
    var acc = 0.0;
    for (var i = i0; i <= i1; i++) {
        for (var j = j0; j <= j1; j++) {
            let yi = (plane * p.oh + i) * p.ow + j;
            if (b_idx[yi] == k) { acc += b_dy[yi]; }
        }
    }
    b_dx[id] = acc;
}

// ---- max-pool backward by blocks (the executor's specialised layers with a stride > 1) -------
//
// max_pool2d_backward_blocks: the same dx as max_pool2d_backward, one invocation per block of
// BH×BW = SH×SW input positions {h : (h + ph) / sh = bi} × {w : (w + pw) / sw = bj}. The
// windows that can hold one of them are i ∈ [bi − WH + 1, bi], j ∈ [bj − WW + 1, bj]
// (WH = (kh − 1)/sh + 1, WW likewise); each is read once (idx, dy) for the whole block, not
// once per position, and its dy goes to the position its idx names (0 added to the others),
// in the same (i, j) order as max_pool2d_backward, so dx is bitwise the same. Loops over
// these constants are unrolled, so the block's sums stay in registers.
// Dispatch: one invocation per block, N·C·⌈(H + ph)/sh⌉·⌈(W + pw)/sw⌉ of them, 64 per workgroup.
const BH: u32 = 1u;
const BW: u32 = 1u;
const WH: u32 = 1u;
const WW: u32 = 1u;

@compute @workgroup_size(64)
fn max_pool2d_backward_blocks(@builtin(workgroup_id) wid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) li: u32) {
    let p = spec(b_p);
    let nbh = (p.h + p.ph + BH - 1u) / BH;
    let nbw = (p.w + p.pw + BW - 1u) / BW;
    let id = flat_id(wid, nwg, li);
    if (id >= p.n * p.c * nbh * nbw) { return; }
    let bj = id % nbw;
    let bi = (id / nbw) % nbh;
    let plane = id / (nbw * nbh);
    // the block's first position (h0, w0), possibly in the padding
    let h0 = i32(bi * BH) - i32(p.ph);
    let w0 = i32(bj * BW) - i32(p.pw);
    var acc: array<f32, 16>;
    /*unroll*/ for (var a = 0u; a < WH; a++) {
        let i = i32(bi + a) - i32(WH - 1u);
        /*unroll*/ for (var b = 0u; b < WW; b++) {
            let j = i32(bj + b) - i32(WW - 1u);
            if (i >= 0 && i < i32(p.oh) && j >= 0 && j < i32(p.ow)) {
                let yi = (plane * p.oh + u32(i)) * p.ow + u32(j);
                let k = b_idx[yi];
                let g = b_dy[yi];
                let u = i32(k / p.w) - h0;
                let v = i32(k % p.w) - w0;
                /*unroll*/ for (var du = 0u; du < BH; du++) {
                    /*unroll*/ for (var dv = 0u; dv < BW; dv++) {
                        let hit = u == i32(du) && v == i32(dv);
                        acc[du * BW + dv] += select(0.0, g, hit);
                    }
                }
            }
        }
    }
    /*unroll*/ for (var du = 0u; du < BH; du++) {
        /*unroll*/ for (var dv = 0u; dv < BW; dv++) {
            let h = h0 + i32(du);
            let w = w0 + i32(dv);
            if (h >= 0 && h < i32(p.h) && w >= 0 && w < i32(p.w)) {
                b_dx[(plane * p.h + u32(h)) * p.w + u32(w)] = acc[du * BW + dv];
            }
        }
    }
}

// ---- average pooling ----------------------------------------------------------------------
//
//   avg_pool2d_forward:   y[n,c,i,j]  = (1/(KH·KW)) · Σ_{a<KH, b<KW} x[n,c, i·sh+a−ph, j·sw+b−pw]
//                         (padding counts as 0 and is included in the divisor: PyTorch's
//                         `count_include_pad=True`; with padding ≤ kernel/2 and floor output
//                         sizes every window lies inside the padded input, so the divisor is
//                         always KH·KW)
//                         With DIV ≠ 0 (above) each window divides by its own count instead.
//   avg_pool2d_backward:  dx[n,c,h,w] = (1/(KH·KW)) · Σ_{(i,j) whose window holds (h,w)} dy[n,c,i,j]
//                         (DIV ≠ 0: Σ dy[n,c,i,j] / count(i,j))
//                         — the same gather over candidate windows as max_pool2d_backward, no atomics.
//   global_avg_pool_forward:   y[r]  = (1/HW) · Σ_{k<HW} x[r·HW + k]      (r = n·C + c; y [N,C])
//   global_avg_pool_backward:  dx[r·HW + k] = dy[r] / HW
//
// Dispatch: one invocation per output element (forward) or input element (backward), 64 per
// workgroup; grid folded past 65,535 workgroups. The avg_pool2d kernels share PoolUniform and
// the GEO specialisation above; the global ones take GapUniform.
// Bindings:
//   avg_pool2d_forward:        0 x, 1 y, 2 p
//   avg_pool2d_backward:       0 dy, 1 dx, 2 p
//   global_avg_pool_forward:   0 x, 1 y, 2 p
//   global_avg_pool_backward:  0 dy, 1 dx, 2 p

// The inputs one window covers along an axis, for the divisor: window start `start`
// (i·s − pad, may be negative), window k, input length len, end padding e.
fn win_count(start: i32, k: u32, len: u32, e: u32) -> u32 {
    if (DIV == 1u) { return u32(min(start + i32(k), i32(len + e)) - start); }
    return u32(min(start + i32(k), i32(len)) - max(start, 0));
}

// The divisor of output (i, j).
fn avg_div(p: PoolUniform, i: u32, j: u32) -> f32 {
    if (DIV == 0u) { return f32(p.kh * p.kw); }
    let ch = win_count(i32(i * p.sh) - i32(p.ph), p.kh, p.h, p.eh);
    let cw = win_count(i32(j * p.sw) - i32(p.pw), p.kw, p.w, p.ew);
    return f32(ch * cw);
}

@group(0) @binding(0) var<storage, read> af_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> af_y: array<f32>;
@group(0) @binding(2) var<uniform> af_p: PoolUniform;

@compute @workgroup_size(64)
fn avg_pool2d_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let p = spec(af_p);
    let id = flat_id(wid, nwg, li);
    if (id >= p.n * p.c * p.oh * p.ow) { return; }
    let j = id % p.ow;
    let i = (id / p.ow) % p.oh;
    let plane = id / (p.ow * p.oh);
    let base = plane * p.h * p.w;
    var acc = 0.0;
    for (var a = 0u; a < p.kh; a++) {
        let ih = i32(i * p.sh + a) - i32(p.ph);
        if (ih < 0 || ih >= i32(p.h)) { continue; }
        for (var b = 0u; b < p.kw; b++) {
            let iw = i32(j * p.sw + b) - i32(p.pw);
            if (iw < 0 || iw >= i32(p.w)) { continue; }
            acc += af_x[base + u32(ih) * p.w + u32(iw)];
        }
    }
    af_y[id] = acc / avg_div(p, i, j);
}

@group(0) @binding(0) var<storage, read> ab_dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> ab_dx: array<f32>;
@group(0) @binding(2) var<uniform> ab_p: PoolUniform;

@compute @workgroup_size(64)
fn avg_pool2d_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let p = spec(ab_p);
    let id = flat_id(wid, nwg, li);
    if (id >= p.n * p.c * p.h * p.w) { return; }
    let xw = id % p.w;
    let xh = (id / p.w) % p.h;
    let plane = id / (p.w * p.h);
    let th = xh + p.ph;
    let tw = xw + p.pw;
    var i0 = 0u;
    if (th + 1u > p.kh) { i0 = (th + 1u - p.kh + p.sh - 1u) / p.sh; }
    let i1 = min(th / p.sh, p.oh - 1u);
    var j0 = 0u;
    if (tw + 1u > p.kw) { j0 = (tw + 1u - p.kw + p.sw - 1u) / p.sw; }
    let j1 = min(tw / p.sw, p.ow - 1u);
    var acc = 0.0;
    for (var i = i0; i <= i1; i++) {
        for (var j = j0; j <= j1; j++) {
            let g = ab_dy[(plane * p.oh + i) * p.ow + j];
            if (DIV == 0u) { acc += g; } else { acc += g / avg_div(p, i, j); }
        }
    }
    if (DIV == 0u) { acc = acc / f32(p.kh * p.kw); }
    ab_dx[id] = acc;
}

struct GapUniform {
    rows: u32, hw: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<storage, read> gf_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> gf_y: array<f32>;
@group(0) @binding(2) var<uniform> gf_p: GapUniform;

@compute @workgroup_size(64)
fn global_avg_pool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) li: u32) {
    let r = flat_id(wid, nwg, li);
    if (r >= gf_p.rows) { return; }
    var acc = 0.0;
    for (var k = 0u; k < gf_p.hw; k++) {
        acc += gf_x[r * gf_p.hw + k];
    }
    gf_y[r] = acc / f32(gf_p.hw);
}

@group(0) @binding(0) var<storage, read> gb_dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> gb_dx: array<f32>;
@group(0) @binding(2) var<uniform> gb_p: GapUniform;

@compute @workgroup_size(64)
fn global_avg_pool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) li: u32) {
    let id = flat_id(wid, nwg, li);
    if (id >= gb_p.rows * gb_p.hw) { return; }
    gb_dx[id] = gb_dy[id / gb_p.hw] / f32(gb_p.hw);
}

// ---- min-pooling ------------------------------------------------------------------------
//
//   min_pool2d_forward:  y[n,c,i,j]   = min_{a<KH, b<KW} x[n,c, i·sh+a−ph, j·sw+b−pw]  (padding counts as +∞)
//                        idx[n,c,i,j] = h·W + w of that minimum inside its input plane (the first one on ties)
//   backward: routing by indices is the same as for max-pooling, so max_pool2d_backward is reused.
// Dispatch: one invocation per output element, 64 per workgroup; PoolUniform and GEO as above.
// Bindings:
//   min_pool2d_forward:  0 x, 1 y, 2 idx (u32), 3 p

@compute @workgroup_size(64)
fn min_pool2d_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    arg_pool(wid, nwg, li, true);
}
