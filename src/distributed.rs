//! Data-parallel training over MPI (the `distributed` feature): one process per GPU, every
//! rank holding the same model, each training on a disjoint shard of every global batch.
//!
//! Per step ([`World::train_step`]): forward + backward on the local shard (one submit),
//! read back the flat gradient buffer, **sum it over the ranks in rank order** (gathered to
//! rank 0, added `g₀ + g₁ + …`, sent back: never MPI's reduction, whose summation order is
//! unspecified), scale to the mean over the global batch, upload, and run the usual
//! optimizer dispatch. Every rank then holds bitwise the same parameters, and a run is
//! bitwise reproducible for a given world size.
//!
//! - **Sharding** ([`shard`]): rank `r` of `S` takes the `r`-th contiguous slice of each
//!   global batch in the loader's deterministic order; the global batch (the loader's batch
//!   size) must divide by `S` ([`check_global_batch`]); a smaller last batch is split as
//!   evenly as possible and the ranks' gradients are weighted by their sample counts (one
//!   with fewer samples than ranks is skipped).
//! - **Adapters**: [`World::backend`] opens the machine's `local_rank`-th best adapter
//!   ([`crate::gpu::GpuContext::new_for_local_rank`]); `WGCNN_ADAPTER` overrides.
//! - **Byte batches** (the device input pipeline): [`World::train_epoch_bytes`] /
//!   [`World::train_step_bytes`] shard each global [`ByteBatch`] alike; the augmentation
//!   draws are a function of (seed, epoch, dataset index), so each sample is cropped and
//!   flipped as in a single process.
//! - **Batch norm** uses per-rank batch statistics, as PyTorch DDP without SyncBatchNorm.
//!   The running statistics are rank 0's wherever they are read: [`World::broadcast_buffers`]
//!   sends rank 0's to every rank before each checkpoint ([`World::save_checkpoint_run`]) and
//!   before each evaluation (the caller's part) — where DDP's `broadcast_buffers=True` sends
//!   them before every forward pass, with the same values wherever they are read (see there).
//! - **Metrics** (loss, accuracy, samples) are summed over the ranks.
//! - **Checkpoints**: rank 0 writes ([`World::save_checkpoint_run`], crash-consistent, the
//!   world size recorded in the [`RunInfo`]); [`World::resume_checked`] refuses another world
//!   size and checks that every rank restored the same step.
//! - **Failure**: every collective polls non-blocking point-to-point requests against a
//!   deadline ([`World::set_timeout`], default 120 s). A rank that does not answer in time is
//!   named on stderr (`error: distributed training: rank 1: did not answer …`) by the rank
//!   waiting for it, which then calls `MPI_Abort`: every rank exits, none hangs. (An error
//!   cannot be returned instead: MPI cannot take back a started transfer.) A rank that dies
//!   outright is reported by `mpirun`, which ends the others.
//!
//! ```no_run
//! use wgcnn::{data::{Loader, Normalize}, distributed::World, nn, Executor, Optimizer};
//! # fn main() -> Result<(), wgcnn::Error> {
//! let mut world = World::init()?;               // mpirun -np 2 …
//! let backend = world.backend()?;               // this rank's GPU
//! # let ds: wgcnn::data::Dataset = todo!();
//! let loader = Loader::new(&ds, 64, true, 0, Normalize::mnist())?; // global batch 64
//! let mut ex = Executor::new(&backend, &nn::lenet5()?, 64 / world.size(), Optimizer::sgd(0.05), 0)?;
//! let stats = world.train_epoch_with(&mut ex, &loader, 0, 0, 25, |_, _| Ok(true))?;
//! if world.is_root() { println!("loss {:.4}", stats.metrics.loss); }
//! # Ok(()) }
//! ```

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use mpi::point_to_point::{Destination, Source};
use mpi::request::{Request, Scope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::Equivalence;

use crate::backend::Backend;
use crate::data::Loader;
use crate::error::{Error, Result};
use crate::exec::{Executor, Metrics, Targets};
use crate::plan::Mode;
use crate::train::{ByteBatch, EpochStats, Progress, Resumed, RunInfo};

/// Tag of the messages of the rank-ordered reduction.
const TAG: i32 = 15;

/// Where a step's time went (summed over the steps since [`World::take_times`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    /// Steps timed.
    pub steps: u64,
    /// Upload of the shard, forward and backward, until the device is idle.
    pub compute: Duration,
    /// Reading the flat gradient buffer back.
    pub readback: Duration,
    /// The rank-ordered sum over the ranks and the scaling, including the wait for the
    /// slowest rank to arrive (load imbalance shows here).
    pub allreduce: Duration,
    /// Uploading the summed gradients and the optimizer update (until the device is idle).
    pub update: Duration,
}

