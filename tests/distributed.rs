//! Data-parallel training over MPI (`--features distributed`): the MNIST example launched by
//! `mpirun -np 2` on lavapipe, against the single-process run of the same global batch; and
//! a rank that stops answering or dies, which must end the job with an error naming it.
//!
//! Needs Open MPI (`mpirun` on the PATH) and the example built with the feature
//! (`cargo build --release --features distributed --example mnist`). Each `mpirun` runs under
//! `timeout`; lavapipe runs one thread per rank (`LP_NUM_THREADS=1`): on an oversubscribed
//! machine its thread pools otherwise slow each step many times over.
#![cfg(feature = "distributed")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wgcnn::checkpoint::Checkpoint;

/// The `mpirun` tests run one at a time (two ranks each on a small machine).
static SERIAL: Mutex<()> = Mutex::new(());

fn example() -> PathBuf {
    common::example_binary("mnist", &["examples/mnist"])
}

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("distributed-{test}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Training flags shared by every run: 651 images, global batch 64 (10 full batches, then
/// 11 samples: 6 + 5 over two ranks, the weighted mean), one epoch, on the GPU.
fn train_args(ckpt: &Path) -> Vec<String> {
    let a = "--epochs 1 --train-limit 651 --test-limit 128 --batch-size 64 --seed 5 --checkpoint";
    let mut v: Vec<String> = a.split(' ').map(String::from).collect();
    v.push(ckpt.display().to_string());
    v
}

/// `timeout 240 mpirun -np <np> … mnist --distributed <args>`.
fn mpirun(np: usize, args: &[String]) -> Command {
    let mut c = Command::new("timeout");
    c.args(["240", "mpirun", "-np", &np.to_string(), "--oversubscribe"])
        .arg(example())
        .arg("--distributed")
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("LP_NUM_THREADS", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

#[track_caller]
fn ok(o: &Output) -> String {
    let t = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}:\n{t}", o.status.code());
    t
}

/// The parameters of a checkpoint, by name.
fn params(p: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    Checkpoint::load(p).unwrap().tensors
}

/// The largest |a − b| over all parameters, and whether every value is bitwise equal.
fn worst_difference(a: &Path, b: &Path) -> (f32, bool) {
    let (pa, pb) = (params(a), params(b));
    assert_eq!(pa.len(), pb.len());
    let mut worst = (0.0f32, true);
    for ((na, sa, va), (nb, sb, vb)) in pa.iter().zip(&pb) {
        assert_eq!((na, sa), (nb, sb));
        for (x, y) in va.iter().zip(vb) {
            worst.0 = worst.0.max((x - y).abs());
            worst.1 &= x.to_bits() == y.to_bits();
        }
    }
    worst
}

#[test]
fn two_ranks_train_as_one_process_and_reproducibly() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = dir("equal");
    let ck = |n: &str| d.join(format!("{n}.safetensors"));
    // the single process (no MPI), then one rank and twice two ranks
    let single = Command::new(example())
        .args(train_args(&ck("single")))
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("LP_NUM_THREADS", "1")
        .output()
        .unwrap();
    ok(&single);
    ok(&mpirun(1, &train_args(&ck("np1"))).output().unwrap());
    let t = ok(&mpirun(2, &train_args(&ck("np2a"))).output().unwrap());
    assert!(t.contains("ranks:   2 (MPI), a shard of 32 samples"), "{t}");
    assert!(
        t.contains("distributed: 2 ranks, 11 steps; per step: compute"),
        "{t}"
    );
    ok(&mpirun(2, &train_args(&ck("np2b"))).output().unwrap());
    // one rank: the split step is the fused one, bitwise
    let (w1, same1) = worst_difference(&ck("single"), &ck("np1"));
    assert!(same1, "1 rank differs from the single process by {w1:e}");
    // two ranks: bitwise reproducible
    let (w2, same2) = worst_difference(&ck("np2a"), &ck("np2b"));
    assert!(same2, "two 2-rank runs differ by {w2:e}");
    // two ranks vs one process: the same mean gradient summed in another order
    let (w, same) = worst_difference(&ck("single"), &ck("np2a"));
    eprintln!("2 ranks vs 1 process after 11 steps: worst |Δparam| = {w:e} (bitwise: {same})");
    assert!(w <= 1e-5, "2 ranks differ from the single process by {w:e}");
    // interrupted after 4 steps (rank 0 writes the checkpoint), resumed on 2 ranks: bitwise
    // the uninterrupted run
    let mut a = train_args(&ck("np2c"));
    a.extend(["--stop-after".into(), "4".into()]);
    let o = mpirun(2, &a).output().unwrap();
    let t = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(t.contains("interrupted in epoch 1 after batch 4"), "{t}");
    let mut a = train_args(&ck("np2c"));
    a.push("--resume".into());
    let t = ok(&mpirun(2, &a).output().unwrap());
    assert!(t.contains("resumed:") && t.contains("step 4"), "{t}");
    let (w3, same3) = worst_difference(&ck("np2a"), &ck("np2c"));
    assert!(
        same3,
        "an interrupted and resumed 2-rank run differs by {w3:e}"
    );
    // a resume needs the same world size
    let mut a = train_args(&ck("np2a"));
    a[1] = "2".into(); // --epochs
    a.push("--resume".into());
    let o = mpirun(1, &a).output().unwrap();
    let t = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("a run of 2 ranks; this run has 1"), "{t}");
}

