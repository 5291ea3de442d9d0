//! End-to-end training on the bundled MNIST subset, checkpoints and resume.

mod common;

use std::path::PathBuf;

use wgcnn::data::{self, Loader, Normalize};
use wgcnn::exec::Executor;
use wgcnn::{nn, train, Backend, Optimizer};

fn subset() -> data::DatasetPair {
    data::load_mnist_dir(&data::embedded_mnist_subset_dir(), "mnist-subset").unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgcnn-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 200 steps of batch 32 (6,400 images, under one epoch) on the GPU path must reach
/// 80% test accuracy on the 2,000 held-out digits. Chance is 10% and the largest class
/// is 11%; an untrained or broken LeNet stays near those, while 6,400 images of SGD with
/// momentum reliably give LeNet-5 ≥ 90% (we keep a margin for seed variation).
#[test]
fn short_run_on_subset_learns() {
    let be = common::gpu().unwrap_or_else(Backend::cpu);
    let mut pair = subset();
    pair.train.truncate(6400);
    let norm = Normalize::mnist();
    let tl = Loader::new(&pair.train, 32, true, 1, norm).unwrap();
    let vl = Loader::new(&pair.test, 250, false, 0, norm).unwrap();
    let mut ex = Executor::new(
        &be,
        &nn::lenet5().unwrap(),
        250,
        Optimizer::momentum(0.05, 0.9),
        1,
    )
    .unwrap();
    let before = train::evaluate(&mut ex, &vl).unwrap();
    assert!(
        before.accuracy < 0.3,
        "untrained accuracy {}",
        before.accuracy
    );
    let stats = train::train_epoch(&mut ex, &tl, 0, 0, 0, |_, _| true).unwrap();
    assert_eq!(stats.steps, 200);
    assert!(stats.completed);
    let after = train::evaluate(&mut ex, &vl).unwrap();
    assert_eq!(after.samples, 2000);
    assert!(
        after.accuracy >= 0.80,
        "test accuracy {} after 200 steps",
        after.accuracy
    );
    let cm = train::confusion(&mut ex, &vl).unwrap();
    let total: u32 = cm.iter().flatten().sum();
    let diag: u32 = (0..10).map(|i| cm[i][i]).sum();
    assert_eq!(total, 2000);
    assert!(
        (diag as f32 / 2000.0 - after.accuracy).abs() < 1e-6,
        "confusion diagonal agrees with accuracy"
    );
}

/// Interrupt in the middle of the first epoch, checkpoint, resume in a fresh executor:
/// the parameters after two epochs are bitwise those of an uninterrupted run.
#[test]
fn resume_gives_bitwise_identical_parameters() {
    let mut pair = subset();
    pair.train.truncate(256);
    let norm = Normalize::mnist();
    let loader = Loader::new(&pair.train, 32, true, 9, norm).unwrap();
    let graph = nn::lenet5().unwrap();
    let opt = Optimizer::adam(1e-3);
    for (name, be) in common::backends() {
        let mut full = Executor::new(&be, &graph, 32, opt, 4).unwrap();
        for e in 0..2 {
            train::train_epoch(&mut full, &loader, e, 0, 0, |_, _| true).unwrap();
        }
        let want = full.parameters().unwrap();

        let dir = tmp(&format!("resume-{name}"));
        let ck = dir.join("ck.safetensors");
        let mut first = Executor::new(&be, &graph, 32, opt, 4).unwrap();
        let mut calls = 0;
        let s = train::train_epoch(&mut first, &loader, 0, 0, 0, |_, _| {
            calls += 1;
            calls < 3
        })
        .unwrap();
        assert!(!s.completed);
        assert_eq!(s.batches_done, 3);
        train::save_checkpoint(&mut first, &ck, 0, s.batches_done).unwrap();
        drop(first);

        let mut second = Executor::new(&be, &graph, 32, opt, 777).unwrap();
        let info = train::load_checkpoint(&mut second, &ck, true).unwrap();
        assert_eq!((info.epoch, info.batch, info.step), (0, 3, 3));
        train::train_epoch(&mut second, &loader, 0, info.batch, 0, |_, _| true).unwrap();
        train::train_epoch(&mut second, &loader, 1, 0, 0, |_, _| true).unwrap();
        let got = second.parameters().unwrap();
        for ((n, _, a), (_, _, b)) in want.iter().zip(&got) {
            let (a, b): (Vec<u32>, Vec<u32>) = (
                a.iter().map(|v| v.to_bits()).collect(),
                b.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(a, b, "{name}: {n} differs after resume");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn checkpoint_round_trip_and_mismatch_errors() {
    let graph = nn::lenet5().unwrap();
    let dir = tmp("ckpt");
    let ck = dir.join("m.safetensors");
    let mut a =
        Executor::new(&Backend::cpu(), &graph, 4, Optimizer::momentum(0.1, 0.9), 1).unwrap();
    train::save_checkpoint(&mut a, &ck, 2, 0).unwrap();
    let mut b =
        Executor::new(&Backend::cpu(), &graph, 4, Optimizer::momentum(0.1, 0.9), 2).unwrap();
    assert_ne!(a.parameters().unwrap(), b.parameters().unwrap());
    let info = train::load_checkpoint(&mut b, &ck, true).unwrap();
    assert_eq!(info.epoch, 2);
    assert_eq!(a.parameters().unwrap(), b.parameters().unwrap());
    // PyTorch names and layouts
    let c = wgcnn::checkpoint::Checkpoint::load(&ck).unwrap();
    let names: Vec<&str> = c.tensors.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "c1.weight",
            "c1.bias",
            "c3.weight",
            "c3.bias",
            "f5.weight",
            "f5.bias",
            "f6.weight",
            "f6.bias",
            "f7.weight",
            "f7.bias"
        ]
    );
    assert_eq!(c.get("c1.weight").unwrap().0, &[6, 1, 5, 5]);
    assert_eq!(c.get("f5.weight").unwrap().0, &[120, 400]);
    // a different optimizer's state is refused, naming both
    let mut adam = Executor::new(&Backend::cpu(), &graph, 4, Optimizer::adam(1e-3), 1).unwrap();
    let e = train::load_checkpoint(&mut adam, &ck, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Momentum") && e.contains("Adam"), "{e}");
    // a different model: missing and mis-shaped tensors are listed by name
    let other = nn::Sequential::new(&[1, 28, 28])
        .add("c1", nn::Conv2d::new(1, 4, 5).padding(2))
        .add("flat", nn::Flatten)
        .add("fc", nn::Linear::new(4 * 28 * 28, 10))
        .cross_entropy()
        .unwrap();
    let mut o = Executor::new(&Backend::cpu(), &other, 4, Optimizer::sgd(0.1), 1).unwrap();
    let e = train::load_checkpoint(&mut o, &ck, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c1.weight") && e.contains("fc.weight") && e.contains("c3.weight"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
