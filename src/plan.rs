//! The plan: a graph lowered once, for a maximum batch size, to its training and
//! evaluation schedules of kernel launches over tensors, with tensor lifetimes and a memory
//! plan.
//!
//! * **Lowering** — `Lowering` is a driver: each op's rule in [`crate::ops`] (its forward
//!   rule with its gradient rule beside it) emits the steps. The evaluation and training
//!   schedules come from one driver, so they share their tensors by construction; a smaller
//!   batch reuses them with every launch resized ([`Plan::steps`]), nothing is re-lowered.
//! * **Fusion** — an activation that is the only consumer of a conv/linear output is
//!   fused into that kernel's output (and its derivative into the gradient kernels).
//! * **Autodiff** — the backward schedule is derived from the forward one in reverse
//!   topological order; gradients of a tensor used twice are summed with `add` steps.
//! * **Split reductions** — with a [`Split`] for an adapter ([`Plan::with_split`]; the GPU
//!   executor's default), a weight gradient too small to occupy the device is computed as
//!   row partitions into a pooled scratch tensor, then summed in partition order
//!   ([`crate::ops::conv::ConvWeightParts`]); the partition count is a function of the shape
//!   and the adapter class, so the plan and its results are the same on every run.
//! * **Memory** — parameters, gradients and optimizer state live in flat buffers (each
//!   tensor 256-byte aligned, so the optimizer updates all of them in one dispatch and
//!   gradients are written, never zeroed). Activations and their gradients share a pool
//!   of buffers: a tensor reuses a buffer whose previous tenant's lifetime (first write ..
//!   last read) ended before the tensor's starts. A step therefore never reads and writes
//!   the same buffer, which WebGPU forbids within one dispatch.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::tiles::Tiles;
use crate::gpu::GpuContext;
use crate::graph::{Graph, NodeId, Op, ParamId};
use crate::ops::elementwise::Ew;
use crate::ops::precision::{CastF16, HalfInputs, LossScale};
use crate::ops::{rule, Launch};
use crate::shape::Activation;

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
    /// The training step counter (one `u32`) the dropout masks hash, written by the
    /// executor with each batch.
    Counter,
    /// The loss scaler's state `[4]` = (S, good steps, skipped steps, 0) of a
    /// [`Precision::F16Mixed`] plan.
    Scaler,
}

/// The arithmetic of a plan's conv and linear layers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// Mixed precision: conv and linear layers multiply f16 copies of their inputs, weights
    /// and output gradients (products exact in f32, sums in f32); their weight gradients read
    /// the f16 copies of their inputs (the f32 tensors stay alive where other ops' gradients
    /// read them, so activation memory grows by the copies). Master weights, every
    /// other op, the loss and the optimizer stay f32, and the loss is scaled dynamically
    /// ([`GradScaler`]) so small gradients survive the cast. On a GPU it needs
    /// `Features::SHADER_F16` ([`crate::Error::MissingFeature`] elsewhere, before any GPU
    /// work); the CPU executor runs the same arithmetic with its twins.
    F16Mixed(GradScaler),
}

impl Precision {
    /// [`Precision::F16Mixed`] with PyTorch's default scaler.
    pub fn f16_mixed() -> Self {
        Precision::F16Mixed(GradScaler::default())
    }

    /// The loss scaler of a mixed-precision plan.
    pub fn scaler(&self) -> Option<GradScaler> {
        match self {
            Precision::F32 => None,
            Precision::F16Mixed(s) => Some(*s),
        }
    }
}

/// Dynamic loss scaling, as PyTorch's `torch.cuda.amp.GradScaler`: the loss gradient is
/// multiplied by `S` (starting at `init_scale`) before the backward pass and the weight
/// gradients divided by it before the update. A step whose gradients hold an ∞ or NaN is
/// skipped (parameters and optimizer state untouched) and `S` is multiplied by
/// `backoff_factor`; after `growth_interval` finite steps in a row `S` is multiplied by
/// `growth_factor`. A skipped step does not count in Adam's bias corrections (PyTorch skips
/// `optimizer.step()`). The whole rule runs on the device: no readback per step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradScaler {
    pub init_scale: f32,
    pub growth_factor: f32,
    pub backoff_factor: f32,
    pub growth_interval: u32,
}

