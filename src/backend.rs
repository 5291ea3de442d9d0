//! The functional API: every kernel as one call, with identical signatures and
//! semantics on the CPU reference path and on the GPU.
//!
//! Inputs are validated (shapes, zero-sized dims, strides, target ranges, device
//! binding limits) before anything is uploaded or dispatched.

use std::sync::Arc;

use ndarray::{Array, Array1, Array2, Array4, ArrayD, Axis, Dimension, IxDyn, RemoveAxis};

use crate::cpu::matmul::Gemm;
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::gpu::buffers::{bytes_of_len, to_f32, Slice};
use crate::gpu::GpuContext;
use crate::graph::conv_dims5;
use crate::ops::augment::{normalization_lut, pack_bytes, Augment, Augmentation};
use crate::ops::conv::{Conv, ConvPass};
use crate::ops::elementwise::{Elementwise, Ew};
use crate::ops::layout::Permute;
use crate::ops::loss::{Loss, LossKind, Softmax};
use crate::ops::matmul::{BatchAxis, MatMul};
use crate::ops::norm::{BatchNorm, NormPass};
use crate::ops::optim::{GradNormScale, OptimizerStep, OptimizerStepMasked};
use crate::ops::pool::pool2d_launch;
use crate::ops::pool::{GlobalAvgPool, Pool2d, PoolPass};
use crate::ops::{compare, run_cpu, Access, Launch};
use crate::optim::Optimizer;
use crate::shape::{Activation, ConvDims, ConvParams, Pool2dParams};
use crate::shape::{AvgDivisor, PoolKind, PoolParams};

/// Gradients of a convolution: `dx` (shape of x), `dw` (shape of w), `db [O]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGrads<D: Dimension> {
    pub dx: Array<f32, D>,
    pub dw: Array<f32, D>,
    pub db: Array1<f32>,
}

/// Gradients of a 2-D convolution: `dx [N,C,H,W]`, `dw [O,C/groups,kh,kw]`, `db [O]`.
pub type Conv2dGrads = ConvGrads<ndarray::Ix4>;

/// Gradients of a linear layer: `dx [N,in]`, `dw [out,in]`, `db [out]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearGrads {
    pub dx: Array2<f32>,
    pub dw: Array2<f32>,
    pub db: Array1<f32>,
}

/// Training-mode batch norm output: `y` (shape of `x`) and the per-channel batch `mean`
/// and `inv_std = 1/√(σ²_biased + eps)` that [`Backend::batch_norm_backward`] takes.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormTrain {
    pub y: ArrayD<f32>,
    pub mean: Array1<f32>,
    pub inv_std: Array1<f32>,
}

/// Gradients of batch norm: `dx` (shape of `x`), `dgamma [C]`, `dbeta [C]`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormGrads {
    pub dx: ArrayD<f32>,
    pub dgamma: Array1<f32>,
    pub dbeta: Array1<f32>,
}

/// Where ops run: the CPU reference path or a WebGPU device.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The CPU twins in [`crate::cpu`].
    Cpu,
    /// The WGSL kernels on a WebGPU device.
    Gpu(Arc<GpuContext>),
}

/// Contiguous row-major copy of an array's elements.
fn flat<D: ndarray::Dimension>(
    a: &ndarray::ArrayBase<impl ndarray::Data<Elem = f32>, D>,
) -> Vec<f32> {
    a.iter().copied().collect()
}

fn dims4(a: &Array4<f32>) -> [usize; 4] {
    let (n, c, h, w) = a.dim();
    [n, c, h, w]
}

/// Checks a convolution's operand shapes (`x [N,C,spatial…]`, `w [O,C/G,kernel…]`, same
/// rank, 1–3 spatial axes) and resolves its geometry.
fn conv_geometry(op: &str, xs: &[usize], ws: &[usize], p: ConvParams) -> Result<ConvDims> {
    if xs.len() != ws.len() || !(3..=5).contains(&xs.len()) {
        return Err(Error::shape(
            op,
            format!(
                "x {xs:?} and w {ws:?} must both be [N,C,spatial…] / [O,C/groups,kernel…] with 1 to 3 spatial axes"
            ),
        ));
    }
    let dims = xs.len() - 2;
    let (x5, w5) = conv_dims5(xs[0], &xs[1..], ws);
    p.for_dims(dims)
        .dims_shown(&format!("{op}{dims}d"), x5, w5, dims)
}

/// The shape `[N, C, spatial…]` of a 5-D `[N,C,D,H,W]` with `rank − 2` spatial axes.
fn spatial_shape(d5: &[usize; 5], rank: usize) -> Vec<usize> {
    let mut v = vec![d5[0], d5[1]];
    v.extend_from_slice(&d5[5 - (rank - 2)..]);
    v
}

/// An array of dimensionality `D` with `shape`.
fn arr_nd<D: Dimension>(shape: &[usize], v: Vec<f32>) -> Result<Array<f32, D>> {
    Array::from_shape_vec(IxDyn(shape), v)
        .and_then(|a| a.into_dimensionality::<D>())
        .map_err(|e| Error::shape("result", e.to_string()))
}

/// Concatenates chunk results along the batch axis.
fn concat<T: Clone, D: Dimension + RemoveAxis>(
    op: &str,
    parts: Vec<Array<T, D>>,
) -> Result<Array<T, D>> {
    let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
    ndarray::concatenate(Axis(0), &views).map_err(|e| Error::shape(op, e.to_string()))
}

/// Concatenates chunk results along the batch axis.
fn concat4<T: Clone>(op: &str, parts: Vec<Array4<T>>) -> Result<Array4<T>> {
    let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
    ndarray::concatenate(Axis(0), &views).map_err(|e| Error::shape(op, e.to_string()))
}

fn arr4(d: [usize; 4], v: Vec<f32>) -> Result<Array4<f32>> {
    Array4::from_shape_vec((d[0], d[1], d[2], d[3]), v)
        .map_err(|e| Error::shape("result", e.to_string()))
}

fn arr2(d: [usize; 2], v: Vec<f32>) -> Result<Array2<f32>> {
    Array2::from_shape_vec((d[0], d[1]), v).map_err(|e| Error::shape("result", e.to_string()))
}

fn nonempty(op: &str, what: &str, shape: &[usize]) -> Result<()> {
    if shape.contains(&0) {
        return Err(Error::shape(
            op,
            format!("{what} has a zero-sized dimension: {shape:?}"),
        ));
    }
    Ok(())
}

impl Backend {
    /// The CPU reference path.
    pub fn cpu() -> Self {
        Backend::Cpu
    }

