//! The convolution family (1-3 spatial axes, groups, dilation, `same` / per-side / anchor
//! padding, kernel flip): GPU against CPU on random problems, the semantics of each option
//! stated as an identity between two calls, typed errors, finite-difference gradient checks
//! on both backends, and one training step of small models on both executors.
//!
//! # Which GPU kernels the problems reach
//! `src/ops/conv.rs::variant` picks the stride-1 "rows" backward kernels for plain 2-D
//! (and 1-D) problems (no groups, dilation 1, no flip) with `sw = 1` (`sh = sw = 1` for
//! backward-input) and `kw ≤ 7`, the sliding-window kernels for depthwise ones (C = O =
//! groups) with `sw = 1` and `kw ≤ 7` (`conv_forward_depthwise`, with `kh ≤ 7` also
//! `conv_backward_weight_depthwise`; with `sh = 1` also `conv_backward_input_depthwise`),
//! the pointwise kernels for plain 1×1 layers without padding (their `_v4` forms with stride
//! 1 and positions per image and input channels multiples of 4; the rows weight gradient
//! where the pointwise tiles are too few, at any stride), the generic kernels
//! otherwise. [`plain_problem`] aims at
//! the rows variants, [`options_problem`] mostly at the generic ones; [`variants`] names
//! the kernels a problem reaches and `WGCNN_REPORT=1 … -- --nocapture` prints how often
//! each was hit. [`tile_edges_and_every_kernel_variant`] reaches every variant on purpose
//! with sizes that cross the register-tile edges (64·positions per workgroup, channel tiles
//! that do not divide the channel count, channel tiles that must divide a group of 3, 5 or
//! 6 channels).
//!
//! # Tolerances (GPU vs CPU)
//! `|gpu − cpu| ≤ atol + rtol·|cpu|`, as in `tests/gpu_vs_cpu.rs`: both paths accumulate in
//! f32 in a different order, so a sum of K products of O(1) values differs by
//! O(√K·2⁻²⁴·Σ|terms|). The forward and backward-input sums have at most a few hundred
//! terms (`C/G·kd·kh·kw`, `O/G·kd·kh·kw`): atol = rtol = 1e-4. The weight and bias
//! gradients sum over every output position (`N·od·oh·ow`, up to ~5,000 here):
//! atol = 1e-3, rtol = 1e-4. Identities that run the same arithmetic in the same order
//! (anchor vs its explicit padding, flip vs a rotated kernel, conv1d vs conv2d with H = 1)
//! hold to 1e-6 (they are bit-identical on the CPU; the GPU may pick other tiles).
//! Measured worst |err|/tol: ≤ 0.04 on lavapipe (default cases) and on an H100 (Vulkan,
//! `PROPTEST_CASES=150`); the forward pass is often bit-identical to the CPU twin.

mod common;

use common::values;

use std::collections::BTreeMap;
use std::sync::Mutex;

use common::{assert_close, gpu, rand01};
use proptest::prelude::*;
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::Graph;
use wgcnn::ndarray::{concatenate, Array1, ArrayD, Axis, IxDyn, Slice};
use wgcnn::nn::{Conv1d, Conv2d, Conv3d, Flatten, Linear, Relu, SeparableConv2d, Sequential};
use wgcnn::ops::conv::{Conv, ConvPass};
use wgcnn::ops::Launch;
use wgcnn::plan::Mode;
use wgcnn::{Backend, ConvParams, Error, Optimizer, Padding};

// ---- helpers ----------------------------------------------------------------------------

/// Sums of up to a few hundred products (forward, backward-input).
const SUM: (f32, f32) = (1e-4, 1e-4);
/// Sums over every output position (weight and bias gradients).
const LONG_SUM: (f32, f32) = (1e-3, 1e-4);
/// The same arithmetic reached two ways.
const SAME: (f32, f32) = (1e-6, 1e-6);

/// Worst |err|/tol and the number of checks per quantity, and kernel-variant hits.
static WORST: Mutex<BTreeMap<String, (f32, u32)>> = Mutex::new(BTreeMap::new());

fn report() -> bool {
    std::env::var("WGCNN_REPORT").is_ok_and(|v| v == "1")
}

/// [`assert_close`] that also records the worst ratio under `what`.
fn check(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, (atol, rtol): (f32, f32)) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let g: Vec<f32> = got.iter().copied().collect();
    let w: Vec<f32> = want.iter().copied().collect();
    let r = assert_close(what, &g, &w, atol, rtol);
    tally(what, r);
}

fn tally(what: &str, r: f32) {
    if let Ok(mut m) = WORST.lock() {
        let e = m.entry(what.to_string()).or_insert((0.0, 0));
        e.0 = e.0.max(r);
        e.1 += 1;
        if report() && !what.starts_with("hits ") {
            eprintln!("worst {what}: {:.4} over {} checks", e.0, e.1);
        }
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    }
}

fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape")
}

fn rand(seed: u64, shape: &[usize]) -> ArrayD<f32> {
    arr(shape, values(seed, shape.iter().product()))
}

/// One convolution: `x [N,C,spatial…]`, `w [O,C/G,kernel…]`.
#[derive(Clone, Debug)]
struct Problem {
    x: Vec<usize>,
    w: Vec<usize>,
    p: ConvParams,
    bias: bool,
    seed: u64,
}

impl Problem {
    fn dims(&self) -> usize {
        self.x.len() - 2
    }

    /// The resolved geometry (panics on an invalid problem).
    fn geometry(&self) -> wgcnn::ConvDims {
        let d = self.dims();
        let mut x5 = [self.x[0], self.x[1], 1, 1, 1];
        let mut w5 = [self.w[0], self.w[1], 1, 1, 1];
        x5[5 - d..].copy_from_slice(&self.x[2..]);
        w5[5 - d..].copy_from_slice(&self.w[2..]);
        self.p
            .for_dims(d)
            .dims("conv", x5, w5)
            .expect("valid problem")
    }

    /// Multiply-adds of one pass on the CPU.
    fn macs(&self) -> usize {
        let g = self.geometry();
        g.y.iter().product::<usize>() * g.w[1..].iter().product::<usize>()
    }
}

/// The GPU kernels `Problem` reaches on `g`'s adapter: (forward, backward-input,
/// backward-weight), as the launches choose them (`src/ops/conv.rs::variant`; some choices
/// depend on the adapter's class), without the `conv_` prefix.
fn variants(g: &Backend, pr: &Problem) -> [&'static str; 3] {
    let ctx = g.gpu_context().expect("a GPU backend");
    let d = pr.geometry();
    [
        ConvPass::Forward,
        ConvPass::BackwardInput,
        ConvPass::BackwardWeight,
    ]
    .map(|pass| {
        let call = Conv::new(pass, d, pr.bias, (0, 0.0))
            .gpu(ctx)
            .expect("conv launch");
        call.entry.trim_start_matches("conv_")
    })
}

/// The channels per workgroup (`DCH`) of `pr`'s depthwise weight gradient; `None` where it
/// takes another kernel.
fn depthwise_channels(g: &Backend, pr: &Problem) -> Option<u32> {
    let ctx = g.gpu_context().expect("a GPU backend");
    let call = Conv::new(ConvPass::BackwardWeight, pr.geometry(), pr.bias, (0, 0.0))
        .gpu(ctx)
        .expect("conv launch");
    (call.entry == "conv_backward_weight_depthwise")
        .then(|| call.consts.iter().find(|(k, _)| *k == "DCH").map(|c| c.1))
        .flatten()
}

