//! `bench -- --resnet`: the ResNet-20 training step (`nn::resnet_cifar(20, 10)`, 3×32×32
//! byte batches through the executor's input pipeline with `crop=4,flip`) at batch 128 and
//! 512, the data pipeline's images/s beside it, and PyTorch's figure for the same net from
//! `scripts/torch_reference.py --resnet`, run in the same sitting when `python3` with torch
//! is present.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};
use wgcnn::data::{ChannelNormalize, Dataset, FolderOptions, ImageFolder};
use wgcnn::exec::{Executor, InputPipeline, Targets};
use wgcnn::ops::augment::Augmentation;
use wgcnn::plan::Mode;
use wgcnn::train::{dataset_byte_batches, ByteBatch};
use wgcnn::{nn, Backend, Optimizer};

const PER: usize = 3 * 32 * 32;

/// A synthetic CIFAR-shaped dataset of `n` images.
fn dataset(n: usize) -> Dataset {
    let images: Vec<u8> = (0..n * PER)
        .map(|i| ((i * 2654435761) >> 13) as u8)
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    Dataset::with_channels("synthetic", images, labels, 3, 32, 32, 10).expect("dataset")
}

/// The step figures at one batch size.
fn step(gpu: &Backend, batch: usize, quick: bool) -> Value {
    let g = nn::resnet_cifar(20, 10).expect("resnet20");
    let t = Instant::now();
    let mut ex = Executor::new(gpu, &g, batch, Optimizer::nesterov(0.1, 0.9), 0).expect("executor");
    let plan_s = t.elapsed().as_secs_f64();
    ex.set_input_pipeline(InputPipeline {
        normalize: ChannelNormalize::cifar10(),
        augment: Augmentation::parse("crop=4,flip").expect("augment"),
        seed: 0,
    })
    .expect("pipeline");
    let ds = dataset(batch);
    let b: ByteBatch = dataset_byte_batches(&ds, batch, (true, 0, 0), 0)
        .next()
        .expect("a batch")
        .expect("bytes");
    let run = |ex: &mut Executor, epoch: u32| {
        ex.train_step_bytes(&b.images, &b.indices, epoch, Targets::Classes(&b.labels))
            .expect("step")
    };
    run(&mut ex, 0);
    ex.take_metrics(Mode::Train).expect("metrics");
    // host time of one call (upload, encode, submit) on an idle device
    let mut host = Vec::new();
    for e in 0..3 {
        let t = Instant::now();
        run(&mut ex, e);
        host.push(t.elapsed().as_secs_f64());
        ex.take_metrics(Mode::Train).expect("metrics");
    }
    host.sort_by(f64::total_cmp);
    let steps = if quick { 2 } else { 4 };
    let c0 = ex.counters();
    let t = Instant::now();
    for e in 0..steps {
        run(&mut ex, e);
    }
    let m = ex.take_metrics(Mode::Train).expect("metrics");
    let dt = t.elapsed().as_secs_f64();
    let c1 = ex.counters();
    assert!(m.loss.is_finite(), "loss {}", m.loss);
    json!({
        "batch": batch,
        "images_per_s": (steps as usize * batch) as f64 / dt,
        "step_ms": dt / steps as f64 * 1e3,
        "dispatches_per_step": c1.dispatches_per_step,
        "submits_per_step": c1.submits_last_step,
        "host_train_step_us": host[1] * 1e6,
        "bytes_uploaded_per_step": (c1.bytes_uploaded - c0.bytes_uploaded) / steps as u64,
        "gpu_bytes_allocated": c1.gpu_bytes_allocated,
        "plan_creation_s": plan_s,
    })
}

/// Images/s of the data pipeline: gathering byte batches from memory, and decoding an image
/// folder of PNGs on the worker threads.
fn pipeline(quick: bool) -> (f64, f64) {
    let n = if quick { 4096 } else { 16384 };
    let ds = dataset(n);
    let t = Instant::now();
    let mut seen = 0;
    for b in dataset_byte_batches(&ds, 128, (true, 0, 1), 0) {
        seen += b.expect("batch").labels.len();
    }
    let memory = seen as f64 / t.elapsed().as_secs_f64();
    let dir = std::env::temp_dir().join(format!("wgcnn-bench-folder-{}", std::process::id()));
    let files = if quick { 512 } else { 2048 };
    write_folder(&dir, &ds, files);
    let folder = ImageFolder::open(&dir, &FolderOptions::default()).expect("folder");
    let t = Instant::now();
    let mut seen = 0;
    for b in folder.epoch(128, true, 0, 0) {
        seen += b.expect("decoded").labels.len();
    }
    let decoded = seen as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    (memory, decoded)
}

