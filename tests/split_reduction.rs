//! Split reductions of the weight gradient (`ConvWeightParts` + `SumParts`, issue 17 item 1):
//! the N·OD·OH rows cut into partitions, each partition's partial `dw | db` computed in
//! parallel into a scratch, the partitions then added in a fixed order.
//!
//! * Per launch, GPU against the CPU twin, at the partition edges: one partition, a row count
//!   the partition count does not divide, more partitions than rows (empty partitions), in
//!   both kernels the split reuses (the stride-1 rows variant and the general kernel), with
//!   and without a bias and a fused activation. The twin computes the same partition
//!   boundaries, so each partial is compared on its own: a kernel that put a row into the
//!   neighbouring partition would be off by that row's whole contribution.
//! * The partials summed equal the unsplit gradient (the CPU twin of `conv_backward_weight`).
//! * Bitwise determinism: the same launches, and whole training steps of a plan with splits,
//!   give the same bits on every run; `sum_parts` gives the CPU twin's bits exactly (both add
//!   the partitions in the same order from the same values).
//! * The planner splits only where the tiles are too few, and a split plan trains like the
//!   unsplit one and passes `WGCNN_VALIDATE` step by step.
//!
//! # Tolerances
//! `|got − want| ≤ atol + rtol·|want|`. A partial or a whole weight gradient sums up to
//! N·OD·OH·OW products in another order on each side: atol = 1e-3, rtol = 1e-4
//! (`Tolerance::REDUCTION`, as tests/conv_family.rs). Whole training steps of the split and
//! unsplit plans differ by that reassociation only: 1e-4 absolute, 2e-3 relative on the
//! parameters, as `common::executors_agree`.

mod common;

use common::{assert_close, assert_same_tensors, gpu, labels, rand01, values};
use wgcnn::cpu::conv::{conv_backward_weight, part_starts};
use wgcnn::exec::{Executor, Targets};
use wgcnn::ops::conv::{Conv, ConvPass, ConvWeightParts};
use wgcnn::ops::elementwise::SumParts;
use wgcnn::ops::{compare, run_cpu, Launch};
use wgcnn::plan::{Mode, Plan, Split};
use wgcnn::{nn, Backend, Conv2dParams, ConvDims, ConvParams, Optimizer};

const LONG_SUM: (f32, f32) = (1e-3, 1e-4);

/// `x [n,c,hw,hw]`, `w [o,c,k,k]`, stride `s`, padding `p`.
fn dims(n: usize, c: usize, hw: usize, o: usize, k: usize, s: usize, p: usize) -> ConvDims {
    Conv2dParams::new(s, p)
        .dims2("split", [n, c, hw, hw], [o, c, k, k])
        .expect("valid conv")
}

/// A depthwise `x [n,c,hw,hw]`, `w [c,1,k,k]`, stride 1, padding `p`.
fn depthwise(n: usize, c: usize, hw: usize, k: usize, p: usize) -> ConvDims {
    ConvParams::new(1, p)
        .groups(c)
        .for_dims(2)
        .dims("split", [n, c, 1, hw, hw], [c, 1, 1, k, k])
        .expect("valid depthwise conv")
}

/// Inputs of the backward-weight launches: x, dy and (with a fused ReLU) y = relu(…) ≥ 0.
fn inputs(d: &ConvDims, act: bool, seed: u64) -> Vec<Vec<f32>> {
    let x = values(seed, d.x.iter().product());
    let dy = values(seed + 1, d.y.iter().product());
    let y = if act {
        rand01(seed + 2, d.y.iter().product())
            .iter()
            .map(|v| (v - 0.3).max(0.0))
            .collect()
    } else {
        Vec::new()
    };
    vec![x, dy, y]
}

