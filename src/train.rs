//! Training loops over a [`Loader`] and checkpoints of an [`Executor`].
//!
//! A checkpoint is two safetensors files: the model at `path` (PyTorch names and layouts,
//! loadable by `torch.nn.Module.load_state_dict`) and the optimizer state beside it at
//! `<name>.optim-<generation>` (so the model file holds nothing PyTorch wouldn't expect).
//! The model file names its generation, and renaming it into place is the one atomic step
//! that makes a checkpoint current (see [`save_checkpoint_run`]). Both carry the epoch and
//! step, the model also the run's settings ([`RunInfo`]), and a resume checks them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::{write_atomic_with_faults, Checkpoint, IoOp};
use crate::data::Loader;
use crate::error::{Error, Result};
use crate::exec::{Executor, Metrics, Targets};
use crate::plan::Mode;

/// What one training epoch did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochStats {
    pub metrics: Metrics,
    pub steps: u64,
    pub images: usize,
    /// Batches of this epoch done so far (including those skipped by `start_batch`).
    pub batches_done: usize,
    /// False when `progress` asked to stop before the epoch's end.
    pub completed: bool,
}

/// Trains one epoch (`epoch` picks the shuffle order), starting at batch `start_batch`
/// (non-zero when resuming an interrupted epoch). `progress(images_done, running)` is
/// called after every step and returns whether to go on; `running` carries the metrics
/// so far each time they were read back, every `metrics_every` steps (0 = only at the
/// end of the epoch or on a stop).
pub fn train_epoch(
    ex: &mut Executor,
    loader: &Loader,
    epoch: u64,
    start_batch: usize,
    metrics_every: u64,
    mut progress: impl FnMut(usize, Option<Metrics>) -> bool,
) -> Result<EpochStats> {
    train_epoch_with(ex, loader, epoch, start_batch, metrics_every, |_, p| {
        Ok(progress(p.images, p.running))
    })
}

/// Where an epoch stands after a step (see [`train_epoch_with`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Images trained on in this call.
    pub images: usize,
    /// Batches of the epoch done (including those skipped by `start_batch`).
    pub batches_done: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// The metrics so far, when they were read back after this step.
    pub running: Option<Metrics>,
}

/// [`train_epoch`] whose callback also gets the executor (to write a checkpoint between
/// steps, say) and may fail; it returns whether to go on. A `start_batch` past the epoch's
/// batches is an error, never an empty epoch.
pub fn train_epoch_with(
    ex: &mut Executor,
    loader: &Loader,
    epoch: u64,
    start_batch: usize,
    metrics_every: u64,
    mut after_step: impl FnMut(&mut Executor, &Progress) -> Result<bool>,
) -> Result<EpochStats> {
    let per = loader.sample_len();
    let mut images = vec![0.0f32; loader.batch_size() * per];
    let mut labels = vec![0u32; loader.batch_size()];
    let ep = loader.epoch(epoch);
    let chunks: Vec<Vec<usize>> = ep.batch_indices().map(|c| c.to_vec()).collect();
    let last = chunks.len();
    if start_batch >= last && last > 0 {
        return Err(Error::invalid(
            "train_epoch",
            format!("start batch {start_batch} is past the epoch's {last} batches"),
        ));
    }
    let mut acc = Running::default();
    let mut stats = EpochStats {
        batches_done: start_batch,
        completed: true,
        ..EpochStats::default()
    };
    for (i, idx) in chunks.iter().enumerate().skip(start_batch) {
        let b = idx.len();
        loader.fill(idx, &mut images[..b * per], &mut labels[..b])?;
        ex.train_step(&images[..b * per], Targets::Classes(&labels[..b]))?;
        stats.steps += 1;
        stats.images += b;
        stats.batches_done = i + 1;
        let read =
            i + 1 == last || (metrics_every > 0 && stats.steps.is_multiple_of(metrics_every));
        let running = if read {
            Some(acc.add(ex.take_metrics(Mode::Train)?))
        } else {
            None
        };
        let p = Progress {
            images: stats.images,
            batches_done: i + 1,
            batches: last,
            running,
        };
        if !after_step(ex, &p)? && i + 1 < last {
            stats.completed = false;
            if !read {
                acc.add(ex.take_metrics(Mode::Train)?);
            }
            break;
        }
    }
    stats.metrics = acc.metrics();
    Ok(stats)
}

