//! 1-D and 3-D max and average pooling, which lower onto the 2-D pooling kernels through
//! views (1-D: a `1×k` window on `[C, 1, L]`; 3-D: `(h, w)` on `[C·D, H, W]`, then depth on
//! `[C, D, OH·OW]`).
//!
//! * PyTorch golden values (`tests/golden/gen_pool_nd.py`), forward and backward, with
//!   overlapping, gapped and padded windows and tie-heavy inputs, through the functional API
//!   and through the graph on both executors;
//! * GPU vs CPU executors on random geometries (proptest);
//! * finite differences through the graph on the CPU executor;
//! * both executors training a model with these layers; typed errors; the lowering.
//!
//! **Reading the input gradient through the graph.** The executor exposes parameter
//! gradients only, so the pooled tensor is made a parameter: the input of sample `k` is the
//! one-hot `e_k ∈ R^N`, a bias-free `Linear(N → numel)` named `lin` has the samples' tensors
//! as the columns of its weight (`z_k = W·e_k = x_k`, exactly: one non-zero term), and then
//! `dW[:, k] = dL/dx_k` (again one non-zero term). A `Reshape` view gives `z` its sample
//! shape; the pooled output is flattened into an MSE loss whose targets are
//! `t = y − dy·K/2` (`K` = N·numel(y)), so that `dL/dy = 2(y − t)/K = dy`.
//!
//! # Tolerances
//! Max-pooling moves values: `y` and the indices must be identical to PyTorch's, and `dx`
//! sums at most a few dy values (multiples of 1/8: exact), so `dx` is compared with
//! 1e-6 + 1e-6·|dx|. Average pooling sums at most 27 terms in another order (and, for 3-D,
//! divides in two stages: `(Σ/(kh·kw))/kd` against PyTorch's `Σ/(kd·kh·kw)`), a few f32
//! roundings of O(1) values: 1e-5 + 1e-5·|want|. Through the graph `dL/dy` is `dy` up to the
//! rounding of `t` (≲ 2⁻²⁴·|t| ≈ 1e-5·|dy|), so dx gets 2e-5 + 2e-5·|want| there. Finite
//! differences (h = 1e-2) of a loss quadratic in x (piecewise, away from argmax changes:
//! inputs are distinct multiples of 0.05 > 2h) have no truncation error; what is left is
//! the f32 rounding of the loss over 2h: the 3-D case's 400 inputs reach ±10, its loss is
//! O(30) (ulp ≈ 2e-6), a few roundings of it over 0.02 give ≲ 3e-4 (measured worst 0.3 of
//! the tolerance 1e-3 + 1e-3·|dx|), the 1-D cases' O(1) losses ≲ 1e-5.

mod common;

use common::values;

#[path = "golden/pool_nd.rs"]
mod golden;

use common::{assert_close, backends, executors_agree, gpu, rand01};
use proptest::prelude::*;
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::{Graph, NodeId, Op};
use wgcnn::ndarray::{Array3, Array5};
use wgcnn::nn::{
    AvgPool1d, AvgPool3d, Flatten, Linear, MaxPool1d, MaxPool3d, Relu, Reshape, Sequential,
};
use wgcnn::ops::pool::{Pool2d, PoolPass};
use wgcnn::plan::Mode;
use wgcnn::{Backend, Error, Optimizer, Pool1dParams, Pool3dParams};

/// Multiples of 1/8 in [−2, 2): exact in f32, and so are small sums of them.
fn eighths(seed: u64, len: usize) -> Vec<f32> {
    values(seed, len)
        .iter()
        .map(|v| (v * 16.0).round() / 8.0)
        .collect()
}

/// `len` distinct multiples of 0.05, shuffled.
fn distinct(seed: u64, len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..len)
        .map(|k| (k as f32 - len as f32 / 2.0) * 0.05)
        .collect();
    let r = values(seed, len);
    for i in (1..len).rev() {
        let j = (((r[i] + 1.0) * 0.5 * (i + 1) as f32) as usize).min(i);
        v.swap(i, j);
    }
    v
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------ the graph harness

