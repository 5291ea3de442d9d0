//! Executors: run a [`Plan`] on the GPU (every tensor resident, one submit per
//! training step, nothing read back but metrics when asked) or on the CPU with the
//! kernels' twins. Both expose the same [`Executor`] API and produce the same numbers.
//!
//! ```no_run
//! use wgcnn::{exec::{Executor, Targets}, nn, Backend, Optimizer, plan::Mode};
//! # fn main() -> Result<(), wgcnn::Error> {
//! let graph = nn::lenet5()?;
//! let mut ex = Executor::new(&Backend::gpu()?, &graph, 64, Optimizer::momentum(0.05, 0.9), 0)?;
//! let images = vec![0.0f32; 64 * 28 * 28];
//! let labels = vec![3u32; 64];
//! ex.train_step(&images, Targets::Classes(&labels))?;   // one submit, no readback
//! let m = ex.take_metrics(Mode::Train)?;                  // one small readback
//! println!("loss {:.4} acc {:.3}", m.loss, m.accuracy);
//! # Ok(()) }
//! ```

mod cpu;
mod gpu;
mod input;

pub use input::InputPipeline;

use rand::{Rng, SeedableRng};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::optim::{Optimizer, ParamSelect};
use crate::plan::{MemoryReport, Mode, Plan, Precision, Split, Step};
use input::RawInput;

/// Targets of a batch: class indices (cross-entropy) or dense values (MSE).
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    Classes(&'a [u32]),
    Values(&'a [f32]),
}

/// Metrics accumulated since the last [`Executor::take_metrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Mean loss per sample.
    pub loss: f32,
    /// Fraction of samples whose argmax equals the target (cross-entropy only).
    pub accuracy: f32,
    /// Samples seen.
    pub samples: usize,
    /// Whether a non-finite loss was seen.
    pub non_finite: bool,
}

impl Metrics {
    fn from_raw(m: [f32; 4]) -> Self {
        Metrics {
            loss: if m[2] > 0.0 { m[0] / m[2] } else { 0.0 },
            accuracy: if m[2] > 0.0 { m[1] / m[2] } else { 0.0 },
            samples: m[2] as usize,
            non_finite: m[3] != 0.0 || !m[0].is_finite(),
        }
    }
}

/// What the executor did, for napkin math and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Training steps run.
    pub steps: u64,
    /// Queue submits in total.
    pub submits: u64,
    /// Dispatches recorded by the last training step.
    pub dispatches_per_step: u64,
    /// Submits made by the last training step.
    pub submits_last_step: u64,
    /// Bytes written to the device with `queue.write_buffer` in total.
    pub bytes_uploaded: u64,
    /// Bytes read back from the device in total.
    pub bytes_read_back: u64,
    /// Bytes of device buffers currently allocated by this executor.
    pub gpu_bytes_allocated: u64,
}

/// The initial state `[4]` of a mixed-precision plan's loss scaler (S, good steps, skipped
/// steps, 0); zeros for an f32 plan (unused).
pub(crate) fn init_scaler(plan: &Plan) -> Vec<f32> {
    let s = plan.precision.scaler().map_or(0.0, |s| s.init_scale);
    vec![s, 0.0, 0.0, 0.0]
}

/// The loss scaler of a mixed-precision executor, read back ([`Executor::loss_scale`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleState {
    /// The current scale `S`.
    pub scale: f32,
    /// Finite steps since the scale last changed (it grows at the scaler's interval).
    pub good_steps: u32,
    /// Updates skipped because a gradient overflowed, since the executor was made.
    pub skipped_steps: u64,
}

/// A named tensor read back from the executor.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The initial parameters: each parameter's [`crate::init::Init`] as the graph resolves it
/// ([`Graph::param_init`]; with none set anywhere, PyTorch's default: conv and linear
/// weights and biases uniform in `±1/√fan_in`, Kaiming-uniform with `a = √5`; batch norm
/// γ = 1, β = 0). The PyTorch-default values are drawn in parameter order from
/// `StdRng::seed_from_u64(seed)` for every parameter, whatever its init, so the stream never
/// depends on the inits chosen; another random init draws from the parameter's own stream
/// ([`crate::init::param_seed`]). Returns the flat, 256-byte-aligned layout.
pub fn init_params(plan: &Plan, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut flat = vec![0.0f32; plan.flat_len];
    let g = &plan.graph;
    for (i, (p, &(t, _))) in g.params().iter().zip(&plan.param_tensors).enumerate() {
        let bound = 1.0 / (p.fan_in.max(1) as f32).sqrt();
        let off = offset_of(plan, t);
        let dst = &mut flat[off..off + p.len()];
        for v in dst.iter_mut() {
            *v = rng.random_range(-bound..bound);
        }
        let init = g.param_init(i);
        if init != crate::init::Init::PytorchDefault {
            let fans = g.param_fans(i).unwrap_or((p.fan_in, p.fan_in));
            let mut own = rand::rngs::StdRng::seed_from_u64(crate::init::param_seed(seed, i));
            init.fill(dst, fans, &mut own);
        }
    }
    flat
}