/// Runs `pr` forward and backward on the CPU and the GPU and compares every output.
fn gpu_vs_cpu(tag: &str, g: &Backend, pr: &Problem) {
    let cpu = Backend::cpu();
    let x = rand(pr.seed, &pr.x);
    let w = rand(pr.seed ^ 1, &pr.w);
    let b = pr.bias.then(|| Array1::from(values(pr.seed ^ 2, pr.w[0])));
    let want = cpu.conv(&x, &w, b.as_ref(), pr.p).expect("cpu conv");
    let got = g.conv(&x, &w, b.as_ref(), pr.p).expect("gpu conv");
    check(&format!("{tag} y"), &got, &want, SUM);
    let dy = rand(pr.seed ^ 3, want.shape());
    let gw = cpu.conv_backward(&x, &w, &dy, pr.p).expect("cpu backward");
    let gg = g.conv_backward(&x, &w, &dy, pr.p).expect("gpu backward");
    check(&format!("{tag} dx"), &gg.dx, &gw.dx, SUM);
    check(&format!("{tag} dw"), &gg.dw, &gw.dw, LONG_SUM);
    check(
        &format!("{tag} db"),
        &gg.db.into_dyn(),
        &gw.db.into_dyn(),
        LONG_SUM,
    );
    for v in variants(g, pr) {
        tally(&format!("hits {v} ({tag})"), 0.0);
    }
}

/// The kernel's extent `(k−1)·dil + 1` fits the padded input on every axis.
fn fits(x: &[usize], w: &[usize], p: &ConvParams) -> bool {
    let d = x.len() - 2;
    let mut x5 = [x[0], x[1], 1, 1, 1];
    let mut w5 = [w[0], w[1], 1, 1, 1];
    x5[5 - d..].copy_from_slice(&x[2..]);
    w5[5 - d..].copy_from_slice(&w[2..]);
    p.for_dims(d).dims("conv", x5, w5).is_ok()
}

// ---- GPU vs CPU, property-based ------------------------------------------------------------

/// `(groups, channels per group, outputs per group)`: depthwise (with a multiplier), groups
/// of odd sizes (3, 5) and of 6 (channel tiles must divide them), and no groups.
fn channel_layout() -> impl Strategy<Value = (usize, usize, usize)> {
    prop_oneof![
        (1usize..=10, 1usize..=3).prop_map(|(c, m)| (c, 1, m)),
        (
            2usize..=4,
            prop::sample::select(vec![2usize, 3, 5, 6]),
            1usize..=5
        ),
        (Just(1usize), 1usize..=12, 1usize..=14),
    ]
}

/// Padding: 0 explicit per side (begin ≠ end in general), 1 `same`, 2 anchor, 3 symmetric.
fn padding(mode: usize, begin: [usize; 3], end: [usize; 3], kernel: [usize; 3]) -> Padding {
    match mode {
        0 => Padding::Explicit { begin, end },
        1 => Padding::Same,
        2 => Padding::Anchor([0, 1, 2].map(|a| begin[a] % kernel[a])),
        _ => Padding::Explicit { begin, end: begin },
    }
}

