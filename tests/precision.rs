//! Mixed precision (issue 17, items 4 and 5): the f16 GEMM (`gemm_f16`) and the
//! cooperative-matrix GEMM (`gemm_coop`) against their CPU twin and against the f32 GEMM, the
//! f16 rounding the twins use, and the typed refusal on a device without the features.

mod common;

use wgcnn::cpu::matmul::{f16_bits, f16_value, gemm, pack_f16, round_f16, Gemm};
use wgcnn::gpu::bench::bench_values;
use wgcnn::gpu::ShaderCaps;
use wgcnn::ops::matmul::{F16Path, MatMulF16};
use wgcnn::ops::{run_cpu, Launch};
use wgcnn::{Backend, Error};

/// `c[M,N] = a[M,K]·b[K,N]`, with A and/or B stored transposed (`a [K,M]`, `b [N,K]`).
fn product(m: usize, k: usize, n: usize, a_t: bool, b_t: bool) -> Gemm {
    let mut g = Gemm::matmul(m, k, n);
    if a_t {
        (g.sam, g.sak) = (1, m);
    }
    if b_t {
        (g.sbk, g.sbn) = (1, k);
    }
    g
}

/// Shapes at the edges of `gemm_f16`'s register tiles (8·TR × 8·TS outputs per workgroup,
/// TR, TS ∈ 1..=8): M, N and K below, at and just past multiples of 8 and 32, transposes.
const EDGES: &[(usize, usize, usize, bool, bool)] = &[
    (1, 1, 1, false, false),
    (7, 5, 13, false, false),
    (33, 17, 65, false, false),
    (70, 129, 45, true, false),
    (9, 31, 64, false, true),
    (65, 96, 33, true, true),
    (128, 200, 96, false, false),
];

/// What `MatMulF16` computes, and the f32 GEMM on the unrounded values, for one shape.
struct Case {
    g: Gemm,
    l: MatMulF16,
    /// the inputs packed as f16 pairs
    a16: Vec<f32>,
    b16: Vec<f32>,
    /// the f32 GEMM of the unrounded inputs
    c32: Vec<f32>,
    /// Σ_k |A(m,k)·B(k,n)| per output, the scale of the f16 rounding error
    scale: Vec<f32>,
}

fn case(g: Gemm, path: F16Path, seed: u64) -> Case {
    let a_len = (g.m - 1) * g.sam + (g.k - 1) * g.sak + 1;
    let b_len = (g.k - 1) * g.sbk + (g.n - 1) * g.sbn + 1;
    let (a, b) = (bench_values(seed, a_len), bench_values(seed + 1, b_len));
    let (c32, _) = gemm(&g, &a, &b, None, None);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let (scale, _) = gemm(&g, &abs(&a), &abs(&b), None, None);
    Case {
        g,
        l: MatMulF16::new(g, path).unwrap(),
        a16: pack_f16(&a),
        b16: pack_f16(&b),
        c32,
        scale,
    }
}

/// Runs `c` on `gpu` and holds the result (1) to the twin at the launch's tolerance and (2) to
/// the f32 GEMM at the f16 bound; returns the worst (ratio to the twin's tolerance, ratio to
/// the f16 bound, absolute error against f32).
fn check(gpu: &Backend, c: &Case) -> (f32, f32, f32) {
    let got = gpu
        .run_launch("gemm_f16", &c.l, &[&c.a16, &c.b16])
        .unwrap()
        .remove(0);
    let want = run_cpu(&c.l, &[&c.a16, &c.b16]).remove(0);
    let tol = c.l.tolerance();
    let g = &c.g;
    let what = format!("{}×{}·{}×{} ({:?})", g.m, g.k, g.k, g.n, c.l.path);
    let mut worst = (0.0f32, 0.0f32, 0.0f32);
    for i in 0..want.len() {
        // (1) Against the twin: both sides hold the same f16 inputs and every product is
        // exact in f32, so only the order of the f32 additions may differ — the launch's
        // tolerance, Tolerance::DEFAULT (REDUCTION past K = 1024).
        let r = tol.ratio(got[i], want[i]);
        assert!(
            r <= 1.0,
            "{what}: c[{i}] = {} but the f16 twin gives {} ({r:.2} × {tol:?})",
            got[i],
            want[i]
        );
        // (2) Against the f32 GEMM of the unrounded inputs. Rounding to f16 moves each input by
        // at most u = 2⁻¹¹ of itself (round to nearest, 11 significant bits), so each exact
        // product moves by at most (2u + u²)·|a·b|, and the sum by at most
        // (2u + u²)·Σ_k |A(m,k)·B(k,n)| ≈ 2⁻¹⁰·Σ|a·b| — for inputs in [−1, 1] at most
        // K·2⁻¹⁰, the K·2⁻¹¹-relative scale of f16 inputs. Both sides accumulate in f32: each
        // adds at most K·2⁻²⁴·Σ|a·b| more, hence 2⁻¹⁰ + 2⁻²³·K below, plus 1e-6 for the
        // cases where Σ|a·b| underflows the relative terms.
        let k = g.k as f32;
        let bound = ((2.0f32).powi(-10) * 1.001 + k * (2.0f32).powi(-23)) * c.scale[i] + 1e-6;
        let err = (got[i] - c.c32[i]).abs();
        assert!(
            err <= bound,
            "{what}: c[{i}] = {} but the f32 GEMM gives {}: |err| {err:e} > f16 bound {bound:e}",
            got[i],
            c.c32[i]
        );
        worst.0 = worst.0.max(r);
        worst.1 = worst.1.max(err / bound);
        worst.2 = worst.2.max(err);
    }
    worst
}

