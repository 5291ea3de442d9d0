//! Train LeNet-5 on MNIST (or Fashion-MNIST) on the GPU, as a user would.
//!
//! ```text
//! cargo run --release --example mnist                      # bundled 10k-digit subset
//! cargo run --release --example mnist -- --data ~/mnist --epochs 15
//! cargo run --release --example mnist -- --data /usr/share/datasets/fashion-mnist --epochs 10
//! cargo run --release --example mnist -- --eval --checkpoint runs/mnist/lenet5.safetensors
//! ```
//! Ctrl-C finishes the current step, writes the checkpoint and exits; `--resume`
//! continues from it and reaches bitwise the same parameters as an uninterrupted run.
//!
//! Data-parallel over MPI (`--features distributed`; `--batch-size` is the global batch):
//! ```text
//! mpirun -np 2 --allow-run-as-root --oversubscribe \
//!     target/release/examples/mnist --distributed --epochs 1
//! ```

mod dist;
mod plots;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use wgcnn::data::{self, Loader, Normalize};
use wgcnn::exec::Executor;
use wgcnn::train::{self, RunInfo, Schedule};
use wgcnn::{nn, Backend, Optimizer, OptimizerKind, Precision};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Gpu,
    Cpu,
}

/// The arithmetic of the conv and linear layers.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum PrecisionArg {
    /// Everything in f32.
    F32,
    /// f16 copies of the conv/linear inputs, weights and gradients, f32 sums, master
    /// weights and optimizer, dynamic loss scaling (needs the adapter's shader-f16).
    F16Mixed,
}

/// The network to train.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum ModelArg {
    /// LeNet-5 (61,706 parameters).
    Lenet5,
    /// The Xception-style network of `examples/xception_fashion` (widths 32, 64, 128: depthwise
    /// separable convolutions, batch norm, residual shortcuts, dropout).
    XceptionMini,
}

#[derive(Parser, Debug)]
#[command(about = "Train LeNet-5 on MNIST-format data with wgcnn")]
struct Args {
    /// Directory with the four IDX files (raw or .gz); default: the bundled 10k subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The network: lenet5, or xception-mini (for timing it; the checkpoint must match).
    #[arg(long, value_enum, default_value = "lenet5")]
    model: ModelArg,
    /// Epochs to train in total, counting those of a resumed checkpoint; 0 evaluates the
    /// freshly initialised (or --resume'd) model without training.
    #[arg(long, default_value_t = 12)]
    epochs: u64,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Learning rate (default: 0.05 for sgd/momentum/nesterov, 1e-3 otherwise).
    #[arg(long)]
    lr: Option<f32>,
    /// sgd|momentum|nesterov|rmsprop|adam|adamw
    #[arg(long, default_value = "momentum")]
    optimizer: String,
    /// Weight decay: L2, or decoupled for adamw (default 5e-4, adamw 0.01 as PyTorch;
    /// 0 means none).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Learning-rate schedule over the epochs: cosine (anneal to 0) or constant.
    #[arg(long, default_value = "cosine")]
    schedule: Schedule,
    #[arg(long, value_enum, default_value = "gpu")]
    backend: BackendArg,
    /// f32, or f16-mixed: mixed-precision training (see wgcnn::Precision::F16Mixed).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionArg,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on only the first N test images.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Checkpoint file (safetensors, PyTorch names); written crash-consistently every epoch.
    /// Default: runs/mnist/lenet5.safetensors, or runs/mnist/xception-mini.safetensors for
    /// --model xception-mini (one model's run never overwrites the other's checkpoint).
    #[arg(long = "checkpoint", value_name = "CHECKPOINT")]
    checkpoint_arg: Option<PathBuf>,
    /// `--checkpoint`, or the model's default (set in `main`).
    #[arg(skip)]
    checkpoint: PathBuf,
    /// Also write the checkpoint every N training steps (0: only at the end of each epoch).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
    /// Continue from the checkpoint (parameters, optimizer state, epoch, batch); the run's
    /// settings and data must match the checkpoint's.
    #[arg(long)]
    resume: bool,
    /// With --resume: accept settings that differ from the checkpoint's and continue from
    /// the next epoch boundary (the rest of an interrupted epoch is skipped).
    #[arg(long)]
    resume_next_epoch: bool,
    /// Stop after this many training steps of this run as Ctrl-C would: write the checkpoint
    /// and exit with status 130 (for tests and scripts).
    #[arg(long)]
    stop_after: Option<u64>,
    /// Only evaluate the checkpoint on the test set (also a weights-only file, e.g. one
    /// saved by PyTorch).
    #[arg(long)]
    eval: bool,
    /// Write loss/accuracy curves, first-layer filters and the confusion matrix here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write a JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Data-parallel training over MPI, one process per GPU (launch with `mpirun -np N`; the
    /// binary must be built with `--features distributed`). --batch-size is the global batch
    /// and must divide by N; rank 0 prints and writes every output.
    #[arg(long)]
    distributed: bool,
    /// With --distributed: seconds a rank waits for another in a collective before naming
    /// it and aborting the job.
    #[arg(long, default_value_t = 120.0)]
    mpi_timeout: f64,
}

