//! The convolution family over 1, 2 or 3 spatial axes (`shaders/conv.wgsl`, twin
//! [`crate::cpu::conv`]): the launch of each pass, its register tiles and grid, and the graph
//! op's forward and gradient rules.
//!
//! # Shapes
//! `x [N,C,D,H,W]`, `w [O,C/G,KD,KH,KW]`, `b [O]` → `y [N,O,OD,OH,OW]` (missing leading
//! spatial axes are 1); `dx` has x's shape, `dw` w's, `db [O]`.

use std::any::Any;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::elementwise::SumParts;
use super::{bytes, Binding, GpuCall, Launch, Rule, Tolerance};
use crate::cpu;
use crate::error::{Error, Result};
use crate::gpu::kernels::Consts;
use crate::gpu::tiles::{balanced, channel_tile, pick, split, Tiles, ROWS_MAX_KW};
use crate::gpu::GpuContext;
use crate::graph::{conv_dims5, Graph, NodeId, Op};
use crate::plan::{act_code, Lowering, TensorId};
use crate::shape::{ConvDims, ConvParams};

/// Which pass of the convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    /// `y = act(b + Σ w·x)`.
    Forward,
    /// `dx` from `dy` (and `y`, when an activation is fused).
    BackwardInput,
    /// `dw`, `db` from `x` and `dy` (and `y`, when an activation is fused).
    BackwardWeight,
}

/// One convolution launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv {
    pub pass: ConvPass,
    pub d: ConvDims,
    /// Forward: add a bias; backward-weight: write `db`.
    pub bias: bool,
    /// (code, α) of the activation fused into the forward output, `(0, 0.0)` for none; the
    /// backward passes multiply `dy` by its derivative, recovered from `y`, or from the
    /// pre-activation `z` the forward pass also writes for activations that keep their input
    /// ([`crate::cpu::elementwise::act_keeps_input`]; the backward passes then bind `z` in
    /// `y`'s place).
    pub act: (u32, f32),
}

impl Conv {
    pub fn new(pass: ConvPass, d: ConvDims, bias: bool, act: (u32, f32)) -> Self {
        Conv { pass, d, bias, act }
    }

    fn uniform_block(&self) -> ConvUniform {
        ConvUniform::new(&self.d, self.bias, self.act)
    }

    /// Whether this forward pass also writes the pre-activation.
    fn keeps_z(&self) -> bool {
        self.pass == ConvPass::Forward && cpu::elementwise::act_keeps_input(self.act.0)
    }
}