fn write_folder(dir: &Path, ds: &Dataset, files: usize) {
    for i in 0..files {
        let class = dir.join(format!("c{}", ds.labels[i]));
        std::fs::create_dir_all(&class).expect("folder");
        let chw = ds.image(i);
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let p = (y * 32 + x) as usize;
            image::Rgb([chw[p], chw[1024 + p], chw[2048 + p]])
        });
        img.save(class.join(format!("{i:05}.png"))).expect("png");
    }
}

/// PyTorch's images/s per batch size, from the reference script (None without torch).
fn torch_reference() -> Option<Value> {
    let out = std::env::temp_dir().join(format!("wgcnn-torch-{}.json", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_reference.py");
    let ok = crate::reference::python_with_torch().is_some_and(|py| {
        Command::new(py)
            .arg(&script)
            .args(["--resnet", "--device", "cpu", "--json"])
            .arg(&out)
            .status()
            .is_ok_and(|s| s.success())
    });
    let j = ok.then(|| std::fs::read_to_string(&out).ok()).flatten()?;
    let _ = std::fs::remove_file(&out);
    serde_json::from_str(&j).ok()
}

pub fn run(gpu: &Backend, adapter: &str, quick: bool, json_path: Option<&str>) {
    println!("## ResNet-20 training step (3×32×32 bytes, crop=4,flip on the device, Nesterov)");
    println!();
    println!("adapter: {adapter}");
    let rows: Vec<Value> = [128, 512].iter().map(|&b| step(gpu, b, quick)).collect();
    eprintln!("data pipeline…");
    let (memory, decoded) = pipeline(quick);
    eprintln!("PyTorch reference…");
    let torch = torch_reference();
    let torch_ips = |batch: usize| -> Option<f64> {
        torch.as_ref()?["rows"]
            .as_array()?
            .iter()
            .find(|r| r["batch"] == batch)?["images_per_s"]
            .as_f64()
    };
    println!();
    println!("| batch | images/s | PyTorch CPU images/s | ratio | dispatches | submits | host µs/step | upload B/step | GPU MiB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let b = r["batch"].as_u64().unwrap_or(0) as usize;
        let ips = r["images_per_s"].as_f64().unwrap_or(0.0);
        let (t, ratio) = match torch_ips(b) {
            Some(t) => (format!("{t:.0}"), format!("{:.2}×", ips / t)),
            None => ("– (no python3 with torch)".into(), "–".into()),
        };
        println!(
            "| {b} | {ips:.0} | {t} | {ratio} | {} | {} | {:.0} | {} | {:.1} |",
            r["dispatches_per_step"],
            r["submits_per_step"],
            r["host_train_step_us"].as_f64().unwrap_or(0.0),
            r["bytes_uploaded_per_step"],
            r["gpu_bytes_allocated"].as_f64().unwrap_or(0.0) / (1 << 20) as f64
        );
    }
    let step128 = rows[0]["images_per_s"].as_f64().unwrap_or(1.0);
    println!();
    println!(
        "data pipeline: {memory:.0} images/s from memory ({:.0}× the batch-128 step), {decoded:.0} images/s decoding a PNG folder ({:.1}×)",
        memory / step128,
        decoded / step128
    );
    if let Some(p) = json_path {
        let j = json!({
            "adapter": adapter,
            "quick": quick,
            "resnet20": rows,
            "data_pipeline_images_per_s": {"memory": memory, "png_folder": decoded},
            "torch": torch,
        });
        std::fs::write(p, serde_json::to_string_pretty(&j).expect("json"))
            .unwrap_or_else(|e| panic!("writing {p}: {e}"));
        eprintln!("wrote {p}");
    }
}

/// `bench --folder DIR`: decodes one shuffled epoch of the image folder `DIR` in batches of
/// 128 on the worker threads, as training would, and prints the images/s (the script
/// `scripts/folder_rss.sh` runs it under `/usr/bin/time -v` for the peak host memory).
pub fn folder_epoch(dir: &Path) {
    let t = Instant::now();
    let folder = ImageFolder::open(dir, &FolderOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let scan = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut seen = 0usize;
    for b in folder.epoch(128, true, 0, 0) {
        seen += b.unwrap_or_else(|e| panic!("{e}")).labels.len();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{}: {} classes, {seen} images decoded in {s:.1} s ({:.0} images/s; scan {scan:.1} s)",
        dir.display(),
        folder.classes().len(),
        seen as f64 / s.max(1e-9)
    );
}
