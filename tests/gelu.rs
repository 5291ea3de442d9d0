//! GELU (`approximate='none'` and `'tanh'`) and SiLU, added through the one-op recipe:
//!
//! * PyTorch goldens (`tests/golden/gen_gelu.py`) for `y = f(x)` and `dx = dy·f'(x)` on both
//!   backends, through the functional API.
//! * Finite differences of the CPU twin's forward against its derivative.
//! * Fusion into conv and linear outputs like ReLU: the fused producer keeps the
//!   pre-activation (f is not invertible from y), the model has fewer dispatches, and a
//!   training step equals the unfused model's (the activation kept apart by a view) on each
//!   backend; GPU and CPU agree.
//! * The layers `nn::Gelu`, `nn::GeluTanh`, `nn::Silu`.
//!
//! Tolerances: the goldens are held to `atol 2e-6 + rtol 2e-5` — the erf of `Gelu` is
//! Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7 in `1 + erf`, so ≤ 1.1e-7·|x| in y) and
//! `exp`/`tanh` differ from PyTorch's by a few ULP; the measured worst ratios are printed.

mod common;

#[path = "golden/gelu.rs"]
mod golden;

use common::{assert_close, backends, values};
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::{Graph, Op};
use wgcnn::ndarray::{ArrayD, IxDyn};
use wgcnn::nn::{self, Conv2d, Flatten, Linear, Sequential};
use wgcnn::plan::Mode;
use wgcnn::{Activation, Backend, Conv2dParams, Optimizer};

const ACTS: [Activation; 3] = [Activation::Gelu, Activation::GeluTanh, Activation::Silu];

fn arr(v: &[f32]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap()
}

#[test]
fn pytorch_goldens_forward_and_backward() {
    assert_eq!(golden::ACTS.len(), 3);
    let (x, dy) = (arr(golden::X), arr(golden::DY));
    for (be_name, be) in backends() {
        for case in golden::ACTS {
            let y = be.activation(case.act, &x).unwrap();
            let what = format!("{be_name} {} y", case.name);
            let wy = assert_close(&what, y.as_slice().unwrap(), case.y, 2e-6, 2e-5);
            let dx = be.activation_backward(case.act, &x, &dy).unwrap();
            let what = format!("{be_name} {} dx", case.name);
            let wdx = assert_close(&what, dx.as_slice().unwrap(), case.dx, 2e-6, 2e-5);
            eprintln!(
                "{be_name} {}: worst y {wy:.3}, dx {wdx:.3} of tolerance",
                case.name
            );
        }
    }
}

/// `f'(x)` of the CPU twin against `(f(x+h) − f(x−h))/2h`, `h = 1/64` on the golden inputs
/// in [−8, 8]: the truncation error `h²·|f'''|/6` stays below 2e-4 and the f32 rounding of the
/// difference below 2e-5, so `atol 1e-3` leaves margin without hiding a wrong formula.
#[test]
fn finite_differences_cpu() {
    let be = Backend::cpu();
    let xs: Vec<f32> = golden::X
        .iter()
        .copied()
        .filter(|v| v.abs() <= 8.0)
        .collect();
    let h = 1.0 / 64.0;
    let plus: Vec<f32> = xs.iter().map(|v| v + h).collect();
    let minus: Vec<f32> = xs.iter().map(|v| v - h).collect();
    for act in ACTS {
        let fp = be.activation(act, &arr(&plus)).unwrap();
        let fm = be.activation(act, &arr(&minus)).unwrap();
        let fd: Vec<f32> = fp
            .iter()
            .zip(&fm)
            .map(|(a, b)| (a - b) / (2.0 * h))
            .collect();
        let ones = arr(&vec![1.0; xs.len()]);
        let d = be.activation_backward(act, &arr(&xs), &ones).unwrap();
        let w = assert_close(
            &format!("{act:?} f'"),
            d.as_slice().unwrap(),
            &fd,
            1e-3,
            1e-3,
        );
        eprintln!("{act:?}: worst finite-difference ratio {w:.3}");
    }
}

/// `conv → act → flatten → linear → act → linear → CE`; with `apart`, a view between each
/// producer and its activation keeps them unfused.
fn model(act: Activation, apart: bool) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 6, 6]).unwrap();
    let c = g
        .conv2d("c1", x, 3, [3, 3], Conv2dParams::new(1, 1), true)
        .unwrap();
    let c = if apart {
        g.reshape("c1.view", c, &[3, 6, 6]).unwrap()
    } else {
        c
    };
    let a = g.activation("a1", c, act).unwrap();
    let f = g.flatten("flat", a).unwrap();
    let l = g.linear("fc1", f, 8, true).unwrap();
    let l = if apart {
        g.reshape("fc1.view", l, &[8]).unwrap()
    } else {
        l
    };
    let a = g.activation("a2", l, act).unwrap();
    let o = g.linear("fc2", a, 4, true).unwrap();
    g.cross_entropy("loss", o).unwrap();
    g
}

