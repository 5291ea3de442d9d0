//! Benchmark that prints its napkin math: kernel times and GFLOP/s on the GPU path and the
//! CPU path, and the LeNet-5 training step (images/s, dispatches, submits, bytes moved, host
//! encode time, MFLOP per image), every convolution's backward-weight ÷ forward time with and
//! without the split reduction, and ratios to PyTorch measured in the same sitting (the bench
//! runs `scripts/torch_reference.py` itself when `python3` has torch, or reads the JSON it
//! wrote shortly before with `--compare FILE`).
//!
//! ```text
//! cargo run --release --example bench                    # everything (~2-3 min on 2 CPU cores)
//! cargo run --release --example bench -- --quick         # LeNet step + small shapes only
//!                                                        # (GEMM by precision up to 1024³,
//!                                                        # 4096³ without --quick)
//! cargo run --release --example bench -- --json out.json # also write the figures as JSON
//! cargo run --release --example bench -- --naive-1024    # also the naive 1024³ GEMM (slow)
//! cargo run --release --example bench -- --quick --xception  # also nn::xception_mini's step
//! cargo run --release --example bench -- --compare torch.json # PyTorch figures from a file
//! cargo run --release --example bench -- --no-torch      # skip the PyTorch reference
//! cargo run --release --example bench -- --resnet        # only ResNet-20 (3×32×32, bytes +
//!                                                        # augmentation), data pipeline, PyTorch
//! cargo run --release --example bench -- --folder DIR    # only: decode one epoch of an image
//!                                                        # folder (scripts/folder_rss.sh)
//! ```
//!
//! GPU op times are kernel times on device-resident buffers: the same dispatch repeated in
//! one compute pass and one submit, wall clock including the wait, divided by the count (so
//! the per-dispatch overhead is included, the upload/readback is not). CPU op times are the
//! CPU twins (`wgcnn::cpu`, plain loops, one thread): the reference path, not a tuned CPU
//! library. FLOPs count a multiply-add as 2 (`Launch::flops`).

use std::time::Instant;

use serde_json::{json, Value};
use std::sync::Arc;

use wgcnn::cpu::conv::ConvDims;
use wgcnn::cpu::matmul::Gemm;
use wgcnn::exec::{Executor, Targets};
use wgcnn::gpu::bench::bench_values as values;
use wgcnn::gpu::{BenchProgram, GpuContext};
use wgcnn::graph::Graph;
use wgcnn::ops::conv::{Conv, ConvPass};
use wgcnn::ops::matmul::{BatchAxis, MatMul};
use wgcnn::ops::optim::OptimizerStep;
use wgcnn::ops::precision::HalfInputs;
use wgcnn::ops::{run_cpu, Launch};
use wgcnn::plan::Mode;
use wgcnn::{nn, Backend, Conv2dParams, Optimizer, Precision};

mod gemm;
mod reference;
mod resnet;
mod split;

struct Args {
    quick: bool,
    xception: bool,
    resnet: bool,
    folder: Option<String>,
    json: Option<String>,
    naive_1024: bool,
    compare: Option<String>,
    no_torch: bool,
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        xception: false,
        resnet: false,
        folder: None,
        json: None,
        naive_1024: false,
        compare: None,
        no_torch: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--quick" => a.quick = true,
            "--xception" => a.xception = true,
            "--resnet" => a.resnet = true,
            "--folder" => a.folder = Some(it.next().expect("--folder needs a directory")),
            "--naive-1024" => a.naive_1024 = true,
            "--json" => a.json = Some(it.next().expect("--json needs a path")),
            "--compare" => a.compare = Some(it.next().expect("--compare needs a path")),
            "--no-torch" => a.no_torch = true,
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--xception] [--resnet] [--folder DIR] [--json PATH] \
                     [--naive-1024] [--compare TORCH_JSON] [--no-torch]"
                );
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument '{other}' (try --help)");
                std::process::exit(2);
            }
        }
    }
    a
}

