// matmul_coop.wgsl — GEMM on cooperative matrices (tensor cores): 16×16 f16 tiles of A and B,
// an f32 accumulator, `coopMultiplyAdd` (`gemm_coop`). Needs `Features::SHADER_F16` and
// `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` with a 16×16×16 f16×f16→f32 configuration
// listed by `Adapter::cooperative_matrix_properties()`; the `enable` directives make the
// module invalid elsewhere, so it is a family of its own (the launch, `MatMulF16` in
// src/ops/matmul.rs, takes this path only where the device lists it, and refuses it with
// Error::MissingFeature when forced elsewhere).
//
//   c[m,n] = Σ_k A(m,k) · B(k,n)      A(m,k) = a[m·sam + k·sak],  B(k,n) = b[k·sbk + n·sbn]
//
// Shapes: a, b hold f16 values (as matmul_f16.wgsl); c [M,N] is f32. M, N and K are multiples
// of 16; each operand is row- or column-major (one of its strides is 1, the other a multiple
// of 8, so every tile starts 16-byte aligned): A_T / B_T say which (specialised).
// Precision: exact f16 products, f32 accumulation (the twin is `gemm_f16`'s).
// Dispatch: one workgroup = one subgroup (SG invocations, the adapter's subgroup size,
// specialised) computes a 32×32 block of c as 2×2 accumulator tiles, stepping K by 16 with two
// A tiles and two B tiles per step; blocks are numbered row-major and folded into the grid. A
// tile row or column past M or N (when M or N is an odd multiple of 16) repeats the last one
// and is not stored; every branch is uniform across the workgroup.
// Bindings: 0 a (f16), 1 b (f16), 2 c (f32), 3 p
enable f16;
enable wgpu_cooperative_matrix;

struct GemmUniform {
    m: u32, n: u32, k: u32, sam: u32,
    sak: u32, sbk: u32, sbn: u32, has_bias: u32,
    act_out: u32, act_in: u32, ones_col: u32, alpha: f32,
    alpha_in: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

// ---- specialisation constants ----------------------------------------------------------------
const SG: u32 = 32u;  // workgroup size: the adapter's subgroup size
const A_T: u32 = 0u;  // 0: A row-major (sak = 1, rows sam apart); 1: column-major (sam = 1)
const B_T: u32 = 0u;  // 0: B row-major (sbn = 1, rows sbk apart); 1: column-major (sbk = 1)

@group(0) @binding(0) var<storage, read> g_a: array<f16>;
@group(0) @binding(1) var<storage, read> g_b: array<f16>;
@group(0) @binding(2) var<storage, read_write> g_c: array<f32>;
@group(0) @binding(3) var<uniform> g_p: GemmUniform;

// The 16×16 tile of A with its top-left element at A(m, k).
fn tile_a(p: GemmUniform, m: u32, k: u32) -> coop_mat16x16<f16, A> {
    if (A_T == 0u) {
        return coopLoadT<coop_mat16x16<f16, A>>(&g_a[m * p.sam + k], p.sam);
    }
    return coopLoad<coop_mat16x16<f16, A>>(&g_a[m + k * p.sak], p.sak);
}

// The 16×16 tile of B with its top-left element at B(k, n).
fn tile_b(p: GemmUniform, k: u32, n: u32) -> coop_mat16x16<f16, B> {
    if (B_T == 0u) {
        return coopLoadT<coop_mat16x16<f16, B>>(&g_b[k * p.sbk + n], p.sbk);
    }
    return coopLoad<coop_mat16x16<f16, B>>(&g_b[k + n * p.sbn], p.sbn);
}

@compute @workgroup_size(SG)
fn gemm_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = g_p;
    let blocks_n = (p.n + 31u) / 32u;
    let t = flat_group(wid, nwg);
    let m0 = (t / blocks_n) * 32u;
    let n0 = (t % blocks_n) * 32u;
    // the second tile row / column, clamped to the last one (then not stored)
    let m1 = min(m0 + 16u, p.m - 16u);
    let n1 = min(n0 + 16u, p.n - 16u);
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    for (var k = 0u; k < p.k; k += 16u) {
        let a0 = tile_a(p, m0, k);
        let a1 = tile_a(p, m1, k);
        let b0 = tile_b(p, k, n0);
        let b1 = tile_b(p, k, n1);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
    }
    // (every operand of a coopStore is bound by a `let` first: naga 30's WGSL front end does
    // not emit expressions written inside its arguments)
    let ldc = p.n;
    let r00 = c00;
    let r01 = c01;
    let r10 = c10;
    let r11 = c11;
    let o00 = m0 * ldc + n0;
    let o01 = m0 * ldc + n1;
    let o10 = m1 * ldc + n0;
    let o11 = m1 * ldc + n1;
    let more_n = n0 + 16u < p.n;
    let more_m = m0 + 16u < p.m;
    coopStoreT(r00, &g_c[o00], ldc);
    if (more_n) { coopStoreT(r01, &g_c[o01], ldc); }
    if (more_m) {
        coopStoreT(r10, &g_c[o10], ldc);
        if (more_n) { coopStoreT(r11, &g_c[o11], ldc); }
    }
}