/// This process's place in `MPI_COMM_WORLD`, and the collectives training uses.
pub struct World {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    timeout: Duration,
    times: StepTimes,
    /// Finalises MPI when dropped: declared last, so it is dropped after `comm`.
    _universe: mpi::environment::Universe,
}

/// Rank `rank`'s contiguous part of `0..len` split over `size` ranks as evenly as possible
/// (the first `len % size` ranks take one more).
///
/// ```
/// use wgcnn::distributed::shard;
/// assert_eq!(shard(64, 1, 2), 32..64);
/// assert_eq!(shard(10, 0, 4), 0..3);
/// assert_eq!(shard(10, 3, 4), 8..10);
/// ```
pub fn shard(len: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, rem) = (len / size.max(1), len % size.max(1));
    let start = rank * base + rank.min(rem);
    start..start + base + (rank < rem) as usize
}

/// Checks that a global batch of `batch` samples splits evenly over `size` ranks.
///
/// ```
/// use wgcnn::distributed::check_global_batch;
/// assert!(check_global_batch(64, 2).is_ok());
/// let e = check_global_batch(63, 2).unwrap_err().to_string();
/// assert!(e.contains("63") && e.contains("2 ranks"));
/// ```
pub fn check_global_batch(batch: usize, size: usize) -> Result<()> {
    if size == 0 || batch == 0 || !batch.is_multiple_of(size) {
        return Err(Error::invalid(
            "distributed batch",
            format!("the global batch of {batch} samples does not divide evenly over {size} ranks"),
        ));
    }
    Ok(())
}

impl World {
    /// Initialises MPI (once per process) and finds this rank, the world size and the rank
    /// among the processes of this machine.
    pub fn init() -> Result<World> {
        let universe = mpi::initialize().ok_or_else(|| Error::Distributed {
            rank: 0,
            msg: "MPI is already initialised in this process".into(),
        })?;
        let comm = universe.world();
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        let local_rank = comm.split_shared(comm.rank()).rank() as usize;
        Ok(World {
            comm,
            rank,
            size,
            local_rank,
            timeout: Duration::from_secs(120),
            times: StepTimes::default(),
            _universe: universe,
        })
    }

    /// This process's rank in `MPI_COMM_WORLD`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The rank among the processes on this machine (picks the adapter).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Rank 0: writes checkpoints and prints.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// How long a collective waits for another rank before naming it and aborting the job.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// This rank's GPU: the machine's `local_rank`-th best adapter (`WGCNN_ADAPTER`
    /// overrides).
    pub fn backend(&self) -> Result<Backend> {
        Backend::gpu_for_local_rank(self.local_rank)
    }

    /// The step-time split since the last call, and resets it.
    pub fn take_times(&mut self) -> StepTimes {
        std::mem::take(&mut self.times)
    }

    /// Sums `buf` over the ranks in rank order (`rank 0 + rank 1 + …`, the same bits on every
    /// rank and in every run). `what` names the collective in a timeout's message.
    pub fn allreduce_sum_f32(&self, buf: &mut [f32], what: &str) -> Result<()> {
        self.sum_in_rank_order(buf, what)
    }

    /// [`World::allreduce_sum_f32`] for f64 values (metrics, flags, counters).
    pub fn allreduce_sum_f64(&self, buf: &mut [f64], what: &str) -> Result<()> {
        self.sum_in_rank_order(buf, what)
    }

