//! Shared test helpers: the backends to test and the tolerance check.
#![allow(dead_code)]

use std::sync::OnceLock;
use wgcnn::Backend;

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
