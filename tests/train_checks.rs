//! Library checks of issue 12: `Executor::output` is bounds-checked, `train::confusion`
//! refuses labels the model has no class for, `train_epoch` refuses a start past the
//! epoch (a resume with other batching) instead of training nothing, loader batches are
//! `Result`s, and the output-path probes name the flag and the path.

mod common;

use std::path::Path;

use wgcnn::data::{Dataset, Loader, Normalize};
use wgcnn::exec::Executor;
use wgcnn::graph::Graph;
use wgcnn::{train, Backend, Error, Optimizer};

/// `x [1, 2, 2] → flatten → linear → 3 classes`.
fn tiny() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", &[1, 2, 2]).unwrap();
    let f = g.flatten("flat", x).unwrap();
    let l = g.linear("fc", f, 3, true).unwrap();
    g.cross_entropy("loss", l).unwrap();
    g
}

fn executor(batch: usize) -> Executor {
    Executor::new(&Backend::cpu(), &tiny(), batch, Optimizer::sgd(0.1), 0).unwrap()
}

#[test]
fn output_is_bounds_checked() {
    let mut ex = executor(4);
    ex.predict(&[0.5; 16]).unwrap();
    assert!(ex.output(4).is_ok());
    for n in [0, 5, 1000] {
        let e = ex.output(n).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert!(e.to_string().contains("1..=4"), "{e}");
    }
}

#[test]
fn confusion_refuses_labels_out_of_range() {
    // labels up to 4, but the model has 3 classes
    let ds = Dataset::new("toy", vec![7; 5 * 4], vec![0, 1, 2, 3, 4], 2, 2, 5).unwrap();
    let loader = Loader::new(&ds, 4, false, 0, Normalize::default()).unwrap();
    let e = train::confusion(&mut executor(4), &loader).unwrap_err();
    assert!(
        e.to_string()
            .contains("label 3 is out of range for the model's 3 classes"),
        "{e}"
    );
    let ok = Dataset::new("toy", vec![7; 4 * 4], vec![0, 1, 2, 1], 2, 2, 3).unwrap();
    let loader = Loader::new(&ok, 4, false, 0, Normalize::default()).unwrap();
    let m = train::confusion(&mut executor(4), &loader).unwrap();
    assert_eq!(m.iter().flatten().sum::<u32>(), 4);
}

#[test]
fn a_start_past_the_epoch_is_an_error_not_an_empty_epoch() {
    let ds = Dataset::new("toy", vec![7; 8 * 4], vec![0, 1, 2, 0, 1, 2, 0, 1], 2, 2, 3).unwrap();
    let loader = Loader::new(&ds, 4, true, 0, Normalize::default()).unwrap();
    let mut ex = executor(4);
    let e = train::train_epoch(&mut ex, &loader, 0, 2, 0, |_, _| true).unwrap_err();
    assert!(
        e.to_string()
            .contains("start batch 2 is past the epoch's 2 batches"),
        "{e}"
    );
    assert_eq!(ex.step_count(), 0);
    let s = train::train_epoch(&mut ex, &loader, 0, 1, 0, |_, _| true).unwrap();
    assert_eq!((s.steps, s.batches_done, s.completed), (1, 2, true));
}

#[test]
fn loader_batches_are_results() {
    let ds = Dataset::new("toy", vec![1; 3 * 4], vec![0, 1, 2], 2, 2, 3).unwrap();
    let loader = Loader::new(&ds, 2, false, 0, Normalize::default()).unwrap();
    let batches: Vec<wgcnn::Result<wgcnn::data::Batch>> = loader.epoch(0).collect();
    assert_eq!(batches.len(), 2);
    assert!(batches.iter().all(|b| b.is_ok()));
}

#[test]
fn output_probes_name_the_flag_and_the_path() {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("train-checks-probe");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let file = d.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let e = train::probe_output_file("--checkpoint", &d)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--checkpoint") && e.contains("is a directory"),
        "{e}"
    );
    let e = train::probe_output_file("--json", &file.join("s.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--json") && e.contains("plain-file") && e.contains("is a file"),
        "{e}"
    );
    let e = train::probe_output_dir("--plot", &file)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--plot") && e.contains("not a directory"), "{e}");
    train::probe_output_file("--checkpoint", &d.join("new/dir/c.safetensors")).unwrap();
    let left: Vec<_> = std::fs::read_dir(d.join("new/dir")).unwrap().collect();
    assert!(left.is_empty(), "the probe left a file behind");
}