#[test]
fn a_global_batch_that_does_not_split_is_refused_naming_both() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let e = wgcnn::distributed::check_global_batch(63, 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("63 samples") && e.contains("2 ranks"), "{e}");
    assert_eq!(wgcnn::distributed::shard(11, 0, 2), 0..6);
    assert_eq!(wgcnn::distributed::shard(11, 1, 2), 6..11);
    let d = dir("split");
    let mut a = train_args(&d.join("ck.safetensors"));
    a[7] = "63".into(); // --batch-size
    let o = mpirun(2, &a).output().unwrap();
    let t = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("--batch-size 63 (the global batch) does not divide evenly over 2 ranks"),
        "{t}"
    );
}

/// Starts a long 2-rank run, waits until rank 0 has built its plan, applies `signal` to rank
/// 1 and returns the job's exit status, output and how long it took to end after the signal.
fn signal_rank_1(test: &str, signal: &str) -> (Option<i32>, String, Duration) {
    let d = dir(test);
    let mut a = train_args(&d.join("ck.safetensors"));
    a[1] = "50".into(); // --epochs: far longer than the test
    a.extend(["--mpi-timeout".into(), "5".into()]);
    let mut child = mpirun(2, &a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        err.lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        out.lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx2.send(l)))
    });
    let (mut text, mut pid1, mut planned) = (String::new(), None, false);
    let start = Instant::now();
    while pid1.is_none() || !planned {
        let Ok(l) = rx.recv_timeout(Duration::from_secs(120)) else {
            panic!("the run ended or hung before training:\n{text}");
        };
        if let Some(p) = l.strip_prefix("rank 1 of 2: pid ") {
            pid1 = Some(p.trim().to_string());
        }
        planned |= l.starts_with("model:");
        text += &(l + "\n");
        assert!(start.elapsed() < Duration::from_secs(180), "{text}");
    }
    std::thread::sleep(Duration::from_secs(2)); // into the training steps
    let pid1 = pid1.unwrap();
    let k = Command::new("kill").args([signal, &pid1]).status().unwrap();
    assert!(k.success(), "kill {signal} {pid1}");
    let t0 = Instant::now();
    let status = child.wait().unwrap();
    let took = t0.elapsed();
    let _ = Command::new("kill")
        .args(["-KILL", &pid1])
        .stderr(Stdio::null())
        .status();
    text.extend(rx.try_iter().map(|l| l + "\n"));
    (status.code(), text, took)
}

/// The lines of `text` that mention rank 1 (for the log).
fn about_rank_1(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("rank 1")).collect();
    lines.join("\n")
}

#[test]
fn a_rank_that_stops_answering_is_named_and_the_job_ends() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (code, text, took) = signal_rank_1("stopped", "-STOP");
    eprintln!("after SIGSTOP, {took:?}:\n{}", about_rank_1(&text));
    assert_ne!(code, Some(0), "{text}");
    assert_ne!(code, Some(124), "timed out instead of aborting:\n{text}");
    assert!(
        text.contains("error: distributed training: rank 1: did not answer within 5.0 s"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(60),
        "ended {took:?} after the stop:\n{text}"
    );
}

#[test]
fn a_rank_that_dies_ends_the_job_naming_it() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (code, text, took) = signal_rank_1("killed", "-KILL");
    eprintln!("after SIGKILL, {took:?}:\n{}", about_rank_1(&text));
    assert_ne!(code, Some(0), "{text}");
    assert_ne!(code, Some(124), "timed out instead of ending:\n{text}");
    // mpirun's report (not the ranks' own "rank 1 of 2: pid" line)
    assert!(text.contains("process rank 1 with PID"), "{text}");
    assert!(
        took < Duration::from_secs(60),
        "ended {took:?} after the kill:\n{text}"
    );
}
