// conv.wgsl — convolution (cross-correlation by default) over up to three spatial axes,
// forward and both backward passes, each an implicit GEMM (no im2col buffer) with register
// tiling. 2-D convolutions run with D = KD = OD = 1, 1-D ones also with H = KH = OH = 1.
//
//   forward:          y[n,o,z,i,j] = act( b[o] + Σ_c Σ_e Σ_a Σ_b w[o,c,t(e,a,b)] · x[n,g·CG+c, z·sd+e·dd−pd, i·sh+a·dh−ph, j·sw+b·dw−pw] )
//                     GEMM: M = O, N = N·OD·OH·OW positions, K = CG·KD·KH·KW
//   backward-input:   dx[n,c,z,h,w] = Σ_o Σ_e Σ_a Σ_b dy'[n,o,z',i,j] · w[o,c−g·CG,t(e,a,b)]  with
//                     i = (h+ph−a·dh)/sh (likewise z', j), only where the division is exact
//                     and in range: the full correlation of the stride-dilated dy' with the
//                     180°-flipped kernel, written as a gather. GEMM: M = C, N = N·D·H·W, K = OG·KD·KH·KW
//   backward-weight:  dw[o,c,t(e,a,b)] = Σ_n Σ_z Σ_i Σ_j dy'[n,o,z,i,j] · x[n,g·CG+c, z·sd+e·dd−pd, …]
//                     db[o]       = Σ_n Σ_z Σ_i Σ_j dy'[n,o,z,i,j]         (a virtual column of ones)
//                     GEMM: M = O, N = CG·KD·KH·KW (+1), K = N·OD·OH·OW positions (the long side)
//   where dy' = dy · act'(·) when an activation is fused into the forward output (ACT ≠ 0),
//   computed from the kept output y, or, for activations whose derivative needs their input
//   (act_keeps_input in common.wgsl), from the pre-activation z the forward pass also wrote
//   (KEEP_Z = 1) and the host binds in y's place; dy' = dy otherwise; g is the channel group
//   (g = o / OG for an output channel, c / CG for an input channel: groups of CG inputs and
//   OG outputs); t(e,a,b) = (e,a,b), or (KD−1−e, KH−1−a, KW−1−b) for a true convolution
//   (FLIP = 1); pd/ph/pw the zeros before each axis (those after only shorten the output).
//
// Shapes: x [N,C,D,H,W], w [O,CG,KD,KH,KW], b [O], y/dy [N,O,OD,OH,OW]; all row-major f32.
//
// Specialisation: the `const`s below are replaced per pipeline by the host (src/gpu/kernels.rs,
// chosen in src/ops/conv.rs): the register tile, the fused activation and bias (which must
// equal the uniform's act, has_bias and flip). Conditions on these constants fold away when
// compiled; a condition on a uniform would not (a CPU adapter such as lavapipe runs both sides
// of every branch, masked). Loops marked `/*unroll*/` are expanded by the host, so every index
// into a register tile is a constant and the tile stays in registers. With groups, the host
// picks channel tiles (FR, IR, WR) that divide the group so a tile never straddles two groups.
//
// Dispatch (64 invocations per workgroup, the grid folded by `flat_group`):
//   forward:          a workgroup per (FR output channels) × (64·FS positions); each invocation
//                     accumulates an FR × FS register tile, its FS positions 64 apart.
//   backward-input:   a workgroup per (IR input channels) × (64·IS positions), likewise.
//   backward-weight:  a workgroup per WR × WS tile of [dw | db]; its 64 invocations split the
//                     N·OD·OH rows (row r to invocation r mod 64), each accumulating the whole
//                     tile over its rows, then the 64 partial tiles are summed in workgroup
//                     memory by a fixed-order tree (deterministic; no atomics): a barrier
//                     per level on GPUs; on CPU adapters (SERIAL_SUM = 1), where a barrier
//                     and every workgroup-memory access cost a pass through all 64
//                     invocations, invocation v loads value v's 64 partials and adds them
//                     in the same pairing in registers (tree_sum64: the same bits) between
//                     two barriers (the barrier tree measured up to 2.5× the whole weight
//                     gradient of a 1×1 layer on lavapipe).
// Variants computing the same functions for particular layers, picked by the host
// (src/ops/conv.rs::variant; see their sections at the end):
//   stride-1 rows (2-D layers without groups, dilation or flip): conv_backward_input_rows (an
//     invocation per IR channels × IS consecutive positions of one input row) and
//     conv_backward_weight_rows (tiles of WR output channels × WA whole kernel rows; also
//     1×1 kernels at any stride), both reusing each loaded value across the KWC kernel
//     columns that slide over it;
//   depthwise sliding windows (C = O = groups, sw = 1): conv_forward_depthwise,
//     conv_backward_input_depthwise (sh = 1 too), conv_backward_weight_depthwise;
//   pointwise (1×1, no padding or groups): conv_forward_pointwise,
//     conv_backward_input_pointwise (stride 1), conv_backward_weight_pointwise — GEMM-shaped
//     register tiles over channels × positions; their _v4 forms (stride 1, positions per
//     image and input channels multiples of 4) load vec4 units of 4 positions.
// Split reduction (SPLIT = 1, every backward-weight kernel): when the tiles of [dw | db] are
// too few to fill the device, the N·OD·OH rows are cut into `p.parts` partitions, partition q
// holding rows part_start(q) .. part_start(q + 1) (q·rows / parts, rounded down; empty when
// there are more partitions than rows). The grid repeats for each partition (workgroup
// t = q · tiles + tile) and each writes its partial tile to the scratch bound as dw, laid out
// [parts][O·K (dw) | O (db, with a bias)]; elementwise.wgsl's sum_parts then adds the
// partitions in order q = 0, 1, … — no atomics, so the result is the same bits every run.
// Without SPLIT, parts = 1 and the one partition is every row.
// Bindings: read-only inputs first, outputs next, the uniform `p` last:
//   conv_forward:          0 x, 1 w, 2 b, 3 y, 4 z, 5 p   (and its _depthwise, _pointwise(_v4))
//   conv_backward_input:   0 dy, 1 w, 2 y, 3 dx, 4 p        (and its _rows, _depthwise, _pointwise(_v4))
//   conv_backward_weight:  0 x, 1 dy, 2 y, 3 dw, 4 db, 5 p   (and its _rows, _depthwise, _pointwise(_v4))

struct ConvUniform {
    n: u32, c: u32, d: u32, h: u32,
    w: u32, o: u32, kd: u32, kh: u32,
    kw: u32, sd: u32, sh: u32, sw: u32,
    pd: u32, ph: u32, pw: u32, dd: u32,
    dh: u32, dw: u32, od: u32, oh: u32,
    ow: u32, cg: u32, og: u32, has_bias: u32,
    act: u32, alpha: f32, flip: u32, parts: u32,
}

// ---- specialisation constants (defaults: generic) -------------------------------------------
const ACT: u32 = 0u;        // fused activation code (see common.wgsl)
const KEEP_Z: u32 = 0u;     // forward: also write the pre-activation z
const HAS_BIAS: u32 = 0u;   // forward adds b, backward-weight writes db
const FLIP: u32 = 0u;       // 1: true convolution (kernel taps rotated by 180°)
const UNIT: u32 = 0u;       // backward-input: 1 when every stride is 1 (no divisions needed)
const PLAIN: u32 = 0u;      // 1: a 2-D geometry (D = KD = 1, no depth padding or stride, no
                            // dilation): the depth and dilation arithmetic folds away
const FR: u32 = 8u;         // forward: output channels per invocation
const FS: u32 = 8u;         // forward: positions per invocation
const IR: u32 = 4u;         // backward-input: input channels per invocation
const IS: u32 = 8u;         // backward-input: positions per invocation
const WR: u32 = 8u;         // backward-weight: output channels per tile
const WS: u32 = 8u;         // backward-weight: (c,e,a,b) columns per tile
const SERIAL_SUM: u32 = 0u; // backward-weight workgroup reductions: 0 = a fixed-order tree,
                            // a barrier per level (GPUs); 1 = invocation v sums value v's
                            // partials in the same tree pairing in registers (tree_sum64)
                            // between two barriers (CPU adapters, where a barrier and each
                            // workgroup-memory access cost a pass through every invocation)
const SPLIT: u32 = 0u;      // backward-weight: 1 = write the partial sums of row partition
                            // `part` into the scratch bound as dw (see "Split reduction")
// (the stride-1 variants add WA, KWC, KWM, WRED and SEG, declared with them below)

// A geometry value, or its plain 2-D value (1, or 0 for padding) when PLAIN = 1.
fn one_if_plain(v: u32) -> u32 { return select(v, 1u, PLAIN == 1u); }
fn zero_if_plain(v: u32) -> u32 { return select(v, 0u, PLAIN == 1u); }

// First row of partition `q` of the backward-weight rows (the twin's `part_starts`).
fn part_start(q: u32, rows: u32, parts: u32) -> u32 { return (q * rows) / parts; }

// The sum of WG = 64 partials in the pairing of the barrier-per-level tree (level s = 32, 16,
// …, 1 adds element l + s into l), computed by one invocation in registers: the tree's bits
// without its barriers (SERIAL_SUM = 1, CPU adapters).
fn tree_sum64(p: array<f32, 64>) -> f32 {
    var a = p;
    /*unroll*/ for (var l = 0u; l < 32u; l++) { a[l] += a[l + 32u]; }
    /*unroll*/ for (var l = 0u; l < 16u; l++) { a[l] += a[l + 16u]; }
    /*unroll*/ for (var l = 0u; l < 8u; l++) { a[l] += a[l + 8u]; }
    /*unroll*/ for (var l = 0u; l < 4u; l++) { a[l] += a[l + 4u]; }
    /*unroll*/ for (var l = 0u; l < 2u; l++) { a[l] += a[l + 2u]; }
    return a[0] + a[1];
}

// The stored tap of kernel offset `t` (flat over e, a, b) of a kernel with `kvol` taps.
fn conv_tap(t: u32, kvol: u32) -> u32 {
    if (FLIP == 1u) { return kvol - 1u - t; }
    return t;
}

