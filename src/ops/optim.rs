//! The optimizer family (`shaders/optim.wgsl`, twin [`crate::cpu::optim`]): gradient
//! clipping by global norm and one optimizer step over the flat parameter vector. The
//! executors run them after a training step's schedule.
//!
//! # Shapes
//! `grad, param, state1, state2 [len]`, `scale [3]` (factor, skip flag, skipped steps), `decay [len]` (or unused),
//! `flag [4]` (the training metrics).

use std::any::Any;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{bytes, groups64, Binding, GpuCall, Launch, Tolerance};
use crate::cpu;
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::optim::Optimizer;

/// `scale = min(1, max_norm / (‖grad‖₂ + 1e-6))`, one workgroup reducing in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradNormScale {
    pub len: usize,
    pub max_norm: f32,
}

impl Launch for GradNormScale {
    fn kernel(&self) -> &'static str {
        "grad_norm_scale"
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![Binding::read("grad", self.len), Binding::update("scale", 3)]
    }

    fn uniform(&self) -> Vec<u8> {
        bytes(&ClipUniform {
            len: self.len as u32,
            max_norm: self.max_norm,
            pad: [0; 2],
        })
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(GpuCall {
            entry: "grad_norm_scale",
            consts: Vec::new(),
            groups: 1,
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        b[1].resize(3, 0.0);
        b[1][0] = cpu::optim::grad_norm_scale(&b[0], self.max_norm);
    }

    fn at_batch(&self, _n: usize) -> Arc<dyn Launch> {
        Arc::new(*self)
    }

    fn describe(&self) -> String {
        format!("{} params", self.len)
    }

    fn tolerance(&self) -> Tolerance {
        Tolerance::REDUCTION
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One optimizer step `t` (from 1) of `opt` over `len` parameters; the kind is the
/// pipeline constant `KIND`. Regularisation applies to every element (the `decay` binding
/// is unused); [`OptimizerStepMasked`] restricts it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerStep {
    pub opt: Optimizer,
    pub t: u64,
    pub len: usize,
}

/// [`OptimizerStep`] with a per-element decay multiplier (binding `decay [len]`, usually
/// 0/1 from a [`crate::optim::ParamSelect`]): L1, L2 and AdamW's decoupled decay of element
/// `i` are scaled by `decay[i]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerStepMasked(pub OptimizerStep);

impl OptimizerStep {
    /// The bindings, with a `decay` of `decay_len` (0: unused).
    fn bindings_with(&self, decay_len: usize) -> Vec<Binding> {
        let len = self.len;
        vec![
            Binding::read("grad", len),
            Binding::read("scale", 3),
            Binding::read("decay", decay_len),
            Binding::update("param", len),
            Binding::update("state1", len),
            Binding::update("state2", len),
            Binding::update("flag", 4),
        ]
    }

    fn uniform_with(&self, masked: bool) -> Vec<u8> {
        let (opt, (step, bc2)) = (&self.opt, cpu::optim::adam_constants(&self.opt, self.t));
        bytes(&OptUniform {
            kind: opt.kind.code(),
            len: self.len as u32,
            lr: opt.lr,
            momentum: opt.momentum,
            alpha: opt.alpha,
            beta1: opt.beta1,
            beta2: opt.beta2,
            eps: opt.eps,
            wd: opt.weight_decay,
            l1: opt.l1,
            step,
            bc2,
            masked: masked as u32,
            t: self.t as u32,
            pad: [0; 2],
        })
    }

    fn call(&self) -> GpuCall {
        GpuCall {
            entry: "optimizer_step",
            consts: vec![("KIND", self.opt.kind.code())],
            groups: groups64(self.len),
        }
    }

    /// The twin on bindings `b` (`b[2]` the decay multipliers, empty when unused).
    fn run_cpu(&self, b: &mut [Vec<f32>]) {
        let scale = b[1].first().copied().unwrap_or(1.0);
        if b[1].get(1).is_some_and(|&skip| skip != 0.0) {
            return; // mixed precision's overflow: the step is skipped
        }
        // skipped steps do not count in Adam's bias corrections
        let skipped = b[1].get(2).map_or(0, |&s| s as u64);
        let t = self.t.saturating_sub(skipped).max(1);
        let (ins, rest) = b.split_at_mut(3);
        let [p, s1, s2, flag] = rest else {
            unreachable!("seven bindings")
        };
        let (g, decay) = (&ins[0], &ins[2]);
        if cpu::optim::optimizer_step_masked(&self.opt, t, p, g, s1, s2, scale, decay) {
            flag[3] = 1.0;
        }
    }
}

impl Launch for OptimizerStep {
    fn kernel(&self) -> &'static str {
        "optimizer_step"
    }

    fn bindings(&self) -> Vec<Binding> {
        self.bindings_with(0)
    }

    fn uniform(&self) -> Vec<u8> {
        self.uniform_with(false)
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(self.call())
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        b[2].clear();
        self.run_cpu(b)
    }

    fn at_batch(&self, _n: usize) -> Arc<dyn Launch> {
        Arc::new(*self)
    }

    fn describe(&self) -> String {
        format!("{} params", self.len)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Launch for OptimizerStepMasked {
    fn kernel(&self) -> &'static str {
        "optimizer_step"
    }

    fn bindings(&self) -> Vec<Binding> {
        self.0.bindings_with(self.0.len)
    }

    fn uniform(&self) -> Vec<u8> {
        self.0.uniform_with(true)
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(self.0.call())
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        self.0.run_cpu(b)
    }

    fn at_batch(&self, _n: usize) -> Arc<dyn Launch> {
        Arc::new(*self)
    }

    fn describe(&self) -> String {
        format!("{} params, masked decay", self.0.len)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The uniform block of `grad_norm_scale` (`ClipUniform` in optim.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct ClipUniform {
    len: u32,
    max_norm: f32,
    pad: [u32; 2],
}

/// The uniform block of `optimizer_step` (`OptUniform` in optim.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct OptUniform {
    kind: u32,
    len: u32,
    lr: f32,
    momentum: f32,
    alpha: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    wd: f32,
    l1: f32,
    step: f32,
    bc2: f32,
    masked: u32,
    t: u32,
    pad: [u32; 2],
}
