//! The plan: a graph lowered, for a batch size, to a schedule of kernel steps over
//! tensors, with tensor lifetimes and a memory plan.
//!
//! * **Fusion** — an activation that is the only consumer of a conv/linear output is
//!   fused into that kernel's output (and its derivative into the gradient kernels).
//! * **Autodiff** — the backward schedule is derived from the forward one in reverse
//!   topological order; each op's gradient rule sits next to its forward rule in
//!   `Lowering::forward` / `Lowering::backward`. Gradients of a tensor used twice are
//!   summed with `add` steps.
//! * **Memory** — parameters, gradients and optimizer state live in flat buffers (each
//!   tensor 256-byte aligned, so the optimizer updates all of them in one dispatch and
//!   gradients are written, never zeroed). Activations and their gradients share a pool
//!   of buffers: a tensor reuses a buffer whose previous tenant's lifetime (first write ..
//!   last read) ended before the tensor's starts. A step therefore never reads and writes
//!   the same buffer, which WebGPU forbids within one dispatch.

use crate::cpu::conv2d::ConvDims;
use crate::cpu::matmul::Gemm;
use crate::error::{Error, Result};
use crate::graph::{conv_dims5, Graph, NodeId, Op, ParamId};
use crate::shape::{Activation, ConvParams, Pool2dParams};

/// Alignment (in f32 elements) of every tensor inside a flat buffer: 256 bytes, the
/// largest `min_storage_buffer_offset_alignment` WebGPU allows.
pub const ALIGN: usize = 64;

/// Index of a tensor in [`Plan::tensors`].
pub type TensorId = usize;

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// Slice of the flat parameter buffer at this element offset.
    Param(usize),
    /// Slice of the flat gradient buffer.
    Grad(usize),
    /// One of the pooled activation buffers (index assigned by the memory plan).
    Arena(usize),
    /// The uploaded batch.
    Input,
    /// The uploaded targets (u32 classes or f32 values).
    Targets,
    /// A 4-float metrics block: 0 = training, 1 = evaluation.
    Metrics(usize),
    /// Slice of the flat buffer of non-learnable state (batch norm running statistics),
    /// which the optimizer never touches.
    Buffer(usize),
}

/// A tensor of the plan.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub home: Home,
    /// Elements per sample (activations) or in total (everything else).
    pub per_sample: usize,
    /// Whether the length scales with the batch.
    pub batched: bool,
}

impl Tensor {
    /// Elements at batch size `n`.
    pub fn len(&self, n: usize) -> usize {
        if self.batched {
            self.per_sample * n
        } else {
            self.per_sample
        }
    }
}

/// One kernel invocation of the schedule (tensor ids; shapes for a batch size).
#[derive(Clone, Debug)]
pub enum Step {
    Conv2dForward {
        x: TensorId,
        w: TensorId,
        b: Option<TensorId>,
        y: TensorId,
        d: ConvDims,
        act: (u32, f32),
    },
    Conv2dBackwardInput {
        dy: TensorId,
        w: TensorId,
        y: TensorId,
        dx: TensorId,
        d: ConvDims,
        act: (u32, f32),
    },
    Conv2dBackwardWeight {
        x: TensorId,
        dy: TensorId,
        y: TensorId,
        dw: TensorId,
        db: Option<TensorId>,
        d: ConvDims,
        act: (u32, f32),
    },
    MaxPool2dForward {
        x: TensorId,
        y: TensorId,
        idx: TensorId,
        xd: [usize; 4],
        yd: [usize; 4],
        p: Pool2dParams,
    },
    MaxPool2dBackward {
        dy: TensorId,
        idx: TensorId,
        dx: TensorId,
        xd: [usize; 4],
        yd: [usize; 4],
        p: Pool2dParams,
    },
    /// Its backward is [`Step::MaxPool2dBackward`] (routing by indices).
    MinPool2dForward {
        x: TensorId,
        y: TensorId,
        idx: TensorId,
        xd: [usize; 4],
        yd: [usize; 4],
        p: Pool2dParams,
    },
    AvgPool2dForward {
        x: TensorId,
        y: TensorId,
        xd: [usize; 4],
        yd: [usize; 4],
        p: Pool2dParams,
    },
    AvgPool2dBackward {
        dy: TensorId,
        dx: TensorId,
        xd: [usize; 4],
        yd: [usize; 4],
        p: Pool2dParams,
    },
    /// `rows = N·C` planes of `hw = H·W` elements.
    GlobalAvgPoolForward {
        x: TensorId,
        y: TensorId,
        rows: usize,
        hw: usize,
    },
    GlobalAvgPoolBackward {
        dy: TensorId,
        dx: TensorId,
        rows: usize,
        hw: usize,
    },
    /// `len` elements; the mask hashes (`seed`, the training step, element index).
    DropoutForward {
        x: TensorId,
        y: TensorId,
        len: usize,
        p: f32,
        seed: u32,
    },
    DropoutBackward {
        dy: TensorId,
        dx: TensorId,
        len: usize,
        p: f32,
        seed: u32,
    },
    /// `y = x·scale + offset` (the backward is `dx = dy·scale`: offset 0).
    Rescale {
        x: TensorId,
        y: TensorId,
        len: usize,
        scale: f32,
        offset: f32,
    },
    Gemm {
        a: TensorId,
        b: TensorId,
        bias: Option<TensorId>,
        ya: Option<TensorId>,
        c: TensorId,
        cb: Option<TensorId>,
        g: Gemm,
    },
    ActivationForward {
        x: TensorId,
        y: TensorId,
        act: Activation,
    },
    ActivationBackward {
        x: TensorId,
        dy: TensorId,
        dx: TensorId,
        act: Activation,
    },
    Add {
        a: TensorId,
        b: TensorId,
        c: TensorId,
    },
    CrossEntropy {
        logits: TensorId,
        dlogits: Option<TensorId>,
        metrics: TensorId,
        rows: usize,
        cols: usize,
    },
    /// Batch norm, training mode: `y` from batch statistics, `saved = [mean; inv_std]`
    /// (2·C) for the backward, running statistics `rm`, `rv` updated in place.
    /// `d = [N, C, S]` (S = H·W, or 1).
    BatchNormForwardTrain {
        x: TensorId,
        w: TensorId,
        b: TensorId,
        y: TensorId,
        saved: TensorId,
        rm: TensorId,
        rv: TensorId,
        d: [usize; 3],
        momentum: f32,
        eps: f32,
    },
    /// Batch norm, evaluation mode: `y` from the running statistics.
    BatchNormForwardEval {
        x: TensorId,
        w: TensorId,
        b: TensorId,
        rm: TensorId,
        rv: TensorId,
        y: TensorId,
        d: [usize; 3],
        eps: f32,
    },
    /// Batch norm backward: `dx`, and `dw` (dγ), `db` (dβ) into the gradient buffer.
    BatchNormBackward {
        x: TensorId,
        dy: TensorId,
        w: TensorId,
        saved: TensorId,
        dx: TensorId,
        dw: TensorId,
        db: TensorId,
        d: [usize; 3],
    },
    Mse {
        pred: TensorId,
        dpred: Option<TensorId>,
        metrics: TensorId,
        rows: usize,
        cols: usize,
    },
    /// Row-wise softmax of `x [rows, cols]`.
    SoftmaxForward {
        x: TensorId,
        y: TensorId,
        rows: usize,
        cols: usize,
    },
    /// `dx = y ⊙ (dy − Σ_c dy·y)` per row, from the softmax output `y`.
    SoftmaxBackward {
        y: TensorId,
        dy: TensorId,
        dx: TensorId,
        rows: usize,
        cols: usize,
    },
    /// `y = x` with its axes permuted: `x` has dims `xd`, `y` dims `xd[perm[k]]`, and
    /// `y[i0,i1,i2,i3] = x[j]` where `j[perm[k]] = i_k` (numpy `transpose(perm)`).
    Permute {
        x: TensorId,
        y: TensorId,
        xd: [usize; 4],
        perm: [usize; 4],
    },
}

