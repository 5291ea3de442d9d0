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
use crate::graph::{Graph, NodeId, ParamKind};
use crate::init::Init;
use crate::shape::{Activation, ConvParams, Pool2dParams, PoolKind, PoolParams};

/// A layer: adds its node(s) to a graph.
pub trait Layer {
    /// Adds the layer named `name` on top of `x`.
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId>;
}

/// A convolution over `D` spatial axes (PyTorch `nn.Conv1d/2d/3d`, Keras `Conv1D/2D/3D`):
/// use the aliases [`Conv1d`], [`Conv2d`], [`Conv3d`].
///
/// Options (all axes at once unless the method takes an array): `.stride(s)`, `.padding(p)`
/// (symmetric zeros, PyTorch), `.same()` / `.valid()` (Keras; `same` pads asymmetrically
/// when needed, as TensorFlow), `.pad_sides(begin, end)` (explicit per side),
/// `.dilation(d)`, `.groups(g)` (see [`Conv2d::depthwise`]), `.flipped(true)` (true
/// convolution, kernel rotated by 180°), `.anchor([..])` (the kernel element placed on the
/// output position; shifts the window), `.bias(false)`.
///
/// ```
/// use wgcnn::nn::{Conv1d, Conv2d, Conv3d, Flatten, Linear, Sequential};
/// # fn main() -> Result<(), wgcnn::Error> {
/// let g = Sequential::new(&[3, 28, 28])
///     .add("c1", Conv2d::new(3, 8, 3).stride(2).same())      // 28 → 14, Keras padding
///     .add("dw", Conv2d::depthwise(8, 3).dilation(2).same())  // 8 groups of 1
///     .add("pw", Conv2d::new(8, 16, 1))
///     .add("flat", Flatten)
///     .add("fc", Linear::new(16 * 14 * 14, 10))
///     .cross_entropy()?;
/// assert_eq!(g.params()[2].shape, vec![8, 1, 3, 3]);
/// let _ = (Conv1d::new(4, 8, 5).padding(2), Conv3d::new(1, 4, 3).kernel3([1, 3, 3]));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ConvNd<const D: usize> {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; D],
    pub params: ConvParams,
    pub bias: bool,
}

/// `nn.Conv1d(in, out, k)` on `[C, L]` samples.
pub type Conv1d = ConvNd<1>;
/// `nn.Conv2d(in, out, k)` on `[C, H, W]` samples.
pub type Conv2d = ConvNd<2>;
/// `nn.Conv3d(in, out, k)` on `[C, D, H, W]` samples.
pub type Conv3d = ConvNd<3>;

/// `v`'s `D` axes right-aligned into `[d, h, w]`, the rest `fill`.
fn axes3<const D: usize>(v: [usize; D], fill: usize) -> [usize; 3] {
    let mut a = [fill; 3];
    a[3 - D..].copy_from_slice(&v);
    a
}

impl<const D: usize> ConvNd<D> {
    /// `in_channels → out_channels` with a `kernel`-wide window on every axis.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        ConvNd {
            in_channels,
            out_channels,
            kernel: [kernel; D],
            params: ConvParams::default(),
            bias: true,
        }
    }
    /// A different window per axis.
    pub fn kernel_axes(mut self, k: [usize; D]) -> Self {
        self.kernel = k;
        self
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.params = self.params.stride(s);
        self
    }
    /// Stride per axis.
    pub fn stride_axes(mut self, s: [usize; D]) -> Self {
        self.params.stride = axes3(s, 1);
        self
    }
    /// Symmetric zero padding (PyTorch `padding=p`).
    pub fn padding(mut self, p: usize) -> Self {
        self.params = self.params.padding(p);
        self
    }
    /// Keras `padding="same"`: `⌈len/stride⌉` outputs, the odd zero after.
    pub fn same(mut self) -> Self {
        self.params = self.params.same();
        self
    }
    /// Keras `padding="valid"`: no padding.
    pub fn valid(mut self) -> Self {
        self.params = self.params.valid();
        self
    }
    /// Explicit padding: `begin` zeros before and `end` zeros after, per axis.
    pub fn pad_sides(mut self, begin: [usize; D], end: [usize; D]) -> Self {
        self.params = self.params.pad_sides(axes3(begin, 0), axes3(end, 0));
        self
    }
    /// The kernel element placed on each output position (default: top-left, `[0; D]`).
    pub fn anchor(mut self, anchor: [usize; D]) -> Self {
        self.params = self.params.anchor(axes3(anchor, 0));
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.params = self.params.dilation(d);
        self
    }
    /// Channel groups: `in` and `out` must both divide by `g`.
    pub fn groups(mut self, g: usize) -> Self {
        self.params = self.params.groups(g);
        self
    }
    /// True convolution (kernel rotated by 180°) instead of cross-correlation.
    pub fn flipped(mut self, flip: bool) -> Self {
        self.params = self.params.flipped(flip);
        self
    }
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// This layer's weight initialiser (see [`crate::init`]); call it after the other
    /// options, it wraps the layer.
    pub fn init(self, weight: Init) -> Initialized<Self> {
        Initialized::new(self).init(weight)
    }
    /// This layer's bias initialiser (see [`crate::init`]); call it after the other options.
    pub fn bias_init(self, bias: Init) -> Initialized<Self> {
        Initialized::new(self).bias_init(bias)
    }
}

