//! The layers added after LeNet: average pooling, global average pooling, min-pooling,
//! dropout and rescaling. For each: GPU vs CPU on random shapes (proptest),
//! finite differences on the CPU path, PyTorch golden values where PyTorch has the op,
//! and the graph op trained on both executors.
//!
//! Tolerances: pooling sums at most 25 terms (or H·W ≤ 144 for global pooling) of O(1)
//! values in a different order on each path, so |gpu − cpu| ≤ 1e-5 + 1e-5·|cpu|; PyTorch
//! golden values use atol = rtol = 1e-5 (inputs are multiples of 1/8, exact in f32).
//! Finite differences use h = 1e-2 on a function linear in x: the error is f32 rounding
//! of the loss, ≲ 1e-3.
//!
//! Dropout: the mask is a hash of (seed, step, index), so CPU and GPU outputs must be
//! bit-identical (kept values are one correctly rounded multiply by the same f32 scale).
//! The dropped fraction over n = 2²⁰ elements is a sum of n Bernoulli(p') with
//! |p' − p| ≤ 2⁻²⁴ (u is quantised to 2⁻²⁴); for a good hash its standard deviation is
//! σ = √(p(1−p)/n) ≤ 4.9e-4, and the test allows 6σ.

mod common;

use common::values;

#[path = "golden/layers.rs"]
mod golden;

use common::{assert_close, backends, executors_agree, gpu, labels, proptest_config, rand01};
use proptest::prelude::*;
use wgcnn::cpu::elementwise::{dropout_keep, dropout_scale};
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::Op;
use wgcnn::ndarray::{Array2, Array4};
use wgcnn::ndarray::{ArrayD, IxDyn};
use wgcnn::nn::{
    AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Linear, MinPool2d, Relu, Rescaling,
    Sequential,
};
use wgcnn::plan::Mode;
use wgcnn::{Backend, Optimizer, Pool2dParams};

fn a4(seed: u64, d: [usize; 4]) -> Array4<f32> {
    Array4::from_shape_vec((d[0], d[1], d[2], d[3]), values(seed, d.iter().product()))
        .expect("shape")
}

