//! Mixed-precision training (`Precision::F16Mixed`, issue 17 item 4): the f16 casts, every conv
//! and GEMM kernel variant reading f16 inputs, the dynamic loss scale (growth, back-off,
//! skipped steps on overflow), GPU against CPU executors. (LeNet-5's accuracy on the bundled
//! digits against the f32 run's is tested through the MNIST example, tests/mnist_example.rs.)
//!
//! # Tolerances
//! `|got − want| ≤ atol + rtol·|want|`.
//! * `cast_f16`: bitwise (both sides round to nearest even on the bits).
//! * A kernel with f16 inputs against its twin on the same f16 values: the f32 launch's own
//!   tolerance — an f16 value is exact in f32 and so is the product of two, so only the order
//!   of the f32 sums differs, as for the f32 kernel.
//! * The same kernel against the f32 twin on the unrounded values: each input is rounded with a
//!   relative error ≤ 2⁻¹¹, so each product is off by ≤ 2⁻¹⁰ of its magnitude (plus 2⁻²²); the
//!   bound is 2⁻¹⁰·Σ|x·w| per output, computed by running the twin on |x| and |w|.
//! * Executors: the casts make a one-ulp difference of f16 (2⁻¹¹ relative) out of an f32
//!   reassociation that lands on a rounding boundary, so whole steps agree to 1e-3 absolute,
//!   2e-2 relative on gradients and parameters (the f32 executors' test uses 1e-4, 2e-3).

mod common;

use std::sync::Arc;

use common::{assert_close, gpu, labels, rand01, values};
use wgcnn::cpu::matmul::{pack_f16, Gemm};
use wgcnn::exec::{Executor, Targets};
use wgcnn::ops::conv::{Conv, ConvPass, ConvWeightParts};
use wgcnn::ops::matmul::{BatchAxis, MatMul};
use wgcnn::ops::precision::{CastF16, HalfInputs};
use wgcnn::ops::{run_cpu, Access, Launch};
use wgcnn::plan::Mode;
use wgcnn::{nn, Backend, Conv2dParams, ConvDims, ConvParams, Error, GradScaler};
use wgcnn::{Optimizer, Precision};

/// The GPU backend if its adapter has shader-f16; else says so on the terminal (its refusal
/// is tested by `a_device_without_shader_f16_refuses_mixed_precision`) and gives `None`.
fn f16_gpu(what: &str) -> Option<Backend> {
    let g = gpu()?;
    let ctx = g.gpu_context().unwrap();
    if ctx.caps().f16 {
        return Some(g);
    }
    let why = format!("adapter {} has no shader-f16", ctx.adapter().name);
    common::did_not_run(what, &why);
    None
}

fn conv2d(n: usize, c: usize, hw: usize, o: usize, k: usize, s: usize, p: usize) -> ConvDims {
    Conv2dParams::new(s, p)
        .dims2("mixed", [n, c, hw, hw], [o, c, k, k])
        .expect("valid conv")
}

fn depthwise(n: usize, c: usize, hw: usize, k: usize, s: usize) -> ConvDims {
    ConvParams::new(s, k / 2)
        .groups(c)
        .for_dims(2)
        .dims("mixed", [n, c, 1, hw, hw], [c, 1, 1, k, k])
        .expect("valid depthwise conv")
}

#[test]
fn cast_f16_matches_its_twin_bitwise() {
    // portable: the casts write bits, no f16 type
    let Some(g) = gpu() else { return };
    let mut x = values(3, 1001);
    let big = [
        65504.0,
        65519.99,
        65520.0,
        1e6,
        -1e6,
        f32::INFINITY,
        f32::NAN,
    ];
    let tiny = [
        2f32.powi(-24),
        2f32.powi(-25),
        1.5 * 2f32.powi(-25),
        1e-9,
        -0.0,
    ];
    let ties = [
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        2049.0,
        2051.0,
    ];
    x.extend(big.iter().chain(&tiny).chain(&ties));
    let l = CastF16 {
        n: 1,
        per: x.len(),
        batched: false,
    };
    let got = g.run_launch("cast_f16", &l, &[&x]).unwrap().remove(0);
    let want = run_cpu(&l, &[&x]).remove(0);
    assert_eq!(
        want,
        pack_f16(&x).into_iter().collect::<Vec<_>>().as_slice()[..]
    );
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "word {i}: {a:?} vs {b:?}");
    }
}