// ---- forward ---------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read> f_x: array<f32>;
@group(0) @binding(1) var<storage, read> f_w: array<f32>;
@group(0) @binding(2) var<storage, read> f_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_z: array<f32>;
@group(0) @binding(5) var<uniform> f_p: ConvUniform;

@compute @workgroup_size(64)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let alpha = f_p.alpha;
    let g = f_p;
    let gd = one_if_plain(g.d); let gkd = one_if_plain(g.kd); let god = one_if_plain(g.od);
    let gsd = one_if_plain(g.sd); let gpd = zero_if_plain(g.pd); let gdd = one_if_plain(g.dd);
    let gdh = one_if_plain(g.dh); let gdw = one_if_plain(g.dw);
    let ohw = g.oh * g.ow;
    let plane = god * ohw;
    let npos = g.n * plane;
    let hw = g.h * g.w;
    let dhw = gd * hw;
    let kvol = gkd * g.kh * g.kw;
    let kk = g.cg * kvol;
    let tiles_p = (npos + WG * FS - 1u) / (WG * FS);
    let t = flat_group(wid, nwg);
    let o0 = (t / tiles_p) * FR;
    let q0 = (t % tiles_p) * (WG * FS) + li;
    let cbase = (min(o0, g.o - 1u) / g.og) * g.cg; // first input channel of the tile's group
    // per position: the x offset of its window's corner (negative inside padding)
    var xb: array<i32, FS>;
    var iz0: array<i32, FS>;
    var ih0: array<i32, FS>;
    var iw0: array<i32, FS>;
    /*unroll*/ for (var s = 0u; s < FS; s++) {
        let q = min(q0 + s * WG, npos - 1u);
        let n = q / plane;
        let r = q % plane;
        let rr = r % ohw;
        iz0[s] = i32((r / ohw) * gsd) - i32(gpd);
        ih0[s] = i32((rr / g.ow) * g.sh) - i32(g.ph);
        iw0[s] = i32((rr % g.ow) * g.sw) - i32(g.pw);
        xb[s] = i32((n * g.c + cbase) * dhw) + iz0[s] * i32(hw) + ih0[s] * i32(g.w) + iw0[s];
    }
    var wb: array<u32, FR>;
    /*unroll*/ for (var r = 0u; r < FR; r++) { wb[r] = min(o0 + r, g.o - 1u) * kk; }
    var acc: array<array<f32, FS>, FR>;
    for (var c = 0u; c < g.cg; c++) {
        var kt = 0u;
        for (var e = 0u; e < gkd; e++) {
            var zok: array<bool, FS>;
            /*unroll*/ for (var s = 0u; s < FS; s++) {
                let iz = iz0[s] + i32(e * gdd);
                zok[s] = iz >= 0 && iz < i32(gd);
            }
            for (var a = 0u; a < g.kh; a++) {
                var rok: array<bool, FS>;
                /*unroll*/ for (var s = 0u; s < FS; s++) {
                    let ih = ih0[s] + i32(a * gdh);
                    rok[s] = zok[s] && ih >= 0 && ih < i32(g.h);
                }
                let rowoff = i32(c * dhw + e * gdd * hw + a * gdh * g.w);
                for (var b = 0u; b < g.kw; b++) {
                    var xv: array<f32, FS>;
                    /*unroll*/ for (var s = 0u; s < FS; s++) {
                        let iw = iw0[s] + i32(b * gdw);
                        let ok = rok[s] && iw >= 0 && iw < i32(g.w);
                        let xi = select(0, xb[s] + rowoff + i32(b * gdw), ok);
                        xv[s] = select(0.0, f_x[u32(xi)], ok);
                    }
                    let wk = c * kvol + conv_tap(kt, kvol);
                    /*unroll*/ for (var r = 0u; r < FR; r++) {
                        let wv = f_w[wb[r] + wk];
                        /*unroll*/ for (var s = 0u; s < FS; s++) { acc[r][s] += wv * xv[s]; }
                    }
                    kt += 1u;
                }
            }
        }
    }
    /*unroll*/ for (var r = 0u; r < FR; r++) {
        let o = o0 + r;
        var bias = 0.0;
        if (HAS_BIAS == 1u) { bias = f_b[min(o, g.o - 1u)]; }
        /*unroll*/ for (var s = 0u; s < FS; s++) {
            let q = q0 + s * WG;
            if (o < g.o && q < npos) {
                let n = q / plane;
                let yi = (n * g.o + o) * plane + q % plane;
                if (KEEP_Z == 1u) { f_z[yi] = acc[r][s] + bias; }
                f_y[yi] = act_fwd(acc[r][s] + bias, ACT, alpha);
            }
        }
    }
}

// ---- backward to the input -------------------------------------------------------------
@group(0) @binding(0) var<storage, read> bi_dy: array<f32>;
@group(0) @binding(1) var<storage, read> bi_w: array<f32>;
@group(0) @binding(2) var<storage, read> bi_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> bi_dx: array<f32>;
@group(0) @binding(4) var<uniform> bi_p: ConvUniform;

@compute @workgroup_size(64)
fn conv_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let alpha = bi_p.alpha;
    let g = bi_p;
    let gd = one_if_plain(g.d); let gkd = one_if_plain(g.kd); let god = one_if_plain(g.od);
    let gsd = one_if_plain(g.sd); let gpd = zero_if_plain(g.pd); let gdd = one_if_plain(g.dd);
    let gdh = one_if_plain(g.dh); let gdw = one_if_plain(g.dw);
    let hw = g.h * g.w;
    let dhw = gd * hw;
    let npos = g.n * dhw;
    let ohw = g.oh * g.ow;
    let plane = god * ohw;
    let kvol = gkd * g.kh * g.kw;
    let kk = g.cg * kvol;
    let tiles_p = (npos + WG * IS - 1u) / (WG * IS);
    let t = flat_group(wid, nwg);
    let c0 = (t / tiles_p) * IR;
    let q0 = (t % tiles_p) * (WG * IS) + li;
    let grp = min(c0, g.c - 1u) / g.cg;      // the tile's channel group
    let obase = grp * g.og;                  // its first output channel
    var yb: array<u32, IS>;
    var tz: array<i32, IS>;
    var th: array<i32, IS>;
    var tw: array<i32, IS>;
    /*unroll*/ for (var s = 0u; s < IS; s++) {
        let q = min(q0 + s * WG, npos - 1u);
        let n = q / dhw;
        let r = q % dhw;
        let rr = r % hw;
        yb[s] = (n * g.o + obase) * plane;
        tz[s] = i32(r / hw + gpd);
        th[s] = i32(rr / g.w + g.ph);
        tw[s] = i32(rr % g.w + g.pw);
    }
    var wb: array<u32, IR>;
    /*unroll*/ for (var r = 0u; r < IR; r++) { wb[r] = (min(c0 + r, g.c - 1u) - grp * g.cg) * kvol; }
    var acc: array<array<f32, IS>, IR>;
    var kt = 0u;
    for (var e = 0u; e < gkd; e++) {
        for (var a = 0u; a < g.kh; a++) {
            for (var b = 0u; b < g.kw; b++) {
                // the dy' element each position gathers for this (e, a, b), if any
                var yo: array<u32, IS>;
                var ok: array<bool, IS>;
                /*unroll*/ for (var s = 0u; s < IS; s++) {
                    let tk = tz[s] - i32(e * gdd);
                    let ti = th[s] - i32(a * gdh);
                    let tj = tw[s] - i32(b * gdw);
                    var k = u32(max(tk, 0));
                    var i = u32(max(ti, 0));
                    var j = u32(max(tj, 0));
                    if (UNIT == 0u) { k /= gsd; i /= g.sh; j /= g.sw; }
                    ok[s] = tk >= 0 && ti >= 0 && tj >= 0
                            && k * gsd == u32(tk) && i * g.sh == u32(ti) && j * g.sw == u32(tj)
                            && k < god && i < g.oh && j < g.ow;
                    yo[s] = select(0u, yb[s] + (k * g.oh + i) * g.ow + j, ok[s]);
                }
                let kab = conv_tap(kt, kvol);
                for (var o = 0u; o < g.og; o++) {
                    var dv: array<f32, IS>;
                    /*unroll*/ for (var s = 0u; s < IS; s++) {
                        let yi = yo[s] + o * plane;
                        var dv1 = bi_dy[yi];
                        if (ACT != 0u) { dv1 *= act_grad_fused(bi_y[yi], ACT, alpha); }
                        dv[s] = select(0.0, dv1, ok[s]);
                    }
                    /*unroll*/ for (var r = 0u; r < IR; r++) {
                        let wv = bi_w[(obase + o) * kk + wb[r] + kab];
                        /*unroll*/ for (var s = 0u; s < IS; s++) { acc[r][s] += wv * dv[s]; }
                    }
                }
                kt += 1u;
            }
        }
    }
    /*unroll*/ for (var r = 0u; r < IR; r++) {
        let c = c0 + r;
        /*unroll*/ for (var s = 0u; s < IS; s++) {
            let q = q0 + s * WG;
            if (c < g.c && q < npos) {
                let n = q / dhw;
                bi_dx[(n * g.c + c) * dhw + q % dhw] = acc[r][s];
            }
        }
    }
}

// ---- backward to the weights and bias ----------------------------------------------------
@group(0) @binding(0) var<storage, read> bw_x: array<f32>;
@group(0) @binding(1) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bw_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_dw: array<f32>;
@group(0) @binding(4) var<storage, read_write> bw_db: array<f32>;
@group(0) @binding(5) var<uniform> bw_p: ConvUniform;

var<workgroup> bw_red: array<f32, WG * WS>;