/// Metrics summed over the readbacks of an epoch.
#[derive(Default)]
struct Running {
    loss: f64,
    hits: f64,
    seen: usize,
}

impl Running {
    /// Adds one readback; the metrics so far.
    fn add(&mut self, m: Metrics) -> Metrics {
        self.loss += m.loss as f64 * m.samples as f64;
        self.hits += m.accuracy as f64 * m.samples as f64;
        self.seen += m.samples;
        self.metrics()
    }

    fn metrics(&self) -> Metrics {
        Metrics {
            loss: (self.loss / self.seen.max(1) as f64) as f32,
            accuracy: (self.hits / self.seen.max(1) as f64) as f32,
            samples: self.seen,
            non_finite: false,
        }
    }
}

/// Loss and accuracy over a whole (unshuffled) loader; one readback at the end.
pub fn evaluate(ex: &mut Executor, loader: &Loader) -> Result<Metrics> {
    let per = loader.sample_len();
    let mut images = vec![0.0f32; loader.batch_size() * per];
    let mut labels = vec![0u32; loader.batch_size()];
    ex.take_metrics(Mode::Eval)?;
    for idx in loader.epoch(0).batch_indices() {
        let b = idx.len();
        loader.fill(idx, &mut images[..b * per], &mut labels[..b])?;
        ex.eval_batch(&images[..b * per], Targets::Classes(&labels[..b]))?;
    }
    ex.take_metrics(Mode::Eval)
}

/// Confusion matrix `[true][predicted]` over a loader (reads the logits back).
pub fn confusion(ex: &mut Executor, loader: &Loader) -> Result<Vec<Vec<u32>>> {
    let per = loader.sample_len();
    let mut images = vec![0.0f32; loader.batch_size() * per];
    let mut labels = vec![0u32; loader.batch_size()];
    let mut m: Vec<Vec<u32>> = Vec::new();
    for idx in loader.epoch(0).batch_indices() {
        let b = idx.len();
        loader.fill(idx, &mut images[..b * per], &mut labels[..b])?;
        let logits = ex.predict(&images[..b * per])?;
        let k = logits.ncols();
        if m.is_empty() {
            m = vec![vec![0; k]; k];
        }
        for (row, &t) in logits.rows().into_iter().zip(&labels[..b]) {
            let mut arg = 0;
            for c in 1..k {
                if row[c] > row[arg] {
                    arg = c;
                }
            }
            let Some(row) = m.get_mut(t as usize) else {
                return Err(Error::invalid(
                    "confusion",
                    format!("label {t} is out of range for the model's {k} classes"),
                ));
            };
            row[arg] += 1;
        }
    }
    Ok(m)
}

/// The settings and data a resumed run must match: `key → value` pairs (optimizer and its
/// hyper-parameters, batch size, train limit, seed, schedule, the dataset's name, counts,
/// image size and a hash of its labels, …), stored in the checkpoint's metadata as
/// `run.<key>`.
///
/// ```
/// use wgcnn::train::RunInfo;
/// let saved = RunInfo::default().with("batch_size", 64).with("seed", 0);
/// let now = RunInfo::default().with("batch_size", 128).with("seed", 0);
/// assert_eq!(saved.differences(&now), vec!["batch_size: checkpoint 64, now 128".to_string()]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunInfo(pub BTreeMap<String, String>);

impl RunInfo {
    /// This run with `key` set to `value`.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.0.insert(key.to_string(), value.to_string());
        self
    }

    /// Every setting that differs between this (the checkpoint's) and `now`, one line each.
    pub fn differences(&self, now: &RunInfo) -> Vec<String> {
        let keys: std::collections::BTreeSet<&String> = self.0.keys().chain(now.0.keys()).collect();
        let show = |v: Option<&String>| v.map_or("(not recorded)".to_string(), |v| v.clone());
        keys.into_iter()
            .filter(|k| self.0.get(*k) != now.0.get(*k))
            .map(|k| {
                format!(
                    "{k}: checkpoint {}, now {}",
                    show(self.0.get(k)),
                    show(now.0.get(k))
                )
            })
            .collect()
    }
}