impl Step {
    /// Tensors read and written by this step.
    pub fn io(&self) -> (Vec<TensorId>, Vec<TensorId>) {
        match self {
            Step::Conv2dForward { x, w, b, y, .. } => {
                let mut r = vec![*x, *w];
                r.extend(b);
                (r, vec![*y])
            }
            Step::Conv2dBackwardInput { dy, w, y, dx, .. } => (vec![*dy, *w, *y], vec![*dx]),
            Step::Conv2dBackwardWeight {
                x, dy, y, dw, db, ..
            } => {
                let mut o = vec![*dw];
                o.extend(db);
                (vec![*x, *dy, *y], o)
            }
            Step::MaxPool2dForward { x, y, idx, .. } | Step::MinPool2dForward { x, y, idx, .. } => {
                (vec![*x], vec![*y, *idx])
            }
            Step::MaxPool2dBackward { dy, idx, dx, .. } => (vec![*dy, *idx], vec![*dx]),
            Step::DropoutForward { x, y, .. } | Step::Rescale { x, y, .. } => (vec![*x], vec![*y]),
            Step::DropoutBackward { dy, dx, .. } => (vec![*dy], vec![*dx]),
            Step::AvgPool2dForward { x, y, .. } | Step::GlobalAvgPoolForward { x, y, .. } => {
                (vec![*x], vec![*y])
            }
            Step::AvgPool2dBackward { dy, dx, .. } | Step::GlobalAvgPoolBackward { dy, dx, .. } => {
                (vec![*dy], vec![*dx])
            }
            Step::Gemm {
                a,
                b,
                bias,
                ya,
                c,
                cb,
                ..
            } => {
                let mut r = vec![*a, *b];
                r.extend(bias);
                r.extend(ya);
                let mut o = vec![*c];
                o.extend(cb);
                (r, o)
            }
            Step::ActivationForward { x, y, .. } => (vec![*x], vec![*y]),
            Step::ActivationBackward { x, dy, dx, .. } => (vec![*x, *dy], vec![*dx]),
            Step::Add { a, b, c } => (vec![*a, *b], vec![*c]),
            Step::CrossEntropy {
                logits,
                dlogits,
                metrics,
                ..
            } => {
                let mut o: Vec<TensorId> = dlogits.iter().copied().collect();
                o.push(*metrics);
                (vec![*logits, *metrics], o)
            }
            Step::BatchNormForwardTrain {
                x,
                w,
                b,
                y,
                saved,
                rm,
                rv,
                ..
            } => (vec![*x, *w, *b, *rm, *rv], vec![*y, *saved, *rm, *rv]),
            Step::BatchNormForwardEval {
                x, w, b, rm, rv, y, ..
            } => (vec![*x, *w, *b, *rm, *rv], vec![*y]),
            Step::BatchNormBackward {
                x,
                dy,
                w,
                saved,
                dx,
                dw,
                db,
                ..
            } => (vec![*x, *dy, *w, *saved], vec![*dx, *dw, *db]),
            Step::Mse {
                pred,
                dpred,
                metrics,
                ..
            } => {
                let mut o: Vec<TensorId> = dpred.iter().copied().collect();
                o.push(*metrics);
                (vec![*pred, *metrics], o)
            }
            Step::SoftmaxForward { x, y, .. } | Step::Permute { x, y, .. } => (vec![*x], vec![*y]),
            Step::SoftmaxBackward { y, dy, dx, .. } => (vec![*y, *dy], vec![*dx]),
        }
    }
}

/// Bytes held by each kind of tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReport {
    pub parameters: u64,
    pub gradients: u64,
    pub optimizer_state: u64,
    pub activations: u64,
    /// Activation bytes without buffer reuse (what the arena saves).
    pub activations_unshared: u64,
    pub inputs: u64,
}

