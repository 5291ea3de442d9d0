//! Crash-consistent checkpoints (issue 12): a checkpoint becomes current by one rename of
//! the model file, which names its optimizer-state generation.
//!
//! * Fault injection: a save that fails at each write, fsync and rename in turn (the
//!   `save_checkpoint_with_faults` seam) leaves the previous checkpoint loadable and
//!   resumable to the same parameters, optimizer state and step, and leaves no new file.
//! * A later successful save removes what a killed writer left (temporary files, older
//!   generations).
//! * The README's promise: the model file holds exactly the model's tensors (PyTorch's
//!   `load_state_dict` sees nothing else).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use wgcnn::checkpoint::{Checkpoint, IoOp};
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::Graph;
use wgcnn::train::{self, RunInfo};
use wgcnn::{Backend, Conv2dParams, Error, Optimizer};

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ckpt-crash-{test}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files(d: &Path) -> BTreeSet<String> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect()
}

fn graph() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", &[1, 6, 6]).unwrap();
    let c = g
        .conv2d("c1", x, 3, [3, 3], Conv2dParams::default(), true)
        .unwrap();
    let f = g.flatten("flat", c).unwrap();
    let l = g.linear("fc", f, 4, true).unwrap();
    g.cross_entropy("loss", l).unwrap();
    g
}

fn executor() -> Executor {
    Executor::new(&Backend::cpu(), &graph(), 4, Optimizer::adam(1e-2), 1).unwrap()
}

fn step(ex: &mut Executor, seed: u32) {
    let x: Vec<f32> = (0..4 * 36)
        .map(|i| ((i as u32 * 7 + seed) % 13) as f32 / 13.0)
        .collect();
    ex.train_step(&x, Targets::Classes(&[0, 1, 2, 3])).unwrap();
}

/// Parameters, optimizer state and step of `ex`.
type State = (
    Vec<(String, Vec<usize>, Vec<f32>)>,
    Vec<(String, Vec<usize>, Vec<f32>)>,
    u64,
);

fn state(ex: &mut Executor) -> State {
    (
        ex.parameters().unwrap(),
        ex.optimizer_state().unwrap(),
        ex.step_count(),
    )
}

fn run() -> RunInfo {
    RunInfo::default().with("batch_size", 4).with("seed", 1)
}

#[test]
fn a_failure_at_each_write_fsync_and_rename_keeps_the_previous_checkpoint() {
    let ops = [IoOp::Write, IoOp::Fsync, IoOp::Rename];
    // the optimizer file's three operations, then the model file's
    for fail_at in 0..6 {
        let d = dir(&format!("fault-{fail_at}"));
        let path = d.join("m.safetensors");
        let mut ex = executor();
        step(&mut ex, 1);
        step(&mut ex, 2);
        train::save_checkpoint_run(&mut ex, &path, 0, 2, &run()).unwrap();
        let saved = state(&mut ex);
        let before = files(&d);
        assert_eq!(
            before.len(),
            2,
            "model + one optimizer generation: {before:?}"
        );
        step(&mut ex, 3);
        let mut seen = Vec::new();
        let r = train::save_checkpoint_with_faults(&mut ex, &path, 0, 3, &run(), &mut |op, _| {
            seen.push(op);
            if seen.len() == fail_at + 1 {
                Err(Error::Io {
                    path: "injected".into(),
                    source: std::io::Error::other(format!("{op:?} failed")),
                })
            } else {
                Ok(())
            }
        });
        let e = r.expect_err("the injected fault fails the save");
        // the error names the checkpoint the user gave, not a temporary file
        assert!(matches!(&e, Error::Io { path: p, .. } if p == &path), "{e}");
        assert!(!e.to_string().contains(".tmp-"), "{e}");
        assert_eq!(seen.last(), Some(&ops[fail_at % 3]), "operation order");
        assert_eq!(
            files(&d),
            before,
            "fault at {fail_at}: no new or missing file"
        );
        let mut fresh = executor();
        let info = train::load_checkpoint(&mut fresh, &path, true).unwrap();
        assert_eq!((info.epoch, info.batch, info.step), (0, 2, 2));
        assert_eq!(
            state(&mut fresh),
            saved,
            "fault at {fail_at}: the previous checkpoint resumes"
        );
        // and the run goes on to the same parameters as the one that never failed
        step(&mut fresh, 3);
        assert_eq!(state(&mut fresh), state(&mut ex));
    }
}

#[test]
fn a_successful_save_removes_what_a_killed_writer_left() {
    let d = dir("strays");
    let path = d.join("m.safetensors");
    let mut ex = executor();
    step(&mut ex, 1);
    train::save_checkpoint(&mut ex, &path, 1, 0).unwrap();
    // what SIGKILL during later saves leaves: a temporary file and an orphaned generation
    std::fs::write(d.join("m.safetensors.tmp-4242-7"), b"torn").unwrap();
    std::fs::write(d.join("m.safetensors.optim-deadbeef"), b"orphan").unwrap();
    std::fs::write(d.join("other.safetensors"), b"not ours").unwrap();
    step(&mut ex, 2);
    train::save_checkpoint(&mut ex, &path, 2, 0).unwrap();
    let left = files(&d);
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains("other.safetensors") && left.contains("m.safetensors"));
    let opt = train::optimizer_path(&path);
    assert!(
        opt.exists() && opt.to_string_lossy().contains(".optim-"),
        "{opt:?}"
    );
    let mut fresh = executor();
    assert_eq!(
        train::load_checkpoint(&mut fresh, &path, true)
            .unwrap()
            .step,
        2
    );
}

#[test]
fn the_model_file_holds_only_the_model() {
    let d = dir("pytorch");
    let path = d.join("m.safetensors");
    let mut ex = executor();
    step(&mut ex, 1);
    train::save_checkpoint_run(&mut ex, &path, 1, 0, &run()).unwrap();
    let c = Checkpoint::load(&path).unwrap();
    let names: Vec<&str> = c.tensors.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["c1.weight", "c1.bias", "fc.weight", "fc.bias"]);
    let meta = train::checkpoint_meta(&path).unwrap();
    assert_eq!(meta.run, run());
    assert_eq!(meta.info.map(|i| i.step), Some(1));
}

#[test]
fn a_weights_only_file_evaluates_but_does_not_resume() {
    let d = dir("weights-only");
    let path = d.join("m.safetensors");
    let mut ex = executor();
    step(&mut ex, 1);
    let mut c = Checkpoint::new();
    for (n, s, v) in ex.parameters().unwrap() {
        c.push(n, s, v).unwrap();
    }
    c.save(&path).unwrap();
    let mut fresh = executor();
    let info = train::load_checkpoint(&mut fresh, &path, false).unwrap();
    assert_eq!((info.epoch, info.step), (0, 0));
    assert_eq!(fresh.parameters().unwrap(), ex.parameters().unwrap());
    let err = train::load_checkpoint(&mut fresh, &path, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weights only") && err.contains("cannot resume"),
        "{err}"
    );
    assert_eq!(train::checkpoint_meta(&path).unwrap().info, None);
}
