//! PyTorch figures from the same sitting: `scripts/torch_reference.py` run by the bench itself
//! when `python3` can import torch, or the JSON that script wrote shortly before
//! (`--compare FILE`). Ratios are only ever taken against these, never against figures from
//! another machine or day.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use serde_json::{json, Value};

/// The PyTorch side of the comparison.
pub struct TorchRef {
    /// Where the figures come from (the command run, or the file read and its age).
    pub source: String,
    /// PyTorch version and device, as the script reports them.
    pub torch: String,
    pub device: String,
    /// `(model, batch, mode, images/s)`; models as the script names them (`lenet5`,
    /// `xception_mini`), modes `eager`, `cuda_graph`, `compile`, `amp` (older JSON without a
    /// mode: `eager`).
    pub rows: Vec<(String, usize, String, f64)>,
}

impl TorchRef {
    /// PyTorch's images/s for `model` at `batch` in `mode`, if measured.
    pub fn images_per_s(&self, model: &str, batch: usize, mode: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.0 == model && r.1 == batch && r.2 == mode)
            .map(|r| r.3)
    }

    /// The fastest mode other than eager float32 and AMP for `model` at `batch`.
    pub fn best(&self, model: &str, batch: usize) -> Option<(&str, f64)> {
        self.rows
            .iter()
            .filter(|r| r.0 == model && r.1 == batch && r.2 != "eager" && r.2 != "amp")
            .max_by(|a, b| a.3.total_cmp(&b.3))
            .map(|r| (r.2.as_str(), r.3))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "source": self.source, "torch": self.torch, "device": self.device,
            "rows": self.rows.iter().map(|(m, b, mode, ips)| json!({
                "model": m, "batch": b, "mode": mode, "images_per_s": ips,
            })).collect::<Vec<Value>>(),
        })
    }
}

/// Parses the script's `--json` output.
fn parse(text: &str, source: String) -> Result<TorchRef, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not the script's JSON: {e}"))?;
    let rows = v["rows"]
        .as_array()
        .ok_or("no \"rows\" array")?
        .iter()
        .filter_map(|r| {
            Some((
                r["model"].as_str()?.to_string(),
                r["batch"].as_u64()? as usize,
                r["mode"].as_str().unwrap_or("eager").to_string(),
                r["images_per_s"].as_f64()?,
            ))
        })
        .collect();
    Ok(TorchRef {
        source,
        torch: v["torch"].as_str().unwrap_or("?").to_string(),
        device: v["device"].as_str().unwrap_or("?").to_string(),
        rows,
    })
}

/// Reads a JSON that `scripts/torch_reference.py --json FILE` wrote, noting its age (the
/// figures only compare with ours if the machine was the same and about as busy).
pub fn read(path: &str) -> Result<TorchRef, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or("age unknown".to_string(), |d| {
            format!("written {:.0} min ago", d.as_secs_f64() / 60.0)
        });
    parse(&text, format!("{path} ({age})"))
}

/// The first Python that can import torch: Debian's `/usr/bin/python3` (where
/// `python3-torch` installs), then `python3` on the `PATH`.
pub fn python_with_torch() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import torch"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Runs the script now: on a CPU adapter PyTorch gets the CPU with as many threads as the
/// host has cores; otherwise the script's default device (CUDA when present), eager and its
/// best mode (a captured CUDA graph) and AMP.
pub fn run_now(cpu_adapter: bool, cores: usize) -> Result<TorchRef, String> {
    let python = python_with_torch().ok_or("python3 with torch was not found")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_reference.py");
    let out = std::env::temp_dir().join(format!("wgcnn-torch-{}.json", std::process::id()));
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg("--json").arg(&out);
    if cpu_adapter {
        cmd.args(["--device", "cpu", "--threads", &cores.to_string()]);
    } else {
        cmd.args(["--best", "graph", "--amp"]);
    }
    let shown = format!("{cmd:?}").replace('"', "");
    let status = cmd
        .status()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!("{shown} failed ({status})"));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    parse(&text, format!("run now: {shown}"))
}

/// Our images/s next to PyTorch's for each `(model, batch, ours)`, with the ratio.
pub fn print_ratios(r: &Result<TorchRef, String>, ours: &[(&str, usize, f64)]) {
    println!("### Ratios to PyTorch (same machine, same sitting)");
    println!();
    let t = match r {
        Ok(t) => t,
        Err(e) => {
            println!("Not measured: {e}. Install torch, or pass `--compare FILE` with the JSON");
            println!("of `python3 scripts/torch_reference.py --json FILE` run minutes before.");
            println!();
            return;
        }
    };
    println!("PyTorch {} on {} — {}", t.torch, t.device, t.source);
    println!();
    println!("| model | batch | ours images/s | PyTorch eager images/s | ours ÷ eager | PyTorch best mode | best images/s | ours ÷ best |");
    println!("|---|---:|---:|---:|---:|---|---:|---:|");
    let ratio = |p: Option<f64>, ips: f64| {
        p.map_or(("–".to_string(), "–".to_string()), |p| {
            (format!("{p:.0}"), format!("{:.2}×", ips / p))
        })
    };
    for &(model, batch, ips) in ours {
        let (eager, vs_eager) = ratio(t.images_per_s(model, batch, "eager"), ips);
        let best = t.best(model, batch);
        let (best_ips, vs_best) = ratio(best.map(|b| b.1), ips);
        let mode = best.map_or("not measured", |b| b.0);
        println!("| {model} | {batch} | {ips:.0} | {eager} | {vs_eager} | {mode} | {best_ips} | {vs_best} |");
    }
    println!();
}