/// The launches of one conv: forward, backward-input, backward-weight (and its split form).
fn conv_launches(d: ConvDims) -> Vec<(String, Arc<dyn Launch>)> {
    let none = (0, 0.0);
    let mut v: Vec<(String, Arc<dyn Launch>)> = vec![
        (
            "fwd".into(),
            Arc::new(Conv::new(ConvPass::Forward, d, true, none)),
        ),
        (
            "bwd-in".into(),
            Arc::new(Conv::new(ConvPass::BackwardInput, d, false, none)),
        ),
        (
            "bwd-w".into(),
            Arc::new(Conv::new(ConvPass::BackwardWeight, d, true, none)),
        ),
    ];
    let split = ConvWeightParts {
        d,
        bias: true,
        act: none,
        parts: 3,
    };
    v.push(("bwd-w split".into(), Arc::new(split)));
    v
}

/// The launches of a linear layer `[n, inp] → [n, out]`.
fn linear_launches(n: usize, inp: usize, out: usize) -> Vec<(String, Arc<dyn Launch>)> {
    let none = (0, 0.0);
    let mut w = Gemm::linear_backward_weight(n, inp, out, none);
    w.ones_col = true;
    vec![
        (
            "fwd".into(),
            Arc::new(MatMul::new(
                Gemm::linear_forward(n, inp, out, none),
                true,
                BatchAxis::M,
            )),
        ),
        (
            "bwd-in".into(),
            Arc::new(MatMul::new(
                Gemm::linear_backward_input(n, inp, out, none),
                false,
                BatchAxis::M,
            )),
        ),
        (
            "bwd-w".into(),
            Arc::new(MatMul::new(w, false, BatchAxis::K)),
        ),
    ]
}

/// Runs `l` with its first two inputs as f16 on the GPU and holds it to the twin on the same
/// f16 values (the launch's tolerance) and to the f32 twin on the unrounded values (the f16
/// bound of the module docs). Returns the worst ratio to the f16 bound.
fn check_half(g: &Backend, what: &str, l: Arc<dyn Launch>, seed: u64) -> f32 {
    let b = l.bindings();
    let reads: Vec<usize> = (0..b.len())
        .filter(|&i| b[i].access != Access::Write)
        .collect();
    let f32_in: Vec<Vec<f32>> = reads
        .iter()
        .map(|&i| values(seed + i as u64, b[i].len))
        .collect();
    let abs_in: Vec<Vec<f32>> = f32_in
        .iter()
        .map(|v| v.iter().map(|x| x.abs()).collect())
        .collect();
    let h = HalfInputs {
        inner: l.clone(),
        half: vec![0, 1],
    };
    let h_in: Vec<Vec<f32>> = f32_in
        .iter()
        .enumerate()
        .map(|(k, v)| if k < 2 { pack_f16(v) } else { v.clone() })
        .collect();
    let refs = |v: &[Vec<f32>]| v.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    let h_refs = refs(&h_in);
    let h_slices: Vec<&[f32]> = h_refs.iter().map(|v| v.as_slice()).collect();
    let got = g.run_launch(what, &h, &h_slices).unwrap();
    let twin = run_cpu(&h, &h_slices);
    if let Some(m) = wgcnn::ops::compare(&h, &got, &twin) {
        panic!("{what}: against the twin on f16 values: {m}");
    }
    let f_slices: Vec<&[f32]> = f32_in.iter().map(|v| v.as_slice()).collect();
    let exact = run_cpu(l.as_ref(), &f_slices);
    let a_slices: Vec<&[f32]> = abs_in.iter().map(|v| v.as_slice()).collect();
    let mag = run_cpu(l.as_ref(), &a_slices);
    let mut worst = 0.0f32;
    for ((gv, ev), mv) in got.iter().zip(&exact).zip(&mag) {
        for ((&a, &e), &m) in gv.iter().zip(ev).zip(mv) {
            let bound = 2f32.powi(-10) * m + 1e-6;
            let r = (a - e).abs() / bound;
            assert!(
                r <= 1.0,
                "{what}: {a} vs f32 {e}: beyond the f16 bound {bound}"
            );
            worst = worst.max(r);
        }
    }
    worst
}