/// The pooling layer of a test graph.
#[derive(Clone, Copy, Debug)]
enum Pool {
    Max1(Pool1dParams),
    Avg1(Pool1dParams),
    Min1(Pool1dParams),
    Max3(Pool3dParams),
    Avg3(Pool3dParams),
    Min3(Pool3dParams),
}

impl Pool {
    fn add(self, g: &mut Graph, x: NodeId) -> Result<NodeId, Error> {
        match self {
            Pool::Max1(p) => g.max_pool1d("pool", x, p),
            Pool::Avg1(p) => g.avg_pool1d("pool", x, p),
            Pool::Max3(p) => g.max_pool3d("pool", x, p),
            Pool::Avg3(p) => g.avg_pool3d("pool", x, p),
            Pool::Min1(p) => g.min_pool1d("pool", x, p),
            Pool::Min3(p) => g.min_pool3d("pool", x, p),
        }
    }
}

/// `onehot [n] → lin (weight = the samples' tensors) → view [x_shape] → pool → flat → MSE`.
fn pool_graph(n: usize, x_shape: &[usize], pool: Pool) -> Graph {
    let mut g = Graph::new();
    let inp = g.input("onehot", &[n]).unwrap();
    let z = g
        .linear("lin", inp, x_shape.iter().product(), false)
        .unwrap();
    let v = g.reshape("view", z, x_shape).unwrap();
    let y = pool.add(&mut g, v).unwrap();
    let f = g.flatten("flat", y).unwrap();
    g.mse("loss", f).unwrap();
    g
}

/// `lin.weight [numel, n]` holding sample `k`'s tensor in column `k`.
fn lin_weight(n: usize, x: &[f32]) -> Vec<f32> {
    let numel = x.len() / n;
    (0..numel * n).map(|i| x[(i % n) * numel + i / n]).collect()
}

fn identity(n: usize) -> Vec<f32> {
    (0..n * n).map(|i| (i / n == i % n) as u32 as f32).collect()
}

/// Runs the pooling of `x` (`n` samples) through `graph` on `be`: returns the output `y`
/// and `dx` for the upstream gradient `dy` (one training step at learning rate 0).
fn run_graph(be: &Backend, graph: &Graph, n: usize, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut ex = Executor::new(be, graph, n, Optimizer::sgd(0.0), 1).unwrap();
    let numel = x.len() / n;
    ex.load_state(
        &[("lin.weight".into(), vec![numel, n], lin_weight(n, x))],
        &[],
        0,
    )
    .unwrap();
    let onehot = identity(n);
    let y: Vec<f32> = ex.predict(&onehot).unwrap().iter().copied().collect();
    let k = y.len() as f32;
    let t: Vec<f32> = y.iter().zip(dy).map(|(&y, &d)| y - d * k / 2.0).collect();
    ex.train_step(&onehot, Targets::Values(&t)).unwrap();
    let y2: Vec<f32> = ex.output(n).unwrap().iter().copied().collect();
    assert_eq!(y, y2, "predict and the training forward agree");
    let grads = ex.gradients().unwrap();
    let gw = &grads.iter().find(|g| g.0 == "lin.weight").unwrap().2;
    // dW[o, k] is dx of sample k at o
    let dx = (0..numel * n)
        .map(|i| gw[(i % numel) * n + i / numel])
        .collect();
    (y, dx)
}

// ------------------------------------------------------------ PyTorch, functional API