/// Seconds per repetition of `prog` (or of its dispatch `only`): a warm-up, then repetitions
/// in one submit sized to take about `budget` seconds, the best of `trials`.
fn time_gpu(ctx: &GpuContext, prog: &BenchProgram, only: Option<usize>, budget: f64) -> f64 {
    let first = ctx.bench_run(prog, only, 1).expect("bench run");
    let reps = ((budget / first.max(1e-6)) as usize).clamp(1, 200);
    let trials = if first * reps as f64 > 1.0 { 1 } else { 3 };
    (0..trials)
        .map(|_| ctx.bench_run(prog, only, reps).expect("bench run"))
        .fold(first.min(f64::MAX), f64::min)
}

/// Best of up to 3 runs of `f`, stopping once `budget` seconds are spent.
fn time_cpu(budget: f64, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    let t_all = Instant::now();
    for _ in 0..3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        if t_all.elapsed().as_secs_f64() > budget {
            break;
        }
    }
    best
}

fn conv_dims(n: usize, c: usize, hw: usize, o: usize, k: usize, pad: usize) -> ConvDims {
    Conv2dParams::new(1, pad)
        .dims2("bench", [n, c, hw, hw], [o, c, k, k])
        .expect("valid conv")
}

struct OpRow {
    name: String,
    shape: String,
    flops: f64,
    gpu_s: f64,
    cpu_s: Option<f64>,
}

/// CPU seconds used by this process so far (all threads, the adapter's workers included),
/// from /proc/self/stat (Linux); `None` elsewhere.
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The 1-minute load average (Linux), to judge how much of the machine the run had.
fn load_average() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().next().map(str::to_string)
}

fn gflops(flops: f64, s: f64) -> f64 {
    flops / s / 1e9
}

fn print_ops(rows: &[OpRow]) {
    println!("| op | shape | MFLOP | GPU ms | GPU GFLOP/s | CPU twin ms | CPU GFLOP/s |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let cpu = match r.cpu_s {
            Some(s) => format!("{:.2} | {:.2}", s * 1e3, gflops(r.flops, s)),
            None => "– | –".into(),
        };
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} | {} |",
            r.name,
            r.shape,
            r.flops / 1e6,
            r.gpu_s * 1e3,
            gflops(r.flops, r.gpu_s),
            cpu
        );
    }
}