@compute @workgroup_size(64)
fn conv_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let alpha = bw_p.alpha;
    let g = bw_p;
    let gd = one_if_plain(g.d); let gkd = one_if_plain(g.kd); let god = one_if_plain(g.od);
    let gsd = one_if_plain(g.sd); let gpd = zero_if_plain(g.pd); let gdd = one_if_plain(g.dd);
    let gdh = one_if_plain(g.dh); let gdw = one_if_plain(g.dw);
    let kvol = gkd * g.kh * g.kw;
    let kk = g.cg * kvol;
    let hw = g.h * g.w;
    let dhw = gd * hw;
    let ohw = g.oh * g.ow;
    let plane = god * ohw;
    let tiles_k = (kk + HAS_BIAS + WS - 1u) / WS;
    let tiles = ((g.o + WR - 1u) / WR) * tiles_k;
    let tq = flat_group(wid, nwg);
    let part = tq / tiles;
    let t = tq % tiles;
    let nrows = g.n * god * g.oh;
    let row0 = part_start(part, nrows, g.parts);
    let row1 = part_start(part + 1u, nrows, g.parts);
    let pbase = part * (g.o * kk + HAS_BIAS * g.o); // the partition's slice of the scratch
    let o0 = (t / tiles_k) * WR;
    let k0 = (t % tiles_k) * WS;
    let cbase = (min(o0, g.o - 1u) / g.og) * g.cg; // first input channel of the tile's group
    // per column: x offset inside a sample relative to the window corner, kernel offsets
    // along each axis; the bias column (k = kk) reads ones, columns past it read zeros
    var koff: array<i32, WS>;
    var ke: array<i32, WS>;
    var ka: array<i32, WS>;
    var kb: array<i32, WS>;
    var isx: array<bool, WS>;
    var cst: array<f32, WS>;
    /*unroll*/ for (var s = 0u; s < WS; s++) {
        let k = min(k0 + s, kk - 1u);
        let c = k / kvol;
        let tap = conv_tap(k % kvol, kvol); // the kernel offset this stored tap is used at
        let e = tap / (g.kh * g.kw);
        let a = (tap / g.kw) % g.kh;
        let b = tap % g.kw;
        ke[s] = i32(e * gdd) - i32(gpd);
        ka[s] = i32(a * gdh) - i32(g.ph);
        kb[s] = i32(b * gdw) - i32(g.pw);
        koff[s] = i32((cbase + c) * dhw) + ke[s] * i32(hw) + ka[s] * i32(g.w) + kb[s];
        isx[s] = k0 + s < kk;
        cst[s] = select(0.0, 1.0, HAS_BIAS == 1u && k0 + s == kk);
    }
    var yoff: array<u32, WR>;
    /*unroll*/ for (var r = 0u; r < WR; r++) { yoff[r] = min(o0 + r, g.o - 1u) * plane; }
    var acc: array<array<f32, WS>, WR>;
    for (var row = row0 + li; row < row1; row += WG) {
        let n = row / (god * g.oh);
        let zi = row % (god * g.oh);
        let z = zi / g.oh;
        let i = zi % g.oh;
        let ybase = n * g.o * plane + zi * g.ow;
        let izb = i32(z * gsd);
        let ihb = i32(i * g.sh);
        let xbase = i32(n * g.c * dhw) + izb * i32(hw) + ihb * i32(g.w);
        var rok: array<bool, WS>;
        /*unroll*/ for (var s = 0u; s < WS; s++) {
            let iz = izb + ke[s];
            let ih = ihb + ka[s];
            rok[s] = isx[s] && iz >= 0 && iz < i32(gd) && ih >= 0 && ih < i32(g.h);
        }
        for (var j = 0u; j < g.ow; j++) {
            var dv: array<f32, WR>;
            /*unroll*/ for (var r = 0u; r < WR; r++) {
                let yi = ybase + yoff[r] + j;
                var d = bw_dy[yi];
                if (ACT != 0u) { d *= act_grad_fused(bw_y[yi], ACT, alpha); }
                dv[r] = d;
            }
            let jw = i32(j * g.sw);
            var xv: array<f32, WS>;
            /*unroll*/ for (var s = 0u; s < WS; s++) {
                let iw = jw + kb[s];
                let ok = rok[s] && iw >= 0 && iw < i32(g.w);
                let xi = select(0, xbase + koff[s] + jw, ok);
                xv[s] = select(cst[s], bw_x[u32(xi)], ok);
            }
            /*unroll*/ for (var r = 0u; r < WR; r++) {
                /*unroll*/ for (var s = 0u; s < WS; s++) { acc[r][s] += dv[r] * xv[s]; }
            }
        }
    }
    // sum the 64 partial tiles, one output row at a time, by a fixed-order tree
    /*unroll*/ for (var r = 0u; r < WR; r++) {
        /*unroll*/ for (var s = 0u; s < WS; s++) { bw_red[s * WG + li] = acc[r][s]; }
        workgroupBarrier();
        if (SERIAL_SUM == 1u) {
            if (li < WS) {
                var a: array<f32, 64>;
                /*unroll*/ for (var l = 0u; l < 64u; l++) { a[l] = bw_red[li * WG + l]; }
                bw_red[li * WG] = tree_sum64(a);
            }
            workgroupBarrier();
        } else {
            for (var st = WG / 2u; st > 0u; st = st / 2u) {
                if (li < st) {
                    /*unroll*/ for (var s = 0u; s < WS; s++) { bw_red[s * WG + li] += bw_red[s * WG + li + st]; }
                }
                workgroupBarrier();
            }
        }
        let o = o0 + r;
        if (li < WS && o < g.o) {
            let k = k0 + li;
            if (k < kk) {
                bw_dw[pbase + o * kk + k] = bw_red[li * WG];
            } else if (HAS_BIAS == 1u && k == kk) {
                if (SPLIT == 1u) { bw_dw[pbase + g.o * kk + o] = bw_red[li * WG]; } else { bw_db[o] = bw_red[li * WG]; }
            }
        }
        workgroupBarrier();
    }
}

// ---- backward to the weights, stride-1 rows variant ---------------------------------------
// The same sums as conv_backward_weight for sw = 1 (any sw for 1×1 kernels, KWC = 1, whose
// window of one input slides by sw), with the tile's columns whole kernel
// rows: WA (c,a) rows × KWC columns b. Along an output row, consecutive positions j see the
// input row shifted by one, so each invocation keeps a window of KWC inputs per (c,a) row and
// loads one new input per row and position instead of KWC. The bias sum db[o] is accumulated
// by every tile and written by the last one. Same bindings as conv_backward_weight.
const WA: u32 = 6u;    // (c,a) kernel rows per tile
const KWC: u32 = 5u;   // kernel width (= kw)
const KWM: u32 = 4u;   // KWC − 1
const WRED: u32 = 31u; // WA·KWC + 1 values per output channel to reduce

var<workgroup> bwr_red: array<f32, WG * WRED>;

@compute @workgroup_size(64)
fn conv_backward_weight_rows(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) li: u32) {
    let alpha = bw_p.alpha;
    let g = bw_p;
    let hw = g.h * g.w;
    let plane = g.oh * g.ow;
    let nca = g.c * g.kh;
    let kk = nca * KWC;
    let tiles_a = (nca + WA - 1u) / WA;
    let tiles = ((g.o + WR - 1u) / WR) * tiles_a;
    let tq = flat_group(wid, nwg);
    let part = tq / tiles;
    let t = tq % tiles;
    let nrows = g.n * g.oh;
    let row0 = part_start(part, nrows, g.parts);
    let row1 = part_start(part + 1u, nrows, g.parts);
    let pbase = part * (g.o * kk + HAS_BIAS * g.o); // the partition's slice of the scratch
    let o0 = (t / tiles_a) * WR;
    let ca0 = (t % tiles_a) * WA;
    // per (c,a) row of the tile: x offset of the input row inside a sample, kernel row − ph
    var coff: array<i32, WA>;
    var ka: array<i32, WA>;
    var live: array<bool, WA>;
    /*unroll*/ for (var u = 0u; u < WA; u++) {
        let ca = min(ca0 + u, nca - 1u);
        let c = ca / g.kh;
        ka[u] = i32(ca % g.kh) - i32(g.ph);
        coff[u] = i32(c * hw) + ka[u] * i32(g.w);
        live[u] = ca0 + u < nca;
    }
    var yoff: array<u32, WR>;
    /*unroll*/ for (var r = 0u; r < WR; r++) { yoff[r] = min(o0 + r, g.o - 1u) * plane; }
    var acc: array<array<array<f32, KWC>, WA>, WR>;
    var accb: array<f32, WR>;
    let wi = i32(g.w);
    let pw = i32(g.pw);
    for (var row = row0 + li; row < row1; row += WG) {
        let n = row / g.oh;
        let i = row % g.oh;
        let ybase = n * g.o * plane + i * g.ow;
        let ihb = i32(i * g.sh);
        let xb = i32(n * g.c * hw) + ihb * wi;
        var rok: array<bool, WA>;
        /*unroll*/ for (var u = 0u; u < WA; u++) {
            let ih = ihb + ka[u];
            rok[u] = live[u] && ih >= 0 && ih < i32(g.h);
        }
        // window[u][b] = x[row of u, j − pw + b]; preload b = 1..KWC−1 for j = −1
        var win: array<array<f32, KWC>, WA>;
        /*unroll*/ for (var u = 0u; u < WA; u++) {
            /*unroll*/ for (var b = 0u; b < KWM; b++) {
                let iw = i32(b) - pw;
                let ok = rok[u] && iw >= 0 && iw < wi;
                win[u][b + 1u] = select(0.0, bw_x[u32(select(0, xb + coff[u] + iw, ok))], ok);
            }
        }
        for (var j = 0u; j < g.ow; j++) {
            // a 1×1 kernel has no window to slide: any column stride (folds away otherwise)
            let iw = i32(select(j, j * g.sw, KWC == 1u) + KWM) - pw;
            let okc = iw >= 0 && iw < wi;
            /*unroll*/ for (var u = 0u; u < WA; u++) {
                /*unroll*/ for (var b = 0u; b < KWM; b++) { win[u][b] = win[u][b + 1u]; }
                let ok = rok[u] && okc;
                win[u][KWM] = select(0.0, bw_x[u32(select(0, xb + coff[u] + iw, ok))], ok);
            }
            /*unroll*/ for (var r = 0u; r < WR; r++) {
                let yi = ybase + yoff[r] + j;
                var d = bw_dy[yi];
                if (ACT != 0u) { d *= act_grad_fused(bw_y[yi], ACT, alpha); }
                accb[r] += d;
                /*unroll*/ for (var u = 0u; u < WA; u++) {
                    /*unroll*/ for (var b = 0u; b < KWC; b++) { acc[r][u][b] += d * win[u][b]; }
                }
            }
        }
    }
    // sum the 64 partial tiles, one output channel at a time, by a fixed-order tree
    let last_a = t % tiles_a == tiles_a - 1u;
    /*unroll*/ for (var r = 0u; r < WR; r++) {
        /*unroll*/ for (var u = 0u; u < WA; u++) {
            /*unroll*/ for (var b = 0u; b < KWC; b++) { bwr_red[(u * KWC + b) * WG + li] = acc[r][u][b]; }
        }
        bwr_red[(WRED - 1u) * WG + li] = accb[r];
        workgroupBarrier();
        if (SERIAL_SUM == 1u) {
            for (var v = li; v < WRED; v += WG) {
                var a: array<f32, 64>;
                /*unroll*/ for (var l = 0u; l < 64u; l++) { a[l] = bwr_red[v * WG + l]; }
                bwr_red[v * WG] = tree_sum64(a);
            }
            workgroupBarrier();
        } else {
            for (var st = WG / 2u; st > 0u; st = st / 2u) {
                if (li < st) {
                    for (var v = 0u; v < WRED; v++) { bwr_red[v * WG + li] += bwr_red[v * WG + li + st]; }
                }
                workgroupBarrier();
            }
        }
        let o = o0 + r;
        if (o < g.o) {
            for (var v = li; v < WRED; v += WG) {
                if (v < WRED - 1u) {
                    let ca = ca0 + v / KWC;
                    if (ca < nca) { bw_dw[pbase + o * kk + ca * KWC + v % KWC] = bwr_red[v * WG]; }
                } else if (HAS_BIAS == 1u && last_a) {
                    if (SPLIT == 1u) { bw_dw[pbase + g.o * kk + o] = bwr_red[v * WG]; } else { bw_db[o] = bwr_red[v * WG]; }
                }
            }
        }
        workgroupBarrier();
    }
}

