// matmul.wgsl — one register-tiled GEMM serving matmul and the linear layer's three products,
// its variant staging panels in workgroup memory (`gemm_shared`, for hardware GPUs), and its
// untiled twin `gemm_naive` (same semantics; the benchmark's baseline).
//
//   c[m,n] = act_out( Σ_k A(m,k) · B(k,n) + bias[n] )
//   A(m,k) = a[m·sam + k·sak] · act'(ya[m·sam + k·sak])   (the act' factor only when ACT_IN ≠ 0;
//            ya holds y = act(z), or z itself for activations that keep their input)
//   z[m,n] = the pre-activation Σ_k A·B + bias, written only when KEEP_Z = 1 (the fused
//            activation's derivative needs its input: act_keeps_input in common.wgsl)
//   B(k,n) = b[k·sbk + n·sbn]; with ONES_COL = 1 a virtual column n = N of ones is appended and
//            its result Σ_k A(m,k) is written to cb[m] (the bias gradient, in the same dispatch).
//
// The strides express the transposes (PyTorch layout, w is [out,in]):
//   matmul                  c[M,N]   = a[M,K] · b[K,N]
//   linear forward          y[N,out] = act(x[N,in] · wᵀ + b)
//   linear backward-input   dx[N,in] = dy'[N,out] · w[out,in]
//   linear backward-weight  dw[out,in] = dy'ᵀ · x, db[out] = Σ_n dy'[n,·]   (ones column)
//
// Specialisation: the `const`s below are replaced per pipeline by the host (src/gpu/kernels.rs,
// chosen in src/ops/matmul.rs from the uniform's has_bias, act_out, act_in, ones_col, which they
// must equal); the tile is TR × TS per invocation. Loops marked `/*unroll*/` are expanded by
// the host, so the tile stays in registers.
// Dispatch: `gemm`: each invocation computes a TR×TS block of c (rows ly+8r, columns lx+8s,
// ly = li/8, lx = li%8); a workgroup of 8×8 invocations covers an (8·TR)×(8·TS) tile; tiles are
// numbered row-major and folded into the grid. Every k-step loads TR + TS values for TR·TS
// multiply-adds. `gemm_naive`: one invocation per element of the (ones-extended) output, two
// loads per multiply-add.
// `gemm_shared` (hardware GPUs): the tiles of `gemm`, fed from workgroup memory (its section
// at the end).
// Bindings (all three): 0 a, 1 b, 2 bias, 3 ya, 4 c, 5 cb, 6 z, 7 p