impl MemoryReport {
    pub fn total(&self) -> u64 {
        self.parameters + self.gradients + self.optimizer_state + self.activations + self.inputs
    }
}

/// A graph planned for a maximum batch size.
#[derive(Clone, Debug)]
pub struct Plan {
    pub graph: Graph,
    pub batch: usize,
    pub tensors: Vec<Tensor>,
    /// Parameter tensor of every graph parameter, and its gradient tensor.
    pub param_tensors: Vec<(TensorId, TensorId)>,
    /// Length of the flat parameter (and gradient, and each optimizer state) buffer.
    pub flat_len: usize,
    /// Length in elements (for `batch`) of every pooled activation buffer.
    pub arena: Vec<usize>,
    pub input: TensorId,
    pub targets: TensorId,
    pub output: TensorId,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Per-sample length of the targets (1 class index for cross-entropy).
    pub target_len: usize,
    pub classes: bool,
    /// Number of forward steps at the head of the training schedule.
    pub forward_len: usize,
    pub memory: MemoryReport,
    /// Nodes whose activation was fused into their producer.
    pub fused: Vec<NodeId>,
}

struct Lowering<'g> {
    g: &'g Graph,
    n: usize,
    tensors: Vec<Tensor>,
    steps: Vec<Step>,
    out: Vec<Option<TensorId>>,
    idx: Vec<Option<TensorId>>,
    grads: Vec<Vec<TensorId>>,
    needs_grad: Vec<bool>,
    fused_into: Vec<Option<NodeId>>,
    /// Running mean and variance tensors of every batch norm node.
    bn_t: Vec<Option<(TensorId, TensorId)>>,
    /// Argmax indices of each 2-D stage a 1-D/3-D max-pooling node lowers to.
    pool_idx: Vec<Vec<TensorId>>,
    act_of: Vec<Option<Activation>>,
    param_t: Vec<(TensorId, TensorId)>,
    metrics: [TensorId; 2],
    targets: TensorId,
    train: bool,
}

fn fusable(a: Activation) -> bool {
    match a {
        // f' is recovered from y = f(x), which needs f monotone with f(x) > 0 ⇔ x > 0.
        Activation::LeakyRelu(al) | Activation::Elu(al) => al > 0.0,
        _ => true,
    }
}

fn act_code(a: Option<Activation>) -> (u32, f32) {
    a.map_or((0, 0.0), |a| (a.code(), a.alpha()))
}

impl<'g> Lowering<'g> {
    fn tensor(&mut self, name: String, home: Home, per_sample: usize, batched: bool) -> TensorId {
        self.tensors.push(Tensor {
            name,
            home,
            per_sample,
            batched,
        });
        self.tensors.len() - 1
    }

    fn arena(&mut self, name: String, per_sample: usize) -> TensorId {
        self.tensor(name, Home::Arena(0), per_sample, true)
    }

    fn dims4(&self, node: NodeId) -> [usize; 4] {
        let s = &self.g.node(node).shape;
        [self.n, s[0], s[1], s[2]]
    }

    /// The resolved geometry of a convolution reading node `x` with parameter `w`.
    fn conv_dims(&self, x: NodeId, w: ParamId, p: ConvParams) -> ConvDims {
        let (x5, w5) = conv_dims5(self.n, &self.g.node(x).shape, &self.g.params()[w].shape);
        p.dims("conv", x5, w5)
            .expect("convolution shapes are checked when the graph is built")
    }

    fn out_of(&self, node: NodeId) -> TensorId {
        self.out[node].expect("inputs are lowered before their consumers")
    }

