//! The graph: a DAG of ops with shapes inferred and checked as nodes are added.
//!
//! This module holds the op vocabulary ([`Op`]) and the graph itself; each op's builder
//! method (its shape rule) lives with its family in [`crate::ops`], beside its forward and
//! gradient rules and its kernels.
//!
//! Shapes here are per sample (the batch dimension is chosen when the graph is
//! planned). Nodes can only refer to earlier nodes, so the insertion order is a
//! topological order. A tensor may be used several times (residual connections);
//! its gradients are then summed.
//!
//! ```
//! use wgcnn::graph::Graph;
//! use wgcnn::{Activation, Conv2dParams};
//! # fn main() -> Result<(), wgcnn::Error> {
//! let mut g = Graph::new();
//! let x = g.input("x", &[1, 8, 8])?;
//! let c = g.conv2d("c1", x, 4, [3, 3], Conv2dParams::new(1, 1), true)?;
//! let r = g.activation("r1", c, Activation::Relu)?;
//! let s = g.add("res", r, c)?;             // c is used twice
//! let f = g.flatten("flat", s)?;
//! let l = g.linear("fc", f, 10, true)?;
//! g.cross_entropy("loss", l)?;
//! assert_eq!(g.node(l).shape, vec![10]);
//! # Ok(()) }
//! ```

use super::shape::{Pool1dParams, Pool3dParams};
use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::init::{fan_in_and_fan_out, Init};
use crate::shape::{Activation, ConvParams, Pool2dParams, PoolKind, PoolParams};

/// Index of a node in its graph.
pub type NodeId = usize;

/// Index of a parameter in its graph.
pub type ParamId = usize;

/// The op vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The data input (one per graph).
    Input,
    /// Convolution over 1, 2 or 3 spatial axes (the weight's rank) with optional bias and
    /// an optionally fused activation; cross-correlation unless `p.flip`.
    Conv {
        x: NodeId,
        w: ParamId,
        b: Option<ParamId>,
        p: ConvParams,
        act: Option<Activation>,
    },
    /// 2-D max-pooling (records argmax indices for the backward pass).
    MaxPool2d { x: NodeId, p: Pool2dParams },
    /// 2-D min-pooling (records argmin indices; the backward routes like max-pooling).
    MinPool2d { x: NodeId, p: Pool2dParams },
    /// 2-D average pooling (padding counts as 0, divisor kh·kw: `count_include_pad=True`).
    AvgPool2d { x: NodeId, p: Pool2dParams },
    /// Mean over each channel's plane: `[C,H,W] → [C]`.
    GlobalAvgPool { x: NodeId },
    /// `y = x·wᵀ + b` with an optionally fused activation.
    Linear {
        x: NodeId,
        w: ParamId,
        b: Option<ParamId>,
        act: Option<Activation>,
    },
    /// Reshape to one dimension per sample (a view, no data movement).
    Flatten { x: NodeId },
    /// Elementwise activation.
    Activation { x: NodeId, act: Activation },
    /// Dropout: in training, zeroes each element with probability `p` (a counter-based
    /// hash of the layer, the training step and the element index) and scales the kept
    /// ones by `1/(1−p)`; in evaluation the identity.
    Dropout { x: NodeId, p: f32 },
    /// `y = x·scale + offset` elementwise (Keras `Rescaling`).
    Rescaling { x: NodeId, scale: f32, offset: f32 },
    /// Elementwise sum of two tensors of the same shape.
    Add { a: NodeId, b: NodeId },
    /// Batch normalisation over the batch (and H, W) per channel of `[C]` or `[C,H,W]`
    /// (PyTorch `BatchNorm1d/2d`): learnable `w` (γ, init 1) and `b` (β, init 0), running
    /// statistics `<name>.running_mean` / `<name>.running_var` (see [`Graph::buffers`]).
    BatchNorm {
        x: NodeId,
        w: ParamId,
        b: ParamId,
        momentum: f32,
        eps: f32,
    },
    /// Softmax + cross-entropy against integer class targets (mean over the batch); on an
    /// [`Op::Softmax`] node it reads that node's input logits.
    CrossEntropy { logits: NodeId },
    /// Mean squared error against dense targets (mean over all elements).
    Mse { pred: NodeId },
    /// Binary cross-entropy with logits (PyTorch `BCEWithLogitsLoss`, mean over all
    /// elements) against dense targets in [0, 1]: sigmoid heads, multi-label too.
    BceWithLogits { logits: NodeId },
    /// A view with another per-sample shape of the same element count (no data movement;
    /// the gradient passes through), like [`Op::Flatten`].
    Reshape { x: NodeId },
    /// 1-D max-pooling of `[C, L]` (lowered to 2-D max-pooling of the `[C, 1, L]` view).
    MaxPool1d { x: NodeId, p: Pool1dParams },
    /// 1-D average pooling of `[C, L]` (`count_include_pad=True`).
    AvgPool1d { x: NodeId, p: Pool1dParams },
    /// 3-D max-pooling of `[C, D, H, W]` (lowered to two 2-D max-poolings, see
    /// [`Pool3dParams`]).
    MaxPool3d { x: NodeId, p: Pool3dParams },
    /// 3-D average pooling of `[C, D, H, W]` (`count_include_pad=True`; two 2-D stages).
    AvgPool3d { x: NodeId, p: Pool3dParams },
    /// 1-D min-pooling of `[C, L]` (padding +∞, the first minimum; routed like max-pooling).
    MinPool1d { x: NodeId, p: Pool1dParams },
    /// 3-D min-pooling of `[C, D, H, W]` (two 2-D min-poolings, like [`Op::MaxPool3d`]).
    MinPool3d { x: NodeId, p: Pool3dParams },
    /// Softmax over the features of a flat `[F]` sample. Under a cross-entropy loss the loss
    /// reads the softmax's *input* logits (Keras `Dense(activation='softmax')` with
    /// categorical cross-entropy), while the model's output is the probabilities.
    Softmax { x: NodeId },
    /// Max-, min- or average pooling of `[C, L]`, `[C, H, W]` or `[C, D, H, W]` (the input's
    /// rank) with every window option of [`PoolParams`] (`same`, `ceil_mode`, anchor and
    /// flip); lowered to 2-D stages like the ops above.
    Pool {
        x: NodeId,
        kind: PoolKind,
        p: PoolParams,
    },
    /// Channels-last samples to channels-first: `[d1, …, dk, C] → [C, d1, …, dk]` (NHWC →
    /// NCHW for images), a permute on the device.
    ChannelsLast { x: NodeId },
}

