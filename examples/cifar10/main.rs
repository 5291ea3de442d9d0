//! Train a CIFAR ResNet (or airbench's net) on colour images with wgcnn: CIFAR-10/100
//! binary files, a folder of images per class, or NumPy arrays. Batches cross to the device
//! as bytes; normalisation and augmentation (random crop, flip) run there.
//!
//! ```text
//! cargo run --release --example cifar10 -- --data ~/cifar-10-batches-bin --epochs 10
//! cargo run --release --example cifar10 -- --image-folder ~/photos --image-size 32 32
//! cargo run --release --example cifar10 -- --npz data.npz --model airbench --label-smoothing 0.2
//! cargo run --release --example cifar10 -- --data ~/cifar-10-batches-bin --eval
//! ```
//! Ctrl-C finishes the current step, writes the checkpoint and exits; `--resume` continues
//! from it bitwise (the augmentation is a function of seed, epoch and image index).
//!
//! Data-parallel over MPI (`--features distributed`; `--batch-size` is the global batch):
//! ```text
//! mpirun -np 2 --allow-run-as-root --oversubscribe \
//!     target/release/examples/cifar10 --distributed --data ~/cifar-10-batches-bin --epochs 1
//! ```

#[allow(dead_code)]
#[path = "../mnist/dist.rs"]
mod dist;
#[allow(dead_code)]
#[path = "../mnist/plots.rs"]
mod plots;
mod source;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use source::Source;
use wgcnn::exec::{Executor, InputPipeline, Metrics};
use wgcnn::ops::augment::Augmentation;
use wgcnn::train::{self, RunInfo, Schedule};
use wgcnn::{nn, Backend, Optimizer, OptimizerKind, Precision};

#[derive(Parser, Debug)]
#[command(about = "Train a CIFAR ResNet or airbench's net on colour images with wgcnn")]
pub struct Args {
    /// CIFAR-10 or CIFAR-100 binary version: the extracted directory or the .tar.gz.
    #[arg(long, conflicts_with_all = ["image_folder", "npz"])]
    data: Option<PathBuf>,
    /// A folder of images per class: ROOT/train/<class>/*.png|jpg|bmp and ROOT/test/…, or
    /// ROOT/<class>/… with --val-split.
    #[arg(long, conflicts_with = "npz")]
    image_folder: Option<PathBuf>,
    /// NumPy arrays x_train, y_train, x_test, y_test (u8 or f32 images, NHWC or NCHW).
    #[arg(long)]
    npz: Option<PathBuf>,
    /// With --image-folder ROOT/<class>/…: the fraction of each class held out for testing.
    #[arg(long)]
    val_split: Option<f64>,
    /// With --image-folder: resize every image to H W.
    #[arg(long, num_args = 2, value_names = ["H", "W"])]
    image_size: Option<Vec<usize>>,
    /// With --image-folder: skip (and count) unreadable files instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// resnet8 | resnet20 | resnet32 | resnet56 | airbench (resnet8: one block per stage, for
    /// quick checks)
    #[arg(long, default_value = "resnet20")]
    model: String,
    #[arg(long, default_value_t = 10)]
    epochs: u64,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Learning rate (default 0.1 for the SGD family, 1e-3 otherwise).
    #[arg(long)]
    lr: Option<f32>,
    /// sgd|momentum|nesterov|rmsprop|adam|adamw (momentum 0.9)
    #[arg(long, default_value = "nesterov")]
    optimizer: String,
    /// L2 weight decay, decoupled for adamw (default 5e-4).
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f32,
    /// cosine | constant | one-cycle | warmup-cosine (the last two change the rate every step).
    #[arg(long, default_value = "one-cycle")]
    schedule: Schedule,
    /// Cross-entropy label smoothing in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Training augmentation on the device: crop=P (pad by P, random crop back), reflect,
    /// flip, or none.
    #[arg(long, default_value = "crop=4,flip")]
    augment: String,
    #[arg(long, value_parser = ["gpu", "cpu"], default_value = "gpu")]
    backend: String,
    /// f32, or f16-mixed: mixed-precision training (wgcnn::Precision::F16Mixed: f16 conv and
    /// linear inputs, f32 sums, master weights and optimizer, dynamic loss scaling; needs the
    /// adapter's shader-f16).
    #[arg(long, value_parser = ["f32", "f16-mixed"], default_value = "f32")]
    precision: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images (in-memory datasets).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on only the first N test images (in-memory datasets).
    #[arg(long)]
    test_limit: Option<usize>,
    /// Checkpoint (safetensors, PyTorch names), written crash-consistently every epoch.
    #[arg(long, default_value = "runs/cifar10/model.safetensors")]
    checkpoint: PathBuf,
    /// Continue from the checkpoint; the run's settings and data must match it.
    #[arg(long)]
    resume: bool,
    /// Only evaluate the checkpoint on the test set.
    #[arg(long)]
    eval: bool,
    /// Stop after this many training steps as Ctrl-C would (checkpoint, exit status 130).
    #[arg(long)]
    stop_after: Option<u64>,
    /// Write curves, the confusion matrix and a grid of augmented samples here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write a JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Data-parallel training over MPI, one process per GPU (launch with `mpirun -np N`; the
    /// binary must be built with `--features distributed`). --batch-size is the global batch
    /// and must divide by N; every rank reads the data, trains its shard of each batch and
    /// evaluates with rank 0's batch norm statistics; rank 0 prints and writes every output.
    #[arg(long)]
    distributed: bool,
    /// With --distributed: seconds a rank waits for another in a collective before naming
    /// it and aborting the job.
    #[arg(long, default_value_t = 120.0)]
    mpi_timeout: f64,
}