    /// The forward rule of `node`.
    fn forward(&mut self, id: NodeId) {
        let node = self.g.node(id);
        let name = node.name.clone();
        let numel = self.g.numel(id);
        match node.op.clone() {
            Op::Input => {}
            Op::Conv { x, w, b, p, .. } => {
                let y = self.arena(name, numel);
                let d = self.conv_dims(x, w, p);
                self.steps.push(Step::Conv2dForward {
                    x: self.out_of(x),
                    w: self.param_t[w].0,
                    b: b.map(|b| self.param_t[b].0),
                    y,
                    d,
                    act: act_code(self.act_of[id]),
                });
                self.out[id] = Some(y);
            }
            Op::MaxPool2d { x, p } => {
                let y = self.arena(name.clone(), numel);
                let idx = self.arena(format!("{name}.indices"), numel);
                self.steps.push(Step::MaxPool2dForward {
                    x: self.out_of(x),
                    y,
                    idx,
                    xd: self.dims4(x),
                    yd: self.dims4(id),
                    p,
                });
                self.out[id] = Some(y);
                self.idx[id] = Some(idx);
            }
            Op::MinPool2d { x, p } => {
                let y = self.arena(name.clone(), numel);
                let idx = self.arena(format!("{name}.indices"), numel);
                self.steps.push(Step::MinPool2dForward {
                    x: self.out_of(x),
                    y,
                    idx,
                    xd: self.dims4(x),
                    yd: self.dims4(id),
                    p,
                });
                self.out[id] = Some(y);
                self.idx[id] = Some(idx);
            }
            Op::AvgPool2d { x, p } => {
                let y = self.arena(name, numel);
                self.steps.push(Step::AvgPool2dForward {
                    x: self.out_of(x),
                    y,
                    xd: self.dims4(x),
                    yd: self.dims4(id),
                    p,
                });
                self.out[id] = Some(y);
            }
            Op::GlobalAvgPool { x } => {
                let y = self.arena(name, numel);
                let xs = &self.g.node(x).shape;
                self.steps.push(Step::GlobalAvgPoolForward {
                    x: self.out_of(x),
                    y,
                    rows: self.n * xs[0],
                    hw: xs[1] * xs[2],
                });
                self.out[id] = Some(y);
            }
            Op::Linear { x, w, b, .. } => {
                let y = self.arena(name, numel);
                let (inp, outf) = (self.g.numel(x), numel);
                self.steps.push(Step::Gemm {
                    a: self.out_of(x),
                    b: self.param_t[w].0,
                    bias: b.map(|b| self.param_t[b].0),
                    ya: None,
                    c: y,
                    cb: None,
                    g: Gemm::linear_forward(self.n, inp, outf, act_code(self.act_of[id])),
                });
                self.out[id] = Some(y);
            }
            Op::Flatten { x } => self.out[id] = Some(self.out_of(x)),
            Op::Dropout { x, p } => {
                // The tensor exists in both modes so that tensor ids agree between the
                // training and evaluation schedules.
                let y = self.arena(name, numel);
                let len = self.n * numel;
                if self.train {
                    self.steps.push(Step::DropoutForward {
                        x: self.out_of(x),
                        y,
                        len,
                        p,
                        seed: id as u32,
                    });
                    self.out[id] = Some(y);
                } else if id == self.g.output_node().expect("validated") {
                    // the plan's output tensor must hold the result: copy (p = 0 keeps all)
                    self.steps.push(Step::DropoutForward {
                        x: self.out_of(x),
                        y,
                        len,
                        p: 0.0,
                        seed: id as u32,
                    });
                    self.out[id] = Some(y);
                } else {
                    // evaluation: the identity, an alias like Flatten
                    self.out[id] = Some(self.out_of(x));
                }
            }
            Op::Rescaling { x, scale, offset } => {
                let y = self.arena(name, numel);
                self.steps.push(Step::Rescale {
                    x: self.out_of(x),
                    y,
                    len: self.n * numel,
                    scale,
                    offset,
                });
                self.out[id] = Some(y);
            }
            Op::Activation { x, act } => {
                if self.fused_into[id].is_some() {
                    self.out[id] = Some(self.out_of(x));
                } else {
                    let y = self.arena(name, numel);
                    self.steps.push(Step::ActivationForward {
                        x: self.out_of(x),
                        y,
                        act,
                    });
                    self.out[id] = Some(y);
                }
            }
            Op::BatchNorm {
                x,
                w,
                b,
                momentum,
                eps,
            } => {
                let y = self.arena(name.clone(), numel);
                let s = &self.g.node(x).shape;
                let d = [self.n, s[0], s[1..].iter().product()];
                // created in both modes so that tensor ids agree between the schedules
                let saved = self.tensor(format!("{name}.saved"), Home::Arena(0), 2 * d[1], false);
                let (rm, rv) = self.bn_t[id].expect("batch norm buffers");
                let (w, b) = (self.param_t[w].0, self.param_t[b].0);
                let x = self.out_of(x);
                self.steps.push(if self.train {
                    Step::BatchNormForwardTrain {
                        x,
                        w,
                        b,
                        y,
                        saved,
                        rm,
                        rv,
                        d,
                        momentum,
                        eps,
                    }
                } else {
                    Step::BatchNormForwardEval {
                        x,
                        w,
                        b,
                        rm,
                        rv,
                        y,
                        d,
                        eps,
                    }
                });
                self.out[id] = Some(y);
                self.idx[id] = Some(saved);
            }
            Op::Add { a, b } => {
                let c = self.arena(name, numel);
                self.steps.push(Step::Add {
                    a: self.out_of(a),
                    b: self.out_of(b),
                    c,
                });
                self.out[id] = Some(c);
            }
            Op::CrossEntropy { logits } => {
                // A softmax output layer: the loss reads its input logits (stable, and the
                // gradient softmax − onehot goes to them); the softmax still yields the output.
                let logits = match self.g.node(logits).op {
                    Op::Softmax { x } => x,
                    _ => logits,
                };
                let dl = self
                    .train
                    .then(|| self.arena(format!("{name}.grad"), self.g.numel(logits)));
                self.steps.push(Step::CrossEntropy {
                    logits: self.out_of(logits),
                    dlogits: dl,
                    metrics: self.metrics[!self.train as usize],
                    rows: self.n,
                    cols: self.g.numel(logits),
                });
                if let Some(dl) = dl {
                    self.grads[logits].push(dl);
                }
            }
            Op::Mse { pred } => {
                let dp = self
                    .train
                    .then(|| self.arena(format!("{name}.grad"), self.g.numel(pred)));
                self.steps.push(Step::Mse {
                    pred: self.out_of(pred),
                    dpred: dp,
                    metrics: self.metrics[!self.train as usize],
                    rows: self.n,
                    cols: self.g.numel(pred),
                });
                if let Some(dp) = dp {
                    self.grads[pred].push(dp);
                }
            }
            Op::Reshape { x } => self.out[id] = Some(self.out_of(x)),
            Op::MaxPool1d { x, .. }
            | Op::AvgPool1d { x, .. }
            | Op::MaxPool3d { x, .. }
            | Op::AvgPool3d { x, .. } => {
                let max = matches!(node.op, Op::MaxPool1d { .. } | Op::MaxPool3d { .. });
                let stages = self.pool_stages(id);
                let last = stages.len() - 1;
                let mut t = self.out_of(x);
                for (k, (xd, yd, p)) in stages.into_iter().enumerate() {
                    let tname = if k == last {
                        name.clone()
                    } else {
                        format!("{name}.hw")
                    };
                    let (y, idx) = self.pool2d_forward(max, tname, t, xd, yd, p);
                    self.pool_idx[id].extend(idx);
                    t = y;
                }
                self.out[id] = Some(t);
            }
            Op::Softmax { x } => {
                let y = self.arena(name, numel);
                self.steps.push(Step::SoftmaxForward {
                    x: self.out_of(x),
                    y,
                    rows: self.n,
                    cols: numel,
                });
                self.out[id] = Some(y);
            }
            Op::ChannelsLast { x } => {
                let (s, c) = channels_last_dims(&self.g.node(x).shape);
                if s == 1 || c == 1 {
                    // the same element order: a view
                    self.out[id] = Some(self.out_of(x));
                } else {
                    let y = self.arena(name, numel);
                    self.steps.push(Step::Permute {
                        x: self.out_of(x),
                        y,
                        xd: [1, self.n, s, c],
                        perm: [0, 1, 3, 2],
                    });
                    self.out[id] = Some(y);
                }
            }
        }
    }

