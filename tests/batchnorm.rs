//! Batch normalisation: PyTorch golden values (train forward + running statistics,
//! backward, eval forward) on both backends, GPU-vs-CPU property tests, and a
//! finite-difference check of the backward on the CPU path.

mod common;

#[path = "golden/batchnorm.rs"]
mod golden;

use common::{assert_close, backends, gpu};
use proptest::prelude::*;
use wgcnn::ndarray::{Array1, ArrayD, IxDyn};
use wgcnn::Backend;

const EPS: f32 = 1e-5;
const MOMENTUM: f32 = 0.1;

fn arr(shape: &[usize], v: &[f32]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).expect("shape")
}

fn a1(v: &[f32]) -> Array1<f32> {
    Array1::from(v.to_vec())
}

fn v(a: &ArrayD<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

/// Golden tolerances: PyTorch reduces in another order (and in a different variance
/// formula), so values agree to f32 rounding of O(M)-term sums: 1e-5 abs + 1e-4 rel for
/// the normalised outputs, 1e-4 + 1e-4 for the gradient sums.
#[test]
fn golden_train_forward_running_stats_backward_and_eval() {
    for (bname, be) in backends() {
        for case in golden::BATCH_NORM {
            let what = |q: &str| format!("{bname} {} {q}", case.name);
            let x = arr(case.shape, case.x);
            let (gamma, beta) = (a1(case.gamma), a1(case.beta));
            let mut rm = a1(case.running_mean0);
            let mut rv = a1(case.running_var0);
            let t = be
                .batch_norm_train(&x, &gamma, &beta, &mut rm, &mut rv, MOMENTUM, EPS)
                .expect("train forward");
            assert_close(&what("y"), &v(&t.y), case.y, 1e-5, 1e-4);
            assert_close(
                &what("running_mean"),
                rm.as_slice().unwrap(),
                case.running_mean1,
                1e-6,
                1e-5,
            );
            assert_close(
                &what("running_var"),
                rv.as_slice().unwrap(),
                case.running_var1,
                1e-6,
                1e-5,
            );
            let g = be
                .batch_norm_backward(&x, &arr(case.shape, case.dy), &gamma, &t.mean, &t.inv_std)
                .expect("backward");
            assert_close(&what("dx"), &v(&g.dx), case.dx, 1e-4, 1e-4);
            assert_close(
                &what("dgamma"),
                g.dgamma.as_slice().unwrap(),
                case.dgamma,
                1e-4,
                1e-4,
            );
            assert_close(
                &what("dbeta"),
                g.dbeta.as_slice().unwrap(),
                case.dbeta,
                1e-4,
                1e-4,
            );
            let ye = be
                .batch_norm_eval(&x, &gamma, &beta, &rm, &rv, EPS)
                .expect("eval forward");
            assert_close(&what("y_eval"), &v(&ye), case.y_eval, 1e-5, 1e-4);
        }
    }
}

#[test]
fn eval_mode_differs_from_train_mode() {
    let case = &golden::BATCH_NORM[0];
    let be = Backend::cpu();
    let x = arr(case.shape, case.x);
    let (gamma, beta) = (a1(case.gamma), a1(case.beta));
    let (mut rm, mut rv) = (a1(case.running_mean0), a1(case.running_var0));
    let t = be
        .batch_norm_train(&x, &gamma, &beta, &mut rm, &mut rv, MOMENTUM, EPS)
        .unwrap();
    let ye = be
        .batch_norm_eval(&x, &gamma, &beta, &rm, &rv, EPS)
        .unwrap();
    let diff: f32 = t.y.iter().zip(ye.iter()).map(|(a, b)| (a - b).abs()).sum();
    assert!(
        diff > 1.0,
        "eval output should use running stats: diff {diff}"
    );
}

#[test]
fn bad_shapes_are_errors() {
    let be = Backend::cpu();
    let x = ArrayD::<f32>::zeros(IxDyn(&[4, 3]));
    let (mut rm, mut rv) = (Array1::zeros(3), Array1::ones(3));
    let g2 = Array1::ones(2);
    let b3 = Array1::zeros(3);
    assert!(be
        .batch_norm_train(&x, &g2, &b3, &mut rm, &mut rv, 0.1, EPS)
        .is_err());
    let x1 = ArrayD::<f32>::zeros(IxDyn(&[1, 3]));
    let g3 = Array1::ones(3);
    assert!(be
        .batch_norm_train(&x1, &g3, &b3, &mut rm, &mut rv, 0.1, EPS)
        .is_err());
    let x3 = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 4]));
    assert!(be.batch_norm_eval(&x3, &g3, &b3, &rm, &rv, EPS).is_err());
}