fn bench_ops(ctx: &GpuContext, a: &Args) -> Vec<OpRow> {
    let mut rows = Vec::new();
    let mut convs = vec![(
        "LeNet conv2",
        "x 64×6×14×14, w 16×6×5×5",
        conv_dims(64, 6, 14, 16, 5, 0),
    )];
    if !a.quick {
        convs.push((
            "VGG-style",
            "x 32×64×32×32, w 64×64×3×3, pad 1",
            conv_dims(32, 64, 32, 64, 3, 1),
        ));
        convs.push((
            "ResNet-20 stage 3",
            "x 128×64×8×8, w 64×64×3×3, pad 1",
            conv_dims(128, 64, 8, 64, 3, 1),
        ));
    }
    for (label, shape, d) in convs {
        let x = values(1, d.x.iter().product());
        let w = values(2, d.w.iter().product());
        let b = values(3, d.w[0]);
        let dy = values(4, d.y.iter().product());
        let cpu_budget = if a.quick { 0.5 } else { 2.0 };
        let ops: [(&str, Conv, Vec<&[f32]>); 3] = [
            (
                "conv forward",
                Conv::new(ConvPass::Forward, d, true, (0, 0.0)),
                vec![&x, &w, &b],
            ),
            (
                "conv backward-input",
                Conv::new(ConvPass::BackwardInput, d, false, (0, 0.0)),
                vec![&dy, &w, &[]],
            ),
            (
                "conv backward-weight (+bias)",
                Conv::new(ConvPass::BackwardWeight, d, true, (0, 0.0)),
                vec![&x, &dy, &[]],
            ),
        ];
        for (name, op, inputs) in ops {
            let prog = ctx.bench_program(&[Arc::new(op)]).expect("record");
            let gpu_s = time_gpu(ctx, &prog, None, 0.3);
            let cpu_s = time_cpu(cpu_budget, || {
                std::hint::black_box(run_cpu(&op, &inputs));
            });
            rows.push(OpRow {
                name: name.into(),
                shape: format!("{label}: {shape}"),
                flops: op.flops(),
                gpu_s,
                cpu_s: Some(cpu_s),
            });
            eprintln!(
                "  {name} {label}: GPU {:.2} ms, CPU {:.2} ms",
                gpu_s * 1e3,
                cpu_s * 1e3
            );
            if ctx.caps().f16 {
                // the same kernel reading x/dy and w as f16 (Precision::F16Mixed's launches)
                let half = HalfInputs {
                    inner: Arc::new(op),
                    half: vec![0, 1],
                };
                let prog = ctx.bench_program(&[Arc::new(half)]).expect("record");
                let gpu_s = time_gpu(ctx, &prog, None, 0.3);
                rows.push(OpRow {
                    name: format!("{name}, f16 inputs"),
                    shape: format!("{label}: {shape}"),
                    flops: op.flops(),
                    gpu_s,
                    cpu_s: None,
                });
            }
        }
    }
    let sizes: &[usize] = if a.quick {
        &[256, 512]
    } else {
        &[256, 512, 1024]
    };
    for &s in sizes {
        let tiled = MatMul::new(Gemm::matmul(s, s, s), false, BatchAxis::None);
        let (av, bv) = (values(5, s * s), values(6, s * s));
        let cpu_s = time_cpu(if a.quick { 0.5 } else { 2.0 }, || {
            std::hint::black_box(run_cpu(&tiled, &[&av, &bv, &[][..], &[][..]]));
        });
        let mut variants = vec![("matmul (tiled gemm)", tiled)];
        if s <= 512 || a.naive_1024 {
            let naive = MatMul {
                naive: true,
                ..tiled
            };
            variants.push(("matmul (gemm_naive)", naive));
        }
        for (i, (name, op)) in variants.into_iter().enumerate() {
            let prog = ctx.bench_program(&[Arc::new(op)]).expect("record");
            let gpu_s = time_gpu(ctx, &prog, None, 0.3);
            rows.push(OpRow {
                name: name.into(),
                shape: format!("{s}×{s}·{s}×{s}"),
                flops: op.flops(),
                gpu_s,
                cpu_s: (i == 0).then_some(cpu_s),
            });
            eprintln!("  {name} {s}³: GPU {:.2} ms", gpu_s * 1e3);
        }
    }
    rows
}

struct StepRow {
    batch: usize,
    plan_s: f64,
    pipelines: u64,
    pipeline_s: f64,
    images_per_s: f64,
    step_ms: f64,
    cpu_ms: Option<f64>,
    dispatches: u64,
    submits: u64,
    up_bytes: f64,
    down_bytes: f64,
    encode_us: f64,
    host_step_us: f64,
    mflop_per_image: f64,
    cpu_images_per_s: f64,
    /// Per dispatch: kernel, shape, FLOPs, seconds timed alone, invocations launched.
    breakdown: Vec<(String, String, f64, f64, u64)>,
    compiled_during_training: u64,
}

/// `name` and its tile constants (the activation and flag constants left out).
fn short_variant(v: &str) -> String {
    let mut parts = v.split(' ');
    let name = parts.next().unwrap_or_default().to_string();
    let tiles: Vec<&str> = parts
        .filter(|p| {
            let k = p.split('=').next().unwrap_or_default();
            !matches!(
                k,
                "ACT"
                    | "HAS_BIAS"
                    | "ACT_OUT"
                    | "ACT_IN"
                    | "ONES_COL"
                    | "KEEP_Z"
                    | "KWM"
                    | "WRED"
                    | "SEG"
                    | "DSEG"
            ) && !k.starts_with("S_")
                && k != "GEO"
        })
        .collect();
    if tiles.is_empty() {
        name
    } else {
        format!("{name} ({})", tiles.join(" "))
    }
}

