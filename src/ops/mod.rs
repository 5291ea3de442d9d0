//! One op, one place: every kernel family is one module here that owns everything about its
//! ops.
//!
//! * **A kernel launch is a value** implementing [`Launch`]: the entry point and its
//!   specialisation constants, the bindings in shader order (name, length, access), the
//!   uniform block, the dispatch grid, the FLOP count, the CPU twin and the tolerance the
//!   twin is held to. The GPU executor, the CPU executor, the functional [`crate::Backend`],
//!   the `WGCNN_VALIDATE` switch and the benchmark all consume that one description.
//! * **A graph op is one rule** (`Rule`): its forward lowering and its gradient rule side by
//!   side, over the small vocabulary of `plan::Lowering` (tensors, steps, gradients).
//!
//! | module | kernels (`shaders/<family>.wgsl`) | graph ops |
//! |---|---|---|
//! | [`conv`] | `conv_forward`, `conv_backward_input(_rows)`, `conv_backward_weight(_rows)`, their `_depthwise` and `_pointwise(_v4)` variants (weight gradients also split into row partitions: `ConvWeightParts`) | `Conv` |
//! | [`pool`] | `max/min/avg_pool2d_*`, `global_avg_pool_*` | 1-D/2-D/3-D max, min, average pooling, global average pooling |
//! | [`matmul`] | `gemm`, `gemm_naive`, `gemm_f16`, `gemm_coop` (f16 inputs; optional device features) | `Linear` |
//! | [`elementwise`] | `activation_*`, `add`, `dropout_*`, `rescale`, `sum_parts` | `Activation`, `Add`, `Dropout`, `Rescaling` |
//! | [`loss`] | `softmax_*`, `cross_entropy`, `mse` | `Softmax`, `CrossEntropy`, `Mse` |
//! | [`norm`] | `batch_norm_*` | `BatchNorm` |
//! | [`layout`] | `permute` | `ChannelsLast`, `Flatten`, `Reshape`, `Input` |
//! | [`optim`] | `grad_norm_scale`, `optimizer_step` | (the executor's update) |
//! | [`augment`] | `augment` | (the input pipeline: bytes → normalised, cropped, flipped images) |
//! | [`precision`] | `cast_f16`, `loss_scale`, `amp_unscale`, `amp_update`; any launch with f16 inputs (`HalfInputs`) | (a `Precision::F16Mixed` plan's casts and loss scale) |
//!
//! # Adding a kernel
//! Write the entry point in its family's WGSL file and its twin in `src/cpu/<family>.rs`, add
//! a row to [`crate::gpu::KERNELS`], and describe its launch here: a `Launch` impl (or a new
//! variant of the family's launch enum). Nothing else dispatches on kernel names.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::error::Result;
use crate::gpu::kernels::Consts;
use crate::gpu::GpuContext;
use crate::graph::{NodeId, Op};
use crate::plan::{Lowering, TensorId};

pub mod augment;
pub mod conv;
pub mod elementwise;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod precision;

/// How a kernel uses a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `var<storage, read>`: an input.
    Read,
    /// `var<storage, read_write>`, written before it is read: an output.
    Write,
    /// `var<storage, read_write>`, read then updated (running statistics, metrics).
    ReadWrite,
}

impl Access {
    /// Whether the kernel reads the binding's previous contents.
    pub fn reads(self) -> bool {
        self != Access::Write
    }

    /// Whether the kernel writes the binding.
    pub fn writes(self) -> bool {
        self != Access::Read
    }
}

/// What a binding holds (how a benchmark fills it with valid values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// `f32` values.
    F32,
    /// `u32` indices below the bound (class labels, argmax positions), stored as bits.
    Index(usize),
    /// The training step (one `u32`), written by the executor.
    Counter,
    /// Two f16 values per element (an `array<f16>` in the shader), packed by
    /// [`crate::cpu::matmul::pack_f16`]: the low half holds the even element.
    F16Pairs,
}

/// One storage binding of a launch, in shader order. `len` is in 4-byte elements; an
/// optional binding the launch does not use (no bias, no fused activation) has `len == 0`
/// and gets a 4-byte stand-in on the GPU and an empty vector on the CPU.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub name: &'static str,
    pub len: usize,
    pub access: Access,
    pub data: Data,
}

impl Binding {
    /// An `f32` input.
    pub fn read(name: &'static str, len: usize) -> Self {
        Binding {
            name,
            len,
            access: Access::Read,
            data: Data::F32,
        }
    }

