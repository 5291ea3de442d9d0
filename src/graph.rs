//! The graph: a DAG of ops with shapes inferred and checked as nodes are added.
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
use crate::error::{Error, Result};
use crate::shape::{Activation, ConvParams, Pool2dParams};

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
    /// Softmax over the features of a flat `[F]` sample. Under a cross-entropy loss the loss
    /// reads the softmax's *input* logits (Keras `Dense(activation='softmax')` with
    /// categorical cross-entropy), while the model's output is the probabilities.
    Softmax { x: NodeId },
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
            Op::Reshape { x }
            | Op::MaxPool1d { x, .. }
            | Op::AvgPool1d { x, .. }
            | Op::MaxPool3d { x, .. }
            | Op::AvgPool3d { x, .. }
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

/// A model graph. See the module docs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    nodes: Vec<Node>,
    params: Vec<Param>,
    input: Option<NodeId>,
    loss: Option<NodeId>,
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

    fn check_ref(&self, name: &str, id: NodeId) -> Result<&Node> {
        let n = self
            .nodes
            .get(id)
            .ok_or_else(|| Error::shape(name, format!("refers to unknown node #{id}")))?;
        if matches!(n.op, Op::CrossEntropy { .. } | Op::Mse { .. }) {
            return Err(Error::shape(
                name,
                format!("cannot consume the loss node '{}'", n.name),
            ));
        }
        Ok(n)
    }

    fn push(&mut self, name: &str, op: Op, shape: Vec<usize>) -> Result<NodeId> {
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

    fn param(&mut self, name: String, shape: Vec<usize>, fan_in: usize) -> ParamId {
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

    /// 2-D convolution `x [C,H,W] → [out_channels, oh, ow]` with parameters `name.weight`
    /// `[out, C/groups, kh, kw]` and (if `bias`) `name.bias` `[out]`.
    pub fn conv2d(
        &mut self,
        name: &str,
        x: NodeId,
        out_channels: usize,
        kernel: [usize; 2],
        p: ConvParams,
        bias: bool,
    ) -> Result<NodeId> {
        self.conv(name, x, out_channels, &kernel, p, bias)
    }

    /// 1-D convolution `x [C,L] → [out_channels, ol]` (time series), weight `[out, C/groups, k]`.
    pub fn conv1d(
        &mut self,
        name: &str,
        x: NodeId,
        out_channels: usize,
        kernel: usize,
        p: ConvParams,
        bias: bool,
    ) -> Result<NodeId> {
        self.conv(name, x, out_channels, &[kernel], p, bias)
    }

    /// 3-D convolution `x [C,D,H,W] → [out_channels, od, oh, ow]` (volumes), weight
    /// `[out, C/groups, kd, kh, kw]`.
    pub fn conv3d(
        &mut self,
        name: &str,
        x: NodeId,
        out_channels: usize,
        kernel: [usize; 3],
        p: ConvParams,
        bias: bool,
    ) -> Result<NodeId> {
        self.conv(name, x, out_channels, &kernel, p, bias)
    }

    /// Convolution over `kernel.len()` (1, 2 or 3) spatial axes: `x [C, spatial…]` →
    /// `[out_channels, out spatial…]`, weight `[out, C/groups, kernel…]` (PyTorch layouts).
    /// The axes of `p` the op does not have are ignored.
    pub fn conv(
        &mut self,
        name: &str,
        x: NodeId,
        out_channels: usize,
        kernel: &[usize],
        p: ConvParams,
        bias: bool,
    ) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.nodes[x].name.clone();
        let dims = kernel.len();
        if !(1..=3).contains(&dims) {
            return Err(Error::invalid(
                name,
                format!("a convolution has 1, 2 or 3 spatial axes, got kernel {kernel:?}"),
            ));
        }
        if xs.len() != dims + 1 {
            let want = ["[C,L]", "[C,H,W]", "[C,D,H,W]"][dims - 1];
            return Err(Error::shape(
                name,
                format!("conv{dims}d needs a {want} input, but '{xname}' has shape {xs:?}"),
            ));
        }
        let p = p.for_dims(dims);
        let groups = p.groups.max(1);
        let mut wshape = vec![out_channels, xs[0] / groups];
        wshape.extend_from_slice(kernel);
        let (x5, w5) = conv_dims5(1, &xs, &wshape);
        let d = p
            .dims_shown(name, x5, w5, dims)
            .map_err(|e| Error::shape(name, format!("input '{xname}' {xs:?}: {e}")))?;
        let fan_in = wshape[1..].iter().product();
        let w = self.param(format!("{name}.weight"), wshape, fan_in);
        let b = bias.then(|| self.param(format!("{name}.bias"), vec![out_channels], fan_in));
        let mut y = vec![out_channels];
        y.extend_from_slice(&d.y[5 - dims..]);
        self.push(
            name,
            Op::Conv {
                x,
                w,
                b,
                p,
                act: None,
            },
            y,
        )
    }

    /// Max-pooling `x [C,H,W] → [C, oh, ow]`.
    pub fn max_pool2d(&mut self, name: &str, x: NodeId, p: Pool2dParams) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.nodes[x].name.clone();
        if xs.len() != 3 {
            return Err(Error::shape(
                name,
                format!("max_pool2d needs a [C,H,W] input, but '{xname}' has shape {xs:?}"),
            ));
        }
        let y = p
            .out_shape(name, [1, xs[0], xs[1], xs[2]])
            .map_err(|e| Error::shape(name, format!("input '{xname}' {xs:?}: {e}")))?;
        self.push(name, Op::MaxPool2d { x, p }, y[1..].to_vec())
    }

    /// Min-pooling `x [C,H,W] → [C, oh, ow]` (padding counts as +∞).
    pub fn min_pool2d(&mut self, name: &str, x: NodeId, p: Pool2dParams) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.nodes[x].name.clone();
        if xs.len() != 3 {
            return Err(Error::shape(
                name,
                format!("min_pool2d needs a [C,H,W] input, but '{xname}' has shape {xs:?}"),
            ));
        }
        let y = p
            .out_shape(name, [1, xs[0], xs[1], xs[2]])
            .map_err(|e| Error::shape(name, format!("input '{xname}' {xs:?}: {e}")))?;
        self.push(name, Op::MinPool2d { x, p }, y[1..].to_vec())
    }

    /// Average pooling `x [C,H,W] → [C, oh, ow]` (PyTorch `avg_pool2d`,
    /// `count_include_pad=True`).
    pub fn avg_pool2d(&mut self, name: &str, x: NodeId, p: Pool2dParams) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.nodes[x].name.clone();
        if xs.len() != 3 {
            return Err(Error::shape(
                name,
                format!("avg_pool2d needs a [C,H,W] input, but '{xname}' has shape {xs:?}"),
            ));
        }
        let y = p
            .out_shape(name, [1, xs[0], xs[1], xs[2]])
            .map_err(|e| Error::shape(name, format!("input '{xname}' {xs:?}: {e}")))?;
        self.push(name, Op::AvgPool2d { x, p }, y[1..].to_vec())
    }

    /// Global average pooling `x [C,H,W] → [C]`.
    pub fn global_avg_pool(&mut self, name: &str, x: NodeId) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.nodes[x].name.clone();
        if xs.len() != 3 || xs.contains(&0) {
            return Err(Error::shape(
                name,
                format!("global_avg_pool needs a non-empty [C,H,W] input, but '{xname}' has shape {xs:?}"),
            ));
        }
        self.push(name, Op::GlobalAvgPool { x }, vec![xs[0]])
    }

    /// The `[C, L]` input of a 1-D pooling node, checked.
    fn pool1d_shape(&self, name: &str, x: NodeId, op: &str, p: Pool1dParams) -> Result<Vec<usize>> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = &self.nodes[x].name;
        if xs.len() != 2 {
            return Err(Error::shape(
                name,
                format!("{op} needs a [C,L] input, but '{xname}' has shape {xs:?}"),
            ));
        }
        let y = p
            .out_shape(name, [1, xs[0], xs[1]])
            .map_err(|e| Self::relabel(e, name, xname, &xs))?;
        Ok(y[1..].to_vec())
    }

    /// The `[C, D, H, W]` input of a 3-D pooling node, checked.
    fn pool3d_shape(&self, name: &str, x: NodeId, op: &str, p: Pool3dParams) -> Result<Vec<usize>> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = &self.nodes[x].name;
        if xs.len() != 4 {
            return Err(Error::shape(
                name,
                format!("{op} needs a [C,D,H,W] input, but '{xname}' has shape {xs:?}"),
            ));
        }
        let y = p
            .out_shape(name, [1, xs[0], xs[1], xs[2], xs[3]])
            .map_err(|e| Self::relabel(e, name, xname, &xs))?;
        Ok(y[1..].to_vec())
    }

    /// 1-D max-pooling (PyTorch `max_pool1d`): `y[c,i] = max_{a<k} x[c, i·s+a−p]`, padding
    /// −∞, the gradient routed to the first maximum of each window.
    ///
    /// # Shapes
    /// `x [C, L]` → `[C, ⌊(L + 2p − k)/s⌋ + 1]`.
    pub fn max_pool1d(&mut self, name: &str, x: NodeId, p: Pool1dParams) -> Result<NodeId> {
        let y = self.pool1d_shape(name, x, "max_pool1d", p)?;
        self.push(name, Op::MaxPool1d { x, p }, y)
    }

    /// 1-D average pooling (PyTorch `avg_pool1d`, `count_include_pad=True`):
    /// `y[c,i] = (1/k)·Σ_{a<k} x[c, i·s+a−p]`, padding counted as 0.
    ///
    /// # Shapes
    /// `x [C, L]` → `[C, ⌊(L + 2p − k)/s⌋ + 1]`.
    pub fn avg_pool1d(&mut self, name: &str, x: NodeId, p: Pool1dParams) -> Result<NodeId> {
        let y = self.pool1d_shape(name, x, "avg_pool1d", p)?;
        self.push(name, Op::AvgPool1d { x, p }, y)
    }

    /// 3-D max-pooling (PyTorch `max_pool3d`): the maximum over each `kd×kh×kw` window,
    /// padding −∞, the gradient routed to the window's first maximum in `(d, h, w)` order.
    ///
    /// # Shapes
    /// `x [C, D, H, W]` → `[C, od, oh, ow]`, `od = ⌊(D + 2pd − kd)/sd⌋ + 1` (and so on).
    pub fn max_pool3d(&mut self, name: &str, x: NodeId, p: Pool3dParams) -> Result<NodeId> {
        let y = self.pool3d_shape(name, x, "max_pool3d", p)?;
        self.push(name, Op::MaxPool3d { x, p }, y)
    }

    /// 3-D average pooling (PyTorch `avg_pool3d`, `count_include_pad=True`): the sum over
    /// each window divided by `kd·kh·kw`, padding counted as 0.
    ///
    /// # Shapes
    /// `x [C, D, H, W]` → `[C, od, oh, ow]`.
    pub fn avg_pool3d(&mut self, name: &str, x: NodeId, p: Pool3dParams) -> Result<NodeId> {
        let y = self.pool3d_shape(name, x, "avg_pool3d", p)?;
        self.push(name, Op::AvgPool3d { x, p }, y)
    }

    /// A shape or argument error from a params struct, re-labelled with the node and its input.
    fn relabel(e: Error, name: &str, xname: &str, xs: &[usize]) -> Error {
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

    /// Linear layer `x [in] → [out]` with `name.weight [out, in]` and `name.bias [out]`.
    pub fn linear(&mut self, name: &str, x: NodeId, out: usize, bias: bool) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.nodes[x].name.clone();
        if xs.len() != 1 {
            return Err(Error::shape(
                name,
                format!(
                    "linear needs a flat input, but '{xname}' has shape {xs:?} (add a Flatten)"
                ),
            ));
        }
        let inp = xs[0];
        let w = self.param(format!("{name}.weight"), vec![out, inp], inp);
        let b = bias.then(|| self.param(format!("{name}.bias"), vec![out], inp));
        self.push(name, Op::Linear { x, w, b, act: None }, vec![out])
    }

    /// Linear layer that checks the expected input width `inp` (as `nn::Linear::new(in, out)`).
    pub fn linear_checked(
        &mut self,
        name: &str,
        x: NodeId,
        inp: usize,
        out: usize,
        bias: bool,
    ) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.nodes[x].name.clone();
        let have: usize = xs.iter().product();
        if xs.len() != 1 || have != inp {
            return Err(Error::shape(
                name,
                format!("expects {inp} input features, but '{xname}' produces shape {xs:?}"),
            ));
        }
        self.linear(name, x, out, bias)
    }

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
        let xname = self.nodes[x].name.clone();
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
                    self.nodes[x].name
                ),
            ));
        }
        self.push(name, Op::Softmax { x }, xs)
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
                    self.nodes[x].name
                ),
            ));
        }
        let mut y = vec![xs[xs.len() - 1]];
        y.extend_from_slice(&xs[..xs.len() - 1]);
        self.push(name, Op::ChannelsLast { x }, y)
    }

    /// Batch normalisation of `x [C]` or `[C,H,W]` (same shape out) with parameters
    /// `name.weight`, `name.bias` `[C]` and running statistics `name.running_mean`,
    /// `name.running_var` `[C]`; PyTorch's defaults are `momentum = 0.1`, `eps = 1e-5`.
    pub fn batch_norm(&mut self, name: &str, x: NodeId, momentum: f32, eps: f32) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.nodes[x].name.clone();
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
        for n in &self.nodes {
            if let Op::BatchNorm { x, .. } = n.op {
                let c = self.nodes[x].shape[0];
                out.push((format!("{}.running_mean", n.name), vec![c], 0.0));
                out.push((format!("{}.running_var", n.name), vec![c], 1.0));
            }
        }
        out
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
                    self.nodes[a].name, self.nodes[b].name
                ),
            ));
        }
        self.push(name, Op::Add { a, b }, sa)
    }

    fn set_loss(&mut self, name: &str, op: Op) -> Result<NodeId> {
        if self.loss.is_some() {
            return Err(Error::shape(name, "the graph already has a loss"));
        }
        let id = self.push(name, op, vec![1])?;
        self.loss = Some(id);
        Ok(id)
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

    /// Mean-squared-error loss on `pred` against dense targets of the same shape.
    pub fn mse(&mut self, name: &str, pred: NodeId) -> Result<NodeId> {
        self.check_ref(name, pred)?;
        self.set_loss(name, Op::Mse { pred })
    }

    /// Checks the graph is complete: one input, one loss, and every parameter used once.
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
