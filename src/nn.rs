//! Layers that read like PyTorch/Keras, composed into a [`Sequential`] model that
//! builds a [`Graph`]. Parameter names follow PyTorch (`c1.weight`, `c1.bias`).
//!
//! ```
//! use wgcnn::nn::{Conv2d, Flatten, Linear, MaxPool2d, Relu, Sequential};
//! # fn main() -> Result<(), wgcnn::Error> {
//! let graph = Sequential::new(&[1, 28, 28])
//!     .add("c1", Conv2d::new(1, 6, 5).padding(2))
//!     .add("r1", Relu)
//!     .add("s2", MaxPool2d::new(2))
//!     .add("flat", Flatten)
//!     .add("f", Linear::new(6 * 14 * 14, 10))
//!     .cross_entropy()?;
//! assert_eq!(graph.params()[0].name, "c1.weight");
//! # Ok(()) }
//! ```

use super::shape::{Pool1dParams, Pool3dParams};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::shape::{Activation, Conv2dParams, Pool2dParams};

/// A layer: adds its node(s) to a graph.
pub trait Layer {
    /// Adds the layer named `name` on top of `x`.
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId>;
}

/// `nn.Conv2d(in, out, k)` with `.stride(s)`, `.padding(p)`, `.bias(false)`.
#[derive(Clone, Copy, Debug)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub params: Conv2dParams,
    pub bias: bool,
}

impl Conv2d {
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Conv2d {
            in_channels,
            out_channels,
            kernel: [kernel, kernel],
            params: Conv2dParams::default(),
            bias: true,
        }
    }
    pub fn kernel2(mut self, kh: usize, kw: usize) -> Self {
        self.kernel = [kh, kw];
        self
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.params.stride = [s, s];
        self
    }
    pub fn padding(mut self, p: usize) -> Self {
        self.params.padding = [p, p];
        self
    }
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
}

impl Layer for Conv2d {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        let xs = &g.node(x).shape;
        if xs.first() != Some(&self.in_channels) {
            return Err(Error::shape(
                name,
                format!(
                    "Conv2d expects {} input channels, but '{}' produces shape {xs:?}",
                    self.in_channels,
                    g.node(x).name
                ),
            ));
        }
        g.conv2d(
            name,
            x,
            self.out_channels,
            self.kernel,
            self.params,
            self.bias,
        )
    }
}

/// `nn.MaxPool2d(k)` with `.stride(s)`, `.padding(p)`.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d(pub Pool2dParams);

impl MaxPool2d {
    pub fn new(k: usize) -> Self {
        MaxPool2d(Pool2dParams::new(k))
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.0.stride = [s, s];
        self
    }
    pub fn padding(mut self, p: usize) -> Self {
        self.0.padding = [p, p];
        self
    }
}

impl Layer for MaxPool2d {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.max_pool2d(name, x, self.0)
    }
}

/// Min-pooling (the seed article's MinPool) `MinPool2d::new(k)` with `.stride(s)`,
/// `.padding(p)`: the minimum of each window, gradient routed to the first minimum.
#[derive(Clone, Copy, Debug)]
pub struct MinPool2d(pub Pool2dParams);

impl MinPool2d {
    pub fn new(k: usize) -> Self {
        MinPool2d(Pool2dParams::new(k))
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.0.stride = [s, s];
        self
    }
    pub fn padding(mut self, p: usize) -> Self {
        self.0.padding = [p, p];
        self
    }
}

impl Layer for MinPool2d {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.min_pool2d(name, x, self.0)
    }
}

/// `nn.AvgPool2d(k)` with `.stride(s)`, `.padding(p)` (`count_include_pad=True`).
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d(pub Pool2dParams);

impl AvgPool2d {
    pub fn new(k: usize) -> Self {
        AvgPool2d(Pool2dParams::new(k))
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.0.stride = [s, s];
        self
    }
    pub fn padding(mut self, p: usize) -> Self {
        self.0.padding = [p, p];
        self
    }
}

impl Layer for AvgPool2d {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.avg_pool2d(name, x, self.0)
    }
}

/// `nn.AdaptiveAvgPool2d(1)` followed by a flatten (Keras `GlobalAveragePooling2D`):
/// `[C,H,W] → [C]`.
#[derive(Clone, Copy, Debug)]
pub struct GlobalAvgPool;

impl Layer for GlobalAvgPool {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.global_avg_pool(name, x)
    }
}

macro_rules! pool1d_layer {
    ($(#[$m:meta])* $name:ident, $method:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name(pub Pool1dParams);

        impl $name {
            /// Window `k`, stride `k` (PyTorch's default), no padding.
            pub fn new(k: usize) -> Self {
                $name(Pool1dParams::new(k))
            }
            pub fn stride(mut self, s: usize) -> Self {
                self.0.stride = s;
                self
            }
            /// Padding on both sides, at most `k/2`.
            pub fn padding(mut self, p: usize) -> Self {
                self.0.padding = p;
                self
            }
        }

        impl Layer for $name {
            fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
                g.$method(name, x, self.0)
            }
        }
    };
}