/// `common::values` scaled to `[offset − scale, offset + scale)`.
fn values(seed: u64, len: usize, scale: f32, offset: f32) -> Vec<f32> {
    common::values(seed, len)
        .iter()
        .map(|v| v * scale + offset)
        .collect()
}

/// Finite differences of `L = Σ dy ⊙ y(x, γ, β)` (training mode) on the CPU path against
/// the backward. Step h = 1e-2 on inputs of scale ~1: truncation error h²/6·|L'''| and
/// f32 rounding amplified by 1/2h stay well below 2e-3 + 2e-2·|num|.
#[test]
fn finite_difference_backward_cpu() {
    let be = Backend::cpu();
    let h = 1e-2f32;
    for shape in [vec![6usize, 4], vec![3, 2, 3, 4]] {
        let len: usize = shape.iter().product();
        let c = shape[1];
        let x = arr(&shape, &values(1, len, 1.0, 0.3));
        let dy = arr(&shape, &values(2, len, 1.0, 0.0));
        let gamma = a1(&values(3, c, 0.5, 1.0));
        let beta = a1(&values(4, c, 0.5, 0.0));
        let loss = |x: &ArrayD<f32>, g: &Array1<f32>, b: &Array1<f32>| -> f64 {
            let (mut rm, mut rv) = (Array1::zeros(c), Array1::ones(c));
            let t = be
                .batch_norm_train(x, g, b, &mut rm, &mut rv, MOMENTUM, EPS)
                .unwrap();
            t.y.iter()
                .zip(dy.iter())
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum()
        };
        let (mut rm, mut rv) = (Array1::zeros(c), Array1::ones(c));
        let t = be
            .batch_norm_train(&x, &gamma, &beta, &mut rm, &mut rv, MOMENTUM, EPS)
            .unwrap();
        let gr = be
            .batch_norm_backward(&x, &dy, &gamma, &t.mean, &t.inv_std)
            .unwrap();
        let check = |what: &str, num: f64, ana: f32| {
            let tol = 2e-3 + 2e-2 * num.abs();
            assert!(
                (num - ana as f64).abs() <= tol,
                "{what} {shape:?}: numeric {num}, analytic {ana}"
            );
        };
        for i in (0..len).step_by((len / 20).max(1)) {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            let xi = x.as_slice().unwrap()[i];
            xp.as_slice_mut().unwrap()[i] = xi + h;
            xm.as_slice_mut().unwrap()[i] = xi - h;
            let step = (xp.as_slice().unwrap()[i] - xm.as_slice().unwrap()[i]) as f64;
            let num = (loss(&xp, &gamma, &beta) - loss(&xm, &gamma, &beta)) / step;
            check(&format!("dx[{i}]"), num, gr.dx.as_slice().unwrap()[i]);
        }
        for k in 0..c {
            let (mut gp, mut gm) = (gamma.clone(), gamma.clone());
            gp[k] += h;
            gm[k] -= h;
            let num = (loss(&x, &gp, &beta) - loss(&x, &gm, &beta)) / (gp[k] - gm[k]) as f64;
            check(&format!("dgamma[{k}]"), num, gr.dgamma[k]);
            let (mut bp, mut bm) = (beta.clone(), beta.clone());
            bp[k] += h;
            bm[k] -= h;
            let num = (loss(&x, &gamma, &bp) - loss(&x, &gamma, &bm)) / (bp[k] - bm[k]) as f64;
            check(&format!("dbeta[{k}]"), num, gr.dbeta[k]);
        }
    }
}

