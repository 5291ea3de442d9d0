//! The normalisation family (`shaders/norm.wgsl`, twin [`crate::cpu::norm`]): batch norm in
//! training and evaluation mode and its gradient, and the graph op `BatchNorm`.
//!
//! # Shapes
//! `x, y, dy, dx [N, C, S]` (S = H·W, or 1), `γ, β, running statistics [C]`,
//! `saved = [mean; inv_std]` (2·C).

use std::any::Any;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{bytes, groups64, Binding, GpuCall, Launch, Rule, Tolerance};
use crate::cpu;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graph::{Graph, NodeId, Op};
use crate::plan::{Lowering, TensorId};

/// Which batch norm kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormPass {
    /// Batch statistics; `saved` for the backward; running statistics updated in place.
    /// Bindings `x, γ, β, y, saved, running_mean, running_var`.
    Train,
    /// The running statistics. Bindings `x, γ, β, running_mean, running_var, y`.
    Eval,
    /// `dx`, `dγ`, `dβ`. Bindings `x, dy, γ, saved, dx, dγ, dβ`.
    Backward,
}

/// One batch norm launch over `d = [N, C, S]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    pub pass: NormPass,
    pub d: [usize; 3],
    pub momentum: f32,
    pub eps: f32,
}

impl Launch for BatchNorm {
    fn kernel(&self) -> &'static str {
        match self.pass {
            NormPass::Train => "batch_norm_forward_train",
            NormPass::Eval => "batch_norm_forward_eval",
            NormPass::Backward => "batch_norm_backward",
        }
    }

    fn bindings(&self) -> Vec<Binding> {
        let (len, c) = (self.d.iter().product(), self.d[1]);
        let r = Binding::read;
        match self.pass {
            NormPass::Train => vec![
                r("x", len),
                r("gamma", c),
                r("beta", c),
                Binding::write("y", len),
                Binding::write("saved", 2 * c),
                Binding::update("running_mean", c),
                Binding::update("running_var", c),
            ],
            NormPass::Eval => vec![
                r("x", len),
                r("gamma", c),
                r("beta", c),
                r("running_mean", c),
                r("running_var", c),
                Binding::write("y", len),
            ],
            NormPass::Backward => vec![
                r("x", len),
                r("dy", len),
                r("gamma", c),
                r("saved", 2 * c),
                Binding::write("dx", len),
                Binding::write("dgamma", c),
                Binding::write("dbeta", c),
            ],
        }
    }

    fn uniform(&self) -> Vec<u8> {
        let (momentum, eps) = match self.pass {
            NormPass::Train => (self.momentum, self.eps),
            NormPass::Eval => (0.0, self.eps),
            NormPass::Backward => (0.0, 1e-5),
        };
        bytes(&NormUniform {
            n: self.d[0] as u32,
            c: self.d[1] as u32,
            s: self.d[2] as u32,
            pad0: 0,
            momentum,
            eps,
            pad1: [0; 2],
        })
    }

    /// One workgroup per channel, except evaluation: one invocation per element. The
    /// channel's units (see norm.wgsl and [`cpu::norm::units`]) pick the variant.
    fn gpu(&self, ctx: &GpuContext) -> Result<GpuCall> {
        use cpu::norm::Units;
        let channels = self.d[1] as u64;
        let (entry, groups) = match (self.pass, cpu::norm::units(self.d[1], self.d[2])) {
            (NormPass::Eval, _) => (self.kernel(), groups64(self.d.iter().product())),
            (NormPass::Train, Units::Aligned4) => ("batch_norm_forward_train_v4", channels),
            (NormPass::Train, Units::Unaligned4) => ("batch_norm_forward_train_u4", channels),
            (NormPass::Backward, Units::Aligned4) => ("batch_norm_backward_v4", channels),
            (NormPass::Backward, Units::Unaligned4) => ("batch_norm_backward_u4", channels),
            _ => (self.kernel(), channels),
        };
        let consts = match self.pass {
            NormPass::Eval => Vec::new(),
            _ => vec![("SERIAL_TREE", ctx.tiles().serial_tree as u32)],
        };
        Ok(GpuCall {
            entry,
            consts,
            groups,
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        use cpu::norm as nm;
        let d = self.d;
        match self.pass {
            NormPass::Train => {
                let (mut rm, mut rv) = (std::mem::take(&mut b[5]), std::mem::take(&mut b[6]));
                let (y, saved) = nm::batch_norm_forward_train(
                    d,
                    &b[0],
                    &b[1],
                    &b[2],
                    &mut rm,
                    &mut rv,
                    self.momentum,
                    self.eps,
                );
                (b[3], b[4], b[5], b[6]) = (y, saved, rm, rv);
            }
            NormPass::Eval => {
                b[5] = nm::batch_norm_forward_eval(d, &b[0], &b[1], &b[2], &b[3], &b[4], self.eps)
            }
            NormPass::Backward => {
                let (dx, dg, db) = nm::batch_norm_backward(d, &b[0], &b[1], &b[2], &b[3]);
                (b[4], b[5], b[6]) = (dx, dg, db);
            }
        }
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        let mut l = *self;
        l.d[0] = n;
        Arc::new(l)
    }

    fn describe(&self) -> String {
        format!("{}×{}×{}", self.d[0], self.d[1], self.d[2])
    }

    /// Statistics are sums over the batch and the plane.
    fn tolerance(&self) -> Tolerance {
        match self.pass {
            NormPass::Eval => Tolerance::DEFAULT,
            _ => Tolerance::REDUCTION,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The uniform block of the batch norm kernels (`NormUniform` in norm.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct NormUniform {
    n: u32,
    c: u32,
    s: u32,
    pad0: u32,
    momentum: f32,
    eps: f32,
    pad1: [u32; 2],
}

/// The graph builders of this family: each checks its shapes and names the node in errors.
impl Graph {
    /// Batch normalisation of `x [C]` or `[C,H,W]` (same shape out) with parameters
    /// `name.weight`, `name.bias` `[C]` and running statistics `name.running_mean`,
    /// `name.running_var` `[C]`; PyTorch's defaults are `momentum = 0.1`, `eps = 1e-5`.
    pub fn batch_norm(&mut self, name: &str, x: NodeId, momentum: f32, eps: f32) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.node(x).name.clone();
        if (xs.len() != 1 && xs.len() != 3) || xs.contains(&0) {
            return Err(Error::shape(
                name,
                format!("batch_norm needs a [C] or [C,H,W] input, but '{xname}' has shape {xs:?}"),
            ));
        }
        if !(eps > 0.0 && eps.is_finite() && momentum.is_finite()) {
            return Err(Error::invalid(
                name,
                format!("batch_norm needs eps > 0 and a finite momentum, got eps {eps}, momentum {momentum}"),
            ));
        }
        let c = xs[0];
        let w = self.param(format!("{name}.weight"), vec![c], 1);
        let b = self.param(format!("{name}.bias"), vec![c], 1);
        self.push(
            name,
            Op::BatchNorm {
                x,
                w,
                b,
                momentum,
                eps,
            },
            xs,
        )
    }

    /// Non-learnable state tensors (batch norm running statistics), in node order:
    /// `(name, shape, initial value)`.
    pub fn buffers(&self) -> Vec<(String, Vec<usize>, f32)> {
        let mut out = Vec::new();
        for n in self.nodes() {
            if let Op::BatchNorm { x, .. } = n.op {
                let c = self.node(x).shape[0];
                out.push((format!("{}.running_mean", n.name), vec![c], 0.0));
                out.push((format!("{}.running_var", n.name), vec![c], 1.0));
            }
        }
        out
    }
}

/// `Op::BatchNorm`: training mode normalises with the batch statistics (and updates the
/// running ones), evaluation mode with the running statistics; the gradient includes the
/// batch statistics' dependence on x (see norm.wgsl).
pub(crate) struct BatchNormRule;

impl BatchNormRule {
    fn launch(lw: &Lowering, id: NodeId, pass: NormPass) -> (NodeId, usize, usize, BatchNorm) {
        let Op::BatchNorm {
            x,
            w,
            b,
            momentum,
            eps,
        } = lw.g.node(id).op
        else {
            unreachable!("BatchNormRule on another op")
        };
        let s = &lw.g.node(x).shape;
        let d = [lw.n, s[0], s[1..].iter().product()];
        let l = BatchNorm {
            pass,
            d,
            momentum,
            eps,
        };
        (x, w, b, l)
    }
}

impl Rule for BatchNormRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let pass = if lw.train {
            NormPass::Train
        } else {
            NormPass::Eval
        };
        let (x, w, b, l) = Self::launch(lw, id, pass);
        let name = lw.g.node(id).name.clone();
        let y = lw.arena(name.clone(), lw.g.numel(id));
        let (rm, rv) = lw.running_stats(id);
        let (x, w, b) = (lw.out_of(x), lw.param(w), lw.param(b));
        let args = if lw.train {
            let saved = lw.fixed(format!("{name}.saved"), 2 * l.d[1]);
            lw.keep(id, vec![saved]);
            vec![x, w, b, y, saved, rm, rv]
        } else {
            vec![x, w, b, rm, rv, y]
        };
        lw.emit(id, l, args.into_iter().map(Some).collect());
        lw.set_out(id, y);
    }

    /// `dx` is written even when x needs no gradient (the kernel computes it regardless).
    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let (x, w, b, l) = Self::launch(lw, id, NormPass::Backward);
        let dx = lw.arena(format!("{}.dx", lw.g.node(id).name), lw.g.numel(x));
        let saved = lw.kept(id)[0];
        let args = [
            lw.out_of(x),
            dy,
            lw.param(w),
            saved,
            dx,
            lw.grad(w),
            lw.grad(b),
        ];
        lw.emit(id, l, args.into_iter().map(Some).collect());
        if lw.needs_grad(x) {
            lw.push_grad(x, dx);
        }
    }
}
