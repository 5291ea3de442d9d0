//! Initialisers (issue 14 item 4): fans as PyTorch computes them, the statistics of every
//! [`Init`] over large tensors, determinism, the default bitwise as before, graph default vs
//! per-layer precedence, and a network initialised with Xavier training on both executors.
//!
//! # Statistical tolerances
//! Every check is a deterministic function of the seed, so it is either always met or never;
//! the bounds are chosen so that a correct sampler meets them by a wide margin (6 standard
//! errors) and a wrong formula does not: for `n` draws of a distribution with standard
//! deviation σ, the sample mean has standard error σ/√n, the sample std (relative)
//! `√((κ−1)/(4n))` with kurtosis κ (3 for a normal, 1.8 for a uniform; 3 used for both),
//! and the fraction of draws within ±σ (0.6827 normal, 1/√3 = 0.5774 uniform) `√(q(1−q)/n)`.
//! A uniform's draws all lie in `[−a, a)`, and the largest |draw| exceeds `a·(1 − 30/n)`
//! unless an event of probability `e^{−15}` happened. The smallest tensor checked has
//! 147,456 elements: a fan off by one group (a factor 2 in variance) moves the std by 41%,
//! 180× the bound.

mod common;

use wgcnn::graph::ParamKind;
use wgcnn::init::{fan_in_and_fan_out, Init};
use wgcnn::nn::{BatchNorm2d, Conv1d, Conv2d, Conv3d, Flatten, Linear, MaxPool2d, Relu};
use wgcnn::nn::{SeparableConv2d, Sequential};
use wgcnn::{Backend, Executor, Graph, Optimizer};

/// `(name, fan_in, fan_out)` of the weights of [`big`], computed by hand:
/// conv `[512, 512, 3, 3]`, gconv `[256, 64, 3, 3]` (groups 8: 512/8 = 64 inputs per
/// group), fc1 `[1000, 256]`, fc `[1000, 1000]`.
const BIG: [(&str, usize, usize); 4] = [
    ("conv.weight", 512 * 9, 512 * 9),
    ("gconv.weight", 64 * 9, 256 * 9),
    ("fc1.weight", 256, 1000),
    ("fc.weight", 1000, 1000),
];

/// A model with a 512×512×3×3 conv, a grouped conv and a 1000×1000 linear layer, every
/// weight under `default` unless `None`.
fn big(default: Option<Init>) -> Graph {
    let mut s = Sequential::new(&[512, 5, 5]);
    if let Some(i) = default {
        s = s.default_init(i);
    }
    s.add("conv", Conv2d::new(512, 512, 3)) // [512,3,3]
        .add("gconv", Conv2d::new(512, 256, 3).groups(8)) // [256,1,1]
        .add("flat", Flatten)
        .add("fc1", Linear::new(256, 1000))
        .add("fc", Linear::new(1000, 1000))
        .cross_entropy()
        .expect("model")
}

fn params(g: &Graph, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut ex = Executor::new(&Backend::cpu(), g, 1, Optimizer::sgd(0.1), seed).expect("ex");
    ex.parameters().expect("params")
}

fn get<'a>(ps: &'a [(String, Vec<usize>, Vec<f32>)], name: &str) -> &'a [f32] {
    &ps.iter().find(|p| p.0 == name).expect(name).2
}

/// The expected distribution: `(std, Some(bound) for a uniform | None for a normal)`.
fn expected(init: Init, fan_in: usize, fan_out: usize) -> (f64, Option<f64>) {
    let (fi, fo) = (fan_in as f64, fan_out as f64);
    let uni = |a: f64| (a / 3f64.sqrt(), Some(a));
    match init {
        Init::PytorchDefault => uni(1.0 / fi.sqrt()),
        Init::Uniform(a) => uni(a as f64),
        Init::XavierUniform => uni((6.0 / (fi + fo)).sqrt()),
        Init::KaimingUniform => uni(2f64.sqrt() * (3.0 / fi).sqrt()),
        Init::Normal(s) => (s as f64, None),
        Init::XavierNormal => ((2.0 / (fi + fo)).sqrt(), None),
        Init::KaimingNormal => (2f64.sqrt() / fi.sqrt(), None),
        c => panic!("{c:?} is not random"),
    }
}