// ---- backward to the input, stride-1 rows variant -------------------------------------------
// The same sums as conv_backward_input for sh = sw = 1. Each invocation computes IR input
// channels × IS consecutive positions of one input row; for every (o, a) it loads the
// IS + KWC − 1 values of dy' the row segment needs once (instead of IS·KWC gathers) and the
// IR·KWC weights, then does IR·IS·KWC multiply-adds. Same bindings as conv_backward_input.
const SEG: u32 = 12u;  // IS + KWM

@compute @workgroup_size(64)
fn conv_backward_input_rows(@builtin(workgroup_id) wid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) li: u32) {
    let alpha = bi_p.alpha;
    let g = bi_p;
    let hw = g.h * g.w;
    let plane = g.oh * g.ow;
    let khw = g.kh * KWC;
    let wo = g.c * khw;
    let segs = (g.w + IS - 1u) / IS;
    let nseg = g.n * g.h * segs;
    let tiles_p = (nseg + WG - 1u) / WG;
    let t = flat_group(wid, nwg);
    let c0 = (t / tiles_p) * IR;
    let qq = (t % tiles_p) * WG + li;
    let live = qq < nseg;
    let q = min(qq, nseg - 1u);
    let nh = q / segs;
    let w0 = (q % segs) * IS;
    let n = nh / g.h;
    let h = nh % g.h;
    let ybase = n * g.o * plane;
    // the dy' columns of the segment: j = w0 + pw − KWM + t
    let j0 = i32(w0 + g.pw) - i32(KWM);
    var segok: array<bool, SEG>;
    var segj: array<u32, SEG>;
    /*unroll*/ for (var e = 0u; e < SEG; e++) {
        let j = j0 + i32(e);
        segok[e] = j >= 0 && j < i32(g.ow);
        segj[e] = u32(select(0, j, segok[e]));
    }
    var wb: array<u32, IR>;
    /*unroll*/ for (var r = 0u; r < IR; r++) { wb[r] = min(c0 + r, g.c - 1u) * khw; }
    var acc: array<array<f32, IS>, IR>;
    for (var a = 0u; a < g.kh; a++) {
        let ti = i32(h + g.ph) - i32(a);
        let iok = ti >= 0 && ti < i32(g.oh);
        let irow = u32(max(ti, 0)) * g.ow;
        for (var o = 0u; o < g.o; o++) {
            let yb = ybase + o * plane + irow;
            var seg: array<f32, SEG>;
            /*unroll*/ for (var e = 0u; e < SEG; e++) {
                let ok = iok && segok[e];
                let yi = select(0u, yb + segj[e], ok);
                var d = bi_dy[yi];
                if (ACT != 0u) { d *= act_grad_fused(bi_y[yi], ACT, alpha); }
                seg[e] = select(0.0, d, ok);
            }
            let wk = o * wo + a * KWC;
            /*unroll*/ for (var r = 0u; r < IR; r++) {
                /*unroll*/ for (var b = 0u; b < KWC; b++) {
                    let wv = bi_w[wk + wb[r] + b];
                    /*unroll*/ for (var s = 0u; s < IS; s++) { acc[r][s] += wv * seg[s + KWM - b]; }
                }
            }
        }
    }
    /*unroll*/ for (var r = 0u; r < IR; r++) {
        let c = c0 + r;
        /*unroll*/ for (var s = 0u; s < IS; s++) {
            let w = w0 + s;
            if (live && c < g.c && w < g.w) { bi_dx[(n * g.c + c) * hw + h * g.w + w] = acc[r][s]; }
        }
    }
}

// ---- forward, depthwise sliding-window variant -----------------------------------------------
// The same sums as conv_forward for depthwise layers (groups = C = O: output channel c reads
// input channel c only) of a plain 2-D geometry with sw = 1 and no flip. Each invocation
// computes DS consecutive outputs of each of DR consecutive output rows of one channel
// (rows i0 .. i0 + DR − 1 of a plane; those past OH are computed on clamped inputs and not
// stored): it walks the (DR − 1)·sh + kh input rows the block reads, loading the
// DS + DKW − 1 inputs each run slides over into registers once and adding their products
// (with the DKW weights of the kernel row they are) to every output row whose window holds
// that input row — one input load per DS·DKW·(rows it serves) multiply-adds (conv_forward loads
// one input per multiply-add here, its channel tile being 1; a block of DR rows loads
// (DR − 1)·sh + kh input rows instead of DR·kh). Same bindings as conv_forward. (Its own
// constants: a pipeline specialises the whole module, and the rows variants' KWC/KWM/SEG
// must stay consistent with each other.)
const DS: u32 = 8u;     // outputs per invocation and row: a run along the output row
const DKW: u32 = 3u;    // kernel width (= kw)
const DSEG: u32 = 10u;  // DS + DKW − 1 inputs per kernel row
const DR: u32 = 1u;     // output rows per invocation (backward-input: input rows)

@compute @workgroup_size(64)
fn conv_forward_depthwise(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let g = f_p;
    let segs = (g.ow + DS - 1u) / DS;
    let blocks = (g.oh + DR - 1u) / DR;
    let total = g.n * g.o * blocks * segs;
    let qq = flat_group(wid, nwg) * WG + li;
    let live = qq < total;
    let q = min(qq, total - 1u);
    let blk = q / segs;            // (n·C + c)·blocks + ib: the block of output rows
    let j0 = (q % segs) * DS;
    let i0 = (blk % blocks) * DR;  // its first output row
    let nc = blk / blocks;         // n·C + c (C = O)
    let c = nc % g.o;
    let xplane = nc * g.h * g.w;   // x[n, c, 0, 0]
    let iw0 = i32(j0) - i32(g.pw);
    var acc: array<array<f32, DS>, DR>;
    // input row e of the block (ih = i0·sh + e − ph) is row a = e − d·sh of output row d's
    // window (when 0 ≤ a < kh)
    for (var e = 0u; e < (DR - 1u) * g.sh + g.kh; e++) {
        let ih = i32(i0 * g.sh + e) - i32(g.ph);
        let rok = ih >= 0 && ih < i32(g.h);
        let rb = i32(xplane) + ih * i32(g.w);
        var seg: array<f32, DSEG>;
        /*unroll*/ for (var t = 0u; t < DSEG; t++) {
            let iw = iw0 + i32(t);
            let ok = rok && iw >= 0 && iw < i32(g.w);
            seg[t] = select(0.0, f_x[u32(select(0, rb + iw, ok))], ok);
        }
        /*unroll*/ for (var d = 0u; d < DR; d++) {
            let a = i32(e) - i32(d * g.sh);
            if (a >= 0 && a < i32(g.kh)) {
                let wk = (c * g.kh + u32(a)) * DKW;
                /*unroll*/ for (var b = 0u; b < DKW; b++) {
                    let wv = f_w[wk + b];
                    /*unroll*/ for (var s = 0u; s < DS; s++) { acc[d][s] += wv * seg[s + b]; }
                }
            }
        }
    }
    var bias = 0.0;
    if (HAS_BIAS == 1u) { bias = f_b[c]; }
    /*unroll*/ for (var d = 0u; d < DR; d++) {
        let yb = (nc * g.oh + i0 + d) * g.ow;
        /*unroll*/ for (var s = 0u; s < DS; s++) {
            let j = j0 + s;
            if (live && i0 + d < g.oh && j < g.ow) {
                let v = acc[d][s] + bias;
                if (KEEP_Z == 1u) { f_z[yb + j] = v; }
                f_y[yb + j] = act_fwd(v, ACT, g.alpha);
            }
        }
    }
}