struct GemmUniform {
    m: u32, n: u32, k: u32, sam: u32,
    sak: u32, sbk: u32, sbn: u32, has_bias: u32,
    act_out: u32, act_in: u32, ones_col: u32, alpha: f32,
    alpha_in: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

// ---- specialisation constants (defaults: plain matmul) --------------------------------------
const HAS_BIAS: u32 = 0u;
const ACT_OUT: u32 = 0u;
const ACT_IN: u32 = 0u;
const ONES_COL: u32 = 0u;
const KEEP_Z: u32 = 0u;   // 1: also write the pre-activation z
const TR: u32 = 4u;   // rows per invocation
const TS: u32 = 4u;   // columns per invocation
// `gemm` with SG_ROWS = 1 (subgroups of exactly 8, common.wgsl): the 8 invocations of a
// subgroup share their rows, so each loads rows r = lx + 8j (j < TRS = ⌈TR / 8⌉ ≤ 4) of A and
// gets the others by `subgroupBroadcast` — per step of K, TRS loads of A instead of TR.
const SG_ROWS: u32 = 0u;
const TRS: u32 = 1u;

@group(0) @binding(0) var<storage, read> g_a: array<f32>;
@group(0) @binding(1) var<storage, read> g_b: array<f32>;
@group(0) @binding(2) var<storage, read> g_bias: array<f32>;
@group(0) @binding(3) var<storage, read> g_ya: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_c: array<f32>;
@group(0) @binding(5) var<storage, read_write> g_cb: array<f32>;
@group(0) @binding(6) var<storage, read_write> g_z: array<f32>;
@group(0) @binding(7) var<uniform> g_p: GemmUniform;

fn load_a(i: u32, alpha_in: f32) -> f32 {
    var v = g_a[i];
    if (ACT_IN != 0u) { v *= act_grad_fused(g_ya[i], ACT_IN, alpha_in); }
    return v;
}

// Writes one result: c[m,n] for n < N, the ones column's row sum to cb[m].
fn store_c(p: GemmUniform, m: u32, n: u32, v: f32) {
    if (m >= p.m) { return; }
    if (n < p.n) {
        var o = v;
        if (HAS_BIAS == 1u) { o += g_bias[n]; }
        if (KEEP_Z == 1u) { g_z[m * p.n + n] = o; }
        g_c[m * p.n + n] = act_fwd(o, ACT_OUT, p.alpha);
    } else if (ONES_COL == 1u && n == p.n) {
        g_cb[m] = v;
    }
}

@compute @workgroup_size(64)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = g_p;
    let ncols = p.n + ONES_COL;
    let tiles_n = (ncols + 8u * TS - 1u) / (8u * TS);
    let t = flat_group(wid, nwg);
    let m0 = (t / tiles_n) * (8u * TR) + li / 8u;
    let n0 = (t % tiles_n) * (8u * TS) + li % 8u;
    // row and column offsets, clamped so every load is in range (the stores are masked)
    var ia: array<u32, TR>;
    /*unroll*/ for (var r = 0u; r < TR; r++) { ia[r] = min(m0 + 8u * r, p.m - 1u) * p.sam; }
    var ib: array<u32, TS>;
    var bmul: array<f32, TS>;
    var badd: array<f32, TS>;
    /*unroll*/ for (var s = 0u; s < TS; s++) {
        let n = n0 + 8u * s;
        ib[s] = min(n, p.n - 1u) * p.sbn;
        bmul[s] = select(0.0, 1.0, n < p.n);
        badd[s] = select(0.0, 1.0, n == p.n);
    }
    var il: array<u32, TRS>;
    /*unroll*/ for (var j = 0u; j < TRS; j++) {
        il[j] = min(m0 + 8u * min(li % 8u + 8u * j, TR - 1u), p.m - 1u) * p.sam;
    }
    var acc: array<array<f32, TS>, TR>;
    var ka = 0u;
    var kb = 0u;
    for (var k = 0u; k < p.k; k++) {
        var av: array<f32, TR>;
        if (SG_ROWS == 1u) {
            var mine = vec4<f32>(0.0);
            /*unroll*/ for (var j = 0u; j < TRS; j++) { mine[j] = load_a(il[j] + ka, p.alpha_in); }
            /*unroll*/ for (var r = 0u; r < TR; r++) { av[r] = subgroupBroadcast(mine, r % 8u)[r / 8u]; }
        } else {
            /*unroll*/ for (var r = 0u; r < TR; r++) { av[r] = load_a(ia[r] + ka, p.alpha_in); }
        }
        var bv: array<f32, TS>;
        /*unroll*/ for (var s = 0u; s < TS; s++) {
            bv[s] = g_b[ib[s] + kb];
            if (ONES_COL == 1u) { bv[s] = bv[s] * bmul[s] + badd[s]; }
        }
        /*unroll*/ for (var r = 0u; r < TR; r++) {
            /*unroll*/ for (var s = 0u; s < TS; s++) { acc[r][s] += av[r] * bv[s]; }
        }
        ka += p.sak;
        kb += p.sbk;
    }
    /*unroll*/ for (var r = 0u; r < TR; r++) {
        /*unroll*/ for (var s = 0u; s < TS; s++) { store_c(p, m0 + 8u * r, n0 + 8u * s, acc[r][s]); }
    }
}

@compute @workgroup_size(64)
fn gemm_naive(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let p = g_p;
    let ncols = p.n + ONES_COL;
    let idx = flat_id(wid, nwg, li);
    if (idx >= p.m * ncols) { return; }
    let m = idx / ncols;
    let n = idx % ncols;
    let nb = min(n, p.n - 1u);
    var acc = 0.0;
    for (var k = 0u; k < p.k; k++) {
        var bv = g_b[k * p.sbk + nb * p.sbn];
        if (ONES_COL == 1u && n == p.n) { bv = 1.0; }
        acc += load_a(m * p.sam + k * p.sak, p.alpha_in) * bv;
    }
    store_c(p, m, n, acc);
}