/// Whether this process prints (false on the ranks other than 0).
static LOUD: AtomicBool = AtomicBool::new(true);

/// `println!` on rank 0 only.
macro_rules! say {
    ($($t:tt)*) => {
        if LOUD.load(Ordering::Relaxed) {
            println!($($t)*);
        }
    };
}

fn main() {
    let mut args = Args::parse();
    args.checkpoint = args.checkpoint_arg.clone().unwrap_or_else(|| {
        let model = match args.model {
            ModelArg::Lenet5 => "lenet5",
            ModelArg::XceptionMini => "xception-mini",
        };
        PathBuf::from(format!("runs/mnist/{model}.safetensors"))
    });
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The data of a run: where it came from and the two splits.
struct Data {
    dir: PathBuf,
    name: String,
    pair: data::DatasetPair,
}

fn run(mut args: Args) -> Res<()> {
    let (kind, lr, opt) = optimizer(&args)?;
    let mut world = dist::init(args.distributed, args.mpi_timeout)?;
    let (rank, ranks) = dist::rank_size(&world);
    if rank > 0 {
        // rank 0 prints and writes every output
        LOUD.store(false, Ordering::Relaxed);
        (args.json, args.plot) = (None, None);
    }
    if !args.batch_size.is_multiple_of(ranks) {
        return Err(format!(
            "--batch-size {} (the global batch) does not divide evenly over {ranks} ranks",
            args.batch_size
        )
        .into());
    }
    let shard = args.batch_size / ranks;
    if args.distributed {
        // on stderr from every rank: which process is which (for tests and for kill)
        // one write, so that the ranks' lines never interleave
        let line = format!("rank {rank} of {ranks}: pid {}\n", std::process::id());
        std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes())?;
    }
    check_args(&args)?;
    let data = load_data(&args)?;
    let graph = match args.model {
        ModelArg::Lenet5 => nn::lenet5()?,
        ModelArg::XceptionMini => nn::xception_mini(&[1, 28, 28], &[32, 64, 128], 10)?,
    };
    let input = graph
        .node(graph.input_node().expect("the model has an input"))
        .shape
        .clone();
    for (split, train) in [(&data.pair.train, true), (&data.pair.test, false)] {
        train::check_fits(split, &data::mnist_images_file(&data.dir, train)?, &input)?;
    }
    let norm = Normalize::mnist();
    let train_loader = Loader::new(&data.pair.train, args.batch_size, true, args.seed, norm)?;
    let test_loader = Loader::new(&data.pair.test, shard, false, 0, norm)?;
    let backend = match args.backend {
        BackendArg::Gpu => dist::gpu(&world)?,
        BackendArg::Cpu => Backend::cpu(),
    };
    say!("backend: {}", backend.describe());
    if ranks > 1 || args.distributed {
        say!("ranks:   {ranks} (MPI), a shard of {shard} samples per rank and step");
    }
    say!(
        "data:    {} from {} ({} train / {} test images)",
        data.name,
        data.dir.display(),
        data.pair.train.n,
        data.pair.test.n
    );
    let t_plan = Instant::now();
    let precision = match args.precision {
        PrecisionArg::F32 => Precision::F32,
        PrecisionArg::F16Mixed => Precision::f16_mixed(),
    };
    let mut ex = Executor::with_precision(&backend, &graph, shard, opt, args.seed, precision)?;
    if let Some(s) = precision.scaler() {
        say!(
            "precision: f16 mixed (f16 conv/linear inputs, f32 sums and master weights; loss scale from {}, ×{} every {} good steps, ×{} on overflow)",
            s.init_scale,
            s.growth_factor,
            s.growth_interval,
            s.backoff_factor
        );
    }
    print_model(&ex, (&graph, args.model), kind, lr, args.batch_size, t_plan);
    if args.eval {
        return eval_only(&args, &mut ex, &test_loader, &data.name);
    }
    let run_info = dist::run_info(&world, run_info(&args, kind, lr, &opt, &data));
    let (start_epoch, start_batch) = resume(&world, &mut ex, &args, &run_info)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })?;
    }
    let loaders = (&train_loader, &test_loader);
    let mut report = train_epochs(
        &args,
        &mut world,
        &mut ex,
        loaders,
        &run_info,
        (start_epoch, start_batch),
        lr,
        &stop,
    )?;
    report.finish(&args, &mut ex, &test_loader, &backend, &data)?;
    if let Some(line) = dist::times_line(&mut world) {
        say!("{line}");
    }
    if let Some(dir) = &args.plot {
        let curves = (
            &report.losses[..],
            &report.train_accs[..],
            &report.test_accs[..],
        );
        write_plots(&mut ex, &test_loader, dir, &data.name, curves)?;
    }
    Ok(())
}

