//! Uniform parameter blocks (mirroring the WGSL structs) and the recorders that turn one
//! op on bound slices into dispatches. Used by the functional [`crate::Backend`] API and
//! by the GPU executor alike.

use bytemuck::{Pod, Zeroable};

use super::buffers::{bytes_of_len, Dispatch, Slice};
use super::device::GpuContext;
use super::kernels::{BenchOp, BenchProgram, Consts};
use crate::cpu::conv2d::ConvDims;
use crate::cpu::matmul::Gemm;
use crate::error::Result;
use crate::optim::Optimizer;
use crate::shape::Pool2dParams;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct ConvUniform {
    pub n: u32,
    pub c: u32,
    pub d: u32,
    pub h: u32,
    pub w: u32,
    pub o: u32,
    pub kd: u32,
    pub kh: u32,
    pub kw: u32,
    pub sd: u32,
    pub sh: u32,
    pub sw: u32,
    pub pd: u32,
    pub ph: u32,
    pub pw: u32,
    pub dd: u32,
    pub dh: u32,
    pub dw: u32,
    pub od: u32,
    pub oh: u32,
    pub ow: u32,
    /// Input channels per group (the weight's second dimension).
    pub cg: u32,
    /// Output channels per group.
    pub og: u32,
    pub has_bias: u32,
    pub act: u32,
    pub alpha: f32,
    /// True convolution (the FLIP specialisation constant must equal it).
    pub flip: u32,
    pad: u32,
}

impl ConvUniform {
    pub fn new(d: &ConvDims, has_bias: bool, act: (u32, f32)) -> Self {
        let u = |v: usize| v as u32;
        ConvUniform {
            n: u(d.x[0]),
            c: u(d.x[1]),
            d: u(d.x[2]),
            h: u(d.x[3]),
            w: u(d.x[4]),
            o: u(d.w[0]),
            kd: u(d.w[2]),
            kh: u(d.w[3]),
            kw: u(d.w[4]),
            sd: u(d.stride[0]),
            sh: u(d.stride[1]),
            sw: u(d.stride[2]),
            pd: u(d.pad[0]),
            ph: u(d.pad[1]),
            pw: u(d.pad[2]),
            dd: u(d.dilation[0]),
            dh: u(d.dilation[1]),
            dw: u(d.dilation[2]),
            od: u(d.y[2]),
            oh: u(d.y[3]),
            ow: u(d.y[4]),
            cg: u(d.w[1]),
            og: u(d.w[0] / d.groups),
            has_bias: has_bias as u32,
            act: act.0,
            alpha: act.1,
            flip: d.flip as u32,
            pad: 0,
        }
    }

    /// 2-D without dilation (D = KD = OD = 1, no depth stride or padding): the generic
    /// kernels' PLAIN specialisation.
    fn plain_geometry(&self) -> bool {
        self.d == 1
            && self.kd == 1
            && self.od == 1
            && self.sd == 1
            && self.pd == 0
            && self.dd == 1
            && self.dh == 1
            && self.dw == 1
    }

    /// Plain 2-D, no groups, dilation or flip: the shapes the stride-1 rows variants serve.
    fn plain_2d(&self) -> bool {
        self.plain_geometry() && self.cg == self.c && self.flip == 0
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

/// Uniform of `dropout_forward/backward` (`DropoutParams` in elementwise.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct DropoutParams {
    pub len: u32,
    pub seed: u32,
    pub p: f32,
    pub scale: f32,
}

impl DropoutParams {
    pub fn new(len: usize, seed: u32, p: f32) -> Self {
        DropoutParams {
            len: len as u32,
            seed,
            p,
            scale: crate::cpu::elementwise::dropout_scale(p),
        }
    }
}

/// Uniform of `rescale` (`RescaleParams` in elementwise.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct RescaleParams {
    pub len: u32,
    pub scale: f32,
    pub offset: f32,
    pub pad: u32,
}

impl RescaleParams {
    pub fn new(len: usize, scale: f32, offset: f32) -> Self {
        RescaleParams {
            len: len as u32,
            scale,
            offset,
            pad: 0,
        }
    }
}

/// Uniform of `global_avg_pool_forward/backward` (`GapParams` in pool.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct GapParams {
    pub rows: u32,
    pub hw: u32,
    pub pad: [u32; 2],
}