fn v(a: &Array4<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

/// A pooling problem: x dims and a geometry valid for them (padding ≤ kernel/2), with
/// overlapping (stride < kernel), gapped (stride > kernel) and padded windows.
fn pool_problem() -> impl Strategy<Value = ([usize; 4], Pool2dParams, u64)> {
    (
        1usize..4,
        1usize..4,
        1usize..13,
        1usize..13,
        1usize..6,
        1usize..6,
        1usize..4,
        1usize..4,
        0usize..3,
        0usize..3,
        any::<u64>(),
    )
        .prop_filter_map(
            "valid geometry",
            |(n, c, h, w, kh, kw, sh, sw, ph, pw, seed)| {
                let p = Pool2dParams {
                    kernel: [kh, kw],
                    stride: [sh, sw],
                    padding: [ph.min(kh / 2), pw.min(kw / 2)],
                };
                p.out_shape("t", [n, c, h, w]).ok()?;
                Some(([n, c, h, w], p, seed))
            },
        )
}

proptest! {
    #![proptest_config(proptest_config(32))]

    #[test]
    fn avg_pool2d_gpu_matches_cpu((xd, p, seed) in pool_problem()) {
        let Some(g) = gpu() else { return Ok(()) };
        let cpu = Backend::cpu();
        let x = a4(seed, xd);
        let yc = cpu.avg_pool2d(&x, p).unwrap();
        let yg = g.avg_pool2d(&x, p).unwrap();
        prop_assert_eq!(yc.dim(), yg.dim());
        assert_close("avg_pool2d y", &v(&yg), &v(&yc), 1e-5, 1e-5);
        let yd = yc.dim();
        let dy = a4(seed ^ 0xabc, [yd.0, yd.1, yd.2, yd.3]);
        let xdim = (xd[0], xd[1], xd[2], xd[3]);
        let dxc = cpu.avg_pool2d_backward(&dy, p, xdim).unwrap();
        let dxg = g.avg_pool2d_backward(&dy, p, xdim).unwrap();
        assert_close("avg_pool2d dx", &v(&dxg), &v(&dxc), 1e-5, 1e-5);
    }

    #[test]
    fn global_avg_pool_gpu_matches_cpu(
        n in 1usize..4, c in 1usize..5, h in 1usize..13, w in 1usize..13, seed in any::<u64>()
    ) {
        let Some(g) = gpu() else { return Ok(()) };
        let cpu = Backend::cpu();
        let x = a4(seed, [n, c, h, w]);
        let yc = cpu.global_avg_pool(&x).unwrap();
        let yg = g.global_avg_pool(&x).unwrap();
        let f = |a: &Array2<f32>| a.iter().copied().collect::<Vec<_>>();
        assert_close("global_avg_pool y", &f(&yg), &f(&yc), 1e-5, 1e-5);
        let dy = Array2::from_shape_vec((n, c), values(seed ^ 7, n * c)).unwrap();
        let dxc = cpu.global_avg_pool_backward(&dy, (n, c, h, w)).unwrap();
        let dxg = g.global_avg_pool_backward(&dy, (n, c, h, w)).unwrap();
        assert_close("global_avg_pool dx", &v(&dxg), &v(&dxc), 1e-6, 1e-5);
    }
}

proptest! {
    #![proptest_config(proptest_config(32))]

    /// Min-pooling: values and indices identical on both paths (no arithmetic, so exact);
    /// the backward (max_pool2d_backward on the argmin indices) within 1e-6.
    #[test]
    fn min_pool2d_gpu_matches_cpu((xd, p, seed) in pool_problem(), ties in any::<bool>()) {
        let Some(g) = gpu() else { return Ok(()) };
        let cpu = Backend::cpu();
        let mut x = a4(seed, xd);
        if ties {
            // coarse values: many ties, which must resolve to the first minimum on both
            x.mapv_inplace(|v| (v * 2.0).round());
        }
        let (yc, ic) = cpu.min_pool2d(&x, p).unwrap();
        let (yg, ig) = g.min_pool2d(&x, p).unwrap();
        prop_assert_eq!(v(&yc), v(&yg));
        prop_assert_eq!(&ic, &ig);
        let yd = yc.dim();
        let dy = a4(seed ^ 0x55, [yd.0, yd.1, yd.2, yd.3]);
        let xdim = (xd[0], xd[1], xd[2], xd[3]);
        let dxc = cpu.max_pool2d_backward(&dy, &ic, xdim).unwrap();
        let dxg = g.max_pool2d_backward_with(&dy, &ig, xdim, Some(p)).unwrap();
        assert_close("min_pool2d dx", &v(&dxg), &v(&dxc), 1e-6, 1e-5);
    }
}

#[test]
fn min_pool2d_picks_first_minimum_and_pads_with_infinity() {
    // one plane 2×3, window 2×2 stride 1 padding 1: corners see mostly padding
    let x = Array4::from_shape_vec((1, 1, 2, 3), vec![5.0, 1.0, 1.0, 2.0, 1.0, 7.0]).unwrap();
    let p = Pool2dParams {
        kernel: [2, 2],
        stride: [1, 1],
        padding: [1, 1],
    };
    for (name, be) in backends() {
        let (y, idx) = be.min_pool2d(&x, p).unwrap();
        assert_eq!(y.dim(), (1, 1, 3, 4), "{name}");
        let want_y = [5.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 7.0];
        let want_i = [0u32, 1, 1, 2, 3, 1, 1, 2, 3, 4, 4, 5];
        assert_eq!(v(&y), want_y, "{name}: values");
        assert_eq!(
            idx.iter().copied().collect::<Vec<_>>(),
            want_i,
            "{name}: indices"
        );
    }
}

#[test]
fn min_pool2d_matches_pytorch() {
    for (bname, be) in backends() {
        for c in golden::MIN {
            let xs = c.x_shape;
            let x = Array4::from_shape_vec((xs[0], xs[1], xs[2], xs[3]), c.x.to_vec()).unwrap();
            let p = Pool2dParams {
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
            };
            let (y, idx) = be.min_pool2d(&x, p).unwrap();
            let ys = c.y_shape;
            assert_eq!(y.dim(), (ys[0], ys[1], ys[2], ys[3]), "{bname} {}", c.name);
            assert_eq!(v(&y), c.y, "{bname} {} y", c.name);
            let iv: Vec<u32> = idx.iter().copied().collect();
            assert_eq!(iv, c.idx, "{bname} {} idx", c.name);
            let dy = Array4::from_shape_vec(y.dim(), c.dy.to_vec()).unwrap();
            let dx = be.max_pool2d_backward(&dy, &idx, x.dim()).unwrap();
            assert_close(&format!("{bname} {} dx", c.name), &v(&dx), c.dx, 1e-6, 1e-6);
        }
    }
}

#[test]
fn min_pool2d_gradient_matches_finite_differences() {
    // distinct values 0.1 apart, h = 1e-2: no perturbation changes an argmin
    let cpu = Backend::cpu();
    let len = 2 * 2 * 6 * 5;
    let mut vals: Vec<f32> = (0..len).map(|i| ((i * 37) % len) as f32 * 0.1).collect();
    vals.reverse();
    let x = Array4::from_shape_vec((2, 2, 6, 5), vals).unwrap();
    let p = Pool2dParams {
        kernel: [3, 3],
        stride: [2, 1],
        padding: [1, 1],
    };
    let (y, idx) = cpu.min_pool2d(&x, p).unwrap();
    let dy = values(41, y.len());
    let dya = Array4::from_shape_vec(y.dim(), dy.clone()).unwrap();
    let dx = cpu.max_pool2d_backward(&dya, &idx, x.dim()).unwrap();
    let num = finite_diff(&x, &dy, |xx| v(&cpu.min_pool2d(xx, p).unwrap().0));
    assert_close("min_pool2d fd", &v(&dx), &num, 1e-3, 1e-3);
}

/// `∂/∂x Σ f(x)·dy` by central differences at every element of x, on the CPU path.
fn finite_diff(x: &Array4<f32>, dy: &[f32], f: impl Fn(&Array4<f32>) -> Vec<f32>) -> Vec<f32> {
    let h = 1e-2f32;
    let loss = |xx: &Array4<f32>| -> f64 {
        f(xx)
            .iter()
            .zip(dy)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    let mut g = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp.as_slice_mut().unwrap()[i] += h;
        let mut xm = x.clone();
        xm.as_slice_mut().unwrap()[i] -= h;
        g.push(((loss(&xp) - loss(&xm)) / (2.0 * h as f64)) as f32);
    }
    g
}

#[test]
fn avg_pool2d_gradient_matches_finite_differences() {
    let cpu = Backend::cpu();
    let geoms = [
        Pool2dParams::new(2),
        Pool2dParams {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
        },
        Pool2dParams {
            kernel: [3, 2],
            stride: [2, 1],
            padding: [1, 0],
        },
    ];
    for (k, p) in geoms.into_iter().enumerate() {
        let x = a4(10 + k as u64, [2, 2, 6, 5]);
        let y = cpu.avg_pool2d(&x, p).unwrap();
        let yd = y.dim();
        let dy = values(20 + k as u64, y.len());
        let dya = Array4::from_shape_vec(yd, dy.clone()).unwrap();
        let dx = cpu.avg_pool2d_backward(&dya, p, x.dim()).unwrap();
        let num = finite_diff(&x, &dy, |xx| v(&cpu.avg_pool2d(xx, p).unwrap()));
        assert_close(&format!("avg_pool2d fd {p:?}"), &v(&dx), &num, 1e-3, 1e-3);
    }
}

#[test]
fn global_avg_pool_gradient_matches_finite_differences() {
    let cpu = Backend::cpu();
    let x = a4(31, [2, 3, 4, 5]);
    let dy = values(32, 6);
    let dya = Array2::from_shape_vec((2, 3), dy.clone()).unwrap();
    let dx = cpu.global_avg_pool_backward(&dya, x.dim()).unwrap();
    let num = finite_diff(&x, &dy, |xx| {
        cpu.global_avg_pool(xx).unwrap().iter().copied().collect()
    });
    assert_close("global_avg_pool fd", &v(&dx), &num, 1e-3, 1e-3);
}

#[test]
fn avg_pool2d_matches_pytorch() {
    for (bname, be) in backends() {
        for c in golden::AVG {
            let xs = c.x_shape;
            let x = Array4::from_shape_vec((xs[0], xs[1], xs[2], xs[3]), c.x.to_vec()).unwrap();
            let p = Pool2dParams {
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
            };
            let y = be.avg_pool2d(&x, p).unwrap();
            let ys = c.y_shape;
            assert_eq!(y.dim(), (ys[0], ys[1], ys[2], ys[3]), "{bname} {}", c.name);
            assert_close(&format!("{bname} {} y", c.name), &v(&y), c.y, 1e-5, 1e-5);
            let dy = Array4::from_shape_vec(y.dim(), c.dy.to_vec()).unwrap();
            let dx = be.avg_pool2d_backward(&dy, p, x.dim()).unwrap();
            assert_close(&format!("{bname} {} dx", c.name), &v(&dx), c.dx, 1e-5, 1e-5);
        }
    }
}

#[test]
fn global_avg_pool_matches_pytorch() {
    for (bname, be) in backends() {
        for c in golden::GAP {
            let xs = c.x_shape;
            let x = Array4::from_shape_vec((xs[0], xs[1], xs[2], xs[3]), c.x.to_vec()).unwrap();
            let y = be.global_avg_pool(&x).unwrap();
            let yv: Vec<f32> = y.iter().copied().collect();
            assert_close(&format!("{bname} {} y", c.name), &yv, c.y, 1e-5, 1e-5);
            let dy = Array2::from_shape_vec((xs[0], xs[1]), c.dy.to_vec()).unwrap();
            let dx = be.global_avg_pool_backward(&dy, x.dim()).unwrap();
            assert_close(&format!("{bname} {} dx", c.name), &v(&dx), c.dx, 1e-6, 1e-5);
        }
    }
}

#[test]
fn pooling_layers_reject_bad_inputs() {
    let cpu = Backend::cpu();
    let x = a4(1, [1, 1, 4, 4]);
    let bad = Pool2dParams {
        kernel: [2, 2],
        stride: [0, 1],
        padding: [0, 0],
    };
    assert!(cpu.avg_pool2d(&x, bad).is_err());
    // dy of the wrong shape for the geometry
    let dy = a4(2, [1, 1, 3, 3]);
    assert!(cpu
        .avg_pool2d_backward(&dy, Pool2dParams::new(2), (1, 1, 4, 4))
        .is_err());
    let dy2 = Array2::<f32>::zeros((2, 1));
    assert!(cpu.global_avg_pool_backward(&dy2, (1, 1, 4, 4)).is_err());
    // graph: pooling needs a [C,H,W] input
    let e = Sequential::new(&[16])
        .add("p", AvgPool2d::new(2))
        .add("fc", Linear::new(16, 2))
        .cross_entropy();
    assert!(e.is_err());
    let e = Sequential::new(&[16])
        .add("g", GlobalAvgPool)
        .cross_entropy();
    assert!(e.is_err());
}

#[test]
fn avg_pool_model_trains_identically_on_both_executors() {
    let graph = Sequential::new(&[1, 9, 9])
        .add("c1", Conv2d::new(1, 4, 3).padding(1))
        .add("r1", Relu)
        .add("p1", AvgPool2d::new(3).stride(2).padding(1))
        .add("flat", Flatten)
        .add("fc", Linear::new(4 * 5 * 5, 3))
        .cross_entropy()
        .unwrap();
    executors_agree(&graph, 8, 81, 3, 5);
}

#[test]
fn global_avg_pool_model_trains_identically_on_both_executors() {
    let graph = Sequential::new(&[2, 6, 6])
        .add("c1", Conv2d::new(2, 5, 3).padding(1))
        .add("r1", Relu)
        .add("gap", GlobalAvgPool)
        .add("fc", Linear::new(5, 3))
        .cross_entropy()
        .unwrap();
    executors_agree(&graph, 8, 72, 3, 5);
}

#[test]
fn min_pool_model_trains_identically_on_both_executors() {
    let graph = Sequential::new(&[1, 8, 8])
        .add("c1", Conv2d::new(1, 3, 3).padding(1))
        .add("r1", Relu)
        .add("p1", MinPool2d::new(2))
        .add("flat", Flatten)
        .add("fc", Linear::new(3 * 4 * 4, 3))
        .cross_entropy()
        .unwrap();
    executors_agree(&graph, 8, 64, 3, 5);
}

fn ad(seed: u64, shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values(seed, shape.iter().product())).unwrap()
}