impl ConvNd<2> {
    /// A `kh × kw` window.
    pub fn kernel2(self, kh: usize, kw: usize) -> Self {
        self.kernel_axes([kh, kw])
    }
    /// Depthwise convolution (Keras `DepthwiseConv2D`, MobileNet): one `k × k` filter per
    /// channel (`groups = channels`), no bias by default (it usually precedes a pointwise
    /// convolution or batch norm). `.multiplier(m)` gives `m` filters per channel.
    pub fn depthwise(channels: usize, k: usize) -> Self {
        Conv2d::new(channels, channels, k)
            .groups(channels)
            .bias(false)
    }
    /// `m` output channels per input channel of a depthwise convolution.
    pub fn multiplier(mut self, m: usize) -> Self {
        self.out_channels = self.in_channels * m;
        self
    }
}

impl ConvNd<3> {
    /// A `kd × kh × kw` window.
    pub fn kernel3(self, k: [usize; 3]) -> Self {
        self.kernel_axes(k)
    }
}

impl<const D: usize> Layer for ConvNd<D> {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        let xs = &g.node(x).shape;
        if xs.first() != Some(&self.in_channels) {
            return Err(Error::shape(
                name,
                format!(
                    "Conv{D}d expects {} input channels, but '{}' produces shape {xs:?}",
                    self.in_channels,
                    g.node(x).name
                ),
            ));
        }
        g.conv(
            name,
            x,
            self.out_channels,
            &self.kernel,
            self.params,
            self.bias,
        )
    }
}

/// Depthwise-separable convolution (Keras `SeparableConv2D`, Xception, MobileNet): a
/// depthwise `k × k` convolution (`name.depthwise.weight [in,1,k,k]`, no bias) then a
/// pointwise 1×1 convolution (`name.pointwise.weight [out,in,1,1]`, `name.pointwise.bias`).
/// Stride, padding and dilation apply to the depthwise step.
#[derive(Clone, Copy, Debug)]
pub struct SeparableConv2d {
    pub depthwise: Conv2d,
    pub pointwise: Conv2d,
}

impl SeparableConv2d {
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        SeparableConv2d {
            depthwise: Conv2d::depthwise(in_channels, kernel),
            pointwise: Conv2d::new(in_channels, out_channels, 1),
        }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.depthwise = self.depthwise.stride(s);
        self
    }
    pub fn padding(mut self, p: usize) -> Self {
        self.depthwise = self.depthwise.padding(p);
        self
    }
    pub fn same(mut self) -> Self {
        self.depthwise = self.depthwise.same();
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.depthwise = self.depthwise.dilation(d);
        self
    }
    /// Bias of the pointwise step (default true).
    pub fn bias(mut self, bias: bool) -> Self {
        self.pointwise = self.pointwise.bias(bias);
        self
    }
    /// Keras `depth_multiplier`: `m` depthwise filters per input channel (the pointwise step
    /// then reads `in·m` channels).
    pub fn multiplier(mut self, m: usize) -> Self {
        self.depthwise = self.depthwise.multiplier(m);
        self.pointwise.in_channels = self.depthwise.out_channels;
        self
    }
    /// The initialiser of both weights (depthwise and pointwise); call it last.
    pub fn init(self, weight: Init) -> Initialized<Self> {
        Initialized::new(self).init(weight)
    }
    /// The pointwise bias's initialiser; call it last.
    pub fn bias_init(self, bias: Init) -> Initialized<Self> {
        Initialized::new(self).bias_init(bias)
    }
}

/// A layer with its own initialisers: what `.init(..)` / `.bias_init(..)` on
/// [`ConvNd`], [`Linear`] and [`SeparableConv2d`] return. When built, every conv/linear
/// weight the layer creates gets `weight` and every bias gets `bias` (each only when set;
/// otherwise the graph's defaults apply, see [`crate::init`]). Batch-norm parameters are
/// left alone.
///
/// ```
/// use wgcnn::init::Init;
/// use wgcnn::nn::{Conv2d, Flatten, Linear, Sequential};
/// # fn main() -> Result<(), wgcnn::Error> {
/// let g = Sequential::new(&[3, 8, 8])
///     .add("c1", Conv2d::new(3, 4, 3).padding(1).init(Init::XavierNormal).bias_init(Init::Constant(0.1)))
///     .add("flat", Flatten)
///     .add("fc", Linear::new(4 * 8 * 8, 2).init(Init::Normal(0.01)))
///     .cross_entropy()?;
/// assert_eq!(g.param_init(1), Init::Constant(0.1));
/// assert_eq!(g.param_init(3), Init::Zeros); // a bias under a non-PyTorch weight init
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Initialized<L> {
    pub layer: L,
    /// The weights' init (`None`: the graph default).
    pub weight: Option<Init>,
    /// The biases' init (`None`: the graph default).
    pub bias: Option<Init>,
}