/// Images/s of `graph`'s training step at `batch` in `precision` (steps back to back, one
/// metrics readback), or why it cannot run on this adapter.
fn bench_precision_step(
    gpu: &Backend,
    graph: &Graph,
    batch: usize,
    precision: Precision,
    a: &Args,
) -> Result<f64, String> {
    let opt = Optimizer::sgd(0.01);
    let mut ex = Executor::with_precision(gpu, graph, batch, opt, 0, precision)
        .map_err(|e| e.to_string())?;
    let per = graph.numel(graph.input_node().expect("an input"));
    let x = values(7, batch * per);
    let y: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    for _ in 0..2 {
        ex.train_step(&x, Targets::Classes(&y)).expect("step");
    }
    ex.take_metrics(Mode::Train).expect("metrics");
    let steps = if a.quick { 8 } else { 24 };
    let t = Instant::now();
    for _ in 0..steps {
        ex.train_step(&x, Targets::Classes(&y)).expect("step");
    }
    let m = ex.take_metrics(Mode::Train).expect("metrics");
    assert!(m.loss.is_finite(), "loss is finite");
    Ok((steps * batch) as f64 / t.elapsed().as_secs_f64())
}

/// The step of each model in f32 and in f16 mixed precision, measured one after the other.
fn bench_precisions(gpu: &Backend, a: &Args) -> Vec<(String, usize, f64, Result<f64, String>)> {
    let mut models = vec![("lenet5", nn::lenet5().expect("lenet"), vec![64, 256])];
    if a.xception {
        let g = nn::xception_mini(&[1, 28, 28], &[32, 64, 128], 10).expect("xception");
        models.push(("xception_mini", g, vec![64]));
    }
    if a.resnet {
        models.push((
            "resnet20",
            nn::resnet_cifar(20, 10).expect("resnet20"),
            vec![64],
        ));
    }
    let mut rows = Vec::new();
    for (name, g, batches) in &models {
        for &b in batches {
            eprintln!("{name} batch {b}: f32 and f16-mixed steps…");
            let f32_ips = bench_precision_step(gpu, g, b, Precision::F32, a).expect("f32 step");
            let f16 = bench_precision_step(gpu, g, b, Precision::f16_mixed(), a);
            rows.push((name.to_string(), b, f32_ips, f16));
        }
    }
    println!("## Training step by precision (SGD; measured one after the other)");
    println!();
    println!("| model | batch | f32 images/s | f16-mixed images/s | f16 ÷ f32 |");
    println!("|---|---:|---:|---:|---:|");
    for (name, b, f, h) in &rows {
        match h {
            Ok(h) => println!("| {name} | {b} | {f:.0} | {h:.0} | {:.2}× |", h / f),
            Err(e) => println!("| {name} | {b} | {f:.0} | – ({e}) | – |"),
        }
    }
    println!();
    rows
}

fn bench_lenet(gpu: &Backend, batch: usize, a: &Args, breakdown: bool) -> StepRow {
    bench_step(gpu, &nn::lenet5().expect("lenet"), batch, a, breakdown)
}