fn report(what: &str, worst: (f32, f32, f32)) {
    eprintln!(
        "{what}: worst {:.3} × the twin's tolerance, {:.3} × the f16 bound, |GPU − f32 GEMM| ≤ {:.2e}",
        worst.0, worst.1, worst.2
    );
}

fn max3(a: (f32, f32, f32), b: (f32, f32, f32)) -> (f32, f32, f32) {
    (a.0.max(b.0), a.1.max(b.1), a.2.max(b.2))
}

#[test]
fn f16_gemm_matches_its_twin_and_the_f32_gemm_at_tile_edges() {
    let Some(gpu) = common::gpu() else { return };
    let caps = gpu.gpu_context().unwrap().caps();
    if !caps.f16 {
        let name = &gpu.gpu_context().unwrap().adapter().name;
        common::did_not_run(
            "f16 GEMM",
            &format!("adapter {name} has no shader-f16; its refusal is tested below"),
        );
        return;
    }
    let mut worst = (0.0, 0.0, 0.0);
    for (i, &(m, k, n, at, bt)) in EDGES.iter().enumerate() {
        let c = case(
            product(m, k, n, at, bt),
            F16Path::Registers,
            10 + 2 * i as u64,
        );
        worst = max3(worst, check(&gpu, &c));
    }
    report("gemm_f16", worst);
}

/// The twin's inputs are the f16 values: its result differs from the f32 GEMM's by the f16
/// rounding, by at most the bound `check` derives (and by more than f32 rounding alone).
#[test]
fn the_twin_rounds_its_inputs_to_f16() {
    let c = case(product(40, 300, 24, false, false), F16Path::Registers, 3);
    let want = run_cpu(&c.l, &[&c.a16, &c.b16]).remove(0);
    let mut max_err = 0.0f32;
    for ((w, c32), scale) in want.iter().zip(&c.c32).zip(&c.scale) {
        let err = (w - c32).abs();
        assert!(err <= ((2.0f32).powi(-10) * 1.001 + 300.0 * (2.0f32).powi(-23)) * scale);
        max_err = max_err.max(err / scale);
    }
    assert!(max_err > 1e-5, "no f16 rounding visible: {max_err:e}");
}

#[test]
fn f16_rounding_is_round_to_nearest_even() {
    // every f16 (NaN aside) survives the round trip bit for bit
    for h in 0..=u16::MAX {
        let v = f16_value(h);
        if v.is_nan() {
            assert!(f16_bits(v) & 0x7c00 == 0x7c00 && f16_bits(v) & 0x3ff != 0);
            continue;
        }
        assert_eq!(f16_bits(v), h, "{h:#06x} = {v:e}");
    }
    // the midpoint between neighbours rounds to the even one, just off it to the nearer one
    for h in 0..0x7bffu16 {
        let (lo, hi) = (f16_value(h), f16_value(h + 1));
        let mid = (lo + hi) / 2.0; // exact in f32
        let even = if h % 2 == 0 { h } else { h + 1 };
        assert_eq!(f16_bits(mid), even, "midpoint of {h:#06x}");
        assert_eq!(f16_bits(-mid), even | 0x8000);
        assert_eq!(f16_bits(mid.next_down()), h);
        assert_eq!(f16_bits(mid.next_up()), h + 1);
    }
    assert_eq!(round_f16(65519.0), 65504.0);
    assert_eq!(round_f16(65520.0), f32::INFINITY);
    assert_eq!(round_f16(1.0 + 1.0 / 4096.0), 1.0);
    assert_eq!(round_f16((2.0f32).powi(-25)), 0.0);
    assert_eq!(round_f16((2.0f32).powi(-25) * 1.5), (2.0f32).powi(-24));
}

