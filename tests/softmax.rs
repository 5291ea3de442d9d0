//! The Softmax layer: `softmax_forward` / `softmax_backward` against PyTorch
//! (`tests/golden/gen_softmax.py`) and GPU against CPU; its gradient by finite differences
//! through the graph (Softmax followed by MSE); and the Keras semantics of a softmax output
//! layer under cross-entropy: the loss is computed from the softmax's input logits (finite
//! where `−log p` in f32 is not), the model trains exactly as the one without the layer,
//! and its output is the probabilities.
//!
//! # Tolerances
//! `y = e^{x−max}/Σ`: WGSL's `exp` may be off a few ULP (`3 + 2·|x|` ULP, ≲ 1e-5 relative for
//! |x − max| ≤ 60) and the row sum rounds differently, so y is compared with
//! 1e-6 + 1e-5·|y|. `dx = y·(dy − Σ dy·y)` inherits y's relative error plus the rounding of a
//! ≤ 33-term dot product of O(1) values (≲ 1e-6): 2e-6 + 1e-5·|dx|. The cross-entropy of a
//! softmax output layer is the cross-entropy kernel's (logsumexp − x_t in f32): against
//! PyTorch's f32 value 1e-5 relative, against the f64 `−log p_t` 1e-5 relative too (a sum
//! of ≤ 33 exps in f32 and one log). Finite differences (h = 1e-2) of an MSE of softmax
//! outputs: the third derivative of the loss in a logit is O(1), so truncation is
//! ≲ h²/6 ≈ 2e-5, plus f32 loss rounding over 2h (~1e-5): 1e-3 + 1e-2·|g| leaves wide margin.

mod common;

use common::values;

#[path = "golden/softmax.rs"]
mod golden;

use common::{assert_close, assert_same_tensors, backends, gpu, labels, proptest_config, rand01};
use proptest::prelude::*;
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::{Graph, Op};
use wgcnn::ndarray::Array2;
use wgcnn::nn::{Conv2d, Flatten, Linear, MaxPool2d, Relu, Sequential, Softmax};
use wgcnn::plan::Mode;
use wgcnn::{Backend, Error, Optimizer};

