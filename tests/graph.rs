//! The graph → plan → executor pipeline: GPU executor against the CPU executor on
//! LeNet-5, learning, residual gradients, memory, determinism and counters.
//!
//! Tolerances: one LeNet step compares logits/loss at atol = rtol = 1e-4 and
//! gradients/parameters at atol = 1e-4, rtol = 1e-3 (f32 sums of up to 12,544 terms in
//! a different order, then fed through several layers); 50-step loss trajectories agree
//! within 2e-3 relative, as the rounding differences compound through the updates.

mod common;

use common::{assert_close, assert_same_tensors, gpu};
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::Graph;
use wgcnn::nn::{self, Conv2d, Flatten, Linear, MaxPool2d, Relu, Sequential};
use wgcnn::plan::Mode;
use wgcnn::{Activation, Backend, Conv2dParams, Optimizer};

fn rand_vec(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

fn labels(seed: u64, n: usize) -> Vec<u32> {
    rand_vec(seed, n)
        .iter()
        .map(|v| (v * 10.0) as u32 % 10)
        .collect()
}

fn step_loss(ex: &mut Executor, x: &[f32], y: &[u32]) -> f32 {
    ex.train_step(x, Targets::Classes(y)).unwrap();
    ex.take_metrics(Mode::Train).unwrap().loss
}

#[test]
fn lenet_one_step_gpu_equals_cpu() {
    let Some(g) = gpu() else { return };
    let graph = nn::lenet5().unwrap();
    let opt = Optimizer::momentum(0.05, 0.9);
    let n = 16;
    let x = rand_vec(1, n * 784);
    let y = labels(2, n);
    let mut c = Executor::new(&Backend::cpu(), &graph, n, opt, 7).unwrap();
    let mut gx = Executor::new(&g, &graph, n, opt, 7).unwrap();
    let p0c = c.parameters().unwrap();
    let p0g = gx.parameters().unwrap();
    assert_eq!(p0c, p0g, "same seed, same initial parameters");
    let lc = step_loss(&mut c, &x, &y);
    let lg = step_loss(&mut gx, &x, &y);
    assert!(
        (lc - (10f32).ln()).abs() < 0.3,
        "initial loss {lc} near ln 10"
    );
    assert_close("loss", &[lg], &[lc], 1e-4, 1e-4);
    let oc = c.output(n).unwrap();
    let og = gx.output(n).unwrap();
    assert_close(
        "logits",
        og.as_slice().unwrap(),
        oc.as_slice().unwrap(),
        1e-4,
        1e-4,
    );
    let gc = c.gradients().unwrap();
    for (name, _, g) in &gc {
        assert!(g.iter().any(|v| *v != 0.0), "{name}: gradient is all zero");
    }
    assert_same_tensors("grad", &gx.gradients().unwrap(), &gc, 1e-4, 1e-3);
    let pc = c.parameters().unwrap();
    assert_eq!(pc.len(), p0c.len());
    for ((name, _, p), (_, _, p0)) in pc.iter().zip(&p0c) {
        assert!(p != p0, "{name} was not updated");
    }
    assert_same_tensors("param", &gx.parameters().unwrap(), &pc, 1e-4, 1e-3);
    // Conv + ReLU and Linear + ReLU are fused; a LeNet step stays within 20 dispatches.
    assert_eq!(gx.counters().dispatches_per_step, 20);
}

#[test]
fn fifty_steps_losses_agree() {
    let Some(g) = gpu() else { return };
    let graph = nn::lenet5().unwrap();
    let opt = Optimizer::adam(1e-3);
    let n = 8;
    let mut c = Executor::new(&Backend::cpu(), &graph, n, opt, 3).unwrap();
    let mut gx = Executor::new(&g, &graph, n, opt, 3).unwrap();
    for s in 0..50u64 {
        let x = rand_vec(100 + s, n * 784);
        let y = labels(200 + s, n);
        let lc = step_loss(&mut c, &x, &y);
        let lg = step_loss(&mut gx, &x, &y);
        assert!(
            (lg - lc).abs() <= 1e-4 + 2e-3 * lc.abs(),
            "step {s}: gpu loss {lg} vs cpu {lc}"
        );
    }
}

/// A learnable task: the class is which quadrant of an 8×8 image holds a bright blob.
fn quadrant_batch(seed: u64, n: usize) -> (Vec<f32>, Vec<u32>) {
    let noise = rand_vec(seed, n * 64);
    let cls = labels(seed ^ 0xabc, n)
        .iter()
        .map(|c| c % 4)
        .collect::<Vec<_>>();
    let mut x = vec![0.0f32; n * 64];
    for i in 0..n {
        let (qr, qc) = ((cls[i] / 2) as usize * 4, (cls[i] % 2) as usize * 4);
        for r in 0..8 {
            for c in 0..8 {
                let inside = (qr..qr + 4).contains(&r) && (qc..qc + 4).contains(&c);
                x[i * 64 + r * 8 + c] =
                    0.3 * noise[i * 64 + r * 8 + c] + if inside { 1.0 } else { 0.0 };
            }
        }
    }
    (x, cls)
}

fn small_cnn() -> Graph {
    Sequential::new(&[1, 8, 8])
        .add("c1", Conv2d::new(1, 4, 3).padding(1))
        .add("r1", Relu)
        .add("p1", MaxPool2d::new(2))
        .add("flat", Flatten)
        .add("fc", Linear::new(64, 4))
        .cross_entropy()
        .unwrap()
}

#[test]
fn small_cnn_learns_on_both_executors() {
    // Chance-level loss on 4 classes is ln 4 ≈ 1.386; a model that has learned the
    // quadrant rule gets below 0.2 on fresh batches, which random weights never do.
    for (name, be) in common::backends() {
        let mut ex =
            Executor::new(&be, &small_cnn(), 32, Optimizer::momentum(0.1, 0.9), 5).unwrap();
        for s in 0..150 {
            let (x, y) = quadrant_batch(s, 32);
            ex.train_step(&x, Targets::Classes(&y)).unwrap();
        }
        ex.take_metrics(Mode::Train).unwrap();
        for s in 1000..1004 {
            let (x, y) = quadrant_batch(s, 32);
            ex.eval_batch(&x, Targets::Classes(&y)).unwrap();
        }
        let m = ex.take_metrics(Mode::Eval).unwrap();
        assert_eq!(m.samples, 128);
        assert!(
            m.loss < 0.2,
            "{name}: eval loss {} did not fall below 0.2",
            m.loss
        );
        assert!(m.accuracy > 0.95, "{name}: accuracy {}", m.accuracy);
    }
}

/// y = fc(flatten(relu(conv(x)) + conv(x))): the conv output is used twice.
fn residual_graph() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 5, 5]).unwrap();
    let c = g
        .conv2d("conv", x, 3, [3, 3], Conv2dParams::new(1, 1), true)
        .unwrap();
    let r = g.activation("act", c, Activation::Tanh).unwrap();
    let s = g.add("sum", r, c).unwrap();
    let f = g.flatten("flat", s).unwrap();
    let o = g.linear("fc", f, 3, true).unwrap();
    g.cross_entropy("loss", o).unwrap();
    g
}

