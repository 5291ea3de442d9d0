//! Typed errors: one test per user error, asserting the error *kind* (the
//! [`wgcnn::Error`] variant) and that the message names the offending thing; and NaN
//! injection (a diverging run reports [`Error::NonFinite`] naming the step, and the
//! last good checkpoint on disk stays intact and loadable).
//!
//! Executor errors are checked on every backend of [`common::backends`] (the CPU
//! reference path and the GPU); without an adapter the GPU cases fail with a hint
//! unless `WGCNN_SKIP_GPU=1`.

mod common;

use std::path::{Path, PathBuf};

use wgcnn::checkpoint::Checkpoint;
use wgcnn::data::{self, load_mnist_dir, read_idx, Dataset, Loader, Normalize};
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::Graph;
use wgcnn::ndarray::{Array1, Array2, Array4, ArrayD, IxDyn};
use wgcnn::nn::{Conv2d, Flatten, Linear, MaxPool2d, Relu, Sequential};
use wgcnn::plan::Mode;
use wgcnn::{train, Activation, Backend, Conv2dParams, Error, Optimizer, OptimizerKind};

// ---- helpers ---------------------------------------------------------------

/// The variant of an error, for assertion messages and comparisons.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Shape { .. } => "Shape",
        Error::InvalidArgument { .. } => "InvalidArgument",
        Error::TooLarge { .. } => "TooLarge",
        Error::TooManyBindings { .. } => "TooManyBindings",
        Error::NoAdapter { .. } => "NoAdapter",
        Error::Device(_) => "Device",
        Error::OutOfMemory { .. } => "OutOfMemory",
        Error::Shader { .. } => "Shader",
        Error::NonFinite { .. } => "NonFinite",
        Error::Data { .. } => "Data",
        Error::Checkpoint { .. } => "Checkpoint",
        Error::Io { .. } => "Io",
        Error::Distributed { .. } => "Distributed",
        Error::MissingFeature { .. } => "MissingFeature",
    }
}

/// Asserts `r` is an error of variant `want` whose message (`Display`) contains every
/// one of `needles`, and returns the error.
#[track_caller]
fn expect_err<T>(r: wgcnn::Result<T>, want: &str, needles: &[&str]) -> Error {
    let e = match r {
        Ok(_) => panic!("expected Error::{want} mentioning {needles:?}, got Ok"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert_eq!(
        kind(&e),
        want,
        "wrong error kind for {needles:?}: {msg} ({e:?})"
    );
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
    }
    e
}

/// A fresh, empty scratch directory for one test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("errors-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A small classifier on 1×8×8 inputs: conv 1→2 3×3, ReLU, flatten, linear 72→10.
fn tiny() -> Graph {
    Sequential::new(&[1, 8, 8])
        .add("c1", Conv2d::new(1, 2, 3))
        .add("r1", Relu)
        .add("flat", Flatten)
        .add("fc", Linear::new(2 * 6 * 6, 10))
        .cross_entropy()
        .expect("tiny model")
}

/// `n` deterministic 1×8×8 images in [0, 1).
fn tiny_images(n: usize) -> Vec<f32> {
    (0..n * 64)
        .map(|i| ((i * 37) % 101) as f32 / 101.0)
        .collect()
}

/// IDX encoding of unsigned bytes.
fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// Writes the four files of an MNIST-format directory with `n_img` images of 2×2 and
/// `n_lbl` labels (training and test alike).
fn write_mnist_dir(dir: &Path, n_img: u32, n_lbl: u32) {
    for split in ["train", "t10k"] {
        let images = idx_bytes(&[n_img, 2, 2], &vec![7; n_img as usize * 4]);
        let labels = idx_bytes(&[n_lbl], &vec![3; n_lbl as usize]);
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), labels).unwrap();
    }
}