fn bn_shape() -> impl Strategy<Value = (Vec<usize>, u64)> {
    prop_oneof![
        (1usize..=70, 1usize..=20).prop_map(|(n, f)| vec![n + 1, f]),
        (1usize..=6, 1usize..=9, 1usize..=13, 1usize..=13).prop_map(|(n, c, h, w)| vec![
            n,
            c,
            h,
            w + 1
        ]),
    ]
    .prop_flat_map(|s| (Just(s), any::<u64>()))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32),
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    })]

    /// GPU vs CPU: both reduce in the same fixed order, so they differ only by fused
    /// multiply-adds and sqrt rounding: 1e-5 abs + 1e-4 rel (gradient sums 1e-4 abs).
    #[test]
    fn gpu_matches_cpu((shape, seed) in bn_shape()) {
        let Some(g) = gpu() else { return Ok(()) };
        let cpu = Backend::cpu();
        let len: usize = shape.iter().product();
        let c = shape[1];
        let x = arr(&shape, &values(seed, len, 2.0, 0.5));
        let dy = arr(&shape, &values(seed ^ 1, len, 1.0, 0.0));
        let gamma = a1(&values(seed ^ 2, c, 0.5, 1.0));
        let beta = a1(&values(seed ^ 3, c, 0.5, 0.0));
        let rm0 = a1(&values(seed ^ 4, c, 0.1, 0.0));
        let rv0 = a1(&values(seed ^ 5, c, 0.4, 1.0));
        let mut out = Vec::new();
        for be in [&cpu, &g] {
            let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
            let t = be.batch_norm_train(&x, &gamma, &beta, &mut rm, &mut rv, MOMENTUM, EPS).unwrap();
            let gr = be.batch_norm_backward(&x, &dy, &gamma, &t.mean, &t.inv_std).unwrap();
            let ye = be.batch_norm_eval(&x, &gamma, &beta, &rm, &rv, EPS).unwrap();
            out.push((t, rm, rv, gr, ye));
        }
        let (c0, g0) = (&out[0], &out[1]);
        assert_close("y", &v(&g0.0.y), &v(&c0.0.y), 1e-5, 1e-4);
        assert_close("mean", g0.0.mean.as_slice().unwrap(), c0.0.mean.as_slice().unwrap(), 1e-5, 1e-4);
        assert_close("inv_std", g0.0.inv_std.as_slice().unwrap(), c0.0.inv_std.as_slice().unwrap(), 1e-5, 1e-4);
        assert_close("running_mean", g0.1.as_slice().unwrap(), c0.1.as_slice().unwrap(), 1e-6, 1e-5);
        assert_close("running_var", g0.2.as_slice().unwrap(), c0.2.as_slice().unwrap(), 1e-6, 1e-5);
        assert_close("dx", &v(&g0.3.dx), &v(&c0.3.dx), 1e-5, 1e-4);
        assert_close("dgamma", g0.3.dgamma.as_slice().unwrap(), c0.3.dgamma.as_slice().unwrap(), 1e-4, 1e-4);
        assert_close("dbeta", g0.3.dbeta.as_slice().unwrap(), c0.3.dbeta.as_slice().unwrap(), 1e-4, 1e-4);
        assert_close("y_eval", &v(&g0.4), &v(&c0.4), 1e-5, 1e-4);
    }
}