pool1d_layer!(
    /// `nn.MaxPool1d(k)` on `[C, L]` samples, with `.stride(s)`, `.padding(p)`.
    MaxPool1d,
    max_pool1d
);
pool1d_layer!(
    /// `nn.AvgPool1d(k)` on `[C, L]` samples, with `.stride(s)`, `.padding(p)`
    /// (`count_include_pad=True`).
    AvgPool1d,
    avg_pool1d
);

macro_rules! pool3d_layer {
    ($(#[$m:meta])* $name:ident, $method:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            /// Window `[kd, kh, kw]`.
            pub kernel: [usize; 3],
            /// Stride `[sd, sh, sw]`; `None` follows the kernel (PyTorch's default).
            pub stride: Option<[usize; 3]>,
            /// Padding `[pd, ph, pw]`, each at most half its kernel.
            pub padding: [usize; 3],
        }

        impl $name {
            /// Cubic window `k`, stride `k`, no padding.
            pub fn new(k: usize) -> Self {
                $name {
                    kernel: [k; 3],
                    stride: None,
                    padding: [0; 3],
                }
            }
            /// Window `[kd, kh, kw]` (the stride follows it unless set).
            pub fn kernel3(mut self, k: [usize; 3]) -> Self {
                self.kernel = k;
                self
            }
            pub fn stride(mut self, s: usize) -> Self {
                self.stride = Some([s; 3]);
                self
            }
            pub fn stride3(mut self, s: [usize; 3]) -> Self {
                self.stride = Some(s);
                self
            }
            pub fn padding(mut self, p: usize) -> Self {
                self.padding = [p; 3];
                self
            }
            pub fn padding3(mut self, p: [usize; 3]) -> Self {
                self.padding = p;
                self
            }
            /// The pooling parameters.
            pub fn params(&self) -> Pool3dParams {
                Pool3dParams {
                    kernel: self.kernel,
                    stride: self.stride.unwrap_or(self.kernel),
                    padding: self.padding,
                }
            }
        }

        impl Layer for $name {
            fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
                g.$method(name, x, self.params())
            }
        }
    };
}

pool3d_layer!(
    /// `nn.MaxPool3d(k)` on `[C, D, H, W]` samples, with `.stride(s)`, `.padding(p)` or per
    /// axis `.kernel3([kd, kh, kw])`, `.stride3(..)`, `.padding3(..)`.
    MaxPool3d,
    max_pool3d
);
pool3d_layer!(
    /// `nn.AvgPool3d(k)` on `[C, D, H, W]` samples (`count_include_pad=True`), options as
    /// [`MaxPool3d`].
    AvgPool3d,
    avg_pool3d
);

/// `nn.BatchNorm2d(c)`: batch normalisation of `[C,H,W]` per channel (`momentum` 0.1,
/// `eps` 1e-5; change with `.momentum(m)`, `.eps(e)`).
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm2d {
    pub num_features: usize,
    pub momentum: f32,
    pub eps: f32,
}

/// `nn.BatchNorm1d(f)`: batch normalisation of flat `[F]` features per feature.
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm1d {
    pub num_features: usize,
    pub momentum: f32,
    pub eps: f32,
}

macro_rules! batch_norm_layer {
    ($name:ident, $rank:expr, $what:expr) => {
        impl $name {
            pub fn new(num_features: usize) -> Self {
                $name {
                    num_features,
                    momentum: 0.1,
                    eps: 1e-5,
                }
            }
            pub fn momentum(mut self, m: f32) -> Self {
                self.momentum = m;
                self
            }
            pub fn eps(mut self, e: f32) -> Self {
                self.eps = e;
                self
            }
        }

        impl Layer for $name {
            fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
                let xs = &g.node(x).shape;
                if xs.len() != $rank || xs[0] != self.num_features {
                    return Err(Error::shape(
                        name,
                        format!(
                            "{} expects {} with {} channels, but '{}' produces shape {xs:?}",
                            stringify!($name),
                            $what,
                            self.num_features,
                            g.node(x).name
                        ),
                    ));
                }
                g.batch_norm(name, x, self.momentum, self.eps)
            }
        }
    };
}

batch_norm_layer!(BatchNorm2d, 3, "[C,H,W]");
batch_norm_layer!(BatchNorm1d, 1, "[F]");

/// `nn.Dropout(p)`: in training zeroes each element with probability `p` and scales the
/// rest by `1/(1−p)`; in evaluation the identity.
#[derive(Clone, Copy, Debug)]
pub struct Dropout(pub f32);

impl Dropout {
    pub fn new(p: f32) -> Self {
        Dropout(p)
    }
}

impl Layer for Dropout {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.dropout(name, x, self.0)
    }
}

/// Keras `Rescaling(scale, offset)`: `y = x·scale + offset`.
#[derive(Clone, Copy, Debug)]
pub struct Rescaling {
    pub scale: f32,
    pub offset: f32,
}

