//! The elementwise family (`shaders/elementwise.wgsl`, twin [`crate::cpu::elementwise`]):
//! activations and their derivatives, sums, dropout and rescaling, the second pass of split
//! reductions ([`SumParts`]), and the graph ops
//! `Activation`, `Add`, `Dropout` and `Rescaling`.
//!
//! # Shapes
//! Every tensor is `n` samples of `per` elements (any per-sample shape).

use std::any::Any;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{bytes, groups64, Binding, Data, GpuCall, Launch, Rule};
use crate::cpu;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graph::{Graph, NodeId, Op};
use crate::plan::{Lowering, TensorId};
use crate::shape::Activation;

/// Which elementwise kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ew {
    /// `y = f(x)`.
    ActivationForward(Activation),
    /// `dx = dy·f'(x)`.
    ActivationBackward(Activation),
    /// `c = a + b`.
    Add,
    /// `y = keep(i) ? x·1/(1−p) : 0`, the mask hashing (`seed`, the step counter, `i`).
    DropoutForward { p: f32, seed: u32 },
    /// `dx = keep(i) ? dy·1/(1−p) : 0` (the same mask).
    DropoutBackward { p: f32, seed: u32 },
    /// `y = x·scale + offset` (its gradient: `scale` with offset 0).
    Rescale { scale: f32, offset: f32 },
}

/// One elementwise launch over `n` samples of `per` elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Elementwise {
    pub op: Ew,
    pub n: usize,
    pub per: usize,
}

impl Elementwise {
    pub fn new(op: Ew, n: usize, per: usize) -> Self {
        Elementwise { op, n, per }
    }

    fn len(&self) -> usize {
        self.n * self.per
    }
}