    /// The 2-D pooling launches a 1-D or 3-D pooling node lowers to, in order, at batch
    /// size `n`: `(x dims, y dims, geometry)` of each stage. 1-D: the `[C, 1, L]` view with a
    /// `1×k` window. 3-D: `(h, w)` on the `[C·D, H, W]` view, then depth on `[C, D, OH·OW]`.
    fn pool_stages(&self, id: NodeId) -> Vec<([usize; 4], [usize; 4], Pool2dParams)> {
        let n = self.n;
        let node = self.g.node(id);
        let ys = &node.shape;
        match node.op {
            Op::MaxPool1d { x, p } | Op::AvgPool1d { x, p } => {
                let xs = &self.g.node(x).shape;
                vec![([n, xs[0], 1, xs[1]], [n, ys[0], 1, ys[1]], p.as_2d())]
            }
            Op::MaxPool3d { x, p } | Op::AvgPool3d { x, p } => {
                let xs = &self.g.node(x).shape;
                let (c, d, ohw) = (xs[0], xs[1], ys[2] * ys[3]);
                vec![
                    ([n, c * d, xs[2], xs[3]], [n, c * d, ys[2], ys[3]], p.hw()),
                    ([n, c, d, ohw], [n, c, ys[1], ohw], p.depth()),
                ]
            }
            _ => Vec::new(),
        }
    }

    /// One 2-D pooling step `x [xd] → name [yd]`: max-pooling (returning its indices) or
    /// average pooling.
    fn pool2d_forward(
        &mut self,
        max: bool,
        name: String,
        x: TensorId,
        xd: [usize; 4],
        yd: [usize; 4],
        p: Pool2dParams,
    ) -> (TensorId, Option<TensorId>) {
        let per = yd[1] * yd[2] * yd[3];
        let y = self.arena(name.clone(), per);
        if max {
            let idx = self.arena(format!("{name}.indices"), per);
            self.steps.push(Step::MaxPool2dForward {
                x,
                y,
                idx,
                xd,
                yd,
                p,
            });
            (y, Some(idx))
        } else {
            self.steps.push(Step::AvgPool2dForward { x, y, xd, yd, p });
            (y, None)
        }
    }

    /// The gradient of [`Lowering::pool2d_forward`]: routing by `idx` (max) or spreading
    /// `dy/(kh·kw)` (average) into a new tensor `name [xd]`.
    fn pool2d_backward(
        &mut self,
        name: String,
        dy: TensorId,
        idx: Option<TensorId>,
        xd: [usize; 4],
        yd: [usize; 4],
        p: Pool2dParams,
    ) -> TensorId {
        let dx = self.arena(name, xd[1] * xd[2] * xd[3]);
        self.steps.push(match idx {
            Some(idx) => Step::MaxPool2dBackward {
                dy,
                idx,
                dx,
                xd,
                yd,
                p,
            },
            None => Step::AvgPool2dBackward { dy, dx, xd, yd, p },
        });
        dx
    }

    /// The summed gradient of `id`'s output, if any gradient reached it.
    fn grad_of(&mut self, id: NodeId) -> Option<TensorId> {
        let parts = std::mem::take(&mut self.grads[id]);
        let mut it = parts.into_iter();
        let mut acc = it.next()?;
        for (k, t) in it.enumerate() {
            let c = self.arena(
                format!("{}.grad_sum{k}", self.g.node(id).name),
                self.g.numel(id),
            );
            self.steps.push(Step::Add { a: acc, b: t, c });
            acc = c;
        }
        Some(acc)
    }