#[test]
fn pool1d_matches_pytorch() {
    for (bname, be) in backends() {
        for c in golden::POOL1D {
            let [n, ch, l] = c.x_shape;
            let x = Array3::from_shape_vec((n, ch, l), c.x.to_vec()).unwrap();
            let p = Pool1dParams {
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
            };
            let what = format!("{bname} {}", c.name);
            let (y, idx) = be.max_pool1d(&x, p).unwrap();
            let ys = c.y_shape;
            assert_eq!(y.dim(), (ys[0], ys[1], ys[2]), "{what}");
            assert_eq!(y.iter().copied().collect::<Vec<_>>(), c.y, "{what}: max y");
            assert_eq!(
                idx.iter().copied().collect::<Vec<_>>(),
                c.idx,
                "{what}: idx"
            );
            let dy = Array3::from_shape_vec(y.dim(), c.dy.to_vec()).unwrap();
            let dx = be.max_pool1d_backward(&dy, &idx, x.dim()).unwrap();
            let dxv: Vec<f32> = dx.iter().copied().collect();
            assert_close(&format!("{what}: max dx"), &dxv, c.dx, 1e-6, 1e-6);
            let ya = be.avg_pool1d(&x, p).unwrap();
            let yav: Vec<f32> = ya.iter().copied().collect();
            assert_close(&format!("{what}: avg y"), &yav, c.avg_y, 1e-5, 1e-5);
            let dxa = be.avg_pool1d_backward(&dy, p, x.dim()).unwrap();
            let dxav: Vec<f32> = dxa.iter().copied().collect();
            assert_close(&format!("{what}: avg dx"), &dxav, c.avg_dx, 1e-5, 1e-5);
            let (ym, im) = be.min_pool1d(&x, p).unwrap();
            assert_eq!(
                ym.iter().copied().collect::<Vec<_>>(),
                c.min_y,
                "{what}: min y"
            );
            assert_eq!(
                im.iter().copied().collect::<Vec<_>>(),
                c.min_idx,
                "{what}: min idx"
            );
            let dxm = be.max_pool1d_backward(&dy, &im, x.dim()).unwrap();
            let dxmv: Vec<f32> = dxm.iter().copied().collect();
            assert_close(&format!("{what}: min dx"), &dxmv, c.min_dx, 1e-6, 1e-6);
        }
    }
}

#[test]
fn pool3d_matches_pytorch() {
    for (bname, be) in backends() {
        for c in golden::POOL3D {
            let [n, ch, d, h, w] = c.x_shape;
            let x = Array5::from_shape_vec((n, ch, d, h, w), c.x.to_vec()).unwrap();
            let p = Pool3dParams {
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
            };
            let what = format!("{bname} {}", c.name);
            let (y, idx) = be.max_pool3d(&x, p).unwrap();
            let ys = c.y_shape;
            assert_eq!(y.dim(), (ys[0], ys[1], ys[2], ys[3], ys[4]), "{what}");
            assert_eq!(y.iter().copied().collect::<Vec<_>>(), c.y, "{what}: max y");
            assert_eq!(
                idx.iter().copied().collect::<Vec<_>>(),
                c.idx,
                "{what}: idx"
            );
            let dy = Array5::from_shape_vec(y.dim(), c.dy.to_vec()).unwrap();
            let dx = be.max_pool3d_backward(&dy, &idx, x.dim()).unwrap();
            let dxv: Vec<f32> = dx.iter().copied().collect();
            assert_close(&format!("{what}: max dx"), &dxv, c.dx, 1e-6, 1e-6);
            let ya = be.avg_pool3d(&x, p).unwrap();
            let yav: Vec<f32> = ya.iter().copied().collect();
            assert_close(&format!("{what}: avg y"), &yav, c.avg_y, 1e-5, 1e-5);
            let dxa = be.avg_pool3d_backward(&dy, p, x.dim()).unwrap();
            let dxav: Vec<f32> = dxa.iter().copied().collect();
            assert_close(&format!("{what}: avg dx"), &dxav, c.avg_dx, 1e-5, 1e-5);
            let (ym, im) = be.min_pool3d(&x, p).unwrap();
            assert_eq!(
                ym.iter().copied().collect::<Vec<_>>(),
                c.min_y,
                "{what}: min y"
            );
            assert_eq!(
                im.iter().copied().collect::<Vec<_>>(),
                c.min_idx,
                "{what}: min idx"
            );
            let dxm = be.max_pool3d_backward(&dy, &im, x.dim()).unwrap();
            let dxmv: Vec<f32> = dxm.iter().copied().collect();
            assert_close(&format!("{what}: min dx"), &dxmv, c.min_dx, 1e-6, 1e-6);
        }
    }
}