impl Rescaling {
    pub fn new(scale: f32, offset: f32) -> Self {
        Rescaling { scale, offset }
    }
}

impl Layer for Rescaling {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.rescaling(name, x, self.scale, self.offset)
    }
}

/// `nn.Linear(in, out)` with `.bias(false)`.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

impl Linear {
    pub fn new(in_features: usize, out_features: usize) -> Self {
        Linear {
            in_features,
            out_features,
            bias: true,
        }
    }
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
}

impl Layer for Linear {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.linear_checked(name, x, self.in_features, self.out_features, self.bias)
    }
}

/// `nn.Flatten()`
#[derive(Clone, Copy, Debug)]
pub struct Flatten;

impl Layer for Flatten {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.flatten(name, x)
    }
}

/// `x.reshape(shape)` per sample (Keras `Reshape`): a view, the element count must match.
#[derive(Clone, Debug)]
pub struct Reshape(pub Vec<usize>);

impl Reshape {
    pub fn new(shape: &[usize]) -> Self {
        Reshape(shape.to_vec())
    }
}

impl Layer for Reshape {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.reshape(name, x, &self.0)
    }
}

macro_rules! act_layer {
    ($(#[$m:meta])* $name:ident, $act:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name;
        impl Layer for $name {
            fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
                g.activation(name, x, $act)
            }
        }
    };
}

act_layer!(
    /// `nn.ReLU()`
    Relu,
    Activation::Relu
);
act_layer!(
    /// `nn.Sigmoid()`
    Sigmoid,
    Activation::Sigmoid
);
act_layer!(
    /// `nn.Tanh()`
    Tanh,
    Activation::Tanh
);

/// Any [`Activation`] as a layer (LeakyReLU(α), ELU(α), Step, …).
#[derive(Clone, Copy, Debug)]
pub struct Act(pub Activation);

impl Layer for Act {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.activation(name, x, self.0)
    }
}

/// `nn.Softmax(dim=-1)` over flat features (Keras `Activation('softmax')`). As the last
/// layer before [`Sequential::cross_entropy`] the loss is computed from its input logits
/// and the model outputs probabilities (see [`Graph::softmax`]).
#[derive(Clone, Copy, Debug)]
pub struct Softmax;

impl Layer for Softmax {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.softmax(name, x)
    }
}

/// Channels-last input: `[H, W, C]` samples (NHWC batches, as Keras and most image files
/// store them) become `[C, H, W]` on the device, e.g.
/// `Sequential::new(&[28, 28, 1]).add("nhwc", ChannelsLast).add("c1", Conv2d::new(1, 6, 5))`.
/// Any `[d1, …, dk, C]` → `[C, d1, …, dk]` (see [`Graph::channels_last`]).
#[derive(Clone, Copy, Debug)]
pub struct ChannelsLast;

impl Layer for ChannelsLast {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.channels_last(name, x)
    }
}

/// A stack of layers on one input; the first error is kept and reported by the
/// finishing call.
pub struct Sequential {
    graph: Graph,
    last: Result<NodeId>,
}

impl Sequential {
    /// Starts a model whose samples have `input_shape` (e.g. `[1, 28, 28]`).
    pub fn new(input_shape: &[usize]) -> Self {
        let mut graph = Graph::new();
        let last = graph.input("input", input_shape);
        Sequential { graph, last }
    }

    /// Appends `layer` under `name` (its parameters are `name.weight`, `name.bias`).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, name: &str, layer: impl Layer) -> Self {
        self.last = match self.last {
            Ok(x) => layer.build(&mut self.graph, name, x),
            Err(e) => Err(e),
        };
        self
    }

    /// Finishes with a softmax + cross-entropy loss.
    pub fn cross_entropy(mut self) -> Result<Graph> {
        let x = self.last?;
        self.graph.cross_entropy("loss", x)?;
        Ok(self.graph)
    }

    /// Finishes with an MSE loss.
    pub fn mse(mut self) -> Result<Graph> {
        let x = self.last?;
        self.graph.mse("loss", x)?;
        Ok(self.graph)
    }
}

/// LeNet-5 for 1×28×28 inputs, as in the MNIST example: conv 1→6 5×5 pad 2, ReLU,
/// max-pool 2; conv 6→16 5×5, ReLU, max-pool 2; 400→120→84→10 with ReLUs.
/// Parameter names `c1, c3, f5, f6, f7`.
pub fn lenet5() -> Result<Graph> {
    Sequential::new(&[1, 28, 28])
        .add("c1", Conv2d::new(1, 6, 5).padding(2))
        .add("relu1", Relu)
        .add("s2", MaxPool2d::new(2))
        .add("c3", Conv2d::new(6, 16, 5))
        .add("relu3", Relu)
        .add("s4", MaxPool2d::new(2))
        .add("flatten", Flatten)
        .add("f5", Linear::new(400, 120))
        .add("relu5", Relu)
        .add("f6", Linear::new(120, 84))
        .add("relu6", Relu)
        .add("f7", Linear::new(84, 10))
        .cross_entropy()
}
