//! Uniform parameter blocks (mirroring the WGSL structs) and the recorders that turn one
//! op on bound slices into dispatches. Used by the functional [`crate::Backend`] API and
//! by the GPU executor alike.

use bytemuck::{Pod, Zeroable};

use super::buffers::{Dispatch, Slice};
use super::device::GpuContext;
use crate::cpu::conv2d::ConvDims;
use crate::cpu::matmul::Gemm;
use crate::error::Result;
use crate::optim::Optimizer;
use crate::shape::Pool2dParams;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct ConvParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub o: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub ph: u32,
    pub pw: u32,
    pub oh: u32,
    pub ow: u32,
    pub has_bias: u32,
    pub act: u32,
    pub alpha: f32,
}

impl ConvParams {
    pub fn new(d: &ConvDims, has_bias: bool, act: (u32, f32)) -> Self {
        let u = |v: usize| v as u32;
        ConvParams {
            n: u(d.x[0]),
            c: u(d.x[1]),
            h: u(d.x[2]),
            w: u(d.x[3]),
            o: u(d.w[0]),
            kh: u(d.w[2]),
            kw: u(d.w[3]),
            sh: u(d.p.stride[0]),
            sw: u(d.p.stride[1]),
            ph: u(d.p.padding[0]),
            pw: u(d.p.padding[1]),
            oh: u(d.y[2]),
            ow: u(d.y[3]),
            has_bias: has_bias as u32,
            act: act.0,
            alpha: act.1,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct PoolParams {
    pub dims: [u32; 12],
    pub pad: [u32; 4],
}

impl PoolParams {
    pub fn new(x: [usize; 4], y: [usize; 4], p: &Pool2dParams) -> Self {
        let d = [
            x[0],
            x[1],
            x[2],
            x[3],
            p.kernel[0],
            p.kernel[1],
            p.stride[0],
            p.stride[1],
            p.padding[0],
            p.padding[1],
            y[2],
            y[3],
        ];
        PoolParams {
            dims: d.map(|v| v as u32),
            pad: [0; 4],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub sam: u32,
    pub sak: u32,
    pub sbk: u32,
    pub sbn: u32,
    pub has_bias: u32,
    pub act_out: u32,
    pub act_in: u32,
    pub ones_col: u32,
    pub alpha: f32,
    pub alpha_in: f32,
    pub pad: [u32; 3],
}

impl GemmParams {
    pub fn new(g: &Gemm, has_bias: bool) -> Self {
        let u = |v: usize| v as u32;
        GemmParams {
            m: u(g.m),
            n: u(g.n),
            k: u(g.k),
            sam: u(g.sam),
            sak: u(g.sak),
            sbk: u(g.sbk),
            sbn: u(g.sbn),
            has_bias: has_bias as u32,
            act_out: g.act_out.0,
            act_in: g.act_in.0,
            ones_col: g.ones_col as u32,
            alpha: g.act_out.1,
            alpha_in: g.act_in.1,
            pad: [0; 3],
        }
    }

    /// Workgroups: one per 32×32 tile of the (possibly ones-extended) output.
    pub fn groups(&self) -> u64 {
        let cols = (self.n + self.ones_col) as u64;
        cols.div_ceil(32) * (self.m as u64).div_ceil(32)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct EwParams {
    pub len: u32,
    pub act: u32,
    pub alpha: f32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct LossParams {
    pub rows: u32,
    pub cols: u32,
    pub accumulate: u32,
    pub has_grad: u32,
    pub scale: f32,
    pub pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct OptParams {
    pub kind: u32,
    pub len: u32,
    pub lr: f32,
    pub momentum: f32,
    pub alpha: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub wd: f32,
    pub l1: f32,
    pub step: f32,
    pub bc2: f32,
}

impl OptParams {
    pub fn new(opt: &Optimizer, t: u64, len: usize) -> Self {
        let (step, bc2) = crate::cpu::optim::adam_constants(opt, t);
        OptParams {
            kind: opt.kind.code(),
            len: len as u32,
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
        }
    }
}

/// Workgroups of 64 for `len` invocations.
pub(crate) fn groups64(len: usize) -> u64 {
    (len as u64).div_ceil(64)
}

impl GpuContext {
    /// Records kernel `name` over `slices` with uniform `params` and `groups` workgroups.
    /// Returns the dispatch and the uniform buffer (kept by callers that rewrite it).
    pub(crate) fn record<T: Pod>(
        &self,
        name: &str,
        slices: &[Slice],
        params: &T,
        groups: u64,
    ) -> Result<(Dispatch, std::sync::Arc<wgpu::Buffer>)> {
        let kernel = self.kernel(name)?;
        let ubuf = self.uniform(name, params);
        let d = self.dispatch(&kernel, slices, &ubuf, groups)?;
        Ok((d, ubuf))
    }
}
