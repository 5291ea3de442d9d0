//! The pooling family (`shaders/pool.wgsl`, twin [`crate::cpu::pool`]): 2-D max, min and
//! average pooling and global average pooling, and the graph ops built on them (1-D and 3-D
//! pooling lower to 2-D launches over views).
//!
//! # Shapes
//! 2-D pooling: `x [N,C,H,W]` → `y, idx [N,C,OH,OW]`; global average pooling: `x [N,C,H,W]`
//! → `y [N,C]`.

use std::any::Any;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{bytes, groups64, Binding, Data, GpuCall, Launch, Rule};
use crate::cpu;
use crate::error::{Error, Result};
use crate::gpu::kernels::Consts;
use crate::gpu::GpuContext;
use crate::graph::{Graph, NodeId, Op};
use crate::plan::{Lowering, TensorId};
use crate::shape::{
    AvgDivisor, Pool1dParams, Pool2dParams, Pool3dParams, PoolAxis, PoolKind, PoolParams,
};

/// Which 2-D pooling kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolPass {
    /// `y` = the window's maximum, `idx` its first position in the input plane.
    MaxForward,
    /// `y` = the window's minimum, `idx` its first position.
    MinForward,
    /// `dx` = `dy` routed to the recorded positions (max and min pooling alike).
    ArgBackward,
    /// `y` = the window's mean (`count_include_pad=True`).
    AvgForward,
    /// `dx` = `dy/(kh·kw)` spread over each window.
    AvgBackward,
}

/// One 2-D pooling launch over `x [xd] → y [yd]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pool2d {
    pub pass: PoolPass,
    pub xd: [usize; 4],
    pub yd: [usize; 4],
    /// Kernel, stride, and the padding *before* each axis (windows start at `i·s − padding`;
    /// the output size `yd` says where they stop).
    pub p: Pool2dParams,
    /// The average's divisor (ignored by max and min pooling).
    pub div: AvgDivisor,
    /// Compile the pipeline for this per-sample geometry (2–3× faster on a CPU adapter, one
    /// pipeline per layer: the executor's choice); without, the geometry comes from the
    /// uniform and arbitrary shapes share one pipeline (the functional API's).
    pub specialise: bool,
}

impl Pool2d {
    /// `max_pool2d_backward_blocks` (pool.wgsl) for a specialised arg-pool backward with a
    /// stride > 1: one invocation per stride×stride block of inputs, reading each window that
    /// can reach the block once (the same dx, bitwise). `None` for the per-element kernel.
    fn blocks(&self, u: &PoolUniform) -> Option<GpuCall> {
        let [n, c, h, w, kh, kw, sh, sw, ph, pw, _, _] = u.dims;
        let (wh, ww) = ((kh - 1) / sh + 1, (kw - 1) / sw + 1);
        let fits = sh * sw > 1 && sh * sw <= 16 && wh * ww <= 16;
        if self.pass != PoolPass::ArgBackward || !self.specialise || !fits {
            return None;
        }
        let blocks = (h + ph).div_ceil(sh) as u64 * (w + pw).div_ceil(sw) as u64;
        Some(GpuCall {
            entry: "max_pool2d_backward_blocks",
            consts: vec![("BH", sh), ("BW", sw), ("WH", wh), ("WW", ww)],
            groups: (n as u64 * c as u64 * blocks).div_ceil(64),
        })
    }
}