    /// The best WebGPU adapter (see [`GpuContext::new`]); an error says how to get one.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gpu() -> Result<Self> {
        Ok(Backend::Gpu(Arc::new(GpuContext::new()?)))
    }

    /// The adapter of a machine's `local_rank`-th process (see
    /// [`GpuContext::new_for_local_rank`]; `WGCNN_ADAPTER` overrides).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gpu_for_local_rank(local_rank: usize) -> Result<Self> {
        Ok(Backend::Gpu(Arc::new(GpuContext::new_for_local_rank(
            local_rank,
        )?)))
    }

    /// The best WebGPU adapter, without blocking (the browser's only form; see
    /// [`GpuContext::new_async`]).
    pub async fn gpu_async() -> Result<Self> {
        Ok(Backend::Gpu(Arc::new(GpuContext::new_async().await?)))
    }

    /// `"cpu"` or the adapter description.
    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu => "cpu (reference path)".into(),
            Backend::Gpu(g) => format!("gpu: {}", g.adapter()),
        }
    }

    /// The GPU context, if this is the GPU backend.
    pub fn gpu_context(&self) -> Option<&Arc<GpuContext>> {
        match self {
            Backend::Gpu(g) => Some(g),
            Backend::Cpu => None,
        }
    }

    /// On the GPU, when a tensor that grows with the batch exceeds the device's binding
    /// limit, the number of batch rows per chunk that fits (ops that treat samples
    /// independently then run chunk by chunk). `None` when no split is needed or possible.
    fn split_rows(&self, rows: usize, per_row: &[usize]) -> Option<usize> {
        let Backend::Gpu(g) = self else { return None };
        let lim = g
            .limits()
            .max_storage_buffer_binding_size
            .min(g.limits().max_buffer_size);
        let widest = per_row.iter().copied().max().unwrap_or(0) as u64 * 4;
        if rows < 2 || widest == 0 || widest * rows as u64 <= lim {
            return None;
        }
        let fit = (lim / widest) as usize;
        (fit >= 1).then_some(fit)
    }

    /// Checks every tensor (name, element count) against the device's binding limit.
    fn check_sizes(&self, op: &str, tensors: &[(&str, usize)]) -> Result<()> {
        if let Backend::Gpu(g) = self {
            for (name, len) in tensors {
                g.check_binding(op, name, bytes_of_len(*len))?;
            }
        }
        Ok(())
    }

    /// Runs one kernel launch on this backend, the one runner behind every functional op:
    /// each binding is checked against the device's limits (an error names `op` and the
    /// binding), `inputs` (one per binding the kernel reads, in binding order; unused optional
    /// bindings empty) are uploaded, the kernel (or its CPU twin) runs, and every binding it
    /// writes is returned in order (unused ones empty). Index bindings hold `u32` bits.
    /// Under `WGCNN_VALIDATE=1` a GPU result is also held to the CPU twin's.
    pub fn run_launch(&self, op: &str, l: &dyn Launch, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let bindings = l.bindings();
        let sizes: Vec<(&str, usize)> = bindings.iter().map(|b| (b.name, b.len)).collect();
        self.check_sizes(op, &sizes)?;
        let Backend::Gpu(g) = self else {
            return Ok(run_cpu(l, inputs));
        };
        let mut ins = inputs.iter();
        let slices: Vec<Slice> = bindings
            .iter()
            .map(|b| {
                let buf = match b.access {
                    Access::Write => g.zeros(b.name, bytes_of_len(b.len.max(1))),
                    _ => match ins.next().copied().unwrap_or_default() {
                        [] => g.upload(b.name, &[0.0f32]),
                        v => g.upload(b.name, v),
                    },
                };
                Slice::whole(buf)
            })
            .collect();
        let (d, _) = g.record_launch(l, &slices)?;
        let written: Vec<usize> = (0..bindings.len())
            .filter(|&k| bindings[k].access.writes())
            .collect();
        let reads: Vec<Slice> = written.iter().map(|&k| slices[k].clone()).collect();
        let r = g.run(std::iter::once(&d), &reads)?;
        let out: Vec<Vec<f32>> = written
            .iter()
            .zip(&r)
            .map(|(&k, bytes)| to_f32(bytes)[..bindings[k].len].to_vec())
            .collect();
        if std::env::var("WGCNN_VALIDATE").is_ok_and(|v| v == "1") {
            if let Some(m) = compare(l, &out, &run_cpu(l, inputs)) {
                return Err(Error::Shader {
                    kernel: d.kernel.spec.name.to_string(),
                    msg: format!("WGCNN_VALIDATE: {op}: {m}"),
                });
            }
        }
        Ok(out)
    }

    /// Convolution over the spatial axes of `x [N,C,spatial…]` (1, 2 or 3 of them; `x` and
    /// `w` of the same rank): cross-correlation by default, with the options of
    /// [`ConvParams`] (stride, dilation, padding mode, groups, kernel flip).
    ///
    /// # Shapes
    /// `x [N,C,(D,)(H,)W]`, `w [O,C/groups,(kd,)(kh,)kw]`, `b [O]` → `y [N,O,(od,)(oh,)ow]`
    /// with `ow = ⌊(W + pw_begin + pw_end − (kw−1)·dw − 1)/sw⌋ + 1`.
    pub fn conv<D: Dimension + RemoveAxis>(
        &self,
        x: &Array<f32, D>,
        w: &Array<f32, D>,
        b: Option<&Array1<f32>>,
        p: ConvParams,
    ) -> Result<Array<f32, D>> {
        let op = "conv";
        let d = conv_geometry(op, x.shape(), w.shape(), p)?;
        let op = &format!("conv{}d", x.ndim() - 2);
        if let Some(b) = b {
            if b.len() != d.w[0] {
                return Err(Error::shape(
                    op,
                    format!("bias has {} elements, expected {}", b.len(), d.w[0]),
                ));
            }
        }
        let out_len: usize = d.y.iter().product();
        if let Some(rows) = self.split_rows(d.x[0], &[x.len() / d.x[0], out_len / d.x[0]]) {
            let parts = x
                .axis_chunks_iter(Axis(0), rows)
                .map(|c| self.conv(&c.to_owned(), w, b, p))
                .collect::<Result<Vec<_>>>()?;
            return concat(op, parts);
        }
        self.check_sizes(op, &[("x", x.len()), ("w", w.len()), ("y", out_len)])?;
        let (xv, wv) = (flat(x), flat(w));
        let bv = b.map(flat);
        let l = Conv::new(ConvPass::Forward, d, b.is_some(), (0, 0.0));
        let bv = bv.unwrap_or_default();
        let y = self.run_launch(op, &l, &[&xv, &wv, &bv])?.remove(0);
        arr_nd(&spatial_shape(&d.y, x.ndim()), y)
    }

    /// Gradients of [`Backend::conv`] for an upstream gradient `dy` of `y`'s shape.
    pub fn conv_backward<D: Dimension + RemoveAxis>(
        &self,
        x: &Array<f32, D>,
        w: &Array<f32, D>,
        dy: &Array<f32, D>,
        p: ConvParams,
    ) -> Result<ConvGrads<D>> {
        let d = conv_geometry("conv", x.shape(), w.shape(), p)?;
        let op = &format!("conv{}d_backward", x.ndim() - 2);
        let y_shape = spatial_shape(&d.y, x.ndim());
        if dy.shape() != y_shape.as_slice() {
            return Err(Error::shape(
                op,
                format!("dy has shape {:?}, expected {y_shape:?}", dy.shape()),
            ));
        }
        self.check_sizes(op, &[("x", x.len()), ("w", w.len()), ("dy", dy.len())])?;
        let (xv, wv, dyv) = (flat(x), flat(w), flat(dy));
        let dx_l = Conv::new(ConvPass::BackwardInput, d, false, (0, 0.0));
        let dx = self.run_launch(op, &dx_l, &[&dyv, &wv, &[]])?.remove(0);
        let dw_l = Conv::new(ConvPass::BackwardWeight, d, true, (0, 0.0));
        let mut r = self.run_launch(op, &dw_l, &[&xv, &dyv, &[]])?;
        let (dw, db) = (r.remove(0), r.remove(0));
        Ok(ConvGrads {
            dx: arr_nd(x.shape(), dx)?,
            dw: arr_nd(w.shape(), dw)?,
            db: Array1::from(db),
        })
    }

    /// 2-D convolution: [`Backend::conv`] on `x [N,C,H,W]`, `w [O,C/groups,kh,kw]`.
    pub fn conv2d(
        &self,
        x: &Array4<f32>,
        w: &Array4<f32>,
        b: Option<&Array1<f32>>,
        p: impl Into<ConvParams>,
    ) -> Result<Array4<f32>> {
        self.conv(x, w, b, p.into())
    }

    /// Gradients of [`Backend::conv2d`] for an upstream gradient `dy [N,O,oh,ow]`.
    pub fn conv2d_backward(
        &self,
        x: &Array4<f32>,
        w: &Array4<f32>,
        dy: &Array4<f32>,
        p: impl Into<ConvParams>,
    ) -> Result<Conv2dGrads> {
        self.conv_backward(x, w, dy, p.into())
    }

    /// 2-D max-pooling; also returns, for every output, the flat index `h·W + w` of its
    /// argmax inside its input plane (PyTorch's convention).
    ///
    /// # Shapes
    /// `x [N,C,H,W]` → `y, idx [N,C,oh,ow]`.
    pub fn max_pool2d(
        &self,
        x: &Array4<f32>,
        pp: Pool2dParams,
    ) -> Result<(Array4<f32>, Array4<u32>)> {
        self.arg_pool2d("max_pool2d", x, pp)
    }

    /// 2-D pooling with any [`PoolParams`] window (Keras `same`, PyTorch `ceil_mode`, the
    /// seed article's anchor and flip): the output, and for max and min pooling the flat
    /// index `h·W + w` of each window's first extremum (route gradients with
    /// [`Backend::max_pool2d_backward`]; the average's is [`Backend::pool2d_backward`]).
    ///
    /// # Shapes
    /// `x [N,C,H,W]` → `y, idx [N,C,oh,ow]`.
    pub fn pool2d(
        &self,
        x: &Array4<f32>,
        kind: PoolKind,
        p: impl Into<PoolParams>,
    ) -> Result<(Array4<f32>, Option<Array4<u32>>)> {
        let op = "pool2d";
        let xd = dims4(x);
        let (l, yd) = pool2d_launch(op, xd, kind, p.into(), false)?;
        self.check_sizes(op, &[("x", x.len()), ("y", yd.iter().product())])?;
        let mut r = self.run_launch(op, &l, &[&flat(x)])?;
        let y = arr4(yd, r.remove(0))?;
        if kind == PoolKind::Avg {
            return Ok((y, None));
        }
        let sh = (yd[0], yd[1], yd[2], yd[3]);
        let idx = Array4::from_shape_vec(sh, bits_u32(&r[0]))
            .map_err(|e| Error::shape(op, e.to_string()))?;
        Ok((y, Some(idx)))
    }

    /// Backward of [`Backend::pool2d`] for average pooling: every input receives
    /// `dy / divisor` from each window that holds it. (Max and min pooling route `dy` by
    /// their indices: [`Backend::max_pool2d_backward`].)
    ///
    /// # Shapes
    /// `dy [N,C,oh,ow]`, `x_dim = [N,C,H,W]` → `dx [N,C,H,W]`.
    pub fn pool2d_backward(
        &self,
        dy: &Array4<f32>,
        x_dim: [usize; 4],
        p: impl Into<PoolParams>,
    ) -> Result<Array4<f32>> {
        let op = "pool2d_backward";
        let (mut l, yd) = pool2d_launch(op, x_dim, PoolKind::Avg, p.into(), false)?;
        if dims4(dy) != yd {
            return Err(Error::shape(
                op,
                format!(
                    "dy {:?} does not match the pooling's output {yd:?}",
                    dy.shape()
                ),
            ));
        }
        l.pass = PoolPass::AvgBackward;
        self.check_sizes(op, &[("dy", dy.len()), ("dx", x_dim.iter().product())])?;
        let dx = self.run_launch(op, &l, &[&flat(dy)])?.remove(0);
        arr4(x_dim, dx)
    }

    /// Max- or min-pooling with indices (`op` is `max_pool2d` or `min_pool2d`, the kernel
    /// is `<op>_forward`): both bind the same layout and differ only in the comparison.
    fn arg_pool2d(
        &self,
        op: &str,
        x: &Array4<f32>,
        pp: Pool2dParams,
    ) -> Result<(Array4<f32>, Array4<u32>)> {
        let y_dim = pp.out_shape(op, dims4(x))?;
        let out_len: usize = y_dim.iter().product();
        if let Some(rows) = self.split_rows(y_dim[0], &[x.len() / y_dim[0], out_len / y_dim[0]]) {
            let (mut ys, mut is) = (Vec::new(), Vec::new());
            for c in x.axis_chunks_iter(Axis(0), rows) {
                let (y, i) = self.arg_pool2d(op, &c.to_owned(), pp)?;
                ys.push(y);
                is.push(i);
            }
            return Ok((concat4(op, ys)?, concat4(op, is)?));
        }
        self.check_sizes(op, &[("x", x.len()), ("y", out_len)])?;
        let xv = flat(x);
        let pass = if op == "min_pool2d" {
            PoolPass::MinForward
        } else {
            PoolPass::MaxForward
        };
        let l = Pool2d {
            pass,
            xd: dims4(x),
            yd: y_dim,
            p: pp,
            div: AvgDivisor::Window,
            specialise: false,
        };
        let mut r = self.run_launch(op, &l, &[&xv])?;
        let (y, idx) = (r.remove(0), bits_u32(&r[0]));
        let sh = (y_dim[0], y_dim[1], y_dim[2], y_dim[3]);
        let idx = Array4::from_shape_vec(sh, idx).map_err(|e| Error::shape(op, e.to_string()))?;
        Ok((arr4(y_dim, y)?, idx))
    }

    /// Backward of max-pooling: routes `dy` to the recorded argmax positions (summing
    /// where windows overlap). `x_dim` is the forward input's shape.
    ///
    /// The pooling geometry is inferred from the shapes: the indices alone define the
    /// routing, so any window/stride/padding that produced `idx` works.
    pub fn max_pool2d_backward(
        &self,
        dy: &Array4<f32>,
        idx: &Array4<u32>,
        x_dim: (usize, usize, usize, usize),
    ) -> Result<Array4<f32>> {
        self.max_pool2d_backward_with(dy, idx, x_dim, None)
    }

    /// [`Backend::max_pool2d_backward`] knowing the forward pooling geometry, so the GPU
    /// kernel visits only the windows that can hold each input (as the training
    /// executor does). Without it every output of the plane is visited.
    pub fn max_pool2d_backward_with(
        &self,
        dy: &Array4<f32>,
        idx: &Array4<u32>,
        x_dim: (usize, usize, usize, usize),
        geometry: Option<Pool2dParams>,
    ) -> Result<Array4<f32>> {
        let op = "max_pool2d_backward";
        let xd = [x_dim.0, x_dim.1, x_dim.2, x_dim.3];
        let yd = dims4(dy);
        nonempty(op, "x", &xd)?;
        nonempty(op, "dy", &yd)?;
        if idx.dim() != dy.dim() {
            return Err(Error::shape(
                op,
                format!("idx has shape {:?} but dy has {:?}", idx.dim(), dy.dim()),
            ));
        }
        if yd[0] != xd[0] || yd[1] != xd[1] {
            return Err(Error::shape(
                op,
                format!("dy {yd:?} and x {xd:?} disagree on batch or channels"),
            ));
        }
        let plane = (xd[2] * xd[3]) as u32;
        if let Some(bad) = idx.iter().find(|&&i| i >= plane) {
            return Err(Error::invalid(
                op,
                format!("index {bad} is outside the {}x{} input plane", xd[2], xd[3]),
            ));
        }
        let x_len: usize = xd.iter().product();
        self.check_sizes(op, &[("dy", dy.len()), ("dx", x_len)])?;
        let dyv = flat(dy);
        let iv: Vec<u32> = idx.iter().copied().collect();
        // Without the geometry, a stride-1 window padded by the output size on each side
        // makes every output of the plane a candidate for every input.
        let pp = match geometry {
            Some(pp) => {
                if pp.out_shape(op, xd)? != yd {
                    return Err(Error::shape(
                        op,
                        format!("dy {yd:?} does not match pooling {pp:?} of x {xd:?}"),
                    ));
                }
                pp
            }
            None => Pool2dParams {
                kernel: [xd[2] + yd[2] + 1, xd[3] + yd[3] + 1],
                stride: [1, 1],
                padding: [yd[2], yd[3]],
            },
        };
        let l = Pool2d {
            pass: PoolPass::ArgBackward,
            xd,
            yd,
            p: pp,
            div: AvgDivisor::Window,
            specialise: false,
        };
        let iv: &[f32] = bytemuck::cast_slice(&iv);
        let dx = self.run_launch(op, &l, &[&dyv, iv])?.remove(0);
        arr4(xd, dx)
    }

    /// 2-D min-pooling (the seed article's MinPool): `y` is the minimum of each window
    /// (padding counts as +∞) and `idx` the flat index `h·W + w` of its first minimum in
    /// the input plane. The backward is [`Backend::max_pool2d_backward`] with these indices.
    ///
    /// # Shapes
    /// `x [N,C,H,W]` → `y, idx [N,C,oh,ow]`.
    pub fn min_pool2d(
        &self,
        x: &Array4<f32>,
        pp: Pool2dParams,
    ) -> Result<(Array4<f32>, Array4<u32>)> {
        self.arg_pool2d("min_pool2d", x, pp)
    }

    /// 2-D average pooling (PyTorch `avg_pool2d` with `count_include_pad=True`: padding
    /// counts as 0 and every window divides by `kh·kw`).
    ///
    /// # Shapes
    /// `x [N,C,H,W]` → `[N,C,oh,ow]`.
    pub fn avg_pool2d(&self, x: &Array4<f32>, pp: Pool2dParams) -> Result<Array4<f32>> {
        let op = "avg_pool2d";
        let xd = dims4(x);
        let y_dim = pp.out_shape(op, xd)?;
        let out_len: usize = y_dim.iter().product();
        self.check_sizes(op, &[("x", x.len()), ("y", out_len)])?;
        let xv = flat(x);
        let l = Pool2d {
            pass: PoolPass::AvgForward,
            xd,
            yd: y_dim,
            p: pp,
            div: AvgDivisor::Window,
            specialise: false,
        };
        let y = self.run_launch(op, &l, &[&xv])?.remove(0);
        arr4(y_dim, y)
    }

    /// Backward of [`Backend::avg_pool2d`]: every input receives `dy / (kh·kw)` from each
    /// window that holds it. `x_dim` is the forward input's shape.
    ///
    /// # Shapes
    /// `dy [N,C,oh,ow]` → `dx [N,C,H,W]`.
    pub fn avg_pool2d_backward(
        &self,
        dy: &Array4<f32>,
        pp: Pool2dParams,
        x_dim: (usize, usize, usize, usize),
    ) -> Result<Array4<f32>> {
        let op = "avg_pool2d_backward";
        let xd = [x_dim.0, x_dim.1, x_dim.2, x_dim.3];
        let yd = dims4(dy);
        nonempty(op, "dy", &yd)?;
        let expect = pp.out_shape(op, xd)?;
        if expect != yd {
            return Err(Error::shape(
                op,
                format!(
                    "dy {yd:?} does not match pooling {pp:?} of x {xd:?} (expected {expect:?})"
                ),
            ));
        }
        let x_len: usize = xd.iter().product();
        self.check_sizes(op, &[("dy", dy.len()), ("dx", x_len)])?;
        let dyv = flat(dy);
        let l = Pool2d {
            pass: PoolPass::AvgBackward,
            xd,
            yd,
            p: pp,
            div: AvgDivisor::Window,
            specialise: false,
        };
        let dx = self.run_launch(op, &l, &[&dyv])?.remove(0);
        arr4(xd, dx)
    }

    /// The input pipeline's kernel: normalises `images` (`[N,C,H,W]` bytes, CHW per image)
    /// with `norms[c]` per channel and applies `aug` — a random crop from the image padded
    /// by `aug.crop_pad` (zeros or reflect) and a random horizontal flip, drawn per sample
    /// from `(seed, epoch, samples[n])` (`samples` are the images' dataset indices). The CPU
    /// and the GPU give bit-identical results.
    ///
    /// # Shapes
    /// `images [N·C·H·W]`, `samples [N]`, `norms [C]` → `[N,C,H,W]`.
    #[allow(clippy::too_many_arguments)]
    pub fn augment(
        &self,
        images: &[u8],
        dims: [usize; 4],
        samples: &[u32],
        norms: &[Normalize],
        aug: Augmentation,
        seed: u64,
        epoch: u32,
    ) -> Result<Array4<f32>> {
        let op = "augment";
        nonempty(op, "images", &dims)?;
        let len: usize = dims.iter().product();
        if images.len() != len || samples.len() != dims[0] || norms.len() != dims[1] {
            return Err(Error::shape(
                op,
                format!(
                    "{} bytes, {} sample indices and {} normalisations for images {dims:?}",
                    images.len(),
                    samples.len(),
                    norms.len()
                ),
            ));
        }
        norms.iter().try_for_each(Normalize::validate)?;
        aug.check([dims[1], dims[2], dims[3]])?;
        self.check_sizes(op, &[("images", len.div_ceil(4)), ("y", len)])?;
        let l = Augment {
            dims,
            aug,
            seed,
            epoch,
        };
        let words = pack_bytes(images);
        let lut = normalization_lut(norms);
        let ins: [&[f32]; 3] = [
            bytemuck::cast_slice(&words),
            bytemuck::cast_slice(samples),
            &lut,
        ];
        let y = self.run_launch(op, &l, &ins)?.remove(0);
        arr4(dims, y)
    }

    /// Global average pooling: the mean of each channel's plane.
    ///
    /// # Shapes
    /// `x [N,C,H,W]` → `[N,C]`.
    pub fn global_avg_pool(&self, x: &Array4<f32>) -> Result<Array2<f32>> {
        let op = "global_avg_pool";
        let [n, c, h, w] = dims4(x);
        nonempty(op, "x", &[n, c, h, w])?;
        self.check_sizes(op, &[("x", x.len()), ("y", n * c)])?;
        let xv = flat(x);
        let l = GlobalAvgPool {
            backward: false,
            n,
            c,
            hw: h * w,
        };
        let y = self.run_launch(op, &l, &[&xv])?.remove(0);
        Array2::from_shape_vec((n, c), y).map_err(|e| Error::shape(op, e.to_string()))
    }

    /// Backward of [`Backend::global_avg_pool`]: `dx[n,c,h,w] = dy[n,c] / (H·W)`.
    ///
    /// # Shapes
    /// `dy [N,C]` → `dx [N,C,H,W]` with `x_dim = (N,C,H,W)`.
    pub fn global_avg_pool_backward(
        &self,
        dy: &Array2<f32>,
        x_dim: (usize, usize, usize, usize),
    ) -> Result<Array4<f32>> {
        let op = "global_avg_pool_backward";
        let xd = [x_dim.0, x_dim.1, x_dim.2, x_dim.3];
        nonempty(op, "x", &xd)?;
        if dy.dim() != (xd[0], xd[1]) {
            return Err(Error::shape(
                op,
                format!(
                    "dy has shape {:?} but x {xd:?} needs [{}, {}]",
                    dy.dim(),
                    xd[0],
                    xd[1]
                ),
            ));
        }
        let (rows, hw) = (xd[0] * xd[1], xd[2] * xd[3]);
        self.check_sizes(op, &[("dy", rows), ("dx", rows * hw)])?;
        let dyv = flat(dy);
        let l = GlobalAvgPool {
            backward: true,
            n: xd[0],
            c: xd[1],
            hw,
        };
        let dx = self.run_launch(op, &l, &[&dyv])?.remove(0);
        arr4(xd, dx)
    }

    fn gemm_run(
        &self,
        op: &str,
        gm: &Gemm,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let l = MatMul::new(*gm, bias.is_some(), BatchAxis::None);
        let mut r = self.run_launch(op, &l, &[a, b, bias.unwrap_or_default(), &[]])?;
        Ok((r.remove(0), r.remove(0)))
    }

    /// Matrix product.
    ///
    /// # Shapes
    /// `a [M,K]`, `b [K,N]` → `[M,N]`.
    pub fn matmul(&self, a: &Array2<f32>, b: &Array2<f32>) -> Result<Array2<f32>> {
        let op = "matmul";
        let ((m, k), (k2, n)) = (a.dim(), b.dim());
        nonempty(op, "a", &[m, k])?;
        nonempty(op, "b", &[k2, n])?;
        if k != k2 {
            return Err(Error::shape(
                op,
                format!("inner dimensions differ: a [{m},{k}] · b [{k2},{n}]"),
            ));
        }
        self.check_sizes(op, &[("a", m * k), ("b", k * n), ("c", m * n)])?;
        let (c, _) = self.gemm_run(op, &Gemm::matmul(m, k, n), &flat(a), &flat(b), None)?;
        arr2([m, n], c)
    }

    fn check_linear(op: &str, x: &Array2<f32>, w: &Array2<f32>) -> Result<(usize, usize, usize)> {
        let ((n, i), (o, i2)) = (x.dim(), w.dim());
        nonempty(op, "x", &[n, i])?;
        nonempty(op, "w", &[o, i2])?;
        if i != i2 {
            return Err(Error::shape(
                op,
                format!("x has {i} features but w [out={o}, in={i2}] expects {i2}"),
            ));
        }
        Ok((n, i, o))
    }

    /// Linear layer `y = x·wᵀ + b` (PyTorch layout).
    ///
    /// # Shapes
    /// `x [N,in]`, `w [out,in]`, `b [out]` → `y [N,out]`.
    pub fn linear(
        &self,
        x: &Array2<f32>,
        w: &Array2<f32>,
        b: Option<&Array1<f32>>,
    ) -> Result<Array2<f32>> {
        let op = "linear";
        let (n, i, o) = Self::check_linear(op, x, w)?;
        if let Some(b) = b {
            if b.len() != o {
                return Err(Error::shape(
                    op,
                    format!("bias has {} elements, expected {o}", b.len()),
                ));
            }
        }
        if let Some(rows) = self.split_rows(n, &[i, o]) {
            let parts = x
                .axis_chunks_iter(Axis(0), rows)
                .map(|c| self.linear(&c.to_owned(), w, b))
                .collect::<Result<Vec<_>>>()?;
            let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
            return ndarray::concatenate(Axis(0), &views)
                .map_err(|e| Error::shape(op, e.to_string()));
        }
        self.check_sizes(op, &[("x", n * i), ("w", o * i), ("y", n * o)])?;
        let bv = b.map(flat);
        let (y, _) = self.gemm_run(
            op,
            &Gemm::linear_forward(n, i, o, (0, 0.0)),
            &flat(x),
            &flat(w),
            bv.as_deref(),
        )?;
        arr2([n, o], y)
    }

    /// Gradients of [`Backend::linear`] for an upstream gradient `dy [N,out]`.
    pub fn linear_backward(
        &self,
        x: &Array2<f32>,
        w: &Array2<f32>,
        dy: &Array2<f32>,
    ) -> Result<LinearGrads> {
        let op = "linear_backward";
        let (n, i, o) = Self::check_linear(op, x, w)?;
        if dy.dim() != (n, o) {
            return Err(Error::shape(
                op,
                format!("dy has shape {:?}, expected [{n}, {o}]", dy.dim()),
            ));
        }
        self.check_sizes(op, &[("x", n * i), ("w", o * i), ("dy", n * o)])?;
        let (xv, wv, dyv) = (flat(x), flat(w), flat(dy));
        let (dx, _) = self.gemm_run(
            op,
            &Gemm::linear_backward_input(n, i, o, (0, 0.0)),
            &dyv,
            &wv,
            None,
        )?;
        let (dw, db) = self.gemm_run(
            op,
            &Gemm::linear_backward_weight(n, i, o, (0, 0.0)),
            &dyv,
            &xv,
            None,
        )?;
        Ok(LinearGrads {
            dx: arr2([n, i], dx)?,
            dw: arr2([o, i], dw)?,
            db: Array1::from(db),
        })
    }

    fn elementwise(
        &self,
        op: &str,
        kernel: &str,
        act: Activation,
        ins: &[&ArrayD<f32>],
    ) -> Result<ArrayD<f32>> {
        let shape = ins[0].shape().to_vec();
        nonempty(op, "x", &shape)?;
        for t in &ins[1..] {
            if t.shape() != shape.as_slice() {
                return Err(Error::shape(
                    op,
                    format!("shapes differ: {:?} vs {:?}", shape, t.shape()),
                ));
            }
        }
        let len = ins[0].len();
        if let Some(chunk) = self.split_rows(len, &[1]) {
            // elementwise: any split of the flat elements works
            let vals: Vec<Vec<f32>> = ins.iter().map(|t| flat(*t)).collect();
            let mut out = Vec::with_capacity(len);
            for start in (0..len).step_by(chunk) {
                let end = (start + chunk).min(len);
                let parts = vals
                    .iter()
                    .map(|v| ArrayD::from_shape_vec(IxDyn(&[end - start]), v[start..end].to_vec()))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::shape(op, e.to_string()))?;
                let refs: Vec<&ArrayD<f32>> = parts.iter().collect();
                out.extend(self.elementwise(op, kernel, act, &refs)?.iter());
            }
            return ArrayD::from_shape_vec(IxDyn(&shape), out)
                .map_err(|e| Error::shape(op, e.to_string()));
        }
        self.check_sizes(op, &[("x", len)])?;
        let vals: Vec<Vec<f32>> = ins.iter().map(|t| flat(*t)).collect();
        let ew = match kernel {
            "activation_forward" => Ew::ActivationForward(act),
            "activation_backward" => Ew::ActivationBackward(act),
            _ => Ew::Add,
        };
        let ins: Vec<&[f32]> = vals.iter().map(|v| v.as_slice()).collect();
        let l = Elementwise::new(ew, 1, len);
        let out = self.run_launch(op, &l, &ins)?.remove(0);
        ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| Error::shape(op, e.to_string()))
    }

    /// Elementwise activation `y = f(x)`, any shape.
    pub fn activation(&self, act: Activation, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        self.elementwise("activation", "activation_forward", act, &[x])
    }

    /// Activation backward `dx = dy · f'(x)` from the forward input `x`.
    pub fn activation_backward(
        &self,
        act: Activation,
        x: &ArrayD<f32>,
        dy: &ArrayD<f32>,
    ) -> Result<ArrayD<f32>> {
        self.elementwise("activation_backward", "activation_backward", act, &[x, dy])
    }

    /// Elementwise sum `a + b` of two tensors of the same shape.
    pub fn add(&self, a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        self.elementwise("add", "add", Activation::Relu, &[a, b])
    }

    /// Dropout in training mode: `y[i] = x[i]/(1−p)` where the element is kept and 0 where
    /// it is dropped. Element `i` (row-major) is kept iff `u ≥ p` for
    /// `u = (h >> 8)/2²⁴`, `h = pcg(i ^ pcg(seed ^ pcg(step)))` (see `shaders/elementwise.wgsl`),
    /// so the CPU and GPU draw the same mask, and `(seed, step)` fixes it. `p ∈ [0, 1)`.
    /// (In evaluation dropout is the identity: don't call this.)
    pub fn dropout(&self, x: &ArrayD<f32>, p: f32, seed: u32, step: u32) -> Result<ArrayD<f32>> {
        self.dropout_run("dropout", "dropout_forward", x, p, seed, step)
    }

    /// Backward of [`Backend::dropout`] with the same `(p, seed, step)`:
    /// `dx[i] = dy[i]/(1−p)` where kept, 0 where dropped.
    pub fn dropout_backward(
        &self,
        dy: &ArrayD<f32>,
        p: f32,
        seed: u32,
        step: u32,
    ) -> Result<ArrayD<f32>> {
        self.dropout_run("dropout_backward", "dropout_backward", dy, p, seed, step)
    }

    fn dropout_run(
        &self,
        op: &str,
        kernel: &str,
        x: &ArrayD<f32>,
        p: f32,
        seed: u32,
        step: u32,
    ) -> Result<ArrayD<f32>> {
        let shape = x.shape().to_vec();
        nonempty(op, "x", &shape)?;
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                op,
                format!("dropout probability {p} must be in [0, 1)"),
            ));
        }
        let len = x.len();
        self.check_sizes(op, &[("x", len)])?;
        let xv = flat(x);
        let ew = if kernel == "dropout_forward" {
            Ew::DropoutForward { p, seed }
        } else {
            Ew::DropoutBackward { p, seed }
        };
        let l = Elementwise::new(ew, 1, len);
        let out = self
            .run_launch(op, &l, &[&xv, &[f32::from_bits(step)]])?
            .remove(0);
        ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| Error::shape(op, e.to_string()))
    }

    /// Keras `Rescaling`: `y = x·scale + offset` elementwise, any shape. Its backward is
    /// `rescale(dy, scale, 0)`.
    pub fn rescale(&self, x: &ArrayD<f32>, scale: f32, offset: f32) -> Result<ArrayD<f32>> {
        let op = "rescale";
        let shape = x.shape().to_vec();
        nonempty(op, "x", &shape)?;
        if !scale.is_finite() || !offset.is_finite() {
            return Err(Error::invalid(
                op,
                format!("scale {scale} and offset {offset} must be finite"),
            ));
        }
        let len = x.len();
        self.check_sizes(op, &[("x", len)])?;
        let xv = flat(x);
        let l = Elementwise::new(Ew::Rescale { scale, offset }, 1, len);
        let out = self.run_launch(op, &l, &[&xv])?.remove(0);
        ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| Error::shape(op, e.to_string()))
    }

    /// Row-wise softmax.
    ///
    /// # Shapes
    /// `logits [N,K]` → `[N,K]`.
    pub fn softmax(&self, logits: &Array2<f32>) -> Result<Array2<f32>> {
        let op = "softmax";
        let (r, c) = logits.dim();
        nonempty(op, "logits", &[r, c])?;
        self.check_sizes(op, &[("logits", r * c)])?;
        let xv = flat(logits);
        let l = Softmax {
            backward: false,
            rows: r,
            cols: c,
        };
        let s = self.run_launch(op, &l, &[&xv])?.remove(0);
        arr2([r, c], s)
    }

    /// Softmax + cross-entropy with integer targets, mean over the batch; returns the
    /// loss and `d loss / d logits`.
    ///
    /// # Shapes
    /// `logits [N,K]`, `targets [N]` (each `< K`) → `(loss, dlogits [N,K])`.
    pub fn cross_entropy(
        &self,
        logits: &Array2<f32>,
        targets: &[u32],
    ) -> Result<(f32, Array2<f32>)> {
        self.cross_entropy_smoothed(logits, targets, 0.0)
    }

    /// [`Backend::cross_entropy`] with label smoothing `eps` in [0, 1] (PyTorch
    /// `cross_entropy(..., label_smoothing=eps)`): the target of row `r` is
    /// `(1 − eps)·onehot(t_r) + eps/K`.
    ///
    /// # Shapes
    /// `logits [N,K]`, `targets [N]` → `(mean loss, dlogits [N,K])`.
    pub fn cross_entropy_smoothed(
        &self,
        logits: &Array2<f32>,
        targets: &[u32],
        eps: f32,
    ) -> Result<(f32, Array2<f32>)> {
        let op = "cross_entropy";
        check_smoothing(op, eps)?;
        let (r, c) = logits.dim();
        nonempty(op, "logits", &[r, c])?;
        if targets.len() != r {
            return Err(Error::shape(
                op,
                format!("{} targets for {r} rows", targets.len()),
            ));
        }
        if let Some((i, t)) = targets.iter().enumerate().find(|(_, &t)| t as usize >= c) {
            return Err(Error::invalid(
                op,
                format!("target {t} at row {i} is out of range for {c} classes"),
            ));
        }
        self.check_sizes(op, &[("logits", r * c)])?;
        let xv = flat(logits);
        let l = Loss {
            kind: LossKind::CrossEntropy,
            rows: r,
            cols: c,
            grad: true,
            accumulate: false,
            pos_weight: false,
            label_smoothing: eps,
        };
        let mut out = self.run_launch(op, &l, &[&xv, bytemuck::cast_slice(targets), &[0.0; 4]])?;
        let (dx, m) = (out.remove(0), out.remove(0));
        Ok((m[0] / r as f32, arr2([r, c], dx)?))
    }

    /// Mean squared error over all elements (PyTorch's default reduction) and its gradient.
    pub fn mse(&self, pred: &ArrayD<f32>, target: &ArrayD<f32>) -> Result<(f32, ArrayD<f32>)> {
        let op = "mse";
        nonempty(op, "pred", pred.shape())?;
        if pred.shape() != target.shape() {
            return Err(Error::shape(
                op,
                format!("pred {:?} vs target {:?}", pred.shape(), target.shape()),
            ));
        }
        let len = pred.len();
        self.check_sizes(op, &[("pred", len)])?;
        let (pv, tv) = (flat(pred), flat(target));
        let l = Loss {
            kind: LossKind::Mse,
            rows: 1,
            cols: len,
            grad: true,
            accumulate: false,
            pos_weight: false,
            label_smoothing: 0.0,
        };
        let mut out = self.run_launch(op, &l, &[&pv, &tv, &[0.0; 4]])?;
        let (dp, m) = (out.remove(0), out.remove(0));
        let dp = ArrayD::from_shape_vec(IxDyn(pred.shape()), dp)
            .map_err(|e| Error::shape(op, e.to_string()))?;
        Ok((m[0], dp))
    }

    /// Binary cross-entropy with logits (PyTorch `BCEWithLogitsLoss`, mean over all elements)
    /// and its gradient; `pos_weight [K]` weighs each column's positive term.
    ///
    /// # Shapes
    /// `logits [N,K]`, `targets [N,K]` (in [0, 1]), `pos_weight [K]` → `(loss, dlogits [N,K])`.
    pub fn bce_with_logits(
        &self,
        logits: &Array2<f32>,
        targets: &Array2<f32>,
        pos_weight: Option<&Array1<f32>>,
    ) -> Result<(f32, Array2<f32>)> {
        let op = "bce_with_logits";
        let (r, c) = logits.dim();
        nonempty(op, "logits", &[r, c])?;
        if targets.dim() != (r, c) {
            return Err(Error::shape(
                op,
                format!("targets {:?} vs logits {:?}", targets.dim(), (r, c)),
            ));
        }
        if let Some(w) = pos_weight.filter(|w| w.len() != c) {
            return Err(Error::shape(
                op,
                format!("pos_weight has {} elements for {c} columns", w.len()),
            ));
        }
        let l = Loss {
            kind: LossKind::BceLogits,
            rows: r,
            cols: c,
            grad: true,
            accumulate: false,
            pos_weight: pos_weight.is_some(),
            label_smoothing: 0.0,
        };
        let w = pos_weight.map(flat).unwrap_or_default();
        let ins: [&[f32]; 4] = [&flat(logits), &flat(targets), &w, &[0.0; 4]];
        let mut out = self.run_launch(op, &l, &ins)?;
        let (dx, m) = (out.remove(0), out.remove(0));
        Ok((m[0] / r as f32, arr2([r, c], dx)?))
    }

    /// `[N, C, S]` view of a batch-norm input `[N,C]` or `[N,C,H,W]` (S = H·W), checking
    /// every per-channel vector's length.
    fn bn_dims(op: &str, x: &ArrayD<f32>, per_channel: &[(&str, usize)]) -> Result<[usize; 3]> {
        let sh = x.shape();
        if sh.len() != 2 && sh.len() != 4 {
            return Err(Error::shape(
                op,
                format!("x must be [N,C] or [N,C,H,W], got {sh:?}"),
            ));
        }
        nonempty(op, "x", sh)?;
        let (n, c) = (sh[0], sh[1]);
        let s: usize = sh[2..].iter().product();
        for (name, len) in per_channel {
            if *len != c {
                return Err(Error::shape(
                    op,
                    format!("{name} has {len} elements for {c} channels"),
                ));
            }
        }
        Ok([n, c, s])
    }

    /// Batch normalisation in training mode (PyTorch `BatchNorm1d/2d` with `training=True`):
    /// normalises with the batch statistics over N (and H, W) and updates the running
    /// statistics in place, `running ← (1 − momentum)·running + momentum·batch` (the
    /// unbiased variance for `running_var`).
    ///
    /// # Shapes
    /// `x [N,C]` or `[N,C,H,W]` (N·H·W > 1), `gamma`, `beta`, `running_*` `[C]`.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train(
        &self,
        x: &ArrayD<f32>,
        gamma: &Array1<f32>,
        beta: &Array1<f32>,
        running_mean: &mut Array1<f32>,
        running_var: &mut Array1<f32>,
        momentum: f32,
        eps: f32,
    ) -> Result<BatchNormTrain> {
        let op = "batch_norm_train";
        let d = Self::bn_dims(
            op,
            x,
            &[
                ("gamma", gamma.len()),
                ("beta", beta.len()),
                ("running_mean", running_mean.len()),
                ("running_var", running_var.len()),
            ],
        )?;
        if d[0] * d[2] < 2 {
            return Err(Error::invalid(
                op,
                "expected more than 1 value per channel when training",
            ));
        }
        if !(eps > 0.0 && eps.is_finite() && momentum.is_finite()) {
            return Err(Error::invalid(op, "eps must be > 0 and momentum finite"));
        }
        self.check_sizes(op, &[("x", x.len())])?;
        let c = d[1];
        let (xv, gv, bv) = (flat(x), flat(gamma), flat(beta));
        let mut rm = flat(&*running_mean);
        let mut rv = flat(&*running_var);
        let l = BatchNorm {
            pass: NormPass::Train,
            d,
            momentum,
            eps,
        };
        let mut r = self.run_launch(op, &l, &[&xv, &gv, &bv, &rm, &rv])?;
        let (y, saved) = (r.remove(0), r.remove(0));
        (rm, rv) = (r.remove(0), r.remove(0));
        running_mean.assign(&Array1::from(rm));
        running_var.assign(&Array1::from(rv));
        Ok(BatchNormTrain {
            y: ArrayD::from_shape_vec(IxDyn(x.shape()), y)
                .map_err(|e| Error::shape(op, e.to_string()))?,
            mean: Array1::from(saved[..c].to_vec()),
            inv_std: Array1::from(saved[c..].to_vec()),
        })
    }

    /// Batch normalisation in evaluation mode: `y = γ·(x − running_mean)/√(running_var + eps) + β`.
    ///
    /// # Shapes
    /// `x [N,C]` or `[N,C,H,W]`, the others `[C]`.
    pub fn batch_norm_eval(
        &self,
        x: &ArrayD<f32>,
        gamma: &Array1<f32>,
        beta: &Array1<f32>,
        running_mean: &Array1<f32>,
        running_var: &Array1<f32>,
        eps: f32,
    ) -> Result<ArrayD<f32>> {
        let op = "batch_norm_eval";
        let d = Self::bn_dims(
            op,
            x,
            &[
                ("gamma", gamma.len()),
                ("beta", beta.len()),
                ("running_mean", running_mean.len()),
                ("running_var", running_var.len()),
            ],
        )?;
        self.check_sizes(op, &[("x", x.len())])?;
        let v = [
            flat(x),
            flat(gamma),
            flat(beta),
            flat(running_mean),
            flat(running_var),
        ];
        let l = BatchNorm {
            pass: NormPass::Eval,
            d,
            momentum: 0.0,
            eps,
        };
        let ins: Vec<&[f32]> = v.iter().map(|t| t.as_slice()).collect();
        let y = self.run_launch(op, &l, &ins)?.remove(0);
        ArrayD::from_shape_vec(IxDyn(x.shape()), y).map_err(|e| Error::shape(op, e.to_string()))
    }

    /// Backward of training-mode batch norm from the forward input and the saved batch
    /// statistics: `dβ = Σ dy`, `dγ = Σ dy·x̂`, `dx = (γ/σ)·(dy − mean(dy) − x̂·mean(dy·x̂))`.
    ///
    /// # Shapes
    /// `x`, `dy` `[N,C]` or `[N,C,H,W]`; `gamma`, `mean`, `inv_std` `[C]`.
    pub fn batch_norm_backward(
        &self,
        x: &ArrayD<f32>,
        dy: &ArrayD<f32>,
        gamma: &Array1<f32>,
        mean: &Array1<f32>,
        inv_std: &Array1<f32>,
    ) -> Result<BatchNormGrads> {
        let op = "batch_norm_backward";
        let d = Self::bn_dims(
            op,
            x,
            &[
                ("gamma", gamma.len()),
                ("mean", mean.len()),
                ("inv_std", inv_std.len()),
            ],
        )?;
        if dy.shape() != x.shape() {
            return Err(Error::shape(
                op,
                format!("dy {:?} vs x {:?}", dy.shape(), x.shape()),
            ));
        }
        self.check_sizes(op, &[("x", x.len())])?;
        let (xv, dyv, gv) = (flat(x), flat(dy), flat(gamma));
        let saved: Vec<f32> = mean.iter().chain(inv_std.iter()).copied().collect();
        let l = BatchNorm {
            pass: NormPass::Backward,
            d,
            momentum: 0.0,
            eps: 1e-5,
        };
        let mut r = self.run_launch(op, &l, &[&xv, &dyv, &gv, &saved])?;
        let (dx, dg, db) = (r.remove(0), r.remove(0), r.remove(0));
        Ok(BatchNormGrads {
            dx: ArrayD::from_shape_vec(IxDyn(x.shape()), dx)
                .map_err(|e| Error::shape(op, e.to_string()))?,
            dgamma: Array1::from(dg),
            dbeta: Array1::from(db),
        })
    }

    /// One optimizer step at step number `t` (from 1) on a flat parameter vector.
    /// `state1`/`state2` hold the optimizer state (momentum/first moment, second moment),
    /// zero before the first step, same length as `p`.
    pub fn optimizer_step(
        &self,
        opt: &Optimizer,
        t: u64,
        p: &mut [f32],
        g: &[f32],
        state1: &mut [f32],
        state2: &mut [f32],
    ) -> Result<()> {
        self.optimizer_step_decay(opt, t, p, g, state1, state2, &[])
    }

    /// [`Backend::optimizer_step`] with regularisation per element: the L1 and L2 terms and
    /// AdamW's decoupled decay of `p[i]` are multiplied by `decay[i]` (finite, ≥ 0; 0
    /// exempts the element, as a PyTorch parameter group with `weight_decay=0`). An empty
    /// `decay` regularises everything, as [`Backend::optimizer_step`].
    ///
    /// ```
    /// use wgcnn::{Backend, Optimizer};
    /// # fn main() -> Result<(), wgcnn::Error> {
    /// let (mut p, g) = (vec![1.0f32, 1.0], vec![0.0f32, 0.0]);
    /// let (mut s1, mut s2) = (vec![0.0; 2], vec![0.0; 2]);
    /// let sgd = Optimizer::sgd(0.1).weight_decay(0.5);
    /// Backend::cpu().optimizer_step_decay(&sgd, 1, &mut p, &g, &mut s1, &mut s2, &[1.0, 0.0])?;
    /// assert_eq!(p, vec![0.95, 1.0]); // only the first element decays
    /// # Ok(()) }
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn optimizer_step_decay(
        &self,
        opt: &Optimizer,
        t: u64,
        p: &mut [f32],
        g: &[f32],
        state1: &mut [f32],
        state2: &mut [f32],
        decay: &[f32],
    ) -> Result<()> {
        let op = "optimizer_step";
        opt.validate()?;
        let n = p.len();
        if g.len() != n || state1.len() != n || state2.len() != n {
            return Err(Error::shape(
                op,
                format!(
                    "p {n}, grad {}, state1 {}, state2 {} must have equal lengths",
                    g.len(),
                    state1.len(),
                    state2.len()
                ),
            ));
        }
        if !decay.is_empty() && decay.len() != n {
            return Err(Error::shape(
                op,
                format!("decay has {} values for {n} parameters", decay.len()),
            ));
        }
        if let Some(bad) = decay.iter().find(|d| !d.is_finite() || **d < 0.0) {
            return Err(Error::invalid(
                op,
                format!("decay multipliers must be finite and non-negative, got {bad}"),
            ));
        }
        if t == 0 {
            return Err(Error::invalid(op, "step numbers start at 1"));
        }
        nonempty(op, "p", &[n])?;
        self.check_sizes(op, &[("p", n)])?;
        // (gradient factor, skip flag, skipped steps)
        let mut scale = vec![1.0f32, 0.0, 0.0];
        if opt.clip_grad_norm > 0.0 {
            let clip = GradNormScale {
                len: n,
                max_norm: opt.clip_grad_norm,
            };
            scale = self.run_launch(op, &clip, &[g, &scale])?.remove(0);
        }
        let l = OptimizerStep {
            opt: *opt,
            t,
            len: n,
        };
        let masked = OptimizerStepMasked(l);
        let launch: &dyn Launch = if decay.is_empty() { &l } else { &masked };
        let ins: [&[f32]; 7] = [g, &scale, decay, p, state1, state2, &[0.0; 4]];
        let mut r = self.run_launch(op, launch, &ins)?;
        p.copy_from_slice(&r.remove(0));
        state1.copy_from_slice(&r.remove(0));
        state2.copy_from_slice(&r.remove(0));
        Ok(())
    }
}

