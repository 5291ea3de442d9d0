//! The GPU executor: every buffer, bind group and pipeline is created when the plan is
//! built (and once more for a smaller last batch); a training step is one command
//! encoder and one submit; only metrics (16 bytes) are read back, and only when asked.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Counters, Flat};
use crate::error::Result;
use crate::gpu::buffers::{bytes_of_len, to_f32, Dispatch, Slice};
use crate::gpu::ops::PermuteParams;
use crate::gpu::ops::{
    groups64, ClipParams, ConvUniform, DropoutParams, EwParams, GapParams, GemmParams, LossParams,
    NormParams, OptParams, PoolParams, RescaleParams,
};
use crate::gpu::GpuContext;
use crate::optim::Optimizer;
use crate::plan::{Home, Mode, Plan, Step, TensorId};

/// Dispatches of one schedule, with the uniform buffers they own.
struct Program {
    dispatches: Vec<Dispatch>,
    /// Which dispatches compute the loss (skipped by prediction).
    is_loss: Vec<bool>,
    _uniforms: Vec<Arc<wgpu::Buffer>>,
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
    /// 4-byte stand-ins for unused bindings: one read-only, one writable (one buffer
    /// can't be both within a dispatch).
    dummy: [Arc<wgpu::Buffer>; 2],
    opt_uniform: Arc<wgpu::Buffer>,
    opt_dispatch: Dispatch,
    /// The optimizer kind `opt_dispatch`'s pipeline is specialised for (`KIND`).
    opt_kind: u32,
    /// Gradient scale (1 float) written by `grad_norm_scale`, read by `optimizer_step`.
    grad_scale: Arc<wgpu::Buffer>,
    /// Uniform and dispatch of `grad_norm_scale` (run only when clipping is on).
    clip_uniform: Arc<wgpu::Buffer>,
    clip_dispatch: Dispatch,
    /// The training step (one u32) read by the dropout kernels; written with the batch,
    /// only for plans that have dropout.
    step_buf: Arc<wgpu::Buffer>,
    has_dropout: bool,
    programs: HashMap<(usize, Mode), Program>,
    flat_len: usize,
    pub counters: Counters,
}