/// Every conv kernel variant the plans pick — general (3×3 stride 2), stride-1 rows (5×5),
/// depthwise, pointwise (1×1, strided 1×1), split weight gradients — and the linear layer's
/// three GEMMs, each with f16 inputs.
#[test]
fn every_conv_and_gemm_variant_reads_f16_inputs() {
    let Some(g) = f16_gpu("f16-input conv and GEMM variants") else {
        return;
    };
    let convs = [
        ("3x3 s2", conv2d(3, 5, 11, 7, 3, 2, 1)),
        ("5x5 s1 rows", conv2d(2, 3, 12, 6, 5, 1, 2)),
        ("depthwise 3x3", depthwise(2, 8, 9, 3, 1)),
        ("depthwise 3x3 s2", depthwise(2, 8, 9, 3, 2)),
        ("pointwise", conv2d(2, 16, 7, 12, 1, 1, 0)),
        // 64 positions per image and 16 channels: the vec4 pointwise variants where they exist
        ("pointwise 8x8", conv2d(2, 16, 8, 12, 1, 1, 0)),
        ("pointwise s2", conv2d(2, 16, 7, 12, 1, 2, 0)),
    ];
    let mut worst = 0.0f32;
    for (k, (name, d)) in convs.into_iter().enumerate() {
        for (pass, l) in conv_launches(d) {
            let what = format!("{name} {pass}");
            worst = worst.max(check_half(&g, &what, l, 10 * k as u64));
        }
    }
    for (pass, l) in linear_launches(5, 37, 11) {
        let what = format!("linear {pass}");
        worst = worst.max(check_half(&g, &what, l, 99));
    }
    eprintln!("worst error / f16 bound: {worst:.3}");
}

fn lenet_batch(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    (rand01(seed, n * 784), labels(seed + 1, n, 10))
}

/// GPU and CPU executors in mixed precision agree step by step, and the plan really holds the
/// f16 copies (half the bytes of their f32 tensors).
#[test]
fn mixed_precision_executors_agree() {
    let Some(gb) = f16_gpu("mixed-precision GPU executor") else {
        return;
    };
    let graph = nn::lenet5().unwrap();
    let opt = Optimizer::momentum(0.05, 0.9);
    let p = Precision::f16_mixed();
    let mut c = Executor::with_precision(&Backend::cpu(), &graph, 16, opt, 5, p).unwrap();
    let mut gx = Executor::with_precision(&gb, &graph, 16, opt, 5, p).unwrap();
    let plan = gx.plan();
    let halves: Vec<_> = plan
        .tensors
        .iter()
        .filter(|t| t.name.ends_with(".f16"))
        .collect();
    assert!(halves.len() >= 10, "f16 copies: {}", halves.len());
    for h in &halves {
        let base = h.name.trim_end_matches(".f16");
        let f = plan.tensors.iter().find(|t| t.name == base).unwrap();
        assert_eq!(h.per_sample, f.per_sample.div_ceil(2), "{}", h.name);
    }
    for s in 0..4 {
        let (x, y) = lenet_batch(16, 40 + s);
        c.train_step(&x, Targets::Classes(&y)).unwrap();
        gx.train_step(&x, Targets::Classes(&y)).unwrap();
        let lc = c.take_metrics(Mode::Train).unwrap().loss;
        let lg = gx.take_metrics(Mode::Train).unwrap().loss;
        assert!(
            (lc - lg).abs() <= 1e-3 * lc.abs().max(1.0),
            "step {s}: {lc} vs {lg}"
        );
        for ((n, _, a), (_, _, b)) in gx
            .parameters()
            .unwrap()
            .iter()
            .zip(&c.parameters().unwrap())
        {
            assert_close(&format!("step {s} {n}"), a, b, 1e-3, 2e-2);
        }
    }
    assert_eq!(gx.loss_scale().unwrap(), c.loss_scale().unwrap());
}

