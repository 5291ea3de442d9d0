//! `nn::xception_mini`, the Xception-style network of `examples/xception_fashion.rs`
//! (rescaling, strided `same` conv, batch norm, depthwise-separable convolutions, residual
//! 1×1 stride-2 shortcuts, max-pooling, global average pooling, dropout, dense): its
//! structure, one training step GPU = CPU, and that it learns real digits.
//!
//! Tolerances: the step compares loss at atol = rtol = 1e-4 and gradients at atol = 1e-4,
//! rtol = 2e-3: f32 sums in a different order through 20 layers, batch-norm divisions by
//! small batch standard deviations amplifying the rounding differences.

mod common;

use common::{assert_close, assert_same_tensors, gpu};
use wgcnn::data::{self, Loader, Normalize};
use wgcnn::exec::{Executor, Targets};
use wgcnn::plan::Mode;
use wgcnn::{nn, train, Backend, Optimizer};

fn pixels(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) % 256) as f32
        })
        .collect()
}

#[test]
fn xception_mini_structure() {
    let g = nn::xception_mini(&[1, 28, 28], &[32, 64, 128], 10).unwrap();
    let shape = |name: &str| {
        g.params()
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
            .shape
            .clone()
    };
    assert_eq!(shape("entry.conv.weight"), vec![32, 1, 3, 3]);
    assert_eq!(shape("block1.sep1.depthwise.weight"), vec![32, 1, 3, 3]);
    assert_eq!(shape("block1.sep1.pointwise.weight"), vec![64, 32, 1, 1]);
    assert_eq!(shape("block2.shortcut.weight"), vec![128, 64, 1, 1]);
    assert_eq!(shape("exit.sep.pointwise.weight"), vec![256, 128, 1, 1]);
    assert_eq!(shape("fc.weight"), vec![10, 256]);
    let node = |name: &str| {
        g.nodes()
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
            .shape
            .clone()
    };
    // 28 → 14 (stride-2 same) → 7 → 4 (pool and shortcut agree)
    assert_eq!(node("entry.conv"), vec![32, 14, 14]);
    assert_eq!(node("block1.add"), vec![64, 7, 7]);
    assert_eq!(node("block2.add"), vec![128, 4, 4]);
    assert_eq!(node("gap"), vec![256]);
    // bad arguments are typed errors
    assert!(nn::xception_mini(&[28, 28], &[32, 64], 10).is_err());
    assert!(nn::xception_mini(&[1, 28, 28], &[32], 10).is_err());
}

#[test]
fn xception_mini_step_gpu_equals_cpu() {
    let Some(gb) = gpu() else { return };
    let graph = nn::xception_mini(&[1, 28, 28], &[8, 16, 24], 10).unwrap();
    let opt = Optimizer::momentum(0.05, 0.9);
    let n = 6;
    let x = pixels(3, n * 784);
    let y: Vec<u32> = (0..n as u32).map(|i| (i * 7) % 10).collect();
    let mut c = Executor::new(&Backend::cpu(), &graph, n, opt, 5).unwrap();
    let mut g = Executor::new(&gb, &graph, n, opt, 5).unwrap();
    assert_eq!(c.parameters().unwrap(), g.parameters().unwrap());
    for step in 0..2 {
        c.train_step(&x, Targets::Classes(&y)).unwrap();
        g.train_step(&x, Targets::Classes(&y)).unwrap();
        let lc = c.take_metrics(Mode::Train).unwrap().loss;
        let lg = g.take_metrics(Mode::Train).unwrap().loss;
        assert!(lc.is_finite(), "step {step}: loss {lc}");
        assert_close(&format!("step {step} loss"), &[lg], &[lc], 1e-4, 1e-4);
        let gc = c.gradients().unwrap();
        for (name, _, g) in &gc {
            assert!(g.iter().any(|v| *v != 0.0), "{name}: gradient is all zero");
        }
        let what = format!("step {step} grad");
        assert_same_tensors(&what, &g.gradients().unwrap(), &gc, 1e-4, 2e-3);
    }
}

#[test]
fn xception_mini_learns_digits() {
    let Some(gb) = gpu() else { return };
    let mut pair = data::load_mnist_dir(&data::embedded_mnist_subset_dir(), "mnist").unwrap();
    pair.train.truncate(1024);
    let raw = Normalize {
        scale: 1.0,
        mean: 0.0,
        std: 1.0,
    };
    let graph = nn::xception_mini(&[1, 28, 28], &[8, 16, 32], 10).unwrap();
    let loader = Loader::new(&pair.train, 32, true, 1, raw).unwrap();
    let mut ex = Executor::new(&gb, &graph, 32, Optimizer::momentum(0.05, 0.9), 1).unwrap();
    let first = train::train_epoch(&mut ex, &loader, 0, 0, 4, |_, _| true).unwrap();
    let second = train::train_epoch(&mut ex, &loader, 1, 0, 4, |_, _| true).unwrap();
    assert!(
        second.metrics.loss < 0.75 * first.metrics.loss && second.metrics.accuracy > 0.5,
        "xception_mini did not learn: epoch 1 loss {:.3} acc {:.2}, epoch 2 loss {:.3} acc {:.2}",
        first.metrics.loss,
        first.metrics.accuracy,
        second.metrics.loss,
        second.metrics.accuracy
    );
}