    /// An `f32` output.
    pub fn write(name: &'static str, len: usize) -> Self {
        Binding {
            access: Access::Write,
            ..Self::read(name, len)
        }
    }

    /// An `f32` buffer read and updated in place.
    pub fn update(name: &'static str, len: usize) -> Self {
        Binding {
            access: Access::ReadWrite,
            ..Self::read(name, len)
        }
    }

    /// The same binding holding `data`.
    pub fn holding(self, data: Data) -> Self {
        Binding { data, ..self }
    }

    /// `len` if `used`, else 0 (an unused optional binding).
    pub fn len_if(used: bool, len: usize) -> usize {
        if used {
            len
        } else {
            0
        }
    }
}

/// How a launch runs on a device: the pipeline (entry point and specialisation) and the
/// number of workgroups.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuCall {
    pub entry: &'static str,
    pub consts: Consts,
    pub groups: u64,
}

/// `|got − want| ≤ atol + rtol·|want|` per element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

impl Tolerance {
    /// Elementwise ops and short sums: the reassociation of a few f32 additions.
    pub const DEFAULT: Tolerance = Tolerance {
        atol: 1e-4,
        rtol: 1e-4,
    };
    /// Reductions over a whole batch (weight gradients): longer sums, other orders.
    pub const REDUCTION: Tolerance = Tolerance {
        atol: 1e-3,
        rtol: 1e-4,
    };

    /// How many tolerances `got` is from `want` (≤ 1 passes; NaN against NaN is 0).
    pub fn ratio(&self, got: f32, want: f32) -> f32 {
        if got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()) {
            return 0.0;
        }
        let err = (got - want).abs();
        if !err.is_finite() {
            return f32::INFINITY;
        }
        err / (self.atol + self.rtol * want.abs())
    }
}

/// One kernel launch, described once for every consumer. See the module docs.
pub trait Launch: fmt::Debug + Send + Sync + 'static {
    /// The kernel it computes (the generic entry point; [`Launch::gpu`] may pick a faster
    /// variant of the same function).
    fn kernel(&self) -> &'static str;
    /// The storage bindings in shader order (the uniform block follows them).
    fn bindings(&self) -> Vec<Binding>;
    /// The uniform block, as the WGSL struct lays it out.
    fn uniform(&self) -> Vec<u8>;
    /// Entry point, specialisation and workgroups on `ctx` (tiles depend on the adapter).
    fn gpu(&self, ctx: &GpuContext) -> Result<GpuCall>;
    /// The CPU twin: `b[i]` holds binding `i` (inputs filled, outputs sized to their length,
    /// unused optional bindings empty); the twin writes the outputs in place.
    fn cpu(&self, b: &mut [Vec<f32>]);
    /// The same launch for a batch of `n` samples (lengths and grid scale, nothing else).
    fn at_batch(&self, n: usize) -> Arc<dyn Launch>;
    /// The problem size in words, e.g. `64×6×28×28 * 16×6×5×5`.
    fn describe(&self) -> String;
    /// Floating-point operations (a multiply-add counts 2); 0 for memory-bound kernels.
    fn flops(&self) -> f64 {
        0.0
    }
    /// Bytes the kernel must move at least: every binding once.
    fn bytes(&self) -> f64 {
        self.bindings().iter().map(|b| b.len as f64 * 4.0).sum()
    }
    /// How close the GPU result must be to the CPU twin's.
    fn tolerance(&self) -> Tolerance {
        Tolerance::DEFAULT
    }
    /// For the autotuner ([`crate::gpu::tune`]): the key this launch's register tile is
    /// cached under on `ctx` and the tiles it may run with, every one giving bitwise the same
    /// result. `None` (the default): the launch's own choice stands.
    fn tile_choices(&self, _ctx: &GpuContext) -> Option<(String, Vec<(u32, u32)>)> {
        None
    }
    /// For tests and tools that need the concrete launch.
    fn as_any(&self) -> &dyn Any;
}

/// Workgroups of 64 for `len` invocations.
pub(crate) fn groups64(len: usize) -> u64 {
    (len as u64).div_ceil(64)
}

/// The bytes of a uniform struct.
pub(crate) fn bytes<T: bytemuck::Pod>(u: &T) -> Vec<u8> {
    bytemuck::bytes_of(u).to_vec()
}

