//! The GPU executor: every buffer, bind group and pipeline is created when the plan is
//! built (and once more for a smaller last batch); a training step is one command
//! encoder and one submit; only metrics (16 bytes) are read back, and only when asked.

use std::collections::HashMap;
use std::sync::Arc;

use super::input::RawInput;
use super::{Batch, Counters, Flat};
use crate::error::{Error, Result};
use crate::gpu::buffers::{bytes_of_len, to_f32, Dispatch, Slice};
use crate::gpu::GpuContext;
use crate::ops::augment::{pack_bytes, Augmentation};
use crate::ops::optim::{GradNormScale, OptimizerStep, OptimizerStepMasked};
use crate::ops::precision::{AmpUnscale, AmpUpdate};
use crate::ops::{compare_within, Access, Launch};
use crate::optim::Optimizer;
use crate::plan::{Home, Mode, Plan, Step, TensorId};

/// Writable stand-in slots: at least the most storage bindings of any kernel (7; the
/// browser allows 10, see `tests/web_limits.rs`).
const MAX_BINDINGS: usize = 10;

/// Dispatches of one schedule, with the uniform buffers they own.
struct Program {
    dispatches: Vec<Dispatch>,
    /// The steps they run (which compute the loss, which node, for validation).
    steps: Vec<Step>,
    _uniforms: Vec<Arc<wgpu::Buffer>>,
}

/// `amp_unscale` and `amp_update` over the executor's buffers, with their uniforms.
struct AmpDispatches {
    unscale: Dispatch,
    update: Dispatch,
    _uniforms: [Arc<wgpu::Buffer>; 2],
}

pub(crate) struct GpuExec {
    ctx: Arc<GpuContext>,
    params: Arc<wgpu::Buffer>,
    grads: Arc<wgpu::Buffer>,
    /// Non-learnable state (batch norm running statistics), `Home::Buffer`; the optimizer
    /// dispatch never binds it.
    buffers: Arc<wgpu::Buffer>,
    buffers_len: usize,
    s1: Arc<wgpu::Buffer>,
    s2: Arc<wgpu::Buffer>,
    arena: Vec<Arc<wgpu::Buffer>>,
    input: Arc<wgpu::Buffer>,
    targets: Arc<wgpu::Buffer>,
    metrics: [Arc<wgpu::Buffer>; 2],
    /// Stand-ins for unused bindings: 4 read-only bytes, and a writable 4 bytes per binding
    /// slot at `dummy_stride` apart (one buffer can't be both within a dispatch, and WebGPU
    /// forbids two writable bindings of one range).
    dummy: [Arc<wgpu::Buffer>; 2],
    dummy_stride: u64,
    opt_uniform: Arc<wgpu::Buffer>,
    opt_dispatch: Dispatch,
    /// The optimizer kind `opt_dispatch`'s pipeline is specialised for (`KIND`).
    opt_kind: crate::optim::OptimizerKind,
    /// Per-element decay multipliers bound by `opt_dispatch` (`None`: regularise everything,
    /// the dummy is bound).
    decay: Option<Arc<wgpu::Buffer>>,
    /// (Gradient factor, skip flag, skipped steps): the factor written by `grad_norm_scale`,
    /// the flag by `amp_unscale`, the count by `amp_update`; all read by `optimizer_step`.
    grad_scale: Arc<wgpu::Buffer>,
    /// The loss scaler's state (`Home::Scaler`; 16 unused bytes in an f32 plan).
    scaler: Arc<wgpu::Buffer>,
    /// Mixed precision's update dispatches (unscale before clipping, scaler update after
    /// the optimizer).
    amp: Option<AmpDispatches>,
    /// Uniform and dispatch of `grad_norm_scale` (run only when clipping is on).
    clip_uniform: Arc<wgpu::Buffer>,
    clip_dispatch: Dispatch,
    /// The training step (one u32) read by the dropout kernels; written with the batch,
    /// only for plans that have dropout.
    step_buf: Arc<wgpu::Buffer>,
    has_dropout: bool,
    programs: HashMap<(usize, Mode), Program>,
    /// Re-run every dispatch of a step on the CPU twin and compare (`WGCNN_VALIDATE=1`).
    pub validate: bool,
    flat_len: usize,
    /// The input pipeline's buffers and dispatches, made at the first byte batch.
    raw: Option<RawBuffers>,
    pub counters: Counters,
}