/// A 64-bit FNV-1a hash of `bytes` in hex (a dataset's labels, for [`RunInfo`]).
pub fn fnv1a_hex(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Checks that the images of `ds` (read from `file`) fit a model whose per-sample input
/// is `input` (`[C, H, W]`): an [`Error::Data`] naming the file and both shapes otherwise.
pub fn check_fits(ds: &crate::data::Dataset, file: &Path, input: &[usize]) -> Result<()> {
    let have = ds.image_shape();
    if input != have {
        let show = |s: &[usize]| {
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("×")
        };
        return Err(Error::Data {
            path: file.to_path_buf(),
            msg: format!(
                "images are {} (channels×height×width) but the model takes {}",
                show(&have),
                show(input)
            ),
        });
    }
    Ok(())
}

/// Checks before any work that the output file `path` given with `flag` can be written:
/// creates its directory, refuses a directory or a parent that is a file, and writes and
/// removes a probe file beside it. Errors name the flag and the path as given.
pub fn probe_output_file(flag: &str, path: &Path) -> Result<()> {
    let bad = |msg: String| Error::invalid(flag, format!("'{}': {msg}", path.display()));
    if path.is_dir() {
        return Err(bad("is a directory; give a file name".into()));
    }
    if path.file_name().is_none() {
        return Err(bad("does not name a file".into()));
    }
    probe_dir(flag, path, &crate::checkpoint::parent_dir(path))
}

/// Like [`probe_output_file`] for an output directory (created if missing).
pub fn probe_output_dir(flag: &str, dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::invalid(
            flag,
            format!("'{}': exists and is not a directory", dir.display()),
        ));
    }
    probe_dir(flag, dir, dir)
}

/// Creates `dir` and writes, syncs and removes a probe file in it; errors name `flag` and
/// `shown` (the path the user gave).
fn probe_dir(flag: &str, shown: &Path, dir: &Path) -> Result<()> {
    let bad = |what: &str, e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => {
                "a component of the path is a file, not a directory".to_string()
            }
            _ => e.to_string(),
        };
        Error::invalid(
            flag,
            format!(
                "'{}': cannot {what} '{}': {why}",
                shown.display(),
                dir.display()
            ),
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| bad("create the directory", e))?;
    let probe = dir.join(format!(".wgcnn-probe-{}", std::process::id()));
    let written = std::fs::write(&probe, b"probe").map_err(|e| bad("write in", e));
    let _ = std::fs::remove_file(&probe);
    written
}

/// Where the optimizer state of the checkpoint at `path` is: the file its metadata names
/// (`<name>.optim-<generation>`, beside it), or `<path>.optim` for a checkpoint written
/// before generations (or one that cannot be read).
pub fn optimizer_path(path: &Path) -> PathBuf {
    Checkpoint::load(path)
        .ok()
        .and_then(|c| c.metadata.get(OPTIMIZER_FILE).cloned())
        .map(|f| crate::checkpoint::parent_dir(path).join(f))
        .unwrap_or_else(|| legacy_optimizer_path(path))
}

fn legacy_optimizer_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".optim");
    PathBuf::from(s)
}

/// Metadata key of the model file naming its optimizer-state file.
const OPTIMIZER_FILE: &str = "optimizer_file";
/// Metadata key of a mixed-precision run's loss scale in the optimizer file (with
/// `.good_steps` and `.skipped_steps`).
const LOSS_SCALE: &str = "loss_scale";

/// The loss scaler's state recorded in optimizer file `opt`, if any; unreadable values are an
/// [`Error::Checkpoint`] naming the file.
fn loss_scale_of(opt: &Checkpoint, opath: &Path) -> Result<Option<crate::exec::LossScaleState>> {
    let Some(scale) = opt.metadata.get(LOSS_SCALE) else {
        return Ok(None);
    };
    let bad = |what: &str| Error::Checkpoint {
        path: opath.to_path_buf(),
        msg: format!("unreadable {what}"),
    };
    let get = |k: String| opt.metadata.get(&k).and_then(|v| v.parse::<u64>().ok());
    Ok(Some(crate::exec::LossScaleState {
        scale: scale.parse().map_err(|_| bad(LOSS_SCALE))?,
        good_steps: get(format!("{LOSS_SCALE}.good_steps"))
            .ok_or_else(|| bad("loss_scale.good_steps"))? as u32,
        skipped_steps: get(format!("{LOSS_SCALE}.skipped_steps"))
            .ok_or_else(|| bad("loss_scale.skipped_steps"))?,
    }))
}