impl GapParams {
    pub fn new(rows: usize, hw: usize) -> Self {
        GapParams {
            rows: rows as u32,
            hw: hw as u32,
            pad: [0; 2],
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
pub(crate) struct NormParams {
    pub n: u32,
    pub c: u32,
    pub s: u32,
    pub pad0: u32,
    pub momentum: f32,
    pub eps: f32,
    pub pad1: [u32; 2],
}

impl NormParams {
    pub fn new(d: [usize; 3], momentum: f32, eps: f32) -> Self {
        NormParams {
            n: d[0] as u32,
            c: d[1] as u32,
            s: d[2] as u32,
            pad0: 0,
            momentum,
            eps,
            pad1: [0; 2],
        }
    }
}

/// Uniform of `permute` (`PermuteParams` in layout.wgsl): y's dims and, per y axis, the
/// row-major stride in x of the axis it comes from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct PermuteParams {
    pub dims: [u32; 4],
    pub strides: [u32; 4],
    pub len: u32,
    pub pad: [u32; 3],
}

impl PermuteParams {
    /// `y = x.transpose(perm)` for `x` of dims `xd`.
    pub fn new(xd: [usize; 4], perm: [usize; 4]) -> Self {
        let xs = [xd[1] * xd[2] * xd[3], xd[2] * xd[3], xd[3], 1];
        PermuteParams {
            dims: perm.map(|a| xd[a] as u32),
            strides: perm.map(|a| xs[a] as u32),
            len: xd.iter().product::<usize>() as u32,
            pad: [0; 3],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct ClipParams {
    pub len: u32,
    pub max_norm: f32,
    pub pad: [u32; 2],
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

/// Tile extents a pipeline may be specialised with: few values, so that arbitrary shapes
/// share pipelines (each costs ~0.05–0.3 s to compile on a CPU adapter), yet the channel
/// counts of common layers (1, 3, 6, 16, 32, 64…) split without waste.
const EXTENTS: &[u32] = &[1, 2, 3, 4, 6, 8, 12, 16, 24, 32];

/// `len` split into `parts` as evenly as possible, the part rounded up to an allowed extent.
fn split(len: u32, parts: u32) -> u32 {
    let part = len.div_ceil(parts.max(1)).max(1);
    EXTENTS.iter().copied().find(|&e| e >= part).unwrap_or(part)
}

/// `len` split into the fewest parts of at most `max` (an allowed extent): the part size.
fn balanced(len: u32, max: u32) -> u32 {
    split(len, len.div_ceil(max.max(1)))
}

/// Register-tile limits for one adapter class. Each candidate list is tried in order and the
/// first tile that still gives the dispatch `min_groups` workgroups wins.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiles {
    /// Conv forward: at most this many output channels per invocation (balanced over O) …
    fwd_channels: u32,
    /// … times one of these position counts per invocation.
    fwd_positions: &'static [u32],
    /// Conv backward-input (general kernel): input channels, position counts.
    bwd_in_channels: u32,
    bwd_in_positions: &'static [u32],
    /// Conv backward-input, stride-1 rows variant: input channels × row-segment width.
    bwd_in_rows: (u32, u32),
    /// Conv backward-weight (general kernel): output channels × (c,a,b) columns per
    /// workgroup tile (columns split further while there are too few tiles).
    bwd_w: (u32, u32),
    /// Conv backward-weight, stride-1 rows variant: (c,a) kernel rows per tile (the output
    /// channels as `bwd_w.0`).
    bwd_w_rows: u32,
    /// GEMM: rows × columns per invocation.
    gemm: &'static [(u32, u32)],
    /// Workgroups a dispatch should have to occupy the device.
    pub min_groups: u64,
}

/// CPU adapters (lavapipe/llvmpipe, SwiftShader, WARP: a workgroup runs on one thread, SIMD
/// across invocations). Tuned on lavapipe (LLVM 15, 8-wide AVX2), where a storage load costs
/// ~20 multiply-adds: the larger the tile, the fewer loads per multiply-add, as long as the
/// tile is fully unrolled (`/*unroll*/`) so it stays in registers; spilling the extra
/// accumulators to the stack is cheap next to the loads. Measured alternatives are in
/// docs/PERFORMANCE.md. `min_groups` is set to the host's cores.
const CPU_TILES: Tiles = Tiles {
    fwd_channels: 16,
    fwd_positions: &[12, 8, 4, 2, 1],
    bwd_in_channels: 8,
    bwd_in_positions: &[12, 8, 4, 2, 1],
    bwd_in_rows: (8, 16),
    bwd_w: (8, 32),
    // 8 measured best for 5×5 and 3×3 kernels (6 rows ran 1.6× slower, 16 no faster)
    bwd_w_rows: 8,
    gemm: &[(8, 16), (8, 8), (4, 8), (4, 4), (2, 4), (1, 4)],
    min_groups: 2,
};

/// Hardware GPUs: registers are per invocation and few, so tiles of at most 16–40
/// accumulators (not measured here — no hardware GPU was available; see
/// docs/PERFORMANCE.md), and enough workgroups to spread over the compute units.
const GPU_TILES: Tiles = Tiles {
    fwd_channels: 4,
    fwd_positions: &[4, 2, 1],
    bwd_in_channels: 4,
    bwd_in_positions: &[4, 2, 1],
    bwd_in_rows: (4, 8),
    bwd_w: (4, 8),
    bwd_w_rows: 2,
    gemm: &[(4, 4), (2, 4), (1, 4)],
    min_groups: 32,
};

/// The widest kernel the stride-1 rows variants are specialised for: 7 keeps the
/// weight-gradient reduction buffer (64 × (8 rows · KW + 1) floats) within the 16 KiB of
/// workgroup memory every WebGPU adapter offers.
const ROWS_MAX_KW: u32 = 7;

/// The first candidate whose workgroup count reaches `min_groups`, else the one with the most.
fn pick<T: Copy>(cands: &[T], groups: impl Fn(T) -> u64, min_groups: u64) -> (T, u64) {
    let mut best = (cands[0], groups(cands[0]));
    for &c in cands {
        let g = groups(c);
        if g >= min_groups {
            return (c, g);
        }
        if g > best.1 {
            best = (c, g);
        }
    }
    best
}

/// Workgroups of conv kernel `name` for register tile `tile`.
fn conv_groups(name: &str, p: &ConvUniform, (r, s): (u32, u32)) -> u64 {
    match name {
        "conv2d_forward" => {
            let pos = p.n as u64 * p.od as u64 * p.oh as u64 * p.ow as u64;
            pos.div_ceil(64 * s as u64) * p.o.div_ceil(r) as u64
        }
        "conv2d_backward_input" => {
            let pos = p.n as u64 * p.d as u64 * p.h as u64 * p.w as u64;
            pos.div_ceil(64 * s as u64) * p.c.div_ceil(r) as u64
        }
        "conv2d_backward_weight_rows" => p.o.div_ceil(r) as u64 * (p.c * p.kh).div_ceil(s) as u64,
        "conv2d_backward_input_rows" => {
            let segs = p.n as u64 * p.h as u64 * p.w.div_ceil(s) as u64;
            segs.div_ceil(64) * p.c.div_ceil(r) as u64
        }
        _ => {
            let cols = p.cg * p.kd * p.kh * p.kw + p.has_bias;
            p.o.div_ceil(r) as u64 * cols.div_ceil(s) as u64
        }
    }
}

/// A channel tile for `len` channels in groups of `group` (`group == len`: no groups): as
/// [`balanced`] without groups; with groups, the largest allowed extent up to `max` that
/// divides the group, so no tile straddles two groups.
fn channel_tile(len: u32, group: u32, max: u32) -> u32 {
    if group == len {
        return balanced(len, max);
    }
    EXTENTS
        .iter()
        .copied()
        .filter(|&e| e <= max.max(1) && group.is_multiple_of(e))
        .max()
        .unwrap_or(1)
}

/// The conv kernel that computes `name`: the rows variants of the backward passes for layers
/// with a horizontal stride of 1 (both strides 1 for backward-input) and kernels up to
/// `ROWS_MAX_KW` wide. (A rows variant of the forward pass measured no faster: its weight
/// loads dominate either way.)
fn conv_kernel(name: &str, p: &ConvUniform) -> &'static str {
    match name {
        "conv2d_forward" => "conv2d_forward",
        "conv2d_backward_input"
            if p.plain_2d() && p.sh == 1 && p.sw == 1 && p.kw <= ROWS_MAX_KW =>
        {
            "conv2d_backward_input_rows"
        }
        "conv2d_backward_input" => "conv2d_backward_input",
        _ if p.plain_2d() && p.sw == 1 && p.kw <= ROWS_MAX_KW => "conv2d_backward_weight_rows",
        _ => "conv2d_backward_weight",
    }
}

/// The register tile of conv kernel `name`: (channels, positions) per invocation for the
/// forward and backward-input kernels, (output channels, columns) per workgroup for the
/// backward-weight kernel. `min_groups` is the parallelism to keep: tiles shrink until the
/// dispatch has that many workgroups, if they can.
fn conv_tile(name: &str, p: &ConvUniform, t: &Tiles) -> (u32, u32) {
    let min_groups = t.min_groups;
    match name {
        "conv2d_forward" | "conv2d_backward_input" => {
            let (chan, group, max, cands) = if name == "conv2d_forward" {
                (p.o, p.og, t.fwd_channels, t.fwd_positions)
            } else {
                (p.c, p.cg, t.bwd_in_channels, t.bwd_in_positions)
            };
            let r = channel_tile(chan, group, max);
            let (s, _) = pick(cands, |s| conv_groups(name, p, (r, s)), min_groups);
            (r, s)
        }
        "conv2d_backward_input_rows" => {
            let r = balanced(p.c, t.bwd_in_rows.0);
            let mut parts = p.w.div_ceil(t.bwd_in_rows.1);
            let mut s = split(p.w, parts);
            while conv_groups(name, p, (r, s)) < min_groups && s > 1 {
                parts += 1;
                s = split(p.w, parts);
            }
            (r, s)
        }
        "conv2d_backward_weight_rows" => {
            let r = balanced(p.o, t.bwd_w.0);
            let rows = p.c * p.kh;
            // 1×1 kernels: a (c,a) row is a single column, so take 4× as many rows to keep
            // the tile as wide as a 3×3 or 5×5 layer's
            let max_rows = if p.kw == 1 {
                4 * t.bwd_w_rows
            } else {
                t.bwd_w_rows
            };
            let mut a = balanced(rows, max_rows);
            let mut parts = rows.div_ceil(a);
            while conv_groups(name, p, (r, a)) < min_groups && a > 1 {
                parts += 1;
                a = split(rows, parts);
            }
            (r, a)
        }
        _ => {
            let r = channel_tile(p.o, p.og, t.bwd_w.0);
            let cols = p.cg * p.kd * p.kh * p.kw + p.has_bias;
            let mut c = balanced(cols, t.bwd_w.1);
            let mut parts = cols.div_ceil(c);
            while conv_groups(name, p, (r, c)) < min_groups && c > 1 {
                parts += 1;
                c = split(cols, parts);
            }
            (r, c)
        }
    }
}

/// The specialisation of conv kernel `name`: fused activation and bias, register tile.
fn conv_consts(name: &str, p: &ConvUniform, (r, s): (u32, u32)) -> Consts {
    let mut consts: Consts = vec![("ACT", p.act), ("HAS_BIAS", p.has_bias), ("FLIP", p.flip)];
    if !name.ends_with("_rows") {
        consts.push(("PLAIN", p.plain_geometry() as u32));
    }
    let names = match name {
        "conv2d_forward" => ("FR", "FS"),
        "conv2d_backward_input" => {
            let unit = p.sd == 1 && p.sh == 1 && p.sw == 1;
            consts.push(("UNIT", unit as u32));
            ("IR", "IS")
        }
        "conv2d_backward_weight_rows" => {
            consts.extend([("KWC", p.kw), ("KWM", p.kw - 1), ("WRED", s * p.kw + 1)]);
            ("WR", "WA")
        }
        "conv2d_backward_input_rows" => {
            consts.extend([("KWC", p.kw), ("KWM", p.kw - 1), ("SEG", s + p.kw - 1)]);
            ("IR", "IS")
        }
        _ => ("WR", "WS"),
    };
    consts.extend([(names.0, r), (names.1, s)]);
    consts
}

/// Workgroups of the tiled `gemm` for tile `(tr, ts)` (rows × columns per invocation).
fn gemm_groups(p: &GemmParams, (tr, ts): (u32, u32)) -> u64 {
    let cols = (p.n + p.ones_col) as u64;
    cols.div_ceil(8 * ts as u64) * (p.m as u64).div_ceil(8 * tr as u64)
}

/// The specialisation of `gemm` / `gemm_naive`: fused bias, activations, ones column, tile.
fn gemm_consts(name: &str, p: &GemmParams, (tr, ts): (u32, u32)) -> Consts {
    let mut consts: Consts = vec![
        ("HAS_BIAS", p.has_bias),
        ("ACT_OUT", p.act_out),
        ("ACT_IN", p.act_in),
        ("ONES_COL", p.ones_col),
    ];
    if name != "gemm_naive" {
        consts.extend([("TR", tr), ("TS", ts)]);
    }
    consts
}

impl GpuContext {
    /// The register-tile limits for this adapter's class: [`CPU_TILES`] on a CPU adapter
    /// (with one workgroup per host core to keep), [`GPU_TILES`] otherwise.
    pub(crate) fn tiles(&self) -> Tiles {
        if self.summary.device_type == "Cpu" {
            Tiles {
                min_groups: std::thread::available_parallelism().map_or(2, |n| n.get() as u64),
                ..CPU_TILES
            }
        } else {
            GPU_TILES
        }
    }

    /// Records kernel `name` over `slices` with uniform `params` and `groups` workgroups.
    /// Returns the dispatch and the uniform buffer (kept by callers that rewrite it).
    pub(crate) fn record<T: Pod>(
        &self,
        name: &str,
        slices: &[Slice],
        params: &T,
        groups: u64,
    ) -> Result<(Dispatch, std::sync::Arc<wgpu::Buffer>)> {
        self.record_with(name, &[], slices, params, groups)
    }

    /// Records an elementwise kernel (`activation_forward/backward`, `add`): the activation
    /// code becomes the pipeline's `ACT` constant, never a branch on the uniform (a CPU
    /// adapter such as lavapipe recompiles a shader that branches on a uniform value at
    /// every bind — see docs/SOAK.md).
    pub(crate) fn record_ew(
        &self,
        name: &str,
        slices: &[Slice],
        params: &EwParams,
        groups: u64,
    ) -> Result<(Dispatch, std::sync::Arc<wgpu::Buffer>)> {
        if name.starts_with("activation") {
            self.record_with(name, &[("ACT", params.act)], slices, params, groups)
        } else {
            self.record(name, slices, params, groups)
        }
    }

    /// [`GpuContext::record`] for a specialised pipeline.
    pub(crate) fn record_with<T: Pod>(
        &self,
        name: &str,
        consts: &[(&'static str, u32)],
        slices: &[Slice],
        params: &T,
        groups: u64,
    ) -> Result<(Dispatch, std::sync::Arc<wgpu::Buffer>)> {
        let kernel = self.kernel_with(name, consts)?;
        let ubuf = self.uniform(name, params);
        let d = self.dispatch(&kernel, slices, &ubuf, groups)?;
        Ok((d, ubuf))
    }

    /// The register tile for a launch whose batch-independent description is `key`: chosen
    /// by `choose` the first time, then reused, so that the same layer at another batch size
    /// (the smaller last batch of an epoch) uses the same pipeline and compiles nothing.
    fn tile_for(&self, key: String, choose: impl FnOnce() -> (u32, u32)) -> Result<(u32, u32)> {
        let mut tiles = self
            .kernels
            .tiles
            .lock()
            .map_err(|_| crate::error::Error::Device("tile cache lock poisoned".into()))?;
        Ok(*tiles.entry(key).or_insert_with(choose))
    }

    /// Records conv kernel `name` (forward, backward-input or backward-weight) with its
    /// specialisation and grid.
    pub(crate) fn record_conv(
        &self,
        name: &str,
        slices: &[Slice],
        params: &ConvUniform,
    ) -> Result<(Dispatch, std::sync::Arc<wgpu::Buffer>)> {
        let p = params;
        let name = conv_kernel(name, p);
        // every field but the batch size: the channel tiles must divide the groups (cg,
        // og), so two layers that differ only in groups must not share a tile
        let key = format!(
            "{name} {:?}",
            [
                p.c, p.d, p.h, p.w, p.o, p.kd, p.kh, p.kw, p.sd, p.sh, p.sw, p.pd, p.ph, p.pw,
                p.dd, p.dh, p.dw, p.cg, p.og, p.has_bias, p.act, p.flip
            ]
        );
        let tiles = self.tiles();
        let tile = self.tile_for(key, || conv_tile(name, p, &tiles))?;
        let consts = conv_consts(name, p, tile);
        self.record_with(name, &consts, slices, p, conv_groups(name, p, tile))
    }

    /// Records `max_pool2d_forward` or `max_pool2d_backward` (or the `avg_pool2d_*` pair,
    /// same uniform and grid), one invocation per output
    /// (forward) or input (backward) element. With `specialise` the pipeline is compiled
    /// for the per-sample geometry (2–3× faster on a CPU adapter, one pipeline per pooling
    /// layer: the executor does it at plan time); without, it reads the geometry from the
    /// uniform (the functional API, so that arbitrary shapes share one pipeline).
    pub(crate) fn record_pool(
        &self,
        name: &str,
        slices: &[Slice],
        params: &PoolParams,
        specialise: bool,
    ) -> Result<(Dispatch, std::sync::Arc<wgpu::Buffer>)> {
        let d = params.dims;
        let consts: Consts = if specialise {
            vec![
                ("GEO", 1),
                ("S_H", d[2]),
                ("S_W", d[3]),
                ("S_KH", d[4]),
                ("S_KW", d[5]),
                ("S_SH", d[6]),
                ("S_SW", d[7]),
                ("S_PH", d[8]),
                ("S_PW", d[9]),
                ("S_OH", d[10]),
                ("S_OW", d[11]),
            ]
        } else {
            Vec::new()
        };
        let plane = if name.ends_with("_forward") {
            d[10] as u64 * d[11] as u64
        } else {
            d[2] as u64 * d[3] as u64
        };
        let groups = (d[0] as u64 * d[1] as u64 * plane).div_ceil(64);
        self.record_with(name, &consts, slices, params, groups)
    }

    /// Records `gemm` (or `gemm_naive`) with its specialisation and grid.
    pub(crate) fn record_gemm(
        &self,
        name: &str,
        slices: &[Slice],
        params: &GemmParams,
    ) -> Result<(Dispatch, std::sync::Arc<wgpu::Buffer>)> {
        let p = params;
        if name == "gemm_naive" {
            let groups = (p.m as u64 * (p.n + p.ones_col) as u64).div_ceil(64);
            return self.record_with(name, &gemm_consts(name, p, (1, 1)), slices, p, groups);
        }
        // M and K scale with the batch in the linear layer's products; N and the strides don't.
        let key = format!(
            "{name} {:?}",
            [p.n, p.sam, p.sak, p.sbk, p.sbn, p.has_bias, p.act_out, p.act_in, p.ones_col]
        );
        let t = self.tiles();
        let tile = self.tile_for(key, || pick(t.gemm, |g| gemm_groups(p, g), t.min_groups).0)?;
        let consts = gemm_consts(name, p, tile);
        self.record_with(name, &consts, slices, p, gemm_groups(p, tile))
    }
}

/// Deterministic values in [−1, 1).
fn bench_values(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len.max(1))
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Deterministic integers in `0..bound`.
fn bench_indices(seed: u64, len: usize, bound: usize) -> Vec<u32> {
    bench_values(seed, len)
        .iter()
        .map(|v| (((v + 1.0) * 0.5 * bound as f32) as u32).min(bound as u32 - 1))
        .collect()
}

impl GpuContext {
    /// Records one dispatch of each op on its own freshly filled buffers, with the
    /// specialisation and grid the executor would use. Pipelines are compiled here.
    pub fn bench_program(&self, ops: &[BenchOp]) -> Result<BenchProgram> {
        let mut bufs = Vec::new();
        let mut dispatches = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let seed = 1 + 16 * i as u64;
            let mut seedn = seed;
            let mut ins = Vec::new();
            let mut input = |len: usize| {
                seedn += 1;
                let b = self.upload("bench.in", &bench_values(seedn, len));
                ins.push(b.clone());
                Slice::whole(b)
            };
            let mut outs = Vec::new();
            let mut output = |len: usize| {
                let b = self.zeros("bench.out", bytes_of_len(len));
                outs.push(b.clone());
                Slice::whole(b)
            };
            let d = match op {
                BenchOp::Conv2dForward { d, bias, act } => {
                    let prm = ConvUniform::new(d, *bias, *act);
                    let s = [
                        input(d.x.iter().product()),
                        input(d.w.iter().product()),
                        input(d.w[0]),
                        output(d.y.iter().product()),
                    ];
                    self.record_conv("conv2d_forward", &s, &prm)?.0
                }
                BenchOp::Conv2dBackwardInput { d, act } => {
                    let prm = ConvUniform::new(d, false, *act);
                    let s = [
                        input(d.y.iter().product()),
                        input(d.w.iter().product()),
                        input(d.y.iter().product()),
                        output(d.x.iter().product()),
                    ];
                    self.record_conv("conv2d_backward_input", &s, &prm)?.0
                }
                BenchOp::Conv2dBackwardWeight { d, bias, act } => {
                    let prm = ConvUniform::new(d, *bias, *act);
                    let s = [
                        input(d.x.iter().product()),
                        input(d.y.iter().product()),
                        input(d.y.iter().product()),
                        output(d.w.iter().product()),
                        output(d.w[0]),
                    ];
                    self.record_conv("conv2d_backward_weight", &s, &prm)?.0
                }
                BenchOp::Gemm { g, bias } | BenchOp::GemmNaive { g, bias } => {
                    let prm = GemmParams::new(g, *bias);
                    let a_len = (g.m - 1) * g.sam + (g.k - 1) * g.sak + 1;
                    let b_len = (g.k - 1) * g.sbk + (g.n - 1) * g.sbn + 1;
                    let s = [
                        input(a_len),
                        input(b_len),
                        input(g.n),
                        input(a_len),
                        output(g.m * g.n),
                        output(g.m),
                    ];
                    self.record_gemm(op.kernel(), &s, &prm)?.0
                }
                BenchOp::MaxPool2dForward { x, y, p } | BenchOp::MinPool2dForward { x, y, p } => {
                    let ylen: usize = y.iter().product();
                    let s = [input(x.iter().product()), output(ylen), output(ylen)];
                    let prm = PoolParams::new(*x, *y, p);
                    self.record_pool(op.kernel(), &s, &prm, true)?.0
                }
                BenchOp::MaxPool2dBackward { x, y, p } => {
                    let (xlen, ylen): (usize, usize) = (x.iter().product(), y.iter().product());
                    let idx = self.upload("bench.idx", &bench_indices(seed, ylen, x[2] * x[3]));
                    let s = [input(ylen), Slice::whole(idx.clone()), output(xlen)];
                    bufs.push(idx);
                    let prm = PoolParams::new(*x, *y, p);
                    self.record_pool("max_pool2d_backward", &s, &prm, true)?.0
                }
                BenchOp::AvgPool2dForward { x, y, p } => {
                    let s = [input(x.iter().product()), output(y.iter().product())];
                    let prm = PoolParams::new(*x, *y, p);
                    self.record_pool("avg_pool2d_forward", &s, &prm, true)?.0
                }
                BenchOp::AvgPool2dBackward { x, y, p } => {
                    let s = [input(y.iter().product()), output(x.iter().product())];
                    let prm = PoolParams::new(*x, *y, p);
                    self.record_pool("avg_pool2d_backward", &s, &prm, true)?.0
                }
                BenchOp::GlobalAvgPoolForward { rows, hw } => {
                    let s = [input(rows * hw), output(*rows)];
                    let prm = GapParams::new(*rows, *hw);
                    self.record(op.kernel(), &s, &prm, groups64(*rows))?.0
                }
                BenchOp::GlobalAvgPoolBackward { rows, hw } => {
                    let s = [input(*rows), output(rows * hw)];
                    let prm = GapParams::new(*rows, *hw);
                    self.record(op.kernel(), &s, &prm, groups64(rows * hw))?.0
                }
                BenchOp::DropoutForward { len } | BenchOp::DropoutBackward { len } => {
                    let s = [input(*len), input(1), output(*len)];
                    let prm = DropoutParams::new(*len, 1, 0.5);
                    self.record(op.kernel(), &s, &prm, groups64(*len))?.0
                }
                BenchOp::Rescale { len } => {
                    let s = [input(*len), output(*len)];
                    let prm = RescaleParams::new(*len, 0.5, 0.25);
                    self.record(op.kernel(), &s, &prm, groups64(*len))?.0
                }
                BenchOp::ActivationForward { len, .. }
                | BenchOp::ActivationBackward { len, .. }
                | BenchOp::Add { len } => {
                    let act = match op {
                        BenchOp::ActivationForward { act, .. }
                        | BenchOp::ActivationBackward { act, .. } => (act.code(), act.alpha()),
                        _ => (0, 0.0),
                    };
                    let mut s = vec![input(*len)];
                    if !matches!(op, BenchOp::ActivationForward { .. }) {
                        s.push(input(*len));
                    }
                    s.push(output(*len));
                    let prm = EwParams {
                        len: *len as u32,
                        act: act.0,
                        alpha: act.1,
                        pad: 0,
                    };
                    self.record_ew(op.kernel(), &s, &prm, groups64(*len))?.0
                }
                BenchOp::CrossEntropy { rows, cols } | BenchOp::Mse { rows, cols } => {
                    let t = if matches!(op, BenchOp::CrossEntropy { .. }) {
                        self.upload("bench.t", &bench_indices(seed, *rows, *cols))
                    } else {
                        self.upload("bench.t", &bench_values(seed, rows * cols))
                    };
                    let s = [
                        input(rows * cols),
                        Slice::whole(t.clone()),
                        output(rows * cols),
                        output(4),
                    ];
                    bufs.push(t);
                    let prm = LossParams {
                        rows: *rows as u32,
                        cols: *cols as u32,
                        accumulate: 1,
                        has_grad: 1,
                        scale: 1.0 / *rows as f32,
                        pad: [0; 3],
                    };
                    self.record(op.kernel(), &s, &prm, 1)?.0
                }
                BenchOp::OptimizerStep { len } => {
                    let s = [
                        input(*len),
                        input(1),
                        output(*len),
                        output(*len),
                        output(*len),
                        output(4),
                    ];
                    let prm = OptParams::new(&Optimizer::sgd(0.01), 1, *len);
                    let kind = [("KIND", prm.kind)];
                    self.record_with("optimizer_step", &kind, &s, &prm, groups64(*len))?
                        .0
                }
                BenchOp::BatchNormForwardTrain { d }
                | BenchOp::BatchNormForwardEval { d }
                | BenchOp::BatchNormBackward { d } => {
                    let (len, c) = (d[0] * d[1] * d[2], d[1]);
                    let s = match op {
                        BenchOp::BatchNormForwardTrain { .. } => vec![
                            input(len),
                            input(c),
                            input(c),
                            output(len),
                            output(2 * c),
                            output(c),
                            output(c),
                        ],
                        BenchOp::BatchNormForwardEval { .. } => vec![
                            input(len),
                            input(c),
                            input(c),
                            input(c),
                            input(c),
                            output(len),
                        ],
                        _ => vec![
                            input(len),
                            input(len),
                            input(c),
                            input(2 * c),
                            output(len),
                            output(c),
                            output(c),
                        ],
                    };
                    let prm = NormParams::new(*d, 0.1, 1e-5);
                    let groups = if matches!(op, BenchOp::BatchNormForwardEval { .. }) {
                        groups64(len)
                    } else {
                        c as u64
                    };
                    self.record(op.kernel(), &s, &prm, groups)?.0
                }
                BenchOp::SoftmaxForward { rows, cols }
                | BenchOp::SoftmaxBackward { rows, cols } => {
                    let mut s = vec![input(rows * cols)];
                    if matches!(op, BenchOp::SoftmaxBackward { .. }) {
                        s.push(input(rows * cols));
                    }
                    s.push(output(rows * cols));
                    let prm = LossParams {
                        rows: *rows as u32,
                        cols: *cols as u32,
                        accumulate: 0,
                        has_grad: 0,
                        scale: 1.0,
                        pad: [0; 3],
                    };
                    self.record(op.kernel(), &s, &prm, groups64(*rows))?.0
                }
                BenchOp::Permute { xd, perm } => {
                    let len: usize = xd.iter().product();
                    let s = [input(len), output(len)];
                    let prm = PermuteParams::new(*xd, *perm);
                    self.record("permute", &s, &prm, groups64(len))?.0
                }
            };
            bufs.extend(ins);
            bufs.extend(outs);
            dispatches.push(d);
        }
        Ok(BenchProgram {
            ops: ops.to_vec(),
            dispatches,
            _buffers: bufs,
        })
    }

    /// Runs `reps` repetitions of the program's dispatches (or of dispatch `only`) in one
    /// compute pass and one submit, waits for the device, and returns the wall-clock
    /// seconds per repetition (submit and wait included, amortised over the repetitions).
    pub fn bench_run(&self, prog: &BenchProgram, only: Option<usize>, reps: usize) -> Result<f64> {
        let ds: Vec<&Dispatch> = match only {
            Some(i) => vec![&prog.dispatches[i]],
            None => prog.dispatches.iter().collect(),
        };
        let t0 = std::time::Instant::now();
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bench"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench"),
                timestamp_writes: None,
            });
            for _ in 0..reps.max(1) {
                for d in &ds {
                    pass.set_pipeline(&d.kernel.pipeline);
                    pass.set_bind_group(0, &d.bind_group, &[]);
                    pass.dispatch_workgroups(d.grid[0], d.grid[1], d.grid[2]);
                }
            }
        }
        self.finish_and_read(encoder, &[])?;
        Ok(t0.elapsed().as_secs_f64() / reps.max(1) as f64)
    }

    /// Host seconds to encode the program's dispatches into one compute pass and finish the
    /// command buffer (what a training step costs the CPU before its submit), the mean of
    /// `reps` encodings. Nothing is submitted.
    pub fn bench_encode(&self, prog: &BenchProgram, reps: usize) -> f64 {
        let t0 = std::time::Instant::now();
        for _ in 0..reps.max(1) {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("bench"),
                });
            self.encode(&mut encoder, &prog.dispatches);
            drop(encoder.finish());
        }
        t0.elapsed().as_secs_f64() / reps.max(1) as f64
    }
}