impl GpuExec {
    pub fn new(ctx: Arc<GpuContext>, plan: &Plan, params: &[f32], opt_kind: u32) -> Result<Self> {
        let flat_bytes = bytes_of_len(plan.flat_len);
        ctx.check_binding("plan", "parameters", flat_bytes)?;
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
        let in_bytes = bytes_of_len(plan.tensors[plan.input].len(plan.batch));
        ctx.check_binding("plan", "input batch", in_bytes)?;
        let t_bytes = bytes_of_len(plan.tensors[plan.targets].len(plan.batch));
        let mut allocated = 0u64;
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
            let dummy = [zeros("dummy.read", 4), zeros("dummy.write", 4)];
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
        // gradient scale: 1 unless clipping by global norm rewrites it each step
        let grad_scale = ctx.upload("grad_scale", &[1.0f32]);
        allocated += 4;
        let cprm = ClipParams {
            len: plan.flat_len as u32,
            max_norm: 0.0,
            pad: [0; 2],
        };
        let (clip_dispatch, clip_uniform) = ctx.record(
            "grad_norm_scale",
            &[Slice::whole(g.clone()), Slice::whole(grad_scale.clone())],
            &cprm,
            1,
        )?;
        allocated += std::mem::size_of::<ClipParams>() as u64;
        let (d, u) = Self::record_opt(
            &ctx,
            opt_kind,
            [&g, &grad_scale, &p, &s1, &s2, &metrics[0]],
            plan.flat_len,
        )?;
        allocated += std::mem::size_of::<OptParams>() as u64;
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
            opt_uniform: u,
            opt_dispatch: d,
            opt_kind,
            grad_scale,
            clip_uniform,
            clip_dispatch,
            step_buf: ctx_step,
            has_dropout: plan
                .graph
                .nodes()
                .iter()
                .any(|n| matches!(n.op, crate::graph::Op::Dropout { .. })),
            programs: HashMap::new(),
            flat_len: plan.flat_len,
            counters: Counters::default(),
        };
        ex.counters.bytes_uploaded += flat_bytes;
        ex.counters.gpu_bytes_allocated = allocated;
        // The full-batch programs are built now, so no pipeline is compiled during training.
        ex.program(plan, plan.batch, Mode::Train)?;
        ex.program(plan, plan.batch, Mode::Eval)?;
        Ok(ex)
    }

    /// Records `optimizer_step` with its pipeline specialised for optimizer `kind`.
    fn record_opt(
        ctx: &GpuContext,
        kind: u32,
        bufs: [&Arc<wgpu::Buffer>; 6],
        flat_len: usize,
    ) -> Result<(Dispatch, Arc<wgpu::Buffer>)> {
        let prm = OptParams::new(&Optimizer::sgd(0.0), 1, flat_len);
        let slices = bufs.map(|b| Slice::whole(b.clone()));
        ctx.record_with(
            "optimizer_step",
            &[("KIND", kind)],
            &slices,
            &prm,
            groups64(flat_len),
        )
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

    /// Stand-in for an unused writable binding.
    fn dummy_out(&self) -> Slice {
        Slice::whole(self.dummy[1].clone())
    }

    /// Builds (once) the dispatches of the schedule for batch `n` in `mode`.
    fn program(&mut self, plan: &Plan, n: usize, mode: Mode) -> Result<&Program> {
        if !self.programs.contains_key(&(n, mode)) {
            let steps = plan.steps(n, mode)?;
            let mut dispatches = Vec::with_capacity(steps.len());
            let mut uniforms = Vec::with_capacity(steps.len());
            let mut uniform_bytes = 0;
            let is_loss = steps
                .iter()
                .map(|s| matches!(s, Step::CrossEntropy { .. } | Step::Mse { .. }))
                .collect();
            for s in &steps {
                let (d, u, ub) = self.record_step(plan, n, s)?;
                dispatches.push(d);
                uniforms.push(u);
                uniform_bytes += ub;
            }
            self.counters.gpu_bytes_allocated += uniform_bytes;
            self.programs.insert(
                (n, mode),
                Program {
                    dispatches,
                    is_loss,
                    _uniforms: uniforms,
                },
            );
        }
        Ok(&self.programs[&(n, mode)])
    }

    fn record_step(
        &self,
        plan: &Plan,
        n: usize,
        s: &Step,
    ) -> Result<(Dispatch, Arc<wgpu::Buffer>, u64)> {
        let sl = |t: TensorId| self.slice(plan, t, n);
        let c = &self.ctx;
        macro_rules! rec {
            ($name:expr, $slices:expr, $params:expr, $groups:expr) => {{
                let prm = $params;
                let (d, u) = c.record($name, &$slices, &prm, $groups)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }};
        }
        // elementwise kernels: the activation is a pipeline constant (`record_ew`)
        macro_rules! rec_ew {
            ($name:expr, $slices:expr, $params:expr, $groups:expr) => {{
                let prm = $params;
                let (d, u) = c.record_ew($name, &$slices, &prm, $groups)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }};
        }
        match s {
            Step::Conv2dForward { x, w, b, y, d, act } => {
                let bs = b.map_or_else(|| self.dummy(), sl);
                let prm = ConvUniform::new(d, b.is_some(), *act);
                let slices = [sl(*x), sl(*w), bs, sl(*y)];
                let (d, u) = c.record_conv("conv2d_forward", &slices, &prm)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }
            Step::Conv2dBackwardInput {
                dy,
                w,
                y,
                dx,
                d,
                act,
            } => {
                let prm = ConvUniform::new(d, false, *act);
                let slices = [sl(*dy), sl(*w), sl(*y), sl(*dx)];
                let (d, u) = c.record_conv("conv2d_backward_input", &slices, &prm)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }
            Step::Conv2dBackwardWeight {
                x,
                dy,
                y,
                dw,
                db,
                d,
                act,
            } => {
                let dbs = db.map_or_else(|| self.dummy_out(), sl);
                let prm = ConvUniform::new(d, db.is_some(), *act);
                let slices = [sl(*x), sl(*dy), sl(*y), sl(*dw), dbs];
                let (d, u) = c.record_conv("conv2d_backward_weight", &slices, &prm)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }
            Step::MaxPool2dForward {
                x,
                y,
                idx,
                xd,
                yd,
                p,
            } => {
                let prm = PoolParams::new(*xd, *yd, p);
                let slices = [sl(*x), sl(*y), sl(*idx)];
                let (d, u) = c.record_pool("max_pool2d_forward", &slices, &prm, true)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }
            Step::MaxPool2dBackward {
                dy,
                idx,
                dx,
                xd,
                yd,
                p,
            } => {
                let prm = PoolParams::new(*xd, *yd, p);
                let slices = [sl(*dy), sl(*idx), sl(*dx)];
                let (d, u) = c.record_pool("max_pool2d_backward", &slices, &prm, true)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }
            Step::MinPool2dForward {
                x,
                y,
                idx,
                xd,
                yd,
                p,
            } => {
                let prm = PoolParams::new(*xd, *yd, p);
                let slices = [sl(*x), sl(*y), sl(*idx)];
                let (d, u) = c.record_pool("min_pool2d_forward", &slices, &prm, true)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }
            Step::DropoutForward { x, y, len, p, seed } => rec!(
                "dropout_forward",
                [sl(*x), Slice::whole(self.step_buf.clone()), sl(*y)],
                DropoutParams::new(*len, *seed, *p),
                groups64(*len)
            ),
            Step::DropoutBackward {
                dy,
                dx,
                len,
                p,
                seed,
            } => rec!(
                "dropout_backward",
                [sl(*dy), Slice::whole(self.step_buf.clone()), sl(*dx)],
                DropoutParams::new(*len, *seed, *p),
                groups64(*len)
            ),
            Step::Rescale {
                x,
                y,
                len,
                scale,
                offset,
            } => rec!(
                "rescale",
                [sl(*x), sl(*y)],
                RescaleParams::new(*len, *scale, *offset),
                groups64(*len)
            ),
            Step::AvgPool2dForward { x, y, xd, yd, p } => {
                let prm = PoolParams::new(*xd, *yd, p);
                let slices = [sl(*x), sl(*y)];
                let (d, u) = c.record_pool("avg_pool2d_forward", &slices, &prm, true)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }
            Step::AvgPool2dBackward { dy, dx, xd, yd, p } => {
                let prm = PoolParams::new(*xd, *yd, p);
                let slices = [sl(*dy), sl(*dx)];
                let (d, u) = c.record_pool("avg_pool2d_backward", &slices, &prm, true)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }
            Step::GlobalAvgPoolForward { x, y, rows, hw } => rec!(
                "global_avg_pool_forward",
                [sl(*x), sl(*y)],
                GapParams::new(*rows, *hw),
                groups64(*rows)
            ),
            Step::GlobalAvgPoolBackward { dy, dx, rows, hw } => rec!(
                "global_avg_pool_backward",
                [sl(*dy), sl(*dx)],
                GapParams::new(*rows, *hw),
                groups64(rows * hw)
            ),
            Step::Gemm {
                a,
                b,
                bias,
                ya,
                c: out,
                cb,
                g,
            } => {
                let prm = GemmParams::new(g, bias.is_some());
                let a_s = sl(*a);
                let bias_s = bias.map_or_else(|| self.dummy(), sl);
                let ya_s = ya.map_or_else(|| a_s.clone(), sl);
                let cb_s = cb.map_or_else(|| self.dummy_out(), sl);
                let slices = [a_s, sl(*b), bias_s, ya_s, sl(*out), cb_s];
                let (d, u) = c.record_gemm("gemm", &slices, &prm)?;
                Ok((d, u, std::mem::size_of_val(&prm) as u64))
            }
            Step::ActivationForward { x, y, act } => {
                let len = plan.tensors[*x].len(n);
                rec_ew!(
                    "activation_forward",
                    [sl(*x), sl(*y)],
                    EwParams {
                        len: len as u32,
                        act: act.code(),
                        alpha: act.alpha(),
                        pad: 0
                    },
                    groups64(len)
                )
            }
            Step::ActivationBackward { x, dy, dx, act } => {
                let len = plan.tensors[*x].len(n);
                rec_ew!(
                    "activation_backward",
                    [sl(*x), sl(*dy), sl(*dx)],
                    EwParams {
                        len: len as u32,
                        act: act.code(),
                        alpha: act.alpha(),
                        pad: 0
                    },
                    groups64(len)
                )
            }
            Step::Add { a, b, c: out } => {
                let len = plan.tensors[*a].len(n);
                rec!(
                    "add",
                    [sl(*a), sl(*b), sl(*out)],
                    EwParams {
                        len: len as u32,
                        act: 0,
                        alpha: 0.0,
                        pad: 0
                    },
                    groups64(len)
                )
            }
            Step::CrossEntropy {
                logits,
                dlogits,
                metrics,
                rows,
                cols,
            } => rec!(
                "cross_entropy",
                [
                    sl(*logits),
                    sl(plan.targets),
                    dlogits.map_or_else(|| self.dummy_out(), sl),
                    sl(*metrics)
                ],
                LossParams {
                    rows: *rows as u32,
                    cols: *cols as u32,
                    accumulate: 1,
                    has_grad: dlogits.is_some() as u32,
                    scale: 1.0 / *rows as f32,
                    pad: [0; 3]
                },
                1
            ),
            Step::Mse {
                pred,
                dpred,
                metrics,
                rows,
                cols,
            } => rec!(
                "mse",
                [
                    sl(*pred),
                    sl(plan.targets),
                    dpred.map_or_else(|| self.dummy_out(), sl),
                    sl(*metrics)
                ],
                LossParams {
                    rows: *rows as u32,
                    cols: *cols as u32,
                    accumulate: 1,
                    has_grad: dpred.is_some() as u32,
                    scale: 1.0 / (*rows * *cols) as f32,
                    pad: [0; 3]
                },
                1
            ),
            Step::BatchNormForwardTrain {
                x,
                w,
                b,
                y,
                saved,
                rm,
                rv,
                d,
                momentum,
                eps,
            } => rec!(
                "batch_norm_forward_train",
                [sl(*x), sl(*w), sl(*b), sl(*y), sl(*saved), sl(*rm), sl(*rv)],
                NormParams::new(*d, *momentum, *eps),
                d[1] as u64
            ),
            Step::BatchNormForwardEval {
                x,
                w,
                b,
                rm,
                rv,
                y,
                d,
                eps,
            } => rec!(
                "batch_norm_forward_eval",
                [sl(*x), sl(*w), sl(*b), sl(*rm), sl(*rv), sl(*y)],
                NormParams::new(*d, 0.0, *eps),
                groups64(d[0] * d[1] * d[2])
            ),
            Step::BatchNormBackward {
                x,
                dy,
                w,
                saved,
                dx,
                dw,
                db,
                d,
            } => rec!(
                "batch_norm_backward",
                [
                    sl(*x),
                    sl(*dy),
                    sl(*w),
                    sl(*saved),
                    sl(*dx),
                    sl(*dw),
                    sl(*db)
                ],
                NormParams::new(*d, 0.0, 1e-5),
                d[1] as u64
            ),
            Step::SoftmaxForward { x, y, rows, cols } => rec!(
                "softmax_forward",
                [sl(*x), sl(*y)],
                softmax_params(*rows, *cols),
                groups64(*rows)
            ),
            Step::SoftmaxBackward {
                y,
                dy,
                dx,
                rows,
                cols,
            } => rec!(
                "softmax_backward",
                [sl(*y), sl(*dy), sl(*dx)],
                softmax_params(*rows, *cols),
                groups64(*rows)
            ),
            Step::Permute { x, y, xd, perm } => rec!(
                "permute",
                [sl(*x), sl(*y)],
                PermuteParams::new(*xd, *perm),
                groups64(xd.iter().product())
            ),
        }
    }

    fn upload(&mut self, buf: &wgpu::Buffer, bytes: &[u8]) {
        self.ctx.queue.write_buffer(buf, 0, bytes);
        self.counters.bytes_uploaded += bytes.len() as u64;
    }

    /// Uploads the batch and runs the schedule (plus the optimizer when training) in one
    /// encoder and one submit. Nothing is read back.
    pub fn run(
        &mut self,
        plan: &Plan,
        n: usize,
        mode: Mode,
        images: &[f32],
        targets: &[u32],
        opt: Option<(&Optimizer, u64)>,
    ) -> Result<()> {
        self.run_schedule(plan, n, mode, images, targets, opt, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_schedule(
        &mut self,
        plan: &Plan,
        n: usize,
        mode: Mode,
        images: &[f32],
        targets: &[u32],
        opt: Option<(&Optimizer, u64)>,
        skip_loss: bool,
    ) -> Result<()> {
        self.ctx.check_lost()?;
        self.program(plan, n, mode)?;
        let (input, tbuf) = (self.input.clone(), self.targets.clone());
        self.upload(&input, bytemuck::cast_slice(images));
        self.upload(&tbuf, bytemuck::cast_slice(targets));
        if let Some((o, t)) = opt {
            if o.kind.code() != self.opt_kind {
                // the optimizer kind changed: a pipeline specialised for the new one
                let (d, u) = Self::record_opt(
                    &self.ctx,
                    o.kind.code(),
                    [
                        &self.grads,
                        &self.grad_scale,
                        &self.params,
                        &self.s1,
                        &self.s2,
                        &self.metrics[0],
                    ],
                    self.flat_len,
                )?;
                (self.opt_dispatch, self.opt_uniform, self.opt_kind) = (d, u, o.kind.code());
            }
            let prm = OptParams::new(o, t, self.flat_len);
            let u = self.opt_uniform.clone();
            self.upload(&u, bytemuck::bytes_of(&prm));
            if o.clip_grad_norm > 0.0 {
                let cprm = ClipParams {
                    len: self.flat_len as u32,
                    max_norm: o.clip_grad_norm,
                    pad: [0; 2],
                };
                let cu = self.clip_uniform.clone();
                self.upload(&cu, bytemuck::bytes_of(&cprm));
            }
            if self.has_dropout {
                let sb = self.step_buf.clone();
                self.upload(&sb, bytemuck::bytes_of(&(t as u32)));
            }
        }
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        let prog = &self.programs[&(n, mode)];
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step"),
                timestamp_writes: None,
            });
            let clip_d = opt
                .filter(|(o, _)| o.clip_grad_norm > 0.0)
                .map(|_| &self.clip_dispatch);
            let opt_d = opt.map(|_| &self.opt_dispatch);
            let schedule = prog
                .dispatches
                .iter()
                .zip(&prog.is_loss)
                .filter(|(_, &loss)| !(skip_loss && loss))
                .map(|(d, _)| d);
            for d in schedule.chain(clip_d).chain(opt_d) {
                pass.set_pipeline(&d.kernel.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(d.grid[0], d.grid[1], d.grid[2]);
            }
        }
        let dispatches = prog.dispatches.len() as u64
            + opt.map_or(0, |(o, _)| 1 + (o.clip_grad_norm > 0.0) as u64);
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

    /// Forward pass without the loss (so the evaluation metrics are untouched), for
    /// prediction. One submit, nothing read back.
    pub fn run_predict(&mut self, plan: &Plan, n: usize, images: &[f32]) -> Result<()> {
        let zeros = vec![0u32; n * plan.target_len];
        self.run_schedule(plan, n, Mode::Eval, images, &zeros, None, true)
    }

    fn read_bytes(&mut self, buf: &Arc<wgpu::Buffer>, bytes: u64) -> Result<Vec<u8>> {
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
        let mut r = self.ctx.finish_and_read(encoder, &[s])?;
        self.counters.submits += 1;
        self.counters.bytes_read_back += bytes;
        Ok(r.pop().unwrap_or_default())
    }

    pub fn read(&mut self, plan: &Plan, t: TensorId, n: usize) -> Result<Vec<f32>> {
        let s = self.slice(plan, t, n);
        let encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read"),
            });
        let mut r = self
            .ctx
            .finish_and_read(encoder, std::slice::from_ref(&s))?;
        self.counters.submits += 1;
        self.counters.bytes_read_back += s.bytes;
        Ok(to_f32(&r.pop().unwrap_or_default()))
    }

    pub fn take_metrics(&mut self, mode: Mode) -> Result<[f32; 4]> {
        let k = (mode == Mode::Eval) as usize;
        let buf = self.metrics[k].clone();
        let v = to_f32(&self.read_bytes(&buf, 16)?);
        self.upload(&buf, &[0u8; 16]);
        Ok([v[0], v[1], v[2], v[3]])
    }

    pub fn read_flat(&mut self, which: Flat) -> Result<Vec<f32>> {
        let buf = match which {
            Flat::Params => self.params.clone(),
            Flat::Grads => self.grads.clone(),
            Flat::State1 => self.s1.clone(),
            Flat::State2 => self.s2.clone(),
            Flat::Buffers => {
                let b = self.buffers.clone();
                return Ok(to_f32(
                    &self.read_bytes(&b, bytes_of_len(self.buffers_len))?,
                ));
            }
        };
        Ok(to_f32(&self.read_bytes(&buf, bytes_of_len(self.flat_len))?))
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
}

/// The uniform of `softmax_forward/backward`: `rows × cols`, no loss options.
fn softmax_params(rows: usize, cols: usize) -> LossParams {
    LossParams {
        rows: rows as u32,
        cols: cols as u32,
        accumulate: 0,
        has_grad: 0,
        scale: 1.0,
        pad: [0; 3],
    }
}