// ------------------------------------------------------------ PyTorch, through the graph

#[test]
fn pool1d_graph_matches_pytorch_on_both_executors() {
    for (bname, be) in backends() {
        for c in golden::POOL1D {
            let [n, ch, l] = c.x_shape;
            let p = Pool1dParams {
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
            };
            for (pool, y, dx) in [
                (Pool::Max1(p), c.y, c.dx),
                (Pool::Avg1(p), c.avg_y, c.avg_dx),
                (Pool::Min1(p), c.min_y, c.min_dx),
            ] {
                let what = format!("{bname} {} {pool:?}", c.name);
                let graph = pool_graph(n, &[ch, l], pool);
                let (gy, gdx) = run_graph(&be, &graph, n, c.x, c.dy);
                assert_close(&format!("{what}: y"), &gy, y, 1e-5, 1e-5);
                assert_close(&format!("{what}: dx"), &gdx, dx, 2e-5, 2e-5);
            }
        }
    }
}

#[test]
fn pool3d_graph_matches_pytorch_on_both_executors() {
    for (bname, be) in backends() {
        for c in golden::POOL3D {
            let [n, ch, d, h, w] = c.x_shape;
            let p = Pool3dParams {
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
            };
            for (pool, y, dx) in [
                (Pool::Max3(p), c.y, c.dx),
                (Pool::Avg3(p), c.avg_y, c.avg_dx),
                (Pool::Min3(p), c.min_y, c.min_dx),
            ] {
                let what = format!("{bname} {} {pool:?}", c.name);
                let graph = pool_graph(n, &[ch, d, h, w], pool);
                let (gy, gdx) = run_graph(&be, &graph, n, c.x, c.dy);
                if matches!(pool, Pool::Max3(_) | Pool::Min3(_)) {
                    assert_eq!(gy, y, "{what}: y");
                }
                assert_close(&format!("{what}: y"), &gy, y, 1e-5, 1e-5);
                assert_close(&format!("{what}: dx"), &gdx, dx, 2e-5, 2e-5);
            }
        }
    }
}

// ------------------------------------------------------------ GPU vs CPU through the graph

/// A random 1-D or 3-D pooling problem: per-sample shape and a geometry valid for it.
fn problem() -> impl Strategy<Value = (usize, Vec<usize>, Pool, u64, bool)> {
    let dims = prop::collection::vec((1usize..8, 1usize..4, 1usize..4, 0usize..3), 3);
    (
        1usize..4,
        1usize..4,
        any::<bool>(),
        any::<bool>(),
        dims,
        any::<u64>(),
        any::<bool>(),
    )
        .prop_filter_map("valid geometry", |(n, c, three, max, dims, seed, ties)| {
            // dims: (len, kernel, stride, padding) per axis; 1-D uses the last
            let axis = |a: usize| {
                (
                    dims[a].0 + dims[a].1,
                    dims[a].1,
                    dims[a].2,
                    dims[a].3.min(dims[a].1 / 2),
                )
            };
            let (shape, pool) = if three {
                let ax = [axis(0), axis(1), axis(2)];
                let p = Pool3dParams {
                    kernel: ax.map(|a| a.1),
                    stride: ax.map(|a| a.2),
                    padding: ax.map(|a| a.3),
                };
                p.out_shape("t", [n, c, ax[0].0, ax[1].0, ax[2].0]).ok()?;
                let pool = match (max, seed % 2) {
                    (true, 0) => Pool::Max3(p),
                    (true, _) => Pool::Min3(p),
                    _ => Pool::Avg3(p),
                };
                (vec![c, ax[0].0, ax[1].0, ax[2].0], pool)
            } else {
                let a = axis(2);
                let p = Pool1dParams {
                    kernel: a.1,
                    stride: a.2,
                    padding: a.3,
                };
                p.out_shape("t", [n, c, a.0]).ok()?;
                let pool = match (max, seed % 2) {
                    (true, 0) => Pool::Max1(p),
                    (true, _) => Pool::Min1(p),
                    _ => Pool::Avg1(p),
                };
                (vec![c, a.0], pool)
            };
            Some((n, shape, pool, seed, ties))
        })
}

