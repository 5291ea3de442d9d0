//! Train a small Xception-style network (depthwise-separable convolutions, batch norm,
//! residual 1×1 stride-2 shortcuts, global average pooling, dropout) on Fashion-MNIST on
//! the GPU, and LeNet-5 under the same budget (same images, epochs, batch size and
//! optimizer) for comparison.
//!
//! ```text
//! cargo run --release --example xception_fashion                   # 1 epoch on the first 10,000 images
//! cargo run --release --example xception_fashion -- --epochs 5 --train-limit 60000
//! cargo run --release --example xception_fashion -- --json runs/xception/summary.json
//! cargo run --release --example xception_fashion -- --eval      # evaluate the checkpoint
//! ```
//! Fashion-MNIST: `apt-get install dataset-fashion-mnist` (→ /usr/share/datasets/fashion-mnist)
//! or `--data <dir>` with the four IDX files. Ctrl-C finishes the current step, writes the
//! checkpoint and exits; `--resume` continues from it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use wgcnn::data::{self, DatasetPair, Loader, Normalize};
use wgcnn::exec::Executor;
use wgcnn::graph::Graph;
use wgcnn::train::{self, RunInfo, Schedule};
use wgcnn::{nn, Backend, Optimizer, OptimizerKind};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Gpu,
    Cpu,
}

#[derive(Parser, Debug)]
#[command(
    about = "Train a small Xception-style network on Fashion-MNIST with wgcnn, against LeNet-5"
)]
struct Args {
    /// Directory with the four Fashion-MNIST IDX files (raw or .gz).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data: PathBuf,
    /// Epochs to train (in total, counting those of a resumed checkpoint).
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Learning rate (default: 0.05 for sgd/momentum/nesterov, 1e-3 otherwise).
    #[arg(long)]
    lr: Option<f32>,
    /// sgd|momentum|nesterov|rmsprop|adam|adamw (the same for both models)
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Weight decay: L2, or decoupled for adamw (default 5e-4, adamw 0.01 as PyTorch; 0
    /// means none).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Learning-rate schedule over the epochs: cosine (anneal to 0) or constant.
    #[arg(long, default_value = "cosine")]
    schedule: Schedule,
    #[arg(long, value_enum, default_value = "gpu")]
    backend: BackendArg,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images (the issue's budget: 10,000).
    #[arg(long, default_value_t = 10_000)]
    train_limit: usize,
    /// Channel widths: the entry convolution's, then one residual block per further width.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    widths: Vec<usize>,
    /// Checkpoint file (safetensors); written atomically every epoch.
    #[arg(long, default_value = "runs/xception/xception.safetensors")]
    checkpoint: PathBuf,
    /// Continue from the checkpoint (parameters, optimizer state, epoch, batch); the run's
    /// settings and data must match the checkpoint's.
    #[arg(long)]
    resume: bool,
    /// With --resume: accept other settings and continue from the next epoch boundary.
    #[arg(long)]
    resume_next_epoch: bool,
    /// Only evaluate the checkpoint on the test set.
    #[arg(long)]
    eval: bool,
    /// Skip the LeNet-5 baseline run.
    #[arg(long)]
    no_baseline: bool,
    /// Write a JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one training run produced.
struct RunResult {
    test_accuracy: f32,
    /// `None` when no epoch was trained.
    final_train_loss: Option<f32>,
    images_per_sec: f64,
    seconds: f64,
    parameters: usize,
    dispatches_per_step: u64,
    checkpoint_written: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
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
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    if args.train_limit == 0 {
        return Err("--train-limit must be at least 1".into());
    }
    if !args.eval {
        train::probe_output_file("--checkpoint", &args.checkpoint)?;
    }
    if let Some(p) = &args.json {
        train::probe_output_file("--json", p)?;
    }
    if args.resume_next_epoch && !args.resume {
        return Err("--resume-next-epoch goes with --resume".into());
    }
    if !args.data.is_dir() {
        return Err(format!(
            "data directory {} does not exist: install Fashion-MNIST with `apt-get install dataset-fashion-mnist` or pass --data <dir with the four IDX files>",
            args.data.display()
        )
        .into());
    }
    let mut pair = data::load_mnist_dir(&args.data, "fashion-mnist")?;
    pair.train.truncate(args.train_limit);
    // the model is built before any device work so shape errors come first
    let graph = nn::xception_mini(&[1, pair.train.rows, pair.train.cols], &args.widths, 10)?;

    let backend = match args.backend {
        BackendArg::Gpu => Backend::gpu()?,
        BackendArg::Cpu => Backend::cpu(),
    };
    let adapter = match &backend {
        Backend::Gpu(g) => g.adapter().to_string(),
        Backend::Cpu => "cpu reference path".to_string(),
    };
    println!("backend: {}", backend.describe());
    println!(
        "data:    fashion-mnist from {} ({} train / {} test images)",
        args.data.display(),
        pair.train.n,
        pair.test.n
    );
    println!(
        "budget:  {} epoch(s) of {} images, batch {}, {kind:?} lr {lr} ({:?}), weight decay {}",
        args.epochs, pair.train.n, args.batch_size, args.schedule, wd
    );

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })?;
    }