/// Asserts `v` looks drawn from the distribution (see the module docs for the bounds).
fn check_stats(what: &str, v: &[f32], std: f64, bound: Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let s = var.sqrt();
    assert!(
        mean.abs() <= 6.0 * std / n.sqrt(),
        "{what}: mean {mean} (std {std})"
    );
    let rel = (s / std - 1.0).abs();
    assert!(
        rel <= 6.0 * (2.0 / (4.0 * n)).sqrt(),
        "{what}: std {s}, want {std} ({rel:.2e} off)"
    );
    let q = if bound.is_some() {
        1.0 / 3f64.sqrt()
    } else {
        0.682_689_5
    };
    let within = v.iter().filter(|&&x| (x as f64).abs() < std).count() as f64 / n;
    let tol = 6.0 * (q * (1.0 - q) / n).sqrt();
    assert!(
        (within - q).abs() <= tol,
        "{what}: {within} within ±σ, want {q}"
    );
    if let Some(a) = bound {
        let a32 = a as f32;
        let top = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(
            v.iter().all(|&x| (-a32..a32).contains(&x)),
            "{what}: outside ±{a}"
        );
        assert!(
            top as f64 > a * (1.0 - 30.0 / n),
            "{what}: max |x| {top}, bound {a}"
        );
    }
}

#[test]
fn fans_follow_pytorch() {
    assert_eq!(fan_in_and_fan_out(&[512, 512, 3, 3]), Some((4608, 4608)));
    assert_eq!(fan_in_and_fan_out(&[1000, 1000]), Some((1000, 1000)));
    assert_eq!(fan_in_and_fan_out(&[8, 4, 5]), Some((20, 40))); // conv1d
    assert_eq!(fan_in_and_fan_out(&[8, 2, 3, 3, 3]), Some((54, 216))); // conv3d
    assert_eq!(fan_in_and_fan_out(&[7]), None);
    let g = Sequential::new(&[8, 9, 9])
        .add("g", Conv2d::new(8, 16, 3).groups(4)) // [16, 2, 3, 3]
        .add("sep", SeparableConv2d::new(16, 12, 3)) // dw [16,1,3,3], pw [12,16,1,1]
        .add("bn", BatchNorm2d::new(12))
        .add("flat", Flatten)
        .add("fc", Linear::new(12 * 5 * 5, 3))
        .cross_entropy()
        .unwrap();
    let fans: Vec<_> = (0..g.params().len())
        .map(|p| (g.params()[p].name.clone(), g.param_fans(p)))
        .collect();
    let want = [
        ("g.weight", Some((18, 144))),
        ("g.bias", Some((18, 144))),
        ("sep.depthwise.weight", Some((9, 144))),
        ("sep.pointwise.weight", Some((16, 12))),
        ("sep.pointwise.bias", Some((16, 12))),
        ("bn.weight", None),
        ("bn.bias", None),
        ("fc.weight", Some((300, 3))),
        ("fc.bias", Some((300, 3))),
    ];
    assert_eq!(fans.len(), want.len());
    for ((name, f), (wn, wf)) in fans.iter().zip(want) {
        assert_eq!((name.as_str(), *f), (wn, wf));
    }
    assert_eq!(g.param_kind(1), ParamKind::Bias(0));
    assert_eq!(g.param_kind(5), ParamKind::NormWeight);
    let (_, _) = (Conv1d::new(1, 2, 3), Conv3d::new(1, 2, 3));
}

#[test]
fn statistics_of_every_random_init_over_large_tensors() {
    let inits = [
        Init::PytorchDefault,
        Init::Normal(0.1),
        Init::Uniform(0.05),
        Init::XavierUniform,
        Init::XavierNormal,
        Init::KaimingUniform,
        Init::KaimingNormal,
    ];
    for init in inits {
        let g = big(Some(init));
        let ps = params(&g, 7);
        for (name, fi, fo) in BIG {
            let (std, bound) = expected(init, fi, fo);
            check_stats(&format!("{init:?} {name}"), get(&ps, name), std, bound);
        }
        // biases: PyTorch's bias rule (U(±1/√fan_in)) under its default, zeros otherwise
        for (name, fi, _) in BIG {
            let b = get(&ps, &name.replace("weight", "bias"));
            if init == Init::PytorchDefault {
                let a = 1.0 / (fi as f32).sqrt();
                assert!(b.iter().all(|x| (-a..a).contains(x)) && b.iter().any(|&x| x != 0.0));
            } else {
                assert!(
                    b.iter().all(|&x| x == 0.0),
                    "{init:?} {name}: biases not zero"
                );
            }
        }
    }
}

#[test]
fn constant_inits() {
    for (init, v) in [
        (Init::Zeros, 0.0),
        (Init::Ones, 1.0),
        (Init::Constant(-0.25), -0.25),
    ] {
        let g = Sequential::new(&[4, 6, 6])
            .add("c", Conv2d::new(4, 8, 3).init(init).bias_init(init))
            .add("flat", Flatten)
            .add("fc", Linear::new(8 * 16, 3).bias_init(init))
            .cross_entropy()
            .unwrap();
        let ps = params(&g, 1);
        for name in ["c.weight", "c.bias", "fc.bias"] {
            assert!(get(&ps, name).iter().all(|&x| x == v), "{init:?} {name}");
        }
        assert!(
            get(&ps, "fc.weight").iter().any(|&x| x != v),
            "fc.weight keeps its default"
        );
    }
}