/// The device side of the input pipeline: packed bytes `[batch·C·H·W / 4]`, dataset indices
/// `[batch]`, the lookup table `[C·256]` (and what it holds), and an `augment` dispatch
/// writing the input buffer per (batch size, augmentation).
struct RawBuffers {
    bytes: Arc<wgpu::Buffer>,
    samples: Arc<wgpu::Buffer>,
    lut: Arc<wgpu::Buffer>,
    lut_values: Vec<f32>,
    dispatches: HashMap<(usize, Augmentation), (Dispatch, Arc<wgpu::Buffer>)>,
}

impl GpuExec {
    pub fn new(
        ctx: Arc<GpuContext>,
        plan: &Plan,
        params: &[f32],
        optimizer: &Optimizer,
    ) -> Result<Self> {
        let flat_bytes = bytes_of_len(plan.flat_len);
        Self::check_limits(&ctx, plan)?;
        let in_bytes = bytes_of_len(plan.tensors[plan.input].len(plan.batch));
        ctx.check_binding("plan", "input batch", in_bytes)?;
        let t_bytes = bytes_of_len(plan.tensors[plan.targets].len(plan.batch));
        let mut allocated = 0u64;
        let dummy_stride = ctx.limits().min_storage_buffer_offset_alignment.max(4) as u64;
        let exec_parts = ctx.scoped("allocating the plan", || {
            let mut zeros = |label: &str, bytes: u64| {
                allocated += bytes.max(4).next_multiple_of(4);
                ctx.zeros(label, bytes)
            };
            let p = zeros("params", flat_bytes);
            let g = zeros("grads", flat_bytes);
            let s1 = zeros("state1", flat_bytes);
            let s2 = zeros("state2", flat_bytes);
            let arena: Vec<_> = plan
                .arena
                .iter()
                .map(|&l| zeros("activations", bytes_of_len(l)))
                .collect();
            let input = zeros("input", in_bytes);
            let targets = zeros("targets", t_bytes);
            let metrics = [zeros("metrics.train", 16), zeros("metrics.eval", 16)];
            let dummy = [
                zeros("dummy.read", 4),
                zeros("dummy.write", dummy_stride * MAX_BINDINGS as u64),
            ];
            (p, g, s1, s2, arena, input, targets, metrics, dummy)
        })?;
        let (p, g, s1, s2, arena, input, targets, metrics, dummy) = exec_parts;
        ctx.queue.write_buffer(&p, 0, bytemuck::cast_slice(params));
        let buffers_len = plan.buffers_len();
        ctx.check_binding("plan", "buffers", bytes_of_len(buffers_len))?;
        let buffers = ctx.zeros("buffers", bytes_of_len(buffers_len));
        ctx.queue.write_buffer(
            &buffers,
            0,
            bytemuck::cast_slice(&super::init_buffers(plan)),
        );
        allocated += bytes_of_len(buffers_len);
        // (gradient factor, skip flag, skipped steps): the factor is 1 unless clipping by
        // global norm rewrites it each step; mixed precision's overflow sets the flag for one
        // step and counts it
        let grad_scale = ctx.upload("grad_scale", &[1.0f32, 0.0, 0.0]);
        let scaler = ctx.upload("loss_scaler", &super::init_scaler(plan));
        allocated += 12 + 16;
        let amp = match plan.precision.scaler() {
            Some(scaler_cfg) => {
                let unscale = AmpUnscale { len: plan.flat_len };
                let sl = [&scaler, &g, &grad_scale].map(|b| Slice::whole(b.clone()));
                let (ud, uu) = ctx.record_launch(&unscale, &sl)?;
                let update = AmpUpdate { scaler: scaler_cfg };
                let sl = [&grad_scale, &scaler].map(|b| Slice::whole(b.clone()));
                let (pd, pu) = ctx.record_launch(&update, &sl)?;
                allocated += uu.size() + pu.size();
                Some(AmpDispatches {
                    unscale: ud,
                    update: pd,
                    _uniforms: [uu, pu],
                })
            }
            None => None,
        };
        let clip = GradNormScale {
            len: plan.flat_len,
            max_norm: 0.0,
        };
        let slices = [Slice::whole(g.clone()), Slice::whole(grad_scale.clone())];
        let (clip_dispatch, clip_uniform) = ctx.record_launch(&clip, &slices)?;
        allocated += clip_uniform.size();
        let opt = OptimizerStep {
            opt: *optimizer,
            t: 1,
            len: plan.flat_len,
        };
        let bufs = [&g, &grad_scale, &dummy[0], &p, &s1, &s2, &metrics[0]];
        let (d, u) = Self::record_opt(&ctx, &opt, None, bufs)?;
        allocated += u.size();
        let ctx_step = ctx.zeros("dropout.step", 4);
        allocated += 4;
        let mut ex = GpuExec {
            ctx,
            params: p,
            grads: g,
            buffers,
            buffers_len,
            s1,
            s2,
            arena,
            input,
            targets,
            metrics,
            dummy,
            dummy_stride,
            opt_uniform: u,
            opt_dispatch: d,
            opt_kind: optimizer.kind,
            decay: None,
            grad_scale,
            scaler,
            amp,
            clip_uniform,
            clip_dispatch,
            step_buf: ctx_step,
            has_dropout: plan
                .graph
                .nodes()
                .iter()
                .any(|n| matches!(n.op, crate::graph::Op::Dropout { .. })),
            programs: HashMap::new(),
            validate: std::env::var("WGCNN_VALIDATE").is_ok_and(|v| v == "1"),
            flat_len: plan.flat_len,
            raw: None,
            counters: Counters::default(),
        };
        ex.counters.bytes_uploaded += flat_bytes;
        ex.counters.gpu_bytes_allocated = allocated;
        // The full-batch programs are built now, so no pipeline is compiled during training.
        ex.program(plan, plan.batch, Mode::Train)?;
        ex.program(plan, plan.batch, Mode::Eval)?;
        Ok(ex)
    }

