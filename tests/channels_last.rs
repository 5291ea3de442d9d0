//! Channels-last input: the `permute` kernel (and its CPU twin) against ndarray's
//! `permuted_axes`, the `ChannelsLast` graph op and layer (`[d1, …, dk, C] → [C, d1, …, dk]`,
//! a permute on the device at the model boundary, its gradient the inverse permute), and
//! models fed NHWC batches against the same models fed NCHW batches.
//!
//! A permute moves values without arithmetic, so every comparison here is exact: the kernel
//! and its twin against ndarray, and a model on NHWC data against the same model on the
//! NCHW data (same parameters, same kernels on the same values: the same losses and
//! gradients bit for bit, on each executor). GPU against CPU executors differ by f32
//! summation order only: training losses within 1e-3 relative, as in `tests/layers.rs`.

mod common;

use common::values;

use common::{assert_close, backends, gpu, labels, proptest_config, rand01};
use proptest::prelude::*;
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::Graph;
use wgcnn::ndarray::{Array4, ArrayD, IxDyn};
use wgcnn::nn::{ChannelsLast, Conv2d, Flatten, Linear, MaxPool2d, Relu, Sequential};
use wgcnn::ops::layout::Permute;
use wgcnn::plan::Mode;
use wgcnn::{Backend, Error, Optimizer};

/// A shape of rank 1..=4 and a permutation of its axes.
fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..9, 1..=4).prop_flat_map(|shape| {
        let r = shape.len();
        (Just(shape), Just((0..r).collect::<Vec<_>>()).prop_shuffle())
    })
}

proptest! {
    #![proptest_config(proptest_config(32))]

    /// Both backends equal ndarray's `permuted_axes` exactly.
    #[test]
    fn permute_matches_ndarray((shape, perm) in shape_and_perm(), seed in any::<u64>()) {
        let len = shape.iter().product();
        let x = ArrayD::from_shape_vec(IxDyn(&shape), values(seed, len)).unwrap();
        let want = x.clone().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned();
        for (name, be) in backends() {
            let y = be.permute(&x, &perm).unwrap();
            prop_assert_eq!(y.shape(), want.shape(), "{}", name);
            prop_assert_eq!(y.as_slice().unwrap(), want.as_slice().unwrap(), "{}", name);
        }
    }
}

/// The functional forms: NHWC → NCHW and back, exactly.
#[test]
fn channels_last_and_its_backward_are_inverse_permutes() {
    let (n, h, w, c) = (2, 5, 7, 3);
    let x = Array4::from_shape_vec((n, h, w, c), values(1, n * h * w * c)).unwrap();
    for (name, be) in backends() {
        let y = be.channels_last(&x).unwrap();
        assert_eq!(y.dim(), (n, c, h, w), "{name}");
        for (i, j, k, l) in [(0, 0, 0, 0), (1, 2, 4, 6), (0, 1, 3, 2)] {
            assert_eq!(y[[i, j, k, l]], x[[i, k, l, j]], "{name}");
        }
        assert_eq!(be.channels_last_backward(&y).unwrap(), x, "{name}");
    }
}

fn nchw_to_nhwc(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let a = Array4::from_shape_vec((n, c, h, w), x.to_vec()).unwrap();
    a.permuted_axes([0, 2, 3, 1]).iter().copied().collect()
}

fn model(nhwc: bool, c: usize) -> Graph {
    let s = if nhwc {
        Sequential::new(&[10, 10, c]).add("nhwc", ChannelsLast)
    } else {
        Sequential::new(&[c, 10, 10])
    };
    s.add("c1", Conv2d::new(c, 4, 3).padding(1))
        .add("r1", Relu)
        .add("s2", MaxPool2d::new(2))
        .add("flat", Flatten)
        .add("f3", Linear::new(4 * 5 * 5, 3))
        .cross_entropy()
        .unwrap()
}