/// The training step of `graph` (1×28×28 inputs, 10 classes) at batch size `batch`.
fn bench_step(gpu: &Backend, graph: &Graph, batch: usize, a: &Args, breakdown: bool) -> StepRow {
    let ctx = gpu.gpu_context().expect("gpu backend");
    let opt = Optimizer::sgd(0.01);
    let before = ctx.pipeline_stats();
    let t = Instant::now();
    let mut ex = Executor::new(gpu, graph, batch, opt, 0).expect("executor");
    let plan_s = t.elapsed().as_secs_f64();
    let after_plan = ctx.pipeline_stats();
    let x = values(7, batch * 784);
    let y: Vec<u32> = values(8, batch)
        .iter()
        .map(|v| ((v + 1.0) * 5.0) as u32 % 10)
        .collect();
    // warm-up
    for _ in 0..2 {
        ex.train_step(&x, Targets::Classes(&y)).expect("step");
    }
    ex.take_metrics(Mode::Train).expect("metrics");
    // host time of a train_step call (upload + encode + submit) on an idle device
    let mut host = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        ex.train_step(&x, Targets::Classes(&y)).expect("step");
        host.push(t.elapsed().as_secs_f64());
        ex.take_metrics(Mode::Train).expect("metrics");
    }
    host.sort_by(f64::total_cmp);
    // throughput: steps back to back, one metrics readback at the end
    let steps = match (a.quick, batch >= 256) {
        (true, true) => 3,
        (true, false) => 8,
        (false, true) => 8,
        (false, false) => 24,
    };
    let c0 = ex.counters();
    let cpu0 = process_cpu_s();
    let t = Instant::now();
    for _ in 0..steps {
        ex.train_step(&x, Targets::Classes(&y)).expect("step");
    }
    let m = ex.take_metrics(Mode::Train).expect("metrics");
    let dt = t.elapsed().as_secs_f64();
    let cpu_ms = match (cpu0, process_cpu_s()) {
        (Some(a), Some(b)) => Some((b - a) / steps as f64 * 1e3),
        _ => None,
    };
    let c1 = ex.counters();
    assert!(m.loss.is_finite(), "loss is finite");
    let compiled_during_training = ctx.pipeline_stats().pipelines - after_plan.pipelines;
    // the same dispatches, recorded on their own buffers: encode time, FLOPs, breakdown
    let plan = ex.plan();
    let mut ops: Vec<Arc<dyn Launch>> = ex
        .steps(batch)
        .expect("steps")
        .iter()
        .map(|s| s.launch.clone())
        .collect();
    ops.push(Arc::new(OptimizerStep {
        opt,
        t: 1,
        len: plan.flat_len,
    }));
    let prog = ctx.bench_program(&ops).expect("record");
    let _ = ctx.bench_encode(&prog, 20);
    let encode_s = ctx.bench_encode(&prog, 200);
    let flops: f64 = ops.iter().map(|o| o.flops()).sum();
    let mut rows = Vec::new();
    if breakdown {
        for (i, op) in ops.iter().enumerate() {
            let s = time_gpu(ctx, &prog, Some(i), 0.1);
            // 64 invocations per workgroup in every kernel of a training step
            let invocations = op.gpu(ctx).map_or(0, |c| c.groups * 64);
            rows.push((
                short_variant(&prog.variant(i)),
                op.describe(),
                op.flops(),
                s,
                invocations,
            ));
        }
    }
    // the CPU executor, for comparison
    let mut cex = Executor::new(&Backend::cpu(), graph, batch, opt, 0).expect("cpu executor");
    cex.train_step(&x, Targets::Classes(&y)).expect("cpu step");
    let csteps = if batch >= 256 { 2 } else { 4 };
    let t = Instant::now();
    for _ in 0..csteps {
        cex.train_step(&x, Targets::Classes(&y)).expect("cpu step");
    }
    cex.take_metrics(Mode::Train).expect("metrics");
    let cpu_ips = (csteps * batch) as f64 / t.elapsed().as_secs_f64();
    let nsteps = (c1.steps - c0.steps).max(1) as f64;
    StepRow {
        batch,
        plan_s,
        pipelines: after_plan.pipelines - before.pipelines,
        pipeline_s: after_plan.seconds - before.seconds,
        images_per_s: (steps * batch) as f64 / dt,
        step_ms: dt / steps as f64 * 1e3,
        cpu_ms,
        dispatches: c1.dispatches_per_step,
        submits: c1.submits_last_step,
        up_bytes: (c1.bytes_uploaded - c0.bytes_uploaded) as f64 / nsteps,
        down_bytes: (c1.bytes_read_back - c0.bytes_read_back) as f64 / nsteps,
        encode_us: encode_s * 1e6,
        host_step_us: host[host.len() / 2] * 1e6,
        mflop_per_image: flops / batch as f64 / 1e6,
        cpu_images_per_s: cpu_ips,
        breakdown: rows,
        compiled_during_training,
    }
}