#[test]
fn same_seed_same_values_other_seed_other_values() {
    for init in [
        Init::PytorchDefault,
        Init::XavierNormal,
        Init::KaimingUniform,
        Init::Normal(0.1),
    ] {
        let g = Sequential::new(&[3, 8, 8])
            .default_init(init)
            .add("c", Conv2d::new(3, 16, 3))
            .add("flat", Flatten)
            .add("fc", Linear::new(16 * 36, 10).bias_init(Init::Uniform(0.1)))
            .cross_entropy()
            .unwrap();
        let (a, b, c) = (params(&g, 42), params(&g, 42), params(&g, 43));
        assert_eq!(a, b, "{init:?}: same seed");
        for ((name, _, x), (_, _, y)) in a.iter().zip(&c) {
            if name != "c.bias" || init == Init::PytorchDefault {
                assert_ne!(x, y, "{init:?} {name}: another seed gave the same values");
            }
        }
    }
}

/// The PyTorch default as `init_params` drew it before initialisers existed: every
/// parameter `U(±1/√fan_in)` from one `StdRng::seed_from_u64(seed)` stream in parameter
/// order, then batch norm γ = 1, β = 0.
fn legacy(g: &Graph, seed: u64) -> Vec<Vec<f32>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out: Vec<Vec<f32>> = g
        .params()
        .iter()
        .map(|p| {
            let bound = 1.0 / (p.fan_in.max(1) as f32).sqrt();
            (0..p.len())
                .map(|_| rng.random_range(-bound..bound))
                .collect()
        })
        .collect();
    for (i, o) in out.iter_mut().enumerate() {
        match g.param_kind(i) {
            ParamKind::NormWeight => o.fill(1.0),
            ParamKind::NormBias => o.fill(0.0),
            _ => {}
        }
    }
    out
}

#[test]
fn default_is_bitwise_the_legacy_init() {
    let models = [
        wgcnn::nn::lenet5().unwrap(),
        wgcnn::nn::xception_mini(&[1, 28, 28], &[8, 16], 10).unwrap(),
    ];
    for g in models {
        for seed in [0, 3] {
            let got: Vec<Vec<f32>> = params(&g, seed).into_iter().map(|p| p.2).collect();
            let want = legacy(&g, seed);
            for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                let (xb, yb): (Vec<u32>, Vec<u32>) = (
                    x.iter().map(|v| v.to_bits()).collect(),
                    y.iter().map(|v| v.to_bits()).collect(),
                );
                assert_eq!(xb, yb, "{} seed {seed}", g.params()[i].name);
            }
            // an explicit PytorchDefault everywhere is the same
            let mut e = g.clone();
            e.set_default_init(Init::PytorchDefault).unwrap();
            assert_eq!(params(&e, seed), params(&g, seed));
        }
    }
}

#[test]
fn one_layers_init_leaves_the_others_values_alone() {
    let build = |i: Init| {
        Sequential::new(&[1, 28, 28])
            .add("c1", Conv2d::new(1, 6, 5).padding(2).init(i))
            .add("r", Relu)
            .add("s", MaxPool2d::new(2))
            .add("flat", Flatten)
            .add("fc", Linear::new(6 * 14 * 14, 10))
            .cross_entropy()
            .unwrap()
    };
    let (a, b) = (
        params(&build(Init::PytorchDefault), 9),
        params(&build(Init::XavierNormal), 9),
    );
    assert_ne!(a[0], b[0]);
    assert_eq!(a[2..], b[2..], "fc changed with c1's init");
    assert_eq!(
        b[1].2,
        vec![0.0; 6],
        "c1's bias follows its non-PyTorch weight init"
    );
}

