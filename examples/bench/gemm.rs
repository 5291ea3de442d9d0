//! GEMM at growing sizes in every precision the adapter offers — fp32 (`gemm`), f16 inputs
//! with f32 products and sums (`gemm_f16`), cooperative matrices (`gemm_coop`, tensor cores) —
//! with the achieved rate as a share of the device's peak from a small table of known devices.

use std::sync::Arc;

use wgcnn::cpu::matmul::Gemm;
use wgcnn::gpu::GpuContext;
use wgcnn::ops::matmul::{BatchAxis, F16Path, MatMul, MatMulF16};
use wgcnn::ops::Launch;

use super::time_gpu;

/// Dense peaks of known devices in TFLOP/s: (fp32 on the CUDA cores, fp16 inputs with f32
/// accumulation on the tensor cores), from the vendors' data sheets (no sparsity).
fn peaks(adapter: &str) -> Option<(&'static str, f64, f64)> {
    let n = adapter.to_ascii_lowercase();
    let table: [(&str, bool, f64, f64); 6] = [
        ("H200", n.contains("h200"), 67.0, 989.5),
        (
            "H100 PCIe",
            n.contains("h100") && n.contains("pcie"),
            51.2,
            756.0,
        ),
        (
            "H100 NVL",
            n.contains("h100") && n.contains("nvl"),
            60.0,
            835.0,
        ),
        ("H100 SXM", n.contains("h100"), 67.0, 989.5),
        ("A100", n.contains("a100"), 19.5, 312.0),
        // GeForce: f16 tensor rate with f32 accumulation is half the f16-accumulate 330
        ("RTX 4090", n.contains("4090"), 82.6, 165.2),
    ];
    table
        .into_iter()
        .find(|t| t.1)
        .map(|(name, _, fp32, fp16)| (name, fp32, fp16))
}

/// A precision: its name, launch, whether the adapter offers it, and its peak (TFLOP/s).
type Variant = (&'static str, Arc<dyn Launch>, bool, Option<f64>);

/// One row: size, precision, kernel and seconds (`None`: not available on this adapter).
pub struct Row {
    pub size: usize,
    pub precision: &'static str,
    pub kernel: String,
    pub seconds: Option<f64>,
    /// The peak this row is measured against, TFLOP/s.
    pub peak: Option<f64>,
}

impl Row {
    fn flops(&self) -> f64 {
        2.0 * (self.size as f64).powi(3)
    }
}

/// Times every precision at 256³ … 1024³ (`quick`), up to 4096³ otherwise.
pub fn run(ctx: &GpuContext, quick: bool) -> Vec<Row> {
    let caps = ctx.caps();
    let peak = peaks(&ctx.adapter().name);
    let sizes: &[usize] = if quick {
        &[256, 512, 1024]
    } else {
        &[256, 512, 1024, 2048, 4096]
    };
    let mut rows = Vec::new();
    for &s in sizes {
        let g = Gemm::matmul(s, s, s);
        let f16 =
            |path| -> Arc<dyn Launch> { Arc::new(MatMulF16::new(g, path).expect("plain product")) };
        let variants: [Variant; 3] = [
            (
                "fp32",
                Arc::new(MatMul::new(g, false, BatchAxis::None)),
                true,
                peak.map(|p| p.1),
            ),
            // f32 products and sums: the fp32 peak applies
            (
                "f16 in, f32 accumulate",
                f16(F16Path::Registers),
                caps.f16,
                peak.map(|p| p.1),
            ),
            (
                "f16 coop-matrix, f32 accumulate",
                f16(F16Path::CoopMatrix),
                caps.coop_16x16_f16,
                peak.map(|p| p.2),
            ),
        ];
        for (precision, l, available, peak) in variants {
            let (kernel, seconds) = if available {
                let prog = ctx.bench_program(&[l]).expect("record");
                let t = time_gpu(ctx, &prog, None, if s >= 2048 { 1.0 } else { 0.3 });
                (super::short_variant(&prog.variant(0)), Some(t))
            } else {
                ("not available on this adapter".into(), None)
            };
            eprintln!(
                "  gemm {s}³ {precision}: {}",
                seconds.map_or("–".into(), |t| format!("{:.2} ms", t * 1e3))
            );
            rows.push(Row {
                size: s,
                precision,
                kernel,
                seconds,
                peak,
            });
        }
    }
    rows
}

/// The table: time, rate (GFLOP/s, or TFLOP/s from 1 TFLOP/s up) and share of the peak.
pub fn print(ctx: &GpuContext, rows: &[Row]) {
    let peak = peaks(&ctx.adapter().name);
    println!(
        "## GEMM by precision (c[N,N] = a·b, N³ multiply-adds; peak: {})",
        peak.map_or("unknown adapter, –".into(), |(n, fp32, fp16)| format!(
            "{n}: fp32 {fp32} TFLOP/s, fp16 tensor cores {fp16} TFLOP/s"
        ))
    );
    println!();
    println!("| GEMM | precision | kernel | ms | rate | % of peak |");
    println!("|---|---|---|---:|---:|---:|");
    for r in rows {
        let Some(s) = r.seconds else {
            println!(
                "| {0}×{0}·{0}×{0} | {1} | {2} | – | – | – |",
                r.size, r.precision, r.kernel
            );
            continue;
        };
        let gflops = r.flops() / s / 1e9;
        let rate = if gflops >= 1000.0 {
            format!("{:.2} TFLOP/s", gflops / 1e3)
        } else {
            format!("{gflops:.1} GFLOP/s")
        };
        let share = r.peak.map_or("–".into(), |p| {
            format!("{:.1} %", gflops / 1e3 / p * 100.0)
        });
        println!(
            "| {0}×{0}·{0}×{0} | {1} | {2} | {3:.2} | {4} | {5} |",
            r.size,
            r.precision,
            r.kernel,
            s * 1e3,
            rate,
            share
        );
    }
    println!();
}