    // raw bytes in: the network's first layer rescales them to [−1, 1] (Keras-style)
    let raw = Normalize {
        scale: 1.0,
        mean: 0.0,
        std: 1.0,
    };
    let x = train_model(
        &args,
        &backend,
        "xception",
        &graph,
        &pair,
        raw,
        &opt,
        Some(&args.checkpoint),
        &stop,
    )?;
    let Some(x) = x else { return Ok(()) };
    let baseline = if args.no_baseline {
        None
    } else {
        let lenet = nn::lenet5()?;
        train_model(
            &args,
            &backend,
            "lenet5",
            &lenet,
            &pair,
            Normalize::mnist(),
            &opt,
            None,
            &stop,
        )?
    };

    println!(
        "xception: test accuracy {:.2}% ({} parameters, {:.0} img/s, {:.1} s)",
        100.0 * x.test_accuracy,
        x.parameters,
        x.images_per_sec,
        x.seconds
    );
    if let Some(b) = &baseline {
        println!(
            "lenet5:   test accuracy {:.2}% ({} parameters, {:.0} img/s, {:.1} s)",
            100.0 * b.test_accuracy,
            b.parameters,
            b.images_per_sec,
            b.seconds
        );
        let verdict = if x.test_accuracy > b.test_accuracy {
            "beats"
        } else {
            "does NOT beat"
        };
        println!(
            "xception {verdict} LeNet-5 by {:+.2} points under the same budget",
            100.0 * (x.test_accuracy - b.test_accuracy)
        );
    }
    if x.checkpoint_written {
        println!("checkpoint: {}", args.checkpoint.display());
    }