/// Whether this process prints (rank 0, or the only process).
static LOUD: AtomicBool = AtomicBool::new(true);

/// `println!` on rank 0 only.
macro_rules! say {
    ($($t:tt)*) => {
        if LOUD.load(Ordering::Relaxed) {
            println!($($t)*);
        }
    };
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(mut args: Args) -> Res<()> {
    let mut world = dist::init(args.distributed, args.mpi_timeout)?;
    let (rank, ranks) = dist::rank_size(&world);
    if rank > 0 {
        // rank 0 prints and writes every output
        LOUD.store(false, Ordering::Relaxed);
        (args.json, args.plot) = (None, None);
    }
    if args.distributed {
        // on stderr from every rank: which process is which (for tests and for kill)
        let line = format!("rank {rank} of {ranks}: pid {}\n", std::process::id());
        std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes())?;
    }
    check_args(&args)?;
    if !args.batch_size.is_multiple_of(ranks) {
        return Err(format!(
            "--batch-size {} (the global batch) does not divide evenly over {ranks} ranks",
            args.batch_size
        )
        .into());
    }
    let shard = args.batch_size / ranks;
    let src = Source::open(&args)?;
    let graph = model(&args, src.classes().len())?;
    src.check_shape(&[3, 32, 32])?;
    let kind = OptimizerKind::parse(&args.optimizer)?;
    let lr = args.lr.unwrap_or(match kind {
        OptimizerKind::Sgd | OptimizerKind::Momentum | OptimizerKind::Nesterov => 0.1,
        _ => 1e-3,
    });
    let mut opt = Optimizer::from_kind(kind, lr).weight_decay(args.weight_decay);
    if matches!(kind, OptimizerKind::Momentum | OptimizerKind::Nesterov) {
        opt.momentum = 0.9;
    }
    opt.validate()?;
    let backend = match args.backend.as_str() {
        "cpu" => Backend::cpu(),
        _ => dist::gpu(&world)?,
    };
    say!("backend: {}", backend.describe());
    if args.distributed {
        say!("ranks:   {ranks} (MPI), a shard of {shard} samples per rank and step");
    }
    if LOUD.load(Ordering::Relaxed) {
        src.describe();
    }
    let precision = match args.precision.as_str() {
        "f16-mixed" => Precision::f16_mixed(),
        _ => Precision::F32,
    };
    let mut ex = Executor::with_precision(&backend, &graph, shard, opt, args.seed, precision)?;
    let normalize = src.normalization();
    ex.set_input_pipeline(InputPipeline {
        normalize: normalize.clone(),
        augment: Augmentation::parse(&args.augment)?,
        seed: args.seed,
    })?;
    let params: usize = graph.params().iter().map(|p| p.len()).sum();
    let mem = ex.memory();
    say!(
        "model:   {}, {params} parameters; {kind:?} lr {lr} ({:?}); batch {}; label smoothing {}; augment {}",
        args.model, args.schedule, args.batch_size, args.label_smoothing, args.augment
    );
    say!(
        "memory:  params {} KiB, grads {} KiB, optimizer {} KiB, activations {} KiB",
        mem.parameters / 1024,
        mem.gradients / 1024,
        mem.optimizer_state / 1024,
        mem.activations / 1024
    );
    if args.eval {
        train::load_checkpoint(&mut ex, &args.checkpoint, false)?;
        let (m, confusion) = evaluate(&mut ex, &src, &normalize)?;
        say!(
            "checkpoint {}: test loss {:.4}, test accuracy {:.2}%",
            args.checkpoint.display(),
            m.loss,
            100.0 * m.accuracy
        );
        print_per_class(&confusion, src.classes());
        return Ok(());
    }
    let info = dist::run_info(&world, run_info(&args, &src, lr));
    let (start_epoch, start_batch) = if args.resume {
        let r = dist::resume(&world, &mut ex, &args.checkpoint, &info, false)?;
        say!(
            "resumed: epoch {}, batch {}, step {}",
            r.epoch + 1,
            r.batch,
            r.step
        );
        (r.epoch, r.batch)
    } else {
        (0, 0)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    })?;
    let t0 = Instant::now();
    let report = train_epochs(
        &args,
        &mut world,
        &mut ex,
        &src,
        &info,
        ((start_epoch, start_batch), lr),
        &stop,
    )?;
    dist::sync_buffers(&world, &mut ex)?;
    let (m, confusion) = evaluate(&mut ex, &src, &normalize)?;
    say!(
        "done: test accuracy {:.2}% (loss {:.4}) in {:.1} s; {} dispatches and {} submit per step",
        100.0 * m.accuracy,
        m.loss,
        t0.elapsed().as_secs_f64(),
        ex.counters().dispatches_per_step,
        ex.counters().submits_last_step
    );
    let per_class = print_per_class(&confusion, src.classes());
    if let Some(line) = dist::times_line(&mut world) {
        say!("{line}");
    }
    if let Some(dir) = &args.plot {
        write_plots(&args, dir, &report, &confusion, &src)?;
    }
    if let Some(path) = &args.json {
        let j = serde_json::json!({
            "backend": args.backend,
            "adapter": match &backend { Backend::Gpu(g) => g.adapter().to_string(), Backend::Cpu => "cpu reference path".into() },
            "data": src.name(),
            "model": args.model,
            "parameters": params,
            "epochs": args.epochs,
            "epochs_trained": report.losses.len(),
            "batch_size": args.batch_size,
            "ranks": ranks,
            "augment": args.augment,
            "label_smoothing": args.label_smoothing,
            "train_images": src.train_len(),
            "test_images": src.test_len(),
            "test_accuracy": m.accuracy,
            "test_loss": m.loss,
            "per_class_accuracy": per_class,
            "train_losses": report.losses,
            "test_accuracies": report.test_accs,
            "images_per_sec": report.images_per_sec(),
            "gpu_bytes_per_epoch": report.gpu_bytes,
            "seconds": t0.elapsed().as_secs_f64(),
            "precision": args.precision,
            "loss_scale": ex.loss_scale()?.map(|s| s.scale),
            "skipped_steps": ex.loss_scale()?.map(|s| s.skipped_steps),
        });
        wgcnn::checkpoint::write_atomic(path, serde_json::to_string_pretty(&j)?.as_bytes())?;
        say!("json:    {}", path.display());
    }
    Ok(())
}