    /// The gradient rule of `node`.
    fn backward(&mut self, id: NodeId) {
        let node = self.g.node(id);
        let name = node.name.clone();
        let op = node.op.clone();
        if let Op::Activation { x, .. } = op {
            if self.fused_into[id].is_some() {
                // The producer applies f' itself: hand the gradient straight to it.
                let moved = std::mem::take(&mut self.grads[id]);
                self.grads[x].extend(moved);
                return;
            }
        }
        let Some(dy) = self.grad_of(id) else { return };
        match op {
            Op::Input | Op::CrossEntropy { .. } | Op::Mse { .. } => {}
            Op::Conv { x, w, b, p, .. } => {
                let y = self.out_of(id);
                let act = act_code(self.act_of[id]);
                let d = self.conv_dims(x, w, p);
                if self.needs_grad[x] {
                    let dx = self.arena(format!("{name}.dx"), self.g.numel(x));
                    self.steps.push(Step::Conv2dBackwardInput {
                        dy,
                        w: self.param_t[w].0,
                        y,
                        dx,
                        d,
                        act,
                    });
                    self.grads[x].push(dx);
                }
                self.steps.push(Step::Conv2dBackwardWeight {
                    x: self.out_of(x),
                    dy,
                    y,
                    dw: self.param_t[w].1,
                    db: b.map(|b| self.param_t[b].1),
                    d,
                    act,
                });
            }
            // min-pooling routes by its recorded indices exactly like max-pooling
            Op::MaxPool2d { x, p } | Op::MinPool2d { x, p } => {
                if self.needs_grad[x] {
                    let dx = self.arena(format!("{name}.dx"), self.g.numel(x));
                    self.steps.push(Step::MaxPool2dBackward {
                        dy,
                        idx: self.idx[id].expect("pool indices"),
                        dx,
                        xd: self.dims4(x),
                        yd: self.dims4(id),
                        p,
                    });
                    self.grads[x].push(dx);
                }
            }
            Op::AvgPool2d { x, p } => {
                if self.needs_grad[x] {
                    let dx = self.arena(format!("{name}.dx"), self.g.numel(x));
                    self.steps.push(Step::AvgPool2dBackward {
                        dy,
                        dx,
                        xd: self.dims4(x),
                        yd: self.dims4(id),
                        p,
                    });
                    self.grads[x].push(dx);
                }
            }
            Op::GlobalAvgPool { x } => {
                if self.needs_grad[x] {
                    let dx = self.arena(format!("{name}.dx"), self.g.numel(x));
                    let xs = &self.g.node(x).shape;
                    self.steps.push(Step::GlobalAvgPoolBackward {
                        dy,
                        dx,
                        rows: self.n * xs[0],
                        hw: xs[1] * xs[2],
                    });
                    self.grads[x].push(dx);
                }
            }
            Op::Linear { x, w, b, .. } => {
                let y = self.out_of(id);
                let act = act_code(self.act_of[id]);
                let (inp, outf) = (self.g.numel(x), self.g.numel(id));
                let ya = (act.0 != 0).then_some(y);
                if self.needs_grad[x] {
                    let dx = self.arena(format!("{name}.dx"), inp);
                    self.steps.push(Step::Gemm {
                        a: dy,
                        b: self.param_t[w].0,
                        bias: None,
                        ya,
                        c: dx,
                        cb: None,
                        g: Gemm::linear_backward_input(self.n, inp, outf, act),
                    });
                    self.grads[x].push(dx);
                }
                let mut g = Gemm::linear_backward_weight(self.n, inp, outf, act);
                g.ones_col = b.is_some();
                self.steps.push(Step::Gemm {
                    a: dy,
                    b: self.out_of(x),
                    bias: None,
                    ya,
                    c: self.param_t[w].1,
                    cb: b.map(|b| self.param_t[b].1),
                    g,
                });
            }
            Op::Flatten { x } => self.grads[x].push(dy),
            Op::Dropout { x, p } => {
                if self.needs_grad[x] {
                    let dx = self.arena(format!("{name}.dx"), self.g.numel(x));
                    self.steps.push(Step::DropoutBackward {
                        dy,
                        dx,
                        len: self.n * self.g.numel(x),
                        p,
                        seed: id as u32,
                    });
                    self.grads[x].push(dx);
                }
            }
            Op::Rescaling { x, scale, .. } => {
                if self.needs_grad[x] {
                    let dx = self.arena(format!("{name}.dx"), self.g.numel(x));
                    self.steps.push(Step::Rescale {
                        x: dy,
                        y: dx,
                        len: self.n * self.g.numel(x),
                        scale,
                        offset: 0.0,
                    });
                    self.grads[x].push(dx);
                }
            }
            Op::Activation { x, act } => {
                if self.needs_grad[x] {
                    let dx = self.arena(format!("{name}.dx"), self.g.numel(x));
                    self.steps.push(Step::ActivationBackward {
                        x: self.out_of(x),
                        dy,
                        dx,
                        act,
                    });
                    self.grads[x].push(dx);
                }
            }
            Op::BatchNorm { x, w, b, .. } => {
                // The batch statistics' dependence on x is part of dx (see norm.wgsl); dx is
                // computed even when x needs no gradient (the kernel writes it regardless).
                let s = &self.g.node(x).shape;
                let d = [self.n, s[0], s[1..].iter().product()];
                let dx = self.arena(format!("{name}.dx"), self.g.numel(x));
                self.steps.push(Step::BatchNormBackward {
                    x: self.out_of(x),
                    dy,
                    w: self.param_t[w].0,
                    saved: self.idx[id].expect("batch norm saved statistics"),
                    dx,
                    dw: self.param_t[w].1,
                    db: self.param_t[b].1,
                    d,
                });
                if self.needs_grad[x] {
                    self.grads[x].push(dx);
                }
            }
            Op::Add { a, b } => {
                for v in [a, b] {
                    if self.needs_grad[v] {
                        self.grads[v].push(dy);
                    }
                }
            }
            Op::Reshape { x } => self.grads[x].push(dy),
            Op::MaxPool1d { x, .. }
            | Op::AvgPool1d { x, .. }
            | Op::MaxPool3d { x, .. }
            | Op::AvgPool3d { x, .. } => {
                if self.needs_grad[x] {
                    // the stages in reverse, each routing (max) or spreading (average)
                    let idx = self.pool_idx[id].clone();
                    let mut g = dy;
                    for (k, (xd, yd, p)) in self.pool_stages(id).into_iter().enumerate().rev() {
                        let gname = if k == 0 {
                            format!("{name}.dx")
                        } else {
                            format!("{name}.hw.dx")
                        };
                        g = self.pool2d_backward(gname, g, idx.get(k).copied(), xd, yd, p);
                    }
                    self.grads[x].push(g);
                }
            }
            Op::Softmax { x } => {
                if self.needs_grad[x] {
                    let dx = self.arena(format!("{name}.dx"), self.g.numel(x));
                    self.steps.push(Step::SoftmaxBackward {
                        y: self.out_of(id),
                        dy,
                        dx,
                        rows: self.n,
                        cols: self.g.numel(x),
                    });
                    self.grads[x].push(dx);
                }
            }
            Op::ChannelsLast { x } => {
                if self.needs_grad[x] {
                    let (s, c) = channels_last_dims(&self.g.node(x).shape);
                    if s == 1 || c == 1 {
                        self.grads[x].push(dy);
                    } else {
                        // the inverse permute: [C, S] back to [S, C] per sample
                        let dx = self.arena(format!("{name}.dx"), self.g.numel(x));
                        self.steps.push(Step::Permute {
                            x: dy,
                            y: dx,
                            xd: [1, self.n, c, s],
                            perm: [0, 1, 3, 2],
                        });
                        self.grads[x].push(dx);
                    }
                }
            }
        }
    }
}