// ---- 1-D and 3-D pooling, the softmax gradient, axis permutation ------------------------

use crate::shape::{Pool1dParams, Pool3dParams};
use ndarray::{Array3, Array5};

/// `[N,C,L]` dims of a 3-D array.
fn dims3<T>(a: &Array3<T>) -> [usize; 3] {
    let (n, c, l) = a.dim();
    [n, c, l]
}

/// `[N,C,D,H,W]` dims of a 5-D array.
fn dims5<T>(a: &Array5<T>) -> [usize; 5] {
    let (n, c, d, h, w) = a.dim();
    [n, c, d, h, w]
}

/// The same elements (row-major) under another shape.
fn reshaped<T: Clone, D: ndarray::Dimension, E: ndarray::IntoDimension>(
    op: &str,
    a: &ndarray::Array<T, D>,
    shape: E,
) -> Result<ndarray::Array<T, E::Dim>> {
    ndarray::Array::from_shape_vec(shape, a.iter().cloned().collect())
        .map_err(|e| Error::shape(op, e.to_string()))
}

/// 1-D and 3-D pooling (composed of the 2-D pooling kernels on views), the softmax
/// gradient, and axis permutation (channels-last input).
impl Backend {
    /// 1-D max-pooling (PyTorch `max_pool1d` with `return_indices=True`): runs as 2-D
    /// max-pooling of the `[N, C, 1, L]` view with a `1×k` window; `idx` is the position
    /// `l` of each window's first maximum along L.
    ///
    /// # Shapes
    /// `x [N,C,L]` → `y, idx [N,C,ol]`, `ol = ⌊(L + 2p − k)/s⌋ + 1`.
    pub fn max_pool1d(
        &self,
        x: &Array3<f32>,
        p: Pool1dParams,
    ) -> Result<(Array3<f32>, Array3<u32>)> {
        self.arg_pool1d("max_pool1d", x, p)
    }