fn check_args(args: &Args) -> Res<()> {
    if args.data.is_none() && args.image_folder.is_none() && args.npz.is_none() {
        return Err(concat!(
            "no data: give --data, --image-folder or --npz.\n",
            "CIFAR-10 (the \"binary version\", 162 MB): https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz\n",
            "  --data takes the .tar.gz itself or the extracted directory:\n",
            "    cifar-10-batches-bin/{data_batch_1..5.bin, test_batch.bin, batches.meta.txt}\n",
            "  (CIFAR-100: cifar-100-binary/{train.bin, test.bin, fine_label_names.txt})"
        )
        .into());
    }
    if args.batch_size == 0 || args.train_limit == Some(0) || args.test_limit == Some(0) {
        return Err("--batch-size, --train-limit and --test-limit must be at least 1".into());
    }
    if args.resume && args.eval {
        return Err("--resume and --eval exclude each other".into());
    }
    if !args.eval {
        train::probe_output_file("--checkpoint", &args.checkpoint)?;
    }
    if let Some(p) = &args.json {
        train::probe_output_file("--json", p)?;
    }
    if let Some(p) = &args.plot {
        train::probe_output_dir("--plot", p)?;
    }
    Augmentation::parse(&args.augment)?;
    Ok(())
}

fn model(args: &Args, classes: usize) -> Res<wgcnn::Graph> {
    let mut g = match args.model.as_str() {
        "resnet8" => nn::resnet_cifar(8, classes)?,
        "resnet20" => nn::resnet_cifar(20, classes)?,
        "resnet32" => nn::resnet_cifar(32, classes)?,
        "resnet56" => nn::resnet_cifar(56, classes)?,
        "airbench" => nn::airbench_net(classes)?,
        m => {
            return Err(format!(
                "--model {m}: expected resnet8, resnet20, resnet32, resnet56 or airbench"
            )
            .into())
        }
    };
    g.set_label_smoothing(args.label_smoothing)?;
    Ok(g)
}