/// `(S, C)` of a channels-last sample `[d1, …, dk, C]`: spatial size `S = d1·…·dk`.
fn channels_last_dims(xs: &[usize]) -> (usize, usize) {
    let c = xs[xs.len() - 1];
    (xs[..xs.len() - 1].iter().product(), c)
}

/// Which schedule to lower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Forward, loss (with gradient), backward.
    Train,
    /// Forward and loss (metrics only).
    Eval,
}

impl Plan {
    /// Plans `graph` for batches of up to `batch` samples.
    pub fn new(graph: &Graph, batch: usize) -> Result<Plan> {
        graph.validate()?;
        if batch == 0 {
            return Err(Error::invalid("plan", "batch size must be at least 1"));
        }
        // Every tensor holds at most (widest node) · batch floats; refuse batches for
        // which that overflows (with alignment and bytes) instead of wrapping.
        let mut widest = Some(1usize);
        for n in graph.nodes() {
            let numel = n.shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
            widest = widest.zip(numel).map(|(w, e)| w.max(e));
        }
        let bytes = widest
            .and_then(|w| w.checked_mul(batch))
            .and_then(|e| e.checked_add(ALIGN))
            .and_then(|e| e.checked_mul(4));
        if bytes.is_none() {
            return Err(Error::TooLarge {
                op: "plan".into(),
                tensor: "activations".into(),
                bytes: u64::MAX,
                limit_name: "addressable memory (usize::MAX)",
                limit: usize::MAX as u64,
            });
        }
        let (tensors, steps, param_tensors, flat_len, io, fused) =
            Self::lower(graph, batch, Mode::Train)?;
        let (input, targets, output) = io;
        let forward_len = steps
            .iter()
            .position(|s| matches!(s, Step::CrossEntropy { .. } | Step::Mse { .. }))
            .map_or(steps.len(), |p| p + 1);
        let mut plan = Plan {
            graph: graph.clone(),
            batch,
            tensors,
            param_tensors,
            flat_len,
            arena: Vec::new(),
            input,
            targets,
            output,
            input_shape: graph
                .node(graph.input_node().expect("validated"))
                .shape
                .clone(),
            target_len: 0,
            classes: false,
            forward_len,
            memory: MemoryReport::default(),
            fused,
        };
        let loss = graph.loss_node().expect("validated");
        plan.classes = matches!(graph.node(loss).op, Op::CrossEntropy { .. });
        plan.target_len = if plan.classes {
            1
        } else {
            graph.numel(graph.output_node().expect("validated"))
        };
        plan.assign_arena(&steps);
        Ok(plan)
    }

    #[allow(clippy::type_complexity)]
    fn lower(
        graph: &Graph,
        n: usize,
        mode: Mode,
    ) -> Result<(
        Vec<Tensor>,
        Vec<Step>,
        Vec<(TensorId, TensorId)>,
        usize,
        (TensorId, TensorId, TensorId),
        Vec<NodeId>,
    )> {
        let nodes = graph.nodes();
        let consumers = graph.consumers();
        let output = graph.output_node().expect("validated");
        // fusion: Activation whose producer is a conv/linear with this as its only consumer
        let mut fused_into = vec![None; nodes.len()];
        let mut act_of = vec![None; nodes.len()];
        let mut fused = Vec::new();
        for (id, node) in nodes.iter().enumerate() {
            if let Op::Activation { x, act } = node.op {
                let prod = &nodes[x].op;
                if matches!(
                    prod,
                    Op::Conv { act: None, .. } | Op::Linear { act: None, .. }
                ) && consumers[x] == 1
                    && x != output
                    && fusable(act)
                {
                    fused_into[id] = Some(x);
                    act_of[x] = Some(act);
                    fused.push(id);
                }
            }
        }
        let mut needs_grad = vec![false; nodes.len()];
        for (id, node) in nodes.iter().enumerate() {
            needs_grad[id] =
                !node.op.params().is_empty() || node.op.inputs().iter().any(|&i| needs_grad[i]);
        }
        let mut params_used = vec![0usize; graph.params().len()];
        for node in nodes {
            for p in node.op.params() {
                params_used[p] += 1;
            }
        }
        if let Some(p) = params_used.iter().position(|&u| u != 1) {
            return Err(Error::shape(
                &graph.params()[p].name,
                "every parameter must be used by exactly one node",
            ));
        }
        let mut lw = Lowering {
            g: graph,
            n,
            tensors: Vec::new(),
            steps: Vec::new(),
            out: vec![None; nodes.len()],
            idx: vec![None; nodes.len()],
            grads: vec![Vec::new(); nodes.len()],
            needs_grad,
            fused_into,
            bn_t: vec![None; nodes.len()],
            pool_idx: vec![Vec::new(); nodes.len()],
            act_of,
            param_t: Vec::new(),
            metrics: [0, 0],
            targets: 0,
            train: mode == Mode::Train,
        };
        // flat parameter layout
        let mut off = 0;
        for p in graph.params() {
            let pt = lw.tensor(p.name.clone(), Home::Param(off), p.len(), false);
            let gt = lw.tensor(format!("{}.grad", p.name), Home::Grad(off), p.len(), false);
            lw.param_t.push((pt, gt));
            off += p.len().next_multiple_of(ALIGN);
        }
        let flat_len = off.max(ALIGN);
        // flat buffer layout (running statistics), two tensors per batch norm node
        let mut boff = 0;
        for (id, node) in nodes.iter().enumerate() {
            if let Op::BatchNorm { x, .. } = node.op {
                let c = graph.node(x).shape[0];
                let rm = lw.tensor(
                    format!("{}.running_mean", node.name),
                    Home::Buffer(boff),
                    c,
                    false,
                );
                boff += c.next_multiple_of(ALIGN);
                let rv = lw.tensor(
                    format!("{}.running_var", node.name),
                    Home::Buffer(boff),
                    c,
                    false,
                );
                boff += c.next_multiple_of(ALIGN);
                lw.bn_t[id] = Some((rm, rv));
            }
        }
        let input_node = graph.input_node().expect("validated");
        let input = lw.tensor("input".into(), Home::Input, graph.numel(input_node), true);
        lw.out[input_node] = Some(input);
        let loss = graph.loss_node().expect("validated");
        let classes = matches!(graph.node(loss).op, Op::CrossEntropy { .. });
        let tlen = if classes { 1 } else { graph.numel(output) };
        lw.targets = lw.tensor("targets".into(), Home::Targets, tlen, true);
        lw.metrics = [
            lw.tensor("metrics.train".into(), Home::Metrics(0), 4, false),
            lw.tensor("metrics.eval".into(), Home::Metrics(1), 4, false),
        ];
        for id in 0..nodes.len() {
            lw.forward(id);
        }
        if lw.train {
            for id in (0..nodes.len()).rev() {
                lw.backward(id);
            }
        }
        let out_t = lw.out[output].expect("output lowered");
        let targets = lw.targets;
        Ok((
            lw.tensors,
            lw.steps,
            lw.param_t,
            flat_len,
            (input, targets, out_t),
            fused,
        ))
    }