/// The same model on NHWC batches (through `ChannelsLast`) and on the NCHW batches: the
/// same losses, gradients and parameters, bit for bit, on each executor; the GPU executor
/// against the CPU one within f32 summation-order error.
#[test]
fn nhwc_model_trains_exactly_as_the_nchw_model() {
    for c in [3usize, 1] {
        let (a_graph, b_graph) = (model(true, c), model(false, c));
        let n = 6;
        let mut losses = Vec::new();
        for (name, be) in backends() {
            let opt = Optimizer::momentum(0.05, 0.9);
            let mut a = Executor::new(&be, &a_graph, n, opt, 3).unwrap();
            let mut b = Executor::new(&be, &b_graph, n, opt, 3).unwrap();
            assert_eq!(a.parameters().unwrap(), b.parameters().unwrap());
            let mut ls = Vec::new();
            for s in 0..5 {
                let x = rand01(40 + s, n * c * 100);
                let y = labels(50 + s, n, 3);
                a.train_step(&nchw_to_nhwc(&x, n, c, 10, 10), Targets::Classes(&y))
                    .unwrap();
                b.train_step(&x, Targets::Classes(&y)).unwrap();
                let (ma, mb) = (
                    a.take_metrics(Mode::Train).unwrap(),
                    b.take_metrics(Mode::Train).unwrap(),
                );
                assert_eq!(ma, mb, "{name} C={c}: step {s}");
                assert_eq!(
                    a.gradients().unwrap(),
                    b.gradients().unwrap(),
                    "{name} C={c}"
                );
                ls.push(ma.loss);
            }
            assert_eq!(
                a.parameters().unwrap(),
                b.parameters().unwrap(),
                "{name} C={c}"
            );
            let x = rand01(77, n * c * 100);
            let pa = a.predict(&nchw_to_nhwc(&x, n, c, 10, 10)).unwrap();
            assert_eq!(pa, b.predict(&x).unwrap(), "{name} C={c}: predict");
            losses.push(ls);
        }
        if losses.len() == 2 {
            for (s, (lc, lg)) in losses[0].iter().zip(&losses[1]).enumerate() {
                assert!(
                    (lc - lg).abs() <= 1e-3 * lc.abs().max(1.0),
                    "C={c} step {s}: cpu {lc} vs gpu {lg}"
                );
            }
        }
    }
}

/// The permute happens once, first, on the device; with one channel it is a view (the
/// `[28, 28, 1]` input of the README's example has the same element order as `[1, 28, 28]`).
/// The input needs no gradient, so no inverse permute runs.
#[test]
fn channels_last_lowers_to_one_permute_at_the_boundary() {
    let lenet = Sequential::new(&[28, 28, 1])
        .add("nhwc", ChannelsLast)
        .add("c1", Conv2d::new(1, 6, 5).padding(2))
        .add("r1", Relu)
        .add("s2", MaxPool2d::new(2))
        .add("flat", Flatten)
        .add("f", Linear::new(6 * 14 * 14, 10))
        .cross_entropy()
        .unwrap();
    let ex = Executor::new(&Backend::cpu(), &lenet, 4, Optimizer::sgd(0.1), 0).unwrap();
    let steps = ex.steps(4).unwrap();
    assert!(!steps.iter().any(|s| s.kernel() == "permute"));
    let g3 = model(true, 3);
    let ex = Executor::new(&Backend::cpu(), &g3, 4, Optimizer::sgd(0.1), 0).unwrap();
    let steps = ex.steps(4).unwrap();
    let permutes: Vec<_> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.launch_as::<Permute>().map(|l| (i, l.xd, l.perm)))
        .collect();
    // [N, H·W, C] → [N, C, H·W]
    assert_eq!(permutes, vec![(0, [1, 4, 100, 3], [0, 1, 3, 2])]);
}