impl<L: Layer> Initialized<L> {
    /// `layer` with no init of its own yet.
    pub fn new(layer: L) -> Self {
        Initialized {
            layer,
            weight: None,
            bias: None,
        }
    }
    /// Sets the weights' init.
    pub fn init(mut self, weight: Init) -> Self {
        self.weight = Some(weight);
        self
    }
    /// Sets the biases' init.
    pub fn bias_init(mut self, bias: Init) -> Self {
        self.bias = Some(bias);
        self
    }
}

impl<L: Layer> Layer for Initialized<L> {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        let first = g.params().len();
        let y = self.layer.build(g, name, x)?;
        for p in first..g.params().len() {
            let init = match g.param_kind(p) {
                ParamKind::Weight => self.weight,
                ParamKind::Bias(_) => self.bias,
                ParamKind::NormWeight | ParamKind::NormBias => None,
            };
            if let Some(i) = init {
                g.set_param_init(p, i)
                    .map_err(|e| Graph::relabel(e, name, &g.node(x).name, &g.node(x).shape))?;
            }
        }
        Ok(y)
    }
}

impl Layer for SeparableConv2d {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        let d = self.depthwise.build(g, &format!("{name}.depthwise"), x)?;
        self.pointwise.build(g, &format!("{name}.pointwise"), d)
    }
}

macro_rules! pool2d_layer {
    ($(#[$m:meta])* $name:ident, $method:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name(pub Pool2dParams);

        impl $name {
            /// Square window `k`, stride `k`, no padding.
            pub fn new(k: usize) -> Self {
                $name(Pool2dParams::new(k))
            }
            pub fn stride(mut self, s: usize) -> Self {
                self.0.stride = [s, s];
                self
            }
            /// Padding on both sides, at most half the window.
            pub fn padding(mut self, p: usize) -> Self {
                self.0.padding = [p, p];
                self
            }
        }

        impl $name {
            fn pool_params(&self) -> PoolParams {
                self.0.into()
            }
        }

        impl Layer for $name {
            fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
                g.$method(name, x, self.0)
            }
        }
    };
}