proptest! {
    #![proptest_config(proptest_config(32))]

    #[test]
    fn dropout_mask_identical_on_cpu_and_gpu(
        len in 1usize..5000, p in 0.0f32..0.95, seed in any::<u32>(), step in any::<u32>(),
        vseed in any::<u64>()
    ) {
        let Some(g) = gpu() else { return Ok(()) };
        let cpu = Backend::cpu();
        let x = ad(vseed, &[len]);
        let yc = cpu.dropout(&x, p, seed, step).unwrap();
        let yg = g.dropout(&x, p, seed, step).unwrap();
        prop_assert_eq!(yc.as_slice().unwrap(), yg.as_slice().unwrap());
        let dxc = cpu.dropout_backward(&x, p, seed, step).unwrap();
        let dxg = g.dropout_backward(&x, p, seed, step).unwrap();
        prop_assert_eq!(dxc.as_slice().unwrap(), dxg.as_slice().unwrap());
        // the backward uses the forward's mask
        for (a, b) in yc.iter().zip(dxc.iter()) {
            prop_assert_eq!(*a == 0.0, *b == 0.0);
        }
    }

    #[test]
    fn rescale_gpu_matches_cpu(
        len in 1usize..3000, scale in -4.0f32..4.0, offset in -2.0f32..2.0, vseed in any::<u64>()
    ) {
        let Some(g) = gpu() else { return Ok(()) };
        let cpu = Backend::cpu();
        let x = ad(vseed, &[len]);
        let yc = cpu.rescale(&x, scale, offset).unwrap();
        let yg = g.rescale(&x, scale, offset).unwrap();
        // the GPU may fuse the multiply-add (one rounding instead of two)
        assert_close("rescale", yg.as_slice().unwrap(), yc.as_slice().unwrap(), 1e-6, 1e-6);
        for (i, &y) in yc.iter().enumerate() {
            prop_assert_eq!(y, x[[i]] * scale + offset);
        }
    }
}