    /// Checks every buffer of `plan` against the device's binding limits before anything is
    /// allocated, naming the graph tensor that does not fit (and how many samples would).
    fn check_limits(ctx: &GpuContext, plan: &Plan) -> Result<()> {
        ctx.check_binding("plan", "parameters", bytes_of_len(plan.flat_len))?;
        // name the graph tensor that doesn't fit, then check the pooled buffers
        // (rounded up to the alignment, they can exceed the limit when no tensor does)
        let lim = ctx
            .limits()
            .max_storage_buffer_binding_size
            .min(ctx.limits().max_buffer_size);
        let widest = plan
            .tensors
            .iter()
            .filter(|t| t.batched)
            .map(|t| (t.per_sample.next_multiple_of(crate::plan::ALIGN) * 4) as u64)
            .max()
            .unwrap_or(1);
        let fits = lim / widest.max(1);
        let op = format!(
            "plan for batch {} (at most {fits} samples per batch fit this device)",
            plan.batch
        );
        for t in &plan.tensors {
            if matches!(t.home, crate::plan::Home::Arena(_)) {
                ctx.check_binding(&op, &t.name, bytes_of_len(t.len(plan.batch)))?;
            }
        }
        for (i, &len) in plan.arena.iter().enumerate() {
            ctx.check_binding(
                "plan",
                &format!("activation buffer #{i}"),
                bytes_of_len(len),
            )?;
        }
        Ok(())
    }

    /// Records `optimizer_step` (its pipeline specialised for the optimizer's kind) over the
    /// gradients, gradient scale, decay multipliers (`decay`; else a dummy), parameters, two
    /// state buffers and training metrics.
    fn record_opt<'a>(
        ctx: &GpuContext,
        step: &OptimizerStep,
        decay: Option<&'a Arc<wgpu::Buffer>>,
        mut bufs: [&'a Arc<wgpu::Buffer>; 7],
    ) -> Result<(Dispatch, Arc<wgpu::Buffer>)> {
        let masked = OptimizerStepMasked(*step);
        let launch: &dyn Launch = match decay {
            Some(d) => {
                bufs[2] = d;
                &masked
            }
            None => step,
        };
        let slices = bufs.map(|b| Slice::whole(b.clone()));
        ctx.record_launch(launch, &slices)
    }