/// Writes a checkpoint (see [`save_checkpoint_run`]) without run settings to check.
pub fn save_checkpoint(ex: &mut Executor, path: &Path, epoch: u64, batch: usize) -> Result<()> {
    save_checkpoint_run(ex, path, epoch, batch, &RunInfo::default())
}

/// Writes the model (PyTorch names) and the optimizer state, recording `epoch` (the epoch
/// in progress, or the next one when `batch` is 0), `batch` (batches of it already done),
/// the step counter and `run`.
///
/// **Crash-consistent.** The optimizer state goes to a new file `<name>.optim-<generation>`
/// first; then the model file, which names that generation, is renamed over `path`: that
/// one rename makes the whole checkpoint current. A failure or crash at any instant leaves
/// the previous checkpoint (model and the generation it names) loadable and resumable; on
/// an error nothing new is left behind, and after a success the older generations and any
/// temporary files a killed writer left are removed.
pub fn save_checkpoint_run(
    ex: &mut Executor,
    path: &Path,
    epoch: u64,
    batch: usize,
    run: &RunInfo,
) -> Result<()> {
    save_checkpoint_with_faults(ex, path, epoch, batch, run, &mut |_, _| Ok(()))
}

/// [`save_checkpoint_run`] with `fault` called before every write, fsync and rename (see
/// [`write_atomic_with_faults`]): the seam of the fault-injection tests.
pub fn save_checkpoint_with_faults(
    ex: &mut Executor,
    path: &Path,
    epoch: u64,
    batch: usize,
    run: &RunInfo,
    fault: &mut dyn FnMut(IoOp, &Path) -> Result<()>,
) -> Result<()> {
    let (model, opt) = checkpoint_files(ex, epoch, batch, run)?;
    let name = path
        .file_name()
        .ok_or_else(|| {
            Error::invalid(
                "checkpoint",
                format!("'{}' does not name a file", path.display()),
            )
        })?
        .to_string_lossy()
        .to_string();
    let generation = format!(
        "{:x}{:05x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        std::process::id() & 0xfffff
    );
    let opt_name = format!("{name}.optim-{generation}");
    let dir = crate::checkpoint::parent_dir(path);
    let opath = dir.join(&opt_name);
    let mut model = model;
    model
        .metadata
        .insert(OPTIMIZER_FILE.into(), opt_name.clone());
    // an I/O error names the checkpoint as the user gave it, not a temporary file
    let named = |e: Error| match e {
        Error::Io { source, .. } => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        e => e,
    };
    write_atomic_with_faults(&opath, &opt.to_bytes(&opath)?, fault).map_err(named)?;
    if let Err(e) = write_atomic_with_faults(path, &model.to_bytes(path)?, fault) {
        let _ = std::fs::remove_file(&opath);
        return Err(named(e));
    }
    remove_stale(&dir, &name, &opt_name);
    Ok(())
}