/// Any option on 1, 2 or 3 spatial axes.
fn options_problem() -> impl Strategy<Value = Problem> {
    (
        (
            prop_oneof![2 => Just(1usize), 4 => Just(2), 2 => Just(3)],
            1usize..=3,
            channel_layout(),
            1usize..=80,
            prop::array::uniform3(1usize..=14),
        ),
        (
            prop::array::uniform3(1usize..=5),
            prop::array::uniform3(1usize..=3),
            prop::array::uniform3(1usize..=3),
        ),
        (
            0usize..4,
            prop::array::uniform3(0usize..=3),
            prop::array::uniform3(0usize..=3),
        ),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_filter_map(
            "kernel fits the padded input, modest size",
            |(
                (dims, n, (g, cg, og), len1, sp),
                (k, stride, dil),
                (mode, begin, end),
                flip,
                bias,
                seed,
            )| {
                // 1-D: long rows (positions cross the 64-wide tiles); 3-D: small volumes
                let spatial: Vec<usize> = match dims {
                    1 => vec![len1],
                    2 => vec![sp[1] + sp[0], sp[2] + sp[0]],
                    _ => vec![sp[0].min(7), sp[1].min(9), sp[2].min(9)],
                };
                let kernel: Vec<usize> = k[3 - dims..].to_vec();
                let mut x = vec![n, g * cg];
                x.extend(&spatial);
                let mut w = vec![g * og, cg];
                w.extend(&kernel);
                let p = ConvParams {
                    stride,
                    dilation: dil,
                    padding: padding(mode, begin, end, k),
                    groups: g,
                    flip,
                };
                let pr = Problem {
                    x,
                    w,
                    p,
                    bias,
                    seed,
                };
                (fits(&pr.x, &pr.w, &pr.p) && pr.macs() <= 150_000).then_some(pr)
            },
        )
}

/// Plain 2-D (no groups, dilation or flip), mostly stride 1: the rows variants, with widths
/// that cross their segments and channel counts that cross their channel tiles.
fn plain_problem() -> impl Strategy<Value = Problem> {
    (
        (
            1usize..=3,
            1usize..=20,
            1usize..=20,
            1usize..=24,
            1usize..=70,
        ),
        (1usize..=5, 1usize..=8),
        (
            prop_oneof![3 => Just(1usize), 1 => Just(2)],
            prop_oneof![5 => Just(1usize), 1 => Just(2)],
        ),
        (
            0usize..4,
            prop::array::uniform3(0usize..=3),
            prop::array::uniform3(0usize..=3),
        ),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_filter_map(
            "kernel fits the padded input, modest size",
            |((n, c, o, h, w), (kh, kw), (sh, sw), (mode, begin, end), bias, seed)| {
                let p = ConvParams {
                    stride: [1, sh, sw],
                    padding: padding(mode, begin, end, [1, kh, kw]),
                    ..ConvParams::default()
                };
                let pr = Problem {
                    x: vec![n, c, h, w],
                    w: vec![o, c, kh, kw],
                    p,
                    bias,
                    seed,
                };
                (fits(&pr.x, &pr.w, &pr.p) && pr.macs() <= 400_000).then_some(pr)
            },
        )
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn conv_options_gpu_vs_cpu(pr in options_problem()) {
        let Some(g) = gpu() else { return Ok(()) };
        gpu_vs_cpu(&format!("conv{}d options", pr.dims()), &g, &pr);
    }

    #[test]
    fn conv2d_plain_gpu_vs_cpu(pr in plain_problem()) {
        let Some(g) = gpu() else { return Ok(()) };
        gpu_vs_cpu("conv2d plain", &g, &pr);
    }
}

/// Named problems that reach every kernel variant, each with sizes across tile edges.
#[test]
fn tile_edges_and_every_kernel_variant() {
    let Some(g) = gpu() else { return };
    let p2 = |s: [usize; 2], pb: [usize; 2], pe: [usize; 2]| ConvParams {
        stride: [1, s[0], s[1]],
        padding: Padding::Explicit {
            begin: [0, pb[0], pb[1]],
            end: [0, pe[0], pe[1]],
        },
        ..ConvParams::default()
    };
    let pr = |x: &[usize], w: &[usize], p: ConvParams, seed: u64| Problem {
        x: x.to_vec(),
        w: w.to_vec(),
        p,
        bias: true,
        seed,
    };
    let problems = [
        // rows variants: 17 / 19 channels (no tile divides them), 70 columns (rows segments
        // and 64-position tiles both cross the edge), asymmetric padding
        pr(
            &[2, 17, 9, 70],
            &[19, 17, 3, 3],
            p2([1, 1], [1, 0], [0, 2]),
            1,
        ),
        // widest rows kernel (7), `same`
        pr(
            &[1, 5, 11, 65],
            &[6, 5, 7, 7],
            ConvParams::default().same(),
            2,
        ),
        // kw = 8 > 7: generic backward kernels for a plain layer
        pr(
            &[2, 3, 10, 20],
            &[4, 3, 2, 8],
            p2([1, 1], [0, 3], [1, 4]),
            3,
        ),
        // sh = 2, sw = 1: generic backward-input, rows backward-weight
        pr(
            &[2, 6, 21, 33],
            &[7, 6, 4, 3],
            p2([2, 1], [2, 1], [1, 1]),
            4,
        ),
        // sw = 2: both generic
        pr(
            &[3, 4, 20, 20],
            &[9, 4, 3, 3],
            p2([1, 2], [1, 1], [1, 1]),
            5,
        ),
        // 3·20·20 = 1,200 output positions: more than one 64·12-position forward tile
        pr(&[3, 2, 20, 20], &[3, 2, 1, 1], ConvParams::default(), 6),
        // groups of 3 inputs / 3 outputs: channel tiles of 3
        pr(
            &[2, 12, 9, 9],
            &[12, 3, 3, 3],
            ConvParams::new(1, 1).groups(4),
            7,
        ),
        // groups of 6 inputs / 5 outputs: tiles of 6 (backward-input) and 5 → 1 (forward)
        pr(
            &[2, 12, 8, 8],
            &[10, 6, 3, 3],
            ConvParams::new(1, 1).groups(2),
            8,
        ),
        // depthwise, 13 channels, multiplier 2, dilation 2, `same`
        pr(
            &[2, 13, 12, 12],
            &[26, 1, 3, 3],
            ConvParams::default().groups(13).dilation(2).same(),
            9,
        ),
        // 1-D plain: rows variants on [N, C, L] with L = 130
        pr(&[2, 3, 130], &[5, 3, 5], ConvParams::new(1, 2), 10),
        // 1-D grouped, dilated, strided
        pr(
            &[2, 6, 77],
            &[4, 3, 3],
            ConvParams::new(2, 2).groups(2).dilation(3),
            11,
        ),
        // 3-D, strides per axis, flip
        pr(
            &[2, 3, 5, 9, 9],
            &[4, 3, 3, 3, 3],
            ConvParams {
                stride: [1, 2, 1],
                ..ConvParams::new(1, 1).flipped(true)
            },
            12,
        ),
        // depthwise sliding-window variants: 19 columns (runs of up to 16 cross the row end),
        // `same` 3×3; 5×5 with a row stride of 2 (forward only) and asymmetric padding; 1-D
        pr(
            &[2, 7, 9, 19],
            &[7, 1, 3, 3],
            ConvParams::default().groups(7).same(),
            14,
        ),
        pr(
            &[3, 5, 11, 33],
            &[5, 1, 5, 5],
            ConvParams {
                groups: 5,
                ..p2([2, 1], [2, 0], [1, 3])
            },
            15,
        ),
        pr(&[2, 4, 70], &[4, 1, 7], ConvParams::new(1, 3).groups(4), 16),
        // the weight gradient in blocks of rows (output rows 4 wide): row stride 2, 5 output
        // rows in blocks of 3 (the sixth masked)
        pr(
            &[2, 4, 9, 4],
            &[4, 1, 3, 3],
            ConvParams {
                groups: 4,
                ..p2([2, 1], [1, 1], [1, 1])
            },
            27,
        ),
        // blocks of 4 rows on 10-row images (the last block's rows 10 and 11 computed on
        // clamped inputs and not stored), forward and backward-input
        pr(
            &[2, 6, 10, 12],
            &[6, 1, 3, 3],
            ConvParams::default().groups(6).same(),
            26,
        ),
        // vec4 pointwise variants: 20 → 21 channels, 3 images of 36 positions
        pr(&[3, 20, 6, 6], &[21, 20, 1, 1], ConvParams::default(), 25),
        // pointwise variants: 19 → 21 channels (no tile divides them), 9·13 = 117 positions
        // per image (tiles of 8·PS positions cross the image end); stride 2 on an odd input
        // (15: the last row and column have no window; backward-input zeroes the rest); 1-D
        pr(&[3, 19, 9, 13], &[21, 19, 1, 1], ConvParams::default(), 17),
        // a weight gradient with enough tiles for the pointwise variant on any adapter
        pr(
            &[2, 150, 5, 6],
            &[300, 150, 1, 1],
            ConvParams::default(),
            21,
        ),
        pr(&[2, 10, 15, 15], &[9, 10, 1, 1], ConvParams::new(2, 0), 18),
        pr(&[2, 5, 70], &[3, 5, 1], ConvParams::default(), 19),
        // strides 3 × 2 on 16 × 11: rows 15 and the zero blocks cut by the input's end
        pr(
            &[2, 7, 16, 11],
            &[5, 7, 1, 1],
            ConvParams {
                stride: [1, 3, 2],
                ..ConvParams::default()
            },
            22,
        ),
        // depthwise weight gradient with a kernel 7 high and 3 wide, row stride 2
        pr(
            &[2, 6, 16, 10],
            &[6, 1, 7, 3],
            ConvParams {
                groups: 6,
                ..p2([2, 1], [3, 1], [3, 1])
            },
            20,
        ),
        // depthwise weight gradient with several channels per workgroup (DCH): 4×4 images
        // (16 positions per channel: 8 channels a workgroup on a CPU adapter, 10 = 8 + 2,
        // so the last workgroup has 6 channels past the end); 40×40 (3,200 positions: 2
        // channels a workgroup, 3 = 2 + 1)
        pr(
            &[1, 10, 4, 4],
            &[10, 1, 3, 3],
            ConvParams::new(1, 1).groups(10),
            23,
        ),
        pr(
            &[2, 3, 40, 40],
            &[3, 1, 3, 3],
            ConvParams::new(1, 1).groups(3),
            24,
        ),
        // 3-D depthwise with anchor
        pr(
            &[1, 4, 6, 7, 8],
            &[4, 1, 2, 3, 3],
            ConvParams::default().groups(4).anchor([1, 0, 2]),
            13,
        ),
    ];
    let mut hit = std::collections::BTreeSet::new();
    let mut channels_per_group = std::collections::BTreeSet::new();
    for (i, p) in problems.iter().enumerate() {
        gpu_vs_cpu(&format!("named #{i}"), &g, p);
        hit.extend(variants(&g, p));
        channels_per_group.insert(depthwise_channels(&g, p));
    }
    // on a CPU adapter of up to 2 cores (2 workgroups occupy it) both DCH problems above
    // group channels (tests/split_reduction.rs checks DCH = 8 on every adapter)
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    if cores <= 2
        && g.gpu_context()
            .is_some_and(|c| c.adapter().device_type == "Cpu")
    {
        for dch in [2, 8] {
            assert!(
                channels_per_group.contains(&Some(dch)),
                "no named problem runs the depthwise weight gradient with DCH = {dch}: {channels_per_group:?}"
            );
        }
    }
    for v in [
        "forward",
        "forward_depthwise",
        "backward_input",
        "backward_input_depthwise",
        "backward_input_rows",
        "backward_weight",
        "backward_weight_rows",
        "forward_pointwise",
        "backward_input_pointwise",
        "backward_weight_pointwise",
        "forward_pointwise_v4",
        "backward_input_pointwise_v4",
        "backward_weight_pointwise_v4",
        "backward_weight_depthwise",
    ] {
        assert!(hit.contains(v), "no named problem reaches {v}");
    }
}

/// The vec4 pointwise kernels (`conv_*_pointwise_v4`: 1×1, stride 1, positions per image and
/// input channels multiples of 4) launch by launch against the twin, without and with a
/// fused activation (ReLU from y; GELU-tanh, which keeps its input: the forward pass also
/// writes z, the backward passes read it), across their tile edges: 21 output channels (no
/// channel tile divides them) over 3 images of 36 positions (9 vec4 units each, so the
/// 8·PS/4-unit position tiles cross image and batch ends), a layer large enough for 8 × 16
/// tiles, 32 input channels over 9 images of 56 positions (a CPU adapter's 4 × 32 tiles for
/// backward-input, 64-unit tiles across 14-unit images), and one unit per image. Beside them
/// a scalar layer of 128 → 128 channels over 11 images of 49 positions: 16-row tiles (a CPU
/// adapter's 16 × 8 forward and backward-input, 16 × 16 weight gradient).
#[test]
fn pointwise_v4_launches_match_the_twin() {
    let Some(g) = gpu() else { return };
    let ctx = g.gpu_context().expect("a GPU backend");
    // lavapipe on Vulkan has subgroups of 8: its pointwise kernels must share rows (the
    // GL pass of CI, without subgroups, runs the same launches without)
    let a = ctx.adapter();
    if a.name.contains("llvmpipe") && a.backend == "Vulkan" {
        let off = std::env::var("WGCNN_SUBGROUPS").is_ok_and(|v| v == "off");
        assert_eq!(ctx.subgroups_of_eight(), !off, "{a}: subgroups of 8");
    }
    println!(
        "pointwise launches with subgroup row sharing (SG_ROWS): {}",
        ctx.subgroups_of_eight()
    );
    let layers = [
        ([3, 20, 6, 6], 21),
        ([2, 40, 8, 8], 70),
        ([9, 32, 7, 8], 24),
        ([1, 4, 2, 2], 3),
        ([11, 128, 7, 7], 128),
    ];
    for (i, (x, o)) in layers.into_iter().enumerate() {
        let d = ConvParams::default()
            .for_dims(2)
            .dims("v4", [x[0], x[1], 1, x[2], x[3]], [o, x[1], 1, 1, 1])
            .expect("valid 1×1 conv");
        for act in [(0, 0.0), (1, 0.0), (8, 0.0)] {
            for pass in [
                ConvPass::Forward,
                ConvPass::BackwardInput,
                ConvPass::BackwardWeight,
            ] {
                let l = Conv::new(pass, d, true, act);
                let tag = format!("{x:?} → {o}, {pass:?}, act {act:?}");
                let call = l.gpu(ctx).expect("conv launch");
                let entry = call.entry;
                let sg = call.consts.iter().find(|c| c.0 == "SG_ROWS").map(|c| c.1);
                assert_eq!(sg, Some(ctx.subgroups_of_eight() as u32), "{tag}: {entry}");
                let v4 = (x[2] * x[3]) % 4 == 0;
                assert_eq!(entry.ends_with("_pointwise_v4"), v4, "{tag}: {entry}");
                let ins: Vec<Vec<f32>> = l
                    .bindings()
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.access.reads())
                    .map(|(k, b)| values(100 * i as u64 + k as u64, b.len))
                    .collect();
                let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
                let got = g.run_launch(&tag, &l, &refs).expect("gpu launch");
                let want = wgcnn::ops::run_cpu(&l, &refs);
                if let Some(m) = wgcnn::ops::compare(&l, &got, &want) {
                    panic!("{tag} ({entry}): {m}");
                }
            }
        }
    }
}

/// Regression: the GPU caches a register tile per layer description, and the description
/// left out the groups, so a grouped layer after an ungrouped one of the same shape
/// reused a channel tile that straddled two groups (forward off by O(1)).
#[test]
fn grouped_layer_after_ungrouped_one_of_same_shape() {
    let Some(_) = gpu() else { return };
    // a context of its own, so the ungrouped layer is the first one cached
    let g = Backend::gpu().expect("gpu");
    for groups in [1, 3, 2, 6, 1] {
        let pr = Problem {
            x: vec![2, 6, 9, 9],
            w: vec![6, 6 / groups, 3, 3],
            p: ConvParams::new(1, 1).groups(groups),
            bias: true,
            seed: 40 + groups as u64,
        };
        gpu_vs_cpu("tile cache", &g, &pr);
    }
}

/// Prints the worst ratios and kernel hits recorded so far. A report, not a test (it
/// asserts nothing), so it only runs when asked:
/// `WGCNN_REPORT=1 cargo test --release --test conv_family -- --include-ignored --test-threads=1`
/// (tests run in name order, this one last).
#[test]
#[ignore = "a report, not a test: run with --include-ignored --test-threads=1 and WGCNN_REPORT=1"]
fn zz_report() {
    {
        if let Some(g) = gpu() {
            eprintln!("REPORT adapter: {}", g.describe());
        }
        if let Ok(m) = WORST.lock() {
            for (k, (r, n)) in m.iter() {
                if k.starts_with("hits ") {
                    eprintln!("REPORT {k}: {n} problems");
                } else {
                    eprintln!("REPORT {k}: worst {r:.4} over {n}");
                }
            }
        }
    }
}

// ---- semantics of each option -----------------------------------------------------------

/// Keras/TensorFlow `same`: `⌈len/s⌉` outputs, total padding
/// `max((out−1)·s + (k−1)·dil + 1 − len, 0)`, the odd zero at the end.
#[test]
fn same_output_size_and_split() {
    for len in 1usize..=30 {
        for k in 1..=5 {
            for s in 1..=3 {
                for dil in 1..=3 {
                    let out = len.div_ceil(s);
                    let total = ((out - 1) * s + (k - 1) * dil + 1).saturating_sub(len);
                    let d = ConvParams::default()
                        .same()
                        .stride(s)
                        .dilation(dil)
                        .dims("conv", [1, 1, len, len, len], [1, 1, k, k, k])
                        .expect("same always fits");
                    assert_eq!(d.y[2..], [out; 3], "len {len} k {k} s {s} dil {dil}");
                    assert_eq!(d.pad, [total / 2; 3], "len {len} k {k} s {s} dil {dil}");
                }
            }
        }
    }
}

/// 28×28, stride 2, k = 3 → 14×14 with no padding top/left and one row/column
/// bottom/right (the CPU result with explicit `pad_sides` is the reference); PyTorch's
/// split (the odd zero first) gives a different result.
#[test]
fn same_stride2_pads_bottom_right() {
    let x = rand(1, &[2, 3, 28, 28]);
    let w = rand(2, &[4, 3, 3, 3]);
    let b = Array1::from(values(3, 4));
    let same = ConvParams::default().stride(2).same();
    let keras = ConvParams::default()
        .stride(2)
        .pad_sides([0, 0, 0], [0, 1, 1]);
    let first = ConvParams::default()
        .stride(2)
        .pad_sides([0, 1, 1], [0, 0, 0]);
    let cpu = Backend::cpu();
    let want = cpu.conv(&x, &w, Some(&b), keras).unwrap();
    assert_eq!(want.shape(), &[2, 4, 14, 14]);
    let other = cpu.conv(&x, &w, Some(&b), first).unwrap();
    assert!(
        (&want - &other).iter().any(|v| v.abs() > 1e-3),
        "the test cannot tell the two splits apart"
    );
    let dy = rand(4, want.shape());
    let gw = cpu.conv_backward(&x, &w, &dy, keras).unwrap();
    for (name, be) in common::backends() {
        let y = be.conv(&x, &w, Some(&b), same).unwrap();
        let tol = if name == "cpu" { SAME } else { SUM };
        check(&format!("same s2 [{name}] y"), &y, &want, tol);
        let gr = be.conv_backward(&x, &w, &dy, same).unwrap();
        check(&format!("same s2 [{name}] dx"), &gr.dx, &gw.dx, tol);
        let tol = if name == "cpu" { SAME } else { LONG_SUM };
        check(&format!("same s2 [{name}] dw"), &gr.dw, &gw.dw, tol);
    }
}

/// `w` rotated by 180° over its spatial axes.
fn rot180(w: &ArrayD<f32>) -> ArrayD<f32> {
    w.slice_each_axis(|ax| {
        if ax.axis.index() >= 2 {
            Slice::new(0, None, -1)
        } else {
            Slice::new(0, None, 1)
        }
    })
    .to_owned()
}

/// Compares two calls that must agree: `a` with `wa` and `b` with `wb = map(wa)`; the
/// weight gradient of `b` is mapped back with `map` (an involution here).
fn same_results(
    tag: &str,
    xs: &[usize],
    ws: &[usize],
    (pa, pb): (ConvParams, ConvParams),
    map: impl Fn(&ArrayD<f32>) -> ArrayD<f32>,
    seed: u64,
) {
    let x = rand(seed, xs);
    let wa = rand(seed ^ 1, ws);
    let wb = map(&wa);
    let b = Array1::from(values(seed ^ 2, ws[0]));
    for (name, be) in common::backends() {
        let ya = be.conv(&x, &wa, Some(&b), pa).unwrap();
        let yb = be.conv(&x, &wb, Some(&b), pb).unwrap();
        check(&format!("{tag} [{name}] y"), &ya, &yb, SAME);
        let dy = rand(seed ^ 3, ya.shape());
        let ga = be.conv_backward(&x, &wa, &dy, pa).unwrap();
        let gb = be.conv_backward(&x, &wb, &dy, pb).unwrap();
        check(&format!("{tag} [{name}] dx"), &ga.dx, &gb.dx, SAME);
        check(&format!("{tag} [{name}] dw"), &ga.dw, &map(&gb.dw), SAME);
        check(
            &format!("{tag} [{name}] db"),
            &ga.db.into_dyn(),
            &gb.db.into_dyn(),
            SAME,
        );
    }
}

/// Flip is a true convolution: cross-correlation with the kernel rotated by 180°. With an
/// anchor the kernel flips about the anchor element, so the rotated kernel's anchor is the
/// mirrored one, `k − 1 − a` per axis.
#[test]
fn flip_is_correlation_with_rotated_kernel() {
    let anchored = ConvParams::new(1, 1).anchor([1, 0, 1]);
    let cases: [(&[usize], &[usize], ConvParams, ConvParams); 4] = [
        (
            &[2, 3, 9, 8],
            &[4, 3, 3, 2],
            ConvParams::new(1, 1),
            ConvParams::new(1, 1),
        ),
        (
            &[1, 4, 11, 10],
            &[6, 2, 4, 3],
            ConvParams::new(2, 2).groups(2).dilation(2),
            ConvParams::new(2, 2).groups(2).dilation(2),
        ),
        (
            &[2, 3, 40],
            &[2, 3, 5],
            ConvParams::default().same(),
            ConvParams::default().same(),
        ),
        // kernel 2×3×2: anchor [1, 0, 1] mirrors to [0, 2, 0]
        (
            &[1, 2, 5, 6, 7],
            &[3, 2, 2, 3, 2],
            anchored,
            anchored.anchor([0, 2, 0]),
        ),
    ];
    for (i, (xs, ws, pa, pb)) in cases.into_iter().enumerate() {
        same_results(
            &format!("flip #{i}"),
            xs,
            ws,
            (pa.flipped(true), pb),
            rot180,
            100 + i as u64,
        );
    }
}

/// Anchor `a` is the explicit padding `begin = a·dil`, `end = (k−1−a)·dil`, and gives
/// `⌈len/s⌉` outputs.
#[test]
fn anchor_is_explicit_padding() {
    // (x, w, anchor, dilation, stride)
    type Case = (&'static [usize], &'static [usize], [usize; 3], usize, usize);
    let cases: [Case; 5] = [
        (&[2, 3, 9, 9], &[4, 3, 3, 3], [0, 0, 0], 1, 1),
        (&[2, 3, 9, 10], &[4, 3, 3, 3], [0, 2, 1], 1, 1),
        (&[1, 2, 12, 11], &[3, 2, 4, 2], [0, 3, 1], 2, 2),
        (&[2, 2, 31], &[3, 2, 5], [0, 0, 4], 3, 2),
        (&[1, 2, 6, 7, 5], &[2, 2, 3, 2, 3], [2, 1, 0], 1, 2),
    ];
    for (i, (xs, ws, a, dil, s)) in cases.into_iter().enumerate() {
        let dims = xs.len() - 2;
        let k = |ax: usize| if ax < 3 - dims { 1 } else { ws[ax + dims - 1] };
        let begin = [0, 1, 2].map(|ax| a[ax] * dil);
        let end = [0, 1, 2].map(|ax| (k(ax) - 1 - a[ax]) * dil);
        let base = ConvParams::default().stride(s).dilation(dil);
        let pa = base.anchor(a);
        let pe = base.pad_sides(begin, end);
        let y = Backend::cpu()
            .conv(&rand(1, xs), &rand(2, ws), None, pa)
            .unwrap();
        let want: Vec<usize> = xs[2..].iter().map(|l| l.div_ceil(s)).collect();
        assert_eq!(y.shape()[2..], want[..], "anchor #{i}: output size");
        same_results(
            &format!("anchor #{i}"),
            xs,
            ws,
            (pa, pe),
            |w| w.clone(),
            200 + i as u64,
        );
    }
}

/// A 1-D convolution is a 2-D one on `[N, C, 1, L]` with a `[O, C/G, 1, k]` kernel.
#[test]
fn conv1d_is_conv2d_with_height_one() {
    let cases = [
        ConvParams::new(1, 0),
        ConvParams::new(2, 3).dilation(2),
        ConvParams::default().stride(3).same(),
        ConvParams::default()
            .pad_sides([0, 0, 1], [0, 0, 4])
            .groups(2),
        ConvParams::default().anchor([0, 0, 3]).flipped(true),
        ConvParams::default().groups(4).dilation(3).stride(2).same(),
    ];
    for (i, p) in cases.into_iter().enumerate() {
        let (n, c, l, o, k) = (2, 4, 37, 8, 5);
        let x = rand(300 + i as u64, &[n, c, l]);
        let w = rand(400 + i as u64, &[o, c / p.groups, k]);
        let b = Array1::from(values(500 + i as u64, o));
        let x2 = x
            .clone()
            .into_shape_with_order(IxDyn(&[n, c, 1, l]))
            .unwrap();
        let w2 = w
            .clone()
            .into_shape_with_order(IxDyn(&[o, c / p.groups, 1, k]))
            .unwrap();
        // the 2-D call must not pad or stride H: keep only the w axis of the padding
        let mut p2 = p;
        p2.padding = match p.padding {
            Padding::Explicit { begin, end } => Padding::Explicit {
                begin: [0, 0, begin[2]],
                end: [0, 0, end[2]],
            },
            Padding::Anchor(a) => Padding::Anchor([0, 0, a[2]]),
            Padding::Same => Padding::Same,
        };
        for (name, be) in common::backends() {
            let tag = format!("conv1d #{i} [{name}]");
            let y1 = be.conv(&x, &w, Some(&b), p).unwrap();
            let y2 = be.conv(&x2, &w2, Some(&b), p2).unwrap();
            let to1 = |a: ArrayD<f32>, s: &[usize]| a.into_shape_with_order(IxDyn(s)).unwrap();
            check(&format!("{tag} y"), &y1, &to1(y2, y1.shape()), SAME);
            let dy = rand(600 + i as u64, y1.shape());
            let dy2 = dy
                .clone()
                .into_shape_with_order(IxDyn(&[n, o, 1, y1.shape()[2]]))
                .unwrap();
            let g1 = be.conv_backward(&x, &w, &dy, p).unwrap();
            let g2 = be.conv_backward(&x2, &w2, &dy2, p2).unwrap();
            check(&format!("{tag} dx"), &g1.dx, &to1(g2.dx, x.shape()), SAME);
            check(&format!("{tag} dw"), &g1.dw, &to1(g2.dw, w.shape()), SAME);
            check(
                &format!("{tag} db"),
                &g1.db.into_dyn(),
                &g2.db.into_dyn(),
                SAME,
            );
        }
    }
}

/// A grouped convolution is `G` separate convolutions, one per channel group, stacked
/// along the channels; depthwise (`G = C`, with a multiplier) is the per-channel case.
#[test]
fn grouped_is_separate_convolutions_per_group() {
    let cases: [(&[usize], usize, usize, ConvParams); 4] = [
        // depthwise, multiplier 1
        (&[2, 5, 9, 9], 5, 5, ConvParams::new(1, 1)),
        // depthwise, multiplier 2, stride 2 `same`, dilation 2
        (
            &[2, 4, 10, 11],
            8,
            4,
            ConvParams::default().stride(2).same().dilation(2),
        ),
        // groups of 3 channels, 2 outputs each
        (&[1, 9, 8, 7], 6, 3, ConvParams::new(1, 2).flipped(true)),
        // 1-D depthwise
        (&[2, 3, 25], 6, 3, ConvParams::new(2, 1)),
    ];
    for (i, (xs, o, groups, p)) in cases.into_iter().enumerate() {
        let c = xs[1];
        let (cg, og) = (c / groups, o / groups);
        let mut ws = vec![o, cg];
        ws.extend(std::iter::repeat_n(3, xs.len() - 2));
        let seed = 700 + 10 * i as u64;
        let x = rand(seed, xs);
        let w = rand(seed + 1, &ws);
        let b = Array1::from(values(seed + 2, o));
        let pg = p.groups(groups);
        let part = |a: &ArrayD<f32>, g: usize, per: usize| {
            a.slice_axis(Axis(1), Slice::from(g * per..(g + 1) * per))
                .to_owned()
        };
        let rows = |a: &ArrayD<f32>, g: usize| {
            a.slice_axis(Axis(0), Slice::from(g * og..(g + 1) * og))
                .to_owned()
        };
        for (name, be) in common::backends() {
            let tag = format!("groups #{i} [{name}]");
            let y = be.conv(&x, &w, Some(&b), pg).unwrap();
            let dy = rand(seed + 3, y.shape());
            let gr = be.conv_backward(&x, &w, &dy, pg).unwrap();
            let (mut ys, mut dxs, mut dws, mut dbs) = (vec![], vec![], vec![], vec![]);
            for g in 0..groups {
                let (xg, wg) = (part(&x, g, cg), rows(&w, g));
                let bg = Array1::from(b.as_slice().unwrap()[g * og..(g + 1) * og].to_vec());
                ys.push(be.conv(&xg, &wg, Some(&bg), p).unwrap());
                let gg = be.conv_backward(&xg, &wg, &part(&dy, g, og), p).unwrap();
                dxs.push(gg.dx);
                dws.push(gg.dw);
                dbs.push(gg.db.into_dyn());
            }
            let cat = |v: &[ArrayD<f32>], ax: usize| {
                let views: Vec<_> = v.iter().map(|a| a.view()).collect();
                concatenate(Axis(ax), &views).unwrap()
            };
            // the same sums over the same terms; the GPU may tile them differently
            let (t, tl) = if name == "cpu" {
                (SAME, SAME)
            } else {
                (SUM, LONG_SUM)
            };
            check(&format!("{tag} y"), &y, &cat(&ys, 1), t);
            check(&format!("{tag} dx"), &gr.dx, &cat(&dxs, 1), t);
            check(&format!("{tag} dw"), &gr.dw, &cat(&dws, 0), tl);
            check(&format!("{tag} db"), &gr.db.into_dyn(), &cat(&dbs, 0), tl);
        }
    }
}

// ---- typed errors -----------------------------------------------------------------------

#[track_caller]
fn expect_err<T: std::fmt::Debug>(r: wgcnn::Result<T>, invalid: bool, needles: &[&str]) {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    match (&e, invalid) {
        (Error::InvalidArgument { .. }, true) | (Error::Shape { .. }, false) => {}
        _ => panic!("wrong error kind for {needles:?}: {msg} ({e:?})"),
    }
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
    }
}

