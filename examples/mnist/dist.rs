//! `--distributed`: data-parallel training over MPI (built with `--features distributed`),
//! launched as `mpirun -np <ranks> … --distributed`. `--batch-size` is the global batch; each
//! rank trains on its shard, rank 0 prints and writes the checkpoint, plots and JSON. A
//! binary built without the feature refuses the flag, saying so. Shared by the `mnist` and
//! `cifar10` examples.

use std::path::Path;

use wgcnn::data::Loader;
use wgcnn::exec::Executor;
use wgcnn::train::{self, ByteBatch, EpochStats, Progress, Resumed, RunInfo};

#[cfg(feature = "distributed")]
pub use wgcnn::distributed::World;

/// Stands in for the MPI world in a build without the `distributed` feature: never made.
#[cfg(not(feature = "distributed"))]
pub enum World {}

/// The world when `--distributed` is given (`timeout_s`: how long a collective waits for
/// another rank before naming it and aborting the job).
#[cfg(feature = "distributed")]
pub fn init(distributed: bool, timeout_s: f64) -> super::Res<Option<World>> {
    if !distributed {
        return Ok(None);
    }
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        return Err(format!("--mpi-timeout {timeout_s}: give a positive number of seconds").into());
    }
    let mut w = World::init()?;
    w.set_timeout(std::time::Duration::from_secs_f64(timeout_s));
    Ok(Some(w))
}

#[cfg(not(feature = "distributed"))]
pub fn init(distributed: bool, _timeout_s: f64) -> super::Res<Option<World>> {
    if distributed {
        return Err(format!(
            "--distributed: this binary was built without the `distributed` feature (build it with `cargo build --release --features distributed --example {}`; needs Open MPI)",
            env!("CARGO_BIN_NAME")
        )
        .into());
    }
    Ok(None)
}

/// `(rank, ranks)`; `(0, 1)` without MPI.
pub fn rank_size(world: &Option<World>) -> (usize, usize) {
    #[cfg(feature = "distributed")]
    if let Some(w) = world {
        return (w.rank(), w.size());
    }
    let _ = world;
    (0, 1)
}

/// This rank's GPU (the machine's local-rank-th adapter), or the best one.
pub fn gpu(world: &Option<World>) -> wgcnn::Result<wgcnn::Backend> {
    #[cfg(feature = "distributed")]
    if let Some(w) = world {
        return w.backend();
    }
    let _ = world;
    wgcnn::Backend::gpu()
}

/// The run settings a resume checks (with the world size when distributed).
pub fn run_info(world: &Option<World>, run: RunInfo) -> RunInfo {
    #[cfg(feature = "distributed")]
    if let Some(w) = world {
        return w.run_info(&run);
    }
    let _ = world;
    run
}

/// One epoch: [`train::train_epoch_with`], or its data-parallel form.
pub fn train_epoch(
    world: &mut Option<World>,
    ex: &mut Executor,
    loader: &Loader,
    (epoch, skip): (u64, usize),
    every: u64,
    after_step: impl FnMut(&mut Executor, &Progress) -> wgcnn::Result<bool>,
) -> wgcnn::Result<EpochStats> {
    #[cfg(feature = "distributed")]
    if let Some(w) = world {
        return w.train_epoch_with(ex, loader, epoch, skip, every, after_step);
    }
    let _ = world;
    train::train_epoch_with(ex, loader, epoch, skip, every, after_step)
}

/// One epoch of byte batches: [`train::train_epoch_bytes`], or its data-parallel form
/// (every rank is given the global batches and trains its shard). Used by `cifar10`.
#[allow(dead_code)]
pub fn train_epoch_bytes(
    world: &mut Option<World>,
    ex: &mut Executor,
    batches: impl Iterator<Item = wgcnn::Result<ByteBatch>>,
    at: (u64, usize, usize),
    every: u64,
    after_step: impl FnMut(&mut Executor, &Progress) -> wgcnn::Result<bool>,
) -> wgcnn::Result<EpochStats> {
    #[cfg(feature = "distributed")]
    if let Some(w) = world {
        return w.train_epoch_bytes(ex, batches, at, every, after_step);
    }
    let _ = world;
    train::train_epoch_bytes(ex, batches, at, every, after_step)
}

/// Before an evaluation: every rank takes rank 0's batch norm running statistics, and says
/// on stderr (one line per rank) the FNV-1a of its statistics before and after, e.g.
/// `rank 1 of 2: running statistics fnv1a 3f2a… before the broadcast, 91c0… after`.
pub fn sync_buffers(world: &Option<World>, ex: &mut Executor) -> wgcnn::Result<()> {
    #[cfg(feature = "distributed")]
    if let Some(w) = world {
        if ex.plan().buffers_len() == 0 || w.size() == 1 {
            return Ok(());
        }
        let digest = |ex: &mut Executor| -> wgcnn::Result<String> {
            let b = ex.read_flat_buffers()?;
            let bytes: Vec<u8> = b.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok(train::fnv1a_hex(&bytes))
        };
        let before = digest(ex)?;
        w.broadcast_buffers(ex)?;
        let after = digest(ex)?;
        // one write, so that the ranks' lines never interleave
        let line = format!(
            "rank {} of {}: running statistics fnv1a {before} before the broadcast, {after} after\n",
            w.rank(),
            w.size()
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return Ok(());
    }
    let _ = (world, ex);
    Ok(())
}

/// Writes the checkpoint (rank 0 only when distributed).
pub fn save(
    world: &Option<World>,
    ex: &mut Executor,
    path: &Path,
    (epoch, batch): (u64, usize),
    run: &RunInfo,
) -> wgcnn::Result<()> {
    #[cfg(feature = "distributed")]
    if let Some(w) = world {
        return w.save_checkpoint_run(ex, path, epoch, batch, run);
    }
    let _ = world;
    train::save_checkpoint_run(ex, path, epoch, batch, run)
}

/// `--resume` (checking the world size and that every rank restored the same step).
pub fn resume(
    world: &Option<World>,
    ex: &mut Executor,
    path: &Path,
    now: &RunInfo,
    next_epoch: bool,
) -> wgcnn::Result<Resumed> {
    #[cfg(feature = "distributed")]
    if let Some(w) = world {
        return w.resume_checked(ex, path, now, next_epoch);
    }
    let _ = world;
    train::resume_checked(ex, path, now, next_epoch)
}

/// The step-time split of the run so far, one line (rank 0 prints it), when distributed.
pub fn times_line(world: &mut Option<World>) -> Option<String> {
    #[cfg(feature = "distributed")]
    if let Some(w) = world {
        let t = w.take_times();
        let ms = |d: std::time::Duration| 1e3 * d.as_secs_f64() / t.steps.max(1) as f64;
        return Some(format!(
            "distributed: {} ranks, {} steps; per step: compute {:.2} ms, readback {:.2} ms, allreduce {:.2} ms, upload+update {:.2} ms",
            w.size(),
            t.steps,
            ms(t.compute),
            ms(t.readback),
            ms(t.allreduce),
            ms(t.update)
        ));
    }
    let _ = world;
    None
}
