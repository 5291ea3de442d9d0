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
    /// `(model, batch, images/s)`; models as the script names them (`lenet5`, `xception_mini`).
    pub rows: Vec<(String, usize, f64)>,
}

impl TorchRef {
    /// PyTorch's images/s for `model` at `batch`, if measured.
    pub fn images_per_s(&self, model: &str, batch: usize) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.0 == model && r.1 == batch)
            .map(|r| r.2)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "source": self.source, "torch": self.torch, "device": self.device,
            "rows": self.rows.iter().map(|(m, b, ips)| json!({
                "model": m, "batch": b, "images_per_s": ips,
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
/// host has cores; otherwise the script's default device (CUDA when present).
pub fn run_now(cpu_adapter: bool, cores: usize) -> Result<TorchRef, String> {
    let python = python_with_torch().ok_or("python3 with torch was not found")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_reference.py");
    let out = std::env::temp_dir().join(format!("wgcnn-torch-{}.json", std::process::id()));
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg("--json").arg(&out);
    if cpu_adapter {
        cmd.args(["--device", "cpu", "--threads", &cores.to_string()]);
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
    println!("| model | batch | ours images/s | PyTorch images/s | ours ÷ PyTorch |");
    println!("|---|---:|---:|---:|---:|");
    for &(model, batch, ips) in ours {
        match t.images_per_s(model, batch) {
            Some(p) => println!(
                "| {model} | {batch} | {ips:.0} | {p:.0} | {:.2}× |",
                ips / p
            ),
            None => println!("| {model} | {batch} | {ips:.0} | – | – |"),
        }
    }
    println!();
}