/// Each invalid option is a typed error naming the op, found before any GPU work: a
/// fresh GPU context has compiled no pipeline after all of them.
#[test]
fn invalid_options_are_typed_errors_naming_the_op() {
    let fresh = gpu().map(|_| Backend::gpu().expect("gpu"));
    let mut bes = vec![("cpu", Backend::cpu())];
    bes.extend(fresh.map(|g| ("gpu", g)));
    let x2 = ArrayD::<f32>::ones(IxDyn(&[1, 6, 6, 6]));
    let x1 = ArrayD::<f32>::ones(IxDyn(&[1, 6, 10]));
    let x3 = ArrayD::<f32>::ones(IxDyn(&[1, 6, 4, 4, 4]));
    let w = |s: &[usize]| ArrayD::<f32>::ones(IxDyn(s));
    for (_, be) in &bes {
        let compiled = || be.gpu_context().map(|c| c.pipeline_stats().pipelines);
        let before = compiled();
        // groups must divide the input and the output channels
        let p = ConvParams::default().groups(4);
        expect_err(
            be.conv(&x2, &w(&[4, 1, 3, 3]), None, p),
            true,
            &["conv2d", "6 input and 4 output channels", "4 groups"],
        );
        let p = ConvParams::default().groups(2);
        expect_err(
            be.conv(&x1, &w(&[5, 3, 3]), None, p),
            true,
            &["conv1d", "5 output channels", "2 groups"],
        );
        let p = ConvParams::default().groups(0);
        expect_err(
            be.conv(&x2, &w(&[4, 6, 3, 3]), None, p),
            true,
            &["conv2d", "groups"],
        );
        // the weight's second axis is C/groups
        let p = ConvParams::default().groups(2);
        expect_err(
            be.conv(&x3, &w(&[4, 2, 1, 1, 1]), None, p),
            false,
            &["conv3d", "3 per group of 2", "expects 2"],
        );
        // dilation 0
        let p = ConvParams::default().dilation(0);
        expect_err(
            be.conv(&x2, &w(&[2, 6, 3, 3]), None, p),
            true,
            &["conv2d", "dilation"],
        );
        let p = ConvParams {
            dilation: [1, 1, 0],
            ..ConvParams::default()
        };
        expect_err(
            be.conv_backward(&x1, &w(&[2, 6, 3]), &w(&[1, 2, 8]), p),
            true,
            &["conv1d", "dilation"],
        );
        // anchor outside the kernel
        let p = ConvParams::default().anchor([0, 0, 3]);
        expect_err(
            be.conv(&x2, &w(&[2, 6, 3, 3]), None, p),
            true,
            &["conv2d", "anchor 0x3", "kernel 3x3"],
        );
        let p = ConvParams::default().anchor([2, 0, 0]);
        expect_err(
            be.conv_backward(&x3, &w(&[2, 6, 2, 3, 3]), &w(&[1, 2, 4, 4, 4]), p),
            true,
            &["conv3d", "anchor 2x0x0", "kernel 2x3x3"],
        );
        // dilated kernel larger than the padded input: extent (3−1)·3 + 1 = 7 > 6
        let p = ConvParams::default().dilation(3);
        expect_err(
            be.conv(&x2, &w(&[2, 6, 3, 3]), None, p),
            true,
            &["conv2d", "kernel 3x3", "extent 7x7", "padded input 6x6"],
        );
        expect_err(
            be.conv(&x1, &w(&[2, 6, 5]), None, p),
            true,
            &["conv1d", "kernel 5", "extent 13", "padded input 10"],
        );
        assert_eq!(compiled(), before, "a rejected call compiled a pipeline");
        // … and the dilated kernel fits once the input is padded to 7
        let p = p.pad_sides([0; 3], [0, 1, 1]);
        assert!(be.conv(&x2, &w(&[2, 6, 3, 3]), None, p).is_ok());
    }
}

