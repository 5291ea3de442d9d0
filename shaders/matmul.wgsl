// matmul.wgsl — one register-tiled GEMM serving matmul and the linear layer's three products.
//
//   c[m,n] = act_out( Σ_k A(m,k) · B(k,n) + bias[n] )
//   A(m,k) = a[m·sam + k·sak] · act'(ya[m·sam + k·sak])   (the act' factor only when act_in ≠ 0)
//   B(k,n) = b[k·sbk + n·sbn]; with ones_col = 1 a virtual column n = N of ones is appended and
//            its result Σ_k A(m,k) is written to cb[m] (the bias gradient, in the same dispatch).
//
// The strides express the transposes (PyTorch layout, w is [out,in]):
//   matmul                  c[M,N]   = a[M,K] · b[K,N]
//   linear forward          y[N,out] = act(x[N,in] · wᵀ + b)
//   linear backward-input   dx[N,in] = dy'[N,out] · w[out,in]
//   linear backward-weight  dw[out,in] = dy'ᵀ · x, db[out] = Σ_n dy'[n,·]   (ones column)
//
// Dispatch: each invocation computes a 4×4 block of c (rows ly+8r, columns lx+8s); a workgroup of
// 8×8 invocations covers a 32×32 tile; tiles are numbered row-major and folded into the grid.
// Bindings: 0 a, 1 b, 2 bias, 3 ya, 4 c, 5 cb, 6 p

struct GemmParams {
    m: u32, n: u32, k: u32, sam: u32,
    sak: u32, sbk: u32, sbn: u32, has_bias: u32,
    act_out: u32, act_in: u32, ones_col: u32, alpha: f32,
    alpha_in: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<storage, read> g_a: array<f32>;
@group(0) @binding(1) var<storage, read> g_b: array<f32>;
@group(0) @binding(2) var<storage, read> g_bias: array<f32>;
@group(0) @binding(3) var<storage, read> g_ya: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_c: array<f32>;
@group(0) @binding(5) var<storage, read_write> g_cb: array<f32>;
@group(0) @binding(6) var<uniform> g_p: GemmParams;

const TILE: u32 = 32u;

fn load_a(p: GemmParams, m: u32, k: u32) -> f32 {
    if (m >= p.m) { return 0.0; }
    let i = m * p.sam + k * p.sak;
    var v = g_a[i];
    if (p.act_in != 0u) { v *= act_grad_y(g_ya[i], p.act_in, p.alpha_in); }
    return v;
}

fn load_b(p: GemmParams, k: u32, n: u32) -> f32 {
    if (n < p.n) { return g_b[k * p.sbk + n * p.sbn]; }
    return select(0.0, 1.0, p.ones_col == 1u && n == p.n);
}

@compute @workgroup_size(64)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let p = g_p;
    let ncols = p.n + p.ones_col;
    let tiles_n = (ncols + TILE - 1u) / TILE;
    let tiles_m = (p.m + TILE - 1u) / TILE;
    let t = flat_group(wid, nwg);
    if (t >= tiles_n * tiles_m) { return; }
    let m0 = (t / tiles_n) * TILE + li / 8u;
    let n0 = (t % tiles_n) * TILE + li % 8u;
    var acc: array<array<f32, 4>, 4>;
    for (var k = 0u; k < p.k; k++) {
        var av: array<f32, 4>;
        var bv: array<f32, 4>;
        for (var r = 0u; r < 4u; r++) {
            av[r] = load_a(p, m0 + 8u * r, k);
            bv[r] = load_b(p, k, n0 + 8u * r);
        }
        for (var r = 0u; r < 4u; r++) {
            for (var s = 0u; s < 4u; s++) {
                acc[r][s] += av[r] * bv[s];
            }
        }
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + 8u * r;
        if (m >= p.m) { continue; }
        for (var s = 0u; s < 4u; s++) {
            let n = n0 + 8u * s;
            if (n < p.n) {
                var v = acc[r][s];
                if (p.has_bias == 1u) { v += g_bias[n]; }
                g_c[m * p.n + n] = act_fwd(v, p.act_out, p.alpha);
            } else if (p.ones_col == 1u && n == p.n) {
                g_cb[m] = acc[r][s];
            }
        }
    }
}