#[test]
fn dropout_drops_fraction_p_and_scales_kept_values() {
    let n = 1usize << 20;
    let x = ArrayD::from_shape_vec(IxDyn(&[n]), values(5, n).iter().map(|v| v + 2.0).collect())
        .unwrap();
    for (name, be) in backends() {
        for (k, p) in [0.1f32, 0.5, 0.8].into_iter().enumerate() {
            let y = be.dropout(&x, p, 77 + k as u32, 3).unwrap();
            let s = dropout_scale(p);
            let mut dropped = 0usize;
            for (&yi, &xi) in y.iter().zip(x.iter()) {
                if yi == 0.0 {
                    dropped += 1;
                } else {
                    assert_eq!(yi, xi * s, "{name} p={p}: kept values scaled by 1/(1-p)");
                }
            }
            let frac = dropped as f64 / n as f64;
            let sigma = (p as f64 * (1.0 - p as f64) / n as f64).sqrt();
            assert!(
                (frac - p as f64).abs() <= 6.0 * sigma,
                "{name}: p = {p}: dropped fraction {frac} (6σ = {})",
                6.0 * sigma
            );
        }
        // p = 0 keeps everything unchanged
        let y0 = be.dropout(&x, 0.0, 1, 1).unwrap();
        assert_eq!(y0, x, "{name}: p = 0 is the identity");
    }
}