fn bits(ts: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<(String, Vec<u32>)> {
    ts.iter()
        .map(|(n, _, v)| (n.clone(), v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

// ---- model construction --------------------------------------------------------

/// A layer whose input does not match what the previous layer produces: the message
/// names the layer being added, the layer feeding it, and both shapes.
#[test]
fn mismatched_conv_channels_name_both_layers_and_shapes() {
    let r = Sequential::new(&[1, 28, 28])
        .add("c1", Conv2d::new(1, 6, 5).padding(2))
        .add("relu1", Relu)
        .add("c3", Conv2d::new(4, 16, 5))
        .cross_entropy();
    let e = expect_err(
        r,
        "Shape",
        &["c3", "relu1", "4 input channels", "[6, 28, 28]"],
    );
    assert!(
        matches!(e, Error::Shape { ref op, .. } if op == "c3"),
        "{e:?}"
    );
}

#[test]
fn mismatched_linear_features_name_both_layers_and_shapes() {
    let r = Sequential::new(&[1, 28, 28])
        .add("c1", Conv2d::new(1, 6, 5).padding(2))
        .add("s2", MaxPool2d::new(2))
        .add("flatten", Flatten)
        .add("f5", Linear::new(400, 120))
        .cross_entropy();
    // 6 × 14 × 14 = 1176 features arrive where 400 are expected
    let e = expect_err(r, "Shape", &["f5", "flatten", "400", "[1176]"]);
    assert!(
        matches!(e, Error::Shape { ref op, .. } if op == "f5"),
        "{e:?}"
    );
}

#[test]
fn linear_on_unflattened_input_names_both_layers() {
    let r = Sequential::new(&[1, 8, 8])
        .add("c1", Conv2d::new(1, 2, 3))
        .add("fc", Linear::new(72, 10))
        .cross_entropy();
    expect_err(r, "Shape", &["fc", "'c1'", "[2, 6, 6]"]);
}

#[test]
fn residual_add_of_different_shapes_names_both_operands() {
    let mut g = Graph::new();
    let x = g.input("x", &[1, 8, 8]).unwrap();
    let a = g
        .conv2d("a", x, 4, [3, 3], Conv2dParams::new(1, 1), true)
        .unwrap();
    let b = g
        .conv2d("b", x, 4, [3, 3], Conv2dParams::default(), true)
        .unwrap();
    expect_err(
        g.add("res", a, b),
        "Shape",
        &["res", "'a' [4, 8, 8]", "'b' [4, 6, 6]"],
    );
}

#[test]
fn kernel_larger_than_the_layer_input_names_the_layer_and_input() {
    let r = Sequential::new(&[1, 4, 4])
        .add("big", Conv2d::new(1, 2, 5))
        .cross_entropy();
    expect_err(r, "Shape", &["big", "'input'", "[1, 4, 4]", "5x5"]);
}

// ---- batches ---------------------------------------------------------------------

#[test]
fn executor_batch_size_zero() {
    for (name, be) in common::backends() {
        let r = Executor::new(&be, &tiny(), 0, Optimizer::sgd(0.1), 0);
        let e = expect_err(r, "InvalidArgument", &["batch size", "at least 1"]);
        eprintln!("{name}: {e}");
    }
}

#[test]
fn loader_batch_size_zero() {
    let ds = Dataset::new("toy", vec![0; 8], vec![0, 1], 2, 2, 10).unwrap();
    let e = expect_err(
        Loader::new(&ds, 0, true, 0, Normalize::default()),
        "InvalidArgument",
        &["Loader::new", "batch_size"],
    );
    assert!(e.to_string().contains("at least 1"), "{e}");
}

/// A batch larger than the plan is refused by training, evaluation and prediction,
/// and a refused training step does not count as a step.
#[test]
fn batch_larger_than_the_plan() {
    for (name, be) in common::backends() {
        let mut ex = Executor::new(&be, &tiny(), 4, Optimizer::sgd(0.1), 0).unwrap();
        let images = tiny_images(5);
        let labels = [1u32; 5];
        let needles = ["5 samples", "at most 4"];
        expect_err(
            ex.train_step(&images, Targets::Classes(&labels)),
            "InvalidArgument",
            &needles,
        );
        expect_err(
            ex.eval_batch(&images, Targets::Classes(&labels)),
            "InvalidArgument",
            &needles,
        );
        expect_err(ex.predict(&images), "InvalidArgument", &needles);
        assert_eq!(ex.step_count(), 0, "{name}: a refused step was counted");
        // the executor still works with a valid batch afterwards
        ex.train_step(&tiny_images(4), Targets::Classes(&[0, 1, 2, 3]))
            .unwrap();
        assert_eq!(ex.take_metrics(Mode::Train).unwrap().samples, 4, "{name}");
    }
}

#[test]
fn input_not_a_whole_number_of_samples() {
    for (_, be) in common::backends() {
        let mut ex = Executor::new(&be, &tiny(), 4, Optimizer::sgd(0.1), 0).unwrap();
        let images = vec![0.5f32; 64 * 2 + 3];
        expect_err(
            ex.train_step(&images, Targets::Classes(&[0, 0])),
            "Shape",
            &["131 input values", "[1, 8, 8]"],
        );
        expect_err(ex.predict(&[]), "Shape", &["0 input values"]);
    }
}

#[test]
fn wrong_number_of_labels() {
    for (name, be) in common::backends() {
        let mut ex = Executor::new(&be, &tiny(), 4, Optimizer::sgd(0.1), 0).unwrap();
        let images = tiny_images(4);
        expect_err(
            ex.train_step(&images, Targets::Classes(&[0, 1, 2])),
            "Shape",
            &["targets", "3 labels for 4 samples"],
        );
        expect_err(
            ex.eval_batch(&images, Targets::Classes(&[0, 1, 2, 3, 4])),
            "Shape",
            &["5 labels for 4 samples"],
        );
        // dense targets for a cross-entropy model are refused too
        expect_err(
            ex.train_step(&images, Targets::Values(&[0.0; 40])),
            "InvalidArgument",
            &["Targets::Classes"],
        );
        assert_eq!(ex.step_count(), 0, "{name}");
    }
}

#[test]
fn label_out_of_range() {
    for (name, be) in common::backends() {
        let mut ex = Executor::new(&be, &tiny(), 4, Optimizer::sgd(0.1), 0).unwrap();
        let before = bits(&ex.parameters().unwrap());
        let e = expect_err(
            ex.train_step(&tiny_images(4), Targets::Classes(&[0, 1, 10, 2])),
            "InvalidArgument",
            &["class 10", "10 outputs"],
        );
        eprintln!("{name}: {e}");
        assert_eq!(ex.step_count(), 0, "{name}");
        assert_eq!(
            bits(&ex.parameters().unwrap()),
            before,
            "{name}: a refused step changed the parameters"
        );
    }
    // the data layer refuses out-of-range labels before they reach an executor
    expect_err(
        Dataset::new("toy", vec![0; 8], vec![3, 12], 2, 2, 10),
        "Data",
        &["label 12", "index 1", "< 10"],
    );
}

// ---- optimizer -------------------------------------------------------------------

#[test]
fn unknown_optimizer_name() {
    let e = expect_err(
        OptimizerKind::parse("adagrad"),
        "InvalidArgument",
        &["'adagrad'", "sgd|momentum|nesterov|rmsprop|adam|adamw"],
    );
    assert!(matches!(e, Error::InvalidArgument { ref op, .. } if op == "optimizer"));
    expect_err(OptimizerKind::parse(""), "InvalidArgument", &["''"]);
    // names are case-insensitive
    assert_eq!(OptimizerKind::parse("AdamW").unwrap(), OptimizerKind::AdamW);
}

#[test]
fn learning_rate_not_finite() {
    for lr in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.1] {
        expect_err(
            Optimizer::sgd(lr).validate(),
            "InvalidArgument",
            &["lr", &format!("{lr}")],
        );
        expect_err(
            Optimizer::adam(lr).validate(),
            "InvalidArgument",
            &["lr must be finite"],
        );
    }
    expect_err(
        Optimizer::momentum(0.1, f32::NAN).validate(),
        "InvalidArgument",
        &["momentum", "NaN"],
    );
    for (name, be) in common::backends() {
        expect_err(
            Executor::new(&be, &tiny(), 2, Optimizer::sgd(f32::NAN), 0),
            "InvalidArgument",
            &["lr", "NaN"],
        );
        let mut ex = Executor::new(&be, &tiny(), 2, Optimizer::sgd(0.25), 0).unwrap();
        expect_err(ex.set_lr(f32::INFINITY), "InvalidArgument", &["lr", "inf"]);
        expect_err(ex.set_lr(f32::NAN), "InvalidArgument", &["lr", "NaN"]);
        assert_eq!(ex.optimizer().lr, 0.25, "{name}: a refused lr was kept");
        ex.set_lr(0.5).unwrap();
        assert_eq!(ex.optimizer().lr, 0.5, "{name}");
    }
}

// ---- checkpoints -----------------------------------------------------------------

/// A checkpoint that doesn't match the model lists missing, extra and mis-shaped
/// tensors by name, and leaves the executor untouched.
#[test]
fn checkpoint_that_does_not_match_the_model() {
    let dir = scratch_dir("ckpt-mismatch");
    let path = dir.join("other.safetensors");
    let mut c = Checkpoint::new();
    c.push("c1.weight", vec![3, 1, 3, 3], vec![0.0; 27])
        .unwrap(); // model: [2, 1, 3, 3]
    c.push("fc.weight", vec![10, 72], vec![0.0; 720]).unwrap();
    c.push("fc.bias", vec![10], vec![0.0; 10]).unwrap();
    c.push("bn.running_mean", vec![2], vec![0.0; 2]).unwrap(); // not in the model
    for (k, v) in [("epoch", "1"), ("batch", "0"), ("step", "5")] {
        c.metadata.insert(k.into(), v.into());
    }
    c.save(&path).unwrap();
    for (name, be) in common::backends() {
        let mut ex = Executor::new(&be, &tiny(), 2, Optimizer::sgd(0.1), 3).unwrap();
        let before = bits(&ex.parameters().unwrap());
        let e = expect_err(
            train::load_checkpoint(&mut ex, &path, false),
            "Checkpoint",
            &[
                "missing tensors: c1.bias",
                "unexpected tensors: bn.running_mean",
                "shape mismatches: c1.weight (checkpoint [3, 1, 3, 3], model [2, 1, 3, 3])",
                "other.safetensors",
            ],
        );
        eprintln!("{name}: {e}");
        assert_eq!(bits(&ex.parameters().unwrap()), before, "{name}");
        assert_eq!(ex.step_count(), 0, "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A checkpoint of another architecture, as a user would produce it.
#[test]
fn checkpoint_of_another_model() {
    let dir = scratch_dir("ckpt-other-model");
    let path = dir.join("lenet.safetensors");
    let mut lenet = Executor::new(
        &Backend::cpu(),
        &wgcnn::nn::lenet5().unwrap(),
        2,
        Optimizer::sgd(0.1),
        0,
    )
    .unwrap();
    train::save_checkpoint(&mut lenet, &path, 1, 0).unwrap();
    let mut ex = Executor::new(&Backend::cpu(), &tiny(), 2, Optimizer::sgd(0.1), 0).unwrap();
    expect_err(
        train::load_checkpoint(&mut ex, &path, true),
        "Checkpoint",
        &[
            "missing tensors: fc.weight, fc.bias",
            "unexpected tensors: c3.weight, c3.bias, f5.weight",
            "f7.bias",
            "shape mismatches: c1.weight (checkpoint [6, 1, 5, 5], model [2, 1, 3, 3])",
            "c1.bias (checkpoint [6], model [2])",
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Truncated and corrupted checkpoints are `Error::Checkpoint` naming the file; a
/// missing optimizer file is `Error::Io` naming it.
#[test]
fn truncated_or_corrupted_checkpoint() {
    let dir = scratch_dir("ckpt-corrupt");
    let good = dir.join("good.safetensors");
    let mut ex = Executor::new(&Backend::cpu(), &tiny(), 2, Optimizer::adam(1e-3), 1).unwrap();
    train::save_checkpoint(&mut ex, &good, 1, 0).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "truncated file"),
        ("len-only", bytes[..5].to_vec(), "truncated file"),
        (
            "half-header",
            bytes[..8 + header_len / 2].to_vec(),
            "truncated file",
        ),
        (
            "half-data",
            bytes[..8 + header_len + (bytes.len() - 8 - header_len) / 2].to_vec(),
            "truncated or corrupt",
        ),
        (
            "one-byte-short",
            bytes[..bytes.len() - 1].to_vec(),
            "data offsets",
        ),
        (
            "trailing",
            [bytes.as_slice(), &[0, 0, 0, 0]].concat(),
            "trailing or missing data",
        ),
        (
            "huge-header-len",
            [&u64::MAX.to_le_bytes()[..], &bytes[8..]].concat(),
            "exceeds the limit",
        ),
        (
            "not-json",
            {
                let mut b = bytes.clone();
                b[8] = b'#';
                b
            },
            "invalid JSON",
        ),
        (
            "not-utf8",
            {
                let mut b = bytes.clone();
                b[9] = 0xff;
                b
            },
            "not UTF-8",
        ),
    ];
    for (what, data, needle) in cases {
        let path = dir.join(format!("{what}.safetensors"));
        std::fs::write(&path, &data).unwrap();
        let mut fresh =
            Executor::new(&Backend::cpu(), &tiny(), 2, Optimizer::adam(1e-3), 2).unwrap();
        let e = expect_err(
            train::load_checkpoint(&mut fresh, &path, true),
            "Checkpoint",
            &[needle, &format!("{what}.safetensors")],
        );
        eprintln!("{what}: {e}");
    }

    // the model file is intact but its optimizer file is missing or truncated
    // (a copy of the model naming an optimizer generation that was never written)
    let lone = dir.join("lone.safetensors");
    let mut c = Checkpoint::load(&good).unwrap();
    c.metadata
        .insert("optimizer_file".into(), "lone.safetensors.optim-1".into());
    c.save(&lone).unwrap();
    let mut fresh = Executor::new(&Backend::cpu(), &tiny(), 2, Optimizer::adam(1e-3), 2).unwrap();
    expect_err(
        train::load_checkpoint(&mut fresh, &lone, true),
        "Io",
        &["lone.safetensors.optim"],
    );
    let optim = std::fs::read(train::optimizer_path(&good)).unwrap();
    std::fs::write(train::optimizer_path(&lone), &optim[..optim.len() / 3]).unwrap();
    expect_err(
        train::load_checkpoint(&mut fresh, &lone, true),
        "Checkpoint",
        &["lone.safetensors.optim", "truncated"],
    );
    // ... or from another step (an interrupted write)
    let mut later = Executor::new(&Backend::cpu(), &tiny(), 2, Optimizer::adam(1e-3), 1).unwrap();
    later
        .train_step(&tiny_images(2), Targets::Classes(&[1, 2]))
        .unwrap();
    let other = dir.join("later.safetensors");
    train::save_checkpoint(&mut later, &other, 1, 0).unwrap();
    std::fs::copy(train::optimizer_path(&other), train::optimizer_path(&lone)).unwrap();
    expect_err(
        train::load_checkpoint(&mut fresh, &lone, true),
        "Checkpoint",
        &["step 1", "step 0", "lone.safetensors.optim"],
    );
    // metadata without the epoch written by save_checkpoint
    let mut c = Checkpoint::load(&good).unwrap();
    c.metadata.remove("epoch");
    let no_epoch = dir.join("no-epoch.safetensors");
    c.save(&no_epoch).unwrap();
    expect_err(
        train::load_checkpoint(&mut fresh, &no_epoch, false),
        "Checkpoint",
        &["'epoch'", "no-epoch.safetensors"],
    );
    // none of this touched the executor
    assert_eq!(fresh.step_count(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

// ---- data ------------------------------------------------------------------------

#[test]
fn idx_bad_magic() {
    let dir = scratch_dir("idx-magic");
    let path = dir.join("bad-magic-idx1-ubyte");
    let mut b = idx_bytes(&[3], &[1, 2, 3]);
    b[0] = 0x1a;
    std::fs::write(&path, &b).unwrap();
    let e = expect_err(read_idx(&path), "Data", &["bad magic", "1a 00 08 01"]);
    assert!(matches!(e, Error::Data { ref path, .. } if path.ends_with("bad-magic-idx1-ubyte")));
    // an IDX of another element type is named
    b[0] = 0;
    b[2] = 0x0d;
    std::fs::write(&path, &b).unwrap();
    expect_err(read_idx(&path), "Data", &["0x0d", "f32"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn idx_truncated_data() {
    let dir = scratch_dir("idx-truncated");
    let path = dir.join("short-idx3-ubyte");
    std::fs::write(&path, idx_bytes(&[2, 3, 3], &[9; 10])).unwrap();
    expect_err(
        read_idx(&path),
        "Data",
        &[
            "truncated payload",
            "18 bytes",
            "got 10",
            "short-idx3-ubyte",
        ],
    );
    // the same, gzip-compressed, and a gzip stream cut short
    let raw = idx_bytes(&[2, 3, 3], &[9; 18]);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &raw[..raw.len() - 8]).unwrap();
    std::fs::write(&path, enc.finish().unwrap()).unwrap();
    expect_err(
        read_idx(&path),
        "Data",
        &["truncated payload", "got 10", "gzip"],
    );
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    let gz = enc.finish().unwrap();
    std::fs::write(&path, &gz[..gz.len() - 6]).unwrap();
    expect_err(read_idx(&path), "Data", &["gzip", "short-idx3-ubyte"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Wrong counts: a label file that doesn't have one label per image, and a header
/// whose dimensions claim more than the maximum.
#[test]
fn idx_wrong_counts() {
    let dir = scratch_dir("idx-counts");
    write_mnist_dir(&dir, 5, 4);
    expect_err(
        load_mnist_dir(&dir, "mnist"),
        "Data",
        &[
            "count mismatch",
            "4 labels",
            "5 images",
            "train-labels-idx1-ubyte",
        ],
    );
    let huge = idx_bytes(&[u32::MAX, u32::MAX, 2], &[0; 16]);
    expect_err(
        data::parse_idx(&huge, Path::new("huge.idx")),
        "Data",
        &["more than the maximum", "huge.idx"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn data_directory_that_does_not_exist() {
    let dir = scratch_dir("no-dir").join("no/such/mnist");
    let e = expect_err(
        load_mnist_dir(&dir, "mnist"),
        "Data",
        &["does not exist", "no/such/mnist"],
    );
    assert!(matches!(e, Error::Data { ref path, .. } if *path == dir));
    // a file where a directory is expected
    let file = scratch_dir("not-a-dir").join("file");
    std::fs::write(&file, b"x").unwrap();
    expect_err(load_mnist_dir(&file, "mnist"), "Data", &["not a directory"]);
    // a directory with the files missing lists the names tried
    let empty = scratch_dir("empty-dir");
    expect_err(
        load_mnist_dir(&empty, "mnist"),
        "Data",
        &["missing dataset file", "train-images-idx3-ubyte.gz"],
    );
    // a missing IDX file is an I/O error naming it
    expect_err(
        read_idx(&empty.join("gone-idx1-ubyte")),
        "Io",
        &["gone-idx1-ubyte"],
    );
}

// ---- device limits ---------------------------------------------------------------

/// A plan whose activations exceed the device's binding limit is refused with
/// `Error::TooLarge` before anything is allocated, and so is a functional call on a
/// tensor past the limit (when the limit is small enough to build such an array).
#[test]
fn tensor_too_large_for_the_device() {
    let Some(gpu) = common::gpu() else {
        return;
    };
    let limits = gpu.gpu_context().expect("gpu").limits().clone();
    let lim = limits.max_storage_buffer_binding_size;
    eprintln!(
        "max_storage_buffer_binding_size = {lim}, max_buffer_size = {}",
        limits.max_buffer_size
    );

    // Graph: c1's output is 2·6·6 floats (288 bytes) per sample, the largest tensor.
    let per_sample = 2 * 6 * 6 * 4;
    let batch = (lim / per_sample + 1) as usize;
    let t = std::time::Instant::now();
    let r = Executor::new(&gpu, &tiny(), batch, Optimizer::sgd(0.1), 0);
    let e = expect_err(r, "TooLarge", &["max_storage_buffer_binding_size"]);
    let Error::TooLarge {
        ref tensor,
        bytes,
        limit,
        ..
    } = e
    else {
        unreachable!()
    };
    eprintln!("batch {batch}: {e} (in {:.2} s)", t.elapsed().as_secs_f64());
    assert_eq!(limit, lim);
    assert!(bytes > lim, "{e}");
    assert!(!tensor.is_empty(), "{e}");
    // a refused plan allocated nothing: the same context still trains a normal model
    let mut ok = Executor::new(&gpu, &tiny(), 2, Optimizer::sgd(0.1), 0).unwrap();
    ok.train_step(&tiny_images(2), Targets::Classes(&[0, 1]))
        .unwrap();
    ok.take_metrics(Mode::Train).unwrap();

    // Functional API: only when an array past the limit is affordable (≤ 1 GiB).
    if lim < (1 << 30) {
        // Elementwise ops split a tensor past the limit into chunks that fit ...
        let len = (lim / 4 + 1) as usize;
        let x = ArrayD::<f32>::from_shape_fn(IxDyn(&[len]), |i| {
            if i[0] % 3 == 0 {
                -1.0
            } else {
                i[0] as f32
            }
        });
        let y = gpu.activation(Activation::Relu, &x).unwrap();
        assert_eq!(y[[0]], 0.0);
        assert_eq!(
            y[[len - 1]],
            if (len - 1).is_multiple_of(3) {
                0.0
            } else {
                (len - 1) as f32
            }
        );
        assert_eq!(y, Backend::cpu().activation(Activation::Relu, &x).unwrap());
        drop((x, y));
        // ... and batched ops split along the batch when each sample fits,
        let side = 2048usize;
        let outs = (lim / (side * side * 4) as u64 / 2).max(1) as usize;
        let n = 3;
        let x = Array4::<f32>::from_shape_fn((n, 1, side, side), |(s, _, h, w)| {
            (s + h + w) as f32 * 1e-3
        });
        let w = Array4::<f32>::from_shape_fn((outs, 1, 1, 1), |(o, ..)| 1.0 + o as f32);
        assert!(
            (n * outs * side * side * 4) as u64 > lim,
            "the test needs an output past the limit"
        );
        let yg = gpu.conv2d(&x, &w, None, Conv2dParams::default()).unwrap();
        let yc = Backend::cpu()
            .conv2d(&x, &w, None, Conv2dParams::default())
            .unwrap();
        assert_eq!(yg, yc);
        drop((x, w, yg, yc));
        // ... but one sample whose conv output alone is past the limit can't be split.
        let side = 4096usize;
        let outs = (lim / (side * side * 4) as u64 + 1) as usize;
        let x = Array4::<f32>::zeros((1, 1, side, side));
        let w = Array4::<f32>::zeros((outs, 1, 1, 1));
        expect_err(
            gpu.conv2d(&x, &w, None, Conv2dParams::default()),
            "TooLarge",
            &["conv2d", "'y'", "max_storage_buffer_binding_size"],
        );
    } else {
        eprintln!("limit {lim} > 1 GiB: functional TooLarge check covered by the plan above");
    }
}

/// The `TooLarge` error of a plan names the graph tensor that does not fit (`c1`,
/// the convolution's output, 288 bytes per sample), not only a pooled buffer.
///
/// (Regression: `GpuExec::new` once checked only the pooled buffers and named
/// `'activation buffer #0'`.)
#[test]
fn too_large_plan_names_the_graph_tensor() {
    let Some(gpu) = common::gpu() else {
        return;
    };
    let lim = gpu
        .gpu_context()
        .expect("gpu")
        .limits()
        .max_storage_buffer_binding_size;
    let batch = (lim / (2 * 6 * 6 * 4) + 1) as usize;
    let plan = wgcnn::plan::Plan::new(&tiny(), batch).unwrap();
    let too_big: Vec<&str> = plan
        .tensors
        .iter()
        .filter(|t| matches!(t.home, wgcnn::plan::Home::Arena(_)))
        .filter(|t| (t.len(batch) * 4) as u64 > lim)
        .map(|t| t.name.as_str())
        .collect();
    assert!(too_big.contains(&"c1"), "{too_big:?}");
    let e = expect_err(
        Executor::new(&gpu, &tiny(), batch, Optimizer::sgd(0.1), 0),
        "TooLarge",
        &["max_storage_buffer_binding_size"],
    );
    let Error::TooLarge { ref tensor, .. } = e else {
        unreachable!()
    };
    assert!(
        too_big
            .iter()
            .any(|t| tensor.contains(&format!("'{t}'")) || tensor == t),
        "{e} names none of the tensors past the limit {too_big:?}"
    );
}

/// A batch so large that `per_sample · batch` overflows `usize` must be refused, not
/// wrapped into a small plan. `(1 << 62) + 1` samples of the 64-float input wrap to 64
/// floats, and `Executor::new` accepted the plan.
///
/// (Regression: `Tensor::len` and `bytes_of_len` once multiplied unchecked; `Plan::new`
/// now refuses such batches.)
#[test]
fn absurd_batch_is_refused() {
    for b in [usize::MAX, usize::MAX / 64 + 1, (1usize << 62) + 1] {
        let r = wgcnn::plan::Plan::new(&tiny(), b).map(|_| ());
        expect_err(r, "TooLarge", &["plan"]);
        if let Some(gpu) = common::gpu() {
            let r = Executor::new(&gpu, &tiny(), b, Optimizer::sgd(0.1), 0).map(|_| ());
            expect_err(r, "TooLarge", &[]);
        }
    }
}

/// Padding so large that `h + 2·pad` overflows must be refused, not wrapped: with
/// padding 2⁶³ a 4×4 input and a 3×3 kernel gave a 2×2 output.
///
/// (Regression: the output-size math once computed `h + 2 * ph` unchecked.)
#[test]
fn huge_padding_is_refused() {
    let half = 1usize << (usize::BITS - 1);
    for (_, be) in common::backends() {
        let x = Array4::<f32>::ones((1, 1, 4, 4));
        let w = Array4::<f32>::ones((1, 1, 3, 3));
        for p in [half, half + 1, usize::MAX] {
            let prm = Conv2dParams::new2([1, 1], [p, 0]);
            expect_err(
                be.conv2d(&x, &w, None, prm),
                "InvalidArgument",
                &["padding"],
            );
            let pool = wgcnn::Pool2dParams {
                kernel: [2, 2],
                stride: [1, 1],
                padding: [0, p],
            };
            expect_err(be.max_pool2d(&x, pool), "InvalidArgument", &["padding"]);
        }
    }
}

// ---- functional API shape errors -------------------------------------------------

#[test]
fn functional_conv2d_channel_mismatch() {
    for (_, be) in common::backends() {
        let x = Array4::<f32>::ones((1, 3, 8, 8));
        let w = Array4::<f32>::ones((4, 2, 3, 3));
        expect_err(
            be.conv2d(&x, &w, None, Conv2dParams::default()),
            "Shape",
            &["conv2d", "3 channels", "expects 2"],
        );
        let w = Array4::<f32>::ones((4, 3, 3, 3));
        let b = Array1::<f32>::ones(5);
        expect_err(
            be.conv2d(&x, &w, Some(&b), Conv2dParams::default()),
            "Shape",
            &["bias has 5 elements, expected 4"],
        );
    }
}

#[test]
fn functional_stride_zero() {
    for (_, be) in common::backends() {
        let x = Array4::<f32>::ones((1, 1, 8, 8));
        let w = Array4::<f32>::ones((1, 1, 3, 3));
        let p = Conv2dParams::new2([1, 0], [0, 0]);
        expect_err(
            be.conv2d(&x, &w, None, p),
            "InvalidArgument",
            &["conv2d", "stride"],
        );
        let pool = wgcnn::Pool2dParams {
            kernel: [2, 2],
            stride: [0, 2],
            padding: [0, 0],
        };
        expect_err(
            be.max_pool2d(&x, pool),
            "InvalidArgument",
            &["max_pool2d", "stride"],
        );
    }
}

#[test]
fn functional_kernel_larger_than_padded_input() {
    for (_, be) in common::backends() {
        let x = Array4::<f32>::ones((1, 1, 4, 6));
        let w = Array4::<f32>::ones((1, 1, 7, 3));
        expect_err(
            be.conv2d(&x, &w, None, Conv2dParams::new(1, 1)),
            "InvalidArgument",
            &["kernel 7x3", "padded input 6x8"],
        );
        // with enough padding it fits
        assert!(be.conv2d(&x, &w, None, Conv2dParams::new(1, 2)).is_ok());
    }
}

#[test]
fn functional_cross_entropy_target_out_of_range() {
    for (_, be) in common::backends() {
        let logits = Array2::<f32>::zeros((3, 4));
        expect_err(
            be.cross_entropy(&logits, &[0, 4, 1]),
            "InvalidArgument",
            &["cross_entropy", "target 4 at row 1", "4 classes"],
        );
        expect_err(
            be.cross_entropy(&logits, &[0, 1]),
            "Shape",
            &["2 targets for 3 rows"],
        );
    }
}

#[test]
fn functional_zero_sized_and_mismatched_elementwise() {
    for (_, be) in common::backends() {
        let empty = ArrayD::<f32>::zeros(IxDyn(&[3, 0]));
        expect_err(
            be.activation(Activation::Tanh, &empty),
            "Shape",
            &["zero-sized", "[3, 0]"],
        );
        let a = ArrayD::<f32>::zeros(IxDyn(&[2, 3]));
        let b = ArrayD::<f32>::zeros(IxDyn(&[3, 2]));
        expect_err(be.add(&a, &b), "Shape", &["add", "[2, 3]", "[3, 2]"]);
    }
}

// ---- NaN injection ---------------------------------------------------------------

/// The tiny model without the ReLU: a NaN anywhere in the input reaches the loss.
fn tiny_linear() -> Graph {
    Sequential::new(&[1, 8, 8])
        .add("c1", Conv2d::new(1, 2, 3))
        .add("flat", Flatten)
        .add("fc", Linear::new(2 * 6 * 6, 10))
        .cross_entropy()
        .expect("tiny linear model")
}

/// Three clean steps (metrics read after each), then a batch with one NaN pixel.
/// Returns the executor after the poisoned step.
fn poisoned_fourth_step(be: &Backend, graph: &Graph, name: &str) -> Executor {
    let mut ex = Executor::new(be, graph, 4, Optimizer::sgd(0.01), 0).unwrap();
    let labels = [0u32, 1, 2, 3];
    for step in 1..=3u64 {
        ex.train_step(&tiny_images(4), Targets::Classes(&labels))
            .unwrap();
        let m = ex.take_metrics(Mode::Train).unwrap();
        assert!(m.loss.is_finite() && !m.non_finite, "{name}: step {step}");
    }
    let mut poisoned = tiny_images(4);
    poisoned[100] = f32::NAN;
    ex.train_step(&poisoned, Targets::Classes(&labels)).unwrap();
    ex
}

/// Inputs containing a NaN at a known step: `take_metrics` after that step reports
/// `Error::NonFinite` naming it, while the steps before were fine.
#[test]
fn nan_input_reports_the_step() {
    for (name, be) in common::backends() {
        let mut ex = poisoned_fourth_step(&be, &tiny_linear(), name);
        let e = expect_err(
            ex.take_metrics(Mode::Train),
            "NonFinite",
            &["non-finite", "step 4"],
        );
        assert!(matches!(e, Error::NonFinite { step: 4 }), "{name}: {e:?}");
        // evaluation of a poisoned batch is reported too
        let mut ev = Executor::new(&be, &tiny_linear(), 4, Optimizer::sgd(0.01), 0).unwrap();
        let mut poisoned = tiny_images(2);
        poisoned[7] = f32::INFINITY;
        poisoned[8] = f32::NEG_INFINITY;
        ev.eval_batch(&poisoned, Targets::Classes(&[1, 2])).unwrap();
        expect_err(ev.take_metrics(Mode::Eval), "NonFinite", &["step 0"]);
    }
}

/// A NaN that a ReLU maps to 0 (`max(NaN, 0) = 0` on both paths) leaves the loss of
/// its step finite but poisons the weight gradient (`dW = Σ x·dy`), hence the
/// parameters. Training must not go on silently with non-finite parameters: within a
/// step or two `take_metrics` (or the step itself) must report `Error::NonFinite`.
///
/// (Regression: only the loss was once checked, and with `c1.weight` NaN a ReLU maps every
/// pre-activation to 0 and the loss stays finite; the optimizer step now flags non-finite
/// parameters.)
#[test]
fn nan_masked_by_relu_is_reported() {
    let mut failures = Vec::new();
    for (name, be) in common::backends() {
        let mut ex = poisoned_fourth_step(&be, &tiny(), name);
        let mut outcome = ex.take_metrics(Mode::Train).map(|_| ());
        let poisoned: Vec<String> = ex
            .parameters()
            .unwrap()
            .into_iter()
            .filter(|(_, _, v)| v.iter().any(|x| !x.is_finite()))
            .map(|(n, _, _)| n)
            .collect();
        eprintln!("{name}: non-finite parameters after the poisoned step: {poisoned:?}");
        assert!(
            !poisoned.is_empty(),
            "{name}: the NaN did not reach the parameters"
        );
        for _ in 5..=6 {
            if outcome.is_err() {
                break;
            }
            outcome = ex
                .train_step(&tiny_images(4), Targets::Classes(&[0, 1, 2, 3]))
                .and_then(|()| ex.take_metrics(Mode::Train))
                .map(|m| {
                    eprintln!(
                        "{name}: step {} loss {} with NaN parameters",
                        ex.step_count(),
                        m.loss
                    )
                });
        }
        match outcome {
            Err(Error::NonFinite { step }) if (4..=6).contains(&step) => {}
            other => failures.push(format!("{name}: {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "NaN parameters went unreported until step 6: {failures:?}"
    );
}

/// `save_checkpoint` must not persist non-finite parameters (here poisoned through a
/// ReLU, so no loss reported it): it refuses with `Error::NonFinite` and writes
/// nothing, so the last good checkpoint is never replaced by a dead model.
///
/// (Regression: `train::save_checkpoint` once wrote whatever the parameters held.)
#[test]
fn save_checkpoint_refuses_non_finite_parameters() {
    for (name, be) in common::backends() {
        let dir = scratch_dir(&format!("save-nan-{name}"));
        let ck = dir.join("dead.safetensors");
        let mut ex = poisoned_fourth_step(&be, &tiny(), name);
        let _ = ex.take_metrics(Mode::Train);
        expect_err(
            train::save_checkpoint(&mut ex, &ck, 1, 0),
            "NonFinite",
            &["step 4"],
        );
        assert!(
            !ck.exists() && !train::optimizer_path(&ck).exists(),
            "{name}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// A huge (finite) learning rate makes training diverge; `take_metrics` after every
/// step catches it at the first step whose loss is not finite. The first step's loss
/// is computed with the initial parameters, so it is always finite.
#[test]
fn huge_learning_rate_diverges_and_reports_the_step() {
    for (name, be) in common::backends() {
        let mut ex = Executor::new(&be, &tiny(), 4, Optimizer::sgd(1e30), 0).unwrap();
        let labels = [0u32, 1, 2, 3];
        let mut caught = None;
        for step in 1..=20u64 {
            ex.train_step(&tiny_images(4), Targets::Classes(&labels))
                .unwrap();
            match ex.take_metrics(Mode::Train) {
                Ok(m) => assert!(m.loss.is_finite(), "{name}: step {step}"),
                Err(Error::NonFinite { step: s }) => {
                    assert_eq!(s, step, "{name}: NonFinite names the wrong step");
                    caught = Some(s);
                    break;
                }
                Err(e) => panic!("{name}: unexpected error {e:?}"),
            }
        }
        let s = caught.unwrap_or_else(|| panic!("{name}: lr 1e30 did not diverge in 20 steps"));
        assert!(s >= 2, "{name}: diverged at step {s}");
        eprintln!("{name}: lr 1e30 diverged at step {s}");
    }
}

/// Train an epoch, checkpoint it, then diverge with `train_epoch`: the error names a
/// step after the checkpoint's, the checkpoint files are byte-for-byte unchanged and
/// load into a fresh executor with finite parameters, and restoring them into the
/// diverged executor lets training go on.
#[test]
fn nan_after_checkpoint_leaves_the_last_good_checkpoint_intact() {
    let mut pair = data::load_mnist_dir(&data::embedded_mnist_subset_dir(), "mnist").unwrap();
    pair.train.truncate(128);
    let loader = Loader::new(&pair.train, 32, true, 5, Normalize::mnist()).unwrap();
    let graph = wgcnn::nn::lenet5().unwrap();
    let opt = Optimizer::momentum(0.05, 0.9);
    for (name, be) in common::backends() {
        let dir = scratch_dir(&format!("nan-ckpt-{name}"));
        let ck = dir.join("last.safetensors");
        let mut ex = Executor::new(&be, &graph, 32, opt, 3).unwrap();
        let good = train::train_epoch(&mut ex, &loader, 0, 0, 1, |_, _| true).unwrap();
        assert!(good.completed && good.metrics.loss.is_finite(), "{name}");
        train::save_checkpoint(&mut ex, &ck, 1, 0).unwrap();
        let saved_step = ex.step_count();
        let saved_params = bits(&ex.parameters().unwrap());
        let model_bytes = std::fs::read(&ck).unwrap();
        let optim_bytes = std::fs::read(train::optimizer_path(&ck)).unwrap();

        ex.set_lr(1e30).unwrap();
        let mut e = None;
        for epoch in 1..4 {
            match train::train_epoch(&mut ex, &loader, epoch, 0, 1, |_, _| true) {
                Ok(_) => {}
                Err(err) => {
                    e = Some(err);
                    break;
                }
            }
        }
        let e = e.unwrap_or_else(|| panic!("{name}: lr 1e30 did not diverge in 3 epochs"));
        let Error::NonFinite { step } = e else {
            panic!("{name}: expected NonFinite, got {e:?}");
        };
        assert!(
            step > saved_step && step <= ex.step_count(),
            "{name}: NonFinite at step {step}, checkpoint at {saved_step}, executor at {}",
            ex.step_count()
        );
        eprintln!("{name}: diverged at step {step} (checkpoint at step {saved_step})");

        // the files on disk are untouched and no temporary file was left behind
        assert_eq!(
            std::fs::read(&ck).unwrap(),
            model_bytes,
            "{name}: model file"
        );
        assert_eq!(
            std::fs::read(train::optimizer_path(&ck)).unwrap(),
            optim_bytes,
            "{name}: optimizer file"
        );
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(entries.len(), 2, "{name}: {entries:?}");

        // ... and load into a fresh executor with the saved, finite parameters
        let mut fresh = Executor::new(&be, &graph, 32, opt, 99).unwrap();
        let info = train::load_checkpoint(&mut fresh, &ck, true).unwrap();
        assert_eq!((info.epoch, info.batch, info.step), (1, 0, saved_step));
        let loaded = fresh.parameters().unwrap();
        assert_eq!(bits(&loaded), saved_params, "{name}");
        assert!(loaded
            .iter()
            .all(|(_, _, v)| v.iter().all(|x| x.is_finite())));

        // the diverged executor recovers from the checkpoint and trains on
        train::load_checkpoint(&mut ex, &ck, true).unwrap();
        ex.set_lr(0.05).unwrap();
        let again = train::train_epoch(&mut ex, &loader, 1, 0, 1, |_, _| true).unwrap();
        assert!(again.metrics.loss.is_finite(), "{name}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// A kernel that needs an optional device feature is refused where the device lacks it,
/// naming the kernel, the feature and the adapter (the decision `MatMulF16::choose` takes
/// before any GPU work; tests/precision.rs covers every path).
#[test]
fn f16_gemm_without_shader_f16_is_missing_feature() {
    use wgcnn::cpu::matmul::Gemm;
    use wgcnn::gpu::ShaderCaps;
    use wgcnn::ops::matmul::{F16Path, MatMulF16};
    let l = MatMulF16::new(Gemm::matmul(8, 8, 8), F16Path::Auto).unwrap();
    let r = l.choose(&ShaderCaps::default(), "some adapter");
    expect_err(
        r,
        "MissingFeature",
        &["gemm_f16", "shader-f16", "some adapter"],
    );
}