proptest! {
    #![proptest_config(config(16))]

    /// Max-pooling: identical outputs, and dx within 1e-6 (sums of a few 1/8 multiples).
    /// Average pooling: outputs and dx within 1e-5 (sums of ≤ 27 terms in another order).
    #[test]
    fn pool_nd_gpu_executor_matches_cpu((n, shape, pool, seed, ties) in problem()) {
        let Some(g) = gpu() else { return Ok(()) };
        let numel: usize = shape.iter().product();
        let mut x = eighths(seed, n * numel);
        if ties {
            x.iter_mut().for_each(|v| *v = v.round().clamp(-1.0, 1.0) + 0.0);
        }
        let graph = pool_graph(n, &shape, pool);
        let ny = graph.numel(graph.output_node().unwrap());
        let dy = eighths(seed ^ 0x5eed, n * ny);
        let (yc, dxc) = run_graph(&Backend::cpu(), &graph, n, &x, &dy);
        let (yg, dxg) = run_graph(&g, &graph, n, &x, &dy);
        if matches!(pool, Pool::Max1(_) | Pool::Max3(_) | Pool::Min1(_) | Pool::Min3(_)) {
            prop_assert_eq!(&yg, &yc);
            assert_close("max/min dx", &dxg, &dxc, 1e-6, 1e-6);
        } else {
            assert_close("avg y", &yg, &yc, 1e-5, 1e-5);
            assert_close("avg dx", &dxg, &dxc, 1e-5, 1e-5);
        }
    }
}

// ------------------------------------------------------------ finite differences

/// Every coordinate of dL/dx (from the backward) against central differences of the eval
/// loss, on the CPU executor, for targets `t`.
fn fd_check(shape: &[usize], pool: Pool, n: usize, x: &[f32], seed: u64) {
    let cpu = Backend::cpu();
    let graph = pool_graph(n, shape, pool);
    let ny = graph.numel(graph.output_node().unwrap());
    let t = values(seed, n * ny);
    let numel = x.len() / n;
    let opt = Optimizer::sgd(0.0);
    let mut ex = Executor::new(&cpu, &graph, n, opt, 1).unwrap();
    let w = lin_weight(n, x);
    let onehot = identity(n);
    let state = |w: Vec<f32>| vec![("lin.weight".to_string(), vec![numel, n], w)];
    ex.load_state(&state(w.clone()), &[], 0).unwrap();
    ex.train_step(&onehot, Targets::Values(&t)).unwrap();
    let grads = ex.gradients().unwrap();
    let gw = grads[0].2.clone();
    let mut loss_at = |w: Vec<f32>| -> f64 {
        ex.load_state(&state(w), &[], 0).unwrap();
        ex.eval_batch(&onehot, Targets::Values(&t)).unwrap();
        ex.take_metrics(Mode::Eval).unwrap().loss as f64
    };
    let h = 1e-2f32;
    let mut num = Vec::with_capacity(w.len());
    for i in 0..w.len() {
        let (mut plus, mut minus) = (w.clone(), w.clone());
        plus[i] += h;
        minus[i] -= h;
        let step = (plus[i] - minus[i]) as f64;
        num.push(((loss_at(plus) - loss_at(minus)) / step) as f32);
    }
    // the MSE metric is the mean over all elements, as the loss the backward differentiates
    let worst = assert_close(&format!("fd {pool:?}"), &gw, &num, 1e-3, 1e-3);
    eprintln!("fd {pool:?}: worst |err|/tol = {worst:.3}");
}