/// Every unit walk of the kernels (`cpu::norm::units`: vec4 inside the planes, vec4 across
/// them, single floats) gives the same bits run to run (fixed reduction order, no atomics)
/// and stays within the property test's tolerances of the twin at a larger M.
#[test]
fn unit_walks_are_deterministic_and_match_the_twin() {
    let Some(g) = gpu() else { return };
    let cpu = Backend::cpu();
    for shape in [[16, 8, 14, 14], [16, 8, 7, 7], [16, 3, 7, 7]] {
        let len: usize = shape.iter().product();
        let x = arr(&shape, &values(11, len, 2.0, 0.5));
        let dy = arr(&shape, &values(12, len, 1.0, 0.0));
        let gamma = a1(&values(13, shape[1], 0.5, 1.0));
        let beta = a1(&values(14, shape[1], 0.5, 0.0));
        let run = |be: &Backend| {
            let (mut rm, mut rv) = (a1(&[0.0; 8][..shape[1]]), a1(&[1.0; 8][..shape[1]]));
            let t = be
                .batch_norm_train(&x, &gamma, &beta, &mut rm, &mut rv, MOMENTUM, EPS)
                .unwrap();
            let gr = be
                .batch_norm_backward(&x, &dy, &gamma, &t.mean, &t.inv_std)
                .unwrap();
            let mut out = v(&t.y);
            out.extend(v(&gr.dx));
            out.extend(
                gr.dgamma
                    .iter()
                    .chain(&gr.dbeta)
                    .chain(&t.mean)
                    .chain(&t.inv_std),
            );
            out.extend(rm.iter().chain(&rv));
            out
        };
        let (first, again, twin) = (run(&g), run(&g), run(&cpu));
        let bits = |o: &[f32]| o.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&first), bits(&again), "{shape:?}: GPU runs differ");
        assert_close(&format!("{shape:?} vs twin"), &first, &twin, 1e-4, 1e-4);
    }
}

// ---- graph, plan and executors ----------------------------------------------------------

use wgcnn::exec::{Executor, NamedTensor, Targets};
use wgcnn::graph::Graph;
use wgcnn::nn::{BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, Relu, Sequential};
use wgcnn::plan::Mode;
use wgcnn::Optimizer;

fn labels(seed: u64, n: usize, k: usize) -> Vec<u32> {
    values(seed, n, 1.0, 0.0)
        .iter()
        .map(|v| ((v + 1.0) * 0.5 * k as f32) as u32 % k as u32)
        .collect()
}

/// conv → BatchNorm2d → ReLU → flatten → linear → BatchNorm1d → ReLU → linear → CE.
fn conv_bn_net() -> Graph {
    Sequential::new(&[2, 6, 6])
        .add("c1", Conv2d::new(2, 3, 3).padding(1))
        .add("bn1", BatchNorm2d::new(3))
        .add("r1", Relu)
        .add("flat", Flatten)
        .add("f1", Linear::new(3 * 6 * 6, 8))
        .add("bn2", BatchNorm1d::new(8))
        .add("r2", Relu)
        .add("f2", Linear::new(8, 4))
        .cross_entropy()
        .unwrap()
}

fn named<'a>(list: &'a [NamedTensor], name: &str) -> &'a [f32] {
    &list.iter().find(|(n, _, _)| n == name).expect(name).2
}

#[test]
fn graph_names_init_and_buffers() {
    let g = conv_bn_net();
    let names: Vec<_> = g.params().iter().map(|p| p.name.clone()).collect();
    assert!(names.contains(&"bn1.weight".to_string()) && names.contains(&"bn2.bias".to_string()));
    let bufs: Vec<_> = g.buffers().into_iter().map(|b| b.0).collect();
    assert_eq!(
        bufs,
        [
            "bn1.running_mean",
            "bn1.running_var",
            "bn2.running_mean",
            "bn2.running_var"
        ]
    );
    let mut ex = Executor::new(&Backend::cpu(), &g, 4, Optimizer::sgd(0.1), 1).unwrap();
    let p = ex.parameters().unwrap();
    assert!(named(&p, "bn1.weight").iter().all(|&v| v == 1.0));
    assert!(named(&p, "bn1.bias").iter().all(|&v| v == 0.0));
    let b = ex.buffers().unwrap();
    assert_eq!(named(&b, "bn2.running_mean"), &[0.0; 8]);
    assert_eq!(named(&b, "bn2.running_var"), &[1.0; 8]);
    // wrong channel count is a shape error naming the layer
    let err = Sequential::new(&[2, 6, 6])
        .add("bn", BatchNorm2d::new(3))
        .add("flat", Flatten)
        .add("f", Linear::new(72, 2))
        .cross_entropy()
        .unwrap_err();
    assert!(err.to_string().contains("bn"), "{err}");
}