#[test]
fn dropout_masks_differ_across_steps_and_seeds() {
    let n = 4096;
    let x = ArrayD::from_elem(IxDyn(&[n]), 1.0f32);
    for (name, be) in backends() {
        let m = |seed: u32, step: u32| -> Vec<bool> {
            let y = be.dropout(&x, 0.5, seed, step).unwrap();
            y.iter().map(|&v| v != 0.0).collect()
        };
        let a = m(1, 1);
        assert_eq!(a, m(1, 1), "{name}: same (seed, step), same mask");
        for (other, what) in [(m(1, 2), "step"), (m(2, 1), "seed")] {
            let diff = a.iter().zip(&other).filter(|(p, q)| p != q).count();
            // independent masks at p = 0.5 differ in about half the elements
            assert!(
                diff > n / 3 && diff < 2 * n / 3,
                "{name}: another {what} changed {diff} of {n}"
            );
        }
    }
}

#[test]
fn dropout_rejects_bad_probabilities() {
    let cpu = Backend::cpu();
    let x = ad(1, &[8]);
    for p in [-0.1f32, 1.0, 1.5, f32::NAN] {
        assert!(cpu.dropout(&x, p, 0, 0).is_err(), "p = {p}");
    }
    let e = Sequential::new(&[8])
        .add("d", Dropout::new(1.0))
        .add("fc", Linear::new(8, 2))
        .cross_entropy();
    assert!(e.is_err());
    let e = Sequential::new(&[8])
        .add("r", Rescaling::new(f32::INFINITY, 0.0))
        .add("fc", Linear::new(8, 2))
        .cross_entropy();
    assert!(e.is_err());
}

