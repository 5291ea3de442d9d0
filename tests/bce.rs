//! Binary cross-entropy with logits (issue 14, "binary heads"), added through the one-op
//! recipe (a `loss.wgsl` entry point, its twin, a `Loss` launch kind, the graph op):
//!
//! * PyTorch goldens (`tests/golden/gen_bce.py`): loss and gradient of
//!   `F.binary_cross_entropy_with_logits`, hard, soft and multi-label targets, logits ±30,
//!   with and without `pos_weight`, on both backends through the functional API;
//! * finite differences of the CPU loss against its gradient;
//! * a sigmoid head through the graph: GPU = CPU training steps, and it learns digits 0 vs 1.
//!
//! Tolerances: loss and dx at atol 1e-6 + rtol 1e-5 — the kernel sums in 64 strided partials
//! (PyTorch in another order) and `exp`/`log` differ by a few ULP.

mod common;

#[path = "golden/bce.rs"]
mod golden;

use common::{assert_close, assert_same_tensors, backends, gpu};
use wgcnn::data::{embedded_mnist_subset_dir, load_mnist_dir};
use wgcnn::exec::{Executor, Targets};
use wgcnn::ndarray::{Array1, Array2};
use wgcnn::nn::{Flatten, Linear, Relu, Sequential};
use wgcnn::plan::Mode;
use wgcnn::{Backend, Optimizer};

fn a2(r: usize, c: usize, v: &[f32]) -> Array2<f32> {
    Array2::from_shape_vec((r, c), v.to_vec()).unwrap()
}

#[test]
fn matches_pytorch() {
    assert_eq!(golden::BCE.len(), 6);
    for (be_name, be) in backends() {
        for c in golden::BCE {
            let (x, t) = (a2(c.rows, c.cols, c.x), a2(c.rows, c.cols, c.t));
            let w = (!c.pos_weight.is_empty()).then(|| Array1::from(c.pos_weight.to_vec()));
            let (loss, dx) = be.bce_with_logits(&x, &t, w.as_ref()).unwrap();
            let what = format!("{be_name} {}", c.name);
            assert_close(&format!("{what} loss"), &[loss], &[c.loss], 1e-6, 1e-5);
            let dxv: Vec<f32> = dx.iter().copied().collect();
            assert_close(&format!("{what} dx"), &dxv, c.dx, 1e-6, 1e-5);
        }
    }
}

#[test]
fn bad_shapes_are_typed_errors() {
    let be = Backend::cpu();
    let x = a2(2, 3, &[0.0; 6]);
    let e = be
        .bce_with_logits(&x, &a2(3, 2, &[0.0; 6]), None)
        .unwrap_err();
    assert!(e.to_string().contains("targets"), "{e}");
    let w = Array1::from(vec![1.0, 2.0]);
    let e = be
        .bce_with_logits(&x, &a2(2, 3, &[0.0; 6]), Some(&w))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("pos_weight has 2 elements for 3 columns"),
        "{e}"
    );
}

/// `(L(x + h) − L(x − h)) / 2h` against the gradient, `h = 1/64` (f32 forward, the loss a
/// mean of O(1) terms: truncation ≲ h²/6·|L'''| ≈ 1e-5, rounding ≲ 1e-5): atol 1e-4.
#[test]
fn finite_differences_cpu() {
    let be = Backend::cpu();
    for c in golden::BCE.iter().filter(|c| c.name != "bce_large_logits") {
        let t = a2(c.rows, c.cols, c.t);
        let w = (!c.pos_weight.is_empty()).then(|| Array1::from(c.pos_weight.to_vec()));
        let loss = |x: &[f32]| {
            be.bce_with_logits(&a2(c.rows, c.cols, x), &t, w.as_ref())
                .unwrap()
                .0
        };
        let (_, dx) = be
            .bce_with_logits(&a2(c.rows, c.cols, c.x), &t, w.as_ref())
            .unwrap();
        let h = 1.0 / 64.0;
        let fd: Vec<f32> = (0..c.x.len())
            .map(|i| {
                let (mut p, mut m) = (c.x.to_vec(), c.x.to_vec());
                p[i] += h;
                m[i] -= h;
                (loss(&p) - loss(&m)) / (2.0 * h)
            })
            .collect();
        let dxv: Vec<f32> = dx.iter().copied().collect();
        assert_close(
            &format!("{} finite differences", c.name),
            &dxv,
            &fd,
            1e-4,
            1e-3,
        );
    }
}

/// Digits 0 and 1 of the bundled subset as `(images, targets 0/1)`, at most `n`.
fn zeros_and_ones(n: usize) -> (Vec<f32>, Vec<f32>) {
    let pair = load_mnist_dir(&embedded_mnist_subset_dir(), "mnist").unwrap();
    let ds = &pair.train;
    let (mut x, mut t) = (Vec::new(), Vec::new());
    for i in (0..ds.n).filter(|&i| ds.labels[i] < 2).take(n) {
        x.extend(ds.image(i).iter().map(|&p| p as f32 / 255.0));
        t.push(ds.labels[i] as f32);
    }
    (x, t)
}

fn head() -> wgcnn::Graph {
    Sequential::new(&[1, 28, 28])
        .add("flat", Flatten)
        .add("fc1", Linear::new(784, 16))
        .add("r", Relu)
        .add("fc2", Linear::new(16, 1))
        .bce_with_logits()
        .unwrap()
}

#[test]
fn a_sigmoid_head_trains_the_same_on_both_executors() {
    let Some(g) = gpu() else { return };
    let (x, t) = zeros_and_ones(32);
    let opt = Optimizer::momentum(0.1, 0.9);
    let mut c = Executor::new(&Backend::cpu(), &head(), 32, opt, 4).unwrap();
    let mut gx = Executor::new(&g, &head(), 32, opt, 4).unwrap();
    for step in 0..3 {
        c.train_step(&x, Targets::Values(&t)).unwrap();
        gx.train_step(&x, Targets::Values(&t)).unwrap();
        let (lc, lg) = (
            c.take_metrics(Mode::Train).unwrap(),
            gx.take_metrics(Mode::Train).unwrap(),
        );
        assert_close(
            &format!("step {step} loss"),
            &[lg.loss],
            &[lc.loss],
            1e-5,
            1e-4,
        );
        assert_eq!(lg.accuracy, lc.accuracy, "step {step}");
        let what = format!("step {step} gradients");
        assert_same_tensors(
            &what,
            &gx.gradients().unwrap(),
            &c.gradients().unwrap(),
            1e-5,
            1e-3,
        );
    }
}

#[test]
fn a_sigmoid_head_learns_zeros_from_ones() {
    let (x, t) = zeros_and_ones(512);
    let n = t.len();
    let mut ex = Executor::new(
        &Backend::cpu(),
        &head(),
        64,
        Optimizer::momentum(0.05, 0.9),
        1,
    )
    .unwrap();
    for _ in 0..3 {
        for (xb, tb) in x.chunks(64 * 784).zip(t.chunks(64)) {
            ex.train_step(xb, Targets::Values(tb)).unwrap();
        }
    }
    ex.take_metrics(Mode::Train).unwrap();
    for (xb, tb) in x.chunks(64 * 784).zip(t.chunks(64)) {
        ex.eval_batch(xb, Targets::Values(tb)).unwrap();
    }
    let m = ex.take_metrics(Mode::Eval).unwrap();
    assert_eq!(m.samples, n);
    assert!(
        m.accuracy > 0.98 && m.loss < 0.1,
        "accuracy {} loss {}",
        m.accuracy,
        m.loss
    );
}