    /// 1-D min-pooling: [`Backend::max_pool1d`] with the minimum (padding +∞, the first
    /// minimum's position); its backward is [`Backend::max_pool1d_backward`].
    ///
    /// # Shapes
    /// `x [N,C,L]` → `y, idx [N,C,ol]`.
    pub fn min_pool1d(
        &self,
        x: &Array3<f32>,
        p: Pool1dParams,
    ) -> Result<(Array3<f32>, Array3<u32>)> {
        self.arg_pool1d("min_pool1d", x, p)
    }

    /// Max- or min-pooling (`op`) of the `[N, C, 1, L]` view.
    fn arg_pool1d(
        &self,
        op: &str,
        x: &Array3<f32>,
        p: Pool1dParams,
    ) -> Result<(Array3<f32>, Array3<u32>)> {
        let [n, c, l] = dims3(x);
        let [_, _, ol] = p.out_shape(op, [n, c, l])?;
        let (y, idx) = self.arg_pool2d(
            &format!("{}2d", &op[..op.len() - 2]),
            &reshaped(op, x, (n, c, 1, l))?,
            p.as_2d(),
        )?;
        Ok((
            reshaped(op, &y, (n, c, ol))?,
            reshaped(op, &idx, (n, c, ol))?,
        ))
    }