/// The decision taken before any GPU work, for every kind of device.
#[test]
fn f16_gemm_is_refused_without_shader_f16() {
    let none = ShaderCaps::default();
    let f16 = ShaderCaps { f16: true, ..none };
    let coop = ShaderCaps {
        coop_16x16_f16: true,
        subgroup_size: 32,
        ..f16
    };
    let fits = MatMulF16::new(Gemm::matmul(64, 32, 48), F16Path::Auto).unwrap();
    let edge = MatMulF16::new(Gemm::matmul(65, 32, 48), F16Path::Auto).unwrap();
    for path in [F16Path::Auto, F16Path::Registers, F16Path::CoopMatrix] {
        let l = MatMulF16 { path, ..fits };
        let e = l.choose(&none, "test adapter").unwrap_err();
        let Error::MissingFeature {
            feature, adapter, ..
        } = &e
        else {
            panic!("{path:?}: expected MissingFeature, got {e:?}");
        };
        assert_eq!((*feature, adapter.as_str()), ("shader-f16", "test adapter"));
        assert!(e.to_string().contains("shader-f16"), "{e}");
    }
    assert_eq!(fits.choose(&f16, "a").unwrap(), "gemm_f16");
    assert_eq!(fits.choose(&coop, "a").unwrap(), "gemm_coop");
    assert_eq!(edge.choose(&coop, "a").unwrap(), "gemm_f16");
    let registers = MatMulF16 {
        path: F16Path::Registers,
        ..fits
    };
    assert_eq!(registers.choose(&coop, "a").unwrap(), "gemm_f16");
    let forced = MatMulF16 {
        path: F16Path::CoopMatrix,
        ..fits
    };
    assert_eq!(forced.choose(&coop, "a").unwrap(), "gemm_coop");
    let e = forced.choose(&f16, "a").unwrap_err();
    assert!(
        matches!(&e, Error::MissingFeature { feature, .. } if feature.contains("cooperative-matrix")),
        "{e:?}"
    );
    let forced_edge = MatMulF16 {
        path: F16Path::CoopMatrix,
        ..edge
    };
    assert!(matches!(
        forced_edge.choose(&coop, "a"),
        Err(Error::InvalidArgument { .. })
    ));
    // transposed operands fit; a stride that breaks 16-byte tile alignment does not
    assert_eq!(
        MatMulF16::new(product(32, 48, 16, true, true), F16Path::Auto)
            .unwrap()
            .coop_layout(),
        Some((1, 1))
    );
    let mut odd = Gemm::matmul(32, 48, 16);
    odd.sam = 52;
    assert!(!MatMulF16::new(odd, F16Path::Auto).unwrap().coop_fits());
    // fused parts are refused
    let mut fused = Gemm::matmul(4, 4, 4);
    fused.act_out = (1, 0.0);
    assert!(matches!(
        MatMulF16::new(fused, F16Path::Auto),
        Err(Error::InvalidArgument { .. })
    ));
}

/// On this process's device: without shader-f16 the launch fails with the typed error before
/// any GPU work; with it, forcing cooperative matrices where they are missing does.
#[test]
fn the_device_refuses_what_it_lacks() {
    let Some(gpu) = common::gpu() else { return };
    let caps = gpu.gpu_context().unwrap().caps();
    let c = case(Gemm::matmul(32, 32, 32), F16Path::CoopMatrix, 7);
    let r = gpu.run_launch("gemm_coop", &c.l, &[&c.a16, &c.b16]);
    if caps.coop_16x16_f16 {
        assert!(r.is_ok(), "{r:?}");
    } else {
        assert!(matches!(r, Err(Error::MissingFeature { .. })), "{r:?}");
    }
    if !caps.f16 {
        let l = MatMulF16 {
            path: F16Path::Registers,
            ..c.l
        };
        let r = gpu.run_launch("gemm_f16", &l, &[&c.a16, &c.b16]);
        assert!(matches!(r, Err(Error::MissingFeature { .. })), "{r:?}");
    }
}

#[test]
fn cooperative_matrix_gemm_matches_its_twin() {
    let Some(gpu) = common::gpu() else { return };
    let ctx = gpu.gpu_context().unwrap();
    if !ctx.caps().coop_16x16_f16 {
        common::did_not_run(
            "cooperative-matrix GEMM",
            &format!(
                "adapter {} has no 16×16 f16 cooperative matrices",
                ctx.adapter().name
            ),
        );
        return;
    }
    // one tile, odd tile counts (the clamped second row / column), transposes, long K
    let shapes = [
        (16, 16, 16, false, false),
        (48, 32, 80, false, false),
        (80, 64, 48, true, false),
        (32, 48, 16, false, true),
        (112, 96, 144, true, true),
        (64, 2048, 64, false, false),
    ];
    let mut worst = (0.0, 0.0, 0.0);
    for (i, &(m, k, n, at, bt)) in shapes.iter().enumerate() {
        let c = case(
            product(m, k, n, at, bt),
            F16Path::CoopMatrix,
            40 + 2 * i as u64,
        );
        worst = max3(worst, check(&gpu, &c));
    }
    report("gemm_coop", worst);
}