fn main() {
    let a = args();
    if let Some(dir) = &a.folder {
        resnet::folder_epoch(std::path::Path::new(dir));
        return;
    }
    let started = Instant::now();
    let gpu = match Backend::gpu() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let ctx = gpu.gpu_context().expect("gpu").clone();
    let adapter = ctx.adapter().to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    if a.resnet {
        resnet::run(&gpu, &adapter, a.quick, a.json.as_deref());
        return;
    }
    println!("# wgcnn benchmark");
    println!();
    println!("adapter: {adapter}");
    println!(
        "host: {cores} logical CPUs, load average {} at start",
        load_average().unwrap_or_else(|| "?".into())
    );
    let flags: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "command: cargo run --release --example bench{}",
        if flags.is_empty() {
            String::new()
        } else {
            format!(" -- {}", flags.join(" "))
        }
    );
    println!();

    // LeNet first, on a fresh device, so plan creation compiles its pipelines cold.
    eprintln!("LeNet-5 training step…");
    let lenet: Vec<StepRow> = [64usize, 256]
        .iter()
        .map(|&b| bench_lenet(&gpu, b, &a, b == 64))
        .collect();
    println!("## LeNet-5 training step (SGD)");
    println!();
    println!("| batch | GPU images/s | ms/step | process CPU ms/step | dispatches/step | submits/step | uploaded/step | read back/step | host encode µs | host train_step µs | MFLOP/image | GPU GFLOP/s | CPU executor images/s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &lenet {
        println!(
            "| {} | {:.0} | {:.1} | {} | {} | {} | {:.1} KB | {:.0} B | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} |",
            r.batch,
            r.images_per_s,
            r.step_ms,
            r.cpu_ms.map_or("–".into(), |c| format!("{c:.1}")),
            r.dispatches,
            r.submits,
            r.up_bytes / 1024.0,
            r.down_bytes,
            r.encode_us,
            r.host_step_us,
            r.mflop_per_image,
            r.mflop_per_image * r.images_per_s / 1e3,
            r.cpu_images_per_s
        );
    }
    println!();
    for r in &lenet {
        println!(
            "plan creation, batch {}: {:.2} s ({} pipelines compiled in {:.2} s; {} compiled during training)",
            r.batch, r.plan_s, r.pipelines, r.pipeline_s, r.compiled_during_training
        );
    }
    println!();
    println!(
        "Read back per step is the metrics readback (16 B per `take_metrics`) spread over the"
    );
    println!(
        "steps between readbacks; a training step itself reads nothing back. Process CPU time"
    );
    println!("counts every thread of this process (the adapter's workers too): on an idle machine");
    println!(
        "with a CPU adapter it is up to cores × wall time, on a busy one closer to wall time."
    );
    println!();
    if let Some(r) = lenet.first() {
        print_breakdown(r);
    }
    let xception = a.xception.then(|| {
        eprintln!("xception_mini training step…");
        let g = nn::xception_mini(&[1, 28, 28], &[32, 64, 128], 10).expect("xception");
        let r = bench_step(&gpu, &g, 64, &a, true);
        println!("## nn::xception_mini training step (SGD, batch 64)");
        println!();
        println!(
            "GPU {:.0} images/s ({:.1} ms/step, {} dispatches/step, {:.2} MFLOP/image); CPU executor {:.0} images/s",
            r.images_per_s, r.step_ms, r.dispatches, r.mflop_per_image, r.cpu_images_per_s
        );
        println!();
        print_breakdown(&r);
        r
    });
    let precisions = bench_precisions(&gpu, &a);
    let mut bwd = split::bench(&gpu, "lenet5", &nn::lenet5().expect("lenet"), 64);
    if a.xception {
        let g = nn::xception_mini(&[1, 28, 28], &[32, 64, 128], 10).expect("xception");
        bwd.extend(split::bench(&gpu, "xception_mini", &g, 64));
    }
    split::print(&bwd);
    let torch = torch_reference(&a, &ctx, cores);
    let mut ours = vec![
        ("lenet5", 64, lenet[0].images_per_s),
        ("lenet5", 256, lenet[1].images_per_s),
    ];
    if let Some(x) = &xception {
        ours.push(("xception_mini", 64, x.images_per_s));
    }
    reference::print_ratios(&torch, &ours);

    eprintln!("ops…");
    let ops = bench_ops(&ctx, &a);
    println!("## Ops (GPU: kernel on resident buffers; CPU: the CPU twin, one thread)");
    println!();
    print_ops(&ops);
    println!();
    eprintln!("GEMM by precision…");
    let gemms = gemm::run(&ctx, a.quick);
    gemm::print(&ctx, &gemms);
    let find = |name: &str, shape: &str| {
        ops.iter()
            .find(|r| r.name.starts_with(name) && r.shape.starts_with(shape))
            .map(|r| r.gpu_s)
    };
    println!("## Targets");
    println!();
    match &torch {
        Ok(t) => {
            for (model, batch, ips) in &ours {
                if let Some(p) = t.images_per_s(model, *batch, "eager") {
                    println!(
                        "- {model} step vs PyTorch ({}, same sitting), batch {batch}: {:.2}× ({ips:.0} / {p:.0} images/s)",
                        t.device,
                        ips / p
                    );
                }
                if let Some((mode, p)) = t.best(model, *batch) {
                    println!(
                        "- {model} step vs PyTorch's best mode ({mode}, same sitting), batch {batch}: {:.2}× ({ips:.0} / {p:.0} images/s; target ≥ 1 on an H100/H200)",
                        ips / p
                    );
                }
            }
        }
        Err(e) => println!("- steps vs PyTorch: not measured ({e})"),
    }
    let worst = |split: bool| {
        bwd.iter()
            .map(|r| r.split_s.filter(|_| split).unwrap_or(r.whole_s) / r.fwd_s)
            .fold(0.0f64, f64::max)
    };
    let planned = bwd
        .iter()
        .map(|r| r.planned_s / r.fwd_s)
        .fold(0.0f64, f64::max);
    println!(
        "- conv backward-weight ≤ 1.5× forward, every conv measured: worst {planned:.2}× as this adapter's plan runs it, {:.2}× unsplit, {:.2}× split where a plan aiming at {} workgroups splits",
        worst(false),
        worst(true),
        split::TARGET
    );
    if let (Some(t), Some(n)) = (
        find("matmul (tiled", "512×"),
        find("matmul (gemm_naive", "512×"),
    ) {
        println!("- tiled matmul 512³ ≥ 4× naive: {:.1}×", n / t);
    }
    for (label, _) in [("LeNet conv2", 0), ("VGG-style", 1)] {
        if let (Some(f), Some(w)) = (
            find("conv2d forward", label),
            find("conv2d backward-weight", label),
        ) {
            println!(
                "- conv backward-weight ≤ 2× forward ({label}): {:.2}×",
                w / f
            );
        }
    }
    println!(
        "- host encode time per LeNet step ≤ 50 µs: {:.0} µs (batch 64), {:.0} µs (batch 256)",
        lenet[0].encode_us, lenet[1].encode_us
    );
    println!("- LeNet-5 plan creation < 2 s: {:.2} s", lenet[0].plan_s);
    println!(
        "- dispatches per step ≤ 20, one submit: {} dispatches, {} submit",
        lenet[0].dispatches, lenet[0].submits
    );
    println!();
    println!("(benchmark ran {:.0} s)", started.elapsed().as_secs_f64());

    if let Some(path) = &a.json {
        let j = json!({
            "adapter": adapter,
            "logical_cpus": cores,
            "load_average": load_average(),
            "quick": a.quick,
            "gemm_precisions": gemms.iter().map(|r| json!({
                "n": r.size,
                "precision": r.precision,
                "kernel": r.kernel,
                "seconds": r.seconds,
                "gflop_per_s": r.seconds.map(|s| 2.0 * (r.size as f64).powi(3) / s / 1e9),
                "peak_tflop_per_s": r.peak,
            })).collect::<Vec<_>>(),
            "lenet": lenet.iter().map(|r| json!({
                "batch": r.batch,
                "images_per_s": r.images_per_s,
                "step_ms": r.step_ms,
                "process_cpu_ms_per_step": r.cpu_ms,
                "dispatches_per_step": r.dispatches,
                "submits_per_step": r.submits,
                "bytes_uploaded_per_step": r.up_bytes,
                "bytes_read_back_per_step": r.down_bytes,
                "host_encode_us": r.encode_us,
                "host_train_step_us": r.host_step_us,
                "mflop_per_image": r.mflop_per_image,
                "cpu_executor_images_per_s": r.cpu_images_per_s,
                "plan_creation_s": r.plan_s,
                "pipelines_compiled": r.pipelines,
                "pipeline_compile_s": r.pipeline_s,
                "pipelines_compiled_during_training": r.compiled_during_training,
                "breakdown": r.breakdown.iter().map(|(k, s, f, t, inv)| json!({
                    "kernel": k, "shape": s, "flops": f, "seconds": t, "invocations": inv,
                })).collect::<Vec<Value>>(),
            })).collect::<Vec<Value>>(),
            "xception_mini": xception.as_ref().map(|r| json!({
                "batch": r.batch,
                "images_per_s": r.images_per_s,
                "step_ms": r.step_ms,
                "breakdown": r.breakdown.iter().map(|(k, s, f, t, inv)| json!({
                    "kernel": k, "shape": s, "flops": f, "seconds": t, "invocations": inv,
                })).collect::<Vec<Value>>(),
            })),
            "torch": torch.as_ref().map(|t| t.to_json()).unwrap_or(Value::Null),
            "precision_steps": precisions.iter().map(|(m, b, f, h)| json!({
                "model": m, "batch": b, "f32_images_per_s": f,
                "f16_mixed_images_per_s": h.as_ref().ok(),
                "f16_mixed_error": h.as_ref().err(),
            })).collect::<Vec<Value>>(),
            "backward_weight_vs_forward": bwd.iter().map(|r| r.to_json()).collect::<Vec<Value>>(),
            "ops": ops.iter().map(|r| json!({
                "op": r.name, "shape": r.shape, "flops": r.flops,
                "gpu_s": r.gpu_s, "gpu_gflops": gflops(r.flops, r.gpu_s),
                "cpu_s": r.cpu_s, "cpu_gflops": r.cpu_s.map(|s| gflops(r.flops, s)),
            })).collect::<Vec<Value>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&j).expect("json"))
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
        eprintln!("wrote {path}");
    }
}