type Trained = (
    f32,
    Vec<(String, Vec<usize>, Vec<f32>)>,
    Vec<(String, Vec<usize>, Vec<f32>)>,
);

/// Two SGD steps (plus a smaller batch); the loss of the first, the last gradients and the
/// final parameters.
fn train(be: &Backend, g: &Graph) -> Trained {
    let (x, y) = (values(11, 5 * 72), vec![0u32, 1, 2, 3, 1]);
    let mut ex = Executor::new(be, g, 5, Optimizer::momentum(0.05, 0.9), 3).unwrap();
    ex.train_step(&x, Targets::Classes(&y)).unwrap();
    let loss = ex.take_metrics(Mode::Train).unwrap().loss;
    ex.train_step(&x, Targets::Classes(&y)).unwrap();
    ex.train_step(&x[..3 * 72], Targets::Classes(&y[..3]))
        .unwrap();
    (loss, ex.gradients().unwrap(), ex.parameters().unwrap())
}

fn assert_same(what: &str, a: &Trained, b: &Trained, atol: f32, rtol: f32) {
    assert_close(&format!("{what} loss"), &[a.0], &[b.0], atol, rtol);
    for (list_a, list_b) in [(&a.1, &b.1), (&a.2, &b.2)] {
        assert_eq!(list_a.len(), list_b.len(), "{what}: tensor count");
        for (ta, tb) in list_a.iter().zip(list_b) {
            assert_eq!((&ta.0, &ta.1), (&tb.0, &tb.1), "{what}: names and shapes");
            assert_close(&format!("{what} {}", ta.0), &ta.2, &tb.2, atol, rtol);
        }
    }
}

#[test]
fn fused_into_conv_and_linear_like_relu() {
    for act in ACTS {
        let (fused, apart) = (model(act, false), model(act, true));
        let cpu = Backend::cpu();
        let ex = Executor::new(&cpu, &fused, 5, Optimizer::sgd(0.1), 0).unwrap();
        let names: Vec<&str> = ex
            .plan()
            .fused
            .iter()
            .map(|&n| fused.node(n).name.as_str())
            .collect();
        assert_eq!(names, ["a1", "a2"], "{act:?}");
        for pre in ["c1.pre", "fc1.pre"] {
            assert!(
                ex.plan().tensors.iter().any(|t| t.name == pre),
                "{act:?}: {pre}"
            );
        }
        let unfused = Executor::new(&cpu, &apart, 5, Optimizer::sgd(0.1), 0).unwrap();
        assert!(unfused.plan().fused.is_empty());
        let (nf, nu) = (ex.steps(5).unwrap().len(), unfused.steps(5).unwrap().len());
        assert_eq!(
            nf + 4,
            nu,
            "{act:?}: two forward and two backward dispatches saved"
        );
        let mut runs = Vec::new();
        for (be_name, be) in backends() {
            let (f, u) = (train(&be, &fused), train(&be, &apart));
            // the same arithmetic in another order of dispatches: equal up to f32 rounding
            assert_same(
                &format!("{be_name} {act:?} fused vs unfused"),
                &f,
                &u,
                1e-5,
                1e-4,
            );
            runs.push(f);
        }
        if let [cpu_run, gpu_run] = &runs[..] {
            assert_same(&format!("{act:?} gpu vs cpu"), gpu_run, cpu_run, 1e-4, 1e-3);
        }
    }
}

#[test]
fn layers_build_their_activation() {
    let g = Sequential::new(&[2, 6, 6])
        .add("c1", Conv2d::new(2, 3, 3))
        .add("g", nn::Gelu)
        .add("flat", Flatten)
        .add("fc", Linear::new(3 * 4 * 4, 8))
        .add("gt", nn::GeluTanh)
        .add("fc2", Linear::new(8, 8))
        .add("s", nn::Silu)
        .add("out", Linear::new(8, 2))
        .cross_entropy()
        .unwrap();
    let acts: Vec<Activation> = g
        .nodes()
        .iter()
        .filter_map(|n| match n.op {
            Op::Activation { act, .. } => Some(act),
            _ => None,
        })
        .collect();
    assert_eq!(acts, ACTS);
}
