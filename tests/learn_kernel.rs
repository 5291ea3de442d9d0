//! The d2l "learn a kernel" demo (`examples/learn_kernel.rs`): SGD on the squared error
//! recovers the edge detector `[1, −1]` within 1e-3, on the CPU and on the GPU.

mod common;

use std::process::Command;

/// Runs the example on `backend` and returns the max error of the learned kernel it prints.
fn learned_error(backend: &str) -> f32 {
    let bin = common::example_binary("learn_kernel", &["examples"]);
    let out = Command::new(bin)
        .args(["--backend", backend])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("learned kernel"))
        .expect(&text);
    let err = line
        .rsplit("max error ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    err.parse()
        .unwrap_or_else(|_| panic!("no error in {line:?}"))
}

#[test]
fn the_edge_detector_is_learned_on_the_cpu() {
    let e = learned_error("cpu");
    assert!(e < 1e-3, "max error {e}");
}

#[test]
fn the_edge_detector_is_learned_on_the_gpu() {
    if common::gpu().is_none() {
        return;
    }
    let e = learned_error("gpu");
    assert!(e < 1e-3, "max error {e}");
}