    /// The buffers `optimizer_step` binds (the decay slot holds the dummy).
    fn opt_buffers(&self) -> [&Arc<wgpu::Buffer>; 7] {
        [
            &self.grads,
            &self.grad_scale,
            &self.dummy[0],
            &self.params,
            &self.s1,
            &self.s2,
            &self.metrics[0],
        ]
    }

    /// Binds per-element decay multipliers `decay [flat_len]` to the update (`None`: none,
    /// everything is regularised) for optimizer `o`; re-records its dispatch.
    pub fn set_decay(&mut self, decay: Option<&[f32]>, o: &Optimizer) -> Result<()> {
        if let Some(old) = self.decay.take() {
            self.counters.gpu_bytes_allocated -= old.size();
        }
        self.decay = match decay {
            Some(v) => {
                let b = self.ctx.upload("decay", v);
                self.counters.bytes_uploaded += bytes_of_len(v.len());
                self.counters.gpu_bytes_allocated += b.size();
                Some(b)
            }
            None => None,
        };
        let step = OptimizerStep {
            opt: *o,
            t: 1,
            len: self.flat_len,
        };
        let (d, u) = Self::record_opt(&self.ctx, &step, self.decay.as_ref(), self.opt_buffers())?;
        (self.opt_dispatch, self.opt_uniform, self.opt_kind) = (d, u, o.kind);
        Ok(())
    }

    fn slice(&self, plan: &Plan, t: TensorId, n: usize) -> Slice {
        let ts = &plan.tensors[t];
        let bytes = bytes_of_len(ts.len(n));
        let (buffer, offset) = match ts.home {
            Home::Param(o) => (self.params.clone(), o as u64 * 4),
            Home::Grad(o) => (self.grads.clone(), o as u64 * 4),
            Home::Buffer(o) => (self.buffers.clone(), o as u64 * 4),
            Home::Arena(b) => (self.arena[b].clone(), 0),
            Home::Input => (self.input.clone(), 0),
            Home::Targets => (self.targets.clone(), 0),
            Home::Metrics(k) => (self.metrics[k].clone(), 0),
            Home::Counter => (self.step_buf.clone(), 0),
            Home::Scaler => (self.scaler.clone(), 0),
        };
        Slice {
            buffer,
            offset,
            bytes,
        }
    }

    /// Stand-in for an unused read-only binding.
    fn dummy(&self) -> Slice {
        Slice::whole(self.dummy[0].clone())
    }

    /// Stand-in for unused writable binding `k` (its own 4 bytes).
    fn dummy_out(&self, k: usize) -> Slice {
        Slice {
            buffer: self.dummy[1].clone(),
            offset: k as u64 * self.dummy_stride,
            bytes: 4,
        }
    }

    /// Builds (once) the dispatches of the schedule for batch `n` in `mode`.
    fn program(&mut self, plan: &Plan, n: usize, mode: Mode) -> Result<&Program> {
        if !self.programs.contains_key(&(n, mode)) {
            let steps = plan.steps(n, mode)?;
            let mut dispatches = Vec::with_capacity(steps.len());
            let mut uniforms = Vec::with_capacity(steps.len());
            for s in &steps {
                let slices = self.slices(plan, n, s);
                let (d, u) = self.ctx.record_launch(s.launch.as_ref(), &slices)?;
                self.counters.gpu_bytes_allocated += u.size();
                dispatches.push(d);
                uniforms.push(u);
            }
            self.programs.insert(
                (n, mode),
                Program {
                    dispatches,
                    steps,
                    _uniforms: uniforms,
                },
            );
        }
        Ok(&self.programs[&(n, mode)])
    }

    /// The slices step `s` binds at batch `n`: its tensors, and stand-ins for its unused
    /// optional bindings.
    fn slices(&self, plan: &Plan, n: usize, s: &Step) -> Vec<Slice> {
        let bindings = s.launch.bindings();
        bindings
            .iter()
            .zip(&s.args)
            .enumerate()
            .map(|(k, (b, a))| match a {
                Some(t) => self.slice(plan, *t, n),
                None if b.access == Access::Read => self.dummy(),
                None => self.dummy_out(k),
            })
            .collect()
    }