#[test]
fn invalid_layer_options_name_the_layer() {
    let e = Sequential::new(&[6, 8, 8])
        .add("dw", Conv2d::new(6, 4, 3).groups(4))
        .cross_entropy()
        .unwrap_err();
    assert!(
        e.to_string().contains("dw") && e.to_string().contains("4 groups"),
        "{e}"
    );
    let e = Sequential::new(&[3, 10])
        .add("c1", Conv1d::new(3, 4, 3).anchor([3]))
        .cross_entropy()
        .unwrap_err();
    assert!(
        e.to_string().contains("c1") && e.to_string().contains("anchor"),
        "{e}"
    );
    let e = Sequential::new(&[1, 4, 5, 5])
        .add("v1", Conv3d::new(1, 2, 3).dilation(3))
        .cross_entropy()
        .unwrap_err();
    assert!(
        e.to_string().contains("v1") && e.to_string().contains("dilation"),
        "{e}"
    );
}

// ---- finite-difference gradient checks ------------------------------------------------------

/// Step, tolerances and sampling as in `tests/gradcheck.rs` (see its header for the error
/// analysis): `L(x) = Σ dy ⊙ conv(x)` is linear in every coordinate, so the central
/// difference has no truncation error, only f32 rounding of the forward amplified by
/// `1/(2h) = 50`: ≲ 5e-4 worst case. `|num − analytic| ≤ 2e-3 + 2e-2·|num|`.
const H: f32 = 1e-2;
const FD_ATOL: f32 = 2e-3;
const FD_RTOL: f32 = 2e-2;
const SAMPLES: usize = 16;