// ---- workgroup-shared panels (hardware GPUs) -------------------------------------------------
// `gemm_shared`: the same products and stores as `gemm`, for adapters with fast workgroup
// memory. A workgroup still computes an (8·TR) × (8·TS) tile of c (invocation li: rows
// ly + 8r, columns lx + 8s); per step of SK along K it first stages the A panel
// (8·TR rows × SK) and the B panel (SK × 8·TS columns) in workgroup memory — each of the 64
// invocations loading LA = TR·SK/8 and LB = TS·SK/8 values, neighbouring invocations
// neighbouring addresses of row-major operands — then accumulates its TR × TS register tile
// from the panels. Every element of A and B is read from device memory once per workgroup
// instead of once per invocation row or column. K is padded to a multiple of SK with zeros
// (adding +0 leaves every sum as `gemm` forms it: k ascending, one accumulator per output).
// The A panel is stored k-major with a row pitch of 8·TR + 1 words so that the staging
// stores of consecutive k do not all fall into one memory bank.
const SK: u32 = 16u;  // K per staged panel
const LA: u32 = 8u;   // TR·SK/8: A values each invocation stages per panel
const LB: u32 = 8u;   // TS·SK/8: B values each invocation stages per panel

var<workgroup> sh_a: array<f32, SK * (8u * TR + 1u)>;
var<workgroup> sh_b: array<f32, SK * 8u * TS>;

@compute @workgroup_size(64)
fn gemm_shared(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let p = g_p;
    let ncols = p.n + ONES_COL;
    let tiles_n = (ncols + 8u * TS - 1u) / (8u * TS);
    let t = flat_group(wid, nwg);
    let mt = (t / tiles_n) * (8u * TR);
    let nt = (t % tiles_n) * (8u * TS);
    let ly = li / 8u;
    let lx = li % 8u;
    let pa = 8u * TR + 1u;
    var acc: array<array<f32, TS>, TR>;
    for (var k0 = 0u; k0 < p.k; k0 += SK) {
        /*unroll*/ for (var i = 0u; i < LA; i++) {
            let e = li + 64u * i;
            let r = e / SK;
            let kk = e % SK;
            let k = k0 + kk;
            let m = min(mt + r, p.m - 1u);
            var v = 0.0;
            if (k < p.k) { v = load_a(m * p.sam + k * p.sak, p.alpha_in); }
            sh_a[kk * pa + r] = v;
        }
        /*unroll*/ for (var i = 0u; i < LB; i++) {
            let e = li + 64u * i;
            let kk = e / (8u * TS);
            let c = e % (8u * TS);
            let k = k0 + kk;
            let n = nt + c;
            var v = 0.0;
            if (k < p.k) {
                v = g_b[k * p.sbk + min(n, p.n - 1u) * p.sbn];
                if (ONES_COL == 1u) { v = select(select(0.0, 1.0, n == p.n), v, n < p.n); }
            }
            sh_b[kk * (8u * TS) + c] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < SK; kk++) {
            var av: array<f32, TR>;
            /*unroll*/ for (var r = 0u; r < TR; r++) { av[r] = sh_a[kk * pa + ly + 8u * r]; }
            var bv: array<f32, TS>;
            /*unroll*/ for (var s = 0u; s < TS; s++) { bv[s] = sh_b[kk * (8u * TS) + lx + 8u * s]; }
            /*unroll*/ for (var r = 0u; r < TR; r++) {
                /*unroll*/ for (var s = 0u; s < TS; s++) { acc[r][s] += av[r] * bv[s]; }
            }
        }
        workgroupBarrier();
    }
    /*unroll*/ for (var r = 0u; r < TR; r++) {
        /*unroll*/ for (var s = 0u; s < TS; s++) { store_c(p, mt + ly + 8u * r, nt + lx + 8u * s, acc[r][s]); }
    }
}