    fn upload(&mut self, buf: &wgpu::Buffer, bytes: &[u8]) {
        self.ctx.queue.write_buffer(buf, 0, bytes);
        self.counters.bytes_uploaded += bytes.len() as u64;
    }

    /// Runs the schedule of `b.mode` on the batch (and the optimizer update when training).
    pub fn run(&mut self, plan: &Plan, b: &Batch) -> Result<()> {
        let (n, mode, opt, skip_loss) = (b.n, b.mode, b.opt, b.skip_loss);
        self.ctx.check_lost()?;
        self.program(plan, n, mode)?;
        let (input, tbuf) = (self.input.clone(), self.targets.clone());
        let aug_key = match &b.raw {
            Some(r) => Some(self.prepare_raw(plan, r)?),
            None => {
                self.upload(&input, bytemuck::cast_slice(b.images));
                None
            }
        };
        self.upload(&tbuf, bytemuck::cast_slice(b.targets));
        if let Some((o, t)) = opt {
            self.prepare_update(o, t)?;
        }
        if self.validate {
            if let Some(k) = aug_key {
                self.submit_alone(k)?;
            }
            self.run_validated(plan, n, mode, skip_loss)?;
        }
        // the augmentation writes the input buffer first (already done when validating)
        let aug_d = aug_key
            .filter(|_| !self.validate)
            .and_then(|k| self.raw.as_ref().map(|r| &r.dispatches[&k].0));
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        let prog = &self.programs[&(n, mode)];
        let opt = opt.filter(|_| b.update);
        let clip_d = opt
            .filter(|(o, _)| o.clip_grad_norm > 0.0)
            .map(|_| &self.clip_dispatch);
        let opt_d = opt.map(|_| &self.opt_dispatch);
        let unscale_d = opt.and(self.amp.as_ref()).map(|a| &a.unscale);
        let amp_update_d = opt.and(self.amp.as_ref()).map(|a| &a.update);
        // validated steps already ran one by one; the update follows them
        let schedule = prog
            .dispatches
            .iter()
            .zip(&prog.steps)
            .filter(|(_, s)| !(self.validate || skip_loss && s.loss))
            .map(|(d, _)| d);
        self.ctx.encode(
            &mut encoder,
            aug_d
                .into_iter()
                .chain(schedule)
                .chain(unscale_d)
                .chain(clip_d)
                .chain(opt_d)
                .chain(amp_update_d),
        );
        let dispatches = prog.dispatches.len() as u64
            + aug_key.is_some() as u64
            + opt.map_or(0, |(o, _)| {
                1 + (o.clip_grad_norm > 0.0) as u64 + 2 * self.amp.is_some() as u64
            });
        self.ctx.scoped("submitting a step", || {
            self.ctx.queue.submit(Some(encoder.finish()))
        })?;
        self.counters.submits += 1;
        if opt.is_some() {
            self.counters.steps += 1;
            self.counters.dispatches_per_step = dispatches;
            self.counters.submits_last_step = 1;
        }
        Ok(())
    }

    /// The optimizer update of step `t` (clipping first, if on) from the gradients as they
    /// are: one submit.
    pub fn update(&mut self, o: &Optimizer, t: u64) -> Result<()> {
        self.ctx.check_lost()?;
        self.prepare_update(o, t)?;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        let clip_d = (o.clip_grad_norm > 0.0).then_some(&self.clip_dispatch);
        let amp = self.amp.as_ref();
        let ds = amp.map(|a| &a.unscale).into_iter().chain(clip_d);
        let ds = ds.chain([&self.opt_dispatch]).chain(amp.map(|a| &a.update));
        self.ctx.encode(&mut encoder, ds);
        self.ctx.scoped("submitting an update", || {
            self.ctx.queue.submit(Some(encoder.finish()))
        })?;
        self.counters.submits += 1;
        self.counters.steps += 1;
        self.counters.dispatches_per_step =
            1 + clip_d.is_some() as u64 + 2 * self.amp.is_some() as u64;
        self.counters.submits_last_step = 1;
        Ok(())
    }

