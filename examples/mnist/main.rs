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

mod plots;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use wgcnn::data::{self, Loader, Normalize};
use wgcnn::exec::Executor;
use wgcnn::train::{self, Schedule};
use wgcnn::{nn, Backend, Optimizer, OptimizerKind};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Gpu,
    Cpu,
}

#[derive(Parser, Debug)]
#[command(about = "Train LeNet-5 on MNIST-format data with wgcnn")]
struct Args {
    /// Directory with the four IDX files (raw or .gz); default: the bundled 10k subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Epochs to train (in total, counting those of a resumed checkpoint).
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
    /// L2 weight decay (decoupled for adamw; 0 there means PyTorch's default 0.01).
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f32,
    /// Learning-rate schedule over the epochs: cosine (anneal to 0) or constant.
    #[arg(long, default_value = "cosine")]
    schedule: Schedule,
    #[arg(long, value_enum, default_value = "gpu")]
    backend: BackendArg,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Checkpoint file (safetensors, PyTorch names); written atomically every epoch.
    #[arg(long, default_value = "runs/mnist/lenet5.safetensors")]
    checkpoint: PathBuf,
    /// Continue from the checkpoint (parameters, optimizer state, epoch).
    #[arg(long)]
    resume: bool,
    /// Only evaluate the checkpoint on the test set.
    #[arg(long)]
    eval: bool,
    /// Write loss/accuracy curves, first-layer filters and the confusion matrix here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write a JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
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
    let mut opt = Optimizer::from_kind(kind, lr);
    if args.weight_decay != 0.0 {
        opt = opt.weight_decay(args.weight_decay);
    }
    opt.validate()?;
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }

    // ---- data ---------------------------------------------------------------------
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
        if n == 0 {
            return Err("--train-limit must be at least 1".into());
        }
        pair.train.truncate(n);
    }
    let norm = Normalize::mnist();
    let train_loader = Loader::new(&pair.train, args.batch_size, true, args.seed, norm)?;
    let test_loader = Loader::new(&pair.test, args.batch_size, false, 0, norm)?;

    // ---- model and executor -----------------------------------------------------------
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
        "data:    {name} from {} ({} train / {} test images)",
        dir.display(),
        pair.train.n,
        pair.test.n
    );
    let graph = nn::lenet5()?;
    let t_plan = Instant::now();
    let mut ex = Executor::new(&backend, &graph, args.batch_size, opt, args.seed)?;
    let mem = ex.memory();
    println!(
        "model:   LeNet-5, {} parameters; {:?} lr {lr}; batch {}; plan built in {:.2} s",
        graph.params().iter().map(|p| p.len()).sum::<usize>(),
        kind,
        args.batch_size,
        t_plan.elapsed().as_secs_f64()
    );
    println!(
        "memory:  params {} KiB, grads {} KiB, optimizer {} KiB, activations {} KiB (unshared {} KiB)",
        mem.parameters / 1024,
        mem.gradients / 1024,
        mem.optimizer_state / 1024,
        mem.activations / 1024,
        mem.activations_unshared / 1024
    );

    if args.eval {
        let info = train::load_checkpoint(&mut ex, &args.checkpoint, false)?;
        let m = train::evaluate(&mut ex, &test_loader)?;
        println!(
            "checkpoint {} (epoch {}, step {}): test loss {:.4}, test accuracy {:.2}%",
            args.checkpoint.display(),
            info.epoch,
            info.step,
            m.loss,
            100.0 * m.accuracy
        );
        if let Some(dir) = &args.plot {
            write_plots(&mut ex, &test_loader, dir, &name, &[], &[], &[])?;
        }
        return Ok(());
    }

    let (mut start_epoch, mut start_batch) = (0, 0);
    if args.resume {
        let info = train::load_checkpoint(&mut ex, &args.checkpoint, true)?;
        (start_epoch, start_batch) = (info.epoch, info.batch);
        println!(
            "resumed: {} at epoch {}, batch {}, step {}",
            args.checkpoint.display(),
            info.epoch + 1,
            info.batch,
            info.step
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })?;
    }

    // ---- training ---------------------------------------------------------------------
    let t0 = Instant::now();
    let (mut losses, mut train_accs, mut test_accs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut best, mut last_loss, mut train_images, mut train_secs) =
        (0.0f32, f32::NAN, 0usize, 0.0f64);
    let (mut bytes_first, mut bytes_last) = (0u64, 0u64);
    let style =
        ProgressStyle::with_template("{prefix} [{bar:32.cyan/blue}] {pos:>6}/{len} img  {msg}")?
            .progress_chars("=> ");
    for epoch in start_epoch..args.epochs {
        let bar = ProgressBar::new(pair.train.n as u64)
            .with_style(style.clone())
            .with_prefix(format!("epoch {:>2}/{}", epoch + 1, args.epochs));
        ex.set_lr(args.schedule.lr(lr, epoch, args.epochs))?;
        let te = Instant::now();
        let skip = if epoch == start_epoch { start_batch } else { 0 };
        bar.set_position((skip * args.batch_size).min(pair.train.n) as u64);
        let stats = train::train_epoch(&mut ex, &train_loader, epoch, skip, 25, |done, m| {
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
            train::save_checkpoint(&mut ex, &args.checkpoint, epoch, stats.batches_done)?;
            println!(
                "interrupted in epoch {} after batch {}: checkpoint written to {} (continue with --resume)",
                epoch + 1,
                stats.batches_done,
                args.checkpoint.display()
            );
            // 130 = interrupted by SIGINT, so scripts can tell this from a finished run
            std::process::exit(130);
        }
        train_images += stats.images;
        train_secs += secs;
        let test = train::evaluate(&mut ex, &test_loader)?;
        losses.push(stats.metrics.loss);
        train_accs.push(stats.metrics.accuracy);
        test_accs.push(test.accuracy);
        best = best.max(test.accuracy);
        last_loss = stats.metrics.loss;
        let bytes = ex.counters().gpu_bytes_allocated;
        if epoch == start_epoch {
            bytes_first = bytes;
        }
        bytes_last = bytes;
        println!(
            "epoch {:>2}/{}  train loss {:.4}  train acc {:.2}%  test acc {:.2}%  {:.1} s  ({:.0} img/s)",
            epoch + 1,
            args.epochs,
            stats.metrics.loss,
            100.0 * stats.metrics.accuracy,
            100.0 * test.accuracy,
            secs,
            stats.images as f64 / secs.max(1e-9)
        );
        train::save_checkpoint(&mut ex, &args.checkpoint, epoch + 1, 0)?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let c = ex.counters();
    let final_acc = test_accs.last().copied().unwrap_or(0.0);
    println!(
        "done: final test accuracy {:.2}% (best {:.2}%) in {:.1} s; {} dispatches and {} submit per step",
        100.0 * final_acc,
        100.0 * best,
        seconds,
        c.dispatches_per_step,
        c.submits_last_step.max(1)
    );
    println!("checkpoint: {}", args.checkpoint.display());

    if let Some(dir) = &args.plot {
        write_plots(
            &mut ex,
            &test_loader,
            dir,
            &name,
            &losses,
            &train_accs,
            &test_accs,
        )?;
    }
    if let Some(path) = &args.json {
        let summary = serde_json::json!({
            "backend": match args.backend { BackendArg::Gpu => "gpu", BackendArg::Cpu => "cpu" },
            "adapter": adapter,
            "dataset": name,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "train_images": pair.train.n,
            "test_images": pair.test.n,
            "test_accuracy": final_acc,
            "final_train_loss": last_loss,
            "images_per_sec": train_images as f64 / train_secs.max(1e-9),
            "dispatches_per_step": c.dispatches_per_step,
            "submits_per_step": c.submits_last_step,
            "gpu_bytes_first_epoch": bytes_first,
            "gpu_bytes_last_epoch": bytes_last,
            "seconds": seconds,
        });
        wgcnn::checkpoint::write_atomic(path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
        println!("json:       {}", path.display());
    }
    Ok(())
}

fn write_plots(
    ex: &mut Executor,
    test: &Loader,
    dir: &Path,
    name: &str,
    losses: &[f32],
    train_accs: &[f32],
    test_accs: &[f32],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    if !losses.is_empty() {
        files.extend(plots::curves(dir, losses, train_accs, test_accs)?);
    }
    let params = ex.parameters()?;
    if let Some((_, shape, w)) = params.iter().find(|(n, _, _)| n == "c1.weight") {
        files.push(plots::filters(dir, w, shape[0], shape[2], shape[3])?);
    }
    let m = train::confusion(ex, test)?;
    let mut matrix = [[0u32; 10]; 10];
    for (r, row) in m.iter().enumerate().take(10) {
        for (c, &v) in row.iter().enumerate().take(10) {
            matrix[r][c] = v;
        }
    }
    files.push(plots::confusion(dir, &matrix, &data::class_names(name))?);
    for f in files {
        println!("plot:       {}", f.display());
    }
    Ok(())
}