#[test]
fn dropout_gradient_matches_finite_differences() {
    let cpu = Backend::cpu();
    let x4 = a4(51, [2, 3, 4, 5]);
    let dy = values(52, x4.len());
    let x = x4.clone().into_dyn();
    let dya = ArrayD::from_shape_vec(IxDyn(x.shape()), dy.clone()).unwrap();
    let dx = cpu.dropout_backward(&dya, 0.3, 9, 4).unwrap();
    let num = finite_diff(&x4, &dy, |xx| {
        cpu.dropout(&xx.clone().into_dyn(), 0.3, 9, 4)
            .unwrap()
            .iter()
            .copied()
            .collect()
    });
    let dxv: Vec<f32> = dx.iter().copied().collect();
    assert_close("dropout fd", &dxv, &num, 1e-3, 1e-3);
}

/// With one sample, `fc.weight.grad[o, i] = dlogits[o] · dropout(x)[i]`: its zero columns
/// are the dropped inputs. Both executors must drop exactly the elements the hash of
/// (layer seed, training step t = 1, 2, 3, …) says, so the step counter advances.
#[test]
fn executors_advance_the_dropout_step() {
    let graph = Sequential::new(&[64])
        .add("drop", Dropout::new(0.5))
        .add("fc", Linear::new(64, 2))
        .cross_entropy()
        .unwrap();
    let seed = graph
        .nodes()
        .iter()
        .position(|n| matches!(n.op, Op::Dropout { .. }))
        .unwrap() as u32;
    let x: Vec<f32> = (0..64).map(|i| 1.0 + i as f32 * 0.01).collect();
    for (name, be) in backends() {
        let mut ex = Executor::new(&be, &graph, 1, Optimizer::sgd(0.0), 3).unwrap();
        let mut masks = Vec::new();
        for t in 1..=4u32 {
            ex.train_step(&x, Targets::Classes(&[1])).unwrap();
            let grads = ex.gradients().unwrap();
            let (_, _, gw) = grads.iter().find(|g| g.0 == "fc.weight").unwrap();
            let kept: Vec<bool> = (0..64).map(|i| gw[i] != 0.0).collect();
            let want: Vec<bool> = (0..64).map(|i| dropout_keep(i, seed, t, 0.5)).collect();
            assert_eq!(kept, want, "{name}: step {t}: mask");
            masks.push(kept);
        }
        assert!(
            masks.windows(2).all(|w| w[0] != w[1]),
            "{name}: masks change per step"
        );
    }
}

/// Evaluation: dropout is the identity and lowers to no step; the model's outputs equal
/// those of the same model without the dropout layer (same parameters).
#[test]
fn dropout_is_identity_in_eval() {
    let with = Sequential::new(&[1, 6, 6])
        .add("c1", Conv2d::new(1, 2, 3))
        .add("drop", Dropout::new(0.7))
        .add("flat", Flatten)
        .add("fc", Linear::new(32, 3))
        .add("drop2", Dropout::new(0.4))
        .cross_entropy()
        .unwrap();
    let without = Sequential::new(&[1, 6, 6])
        .add("c1", Conv2d::new(1, 2, 3))
        .add("flat", Flatten)
        .add("fc", Linear::new(32, 3))
        .cross_entropy()
        .unwrap();
    let x = rand01(61, 4 * 36);
    for (name, be) in backends() {
        let mut a = Executor::new(&be, &with, 4, Optimizer::sgd(0.0), 5).unwrap();
        let mut b = Executor::new(&be, &without, 4, Optimizer::sgd(0.0), 5).unwrap();
        assert_eq!(a.parameters().unwrap(), b.parameters().unwrap());
        let ya = a.predict(&x).unwrap();
        let yb = b.predict(&x).unwrap();
        assert_eq!(ya, yb, "{name}: eval output");
        // training does apply it (p = 0.7 on 32 features changes the logits)
        let y = labels(62, 4, 3);
        a.train_step(&x, Targets::Classes(&y)).unwrap();
        b.train_step(&x, Targets::Classes(&y)).unwrap();
        let la = a.take_metrics(Mode::Train).unwrap().loss;
        let lb = b.take_metrics(Mode::Train).unwrap().loss;
        assert_ne!(la, lb, "{name}: training applies dropout");
    }
}