/// Injected overflow: a loss scale of 2⁴⁰ makes the f16 cast of the loss gradient ∞, so the
/// step is skipped (parameters and momentum untouched) and the scale halves; with a scale that
/// fits, steps update and the scale grows every `growth_interval` good steps.
#[test]
fn the_scaler_skips_overflowing_steps_and_grows() {
    let graph = nn::lenet5().unwrap();
    let opt = Optimizer::momentum(0.05, 0.9);
    let gpu = f16_gpu("the loss scaler on the GPU").map(|g| ("gpu", g));
    for (name, be) in [("cpu", Backend::cpu())].into_iter().chain(gpu) {
        let huge = GradScaler {
            init_scale: 2f32.powi(40),
            ..GradScaler::default()
        };
        let mut ex =
            Executor::with_precision(&be, &graph, 8, opt, 1, Precision::F16Mixed(huge)).unwrap();
        let before = ex.parameters().unwrap();
        let (x, y) = lenet_batch(8, 7);
        ex.train_step(&x, Targets::Classes(&y)).unwrap();
        assert_eq!(
            ex.parameters().unwrap(),
            before,
            "{name}: the overflowing step changed parameters"
        );
        assert!(ex
            .optimizer_state()
            .unwrap()
            .iter()
            .all(|(_, _, v)| v.iter().all(|&s| s == 0.0)));
        let s = ex.loss_scale().unwrap().unwrap();
        assert_eq!(
            (s.scale, s.skipped_steps, s.good_steps),
            (2f32.powi(39), 1, 0),
            "{name}"
        );

        let small = GradScaler {
            init_scale: 1024.0,
            growth_interval: 2,
            ..GradScaler::default()
        };
        let mut ex =
            Executor::with_precision(&be, &graph, 8, opt, 1, Precision::F16Mixed(small)).unwrap();
        let mut seen = Vec::new();
        for s in 0..5 {
            let (x, y) = lenet_batch(8, 20 + s);
            ex.train_step(&x, Targets::Classes(&y)).unwrap();
            let st = ex.loss_scale().unwrap().unwrap();
            seen.push((st.scale, st.good_steps, st.skipped_steps));
        }
        let want = vec![
            (1024.0, 1, 0),
            (2048.0, 0, 0),
            (2048.0, 1, 0),
            (4096.0, 0, 0),
            (4096.0, 1, 0),
        ];
        assert_eq!(seen, want, "{name}");
        assert_ne!(
            ex.parameters().unwrap(),
            before,
            "{name}: good steps must update"
        );
    }
}

#[test]
fn bad_scalers_are_typed_errors() {
    let graph = nn::lenet5().unwrap();
    let opt = Optimizer::sgd(0.1);
    let bad = [
        GradScaler {
            init_scale: 0.0,
            ..GradScaler::default()
        },
        GradScaler {
            init_scale: f32::INFINITY,
            ..GradScaler::default()
        },
        GradScaler {
            growth_factor: 1.0,
            ..GradScaler::default()
        },
        GradScaler {
            backoff_factor: 1.0,
            ..GradScaler::default()
        },
        GradScaler {
            growth_interval: 0,
            ..GradScaler::default()
        },
    ];
    for s in bad {
        let e =
            Executor::with_precision(&Backend::cpu(), &graph, 4, opt, 0, Precision::F16Mixed(s));
        assert!(
            matches!(e, Err(Error::InvalidArgument { .. })),
            "{s:?}: {:?}",
            e.err()
        );
    }
}