// ---- backward to the input, depthwise sliding-window variant -------------------------------
// The same sums as conv_backward_input for the layers conv_forward_depthwise serves, with
// sh = sw = 1 as well: dx[n,c,h,w] = Σ_a Σ_b w[c,a,b] · dy'[n,c, h+ph−a, w+pw−b]. Each
// invocation computes DS consecutive inputs of each of DR consecutive input rows of one
// channel: it walks the DR + kh − 1 rows of dy' the block reads, loading the DS + DKW − 1
// values of dy' each run needs into registers once (applying the fused activation's
// derivative as it loads), and the DKW weights of each kernel row it meets. Same bindings
// as conv_backward_input.
@compute @workgroup_size(64)
fn conv_backward_input_depthwise(@builtin(workgroup_id) wid: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) li: u32) {
    let g = bi_p;
    let segs = (g.w + DS - 1u) / DS;
    let blocks = (g.h + DR - 1u) / DR;
    let total = g.n * g.c * blocks * segs;
    let qq = flat_group(wid, nwg) * WG + li;
    let live = qq < total;
    let q = min(qq, total - 1u);
    let blk = q / segs;            // (n·C + c)·blocks + hb: the block of input rows
    let w0 = (q % segs) * DS;
    let h0 = (blk % blocks) * DR;  // its first input row
    let nc = blk / blocks;         // n·C + c (C = O)
    let c = nc % g.c;
    let yplane = nc * g.oh * g.ow; // dy[n, c, 0, 0]
    // the dy' columns of the run: j = w0 + pw − (DKW − 1) + t
    let j0 = i32(w0 + g.pw) - i32(DKW - 1u);
    var acc: array<array<f32, DS>, DR>;
    // dy' row e of the block (i = h0 + ph − (kh − 1) + e) meets input row d under kernel row
    // a = d + kh − 1 − e; walked downwards, so each input sums a ascending
    for (var k = 0u; k < DR + g.kh - 1u; k++) {
        let e = DR + g.kh - 2u - k;
        let i = i32(h0 + g.ph + e) - i32(g.kh - 1u);
        let rok = i >= 0 && i < i32(g.oh);
        let rb = i32(yplane) + i * i32(g.ow);
        var seg: array<f32, DSEG>;
        /*unroll*/ for (var t = 0u; t < DSEG; t++) {
            let j = j0 + i32(t);
            let ok = rok && j >= 0 && j < i32(g.ow);
            let yi = u32(select(0, rb + j, ok));
            var dv = bi_dy[yi];
            if (ACT != 0u) { dv *= act_grad_fused(bi_y[yi], ACT, g.alpha); }
            seg[t] = select(0.0, dv, ok);
        }
        /*unroll*/ for (var d = 0u; d < DR; d++) {
            let a = i32(d + g.kh - 1u) - i32(e);
            if (a >= 0 && a < i32(g.kh)) {
                let wk = (c * g.kh + u32(a)) * DKW;
                /*unroll*/ for (var b = 0u; b < DKW; b++) {
                    let wv = bi_w[wk + b];
                    /*unroll*/ for (var s = 0u; s < DS; s++) { acc[d][s] += wv * seg[s + DKW - 1u - b]; }
                }
            }
        }
    }
    /*unroll*/ for (var d = 0u; d < DR; d++) {
        let xb = (nc * g.h + h0 + d) * g.w;
        /*unroll*/ for (var s = 0u; s < DS; s++) {
            let w = w0 + s;
            if (live && h0 + d < g.h && w < g.w) { bi_dx[xb + w] = acc[d][s]; }
        }
    }
}

// ---- backward to the weights, depthwise sliding-window variant ------------------------------
// The same sums as conv_backward_weight for the layers conv_forward_depthwise serves:
//   dw[c,a,b] = Σ_n Σ_i Σ_j dy'[n,c,i,j] · x[n,c, i·sh + a − ph, j + b − pw],  db[c] = Σ dy'
// A workgroup per DCH channels (and row partition, SPLIT as the other backward-weight
// kernels): invocation li works on channel c0 + li / DL, and the DL = 64 / DCH invocations of
// a channel split its work (DCH > 1 on small images, chosen by the host, so an invocation
// has more than a few positions to sum), in one of two ways (the generic kernel loads an
// input per multiply-add here):
//   rows (DBLOCK = 0): the N·OH output rows, row r to invocation r mod DL; along a row each
//     invocation keeps a DKH × DKW window of inputs, so a position costs one dy' load and
//     DKH new inputs for DKH·DKW multiply-adds;
//   blocks (DBLOCK = 1, small images): units of DR output rows of an image × DS columns,
//     unit u to invocation u mod DL; per unit the DR·DS values of dy', then each of the
//     (DR − 1)·sh + DKH input rows the unit's windows cover once (DS + DKW − 1 inputs, the
//     forward's sliding window), added for every window row it is — fewer loads per position
//     where a row is only a few positions wide (on lavapipe: 4×4 images 0.8 vs 1.2 ms, 14×14
//     images slower than rows, docs/results/issue17-subgroups.md).
// Each channel's DL partials are summed as conv_backward_weight's (a tree over the DL
// invocations, in registers with SERIAL_SUM). Same bindings as conv_backward_weight.
const DKH: u32 = 3u;    // kernel height (= kh)
const DKM: u32 = 2u;    // DKW − 1 (set with DKW by every depthwise pipeline)
const DRED: u32 = DKH * DKW + 1u; // values per channel to reduce: the taps and db
const DCH: u32 = 1u;    // channels per workgroup (1, 2, 4 or 8; more on small images)
const DL: u32 = 64u;    // WG / DCH: invocations per channel (set with DCH)
const DBLOCK: u32 = 0u; // 1: blocks of DR rows × DS columns; 0: whole rows

var<workgroup> bwd_red: array<f32, WG * DRED>;

@compute @workgroup_size(64)
fn conv_backward_weight_depthwise(@builtin(workgroup_id) wid: vec3<u32>,
                                  @builtin(num_workgroups) nwg: vec3<u32>,
                                  @builtin(local_invocation_index) li: u32) {
    let g = bw_p;
    let tq = flat_group(wid, nwg);
    let cgroups = (g.o + DCH - 1u) / DCH;
    // a folded grid may hold a few workgroups past the last partition: they all leave
    if (tq >= cgroups * g.parts) { return; }
    let part = tq / cgroups;
    let c0 = (tq % cgroups) * DCH; // the workgroup's first channel
    let lc = li / DL;              // this invocation's channel c0 + lc, and its lane in it
    let ll = li % DL;
    let c = min(c0 + lc, g.o - 1u);
    let nrows = g.n * g.oh;
    let row0 = part_start(part, nrows, g.parts);
    // invocations of a channel past the last one sum nothing
    let row1 = select(row0, part_start(part + 1u, nrows, g.parts), c0 + lc < g.o);
    let kk = DKH * DKW;
    let pbase = part * (g.o * kk + HAS_BIAS * g.o);
    var acc: array<array<f32, DKW>, DKH>;
    var accb = 0.0;
    if (DBLOCK == 1u) {
        // units: a block of DR output rows (i0 = k·DR of image n) × a run of DS columns, over
        // the images the partition's rows [row0, row1) touch; rows outside it count as dy' = 0
        let blocks = (g.oh + DR - 1u) / DR;
        let segs = (g.ow + DS - 1u) / DS;
        let n0 = row0 / g.oh;
        let units = select(0u, ((row1 - 1u) / g.oh + 1u - n0) * blocks * segs, row1 > row0);
        for (var u = ll; u < units; u += DL) {
            let n = n0 + u / (blocks * segs);
            let i0 = (u / segs % blocks) * DR;
            let j0 = (u % segs) * DS;
            // dy' of the unit, 0 outside the image and the partition
            var dv: array<array<f32, DS>, DR>;
            /*unroll*/ for (var d = 0u; d < DR; d++) {
                let fr = n * g.oh + i0 + d; // the flat output row
                let rok = i0 + d < g.oh && fr >= row0 && fr < row1;
                let yb = ((n * g.o + c) * g.oh + min(i0 + d, g.oh - 1u)) * g.ow;
                /*unroll*/ for (var s = 0u; s < DS; s++) {
                    let ok = rok && j0 + s < g.ow;
                    let yi = select(0u, yb + j0 + s, ok);
                    var v = bw_dy[yi];
                    if (ACT != 0u) { v *= act_grad_fused(bw_y[yi], ACT, g.alpha); }
                    dv[d][s] = select(0.0, v, ok);
                    accb += dv[d][s];
                }
            }
            // input row e of the block (ih = i0·sh + e − ph) is row a of output row d's window
            // where e = d·sh + a: its DS + DKW − 1 inputs are loaded once for every such pair
            let xplane = i32((n * g.c + c) * g.h * g.w);
            let iw0 = i32(j0) - i32(g.pw);
            for (var e = 0u; e < (DR - 1u) * g.sh + DKH; e++) {
                let ih = i32(i0 * g.sh + e) - i32(g.ph);
                let hok = ih >= 0 && ih < i32(g.h);
                let rb = xplane + ih * i32(g.w);
                var seg: array<f32, DSEG>;
                /*unroll*/ for (var t = 0u; t < DSEG; t++) {
                    let iw = iw0 + i32(t);
                    let ok = hok && iw >= 0 && iw < i32(g.w);
                    seg[t] = select(0.0, bw_x[u32(select(0, rb + iw, ok))], ok);
                }
                /*unroll*/ for (var d = 0u; d < DR; d++) {
                    /*unroll*/ for (var a = 0u; a < DKH; a++) {
                        if (e == d * g.sh + a) {
                            /*unroll*/ for (var b = 0u; b < DKW; b++) {
                                /*unroll*/ for (var s = 0u; s < DS; s++) { acc[a][b] += dv[d][s] * seg[s + b]; }
                            }
                        }
                    }
                }
            }
        }
    } else {
        let wi = i32(g.w);
        let pw = i32(g.pw);
        for (var row = row0 + ll; row < row1; row += DL) {
            let n = row / g.oh;
            let i = row % g.oh;
            let ybase = ((n * g.o + c) * g.oh + i) * g.ow;
            let ihb = i32(i * g.sh) - i32(g.ph);
            let xb = i32((n * g.c + c) * g.h * g.w);
            var rok: array<bool, DKH>;
            var roff: array<i32, DKH>;
            /*unroll*/ for (var a = 0u; a < DKH; a++) {
                let ih = ihb + i32(a);
                rok[a] = ih >= 0 && ih < i32(g.h);
                roff[a] = xb + ih * wi;
            }
            // win[a][b] = x[row of a, j − pw + b]; preload b = 1..DKW−1 for j = −1
            var win: array<array<f32, DKW>, DKH>;
            /*unroll*/ for (var a = 0u; a < DKH; a++) {
                /*unroll*/ for (var b = 0u; b < DKM; b++) {
                    let iw = i32(b) - pw;
                    let ok = rok[a] && iw >= 0 && iw < wi;
                    win[a][b + 1u] = select(0.0, bw_x[u32(select(0, roff[a] + iw, ok))], ok);
                }
            }
            for (var j = 0u; j < g.ow; j++) {
                let iw = i32(j + DKW - 1u) - pw;
                let okc = iw >= 0 && iw < wi;
                /*unroll*/ for (var a = 0u; a < DKH; a++) {
                    /*unroll*/ for (var b = 0u; b < DKM; b++) { win[a][b] = win[a][b + 1u]; }
                    let ok = rok[a] && okc;
                    win[a][DKM] = select(0.0, bw_x[u32(select(0, roff[a] + iw, ok))], ok);
                }
                let yi = ybase + j;
                var d = bw_dy[yi];
                if (ACT != 0u) { d *= act_grad_fused(bw_y[yi], ACT, g.alpha); }
                accb += d;
                /*unroll*/ for (var a = 0u; a < DKH; a++) {
                    /*unroll*/ for (var b = 0u; b < DKW; b++) { acc[a][b] += d * win[a][b]; }
                }
            }
        }
    }
    /*unroll*/ for (var a = 0u; a < DKH; a++) {
        /*unroll*/ for (var b = 0u; b < DKW; b++) { bwd_red[(a * DKW + b) * WG + li] = acc[a][b]; }
    }
    bwd_red[kk * WG + li] = accb;
    workgroupBarrier();
    // per channel, value v's DL partials sit at bwd_red[v·WG + lc·DL + 0 .. DL − 1]
    if (SERIAL_SUM == 1u) {
        for (var q = li; q < DCH * DRED; q += WG) {
            let base = (q % DRED) * WG + (q / DRED) * DL;
            // the channel's DL partials, zeros after them: the levels s ≥ DL add zeros, the
            // rest pair as the DL-wide tree does (only the DL partials are loaded)
            var a: array<f32, 64>;
            /*unroll*/ for (var l = 0u; l < DL; l++) { a[l] = bwd_red[base + l]; }
            bwd_red[base] = tree_sum64(a);
        }
        workgroupBarrier();
    } else {
        for (var st = DL / 2u; st > 0u; st = st / 2u) {
            if (ll < st) {
                for (var v = 0u; v < DRED; v++) { bwd_red[v * WG + li] += bwd_red[v * WG + li + st]; }
            }
            workgroupBarrier();
        }
    }
    for (var q = li; q < DCH * DRED; q += WG) {
        let oc = c0 + q / DRED;
        let v = q % DRED;
        let total = bwd_red[v * WG + (q / DRED) * DL];
        if (oc < g.o) {
            if (v < kk) {
                bw_dw[pbase + oc * kk + v] = total;
            } else if (HAS_BIAS == 1u) {
                if (SPLIT == 1u) { bw_dw[pbase + g.o * kk + oc] = total; } else { bw_db[oc] = total; }
            }
        }
    }
}