    /// The schedule for batch size `n ≤ batch` (tensor ids are the same for every `n`).
    pub fn steps(&self, n: usize, mode: Mode) -> Result<Vec<Step>> {
        if n == 0 || n > self.batch {
            return Err(Error::invalid(
                "plan",
                format!("batch of {n} samples; this plan takes 1..={}", self.batch),
            ));
        }
        let (tensors, steps, ..) = Self::lower(&self.graph, n, mode)?;
        // Eval lowering allocates fewer tensors; ids of the shared prefix agree.
        debug_assert!(tensors
            .iter()
            .zip(&self.tensors)
            .all(|(a, b)| a.name == b.name));
        Ok(steps)
    }

    /// Assigns every activation tensor a pooled buffer by lifetimes, and fills the
    /// memory report.
    fn assign_arena(&mut self, steps: &[Step]) {
        let nt = self.tensors.len();
        let mut first = vec![usize::MAX; nt];
        let mut last = vec![0usize; nt];
        for (i, s) in steps.iter().enumerate() {
            let (r, w) = s.io();
            for t in r.into_iter().chain(w) {
                first[t] = first[t].min(i);
                last[t] = last[t].max(i);
            }
        }
        // the output (logits) stays readable after a step
        last[self.output] = steps.len();
        // In evaluation a dropout is an alias: its consumers read its input instead, so the
        // input must stay live until the dropout output's last forward read (transitively:
        // later dropouts first).
        let mut extended = vec![0usize; nt];
        for s in steps[..self.forward_len.min(steps.len())].iter().rev() {
            if let Step::DropoutForward { x, y, .. } = s {
                let fwd_last = steps[..self.forward_len]
                    .iter()
                    .enumerate()
                    .filter(|(_, st)| st.io().0.contains(y))
                    .map(|(i, _)| i)
                    .max()
                    .unwrap_or(0);
                let fwd_last = if *y == self.output {
                    steps.len()
                } else {
                    fwd_last.max(extended[*y])
                };
                extended[*x] = extended[*x].max(fwd_last);
                last[*x] = last[*x].max(fwd_last);
            }
        }
        let mut order: Vec<TensorId> = (0..nt)
            .filter(|&t| matches!(self.tensors[t].home, Home::Arena(_)) && first[t] != usize::MAX)
            .collect();
        order.sort_by_key(|&t| (first[t], t));
        // pool: (capacity, last use of the current tenant)
        let mut pool: Vec<(usize, usize)> = Vec::new();
        let mut unshared = 0;
        for t in order {
            let len = self.tensors[t].len(self.batch).next_multiple_of(ALIGN);
            unshared += len;
            let free = |b: &(usize, usize)| b.1 < first[t];
            // best fit among free buffers; else grow the largest free one; else a new one
            let fit = (0..pool.len())
                .filter(|&b| free(&pool[b]) && pool[b].0 >= len)
                .min_by_key(|&b| pool[b].0)
                .or_else(|| {
                    (0..pool.len())
                        .filter(|&b| free(&pool[b]))
                        .max_by_key(|&b| pool[b].0)
                });
            let b = match fit {
                Some(b) => b,
                None => {
                    pool.push((0, 0));
                    pool.len() - 1
                }
            };
            pool[b] = (pool[b].0.max(len), last[t]);
            self.tensors[t].home = Home::Arena(b);
        }
        self.arena = pool.iter().map(|b| b.0).collect();
        let b = |e: usize| (e * 4) as u64;
        self.memory = MemoryReport {
            parameters: b(self.flat_len),
            gradients: b(self.flat_len),
            optimizer_state: 0,
            activations: b(self.arena.iter().sum()),
            activations_unshared: b(unshared),
            inputs: b(self.tensors[self.input].len(self.batch)
                + self.tensors[self.targets].len(self.batch)
                + 8),
        };
    }

    /// Length of the flat buffer of non-learnable state (at least [`ALIGN`]).
    pub fn buffers_len(&self) -> usize {
        self.tensors
            .iter()
            .filter_map(|t| match t.home {
                Home::Buffer(o) => Some(o + t.per_sample.next_multiple_of(ALIGN)),
                _ => None,
            })
            .max()
            .unwrap_or(0)
            .max(ALIGN)
    }

    /// The non-learnable state tensors (running statistics): `(tensor, initial value)`,
    /// in the order of [`Graph::buffers`].
    pub fn buffer_tensors(&self) -> Vec<(TensorId, f32)> {
        let inits = self.graph.buffers();
        let ids =
            (0..self.tensors.len()).filter(|&t| matches!(self.tensors[t].home, Home::Buffer(_)));
        ids.zip(inits).map(|(t, (_, _, v))| (t, v)).collect()
    }

    /// Shapes of every parameter, by name.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.graph
            .params()
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect()
    }
}
