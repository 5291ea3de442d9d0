//! The CPU executor: the same plan, the same buffer pool, every step run by its launch's CPU
//! twin.

use std::collections::HashMap;

use super::{Batch, Counters, Flat};
use crate::error::Result;
use crate::ops::optim::{GradNormScale, OptimizerStep, OptimizerStepMasked};
use crate::ops::precision::{AmpUnscale, AmpUpdate};
use crate::ops::{Access, Launch};
use crate::optim::Optimizer;
use crate::plan::GradScaler;
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
    /// Per-element decay multipliers (empty: regularise everything).
    pub decay: Vec<f32>,
    /// Mixed precision's loss scaler and its state (`Home::Scaler`).
    amp: Option<GradScaler>,
    scaler: Vec<f32>,
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
            decay: Vec::new(),
            amp: plan.precision.scaler(),
            scaler: super::init_scaler(plan),
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

    /// Overwrites the loss scaler's state `[4]`.
    pub fn load_scaler(&mut self, s: &[f32; 4]) {
        self.scaler = s.to_vec();
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
            Home::Counter => vec![f32::from_bits(self.step)],
            Home::Scaler => self.scaler.clone(),
        }
    }

    fn write(&mut self, plan: &Plan, t: TensorId, v: &[f32]) {
        match plan.tensors[t].home {
            Home::Param(o) => self.params[o..o + v.len()].copy_from_slice(v),
            Home::Grad(o) => self.grads[o..o + v.len()].copy_from_slice(v),
            Home::Buffer(o) => self.buffers[o..o + v.len()].copy_from_slice(v),
            Home::Arena(b) => self.arena[b][..v.len()].copy_from_slice(v),
            Home::Metrics(k) => self.metrics[k].copy_from_slice(&v[..4]),
            Home::Scaler => self.scaler.copy_from_slice(&v[..4]),
            Home::Input | Home::Targets | Home::Counter => {
                unreachable!("kernels never write the batch or the step counter")
            }
        }
    }

    pub fn take_metrics(&mut self, mode: Mode) -> [f32; 4] {
        let k = (mode == Mode::Eval) as usize;
        std::mem::take(&mut self.metrics[k])
    }

    /// Runs the schedule of `b.mode` on the batch (and the optimizer update when training).
    pub fn run(&mut self, plan: &Plan, b: &Batch) -> Result<()> {
        let (n, mode, opt) = (b.n, b.mode, b.opt);
        if let std::collections::hash_map::Entry::Vacant(e) = self.programs.entry((n, mode)) {
            e.insert(plan.steps(n, mode)?);
        }
        let steps = self.programs.get(&(n, mode)).cloned().unwrap_or_default();
        self.input = b.images.to_vec();
        self.targets = b.targets.to_vec();
        if let Some((_, t)) = opt {
            self.step = t as u32;
        }
        for s in steps.iter().filter(|s| !(b.skip_loss && s.loss)) {
            self.exec(plan, n, s);
        }
        if let (Some((opt, t)), true) = (opt, b.update) {
            self.update(opt, t);
            self.counters.dispatches_per_step += steps.len() as u64;
        }
        Ok(())
    }

    /// The optimizer update of step `t` from the gradients as they are.
    pub fn update(&mut self, opt: &Optimizer, t: u64) {
        let clip = opt.clip_grad_norm > 0.0;
        self.optimize(opt, t);
        self.counters.steps += 1;
        self.counters.dispatches_per_step = 1 + clip as u64 + 2 * self.amp.is_some() as u64;
    }

    pub fn write_grads(&mut self, g: &[f32]) {
        self.grads.copy_from_slice(g);
    }

    /// A forward pass on `images` that reads tensor `t` of every tap `(after, t)` right after
    /// evaluation step `after` (`None`: before any step, i.e. the input).
    pub fn run_taps(
        &mut self,
        plan: &Plan,
        n: usize,
        images: &[f32],
        taps: &[(Option<usize>, TensorId)],
    ) -> Result<Vec<Vec<f32>>> {
        let steps = plan.steps(n, Mode::Eval)?;
        self.input = images.to_vec();
        self.targets = vec![0; n * plan.target_len];
        let mut out = vec![Vec::new(); taps.len()];
        let read_at = |this: &Self, at: Option<usize>, out: &mut [Vec<f32>]| {
            for (k, &(a, t)) in taps.iter().enumerate() {
                if a == at {
                    out[k] = this.read(plan, t, n);
                }
            }
        };
        read_at(self, None, &mut out);
        for (i, s) in steps.iter().enumerate().filter(|(_, s)| !s.loss) {
            self.exec(plan, n, s);
            read_at(self, Some(i), &mut out);
        }
        Ok(out)
    }

    /// Runs `s` with its launch's CPU twin on the tensors it binds.
    fn exec(&mut self, plan: &Plan, n: usize, s: &Step) {
        let bindings = s.launch.bindings();
        let mut b: Vec<Vec<f32>> = bindings
            .iter()
            .zip(&s.args)
            .map(|(bd, a)| match (a, bd.access) {
                (Some(t), Access::Read | Access::ReadWrite) => self.read(plan, *t, n),
                _ => vec![0.0; bd.len],
            })
            .collect();
        s.launch.cpu(&mut b);
        for ((bd, a), v) in bindings.iter().zip(&s.args).zip(&b) {
            if let (Some(t), true) = (a, bd.access.writes()) {
                self.write(plan, *t, v);
            }
        }
    }

    /// The optimizer update (after clipping the gradient's global norm, if asked).
    fn optimize(&mut self, opt: &Optimizer, t: u64) {
        let len = self.params.len();
        // (gradient factor, skip flag, skipped steps)
        let mut scale = vec![1.0, 0.0, self.scaler[2]];
        if self.amp.is_some() {
            let mut b = [self.scaler.clone(), std::mem::take(&mut self.grads), scale];
            AmpUnscale { len }.cpu(&mut b);
            [_, self.grads, scale] = b;
        }
        if opt.clip_grad_norm > 0.0 {
            let clip = GradNormScale {
                len,
                max_norm: opt.clip_grad_norm,
            };
            let mut b = [std::mem::take(&mut self.grads), scale];
            clip.cpu(&mut b);
            [self.grads, scale] = b;
        }
        let step = OptimizerStep { opt: *opt, t, len };
        let mut b = [
            std::mem::take(&mut self.grads),
            scale,
            std::mem::take(&mut self.decay),
            std::mem::take(&mut self.params),
            std::mem::take(&mut self.s1),
            std::mem::take(&mut self.s2),
            self.metrics[0].to_vec(),
        ];
        if b[2].is_empty() {
            step.cpu(&mut b);
        } else {
            OptimizerStepMasked(step).cpu(&mut b);
        }
        let [g, scale, decay, p, s1, s2, flag] = b;
        (self.grads, self.decay, self.params, self.s1, self.s2) = (g, decay, p, s1, s2);
        self.metrics[0][3] = flag[3];
        if let Some(scaler) = self.amp {
            let mut b = [scale, std::mem::take(&mut self.scaler)];
            AmpUpdate { scaler }.cpu(&mut b);
            [_, self.scaler] = b;
        }
    }
}