pool2d_layer!(
    /// `nn.MaxPool2d(k)` with `.stride(s)`, `.padding(p)`.
    MaxPool2d,
    max_pool2d
);
pool2d_layer!(
    /// Min-pooling (the seed article's MinPool) `MinPool2d::new(k)` with `.stride(s)`,
    /// `.padding(p)`: the minimum of each window, gradient routed to the first minimum.
    MinPool2d,
    min_pool2d
);
pool2d_layer!(
    /// `nn.AvgPool2d(k)` with `.stride(s)`, `.padding(p)` (`count_include_pad=True`).
    AvgPool2d,
    avg_pool2d
);

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

        impl $name {
            fn pool_params(&self) -> PoolParams {
                self.0.into()
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
pool1d_layer!(
    /// 1-D min-pooling on `[C, L]` samples (padding +∞, the first minimum), with
    /// `.stride(s)`, `.padding(p)`.
    MinPool1d,
    min_pool1d
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

        impl $name {
            fn pool_params(&self) -> PoolParams {
                self.params().into()
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
pool3d_layer!(
    /// 3-D min-pooling on `[C, D, H, W]` samples (padding +∞, the first minimum), options as
    /// [`MaxPool3d`].
    MinPool3d,
    min_pool3d
);

/// Pooling over `D` spatial axes with every window option of [`PoolParams`]: use the aliases
/// [`Pool1d`], [`Pool2d`], [`Pool3d`] (`Pool2d::max(3)`, `::min`, `::avg`). The fixed
/// PyTorch-style layers ([`MaxPool2d`] and the others) turn into one with `.same()`,
/// `.ceil_mode(true)`, `.anchor(..)` or `.flipped(..)`.
///
/// Options: `.stride(s)` / `.stride_axes(..)`, `.padding(p)` (PyTorch, symmetric),
/// `.pad_sides(begin, end)`, `.same()` (Keras; the average then excludes padding),
/// `.ceil_mode(true)` (PyTorch), `.anchor([..])` with `.flipped(true)` (the seed article's
/// window placement, as [`Conv2d::anchor`]), `.count_include_pad(..)`.
///
/// ```
/// use wgcnn::nn::{Flatten, Linear, MaxPool2d, Pool2d, Sequential};
/// # fn main() -> Result<(), wgcnn::Error> {
/// let g = Sequential::new(&[3, 15, 15])
///     .add("pool1", MaxPool2d::new(3).stride(2).same())  // Keras: 15 → 8
///     .add("pool2", Pool2d::avg(2).ceil_mode(true))      // PyTorch ceil_mode: 8 → 4
///     .add("pool3", Pool2d::max(2).anchor([1, 1]))       // anchored window: 4 → 2
///     .add("flat", Flatten)
///     .add("fc", Linear::new(3 * 2 * 2, 10))
///     .cross_entropy()?;
/// let pool2 = g.nodes().iter().find(|n| n.name == "pool2").unwrap();
/// assert_eq!(pool2.shape, vec![3, 4, 4]);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PoolNd<const D: usize> {
    pub kind: PoolKind,
    pub params: PoolParams,
}

/// 1-D pooling of `[C, L]` samples with any [`PoolParams`] window.
pub type Pool1d = PoolNd<1>;
/// 2-D pooling of `[C, H, W]` samples with any [`PoolParams`] window.
pub type Pool2d = PoolNd<2>;
/// 3-D pooling of `[C, D, H, W]` samples with any [`PoolParams`] window.
pub type Pool3d = PoolNd<3>;

impl<const D: usize> PoolNd<D> {
    /// Window `k` on every axis, stride `k`, no padding.
    pub fn new(kind: PoolKind, k: usize) -> Self {
        PoolNd {
            kind,
            params: PoolParams::new(1)
                .kernel3(axes3([k; D], 1))
                .stride3(axes3([k; D], 1)),
        }
    }
    /// Max-pooling with window `k`.
    pub fn max(k: usize) -> Self {
        Self::new(PoolKind::Max, k)
    }
    /// Min-pooling with window `k`.
    pub fn min(k: usize) -> Self {
        Self::new(PoolKind::Min, k)
    }
    /// Average pooling with window `k`.
    pub fn avg(k: usize) -> Self {
        Self::new(PoolKind::Avg, k)
    }
    /// A different window per axis (the stride follows it).
    pub fn kernel_axes(mut self, k: [usize; D]) -> Self {
        self.params = self.params.kernel3(axes3(k, 1));
        self
    }
    pub fn stride(self, s: usize) -> Self {
        self.stride_axes([s; D])
    }
    /// Stride per axis.
    pub fn stride_axes(mut self, s: [usize; D]) -> Self {
        self.params.stride = axes3(s, 1);
        self
    }
    /// Symmetric padding `p` on every axis (PyTorch).
    pub fn padding(self, p: usize) -> Self {
        self.pad_sides([p; D], [p; D])
    }
    /// Padding before and after each axis.
    pub fn pad_sides(mut self, begin: [usize; D], end: [usize; D]) -> Self {
        self.params = self.params.pad_sides(axes3(begin, 0), axes3(end, 0));
        self
    }
    /// Keras `padding="same"` (see [`PoolParams::same`]).
    pub fn same(mut self) -> Self {
        self.params = self.params.same();
        self
    }
    /// The window element placed on the output position (see [`PoolParams`]).
    pub fn anchor(mut self, anchor: [usize; D]) -> Self {
        self.params = self.params.anchor(axes3(anchor, 0));
        self
    }
    /// Flip the window about its anchor.
    pub fn flipped(mut self, flip: bool) -> Self {
        self.params = self.params.flipped(flip);
        self
    }
    /// PyTorch `ceil_mode`.
    pub fn ceil_mode(mut self, on: bool) -> Self {
        self.params = self.params.ceil_mode(on);
        self
    }
    /// Whether the average counts padding in its divisor.
    pub fn count_include_pad(mut self, on: bool) -> Self {
        self.params = self.params.count_include_pad(on);
        self
    }
}

impl<const D: usize> Layer for PoolNd<D> {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        let xs = &g.check_ref(name, x)?.shape;
        if xs.len() != D + 1 {
            return Err(Error::shape(
                name,
                format!(
                    "Pool{D}d needs [C, {D} spatial axes] samples, but '{}' produces shape {xs:?}",
                    g.node(x).name
                ),
            ));
        }
        g.pool(name, x, self.kind, self.params)
    }
}

/// The window options of [`PoolNd`] on the fixed PyTorch-style pooling layers: each returns
/// the equivalent [`PoolNd`] with the option set.
macro_rules! pool_options {
    ($name:ident, $d:literal, $kind:expr) => {
        impl From<$name> for PoolNd<$d> {
            fn from(l: $name) -> Self {
                PoolNd {
                    kind: $kind,
                    params: l.pool_params(),
                }
            }
        }

        impl $name {
            /// Keras `padding="same"` (see [`PoolParams::same`]).
            pub fn same(self) -> PoolNd<$d> {
                PoolNd::from(self).same()
            }
            /// PyTorch `ceil_mode`.
            pub fn ceil_mode(self, on: bool) -> PoolNd<$d> {
                PoolNd::from(self).ceil_mode(on)
            }
            /// The window element placed on the output position (see [`PoolParams`]).
            pub fn anchor(self, anchor: [usize; $d]) -> PoolNd<$d> {
                PoolNd::from(self).anchor(anchor)
            }
            /// Flip the window about its anchor.
            pub fn flipped(self, flip: bool) -> PoolNd<$d> {
                PoolNd::from(self).flipped(flip)
            }
        }
    };
}

pool_options!(MaxPool1d, 1, PoolKind::Max);
pool_options!(MinPool1d, 1, PoolKind::Min);
pool_options!(AvgPool1d, 1, PoolKind::Avg);
pool_options!(MaxPool2d, 2, PoolKind::Max);
pool_options!(MinPool2d, 2, PoolKind::Min);
pool_options!(AvgPool2d, 2, PoolKind::Avg);
pool_options!(MaxPool3d, 3, PoolKind::Max);
pool_options!(MinPool3d, 3, PoolKind::Min);
pool_options!(AvgPool3d, 3, PoolKind::Avg);

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
    /// This layer's weight initialiser (see [`crate::init`]); call it after `.bias(..)`.
    pub fn init(self, weight: Init) -> Initialized<Self> {
        Initialized::new(self).init(weight)
    }
    /// This layer's bias initialiser (see [`crate::init`]).
    pub fn bias_init(self, bias: Init) -> Initialized<Self> {
        Initialized::new(self).bias_init(bias)
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
act_layer!(
    /// `nn.GELU()` (exact, `approximate='none'`)
    Gelu,
    Activation::Gelu
);
act_layer!(
    /// `nn.GELU(approximate='tanh')`
    GeluTanh,
    Activation::GeluTanh
);
act_layer!(
    /// `nn.SiLU()` (swish)
    Silu,
    Activation::Silu
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

    /// The graph-wide weight initialiser ([`Graph::set_default_init`]; Keras:
    /// `Init::XavierUniform`; the numpy article: `Init::Normal(0.1)`). Layers with their
    /// own `.init(..)` keep it; see [`crate::init`].
    pub fn default_init(mut self, weights: Init) -> Self {
        if let Err(e) = self.graph.set_default_init(weights) {
            self.last = self.last.and(Err(e));
        }
        self
    }

    /// The graph-wide bias initialiser ([`Graph::set_default_bias_init`]).
    pub fn default_bias_init(mut self, biases: Init) -> Self {
        if let Err(e) = self.graph.set_default_bias_init(biases) {
            self.last = self.last.and(Err(e));
        }
        self
    }

    /// Finishes with a softmax + cross-entropy loss.
    /// Label smoothing `eps` for [`Sequential::cross_entropy`] (see
    /// [`Graph::set_label_smoothing`]); an `eps` outside [0, 1] is reported when the model
    /// is finished.
    pub fn label_smoothing(mut self, eps: f32) -> Self {
        if let Err(e) = self.graph.set_label_smoothing(eps) {
            self.last = Err(e);
        }
        self
    }

    pub fn cross_entropy(mut self) -> Result<Graph> {
        let x = self.last?;
        self.graph.cross_entropy("loss", x)?;
        Ok(self.graph)
    }

    /// Finishes with a binary cross-entropy with logits (sigmoid heads, multi-label).
    pub fn bce_with_logits(mut self) -> Result<Graph> {
        let x = self.last?;
        self.graph.bce_with_logits("loss", x)?;
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

/// The Xception network of Keras's "image classification from scratch" example, layer for
/// layer (Keras's defaults: biases on every convolution and dense layer, none on the
/// depthwise step of a separable convolution; batch norm with Keras's `momentum=0.99`,
/// i.e. `0.01` in PyTorch's convention, and `epsilon=1e-3`):
///
/// ```text
/// Rescaling(1/255)                                  bytes 0..255 → [0, 1]
/// entry:  Conv2d 3×3 stride 2 same → 32, BatchNorm, ReLU,
///         Conv2d 3×3 same → 64, BatchNorm, ReLU
/// blocks of widths 128, 256, 512, 728:
///         ReLU, SeparableConv2d 3×3 same → w, BatchNorm,
///         ReLU, SeparableConv2d 3×3 same → w, BatchNorm,
///         MaxPool 3×3 stride 2 same
///       + residual: Conv2d 1×1 stride 2 same → w                 (add)
/// exit:   SeparableConv2d 3×3 same → 1024, BatchNorm, ReLU,
///         GlobalAvgPool, Dropout(0.5),
///         Linear → classes with softmax cross-entropy, or for 2 classes
///         Linear → 1 with sigmoid binary cross-entropy (targets 0/1 as values)
/// ```
///
/// For `input = [3, 180, 180]` and 2 classes this is the article's model: 2,782,649
/// parameters counted as Keras does (2,773,913 trainable plus 8,736 batch-norm moving
/// statistics; `tests/xception.rs` derives the count). Feed it unnormalised pixel values
/// (0–255).
///
/// ```
/// let g = wgcnn::nn::xception(&[3, 180, 180], 2)?;
/// let trainable: usize = g.params().iter().map(|p| p.len()).sum();
/// assert_eq!(trainable, 2_773_913);
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn xception(input: &[usize], classes: usize) -> Result<Graph> {
    if input.len() != 3 || input.contains(&0) || classes < 2 {
        return Err(Error::invalid(
            "xception",
            format!("needs a [C,H,W] input and at least 2 classes (got {input:?}, {classes})"),
        ));
    }
    let (mom, eps) = (0.01, 1e-3);
    let mut g = Graph::new();
    let x = g.input("input", input)?;
    let x = g.rescaling("rescale", x, 1.0 / 255.0, 0.0)?;
    let mut x = x;
    let mut prev = input[0];
    for (i, (w, s)) in [(32, 2), (64, 1)].into_iter().enumerate() {
        let name = format!("entry.conv{}", i + 1);
        x = Conv2d::new(prev, w, 3)
            .stride(s)
            .same()
            .build(&mut g, &name, x)?;
        x = g.batch_norm(&format!("entry.bn{}", i + 1), x, mom, eps)?;
        x = g.activation(&format!("entry.relu{}", i + 1), x, Activation::Relu)?;
        prev = w;
    }
    for w in [128, 256, 512, 728] {
        x = xception_block(&mut g, &format!("block{w}"), x, prev, w, (mom, eps))?;
        prev = w;
    }
    let x = SeparableConv2d::new(prev, 1024, 3)
        .same()
        .build(&mut g, "exit.sep", x)?;
    let x = g.batch_norm("exit.bn", x, mom, eps)?;
    let x = g.activation("exit.relu", x, Activation::Relu)?;
    let x = g.global_avg_pool("gap", x)?;
    let x = g.dropout("dropout", x, 0.5)?;
    if classes == 2 {
        let x = g.linear("fc", x, 1, true)?;
        g.bce_with_logits("loss", x)?;
    } else {
        let x = g.linear("fc", x, classes, true)?;
        g.cross_entropy("loss", x)?;
    }
    Ok(g)
}

/// One block of [`xception`]: two ReLU → separable conv → batch norm steps, a `same`
/// max-pool, plus the 1×1 stride-2 projection of the block's input.
fn xception_block(
    g: &mut Graph,
    b: &str,
    x: NodeId,
    prev: usize,
    w: usize,
    (mom, eps): (f32, f32),
) -> Result<NodeId> {
    let mut y = x;
    for (k, cin) in [(1, prev), (2, w)] {
        y = g.activation(&format!("{b}.relu{k}"), y, Activation::Relu)?;
        y = SeparableConv2d::new(cin, w, 3)
            .same()
            .build(g, &format!("{b}.sep{k}"), y)?;
        y = g.batch_norm(&format!("{b}.bn{k}"), y, mom, eps)?;
    }
    let y = g.pool(
        &format!("{b}.pool"),
        y,
        PoolKind::Max,
        PoolParams::new(3).stride(2).same(),
    )?;
    let r = Conv2d::new(prev, w, 1)
        .stride(2)
        .same()
        .build(g, &format!("{b}.residual"), x)?;
    g.add(&format!("{b}.add"), y, r)
}

/// The CIFAR ResNets of He et al. 2016 (§4.2): `depth = 6n + 2` (20, 32, 44, 56, 110, …)
/// on `[3, 32, 32]` images:
///
/// ```text
/// conv 3×3 → 16, BatchNorm, ReLU
/// 3 stages of n basic blocks, 16 / 32 / 64 channels (32×32, 16×16, 8×8):
///     conv 3×3 (stride 2 in the first block of stages 2 and 3), BatchNorm, ReLU,
///     conv 3×3, BatchNorm, + shortcut, ReLU
///     shortcut: identity; where the shape changes, conv 1×1 stride 2 + BatchNorm
///     (the paper's option B projection)
/// GlobalAvgPool, Linear 64 → classes, softmax cross-entropy
/// ```
///
/// Convolutions carry no bias (each feeds a batch norm); batch norm uses PyTorch's defaults
/// (momentum 0.1, ε 1e-5). Parameters start from PyTorch's default initialisation
/// (`Executor::new`'s seed; uniform ±1/√fan_in for convolution and linear weights and
/// biases, γ = 1, β = 0). ResNet-20 for 10 classes has 272,474 parameters, 2,752 of them in
/// the two projections (`tests/resnet.rs` derives the count).
///
/// ```
/// let g = wgcnn::nn::resnet_cifar(20, 10)?;
/// let n: usize = g.params().iter().map(|p| p.len()).sum();
/// assert_eq!(n, 272_474);
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn resnet_cifar(depth: usize, classes: usize) -> Result<Graph> {
    if depth < 8 || !(depth - 2).is_multiple_of(6) || classes == 0 {
        return Err(Error::invalid(
            "resnet_cifar",
            format!("depth must be 6n + 2 with n ≥ 1 (20, 32, 44, 56, 110) and classes ≥ 1 (got depth {depth}, {classes} classes)"),
        ));
    }
    let n = (depth - 2) / 6;
    let mut g = Graph::new();
    let x = g.input("input", &[3, 32, 32])?;
    let x = Conv2d::new(3, 16, 3)
        .padding(1)
        .bias(false)
        .build(&mut g, "conv1", x)?;
    let x = g.batch_norm("bn1", x, 0.1, 1e-5)?;
    let mut x = g.activation("relu1", x, Activation::Relu)?;
    let mut prev = 16;
    for (stage, w) in [16, 32, 64].into_iter().enumerate() {
        for b in 0..n {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let name = format!("layer{}.{b}", stage + 1);
            x = basic_block(&mut g, &name, x, prev, w, stride)?;
            prev = w;
        }
    }
    let x = g.global_avg_pool("gap", x)?;
    let x = g.linear("fc", x, classes, true)?;
    g.cross_entropy("loss", x)?;
    Ok(g)
}

/// A ResNet basic block `cin → w` (see [`resnet_cifar`]); names follow torchvision
/// (`conv1`, `bn1`, `conv2`, `bn2`, `downsample.0` / `.1`).
fn basic_block(
    g: &mut Graph,
    b: &str,
    x: NodeId,
    cin: usize,
    w: usize,
    stride: usize,
) -> Result<NodeId> {
    let conv = |k: usize, c: usize, s: usize| Conv2d::new(c, w, k).stride(s).bias(false);
    let y = conv(3, cin, stride)
        .padding(1)
        .build(g, &format!("{b}.conv1"), x)?;
    let y = g.batch_norm(&format!("{b}.bn1"), y, 0.1, 1e-5)?;
    let y = g.activation(&format!("{b}.relu1"), y, Activation::Relu)?;
    let y = conv(3, w, 1)
        .padding(1)
        .build(g, &format!("{b}.conv2"), y)?;
    let y = g.batch_norm(&format!("{b}.bn2"), y, 0.1, 1e-5)?;
    let short = if stride != 1 || cin != w {
        let s = conv(1, cin, stride).build(g, &format!("{b}.downsample.0"), x)?;
        g.batch_norm(&format!("{b}.downsample.1"), s, 0.1, 1e-5)?
    } else {
        x
    };
    let y = g.add(&format!("{b}.add"), y, short)?;
    g.activation(&format!("{b}.relu2"), y, Activation::Relu)
}

/// The network of Keller Jordan's airbench (2024, "94 % on CIFAR-10 in 3.29 seconds"), on
/// `[3, 32, 32]` images:
///
/// ```text
/// whiten: conv 2×2 → 24 (bias, no padding), GELU                       32 → 31
/// 3 groups of widths 64, 256, 256:
///     conv 3×3 same (no bias), MaxPool 2, BatchNorm, GELU,
///     conv 3×3 same (no bias), BatchNorm, GELU                          31 → 15 → 7 → 3
/// MaxPool 3, Flatten, Linear 256 → classes (no bias), × 1/9, softmax cross-entropy
/// ```
///
/// Differences from the original, which trains with its own tricks: the whitening conv is a
/// trainable layer here (airbench fixes it to the data's patch whitening), batch norm uses
/// momentum 0.4 in PyTorch's convention (airbench's 0.6) with ε 1e-5 and a trainable γ, and
/// parameters start from PyTorch's default initialisation. GELU is the exact one.
pub fn airbench_net(classes: usize) -> Result<Graph> {
    if classes == 0 {
        return Err(Error::invalid("airbench_net", "needs at least one class"));
    }
    let (mom, eps) = (0.4, 1e-5);
    let mut g = Graph::new();
    let x = g.input("input", &[3, 32, 32])?;
    let x = Conv2d::new(3, 24, 2).build(&mut g, "whiten", x)?;
    let mut x = g.activation("whiten.gelu", x, Activation::Gelu)?;
    let mut prev = 24;
    for (i, w) in [64, 256, 256].into_iter().enumerate() {
        let b = format!("group{}", i + 1);
        let conv = |c: usize| Conv2d::new(c, w, 3).same().bias(false);
        x = conv(prev).build(&mut g, &format!("{b}.conv1"), x)?;
        x = g.max_pool2d(&format!("{b}.pool"), x, Pool2dParams::new(2))?;
        x = g.batch_norm(&format!("{b}.norm1"), x, mom, eps)?;
        x = g.activation(&format!("{b}.gelu1"), x, Activation::Gelu)?;
        x = conv(w).build(&mut g, &format!("{b}.conv2"), x)?;
        x = g.batch_norm(&format!("{b}.norm2"), x, mom, eps)?;
        x = g.activation(&format!("{b}.gelu2"), x, Activation::Gelu)?;
        prev = w;
    }
    let x = g.max_pool2d("pool", x, Pool2dParams::new(3))?;
    let x = g.flatten("flatten", x)?;
    let x = g.linear("head", x, classes, false)?;
    let x = g.rescaling("scale", x, 1.0 / 9.0, 0.0)?;
    g.cross_entropy("loss", x)?;
    Ok(g)
}

/// A small Xception-style network (Chollet 2017, after Keras's "image classification from
/// scratch" example), sized for `input = [C, H, W]` images such as 1×28×28 Fashion-MNIST:
///
/// ```text
/// Rescaling(1/127.5, −1)                          bytes 0..255 → [−1, 1]
/// entry:  Conv2d 3×3 stride 2 same → widths[0], BatchNorm, ReLU
/// blocks (one per width w in widths[1..]):
///         ReLU, SeparableConv2d 3×3 same → w, BatchNorm,
///         ReLU, SeparableConv2d 3×3 same → w, BatchNorm,
///         MaxPool 3×3 stride 2 pad 1
///       + shortcut: Conv2d 1×1 stride 2 → w, BatchNorm          (residual add)
/// exit:   SeparableConv2d 3×3 same → 2·last, BatchNorm, ReLU,
///         GlobalAvgPool, Dropout(0.25), Linear → classes, cross-entropy
/// ```
/// Feed it unnormalised pixel values (0–255): the first layer rescales them.
pub fn xception_mini(input: &[usize], widths: &[usize], classes: usize) -> Result<Graph> {
    if input.len() != 3 || widths.len() < 2 || widths.contains(&0) || classes == 0 {
        return Err(Error::invalid(
            "xception_mini",
            format!(
                "needs a [C,H,W] input, at least two widths and a class count (got {input:?}, {widths:?}, {classes})"
            ),
        ));
    }
    let (mom, eps) = (0.1, 1e-5);
    let mut g = Graph::new();
    let x = g.input("input", input)?;
    let x = g.rescaling("rescale", x, 1.0 / 127.5, -1.0)?;
    let x = Conv2d::new(input[0], widths[0], 3)
        .stride(2)
        .same()
        .bias(false)
        .build(&mut g, "entry.conv", x)?;
    let x = g.batch_norm("entry.bn", x, mom, eps)?;
    let mut x = g.activation("entry.relu", x, Activation::Relu)?;
    let mut prev = widths[0];
    for (i, &w) in widths[1..].iter().enumerate() {
        let b = format!("block{}", i + 1);
        let residual = x;
        let y = g.activation(&format!("{b}.relu1"), x, Activation::Relu)?;
        let y = SeparableConv2d::new(prev, w, 3).same().bias(false).build(
            &mut g,
            &format!("{b}.sep1"),
            y,
        )?;
        let y = g.batch_norm(&format!("{b}.bn1"), y, mom, eps)?;
        let y = g.activation(&format!("{b}.relu2"), y, Activation::Relu)?;
        let y = SeparableConv2d::new(w, w, 3).same().bias(false).build(
            &mut g,
            &format!("{b}.sep2"),
            y,
        )?;
        let y = g.batch_norm(&format!("{b}.bn2"), y, mom, eps)?;
        let pool = Pool2dParams {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        };
        let y = g.max_pool2d(&format!("{b}.pool"), y, pool)?;
        let r = Conv2d::new(prev, w, 1).stride(2).bias(false).build(
            &mut g,
            &format!("{b}.shortcut"),
            residual,
        )?;
        let r = g.batch_norm(&format!("{b}.shortcut_bn"), r, mom, eps)?;
        x = g.add(&format!("{b}.add"), y, r)?;
        prev = w;
    }
    let x = SeparableConv2d::new(prev, 2 * prev, 3)
        .same()
        .bias(false)
        .build(&mut g, "exit.sep", x)?;
    let x = g.batch_norm("exit.bn", x, mom, eps)?;
    let x = g.activation("exit.relu", x, Activation::Relu)?;
    let x = g.global_avg_pool("gap", x)?;
    let x = g.dropout("dropout", x, 0.25)?;
    let x = g.linear("fc", x, classes, true)?;
    g.cross_entropy("loss", x)?;
    Ok(g)
}
