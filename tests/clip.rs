//! Gradient clipping by global norm (`torch.nn.utils.clip_grad_norm_`): the scale
//! `min(1, max/(‖g‖₂ + 1e-6))` on both backends, through the functional API and the
//! executors, and the non-finite-parameter flag of the optimizer step.

mod common;

use wgcnn::exec::{Executor, Targets};
use wgcnn::plan::Mode;
use wgcnn::{nn, Error, Optimizer};

fn vals(seed: u64, n: usize, amp: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

/// SGD with clipping: `p₁ = p₀ − lr·scale·g`, scale from the f64 norm (tolerance 1e-6 abs
/// + 1e-5 rel: the norm is an f32 sum of ~1,000 squares).
#[test]
fn functional_clip_scales_the_update() {
    for (name, be) in common::backends() {
        for (max, n) in [(0.5f32, 1000usize), (1e3, 1000), (0.25, 3)] {
            let g = vals(7, n, 0.2);
            let p0 = vals(8, n, 1.0);
            let norm = g
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
                .sqrt();
            let scale = (max as f64 / (norm + 1e-6)).min(1.0);
            let opt = Optimizer::sgd(0.1).clip_grad_norm(max);
            let mut p = p0.clone();
            let (mut s1, mut s2) = (vec![0.0; n], vec![0.0; n]);
            be.optimizer_step(&opt, 1, &mut p, &g, &mut s1, &mut s2)
                .unwrap();
            for i in 0..n {
                let want = p0[i] as f64 - 0.1 * scale * g[i] as f64;
                assert!(
                    (p[i] as f64 - want).abs() <= 1e-6 + 1e-5 * want.abs(),
                    "{name} max {max}: p[{i}] = {} want {want} (norm {norm})",
                    p[i]
                );
            }
            if max < 1.0 {
                assert!(scale < 1.0, "the case must actually clip");
            }
        }
    }
}

/// One clipped LeNet step: the update equals `lr·scale·g` of the (unclipped) gradients
/// the step computed, on both executors, with one extra dispatch.
#[test]
fn executor_clip_matches_formula_on_both_executors() {
    let graph = nn::lenet5().unwrap();
    let n = 8;
    let x = vals(1, n * 784, 1.0);
    let y: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    for (name, be) in common::backends() {
        let lr = 0.05;
        let mut ex =
            Executor::new(&be, &graph, n, Optimizer::sgd(lr).clip_grad_norm(0.1), 3).unwrap();
        let p0 = ex.parameters().unwrap();
        ex.train_step(&x, Targets::Classes(&y)).unwrap();
        ex.take_metrics(Mode::Train).unwrap();
        let g = ex.gradients().unwrap();
        let p1 = ex.parameters().unwrap();
        let norm = g
            .iter()
            .flat_map(|t| t.2.iter())
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt();
        let scale = (0.1 / (norm + 1e-6)).min(1.0);
        assert!(
            scale < 0.9,
            "{name}: gradient norm {norm} too small to test clipping"
        );
        for ((pn, _, a), ((_, _, b), (_, _, gv))) in p0.iter().zip(p1.iter().zip(&g)) {
            for i in 0..a.len() {
                let want = a[i] as f64 - lr as f64 * scale * gv[i] as f64;
                assert!(
                    (b[i] as f64 - want).abs() <= 1e-6 + 1e-5 * want.abs(),
                    "{name}: {pn}[{i}] = {} want {want}",
                    b[i]
                );
            }
        }
        assert_eq!(
            ex.counters().dispatches_per_step,
            21,
            "{name}: clipping adds one dispatch"
        );
    }
}

/// A learning rate so large (with an L1 term, so every |g| > 1) that the parameters
/// overflow while the loss of that step
/// was still finite: the optimizer's own non-finite check reports it.
#[test]
fn optimizer_flags_non_finite_parameters() {
    let graph = nn::lenet5().unwrap();
    let n = 4;
    let x = vals(2, n * 784, 1.0);
    let y = vec![1u32, 2, 3, 4];
    for (name, be) in common::backends() {
        let mut ex = Executor::new(&be, &graph, n, Optimizer::sgd(f32::MAX).l1(2.0), 0).unwrap();
        ex.train_step(&x, Targets::Classes(&y)).unwrap();
        match ex.take_metrics(Mode::Train) {
            Err(Error::NonFinite { step }) => assert_eq!(step, 1, "{name}"),
            other => panic!("{name}: expected NonFinite at step 1, got {other:?}"),
        }
    }
}
