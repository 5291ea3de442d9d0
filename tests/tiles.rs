//! Register-tile edges: the tiled GEMM and the implicit-GEMM convolutions against the CPU
//! twins at sizes 1, tile − 1, tile, tile + 1 of every tile the host can choose
//! (`src/gpu/tiles.rs`, `src/ops/conv.rs`, `src/ops/matmul.rs`), in each GEMM dimension and each conv dimension a tile spans.
//!
//! The host picks a tile from the shape (and the adapter's parallelism) and rounds tile
//! extents to {1, 2, 3, 4, 6, 8, 12, 16, 24, 32}; the workgroup tiles of the GEMM are
//! (8·TR) × (8·TS) with TR ∈ {1, 2, 4, 8}, TS ∈ {4, 8, 16}, so sizes around 8, 16, 32, 64
//! and 128 reach the edges of all of them. The conv kernels tile output channels (forward:
//! ≤ 16 per invocation), input channels (backward-input: ≤ 8), positions (64 invocations ×
//! up to 12 each, or one input row segment of up to 16 in the stride-1 variant), and the
//! weight gradient's columns (≤ 32, or ≤ 8 kernel rows in the stride-1 variant) and rows
//! of positions (64 invocations). Both the stride-1 ("rows") variants (kernels up to 7
//! wide) and the general kernels are covered. On a hardware GPU the host picks smaller tiles
//! (4 channels × 4 positions, 4×4 GEMM); the same sizes still straddle their edges.
//!
//! Tolerances as in tests/gpu_vs_cpu.rs: 1e-4 absolute and relative for sums of up to a
//! few thousand products, 1e-3 absolute for the weight gradient's long sums.

mod common;

use common::{assert_close, backends};
use proptest::prelude::*;
use wgcnn::gpu::bench::bench_values as values;
use wgcnn::ndarray::{Array1, Array2, Array4};
use wgcnn::{Backend, Conv2dParams};

fn a2(seed: u64, r: usize, c: usize) -> Array2<f32> {
    Array2::from_shape_vec((r, c), values(seed, r * c)).expect("shape")
}

fn a4(seed: u64, d: [usize; 4]) -> Array4<f32> {
    Array4::from_shape_vec((d[0], d[1], d[2], d[3]), values(seed, d.iter().product()))
        .expect("shape")
}

/// Every backend's results against the first (the CPU reference).
fn all_agree(what: &str, results: &[(&str, Vec<f32>)], atol: f32, rtol: f32) {
    let (_, want) = &results[0];
    for (name, got) in &results[1..] {
        assert_close(&format!("{what} ({name})"), got, want, atol, rtol);
    }
}

fn check_gemm(m: usize, k: usize, n: usize) {
    let a = a2(m as u64 * 7919 + k as u64, m, k);
    let b = a2(n as u64 * 104729 + k as u64, k, n);
    let mut mm = Vec::new();
    for (name, be) in backends() {
        mm.push((name, be.matmul(&a, &b).unwrap().into_raw_vec_and_offset().0));
    }
    all_agree(&format!("matmul {m}×{k}·{k}×{n}"), &mm, 1e-4, 1e-4);
}

fn check_linear(batch: usize, inp: usize, out: usize) {
    let x = a2(batch as u64 * 31 + inp as u64, batch, inp);
    let w = a2(out as u64 * 37 + inp as u64, out, inp);
    let bias = Array1::from(values(out as u64 + 5, out));
    let dy = a2(batch as u64 * 41 + out as u64, batch, out);
    let (mut y, mut dx, mut dw, mut db) = (vec![], vec![], vec![], vec![]);
    for (name, be) in backends() {
        y.push((
            name,
            be.linear(&x, &w, Some(&bias))
                .unwrap()
                .into_raw_vec_and_offset()
                .0,
        ));
        let g = be.linear_backward(&x, &w, &dy).unwrap();
        dx.push((name, g.dx.into_raw_vec_and_offset().0));
        dw.push((name, g.dw.into_raw_vec_and_offset().0));
        db.push((name, g.db.to_vec()));
    }
    let what = format!("linear batch {batch}, {inp} → {out}");
    all_agree(&format!("{what}: y"), &y, 1e-4, 1e-4);
    all_agree(&format!("{what}: dx"), &dx, 1e-4, 1e-4);
    all_agree(&format!("{what}: dw"), &dw, 1e-4, 1e-4);
    all_agree(&format!("{what}: db"), &db, 1e-4, 1e-4);
}