/// The flat buffer of non-learnable state at its initial values (batch norm:
/// running mean 0, running variance 1).
pub(crate) fn init_buffers(plan: &Plan) -> Vec<f32> {
    let mut flat = vec![0.0f32; plan.buffers_len()];
    for (t, v) in plan.buffer_tensors() {
        let (o, len) = (offset_of(plan, t), plan.tensors[t].per_sample);
        flat[o..o + len].fill(v);
    }
    flat
}

pub(crate) fn offset_of(plan: &Plan, t: usize) -> usize {
    match plan.tensors[t].home {
        crate::plan::Home::Param(o) | crate::plan::Home::Grad(o) | crate::plan::Home::Buffer(o) => {
            o
        }
        _ => 0,
    }
}

enum Inner {
    Cpu(cpu::CpuExec),
    Gpu(gpu::GpuExec),
}

/// Runs a planned graph: training steps, evaluation, prediction, state I/O.
pub struct Executor {
    plan: Plan,
    opt: Optimizer,
    step: u64,
    inner: Inner,
    /// The device-side input pipeline of the byte batches ([`Executor::train_step_bytes`]).
    pipeline: Option<input::Pipeline>,
    /// Which parameters L1/L2/decoupled decay apply to.
    regularized: ParamSelect,
    /// A [`Executor::forward_backward`] awaits its [`Executor::apply_update`].
    update_pending: bool,
}

impl Executor {
    /// Plans `graph` for batches of up to `batch` samples on `backend`, with parameters
    /// initialised from `seed` (see [`init_params`]). On a GPU the plan splits small weight
    /// gradients' reductions as suits the adapter ([`Split::for_device`]; `WGCNN_SPLIT=0`
    /// turns that off); use [`Executor::with_plan`] to choose.
    pub fn new(
        backend: &Backend,
        graph: &Graph,
        batch: usize,
        opt: Optimizer,
        seed: u64,
    ) -> Result<Self> {
        Self::with_precision(backend, graph, batch, opt, seed, Precision::F32)
    }

    /// As [`Executor::new`], with the conv and linear layers in `precision`.
    /// [`Precision::F16Mixed`] on an adapter without `Features::SHADER_F16` is an
    /// [`Error::MissingFeature`], before any GPU work.
    ///
    /// ```
    /// use wgcnn::{exec::Targets, nn, Backend, Executor, Optimizer, Precision};
    /// # fn main() -> Result<(), wgcnn::Error> {
    /// let g = nn::lenet5()?;
    /// let mut ex =
    ///     Executor::with_precision(&Backend::cpu(), &g, 2, Optimizer::sgd(0.1), 0, Precision::f16_mixed())?;
    /// ex.train_step(&vec![0.5; 2 * 784], Targets::Classes(&[1, 7]))?;
    /// let s = ex.loss_scale()?.expect("a mixed-precision executor");
    /// assert_eq!((s.scale, s.skipped_steps), (65536.0, 0));
    /// # Ok(()) }
    /// ```
    pub fn with_precision(
        backend: &Backend,
        graph: &Graph,
        batch: usize,
        opt: Optimizer,
        seed: u64,
        precision: Precision,
    ) -> Result<Self> {
        let split = match backend {
            Backend::Gpu(ctx) => Split::for_device(ctx),
            Backend::Cpu => Split::off(),
        };
        let plan = Plan::with_precision(graph, batch, split, precision)?;
        Self::with_plan(backend, plan, opt, seed)
    }

    /// Runs a plan built (and possibly edited) by the caller, e.g. with a launch replaced.
    pub fn with_plan(backend: &Backend, mut plan: Plan, opt: Optimizer, seed: u64) -> Result<Self> {
        opt.validate()?;
        if let (Backend::Gpu(ctx), Precision::F16Mixed(_)) = (backend, plan.precision) {
            if !ctx.caps().f16 {
                return Err(Error::MissingFeature {
                    kernel: "Precision::F16Mixed (f16 conv and linear inputs)".into(),
                    feature: "shader-f16",
                    adapter: ctx.adapter().name.clone(),
                });
            }
        }
        plan.memory.optimizer_state = (opt.kind.state_slots() * plan.flat_len * 4) as u64;
        if let (Backend::Gpu(ctx), true) = (backend, crate::gpu::tune::enabled_by_env()) {
            Self::autotune(ctx, &plan)?;
        }
        let params = init_params(&plan, seed);
        let inner = match backend {
            Backend::Cpu => Inner::Cpu(cpu::CpuExec::new(&plan, params)),
            Backend::Gpu(ctx) => Inner::Gpu(gpu::GpuExec::new(ctx.clone(), &plan, &params, &opt)?),
        };
        Ok(Executor {
            plan,
            opt,
            step: 0,
            inner,
            pipeline: None,
            regularized: ParamSelect::All,
            update_pending: false,
        })
    }