/// On a device without shader-f16 (llvmpipe's GL in CI) a mixed-precision executor is the
/// typed error naming the feature and the adapter, before any GPU work; on one with it, the
/// executor is built.
#[test]
fn a_device_without_shader_f16_refuses_mixed_precision() {
    let Some(g) = gpu() else { return };
    let ctx = g.gpu_context().unwrap();
    let graph = nn::lenet5().unwrap();
    let opt = Optimizer::sgd(0.1);
    let r = Executor::with_precision(&g, &graph, 4, opt, 0, Precision::f16_mixed());
    match (ctx.caps().f16, r) {
        (true, r) => assert!(r.is_ok(), "{:?}", r.err()),
        (
            false,
            Err(Error::MissingFeature {
                feature, adapter, ..
            }),
        ) => {
            assert_eq!(feature, "shader-f16");
            assert_eq!(adapter, ctx.adapter().name);
        }
        (false, r) => panic!("expected MissingFeature, got {:?}", r.err()),
    }
}

/// The models with batch norm, depthwise and pointwise convs, residual adds and dropout train
/// in mixed precision with every dispatch held to its CPU twin (`set_validate`; the gradients'
/// absolute tolerance scaled by the loss scale). The first step's loss (before any update:
/// only the f16 rounding of the conv inputs, 2⁻¹¹ relative each, differs) is within 2 % of the
/// f32 executor's. Later steps are not compared: at batch 4, batch norm's backward pass
/// (dy − mean dy − x̂·mean(dy·x̂)) cancels most of each gradient, so the f16 rounding of the
/// gradients grows to tens of per cent of the weight gradients of the first layers — on the
/// CPU twins as on the GPU, and in PyTorch with the same rounding
/// (`scripts/f16_rounding_emulation.py`: 36–79 % on Xception-mini's first layers, 2–4 % on
/// ResNet-8).
#[test]
fn xception_and_resnet_steps_pass_validation_in_mixed_precision() {
    let Some(g) = f16_gpu("mixed-precision Xception-mini and ResNet-8 steps") else {
        return;
    };
    let models = [
        (
            "xception_mini",
            nn::xception_mini(&[1, 28, 28], &[8, 16, 32], 10).unwrap(),
        ),
        ("resnet8", nn::resnet_cifar(8, 10).unwrap()),
    ];
    for (name, graph) in models {
        let per = graph.numel(graph.input_node().unwrap());
        let opt = Optimizer::momentum(0.02, 0.9);
        let mut mixed =
            Executor::with_precision(&g, &graph, 4, opt, 3, Precision::f16_mixed()).unwrap();
        mixed.set_validate(true);
        let mut full = Executor::new(&g, &graph, 4, opt, 3).unwrap();
        for s in 0..3 {
            let (x, y) = (rand01(61 + s, 4 * per), labels(62 + s, 4, 10));
            mixed.train_step(&x, Targets::Classes(&y)).unwrap();
            let lm = mixed.take_metrics(Mode::Train).unwrap().loss;
            assert!(lm.is_finite(), "{name} step {s}: loss {lm}");
            if s == 0 {
                full.train_step(&x, Targets::Classes(&y)).unwrap();
                let lf = full.take_metrics(Mode::Train).unwrap().loss;
                assert!(
                    (lm - lf).abs() <= 0.02 * lf.abs(),
                    "{name}: mixed {lm}, f32 {lf}"
                );
            }
        }
        let params = mixed.parameters().unwrap();
        assert!(
            params
                .iter()
                .all(|(_, _, v)| v.iter().all(|p| p.is_finite())),
            "{name}"
        );
    }
}