fn check_conv(x: [usize; 4], w: [usize; 4], p: Conv2dParams) {
    let seed = x.iter().chain(&w).fold(17u64, |s, &v| s * 131 + v as u64);
    let xa = a4(seed, x);
    let wa = a4(seed ^ 1, w);
    let b = Array1::from(values(seed ^ 2, w[0]));
    let y_dim = p.out_shape("test", x, w).expect("valid conv");
    let dy = a4(seed ^ 3, y_dim);
    let (mut y, mut dx, mut dw, mut db) = (vec![], vec![], vec![], vec![]);
    for (name, be) in backends() {
        y.push((name, conv_y(&be, &xa, &wa, &b, p)));
        let g = be.conv2d_backward(&xa, &wa, &dy, p).unwrap();
        dx.push((name, g.dx.into_raw_vec_and_offset().0));
        dw.push((name, g.dw.into_raw_vec_and_offset().0));
        db.push((name, g.db.to_vec()));
    }
    let what = format!("conv x {x:?} w {w:?} {p:?}");
    all_agree(&format!("{what}: y"), &y, 1e-4, 1e-4);
    all_agree(&format!("{what}: dx"), &dx, 1e-4, 1e-4);
    all_agree(&format!("{what}: dw"), &dw, 1e-3, 1e-4);
    all_agree(&format!("{what}: db"), &db, 1e-3, 1e-4);
}

fn conv_y(
    be: &Backend,
    x: &Array4<f32>,
    w: &Array4<f32>,
    b: &Array1<f32>,
    p: Conv2dParams,
) -> Vec<f32> {
    be.conv2d(x, w, Some(b), p)
        .unwrap()
        .into_raw_vec_and_offset()
        .0
}

/// Sizes at the edges of the GEMM's workgroup tiles (8, 16, 32, 64, 128 rows/columns).
const GEMM_EDGES: &[usize] = &[
    1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129,
];

#[test]
fn gemm_tile_edges_in_m_and_n() {
    for &m in GEMM_EDGES {
        for &n in GEMM_EDGES {
            check_gemm(m, 3, n);
        }
    }
}

#[test]
fn gemm_tile_edges_in_k() {
    for &k in &[1, 2, 3, 7, 8, 9, 63, 64, 65, 129] {
        check_gemm(33, k, 65);
        check_gemm(9, k, 17);
    }
}

#[test]
fn linear_tile_edges_with_bias_and_ones_column() {
    // dw has `inp + 1` columns (the ones column gives db): inp + 1 at an edge too.
    for &(batch, inp, out) in &[
        (1, 1, 1),
        (7, 31, 9),
        (8, 32, 8),
        (9, 33, 7),
        (63, 63, 15),
        (64, 64, 16),
        (65, 65, 17),
        (16, 127, 31),
        (17, 128, 33),
        (15, 129, 64),
        (64, 400, 120),
    ] {
        check_linear(batch, inp, out);
    }
}

#[test]
fn conv_forward_channel_and_position_edges() {
    let p = Conv2dParams::default();
    // output channels per invocation: up to 16 (balanced over O)
    for &o in &[1, 15, 16, 17, 33] {
        check_conv([2, 3, 6, 6], [o, 3, 3, 3], p);
    }
    // positions N·OH·OW around multiples of 64 (one per invocation) and 64·12
    for &(n, hw) in &[
        (1, 1),
        (1, 8),
        (1, 10),
        (63, 3),
        (64, 3),
        (65, 3),
        (3, 18),
        (1, 29),
    ] {
        let k = if hw >= 3 { 3 } else { 1 };
        check_conv([n, 2, hw, hw], [4, 2, k, k], p);
    }
}

#[test]
fn conv_backward_input_rows_edges() {
    // stride 1 (the rows variant): channels per invocation ≤ 8, row segments ≤ 16 wide
    for &c in &[1, 7, 8, 9] {
        check_conv([2, c, 5, 5], [3, c, 3, 3], Conv2dParams::new(1, 1));
    }
    for &w in &[1, 15, 16, 17, 33] {
        check_conv([2, 2, 3, w], [2, 2, 1, w.min(5)], Conv2dParams::default());
    }
    // segments N·H·⌈W/IS⌉ around 64
    for &n in &[21, 32, 33] {
        check_conv([n, 1, 2, 4], [2, 1, 2, 2], Conv2dParams::new(1, 1));
    }
}