    /// Backward of [`Backend::max_pool1d`]: `dy` routed to the recorded positions (summed
    /// where windows overlap). `x_dim` is the forward input's shape.
    ///
    /// # Shapes
    /// `dy, idx [N,C,ol]` → `dx [N,C,L]`.
    pub fn max_pool1d_backward(
        &self,
        dy: &Array3<f32>,
        idx: &Array3<u32>,
        x_dim: (usize, usize, usize),
    ) -> Result<Array3<f32>> {
        let op = "max_pool1d_backward";
        let [n, c, ol] = dims3(dy);
        if idx.dim() != dy.dim() {
            return Err(Error::shape(
                op,
                format!("idx has shape {:?} but dy has {:?}", idx.dim(), dy.dim()),
            ));
        }
        let (xn, xc, l) = x_dim;
        let dx = self.max_pool2d_backward(
            &reshaped(op, dy, (n, c, 1, ol))?,
            &reshaped(op, idx, (n, c, 1, ol))?,
            (xn, xc, 1, l),
        )?;
        reshaped(op, &dx, (xn, xc, l))
    }

    /// 1-D average pooling (PyTorch `avg_pool1d`, `count_include_pad=True`): 2-D average
    /// pooling of the `[N, C, 1, L]` view.
    ///
    /// # Shapes
    /// `x [N,C,L]` → `[N,C,ol]`.
    pub fn avg_pool1d(&self, x: &Array3<f32>, p: Pool1dParams) -> Result<Array3<f32>> {
        let op = "avg_pool1d";
        let [n, c, l] = dims3(x);
        let [_, _, ol] = p.out_shape(op, [n, c, l])?;
        let y = self.avg_pool2d(&reshaped(op, x, (n, c, 1, l))?, p.as_2d())?;
        reshaped(op, &y, (n, c, ol))
    }