/// Mid-graph (its input needs a gradient): `lin → view [S.., C] → ChannelsLast → flat → MSE`
/// with the samples' tensors as `lin`'s weight (see `tests/pool_nd.rs`): the forward output
/// is the permuted input and the gradient the inverse permute of dy, exactly, for 1-D
/// (`[L, C]`), 2-D and 3-D samples, on both executors.
#[test]
fn channels_last_gradient_is_the_inverse_permute() {
    let n = 2;
    for shape in [
        vec![7usize, 3],
        vec![4, 5, 2],
        vec![3, 2, 4, 5],
        vec![6, 1],
        vec![1, 4],
    ] {
        let numel: usize = shape.iter().product();
        let c = shape[shape.len() - 1];
        let s = numel / c;
        let mut g = Graph::new();
        let inp = g.input("onehot", &[n]).unwrap();
        let z = g.linear("lin", inp, numel, false).unwrap();
        let v = g.reshape("view", z, &shape).unwrap();
        let y = g.channels_last("cl", v).unwrap();
        let mut want_shape = vec![c];
        want_shape.extend_from_slice(&shape[..shape.len() - 1]);
        assert_eq!(g.node(y).shape, want_shape);
        let f = g.flatten("flat", y).unwrap();
        g.mse("loss", f).unwrap();
        let x = values(3, n * numel);
        let dy: Vec<f32> = values(4, n * numel)
            .iter()
            .map(|v| (v * 16.0).round() / 8.0)
            .collect();
        // [n, S, C] → [n, C, S]
        let perm = |v: &[f32], a: usize, b: usize| -> Vec<f32> {
            let arr = ArrayD::from_shape_vec(IxDyn(&[n, a, b]), v.to_vec()).unwrap();
            arr.permuted_axes(IxDyn(&[0, 2, 1]))
                .iter()
                .copied()
                .collect()
        };
        let w: Vec<f32> = (0..numel * n).map(|i| x[(i % n) * numel + i / n]).collect();
        let onehot: Vec<f32> = (0..n * n).map(|i| (i / n == i % n) as u32 as f32).collect();
        for (name, be) in backends() {
            let mut ex = Executor::new(&be, &g, n, Optimizer::sgd(0.0), 1).unwrap();
            ex.load_state(&[("lin.weight".into(), vec![numel, n], w.clone())], &[], 0)
                .unwrap();
            let out: Vec<f32> = ex.predict(&onehot).unwrap().iter().copied().collect();
            assert_eq!(out, perm(&x, s, c), "{name} {shape:?}: forward");
            let k = out.len() as f32;
            let t: Vec<f32> = out
                .iter()
                .zip(&dy)
                .map(|(&o, &d)| o - d * k / 2.0)
                .collect();
            ex.train_step(&onehot, Targets::Values(&t)).unwrap();
            let gw = ex.gradients().unwrap()[0].2.clone();
            let dx: Vec<f32> = (0..numel * n)
                .map(|i| gw[(i % numel) * n + i / numel])
                .collect();
            assert_close(
                &format!("{name} {shape:?} dx"),
                &dx,
                &perm(&dy, c, s),
                1e-6,
                1e-6,
            );
        }
    }
}

#[test]
fn channels_last_and_permute_reject_bad_inputs() {
    let mut g = Graph::new();
    let x = g.input("x", &[12]).unwrap();
    match g.channels_last("nhwc", x).unwrap_err() {
        Error::Shape { op, .. } => assert_eq!(op, "nhwc"),
        e => panic!("expected a shape error naming the node, got {e:?}"),
    }
    let e = Sequential::new(&[28, 28, 3])
        .add("nhwc", ChannelsLast)
        .add("c1", Conv2d::new(1, 6, 5))
        .cross_entropy()
        .unwrap_err();
    assert!(
        matches!(e, Error::Shape { ref op, .. } if op == "c1"),
        "{e}"
    );
    for (_, be) in backends() {
        let x = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 4]));
        for bad in [&[0usize, 1][..], &[0, 1, 1], &[0, 1, 3], &[2, 1, 0, 3]] {
            assert!(
                matches!(be.permute(&x, bad), Err(Error::InvalidArgument { .. })),
                "{bad:?}"
            );
        }
        let x5 = ArrayD::<f32>::zeros(IxDyn(&[1, 1, 1, 1, 2]));
        assert!(matches!(
            be.permute(&x5, &[0, 1, 2, 3, 4]),
            Err(Error::Shape { .. })
        ));
        let empty = ArrayD::<f32>::zeros(IxDyn(&[2, 0]));
        assert!(be.permute(&empty, &[1, 0]).is_err());
    }
    if let Some(g) = gpu() {
        // nothing was dispatched for the refused calls: the device still works
        let x = ArrayD::from_shape_vec(IxDyn(&[2, 3]), values(9, 6)).unwrap();
        assert_eq!(g.permute(&x, &[1, 0]).unwrap(), x.t().to_owned());
    }
}

/// More elements than one row of workgroups holds (65,535 · 64): the folded grid reaches
/// every element.
#[test]
fn permute_past_one_dispatch_row() {
    let Some(g) = gpu() else { return };
    let shape = [3usize, 1000, 1500];
    let len: usize = shape.iter().product();
    assert!(len > 65_535 * 64);
    let x = ArrayD::from_shape_vec(IxDyn(&shape), (0..len).map(|i| i as f32).collect()).unwrap();
    let y = g.permute(&x, &[2, 0, 1]).unwrap();
    let want = x.permuted_axes(IxDyn(&[2, 0, 1]));
    assert_eq!(y.shape(), want.shape());
    assert!(y.iter().zip(want.iter()).all(|(a, b)| a == b));
}
