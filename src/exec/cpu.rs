//! The CPU executor: the same plan, the same buffer pool, the CPU twins.

use std::collections::HashMap;

use super::{Counters, Flat};
use crate::cpu;
use crate::error::Result;
use crate::optim::Optimizer;
use crate::plan::{Home, Mode, Plan, Step, TensorId};

pub(crate) struct CpuExec {
    params: Vec<f32>,
    grads: Vec<f32>,
    /// Non-learnable state (batch norm running statistics), `Home::Buffer`.
    buffers: Vec<f32>,
    s1: Vec<f32>,
    s2: Vec<f32>,
    arena: Vec<Vec<f32>>,
    input: Vec<f32>,
    /// Targets as 32-bit words (class indices, or f32 bit patterns).
    targets: Vec<u32>,
    metrics: [[f32; 4]; 2],
    programs: HashMap<(usize, Mode), Vec<Step>>,
    /// The training step the dropout masks hash (as the GPU executor's step buffer).
    step: u32,
    pub counters: Counters,
}

impl CpuExec {
    pub fn new(plan: &Plan, params: Vec<f32>) -> Self {
        let flat = plan.flat_len;
        CpuExec {
            params,
            grads: vec![0.0; flat],
            buffers: super::init_buffers(plan),
            s1: vec![0.0; flat],
            s2: vec![0.0; flat],
            arena: plan.arena.iter().map(|&l| vec![0.0; l]).collect(),
            input: Vec::new(),
            targets: Vec::new(),
            metrics: [[0.0; 4]; 2],
            programs: HashMap::new(),
            step: 0,
            counters: Counters::default(),
        }
    }

    pub fn flat(&self, which: Flat) -> &[f32] {
        match which {
            Flat::Params => &self.params,
            Flat::Grads => &self.grads,
            Flat::Buffers => &self.buffers,
            Flat::State1 => &self.s1,
            Flat::State2 => &self.s2,
        }
    }

    pub fn load_buffers(&mut self, b: Vec<f32>) {
        self.buffers = b;
    }

    pub fn load(&mut self, p: Vec<f32>, s1: Vec<f32>, s2: Vec<f32>) {
        self.params = p;
        self.s1 = s1;
        self.s2 = s2;
    }

    /// Elements of tensor `t` at batch `n`.
    pub fn read(&self, plan: &Plan, t: TensorId, n: usize) -> Vec<f32> {
        let ts = &plan.tensors[t];
        let len = ts.len(n);
        match ts.home {
            Home::Param(o) => self.params[o..o + len].to_vec(),
            Home::Grad(o) => self.grads[o..o + len].to_vec(),
            Home::Buffer(o) => self.buffers[o..o + len].to_vec(),
            Home::Arena(b) => self.arena[b][..len].to_vec(),
            Home::Input => self.input[..len].to_vec(),
            Home::Targets => self.targets[..len]
                .iter()
                .map(|&w| f32::from_bits(w))
                .collect(),
            Home::Metrics(k) => self.metrics[k].to_vec(),
        }
    }

    fn read_u32(&self, plan: &Plan, t: TensorId, n: usize) -> Vec<u32> {
        self.read(plan, t, n).iter().map(|v| v.to_bits()).collect()
    }

    fn write(&mut self, plan: &Plan, t: TensorId, v: &[f32]) {
        match plan.tensors[t].home {
            Home::Param(o) => self.params[o..o + v.len()].copy_from_slice(v),
            Home::Grad(o) => self.grads[o..o + v.len()].copy_from_slice(v),
            Home::Buffer(o) => self.buffers[o..o + v.len()].copy_from_slice(v),
            Home::Arena(b) => self.arena[b][..v.len()].copy_from_slice(v),
            Home::Input | Home::Targets | Home::Metrics(_) => {
                unreachable!("kernels never write inputs or metrics directly")
            }
        }
    }

    fn accumulate(&mut self, k: usize, m: [f32; 4]) {
        let acc = &mut self.metrics[k];
        acc[0] += m[0];
        acc[1] += m[1];
        acc[2] += m[2];
        acc[3] = acc[3].max(m[3]);
    }

    pub fn take_metrics(&mut self, mode: Mode) -> [f32; 4] {
        let k = (mode == Mode::Eval) as usize;
        std::mem::take(&mut self.metrics[k])
    }

    /// Forward pass for prediction; the evaluation metrics accumulated so far are kept.
    pub fn run_predict(
        &mut self,
        plan: &Plan,
        n: usize,
        images: &[f32],
        zeros: &[u32],
    ) -> Result<()> {
        let saved = self.metrics[1];
        let r = self.run(plan, n, Mode::Eval, images, zeros, None);
        self.metrics[1] = saved;
        r
    }