#[test]
fn rescaling_gradient_matches_finite_differences() {
    let graph = Sequential::new(&[1, 6, 6])
        .add("c1", Conv2d::new(1, 2, 3))
        .add("rs", Rescaling::new(-0.75, 0.5))
        .add("r1", Relu)
        .add("flat", Flatten)
        .add("fc", Linear::new(32, 3))
        .cross_entropy()
        .unwrap();
    let n = 3;
    let x = rand01(71, n * 36);
    let y = vec![0u32, 2, 1];
    let opt = Optimizer::sgd(0.0);
    let mut c = Executor::new(&Backend::cpu(), &graph, n, opt, 9).unwrap();
    c.train_step(&x, Targets::Classes(&y)).unwrap();
    let params = c.parameters().unwrap();
    let grads = c.gradients().unwrap();
    let loss_at = |ps: &[(String, Vec<usize>, Vec<f32>)]| -> f64 {
        let mut e = Executor::new(&Backend::cpu(), &graph, n, opt, 9).unwrap();
        e.load_state(ps, &[], 0).unwrap();
        e.eval_batch(&x, Targets::Classes(&y)).unwrap();
        e.take_metrics(Mode::Eval).unwrap().loss as f64
    };
    let h = 1e-2f32;
    let ci = params.iter().position(|p| p.0 == "c1.weight").unwrap();
    for k in 0..params[ci].2.len() {
        let mut plus = params.clone();
        plus[ci].2[k] += h;
        let mut minus = params.clone();
        minus[ci].2[k] -= h;
        let fd = ((loss_at(&plus) - loss_at(&minus)) / (2.0 * h as f64)) as f32;
        let an = grads[ci].2[k];
        assert!(
            (fd - an).abs() <= 2e-3 + 2e-2 * an.abs(),
            "c1.weight[{k}]: finite difference {fd} vs backward {an}"
        );
    }
}

#[test]
fn avg_pool_dropout_model_trains_identically_on_both_executors() {
    let graph = Sequential::new(&[1, 8, 8])
        .add("scale", Rescaling::new(2.0, -1.0))
        .add("c1", Conv2d::new(1, 4, 3).padding(1))
        .add("r1", Relu)
        .add("p1", AvgPool2d::new(2))
        .add("drop", Dropout::new(0.3))
        .add("flat", Flatten)
        .add("fc", Linear::new(4 * 4 * 4, 3))
        .cross_entropy()
        .unwrap();
    executors_agree(&graph, 8, 64, 3, 6);
}

/// Chained dropouts, one of them the model output: in evaluation they are aliases (or, for
/// the output, a copy), and the memory plan keeps their inputs alive for it (the GPU
/// rejects a dispatch that reads and writes one buffer, and a reused buffer would be
/// overwritten).
#[test]
fn chained_dropouts_evaluate_identically_on_both_executors() {
    let graph = Sequential::new(&[2, 8, 8])
        .add("c1", Conv2d::new(2, 4, 3).padding(1))
        .add("d1", Dropout::new(0.2))
        .add("d2", Dropout::new(0.3))
        .add("r1", Relu)
        .add("p1", AvgPool2d::new(2))
        .add("d3", Dropout::new(0.1))
        .add("flat", Flatten)
        .add("fc", Linear::new(64, 5))
        .add("d4", Dropout::new(0.25))
        .cross_entropy()
        .unwrap();
    executors_agree(&graph, 4, 128, 5, 4);
    let x = rand01(81, 4 * 128);
    let outs: Vec<_> = backends()
        .into_iter()
        .map(|(_, be)| {
            let mut e = Executor::new(&be, &graph, 4, Optimizer::sgd(0.0), 2).unwrap();
            e.predict(&x).unwrap()
        })
        .collect();
    if outs.len() == 2 {
        let f = |a: &Array2<f32>| a.iter().copied().collect::<Vec<_>>();
        assert_close(
            "chained dropout predict",
            &f(&outs[1]),
            &f(&outs[0]),
            1e-5,
            1e-4,
        );
    }
}
