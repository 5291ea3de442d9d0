// conv2d.wgsl — 2-D convolution (cross-correlation), forward and both backward passes.
//
//   forward:          y[n,o,i,j] = act( b[o] + Σ_c Σ_a Σ_b w[o,c,a,b] · x[n,c, i·sh+a−ph, j·sw+b−pw] )
//   backward-input:   dx[n,c,h,w] = Σ_o Σ_a Σ_b dy'[n,o,i,j] · w[o,c,a,b]  with i = (h+ph−a)/sh, j = (w+pw−b)/sw
//                     (only where the division is exact and in range): the full correlation of the
//                     stride-dilated dy' with the 180°-flipped kernel, written as a gather.
//   backward-weight:  dw[o,c,a,b] = Σ_n Σ_i Σ_j dy'[n,o,i,j] · x[n,c, i·sh+a−ph, j·sw+b−pw]
//                     db[o]       = Σ_n Σ_i Σ_j dy'[n,o,i,j]
//   where dy' = dy · act'(y) when an activation is fused into the forward output (act ≠ 0),
//   computed from the kept output y; dy' = dy otherwise.
//
// Shapes: x [N,C,H,W], w [O,C,KH,KW], b [O], y/dy [N,O,OH,OW]; all row-major f32.
// Dispatch: forward and backward-input, one invocation per output element, 64 per workgroup;
// backward-weight, one workgroup per dw element (then one per db element), its 64 invocations
// sum strided slices of N·OH·OW and reduce in workgroup memory in a fixed order (deterministic).
// Bindings: read-only inputs first, outputs next, the uniform `p` last:
//   conv2d_forward:          0 x, 1 w, 2 b, 3 y, 4 p
//   conv2d_backward_input:   0 dy, 1 w, 2 y, 3 dx, 4 p
//   conv2d_backward_weight:  0 x, 1 dy, 2 y, 3 dw, 4 db, 5 p

struct ConvParams {
    n: u32, c: u32, h: u32, w: u32,
    o: u32, kh: u32, kw: u32, sh: u32,
    sw: u32, ph: u32, pw: u32, oh: u32,
    ow: u32, has_bias: u32, act: u32, alpha: f32,
}

// ---- forward ---------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read> f_x: array<f32>;
@group(0) @binding(1) var<storage, read> f_w: array<f32>;
@group(0) @binding(2) var<storage, read> f_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(4) var<uniform> f_p: ConvParams;

@compute @workgroup_size(64)
fn conv2d_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let p = f_p;
    let idx = flat_id(wid, nwg, li);
    if (idx >= p.n * p.o * p.oh * p.ow) { return; }
    let j = idx % p.ow;
    let i = (idx / p.ow) % p.oh;
    let o = (idx / (p.ow * p.oh)) % p.o;
    let n = idx / (p.ow * p.oh * p.o);
    var acc = 0.0;
    for (var c = 0u; c < p.c; c++) {
        let xbase = (n * p.c + c) * p.h;
        let wbase = (o * p.c + c) * p.kh;
        for (var a = 0u; a < p.kh; a++) {
            let ih = i32(i * p.sh + a) - i32(p.ph);
            if (ih < 0 || ih >= i32(p.h)) { continue; }
            let xrow = (xbase + u32(ih)) * p.w;
            let wrow = (wbase + a) * p.kw;
            for (var b = 0u; b < p.kw; b++) {
                let iw = i32(j * p.sw + b) - i32(p.pw);
                if (iw < 0 || iw >= i32(p.w)) { continue; }
                acc += f_w[wrow + b] * f_x[xrow + u32(iw)];
            }
        }
    }
    if (p.has_bias == 1u) { acc += f_b[o]; }
    f_y[idx] = act_fwd(acc, p.act, p.alpha);
}

// ---- backward to the input -------------------------------------------------------------
@group(0) @binding(0) var<storage, read> bi_dy: array<f32>;
@group(0) @binding(1) var<storage, read> bi_w: array<f32>;
@group(0) @binding(2) var<storage, read> bi_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> bi_dx: array<f32>;
@group(0) @binding(4) var<uniform> bi_p: ConvParams;