/// What a resume must match.
fn run_info(args: &Args, src: &Source, lr: f32) -> RunInfo {
    let info = RunInfo::default();
    // recorded only when not f32, so that earlier checkpoints still resume
    let info = match args.precision.as_str() {
        "f32" => info,
        p => info.with("precision", p),
    };
    info.with("model", &args.model)
        .with("optimizer", &args.optimizer)
        .with("lr", lr)
        .with("weight_decay", args.weight_decay)
        .with("schedule", format!("{:?}", args.schedule))
        .with("epochs", args.epochs)
        .with("batch_size", args.batch_size)
        .with("label_smoothing", args.label_smoothing)
        .with("augment", &args.augment)
        .with("seed", args.seed)
        .with("data", src.name())
        .with("train_images", src.train_len())
        .with("train_labels_fnv1a", src.labels_hash())
}

/// Per-epoch curves.
#[derive(Default)]
struct Report {
    losses: Vec<f32>,
    train_accs: Vec<f32>,
    test_accs: Vec<f32>,
    images: usize,
    secs: f64,
    /// Device memory allocated after each epoch (flat: nothing grows during training).
    gpu_bytes: Vec<u64>,
}

impl Report {
    fn images_per_sec(&self) -> Option<f64> {
        (self.secs > 0.0).then(|| self.images as f64 / self.secs)
    }
}

/// Trains epochs `start.0..` (the first from batch `start.1`), checkpointing after each.
fn train_epochs(
    args: &Args,
    world: &mut Option<dist::World>,
    ex: &mut Executor,
    src: &Source,
    run: &RunInfo,
    (start, lr): ((u64, usize), f32),
    stop: &AtomicBool,
) -> Res<Report> {
    let mut r = Report::default();
    let style =
        ProgressStyle::with_template("{prefix} [{bar:32.cyan/blue}] {pos:>6}/{len} img  {msg}")?
            .progress_chars("=> ");
    let per_epoch = src.train_len().div_ceil(args.batch_size);
    let total_steps = per_epoch as u64 * args.epochs;
    let first_step = ex.step_count();
    for epoch in start.0..args.epochs {
        let first = if epoch == start.0 { start.1 } else { 0 };
        let bar = if LOUD.load(Ordering::Relaxed) {
            ProgressBar::new(src.train_len() as u64)
        } else {
            ProgressBar::hidden()
        };
        let bar = bar.with_style(style.clone()).with_prefix(format!(
            "epoch {:>2}/{}",
            epoch + 1,
            args.epochs
        ));
        let sched = |step: u64| {
            if args.schedule.per_step() {
                args.schedule.lr_at(lr, step, total_steps)
            } else {
                args.schedule.lr(lr, epoch, args.epochs)
            }
        };
        ex.set_lr(sched(epoch * per_epoch as u64 + first as u64))?;
        let t = Instant::now();
        let batches = src.train_batches(args.batch_size, args.seed, epoch, first);
        let stats = dist::train_epoch_bytes(
            world,
            ex,
            batches,
            (epoch, first, per_epoch),
            25,
            |ex, p| {
                bar.set_position((p.batches_done * args.batch_size).min(src.train_len()) as u64);
                if let Some(m) = p.running {
                    let rate = p.images as f64 / t.elapsed().as_secs_f64().max(1e-9);
                    bar.set_message(format!("loss {:.4}  {rate:.0} img/s", m.loss));
                }
                ex.set_lr(sched(epoch * per_epoch as u64 + p.batches_done as u64))?;
                let here = ex.step_count() - first_step;
                Ok(!stop.load(Ordering::SeqCst) && args.stop_after.is_none_or(|n| here < n))
            },
        )?;
        let secs = t.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if !stats.completed {
            dist::save(
                world,
                ex,
                &args.checkpoint,
                (epoch, stats.batches_done),
                run,
            )?;
            say!(
                "interrupted in epoch {} after batch {}: checkpoint {} (continue with --resume)",
                epoch + 1,
                stats.batches_done,
                args.checkpoint.display()
            );
            std::process::exit(130);
        }
        dist::sync_buffers(world, ex)?;
        let (test, _) = evaluate(ex, src, &src.normalization())?;
        let gpu_bytes = ex.counters().gpu_bytes_allocated;
        say!(
            "epoch {:>2}/{}  train loss {:.4}  train acc {:.2}%  test acc {:.2}%  {secs:.1} s  ({:.0} img/s)  GPU {:.1} MiB",
            epoch + 1,
            args.epochs,
            stats.metrics.loss,
            100.0 * stats.metrics.accuracy,
            100.0 * test.accuracy,
            stats.images as f64 / secs.max(1e-9),
            gpu_bytes as f64 / (1 << 20) as f64
        );
        r.gpu_bytes.push(gpu_bytes);
        r.losses.push(stats.metrics.loss);
        r.train_accs.push(stats.metrics.accuracy);
        r.test_accs.push(test.accuracy);
        r.images += stats.images;
        r.secs += secs;
        dist::save(world, ex, &args.checkpoint, (epoch + 1, 0), run)?;
    }
    Ok(r)
}