/// Executor batch norm = functional batch norm: running statistics after a training step
/// (with weight decay, which must not touch them), and eval-mode prediction.
#[test]
fn executor_matches_functional_api_train_and_eval() {
    let graph = Sequential::new(&[3, 4, 4])
        .add("bn", BatchNorm2d::new(3))
        .add("flat", Flatten)
        .add("fc", Linear::new(48, 5))
        .cross_entropy()
        .unwrap();
    let n = 6;
    let x = values(11, n * 48, 2.0, 0.7);
    let y = labels(12, n, 5);
    let xa = arr(&[n, 3, 4, 4], &x);
    let opt = Optimizer::momentum(0.1, 0.9).weight_decay(0.1);
    for (bname, be) in backends() {
        let mut ex = Executor::new(&be, &graph, n, opt, 3).unwrap();
        let p0 = ex.parameters().unwrap();
        ex.train_step(&x, Targets::Classes(&y)).unwrap();
        let (mut rm, mut rv) = (Array1::zeros(3), Array1::ones(3));
        let g1 = a1(named(&p0, "bn.weight"));
        let b1 = a1(named(&p0, "bn.bias"));
        let t = Backend::cpu()
            .batch_norm_train(&xa, &g1, &b1, &mut rm, &mut rv, MOMENTUM, EPS)
            .unwrap();
        let bufs = ex.buffers().unwrap();
        assert_close(
            &format!("{bname} running_mean"),
            named(&bufs, "bn.running_mean"),
            rm.as_slice().unwrap(),
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("{bname} running_var"),
            named(&bufs, "bn.running_var"),
            rv.as_slice().unwrap(),
            1e-6,
            1e-5,
        );
        // train-mode logits from the step = linear(batch-normalised x) with the old params
        let w0 = wgcnn::ndarray::Array2::from_shape_vec((5, 48), named(&p0, "fc.weight").to_vec())
            .unwrap();
        let fb0 = a1(named(&p0, "fc.bias"));
        let yt = t.y.into_shape_with_order((n, 48)).unwrap();
        let want = Backend::cpu().linear(&yt, &w0, Some(&fb0)).unwrap();
        let got = ex.output(n).unwrap();
        assert_close(
            &format!("{bname} train logits"),
            got.as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-5,
            1e-4,
        );
        // eval mode: running statistics and the updated parameters
        let p1 = ex.parameters().unwrap();
        let ye = Backend::cpu()
            .batch_norm_eval(
                &xa,
                &a1(named(&p1, "bn.weight")),
                &a1(named(&p1, "bn.bias")),
                &rm,
                &rv,
                EPS,
            )
            .unwrap()
            .into_shape_with_order((n, 48))
            .unwrap();
        let w1 = wgcnn::ndarray::Array2::from_shape_vec((5, 48), named(&p1, "fc.weight").to_vec())
            .unwrap();
        let want = Backend::cpu()
            .linear(&ye, &w1, Some(&a1(named(&p1, "fc.bias"))))
            .unwrap();
        let got = ex.predict(&x).unwrap();
        assert_close(
            &format!("{bname} eval logits"),
            got.as_slice().unwrap(),
            want.as_slice().unwrap(),
            1e-5,
            1e-4,
        );
        // eval doesn't move the running statistics; one sample alone predicts the same row
        assert_eq!(
            ex.buffers().unwrap(),
            bufs,
            "{bname}: eval changed running stats"
        );
        let one = ex.predict(&x[..48]).unwrap();
        assert_close(
            &format!("{bname} eval single"),
            one.as_slice().unwrap(),
            &got.as_slice().unwrap()[..5],
            1e-6,
            1e-5,
        );
    }
}

