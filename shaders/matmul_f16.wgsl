// matmul_f16.wgsl — mixed-precision GEMM: f16 inputs, products and sums in f32, f32 output
// (`gemm_f16`). Needs `Features::SHADER_F16` (f16 arithmetic and 16-bit storage): the
// `enable f16;` directive below makes the whole module invalid on a device without it, which
// is why it is a family of its own, compiled only where the device has the feature (the
// launch, `MatMulF16` in src/ops/matmul.rs, refuses it elsewhere with Error::MissingFeature
// before any GPU work).
//
//   c[m,n] = Σ_k A(m,k) · B(k,n)      A(m,k) = a[m·sam + k·sak],  B(k,n) = b[k·sbk + n·sbn]
//
// Shapes: a, b hold f16 values (element i at bytes 2i..2i+2: two per 32-bit word, low half
// first); c [M,N] is f32. The strides express the transposes, as in matmul.wgsl.
// Precision: the product of two f16 values is exact in f32 (11 + 11 significant bits ≤ 24),
// so each term is the f16 product as a tensor core forms it, and the sum is accumulated in
// f32 (twin: cpu::matmul::gemm_f16, which rounds nothing but the inputs).
// The uniform is matmul.wgsl's GemmUniform; only m, n, k and the four strides are read.
// Specialisation: TR × TS, the register tile per invocation (chosen as for `gemm`); loops
// marked `/*unroll*/` are expanded by the host (src/gpu/kernels.rs).
// Dispatch: as `gemm`: each invocation computes a TR×TS block of c (rows ly+8r, columns
// lx+8s, ly = li/8, lx = li%8); a workgroup of 8×8 invocations covers an (8·TR)×(8·TS) tile;
// tiles are numbered row-major and folded into the grid. Loads are clamped into range, stores
// masked.
// Bindings: 0 a (f16), 1 b (f16), 2 c (f32), 3 p
enable f16;

struct GemmUniform {
    m: u32, n: u32, k: u32, sam: u32,
    sak: u32, sbk: u32, sbn: u32, has_bias: u32,
    act_out: u32, act_in: u32, ones_col: u32, alpha: f32,
    alpha_in: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

// ---- specialisation constants ----------------------------------------------------------------
const TR: u32 = 4u;   // rows per invocation
const TS: u32 = 4u;   // columns per invocation

@group(0) @binding(0) var<storage, read> g_a: array<f16>;
@group(0) @binding(1) var<storage, read> g_b: array<f16>;
@group(0) @binding(2) var<storage, read_write> g_c: array<f32>;
@group(0) @binding(3) var<uniform> g_p: GemmUniform;

@compute @workgroup_size(64)
fn gemm_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let p = g_p;
    let tiles_n = (p.n + 8u * TS - 1u) / (8u * TS);
    let t = flat_group(wid, nwg);
    let m0 = (t / tiles_n) * (8u * TR) + li / 8u;
    let n0 = (t % tiles_n) * (8u * TS) + li % 8u;
    var ia: array<u32, TR>;
    /*unroll*/ for (var r = 0u; r < TR; r++) { ia[r] = min(m0 + 8u * r, p.m - 1u) * p.sam; }
    var ib: array<u32, TS>;
    /*unroll*/ for (var s = 0u; s < TS; s++) { ib[s] = min(n0 + 8u * s, p.n - 1u) * p.sbn; }
    var acc: array<array<f32, TS>, TR>;
    var ka = 0u;
    var kb = 0u;
    for (var k = 0u; k < p.k; k++) {
        var av: array<f32, TR>;
        /*unroll*/ for (var r = 0u; r < TR; r++) { av[r] = f32(g_a[ia[r] + ka]); }
        var bv: array<f32, TS>;
        /*unroll*/ for (var s = 0u; s < TS; s++) { bv[s] = f32(g_b[ib[s] + kb]); }
        /*unroll*/ for (var r = 0u; r < TR; r++) {
            /*unroll*/ for (var s = 0u; s < TS; s++) { acc[r][s] += av[r] * bv[s]; }
        }
        ka += p.sak;
        kb += p.sbk;
    }
    /*unroll*/ for (var r = 0u; r < TR; r++) {
        /*unroll*/ for (var s = 0u; s < TS; s++) {
            let m = m0 + 8u * r;
            let n = n0 + 8u * s;
            if (m < p.m && n < p.n) { g_c[m * p.n + n] = acc[r][s]; }
        }
    }
}