    /// Every rank's `value`, indexed by rank.
    pub fn all_values(&self, value: f64, what: &str) -> Result<Vec<f64>> {
        let mut v = vec![0.0; self.size];
        v[self.rank] = value;
        self.sum_in_rank_order(&mut v, what)?;
        Ok(v)
    }

    /// Whether every rank says `go_on` (a stop on any rank stops all at the same step).
    pub fn all_agree(&self, go_on: bool, what: &str) -> Result<bool> {
        let mut v = [go_on as u8 as f64];
        self.sum_in_rank_order(&mut v, what)?;
        Ok(v[0] as usize == self.size)
    }

    fn sum_in_rank_order<T>(&self, buf: &mut [T], what: &str) -> Result<()>
    where
        T: Equivalence + Copy + Default + std::ops::AddAssign,
    {
        if self.size == 1 {
            return Ok(());
        }
        let (len, deadline) = (buf.len(), Instant::now() + self.timeout);
        if self.rank == 0 {
            let mut parts = vec![T::default(); len * (self.size - 1)];
            mpi::request::scope(|sc| {
                let reqs = parts.chunks_mut(len.max(1)).enumerate().map(|(i, c)| {
                    let p = self.comm.process_at_rank(i as i32 + 1);
                    (i + 1, p.immediate_receive_into_with_tag(sc, c, TAG))
                });
                self.poll(reqs.collect(), deadline, what)
            });
            for part in parts.chunks(len.max(1)) {
                for (a, &b) in buf.iter_mut().zip(part) {
                    *a += b;
                }
            }
            let sum: &[T] = buf;
            mpi::request::scope(|sc| {
                let reqs = (1..self.size).map(|r| {
                    let p = self.comm.process_at_rank(r as i32);
                    (r, p.immediate_send_with_tag(sc, sum, TAG))
                });
                self.poll(reqs.collect(), deadline, what)
            });
        } else {
            let root = self.comm.process_at_rank(0);
            let mine: &[T] = buf;
            mpi::request::scope(|sc| {
                let req = root.immediate_send_with_tag(sc, mine, TAG);
                self.poll(vec![(0, req)], deadline, what)
            });
            mpi::request::scope(|sc| {
                let req = root.immediate_receive_into_with_tag(sc, &mut *buf, TAG);
                self.poll(vec![(0, req)], deadline, what)
            });
        }
        Ok(())
    }