#[test]
fn residual_gradients_match_finite_differences_and_gpu() {
    let graph = residual_graph();
    let n = 3;
    let x = rand_vec(11, n * 50);
    let y = vec![0u32, 2, 1];
    let opt = Optimizer::sgd(0.0);
    let mut c = Executor::new(&Backend::cpu(), &graph, n, opt, 9).unwrap();
    c.train_step(&x, Targets::Classes(&y)).unwrap();
    c.take_metrics(Mode::Train).unwrap();
    let params = c.parameters().unwrap();
    let grads = c.gradients().unwrap();
    // central differences of the mean loss w.r.t. a few coordinates of every parameter
    let loss_at = |ps: &[(String, Vec<usize>, Vec<f32>)]| -> f64 {
        let mut e = Executor::new(&Backend::cpu(), &graph, n, opt, 9).unwrap();
        e.load_state(ps, &[], 0).unwrap();
        e.eval_batch(&x, Targets::Classes(&y)).unwrap();
        e.take_metrics(Mode::Eval).unwrap().loss as f64
    };
    let h = 1e-2f32;
    for (pi, (name, _, v)) in params.iter().enumerate() {
        for k in [0, v.len() / 2, v.len() - 1] {
            let mut plus = params.clone();
            plus[pi].2[k] += h;
            let mut minus = params.clone();
            minus[pi].2[k] -= h;
            let fd = ((loss_at(&plus) - loss_at(&minus)) / (2.0 * h as f64)) as f32;
            let an = grads[pi].2[k];
            assert!(
                (fd - an).abs() <= 2e-3 + 2e-2 * an.abs(),
                "{name}[{k}]: finite difference {fd} vs backward {an}"
            );
        }
    }
    if let Some(g) = gpu() {
        let mut gx = Executor::new(&g, &graph, n, opt, 9).unwrap();
        gx.train_step(&x, Targets::Classes(&y)).unwrap();
        assert_same_tensors(
            "residual grad",
            &gx.gradients().unwrap(),
            &grads,
            1e-5,
            1e-4,
        );
    }
}