    /// `WGCNN_TUNE=1`: the tiles of the plan's tunable launches, from the cache file
    /// ([`crate::gpu::tune::default_cache_path`]) or timed now; a missing cache location is an
    /// error saying which variables to set.
    fn autotune(ctx: &crate::gpu::GpuContext, plan: &Plan) -> Result<()> {
        let path = crate::gpu::tune::default_cache_path().ok_or_else(|| {
            Error::invalid(
                "WGCNN_TUNE",
                "no cache location: set WGCNN_TUNE_CACHE (or XDG_CACHE_HOME or HOME)",
            )
        })?;
        let mut launches = Vec::new();
        for m in [Mode::Train, Mode::Eval] {
            launches.extend(plan.steps(plan.batch, m)?.into_iter().map(|s| s.launch));
        }
        let r = ctx.autotune(&launches, &path)?;
        if r.tuned > 0 {
            eprintln!(
                "wgcnn: tuned {} tile choice(s), {} from {}",
                r.tuned,
                r.cached,
                r.path.display()
            );
        }
        Ok(())
    }

    /// The plan being executed.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Bytes by kind (parameters, gradients, optimizer state, activations, inputs).
    pub fn memory(&self) -> MemoryReport {
        self.plan.memory
    }

    /// The optimizer (its learning rate may be changed with [`Executor::set_lr`]).
    pub fn optimizer(&self) -> &Optimizer {
        &self.opt
    }