    pub fn write_grads(&mut self, g: &[f32]) {
        let buf = self.grads.clone();
        self.upload(&buf, bytemuck::cast_slice(g));
    }

    /// Waits for the submitted work to finish.
    pub fn synchronize(&mut self) -> Result<()> {
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device(format!("waiting for the device: {e}")))?;
        Ok(())
    }

    /// Uploads a byte batch (packed bytes, indices, the lookup table when it changed) and the
    /// uniform of its `augment` dispatch, recording the dispatch for a new batch size or
    /// augmentation. Returns the dispatch's key.
    fn prepare_raw(&mut self, plan: &Plan, r: &RawInput) -> Result<(usize, Augmentation)> {
        if self.raw.is_none() {
            let per: usize = plan.input_shape.iter().product();
            let words = (plan.batch * per).div_ceil(4);
            let c = plan.input_shape[0];
            self.raw = Some(RawBuffers {
                bytes: self.ctx.zeros("input.bytes", bytes_of_len(words)),
                samples: self.ctx.zeros("input.samples", bytes_of_len(plan.batch)),
                lut: self.ctx.zeros("input.lut", bytes_of_len(c * 256)),
                lut_values: Vec::new(),
                dispatches: HashMap::new(),
            });
            self.counters.gpu_bytes_allocated += bytes_of_len(words + plan.batch + c * 256);
        }
        let key = (r.launch.dims[0], r.launch.aug);
        let rb = self.raw.as_mut().expect("made above");
        if !rb.dispatches.contains_key(&key) {
            let slices =
                [&rb.bytes, &rb.samples, &rb.lut, &self.input].map(|b| Slice::whole(b.clone()));
            let d = self.ctx.record_launch(&r.launch, &slices)?;
            rb.dispatches.insert(key, d);
        }
        let lut_changed = rb.lut_values != r.lut;
        let (bytes, samples, lut) = (rb.bytes.clone(), rb.samples.clone(), rb.lut.clone());
        let uniform = rb.dispatches[&key].1.clone();
        if lut_changed {
            rb.lut_values = r.lut.to_vec();
            self.upload(&lut, bytemuck::cast_slice(r.lut));
        }
        self.upload(&bytes, bytemuck::cast_slice(&pack_bytes(r.bytes)));
        self.upload(&samples, bytemuck::cast_slice(r.samples));
        self.upload(&uniform, &r.launch.uniform());
        Ok(key)
    }

    /// Runs the `augment` dispatch `key` in a submit of its own (validation mode, which
    /// runs the schedule one dispatch at a time after it).
    fn submit_alone(&mut self, key: (usize, Augmentation)) -> Result<()> {
        let rb = self.raw.as_ref().expect("prepared");
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        self.ctx.encode(&mut encoder, [&rb.dispatches[&key].0]);
        self.ctx.scoped("submitting the input pipeline", || {
            self.ctx.queue.submit(Some(encoder.finish()))
        })?;
        self.counters.submits += 1;
        Ok(())
    }

    /// Writes the uniforms of the update (optimizer step `t`, clipping) and the step counter,
    /// recording a pipeline for a new optimizer kind if it changed.
    fn prepare_update(&mut self, o: &Optimizer, t: u64) -> Result<()> {
        let step = OptimizerStep {
            opt: *o,
            t,
            len: self.flat_len,
        };
        if o.kind != self.opt_kind {
            let bufs = self.opt_buffers();
            let (d, u) = Self::record_opt(&self.ctx, &step, self.decay.as_ref(), bufs)?;
            (self.opt_dispatch, self.opt_uniform, self.opt_kind) = (d, u, o.kind);
        }
        let u = self.opt_uniform.clone();
        let uniform = match self.decay {
            Some(_) => OptimizerStepMasked(step).uniform(),
            None => step.uniform(),
        };
        self.upload(&u, &uniform);
        if o.clip_grad_norm > 0.0 {
            let clip = GradNormScale {
                len: self.flat_len,
                max_norm: o.clip_grad_norm,
            };
            let cu = self.clip_uniform.clone();
            self.upload(&cu, &clip.uniform());
        }
        if self.has_dropout {
            let sb = self.step_buf.clone();
            self.upload(&sb, bytemuck::bytes_of(&(t as u32)));
        }
        Ok(())
    }

    /// `WGCNN_VALIDATE=1`: runs the schedule's dispatches one submit each, reading every
    /// binding before and after, and holds each result to its launch's CPU twin on the same
    /// inputs. A mismatch beyond the launch's tolerance is [`Error::Shader`].
    fn run_validated(&mut self, plan: &Plan, n: usize, mode: Mode, skip_loss: bool) -> Result<()> {
        // mixed precision: the gradients after the loss are S times their size, and so are
        // their absolute errors
        let scale = match plan.scaler {
            Some(_) => {
                let bytes = self
                    .ctx
                    .run(std::iter::empty(), &[Slice::whole(self.scaler.clone())])?;
                to_f32(&bytes[0])[0]
            }
            None => 1.0,
        };
        let prog = &self.programs[&(n, mode)];
        for (i, (d, s)) in prog.dispatches.iter().zip(&prog.steps).enumerate() {
            if skip_loss && s.loss {
                continue;
            }
            let mut tol = s.launch.tolerance();
            if i >= plan.forward_len {
                tol.atol *= scale;
            }
            let slices = self.slices(plan, n, s);
            let bindings = s.launch.bindings();
            let pick = |want: fn(Access) -> bool| -> Vec<usize> {
                (0..bindings.len())
                    .filter(|&k| s.args[k].is_some() && want(bindings[k].access))
                    .collect()
            };
            let (ins, outs) = (pick(Access::reads), pick(Access::writes));
            let read = |ks: &[usize]| ks.iter().map(|&k| slices[k].clone()).collect::<Vec<_>>();
            let before = self.ctx.run(std::iter::empty(), &read(&ins))?;
            let after = self.ctx.run(std::iter::once(d), &read(&outs))?;
            let mut b: Vec<Vec<f32>> = bindings.iter().map(|bd| vec![0.0; bd.len]).collect();
            for (k, bytes) in ins.iter().zip(&before) {
                b[*k] = to_f32(bytes);
            }
            s.launch.cpu(&mut b);
            let mut got: Vec<Vec<f32>> = Vec::new();
            let mut want: Vec<Vec<f32>> = Vec::new();
            for (k, bd) in bindings
                .iter()
                .enumerate()
                .filter(|(_, bd)| bd.access.writes())
            {
                let at = outs.iter().position(|&o| o == k);
                got.push(at.map_or_else(Vec::new, |j| to_f32(&after[j])));
                want.push(if at.is_some() {
                    b[k].clone()
                } else {
                    Vec::new()
                });
                debug_assert!(at.is_some() || bd.len == 0);
            }
            if let Some(m) = compare_within(s.launch.as_ref(), &got, &want, tol) {
                return Err(Error::Shader {
                    kernel: d.kernel.spec.name.to_string(),
                    msg: format!(
                        "WGCNN_VALIDATE: node '{}', step {i} of the schedule: {m}",
                        plan.graph.node(s.node).name
                    ),
                });
            }
        }
        self.counters.submits += 2 * prog.dispatches.len() as u64;
        Ok(())
    }

    /// A forward pass on `images` (one submit) that copies tensor `t` of every tap
    /// `(after, t)` aside right after evaluation step `after` (`None`: the input) and reads
    /// those copies back.
    pub fn run_taps(
        &mut self,
        plan: &Plan,
        n: usize,
        images: &[f32],
        taps: &[(Option<usize>, TensorId)],
    ) -> Result<Vec<Vec<f32>>> {
        self.ctx.check_lost()?;
        self.program(plan, n, Mode::Eval)?;
        let input = self.input.clone();
        self.upload(&input, bytemuck::cast_slice(images));
        let copies: Vec<(Slice, Arc<wgpu::Buffer>)> = taps
            .iter()
            .map(|&(_, t)| {
                let s = self.slice(plan, t, n);
                let dst = self.ctx.zeros("tap", s.bytes);
                (s, dst)
            })
            .collect();
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("taps"),
            });
        let copy_at = |enc: &mut wgpu::CommandEncoder, at: Option<usize>| {
            for (k, (s, dst)) in copies.iter().enumerate() {
                if taps[k].0 == at {
                    enc.copy_buffer_to_buffer(&s.buffer, s.offset, dst, 0, s.bytes);
                }
            }
        };
        copy_at(&mut encoder, None);
        let prog = &self.programs[&(n, Mode::Eval)];
        for (i, (d, s)) in prog.dispatches.iter().zip(&prog.steps).enumerate() {
            if !s.loss {
                self.ctx.encode(&mut encoder, std::iter::once(d));
                copy_at(&mut encoder, Some(i));
            }
        }
        let reads: Vec<Slice> = copies
            .iter()
            .map(|(_, dst)| Slice::whole(dst.clone()))
            .collect();
        let bytes = self.ctx.finish_and_read(encoder, &reads)?;
        self.counters.submits += 1;
        self.counters.bytes_read_back += reads.iter().map(|r| r.bytes).sum::<u64>();
        Ok(bytes.iter().map(|b| to_f32(b)).collect())
    }

    async fn read_bytes(&mut self, buf: &Arc<wgpu::Buffer>, bytes: u64) -> Result<Vec<u8>> {
        let encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read"),
            });
        let s = Slice {
            buffer: buf.clone(),
            offset: 0,
            bytes,
        };
        let mut r = self.ctx.finish_and_read_async(encoder, &[s]).await?;
        self.counters.submits += 1;
        self.counters.bytes_read_back += bytes;
        Ok(r.pop().unwrap_or_default())
    }

    pub async fn read(&mut self, plan: &Plan, t: TensorId, n: usize) -> Result<Vec<f32>> {
        let s = self.slice(plan, t, n);
        let encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read"),
            });
        let mut r = self
            .ctx
            .finish_and_read_async(encoder, std::slice::from_ref(&s))
            .await?;
        self.counters.submits += 1;
        self.counters.bytes_read_back += s.bytes;
        Ok(to_f32(&r.pop().unwrap_or_default()))
    }

    pub async fn take_metrics(&mut self, mode: Mode) -> Result<[f32; 4]> {
        let k = (mode == Mode::Eval) as usize;
        let buf = self.metrics[k].clone();
        let v = to_f32(&self.read_bytes(&buf, 16).await?);
        self.upload(&buf, &[0u8; 16]);
        Ok([v[0], v[1], v[2], v[3]])
    }

    pub async fn read_flat(&mut self, which: Flat) -> Result<Vec<f32>> {
        let buf = match which {
            Flat::Params => self.params.clone(),
            Flat::Grads => self.grads.clone(),
            Flat::State1 => self.s1.clone(),
            Flat::State2 => self.s2.clone(),
            Flat::Buffers => {
                let b = self.buffers.clone();
                return Ok(to_f32(
                    &self.read_bytes(&b, bytes_of_len(self.buffers_len)).await?,
                ));
            }
        };
        Ok(to_f32(
            &self.read_bytes(&buf, bytes_of_len(self.flat_len)).await?,
        ))
    }

    pub fn load(&mut self, p: &[f32], s1: &[f32], s2: &[f32]) -> Result<()> {
        let (pb, b1, b2) = (self.params.clone(), self.s1.clone(), self.s2.clone());
        self.upload(&pb, bytemuck::cast_slice(p));
        self.upload(&b1, bytemuck::cast_slice(s1));
        self.upload(&b2, bytemuck::cast_slice(s2));
        Ok(())
    }

    pub fn load_buffers(&mut self, b: &[f32]) {
        let buf = self.buffers.clone();
        self.upload(&buf, bytemuck::cast_slice(b));
    }

    /// Overwrites the loss scaler's state `[4]` (and the skipped-step count the optimizer
    /// reads beside its gradient factor).
    pub fn load_scaler(&mut self, s: &[f32; 4]) {
        let buf = self.scaler.clone();
        self.upload(&buf, bytemuck::cast_slice(s));
        let flags = self.grad_scale.clone();
        self.ctx
            .queue
            .write_buffer(&flags, 8, bytemuck::bytes_of(&s[2]));
        self.counters.bytes_uploaded += 4;
    }
}