fn flat(a: &Array2<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

// ------------------------------------------------------------ the kernels

#[test]
fn softmax_forward_and_backward_match_pytorch() {
    for (bname, be) in backends() {
        for c in golden::SOFTMAX {
            let what = format!("{bname} {}", c.name);
            let x = Array2::from_shape_vec((c.rows, c.cols), c.x.to_vec()).unwrap();
            let y = be.softmax(&x).unwrap();
            let w = assert_close(&format!("{what} y"), &flat(&y), c.y, 1e-6, 1e-5);
            let dy = Array2::from_shape_vec((c.rows, c.cols), c.dy.to_vec()).unwrap();
            // from PyTorch's y, so only the backward's own error counts
            let yt = Array2::from_shape_vec((c.rows, c.cols), c.y.to_vec()).unwrap();
            let dx = be.softmax_backward(&yt, &dy).unwrap();
            let wd = assert_close(&format!("{what} dx"), &flat(&dx), c.dx, 2e-6, 1e-5);
            eprintln!("{what}: worst |err|/tol y {w:.3} dx {wd:.3}");
        }
    }
}

proptest! {
    #![proptest_config(proptest_config(32))]

    #[test]
    fn softmax_backward_gpu_matches_cpu(
        rows in 1usize..140, cols in 1usize..40, scale in 0.1f32..20.0, seed in any::<u64>()
    ) {
        let Some(g) = gpu() else { return Ok(()) };
        let cpu = Backend::cpu();
        let x = Array2::from_shape_vec(
            (rows, cols),
            values(seed, rows * cols).iter().map(|v| v * scale).collect(),
        )
        .unwrap();
        let yc = cpu.softmax(&x).unwrap();
        let yg = g.softmax(&x).unwrap();
        assert_close("softmax y", &flat(&yg), &flat(&yc), 1e-6, 1e-5);
        let dy = Array2::from_shape_vec((rows, cols), values(seed ^ 9, rows * cols)).unwrap();
        let dxc = cpu.softmax_backward(&yc, &dy).unwrap();
        let dxg = g.softmax_backward(&yc, &dy).unwrap();
        assert_close("softmax dx", &flat(&dxg), &flat(&dxc), 2e-6, 1e-5);
        for r in 0..rows {
            let s: f32 = yc.row(r).sum();
            prop_assert!((s - 1.0).abs() <= 1e-6 * cols as f32, "row {} sums to {}", r, s);
        }
    }
}

#[test]
fn softmax_backward_matches_finite_differences() {
    let cpu = Backend::cpu();
    let (rows, cols) = (3, 6);
    let x = values(3, rows * cols)
        .iter()
        .map(|v| v * 2.0)
        .collect::<Vec<_>>();
    let dy = values(4, rows * cols);
    let xa = Array2::from_shape_vec((rows, cols), x.clone()).unwrap();
    let dya = Array2::from_shape_vec((rows, cols), dy.clone()).unwrap();
    let y = cpu.softmax(&xa).unwrap();
    let dx = flat(&cpu.softmax_backward(&y, &dya).unwrap());
    let loss = |v: &[f32]| -> f64 {
        let a = Array2::from_shape_vec((rows, cols), v.to_vec()).unwrap();
        let s = cpu.softmax(&a).unwrap();
        s.iter().zip(&dy).map(|(&p, &d)| p as f64 * d as f64).sum()
    };
    let h = 1e-2f32;
    let num: Vec<f32> = (0..x.len())
        .map(|i| {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[i] += h;
            m[i] -= h;
            ((loss(&p) - loss(&m)) / (p[i] - m[i]) as f64) as f32
        })
        .collect();
    assert_close("softmax fd", &dx, &num, 1e-3, 1e-2);
}

// ------------------------------------------------------------ cross-entropy on a softmax

/// `x [cols] → Softmax → cross-entropy`: the loss is PyTorch's cross-entropy of the logits
/// (finite even where f32 `−log p_t` is inf), and the output is the probabilities.
#[test]
fn cross_entropy_of_a_softmax_output_is_computed_from_the_logits() {
    for (bname, be) in backends() {
        for c in golden::SOFTMAX {
            let what = format!("{bname} {}", c.name);
            let mut g = Graph::new();
            let x = g.input("logits", &[c.cols]).unwrap();
            let s = g.softmax("probs", x).unwrap();
            g.cross_entropy("loss", s).unwrap();
            let mut ex = Executor::new(&be, &g, c.rows, Optimizer::sgd(0.0), 0).unwrap();
            ex.eval_batch(c.x, Targets::Classes(c.targets)).unwrap();
            let loss = ex.take_metrics(Mode::Eval).unwrap().loss;
            assert!(loss.is_finite(), "{what}: loss {loss}");
            assert_close(&format!("{what} ce"), &[loss], &[c.ce], 1e-6, 1e-5);
            assert_close(
                &format!("{what} −log p (f64)"),
                &[loss],
                &[c.nll_f64 as f32],
                1e-6,
                1e-5,
            );
            let p = ex.predict(c.x).unwrap();
            assert_close(&format!("{what} probs"), &flat(&p), c.y, 1e-6, 1e-5);
            for r in 0..c.rows {
                let sum: f32 = p.row(r).sum();
                assert!(
                    (sum - 1.0).abs() <= 1e-6 * c.cols as f32,
                    "{what}: row sums to {sum}"
                );
            }
            // −log of the f32 probability would be inf for the large case's first row
            if c.name == "sm_large" {
                assert_eq!(p[[0, c.targets[0] as usize]], 0.0, "{what}: p_t underflows");
            }
        }
    }
}

fn lenet_like(softmax: bool) -> Graph {
    let s = Sequential::new(&[1, 12, 12])
        .add("c1", Conv2d::new(1, 4, 3).padding(1))
        .add("r1", Relu)
        .add("s2", MaxPool2d::new(2))
        .add("flat", Flatten)
        .add("f3", Linear::new(4 * 6 * 6, 24))
        .add("r3", Relu)
        .add("f4", Linear::new(24, 5));
    let s = if softmax { s.add("probs", Softmax) } else { s };
    s.cross_entropy().unwrap()
}

/// Keras `Dense(activation='softmax')` + categorical cross-entropy: the same losses, the
/// same gradients and parameters, step after step, as the logits model (bit for bit on each
/// executor: the same kernels on the same values); `predict` gives the probabilities.
#[test]
fn a_softmax_output_layer_trains_exactly_as_the_logits_model() {
    let (with, without) = (lenet_like(true), lenet_like(false));
    assert!(matches!(
        with.node(with.output_node().unwrap()).op,
        Op::Softmax { .. }
    ));
    let n = 8;
    let mut losses = Vec::new();
    for (name, be) in backends() {
        let mut ls = Vec::new();
        let opt = Optimizer::momentum(0.05, 0.9);
        let mut a = Executor::new(&be, &with, n, opt, 7).unwrap();
        let mut b = Executor::new(&be, &without, n, opt, 7).unwrap();
        for s in 0..6 {
            let x = rand01(10 + s, n * 144);
            let y = labels(20 + s, n, 5);
            a.train_step(&x, Targets::Classes(&y)).unwrap();
            b.train_step(&x, Targets::Classes(&y)).unwrap();
            let (ma, mb) = (
                a.take_metrics(Mode::Train).unwrap(),
                b.take_metrics(Mode::Train).unwrap(),
            );
            assert_eq!(ma, mb, "{name}: step {s}: metrics");
            ls.push(ma.loss);
            assert_eq!(
                a.gradients().unwrap(),
                b.gradients().unwrap(),
                "{name}: step {s}"
            );
        }
        assert_eq!(a.parameters().unwrap(), b.parameters().unwrap(), "{name}");
        let x = rand01(99, n * 144);
        let y = labels(98, n, 5);
        a.eval_batch(&x, Targets::Classes(&y)).unwrap();
        b.eval_batch(&x, Targets::Classes(&y)).unwrap();
        assert_eq!(
            a.take_metrics(Mode::Eval).unwrap(),
            b.take_metrics(Mode::Eval).unwrap(),
            "{name}: eval"
        );
        let p = a.predict(&x).unwrap();
        let logits = b.predict(&x).unwrap();
        let want = Backend::cpu().softmax(&logits).unwrap();
        assert_close(
            &format!("{name} predict"),
            &flat(&p),
            &flat(&want),
            1e-6,
            1e-5,
        );
        for r in 0..n {
            let sum: f32 = p.row(r).sum();
            assert!((sum - 1.0).abs() <= 5e-6, "{name}: row {r} sums to {sum}");
        }
        losses.push(ls);
    }
    // GPU against CPU: f32 sums in other orders, compounding through the updates
    if losses.len() == 2 {
        for (s, (lc, lg)) in losses[0].iter().zip(&losses[1]).enumerate() {
            assert!(
                (lc - lg).abs() <= 1e-3 * lc.abs().max(1.0),
                "step {s}: cpu {lc} vs gpu {lg}"
            );
        }
    }
}

/// The softmax's own backward never runs under cross-entropy; it does under MSE.
#[test]
fn softmax_lowering_under_each_loss() {
    let g = lenet_like(true);
    let ex = Executor::new(&Backend::cpu(), &g, 4, Optimizer::sgd(0.1), 0).unwrap();
    let steps = ex.steps(4).unwrap();
    assert!(!steps.iter().any(|s| s.kernel() == "softmax_backward"));
    let fwd = steps
        .iter()
        .position(|s| s.kernel() == "softmax_forward")
        .unwrap();
    let ce = steps
        .iter()
        .position(|s| s.kernel() == "cross_entropy")
        .unwrap();
    // binding 0 of both: the softmax's x, the loss's logits
    assert_eq!(
        steps[fwd].args[0], steps[ce].args[0],
        "the loss reads the softmax's input"
    );
    let g = Sequential::new(&[6])
        .add("fc", Linear::new(6, 4))
        .add("probs", Softmax)
        .mse()
        .unwrap();
    let ex = Executor::new(&Backend::cpu(), &g, 4, Optimizer::sgd(0.1), 0).unwrap();
    assert!(ex
        .steps(4)
        .unwrap()
        .iter()
        .any(|s| s.kernel() == "softmax_backward"));
}

/// `Linear → Softmax → MSE` and a softmax in the middle of a model (`Linear → Softmax →
/// Linear → cross-entropy`): every parameter gradient by central differences of the loss on
/// the CPU executor, and the GPU executor's gradients against the CPU's.
#[test]
fn softmax_gradients_match_finite_differences_and_gpu_matches_cpu() {
    let n = 3;
    let x = values(31, n * 6);
    let mse = Sequential::new(&[6])
        .add("fc", Linear::new(6, 5))
        .add("probs", Softmax)
        .mse()
        .unwrap();
    let mid = Sequential::new(&[6])
        .add("fc", Linear::new(6, 5))
        .add("probs", Softmax)
        .add("out", Linear::new(5, 3))
        .cross_entropy()
        .unwrap();
    let tv = rand01(32, n * 5);
    let tc = [2u32, 0, 1];
    for (graph, targets) in [(&mse, Targets::Values(&tv)), (&mid, Targets::Classes(&tc))] {
        let opt = Optimizer::sgd(0.0);
        let mut c = Executor::new(&Backend::cpu(), graph, n, opt, 5).unwrap();
        c.train_step(&x, targets).unwrap();
        let params = c.parameters().unwrap();
        let grads = c.gradients().unwrap();
        if let Some(g) = gpu() {
            let mut gx = Executor::new(&g, graph, n, opt, 5).unwrap();
            gx.train_step(&x, targets).unwrap();
            assert_same_tensors("gpu", &gx.gradients().unwrap(), &grads, 1e-6, 1e-4);
        }
        let mut e = Executor::new(&Backend::cpu(), graph, n, opt, 5).unwrap();
        let mut loss_at = |ps: &[(String, Vec<usize>, Vec<f32>)]| -> f64 {
            e.load_state(ps, &[], 0).unwrap();
            e.eval_batch(&x, targets).unwrap();
            e.take_metrics(Mode::Eval).unwrap().loss as f64
        };
        let h = 1e-2f32;
        for (pi, (pname, _, pv)) in params.iter().enumerate() {
            let mut num = Vec::new();
            for k in 0..pv.len() {
                let (mut plus, mut minus) = (params.clone(), params.clone());
                plus[pi].2[k] += h;
                minus[pi].2[k] -= h;
                let step = (plus[pi].2[k] - minus[pi].2[k]) as f64;
                num.push(((loss_at(&plus) - loss_at(&minus)) / step) as f32);
            }
            let w = assert_close(&format!("fd {pname}"), &grads[pi].2, &num, 1e-3, 1e-2);
            eprintln!("fd {pname}: worst |err|/tol = {w:.3}");
        }
    }
}

#[test]
fn softmax_rejects_bad_inputs() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 3, 3]).unwrap();
    match g.softmax("probs", x).unwrap_err() {
        Error::Shape { op, msg } => {
            assert_eq!(op, "probs");
            assert!(msg.contains("Flatten"), "{msg}");
        }
        e => panic!("expected a shape error, got {e:?}"),
    }
    for (_, be) in backends() {
        let y = Array2::<f32>::zeros((2, 3));
        assert!(be.softmax_backward(&y, &Array2::zeros((3, 2))).is_err());
        assert!(be
            .softmax_backward(&Array2::zeros((0, 3)), &Array2::zeros((0, 3)))
            .is_err());
    }
}