impl Launch for Pool2d {
    fn kernel(&self) -> &'static str {
        match self.pass {
            PoolPass::MaxForward => "max_pool2d_forward",
            PoolPass::MinForward => "min_pool2d_forward",
            PoolPass::ArgBackward => "max_pool2d_backward",
            PoolPass::AvgForward => "avg_pool2d_forward",
            PoolPass::AvgBackward => "avg_pool2d_backward",
        }
    }

    fn bindings(&self) -> Vec<Binding> {
        let (x, y): (usize, usize) = (self.xd.iter().product(), self.yd.iter().product());
        let plane = self.xd[2] * self.xd[3];
        match self.pass {
            PoolPass::MaxForward | PoolPass::MinForward => vec![
                Binding::read("x", x),
                Binding::write("y", y),
                Binding::write("idx", y).holding(Data::Index(plane)),
            ],
            PoolPass::ArgBackward => vec![
                Binding::read("dy", y),
                Binding::read("idx", y).holding(Data::Index(plane)),
                Binding::write("dx", x),
            ],
            PoolPass::AvgForward => vec![Binding::read("x", x), Binding::write("y", y)],
            PoolPass::AvgBackward => vec![Binding::read("dy", y), Binding::write("dx", x)],
        }
    }

    fn uniform(&self) -> Vec<u8> {
        bytes(&PoolUniform::new(self.xd, self.yd, &self.p, self.div))
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        let u = PoolUniform::new(self.xd, self.yd, &self.p, self.div);
        let d = u.dims;
        let mut consts: Consts = if self.specialise {
            let names = ["S_H", "S_W", "S_KH", "S_KW", "S_SH", "S_SW", "S_PH", "S_PW"];
            let mut c: Consts = vec![("GEO", 1)];
            c.extend(names.iter().zip(&d[2..10]).map(|(n, &v)| (*n, v)));
            c.extend([("S_OH", d[10]), ("S_OW", d[11])]);
            c.extend([("S_EH", u.pad[0]), ("S_EW", u.pad[1])]);
            c
        } else {
            Vec::new()
        };
        if matches!(self.pass, PoolPass::AvgForward | PoolPass::AvgBackward) {
            consts.push(("DIV", div_code(self.div)));
        }
        if let Some(call) = self.blocks(&u) {
            return Ok(GpuCall {
                consts: [consts, call.consts].concat(),
                ..call
            });
        }
        // one invocation per output (forward) or input (backward) element
        let plane = match self.pass {
            PoolPass::MaxForward | PoolPass::MinForward | PoolPass::AvgForward => {
                d[10] as u64 * d[11] as u64
            }
            _ => d[2] as u64 * d[3] as u64,
        };
        Ok(GpuCall {
            entry: self.kernel(),
            consts,
            groups: (d[0] as u64 * d[1] as u64 * plane).div_ceil(64),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let (xd, yd, p) = (self.xd, self.yd, self.p);
        let bits = |v: Vec<u32>| v.into_iter().map(f32::from_bits).collect::<Vec<_>>();
        match self.pass {
            PoolPass::MaxForward | PoolPass::MinForward => {
                let (y, idx) = if self.pass == PoolPass::MaxForward {
                    cpu::pool::max_pool2d_forward(xd, yd, p, &b[0])
                } else {
                    cpu::pool::min_pool2d_forward(xd, yd, p, &b[0])
                };
                b[1] = y;
                b[2] = bits(idx);
            }
            PoolPass::ArgBackward => {
                let idx: Vec<u32> = b[1].iter().map(|v| v.to_bits()).collect();
                b[2] = cpu::pool::max_pool2d_backward(xd, yd, &b[0], &idx);
            }
            PoolPass::AvgForward => {
                b[1] = cpu::pool::avg_pool2d_forward_div(xd, yd, p, self.div, &b[0])
            }
            PoolPass::AvgBackward => {
                b[1] = cpu::pool::avg_pool2d_backward_div(xd, yd, p, self.div, &b[0])
            }
        }
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        let mut l = *self;
        l.xd[0] = n;
        l.yd[0] = n;
        Arc::new(l)
    }

    fn describe(&self) -> String {
        let [n, c, h, w] = self.xd;
        let p = &self.p;
        format!(
            "{n}×{c}×{h}×{w} k{}x{} s{}x{}",
            p.kernel[0], p.kernel[1], p.stride[0], p.stride[1]
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Global average pooling over `rows = N·C` planes of `hw` elements, or its backward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GlobalAvgPool {
    pub backward: bool,
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl Launch for GlobalAvgPool {
    fn kernel(&self) -> &'static str {
        if self.backward {
            "global_avg_pool_backward"
        } else {
            "global_avg_pool_forward"
        }
    }

    fn bindings(&self) -> Vec<Binding> {
        let rows = self.n * self.c;
        if self.backward {
            vec![
                Binding::read("dy", rows),
                Binding::write("dx", rows * self.hw),
            ]
        } else {
            vec![
                Binding::read("x", rows * self.hw),
                Binding::write("y", rows),
            ]
        }
    }

    fn uniform(&self) -> Vec<u8> {
        bytes(&GapUniform {
            rows: (self.n * self.c) as u32,
            hw: self.hw as u32,
            pad: [0; 2],
        })
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        let rows = self.n * self.c;
        let len = if self.backward { rows * self.hw } else { rows };
        Ok(GpuCall {
            entry: self.kernel(),
            consts: Vec::new(),
            groups: groups64(len),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let rows = self.n * self.c;
        b[1] = if self.backward {
            cpu::pool::global_avg_pool_backward(rows, self.hw, &b[0])
        } else {
            cpu::pool::global_avg_pool_forward(rows, self.hw, &b[0])
        };
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        Arc::new(GlobalAvgPool { n, ..*self })
    }

    fn describe(&self) -> String {
        format!("{}×{} planes of {}", self.n, self.c, self.hw)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The uniform block of the 2-D pooling kernels (`PoolUniform` in pool.wgsl):
/// `n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow`, then `eh, ew` (the end padding of
/// [`AvgDivisor::Padded`]) and two unused words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct PoolUniform {
    dims: [u32; 12],
    pad: [u32; 4],
}

impl PoolUniform {
    fn new(x: [usize; 4], y: [usize; 4], p: &Pool2dParams, div: AvgDivisor) -> Self {
        let [kh, kw] = p.kernel;
        let [sh, sw] = p.stride;
        let [ph, pw] = p.padding;
        let d = [x[0], x[1], x[2], x[3], kh, kw, sh, sw, ph, pw, y[2], y[3]];
        let [eh, ew] = match div {
            AvgDivisor::Padded(end) => end,
            _ => [0, 0],
        };
        PoolUniform {
            dims: d.map(|v| v as u32),
            pad: [eh as u32, ew as u32, 0, 0],
        }
    }
}

/// The shader's `DIV` for a divisor.
fn div_code(div: AvgDivisor) -> u32 {
    match div {
        AvgDivisor::Window => 0,
        AvgDivisor::Padded(_) => 1,
        AvgDivisor::Valid => 2,
    }
}

/// The uniform block of `global_avg_pool_*` (`GapUniform` in pool.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct GapUniform {
    rows: u32,
    hw: u32,
    pad: [u32; 2],
}

/// One 2-D pooling stage `x [xd] → name [yd]` (a max stage also records its indices).
fn stage_forward(
    lw: &mut Lowering,
    id: NodeId,
    pass: PoolPass,
    name: String,
    x: TensorId,
    (xd, yd, p, div): Stage,
) -> (TensorId, Option<TensorId>) {
    let per = yd[1] * yd[2] * yd[3];
    let y = lw.arena(name.clone(), per);
    let idx = (pass != PoolPass::AvgForward).then(|| lw.arena(format!("{name}.indices"), per));
    let mut args = vec![Some(x), Some(y)];
    args.extend(idx.map(Some));
    let l = Pool2d {
        pass,
        xd,
        yd,
        p,
        div,
        specialise: true,
    };
    lw.emit(id, l, args);
    (y, idx)
}

/// The gradient of [`stage_forward`]: routing by `idx` (max, min) or spreading (average)
/// into a new tensor `name [xd]`.
fn stage_backward(
    lw: &mut Lowering,
    id: NodeId,
    name: String,
    dy: TensorId,
    idx: Option<TensorId>,
    (xd, yd, p, div): Stage,
) -> TensorId {
    let dx = lw.arena(name, xd[1] * xd[2] * xd[3]);
    let (pass, args) = match idx {
        Some(idx) => (PoolPass::ArgBackward, vec![Some(dy), Some(idx), Some(dx)]),
        None => (PoolPass::AvgBackward, vec![Some(dy), Some(dx)]),
    };
    let l = Pool2d {
        pass,
        xd,
        yd,
        p,
        div,
        specialise: true,
    };
    lw.emit(id, l, args);
    dx
}

/// `(x dims, y dims, geometry, divisor)` of one 2-D pooling stage.
type Stage = ([usize; 4], [usize; 4], Pool2dParams, AvgDivisor);

/// The 2-D stage geometry over the axes `(h, w)` (a unit axis `[1, 1, 0, 0]` for views).
fn stage_geometry(h: PoolAxis, w: PoolAxis, count_pad: bool) -> (Pool2dParams, AvgDivisor) {
    let p = Pool2dParams {
        kernel: [h.k, w.k],
        stride: [h.s, w.s],
        padding: [h.begin, w.begin],
    };
    // every window inside the input (or the padded input, when padding counts): kh·kw
    let inside = |a: PoolAxis, e: usize| (a.out - 1) * a.s + a.k <= a.begin + e + a.len;
    let window = if count_pad {
        inside(h, h.end) && inside(w, w.end)
    } else {
        h.begin + w.begin == 0 && inside(h, 0) && inside(w, 0)
    };
    let div = if window {
        AvgDivisor::Window
    } else if count_pad {
        AvgDivisor::Padded([h.end, w.end])
    } else {
        AvgDivisor::Valid
    };
    (p, div)
}

/// The 2-D stages of a pooling of `x [C, spatial…]` at batch `n`: 1-D runs on the
/// `[C, 1, L]` view with a `1×k` window; 3-D (separable) runs `(h, w)` on the `[C·D, H, W]`
/// view, then depth on `[C, D, OH·OW]`.
fn stages(op: &str, n: usize, xs: &[usize], p: &PoolParams) -> Result<Vec<Stage>> {
    let axes = p.axes(op, &xs[1..])?;
    let unit = PoolAxis::unit();
    let c = xs[0];
    let cp = p.count_include_pad;
    Ok(match axes[..] {
        [w] => {
            let (g, div) = stage_geometry(unit, w, cp);
            vec![([n, c, 1, xs[1]], [n, c, 1, w.out], g, div)]
        }
        [h, w] => {
            let (g, div) = stage_geometry(h, w, cp);
            vec![([n, c, xs[1], xs[2]], [n, c, h.out, w.out], g, div)]
        }
        [d, h, w] => {
            let (g1, div1) = stage_geometry(h, w, cp);
            let (g2, div2) = stage_geometry(d, unit, cp);
            let ohw = h.out * w.out;
            vec![
                (
                    [n, c * xs[1], xs[2], xs[3]],
                    [n, c * xs[1], h.out, w.out],
                    g1,
                    div1,
                ),
                ([n, c, xs[1], ohw], [n, c, d.out, ohw], g2, div2),
            ]
        }
        _ => unreachable!("1-3 spatial axes"),
    })
}

/// The graph builders of this family: each checks its shapes and names the node in errors.
impl Graph {
    /// Max-pooling `x [C,H,W] → [C, oh, ow]`.
    pub fn max_pool2d(&mut self, name: &str, x: NodeId, p: Pool2dParams) -> Result<NodeId> {
        let y = self.pool2d_shape(name, x, "max_pool2d", p)?;
        self.push(name, Op::MaxPool2d { x, p }, y)
    }

    /// Min-pooling `x [C,H,W] → [C, oh, ow]` (padding counts as +∞).
    pub fn min_pool2d(&mut self, name: &str, x: NodeId, p: Pool2dParams) -> Result<NodeId> {
        let y = self.pool2d_shape(name, x, "min_pool2d", p)?;
        self.push(name, Op::MinPool2d { x, p }, y)
    }

    /// Average pooling `x [C,H,W] → [C, oh, ow]` (PyTorch `avg_pool2d`,
    /// `count_include_pad=True`).
    pub fn avg_pool2d(&mut self, name: &str, x: NodeId, p: Pool2dParams) -> Result<NodeId> {
        let y = self.pool2d_shape(name, x, "avg_pool2d", p)?;
        self.push(name, Op::AvgPool2d { x, p }, y)
    }

    /// The output shape of 2-D pooling `op` on the `[C, H, W]` input `x`, checked.
    fn pool2d_shape(&self, name: &str, x: NodeId, op: &str, p: Pool2dParams) -> Result<Vec<usize>> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = &self.node(x).name;
        if xs.len() != 3 {
            return Err(Error::shape(
                name,
                format!("{op} needs a [C,H,W] input, but '{xname}' has shape {xs:?}"),
            ));
        }
        let y = p
            .out_shape(name, [1, xs[0], xs[1], xs[2]])
            .map_err(|e| Error::shape(name, format!("input '{xname}' {xs:?}: {e}")))?;
        Ok(y[1..].to_vec())
    }

    /// Global average pooling `x [C,H,W] → [C]`.
    pub fn global_avg_pool(&mut self, name: &str, x: NodeId) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.node(x).name.clone();
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
        let xname = &self.node(x).name;
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
        let xname = &self.node(x).name;
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

    /// 1-D min-pooling: `y[c,i] = min_{a<k} x[c, i·s+a−p]`, padding +∞, the gradient routed
    /// to the first minimum of each window (PyTorch: `−max_pool1d(−x)`).
    ///
    /// # Shapes
    /// `x [C, L]` → `[C, ⌊(L + 2p − k)/s⌋ + 1]`.
    pub fn min_pool1d(&mut self, name: &str, x: NodeId, p: Pool1dParams) -> Result<NodeId> {
        let y = self.pool1d_shape(name, x, "min_pool1d", p)?;
        self.push(name, Op::MinPool1d { x, p }, y)
    }

    /// 3-D min-pooling: the minimum over each `kd×kh×kw` window, padding +∞, the gradient
    /// routed to the window's first minimum in `(d, h, w)` order (PyTorch: `−max_pool3d(−x)`).
    ///
    /// # Shapes
    /// `x [C, D, H, W]` → `[C, od, oh, ow]`.
    pub fn min_pool3d(&mut self, name: &str, x: NodeId, p: Pool3dParams) -> Result<NodeId> {
        let y = self.pool3d_shape(name, x, "min_pool3d", p)?;
        self.push(name, Op::MinPool3d { x, p }, y)
    }

    /// Pooling of `x [C, L]`, `[C, H, W]` or `[C, D, H, W]` (the rank picks 1-, 2- or 3-D)
    /// with any [`PoolParams`] window: PyTorch's padding and `ceil_mode`, Keras `same`, the
    /// anchor and flip of the seed article. The fixed-rank builders above are this with a
    /// PyTorch window.
    ///
    /// # Shapes
    /// `x [C, spatial…]` → `[C, out…]`, `out` per axis as [`PoolParams`] documents.
    pub fn pool(
        &mut self,
        name: &str,
        x: NodeId,
        kind: PoolKind,
        p: impl Into<PoolParams>,
    ) -> Result<NodeId> {
        let p = p.into();
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = &self.node(x).name;
        if !(2..=4).contains(&xs.len()) || xs.contains(&0) {
            return Err(Error::shape(
                name,
                format!("pooling needs a [C,L], [C,H,W] or [C,D,H,W] input, but '{xname}' has shape {xs:?}"),
            ));
        }
        let mut y = vec![xs[0]];
        y.extend(
            p.out_spatial(name, &xs[1..])
                .map_err(|e| Self::relabel(e, name, xname, &xs))?,
        );
        self.push(name, Op::Pool { x, kind, p }, y)
    }
}

/// The forward launch of a 2-D pooling of `x [N,C,H,W]` and its output dims (the
/// functional API's; `specialise` as [`Pool2d::specialise`]).
pub(crate) fn pool2d_launch(
    op: &str,
    xd: [usize; 4],
    kind: PoolKind,
    p: PoolParams,
    specialise: bool,
) -> Result<(Pool2d, [usize; 4])> {
    if xd.contains(&0) {
        return Err(Error::shape(op, format!("zero-sized dimension: x {xd:?}")));
    }
    let (_, yd, p, div) = stages(op, xd[0], &xd[1..], &p)?.remove(0);
    let pass = match kind {
        PoolKind::Max => PoolPass::MaxForward,
        PoolKind::Min => PoolPass::MinForward,
        PoolKind::Avg => PoolPass::AvgForward,
    };
    let l = Pool2d {
        pass,
        xd,
        yd,
        p,
        div,
        specialise,
    };
    Ok((l, yd))
}

/// Every pooling op (`Op::Pool` and the fixed-rank `Op::Max/Min/AvgPool1d/2d/3d`) as 2-D
/// stages (see [`stages`]); the gradient runs the stages in reverse, routing by the recorded
/// indices (max, min: separable, the extremum of the extrema) or spreading (average).
pub(crate) struct PoolRule;

/// The input, kind and window of a pooling op.
fn pool_of(op: &Op) -> (NodeId, PoolKind, PoolParams) {
    use PoolKind::*;
    match *op {
        Op::Pool { x, kind, p } => (x, kind, p),
        Op::MaxPool2d { x, p } => (x, Max, p.into()),
        Op::MinPool2d { x, p } => (x, Min, p.into()),
        Op::AvgPool2d { x, p } => (x, Avg, p.into()),
        Op::MaxPool1d { x, p } => (x, Max, p.into()),
        Op::MinPool1d { x, p } => (x, Min, p.into()),
        Op::AvgPool1d { x, p } => (x, Avg, p.into()),
        Op::MaxPool3d { x, p } => (x, Max, p.into()),
        Op::MinPool3d { x, p } => (x, Min, p.into()),
        Op::AvgPool3d { x, p } => (x, Avg, p.into()),
        _ => unreachable!("PoolRule on another op"),
    }
}

impl PoolRule {
    fn parts(lw: &Lowering, id: NodeId) -> (NodeId, PoolPass, Vec<Stage>) {
        let node = lw.g.node(id);
        let (x, kind, p) = pool_of(&node.op);
        let pass = match kind {
            PoolKind::Max => PoolPass::MaxForward,
            PoolKind::Min => PoolPass::MinForward,
            PoolKind::Avg => PoolPass::AvgForward,
        };
        // the graph builder checked the window: resolving it again cannot fail
        let st = stages(&node.name, lw.n, &lw.g.node(x).shape, &p).expect("checked by the graph");
        (x, pass, st)
    }
}

impl Rule for PoolRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let (x, pass, stages) = Self::parts(lw, id);
        let name = lw.g.node(id).name.clone();
        let last = stages.len() - 1;
        let mut t = lw.out_of(x);
        let mut kept = Vec::new();
        for (k, stage) in stages.into_iter().enumerate() {
            let tname = if k == last {
                name.clone()
            } else {
                format!("{name}.hw")
            };
            let (y, idx) = stage_forward(lw, id, pass, tname, t, stage);
            kept.extend(idx);
            t = y;
        }
        lw.set_out(id, t);
        lw.keep(id, kept);
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let (x, _, stages) = Self::parts(lw, id);
        if !lw.needs_grad(x) {
            return;
        }
        let name = lw.g.node(id).name.clone();
        let idx = lw.kept(id);
        let mut g = dy;
        for (k, stage) in stages.into_iter().enumerate().rev() {
            let gname = if k == 0 {
                format!("{name}.dx")
            } else {
                format!("{name}.hw.dx")
            };
            g = stage_backward(lw, id, gname, g, idx.get(k).copied(), stage);
        }
        lw.push_grad(x, g);
    }
}

/// `Op::GlobalAvgPool`: the mean of each plane; the gradient spreads `dy/(H·W)`.
pub(crate) struct GlobalAvgPoolRule;

impl GlobalAvgPoolRule {
    fn parts(lw: &Lowering, id: NodeId, backward: bool) -> (NodeId, GlobalAvgPool) {
        let Op::GlobalAvgPool { x } = lw.g.node(id).op else {
            unreachable!("GlobalAvgPoolRule on another op")
        };
        let xs = &lw.g.node(x).shape;
        let l = GlobalAvgPool {
            backward,
            n: lw.n,
            c: xs[0],
            hw: xs[1] * xs[2],
        };
        (x, l)
    }
}

impl Rule for GlobalAvgPoolRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let (x, l) = Self::parts(lw, id, false);
        let y = lw.arena(lw.g.node(id).name.clone(), lw.g.numel(id));
        lw.emit(id, l, vec![Some(lw.out_of(x)), Some(y)]);
        lw.set_out(id, y);
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let (x, l) = Self::parts(lw, id, true);
        if lw.needs_grad(x) {
            let dx = lw.arena(format!("{}.dx", lw.g.node(id).name), lw.g.numel(x));
            lw.emit(id, l, vec![Some(dy), Some(dx)]);
            lw.push_grad(x, dx);
        }
    }
}