@compute @workgroup_size(64)
fn conv2d_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let p = bi_p;
    let idx = flat_id(wid, nwg, li);
    if (idx >= p.n * p.c * p.h * p.w) { return; }
    let xw = idx % p.w;
    let xh = (idx / p.w) % p.h;
    let c = (idx / (p.w * p.h)) % p.c;
    let n = idx / (p.w * p.h * p.c);
    var acc = 0.0;
    for (var a = 0u; a < p.kh; a++) {
        let t = i32(xh + p.ph) - i32(a);
        if (t < 0 || (u32(t) % p.sh) != 0u) { continue; }
        let i = u32(t) / p.sh;
        if (i >= p.oh) { continue; }
        for (var b = 0u; b < p.kw; b++) {
            let s = i32(xw + p.pw) - i32(b);
            if (s < 0 || (u32(s) % p.sw) != 0u) { continue; }
            let j = u32(s) / p.sw;
            if (j >= p.ow) { continue; }
            for (var o = 0u; o < p.o; o++) {
                let yi = ((n * p.o + o) * p.oh + i) * p.ow + j;
                var g = bi_dy[yi];
                if (p.act != 0u) { g *= act_grad_y(bi_y[yi], p.act, p.alpha); }
                acc += g * bi_w[((o * p.c + c) * p.kh + a) * p.kw + b];
            }
        }
    }
    bi_dx[idx] = acc;
}

// ---- backward to the weights and bias ----------------------------------------------------
@group(0) @binding(0) var<storage, read> bw_x: array<f32>;
@group(0) @binding(1) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bw_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_dw: array<f32>;
@group(0) @binding(4) var<storage, read_write> bw_db: array<f32>;
@group(0) @binding(5) var<uniform> bw_p: ConvParams;

var<workgroup> bw_part: array<f32, 64>;

@compute @workgroup_size(64)
fn conv2d_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let p = bw_p;
    let g = flat_group(wid, nwg);
    let nw = p.o * p.c * p.kh * p.kw;
    let total = nw + select(0u, p.o, p.has_bias == 1u);
    if (g >= total) { return; }
    let per = p.n * p.oh * p.ow;
    let plane = p.oh * p.ow;
    var acc = 0.0;
    if (g < nw) {
        let b = g % p.kw;
        let a = (g / p.kw) % p.kh;
        let c = (g / (p.kw * p.kh)) % p.c;
        let o = g / (p.kw * p.kh * p.c);
        for (var t = li; t < per; t += WG) {
            let n = t / plane;
            let r = t % plane;
            let i = r / p.ow;
            let j = r % p.ow;
            let ih = i32(i * p.sh + a) - i32(p.ph);
            let iw = i32(j * p.sw + b) - i32(p.pw);
            if (ih < 0 || ih >= i32(p.h) || iw < 0 || iw >= i32(p.w)) { continue; }
            let yi = (n * p.o + o) * plane + r;
            var d = bw_dy[yi];
            if (p.act != 0u) { d *= act_grad_y(bw_y[yi], p.act, p.alpha); }
            acc += d * bw_x[((n * p.c + c) * p.h + u32(ih)) * p.w + u32(iw)];
        }
    } else {
        let o = g - nw;
        for (var t = li; t < per; t += WG) {
            let yi = ((t / plane) * p.o + o) * plane + t % plane;
            var d = bw_dy[yi];
            if (p.act != 0u) { d *= act_grad_y(bw_y[yi], p.act, p.alpha); }
            acc += d;
        }
    }
    bw_part[li] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (li < s) { bw_part[li] += bw_part[li + s]; }
        workgroupBarrier();
    }
    if (li == 0u) {
        if (g < nw) { bw_dw[g] = bw_part[0]; } else { bw_db[g - nw] = bw_part[0]; }
    }
}