impl Default for GradScaler {
    /// PyTorch's defaults: 2¹⁶, ×2 every 2,000 good steps, ×0.5 on overflow.
    fn default() -> Self {
        GradScaler {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl GradScaler {
    /// A typed error for a scale or factor that cannot work (checked before any GPU work).
    pub fn validate(&self) -> Result<()> {
        let bad =
            |what: &str, why: &str| Err(Error::invalid("GradScaler", format!("{what} {why}")));
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return bad("init_scale", "must be finite and positive");
        }
        if !(self.growth_factor.is_finite() && self.growth_factor > 1.0) {
            return bad("growth_factor", "must be finite and above 1");
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return bad("backoff_factor", "must be between 0 and 1");
        }
        if self.growth_interval == 0 {
            return bad("growth_interval", "must be at least 1");
        }
        Ok(())
    }
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

/// One kernel launch of a schedule: the launch (which owns everything about the kernel, see
/// [`crate::ops`]) and the tensor bound to each of its bindings.
#[derive(Clone, Debug)]
pub struct Step {
    /// The graph node whose rule emitted it.
    pub node: NodeId,
    pub launch: Arc<dyn Launch>,
    /// The tensor of each binding of `launch`, in its order; `None` exactly for the unused
    /// optional bindings (length 0).
    pub args: Vec<Option<TensorId>>,
    /// Whether it computes the loss (prediction skips it).
    pub loss: bool,
}

impl Step {
    /// The kernel it runs (e.g. `conv_forward`).
    pub fn kernel(&self) -> &'static str {
        self.launch.kernel()
    }

    /// The concrete launch, if it is a `T` (e.g. [`crate::ops::pool::Pool2d`]).
    pub fn launch_as<T: Launch>(&self) -> Option<&T> {
        self.launch.as_any().downcast_ref::<T>()
    }

    /// Tensors read and written by this step, from the launch's binding accesses.
    pub fn io(&self) -> (Vec<TensorId>, Vec<TensorId>) {
        let (mut r, mut w) = (Vec::new(), Vec::new());
        for (b, t) in self.launch.bindings().iter().zip(&self.args) {
            if let Some(t) = *t {
                if b.access.reads() {
                    r.push(t);
                }
                if b.access.writes() {
                    w.push(t);
                }
            }
        }
        (r, w)
    }

    /// This step for a batch of `n` samples (same tensors).
    pub fn at_batch(&self, n: usize) -> Step {
        Step {
            launch: self.launch.at_batch(n),
            ..self.clone()
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
    /// The arithmetic of the conv and linear layers.
    pub precision: Precision,
    /// The loss scaler's state tensor (`Home::Scaler`) of a mixed-precision plan.
    pub scaler: Option<TensorId>,
    /// Length of the flat parameter (and gradient, and each optimizer state) buffer.
    pub flat_len: usize,
    /// Length in elements (for `batch`) of every pooled activation buffer.
    pub arena: Vec<usize>,
    pub input: TensorId,
    pub targets: TensorId,
    pub output: TensorId,
    /// The training step counter (one `u32`) the dropout masks hash.
    pub counter: TensorId,
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
    /// The training schedule (forward, loss, backward) at `batch`, lowered once.
    pub train_steps: Vec<Step>,
    /// The evaluation schedule (forward and loss) at `batch`, over the same tensors.
    pub eval_steps: Vec<Step>,
    /// `(x, y)`: in evaluation tensor `y` is `x` (dropout is the identity there).
    eval_aliases: Vec<(TensorId, TensorId)>,
    /// The tensor holding each node's output in the evaluation schedule (`None` for the
    /// loss), for reading intermediate activations.
    pub node_outputs: Vec<Option<TensorId>>,
}

/// Whether a plan splits long weight-gradient reductions into row partitions, and for which
/// adapter class (whose register tiles and parallelism decide how many partitions).
#[derive(Clone, Copy, Debug, Default)]
pub struct Split(Option<Tiles>);

impl Split {
    /// No split: every weight gradient is one launch (the CPU executor's plans).
    pub fn off() -> Self {
        Split(None)
    }

    /// Split as suits `ctx`'s adapter; `WGCNN_SPLIT=0` in the environment turns it off.
    pub fn for_device(ctx: &GpuContext) -> Self {
        if std::env::var("WGCNN_SPLIT").is_ok_and(|v| v == "0") {
            return Split::off();
        }
        Split(Some(ctx.tiles()))
    }

    /// The same adapter's split, aiming at `groups` workgroups per weight gradient instead
    /// of the adapter class's default (a layer whose unsplit launch has fewer is split):
    /// for benchmarks and tests of the split kernels on any adapter. No effect when off.
    pub fn aiming_at(self, groups: u64) -> Self {
        Split(self.0.map(|t| Tiles {
            split_groups: groups,
            ..t
        }))
    }

    /// Whether splitting is on.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn tiles(&self) -> Option<Tiles> {
        self.0
    }
}

/// The lowering driver: walks the graph and lets each op's [`Rule`] emit its steps, in
/// topological order for the forward pass and in reverse for the gradients (summing the
/// gradients of a tensor used twice). Tensors are interned by name, so the evaluation and
/// training schedules lowered by one `Lowering` share them by construction.
pub(crate) struct Lowering<'g> {
    pub g: &'g Graph,
    /// The batch size.
    pub n: usize,
    /// Lowering the training schedule (else evaluation).
    pub train: bool,
    /// Whether weight gradients are split into partitions.
    pub split: Split,
    /// The arithmetic of conv and linear layers.
    pub precision: Precision,
    /// The f16 copy of each tensor cast so far in the schedule being lowered.
    halves: HashMap<TensorId, TensorId>,
    /// The loss scaler's state (mixed precision).
    scaler: Option<TensorId>,
    tensors: Vec<Tensor>,
    by_name: HashMap<String, TensorId>,
    steps: Vec<Step>,
    out: Vec<Option<TensorId>>,
    kept: Vec<Vec<TensorId>>,
    grads: Vec<Vec<TensorId>>,
    needs_grad: Vec<bool>,
    fused_into: Vec<Option<NodeId>>,
    act_of: Vec<Option<Activation>>,
    param_t: Vec<(TensorId, TensorId)>,
    stats: Vec<Option<(TensorId, TensorId)>>,
    metrics: [TensorId; 2],
    targets: TensorId,
    counter: TensorId,
    aliases: Vec<(TensorId, TensorId)>,
}

/// Whether activation `a` can be fused into its producer: the fused gradient kernels
/// recover f' from y = f(x), which needs f monotone with f(x) > 0 ⇔ x > 0.
fn fusable(a: Activation) -> bool {
    match a {
        Activation::LeakyRelu(al) | Activation::Elu(al) => al > 0.0,
        _ => true,
    }
}

/// (code, α) of an optional activation, `(0, 0.0)` for none.
pub(crate) fn act_code(a: Option<Activation>) -> (u32, f32) {
    a.map_or((0, 0.0), |a| (a.code(), a.alpha()))
}

impl<'g> Lowering<'g> {
    fn tensor(&mut self, name: String, home: Home, per_sample: usize, batched: bool) -> TensorId {
        if let Some(&t) = self.by_name.get(&name) {
            debug_assert_eq!(self.tensors[t].per_sample, per_sample, "tensor {name}");
            return t;
        }
        self.tensors.push(Tensor {
            name: name.clone(),
            home,
            per_sample,
            batched,
        });
        self.by_name.insert(name, self.tensors.len() - 1);
        self.tensors.len() - 1
    }

    /// The activation tensor `name` of `per_sample` elements per sample (pooled).
    pub fn arena(&mut self, name: String, per_sample: usize) -> TensorId {
        self.tensor(name, Home::Arena(0), per_sample, true)
    }

    /// A pooled tensor of `len` elements whatever the batch (batch statistics).
    pub fn fixed(&mut self, name: String, len: usize) -> TensorId {
        self.tensor(name, Home::Arena(0), len, false)
    }

    /// Appends a step of node `id`.
    pub fn emit(&mut self, id: NodeId, launch: impl Launch, args: Vec<Option<TensorId>>) {
        self.push_step(id, launch, args, false);
    }

    /// Appends a conv or linear step of node `id` whose inputs at binding positions `half`
    /// are multiplied: in a mixed-precision plan those inputs are replaced by their f16
    /// copies ([`Lowering::half`]) and the launch reads them as f16 ([`HalfInputs`]);
    /// otherwise it is [`Lowering::emit`].
    pub fn emit_mixed(
        &mut self,
        id: NodeId,
        launch: impl Launch,
        mut args: Vec<Option<TensorId>>,
        half: &[usize],
    ) {
        if self.precision == Precision::F32 {
            return self.emit(id, launch, args);
        }
        for &i in half {
            args[i] = args[i].map(|t| self.half(id, t));
        }
        let l = HalfInputs {
            inner: Arc::new(launch),
            half: half.to_vec(),
        };
        self.emit(id, l, args);
    }

    /// The f16 copy `<name>.f16` of tensor `t` (two values per word), cast by a step of node
    /// `id` the first time the schedule being lowered asks for it.
    pub fn half(&mut self, id: NodeId, t: TensorId) -> TensorId {
        if let Some(&h) = self.halves.get(&t) {
            return h;
        }
        let ts = self.tensors[t].clone();
        let words = ts.per_sample.div_ceil(2);
        let h = self.tensor(
            format!("{}.f16", ts.name),
            Home::Arena(0),
            words,
            ts.batched,
        );
        let cast = CastF16 {
            n: if ts.batched { self.n } else { 1 },
            per: ts.per_sample,
            batched: ts.batched,
        };
        self.emit(id, cast, vec![Some(t), Some(h)]);
        self.halves.insert(t, h);
        h
    }

    /// Appends the loss step of node `id`.
    pub fn emit_loss(&mut self, id: NodeId, launch: impl Launch, args: Vec<Option<TensorId>>) {
        self.push_step(id, launch, args, true);
    }

    fn push_step(&mut self, id: NodeId, l: impl Launch, args: Vec<Option<TensorId>>, loss: bool) {
        debug_assert!(
            l.bindings().len() == args.len()
                && l.bindings()
                    .iter()
                    .zip(&args)
                    .all(|(b, a)| (b.len == 0) == a.is_none()),
            "{}: arguments {args:?} do not match its bindings",
            l.kernel()
        );
        self.steps.push(Step {
            node: id,
            launch: Arc::new(l),
            args,
            loss,
        });
    }

    /// The output tensor of node `x` (lowered before its consumers).
    pub fn out_of(&self, x: NodeId) -> TensorId {
        self.out[x].expect("inputs are lowered before their consumers")
    }

    pub fn set_out(&mut self, id: NodeId, t: TensorId) {
        self.out[id] = Some(t);
    }

    /// Whether `id` is the model's output (the loss's input).
    pub fn is_output(&self, id: NodeId) -> bool {
        self.g.output_node() == Some(id)
    }

    /// The tensor of parameter `p`.
    pub fn param(&self, p: ParamId) -> TensorId {
        self.param_t[p].0
    }

    /// The gradient tensor of parameter `p`.
    pub fn grad(&self, p: ParamId) -> TensorId {
        self.param_t[p].1
    }

    /// Whether a gradient must flow into node `x` (it has parameters upstream).
    pub fn needs_grad(&self, x: NodeId) -> bool {
        self.needs_grad[x]
    }

    /// Adds `t` to the gradient parts of node `x`'s output.
    pub fn push_grad(&mut self, x: NodeId, t: TensorId) {
        self.grads[x].push(t);
    }

    /// The activation fused into node `id`'s output kernel, if any.
    pub fn fused_act(&self, id: NodeId) -> Option<Activation> {
        self.act_of[id]
    }

    /// The pre-activation tensor `<name>.pre` of producer `id` when its fused activation
    /// keeps its input (the forward kernel writes it, the gradient kernels read it).
    pub fn pre_activation(&mut self, id: NodeId) -> Option<TensorId> {
        let keeps = self.act_of[id].is_some_and(|a| a.keeps_input());
        let name = format!("{}.pre", self.g.node(id).name);
        keeps.then(|| self.arena(name, self.g.numel(id)))
    }

    /// What the gradient kernels of producer `id` derive its fused activation's derivative
    /// from: its output, or its pre-activation (see [`Lowering::pre_activation`]); `None`
    /// without a fused activation.
    pub fn fused_grad_source(&mut self, id: NodeId) -> Option<TensorId> {
        self.act_of[id]?;
        self.pre_activation(id).or(self.out[id])
    }

    /// Whether activation node `id` was fused into its producer.
    pub fn is_fused(&self, id: NodeId) -> bool {
        self.fused_into[id].is_some()
    }

    /// Keeps tensors of node `id`'s forward pass for its gradient rule (indices, statistics).
    pub fn keep(&mut self, id: NodeId, t: Vec<TensorId>) {
        self.kept[id] = t;
    }

    pub fn kept(&self, id: NodeId) -> Vec<TensorId> {
        self.kept[id].clone()
    }

    /// The running mean and variance of batch norm node `id`.
    pub fn running_stats(&self, id: NodeId) -> (TensorId, TensorId) {
        self.stats[id].expect("batch norm node")
    }

    /// The metrics block of the schedule being lowered.
    pub fn metrics(&self) -> TensorId {
        self.metrics[!self.train as usize]
    }

    /// The uploaded targets.
    pub fn targets(&self) -> TensorId {
        self.targets
    }

    /// The training step counter.
    pub fn counter(&self) -> TensorId {
        self.counter
    }

    /// In evaluation, tensor `y` is tensor `x` (keeps `x` alive for `y`'s readers).
    pub fn alias(&mut self, x: TensorId, y: TensorId) {
        self.aliases.push((x, y));
    }

    /// The summed gradient of `id`'s output, if any gradient reached it.
    fn grad_of(&mut self, id: NodeId) -> Option<TensorId> {
        let parts = std::mem::take(&mut self.grads[id]);
        let mut it = parts.into_iter();
        let mut acc = it.next()?;
        let per = self.g.numel(id);
        for (k, t) in it.enumerate() {
            let c = self.arena(format!("{}.grad_sum{k}", self.g.node(id).name), per);
            let l = crate::ops::elementwise::Elementwise::new(Ew::Add, self.n, per);
            self.emit(id, l, vec![Some(acc), Some(t), Some(c)]);
            acc = c;
        }
        Some(acc)
    }

    /// One schedule: the forward rules in order, then (training) the gradient rules in
    /// reverse.
    fn schedule(&mut self, train: bool) -> Vec<Step> {
        let nodes = self.g.nodes().len();
        self.train = train;
        self.out = vec![None; nodes];
        self.kept = vec![Vec::new(); nodes];
        self.grads = vec![Vec::new(); nodes];
        self.halves.clear();
        let input = self.g.input_node().expect("validated");
        self.out[input] = self.by_name.get("input").copied();
        for id in 0..nodes {
            rule(&self.g.node(id).op).forward(self, id);
        }
        if let (true, Some(state)) = (train, self.scaler) {
            // mixed precision: the loss gradient times the loss scale
            let (out, loss) = (self.g.output_node(), self.g.loss_node());
            let (out, loss) = (out.expect("validated"), loss.expect("validated"));
            for t in self.grads[out].clone() {
                let l = LossScale {
                    n: self.n,
                    per: self.g.numel(out),
                };
                self.emit(loss, l, vec![Some(state), Some(t)]);
            }
        }
        if train {
            for id in (0..nodes).rev() {
                if let Some(dy) = self.grad_of(id) {
                    rule(&self.g.node(id).op).backward(self, id, dy);
                }
            }
        }
        std::mem::take(&mut self.steps)
    }
}

impl<'g> Lowering<'g> {
    /// The driver for `graph` at batch `n`: fusion decisions, which nodes need gradients, and
    /// the tensors that exist in every schedule (parameters, gradients, running statistics,
    /// input, targets, metrics, step counter).
    fn new(graph: &'g Graph, n: usize, split: Split, precision: Precision) -> Result<Self> {
        let nodes = graph.nodes();
        let mut needs_grad = vec![false; nodes.len()];
        for (id, node) in nodes.iter().enumerate() {
            needs_grad[id] =
                !node.op.params().is_empty() || node.op.inputs().iter().any(|&i| needs_grad[i]);
        }
        let mut params_used = vec![0usize; graph.params().len()];
        for p in nodes.iter().flat_map(|n| n.op.params()) {
            params_used[p] += 1;
        }
        if let Some(p) = params_used.iter().position(|&u| u != 1) {
            return Err(Error::shape(
                &graph.params()[p].name,
                "every parameter must be used by exactly one node",
            ));
        }
        let (fused_into, act_of) = fusion(graph);
        let mut lw = Lowering {
            g: graph,
            n,
            train: false,
            split,
            precision,
            halves: HashMap::new(),
            scaler: None,
            tensors: Vec::new(),
            by_name: HashMap::new(),
            steps: Vec::new(),
            out: Vec::new(),
            kept: Vec::new(),
            grads: Vec::new(),
            needs_grad,
            fused_into,
            act_of,
            param_t: Vec::new(),
            stats: vec![None; nodes.len()],
            metrics: [0, 0],
            targets: 0,
            counter: 0,
            aliases: Vec::new(),
        };
        lw.resident_tensors();
        Ok(lw)
    }

    /// Parameters and gradients (flat, aligned), running statistics, input, targets,
    /// metrics and the step counter.
    fn resident_tensors(&mut self) {
        let g = self.g;
        let mut off = 0;
        for p in g.params() {
            let pt = self.tensor(p.name.clone(), Home::Param(off), p.len(), false);
            let gt = self.tensor(format!("{}.grad", p.name), Home::Grad(off), p.len(), false);
            self.param_t.push((pt, gt));
            off += p.len().next_multiple_of(ALIGN);
        }
        let mut boff = 0;
        for (id, node) in g.nodes().iter().enumerate() {
            if let Op::BatchNorm { x, .. } = node.op {
                let c = g.node(x).shape[0];
                let mut stat = |lw: &mut Self, what: &str| {
                    let t = lw.tensor(
                        format!("{}.{what}", node.name),
                        Home::Buffer(boff),
                        c,
                        false,
                    );
                    boff += c.next_multiple_of(ALIGN);
                    t
                };
                let rm = stat(self, "running_mean");
                let rv = stat(self, "running_var");
                self.stats[id] = Some((rm, rv));
            }
        }
        let input = g.input_node().expect("validated");
        self.tensor("input".into(), Home::Input, g.numel(input), true);
        let output = g.output_node().expect("validated");
        let classes = matches!(
            g.node(g.loss_node().expect("validated")).op,
            Op::CrossEntropy { .. }
        );
        let tlen = if classes { 1 } else { g.numel(output) };
        self.targets = self.tensor("targets".into(), Home::Targets, tlen, true);
        self.metrics = [
            self.tensor("metrics.train".into(), Home::Metrics(0), 4, false),
            self.tensor("metrics.eval".into(), Home::Metrics(1), 4, false),
        ];
        self.counter = self.tensor("step".into(), Home::Counter, 1, false);
        if self.precision.scaler().is_some() {
            self.scaler = Some(self.tensor("loss_scaler".into(), Home::Scaler, 4, false));
        }
    }

    /// Length of the flat parameter buffer (at least [`ALIGN`]).
    fn flat_len(&self) -> usize {
        let end = self
            .g
            .params()
            .iter()
            .map(|p| p.len().next_multiple_of(ALIGN));
        end.sum::<usize>().max(ALIGN)
    }

    /// The activation nodes fused into their producers.
    fn fused(&self) -> Vec<NodeId> {
        (0..self.fused_into.len())
            .filter(|&i| self.fused_into[i].is_some())
            .collect()
    }
}

/// Fusion: an activation whose producer is a conv or linear layer with it as its only
/// consumer (and not the model's output) is computed by the producer's kernel. Returns, per
/// node, the producer an activation was fused into and the activation a producer applies.
#[allow(clippy::type_complexity)]
fn fusion(graph: &Graph) -> (Vec<Option<NodeId>>, Vec<Option<Activation>>) {
    let nodes = graph.nodes();
    let consumers = graph.consumers();
    let output = graph.output_node().expect("validated");
    let mut fused_into = vec![None; nodes.len()];
    let mut act_of = vec![None; nodes.len()];
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
            }
        }
    }
    (fused_into, act_of)
}