// ---- pointwise (1×1) variants -----------------------------------------------------------------
// The same sums as the generic kernels for 1×1 kernels without padding, groups or dilation in
// a 2-D geometry, where each pass is a matrix product over the channels (P = OH·OW output
// positions; π(p) = (p / OW)·sh·W + (p % OW)·sw the input position under output position p):
//   forward          y[n,o,p]  = act(b[o] + Σ_c w[o,c] · x[n,c,π(p)])            per image: M = O, N = P, K = C
//   backward-input   dx[n,c,π(p)] = Σ_o w[o,c] · dy'[n,o,p], and 0 at the inputs under no
//                    window (strides > 1)                                       per image: M = C, N = P, K = O
//   backward-weight  dw[o,c]   = Σ_n Σ_p dy'[n,o,p] · x[n,c,π(p)],  db[o] = Σ_n Σ_p dy'[n,o,p]
//                                                                    M = O, N = C, K = N·P
// Each invocation accumulates a PR × PS register tile, rows ly + 8r and columns lx + 8s
// (ly = li / 8, lx = li % 8) as matmul.wgsl's gemm, loading PR + PS values per step of K for
// PR·PS multiply-adds (the generic kernels recompute a window index per load). Forward and
// backward-input: a workgroup per (8·PR rows) × (8·PS positions), the positions numbered
// across the images (q = n·P + p), so small images leave no invocation idle. Backward-weight: a workgroup per (8·PR) × (8·PS) tile of dw (and row partition:
// SPLIT as the other backward-weight kernels, the rows being the N·OH output rows), each
// invocation summing its whole partition in order; db[o] is summed alongside by every
// invocation and written by those of the first column tile with lx = 0.
// With strides, each backward-input invocation also zeroes the inputs between its positions'
// windows (rows ih..ih+sh−1 × columns iw..iw+sw−1 but the corner): every input lies in one
// such block, as OH = ⌊(H − 1)/sh⌋ + 1. Same bindings as conv_forward, conv_backward_input
// and conv_backward_weight.
const PR: u32 = 4u;     // rows (output channels; backward-input: input channels) per invocation
const PS: u32 = 4u;     // columns (positions; backward-weight: input channels) per invocation
// SG_ROWS = 1 (subgroups of exactly 8, common.wgsl): the 8 invocations of a subgroup share
// their rows, so each loads only rows r = lx + 8j (j < PRS = ⌈PR / 8⌉ ≤ 4) and gets the
// others by `subgroupBroadcast` — per step of the sum PRS loads instead of PR.
const SG_ROWS: u32 = 0u;
const PRS: u32 = 1u;

// The rows lane lx = li % 8 loads under SG_ROWS: first + 8·(lx + 8j), clamped to the tile's
// last row and to len − 1 (index them by the row's offset).
fn sg_rows(first: u32, len: u32, li: u32) -> array<u32, PRS> {
    var rows: array<u32, PRS>;
    /*unroll*/ for (var j = 0u; j < PRS; j++) {
        rows[j] = min(first + 8u * min(li % 8u + 8u * j, PR - 1u), len - 1u);
    }
    return rows;
}

@compute @workgroup_size(64)
fn conv_forward_pointwise(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let g = f_p;
    let np = g.oh * g.ow;
    let nq = g.n * np;
    let hw = g.h * g.w;
    let tiles_q = (nq + 8u * PS - 1u) / (8u * PS);
    let t = flat_group(wid, nwg);
    if (t >= ((g.o + 8u * PR - 1u) / (8u * PR)) * tiles_q) { return; }
    let o0 = (t / tiles_q) * (8u * PR) + li / 8u;
    let q0 = (t % tiles_q) * (8u * PS) + li % 8u;
    // row offsets into w; per column q = n·P + p: the input offset of x[n, 0, π(p)] and the
    // output offset of y[n, 0, p] (clamped: the stores are masked)
    var wo: array<u32, PR>;
    /*unroll*/ for (var r = 0u; r < PR; r++) { wo[r] = min(o0 + 8u * r, g.o - 1u) * g.c; }
    var xo: array<u32, PS>;
    var yo: array<u32, PS>;
    /*unroll*/ for (var s = 0u; s < PS; s++) {
        let q = min(q0 + 8u * s, nq - 1u);
        let n = q / np;
        let p = q % np;
        xo[s] = n * g.c * hw + (p / g.ow) * g.sh * g.w + (p % g.ow) * g.sw;
        yo[s] = n * g.o * np + p;
    }
    let wl = sg_rows(o0, g.o, li);
    var acc: array<array<f32, PS>, PR>;
    var xc = 0u;
    for (var c = 0u; c < g.c; c++) {
        var av: array<f32, PR>;
        if (SG_ROWS == 1u) {
            var m = vec4<f32>(0.0);
            /*unroll*/ for (var j = 0u; j < PRS; j++) { m[j] = f_w[wl[j] * g.c + c]; }
            /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = subgroupBroadcast(m, r % 8u)[r / 8u]; }
        } else {
            /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = f_w[wo[r] + c]; }
        }
        var bv: array<f32, PS>;
        /*unroll*/ for (var s = 0u; s < PS; s++) { bv[s] = f_x[xo[s] + xc]; }
        /*unroll*/ for (var r = 0u; r < PR; r++) {
            /*unroll*/ for (var s = 0u; s < PS; s++) { acc[r][s] += av[r] * bv[s]; }
        }
        xc += hw;
    }
    /*unroll*/ for (var r = 0u; r < PR; r++) {
        let o = o0 + 8u * r;
        var bias = 0.0;
        if (HAS_BIAS == 1u) { bias = f_b[min(o, g.o - 1u)]; }
        /*unroll*/ for (var s = 0u; s < PS; s++) {
            if (o < g.o && q0 + 8u * s < nq) {
                let k = yo[s] + o * np;
                let v = acc[r][s] + bias;
                if (KEEP_Z == 1u) { f_z[k] = v; }
                f_y[k] = act_fwd(v, ACT, g.alpha);
            }
        }
    }
}

// conv_forward_pointwise_v4: the same sums for stride 1 with P and C multiples of 4, in vec4
// units: 4 consecutive positions of a channel (x, y) or 4 consecutive input channels of a
// weight row. Each invocation's PS positions are PS/4 units, units lx + 8s; per 4 input
// channels it loads PR weight units and 4·PS/4 input units — a quarter of the scalar
// kernel's loads — for the same 4·PR·PS multiply-adds, each output summed over c in the same
// order. (CPU adapters gather a storage access lane by lane: a vec4 costs about what a float
// does.) Binds x, w and y as arrays of vec4 (b and z stay scalar: they may be stand-ins).
@group(0) @binding(0) var<storage, read> f_x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> f_w4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> f_y4: array<vec4<f32>>;