    if let Some(path) = &args.json {
        let run_json = |r: &RunResult| {
            serde_json::json!({
                "test_accuracy": r.test_accuracy,
                "final_train_loss": r.final_train_loss,
                "images_per_sec": r.images_per_sec,
                "seconds": r.seconds,
                "parameters": r.parameters,
                "dispatches_per_step": r.dispatches_per_step,
            })
        };
        let summary = serde_json::json!({
            "backend": match args.backend { BackendArg::Gpu => "gpu", BackendArg::Cpu => "cpu" },
            "adapter": adapter,
            "dataset": "fashion-mnist",
            "model": "xception_mini",
            "widths": args.widths,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "train_images": pair.train.n,
            "test_images": pair.test.n,
            "test_accuracy": x.test_accuracy,
            "final_train_loss": x.final_train_loss,
            "images_per_sec": x.images_per_sec,
            "seconds": x.seconds,
            "parameters": x.parameters,
            "dispatches_per_step": x.dispatches_per_step,
            "baseline": baseline.as_ref().map(|b| {
                let mut j = run_json(b);
                j["model"] = "lenet5".into();
                j
            }),
            "beats_baseline": baseline.as_ref().map(|b| x.test_accuracy > b.test_accuracy),
        });
        wgcnn::checkpoint::write_atomic(path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
        println!("json:       {}", path.display());
    }
    Ok(())
}

/// Trains `graph` for the budget in `args`, evaluating on the test set after each epoch.
/// With a checkpoint path, it is written every epoch and on Ctrl-C (then the process
/// exits 130), and `--resume` / `--eval` apply to it. `None` when only evaluating.
#[allow(clippy::too_many_arguments)]
fn train_model(
    args: &Args,
    backend: &Backend,
    name: &str,
    graph: &Graph,
    pair: &DatasetPair,
    norm: Normalize,
    opt: &Optimizer,
    checkpoint: Option<&PathBuf>,
    stop: &AtomicBool,
) -> Result<Option<RunResult>, Box<dyn std::error::Error>> {
    let train_loader = Loader::new(&pair.train, args.batch_size, true, args.seed, norm)?;
    let test_loader = Loader::new(&pair.test, args.batch_size, false, 0, norm)?;
    let t_plan = Instant::now();
    let mut ex = Executor::new(backend, graph, args.batch_size, *opt, args.seed)?;
    let parameters = graph.params().iter().map(|p| p.len()).sum::<usize>();
    let mem = ex.memory();
    println!(
        "{name}: {} nodes, {parameters} parameters; plan built in {:.2} s; params {} KiB, activations {} KiB",
        graph.nodes().len(),
        t_plan.elapsed().as_secs_f64(),
        mem.parameters / 1024,
        mem.activations / 1024
    );
    if let Some(path) = checkpoint {
        if args.eval {
            let info = train::load_checkpoint(&mut ex, path, false)?;
            let m = train::evaluate(&mut ex, &test_loader)?;
            println!(
                "checkpoint {} (epoch {}): test loss {:.4}, test accuracy {:.2}%",
                path.display(),
                info.epoch,
                m.loss,
                100.0 * m.accuracy
            );
            return Ok(None);
        }
    }
    let run = RunInfo::default()
        .with("model", name)
        .with("optimizer", format!("{:?}", opt.kind))
        .with("lr", opt.lr)
        .with("weight_decay", opt.weight_decay)
        .with("schedule", format!("{:?}", args.schedule))
        .with("batch_size", args.batch_size)
        .with("train_limit", args.train_limit)
        .with("seed", args.seed)
        .with("widths", format!("{:?}", args.widths))
        .with("train_images", pair.train.n)
        .with(
            "image_size",
            format!("{}x{}", pair.train.rows, pair.train.cols),
        )
        .with("train_labels_fnv1a", train::fnv1a_hex(&pair.train.labels));
    let (mut start_epoch, mut start_batch) = (0, 0);
    if let (Some(path), true) = (checkpoint, args.resume) {
        let r = train::resume_checked(&mut ex, path, &run, args.resume_next_epoch)?;
        (start_epoch, start_batch) = (r.epoch, r.batch);
        println!(
            "resumed: {} at epoch {}, batch {}",
            path.display(),
            r.epoch + 1,
            r.batch
        );
    }
    let mut checkpoint_written = false;
    let style =
        ProgressStyle::with_template("{prefix} [{bar:32.cyan/blue}] {pos:>6}/{len} img  {msg}")?
            .progress_chars("=> ");
    let t0 = Instant::now();
    let (mut images, mut secs_total) = (0usize, 0.0f64);
    let (mut test_accuracy, mut final_train_loss) = (None, None);
    for epoch in start_epoch..args.epochs {
        let bar = ProgressBar::new(pair.train.n as u64)
            .with_style(style.clone())
            .with_prefix(format!("{name} {:>2}/{}", epoch + 1, args.epochs));
        ex.set_lr(args.schedule.lr(opt.lr, epoch, args.epochs))?;
        let te = Instant::now();
        let skip = if epoch == start_epoch { start_batch } else { 0 };
        let stats = train::train_epoch(&mut ex, &train_loader, epoch, skip, 10, |done, m| {
            bar.set_position((skip * args.batch_size + done).min(pair.train.n) as u64);
            if let Some(m) = m {
                let rate = done as f64 / te.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("loss {:.4}  {:.0} img/s", m.loss, rate));
            }
            !stop.load(Ordering::SeqCst)
        })?;
        let secs = te.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if !stats.completed {
            if let Some(path) = checkpoint {
                train::save_checkpoint_run(&mut ex, path, epoch, stats.batches_done, &run)?;
                println!(
                    "interrupted in epoch {} after batch {}: checkpoint written to {} (continue with --resume)",
                    epoch + 1,
                    stats.batches_done,
                    path.display()
                );
            } else {
                println!("interrupted during the {name} baseline run");
            }
            std::process::exit(130);
        }
        images += stats.images;
        secs_total += secs;
        let test = train::evaluate(&mut ex, &test_loader)?;
        test_accuracy = Some(test.accuracy);
        final_train_loss = Some(stats.metrics.loss);
        println!(
            "{name} epoch {:>2}/{}  train loss {:.4}  train acc {:.2}%  test acc {:.2}%  {:.1} s  ({:.0} img/s)",
            epoch + 1,
            args.epochs,
            stats.metrics.loss,
            100.0 * stats.metrics.accuracy,
            100.0 * test.accuracy,
            secs,
            stats.images as f64 / secs.max(1e-9)
        );
        if let Some(path) = checkpoint {
            train::save_checkpoint_run(&mut ex, path, epoch + 1, 0, &run)?;
            checkpoint_written = true;
        }
    }
    let test_accuracy = match test_accuracy {
        Some(a) => a,
        None => {
            println!(
                "{name}: nothing to train (--epochs {}); evaluating the model",
                args.epochs
            );
            train::evaluate(&mut ex, &test_loader)?.accuracy
        }
    };
    Ok(Some(RunResult {
        checkpoint_written,
        test_accuracy,
        final_train_loss,
        images_per_sec: images as f64 / secs_total.max(1e-9),
        seconds: t0.elapsed().as_secs_f64(),
        parameters,
        dispatches_per_step: ex.counters().dispatches_per_step,
    }))
}