#[test]
fn pool_nd_gradients_match_finite_differences() {
    let p1 = Pool1dParams {
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let x1 = distinct(1, 2 * 2 * 9);
    fd_check(&[2, 9], Pool::Max1(p1), 2, &x1, 11);
    fd_check(&[2, 9], Pool::Avg1(p1), 2, &x1, 12);
    fd_check(&[2, 9], Pool::Min1(p1), 2, &x1, 15);
    let p3 = Pool3dParams {
        kernel: [3, 2, 3],
        stride: [2, 1, 2],
        padding: [1, 1, 1],
    };
    let x3 = distinct(2, 2 * 2 * 5 * 4 * 5);
    fd_check(&[2, 5, 4, 5], Pool::Max3(p3), 2, &x3, 13);
    fd_check(&[2, 5, 4, 5], Pool::Avg3(p3), 2, &x3, 14);
    fd_check(&[2, 5, 4, 5], Pool::Min3(p3), 2, &x3, 16);
}

// ------------------------------------------------------------ training, lowering, errors

#[test]
fn pool_nd_models_train_identically_on_both_executors() {
    // volumes [2, 4, 6, 6] made by a linear layer and a reshape, then both 3-D poolings
    let g3 = Sequential::new(&[2 * 4 * 6 * 6])
        .add("fc0", Linear::new(288, 288))
        .add("r0", Relu)
        .add("vol", Reshape::new(&[2, 4, 6, 6]))
        .add(
            "mp",
            MaxPool3d::new(2).kernel3([2, 3, 3]).padding3([1, 1, 1]),
        )
        .add("ap", AvgPool3d::new(2).padding(1))
        .add("flat", Flatten)
        .add("fc", Linear::new(2 * 2 * 2 * 2, 3))
        .cross_entropy()
        .unwrap();
    executors_agree(&g3, 6, 288, 3, 5);
    // sequences [3, 20]
    let g1 = Sequential::new(&[60])
        .add("fc0", Linear::new(60, 60))
        .add("seq", Reshape::new(&[3, 20]))
        .add("mp", MaxPool1d::new(3).stride(2).padding(1))
        .add("ap", AvgPool1d::new(2))
        .add("flat", Flatten)
        .add("fc", Linear::new(3 * 5, 4))
        .cross_entropy()
        .unwrap();
    executors_agree(&g1, 6, 60, 4, 5);
}

#[test]
fn pool_nd_layers_follow_pytorch_defaults_and_shapes() {
    // stride follows the kernel unless set, per axis
    let m = MaxPool3d::new(2).kernel3([1, 2, 3]);
    assert_eq!(m.params().stride, [1, 2, 3]);
    let m = MaxPool3d::new(2).stride3([1, 1, 2]).kernel3([3, 3, 3]);
    assert_eq!(m.params().stride, [1, 1, 2]);
    assert_eq!(MaxPool1d::new(4).0.stride, 4);
    let g = Sequential::new(&[3, 7, 9, 10])
        .add(
            "p",
            MaxPool3d::new(3).stride3([2, 2, 3]).padding3([1, 0, 1]),
        )
        .add("q", AvgPool3d::new(2))
        .add("flat", Flatten)
        .add("fc", Linear::new(3 * 2 * 2 * 2, 2))
        .cross_entropy()
        .unwrap();
    let p = g.nodes().iter().find(|n| n.name == "p").unwrap();
    // D: (7+2−3)/2+1 = 4, H: (9−3)/2+1 = 4, W: (10+2−3)/3+1 = 4
    assert_eq!(p.shape, vec![3, 4, 4, 4]);
    let g = Sequential::new(&[2, 11])
        .add("p", AvgPool1d::new(4).stride(3).padding(2))
        .add("flat", Flatten)
        .add("fc", Linear::new(8, 2))
        .cross_entropy()
        .unwrap();
    assert_eq!(g.nodes()[1].shape, vec![2, 4]);
}

/// One graph node per layer; the plan runs 1-D pooling as one 2-D pooling step each way
/// and 3-D pooling as two (h·w, then depth; the backward in reverse).
#[test]
fn pool_nd_lowers_to_2d_pooling_stages() {
    let p3 = Pool3dParams {
        kernel: [2, 3, 3],
        stride: [2, 2, 2],
        padding: [1, 1, 1],
    };
    let graph = pool_graph(3, &[2, 5, 6, 7], Pool::Max3(p3));
    assert_eq!(graph.nodes().len(), 6);
    let ex = Executor::new(&Backend::cpu(), &graph, 3, Optimizer::sgd(0.0), 1).unwrap();
    let steps = ex.steps(3).unwrap();
    let fwd: Vec<_> = steps
        .iter()
        .filter_map(|s| s.launch_as::<Pool2d>())
        .filter(|l| l.pass == PoolPass::MaxForward)
        .map(|l| (l.xd, l.yd, l.p))
        .collect();
    // (h, w) on [N, C·D, H, W]: 6 → 3, 7 → 4; then depth on [N, C, D, OH·OW]: 5 → 3
    assert_eq!(fwd.len(), 2);
    assert_eq!((fwd[0].0, fwd[0].1), ([3, 10, 6, 7], [3, 10, 3, 4]));
    assert_eq!(fwd[0].2, p3.hw());
    assert_eq!((fwd[1].0, fwd[1].1), ([3, 2, 5, 12], [3, 2, 3, 12]));
    assert_eq!(fwd[1].2, p3.depth());
    let bwd: Vec<_> = steps
        .iter()
        .filter_map(|s| s.launch_as::<Pool2d>())
        .filter(|l| l.pass == PoolPass::ArgBackward)
        .map(|l| l.xd)
        .collect();
    assert_eq!(bwd, vec![[3, 2, 5, 12], [3, 10, 6, 7]]);
    let p1 = Pool1dParams::new(2);
    let graph = pool_graph(2, &[3, 8], Pool::Avg1(p1));
    let ex = Executor::new(&Backend::cpu(), &graph, 2, Optimizer::sgd(0.0), 1).unwrap();
    let steps = ex.steps(2).unwrap();
    let n_avg = steps
        .iter()
        .filter(|s| matches!(s.kernel(), "avg_pool2d_forward" | "avg_pool2d_backward"))
        .count();
    assert_eq!(n_avg, 2);
    assert!(steps
        .iter()
        .filter_map(|s| s.launch_as::<Pool2d>())
        .any(|l| {
            l.pass == PoolPass::AvgForward && l.xd == [2, 3, 1, 8] && l.yd == [2, 3, 1, 4]
        }));
    assert!(graph
        .nodes()
        .iter()
        .any(|n| matches!(n.op, Op::AvgPool1d { .. })));
}

fn shape_err(e: Error, node: &str) {
    match e {
        Error::Shape { op, .. } | Error::InvalidArgument { op, .. } => {
            assert_eq!(op, node, "the error names the node")
        }
        e => panic!("expected a shape or argument error naming {node}, got {e:?}"),
    }
}

#[test]
fn pool_nd_rejects_bad_shapes_and_options() {
    let mut g = Graph::new();
    let x3 = g.input("x", &[2, 5, 6, 7]).unwrap();
    // wrong rank
    shape_err(
        g.max_pool1d("p1", x3, Pool1dParams::new(2)).unwrap_err(),
        "p1",
    );
    let mut g1 = Graph::new();
    let x1 = g1.input("x", &[2, 9]).unwrap();
    shape_err(
        g1.max_pool3d("p3", x1, Pool3dParams::new(2)).unwrap_err(),
        "p3",
    );
    // padding above half the kernel, zero stride, a kernel larger than the padded input
    let bad1 = [
        Pool1dParams {
            kernel: 2,
            stride: 1,
            padding: 2,
        },
        Pool1dParams {
            kernel: 2,
            stride: 0,
            padding: 0,
        },
        Pool1dParams {
            kernel: 12,
            stride: 1,
            padding: 1,
        },
        Pool1dParams {
            kernel: 0,
            stride: 1,
            padding: 0,
        },
    ];
    for p in bad1 {
        let e = g1.avg_pool1d("a1", x1, p).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { .. } | Error::Shape { .. }),
            "{p:?}"
        );
        shape_err(e, "a1");
    }
    let bad3 = [
        Pool3dParams {
            kernel: [2, 2, 2],
            stride: [1, 1, 1],
            padding: [0, 2, 0],
        },
        Pool3dParams {
            kernel: [2, 2, 2],
            stride: [1, 0, 1],
            padding: [0, 0, 0],
        },
        Pool3dParams {
            kernel: [6, 2, 2],
            stride: [1, 1, 1],
            padding: [0, 0, 0],
        },
    ];
    for p in bad3 {
        let e = g.max_pool3d("m3", x3, p).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{p:?}: {e}");
        shape_err(e, "m3");
    }
    // the functional API checks too, before any dispatch
    for (_, be) in backends() {
        let x = Array5::<f32>::zeros((1, 1, 2, 4, 4));
        assert!(be.max_pool3d(&x, Pool3dParams::new(3)).is_err());
        let x = Array3::<f32>::zeros((1, 1, 4));
        let p = Pool1dParams {
            kernel: 2,
            stride: 1,
            padding: 2,
        };
        assert!(be.avg_pool1d(&x, p).is_err());
        let dy = Array3::<f32>::zeros((1, 1, 3));
        assert!(be
            .avg_pool1d_backward(&dy, Pool1dParams::new(2), (1, 1, 4))
            .is_err());
    }
}