    pub fn run(
        &mut self,
        plan: &Plan,
        n: usize,
        mode: Mode,
        images: &[f32],
        targets: &[u32],
        opt: Option<(&Optimizer, u64)>,
    ) -> Result<()> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.programs.entry((n, mode)) {
            e.insert(plan.steps(n, mode)?);
        }
        let steps = self.programs.get(&(n, mode)).cloned().unwrap_or_default();
        self.input = images.to_vec();
        self.targets = targets.to_vec();
        if let Some((_, t)) = opt {
            self.step = t as u32;
        }
        for s in &steps {
            self.exec(plan, n, s);
        }
        if let Some((opt, t)) = opt {
            let (p, g, s1, s2) = (&mut self.params, &self.grads, &mut self.s1, &mut self.s2);
            let clip = opt.clip_grad_norm > 0.0;
            let scale = if clip {
                cpu::optim::grad_norm_scale(g, opt.clip_grad_norm)
            } else {
                1.0
            };
            if cpu::optim::optimizer_step(opt, t, p, g, s1, s2, scale) {
                self.metrics[0][3] = 1.0;
            }
            self.counters.steps += 1;
            self.counters.dispatches_per_step = steps.len() as u64 + 1 + clip as u64;
        }
        Ok(())
    }

    fn exec(&mut self, plan: &Plan, n: usize, s: &Step) {
        let r = |t: TensorId| self.read(plan, t, n);
        match s {
            Step::Conv2dForward { x, w, b, y, d, act } => {
                let bv = b.map(r);
                let out = cpu::conv2d::conv2d_forward(*d, &r(*x), &r(*w), bv.as_deref(), *act);
                self.write(plan, *y, &out);
            }
            Step::Conv2dBackwardInput {
                dy,
                w,
                y,
                dx,
                d,
                act,
            } => {
                let yv = r(*y);
                let ya = (act.0 != 0).then_some((yv.as_slice(), act.0, act.1));
                let out = cpu::conv2d::conv2d_backward_input(*d, &r(*dy), &r(*w), ya);
                self.write(plan, *dx, &out);
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
                let yv = r(*y);
                let ya = (act.0 != 0).then_some((yv.as_slice(), act.0, act.1));
                let (gw, gb) = cpu::conv2d::conv2d_backward_weight(*d, &r(*x), &r(*dy), ya);
                self.write(plan, *dw, &gw);
                if let Some(db) = db {
                    self.write(plan, *db, &gb);
                }
            }
            Step::MaxPool2dForward {
                x,
                y,
                idx,
                xd,
                yd,
                p,
            } => {
                let (yv, iv) = cpu::pool::max_pool2d_forward(*xd, *yd, *p, &r(*x));
                self.write(plan, *y, &yv);
                let bits: Vec<f32> = iv.iter().map(|&i| f32::from_bits(i)).collect();
                self.write(plan, *idx, &bits);
            }
            Step::MaxPool2dBackward {
                dy,
                idx,
                dx,
                xd,
                yd,
                ..
            } => {
                let iv = self.read_u32(plan, *idx, n);
                let out = cpu::pool::max_pool2d_backward(*xd, *yd, &r(*dy), &iv);
                self.write(plan, *dx, &out);
            }
            Step::MinPool2dForward {
                x,
                y,
                idx,
                xd,
                yd,
                p,
            } => {
                let (yv, iv) = cpu::pool::min_pool2d_forward(*xd, *yd, *p, &r(*x));
                self.write(plan, *y, &yv);
                let bits: Vec<f32> = iv.iter().map(|&i| f32::from_bits(i)).collect();
                self.write(plan, *idx, &bits);
            }
            Step::DropoutForward { x, y, p, seed, .. } => {
                let out = cpu::elementwise::dropout_forward(*seed, self.step, *p, &r(*x));
                self.write(plan, *y, &out);
            }
            Step::DropoutBackward {
                dy, dx, p, seed, ..
            } => {
                let out = cpu::elementwise::dropout_backward(*seed, self.step, *p, &r(*dy));
                self.write(plan, *dx, &out);
            }
            Step::Rescale {
                x,
                y,
                scale,
                offset,
                ..
            } => {
                let out = cpu::elementwise::rescale(*scale, *offset, &r(*x));
                self.write(plan, *y, &out);
            }
            Step::AvgPool2dForward { x, y, xd, yd, p } => {
                let out = cpu::pool::avg_pool2d_forward(*xd, *yd, *p, &r(*x));
                self.write(plan, *y, &out);
            }
            Step::AvgPool2dBackward { dy, dx, xd, yd, p } => {
                let out = cpu::pool::avg_pool2d_backward(*xd, *yd, *p, &r(*dy));
                self.write(plan, *dx, &out);
            }
            Step::GlobalAvgPoolForward { x, y, rows, hw } => {
                let out = cpu::pool::global_avg_pool_forward(*rows, *hw, &r(*x));
                self.write(plan, *y, &out);
            }
            Step::GlobalAvgPoolBackward { dy, dx, rows, hw } => {
                let out = cpu::pool::global_avg_pool_backward(*rows, *hw, &r(*dy));
                self.write(plan, *dx, &out);
            }
            Step::Gemm {
                a,
                b,
                bias,
                ya,
                c,
                cb,
                g,
            } => {
                let biasv = bias.map(r);
                let yav = ya.map(r);
                let (cv, cbv) =
                    cpu::matmul::gemm(g, &r(*a), &r(*b), biasv.as_deref(), yav.as_deref());
                self.write(plan, *c, &cv);
                if let Some(cb) = cb {
                    self.write(plan, *cb, &cbv);
                }
            }
            Step::ActivationForward { x, y, act } => {
                let out = cpu::elementwise::activation_forward(*act, &r(*x));
                self.write(plan, *y, &out);
            }
            Step::ActivationBackward { x, dy, dx, act } => {
                let out = cpu::elementwise::activation_backward(*act, &r(*x), &r(*dy));
                self.write(plan, *dx, &out);
            }
            Step::Add { a, b, c } => {
                let out = cpu::elementwise::add(&r(*a), &r(*b));
                self.write(plan, *c, &out);
            }
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
            } => {
                let (mut rmv, mut rvv) = (r(*rm), r(*rv));
                let (yv, sv) = cpu::norm::batch_norm_forward_train(
                    *d,
                    &r(*x),
                    &r(*w),
                    &r(*b),
                    &mut rmv,
                    &mut rvv,
                    *momentum,
                    *eps,
                );
                self.write(plan, *y, &yv);
                self.write(plan, *saved, &sv);
                self.write(plan, *rm, &rmv);
                self.write(plan, *rv, &rvv);
            }
            Step::BatchNormForwardEval {
                x,
                w,
                b,
                rm,
                rv,
                y,
                d,
                eps,
            } => {
                let out = cpu::norm::batch_norm_forward_eval(
                    *d,
                    &r(*x),
                    &r(*w),
                    &r(*b),
                    &r(*rm),
                    &r(*rv),
                    *eps,
                );
                self.write(plan, *y, &out);
            }
            Step::BatchNormBackward {
                x,
                dy,
                w,
                saved,
                dx,
                dw,
                db,
                d,
            } => {
                let (dxv, dwv, dbv) =
                    cpu::norm::batch_norm_backward(*d, &r(*x), &r(*dy), &r(*w), &r(*saved));
                self.write(plan, *dx, &dxv);
                self.write(plan, *dw, &dwv);
                self.write(plan, *db, &dbv);
            }
            Step::CrossEntropy {
                logits,
                dlogits,
                metrics,
                rows,
                cols,
            } => {
                let t = self.read_u32(plan, plan.targets, n);
                let (dx, m) =
                    cpu::loss::cross_entropy(*rows, *cols, &r(*logits), &t, 1.0 / *rows as f32);
                if let Some(dl) = dlogits {
                    self.write(plan, *dl, &dx);
                }
                let Home::Metrics(k) = plan.tensors[*metrics].home else {
                    unreachable!("metrics tensor")
                };
                self.accumulate(k, m);
            }
            Step::Mse {
                pred,
                dpred,
                metrics,
                rows,
                cols,
            } => {
                let t = r(plan.targets);
                let scale = 1.0 / (*rows * *cols) as f32;
                let (dp, m) = cpu::loss::mse(*rows, *cols, &r(*pred), &t, scale);
                if let Some(d) = dpred {
                    self.write(plan, *d, &dp);
                }
                let Home::Metrics(k) = plan.tensors[*metrics].home else {
                    unreachable!("metrics tensor")
                };
                self.accumulate(k, m);
            }
            Step::SoftmaxForward { x, y, rows, cols } => {
                let out = cpu::loss::softmax_forward(*rows, *cols, &r(*x));
                self.write(plan, *y, &out);
            }
            Step::SoftmaxBackward {
                y,
                dy,
                dx,
                rows,
                cols,
            } => {
                let out = cpu::loss::softmax_backward(*rows, *cols, &r(*y), &r(*dy));
                self.write(plan, *dx, &out);
            }
            Step::Permute { x, y, xd, perm } => {
                let out = cpu::layout::permute(*xd, *perm, &r(*x));
                self.write(plan, *y, &out);
            }
        }
    }
}