/// Every tensor holds at most (widest node) · batch floats: refuses batches for which that
/// overflows (with alignment and bytes) instead of wrapping.
fn check_addressable(graph: &Graph, batch: usize) -> Result<()> {
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
    Ok(())
}

/// Which schedule to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Forward, loss (with gradient), backward.
    Train,
    /// Forward and loss (metrics only).
    Eval,
}

impl Plan {
    /// Plans `graph` for batches of up to `batch` samples: lowers its training and
    /// evaluation schedules once and assigns every tensor its memory.
    pub fn new(graph: &Graph, batch: usize) -> Result<Plan> {
        Self::with_split(graph, batch, Split::off())
    }

    /// As [`Plan::new`], splitting weight-gradient reductions as `split` says.
    pub fn with_split(graph: &Graph, batch: usize, split: Split) -> Result<Plan> {
        Self::with_precision(graph, batch, split, Precision::F32)
    }

    /// As [`Plan::with_split`], in `precision` (see [`Precision::F16Mixed`] for what a
    /// mixed-precision plan adds).
    pub fn with_precision(
        graph: &Graph,
        batch: usize,
        split: Split,
        precision: Precision,
    ) -> Result<Plan> {
        graph.validate()?;
        if batch == 0 {
            return Err(Error::invalid("plan", "batch size must be at least 1"));
        }
        if let Some(s) = precision.scaler() {
            s.validate()?;
        }
        check_addressable(graph, batch)?;
        let mut lw = Lowering::new(graph, batch, split, precision)?;
        let eval_steps = lw.schedule(false);
        let node_outputs = lw.out.clone();
        let train_steps = lw.schedule(true);
        let forward_len = train_steps
            .iter()
            .position(|s| s.loss)
            .map_or(train_steps.len(), |p| p + 1);
        let output = graph.output_node().expect("validated");
        let loss = graph.loss_node().expect("validated");
        let classes = matches!(graph.node(loss).op, Op::CrossEntropy { .. });
        let flat_len = lw.flat_len();
        let mut plan = Plan {
            graph: graph.clone(),
            batch,
            input: lw.by_name["input"],
            targets: lw.targets,
            output: lw.out_of(output),
            counter: lw.counter,
            input_shape: graph
                .node(graph.input_node().expect("validated"))
                .shape
                .clone(),
            target_len: if classes { 1 } else { graph.numel(output) },
            classes,
            forward_len,
            memory: MemoryReport::default(),
            fused: lw.fused(),
            param_tensors: lw.param_t.clone(),
            precision,
            scaler: lw.scaler,
            flat_len,
            arena: Vec::new(),
            tensors: std::mem::take(&mut lw.tensors),
            train_steps,
            eval_steps,
            eval_aliases: std::mem::take(&mut lw.aliases),
            node_outputs,
        };
        plan.assign_arena();
        Ok(plan)
    }