    /// Completes the `(peer rank, request)` pairs, or, past `deadline`, names the first peer
    /// still pending on stderr and aborts the job (`MPI_Abort`).
    fn poll<'a, D: ?Sized, S: Scope<'a>>(
        &self,
        mut reqs: Vec<(usize, Request<'a, D, S>)>,
        deadline: Instant,
        what: &str,
    ) {
        let mut spins = 0u32;
        while !reqs.is_empty() {
            reqs = reqs
                .into_iter()
                .filter_map(|(r, q)| q.test().err().map(|q| (r, q)))
                .collect();
            if reqs.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let e = Error::Distributed {
                    rank: reqs[0].0,
                    msg: format!(
                        "did not answer within {:.1} s ({what}); rank {} of {} aborts the job",
                        self.timeout.as_secs_f64(),
                        self.rank,
                        self.size
                    ),
                };
                // one write, so that the ranks' lines never interleave
                let line = format!("error: {e}\n");
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                self.comm.abort(3);
            }
            spins += 1;
            if spins < 2000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

impl World {
    /// One data-parallel step on this rank's shard `images`/`targets` of a global batch of
    /// `global` samples: forward + backward here, the rank-ordered sum of the flat gradients,
    /// scaled to the global-batch mean (an even split: `(g₀ + g₁ + …) / S`; otherwise each
    /// rank's mean weighted by its share `nᵣ / global` before the sum), then the optimizer
    /// update. Every rank calls it at every step with its own shard (at least one sample).
    pub fn train_step(
        &mut self,
        ex: &mut Executor,
        images: &[f32],
        targets: Targets<'_>,
        global: usize,
    ) -> Result<()> {
        let n = self.check_shard(ex, targets, global)?;
        self.split_step(ex, n, global, |ex| ex.forward_backward(images, targets))
    }

    /// [`World::train_step`] on this rank's shard of a byte batch through the executor's
    /// input pipeline ([`Executor::forward_backward_bytes`]): `images` are the shard's bytes,
    /// `samples` their dataset indices (the augmentation draws depend on the pipeline's seed,
    /// `epoch` and the index only, so each sample is augmented as in a single process).
    pub fn train_step_bytes(
        &mut self,
        ex: &mut Executor,
        images: &[u8],
        samples: &[u32],
        epoch: u32,
        targets: Targets<'_>,
        global: usize,
    ) -> Result<()> {
        let n = self.check_shard(ex, targets, global)?;
        self.split_step(ex, n, global, |ex| {
            ex.forward_backward_bytes(images, samples, epoch, targets)
        })
    }

    /// The shard's sample count, checked against the global batch.
    fn check_shard(&self, ex: &Executor, targets: Targets<'_>, global: usize) -> Result<usize> {
        let n = match targets {
            Targets::Classes(c) => c.len(),
            Targets::Values(v) => v.len() / ex.plan().target_len.max(1),
        };
        if global < self.size || n == 0 || n > global {
            return Err(Error::invalid(
                "distributed step",
                format!(
                    "a shard of {n} samples of a global batch of {global} over {} ranks (every rank needs at least one)",
                    self.size
                ),
            ));
        }
        Ok(n)
    }

    /// `forward_backward` on the shard of `n` samples, then the rank-ordered gradient sum,
    /// the scaling and the update, timed.
    fn split_step(
        &mut self,
        ex: &mut Executor,
        n: usize,
        global: usize,
        forward_backward: impl FnOnce(&mut Executor) -> Result<()>,
    ) -> Result<()> {
        let t0 = Instant::now();
        forward_backward(ex)?;
        ex.synchronize()?;
        let t1 = Instant::now();
        let mut g = ex.read_flat_gradients()?;
        let t2 = Instant::now();
        let even = global.is_multiple_of(self.size);
        if !even {
            let w = n as f32 / global as f32;
            g.iter_mut().for_each(|v| *v *= w);
        }
        self.sum_in_rank_order(&mut g, &format!("gradient sum of step {}", ex.step_count()))?;
        if even && self.size > 1 {
            let s = self.size as f32;
            g.iter_mut().for_each(|v| *v /= s);
        }
        let t3 = Instant::now();
        ex.write_flat_gradients(&g)?;
        ex.apply_update()?;
        ex.synchronize()?;
        let t = &mut self.times;
        t.steps += 1;
        t.compute += t1 - t0;
        t.readback += t2 - t1;
        t.allreduce += t3 - t2;
        t.update += t3.elapsed();
        Ok(())
    }

    /// This rank's contiguous part ([`shard`]) of the global byte batch `batch`: its images,
    /// labels and dataset indices, in the batch's order.
    pub fn shard_byte_batch(&self, batch: &ByteBatch) -> Result<ByteBatch> {
        let n = batch.labels.len();
        if n == 0 || batch.indices.len() != n || !batch.images.len().is_multiple_of(n) {
            return Err(Error::shape(
                "byte batch",
                format!(
                    "{} bytes, {n} labels and {} indices are not one batch",
                    batch.images.len(),
                    batch.indices.len()
                ),
            ));
        }
        let per = batch.images.len() / n;
        let r = shard(n, self.rank, self.size);
        Ok(ByteBatch {
            images: batch.images[r.start * per..r.end * per].to_vec(),
            labels: batch.labels[r.clone()].to_vec(),
            indices: batch.indices[r].to_vec(),
        })
    }

    /// Sends rank 0's running statistics (batch norm `running_mean` / `running_var`,
    /// [`Executor::read_flat_buffers`]) to every other rank, which overwrites its own: after
    /// it, all ranks hold bitwise rank 0's. A no-op for one rank or a model without any.
    ///
    /// PyTorch DDP (`broadcast_buffers=True`) does this before every forward pass; here it is
    /// done before every checkpoint ([`World::save_checkpoint_run`] calls it) and before
    /// every evaluation (the caller's part). The two are indistinguishable where the
    /// statistics are read: rank 0 never receives in either scheme, so its statistics evolve
    /// from its own shards alone in both, and a training-mode forward pass uses the batch's
    /// statistics, never the running ones, so the other ranks' copies matter only when
    /// evaluating or saving — when both schemes hand them rank 0's. It costs one readback
    /// and one upload per evaluation instead of per step.
    pub fn broadcast_buffers(&self, ex: &mut Executor) -> Result<()> {
        if self.size == 1 || ex.plan().buffers_len() == 0 {
            return Ok(());
        }
        let mut b = if self.is_root() {
            ex.read_flat_buffers()?
        } else {
            vec![0.0f32; ex.plan().buffers_len()]
        };
        self.broadcast_from_root(&mut b, "running statistics broadcast")?;
        if !self.is_root() {
            ex.write_flat_buffers(&b)?;
        }
        Ok(())
    }

    /// Rank 0's `buf` to every rank (the same length on all), under the deadline.
    fn broadcast_from_root<T: Equivalence>(&self, buf: &mut [T], what: &str) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        if self.is_root() {
            let b: &[T] = buf;
            mpi::request::scope(|sc| {
                let reqs = (1..self.size).map(|r| {
                    let p = self.comm.process_at_rank(r as i32);
                    (r, p.immediate_send_with_tag(sc, b, TAG))
                });
                self.poll(reqs.collect(), deadline, what)
            });
        } else {
            let root = self.comm.process_at_rank(0);
            mpi::request::scope(|sc| {
                let req = root.immediate_receive_into_with_tag(sc, &mut *buf, TAG);
                self.poll(vec![(0, req)], deadline, what)
            });
        }
        Ok(())
    }

    /// This rank's metrics since the last read, summed over the ranks. A non-finite loss on
    /// any rank is an [`Error::NonFinite`] on every rank.
    pub fn take_metrics(&self, ex: &mut Executor) -> Result<Metrics> {
        let mut v = match ex.take_metrics(Mode::Train) {
            Ok(m) => {
                let s = m.samples as f64;
                [m.loss as f64 * s, m.accuracy as f64 * s, s, 0.0]
            }
            Err(Error::NonFinite { .. }) => [0.0, 0.0, 0.0, 1.0],
            Err(e) => return Err(e),
        };
        self.sum_in_rank_order(&mut v, "metrics")?;
        if v[3] > 0.0 {
            return Err(Error::NonFinite {
                step: ex.step_count(),
            });
        }
        let seen = v[2].max(1.0);
        Ok(Metrics {
            loss: (v[0] / seen) as f32,
            accuracy: (v[1] / seen) as f32,
            samples: v[2] as usize,
            non_finite: false,
        })
    }

    /// [`crate::train::train_epoch_with`] over the ranks: each global batch of the loader (its
    /// batch size, which must divide by the world size) is sharded ([`shard`]), trained with
    /// [`World::train_step`]; `Progress` counts global images and carries the summed metrics.
    /// The epoch stops where `after_step` returns false on any rank (all ranks agree). `ex`'s
    /// plan must hold a shard (`batch / size` samples). A last batch with fewer samples than
    /// ranks is skipped; a last batch that does not split evenly gives the first ranks one
    /// sample more (see [`World::train_step`]).
    pub fn train_epoch_with(
        &mut self,
        ex: &mut Executor,
        loader: &Loader,
        epoch: u64,
        start_batch: usize,
        metrics_every: u64,
        mut after_step: impl FnMut(&mut Executor, &Progress) -> Result<bool>,
    ) -> Result<EpochStats> {
        check_global_batch(loader.batch_size(), self.size)?;
        let per = loader.sample_len();
        let local = loader.batch_size().div_ceil(self.size);
        let (mut images, mut labels) = (vec![0.0f32; local * per], vec![0u32; local]);
        let ep = loader.epoch(epoch);
        let chunks: Vec<Vec<usize>> = ep.batch_indices().map(|c| c.to_vec()).collect();
        let last = chunks.len();
        if start_batch >= last && last > 0 {
            return Err(Error::invalid(
                "train_epoch",
                format!("start batch {start_batch} is past the epoch's {last} batches"),
            ));
        }
        let mut sums = MetricSums::default();
        let mut stats = EpochStats {
            batches_done: start_batch,
            completed: true,
            ..EpochStats::default()
        };
        let mut running = Metrics::default();
        for (i, idx) in chunks.iter().enumerate().skip(start_batch) {
            if idx.len() < self.size {
                // a last batch smaller than the world: dropped on every rank alike
                stats.batches_done = i + 1;
                continue;
            }
            let mine = &idx[shard(idx.len(), self.rank, self.size)];
            let b = mine.len();
            loader.fill(mine, &mut images[..b * per], &mut labels[..b])?;
            self.train_step(
                ex,
                &images[..b * per],
                Targets::Classes(&labels[..b]),
                idx.len(),
            )?;
            stats.steps += 1;
            stats.images += idx.len();
            stats.batches_done = i + 1;
            let end = (i, last, metrics_every);
            if self.end_step(ex, end, &stats, &mut sums, &mut running, &mut after_step)? {
                stats.completed = false;
                break;
            }
        }
        stats.metrics = running;
        Ok(stats)
    }

    /// [`crate::train::train_epoch_bytes`] over the ranks: every rank is given the same
    /// global byte batches (`batches`, the epoch's from number `first` of `total` on, in the
    /// loader's deterministic order), takes its shard of each ([`World::shard_byte_batch`])
    /// and trains it with [`World::train_step_bytes`]; `epoch` seeds the augmentation.
    /// `Progress` counts global images and carries the metrics summed over the ranks; the
    /// epoch stops where `after_step` returns false on any rank (all agree). `ex`'s plan
    /// must hold a shard (`⌈batch / size⌉` samples). A batch with fewer samples than ranks
    /// is skipped on every rank; one that does not split evenly is weighted as in
    /// [`World::train_step`].
    pub fn train_epoch_bytes(
        &mut self,
        ex: &mut Executor,
        batches: impl Iterator<Item = Result<ByteBatch>>,
        (epoch, first, total): (u64, usize, usize),
        metrics_every: u64,
        mut after_step: impl FnMut(&mut Executor, &Progress) -> Result<bool>,
    ) -> Result<EpochStats> {
        let epoch32 = u32::try_from(epoch).map_err(|_| {
            Error::invalid("train_epoch_bytes", format!("epoch {epoch} is too large"))
        })?;
        let mut sums = MetricSums::default();
        let mut stats = EpochStats {
            batches_done: first,
            completed: true,
            ..EpochStats::default()
        };
        let mut running = Metrics::default();
        for (i, b) in (first..).zip(batches) {
            let b = b?;
            let global = b.labels.len();
            stats.batches_done = i + 1;
            if global < self.size {
                // a last batch smaller than the world: dropped on every rank alike
                continue;
            }
            let mine = self.shard_byte_batch(&b)?;
            self.train_step_bytes(
                ex,
                &mine.images,
                &mine.indices,
                epoch32,
                Targets::Classes(&mine.labels),
                global,
            )?;
            stats.steps += 1;
            stats.images += global;
            let end = (i, total, metrics_every);
            if self.end_step(ex, end, &stats, &mut sums, &mut running, &mut after_step)? {
                stats.completed = false;
                break;
            }
        }
        if stats.batches_done > first && stats.completed && stats.batches_done < total {
            return Err(Error::invalid(
                "train_epoch_bytes",
                format!(
                    "the batches ran out after {} of {total}",
                    stats.batches_done
                ),
            ));
        }
        stats.metrics = running;
        Ok(stats)
    }

    /// The end of a step of global batch `i` of `total` in an epoch loop: reads the metrics
    /// back (summed over the ranks) when due — the last batch, or every `metrics_every`
    /// steps — into `sums` and `running`, calls `after_step`, and takes the stop vote.
    /// Returns whether the epoch stops here (its metrics then read back if they were not).
    fn end_step(
        &mut self,
        ex: &mut Executor,
        (i, total, metrics_every): (usize, usize, u64),
        stats: &EpochStats,
        sums: &mut MetricSums,
        running: &mut Metrics,
        after_step: &mut impl FnMut(&mut Executor, &Progress) -> Result<bool>,
    ) -> Result<bool> {
        let read =
            i + 1 == total || (metrics_every > 0 && stats.steps.is_multiple_of(metrics_every));
        let now = if read {
            Some(sums.add(self.take_metrics(ex)?))
        } else {
            None
        };
        *running = now.unwrap_or(*running);
        let p = Progress {
            images: stats.images,
            batches_done: i + 1,
            batches: total,
            running: now,
        };
        let go_on = after_step(ex, &p)?;
        if self.all_agree(go_on, "the stop vote")? || i + 1 >= total {
            return Ok(false);
        }
        if !read {
            *running = sums.add(self.take_metrics(ex)?);
        }
        Ok(true)
    }

    /// `run` with the world size recorded (`world_size`): what a distributed resume checks.
    pub fn run_info(&self, run: &RunInfo) -> RunInfo {
        run.clone().with("world_size", self.size)
    }

    /// Rank 0 writes the checkpoint with [`crate::train::save_checkpoint_run`]
    /// (crash-consistent) and [`World::run_info`]; the other ranks write nothing. First every
    /// rank takes rank 0's running statistics ([`World::broadcast_buffers`]), so all hold
    /// what was saved. Every rank then waits for rank 0's result, so all go on only after a
    /// successful write.
    pub fn save_checkpoint_run(
        &self,
        ex: &mut Executor,
        path: &Path,
        epoch: u64,
        batch: usize,
        run: &RunInfo,
    ) -> Result<()> {
        self.broadcast_buffers(ex)?;
        let r = if self.is_root() {
            crate::train::save_checkpoint_run(ex, path, epoch, batch, &self.run_info(run))
        } else {
            Ok(())
        };
        let ok = self.all_agree(r.is_ok(), "the checkpoint write")?;
        r?;
        if !ok {
            return Err(Error::Distributed {
                rank: 0,
                msg: format!("writing the checkpoint {} failed", path.display()),
            });
        }
        Ok(())
    }

    /// [`crate::train::resume_checked`] on every rank (the checkpoint file must be readable
    /// by all, e.g. on a shared file system), after checking the checkpoint's world size
    /// against this run's (another is an error naming both, even with `new_settings`);
    /// then checks that every rank restored the same step, epoch and batch.
    pub fn resume_checked(
        &self,
        ex: &mut Executor,
        path: &Path,
        now: &RunInfo,
        new_settings: bool,
    ) -> Result<Resumed> {
        let meta = crate::train::checkpoint_meta(path)?;
        if let Some(w) = meta.run.0.get("world_size") {
            if *w != self.size.to_string() {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    msg: format!(
                        "was written by a run of {w} ranks; this run has {} (resume with mpirun -np {w})",
                        self.size
                    ),
                });
            }
        }
        let r = crate::train::resume_checked(ex, path, &self.run_info(now), new_settings)?;
        for (what, v) in [
            ("step", r.step as f64),
            ("epoch", r.epoch as f64),
            ("batch", r.batch as f64),
        ] {
            let all = self.all_values(v, &format!("the resumed {what}"))?;
            if let Some(other) = all.iter().position(|&x| x != v) {
                return Err(Error::Distributed {
                    rank: other,
                    msg: format!(
                        "resumed at {what} {}, rank {} at {what} {v}: the ranks must read the same checkpoint",
                        all[other], self.rank
                    ),
                });
            }
        }
        Ok(r)
    }
}

/// The epoch's metrics so far: each read-back (already summed over the ranks) weighted by
/// its samples.
#[derive(Default)]
struct MetricSums {
    loss: f64,
    accuracy: f64,
    samples: usize,
}

impl MetricSums {
    /// Adds `m` and returns the sample-weighted means of everything added.
    fn add(&mut self, m: Metrics) -> Metrics {
        let s = m.samples as f64;
        self.loss += m.loss as f64 * s;
        self.accuracy += m.accuracy as f64 * s;
        self.samples += m.samples;
        let seen = self.samples.max(1) as f64;
        Metrics {
            loss: (self.loss / seen) as f32,
            accuracy: (self.accuracy / seen) as f32,
            samples: self.samples,
            non_finite: false,
        }
    }
}