impl Op {
    /// The nodes this op reads.
    pub fn inputs(&self) -> Vec<NodeId> {
        match *self {
            Op::Input => vec![],
            Op::Conv { x, .. }
            | Op::MaxPool2d { x, .. }
            | Op::MinPool2d { x, .. }
            | Op::AvgPool2d { x, .. }
            | Op::GlobalAvgPool { x }
            | Op::Linear { x, .. }
            | Op::Flatten { x }
            | Op::Dropout { x, .. }
            | Op::Rescaling { x, .. }
            | Op::Activation { x, .. }
            | Op::BatchNorm { x, .. } => vec![x],
            Op::Add { a, b } => vec![a, b],
            Op::CrossEntropy { logits } => vec![logits],
            Op::Mse { pred } => vec![pred],
            Op::BceWithLogits { logits } => vec![logits],
            Op::Reshape { x }
            | Op::MaxPool1d { x, .. }
            | Op::AvgPool1d { x, .. }
            | Op::MaxPool3d { x, .. }
            | Op::AvgPool3d { x, .. }
            | Op::MinPool1d { x, .. }
            | Op::MinPool3d { x, .. }
            | Op::Pool { x, .. }
            | Op::Softmax { x }
            | Op::ChannelsLast { x } => vec![x],
        }
    }

    /// The parameters this op owns.
    pub fn params(&self) -> Vec<ParamId> {
        match *self {
            Op::Conv { w, b, .. } | Op::Linear { w, b, .. } => {
                std::iter::once(w).chain(b).collect()
            }
            Op::BatchNorm { w, b, .. } => vec![w, b],
            _ => vec![],
        }
    }
}

/// One node: its name, op and per-sample output shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub shape: Vec<usize>,
}

/// A learnable tensor, named like PyTorch (`c1.weight`, `c1.bias`).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    /// Fan-in used by the default (Kaiming-uniform) initialisation.
    pub fan_in: usize,
}