    /// Backward of [`Backend::avg_pool1d`]: every input receives `dy/k` from each window
    /// that holds it.
    ///
    /// # Shapes
    /// `dy [N,C,ol]` → `dx [N,C,L]` with `x_dim = (N,C,L)`.
    pub fn avg_pool1d_backward(
        &self,
        dy: &Array3<f32>,
        p: Pool1dParams,
        x_dim: (usize, usize, usize),
    ) -> Result<Array3<f32>> {
        let op = "avg_pool1d_backward";
        let (n, c, l) = x_dim;
        let want = p.out_shape(op, [n, c, l])?;
        if dims3(dy) != want {
            return Err(Error::shape(
                op,
                format!(
                    "dy {:?} does not match pooling {p:?} of x {x_dim:?} (expected {want:?})",
                    dy.dim()
                ),
            ));
        }
        let dx = self.avg_pool2d_backward(
            &reshaped(op, dy, (n, c, 1, want[2]))?,
            p.as_2d(),
            (n, c, 1, l),
        )?;
        reshaped(op, &dx, (n, c, l))
    }

    /// 3-D max-pooling (PyTorch `max_pool3d` with `return_indices=True`), separable: 2-D
    /// max-pooling over `(h, w)` of the `[N, C·D, H, W]` view, then over depth of the
    /// `[N, C, D, OH·OW]` view (see [`Pool3dParams`]). `idx` is PyTorch's flat index
    /// `d·H·W + h·W + w` of each window's first maximum in `(d, h, w)` order, composed from
    /// the two stages' indices.
    ///
    /// # Shapes
    /// `x [N,C,D,H,W]` → `y, idx [N,C,od,oh,ow]`.
    pub fn max_pool3d(
        &self,
        x: &Array5<f32>,
        p: Pool3dParams,
    ) -> Result<(Array5<f32>, Array5<u32>)> {
        self.arg_pool3d("max_pool3d", x, p)
    }