/// The model and optimizer-state checkpoints of `ex` (not yet written).
fn checkpoint_files(
    ex: &mut Executor,
    epoch: u64,
    batch: usize,
    run: &RunInfo,
) -> Result<(Checkpoint, Checkpoint)> {
    let mut meta = BTreeMap::new();
    meta.insert("epoch".to_string(), epoch.to_string());
    meta.insert("batch".to_string(), batch.to_string());
    meta.insert("step".to_string(), ex.step_count().to_string());
    meta.insert("format".to_string(), "wgcnn-2".to_string());
    meta.insert(
        "optimizer".to_string(),
        format!("{:?}", ex.optimizer().kind),
    );
    let mut opt = Checkpoint::new();
    opt.metadata = meta.clone();
    if let Some(s) = ex.loss_scale()? {
        // mixed precision: the loss scaler resumes where it was
        opt.metadata.insert(LOSS_SCALE.into(), s.scale.to_string());
        opt.metadata
            .insert(format!("{LOSS_SCALE}.good_steps"), s.good_steps.to_string());
        opt.metadata.insert(
            format!("{LOSS_SCALE}.skipped_steps"),
            s.skipped_steps.to_string(),
        );
    }
    for (name, shape, v) in ex.optimizer_state()? {
        opt.push(name, shape, v)?;
    }
    let mut params = ex.parameters()?;
    // batch norm running statistics (PyTorch's `num_batches_tracked` is not stored: load
    // into PyTorch with `strict=False`, or only momentum=None layers would need it)
    params.extend(ex.buffers()?);
    if params
        .iter()
        .any(|(_, _, v)| v.iter().any(|x| !x.is_finite()))
    {
        // never replace the last good checkpoint with a diverged model
        return Err(Error::NonFinite {
            step: ex.step_count(),
        });
    }
    let mut model = Checkpoint::new();
    model.metadata = meta;
    for (k, v) in &run.0 {
        model.metadata.insert(format!("run.{k}"), v.clone());
    }
    for (name, shape, v) in params {
        model.push(name, shape, v)?;
    }
    Ok((model, opt))
}

/// After a checkpoint `name` became current with optimizer file `keep`: removes the other
/// optimizer generations and the temporary files of interrupted writes (best effort).
fn remove_stale(dir: &Path, name: &str, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let f = e.file_name().to_string_lossy().to_string();
        let ours =
            f.starts_with(&format!("{name}.optim")) || f.starts_with(&format!("{name}.tmp-"));
        if ours && f != keep {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Epoch and step a checkpoint was written at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The epoch to continue (or start) with.
    pub epoch: u64,
    /// Batches of that epoch already done.
    pub batch: usize,
    pub step: u64,
}

/// What a checkpoint file says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointMeta {
    /// Epoch, batch and step; `None` for a weights-only file (no training metadata, e.g.
    /// one saved by PyTorch): it can be evaluated, but training cannot resume from it.
    pub info: Option<CheckpointInfo>,
    /// The run settings it was written with (empty if none were recorded).
    pub run: RunInfo,
}

/// Reads the metadata of the checkpoint at `path`.
pub fn checkpoint_meta(path: &Path) -> Result<CheckpointMeta> {
    meta_of(&Checkpoint::load(path)?, path)
}

fn meta_of(c: &Checkpoint, path: &Path) -> Result<CheckpointMeta> {
    let run = RunInfo(
        c.metadata
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("run.").map(|k| (k.to_string(), v.clone())))
            .collect(),
    );
    if !c.metadata.contains_key("epoch") && !c.metadata.contains_key("step") {
        return Ok(CheckpointMeta { info: None, run });
    }
    let info = CheckpointInfo {
        epoch: meta_u64(c, "epoch", path)?,
        batch: meta_u64(c, "batch", path)? as usize,
        step: meta_u64(c, "step", path)?,
    };
    Ok(CheckpointMeta {
        info: Some(info),
        run,
    })
}

fn meta_u64(c: &Checkpoint, key: &str, path: &Path) -> Result<u64> {
    c.metadata
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("metadata '{key}' is missing or not a number"),
        })
}

/// Loads a checkpoint into `ex`: the model always, the optimizer state and step counter
/// when `with_optimizer`. Missing, extra or mis-shaped tensors are listed by name. A
/// weights-only file (no training metadata, e.g. saved by PyTorch) loads without the
/// optimizer (epoch, batch and step 0) and is refused with it.
pub fn load_checkpoint(
    ex: &mut Executor,
    path: &Path,
    with_optimizer: bool,
) -> Result<CheckpointInfo> {
    let (model, meta) = read_model(ex, path)?;
    apply_checkpoint(ex, path, model, meta.info, with_optimizer)
}

/// The model file at `path`, checked against `ex`'s parameters and buffers, and its metadata.
fn read_model(ex: &Executor, path: &Path) -> Result<(Checkpoint, CheckpointMeta)> {
    let model = Checkpoint::load(path)?;
    let mut expected = ex.plan().param_shapes();
    expected.extend(
        ex.plan()
            .graph
            .buffers()
            .into_iter()
            .map(|(name, shape, _)| (name, shape)),
    );
    model.check_against(&expected, path)?;
    let meta = meta_of(&model, path)?;
    Ok((model, meta))
}

