//! The loss family (`shaders/loss.wgsl`, twin [`crate::cpu::loss`]): row-wise softmax and its
//! gradient, softmax cross-entropy and mean squared error with their gradients and metrics,
//! and the graph ops `Softmax`, `CrossEntropy` and `Mse`.
//!
//! # Shapes
//! `x [rows, cols]`; class targets `[rows]`, dense targets `[rows, cols]`; metrics
//! `[Σ loss·rows, Σ hits, rows, non-finite]`.

use std::any::Any;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{bytes, groups64, Binding, Data, GpuCall, Launch, Rule, Tolerance};
use crate::cpu;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graph::{Graph, NodeId, Op};
use crate::plan::{Lowering, TensorId};

/// Row-wise softmax (`backward: false`, bindings `x, y`) or its gradient
/// `dx = y ⊙ (dy − Σ_c dy·y)` (bindings `y, dy, dx`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Softmax {
    pub backward: bool,
    pub rows: usize,
    pub cols: usize,
}

impl Launch for Softmax {
    fn kernel(&self) -> &'static str {
        if self.backward {
            "softmax_backward"
        } else {
            "softmax_forward"
        }
    }

    fn bindings(&self) -> Vec<Binding> {
        let len = self.rows * self.cols;
        if self.backward {
            vec![
                Binding::read("y", len),
                Binding::read("dy", len),
                Binding::write("dx", len),
            ]
        } else {
            vec![Binding::read("x", len), Binding::write("y", len)]
        }
    }

    fn uniform(&self) -> Vec<u8> {
        bytes(&LossUniform::new(self.rows, self.cols, false, false, 1.0))
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(GpuCall {
            entry: self.kernel(),
            consts: Vec::new(),
            groups: groups64(self.rows),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let (r, c) = (self.rows, self.cols);
        if self.backward {
            b[2] = cpu::loss::softmax_backward(r, c, &b[0], &b[1]);
        } else {
            b[1] = cpu::loss::softmax_forward(r, c, &b[0]);
        }
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        Arc::new(Softmax { rows: n, ..*self })
    }

    fn describe(&self) -> String {
        format!("{}×{}", self.rows, self.cols)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Which loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// Softmax cross-entropy against class indices, mean over the rows.
    CrossEntropy,
    /// Squared error against dense targets, mean over every element.
    Mse,
    /// Binary cross-entropy with logits against dense targets, mean over every element
    /// (optionally weighing the positive term per column, PyTorch's `pos_weight`).
    BceLogits,
}

/// One loss launch: bindings `x, targets, dx, metrics`. The metrics block is added to
/// (`accumulate`, the executor: over the batches until they are taken) or overwritten.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loss {
    pub kind: LossKind,
    pub rows: usize,
    pub cols: usize,
    /// Write the gradient `dx` (training).
    pub grad: bool,
    pub accumulate: bool,
    /// `BceLogits` only: a `pos_weight [cols]` binding weighs the positive term.
    pub pos_weight: bool,
    /// `CrossEntropy` only: label smoothing ε in [0, 1] (PyTorch's `label_smoothing`).
    pub label_smoothing: f32,
}

impl Loss {
    /// The gradient's scale: the mean's divisor.
    fn scale(&self) -> f32 {
        match self.kind {
            LossKind::CrossEntropy => 1.0 / self.rows as f32,
            LossKind::Mse | LossKind::BceLogits => 1.0 / (self.rows * self.cols) as f32,
        }
    }
}

impl Launch for Loss {
    fn kernel(&self) -> &'static str {
        match self.kind {
            LossKind::CrossEntropy => "cross_entropy",
            LossKind::Mse => "mse",
            LossKind::BceLogits => "bce_logits",
        }
    }

    fn bindings(&self) -> Vec<Binding> {
        let len = self.rows * self.cols;
        let targets = match self.kind {
            LossKind::CrossEntropy => {
                Binding::read("targets", self.rows).holding(Data::Index(self.cols))
            }
            _ => Binding::read("targets", len),
        };
        let mut b = vec![Binding::read("x", len), targets];
        if self.kind == LossKind::BceLogits {
            let w = Binding::len_if(self.pos_weight, self.cols);
            b.push(Binding::read("pos_weight", w));
        }
        b.push(Binding::write("dx", Binding::len_if(self.grad, len)));
        b.push(Binding::update("metrics", 4));
        b
    }

    fn uniform(&self) -> Vec<u8> {
        let mut u = LossUniform::new(
            self.rows,
            self.cols,
            self.accumulate,
            self.grad,
            self.scale(),
        );
        u.smoothing = self.label_smoothing;
        bytes(&u)
    }

    /// One workgroup reduces every row.
    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        let consts = match self.kind {
            LossKind::BceLogits => vec![("POS_WEIGHT", self.pos_weight as u32)],
            _ => Vec::new(),
        };
        Ok(GpuCall {
            entry: self.kernel(),
            consts,
            groups: 1,
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let (r, c, s) = (self.rows, self.cols, self.scale());
        let (dx, m) = match self.kind {
            LossKind::CrossEntropy => {
                let t: Vec<u32> = b[1].iter().map(|v| v.to_bits()).collect();
                cpu::loss::cross_entropy_smoothed(r, c, &b[0], &t, s, self.label_smoothing)
            }
            LossKind::Mse => cpu::loss::mse(r, c, &b[0], &b[1], s),
            LossKind::BceLogits => cpu::loss::bce_logits(r, c, &b[0], &b[1], &b[2], s),
        };
        let (dxi, mi) = (b.len() - 2, b.len() - 1);
        if self.grad {
            b[dxi] = dx;
        }
        let acc = &mut b[mi];
        if self.accumulate && acc.len() == 4 {
            acc[0] += m[0];
            acc[1] += m[1];
            acc[2] += m[2];
            acc[3] = acc[3].max(m[3]);
        } else {
            *acc = m.to_vec();
        }
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        Arc::new(Loss { rows: n, ..*self })
    }

    fn describe(&self) -> String {
        format!("{}×{}", self.rows, self.cols)
    }

    /// The metrics are sums over the batch.
    fn tolerance(&self) -> Tolerance {
        Tolerance::REDUCTION
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The uniform block of the loss family (`LossUniform` in loss.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct LossUniform {
    rows: u32,
    cols: u32,
    accumulate: u32,
    has_grad: u32,
    scale: f32,
    smoothing: f32,
    pad: [u32; 2],
}

impl LossUniform {
    fn new(rows: usize, cols: usize, accumulate: bool, has_grad: bool, scale: f32) -> Self {
        LossUniform {
            rows: rows as u32,
            cols: cols as u32,
            accumulate: accumulate as u32,
            has_grad: has_grad as u32,
            scale,
            smoothing: 0.0,
            pad: [0; 2],
        }
    }
}

/// The graph builders of this family: each checks its shapes and names the node in errors.
impl Graph {
    /// Softmax over the features: `y_f = exp(x_f − max x) / Σ_g exp(x_g − max x)`; its
    /// gradient is `dx = y ⊙ (dy − Σ_f dy_f·y_f)`.
    ///
    /// As the input of [`Graph::cross_entropy`] (a softmax output layer, as Keras
    /// `Dense(activation='softmax')` with categorical cross-entropy) the loss is computed from
    /// the softmax's input logits, stably (`logsumexp(x) − x_t`, the same value as
    /// `−log y_t`), and its gradient `softmax(x) − onehot(t)` goes to the logits directly;
    /// the model's output ([`crate::Executor::predict`]) is then the probabilities.
    ///
    /// # Shapes
    /// `x [F]` → `[F]`.
    pub fn softmax(&mut self, name: &str, x: NodeId) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        if xs.len() != 1 {
            return Err(Error::shape(
                name,
                format!(
                    "softmax needs a flat [F] input, but '{}' has shape {xs:?} (add a Flatten)",
                    self.node(x).name
                ),
            ));
        }
        self.push(name, Op::Softmax { x }, xs)
    }

    /// Softmax + cross-entropy loss on `logits [K]` against class targets. When `logits` is
    /// a [`Graph::softmax`] node (a softmax output layer), the loss reads that node's input
    /// logits instead, and the model's output stays the probabilities.
    pub fn cross_entropy(&mut self, name: &str, logits: NodeId) -> Result<NodeId> {
        let s = self.check_ref(name, logits)?.shape.clone();
        if s.len() != 1 {
            return Err(Error::shape(
                name,
                format!("cross-entropy needs flat logits, got {s:?}"),
            ));
        }
        self.set_loss(name, Op::CrossEntropy { logits })
    }

    /// Binary cross-entropy with logits (PyTorch `BCEWithLogitsLoss`, mean over all elements)
    /// on `logits [K]` against dense targets in [0, 1] of the same shape: a sigmoid head (one
    /// unit for two classes) or multi-label targets. The model's output stays the logits.
    pub fn bce_with_logits(&mut self, name: &str, logits: NodeId) -> Result<NodeId> {
        let s = self.check_ref(name, logits)?.shape.clone();
        if s.len() != 1 {
            return Err(Error::shape(
                name,
                format!("binary cross-entropy needs flat logits, got {s:?}"),
            ));
        }
        self.set_loss(name, Op::BceWithLogits { logits })
    }

    /// Mean-squared-error loss on `pred` against dense targets of the same shape.
    pub fn mse(&mut self, name: &str, pred: NodeId) -> Result<NodeId> {
        self.check_ref(name, pred)?;
        self.set_loss(name, Op::Mse { pred })
    }
}

/// `Op::Softmax`: row-wise softmax; its gradient from the output. (Under a cross-entropy
/// loss the loss reads the softmax's input instead: see [`LossRule`].)
pub(crate) struct SoftmaxRule;

impl SoftmaxRule {
    fn launch(lw: &Lowering, id: NodeId, backward: bool) -> (NodeId, Softmax) {
        let Op::Softmax { x } = lw.g.node(id).op else {
            unreachable!("SoftmaxRule on another op")
        };
        let l = Softmax {
            backward,
            rows: lw.n,
            cols: lw.g.numel(x),
        };
        (x, l)
    }
}

impl Rule for SoftmaxRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let (x, l) = Self::launch(lw, id, false);
        let y = lw.arena(lw.g.node(id).name.clone(), lw.g.numel(id));
        lw.emit(id, l, vec![Some(lw.out_of(x)), Some(y)]);
        lw.set_out(id, y);
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let (x, l) = Self::launch(lw, id, true);
        if lw.needs_grad(x) {
            let dx = lw.arena(format!("{}.dx", lw.g.node(id).name), lw.g.numel(x));
            lw.emit(id, l, vec![Some(lw.out_of(id)), Some(dy), Some(dx)]);
            lw.push_grad(x, dx);
        }
    }
}

/// `Op::CrossEntropy`, `Op::Mse`: the loss with its gradient (training) and metrics. A
/// cross-entropy on a softmax output layer reads the softmax's input logits (stable, and the
/// gradient `softmax − onehot` goes to them); the softmax still yields the model's output.
pub(crate) struct LossRule;

impl Rule for LossRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let (input, kind) = match lw.g.node(id).op {
            Op::CrossEntropy { logits } => match lw.g.node(logits).op {
                Op::Softmax { x } => (x, LossKind::CrossEntropy),
                _ => (logits, LossKind::CrossEntropy),
            },
            Op::Mse { pred } => (pred, LossKind::Mse),
            Op::BceWithLogits { logits } => (logits, LossKind::BceLogits),
            _ => unreachable!("LossRule on another op"),
        };
        let cols = lw.g.numel(input);
        let name = lw.g.node(id).name.clone();
        let dx = lw.train.then(|| lw.arena(format!("{name}.grad"), cols));
        let l = Loss {
            kind,
            rows: lw.n,
            cols,
            grad: lw.train,
            accumulate: true,
            pos_weight: false,
            label_smoothing: lw.g.label_smoothing(),
        };
        let mut args = vec![Some(lw.out_of(input)), Some(lw.targets())];
        if kind == LossKind::BceLogits {
            args.push(None);
        }
        args.extend([dx, Some(lw.metrics())]);
        lw.emit_loss(id, l, args);
        if let Some(dx) = dx {
            lw.push_grad(input, dx);
        }
    }

    /// The loss is where gradients start: its forward step pushed them.
    fn backward(&self, _lw: &mut Lowering, _id: NodeId, _dy: TensorId) {}
}