#[test]
fn conv_backward_weight_rows_edges() {
    // stride 1: output channels per tile ≤ 8, (c,a) kernel rows per tile ≤ 8
    for &o in &[1, 7, 8, 9, 17] {
        check_conv([3, 2, 7, 7], [o, 2, 3, 3], Conv2dParams::default());
    }
    for &(c, kh) in &[(1, 1), (7, 1), (8, 1), (9, 1), (3, 3), (4, 2), (17, 1)] {
        check_conv([2, c, 6, 6], [3, c, kh, 2], Conv2dParams::default());
    }
    // rows of positions N·OH around the 64 invocations
    for &n in &[63, 64, 65] {
        check_conv([n, 1, 3, 3], [2, 1, 3, 3], Conv2dParams::new(1, 1));
    }
}

#[test]
fn conv_general_kernels_edges() {
    // stride 2 takes the general backward kernels: backward-input channel and position
    // edges, backward-weight column edges (C·KH·KW + 1 bias column around 32)
    let s2 = Conv2dParams::new(2, 1);
    for &c in &[1, 7, 8, 9] {
        check_conv([2, c, 7, 7], [3, c, 3, 3], s2);
    }
    for &c in &[30, 31, 32, 63] {
        check_conv([2, c, 5, 5], [2, c, 1, 1], Conv2dParams::new(2, 0));
    }
    for &o in &[1, 7, 8, 9] {
        check_conv([3, 2, 6, 6], [o, 2, 2, 2], Conv2dParams::new(2, 0));
    }
    // kernels wider than the rows variants take (kw > 7)
    check_conv([2, 2, 4, 12], [3, 2, 2, 9], Conv2dParams::default());
    check_conv([2, 3, 5, 10], [9, 3, 3, 8], Conv2dParams::new(1, 1));
}

fn edge(tile: usize) -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1, tile - 1, tile, tile + 1])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn gemm_edges_property(m in edge(32), n in edge(64), k in edge(8)) {
        check_gemm(m, k, n);
    }

    #[test]
    fn conv_edges_property(
        n in 1usize..=3, c in edge(8), o in edge(16), hw in edge(8),
        k in 1usize..=3, s in 1usize..=2, pad in 0usize..=1,
    ) {
        prop_assume!(k <= hw + 2 * pad);
        check_conv([n, c, hw, hw], [o, c, k, k], Conv2dParams::new(s, pad));
    }
}

/// `gemm_shared`, the GEMM hardware GPUs get (panels of A and B staged in workgroup memory,
/// 16 values of K at a time), forced on this adapter through `SharedMatMul` and checked
/// against the CPU twin: M and N at the workgroup tile edges, K across the panel edges (1, 15,
/// 16, 17, 33), for the plain product and the linear layer's fused forms (bias and ReLU out;
/// ReLU's derivative in and the ones column of the bias gradient). Each output is the same
/// k-ascending sum as the twin's, so the default tolerance (1e-4) holds with room.
#[test]
fn gemm_shared_tile_and_panel_edges() {
    use common::{gpu, rand01};
    use wgcnn::cpu::matmul::Gemm;
    use wgcnn::ops::matmul::{BatchAxis, MatMul, SharedMatMul};
    use wgcnn::ops::{compare, run_cpu, Access, Launch};
    let Some(g) = gpu() else { return };
    let relu = (1, 0.0);
    for (m, n) in [(1, 1), (7, 9), (33, 65), (64, 128), (129, 17)] {
        for k in [1, 15, 16, 17, 33] {
            let mut bw = Gemm::linear_backward_weight(k, n, m, relu);
            bw.ones_col = true;
            let cases = [
                (
                    "matmul",
                    MatMul::new(Gemm::matmul(m, k, n), false, BatchAxis::None),
                ),
                (
                    "linear forward, bias, relu",
                    MatMul::new(Gemm::linear_forward(m, k, n, relu), true, BatchAxis::M),
                ),
                (
                    "linear backward-weight, relu', ones column",
                    MatMul::new(bw, false, BatchAxis::K),
                ),
            ];
            for (tag, l) in cases {
                let l = SharedMatMul(l);
                let seed = (m * 1000 + n * 10 + k) as u64;
                let ins: Vec<Vec<f32>> = l
                    .bindings()
                    .iter()
                    .filter(|b| b.access == Access::Read)
                    .enumerate()
                    .map(|(i, b)| match b.name {
                        // a kept ReLU output: ≥ 0, some exact zeros
                        "ya" => rand01(seed + i as u64, b.len)
                            .iter()
                            .map(|v| (v - 0.3).max(0.0))
                            .collect(),
                        _ => values(seed + i as u64, b.len),
                    })
                    .collect();
                let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
                let got = g.run_launch(tag, &l, &refs).expect("gemm_shared");
                let want = run_cpu(&l, &refs);
                if let Some(e) = compare(&l, &got, &want) {
                    panic!("gemm_shared {tag}, {m}×{k}·{k}×{n}: {e}");
                }
            }
        }
    }
}