/// Test loss and accuracy (normalised on the host, no augmentation) and the confusion
/// matrix `[true][predicted]`, from one forward pass per batch.
fn evaluate(
    ex: &mut Executor,
    src: &Source,
    norm: &wgcnn::data::ChannelNormalize,
) -> Res<(Metrics, Vec<Vec<u32>>)> {
    let k = src.classes().len();
    let mut m = vec![vec![0u32; k]; k];
    let (mut loss, mut seen) = (0.0f64, 0usize);
    let c = src.shape()[0];
    let plane = src.shape()[1] * src.shape()[2];
    for b in src.test_batches(ex.plan().batch) {
        let b = b?;
        let x: Vec<f32> = b
            .images
            .iter()
            .enumerate()
            .map(|(i, &v)| norm.apply((i / plane) % c, v))
            .collect();
        // one forward pass: the loss (with the graph's label smoothing) from the logits read back
        let logits = ex.predict(&x)?;
        let eps = ex.plan().graph.label_smoothing();
        let (l, _) = Backend::cpu().cross_entropy_smoothed(&logits, &b.labels, eps)?;
        loss += l as f64 * b.labels.len() as f64;
        seen += b.labels.len();
        for (row, &t) in logits.rows().into_iter().zip(&b.labels) {
            let arg = (0..k).fold(0, |a, j| if row[j] > row[a] { j } else { a });
            m[t as usize][arg] += 1;
        }
    }
    let correct: u32 = (0..k).map(|i| m[i][i]).sum();
    let metrics = Metrics {
        loss: (loss / seen.max(1) as f64) as f32,
        accuracy: correct as f32 / seen.max(1) as f32,
        samples: seen,
        non_finite: false,
    };
    Ok((metrics, m))
}

/// Prints and returns each class's accuracy (recall).
fn print_per_class(m: &[Vec<u32>], names: &[String]) -> Vec<f32> {
    let acc: Vec<f32> = m
        .iter()
        .enumerate()
        .map(|(i, row)| row[i] as f32 / row.iter().sum::<u32>().max(1) as f32)
        .collect();
    let shown: Vec<String> = names
        .iter()
        .zip(&acc)
        .map(|(n, a)| format!("{n} {:.1}%", 100.0 * a))
        .collect();
    say!("per class: {}", shown.join(", "));
    acc
}

/// Curves, the confusion matrix (10 classes) and a grid of augmented training samples.
fn write_plots(
    args: &Args,
    dir: &std::path::Path,
    r: &Report,
    m: &[Vec<u32>],
    src: &Source,
) -> Res<()> {
    let mut files = Vec::new();
    if !r.losses.is_empty() {
        files.extend(plots::curves(dir, &r.losses, &r.train_accs, &r.test_accs)?);
    }
    if m.len() == 10 {
        let mut matrix = [[0u32; 10]; 10];
        for (i, row) in m.iter().enumerate() {
            matrix[i].copy_from_slice(row);
        }
        let names: Vec<&str> = src.classes().iter().map(String::as_str).collect();
        let names: [&str; 10] = names.try_into().map_err(|_| "10 class names")?;
        files.push(plots::confusion(dir, &matrix, &names)?);
    } else {
        say!(
            "plot:    confusion matrix skipped ({} classes; the plot draws 10)",
            m.len()
        );
    }
    files.push(source::augmented_grid(
        dir,
        src,
        &Augmentation::parse(&args.augment)?,
        args.seed,
    )?);
    for f in files {
        say!("plot:    {}", f.display());
    }
    Ok(())
}
