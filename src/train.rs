//! Training loops over a [`Loader`] and checkpoints of an [`Executor`].
//!
//! A checkpoint is two safetensors files written atomically: the model at `path`
//! (PyTorch names and layouts, loadable by `torch.nn.Module.load_state_dict`) and the
//! optimizer state beside it at `<path>.optim` (so the model file holds nothing
//! PyTorch wouldn't expect). Both carry the epoch and step in their metadata, and a
//! resume checks they agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
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
    let per = loader.image_dims().0 * loader.image_dims().1;
    let mut images = vec![0.0f32; loader.batch_size() * per];
    let mut labels = vec![0u32; loader.batch_size()];
    let ep = loader.epoch(epoch);
    let (mut sum, mut hits, mut seen) = (0.0f64, 0.0f64, 0usize);
    let mut steps = 0u64;
    let mut done = 0usize;
    let chunks: Vec<Vec<usize>> = ep.batch_indices().map(|c| c.to_vec()).collect();
    let last = chunks.len();
    let mut batches_done = start_batch.min(last);
    let mut completed = true;
    for (i, idx) in chunks.iter().enumerate().skip(start_batch) {
        let b = idx.len();
        loader.fill(idx, &mut images[..b * per], &mut labels[..b])?;
        ex.train_step(&images[..b * per], Targets::Classes(&labels[..b]))?;
        steps += 1;
        done += b;
        batches_done = i + 1;
        let read = i + 1 == last || (metrics_every > 0 && steps.is_multiple_of(metrics_every));
        let running = if read {
            let m = ex.take_metrics(Mode::Train)?;
            sum += m.loss as f64 * m.samples as f64;
            hits += m.accuracy as f64 * m.samples as f64;
            seen += m.samples;
            Some(Metrics {
                loss: (sum / seen.max(1) as f64) as f32,
                accuracy: (hits / seen.max(1) as f64) as f32,
                samples: seen,
                non_finite: false,
            })
        } else {
            None
        };
        if !progress(done, running) && i + 1 < last {
            completed = false;
            if !read {
                let m = ex.take_metrics(Mode::Train)?;
                sum += m.loss as f64 * m.samples as f64;
                hits += m.accuracy as f64 * m.samples as f64;
                seen += m.samples;
            }
            break;
        }
    }
    Ok(EpochStats {
        metrics: Metrics {
            loss: (sum / seen.max(1) as f64) as f32,
            accuracy: (hits / seen.max(1) as f64) as f32,
            samples: seen,
            non_finite: false,
        },
        steps,
        images: done,
        batches_done,
        completed,
    })
}

/// Loss and accuracy over a whole (unshuffled) loader; one readback at the end.
pub fn evaluate(ex: &mut Executor, loader: &Loader) -> Result<Metrics> {
    let per = loader.image_dims().0 * loader.image_dims().1;
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
    let per = loader.image_dims().0 * loader.image_dims().1;
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
            if (t as usize) < k {
                m[t as usize][arg] += 1;
            }
        }
    }
    Ok(m)
}

/// Where the optimizer state of the checkpoint at `path` goes.
pub fn optimizer_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".optim");
    PathBuf::from(s)
}

/// Writes the model (PyTorch names) and optimizer state atomically, recording `epoch`
/// (the epoch in progress, or the next one when `batch` is 0), `batch` (batches of it
/// already done) and the step counter.
pub fn save_checkpoint(ex: &mut Executor, path: &Path, epoch: u64, batch: usize) -> Result<()> {
    let mut meta = BTreeMap::new();
    meta.insert("epoch".to_string(), epoch.to_string());
    meta.insert("batch".to_string(), batch.to_string());
    meta.insert("step".to_string(), ex.step_count().to_string());
    meta.insert("format".to_string(), "wgcnn-1".to_string());
    let mut opt = Checkpoint::new();
    opt.metadata = meta.clone();
    opt.metadata.insert(
        "optimizer".to_string(),
        format!("{:?}", ex.optimizer().kind),
    );
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
    for (name, shape, v) in params {
        model.push(name, shape, v)?;
    }
    // optimizer first: a crash between the two leaves a model whose step disagrees with
    // its optimizer file, which a resume reports instead of silently mixing them
    opt.save(&optimizer_path(path))?;
    model.save(path)
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
/// when `with_optimizer`. Missing, extra or mis-shaped tensors are listed by name.
pub fn load_checkpoint(
    ex: &mut Executor,
    path: &Path,
    with_optimizer: bool,
) -> Result<CheckpointInfo> {
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
    let info = CheckpointInfo {
        epoch: meta_u64(&model, "epoch", path)?,
        batch: meta_u64(&model, "batch", path)? as usize,
        step: meta_u64(&model, "step", path)?,
    };
    let params: Vec<_> = model.tensors.clone();
    if !with_optimizer {
        ex.load_state(&params, &[], ex.step_count())?;
        return Ok(info);
    }
    let opath = optimizer_path(path);
    let opt = Checkpoint::load(&opath)?;
    let ostep = meta_u64(&opt, "step", &opath)?;
    if ostep != info.step {
        return Err(Error::Checkpoint {
            path: opath,
            msg: format!(
                "optimizer state is from step {ostep} but the model from step {} (interrupted write?)",
                info.step
            ),
        });
    }
    let kind = format!("{:?}", ex.optimizer().kind);
    if opt.metadata.get("optimizer") != Some(&kind) {
        return Err(Error::Checkpoint {
            path: opath,
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
    opt.check_against(&expected, &opath)?;
    ex.load_state(&params, &opt.tensors, info.step)?;
    Ok(info)
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
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = Error;

    /// `cosine` or `constant`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(Schedule::Cosine),
            "constant" => Ok(Schedule::Constant),
            _ => Err(Error::invalid(
                "schedule",
                format!("unknown schedule '{s}' (expected cosine or constant)"),
            )),
        }
    }
}