    /// The schedule for batch size `n ≤ batch`: the stored one, its launches resized for
    /// `n` (nothing is lowered again; the tensors are the same).
    pub fn steps(&self, n: usize, mode: Mode) -> Result<Vec<Step>> {
        if n == 0 || n > self.batch {
            return Err(Error::invalid(
                "plan",
                format!("batch of {n} samples; this plan takes 1..={}", self.batch),
            ));
        }
        let steps = match mode {
            Mode::Train => &self.train_steps,
            Mode::Eval => &self.eval_steps,
        };
        Ok(if n == self.batch {
            steps.clone()
        } else {
            steps.iter().map(|s| s.at_batch(n)).collect()
        })
    }

    /// Assigns every activation tensor a pooled buffer by its lifetime in the training
    /// schedule (extended for the evaluation schedule's aliases), and fills the memory report.
    fn assign_arena(&mut self) {
        let steps = &self.train_steps;
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
        for &(x, y) in self.eval_aliases.iter().rev() {
            let fwd_last = steps[..self.forward_len]
                .iter()
                .enumerate()
                .filter(|(_, st)| st.io().0.contains(&y))
                .map(|(i, _)| i)
                .max()
                .unwrap_or(0);
            let fwd_last = if y == self.output {
                steps.len()
            } else {
                fwd_last.max(extended[y])
            };
            extended[x] = extended[x].max(fwd_last);
            last[x] = last[x].max(fwd_last);
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
