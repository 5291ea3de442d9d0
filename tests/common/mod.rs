//! Shared test helpers: the backends to test and the tolerance check.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::ProptestConfig;
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::Graph;
use wgcnn::plan::Mode;
use wgcnn::{Backend, Optimizer};

/// The GPU backend, created once per test binary.
///
/// Panics (fails the test) when no adapter exists, with the message saying how to get
/// one, unless `WGCNN_SKIP_GPU=1` is set, in which case `None` is returned and the
/// caller tests the CPU path alone.
pub fn gpu() -> Option<Backend> {
    static GPU: OnceLock<Option<Backend>> = OnceLock::new();
    GPU.get_or_init(|| {
        if std::env::var("WGCNN_SKIP_GPU").is_ok_and(|v| v == "1") {
            eprintln!("WGCNN_SKIP_GPU=1: GPU tests are skipped on purpose");
            return None;
        }
        match Backend::gpu() {
            Ok(b) => Some(b),
            Err(e) => panic!("{e}\n(set WGCNN_SKIP_GPU=1 to run the CPU tests alone)"),
        }
    })
    .clone()
}

/// Every backend to run a test body on: the CPU reference, then the GPU.
pub fn backends() -> Vec<(&'static str, Backend)> {
    let mut v = vec![("cpu", Backend::cpu())];
    if let Some(g) = gpu() {
        v.push(("gpu", g));
    }
    v
}

/// Asserts `|got − want| ≤ atol + rtol·|want|` elementwise and returns the worst
/// ratio `|got − want| / (atol + rtol·|want|)` (≤ 1 means within tolerance).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} != {}",
        got.len(),
        want.len()
    );
    let mut worst = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        let err = (g - w).abs();
        assert!(
            err <= tol,
            "{what}: element {i}: got {g}, want {w}, |err| {err} > tol {tol}"
        );
        worst = worst.max(err / tol);
    }
    worst
}

/// Deterministic pseudo-random values in [-1, 1) from a seed (a 64-bit LCG's high bits).
pub fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A named tensor as the executor returns it: `(name, shape, values)`.
pub type Named = (String, Vec<usize>, Vec<f32>);

/// Asserts two lists of named tensors agree: the same count, names and shapes in order,
/// values within `atol + rtol·|want|`; returns the worst ratio.
#[track_caller]
pub fn assert_same_tensors(what: &str, got: &[Named], want: &[Named], atol: f32, rtol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: tensor count");
    let mut worst = 0.0f32;
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g.0, &g.1), (&w.0, &w.1), "{what}: names and shapes");
        worst = worst.max(assert_close(
            &format!("{what} {}", g.0),
            &g.2,
            &w.2,
            atol,
            rtol,
        ));
    }
    worst
}

/// Deterministic values in [0, 1) (see [`values`]).
pub fn rand01(seed: u64, len: usize) -> Vec<f32> {
    values(seed, len).iter().map(|v| (v + 1.0) / 2.0).collect()
}

/// `n` deterministic class labels in `0..k`.
pub fn labels(seed: u64, n: usize, k: u32) -> Vec<u32> {
    rand01(seed, n)
        .iter()
        .map(|v| (v * k as f32) as u32 % k)
        .collect()
}

/// Proptest settings: `PROPTEST_CASES` cases (default `default_cases`), short shrinking.
pub fn proptest_config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_cases),
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    }
}

/// GPU and CPU executors from the same seed: training losses agree within 1e-3 relative
/// over `steps` steps (f32 sums in other orders, compounding through the updates), and so
/// do every gradient and parameter after each step (atol 1e-4, rtol 2e-3) and the
/// evaluation losses afterwards.
pub fn executors_agree(graph: &Graph, n: usize, len: usize, classes: u32, steps: u64) {
    let Some(g) = gpu() else { return };
    let opt = Optimizer::momentum(0.05, 0.9);
    let mut c = Executor::new(&Backend::cpu(), graph, n, opt, 11).unwrap();
    let mut gx = Executor::new(&g, graph, n, opt, 11).unwrap();
    for s in 0..steps {
        let x = rand01(100 + s, n * len);
        let y = labels(200 + s, n, classes);
        c.train_step(&x, Targets::Classes(&y)).unwrap();
        gx.train_step(&x, Targets::Classes(&y)).unwrap();
        let lc = c.take_metrics(Mode::Train).unwrap().loss;
        let lg = gx.take_metrics(Mode::Train).unwrap().loss;
        assert!(lc.is_finite(), "step {s}: loss {lc}");
        assert!(
            (lc - lg).abs() <= 1e-3 * lc.abs().max(1.0),
            "step {s}: cpu loss {lc} vs gpu {lg}"
        );
        let what = format!("step {s} gradients");
        assert_same_tensors(
            &what,
            &gx.gradients().unwrap(),
            &c.gradients().unwrap(),
            1e-4,
            2e-3,
        );
        let what = format!("step {s} parameters");
        assert_same_tensors(
            &what,
            &gx.parameters().unwrap(),
            &c.parameters().unwrap(),
            1e-4,
            2e-3,
        );
    }
    let x = rand01(999, n * len);
    let y = labels(998, n, classes);
    c.eval_batch(&x, Targets::Classes(&y)).unwrap();
    gx.eval_batch(&x, Targets::Classes(&y)).unwrap();
    let lc = c.take_metrics(Mode::Eval).unwrap().loss;
    let lg = gx.take_metrics(Mode::Eval).unwrap().loss;
    assert!(
        (lc - lg).abs() <= 1e-3 * lc.abs().max(1.0),
        "eval: cpu {lc} vs gpu {lg}"
    );
}

/// The example binary `name` that `cargo test` builds beside the test binaries
/// (`target/<profile>/examples/<name>`), refusing one older than the library's sources or
/// `sources` (folders relative to the crate root): `cargo test --test X` alone does not
/// rebuild examples.
pub fn example_binary(name: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --release` (which builds the examples) or `cargo build --release --example {name}`",
        bin.display()
    );
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = [
        "src", "src/ops", "src/exec", "src/gpu", "src/cpu", "src/data", "shaders",
    ];
    for dir in lib.iter().chain(sources) {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            // compiled only with the feature: a default build rightly ignores its changes
            if !cfg!(feature = "distributed") && e.file_name() == "distributed.rs" {
                continue;
            }
            let changed = e.metadata().and_then(|m| m.modified()).unwrap();
            assert!(
                changed <= built,
                "{} is older than {}: rebuild it with `cargo build --release --example {name}`",
                bin.display(),
                e.path().display()
            );
        }
    }
    bin
}

/// Says on the terminal that a hardware-only test did not run here and why. Written to the
/// process's stderr directly, not through `eprintln!`, which the test harness captures (and
/// shows only for failing tests): a skipped feature test must never look like a silent pass.
pub fn did_not_run(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{what}: did not run ({why})");
}