const PU: u32 = 1u;     // conv_forward_pointwise_v4: PS / 4, vec4 position units per invocation

@compute @workgroup_size(64)
fn conv_forward_pointwise_v4(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) li: u32) {
    let g = f_p;
    let np4 = g.oh * g.ow / 4u; // units per plane
    let nu = g.n * np4;
    let c4 = g.c / 4u;
    let tiles_q = (nu + 8u * PU - 1u) / (8u * PU);
    let t = flat_group(wid, nwg);
    if (t >= ((g.o + 8u * PR - 1u) / (8u * PR)) * tiles_q) { return; }
    let o0 = (t / tiles_q) * (8u * PR) + li / 8u;
    let u0 = (t % tiles_q) * (8u * PU) + li % 8u;
    // weight-row offsets in units; per unit u = n·P/4 + p/4: the offsets of x[n, 0, p] and
    // y[n, 0, p] in units (clamped: the stores are masked)
    var wo: array<u32, PR>;
    /*unroll*/ for (var r = 0u; r < PR; r++) { wo[r] = min(o0 + 8u * r, g.o - 1u) * c4; }
    var xo: array<u32, PU>;
    var yo: array<u32, PU>;
    /*unroll*/ for (var s = 0u; s < PU; s++) {
        let u = min(u0 + 8u * s, nu - 1u);
        let n = u / np4;
        let pu = u % np4;
        xo[s] = n * g.c * np4 + pu;
        yo[s] = n * g.o * np4 + pu;
    }
    let wl = sg_rows(o0, g.o, li);
    var acc: array<array<vec4<f32>, PU>, PR>;
    var xc = 0u;
    for (var c = 0u; c < c4; c++) {
        var av: array<vec4<f32>, PR>;
        if (SG_ROWS == 1u) {
            var mine: array<vec4<f32>, PRS>;
            /*unroll*/ for (var j = 0u; j < PRS; j++) { mine[j] = f_w4[wl[j] * c4 + c]; }
            /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = subgroupBroadcast(mine[r / 8u], r % 8u); }
        } else {
            /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = f_w4[wo[r] + c]; }
        }
        /*unroll*/ for (var k = 0u; k < 4u; k++) {
            var bv: array<vec4<f32>, PU>;
            /*unroll*/ for (var s = 0u; s < PU; s++) { bv[s] = f_x4[xo[s] + xc]; }
            /*unroll*/ for (var r = 0u; r < PR; r++) {
                /*unroll*/ for (var s = 0u; s < PU; s++) { acc[r][s] += av[r][k] * bv[s]; }
            }
            xc += np4;
        }
    }
    /*unroll*/ for (var r = 0u; r < PR; r++) {
        let o = o0 + 8u * r;
        var bias = 0.0;
        if (HAS_BIAS == 1u) { bias = f_b[min(o, g.o - 1u)]; }
        /*unroll*/ for (var s = 0u; s < PU; s++) {
            if (o < g.o && u0 + 8u * s < nu) {
                let k = yo[s] + o * np4;
                let v = acc[r][s] + bias;
                if (KEEP_Z == 1u) {
                    /*unroll*/ for (var e = 0u; e < 4u; e++) { f_z[4u * k + e] = v[e]; }
                }
                f_y4[k] = vec4<f32>(act_fwd(v.x, ACT, g.alpha), act_fwd(v.y, ACT, g.alpha),
                                    act_fwd(v.z, ACT, g.alpha), act_fwd(v.w, ACT, g.alpha));
            }
        }
    }
}

@compute @workgroup_size(64)
fn conv_backward_input_pointwise(@builtin(workgroup_id) wid: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) li: u32) {
    let g = bi_p;
    let np = g.oh * g.ow;
    let nq = g.n * np;
    let hw = g.h * g.w;
    let tiles_q = (nq + 8u * PS - 1u) / (8u * PS);
    let t = flat_group(wid, nwg);
    if (t >= ((g.c + 8u * PR - 1u) / (8u * PR)) * tiles_q) { return; }
    let c0 = (t / tiles_q) * (8u * PR) + li / 8u;
    let q0 = (t % tiles_q) * (8u * PS) + li % 8u;
    var wc: array<u32, PR>;
    /*unroll*/ for (var r = 0u; r < PR; r++) { wc[r] = min(c0 + 8u * r, g.c - 1u); }
    let wl = sg_rows(c0, g.c, li);
    // per column q = n·P + p: the offsets of dy[n, 0, p] and of dx[n, 0, π(p)]
    var yo: array<u32, PS>;
    var xo: array<u32, PS>;
    var ih: array<u32, PS>;
    var iw: array<u32, PS>;
    /*unroll*/ for (var s = 0u; s < PS; s++) {
        let q = min(q0 + 8u * s, nq - 1u);
        let n = q / np;
        let p = q % np;
        ih[s] = (p / g.ow) * g.sh;
        iw[s] = (p % g.ow) * g.sw;
        yo[s] = n * g.o * np + p;
        xo[s] = n * g.c * hw + ih[s] * g.w + iw[s];
    }
    var acc: array<array<f32, PS>, PR>;
    var wrow = 0u;
    var yc = 0u;
    for (var o = 0u; o < g.o; o++) {
        var av: array<f32, PR>;
        if (SG_ROWS == 1u) {
            var m = vec4<f32>(0.0);
            /*unroll*/ for (var j = 0u; j < PRS; j++) { m[j] = bi_w[wrow + wl[j]]; }
            /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = subgroupBroadcast(m, r % 8u)[r / 8u]; }
        } else {
            /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = bi_w[wrow + wc[r]]; }
        }
        var bv: array<f32, PS>;
        /*unroll*/ for (var s = 0u; s < PS; s++) {
            let yi = yo[s] + yc;
            var d = bi_dy[yi];
            if (ACT != 0u) { d *= act_grad_fused(bi_y[yi], ACT, g.alpha); }
            bv[s] = d;
        }
        /*unroll*/ for (var r = 0u; r < PR; r++) {
            /*unroll*/ for (var s = 0u; s < PS; s++) { acc[r][s] += av[r] * bv[s]; }
        }
        wrow += g.c;
        yc += np;
    }
    /*unroll*/ for (var r = 0u; r < PR; r++) {
        let c = c0 + 8u * r;
        /*unroll*/ for (var s = 0u; s < PS; s++) {
            if (c < g.c && q0 + 8u * s < nq) {
                let k = xo[s] + c * hw;
                bi_dx[k] = acc[r][s];
                // with strides, the inputs (ih + u, iw + v) up to the next window's corner
                // are read by no window: zero
                if (UNIT == 0u) {
                    for (var u = 0u; u < g.sh && ih[s] + u < g.h; u++) {
                        for (var v = 0u; v < g.sw && iw[s] + v < g.w; v++) {
                            if (u + v > 0u) { bi_dx[k + u * g.w + v] = 0.0; }
                        }
                    }
                }
            }
        }
    }
}

// conv_backward_input_pointwise_v4: the same sums as conv_backward_input_pointwise for
// stride 1 with P a multiple of 4: each invocation's PS positions are PS/4 vec4 units (as
// conv_forward_pointwise_v4), so per output channel o it loads PR weights and PS/4 dy' units
// — half the scalar kernel's loads — for the same PR·PS multiply-adds, each input summed
// over o in the same order. Binds dy and dx as arrays of vec4 (y, a stand-in without a
// fused activation, stays scalar).
@group(0) @binding(0) var<storage, read> bi_dy4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> bi_dx4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn conv_backward_input_pointwise_v4(@builtin(workgroup_id) wid: vec3<u32>,
                                    @builtin(num_workgroups) nwg: vec3<u32>,
                                    @builtin(local_invocation_index) li: u32) {
    let g = bi_p;
    let np4 = g.oh * g.ow / 4u; // units per plane
    let nu = g.n * np4;
    let tiles_q = (nu + 8u * PU - 1u) / (8u * PU);
    let t = flat_group(wid, nwg);
    if (t >= ((g.c + 8u * PR - 1u) / (8u * PR)) * tiles_q) { return; }
    let c0 = (t / tiles_q) * (8u * PR) + li / 8u;
    let u0 = (t % tiles_q) * (8u * PU) + li % 8u;
    var wc: array<u32, PR>;
    /*unroll*/ for (var r = 0u; r < PR; r++) { wc[r] = min(c0 + 8u * r, g.c - 1u); }
    let wl = sg_rows(c0, g.c, li);
    // per unit u = n·P/4 + p/4: the offsets of dy[n, 0, p] and dx[n, 0, p] in units
    var yo: array<u32, PU>;
    var xo: array<u32, PU>;
    /*unroll*/ for (var s = 0u; s < PU; s++) {
        let u = min(u0 + 8u * s, nu - 1u);
        let n = u / np4;
        let pu = u % np4;
        yo[s] = n * g.o * np4 + pu;
        xo[s] = n * g.c * np4 + pu;
    }
    var acc: array<array<vec4<f32>, PU>, PR>;
    var wrow = 0u;
    var yc = 0u;
    for (var o = 0u; o < g.o; o++) {
        var av: array<f32, PR>;
        if (SG_ROWS == 1u) {
            var m = vec4<f32>(0.0);
            /*unroll*/ for (var j = 0u; j < PRS; j++) { m[j] = bi_w[wrow + wl[j]]; }
            /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = subgroupBroadcast(m, r % 8u)[r / 8u]; }
        } else {
            /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = bi_w[wrow + wc[r]]; }
        }
        var bv: array<vec4<f32>, PU>;
        /*unroll*/ for (var s = 0u; s < PU; s++) {
            let k = yo[s] + yc;
            var d = bi_dy4[k];
            if (ACT != 0u) {
                d *= vec4<f32>(act_grad_fused(bi_y[4u * k], ACT, g.alpha),
                               act_grad_fused(bi_y[4u * k + 1u], ACT, g.alpha),
                               act_grad_fused(bi_y[4u * k + 2u], ACT, g.alpha),
                               act_grad_fused(bi_y[4u * k + 3u], ACT, g.alpha));
            }
            bv[s] = d;
        }
        /*unroll*/ for (var r = 0u; r < PR; r++) {
            /*unroll*/ for (var s = 0u; s < PU; s++) { acc[r][s] += av[r] * bv[s]; }
        }
        wrow += g.c;
        yc += np4;
    }
    /*unroll*/ for (var r = 0u; r < PR; r++) {
        let c = c0 + 8u * r;
        /*unroll*/ for (var s = 0u; s < PU; s++) {
            if (c < g.c && u0 + 8u * s < nu) { bi_dx4[xo[s] + c * np4] = acc[r][s]; }
        }
    }
}