    /// 3-D min-pooling: [`Backend::max_pool3d`] with the minimum (padding +∞, the first
    /// minimum in `(d, h, w)` order); its backward is [`Backend::max_pool3d_backward`].
    ///
    /// # Shapes
    /// `x [N,C,D,H,W]` → `y, idx [N,C,od,oh,ow]`.
    pub fn min_pool3d(
        &self,
        x: &Array5<f32>,
        p: Pool3dParams,
    ) -> Result<(Array5<f32>, Array5<u32>)> {
        self.arg_pool3d("min_pool3d", x, p)
    }

    /// Max- or min-pooling (`op`) in two separable 2-D stages, the indices composed.
    fn arg_pool3d(
        &self,
        op: &str,
        x: &Array5<f32>,
        p: Pool3dParams,
    ) -> Result<(Array5<f32>, Array5<u32>)> {
        let op2 = format!("{}2d", &op[..op.len() - 2]);
        let [n, c, d, h, w] = dims5(x);
        let yd = p.out_shape(op, [n, c, d, h, w])?;
        let [_, _, od, oh, ow] = yd;
        let (t, i1) = self.arg_pool2d(&op2, &reshaped(op, x, (n, c * d, h, w))?, p.hw())?;
        let (y, i2) = self.arg_pool2d(&op2, &reshaped(op, &t, (n, c, d, oh * ow))?, p.depth())?;
        // stage 2 picked depth dd = i2 / (oh·ow) for output q; stage 1 the (h, w) there
        let (i1, i2) = (flat_u32(&i1), flat_u32(&i2));
        let ohw = oh * ow;
        let mut idx = Vec::with_capacity(i2.len());
        for (o, &k2) in i2.iter().enumerate() {
            let (plane, q) = (o / (od * ohw), o % ohw);
            let dd = k2 as usize / ohw;
            let hw = i1[(plane * d + dd) * ohw + q];
            idx.push((dd * h * w) as u32 + hw);
        }
        let sh = (n, c, od, oh, ow);
        Ok((
            reshaped(op, &y, sh)?,
            Array5::from_shape_vec(sh, idx).map_err(|e| Error::shape(op, e.to_string()))?,
        ))
    }