    /// Changes the learning rate for the following steps.
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        let mut o = self.opt;
        o.lr = lr;
        o.validate()?;
        self.opt = o;
        Ok(())
    }

    /// Applies the optimizer's L1, L2 and decoupled (AdamW) weight decay to the selected
    /// parameters only, from the next step on (default [`ParamSelect::All`], bitwise the
    /// update without a selection). The update kernel multiplies the decay terms by a 0/1
    /// mask per element, built here once and kept on the device; nothing else changes (the
    /// optimizer state, gradients and learning rate are as before). A name pattern that
    /// matches no parameter is an [`Error::InvalidArgument`] naming it.
    ///
    /// ```
    /// use wgcnn::nn::{BatchNorm2d, Conv2d, Flatten, Linear, Sequential};
    /// use wgcnn::{Backend, Executor, Optimizer, ParamSelect};
    /// # fn main() -> Result<(), wgcnn::Error> {
    /// let g = Sequential::new(&[1, 8, 8])
    ///     .add("conv", Conv2d::new(1, 4, 3)).add("bn", BatchNorm2d::new(4))
    ///     .add("flat", Flatten).add("fc", Linear::new(4 * 6 * 6, 2))
    ///     .cross_entropy()?;
    /// let opt = Optimizer::adamw(1e-3, 0.05);
    /// let mut ex = Executor::new(&Backend::cpu(), &g, 8, opt, 0)?;
    /// ex.set_regularized(ParamSelect::ExcludeBiasAndNorm)?; // decay conv.weight, fc.weight
    /// assert_eq!(ex.regularized_params(), ["conv.weight", "fc.weight"]);
    /// assert!(ex.set_regularized(ParamSelect::matching(&["fc2.*"])).is_err());
    /// # Ok(()) }
    /// ```
    pub fn set_regularized(&mut self, select: ParamSelect) -> Result<()> {
        let on = select.select(&self.plan.graph)?;
        let mask = (select != ParamSelect::All).then(|| {
            // [flat_len]: 1 over the selected parameters' elements, 0 elsewhere
            let mut m = vec![0.0f32; self.plan.flat_len];
            let params = self
                .plan
                .graph
                .params()
                .iter()
                .zip(&self.plan.param_tensors);
            for ((p, &(t, _)), on) in params.zip(on) {
                let off = offset_of(&self.plan, t);
                m[off..off + p.len()].fill(if on { 1.0 } else { 0.0 });
            }
            m
        });
        match &mut self.inner {
            Inner::Cpu(c) => c.decay = mask.unwrap_or_default(),
            Inner::Gpu(g) => g.set_decay(mask.as_deref(), &self.opt)?,
        }
        self.regularized = select;
        Ok(())
    }

    /// The names of the parameters regularised (see [`Executor::set_regularized`]).
    pub fn regularized_params(&self) -> Vec<String> {
        let g = &self.plan.graph;
        let on = self.regularized.select(g).unwrap_or_default();
        g.params()
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(p, _)| p.name.clone())
            .collect()
    }

    /// Training steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Counters (submits, dispatches, bytes moved, bytes allocated).
    pub fn counters(&self) -> Counters {
        match &self.inner {
            Inner::Cpu(c) => c.counters,
            Inner::Gpu(g) => g.counters,
        }
    }

    /// Validates a batch and returns its size.
    fn check_batch(&self, images: &[f32], targets: Option<Targets<'_>>) -> Result<usize> {
        self.check_batch_len(images.len(), targets)
    }

    /// Validates a batch of `len` input values and returns its size.
    fn check_batch_len(&self, len: usize, targets: Option<Targets<'_>>) -> Result<usize> {
        let per: usize = self.plan.input_shape.iter().product();
        if len == 0 || !len.is_multiple_of(per) {
            return Err(Error::shape(
                "batch",
                format!(
                    "{len} input values is not a whole number of samples of shape {:?}",
                    self.plan.input_shape
                ),
            ));
        }
        let n = len / per;
        if n > self.plan.batch {
            return Err(Error::invalid(
                "batch",
                format!(
                    "{n} samples, but the plan was built for at most {}",
                    self.plan.batch
                ),
            ));
        }
        match (targets, self.plan.classes) {
            (None, _) => {}
            (Some(Targets::Classes(t)), true) => {
                if t.len() != n {
                    return Err(Error::shape(
                        "targets",
                        format!("{} labels for {n} samples", t.len()),
                    ));
                }
                let k = self
                    .plan
                    .graph
                    .numel(self.plan.graph.output_node().expect("validated"));
                if let Some(bad) = t.iter().find(|&&c| c as usize >= k) {
                    return Err(Error::invalid(
                        "targets",
                        format!("class {bad} out of range for {k} outputs"),
                    ));
                }
            }
            (Some(Targets::Values(v)), false) => {
                if v.len() != n * self.plan.target_len {
                    return Err(Error::shape(
                        "targets",
                        format!(
                            "{} target values for {n} samples of {}",
                            v.len(),
                            self.plan.target_len
                        ),
                    ));
                }
            }
            (Some(_), true) => {
                return Err(Error::invalid(
                    "targets",
                    "a cross-entropy model takes Targets::Classes",
                ))
            }
            (Some(_), false) => {
                return Err(Error::invalid(
                    "targets",
                    "an MSE model takes Targets::Values",
                ))
            }
        }
        Ok(n)
    }

    fn target_words(targets: Targets<'_>) -> Vec<u32> {
        match targets {
            Targets::Classes(c) => c.to_vec(),
            Targets::Values(v) => v.iter().map(|x| x.to_bits()).collect(),
        }
    }

    /// One training step: upload the batch, forward, loss, backward, optimizer update.
    /// On the GPU this is one command encoder and one submit, with nothing read back;
    /// loss and accuracy accumulate on the device until [`Executor::take_metrics`].
    pub fn train_step(&mut self, images: &[f32], targets: Targets<'_>) -> Result<()> {
        let n = self.check_batch(images, Some(targets))?;
        self.train(n, images, None, targets, true)
    }

    /// The first half of [`Executor::train_step`]: upload the batch, forward, loss, backward
    /// (one submit on the GPU), leaving the batch-mean gradient in the flat gradient buffer
    /// for [`Executor::read_flat_gradients`] / [`Executor::write_flat_gradients`], and
    /// counting the step (the dropout masks and the update use its number). Follow it with
    /// [`Executor::apply_update`]: the pair is bitwise one `train_step`. This is how
    /// data-parallel training sums the ranks' gradients between the two.
    ///
    /// ```
    /// use wgcnn::{exec::Targets, nn, Backend, Executor, Optimizer};
    /// # fn main() -> Result<(), wgcnn::Error> {
    /// let g = nn::lenet5()?;
    /// let mut ex = Executor::new(&Backend::cpu(), &g, 2, Optimizer::sgd(0.1), 0)?;
    /// ex.forward_backward(&vec![0.5; 2 * 784], Targets::Classes(&[1, 7]))?;
    /// let g = ex.read_flat_gradients()?;          // [flat_len], padding included
    /// ex.write_flat_gradients(&g)?;               // e.g. after summing over ranks
    /// ex.apply_update()?;                         // the optimizer step
    /// assert_eq!(ex.step_count(), 1);
    /// # Ok(()) }
    /// ```
    pub fn forward_backward(&mut self, images: &[f32], targets: Targets<'_>) -> Result<()> {
        let n = self.check_batch(images, Some(targets))?;
        self.train(n, images, None, targets, false)?;
        self.update_pending = true;
        Ok(())
    }

    /// The second half of [`Executor::train_step`]: the optimizer update (clipping included)
    /// of the step counted by the last [`Executor::forward_backward`], from the flat gradient
    /// buffer as it is now. One submit on the GPU. Without a pending forward/backward it is an
    /// [`Error::InvalidArgument`].
    pub fn apply_update(&mut self) -> Result<()> {
        if !self.update_pending {
            return Err(Error::invalid(
                "apply_update",
                "no forward_backward since the last update",
            ));
        }
        let (opt, t) = (self.opt, self.step);
        match &mut self.inner {
            Inner::Cpu(c) => c.update(&opt, t),
            Inner::Gpu(g) => g.update(&opt, t)?,
        }
        self.update_pending = false;
        Ok(())
    }

    /// Elements of the flat parameter and gradient buffers: every parameter at a 256-byte
    /// aligned offset, zero padding between them (see [`Executor::read_flat_gradients`]).
    pub fn flat_len(&self) -> usize {
        self.plan.flat_len
    }

    /// Reads back the whole flat gradient buffer `[flat_len]` (one readback on the GPU): the
    /// gradients of the last backward pass, by offset; the padding reads as zero.
    pub fn read_flat_gradients(&mut self) -> Result<Vec<f32>> {
        crate::gpu::block_on(self.read_flat(Flat::Grads))
    }

    /// Overwrites the flat gradient buffer with `grads [flat_len]` (one upload on the GPU),
    /// e.g. with the mean over the ranks before [`Executor::apply_update`]. Another length is
    /// an [`Error::Shape`].
    pub fn write_flat_gradients(&mut self, grads: &[f32]) -> Result<()> {
        if grads.len() != self.plan.flat_len {
            return Err(Error::shape(
                "write_flat_gradients",
                format!(
                    "{} values, the flat gradient buffer holds {}",
                    grads.len(),
                    self.plan.flat_len
                ),
            ));
        }
        match &mut self.inner {
            Inner::Cpu(c) => c.write_grads(grads),
            Inner::Gpu(g) => g.write_grads(grads),
        }
        Ok(())
    }

    /// Reads back the flat buffer of the non-learnable state, the batch norm running
    /// statistics (`[plan().buffers_len()]`, by offset; [`Executor::buffers`] gives them by
    /// name). Empty for a model without any. Data-parallel training broadcasts it from rank 0.
    pub fn read_flat_buffers(&mut self) -> Result<Vec<f32>> {
        if self.plan.buffers_len() == 0 {
            return Ok(Vec::new());
        }
        crate::gpu::block_on(self.read_flat(Flat::Buffers))
    }

    /// Overwrites the flat buffer of the running statistics with `buffers`
    /// (`[plan().buffers_len()]`, as [`Executor::read_flat_buffers`] returns it; one upload on
    /// the GPU). Another length is an [`Error::Shape`].
    pub fn write_flat_buffers(&mut self, buffers: &[f32]) -> Result<()> {
        let len = self.plan.buffers_len();
        if buffers.len() != len {
            return Err(Error::shape(
                "write_flat_buffers",
                format!(
                    "{} values, the flat buffer of running statistics holds {len}",
                    buffers.len()
                ),
            ));
        }
        if len > 0 {
            match &mut self.inner {
                Inner::Cpu(c) => c.load_buffers(buffers.to_vec()),
                Inner::Gpu(g) => g.load_buffers(buffers),
            }
        }
        Ok(())
    }

    /// Waits until the device has finished the work submitted so far (a no-op on the CPU),
    /// for timing a step's parts.
    pub fn synchronize(&mut self) -> Result<()> {
        match &mut self.inner {
            Inner::Cpu(_) => Ok(()),
            Inner::Gpu(g) => g.synchronize(),
        }
    }

    /// A training step on `n` samples: `images`, or the byte batch `raw` when given.
    fn train(
        &mut self,
        n: usize,
        images: &[f32],
        raw: Option<RawInput<'_>>,
        targets: Targets<'_>,
        update: bool,
    ) -> Result<()> {
        if self.update_pending {
            return Err(Error::invalid(
                "train_step",
                "a forward_backward awaits its apply_update",
            ));
        }
        // batch statistics of a single value per channel are meaningless (PyTorch refuses too)
        let g = &self.plan.graph;
        if let Some(bn) = g.nodes().iter().find(|nd| match nd.op {
            crate::graph::Op::BatchNorm { x, .. } => {
                n * g.node(x).shape[1..].iter().product::<usize>() < 2
            }
            _ => false,
        }) {
            return Err(Error::invalid(
                &bn.name,
                "batch norm needs more than 1 value per channel when training (a batch of 1: drop a partial last batch with Loader::drop_last)",
            ));
        }
        let t = Self::target_words(targets);
        self.step += 1;
        let (opt, step) = (self.opt, self.step);
        let b = Batch {
            n,
            mode: Mode::Train,
            images,
            raw,
            targets: &t,
            opt: Some((&opt, step)),
            skip_loss: false,
            update,
        };
        let r = self.run(&b);
        if r.is_err() {
            self.step -= 1;
        }
        r
    }

    /// Forward pass and loss on a batch, accumulating the evaluation metrics.
    pub fn eval_batch(&mut self, images: &[f32], targets: Targets<'_>) -> Result<()> {
        let n = self.check_batch(images, Some(targets))?;
        let t = Self::target_words(targets);
        self.run(&Batch {
            n,
            mode: Mode::Eval,
            images,
            raw: None,
            targets: &t,
            opt: None,
            skip_loss: false,
            update: false,
        })
    }

    /// Forward pass only; returns the model output `[n, out]` (logits for cross-entropy, or
    /// probabilities when the model ends in a [`crate::nn::Softmax`]).
    pub fn predict(&mut self, images: &[f32]) -> Result<ndarray::Array2<f32>> {
        crate::gpu::block_on(self.predict_async(images))
    }

    /// [`Executor::predict`], resolving when the output has been read back (the form to use
    /// in the browser, where nothing may block).
    pub async fn predict_async(&mut self, images: &[f32]) -> Result<ndarray::Array2<f32>> {
        let n = self.check_batch(images, None)?;
        let zeros = vec![0u32; n * self.plan.target_len];
        self.run(&Batch {
            n,
            mode: Mode::Eval,
            images,
            raw: None,
            targets: &zeros,
            opt: None,
            skip_loss: true,
            update: false,
        })?;
        self.output_async(n).await
    }

    fn run(&mut self, b: &Batch) -> Result<()> {
        match &mut self.inner {
            // the CPU path runs the augmentation's twin into an f32 batch
            Inner::Cpu(c) => match &b.raw {
                Some(r) => {
                    let x = r.twin();
                    let fb = Batch {
                        images: &x,
                        raw: None,
                        ..*b
                    };
                    c.run(&self.plan, &fb)
                }
                None => c.run(&self.plan, b),
            },
            Inner::Gpu(g) => g.run(&self.plan, b),
        }
    }

    /// Intermediate activations ("feature maps"): one forward pass on `images` (as
    /// [`Executor::predict`]) that reads back the outputs of the nodes named in `nodes`, each
    /// right after the step that computes it (so buffer reuse later in the pass cannot
    /// overwrite it); on the GPU only those tensors are read back, in the same submit. Returns
    /// `(name, [n, per-sample shape…], values)` per node, in the order asked.
    ///
    /// ```no_run
    /// # use wgcnn::{exec::Executor, nn, Backend, Optimizer};
    /// # fn main() -> Result<(), wgcnn::Error> {
    /// let mut ex = Executor::new(&Backend::gpu()?, &nn::lenet5()?, 8, Optimizer::sgd(0.1), 0)?;
    /// let maps = ex.activations(&vec![0.5; 8 * 784], &["c1", "s2"])?;
    /// assert_eq!(maps[0].1, vec![8, 6, 28, 28]);
    /// # Ok(()) }
    /// ```
    pub fn activations(&mut self, images: &[f32], nodes: &[&str]) -> Result<Vec<NamedTensor>> {
        let n = self.check_batch(images, None)?;
        let g = &self.plan.graph;
        let mut taps = Vec::with_capacity(nodes.len());
        for &name in nodes {
            let id = (0..g.nodes().len())
                .find(|&i| g.node(i).name == name)
                .ok_or_else(|| Error::invalid("activations", format!("no node named '{name}'")))?;
            let t = self.plan.node_outputs[id].ok_or_else(|| {
                Error::invalid(
                    "activations",
                    format!("'{name}' has no output to read (the loss)"),
                )
            })?;
            // the last forward step writing it; none for the input
            let at = self
                .plan
                .eval_steps
                .iter()
                .rposition(|s| !s.loss && s.io().1.contains(&t));
            let mut shape = vec![n];
            shape.extend_from_slice(&g.node(id).shape);
            taps.push((name.to_string(), shape, at, t));
        }
        let spec: Vec<(Option<usize>, usize)> = taps.iter().map(|t| (t.2, t.3)).collect();
        let values = match &mut self.inner {
            Inner::Cpu(c) => c.run_taps(&self.plan, n, images, &spec)?,
            Inner::Gpu(gx) => gx.run_taps(&self.plan, n, images, &spec)?,
        };
        Ok(taps
            .into_iter()
            .zip(values)
            .map(|((name, shape, ..), v)| (name, shape, v))
            .collect())
    }

    /// The model output `[n, out]` of the last forward pass on `n` samples
    /// (`1 ≤ n ≤` the plan's batch size).
    pub fn output(&mut self, n: usize) -> Result<ndarray::Array2<f32>> {
        crate::gpu::block_on(self.output_async(n))
    }

    /// [`Executor::output`], resolving when it has been read back.
    pub async fn output_async(&mut self, n: usize) -> Result<ndarray::Array2<f32>> {
        if n == 0 || n > self.plan.batch {
            return Err(Error::invalid(
                "output",
                format!(
                    "{n} samples; this executor's plan holds 1..={}",
                    self.plan.batch
                ),
            ));
        }
        let out = self
            .plan
            .graph
            .numel(self.plan.graph.output_node().expect("validated"));
        let t = self.plan.output;
        let v = match &mut self.inner {
            Inner::Cpu(c) => c.read(&self.plan, t, n),
            Inner::Gpu(g) => g.read(&self.plan, t, n).await?,
        };
        ndarray::Array2::from_shape_vec((n, out), v[..n * out].to_vec())
            .map_err(|e| Error::shape("output", e.to_string()))
    }

    /// The loss scaler's state (one 16-byte readback on the GPU); `None` for an f32 plan.
    pub fn loss_scale(&mut self) -> Result<Option<LossScaleState>> {
        let Some(t) = self.plan.scaler else {
            return Ok(None);
        };
        let v = match &mut self.inner {
            Inner::Cpu(c) => c.read(&self.plan, t, 1),
            Inner::Gpu(g) => crate::gpu::block_on(g.read(&self.plan, t, 1))?,
        };
        Ok(Some(LossScaleState {
            scale: v[0],
            good_steps: v[1] as u32,
            skipped_steps: v[2] as u64,
        }))
    }

    /// Restores the loss scaler of a mixed-precision executor (e.g. from a checkpoint: see
    /// [`crate::train::load_checkpoint`]); an f32 executor, or a scale that is not finite and
    /// positive, is an [`Error::InvalidArgument`].
    pub fn set_loss_scale(&mut self, s: LossScaleState) -> Result<()> {
        if self.plan.scaler.is_none() {
            return Err(Error::invalid(
                "set_loss_scale",
                "this executor trains in f32: it has no loss scale",
            ));
        }
        if !(s.scale.is_finite() && s.scale > 0.0) {
            return Err(Error::invalid(
                "set_loss_scale",
                format!("scale {} must be finite and positive", s.scale),
            ));
        }
        let v = [s.scale, s.good_steps as f32, s.skipped_steps as f32, 0.0];
        match &mut self.inner {
            Inner::Cpu(c) => c.load_scaler(&v),
            Inner::Gpu(g) => g.load_scaler(&v),
        }
        Ok(())
    }

    /// Reads back and resets the metrics of `mode` (one 16-byte readback on the GPU).
    /// A non-finite loss is an [`Error::NonFinite`] naming the step.
    pub fn take_metrics(&mut self, mode: Mode) -> Result<Metrics> {
        crate::gpu::block_on(self.take_metrics_async(mode))
    }

    /// [`Executor::take_metrics`], resolving when the metrics have been read back.
    pub async fn take_metrics_async(&mut self, mode: Mode) -> Result<Metrics> {
        let raw = match &mut self.inner {
            Inner::Cpu(c) => c.take_metrics(mode),
            Inner::Gpu(g) => g.take_metrics(mode).await?,
        };
        let m = Metrics::from_raw(raw);
        if m.non_finite {
            return Err(Error::NonFinite { step: self.step });
        }
        Ok(m)
    }

    async fn read_flat(&mut self, which: Flat) -> Result<Vec<f32>> {
        match &mut self.inner {
            Inner::Cpu(c) => Ok(c.flat(which).to_vec()),
            Inner::Gpu(g) => g.read_flat(which).await,
        }
    }

    fn named(&self, flat: &[f32], grads: bool) -> Vec<NamedTensor> {
        self.plan
            .graph
            .params()
            .iter()
            .zip(&self.plan.param_tensors)
            .map(|(p, &(pt, gt))| {
                let off = offset_of(&self.plan, if grads { gt } else { pt });
                (
                    p.name.clone(),
                    p.shape.clone(),
                    flat[off..off + p.len()].to_vec(),
                )
            })
            .collect()
    }

    /// Every non-learnable state tensor (batch norm `running_mean` / `running_var`), by
    /// PyTorch name, read back from the device. Empty for models without batch norm.
    pub fn buffers(&mut self) -> Result<Vec<NamedTensor>> {
        crate::gpu::block_on(self.buffers_async())
    }

    /// [`Executor::buffers`], resolving when they have been read back.
    pub async fn buffers_async(&mut self) -> Result<Vec<NamedTensor>> {
        let list = self.plan.buffer_tensors();
        if list.is_empty() {
            return Ok(Vec::new());
        }
        let flat = self.read_flat(Flat::Buffers).await?;
        Ok(list
            .into_iter()
            .map(|(t, _)| {
                let ts = &self.plan.tensors[t];
                let o = offset_of(&self.plan, t);
                (
                    ts.name.clone(),
                    vec![ts.per_sample],
                    flat[o..o + ts.per_sample].to_vec(),
                )
            })
            .collect())
    }

    /// Every parameter, by PyTorch-style name, in PyTorch layout.
    pub fn parameters(&mut self) -> Result<Vec<NamedTensor>> {
        crate::gpu::block_on(self.parameters_async())
    }

    /// [`Executor::parameters`], resolving when they have been read back.
    pub async fn parameters_async(&mut self) -> Result<Vec<NamedTensor>> {
        let flat = self.read_flat(Flat::Params).await?;
        Ok(self.named(&flat, false))
    }

    /// The gradients of the last training step, by parameter name.
    pub fn gradients(&mut self) -> Result<Vec<NamedTensor>> {
        crate::gpu::block_on(self.gradients_async())
    }

    /// [`Executor::gradients`], resolving when they have been read back.
    pub async fn gradients_async(&mut self) -> Result<Vec<NamedTensor>> {
        let flat = self.read_flat(Flat::Grads).await?;
        Ok(self.named(&flat, true))
    }

    /// Optimizer state tensors, named `<param>.state1` / `<param>.state2`.
    pub fn optimizer_state(&mut self) -> Result<Vec<NamedTensor>> {
        crate::gpu::block_on(self.optimizer_state_async())
    }

    /// [`Executor::optimizer_state`], resolving when it has been read back.
    pub async fn optimizer_state_async(&mut self) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        for (slot, which) in [(1, Flat::State1), (2, Flat::State2)] {
            if self.opt.kind.state_slots() < slot {
                continue;
            }
            let flat = self.read_flat(which).await?;
            for (name, shape, v) in self.named(&flat, false) {
                out.push((format!("{name}.state{slot}"), shape, v));
            }
        }
        Ok(out)
    }

    /// Restores parameters (and optionally optimizer state and the step counter), e.g.
    /// from a checkpoint. Every parameter must be given with its exact shape.
    pub fn load_state(
        &mut self,
        params: &[NamedTensor],
        opt_state: &[NamedTensor],
        step: u64,
    ) -> Result<()> {
        let mut flats = [
            vec![0.0f32; self.plan.flat_len],
            vec![0.0f32; self.plan.flat_len],
            vec![0.0f32; self.plan.flat_len],
        ];
        let find = |list: &[NamedTensor], name: &str| -> Option<(Vec<usize>, Vec<f32>)> {
            list.iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, s, v)| (s.clone(), v.clone()))
        };
        let slots = self.opt.kind.state_slots();
        for (p, &(pt, _)) in self
            .plan
            .graph
            .params()
            .iter()
            .zip(&self.plan.param_tensors)
        {
            let off = offset_of(&self.plan, pt);
            let mut names = vec![(0usize, p.name.clone(), params)];
            for s in 1..=slots {
                names.push((s, format!("{}.state{s}", p.name), opt_state));
            }
            for (k, name, list) in names {
                if k > 0 && opt_state.is_empty() {
                    continue;
                }
                let (shape, v) = find(list, &name).ok_or_else(|| {
                    Error::shape("load_state", format!("missing tensor '{name}'"))
                })?;
                if shape != p.shape || v.len() != p.len() {
                    return Err(Error::shape(
                        "load_state",
                        format!(
                            "'{name}' has shape {shape:?}, the model expects {:?}",
                            p.shape
                        ),
                    ));
                }
                flats[k][off..off + p.len()].copy_from_slice(&v);
            }
        }
        // running statistics, when the model has any: from `params` (a state dict)
        let list = self.plan.buffer_tensors();
        let mut bufs = init_buffers(&self.plan);
        for &(t, _) in &list {
            let ts = &self.plan.tensors[t];
            let (shape, v) = find(params, &ts.name).ok_or_else(|| {
                Error::shape("load_state", format!("missing tensor '{}'", ts.name))
            })?;
            if v.len() != ts.per_sample || shape.iter().product::<usize>() != ts.per_sample {
                return Err(Error::shape(
                    "load_state",
                    format!(
                        "'{}' has shape {shape:?}, the model expects [{}]",
                        ts.name, ts.per_sample
                    ),
                ));
            }
            let o = offset_of(&self.plan, t);
            bufs[o..o + v.len()].copy_from_slice(&v);
        }
        if !list.is_empty() {
            match &mut self.inner {
                Inner::Cpu(c) => c.load_buffers(bufs),
                Inner::Gpu(g) => g.load_buffers(&bufs),
            }
        }
        let [pf, s1, s2] = flats;
        match &mut self.inner {
            Inner::Cpu(c) => c.load(pf, s1, s2),
            Inner::Gpu(g) => g.load(&pf, &s1, &s2)?,
        }
        self.step = step;
        Ok(())
    }

    /// Re-runs every GPU dispatch of a step on its CPU twin and compares (as the environment
    /// variable `WGCNN_VALIDATE=1` does from the start): a disagreement beyond the launch's
    /// tolerance fails the step with [`Error::Shader`] naming the kernel, the graph node
    /// and the step. Slow (one submit and two readbacks per dispatch); no effect on the CPU.
    pub fn set_validate(&mut self, on: bool) {
        if let Inner::Gpu(g) = &mut self.inner {
            g.validate = on;
        }
    }

    /// The training schedule for a batch of `n` (for inspection).
    pub fn steps(&self, n: usize) -> Result<Vec<Step>> {
        self.plan.steps(n, Mode::Train)
    }
}

/// One run of a schedule: the batch and what to do with it.
#[derive(Clone, Copy)]
pub(crate) struct Batch<'a> {
    pub n: usize,
    pub mode: Mode,
    /// The input values (empty when `raw` is given).
    pub images: &'a [f32],
    /// A byte batch for the device-side input pipeline instead of `images`.
    pub raw: Option<RawInput<'a>>,
    /// Class indices, or f32 bit patterns.
    pub targets: &'a [u32],
    /// The optimizer and the step number, when training.
    pub opt: Option<(&'a Optimizer, u64)>,
    /// Prediction: the loss steps are skipped (the metrics untouched).
    pub skip_loss: bool,
    /// Training: run the optimizer update after the backward pass (false: leave the
    /// gradients in their flat buffer, [`Executor::forward_backward`]).
    pub update: bool,
}

/// The flat buffers an executor keeps resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flat {
    Params,
    Grads,
    State1,
    State2,
    Buffers,
}