impl Param {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a zero-sized parameter (never produced by the builders).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The role of a parameter in its layer ([`Graph::param_kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A conv or linear weight (`[O, C/groups, k…]`, `[out, in]`).
    Weight,
    /// The bias of the conv or linear layer whose weight is the given parameter.
    Bias(ParamId),
    /// Batch norm γ (`<name>.weight`).
    NormWeight,
    /// Batch norm β (`<name>.bias`).
    NormBias,
}

/// A model graph. See the module docs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    nodes: Vec<Node>,
    params: Vec<Param>,
    input: Option<NodeId>,
    loss: Option<NodeId>,
    label_smoothing: f32,
    /// Initialisers set per parameter (a side table: [`Param`]'s fields are public).
    inits: BTreeMap<ParamId, Init>,
    /// Graph-wide defaults for weights and for biases (see [`crate::init`]).
    default_init: Option<Init>,
    default_bias_init: Option<Init>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// All nodes in topological (insertion) order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// All parameters in creation order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The input node, if declared.
    pub fn input_node(&self) -> Option<NodeId> {
        self.input
    }

    /// The loss node, if declared.
    pub fn loss_node(&self) -> Option<NodeId> {
        self.loss
    }

    /// The node feeding the loss (logits or predictions).
    pub fn output_node(&self) -> Option<NodeId> {
        self.loss.map(|l| self.nodes[l].op.inputs()[0])
    }

    pub(crate) fn check_ref(&self, name: &str, id: NodeId) -> Result<&Node> {
        let n = self
            .nodes
            .get(id)
            .ok_or_else(|| Error::shape(name, format!("refers to unknown node #{id}")))?;
        if matches!(
            n.op,
            Op::CrossEntropy { .. } | Op::Mse { .. } | Op::BceWithLogits { .. }
        ) {
            return Err(Error::shape(
                name,
                format!("cannot consume the loss node '{}'", n.name),
            ));
        }
        Ok(n)
    }

    pub(crate) fn push(&mut self, name: &str, op: Op, shape: Vec<usize>) -> Result<NodeId> {
        if self.nodes.iter().any(|n| n.name == name) {
            return Err(Error::shape(name, "a node with this name already exists"));
        }
        if shape.contains(&0) {
            return Err(Error::shape(
                name,
                format!("output shape {shape:?} has a zero-sized dimension"),
            ));
        }
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            shape,
        });
        Ok(self.nodes.len() - 1)
    }

    pub(crate) fn param(&mut self, name: String, shape: Vec<usize>, fan_in: usize) -> ParamId {
        self.params.push(Param {
            name,
            shape,
            fan_in,
        });
        self.params.len() - 1
    }

    /// The data input with per-sample `shape` (e.g. `[1, 28, 28]`).
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Result<NodeId> {
        if self.input.is_some() {
            return Err(Error::shape(name, "the graph already has an input"));
        }
        if shape.is_empty() {
            return Err(Error::shape(name, "input shape must have at least one dim"));
        }
        let id = self.push(name, Op::Input, shape.to_vec())?;
        self.input = Some(id);
        Ok(id)
    }

    /// A shape or argument error from a params struct, re-labelled with the node and its input.
    pub(crate) fn relabel(e: Error, name: &str, xname: &str, xs: &[usize]) -> Error {
        match e {
            Error::Shape { msg, .. } => {
                Error::shape(name, format!("input '{xname}' {xs:?}: {msg}"))
            }
            Error::InvalidArgument { msg, .. } => {
                Error::invalid(name, format!("input '{xname}' {xs:?}: {msg}"))
            }
            e => e,
        }
    }

    pub(crate) fn set_loss(&mut self, name: &str, op: Op) -> Result<NodeId> {
        if self.loss.is_some() {
            return Err(Error::shape(name, "the graph already has a loss"));
        }
        let id = self.push(name, op, vec![1])?;
        self.loss = Some(id);
        Ok(id)
    }

    /// Label smoothing `eps` in [0, 1] for the cross-entropy loss (PyTorch's
    /// `CrossEntropyLoss(label_smoothing=eps)`): the target of a sample of class `t` becomes
    /// `(1 − eps)·onehot(t) + eps/K`. Default 0. A graph whose loss is not cross-entropy is
    /// refused when planned.
    ///
    /// ```
    /// use wgcnn::nn::{Flatten, Linear, Sequential};
    /// let mut g = Sequential::new(&[1, 4, 4]).add("f", Flatten).add("fc", Linear::new(16, 3))
    ///     .cross_entropy()?;
    /// g.set_label_smoothing(0.1)?;
    /// assert_eq!(g.label_smoothing(), 0.1);
    /// assert!(g.set_label_smoothing(1.5).is_err());
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn set_label_smoothing(&mut self, eps: f32) -> Result<()> {
        crate::backend::check_smoothing("label_smoothing", eps)?;
        self.label_smoothing = eps;
        Ok(())
    }

    /// The cross-entropy's label smoothing (see [`Graph::set_label_smoothing`]).
    pub fn label_smoothing(&self) -> f32 {
        self.label_smoothing
    }

    /// Checks the graph is complete: one input and one loss. (That every parameter is used
    /// by exactly one node is checked when it is planned.)
    pub fn validate(&self) -> Result<()> {
        if self.input.is_none() {
            return Err(Error::shape("graph", "no input node"));
        }
        if self.loss.is_none() {
            return Err(Error::shape(
                "graph",
                "no loss node (add cross_entropy or mse)",
            ));
        }
        if let Some(l) = self.loss.filter(|_| self.label_smoothing != 0.0) {
            if !matches!(self.node(l).op, Op::CrossEntropy { .. }) {
                return Err(Error::invalid(
                    "label_smoothing",
                    format!(
                        "label smoothing {} needs a cross-entropy loss, but '{}' is not one",
                        self.label_smoothing,
                        self.node(l).name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Number of consumers of every node.
    pub fn consumers(&self) -> Vec<usize> {
        let mut c = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for i in n.op.inputs() {
                c[i] += 1;
            }
        }
        c
    }

    /// Per-sample element count of node `id`.
    pub fn numel(&self, id: NodeId) -> usize {
        self.nodes[id].shape.iter().product()
    }

    /// The role of parameter `p` (a parameter no op owns counts as a weight).
    pub fn param_kind(&self, p: ParamId) -> ParamKind {
        for n in &self.nodes {
            match n.op {
                Op::Conv { w, b, .. } | Op::Linear { w, b, .. } if b == Some(p) => {
                    return ParamKind::Bias(w)
                }
                Op::BatchNorm { w, .. } if w == p => return ParamKind::NormWeight,
                Op::BatchNorm { b, .. } if b == p => return ParamKind::NormBias,
                _ => {}
            }
        }
        ParamKind::Weight
    }

    /// PyTorch's `(fan_in, fan_out)` of parameter `p` (see [`crate::init`]): from its own
    /// shape for a weight of 2 or more dimensions, from its layer's weight for a bias;
    /// `None` for other 1-D parameters (batch norm γ, β).
    pub fn param_fans(&self, p: ParamId) -> Option<(usize, usize)> {
        match self.param_kind(p) {
            ParamKind::Bias(w) => fan_in_and_fan_out(&self.params[w].shape),
            _ => fan_in_and_fan_out(&self.params[p].shape),
        }
    }

    /// Sets the initialiser of every conv and linear weight that has none of its own
    /// (default: [`Init::PytorchDefault`]); see [`crate::init`] for the whole rule.
    pub fn set_default_init(&mut self, weights: Init) -> Result<()> {
        weights.validate()?;
        self.default_init = Some(weights);
        Ok(())
    }

    /// Sets the initialiser of every conv and linear bias that has none of its own
    /// (default: PyTorch's rule under [`Init::PytorchDefault`] weights, else zeros).
    pub fn set_default_bias_init(&mut self, biases: Init) -> Result<()> {
        biases.validate()?;
        self.default_bias_init = Some(biases);
        Ok(())
    }

    /// Sets parameter `p`'s own initialiser, overriding the graph defaults. A fan-based
    /// init (Xavier, Kaiming, PyTorch's) needs fans: a weight of 2 or more dimensions or a
    /// conv/linear bias.
    pub fn set_param_init(&mut self, p: ParamId, init: Init) -> Result<()> {
        let param = self
            .params
            .get(p)
            .ok_or_else(|| Error::invalid("init", format!("no parameter #{p}")))?;
        init.validate()?;
        if init.uses_fans() && self.param_fans(p).is_none() {
            return Err(Error::invalid(
                &param.name,
                format!("{init:?} needs fans, which a {:?} tensor has none of (use Normal, Uniform or a constant)", param.shape),
            ));
        }
        self.inits.insert(p, init);
        Ok(())
    }

    /// The initialiser parameter `p` gets (the rule in [`crate::init`]).
    pub fn param_init(&self, p: ParamId) -> Init {
        if let Some(&i) = self.inits.get(&p) {
            return i;
        }
        match self.param_kind(p) {
            ParamKind::NormWeight => Init::Ones,
            ParamKind::NormBias => Init::Zeros,
            ParamKind::Weight => self.default_init.unwrap_or(Init::PytorchDefault),
            ParamKind::Bias(w) => match (self.default_bias_init, self.param_init(w)) {
                (Some(i), _) => i,
                (None, Init::PytorchDefault) => Init::PytorchDefault,
                (None, _) => Init::Zeros,
            },
        }
    }
}

/// A per-sample input shape `[C, spatial…]` and a weight shape `[O, C/G, kernel…]` of a
/// 1-, 2- or 3-D convolution as the 5-D `x [n,C,D,H,W]`, `w [O,C/G,kd,kh,kw]` its kernels
/// use (missing leading spatial axes are 1).
pub fn conv_dims5(n: usize, xs: &[usize], ws: &[usize]) -> ([usize; 5], [usize; 5]) {
    let mut x = [n, xs[0], 1, 1, 1];
    let mut w = [ws[0], ws[1], 1, 1, 1];
    let sp = xs.len() - 1;
    x[5 - sp..].copy_from_slice(&xs[1..]);
    w[5 - sp..].copy_from_slice(&ws[2..]);
    (x, w)
}
