//! The layout family (`shaders/layout.wgsl`, twin [`crate::cpu::layout`]): axis
//! permutation, and the graph ops that move no data or only reorder it: `Input`, `Flatten`,
//! `Reshape` (views) and `ChannelsLast` (a permute).
//!
//! # Shapes
//! `x [xd0, xd1, xd2, xd3]` → `y [xd[perm[0]], …, xd[perm[3]]]`.

use std::any::Any;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{bytes, groups64, Binding, GpuCall, Launch, Rule};
use crate::cpu;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graph::{Graph, NodeId, Op};
use crate::plan::{Lowering, TensorId};

/// `y = x.transpose(perm)` for `x` of dims `xd` (numpy semantics, made contiguous).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Permute {
    pub xd: [usize; 4],
    pub perm: [usize; 4],
    /// The axis of `xd` that is the batch, if any.
    pub batch_axis: Option<usize>,
}

impl Launch for Permute {
    fn kernel(&self) -> &'static str {
        "permute"
    }

    fn bindings(&self) -> Vec<Binding> {
        let len = self.xd.iter().product();
        vec![Binding::read("x", len), Binding::write("y", len)]
    }

    /// y's dims and, per y axis, the row-major stride in x of the axis it comes from.
    fn uniform(&self) -> Vec<u8> {
        let xd = self.xd;
        let xs = [xd[1] * xd[2] * xd[3], xd[2] * xd[3], xd[3], 1];
        bytes(&PermuteUniform {
            dims: self.perm.map(|a| xd[a] as u32),
            strides: self.perm.map(|a| xs[a] as u32),
            len: xd.iter().product::<usize>() as u32,
            pad: [0; 3],
        })
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(GpuCall {
            entry: "permute",
            consts: Vec::new(),
            groups: groups64(self.xd.iter().product()),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        b[1] = cpu::layout::permute(self.xd, self.perm, &b[0]);
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        let mut l = *self;
        if let Some(a) = self.batch_axis {
            l.xd[a] = n;
        }
        Arc::new(l)
    }

    fn describe(&self) -> String {
        format!("{:?} perm {:?}", self.xd, self.perm)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The uniform block of `permute` (`PermuteUniform` in layout.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct PermuteUniform {
    dims: [u32; 4],
    strides: [u32; 4],
    len: u32,
    pad: [u32; 3],
}

/// The graph builders of this family: each checks its shapes and names the node in errors.
impl Graph {
    /// Flatten `[d0, d1, …] → [d0·d1·…]`.
    pub fn flatten(&mut self, name: &str, x: NodeId) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        self.push(name, Op::Flatten { x }, vec![xs.iter().product()])
    }

    /// Reshape to `shape` per sample: a view (no data movement; the gradient passes
    /// through).
    ///
    /// # Shapes
    /// `x [d0, d1, …]` → `shape`, with the same number of elements.
    pub fn reshape(&mut self, name: &str, x: NodeId, shape: &[usize]) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.node(x).name.clone();
        if shape.is_empty() {
            return Err(Error::shape(name, "reshape needs at least one dimension"));
        }
        let have: usize = xs.iter().product();
        let want = shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
        if want != Some(have) {
            return Err(Error::shape(
                name,
                format!(
                    "cannot reshape '{xname}' {xs:?} ({have} elements) to {shape:?} ({} elements)",
                    want.map_or("too many".to_string(), |w| w.to_string())
                ),
            ));
        }
        self.push(name, Op::Reshape { x }, shape.to_vec())
    }

    /// Channels-last samples to channels-first, `y[c, i1, …, ik] = x[i1, …, ik, c]`: NHWC
    /// images (`[H, W, C]` per sample) become the `[C, H, W]` the convolutions and poolings
    /// take. The permute runs on the device (a view when `C = 1` or the spatial size is 1);
    /// its gradient is the inverse permute.
    ///
    /// # Shapes
    /// `x [d1, …, dk, C]` (k ≥ 1) → `[C, d1, …, dk]`.
    pub fn channels_last(&mut self, name: &str, x: NodeId) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        if xs.len() < 2 {
            return Err(Error::shape(
                name,
                format!(
                    "channels_last needs a [..., C] input with at least 2 dims, but '{}' has shape {xs:?}",
                    self.node(x).name
                ),
            ));
        }
        let mut y = vec![xs[xs.len() - 1]];
        y.extend_from_slice(&xs[..xs.len() - 1]);
        self.push(name, Op::ChannelsLast { x }, y)
    }
}

/// `Op::Input`, `Op::Flatten`, `Op::Reshape`: views. The output is the input's tensor and
/// the gradient passes through unchanged (the input node has neither).
pub(crate) struct ViewRule;

impl Rule for ViewRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        if let Op::Flatten { x } | Op::Reshape { x } = lw.g.node(id).op {
            lw.set_out(id, lw.out_of(x));
        }
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        if let Op::Flatten { x } | Op::Reshape { x } = lw.g.node(id).op {
            lw.push_grad(x, dy);
        }
    }
}

/// `Op::ChannelsLast`: `[S, C] → [C, S]` per sample (S = the spatial size), a view when
/// `S = 1` or `C = 1`; the gradient is the inverse permute.
pub(crate) struct ChannelsLastRule;

impl ChannelsLastRule {
    /// `(x, S, C)`.
    fn parts(lw: &Lowering, id: NodeId) -> (NodeId, usize, usize) {
        let Op::ChannelsLast { x } = lw.g.node(id).op else {
            unreachable!("ChannelsLastRule on another op")
        };
        let xs = &lw.g.node(x).shape;
        (x, xs[..xs.len() - 1].iter().product(), xs[xs.len() - 1])
    }
}

impl Rule for ChannelsLastRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let (x, s, c) = Self::parts(lw, id);
        if s == 1 || c == 1 {
            lw.set_out(id, lw.out_of(x));
            return;
        }
        let y = lw.arena(lw.g.node(id).name.clone(), lw.g.numel(id));
        let l = Permute {
            xd: [1, lw.n, s, c],
            perm: [0, 1, 3, 2],
            batch_axis: Some(1),
        };
        lw.emit(id, l, vec![Some(lw.out_of(x)), Some(y)]);
        lw.set_out(id, y);
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let (x, s, c) = Self::parts(lw, id);
        if !lw.needs_grad(x) {
            return;
        }
        if s == 1 || c == 1 {
            lw.push_grad(x, dy);
            return;
        }
        let dx = lw.arena(format!("{}.dx", lw.g.node(id).name), lw.g.numel(x));
        let l = Permute {
            xd: [1, lw.n, c, s],
            perm: [0, 1, 3, 2],
            batch_axis: Some(1),
        };
        lw.emit(id, l, vec![Some(dy), Some(dx)]);
        lw.push_grad(x, dx);
    }
}