/// Loads a checked `model` into `ex` (see [`load_checkpoint`]); `info` is `None` for a
/// weights-only file.
fn apply_checkpoint(
    ex: &mut Executor,
    path: &Path,
    model: Checkpoint,
    info: Option<CheckpointInfo>,
    with_optimizer: bool,
) -> Result<CheckpointInfo> {
    let opath = model.metadata.get(OPTIMIZER_FILE).map_or_else(
        || legacy_optimizer_path(path),
        |f| crate::checkpoint::parent_dir(path).join(f),
    );
    let params = model.tensors;
    let Some(info) = info else {
        if with_optimizer {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                msg: "holds weights only (no epoch, step or optimizer state, e.g. saved by PyTorch): it can be evaluated, but training cannot resume from it".into(),
            });
        }
        ex.load_state(&params, &[], ex.step_count())?;
        return Ok(CheckpointInfo {
            epoch: 0,
            batch: 0,
            step: 0,
        });
    };
    if !with_optimizer {
        ex.load_state(&params, &[], ex.step_count())?;
        return Ok(info);
    }
    let opt = Checkpoint::load(&opath)?;
    check_optimizer(ex, &opt, &opath, info.step)?;
    let scale = loss_scale_of(&opt, &opath)?;
    ex.load_state(&params, &opt.tensors, info.step)?;
    if let (Some(s), Some(_)) = (scale, ex.plan().scaler) {
        ex.set_loss_scale(s)?;
    }
    Ok(info)
}

/// The optimizer-state file must be from the model's step, for this run's optimizer, with
/// every state tensor.
fn check_optimizer(ex: &Executor, opt: &Checkpoint, opath: &Path, step: u64) -> Result<()> {
    let ostep = meta_u64(opt, "step", opath)?;
    if ostep != step {
        return Err(Error::Checkpoint {
            path: opath.to_path_buf(),
            msg: format!(
                "optimizer state is from step {ostep} but the model from step {step} (interrupted write?)"
            ),
        });
    }
    let kind = format!("{:?}", ex.optimizer().kind);
    if opt.metadata.get("optimizer") != Some(&kind) {
        return Err(Error::Checkpoint {
            path: opath.to_path_buf(),
            msg: format!(
                "optimizer state is for {:?}, but this run uses {kind}",
                opt.metadata
                    .get("optimizer")
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
        });
    }
    let expected: Vec<(String, Vec<usize>)> = ex
        .plan()
        .param_shapes()
        .into_iter()
        .flat_map(|(n, s)| {
            (1..=ex.optimizer().kind.state_slots())
                .map(move |k| (format!("{n}.state{k}"), s.clone()))
        })
        .collect();
    opt.check_against(&expected, opath)
}

/// Where a checked resume starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// The epoch and batch to continue at.
    pub epoch: u64,
    pub batch: usize,
    /// The step counter restored.
    pub step: u64,
    /// The settings that differ from the checkpoint's (empty unless `new_settings`).
    pub changed: Vec<String>,
    /// The checkpoint records no run settings (written before they were): nothing could
    /// be checked.
    pub unchecked: bool,
}

/// Resumes `ex` from the checkpoint at `path` (model, optimizer state, step) after checking
/// the run: when `now` differs from the checkpoint's [`RunInfo`] the resume is refused with
/// an error listing every difference, unless `new_settings`, which continues from the next
/// epoch boundary instead (the rest of an interrupted epoch is skipped).
pub fn resume_checked(
    ex: &mut Executor,
    path: &Path,
    now: &RunInfo,
    new_settings: bool,
) -> Result<Resumed> {
    // the model file is read once: its run settings are checked before anything is loaded
    let (model, meta) = read_model(ex, path)?;
    // a checkpoint written before run settings were recorded cannot be checked
    let unchecked = meta.run.0.is_empty();
    let changed = if unchecked {
        Vec::new()
    } else {
        meta.run.differences(now)
    };
    if !changed.is_empty() && !new_settings {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!(
                "was written by a run with other settings or data:\n  {}\nresume with the checkpoint's settings, or add --resume-next-epoch to continue from the next epoch boundary with these",
                changed.join("\n  ")
            ),
        });
    }
    // a weights-only file is refused here, saying why
    let info = apply_checkpoint(ex, path, model, meta.info, true)?;
    let (epoch, batch) = if changed.is_empty() {
        (info.epoch, info.batch)
    } else {
        (info.epoch + (info.batch > 0) as u64, 0)
    };
    Ok(Resumed {
        epoch,
        batch,
        step: info.step,
        changed,
        unchecked,
    })
}