@compute @workgroup_size(64)
fn conv_backward_weight_pointwise(@builtin(workgroup_id) wid: vec3<u32>,
                                  @builtin(num_workgroups) nwg: vec3<u32>,
                                  @builtin(local_invocation_index) li: u32) {
    let g = bw_p;
    let np = g.oh * g.ow;
    let hw = g.h * g.w;
    let tiles_c = (g.c + 8u * PS - 1u) / (8u * PS);
    let tiles = ((g.o + 8u * PR - 1u) / (8u * PR)) * tiles_c;
    let tq = flat_group(wid, nwg);
    if (tq >= tiles * g.parts) { return; }
    let part = tq / tiles;
    let t = tq % tiles;
    let nrows = g.n * g.oh;
    let row0 = part_start(part, nrows, g.parts);
    let row1 = part_start(part + 1u, nrows, g.parts);
    let pbase = part * (g.o * g.c + HAS_BIAS * g.o); // the partition's slice of the scratch
    let o0 = (t / tiles_c) * (8u * PR) + li / 8u;
    let c0 = (t % tiles_c) * (8u * PS) + li % 8u;
    var yo: array<u32, PR>;
    /*unroll*/ for (var r = 0u; r < PR; r++) { yo[r] = min(o0 + 8u * r, g.o - 1u) * np; }
    let wl = sg_rows(o0, g.o, li);
    var xo: array<u32, PS>;
    /*unroll*/ for (var s = 0u; s < PS; s++) { xo[s] = min(c0 + 8u * s, g.c - 1u) * hw; }
    var acc: array<array<f32, PS>, PR>;
    var accb: array<f32, PR>;
    for (var row = row0; row < row1; row++) {
        let n = row / g.oh;
        let i = row % g.oh;
        let yb = n * g.o * np + i * g.ow;
        var xj = n * g.c * hw + i * g.sh * g.w;
        for (var j = 0u; j < g.ow; j++) {
            var av: array<f32, PR>;
            if (SG_ROWS == 1u) {
                var m = vec4<f32>(0.0);
                /*unroll*/ for (var l = 0u; l < PRS; l++) {
                    let yi = yb + wl[l] * np + j;
                    var d = bw_dy[yi];
                    if (ACT != 0u) { d *= act_grad_fused(bw_y[yi], ACT, g.alpha); }
                    m[l] = d;
                }
                /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = subgroupBroadcast(m, r % 8u)[r / 8u]; }
            } else {
                /*unroll*/ for (var r = 0u; r < PR; r++) {
                    let yi = yb + yo[r] + j;
                    var d = bw_dy[yi];
                    if (ACT != 0u) { d *= act_grad_fused(bw_y[yi], ACT, g.alpha); }
                    av[r] = d;
                }
            }
            /*unroll*/ for (var r = 0u; r < PR; r++) { accb[r] += av[r]; }
            var bv: array<f32, PS>;
            /*unroll*/ for (var s = 0u; s < PS; s++) { bv[s] = bw_x[xj + xo[s]]; }
            /*unroll*/ for (var r = 0u; r < PR; r++) {
                /*unroll*/ for (var s = 0u; s < PS; s++) { acc[r][s] += av[r] * bv[s]; }
            }
            xj += g.sw;
        }
    }
    let bias_lane = HAS_BIAS == 1u && t % tiles_c == 0u && li % 8u == 0u;
    /*unroll*/ for (var r = 0u; r < PR; r++) {
        let o = o0 + 8u * r;
        if (o < g.o) {
            /*unroll*/ for (var s = 0u; s < PS; s++) {
                let c = c0 + 8u * s;
                if (c < g.c) { bw_dw[pbase + o * g.c + c] = acc[r][s]; }
            }
            if (bias_lane) {
                if (SPLIT == 1u) { bw_dw[pbase + g.o * g.c + o] = accb[r]; } else { bw_db[o] = accb[r]; }
            }
        }
    }
}

// conv_backward_weight_pointwise_v4: the same sums as conv_backward_weight_pointwise for
// stride 1 with P a multiple of 4, in vec4 units of 4 consecutive positions of a plane
// (dy, x): per unit an invocation loads PR dy' units and PS x units — a quarter of the
// scalar kernel's loads — and adds the 4 products of each output in position order. The
// N·P positions are flat (f = n·P + p = row·OW + j), so a partition of rows (SPLIT) is the
// range f0 = row0·OW .. f1 = row1·OW, whose first and last units may be cut: dy' outside it
// is masked to 0. Binds x and dy as arrays of vec4 (y, a stand-in without a fused
// activation, stays scalar).
@group(0) @binding(0) var<storage, read> bw_x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> bw_dy4: array<vec4<f32>>;

// dy' unit k (dy times the fused activation's derivative), its components outside mask m 0.
fn bw_dy4_act(k: u32, m: vec4<bool>) -> vec4<f32> {
    var d = select(vec4<f32>(0.0), bw_dy4[k], m);
    if (ACT != 0u) {
        let yi = 4u * k;
        d *= vec4<f32>(act_grad_fused(bw_y[yi], ACT, bw_p.alpha),
                       act_grad_fused(bw_y[yi + 1u], ACT, bw_p.alpha),
                       act_grad_fused(bw_y[yi + 2u], ACT, bw_p.alpha),
                       act_grad_fused(bw_y[yi + 3u], ACT, bw_p.alpha));
    }
    return d;
}

@compute @workgroup_size(64)
fn conv_backward_weight_pointwise_v4(@builtin(workgroup_id) wid: vec3<u32>,
                                     @builtin(num_workgroups) nwg: vec3<u32>,
                                     @builtin(local_invocation_index) li: u32) {
    let g = bw_p;
    let np4 = g.oh * g.ow / 4u; // units per plane
    let tiles_c = (g.c + 8u * PS - 1u) / (8u * PS);
    let tiles = ((g.o + 8u * PR - 1u) / (8u * PR)) * tiles_c;
    let tq = flat_group(wid, nwg);
    if (tq >= tiles * g.parts) { return; }
    let part = tq / tiles;
    let t = tq % tiles;
    let nrows = g.n * g.oh;
    let f0 = part_start(part, nrows, g.parts) * g.ow;
    let f1 = part_start(part + 1u, nrows, g.parts) * g.ow;
    let pbase = part * (g.o * g.c + HAS_BIAS * g.o); // the partition's slice of the scratch
    let o0 = (t / tiles_c) * (8u * PR) + li / 8u;
    let c0 = (t % tiles_c) * (8u * PS) + li % 8u;
    var yo: array<u32, PR>;
    /*unroll*/ for (var r = 0u; r < PR; r++) { yo[r] = min(o0 + 8u * r, g.o - 1u) * np4; }
    let wl = sg_rows(o0, g.o, li);
    var xo: array<u32, PS>;
    /*unroll*/ for (var s = 0u; s < PS; s++) { xo[s] = min(c0 + 8u * s, g.c - 1u) * np4; }
    var acc: array<array<f32, PS>, PR>;
    var accb: array<f32, PR>;
    let lane = vec4<i32>(0, 1, 2, 3);
    for (var u = f0 / 4u; u < (f1 + 3u) / 4u; u++) {
        let n = u / np4;
        let pu = u % np4;
        // components 4u + e of the unit inside the partition
        let m = (lane >= vec4<i32>(i32(f0) - i32(4u * u))) & (lane < vec4<i32>(i32(f1) - i32(4u * u)));
        let yb = n * g.o * np4 + pu;
        let xb = n * g.c * np4 + pu;
        var av: array<vec4<f32>, PR>;
        if (SG_ROWS == 1u) {
            var mine: array<vec4<f32>, PRS>;
            /*unroll*/ for (var l = 0u; l < PRS; l++) { mine[l] = bw_dy4_act(yb + wl[l] * np4, m); }
            /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = subgroupBroadcast(mine[r / 8u], r % 8u); }
        } else {
            /*unroll*/ for (var r = 0u; r < PR; r++) { av[r] = bw_dy4_act(yb + yo[r], m); }
        }
        /*unroll*/ for (var r = 0u; r < PR; r++) {
            let d = av[r];
            accb[r] += d.x;
            accb[r] += d.y;
            accb[r] += d.z;
            accb[r] += d.w;
        }
        var bv: array<vec4<f32>, PS>;
        /*unroll*/ for (var s = 0u; s < PS; s++) { bv[s] = bw_x4[xb + xo[s]]; }
        /*unroll*/ for (var r = 0u; r < PR; r++) {
            /*unroll*/ for (var s = 0u; s < PS; s++) {
                acc[r][s] += av[r].x * bv[s].x;
                acc[r][s] += av[r].y * bv[s].y;
                acc[r][s] += av[r].z * bv[s].z;
                acc[r][s] += av[r].w * bv[s].w;
            }
        }
    }
    let bias_lane = HAS_BIAS == 1u && t % tiles_c == 0u && li % 8u == 0u;
    /*unroll*/ for (var r = 0u; r < PR; r++) {
        let o = o0 + 8u * r;
        if (o < g.o) {
            /*unroll*/ for (var s = 0u; s < PS; s++) {
                let c = c0 + 8u * s;
                if (c < g.c) { bw_dw[pbase + o * g.c + c] = acc[r][s]; }
            }
            if (bias_lane) {
                if (SPLIT == 1u) { bw_dw[pbase + g.o * g.c + o] = accb[r]; } else { bw_db[o] = accb[r]; }
            }
        }
    }
}