impl Launch for Elementwise {
    fn kernel(&self) -> &'static str {
        match self.op {
            Ew::ActivationForward(_) => "activation_forward",
            Ew::ActivationBackward(_) => "activation_backward",
            Ew::Add => "add",
            Ew::DropoutForward { .. } => "dropout_forward",
            Ew::DropoutBackward { .. } => "dropout_backward",
            Ew::Rescale { .. } => "rescale",
        }
    }

    fn bindings(&self) -> Vec<Binding> {
        let len = self.len();
        let counter = Binding::read("step", 1).holding(Data::Counter);
        match self.op {
            Ew::ActivationForward(_) | Ew::Rescale { .. } => {
                vec![Binding::read("x", len), Binding::write("y", len)]
            }
            Ew::ActivationBackward(_) => vec![
                Binding::read("x", len),
                Binding::read("dy", len),
                Binding::write("dx", len),
            ],
            Ew::Add => vec![
                Binding::read("a", len),
                Binding::read("b", len),
                Binding::write("c", len),
            ],
            Ew::DropoutForward { .. } => {
                vec![Binding::read("x", len), counter, Binding::write("y", len)]
            }
            Ew::DropoutBackward { .. } => {
                vec![Binding::read("dy", len), counter, Binding::write("dx", len)]
            }
        }
    }

    fn uniform(&self) -> Vec<u8> {
        let len = self.len() as u32;
        match self.op {
            Ew::ActivationForward(a) | Ew::ActivationBackward(a) => bytes(&EwUniform {
                len,
                act: a.code(),
                alpha: a.alpha(),
                pad: 0,
            }),
            Ew::Add => bytes(&EwUniform {
                len,
                act: 0,
                alpha: 0.0,
                pad: 0,
            }),
            Ew::DropoutForward { p, seed } | Ew::DropoutBackward { p, seed } => {
                bytes(&DropoutUniform {
                    len,
                    seed,
                    p,
                    scale: cpu::elementwise::dropout_scale(p),
                })
            }
            Ew::Rescale { scale, offset } => bytes(&RescaleUniform {
                len,
                scale,
                offset,
                pad: 0,
            }),
        }
    }

    /// An activation is the pipeline constant `ACT`, never a branch on the uniform (a CPU
    /// adapter such as lavapipe recompiles a shader that branches on a uniform value at
    /// every bind — see docs/SOAK.md). Samples of a multiple of 4 elements take the `_v4`
    /// twins of activations and `add` (4 elements per invocation; the same bits).
    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        let consts = match self.op {
            Ew::ActivationForward(a) | Ew::ActivationBackward(a) => vec![("ACT", a.code())],
            _ => Vec::new(),
        };
        let v4 = self.per.is_multiple_of(4);
        let (entry, per_invocation) = match self.op {
            Ew::ActivationForward(_) if v4 => ("activation_forward_v4", 4),
            Ew::ActivationBackward(_) if v4 => ("activation_backward_v4", 4),
            Ew::Add if v4 => ("add_v4", 4),
            _ => (self.kernel(), 1),
        };
        Ok(GpuCall {
            entry,
            consts,
            groups: groups64(self.len() / per_invocation),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        use cpu::elementwise as ew;
        let step = || b[1].first().map_or(0, |v| v.to_bits());
        match self.op {
            Ew::ActivationForward(a) => b[1] = ew::activation_forward(a, &b[0]),
            Ew::ActivationBackward(a) => b[2] = ew::activation_backward(a, &b[0], &b[1]),
            Ew::Add => b[2] = ew::add(&b[0], &b[1]),
            Ew::DropoutForward { p, seed } => b[2] = ew::dropout_forward(seed, step(), p, &b[0]),
            Ew::DropoutBackward { p, seed } => b[2] = ew::dropout_backward(seed, step(), p, &b[0]),
            Ew::Rescale { scale, offset } => b[1] = ew::rescale(scale, offset, &b[0]),
        }
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        Arc::new(Elementwise { n, ..*self })
    }

    fn describe(&self) -> String {
        match self.op {
            Ew::ActivationForward(a) | Ew::ActivationBackward(a) => {
                format!("{} {a:?}", self.len())
            }
            _ => format!("{}", self.len()),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The second pass of a split reduction (`sum_parts`): the `parts` partial results of a
/// reduction, each `a + b` values (e.g. a weight gradient and its bias gradient), added in
/// partition order into `a` and `b` — the same bits every run.
///
/// # Shapes
/// `parts [parts, a + b]` → `a [a]`, `b [b]` (`b == 0`: no second output).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SumParts {
    pub parts: usize,
    pub a: usize,
    pub b: usize,
}

impl Launch for SumParts {
    fn kernel(&self) -> &'static str {
        "sum_parts"
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            Binding::read("parts", self.parts * (self.a + self.b)),
            Binding::write("a", self.a),
            Binding::write("b", self.b),
        ]
    }

    fn uniform(&self) -> Vec<u8> {
        let u = |v: usize| v as u32;
        bytes(&PartsUniform {
            len_a: u(self.a),
            len_b: u(self.b),
            parts: u(self.parts),
            pad: 0,
        })
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(GpuCall {
            entry: self.kernel(),
            consts: Vec::new(),
            groups: groups64(self.a + self.b),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let (a, rest) = cpu::elementwise::sum_parts(&b[0], self.a, self.b);
        b[1] = a;
        if self.b > 0 {
            b[2] = rest;
        }
    }

    /// The partitions are fixed when the plan is made; the batch only changes their rows.
    fn at_batch(&self, _n: usize) -> Arc<dyn Launch> {
        Arc::new(*self)
    }

    fn describe(&self) -> String {
        format!("{} parts × ({} + {})", self.parts, self.a, self.b)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The uniform block of `sum_parts` (`PartsUniform` in elementwise.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct PartsUniform {
    len_a: u32,
    len_b: u32,
    parts: u32,
    pad: u32,
}

/// The uniform block of `activation_*` and `add` (`EwUniform` in elementwise.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct EwUniform {
    len: u32,
    act: u32,
    alpha: f32,
    pad: u32,
}

/// The uniform block of `dropout_*` (`DropoutUniform` in elementwise.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct DropoutUniform {
    len: u32,
    seed: u32,
    p: f32,
    scale: f32,
}

/// The uniform block of `rescale` (`RescaleUniform` in elementwise.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct RescaleUniform {
    len: u32,
    scale: f32,
    offset: f32,
    pad: u32,
}

/// Emits `op` reading `x` into a new tensor `name` of `id`'s size.
fn unary(lw: &mut Lowering, id: NodeId, op: Ew, name: String, x: TensorId) -> TensorId {
    let per = lw.g.numel(id);
    let y = lw.arena(name, per);
    let mut args = vec![Some(x), Some(y)];
    if matches!(op, Ew::DropoutForward { .. } | Ew::DropoutBackward { .. }) {
        args.insert(1, Some(lw.counter()));
    }
    lw.emit(id, Elementwise::new(op, lw.n, per), args);
    y
}

/// The graph builders of this family: each checks its shapes and names the node in errors.
impl Graph {
    /// Dropout with drop probability `p ∈ [0, 1)`; any shape, the same shape out.
    pub fn dropout(&mut self, name: &str, x: NodeId, p: f32) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                name,
                format!("dropout probability {p} must be in [0, 1)"),
            ));
        }
        self.push(name, Op::Dropout { x, p }, xs)
    }

    /// `y = x·scale + offset` elementwise (Keras `Rescaling`); any shape.
    pub fn rescaling(&mut self, name: &str, x: NodeId, scale: f32, offset: f32) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        if !scale.is_finite() || !offset.is_finite() {
            return Err(Error::invalid(
                name,
                format!("rescaling needs finite scale and offset, got {scale} and {offset}"),
            ));
        }
        self.push(name, Op::Rescaling { x, scale, offset }, xs)
    }

    /// Elementwise activation.
    pub fn activation(&mut self, name: &str, x: NodeId, act: Activation) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        if let Activation::LeakyRelu(a) | Activation::Elu(a) = act {
            if !a.is_finite() {
                return Err(Error::invalid(
                    name,
                    format!("activation parameter {a} is not finite"),
                ));
            }
        }
        self.push(name, Op::Activation { x, act }, xs)
    }

    /// Elementwise sum; both operands must have the same shape.
    pub fn add(&mut self, name: &str, a: NodeId, b: NodeId) -> Result<NodeId> {
        let sa = self.check_ref(name, a)?.shape.clone();
        let sb = self.check_ref(name, b)?.shape.clone();
        if sa != sb {
            return Err(Error::shape(
                name,
                format!(
                    "operands '{}' {sa:?} and '{}' {sb:?} differ in shape",
                    self.node(a).name,
                    self.node(b).name
                ),
            ));
        }
        self.push(name, Op::Add { a, b }, sa)
    }
}