/// The partials on the GPU against the twin's, the GPU sum bitwise against the twin's sum of
/// the same partials, and that sum against the unsplit twin.
fn check_split(g: &Backend, tag: &str, d: ConvDims, parts: usize, bias: bool, act: bool) {
    let rows = d.y[0] * d.y[2] * d.y[3];
    let l = ConvWeightParts {
        d,
        bias,
        act: if act { (1, 0.0) } else { (0, 0.0) },
        parts,
    };
    let ins = inputs(&d, act, 7 + parts as u64);
    let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
    let got = g.run_launch(tag, &l, &refs).expect("gpu partials");
    let want = run_cpu(&l, &refs);
    if let Some(m) = compare(&l, &got, &want) {
        panic!("{tag} ({parts} parts over {rows} rows): {m}");
    }
    let starts = part_starts(rows, parts);
    let part_len = l.part_len();
    for q in 0..parts {
        if starts[q] == starts[q + 1] {
            let p = &got[0][q * part_len..(q + 1) * part_len];
            assert!(p.iter().all(|&v| v == 0.0), "{tag}: empty partition {q}");
        }
    }
    let sum = SumParts {
        parts,
        a: d.w.iter().product(),
        b: if bias { d.w[0] } else { 0 },
    };
    let summed = g.run_launch(tag, &sum, &[&got[0]]).expect("gpu sum");
    let summed_cpu = run_cpu(&sum, &[&got[0]]);
    let bits = |v: &[Vec<f32>]| -> Vec<u32> { v.iter().flatten().map(|f| f.to_bits()).collect() };
    assert_eq!(bits(&summed), bits(&summed_cpu), "{tag}: sum_parts bits");
    let y = act.then_some((ins[2].as_slice(), 1, 0.0));
    let (dw, db) = conv_backward_weight(d, &ins[0], &ins[1], y);
    let (atol, rtol) = LONG_SUM;
    assert_close(&format!("{tag} dw"), &summed[0], &dw, atol, rtol);
    if bias {
        assert_close(&format!("{tag} db"), &summed[1], &db, atol, rtol);
    }
}

#[test]
fn partials_match_the_twin_at_partition_edges() {
    let Some(g) = gpu() else { return };
    // (tag, dims, parts): rows = n·oh
    let cases = [
        // stride 1, 5×5: the rows variant; 4·10 = 40 rows
        ("rows, 1 part", dims(4, 3, 14, 16, 5, 1, 0), 1),
        ("rows, 40 rows in 3 parts", dims(4, 3, 14, 16, 5, 1, 0), 3),
        ("rows, 40 rows in 7 parts", dims(4, 3, 14, 16, 5, 1, 0), 7),
        ("rows, 2 rows in 5 parts", dims(1, 2, 4, 3, 3, 1, 0), 5),
        // stride 2: the general kernel; 3·7 = 21 rows
        ("general, 1 part", dims(3, 5, 14, 10, 3, 2, 1), 1),
        (
            "general, 21 rows in 4 parts",
            dims(3, 5, 14, 10, 3, 2, 1),
            4,
        ),
        ("general, 2 rows in 6 parts", dims(1, 2, 4, 5, 3, 2, 1), 6),
        // 1×1 kernel, pointwise variant, 2·9 = 18 rows; stride 2 (9 × 12 channels: the rows
        // variant on a CPU adapter, whose window of one input slides by the stride): 3·5 = 15
        // rows
        ("1x1, 18 rows in 5 parts", dims(2, 40, 9, 33, 1, 1, 0), 5),
        (
            "1x1 stride 2, 15 rows in 4 parts",
            dims(3, 12, 10, 9, 1, 2, 0),
            4,
        ),
        // 1×1 kernel, vec4 pointwise variant (36 positions per image, 12 channels): 3·6 = 18
        // rows of 6 positions, so partitions start and end inside vec4 units; 1 image of
        // 2 × 2 (one unit) in more partitions than rows
        (
            "1x1 vec4, 18 rows in 4 parts",
            dims(3, 12, 6, 9, 1, 1, 0),
            4,
        ),
        (
            "1x1 vec4, 18 rows in 5 parts",
            dims(3, 12, 6, 9, 1, 1, 0),
            5,
        ),
        ("1x1 vec4, 2 rows in 5 parts", dims(1, 4, 2, 3, 1, 1, 0), 5),
        // 1×1 kernel, 128 → 128 channels of 5 × 5 (the scalar pointwise variant in one
        // 16 × 16 tile on a CPU adapter): 2·5 = 10 rows
        (
            "1x1 16x16 tile, 10 rows in 3 parts",
            dims(2, 128, 5, 128, 1, 1, 0),
            3,
        ),
        // depthwise 3×3 `same`, sliding-window variant: 3·11 = 33 rows
        ("depthwise, 1 part", depthwise(3, 5, 11, 3, 1), 1),
        (
            "depthwise, 33 rows in 4 parts",
            depthwise(3, 5, 11, 3, 1),
            4,
        ),
        ("depthwise, 4 rows in 6 parts", depthwise(1, 3, 4, 3, 1), 6),
        // several channels per workgroup (DCH = 8 on a CPU adapter: 16 positions per
        // channel; 11 channels, the second workgroup 5 short): 2·4 = 8 rows
        (
            "depthwise DCH, 8 rows in 3 parts",
            depthwise(2, 11, 4, 3, 1),
            3,
        ),
    ];
    // the split launch takes the largest channel groups: 8 channels a workgroup for the
    // DCH case on every adapter
    let ctx = g.gpu_context().expect("a GPU backend");
    let dch = ConvWeightParts {
        d: depthwise(2, 11, 4, 3, 1),
        bias: true,
        act: (0, 0.0),
        parts: 3,
    }
    .gpu(ctx)
    .expect("split launch")
    .consts;
    assert!(dch.contains(&("DCH", 8)), "{dch:?}");
    for (tag, d, parts) in cases {
        for (bias, act) in [(true, false), (false, true), (true, true)] {
            let tag = format!("{tag}, bias {bias}, relu {act}");
            check_split(&g, &tag, d, parts, bias, act);
        }
    }
}