/// PyTorch's figures: from `--compare FILE`, else run now (unless `--no-torch`).
fn torch_reference(
    a: &Args,
    ctx: &GpuContext,
    cores: usize,
) -> Result<reference::TorchRef, String> {
    if let Some(path) = &a.compare {
        return reference::read(path);
    }
    if a.no_torch {
        return Err("skipped (--no-torch)".into());
    }
    eprintln!("PyTorch reference (scripts/torch_reference.py)…");
    reference::run_now(ctx.adapter().device_type == "Cpu", cores)
}

fn print_breakdown(r: &StepRow) {
    {
        let total: f64 = r.breakdown.iter().map(|b| b.3).sum();
        println!(
            "### Where a batch-{} step goes (each dispatch timed alone)",
            r.batch
        );
        println!();
        println!("| # | kernel | shape | invocations | MFLOP | ms | share | GFLOP/s |");
        println!("|---:|---|---|---:|---:|---:|---:|---:|");
        for (i, (k, shape, f, s, inv)) in r.breakdown.iter().enumerate() {
            println!(
                "| {} | {k} | {shape} | {inv} | {:.2} | {:.2} | {:.0}% | {} |",
                i + 1,
                f / 1e6,
                s * 1e3,
                100.0 * s / total,
                if *f > 0.0 {
                    format!("{:.2}", gflops(*f, *s))
                } else {
                    "–".into()
                }
            );
        }
        println!(
            "| | **sum** | | | {:.1} | {:.1} | | {:.2} |",
            r.breakdown.iter().map(|b| b.2).sum::<f64>() / 1e6,
            total * 1e3,
            gflops(r.breakdown.iter().map(|b| b.2).sum::<f64>(), total)
        );
        println!();
    }
}