#[test]
fn reshape_is_a_view_and_checks_the_element_count() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 3, 4]).unwrap();
    let r = g.reshape("r", x, &[6, 4]).unwrap();
    assert_eq!(g.node(r).shape, vec![6, 4]);
    shape_err(g.reshape("bad", x, &[5, 5]).unwrap_err(), "bad");
    shape_err(g.reshape("empty", x, &[]).unwrap_err(), "empty");
    shape_err(g.reshape("zero", x, &[0, 24]).unwrap_err(), "zero");
    shape_err(g.reshape("huge", x, &[usize::MAX, 2]).unwrap_err(), "huge");
    // no step: the reshape's output is its input's tensor, the gradient passes through
    let graph = Sequential::new(&[12])
        .add("fc0", Linear::new(12, 12))
        .add("r", Reshape::new(&[3, 4]))
        .add("flat", Flatten)
        .add("fc", Linear::new(12, 2))
        .cross_entropy()
        .unwrap();
    let without = Sequential::new(&[12])
        .add("fc0", Linear::new(12, 12))
        .add("fc", Linear::new(12, 2))
        .cross_entropy()
        .unwrap();
    let x = rand01(5, 3 * 12);
    let y = [0u32, 1, 1];
    for (name, be) in backends() {
        let mut a = Executor::new(&be, &graph, 3, Optimizer::sgd(0.1), 4).unwrap();
        let mut b = Executor::new(&be, &without, 3, Optimizer::sgd(0.1), 4).unwrap();
        assert_eq!(
            a.steps(3).unwrap().len(),
            b.steps(3).unwrap().len(),
            "{name}"
        );
        a.train_step(&x, Targets::Classes(&y)).unwrap();
        b.train_step(&x, Targets::Classes(&y)).unwrap();
        assert_eq!(a.gradients().unwrap(), b.gradients().unwrap(), "{name}");
    }
}