/// A conv net with BatchNorm2d and BatchNorm1d trained a few steps on both executors:
/// same losses, parameters and running statistics; eval mode differs from train mode.
#[test]
fn conv_bn_net_trains_gpu_equals_cpu() {
    let graph = conv_bn_net();
    let n = 8;
    let x = values(21, n * 72, 1.0, 0.2);
    let y = labels(22, n, 4);
    let opt = Optimizer::momentum(0.05, 0.9);
    let mut runs = Vec::new();
    for (bname, be) in backends() {
        let mut ex = Executor::new(&be, &graph, n, opt, 5).unwrap();
        let mut losses = Vec::new();
        for _ in 0..6 {
            ex.train_step(&x, Targets::Classes(&y)).unwrap();
            losses.push(ex.take_metrics(Mode::Train).unwrap().loss);
        }
        assert!(
            losses[5] < losses[0],
            "{bname}: loss should fall: {losses:?}"
        );
        ex.eval_batch(&x, Targets::Classes(&y)).unwrap();
        let eval_loss = ex.take_metrics(Mode::Eval).unwrap().loss;
        // train-mode forward of the same batch (one more step) differs from eval mode
        assert!(
            (eval_loss - losses[5]).abs() > 1e-3,
            "{bname}: eval {eval_loss} vs train {losses:?}"
        );
        let bufs = ex.buffers().unwrap();
        assert!(named(&bufs, "bn1.running_var").iter().all(|&v| v != 1.0));
        runs.push((losses, eval_loss, ex.parameters().unwrap(), bufs));
    }
    if runs.len() == 2 {
        let (c, g) = (&runs[0], &runs[1]);
        assert_close("losses", &g.0, &c.0, 1e-4, 1e-3);
        assert_close("eval loss", &[g.1], &[c.1], 1e-4, 1e-3);
        for ((name, _, pc), (_, _, pg)) in c.2.iter().zip(&g.2) {
            assert_close(&format!("param {name}"), pg, pc, 1e-4, 1e-3);
        }
        for ((name, _, bc), (_, _, bg)) in c.3.iter().zip(&g.3) {
            assert_close(&format!("buffer {name}"), bg, bc, 1e-4, 1e-3);
        }
    }
}

/// Running statistics are saved in the checkpoint and restored, so eval after a resume
/// is exactly eval before it.
#[test]
fn checkpoint_keeps_running_stats() {
    let graph = conv_bn_net();
    let n = 8;
    let x = values(31, n * 72, 1.0, 0.2);
    let y = labels(32, n, 4);
    let dir = std::env::temp_dir().join(format!("wgcnn-bn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (bname, be) in backends() {
        let path = dir.join(format!("{bname}.safetensors"));
        let mut ex = Executor::new(&be, &graph, n, Optimizer::adam(1e-2), 9).unwrap();
        for _ in 0..3 {
            ex.train_step(&x, Targets::Classes(&y)).unwrap();
        }
        let before = ex.predict(&x).unwrap();
        wgcnn::train::save_checkpoint(&mut ex, &path, 1, 0).unwrap();
        let mut fresh = Executor::new(&be, &graph, n, Optimizer::adam(1e-2), 123).unwrap();
        wgcnn::train::load_checkpoint(&mut fresh, &path, true).unwrap();
        assert_eq!(fresh.buffers().unwrap(), ex.buffers().unwrap(), "{bname}");
        assert_eq!(
            fresh.predict(&x).unwrap(),
            before,
            "{bname}: eval after resume"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Training on one sample through BatchNorm1d is an error (one value per channel), as in
/// PyTorch; evaluation on one sample is fine.
#[test]
fn single_sample_training_is_an_error() {
    let graph = Sequential::new(&[4])
        .add("bn", BatchNorm1d::new(4))
        .add("fc", Linear::new(4, 2))
        .cross_entropy()
        .unwrap();
    let mut ex = Executor::new(&Backend::cpu(), &graph, 4, Optimizer::sgd(0.1), 0).unwrap();
    let err = ex
        .train_step(&[1.0, 2.0, 3.0, 4.0], Targets::Classes(&[1]))
        .unwrap_err();
    assert!(err.to_string().contains("bn"), "{err}");
    assert_eq!(ex.step_count(), 0);
    ex.predict(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    ex.train_step(
        &[1.0, 2.0, 3.0, 4.0, 0.5, 0.0, 1.0, 2.0],
        Targets::Classes(&[1, 0]),
    )
    .unwrap();
}
