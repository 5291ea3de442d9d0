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
// Dispatch: one invocation per output element (forward) or input element (backward), 64 per workgroup.
// Bindings:
//   max_pool2d_forward:   0 x, 1 y, 2 idx (u32), 3 p
//   max_pool2d_backward:  0 dy, 1 idx (u32), 2 dx, 3 p

struct PoolParams {
    n: u32, c: u32, h: u32, w: u32,
    kh: u32, kw: u32, sh: u32, sw: u32,
    ph: u32, pw: u32, oh: u32, ow: u32,
    _pad0: u32, _pad1: u32, _pad2: u32, _pad3: u32,
}

@group(0) @binding(0) var<storage, read> f_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_idx: array<u32>;
@group(0) @binding(3) var<uniform> f_p: PoolParams;

@compute @workgroup_size(64)
fn max_pool2d_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let p = f_p;
    let id = flat_id(wid, nwg, li);
    if (id >= p.n * p.c * p.oh * p.ow) { return; }
    let j = id % p.ow;
    let i = (id / p.ow) % p.oh;
    let plane = id / (p.ow * p.oh);
    let base = plane * p.h * p.w;
    var best = bitcast<f32>(0xff800000u);
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
            if (!found || v > best) {
                best = v;
                arg = k;
                found = true;
            }
        }
    }
    f_y[id] = best;
    f_idx[id] = arg;
}

@group(0) @binding(0) var<storage, read> b_dy: array<f32>;
@group(0) @binding(1) var<storage, read> b_idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> b_dx: array<f32>;
@group(0) @binding(3) var<uniform> b_p: PoolParams;

@compute @workgroup_size(64)
fn max_pool2d_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let p = b_p;
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