/// A checkpoint of a mixed-precision run carries its loss scaler (scale, good and skipped
/// steps) in the optimizer file, and resuming restores it; an f32 executor has no scale to set.
#[test]
fn the_loss_scale_resumes_from_a_checkpoint() {
    let graph = nn::lenet5().unwrap();
    let opt = Optimizer::momentum(0.05, 0.9);
    let huge = GradScaler {
        init_scale: 2f32.powi(40),
        ..GradScaler::default()
    };
    let cpu = Backend::cpu();
    let mut ex =
        Executor::with_precision(&cpu, &graph, 8, opt, 1, Precision::F16Mixed(huge)).unwrap();
    for s in 0..3 {
        let (x, y) = lenet_batch(8, 30 + s);
        ex.train_step(&x, Targets::Classes(&y)).unwrap();
    }
    let saved = ex.loss_scale().unwrap().unwrap();
    assert!(saved.skipped_steps >= 1, "{saved:?}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mixed-resume");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lenet.safetensors");
    wgcnn::train::save_checkpoint(&mut ex, &path, 0, 3).unwrap();

    let mut resumed =
        Executor::with_precision(&cpu, &graph, 8, opt, 1, Precision::f16_mixed()).unwrap();
    assert_ne!(resumed.loss_scale().unwrap().unwrap(), saved);
    wgcnn::train::load_checkpoint(&mut resumed, &path, true).unwrap();
    assert_eq!(resumed.loss_scale().unwrap().unwrap(), saved);

    let mut f32_ex = Executor::new(&cpu, &graph, 8, opt, 1).unwrap();
    let e = f32_ex.set_loss_scale(saved).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    // an f32 run loads the same checkpoint (the scale is simply not used)
    wgcnn::train::load_checkpoint(&mut f32_ex, &path, true).unwrap();
}

/// Adam's bias corrections do not count a skipped step (PyTorch's GradScaler skips
/// `optimizer.step()`): a run whose first step overflowed and was skipped, then updated on
/// batch 2, equals a run that updated on batch 2 first — bitwise on the CPU executor (both
/// take the host's f64 constants for t = 1), within 1e-6 relative on the GPU (whose skipped
/// path computes them in f32 on the device).
#[test]
fn adam_does_not_count_skipped_steps() {
    let graph = nn::lenet5().unwrap();
    let opt = Optimizer::adam(1e-3);
    let skip_once = GradScaler {
        init_scale: 2f32.powi(40),
        backoff_factor: 2f32.powi(-30),
        ..GradScaler::default()
    };
    let plain = GradScaler {
        init_scale: 2f32.powi(10),
        ..GradScaler::default()
    };
    let (b1, b2) = (lenet_batch(8, 71), lenet_batch(8, 72));
    let gpu = f16_gpu("Adam after a skipped step on the GPU").map(|g| ("gpu", g));
    for (name, be) in [("cpu", Backend::cpu())].into_iter().chain(gpu) {
        let mut a =
            Executor::with_precision(&be, &graph, 8, opt, 4, Precision::F16Mixed(skip_once))
                .unwrap();
        a.train_step(&b1.0, Targets::Classes(&b1.1)).unwrap();
        a.train_step(&b2.0, Targets::Classes(&b2.1)).unwrap();
        let s = a.loss_scale().unwrap().unwrap();
        assert_eq!((s.scale, s.skipped_steps), (2f32.powi(10), 1), "{name}");
        let mut b =
            Executor::with_precision(&be, &graph, 8, opt, 4, Precision::F16Mixed(plain)).unwrap();
        b.train_step(&b2.0, Targets::Classes(&b2.1)).unwrap();
        let (pa, pb) = (a.parameters().unwrap(), b.parameters().unwrap());
        for ((n, _, x), (_, _, y)) in pa.iter().zip(&pb) {
            if name == "cpu" {
                assert_eq!(x, y, "{name} {n}");
            } else {
                assert_close(&format!("{name} {n}"), x, y, 1e-7, 1e-6);
            }
        }
    }
}