/// A learning-rate schedule over the epochs of a run.
///
/// ```
/// use wgcnn::train::Schedule;
/// let s: Schedule = "cosine".parse().unwrap();
/// assert_eq!(s.lr(0.1, 0, 10), 0.1);
/// assert!((s.lr(0.1, 5, 10) - 0.05).abs() < 1e-7);
/// assert_eq!(Schedule::Constant.lr(0.1, 9, 10), 0.1);
/// assert!("linear".parse::<Schedule>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// PyTorch's `CosineAnnealingLR` stepped once per epoch, `T_max = epochs`, `eta_min = 0`:
    /// `lr = base · ½(1 + cos(π·epoch/epochs))`.
    Cosine,
    /// `lr = base` throughout.
    Constant,
    /// PyTorch's `OneCycleLR(max_lr=base, total_steps, pct_start=0.3, anneal_strategy='cos',
    /// div_factor=25, final_div_factor=1e4)`, stepped per training step: cosine from
    /// `base/25` up to `base` over the first 30 % of the steps, then cosine down to
    /// `base/25/1e4`. Per epoch ([`Schedule::lr`]) it is evaluated at the epoch's first step.
    OneCycle,
    /// Linear warm-up from `base/w` to `base` over the first `w` = 5 % of the steps
    /// (at least one), then cosine annealing to 0 over the rest, per training step.
    WarmupCosine,
}

impl Schedule {
    /// Learning rate for `epoch` (0-based) of `epochs`.
    pub fn lr(self, base: f32, epoch: u64, epochs: u64) -> f32 {
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => {
                let t = epoch as f64 / epochs.max(1) as f64;
                (base as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
            Schedule::OneCycle | Schedule::WarmupCosine => self.lr_at(base, epoch, epochs),
        }
    }

    /// Learning rate for training step `step` (0-based) of `steps`: the per-step schedules
    /// ([`Schedule::OneCycle`], [`Schedule::WarmupCosine`]); the per-epoch ones treat a
    /// step as an epoch.
    ///
    /// ```
    /// use wgcnn::train::Schedule;
    /// let s = Schedule::OneCycle;
    /// assert!((s.lr_at(0.4, 0, 100) - 0.4 / 25.0).abs() < 1e-7);
    /// assert!((s.lr_at(0.4, 29, 100) - 0.4).abs() < 1e-6);  // the peak at 30 %
    /// assert!(s.lr_at(0.4, 99, 100) < 1e-5);
    /// ```
    pub fn lr_at(self, base: f32, step: u64, steps: u64) -> f32 {
        let cos_to = |from: f64, to: f64, t: f64| {
            to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        };
        let b = base as f64;
        let lr = match self {
            Schedule::Constant | Schedule::Cosine => return self.lr(base, step, steps),
            Schedule::OneCycle => {
                // PyTorch: phase ends at float(pct_start·total) − 1 and total − 1
                let (initial, min) = (b / 25.0, b / 25.0 / 1e4);
                let up = 0.3 * steps as f64 - 1.0;
                let end = steps.saturating_sub(1) as f64;
                let s = step as f64;
                if s <= up {
                    cos_to(initial, b, s / up.max(1e-9))
                } else {
                    cos_to(b, min, (s - up) / (end - up).max(1e-9))
                }
            }
            Schedule::WarmupCosine => {
                let w = (steps / 20).max(1);
                if step < w {
                    b * (step + 1) as f64 / w as f64
                } else {
                    cos_to(b, 0.0, (step - w) as f64 / (steps - w).max(1) as f64)
                }
            }
        };
        lr as f32
    }

    /// Whether the rate changes every step (set it before each step), not per epoch.
    pub fn per_step(self) -> bool {
        matches!(self, Schedule::OneCycle | Schedule::WarmupCosine)
    }
}

impl std::str::FromStr for Schedule {
    type Err = Error;

