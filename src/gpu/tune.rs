//! The tile autotuner: times each candidate register tile of a launch on this device, keeps
//! the fastest, and remembers the choice on disk so that a later run on the same adapter and
//! driver reads it back — compiling only the chosen pipelines, never timing again.
//!
//! Only launches whose candidates give bitwise the same results are tuned
//! ([`crate::ops::Launch::tile_choices`]: today the tiled GEMMs, which sum every output over k
//! in one order whatever the tile), so the choice can change speed, never numbers: training
//! stays bitwise deterministic with or without the tuner, on every run.
//!
//! Cache file (JSON, written crash-consistently): `{"version": 1, "entries": {KEY: {"tile":
//! [TR, TS], "seconds": [[TR, TS, s], …]}}}`, KEY = `adapter | backend | driver | launch key`
//! (the launch key is its kernel and batch-independent shape: its shape class).
//!
//! ```no_run
//! use wgcnn::{nn, Backend, Executor, Optimizer};
//! # fn main() -> Result<(), wgcnn::Error> {
//! // WGCNN_TUNE=1 tunes (first run) or reads (later runs) ~/.cache/wgcnn/tiles.json
//! std::env::set_var("WGCNN_TUNE", "1");
//! let ex = Executor::new(&Backend::gpu()?, &nn::lenet5()?, 64, Optimizer::sgd(0.1), 0)?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::device::GpuContext;
use crate::error::{Error, Result};
use crate::ops::Launch;

/// A register tile: (TR, TS).
type Tile = (u32, u32);

/// What [`GpuContext::autotune`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TuneReport {
    /// Launch keys timed now (each candidate compiled and run).
    pub tuned: usize,
    /// Launch keys whose tile came from the cache file.
    pub cached: usize,
    /// The cache file.
    pub path: PathBuf,
}

/// The cache file: `WGCNN_TUNE_CACHE`, else `$XDG_CACHE_HOME/wgcnn/tiles.json`, else
/// `$HOME/.cache/wgcnn/tiles.json`; `None` when none of them is set.
pub fn default_cache_path() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("WGCNN_TUNE_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("wgcnn/tiles.json")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/wgcnn/tiles.json")))
}

/// Whether `WGCNN_TUNE=1` asks executors to tune (see [`GpuContext::autotune`]).
pub fn enabled_by_env() -> bool {
    std::env::var("WGCNN_TUNE").is_ok_and(|v| v == "1")
}

fn read_cache(path: &Path) -> Result<BTreeMap<String, Value>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let bad = |why: String| Error::invalid("tile cache", format!("{}: {why}", path.display()));
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if v["version"] != 1 {
        return Err(bad(format!(
            "version {} (this build reads 1)",
            v["version"]
        )));
    }
    match v.get("entries") {
        Some(Value::Object(m)) => Ok(m.clone().into_iter().collect()),
        _ => Err(bad("no \"entries\" object".into())),
    }
}

fn cached_tile(v: &Value) -> Option<(u32, u32)> {
    let t = v.get("tile")?.as_array()?;
    Some((t.first()?.as_u64()? as u32, t.get(1)?.as_u64()? as u32))
}

impl GpuContext {
    /// The cache key of launch key `key` on this adapter and driver.
    fn tune_key(&self, key: &str) -> String {
        let s = &self.summary;
        format!("{} | {} | {} | {key}", s.name, s.backend, s.driver)
    }

    /// Chooses the register tile of every tunable launch of `launches` (see the module docs):
    /// from the cache file at `path` when it holds this adapter's choice, else by timing each
    /// candidate on its own buffers (the fastest wins; ties go to the earlier candidate),
    /// then writes the file back. The choices go into this context's tile cache, which the
    /// launches consult when they are recorded. A cache file that cannot be parsed is an
    /// error naming it (nothing is overwritten).
    pub fn autotune(&self, launches: &[Arc<dyn Launch>], path: &Path) -> Result<TuneReport> {
        let mut entries = read_cache(path)?;
        let mut report = TuneReport {
            path: path.to_path_buf(),
            ..TuneReport::default()
        };
        let mut seen = std::collections::HashSet::new();
        for l in launches {
            let Some((key, cands)) = l.tile_choices(self) else {
                continue;
            };
            if !seen.insert(key.clone()) {
                continue;
            }
            let full = self.tune_key(&key);
            if let Some(t) = entries.get(&full).and_then(cached_tile) {
                self.set_tile(&key, t)?;
                report.cached += 1;
                continue;
            }
            let (best, timed) = self.time_candidates(l, &key, &cands)?;
            self.set_tile(&key, best)?;
            let seconds: Vec<Value> = timed.iter().map(|(t, s)| json!([t.0, t.1, s])).collect();
            entries.insert(full, json!({"tile": [best.0, best.1], "seconds": seconds}));
            report.tuned += 1;
        }
        if report.tuned > 0 {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })?;
            }
            let v = json!({"version": 1, "entries": entries});
            let text = serde_json::to_string_pretty(&v).expect("json");
            crate::checkpoint::write_atomic(path, text.as_bytes())?;
        }
        Ok(report)
    }

    /// Seconds per run of `l` with each candidate tile (the best of three runs after a
    /// warm-up), and the fastest candidate.
    fn time_candidates(
        &self,
        l: &Arc<dyn Launch>,
        key: &str,
        cands: &[Tile],
    ) -> Result<(Tile, Vec<(Tile, f64)>)> {
        let mut timed = Vec::new();
        for &c in cands {
            self.set_tile(key, c)?;
            let prog = self.bench_program(std::slice::from_ref(l))?;
            let first = self.bench_run(&prog, None, 1)?;
            let reps = ((0.02 / first.max(1e-6)) as usize).clamp(1, 50);
            let mut best = f64::MAX;
            for _ in 0..3 {
                best = best.min(self.bench_run(&prog, None, reps)?);
            }
            timed.push((c, best));
        }
        let best = timed
            .iter()
            .fold(timed[0], |b, &t| if t.1 < b.1 { t } else { b })
            .0;
        Ok((best, timed))
    }
}