#[test]
fn memory_is_flat_and_counters_exact() {
    let Some(g) = gpu() else { return };
    let graph = nn::lenet5().unwrap();
    let n = 8;
    let mut ex = Executor::new(&g, &graph, n, Optimizer::sgd(0.01), 1).unwrap();
    let x = rand_vec(4, n * 784);
    let y = labels(5, n);
    ex.train_step(&x, Targets::Classes(&y)).unwrap();
    let after1 = ex.counters();
    assert_eq!(after1.submits_last_step, 1);
    assert_eq!(
        after1.bytes_read_back, 0,
        "a training step reads nothing back"
    );
    for _ in 1..200 {
        ex.train_step(&x, Targets::Classes(&y)).unwrap();
    }
    let after200 = ex.counters();
    assert_eq!(after200.gpu_bytes_allocated, after1.gpu_bytes_allocated);
    assert_eq!(
        after200.submits - after1.submits,
        199,
        "one submit per step"
    );
    assert_eq!(after200.bytes_read_back, 0);
    let m = ex.take_metrics(Mode::Train).unwrap();
    assert_eq!(m.samples, 200 * n);
    assert_eq!(
        ex.counters().bytes_read_back,
        16,
        "metrics are one 16-byte readback"
    );
    // a smaller last batch works and allocates only its uniforms, once
    ex.train_step(&x[..3 * 784], Targets::Classes(&y[..3]))
        .unwrap();
    let partial = ex.counters().gpu_bytes_allocated;
    ex.train_step(&x[..3 * 784], Targets::Classes(&y[..3]))
        .unwrap();
    assert_eq!(ex.counters().gpu_bytes_allocated, partial);
    assert_eq!(ex.take_metrics(Mode::Train).unwrap().samples, 6);
}

#[test]
fn gpu_training_is_deterministic() {
    let Some(g) = gpu() else { return };
    let graph = nn::lenet5().unwrap();
    let run = || {
        let mut ex = Executor::new(&g, &graph, 16, Optimizer::adam(1e-3), 42).unwrap();
        for s in 0..20 {
            let x = rand_vec(300 + s, 16 * 784);
            let y = labels(400 + s, 16);
            ex.train_step(&x, Targets::Classes(&y)).unwrap();
        }
        ex.parameters().unwrap()
    };
    let a = run();
    let b = run();
    for ((name, _, va), (_, _, vb)) in a.iter().zip(&b) {
        let bits_a: Vec<u32> = va.iter().map(|v| v.to_bits()).collect();
        let bits_b: Vec<u32> = vb.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits_a, bits_b, "{name} differs between two runs");
    }
}

#[test]
fn shape_errors_name_the_node() {
    let e = Sequential::new(&[1, 28, 28])
        .add("c1", Conv2d::new(3, 6, 5))
        .cross_entropy()
        .unwrap_err();
    assert!(e.to_string().contains("c1"), "{e}");
    let e = Sequential::new(&[1, 28, 28])
        .add("c1", Conv2d::new(1, 6, 5))
        .add("flat", Flatten)
        .add("fc", Linear::new(400, 10))
        .cross_entropy()
        .unwrap_err();
    assert!(
        e.to_string().contains("fc") && e.to_string().contains("3456"),
        "{e}"
    );
    let graph = nn::lenet5().unwrap();
    assert!(Executor::new(&Backend::cpu(), &graph, 0, Optimizer::sgd(0.1), 0).is_err());
}

/// `predict` between evaluation batches leaves the accumulated evaluation metrics alone
/// (on the GPU it skips the loss dispatch; on the CPU it restores them).
#[test]
fn predict_keeps_evaluation_metrics() {
    let graph = nn::lenet5().unwrap();
    for (name, be) in common::backends() {
        let mut ex = Executor::new(&be, &graph, 8, Optimizer::sgd(0.01), 2).unwrap();
        let x = rand_vec(21, 8 * 784);
        let y = labels(22, 8);
        ex.eval_batch(&x, Targets::Classes(&y)).unwrap();
        let before = ex.counters().bytes_read_back;
        let logits = ex.predict(&x[..3 * 784]).unwrap();
        assert_eq!(logits.dim(), (3, 10));
        if name == "gpu" {
            assert_eq!(
                ex.counters().bytes_read_back - before,
                3 * 10 * 4,
                "only the logits are read back"
            );
        }
        ex.eval_batch(&x, Targets::Classes(&y)).unwrap();
        let m = ex.take_metrics(Mode::Eval).unwrap();
        assert_eq!(
            m.samples, 16,
            "{name}: predict must not add or drop evaluation samples"
        );
    }
}