/// `SAMPLES` distinct coordinates of `len` (all when fewer), from SplitMix64.
fn coords(seed: u64, len: usize) -> Vec<usize> {
    if len <= SAMPLES {
        return (0..len).collect();
    }
    let mut s = seed;
    let mut picked = Vec::new();
    while picked.len() < SAMPLES {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let i = ((z ^ (z >> 31)) % len as u64) as usize;
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked
}

/// Central differences of `objective` at sampled coordinates of `v` against `analytic`.
fn fd_check(
    what: &str,
    seed: u64,
    v: &[f32],
    analytic: &[f32],
    mut objective: impl FnMut(&[f32]) -> f64,
) {
    let (mut got, mut want) = (vec![], vec![]);
    let mut vp = v.to_vec();
    let cs = coords(seed, v.len());
    for &i in &cs {
        let (plus, minus) = (v[i] + H, v[i] - H);
        vp[i] = plus;
        let lp = objective(&vp);
        vp[i] = minus;
        let lm = objective(&vp);
        vp[i] = v[i];
        want.push(((lp - lm) / (plus as f64 - minus as f64)) as f32);
        got.push(analytic[i]);
    }
    let r = assert_close(
        &format!("{what} (coordinates {cs:?})"),
        &got,
        &want,
        FD_ATOL,
        FD_RTOL,
    );
    tally(what, r);
    eprintln!("{what}: {} coordinates, worst |err|/tol = {r:.3}", cs.len());
}

fn gradcheck(tag: &str, xs: &[usize], ws: &[usize], p: ConvParams, seed: u64) {
    for (name, be) in common::backends() {
        let tag = format!("gradcheck {tag} [{name}]");
        let x = rand(seed, xs);
        let w = rand(seed ^ 1, ws);
        let b = Array1::from(values(seed ^ 2, ws[0]));
        let y = be.conv(&x, &w, Some(&b), p).unwrap();
        let dyv = values(seed ^ 3, y.len());
        let dy = arr(y.shape(), dyv.clone());
        let g = be.conv_backward(&x, &w, &dy, p).unwrap();
        let dot = |y: ArrayD<f32>| -> f64 {
            y.iter().zip(&dyv).map(|(a, b)| *a as f64 * *b as f64).sum()
        };
        let flat = |a: &ArrayD<f32>| a.iter().copied().collect::<Vec<f32>>();
        fd_check(&format!("{tag} dx"), seed, &flat(&x), &flat(&g.dx), |v| {
            dot(be.conv(&arr(xs, v.to_vec()), &w, Some(&b), p).unwrap())
        });
        fd_check(
            &format!("{tag} dw"),
            seed + 1,
            &flat(&w),
            &flat(&g.dw),
            |v| dot(be.conv(&x, &arr(ws, v.to_vec()), Some(&b), p).unwrap()),
        );
        fd_check(
            &format!("{tag} db"),
            seed + 2,
            b.as_slice().unwrap(),
            g.db.as_slice().unwrap(),
            |v| dot(be.conv(&x, &w, Some(&Array1::from(v.to_vec())), p).unwrap()),
        );
    }
}

#[test]
fn gradcheck_grouped_dilated_asymmetric_padding() {
    let p = ConvParams {
        stride: [1, 1, 2],
        ..ConvParams::default()
            .groups(2)
            .dilation(2)
            .pad_sides([0, 2, 0], [0, 1, 3])
    };
    gradcheck(
        "groups 2 (3 per group) dil 2 pad (2,0)/(1,3)",
        &[2, 6, 8, 9],
        &[4, 3, 3, 3],
        p,
        1,
    );
}

#[test]
fn gradcheck_depthwise_multiplier_same_stride2_flip() {
    let p = ConvParams::default()
        .groups(3)
        .stride(2)
        .same()
        .flipped(true);
    gradcheck(
        "depthwise x2 same s2 flip",
        &[2, 3, 8, 8],
        &[6, 1, 3, 3],
        p,
        2,
    );
}

#[test]
fn gradcheck_conv1d_strided_dilated_anchor() {
    let p = ConvParams::default()
        .stride(2)
        .dilation(3)
        .anchor([0, 0, 1]);
    gradcheck("conv1d s2 dil 3 anchor 1", &[2, 3, 23], &[4, 3, 4], p, 3);
}

#[test]
fn gradcheck_conv3d_grouped_flip() {
    let p = ConvParams {
        stride: [1, 2, 2],
        ..ConvParams::new(1, 1).groups(2).flipped(true)
    };
    gradcheck(
        "conv3d s(1,2,2) p1 groups 2 flip",
        &[1, 4, 4, 6, 6],
        &[2, 2, 3, 3, 3],
        p,
        4,
    );
}

#[test]
fn gradcheck_plain_same_even_kernel() {
    // stride 1, even kernel: `same` pads (1, 2); the GPU takes the rows variants
    gradcheck(
        "plain k4 same",
        &[2, 3, 9, 10],
        &[4, 3, 4, 4],
        ConvParams::default().same(),
        5,
    );
}

// ---- graph level: one training step, GPU executor vs CPU executor ------------------------------

/// One momentum step of `graph` on both executors: loss, logits, every gradient and every
/// updated parameter agree (tolerances of `tests/graph.rs`: f32 sums in another order
/// through several layers).
fn one_step_agrees(tag: &str, graph: &Graph, sample: usize, classes: u32) {
    let Some(g) = gpu() else { return };
    let n = 4;
    let opt = Optimizer::momentum(0.05, 0.9);
    let x = rand01(11, n * sample);
    let y: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 3) % classes).collect();
    let mut c = Executor::new(&Backend::cpu(), graph, n, opt, 5).unwrap();
    let mut gx = Executor::new(&g, graph, n, opt, 5).unwrap();
    let p0 = c.parameters().unwrap();
    assert_eq!(
        p0,
        gx.parameters().unwrap(),
        "{tag}: same initial parameters"
    );
    c.train_step(&x, Targets::Classes(&y)).unwrap();
    gx.train_step(&x, Targets::Classes(&y)).unwrap();
    let lc = c.take_metrics(Mode::Train).unwrap().loss;
    let lg = gx.take_metrics(Mode::Train).unwrap().loss;
    assert_close(&format!("{tag} loss"), &[lg], &[lc], 1e-4, 1e-4);
    let (oc, og) = (c.output(n).unwrap(), gx.output(n).unwrap());
    assert_close(
        &format!("{tag} logits"),
        og.as_slice().unwrap(),
        oc.as_slice().unwrap(),
        1e-4,
        1e-4,
    );
    let (gc, gg) = (c.gradients().unwrap(), gx.gradients().unwrap());
    for ((name, _, a), (_, _, b)) in gc.iter().zip(&gg) {
        assert!(a.iter().any(|v| *v != 0.0), "{tag} {name}: zero gradient");
        let r = assert_close(&format!("{tag} grad {name}"), b, a, 1e-4, 1e-3);
        tally(&format!("{tag} grads"), r);
    }
    let (pc, pg) = (c.parameters().unwrap(), gx.parameters().unwrap());
    for (((name, _, a), (_, _, b)), (_, _, a0)) in pc.iter().zip(&pg).zip(&p0) {
        assert!(a != a0, "{tag} {name} was not updated");
        assert_close(&format!("{tag} param {name}"), b, a, 1e-4, 1e-3);
    }
}