/// `Op::Activation`: `y = f(x)`, `dx = dy·f'(x)`. When the planner fused it into its
/// producer (a conv or linear output) it is an alias, and the gradient passes straight to the
/// producer, which applies `f'` itself.
pub(crate) struct ActivationRule;

impl ActivationRule {
    fn parts(lw: &Lowering, id: NodeId) -> (NodeId, Activation) {
        let Op::Activation { x, act } = lw.g.node(id).op else {
            unreachable!("ActivationRule on another op")
        };
        (x, act)
    }
}

impl Rule for ActivationRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let (x, act) = Self::parts(lw, id);
        if lw.is_fused(id) {
            lw.set_out(id, lw.out_of(x));
            return;
        }
        let name = lw.g.node(id).name.clone();
        let y = unary(lw, id, Ew::ActivationForward(act), name, lw.out_of(x));
        lw.set_out(id, y);
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let (x, act) = Self::parts(lw, id);
        if lw.is_fused(id) {
            lw.push_grad(x, dy);
        } else if lw.needs_grad(x) {
            let per = lw.g.numel(x);
            let dx = lw.arena(format!("{}.dx", lw.g.node(id).name), per);
            let args = vec![Some(lw.out_of(x)), Some(dy), Some(dx)];
            let l = Elementwise::new(Ew::ActivationBackward(act), lw.n, per);
            lw.emit(id, l, args);
            lw.push_grad(x, dx);
        }
    }
}

/// `Op::Add`: `c = a + b`; both operands receive `dy`.
pub(crate) struct AddRule;

impl Rule for AddRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let Op::Add { a, b } = lw.g.node(id).op else {
            unreachable!("AddRule on another op")
        };
        let c = lw.arena(lw.g.node(id).name.clone(), lw.g.numel(id));
        let args = vec![Some(lw.out_of(a)), Some(lw.out_of(b)), Some(c)];
        lw.emit(id, Elementwise::new(Ew::Add, lw.n, lw.g.numel(id)), args);
        lw.set_out(id, c);
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let Op::Add { a, b } = lw.g.node(id).op else {
            unreachable!("AddRule on another op")
        };
        for v in [a, b] {
            if lw.needs_grad(v) {
                lw.push_grad(v, dy);
            }
        }
    }
}

/// `Op::Dropout`: in training the hashed mask (seeded by the node), its gradient the same
/// mask; in evaluation the identity (an alias, or a copy when it is the model's output).
pub(crate) struct DropoutRule;

impl DropoutRule {
    fn parts(lw: &Lowering, id: NodeId) -> (NodeId, f32) {
        let Op::Dropout { x, p } = lw.g.node(id).op else {
            unreachable!("DropoutRule on another op")
        };
        (x, p)
    }
}

impl Rule for DropoutRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let (x, p) = Self::parts(lw, id);
        let name = lw.g.node(id).name.clone();
        let seed = id as u32;
        let xt = lw.out_of(x);
        if lw.train || lw.is_output(id) {
            // evaluation of the model's output: the output tensor must hold it (p = 0 copies)
            let p = if lw.train { p } else { 0.0 };
            let y = unary(lw, id, Ew::DropoutForward { p, seed }, name, xt);
            lw.set_out(id, y);
        } else {
            let y = lw.arena(name, lw.g.numel(id));
            lw.alias(xt, y);
            lw.set_out(id, xt);
        }
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let (x, p) = Self::parts(lw, id);
        if lw.needs_grad(x) {
            let name = format!("{}.dx", lw.g.node(id).name);
            let dx = unary(lw, id, Ew::DropoutBackward { p, seed: id as u32 }, name, dy);
            lw.push_grad(x, dx);
        }
    }
}

/// `Op::Rescaling`: `y = x·scale + offset`, `dx = dy·scale`.
pub(crate) struct RescalingRule;

impl RescalingRule {
    fn parts(lw: &Lowering, id: NodeId) -> (NodeId, f32, f32) {
        let Op::Rescaling { x, scale, offset } = lw.g.node(id).op else {
            unreachable!("RescalingRule on another op")
        };
        (x, scale, offset)
    }
}

impl Rule for RescalingRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let (x, scale, offset) = Self::parts(lw, id);
        let name = lw.g.node(id).name.clone();
        let y = unary(lw, id, Ew::Rescale { scale, offset }, name, lw.out_of(x));
        lw.set_out(id, y);
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let (x, scale, _) = Self::parts(lw, id);
        if lw.needs_grad(x) {
            let name = format!("{}.dx", lw.g.node(id).name);
            let op = Ew::Rescale { scale, offset: 0.0 };
            let dx = unary(lw, id, op, name, dy);
            lw.push_grad(x, dx);
        }
    }
}