    /// Backward of [`Backend::max_pool3d`]: `dy` routed to the flat indices (summed where
    /// windows overlap), as 2-D routing on the `[N, C, 1, D·H·W]` view. Without the
    /// geometry the GPU kernel visits every output of a plane for every input: meant for
    /// tests and small tensors (the executor lowers to the two stages instead).
    ///
    /// # Shapes
    /// `dy, idx [N,C,od,oh,ow]` → `dx [N,C,D,H,W]` with `x_dim = (N,C,D,H,W)`.
    pub fn max_pool3d_backward(
        &self,
        dy: &Array5<f32>,
        idx: &Array5<u32>,
        x_dim: (usize, usize, usize, usize, usize),
    ) -> Result<Array5<f32>> {
        let op = "max_pool3d_backward";
        let [n, c, od, oh, ow] = dims5(dy);
        if idx.dim() != dy.dim() {
            return Err(Error::shape(
                op,
                format!("idx has shape {:?} but dy has {:?}", idx.dim(), dy.dim()),
            ));
        }
        let (xn, xc, d, h, w) = x_dim;
        let ylen = od * oh * ow;
        let dx = self.max_pool2d_backward(
            &reshaped(op, dy, (n, c, 1, ylen))?,
            &reshaped(op, idx, (n, c, 1, ylen))?,
            (xn, xc, 1, d * h * w),
        )?;
        reshaped(op, &dx, x_dim)
    }

    /// 3-D average pooling (PyTorch `avg_pool3d`, `count_include_pad=True`), separable as
    /// [`Backend::max_pool3d`]: the `(h, w)` mean, then the depth mean.
    ///
    /// # Shapes
    /// `x [N,C,D,H,W]` → `[N,C,od,oh,ow]`.
    pub fn avg_pool3d(&self, x: &Array5<f32>, p: Pool3dParams) -> Result<Array5<f32>> {
        let op = "avg_pool3d";
        let [n, c, d, h, w] = dims5(x);
        let [_, _, od, oh, ow] = p.out_shape(op, [n, c, d, h, w])?;
        let t = self.avg_pool2d(&reshaped(op, x, (n, c * d, h, w))?, p.hw())?;
        let y = self.avg_pool2d(&reshaped(op, &t, (n, c, d, oh * ow))?, p.depth())?;
        reshaped(op, &y, (n, c, od, oh, ow))
    }

    /// Backward of [`Backend::avg_pool3d`]: the two stages' backwards in reverse.
    ///
    /// # Shapes
    /// `dy [N,C,od,oh,ow]` → `dx [N,C,D,H,W]` with `x_dim = (N,C,D,H,W)`.
    pub fn avg_pool3d_backward(
        &self,
        dy: &Array5<f32>,
        p: Pool3dParams,
        x_dim: (usize, usize, usize, usize, usize),
    ) -> Result<Array5<f32>> {
        let op = "avg_pool3d_backward";
        let (n, c, d, h, w) = x_dim;
        let want = p.out_shape(op, [n, c, d, h, w])?;
        if dims5(dy) != want {
            return Err(Error::shape(
                op,
                format!(
                    "dy {:?} does not match pooling {p:?} of x {x_dim:?} (expected {want:?})",
                    dy.dim()
                ),
            ));
        }
        let [_, _, od, oh, ow] = want;
        let dt = self.avg_pool2d_backward(
            &reshaped(op, dy, (n, c, od, oh * ow))?,
            p.depth(),
            (n, c, d, oh * ow),
        )?;
        let dx = self.avg_pool2d_backward(
            &reshaped(op, &dt, (n, c * d, oh, ow))?,
            p.hw(),
            (n, c * d, h, w),
        )?;
        reshaped(op, &dx, x_dim)
    }

    /// Gradient of the row-wise [`Backend::softmax`] from its output `y`:
    /// `dx = y ⊙ (dy − Σ_c dy·y)` per row.
    ///
    /// # Shapes
    /// `y [N,K]`, `dy [N,K]` → `dx [N,K]`.
    pub fn softmax_backward(&self, y: &Array2<f32>, dy: &Array2<f32>) -> Result<Array2<f32>> {
        let op = "softmax_backward";
        let (r, c) = y.dim();
        nonempty(op, "y", &[r, c])?;
        if dy.dim() != y.dim() {
            return Err(Error::shape(
                op,
                format!("dy {:?} vs y {:?}", dy.dim(), y.dim()),
            ));
        }
        self.check_sizes(op, &[("y", r * c), ("dy", r * c)])?;
        let (yv, dyv) = (flat(y), flat(dy));
        let l = Softmax {
            backward: true,
            rows: r,
            cols: c,
        };
        let dx = self.run_launch(op, &l, &[&yv, &dyv])?.remove(0);
        arr2([r, c], dx)
    }

    /// `x` with its axes permuted (numpy `x.transpose(perm)`, made contiguous): axis `k` of
    /// the result is axis `perm[k]` of `x`. Rank 1 to 4.
    ///
    /// # Shapes
    /// `x [d0, …]` → `[d_perm[0], …]`.
    pub fn permute(&self, x: &ArrayD<f32>, perm: &[usize]) -> Result<ArrayD<f32>> {
        let op = "permute";
        let r = x.ndim();
        if !(1..=4).contains(&r) {
            return Err(Error::shape(
                op,
                format!("rank {r} tensors are not supported (1 to 4)"),
            ));
        }
        let mut seen = [false; 4];
        if perm.len() != r
            || perm
                .iter()
                .any(|&a| a >= r || std::mem::replace(&mut seen[a], true))
        {
            return Err(Error::invalid(
                op,
                format!(
                    "{perm:?} is not a permutation of the {r} axes of {:?}",
                    x.shape()
                ),
            ));
        }
        nonempty(op, "x", x.shape())?;
        self.check_sizes(op, &[("x", x.len())])?;
        // leading axes of size 1 up to rank 4
        let lead = 4 - r;
        let mut xd = [1usize; 4];
        xd[lead..].copy_from_slice(x.shape());
        let mut p4 = [0, 1, 2, 3];
        for (k, &a) in perm.iter().enumerate() {
            p4[lead + k] = lead + a;
        }
        let xv = flat(x);
        let l = Permute {
            xd,
            perm: p4,
            batch_axis: None,
        };
        let y = self.run_launch(op, &l, &[&xv])?.remove(0);
        let shape: Vec<usize> = perm.iter().map(|&a| x.shape()[a]).collect();
        ArrayD::from_shape_vec(IxDyn(&shape), y).map_err(|e| Error::shape(op, e.to_string()))
    }

    /// Channels-last images to channels-first (NHWC → NCHW), what
    /// [`crate::graph::Graph::channels_last`] does on the device:
    /// `y[n,c,h,w] = x[n,h,w,c]`.
    ///
    /// # Shapes
    /// `x [N,H,W,C]` → `[N,C,H,W]`.
    pub fn channels_last(&self, x: &Array4<f32>) -> Result<Array4<f32>> {
        let y = self.permute(&x.clone().into_dyn(), &[0, 3, 1, 2])?;
        y.into_dimensionality()
            .map_err(|e| Error::shape("channels_last", e.to_string()))
    }

    /// Backward of [`Backend::channels_last`], the inverse permute (NCHW → NHWC):
    /// `dx[n,h,w,c] = dy[n,c,h,w]`.
    ///
    /// # Shapes
    /// `dy [N,C,H,W]` → `dx [N,H,W,C]`.
    pub fn channels_last_backward(&self, dy: &Array4<f32>) -> Result<Array4<f32>> {
        let dx = self.permute(&dy.clone().into_dyn(), &[0, 2, 3, 1])?;
        dx.into_dimensionality()
            .map_err(|e| Error::shape("channels_last_backward", e.to_string()))
    }
}

/// `u32` indices from their bits in `f32` words.
fn bits_u32(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Row-major elements of an index array.
fn flat_u32(a: &Array4<u32>) -> Vec<u32> {
    a.iter().copied().collect()
}

/// Label smoothing must lie in [0, 1] (PyTorch's rule).
pub(crate) fn check_smoothing(op: &str, eps: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::invalid(
            op,
            format!("label smoothing {eps} must lie in [0, 1]"),
        ));
    }
    Ok(())
}