#[test]
fn conv1d_model_one_step_gpu_equals_cpu() {
    let graph = Sequential::new(&[2, 40])
        .add("c1", Conv1d::new(2, 6, 5).stride(2).padding(2))
        .add("r1", Relu)
        .add("c2", Conv1d::new(6, 6, 3).groups(3).dilation(2).same())
        .add("r2", Relu)
        .add("flat", Flatten)
        .add("fc", Linear::new(6 * 20, 4))
        .cross_entropy()
        .unwrap();
    one_step_agrees("conv1d model", &graph, 80, 4);
}

#[test]
fn conv3d_model_one_step_gpu_equals_cpu() {
    let graph = Sequential::new(&[1, 4, 8, 8])
        .add("v1", Conv3d::new(1, 4, 3).stride_axes([1, 2, 2]).padding(1))
        .add("r1", Relu)
        .add(
            "v2",
            Conv3d::new(4, 4, 3)
                .kernel3([2, 3, 3])
                .groups(2)
                .flipped(true),
        )
        .add("flat", Flatten)
        .add("fc", Linear::new(4 * 3 * 2 * 2, 3))
        .cross_entropy()
        .unwrap();
    one_step_agrees("conv3d model", &graph, 4 * 8 * 8, 3);
}

#[test]
fn separable_and_depthwise_model_one_step_gpu_equals_cpu() {
    let graph = Sequential::new(&[3, 12, 12])
        .add("sep", SeparableConv2d::new(3, 8, 3).stride(2).same())
        .add("r1", Relu)
        .add(
            "dw",
            Conv2d::depthwise(8, 3).multiplier(2).same().bias(true),
        )
        .add("r2", Relu)
        .add("pw", Conv2d::new(16, 4, 1))
        .add("flat", Flatten)
        .add("fc", Linear::new(4 * 6 * 6, 5))
        .cross_entropy()
        .unwrap();
    one_step_agrees("separable model", &graph, 3 * 12 * 12, 5);
}