    /// `cosine`, `constant`, `one-cycle` or `warmup-cosine`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(Schedule::Cosine),
            "constant" => Ok(Schedule::Constant),
            "one-cycle" => Ok(Schedule::OneCycle),
            "warmup-cosine" => Ok(Schedule::WarmupCosine),
            _ => Err(Error::invalid(
                "schedule",
                format!(
                    "unknown schedule '{s}' (expected cosine, constant, one-cycle or warmup-cosine)"
                ),
            )),
        }
    }
}

/// A batch of byte images for the executor's input pipeline
/// ([`Executor::train_step_bytes`]): `images [B·C·H·W]` (CHW per image), their labels and
/// their indices in the dataset (the augmentation's draws depend on them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ByteBatch {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub indices: Vec<u32>,
}

/// The byte batches of an in-memory dataset for `epoch`, in the order a [`Loader`] with the
/// same `shuffle` and `seed` uses ([`crate::data::epoch_order`]), starting at batch `first`.
pub fn dataset_byte_batches(
    ds: &crate::data::Dataset,
    batch: usize,
    (shuffle, seed, epoch): (bool, u64, u64),
    first: usize,
) -> impl Iterator<Item = Result<ByteBatch>> + '_ {
    let order = crate::data::epoch_order(ds.n, shuffle, seed, epoch);
    let chunks: Vec<Vec<usize>> = order
        .chunks(batch.max(1))
        .skip(first)
        .map(<[usize]>::to_vec)
        .collect();
    chunks.into_iter().map(move |idx| {
        let mut b = ByteBatch::default();
        for &i in &idx {
            b.images.extend_from_slice(ds.image(i));
            b.labels.push(u32::from(ds.labels[i]));
            b.indices.push(i as u32);
        }
        Ok(b)
    })
}

/// [`train_epoch_with`] on byte batches through the executor's input pipeline (set with
/// [`Executor::set_input_pipeline`]): `batches` are the epoch's batches from number
/// `first` of `total` on; `epoch` seeds the augmentation. The callback and the returned
/// statistics are as [`train_epoch_with`]'s.
pub fn train_epoch_bytes(
    ex: &mut Executor,
    batches: impl Iterator<Item = Result<ByteBatch>>,
    (epoch, first, total): (u64, usize, usize),
    metrics_every: u64,
    mut after_step: impl FnMut(&mut Executor, &Progress) -> Result<bool>,
) -> Result<EpochStats> {
    let mut acc = Running::default();
    let mut stats = EpochStats {
        batches_done: first,
        completed: true,
        ..EpochStats::default()
    };
    let epoch32 = u32::try_from(epoch)
        .map_err(|_| Error::invalid("train_epoch_bytes", format!("epoch {epoch} is too large")))?;
    for (i, b) in (first..).zip(batches) {
        let b = b?;
        ex.train_step_bytes(&b.images, &b.indices, epoch32, Targets::Classes(&b.labels))?;
        stats.steps += 1;
        stats.images += b.labels.len();
        stats.batches_done = i + 1;
        let read =
            i + 1 == total || (metrics_every > 0 && stats.steps.is_multiple_of(metrics_every));
        let running = if read {
            Some(acc.add(ex.take_metrics(Mode::Train)?))
        } else {
            None
        };
        let p = Progress {
            images: stats.images,
            batches_done: i + 1,
            batches: total,
            running,
        };
        if !after_step(ex, &p)? && i + 1 < total {
            stats.completed = false;
            if !read {
                acc.add(ex.take_metrics(Mode::Train)?);
            }
            break;
        }
    }
    if stats.steps > 0 && stats.batches_done < total && stats.completed {
        return Err(Error::invalid(
            "train_epoch_bytes",
            format!(
                "the batches ran out after {} of {total}",
                stats.batches_done
            ),
        ));
    }
    stats.metrics = acc.metrics();
    Ok(stats)
}
