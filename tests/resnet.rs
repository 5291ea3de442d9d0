//! `nn::resnet_cifar` (He et al. 2016 §4.2) and `nn::airbench_net` (Jordan 2024): parameter
//! counts derived from the papers' layer lists, output shapes, and one training step
//! GPU = CPU for each.
//!
//! Tolerances: as `tests/xception.rs` — loss atol = rtol = 1e-4, gradients atol = 1e-4,
//! rtol = 2e-3 (f32 sums in another order through 20 layers, batch norm over a batch of 4
//! amplifying the rounding differences).

mod common;

use common::{assert_close, assert_same_tensors, gpu, labels, rand01};
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::Graph;
use wgcnn::plan::Mode;
use wgcnn::{nn, Backend, Optimizer};

fn count(g: &Graph) -> usize {
    g.params().iter().map(|p| p.len()).sum()
}

fn shape(g: &Graph, name: &str) -> Vec<usize> {
    let n = g.nodes().iter().find(|n| n.name == name);
    n.unwrap_or_else(|| panic!("no node {name}")).shape.clone()
}

/// ResNet-(6n+2) from the paper's table: a 3×3 conv 3 → 16; per stage of width w (16, 32,
/// 64) n blocks of two 3×3 convs (the first block of stages 2-3 reads w/2 channels) and two
/// batch norms (γ, β: 2w each); a 1×1 projection with batch norm where the width doubles;
/// a dense 64 → classes with bias. Convolutions have no bias.
fn resnet_count(n: usize, classes: usize) -> usize {
    let mut total = 3 * 16 * 9 + 2 * 16;
    let mut prev = 16;
    for w in [16, 32, 64] {
        for _ in 0..n {
            total += prev * w * 9 + w * w * 9 + 4 * w;
            if prev != w {
                total += prev * w + 2 * w;
            }
            prev = w;
        }
    }
    total + 64 * classes + classes
}

#[test]
fn resnet_cifar_structure_and_parameter_count() {
    for (depth, n) in [(20, 3), (32, 5), (56, 9)] {
        let g = nn::resnet_cifar(depth, 10).unwrap();
        assert_eq!(count(&g), resnet_count(n, 10), "ResNet-{depth}");
        let convs = g.params().iter().filter(|p| p.shape.len() == 4).count();
        // depth = the 3×3 convs + the dense layer; plus the two projections
        assert_eq!(convs + 1, depth + 2, "ResNet-{depth}: weighted layers");
    }
    assert_eq!(resnet_count(3, 10), 272_474);
    let g = nn::resnet_cifar(20, 100).unwrap();
    assert_eq!(shape(&g, "layer1.2.relu2"), vec![16, 32, 32]);
    assert_eq!(shape(&g, "layer2.0.relu2"), vec![32, 16, 16]);
    assert_eq!(shape(&g, "layer3.2.relu2"), vec![64, 8, 8]);
    assert_eq!(shape(&g, "fc"), vec![100]);
    for bad in [(21, 10), (2, 10), (20, 0)] {
        let e = nn::resnet_cifar(bad.0, bad.1).unwrap_err().to_string();
        assert!(e.contains("6n + 2"), "{e}");
    }
}

/// airbench: a 2×2 whitening conv 3 → 24 with bias; three groups of two 3×3 convs without
/// bias (the first from the previous width) and two batch norms (2w each); a dense
/// 256 → classes without bias.
#[test]
fn airbench_structure_and_parameter_count() {
    let g = nn::airbench_net(10).unwrap();
    let mut want = 3 * 24 * 4 + 24;
    let mut prev = 24;
    for w in [64, 256, 256] {
        want += prev * w * 9 + w * w * 9 + 4 * w;
        prev = w;
    }
    want += 256 * 10;
    assert_eq!(count(&g), want);
    assert_eq!(shape(&g, "whiten.gelu"), vec![24, 31, 31]);
    assert_eq!(shape(&g, "group1.gelu2"), vec![64, 15, 15]);
    assert_eq!(shape(&g, "group3.gelu2"), vec![256, 3, 3]);
    assert_eq!(shape(&g, "scale"), vec![10]);
    assert!(nn::airbench_net(0).is_err());
}

fn step_agrees(graph: &Graph, n: usize, classes: u32) {
    let Some(gb) = gpu() else { return };
    let opt = Optimizer::momentum(0.05, 0.9);
    let mut c = Executor::new(&Backend::cpu(), graph, n, opt, 3).unwrap();
    let mut g = Executor::new(&gb, graph, n, opt, 3).unwrap();
    for step in 0..2 {
        let x = rand01(20 + step, n * 3 * 32 * 32);
        let y = labels(30 + step, n, classes);
        c.train_step(&x, Targets::Classes(&y)).unwrap();
        g.train_step(&x, Targets::Classes(&y)).unwrap();
        let lc = c.take_metrics(Mode::Train).unwrap().loss;
        let lg = g.take_metrics(Mode::Train).unwrap().loss;
        assert!(lc.is_finite(), "step {step}: loss {lc}");
        assert_close(&format!("step {step} loss"), &[lg], &[lc], 1e-4, 1e-4);
        let gc = c.gradients().unwrap();
        assert_same_tensors(
            &format!("step {step} grad"),
            &g.gradients().unwrap(),
            &gc,
            1e-4,
            2e-3,
        );
    }
}

#[test]
fn resnet20_step_gpu_equals_cpu() {
    step_agrees(&nn::resnet_cifar(20, 10).unwrap(), 4, 10);
}

#[test]
fn airbench_step_gpu_equals_cpu() {
    step_agrees(&nn::airbench_net(10).unwrap(), 4, 10);
}