/// `SeparableConv2d::multiplier(m)` is Keras's `depth_multiplier`: `m` depthwise filters per
/// channel, then a pointwise convolution over the `in·m` channels; the same graph as the two
/// layers written out.
#[test]
fn separable_multiplier_is_depthwise_multiplier_then_pointwise() {
    let sep = Sequential::new(&[3, 9, 9])
        .add("sep", SeparableConv2d::new(3, 8, 3).multiplier(2).same())
        .add("flat", Flatten)
        .add("fc", Linear::new(8 * 81, 4))
        .cross_entropy()
        .unwrap();
    let manual = Sequential::new(&[3, 9, 9])
        .add(
            "sep.depthwise",
            Conv2d::depthwise(3, 3).multiplier(2).same(),
        )
        .add("sep.pointwise", Conv2d::new(6, 8, 1))
        .add("flat", Flatten)
        .add("fc", Linear::new(8 * 81, 4))
        .cross_entropy()
        .unwrap();
    let shapes = |g: &wgcnn::graph::Graph| {
        g.params()
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(shapes(&sep), shapes(&manual));
    assert_eq!(
        shapes(&sep)[0],
        ("sep.depthwise.weight".into(), vec![6, 1, 3, 3])
    );
    assert_eq!(
        shapes(&sep)[1],
        ("sep.pointwise.weight".into(), vec![8, 6, 1, 1])
    );
    assert_eq!(sep.nodes(), manual.nodes());
}