/// Runs the CPU twin of `l` on `inputs` (one per binding that the kernel reads, in binding
/// order; unused optional ones empty) and returns every binding the kernel writes, in order.
pub fn run_cpu(l: &dyn Launch, inputs: &[&[f32]]) -> Vec<Vec<f32>> {
    let bindings = l.bindings();
    let mut ins = inputs.iter();
    let mut b: Vec<Vec<f32>> = bindings
        .iter()
        .map(|bd| match bd.access {
            Access::Write => vec![0.0; bd.len],
            _ => ins.next().map_or_else(Vec::new, |v| v.to_vec()),
        })
        .collect();
    l.cpu(&mut b);
    bindings
        .iter()
        .zip(b)
        .filter(|(bd, _)| bd.access.writes())
        .map(|(_, v)| v)
        .collect()
}

/// The worst disagreement between a GPU result and the CPU twin's.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// The binding it is in.
    pub binding: &'static str,
    /// Element index within the binding.
    pub index: usize,
    pub got: f32,
    pub want: f32,
    /// `|got − want| / (atol + rtol·|want|)`.
    pub ratio: f32,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}] = {} but the CPU twin gives {} ({:.3} × the tolerance)",
            self.binding, self.index, self.got, self.want, self.ratio
        )
    }
}

/// Compares the written bindings of `l`, `got` (GPU) against `want` (CPU twin), both in the
/// order [`run_cpu`] returns; the worst element if any exceeds the tolerance. Index
/// bindings must match exactly.
pub fn compare(l: &dyn Launch, got: &[Vec<f32>], want: &[Vec<f32>]) -> Option<Mismatch> {
    compare_within(l, got, want, l.tolerance())
}

/// [`compare`] at tolerance `tol` instead of the launch's (e.g. a gradient scaled by a
/// mixed-precision loss scale S, whose absolute errors are S times the unscaled ones).
pub fn compare_within(
    l: &dyn Launch,
    got: &[Vec<f32>],
    want: &[Vec<f32>],
    tol: Tolerance,
) -> Option<Mismatch> {
    let outs = l.bindings().into_iter().filter(|b| b.access.writes());
    let mut worst: Option<Mismatch> = None;
    for ((bd, g), w) in outs.zip(got).zip(want) {
        for (i, (&gv, &wv)) in g.iter().zip(w).enumerate().take(bd.len) {
            let ratio = match bd.data {
                Data::F32 => tol.ratio(gv, wv),
                _ if gv.to_bits() == wv.to_bits() => 0.0,
                _ => f32::INFINITY,
            };
            if ratio > 1.0 && worst.as_ref().is_none_or(|m| ratio > m.ratio) {
                worst = Some(Mismatch {
                    binding: bd.name,
                    index: i,
                    got: gv,
                    want: wv,
                    ratio,
                });
            }
        }
    }
    worst
}

/// A graph op's lowering: its forward rule and, beside it, its gradient rule.
pub(crate) trait Rule: Sync {
    /// Emits the steps computing node `id` (the mode is `lw.train`).
    fn forward(&self, lw: &mut Lowering, id: NodeId);
    /// Emits the steps turning `dy`, the summed gradient of `id`'s output, into gradients of
    /// its inputs (pushed with [`Lowering::push_grad`]) and its parameters.
    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId);
}

/// The rule of each op: the one place the op vocabulary meets the lowering.
pub(crate) fn rule(op: &Op) -> &'static dyn Rule {
    match op {
        Op::Conv { .. } => &conv::ConvRule,
        Op::MaxPool2d { .. }
        | Op::MinPool2d { .. }
        | Op::AvgPool2d { .. }
        | Op::MaxPool1d { .. }
        | Op::AvgPool1d { .. }
        | Op::MinPool1d { .. }
        | Op::MaxPool3d { .. }
        | Op::AvgPool3d { .. }
        | Op::MinPool3d { .. }
        | Op::Pool { .. } => &pool::PoolRule,
        Op::GlobalAvgPool { .. } => &pool::GlobalAvgPoolRule,
        Op::Linear { .. } => &matmul::LinearRule,
        Op::Activation { .. } => &elementwise::ActivationRule,
        Op::Add { .. } => &elementwise::AddRule,
        Op::Dropout { .. } => &elementwise::DropoutRule,
        Op::Rescaling { .. } => &elementwise::RescalingRule,
        Op::Softmax { .. } => &loss::SoftmaxRule,
        Op::CrossEntropy { .. } | Op::Mse { .. } | Op::BceWithLogits { .. } => &loss::LossRule,
        Op::BatchNorm { .. } => &norm::BatchNormRule,
        Op::ChannelsLast { .. } => &layout::ChannelsLastRule,
        Op::Input | Op::Flatten { .. } | Op::Reshape { .. } => &layout::ViewRule,
    }
}