#[test]
fn layer_settings_override_the_graph_default() {
    // the graph default is set after the layers: it still applies to those without their own
    let g = Sequential::new(&[3, 8, 8])
        .add("a", Conv2d::new(3, 64, 3).init(Init::KaimingNormal))
        .add("b", Conv2d::new(64, 64, 3).bias_init(Init::Constant(0.5)))
        .add("bn", BatchNorm2d::new(64))
        .add("flat", Flatten)
        .add("fc", Linear::new(64 * 16, 500).init(Init::PytorchDefault))
        .add("out", Linear::new(500, 10))
        .default_init(Init::XavierUniform)
        .cross_entropy()
        .unwrap();
    let names: Vec<(String, Init)> = (0..g.params().len())
        .map(|p| (g.params()[p].name.clone(), g.param_init(p)))
        .collect();
    let want = [
        ("a.weight", Init::KaimingNormal),
        ("a.bias", Init::Zeros),
        ("b.weight", Init::XavierUniform),
        ("b.bias", Init::Constant(0.5)),
        ("bn.weight", Init::Ones),
        ("bn.bias", Init::Zeros),
        ("fc.weight", Init::PytorchDefault),
        ("fc.bias", Init::PytorchDefault),
        ("out.weight", Init::XavierUniform),
        ("out.bias", Init::Zeros),
    ];
    for ((n, i), (wn, wi)) in names.iter().zip(want) {
        assert_eq!((n.as_str(), *i), (wn, wi));
    }
    let ps = params(&g, 5);
    let (std, _) = expected(Init::XavierUniform, 64 * 9, 64 * 9);
    check_stats(
        "b.weight",
        get(&ps, "b.weight"),
        std,
        Some(std * 3f64.sqrt()),
    );
    let (std, _) = expected(Init::PytorchDefault, 1024, 500);
    check_stats(
        "fc.weight",
        get(&ps, "fc.weight"),
        std,
        Some(std * 3f64.sqrt()),
    );
    assert!(get(&ps, "b.bias").iter().all(|&x| x == 0.5));
    assert!(get(&ps, "bn.weight").iter().all(|&x| x == 1.0));
    // a graph-wide bias default, and explicit per-parameter settings
    let mut g2 = g.clone();
    g2.set_default_bias_init(Init::Constant(0.1)).unwrap();
    assert_eq!(g2.param_init(1), Init::Constant(0.1));
    assert_eq!(
        g2.param_init(7),
        Init::Constant(0.1),
        "the bias default beats PyTorch's rule"
    );
    assert_eq!(
        g2.param_init(3),
        Init::Constant(0.5),
        "a layer's bias init beats the default"
    );
    g2.set_param_init(8, Init::Zeros).unwrap();
    assert_eq!(g2.param_init(8), Init::Zeros);
}

#[test]
fn bad_inits_are_typed_errors() {
    let e = Sequential::new(&[4])
        .default_init(Init::Normal(-1.0))
        .add("fc", Linear::new(4, 2))
        .cross_entropy()
        .unwrap_err();
    assert!(matches!(e, wgcnn::Error::InvalidArgument { .. }), "{e}");
    let e = Sequential::new(&[4])
        .add("fc", Linear::new(4, 2).init(Init::Uniform(f32::NAN)))
        .cross_entropy()
        .unwrap_err();
    assert!(e.to_string().contains("Uniform"), "{e}");
    let mut g = Sequential::new(&[2, 4, 4])
        .add("bn", BatchNorm2d::new(2))
        .add("flat", Flatten)
        .add("fc", Linear::new(32, 2))
        .cross_entropy()
        .unwrap();
    let e = g.set_param_init(0, Init::XavierUniform).unwrap_err();
    assert!(e.to_string().contains("bn.weight"), "{e}");
    g.set_param_init(0, Init::Normal(0.02)).unwrap(); // DCGAN's γ ~ N(1, 0.02) without the 1
    assert!(g.set_param_init(99, Init::Zeros).is_err());
}

/// A network under Xavier (default) and Kaiming (one layer) inits trains, and the GPU
/// executor agrees with the CPU one step by step.
#[test]
fn xavier_network_trains_and_executors_agree() {
    let g = Sequential::new(&[1, 12, 12])
        .default_init(Init::XavierUniform)
        .add(
            "c1",
            Conv2d::new(1, 4, 3).padding(1).init(Init::KaimingNormal),
        )
        .add("r1", Relu)
        .add("s1", MaxPool2d::new(2))
        .add("flat", Flatten)
        .add("fc", Linear::new(4 * 36, 5))
        .cross_entropy()
        .unwrap();
    common::executors_agree(&g, 4, 144, 5, 3);
    let mut ex = Executor::new(&Backend::cpu(), &g, 8, Optimizer::adam(0.01), 2).unwrap();
    let x = common::rand01(1, 8 * 144);
    let y = common::labels(2, 8, 5);
    let mut losses = Vec::new();
    for _ in 0..30 {
        ex.train_step(&x, wgcnn::Targets::Classes(&y)).unwrap();
        losses.push(ex.take_metrics(wgcnn::plan::Mode::Train).unwrap().loss);
    }
    assert!(
        losses[29] < 0.5 * losses[0],
        "loss {} → {}",
        losses[0],
        losses[29]
    );
}
