//! The tile autotuner (`gpu::tune`, issue 17 item 2): every candidate tile of a tunable launch
//! gives bitwise the same result (so tuning never changes a number), a first run times the
//! candidates and writes the cache file, a second run on a fresh device reads it — compiling
//! nothing while tuning and choosing the same tiles — and a corrupt cache file is a typed
//! error that leaves the file alone.

mod common;

use std::sync::Arc;

use wgcnn::cpu::matmul::Gemm;
use wgcnn::gpu::GpuContext;
use wgcnn::ops::matmul::{BatchAxis, MatMul};
use wgcnn::ops::{Access, Launch};
use wgcnn::{Backend, Error};

/// A linear layer's three GEMMs (bias, fused ReLU, ones column for the bias gradient).
fn launches(n: usize, inp: usize, out: usize) -> Vec<Arc<dyn Launch>> {
    let relu = (1, 0.0);
    let mut w = Gemm::linear_backward_weight(n, inp, out, relu);
    w.ones_col = true;
    vec![
        Arc::new(MatMul::new(
            Gemm::linear_forward(n, inp, out, relu),
            true,
            BatchAxis::M,
        )),
        Arc::new(MatMul::new(
            Gemm::linear_backward_input(n, inp, out, relu),
            false,
            BatchAxis::M,
        )),
        Arc::new(MatMul::new(w, false, BatchAxis::K)),
    ]
}

fn inputs(l: &dyn Launch) -> Vec<Vec<f32>> {
    l.bindings()
        .iter()
        .enumerate()
        .filter(|(_, b)| b.access != Access::Write)
        .map(|(i, b)| common::rand01(i as u64 + 3, b.len))
        .collect()
}

fn ctx(b: &Backend) -> &Arc<GpuContext> {
    b.gpu_context().expect("a GPU backend")
}

#[test]
fn every_candidate_tile_gives_the_same_bits() {
    let Some(g) = common::gpu() else { return };
    let mut compared = 0;
    for (n, inp, out) in [(7, 33, 10), (64, 400, 120), (5, 84, 10)] {
        for l in launches(n, inp, out) {
            let (key, cands) = l.tile_choices(ctx(&g)).expect("the tiled GEMM is tunable");
            assert!(cands.len() > 1, "{key}: {cands:?}");
            let ins = inputs(l.as_ref());
            let ins: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
            let mut first: Option<Vec<Vec<f32>>> = None;
            for &c in &cands {
                ctx(&g).set_tile(&key, c).unwrap();
                let got = g.run_launch("gemm", l.as_ref(), &ins).unwrap();
                let bits = |v: &[Vec<f32>]| -> Vec<Vec<u32>> {
                    v.iter()
                        .map(|x| x.iter().map(|f| f.to_bits()).collect())
                        .collect()
                };
                match &first {
                    None => first = Some(got),
                    Some(f) => {
                        assert_eq!(bits(&got), bits(f), "{key}: tile {c:?} differs");
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared >= 9, "{compared} comparisons");
}

#[test]
fn a_second_run_reads_the_cache_and_compiles_nothing_while_tuning() {
    let Some(_) = common::gpu() else { return };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("autotune-cache");
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("tiles.json");
    let ls = launches(32, 120, 84);

    let first = Backend::gpu().unwrap();
    let r = ctx(&first).autotune(&ls, &path).unwrap();
    assert_eq!((r.tuned, r.cached), (3, 0), "{r:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["entries"].as_object().unwrap().len(), 3, "{text}");
    let chosen: Vec<_> = ls.iter().map(|l| chosen_tile(&first, l.as_ref())).collect();

    let second = Backend::gpu().unwrap();
    let before = ctx(&second).pipeline_stats().pipelines;
    let r = ctx(&second).autotune(&ls, &path).unwrap();
    assert_eq!((r.tuned, r.cached), (0, 3), "{r:?}");
    assert_eq!(
        ctx(&second).pipeline_stats().pipelines,
        before,
        "tuning compiled pipelines"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "the cache was rewritten"
    );
    let again: Vec<_> = ls
        .iter()
        .map(|l| chosen_tile(&second, l.as_ref()))
        .collect();
    assert_eq!(again, chosen);
}

/// The (TR, TS) a launch is recorded with on `b` now.
fn chosen_tile(b: &Backend, l: &dyn Launch) -> (u32, u32) {
    let call = l.gpu(ctx(b)).unwrap();
    let get = |n: &str| call.consts.iter().find(|c| c.0 == n).map(|c| c.1).unwrap();
    (get("TR"), get("TS"))
}

#[test]
fn a_corrupt_cache_is_a_typed_error_and_is_left_alone() {
    let Some(g) = common::gpu() else { return };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("autotune-corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [
        ("a.json", "{not json"),
        ("b.json", r#"{"version": 7, "entries": {}}"#),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let e = ctx(&g).autotune(&launches(4, 8, 3), &path).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