/// The planner's choice for each conv of LeNet-5 (both executors run the same plan).
fn split_steps(plan: &Plan) -> Vec<usize> {
    plan.train_steps
        .iter()
        .filter_map(|s| s.launch_as::<ConvWeightParts>().map(|l| l.parts))
        .collect()
}

#[test]
fn split_runs_are_bitwise_identical() {
    let Some(g) = gpu() else { return };
    let d = dims(8, 6, 14, 16, 5, 1, 0);
    let l = ConvWeightParts {
        d,
        bias: true,
        act: (1, 0.0),
        parts: 3,
    };
    let ins = inputs(&d, true, 3);
    let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
    let first = g.run_launch("split", &l, &refs).unwrap();
    for _ in 0..3 {
        assert_eq!(g.run_launch("split", &l, &refs).unwrap(), first);
    }
    // whole training steps of a plan with splits, twice from the same seed
    let graph = nn::lenet5().unwrap();
    let ctx = g.gpu_context().unwrap();
    let run = || {
        let plan = Plan::with_split(&graph, 64, Split::for_device(ctx).aiming_at(64)).unwrap();
        assert!(!split_steps(&plan).is_empty());
        let mut ex = Executor::with_plan(&g, plan, Optimizer::sgd(0.05), 5).unwrap();
        for s in 0..3 {
            let x = rand01(10 + s, 64 * 784);
            let y = labels(20 + s, 64, 10);
            ex.train_step(&x, Targets::Classes(&y)).unwrap();
        }
        let p: Vec<u32> = ex
            .parameters()
            .unwrap()
            .iter()
            .flat_map(|t| t.2.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            .collect();
        p
    };
    assert_eq!(run(), run(), "parameters after 3 split steps");
}

#[test]
fn split_plan_trains_like_the_unsplit_one_and_validates() {
    let Some(g) = gpu() else { return };
    let ctx = g.gpu_context().unwrap();
    let graph = nn::lenet5().unwrap();
    // aiming at 64 workgroups, both convs of LeNet-5 are split on any adapter (conv1 has 6
    // output channels × 5 kernel rows, conv2 16 × 30: a few tiles at most)
    let split = Plan::with_split(&graph, 64, Split::for_device(ctx).aiming_at(64)).unwrap();
    let plain = Plan::with_split(&graph, 64, Split::off()).unwrap();
    assert!(split_steps(&plain).is_empty());
    let parts = split_steps(&split);
    eprintln!("LeNet-5 partitions aiming at 64 workgroups: {parts:?}");
    assert_eq!(parts.len(), 2);
    // every split is followed by its sum, and has 2..=64 partitions of ≥ 64 rows
    for (i, s) in split.train_steps.iter().enumerate() {
        if let Some(l) = s.launch_as::<ConvWeightParts>() {
            assert!((2..=64).contains(&l.parts), "{} parts", l.parts);
            assert!(l.d.y[0] * l.d.y[3] >= 64 * l.parts);
            assert!(split.train_steps[i + 1].launch_as::<SumParts>().is_some());
        }
    }
    let opt = Optimizer::sgd(0.05);
    let mut a = Executor::with_plan(&g, split, opt, 9).unwrap();
    let mut b = Executor::with_plan(&g, plain, opt, 9).unwrap();
    a.set_validate(true);
    for s in 0..2 {
        // the last batch of an epoch is smaller: the partitions keep their count
        let n = if s == 0 { 64 } else { 17 };
        let x = rand01(30 + s, n * 784);
        let y = labels(40 + s, n, 10);
        a.train_step(&x, Targets::Classes(&y)).unwrap();
        b.train_step(&x, Targets::Classes(&y)).unwrap();
        let (la, lb) = (
            a.take_metrics(Mode::Train).unwrap().loss,
            b.take_metrics(Mode::Train).unwrap().loss,
        );
        assert!((la - lb).abs() <= 1e-4 * lb.abs().max(1.0), "{la} vs {lb}");
        let (ga, gb) = (a.gradients().unwrap(), b.gradients().unwrap());
        assert_same_tensors("gradients", &ga, &gb, 1e-4, 2e-3);
    }
}

#[test]
fn unsplit_launch_is_unchanged_by_a_one_part_split() {
    // the unsplit kernel and a one-partition split compute the same sums in the same order
    let Some(g) = gpu() else { return };
    for d in [dims(4, 3, 14, 16, 5, 1, 0), dims(3, 5, 14, 10, 3, 2, 1)] {
        let whole = Conv::new(ConvPass::BackwardWeight, d, true, (0, 0.0));
        let one = ConvWeightParts {
            d,
            bias: true,
            act: (0, 0.0),
            parts: 1,
        };
        let ins = inputs(&d, false, 1);
        let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
        let w = g.run_launch("whole", &whole, &refs).unwrap();
        let p = g.run_launch("one", &one, &refs).unwrap();
        let dw_len: usize = d.w.iter().product();
        let joined: Vec<f32> = w[0].iter().chain(&w[1]).copied().collect();
        assert_eq!(p[0].len(), dw_len + d.w[0]);
        assert_close("one part vs whole", &p[0], &joined, 1e-6, 1e-6);
        assert_eq!(one.whole(), whole);
        assert!(one.describe().ends_with("in 1 parts"));
    }
}

#[test]
fn planner_splits_only_what_cannot_fill_the_device() {
    let Some(g) = gpu() else { return };
    let ctx = g.gpu_context().unwrap();
    let graph = nn::lenet5().unwrap();
    let mut counts = Vec::new();
    for target in [1, 64, 100_000] {
        let plan = Plan::with_split(&graph, 64, Split::for_device(ctx).aiming_at(target)).unwrap();
        counts.push(split_steps(&plan));
    }
    // nothing fills less than 1 workgroup; partitions grow with the target, capped by the
    // rows (64 per partition: conv1 has 64·28 rows, conv2 64·10)
    assert!(counts[0].is_empty(), "{counts:?}");
    assert_eq!(counts[2], vec![10, 28], "conv2 then conv1 (backward order)");
    assert!(counts[1].iter().zip(&counts[2]).all(|(a, b)| a <= b));
    // the plan is a function of the shape and the adapter: the same every time
    let again = Plan::with_split(&graph, 64, Split::for_device(ctx).aiming_at(64)).unwrap();
    assert_eq!(split_steps(&again), counts[1]);
    assert!(!Split::off().aiming_at(64).is_on());
}