/// The optimizer the flags ask for: kind, learning rate and configuration.
fn optimizer(args: &Args) -> Res<(OptimizerKind, f32, Optimizer)> {
    let kind = OptimizerKind::parse(&args.optimizer)?;
    let lr = args.lr.unwrap_or(match kind {
        OptimizerKind::Sgd | OptimizerKind::Momentum | OptimizerKind::Nesterov => 0.05,
        _ => 1e-3,
    });
    let wd = args.weight_decay.unwrap_or(match kind {
        OptimizerKind::AdamW => 0.01,
        _ => 5e-4,
    });
    let opt = Optimizer::from_kind(kind, lr).weight_decay(wd);
    opt.validate()?;
    Ok((kind, lr, opt))
}

/// Flag values and every output path, checked before any work.
fn check_args(args: &Args) -> Res<()> {
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    if args.train_limit == Some(0) || args.test_limit == Some(0) {
        return Err("--train-limit and --test-limit must be at least 1".into());
    }
    if args.resume_next_epoch && !args.resume {
        return Err("--resume-next-epoch goes with --resume".into());
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
    Ok(())
}

fn load_data(args: &Args) -> Res<Data> {
    let (dir, name) = match &args.data {
        Some(d) => {
            let lower = d.to_string_lossy().to_lowercase();
            let name = if lower.contains("fashion") {
                "fashion-mnist"
            } else {
                "mnist"
            };
            (d.clone(), name.to_string())
        }
        None => (
            data::embedded_mnist_subset_dir(),
            "mnist-subset".to_string(),
        ),
    };
    let mut pair = data::load_mnist_dir(&dir, &name)?;
    if let Some(n) = args.train_limit {
        pair.train.truncate(n);
    }
    if let Some(n) = args.test_limit {
        pair.test.truncate(n);
    }
    Ok(Data { dir, name, pair })
}

fn print_model(
    ex: &Executor,
    (graph, model): (&wgcnn::Graph, ModelArg),
    kind: OptimizerKind,
    lr: f32,
    batch: usize,
    t: Instant,
) {
    let mem = ex.memory();
    let name = match model {
        ModelArg::Lenet5 => "LeNet-5",
        ModelArg::XceptionMini => "Xception-mini",
    };
    say!(
        "model:   {name}, {} parameters; {:?} lr {lr}; batch {batch}; plan built in {:.2} s",
        graph.params().iter().map(|p| p.len()).sum::<usize>(),
        kind,
        t.elapsed().as_secs_f64()
    );
    say!(
        "memory:  params {} KiB, grads {} KiB, optimizer {} KiB, activations {} KiB (unshared {} KiB)",
        mem.parameters / 1024,
        mem.gradients / 1024,
        mem.optimizer_state / 1024,
        mem.activations / 1024,
        mem.activations_unshared / 1024
    );
}

/// `--eval`: the checkpoint (a training checkpoint or weights only) on the test set.
fn eval_only(args: &Args, ex: &mut Executor, test: &Loader, name: &str) -> Res<()> {
    let meta = train::checkpoint_meta(&args.checkpoint)?;
    train::load_checkpoint(ex, &args.checkpoint, false)?;
    let m = train::evaluate(ex, test)?;
    let what = match meta.info {
        Some(i) => format!("epoch {}, step {}", i.epoch, i.step),
        None => "weights only: evaluation works, training cannot resume from it".to_string(),
    };
    say!(
        "checkpoint {} ({what}): test loss {:.4}, test accuracy {:.2}%",
        args.checkpoint.display(),
        m.loss,
        100.0 * m.accuracy
    );
    if let Some(p) = &args.json {
        let j = serde_json::json!({"checkpoint": args.checkpoint, "test_loss": m.loss, "test_accuracy": m.accuracy});
        wgcnn::checkpoint::write_atomic(p, serde_json::to_string_pretty(&j)?.as_bytes())?;
        say!("json:       {}", p.display());
    }
    if let Some(dir) = &args.plot {
        write_plots(ex, test, dir, name, (&[], &[], &[]))?;
    }
    Ok(())
}

/// What a resume must match: the optimizer and its settings, the batching, the seed, the
/// schedule and the data.
fn run_info(args: &Args, kind: OptimizerKind, lr: f32, opt: &Optimizer, data: &Data) -> RunInfo {
    let t = &data.pair.train;
    let mut info = RunInfo::default();
    if args.model != ModelArg::Lenet5 {
        // recorded only for another model, so that LeNet-5 checkpoints still resume
        info = info.with("model", format!("{:?}", args.model));
    }
    if args.precision != PrecisionArg::F32 {
        info = info.with("precision", format!("{:?}", args.precision));
    }
    info.with("optimizer", format!("{kind:?}"))
        .with("lr", lr)
        .with("weight_decay", opt.weight_decay)
        .with("momentum", opt.momentum)
        .with("schedule", format!("{:?}", args.schedule))
        .with("batch_size", args.batch_size)
        .with(
            "train_limit",
            args.train_limit
                .map_or("all".to_string(), |n| n.to_string()),
        )
        .with("seed", args.seed)
        .with("dataset", &data.name)
        .with("train_images", t.n)
        .with("test_images", data.pair.test.n)
        .with("image_size", format!("{}x{}", t.rows, t.cols))
        .with("train_labels_fnv1a", train::fnv1a_hex(&t.labels))
}

/// `--resume`: loads the checkpoint and checks the run; `(epoch, batch)` to start at.
fn resume(
    world: &Option<dist::World>,
    ex: &mut Executor,
    args: &Args,
    now: &RunInfo,
) -> Res<(u64, usize)> {
    if !args.resume {
        return Ok((0, 0));
    }
    let r = dist::resume(world, ex, &args.checkpoint, now, args.resume_next_epoch)?;
    if r.unchecked {
        say!("note: the checkpoint records no run settings (an older format): they could not be checked");
    }
    if !r.changed.is_empty() {
        say!(
            "settings changed ({}): continuing at the next epoch boundary",
            r.changed.join("; ")
        );
    }
    say!(
        "resumed: {} at epoch {}, batch {}, step {}",
        args.checkpoint.display(),
        r.epoch + 1,
        r.batch,
        r.step
    );
    Ok((r.epoch, r.batch))
}

/// What the run did, printed and written as JSON from the same values.
#[derive(Default)]
struct Report {
    losses: Vec<f32>,
    train_accs: Vec<f32>,
    test_accs: Vec<f32>,
    epochs_trained: u64,
    train_images: usize,
    train_secs: f64,
    checkpoint_written: bool,
    bytes: (u64, u64),
    t0: Option<Instant>,
    /// The epoch the run started at (non-zero after --resume).
    start_epoch: u64,
    /// The step counter when the run started.
    start_step: u64,
}

/// Trains epochs `start.0..args.epochs` (the first from batch `start.1`), writing the
/// checkpoint after each and every `--checkpoint-every` steps; exits with 130 after writing
/// it on Ctrl-C.
#[allow(clippy::too_many_arguments)]
fn train_epochs(
    args: &Args,
    world: &mut Option<dist::World>,
    ex: &mut Executor,
    (train_loader, test_loader): (&Loader, &Loader),
    run: &RunInfo,
    start: (u64, usize),
    lr: f32,
    stop: &AtomicBool,
) -> Res<Report> {
    let mut r = Report {
        t0: Some(Instant::now()),
        start_epoch: start.0,
        start_step: ex.step_count(),
        ..Report::default()
    };
    let style =
        ProgressStyle::with_template("{prefix} [{bar:32.cyan/blue}] {pos:>6}/{len} img  {msg}")?
            .progress_chars("=> ");
    let root = dist::rank_size(world).0 == 0;
    for epoch in start.0..args.epochs {
        let images = train_loader.len();
        let bar = ProgressBar::new(images as u64)
            .with_style(style.clone())
            .with_prefix(format!("epoch {:>2}/{}", epoch + 1, args.epochs));
        if !root {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        ex.set_lr(args.schedule.lr(lr, epoch, args.epochs))?;
        let te = Instant::now();
        let skip = if epoch == start.0 { start.1 } else { 0 };
        bar.set_position((skip * args.batch_size).min(images) as u64);
        let done = (epoch, skip);
        let ckpt = &args.checkpoint;
        let stats = dist::train_epoch(world, ex, train_loader, done, 25, |ex, p| {
            bar.set_position((skip * args.batch_size + p.images).min(images) as u64);
            if let Some(m) = p.running {
                let rate = p.images as f64 / te.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("loss {:.4}  {:.0} img/s", m.loss, rate));
            }
            let every = args.checkpoint_every;
            // every rank sees the same step here; rank 0 writes
            let due = every > 0 && ex.step_count().is_multiple_of(every);
            if root && due && p.batches_done < p.batches {
                train::save_checkpoint_run(ex, ckpt, epoch, p.batches_done, run)?;
            }
            let steps_here = ex.step_count() - r.start_step;
            Ok(!stop.load(Ordering::SeqCst) && args.stop_after.is_none_or(|n| steps_here < n))
        })?;
        let secs = te.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if !stats.completed {
            dist::save(world, ex, ckpt, (epoch, stats.batches_done), run)?;
            say!(
                "interrupted in epoch {} after batch {}: checkpoint written to {} (continue with --resume)",
                epoch + 1,
                stats.batches_done,
                args.checkpoint.display()
            );
            // 130 = interrupted by SIGINT, so scripts can tell this from a finished run
            std::process::exit(130);
        }
        dist::sync_buffers(world, ex)?; // rank 0's batch norm statistics (Xception-mini)
        let test = train::evaluate(ex, test_loader)?;
        r.epoch_done(ex, &stats, secs, test.accuracy);
        let part = if skip > 0 {
            format!(
                " (resumed: batches {}–{} of {})",
                skip + 1,
                stats.batches_done,
                train_loader.num_batches()
            )
        } else {
            String::new()
        };
        say!(
            "epoch {:>2}/{}  train loss {:.4}  train acc {:.2}%  test acc {:.2}%  {:.1} s  ({:.0} img/s){part}",
            epoch + 1,
            args.epochs,
            stats.metrics.loss,
            100.0 * stats.metrics.accuracy,
            100.0 * test.accuracy,
            secs,
            stats.images as f64 / secs.max(1e-9)
        );
        dist::save(world, ex, ckpt, (epoch + 1, 0), run)?;
        r.checkpoint_written = true;
    }
    Ok(r)
}

impl Report {
    fn epoch_done(&mut self, ex: &Executor, stats: &train::EpochStats, secs: f64, test_acc: f32) {
        self.losses.push(stats.metrics.loss);
        self.train_accs.push(stats.metrics.accuracy);
        self.test_accs.push(test_acc);
        self.epochs_trained += 1;
        self.train_images += stats.images;
        self.train_secs += secs;
        let bytes = ex.counters().gpu_bytes_allocated;
        if self.epochs_trained == 1 {
            self.bytes.0 = bytes;
        }
        self.bytes.1 = bytes;
    }

    /// Prints the summary and writes the JSON, both from the same values. Without a
    /// trained epoch the model is evaluated now, so the accuracy is always a real one.
    fn finish(
        &mut self,
        args: &Args,
        ex: &mut Executor,
        test: &Loader,
        backend: &Backend,
        data: &Data,
    ) -> Res<()> {
        let seconds = self.t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let final_acc = match self.test_accs.last() {
            Some(&a) => a,
            None => {
                say!(
                    "nothing to train: the model has {} epochs and --epochs is {}; evaluating it",
                    self.start_epoch,
                    args.epochs
                );
                train::evaluate(ex, test)?.accuracy
            }
        };
        let best = self.test_accs.iter().copied().fold(final_acc, f32::max);
        let c = ex.counters();
        let trained = self.epochs_trained > 0;
        let gpu = matches!(backend, Backend::Gpu(_));
        let ips = trained.then(|| self.train_images as f64 / self.train_secs.max(1e-9));
        let submits = if trained {
            Some(c.submits_last_step)
        } else {
            None
        };
        let dispatches = if trained {
            Some(c.dispatches_per_step)
        } else {
            None
        };
        let last_loss = self.losses.last().copied();
        let scale = ex.loss_scale()?;
        if let Some(s) = scale {
            say!(
                "loss scale: {} after {} skipped (overflowing) steps",
                s.scale,
                s.skipped_steps
            );
        }
        let head = format!(
            "done: final test accuracy {:.2}% (best {:.2}%) in {:.1} s",
            100.0 * final_acc,
            100.0 * best,
            seconds
        );
        match (dispatches, submits) {
            (Some(d), Some(s)) => {
                let plural = if s == 1 { "" } else { "s" };
                say!("{head}; {d} dispatches and {s} submit{plural} per step")
            }
            _ => say!("{head}; no training step"),
        }
        if self.checkpoint_written {
            say!("checkpoint: {}", args.checkpoint.display());
        }
        let Some(path) = &args.json else {
            return Ok(());
        };
        let summary = serde_json::json!({
            "backend": match backend { Backend::Gpu(_) => "gpu", Backend::Cpu => "cpu" },
            "adapter": match backend { Backend::Gpu(g) => g.adapter().to_string(), Backend::Cpu => "cpu reference path".to_string() },
            "dataset": data.name,
            "epochs": args.epochs,
            "epochs_trained": self.epochs_trained,
            "batch_size": args.batch_size,
            "train_images": data.pair.train.n,
            "test_images": data.pair.test.n,
            "test_accuracy": final_acc,
            "best_test_accuracy": best,
            "final_train_loss": last_loss,
            "images_per_sec": ips,
            "dispatches_per_step": dispatches,
            "submits_per_step": submits,
            "gpu_bytes_first_epoch": (trained && gpu).then_some(self.bytes.0),
            "gpu_bytes_last_epoch": (trained && gpu).then_some(self.bytes.1),
            "seconds": seconds,
            "checkpoint": self.checkpoint_written.then(|| args.checkpoint.display().to_string()),
            "precision": match args.precision { PrecisionArg::F32 => "f32", PrecisionArg::F16Mixed => "f16-mixed" },
            "loss_scale": scale.map(|s| s.scale),
            "skipped_steps": scale.map(|s| s.skipped_steps),
        });
        wgcnn::checkpoint::write_atomic(path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
        say!("json:       {}", path.display());
        Ok(())
    }
}

/// The filters of every conv layer after the first, one tile per (output, input) channel:
/// `filters_<layer>.png`.
fn conv_filters(dir: &Path, params: &[(String, Vec<usize>, Vec<f32>)]) -> Res<Vec<PathBuf>> {
    let mut files = Vec::new();
    for (name, shape, w) in params
        .iter()
        .filter(|(n, s, _)| n.ends_with(".weight") && s.len() == 4)
    {
        let layer = name.trim_end_matches(".weight");
        if layer == "c1" {
            continue;
        }
        let (o, c, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
        let tiles: Vec<plots::Tile> = w
            .chunks_exact(kh * kw)
            .enumerate()
            .map(|(k, v)| (format!("out {} · in {}", k / c + 1, k % c + 1), kh, kw, v))
            .collect();
        let title = format!("{layer} filters: {o} outputs × {c} inputs × ({kh}×{kw})");
        files.push(plots::grid(
            dir,
            &format!("filters_{layer}.png"),
            &title,
            &tiles,
            c,
        )?);
    }
    Ok(files)
}

/// The first test digit and what every conv and pooling layer makes of it:
/// `featuremaps.png`.
fn feature_maps(ex: &mut Executor, test: &Loader, dir: &Path) -> Res<PathBuf> {
    let idx: Vec<usize> = test
        .epoch(0)
        .batch_indices()
        .next()
        .unwrap_or_default()
        .to_vec();
    let (h, w) = test.image_dims();
    let mut images = vec![0.0f32; idx.len() * h * w];
    let mut labels = vec![0u32; idx.len()];
    test.fill(&idx, &mut images, &mut labels)?;
    let layers = ["input", "c1", "s2", "c3", "s4"];
    let maps = ex.activations(&images, &layers)?;
    let mut tiles = Vec::new();
    for (name, shape, v) in &maps {
        let (c, mh, mw) = (shape[1], shape[2], shape[3]);
        // sample 0 of the batch
        for (k, m) in v[..c * mh * mw].chunks_exact(mh * mw).enumerate() {
            tiles.push((format!("{name} #{}", k + 1), mh, mw, m));
        }
    }
    let title = format!("Feature maps of test digit 0 (label {})", labels[0]);
    Ok(plots::grid(dir, "featuremaps.png", &title, &tiles, 8)?)
}

/// Loss/accuracy curves `(losses, train accuracies, test accuracies)`, filters, confusion.
fn write_plots(
    ex: &mut Executor,
    test: &Loader,
    dir: &Path,
    name: &str,
    (losses, train_accs, test_accs): (&[f32], &[f32], &[f32]),
) -> Res<()> {
    let mut files = Vec::new();
    if !losses.is_empty() {
        files.extend(plots::curves(dir, losses, train_accs, test_accs)?);
    }
    let params = ex.parameters()?;
    if let Some((_, shape, w)) = params.iter().find(|(n, _, _)| n == "c1.weight") {
        files.push(plots::filters(dir, w, shape[0], shape[2], shape[3])?);
    }
    files.extend(conv_filters(dir, &params)?);
    files.push(feature_maps(ex, test, dir)?);
    let m = train::confusion(ex, test)?;
    let mut matrix = [[0u32; 10]; 10];
    for (r, row) in m.iter().enumerate().take(10) {
        for (c, &v) in row.iter().enumerate().take(10) {
            matrix[r][c] = v;
        }
    }
    files.push(plots::confusion(dir, &matrix, &data::class_names(name))?);
    for f in files {
        say!("plot:       {}", f.display());
    }
    Ok(())
}