/// The parameter count of Keras's `make_model((180, 180, 3), 2)` from "image classification
/// from scratch", derived from Keras's own rules rather than read off our graph:
/// `Conv2D(f, k)` has `k·k·c_in·f + f`; `SeparableConv2D(f, k)` has `k·k·c_in` (depthwise,
/// no bias) `+ c_in·f + f` (pointwise with bias); `BatchNormalization(c)` has `4c` (γ, β
/// trainable; moving mean and variance not); `Dense(u)` on `c` inputs `c·u + u`. Keras's
/// summary for that model prints 2,782,649 total (2,773,913 trainable, 8,736 not), the
/// figure this formula gives.
fn keras_xception_counts(c_in: usize, units: usize) -> (usize, usize) {
    let conv = |k: usize, c: usize, f: usize| k * k * c * f + f;
    let sep = |k: usize, c: usize, f: usize| k * k * c + c * f + f;
    let (mut trainable, mut moving) = (0, 0);
    let mut bn = |c: usize| {
        trainable += 2 * c;
        moving += 2 * c;
    };
    let mut convs = conv(3, c_in, 32) + conv(3, 32, 64);
    bn(32);
    bn(64);
    let mut prev = 64;
    for w in [128, 256, 512, 728] {
        convs += sep(3, prev, w) + sep(3, w, w) + conv(1, prev, w);
        bn(w);
        bn(w);
        prev = w;
    }
    convs += sep(3, 728, 1024) + 1024 * units + units;
    bn(1024);
    (convs + trainable, moving)
}

#[test]
fn keras_xception_has_the_articles_parameter_count() {
    for (input, classes, units) in [
        ([3, 180, 180], 2, 1),
        ([3, 180, 180], 5, 5),
        ([1, 64, 64], 10, 10),
    ] {
        let g = nn::xception(&input, classes).unwrap();
        let trainable: usize = g.params().iter().map(|p| p.len()).sum();
        // batch norm's moving mean and variance: two per channel of every batch-norm node
        let moving: usize = g
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, wgcnn::graph::Op::BatchNorm { .. }))
            .map(|n| 2 * n.shape[0])
            .sum();
        let want = keras_xception_counts(input[0], units);
        assert_eq!((trainable, moving), want, "{input:?}, {classes} classes");
    }
    assert_eq!(keras_xception_counts(3, 1), (2_773_913, 8_736));
    let g = nn::xception(&[3, 180, 180], 2).unwrap();
    let node = |name: &str| {
        g.nodes()
            .iter()
            .find(|n| n.name == name)
            .unwrap()
            .shape
            .clone()
    };
    // 180 → 90 (entry) → 45 → 23 → 12 → 6 (same max-pools and residuals agree)
    assert_eq!(node("entry.relu2"), vec![64, 90, 90]);
    assert_eq!(node("block128.add"), vec![128, 45, 45]);
    assert_eq!(node("block728.add"), vec![728, 6, 6]);
    assert_eq!(node("fc"), vec![1]);
    assert!(nn::xception(&[180, 180], 2).is_err());
    assert!(nn::xception(&[3, 180, 180], 1).is_err());
}

/// One training step of the full Keras Xception (on 64×64 inputs to keep the CPU twin
/// quick; the layers are the article's), softmax head and sigmoid head: GPU = CPU within
/// the tolerances of the module comment.
#[test]
fn keras_xception_step_gpu_equals_cpu() {
    let Some(gb) = gpu() else { return };
    let n = 4;
    for classes in [3, 2] {
        let graph = nn::xception(&[3, 64, 64], classes).unwrap();
        let opt = Optimizer::adam(1e-3);
        let mut c = Executor::new(&Backend::cpu(), &graph, n, opt, 7).unwrap();
        let mut g = Executor::new(&gb, &graph, n, opt, 7).unwrap();
        let x = pixels(11, n * 3 * 64 * 64);
        let y: Vec<u32> = (0..n as u32).map(|i| i % classes as u32).collect();
        let v: Vec<f32> = y.iter().map(|&c| c as f32).collect();
        let t = |y| {
            if classes == 2 {
                Targets::Values(&v)
            } else {
                Targets::Classes(y)
            }
        };
        c.train_step(&x, t(&y)).unwrap();
        g.train_step(&x, t(&y)).unwrap();
        let lc = c.take_metrics(Mode::Train).unwrap().loss;
        let lg = g.take_metrics(Mode::Train).unwrap().loss;
        assert!(lc.is_finite(), "{classes} classes: loss {lc}");
        assert_close(&format!("{classes} classes loss"), &[lg], &[lc], 1e-4, 1e-4);
        let gc = c.gradients().unwrap();
        let what = format!("{classes} classes grad");
        assert_same_tensors(&what, &g.gradients().unwrap(), &gc, 1e-4, 2e-3);
    }
}