impl Launch for Conv {
    fn kernel(&self) -> &'static str {
        match self.pass {
            ConvPass::Forward => "conv_forward",
            ConvPass::BackwardInput => "conv_backward_input",
            ConvPass::BackwardWeight => "conv_backward_weight",
        }
    }

    fn bindings(&self) -> Vec<Binding> {
        let d = &self.d;
        let (x, w, y): (usize, usize, usize) = (
            d.x.iter().product(),
            d.w.iter().product(),
            d.y.iter().product(),
        );
        let ya = Binding::len_if(self.act.0 != 0, y);
        let o = Binding::len_if(self.bias, d.w[0]);
        match self.pass {
            ConvPass::Forward => vec![
                Binding::read("x", x),
                Binding::read("w", w),
                Binding::read("b", o),
                Binding::write("y", y),
                Binding::write("z", Binding::len_if(self.keeps_z(), y)),
            ],
            ConvPass::BackwardInput => vec![
                Binding::read("dy", y),
                Binding::read("w", w),
                Binding::read("y", ya),
                Binding::write("dx", x),
            ],
            ConvPass::BackwardWeight => vec![
                Binding::read("x", x),
                Binding::read("dy", y),
                Binding::read("y", ya),
                Binding::write("dw", w),
                Binding::write("db", o),
            ],
        }
    }

    fn uniform(&self) -> Vec<u8> {
        bytes(&self.uniform_block())
    }

    fn gpu(&self, ctx: &GpuContext) -> Result<GpuCall> {
        let p = self.uniform_block();
        let tiles = ctx.tiles();
        let entry = variant(self.pass, &p, &tiles);
        let tile = ctx.tile_for(tile_key(entry, &p), || tile(entry, &p, &tiles))?;
        let mut consts = consts(entry, &p, tile, &tiles);
        if self.pass == ConvPass::Forward {
            consts.push(("KEEP_Z", self.keeps_z() as u32));
        }
        Ok(GpuCall {
            entry,
            consts,
            groups: groups(entry, &p, tile),
        })
    }

    /// The pointwise forward and backward-input kernels: every register tile of the
    /// adapter's list sums each output over the channels in the same order.
    fn tile_choices(&self, ctx: &GpuContext) -> Option<(String, Vec<(u32, u32)>)> {
        let p = self.uniform_block();
        let tiles = ctx.tiles();
        let entry = variant(self.pass, &p, &tiles);
        let cands = match entry {
            "conv_forward_pointwise" | "conv_backward_input_pointwise" => tiles.pointwise,
            "conv_forward_pointwise_v4" | "conv_backward_input_pointwise_v4" => tiles.pointwise_v4,
            _ => return None,
        };
        Some((tile_key(entry, &p), cands.to_vec()))
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let d = self.d;
        fn fused(y: &[f32], act: (u32, f32)) -> Option<(&[f32], u32, f32)> {
            (act.0 != 0).then_some((y, act.0, act.1))
        }
        match self.pass {
            ConvPass::Forward if self.keeps_z() => {
                let bias = self.bias.then_some(b[2].as_slice());
                let z = cpu::conv::conv_forward(d, &b[0], &b[1], bias, (0, 0.0));
                let (code, alpha) = self.act;
                b[3] = z
                    .iter()
                    .map(|&v| cpu::elementwise::act_fwd(v, code, alpha))
                    .collect();
                b[4] = z;
            }
            ConvPass::Forward => {
                let bias = self.bias.then_some(b[2].as_slice());
                b[3] = cpu::conv::conv_forward(d, &b[0], &b[1], bias, self.act);
            }
            ConvPass::BackwardInput => {
                b[3] = cpu::conv::conv_backward_input(d, &b[0], &b[1], fused(&b[2], self.act));
            }
            ConvPass::BackwardWeight => {
                let (dw, db) =
                    cpu::conv::conv_backward_weight(d, &b[0], &b[1], fused(&b[2], self.act));
                b[3] = dw;
                if self.bias {
                    b[4] = db;
                }
            }
        }
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        let mut c = *self;
        c.d.x[0] = n;
        c.d.y[0] = n;
        Arc::new(c)
    }

    fn describe(&self) -> String {
        let d = &self.d;
        let mut s = format!("{:?} * {:?}", d.x, d.w);
        if d.stride != [1; 3] {
            s.push_str(&format!(" s{:?}", d.stride));
        }
        if d.pad != [0; 3] {
            s.push_str(&format!(" p{:?}", d.pad));
        }
        if d.groups != 1 {
            s.push_str(&format!(" g{}", d.groups));
        }
        s
    }

    /// Every multiply-add of the dense definition, padding included.
    fn flops(&self) -> f64 {
        let outputs: usize = self.d.y.iter().product();
        let taps: usize = self.d.w[1..].iter().product();
        2.0 * outputs as f64 * taps as f64
    }

    fn tolerance(&self) -> Tolerance {
        match self.pass {
            ConvPass::BackwardWeight => Tolerance::REDUCTION,
            _ => Tolerance::DEFAULT,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The first pass of a split backward-weight reduction: the gradients of
/// [`ConvPass::BackwardWeight`] summed over each of `parts` partitions of the N·OD·OH output
/// rows (boundaries [`cpu::conv::part_starts`]) into a scratch `[parts, O·K (+ O with a
/// bias)]`; [`super::elementwise::SumParts`] then adds the partitions in order into `dw` and
/// `db`. The lowering emits it where the weight gradient has too few register tiles to occupy
/// the device (`weight_parts`: a function of the shape and the adapter class): each partition
/// runs the whole grid of tiles, so the tiles stay as large as the layer allows and the long
/// reduction is what is split.
///
/// # Shapes
/// `x [N,C,D,H,W]`, `dy [N,O,OD,OH,OW]` → `dw_parts [parts, O·C/G·KD·KH·KW (+ O)]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvWeightParts {
    pub d: ConvDims,
    pub bias: bool,
    /// As [`Conv::act`].
    pub act: (u32, f32),
    pub parts: usize,
}

impl ConvWeightParts {
    /// The unsplit launch computing the same gradients.
    pub fn whole(&self) -> Conv {
        Conv::new(ConvPass::BackwardWeight, self.d, self.bias, self.act)
    }

    /// Values per partition: `dw`'s, then `db`'s with a bias.
    pub fn part_len(&self) -> usize {
        let dw: usize = self.d.w.iter().product();
        dw + Binding::len_if(self.bias, self.d.w[0])
    }

    fn uniform_block(&self) -> ConvUniform {
        ConvUniform {
            parts: self.parts as u32,
            ..ConvUniform::new(&self.d, self.bias, self.act)
        }
    }
}

impl Launch for ConvWeightParts {
    fn kernel(&self) -> &'static str {
        "conv_backward_weight_parts"
    }

    fn bindings(&self) -> Vec<Binding> {
        let mut b = self.whole().bindings();
        b[3] = Binding::write("dw_parts", self.parts * self.part_len());
        b[4] = Binding::write("db", 0);
        b
    }

    fn uniform(&self) -> Vec<u8> {
        bytes(&self.uniform_block())
    }

    /// The unsplit kernel's entry point and largest tile, specialised with `SPLIT = 1`, its
    /// grid repeated per partition.
    fn gpu(&self, ctx: &GpuContext) -> Result<GpuCall> {
        let p = self.uniform_block();
        let tiles = ctx.tiles();
        let entry = variant(ConvPass::BackwardWeight, &p, &tiles);
        let key = format!("{entry} split {:?}", ConvUniform { n: 0, ..p });
        let tile = ctx.tile_for(key, || tile_filling(entry, &p, &tiles, 1))?;
        let mut consts = consts(entry, &p, tile, &tiles);
        consts.push(("SPLIT", 1));
        Ok(GpuCall {
            entry,
            consts,
            groups: groups(entry, &p, tile) * self.parts as u64,
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let y = (self.act.0 != 0).then_some((b[2].as_slice(), self.act.0, self.act.1));
        b[3] =
            cpu::conv::conv_backward_weight_parts(self.d, self.parts, self.bias, &b[0], &b[1], y);
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        let mut c = *self;
        c.d.x[0] = n;
        c.d.y[0] = n;
        Arc::new(c)
    }

    fn describe(&self) -> String {
        format!("{} in {} parts", self.whole().describe(), self.parts)
    }

    fn flops(&self) -> f64 {
        self.whole().flops()
    }

    fn tolerance(&self) -> Tolerance {
        Tolerance::REDUCTION
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Rows a partition should have at least: one per invocation of a workgroup.
const MIN_PART_ROWS: u64 = 64;
/// The most partitions a reduction is split into.
const MAX_PARTS: u64 = 64;

/// How many row partitions the weight gradient of `d` is split into on an adapter with tiles
/// `t`: 1 (no split) when the unsplit launch (its tiles shrunk towards `t.min_groups`)
/// already has `t.split_groups` workgroups, else enough partitions of the largest tiles to
/// reach that, each of at least [`MIN_PART_ROWS`] rows, at most [`MAX_PARTS`]. A function of
/// the shape and the adapter class only (never of a timing), so a plan is the same on every
/// run. (On a CPU adapter `split_groups` is the core count, so only a layer whose tiles
/// cannot be shrunk to occupy every core is split: measured on lavapipe, shrinking is the
/// faster of the two where it suffices — docs/results/issue17-split-reduction.md.)
pub(crate) fn weight_parts(d: &ConvDims, bias: bool, t: &Tiles) -> usize {
    let p = ConvUniform::new(d, bias, (0, 0.0));
    let entry = variant(ConvPass::BackwardWeight, &p, t);
    if groups(entry, &p, tile(entry, &p, t)) >= t.split_groups {
        return 1;
    }
    let tiles = groups(entry, &p, tile_filling(entry, &p, t, 1)).max(1);
    let rows = p.n as u64 * p.od as u64 * p.oh as u64;
    let parts = t
        .split_groups
        .div_ceil(tiles)
        .min(rows / MIN_PART_ROWS)
        .min(MAX_PARTS);
    // the kernels compute partition boundaries as q·rows in u32
    if parts <= 1 || parts * rows > u32::MAX as u64 {
        return 1;
    }
    parts as usize
}

/// The uniform block of every conv kernel (`ConvUniform` in conv.wgsl).
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
    /// Row partitions of a split backward-weight reduction (1 for every other launch).
    pub parts: u32,
}

impl ConvUniform {
    fn new(d: &ConvDims, has_bias: bool, act: (u32, f32)) -> Self {
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
            parts: 1,
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

    /// Plain 2-D depthwise (one input channel per output channel, C = O), no flip, sw = 1, a
    /// kernel up to `ROWS_MAX_KW` wide: the shapes the sliding-window forward variant serves.
    fn depthwise_rows(&self) -> bool {
        self.plain_geometry()
            && self.cg == 1
            && self.og == 1
            && self.c == self.o
            && self.flip == 0
            && self.sw == 1
            && self.kw <= ROWS_MAX_KW
    }

    /// A 1×1 kernel without padding, groups, dilation or flip in a 2-D geometry (any
    /// stride): a matrix product over the channels per image, the pointwise variants.
    fn pointwise(&self) -> bool {
        self.plain_2d() && self.kh == 1 && self.kw == 1 && self.ph == 0 && self.pw == 0
    }

    /// Pointwise with both strides 1, and the positions per image and the input channels
    /// multiples of 4: the passes in vec4 units (`conv_*_pointwise_v4`; only the forward
    /// one needs C % 4 = 0, but one condition keeps the three variants together).
    fn pointwise_v4(&self) -> bool {
        self.pointwise()
            && self.sh == 1
            && self.sw == 1
            && (self.oh * self.ow).is_multiple_of(4)
            && self.c.is_multiple_of(4)
    }
}

/// The entry point that computes `pass` on an adapter with tiles `t`: the sliding-window
/// passes of depthwise layers (backward-input with both strides 1); the pointwise passes of
/// 1×1 layers without padding or groups (the weight gradient where the adapter's largest GEMM
/// tiles fill the device); the rows variants of the backward passes for layers with a
/// horizontal stride of 1 (both strides 1 for backward-input; any stride for the weight
/// gradient of a kernel 1 wide) and kernels up to `ROWS_MAX_KW` wide; the generic kernels
/// otherwise. (A
/// rows variant of the dense forward pass measured no faster: its weight loads dominate
/// either way.)
fn variant(pass: ConvPass, p: &ConvUniform, t: &Tiles) -> &'static str {
    let rows_kw = p.plain_2d() && p.kw <= ROWS_MAX_KW;
    let unit = p.sh == 1 && p.sw == 1;
    // a pointwise weight gradient gives each invocation its own outputs and the whole sum:
    // where the adapter's largest tiles are too few to occupy it, the rows variant (which
    // splits the sum among a workgroup, and serves 1×1 kernels at any stride) is the faster
    // one (measured on lavapipe, docs/results/issue17-pointwise.md; Xception-mini's
    // stride-2 shortcut 64×32: 2.6 ms pointwise, 1.3–1.5× its forward as rows)
    let pw_bw = "conv_backward_weight_pointwise";
    // with subgroup row sharing the pointwise weight gradient beats the rows kernel even
    // where the plan must split its sum to fill the device
    let pointwise_bw = p.pointwise() && (t.sg_rows || groups(pw_bw, p, t.gemm[0]) >= t.min_groups);
    match pass {
        ConvPass::Forward if p.depthwise_rows() => "conv_forward_depthwise",
        ConvPass::Forward if p.pointwise_v4() => "conv_forward_pointwise_v4",
        ConvPass::Forward if p.pointwise() => "conv_forward_pointwise",
        ConvPass::Forward => "conv_forward",
        ConvPass::BackwardInput if p.depthwise_rows() && p.sh == 1 => {
            "conv_backward_input_depthwise"
        }
        ConvPass::BackwardInput if p.pointwise_v4() => "conv_backward_input_pointwise_v4",
        ConvPass::BackwardInput if p.pointwise() => "conv_backward_input_pointwise",
        ConvPass::BackwardInput if rows_kw && unit => "conv_backward_input_rows",
        ConvPass::BackwardInput => "conv_backward_input",
        ConvPass::BackwardWeight if p.depthwise_rows() && p.kh <= ROWS_MAX_KW => {
            "conv_backward_weight_depthwise"
        }
        ConvPass::BackwardWeight if p.pointwise_v4() => "conv_backward_weight_pointwise_v4",
        ConvPass::BackwardWeight if pointwise_bw => pw_bw,
        ConvPass::BackwardWeight if rows_kw && (p.sw == 1 || p.kw == 1) => {
            "conv_backward_weight_rows"
        }
        ConvPass::BackwardWeight => "conv_backward_weight",
    }
}

/// The tile-cache key of a launch of `entry`: every field but the batch size (two layers
/// that differ only in groups must not share a tile: the channel tiles must divide the
/// groups).
fn tile_key(entry: &str, p: &ConvUniform) -> String {
    format!("{entry} {:?}", ConvUniform { n: 0, ..*p })
}

/// Workgroups of conv entry point `entry` for register tile `tile`.
fn groups(entry: &str, p: &ConvUniform, (r, s): (u32, u32)) -> u64 {
    match entry {
        "conv_forward" => {
            let pos = p.n as u64 * p.od as u64 * p.oh as u64 * p.ow as u64;
            pos.div_ceil(64 * s as u64) * p.o.div_ceil(r) as u64
        }
        "conv_backward_input" => {
            let pos = p.n as u64 * p.d as u64 * p.h as u64 * p.w as u64;
            pos.div_ceil(64 * s as u64) * p.c.div_ceil(r) as u64
        }
        "conv_backward_weight_rows" => p.o.div_ceil(r) as u64 * (p.c * p.kh).div_ceil(s) as u64,
        "conv_forward_depthwise" => {
            let runs = p.n as u64 * p.o as u64 * p.oh.div_ceil(r) as u64 * p.ow.div_ceil(s) as u64;
            runs.div_ceil(64)
        }
        "conv_backward_input_depthwise" => {
            let runs = p.n as u64 * p.c as u64 * p.h.div_ceil(r) as u64 * p.w.div_ceil(s) as u64;
            runs.div_ceil(64)
        }
        "conv_forward_pointwise" | "conv_forward_pointwise_v4" => {
            let pos = p.n as u64 * p.oh as u64 * p.ow as u64;
            pos.div_ceil(8 * s as u64) * p.o.div_ceil(8 * r) as u64
        }
        "conv_backward_input_pointwise" | "conv_backward_input_pointwise_v4" => {
            let pos = p.n as u64 * p.oh as u64 * p.ow as u64;
            pos.div_ceil(8 * s as u64) * p.c.div_ceil(8 * r) as u64
        }
        "conv_backward_weight_pointwise" | "conv_backward_weight_pointwise_v4" => {
            p.o.div_ceil(8 * r) as u64 * p.c.div_ceil(8 * s) as u64
        }
        "conv_backward_weight_depthwise" => p.o.div_ceil(r) as u64,
        "conv_backward_input_rows" => {
            let segs = p.n as u64 * p.h as u64 * p.w.div_ceil(s) as u64;
            segs.div_ceil(64) * p.c.div_ceil(r) as u64
        }
        _ => {
            let cols = p.cg * p.kd * p.kh * p.kw + p.has_bias;
            p.o.div_ceil(r) as u64 * cols.div_ceil(s) as u64
        }
    }
}

/// The register tile of `entry`: (channels, positions) per invocation for the forward and
/// backward-input kernels, (output channels, columns) per workgroup for the backward-weight
/// kernel. Tiles shrink until the dispatch has `min_groups` workgroups, if they can.
fn tile(entry: &str, p: &ConvUniform, t: &Tiles) -> (u32, u32) {
    tile_filling(entry, p, t, t.min_groups)
}

/// [`tile`], shrinking until the dispatch has `min_groups` workgroups (1: the largest tile).
fn tile_filling(entry: &str, p: &ConvUniform, t: &Tiles, min_groups: u64) -> (u32, u32) {
    // split `len` into more parts, starting from parts of `start`, while the grid is too small
    let shrink = |r: u32, len: u32, start: u32| {
        let mut s = start;
        let mut parts = len.div_ceil(s);
        while groups(entry, p, (r, s)) < min_groups && s > 1 {
            parts += 1;
            s = split(len, parts);
        }
        (r, s)
    };
    match entry {
        "conv_forward" | "conv_backward_input" => {
            let (chan, group, max, cands) = if entry == "conv_forward" {
                (p.o, p.og, t.fwd_channels, t.fwd_positions)
            } else {
                (p.c, p.cg, t.bwd_in_channels, t.bwd_in_positions)
            };
            let r = channel_tile(chan, group, max);
            let (s, _) = pick(cands, |s| groups(entry, p, (r, s)), min_groups);
            (r, s)
        }
        "conv_forward_pointwise"
        | "conv_forward_pointwise_v4"
        | "conv_backward_input_pointwise"
        | "conv_backward_input_pointwise_v4" => pointwise_tile(entry, p, t, min_groups),
        // the largest tile: where it leaves too few workgroups, the plan splits the sum
        // (`weight_parts`) rather than shrink the tile
        "conv_backward_weight_pointwise" | "conv_backward_weight_pointwise_v4" => {
            pointwise_tile(entry, p, t, 1)
        }
        "conv_backward_weight_depthwise" => (depthwise_channels(p, min_groups), 1),
        // (rows per block, outputs per run); the blocks shrink to single rows first when the
        // dispatch has too few workgroups
        "conv_forward_depthwise" => depthwise_block(entry, p, t, p.oh, p.ow, min_groups),
        "conv_backward_input_depthwise" => depthwise_block(entry, p, t, p.h, p.w, min_groups),
        "conv_backward_input_rows" => {
            let r = balanced(p.c, t.bwd_in_rows.0);
            shrink(r, p.w, split(p.w, p.w.div_ceil(t.bwd_in_rows.1)))
        }
        "conv_backward_weight_rows" => {
            let r = balanced(p.o, t.bwd_w.0);
            let rows = p.c * p.kh;
            // 1×1 kernels: a (c,a) row is a single column, so take 4× as many rows to keep
            // the tile as wide as a 3×3 or 5×5 layer's
            let max_rows = if p.kw == 1 {
                4 * t.bwd_w_rows
            } else {
                t.bwd_w_rows
            };
            shrink(r, rows, balanced(rows, max_rows))
        }
        _ => {
            let r = channel_tile(p.o, p.og, t.bwd_w.0);
            let cols = p.cg * p.kd * p.kh * p.kw + p.has_bias;
            shrink(r, cols, balanced(cols, t.bwd_w.1))
        }
    }
}

/// The sliding-window depthwise tile `(DR, DS)`: blocks of up to `Tiles::dw_rows` rows
/// (balanced over the image's `rows`) and runs of up to `Tiles::dw_run` along its `cols`,
/// each shrunk — rows first — while the dispatch would have under `min_groups` workgroups.
fn depthwise_block(
    entry: &str,
    p: &ConvUniform,
    t: &Tiles,
    rows: u32,
    cols: u32,
    min_groups: u64,
) -> (u32, u32) {
    let mut s = balanced(cols, t.dw_run);
    let mut r = balanced(rows, t.dw_rows);
    let mut blocks = rows.div_ceil(r);
    while groups(entry, p, (r, s)) < min_groups && r > 1 {
        blocks += 1;
        r = split(rows, blocks);
    }
    let mut parts = cols.div_ceil(s);
    while groups(entry, p, (r, s)) < min_groups && s > 1 {
        parts += 1;
        s = split(cols, parts);
    }
    (r, s)
}

/// Channels per workgroup of the depthwise weight gradient (its tile is `(DCH, 1)`): the
/// fewest of 1, 2, 4, 8 that give each of a channel's 64 / DCH invocations at least
/// [`DEPTHWISE_POSITIONS`] output positions to sum (8 if none does), fewer while the dispatch
/// would have under `min_groups` workgroups. Small images (Xception-mini's exit block: 4×4,
/// 1,024 positions per channel at batch 64) then run 16 invocations per channel instead of
/// 64: a quarter of the workgroups, each reducing four channels' partials at once.
fn depthwise_channels(p: &ConvUniform, min_groups: u64) -> u32 {
    let positions = p.n as u64 * p.oh as u64 * p.ow as u64;
    let mut dch = [1, 2, 4, 8]
        .into_iter()
        .find(|&dch| positions * dch as u64 / 64 >= DEPTHWISE_POSITIONS)
        .unwrap_or(8);
    while dch > 1 && (p.o.div_ceil(dch) as u64) < min_groups {
        dch /= 2;
    }
    dch
}

/// The widest output row the depthwise weight gradient walks in blocks of rows rather than
/// row by row (`DBLOCK`): measured on lavapipe, blocks won on 4×4 images and lost on 14×14.
const DEPTHWISE_BLOCK_WIDTH: u32 = 4;

/// Output positions each invocation of the depthwise weight gradient should sum at least
/// before its channel's partials are reduced.
const DEPTHWISE_POSITIONS: u64 = 64;

/// The register tile of a pointwise kernel: among the adapter's pointwise tiles
/// (`Tiles::pointwise`, `pointwise_v4`, `pointwise_w`: the GEMM's and a few larger or
/// narrower ones), those whose
/// 8·PR rows and 8·PS columns cover the output's rows and columns with at most an eighth
/// wasted (32 channels fill 8·4 rows, but only half of 8·8), the first that gives the
/// dispatch `min_groups` workgroups (all tiles if none wastes that little).
fn pointwise_tile(entry: &str, p: &ConvUniform, t: &Tiles, min_groups: u64) -> (u32, u32) {
    // (rows, columns) of the product: channels × positions, or O × C for the weight gradient
    let (rows, cols) = match entry {
        "conv_forward_pointwise" | "conv_forward_pointwise_v4" => {
            (p.o as u64, p.n as u64 * (p.oh * p.ow) as u64)
        }
        "conv_backward_input_pointwise" | "conv_backward_input_pointwise_v4" => {
            (p.c as u64, p.n as u64 * (p.oh * p.ow) as u64)
        }
        _ => (p.o as u64, p.c as u64),
    };
    let fits = |len: u64, per: u32| len.div_ceil(8 * per as u64) * 8 * per as u64 - len <= len / 8;
    let all = match entry {
        "conv_backward_weight_pointwise" | "conv_backward_weight_pointwise_v4" => t.pointwise_w,
        "conv_forward_pointwise_v4" | "conv_backward_input_pointwise_v4" => t.pointwise_v4,
        "conv_forward_pointwise" | "conv_backward_input_pointwise" => t.pointwise,
        _ => t.gemm,
    };
    let good: Vec<(u32, u32)> = all
        .iter()
        .copied()
        .filter(|&(r, s)| fits(rows, r) && fits(cols, s))
        .collect();
    let cands = if good.is_empty() { all } else { &good };
    pick(cands, |tile| groups(entry, p, tile), min_groups).0
}

/// The specialisation of `entry`: fused activation and bias, geometry flags, register tile.
fn consts(entry: &str, p: &ConvUniform, (r, s): (u32, u32), t: &Tiles) -> Consts {
    let mut consts: Consts = vec![("ACT", p.act), ("HAS_BIAS", p.has_bias), ("FLIP", p.flip)];
    if !entry.ends_with("_rows") {
        consts.push(("PLAIN", p.plain_geometry() as u32));
    }
    let names = match entry {
        "conv_forward" => ("FR", "FS"),
        "conv_backward_input" => {
            let unit = p.sd == 1 && p.sh == 1 && p.sw == 1;
            consts.push(("UNIT", unit as u32));
            ("IR", "IS")
        }
        "conv_backward_weight_rows" => {
            consts.extend([("KWC", p.kw), ("KWM", p.kw - 1), ("WRED", s * p.kw + 1)]);
            consts.push(("SERIAL_SUM", t.serial_tree as u32));
            ("WR", "WA")
        }
        "conv_backward_input_rows" => {
            consts.extend([("KWC", p.kw), ("KWM", p.kw - 1), ("SEG", s + p.kw - 1)]);
            ("IR", "IS")
        }
        "conv_forward_depthwise" | "conv_backward_input_depthwise" => {
            // DKM too: the module is specialised as a whole, and the depthwise weight
            // gradient's window (DKM = DKW − 1) must stay valid beside these
            let dkm = p.kw - 1;
            consts.extend([("DKW", p.kw), ("DKM", dkm), ("DSEG", s + dkm), ("DS", s)]);
            consts.push(("DR", r));
            return consts;
        }
        "conv_backward_weight_depthwise" => {
            consts.extend([("DKW", p.kw), ("DKM", p.kw - 1), ("DKH", p.kh), ("DCH", r)]);
            consts.push(("DL", 64 / r));
            // blocks of rows where a whole output row fits one short run (small images);
            // otherwise the (unused) block is 1 × 1, which keeps the module small
            let block = t.dw_rows > 1 && p.ow <= DEPTHWISE_BLOCK_WIDTH;
            let (dr, ds) = match block {
                true => (balanced(p.oh, t.dw_rows), p.ow),
                false => (1, 1),
            };
            consts.extend([("DBLOCK", block as u32), ("DR", dr), ("DS", ds)]);
            consts.push(("DSEG", ds + p.kw - 1));
            consts.push(("SERIAL_SUM", t.serial_tree as u32));
            return consts;
        }
        "conv_backward_input_pointwise" => {
            consts.push(("UNIT", (p.sh == 1 && p.sw == 1) as u32));
            ("PR", "PS")
        }
        "conv_forward_pointwise"
        | "conv_backward_weight_pointwise"
        | "conv_backward_weight_pointwise_v4" => ("PR", "PS"),
        "conv_forward_pointwise_v4" | "conv_backward_input_pointwise_v4" => {
            // every GEMM tile's PS is a multiple of 4
            consts.push(("PU", s / 4));
            ("PR", "PS")
        }
        _ => {
            consts.push(("SERIAL_SUM", t.serial_tree as u32));
            ("WR", "WS")
        }
    };
    if entry.contains("_pointwise") {
        // a lane loads ⌈PR / 8⌉ ≤ 4 rows (every tile list's PR is at most 32)
        consts.extend([("SG_ROWS", t.sg_rows as u32), ("PRS", r.div_ceil(8))]);
    }
    consts.extend([(names.0, r), (names.1, s)]);
    consts
}

/// The graph builders of this family: each checks its shapes and names the node in errors.
impl Graph {
    /// 2-D convolution `x [C,H,W] → [out_channels, oh, ow]` with parameters `name.weight`
    /// `[out, C/groups, kh, kw]` and (if `bias`) `name.bias` `[out]`.
    pub fn conv2d(
        &mut self,
        name: &str,
        x: NodeId,
        out_channels: usize,
        kernel: [usize; 2],
        p: impl Into<ConvParams>,
        bias: bool,
    ) -> Result<NodeId> {
        self.conv(name, x, out_channels, &kernel, p.into(), bias)
    }

    /// 1-D convolution `x [C,L] → [out_channels, ol]` (time series), weight `[out, C/groups, k]`.
    pub fn conv1d(
        &mut self,
        name: &str,
        x: NodeId,
        out_channels: usize,
        kernel: usize,
        p: impl Into<ConvParams>,
        bias: bool,
    ) -> Result<NodeId> {
        self.conv(name, x, out_channels, &[kernel], p.into(), bias)
    }

    /// 3-D convolution `x [C,D,H,W] → [out_channels, od, oh, ow]` (volumes), weight
    /// `[out, C/groups, kd, kh, kw]`.
    pub fn conv3d(
        &mut self,
        name: &str,
        x: NodeId,
        out_channels: usize,
        kernel: [usize; 3],
        p: impl Into<ConvParams>,
        bias: bool,
    ) -> Result<NodeId> {
        self.conv(name, x, out_channels, &kernel, p.into(), bias)
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
        p: impl Into<ConvParams>,
        bias: bool,
    ) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.node(x).name.clone();
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
        let p = p.into().for_dims(dims);
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
}

/// `Op::Conv`: one forward launch; backward-input (when `x` needs a gradient) and
/// backward-weight launches, both applying the fused activation's derivative (the weight
/// gradient split into [`ConvWeightParts`] + [`SumParts`] when the plan's [`crate::plan::Split`]
/// says so).
pub(crate) struct ConvRule;

impl ConvRule {
    fn parts(lw: &Lowering, id: NodeId) -> (NodeId, usize, Option<usize>, ConvDims) {
        let Op::Conv { x, w, b, p, .. } = lw.g.node(id).op else {
            unreachable!("ConvRule on another op")
        };
        let (x5, w5) = conv_dims5(lw.n, &lw.g.node(x).shape, &lw.g.params()[w].shape);
        let d = p
            .dims("conv", x5, w5)
            .expect("convolution shapes are checked when the graph is built");
        (x, w, b, d)
    }
}

impl Rule for ConvRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let (x, w, b, d) = Self::parts(lw, id);
        let y = lw.arena(lw.g.node(id).name.clone(), lw.g.numel(id));
        let act = act_code(lw.fused_act(id));
        let z = lw.pre_activation(id);
        let args = vec![
            Some(lw.out_of(x)),
            Some(lw.param(w)),
            b.map(|b| lw.param(b)),
            Some(y),
            z,
        ];
        let l = Conv::new(ConvPass::Forward, d, b.is_some(), act);
        lw.emit_mixed(id, l, args, &[0, 1]);
        lw.set_out(id, y);
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let (x, w, b, d) = Self::parts(lw, id);
        let act = act_code(lw.fused_act(id));
        let y = lw.fused_grad_source(id);
        if lw.needs_grad(x) {
            let dx = lw.arena(format!("{}.dx", lw.g.node(id).name), lw.g.numel(x));
            let args = vec![Some(dy), Some(lw.param(w)), y, Some(dx)];
            let l = Conv::new(ConvPass::BackwardInput, d, false, act);
            lw.emit_mixed(id, l, args, &[0, 1]);
            lw.push_grad(x, dx);
        }
        let parts = lw
            .split
            .tiles()
            .map_or(1, |t| weight_parts(&d, b.is_some(), &t));
        let (dw, db) = (Some(lw.grad(w)), b.map(|b| lw.grad(b)));
        if parts > 1 {
            let split = ConvWeightParts {
                d,
                bias: b.is_some(),
                act,
                parts,
            };
            let name = format!("{}.dw_parts", lw.g.node(id).name);
            let scratch = lw.fixed(name, parts * split.part_len());
            let args = vec![Some(lw.out_of(x)), Some(dy), y, Some(scratch), None];
            lw.emit_mixed(id, split, args, &[0, 1]);
            let sum = SumParts {
                parts,
                a: d.w.iter().product(),
                b: Binding::len_if(b.is_some(), d.w[0]),
            };
            lw.emit(id, sum, vec![Some(scratch), dw, db]);
            return;
        }
        let args = vec![Some(lw.out_of(x)), Some(dy), y, dw, db];
        let l = Conv::new(ConvPass::BackwardWeight, d, b.is_some(), act);
        lw.emit_mixed(id, l, args, &[0, 1]);
    }
}
