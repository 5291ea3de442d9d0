//! Cross-entropy with label smoothing (issue 13 item 3): PyTorch goldens
//! (`tests/golden/gen_label_smoothing.py`) through the functional API on both backends, the
//! graph loss equal to the functional one, GPU = CPU training with it, typed errors.
//!
//! Tolerances: a row's loss is a log-sum-exp of up to 100 terms plus a mean of the logits,
//! f32 on both sides in another order: loss atol = rtol = 1e-5; the gradient
//! `(softmax − q)/N` is a difference of values ≤ 1 divided by N: atol = 1e-6, rtol = 1e-4.

mod common;

use common::{assert_close, backends, executors_agree, labels, rand01};
use wgcnn::exec::{Executor, Targets};
use wgcnn::ndarray::Array2;
use wgcnn::nn::{Conv2d, Flatten, Linear, MaxPool2d, Relu, Sequential};
use wgcnn::plan::Mode;
use wgcnn::{Backend, Optimizer};

#[path = "golden/label_smoothing.rs"]
mod golden;

#[test]
fn functional_matches_pytorch() {
    for (be_name, be) in backends() {
        for c in golden::CASES {
            let what = format!("{be_name} {}", c.name);
            let x = Array2::from_shape_vec((c.rows, c.classes), c.logits.to_vec()).unwrap();
            let (loss, dx) = be.cross_entropy_smoothed(&x, c.targets, c.eps).unwrap();
            assert_close(&format!("{what} loss"), &[loss], &[c.loss], 1e-5, 1e-5);
            assert_close(
                &format!("{what} dlogits"),
                dx.as_slice().unwrap(),
                c.dlogits,
                1e-6,
                1e-4,
            );
            if c.eps == 0.0 {
                // ε = 0 is the plain cross-entropy, bit for bit
                let (l0, d0) = be.cross_entropy(&x, c.targets).unwrap();
                assert_eq!(
                    (l0, d0),
                    (loss, dx),
                    "{what}: eps 0 differs from cross_entropy"
                );
            }
        }
    }
}

fn model(eps: f32) -> wgcnn::graph::Graph {
    Sequential::new(&[1, 8, 8])
        .add("c1", Conv2d::new(1, 4, 3).padding(1))
        .add("r1", Relu)
        .add("p1", MaxPool2d::new(2))
        .add("flat", Flatten)
        .add("fc", Linear::new(4 * 4 * 4, 5))
        .label_smoothing(eps)
        .cross_entropy()
        .unwrap()
}

#[test]
fn graph_loss_is_the_functional_loss() {
    let n = 6;
    let (x, y) = (rand01(3, n * 64), labels(4, n, 5));
    for (be_name, be) in backends() {
        let mut ex = Executor::new(&be, &model(0.2), n, Optimizer::sgd(0.1), 1).unwrap();
        let logits = ex.predict(&x).unwrap();
        ex.eval_batch(&x, Targets::Classes(&y)).unwrap();
        let got = ex.take_metrics(Mode::Eval).unwrap().loss;
        let logits = Array2::from_shape_vec((n, 5), logits.into_iter().collect()).unwrap();
        let (want, _) = Backend::cpu()
            .cross_entropy_smoothed(&logits, &y, 0.2)
            .unwrap();
        let (plain, _) = Backend::cpu().cross_entropy(&logits, &y).unwrap();
        assert_close(
            &format!("{be_name} graph loss"),
            &[got],
            &[want],
            1e-5,
            1e-5,
        );
        assert!(
            (got - plain).abs() > 1e-3,
            "{be_name}: smoothing changed nothing ({got} vs {plain})"
        );
    }
    executors_agree(&model(0.1), 4, 64, 5, 3);
}

#[test]
fn bad_smoothing_is_refused() {
    let e = Backend::cpu()
        .cross_entropy_smoothed(&Array2::zeros((2, 3)), &[0, 1], -0.1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("label smoothing -0.1"), "{e}");
    let e = Sequential::new(&[4])
        .add("fc", Linear::new(4, 2))
        .label_smoothing(2.0)
        .cross_entropy();
    assert!(e.unwrap_err().to_string().contains("label smoothing 2"));
    let mut g = Sequential::new(&[4])
        .add("fc", Linear::new(4, 2))
        .mse()
        .unwrap();
    g.set_label_smoothing(0.1).unwrap();
    let e = Executor::new(&Backend::cpu(), &g, 2, Optimizer::sgd(0.1), 0)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("needs a cross-entropy loss"), "{e}");
}
