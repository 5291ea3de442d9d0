//! The matrix-product family (`shaders/matmul.wgsl`, twin [`crate::cpu::matmul`]): strided
//! GEMM with a fused bias, activation, activation derivative and ones column, and the
//! linear layer's forward and gradient rules.
//!
//! # Shapes
//! `c [M,N] = act_out(A·B + bias)`, `A(m,k) = a[m·sam + k·sak]·act_in'(ya[…])`,
//! `B(k,n) = b[k·sbk + n·sbn]`; with a ones column, `cb [M] = Σ_k A(m,k)`.

use std::any::Any;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{bytes, Binding, Data, GpuCall, Launch, Rule, Tolerance};
use crate::cpu;
use crate::cpu::matmul::Gemm;
use crate::error::{Error, Result};
use crate::gpu::kernels::Consts;
use crate::gpu::tiles::pick;
use crate::gpu::{GpuContext, ShaderCaps};
use crate::graph::{Graph, NodeId, Op};
use crate::plan::{act_code, Lowering, TensorId};

/// Which GEMM dimension is the batch (what [`Launch::at_batch`] rescales).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchAxis {
    /// None: a fixed-size product.
    None,
    /// The rows `M` (a layer's forward and input gradient).
    M,
    /// The reduction `K` (a layer's weight gradient).
    K,
}

/// One GEMM launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatMul {
    pub g: Gemm,
    pub bias: bool,
    /// The untiled kernel (one output per invocation), the benchmark's baseline.
    pub naive: bool,
    pub batch: BatchAxis,
}

impl MatMul {
    pub fn new(g: Gemm, bias: bool, batch: BatchAxis) -> Self {
        MatMul {
            g,
            bias,
            naive: false,
            batch,
        }
    }

    fn a_len(&self) -> usize {
        let g = &self.g;
        (g.m - 1) * g.sam + (g.k - 1) * g.sak + 1
    }

    /// Whether it also writes the pre-activation (the fused activation keeps its input).
    fn keeps_z(&self) -> bool {
        cpu::elementwise::act_keeps_input(self.g.act_out.0)
    }

    /// The specialisation every GEMM entry point takes: fused bias, activations, ones column.
    fn fused_consts(&self) -> Consts {
        let p = self.uniform_block();
        vec![
            ("HAS_BIAS", p.has_bias),
            ("ACT_OUT", p.act_out),
            ("ACT_IN", p.act_in),
            ("ONES_COL", p.ones_col),
            ("KEEP_Z", self.keeps_z() as u32),
        ]
    }

    fn uniform_block(&self) -> GemmUniform {
        let g = &self.g;
        let u = |v: usize| v as u32;
        GemmUniform {
            m: u(g.m),
            n: u(g.n),
            k: u(g.k),
            sam: u(g.sam),
            sak: u(g.sak),
            sbk: u(g.sbk),
            sbn: u(g.sbn),
            has_bias: self.bias as u32,
            act_out: g.act_out.0,
            act_in: g.act_in.0,
            ones_col: g.ones_col as u32,
            alpha: g.act_out.1,
            alpha_in: g.act_in.1,
            pad: [0; 3],
        }
    }
}

impl Launch for MatMul {
    fn kernel(&self) -> &'static str {
        if self.naive {
            "gemm_naive"
        } else {
            "gemm"
        }
    }

    fn bindings(&self) -> Vec<Binding> {
        let g = &self.g;
        let b_len = (g.k - 1) * g.sbk + (g.n - 1) * g.sbn + 1;
        vec![
            Binding::read("a", self.a_len()),
            Binding::read("b", b_len),
            Binding::read("bias", Binding::len_if(self.bias, g.n)),
            Binding::read("ya", Binding::len_if(g.act_in.0 != 0, self.a_len())),
            Binding::write("c", g.m * g.n),
            Binding::write("cb", Binding::len_if(g.ones_col, g.m)),
            Binding::write("z", Binding::len_if(self.keeps_z(), g.m * g.n)),
        ]
    }

    fn uniform(&self) -> Vec<u8> {
        bytes(&self.uniform_block())
    }

    fn gpu(&self, ctx: &GpuContext) -> Result<GpuCall> {
        let p = self.uniform_block();
        let consts = self.fused_consts();
        if self.naive {
            let groups = (p.m as u64 * (p.n + p.ones_col) as u64).div_ceil(64);
            return Ok(GpuCall {
                entry: "gemm_naive",
                consts,
                groups,
            });
        }
        let shared = !ctx.tiles().shared_gemm.is_empty();
        tiled_call(ctx, &p, consts, shared)
    }

    fn tile_choices(&self, ctx: &GpuContext) -> Option<(String, Vec<(u32, u32)>)> {
        if self.naive {
            return None;
        }
        let shared = !ctx.tiles().shared_gemm.is_empty();
        let (_, key, cands) = tiled_choices(ctx, &self.uniform_block(), shared);
        Some((key, cands.to_vec()))
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let bias = self.bias.then_some(b[2].as_slice());
        let ya = (self.g.act_in.0 != 0).then_some(b[3].as_slice());
        if self.keeps_z() {
            let g = Gemm {
                act_out: (0, 0.0),
                ..self.g
            };
            let (z, cb) = cpu::matmul::gemm(&g, &b[0], &b[1], bias, ya);
            let (code, alpha) = self.g.act_out;
            b[4] = z
                .iter()
                .map(|&v| cpu::elementwise::act_fwd(v, code, alpha))
                .collect();
            b[5] = cb;
            b[6] = z;
            return;
        }
        let (c, cb) = cpu::matmul::gemm(&self.g, &b[0], &b[1], bias, ya);
        b[4] = c;
        if self.g.ones_col {
            b[5] = cb;
        }
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        let mut l = *self;
        match self.batch {
            BatchAxis::None => {}
            BatchAxis::M => l.g.m = n,
            BatchAxis::K => l.g.k = n,
        }
        Arc::new(l)
    }

    fn describe(&self) -> String {
        let g = &self.g;
        format!("{}×{}·{}×{}", g.m, g.k, g.k, g.n)
    }

    /// 2·M·N·K, plus M·K for a ones column.
    fn flops(&self) -> f64 {
        let g = &self.g;
        2.0 * g.m as f64 * (g.n + g.ones_col as usize) as f64 * g.k as f64
    }

    fn tolerance(&self) -> Tolerance {
        match self.batch {
            BatchAxis::K => Tolerance::REDUCTION,
            _ => Tolerance::DEFAULT,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Which kernel computes a [`MatMulF16`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F16Path {
    /// `gemm_coop` where the device lists 16×16 f16×f16→f32 cooperative matrices and the
    /// shape fits ([`MatMulF16::coop_fits`]), `gemm_f16` elsewhere.
    Auto,
    /// `gemm_f16`: register tiles, f16 loads, f32 products and sums.
    Registers,
    /// `gemm_coop` (cooperative matrices, tensor cores): [`Error::MissingFeature`] on a device
    /// without them, [`Error::InvalidArgument`] for a shape it does not take.
    CoopMatrix,
}

/// One mixed-precision GEMM launch: `c [M,N] = A·B` with `A` and `B` stored as f16 (packed
/// by [`cpu::matmul::pack_f16`]), exact f16 products, f32 accumulation, f32 output
/// (`shaders/matmul_f16.wgsl`, `shaders/matmul_coop.wgsl`; twin
/// [`cpu::matmul::gemm_f16`]). Needs `Features::SHADER_F16`: refused with
/// [`Error::MissingFeature`] on a device without it, before any GPU work.
///
/// # Shapes
/// `A(m,k) = a[m·sam + k·sak]`, `B(k,n) = b[k·sbk + n·sbn]` (f16 elements, two per binding
/// word), `c [M,N]` f32. Only plain products: no bias, activation or ones column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatMulF16 {
    /// The product (strides in f16 elements); its fused parts must be off.
    pub g: Gemm,
    /// Which kernel may compute it.
    pub path: F16Path,
}

impl MatMulF16 {
    /// The launch for the plain product `g`; an error if `g` fuses an activation or a ones
    /// column.
    pub fn new(g: Gemm, path: F16Path) -> Result<Self> {
        if g.act_out.0 != 0 || g.act_in.0 != 0 || g.ones_col {
            return Err(Error::invalid(
                "gemm_f16",
                "only plain products (no fused activation, derivative or ones column)",
            ));
        }
        if g.m == 0 || g.n == 0 || g.k == 0 {
            return Err(Error::shape(
                "gemm_f16",
                format!("empty product {}×{}·{}×{}", g.m, g.k, g.k, g.n),
            ));
        }
        Ok(MatMulF16 { g, path })
    }

    /// The f16 elements `A` and `B` span.
    fn lens(&self) -> (usize, usize) {
        let g = &self.g;
        (
            (g.m - 1) * g.sam + (g.k - 1) * g.sak + 1,
            (g.k - 1) * g.sbk + (g.n - 1) * g.sbn + 1,
        )
    }

    /// `gemm_coop`'s layout constants `(A_T, B_T)` if it takes this shape: M, N and K
    /// multiples of 16, each operand row- or column-major with its other stride a multiple of
    /// 8 (every 16×16 tile then starts 16-byte aligned).
    pub fn coop_layout(&self) -> Option<(u32, u32)> {
        let g = &self.g;
        if ![g.m, g.n, g.k].iter().all(|d| d.is_multiple_of(16)) {
            return None;
        }
        let layout = |unit: usize, other: usize, unit_t: usize, other_t: usize| {
            if unit == 1 && other.is_multiple_of(8) {
                Some(0)
            } else if unit_t == 1 && other_t.is_multiple_of(8) {
                Some(1)
            } else {
                None
            }
        };
        Some((
            layout(g.sak, g.sam, g.sam, g.sak)?,
            layout(g.sbn, g.sbk, g.sbk, g.sbn)?,
        ))
    }

    /// Whether `gemm_coop` takes this shape (see [`MatMulF16::coop_layout`]).
    pub fn coop_fits(&self) -> bool {
        self.coop_layout().is_some()
    }

    /// The kernel this launch runs on a device with `caps` (`adapter` names it in errors):
    /// `gemm_f16` or `gemm_coop`, or the typed refusal. Decided before any GPU work.
    pub fn choose(&self, caps: &ShaderCaps, adapter: &str) -> Result<&'static str> {
        let missing = |kernel: &str, feature| Error::MissingFeature {
            kernel: kernel.into(),
            feature,
            adapter: adapter.into(),
        };
        if !caps.f16 {
            let kernel = match self.path {
                F16Path::CoopMatrix => "gemm_coop",
                _ => "gemm_f16",
            };
            return Err(missing(kernel, "shader-f16"));
        }
        match self.path {
            F16Path::Registers => Ok("gemm_f16"),
            F16Path::Auto if caps.coop_16x16_f16 && self.coop_fits() => Ok("gemm_coop"),
            F16Path::Auto => Ok("gemm_f16"),
            F16Path::CoopMatrix if !caps.coop_16x16_f16 => Err(missing(
                "gemm_coop",
                "wgpu-cooperative-matrix (16×16 f16×f16→f32)",
            )),
            F16Path::CoopMatrix if !self.coop_fits() => Err(Error::invalid(
                "gemm_coop",
                format!(
                    "takes M, N, K multiples of 16 and row- or column-major operands with \
                     strides that are multiples of 8, not {:?}",
                    self.g
                ),
            )),
            F16Path::CoopMatrix => Ok("gemm_coop"),
        }
    }
}

impl Launch for MatMulF16 {
    fn kernel(&self) -> &'static str {
        "gemm_f16"
    }

    fn bindings(&self) -> Vec<Binding> {
        let (a, b) = self.lens();
        vec![
            Binding::read("a", a.div_ceil(2)).holding(Data::F16Pairs),
            Binding::read("b", b.div_ceil(2)).holding(Data::F16Pairs),
            Binding::write("c", self.g.m * self.g.n),
        ]
    }

    fn uniform(&self) -> Vec<u8> {
        bytes(&MatMul::new(self.g, false, BatchAxis::None).uniform_block())
    }

    fn gpu(&self, ctx: &GpuContext) -> Result<GpuCall> {
        let p = MatMul::new(self.g, false, BatchAxis::None).uniform_block();
        if self.choose(&ctx.caps(), &ctx.adapter().name)? == "gemm_coop" {
            let (at, bt) = self.coop_layout().unwrap_or_default();
            let blocks = (p.m as u64).div_ceil(32) * (p.n as u64).div_ceil(32);
            return Ok(GpuCall {
                entry: "gemm_coop",
                consts: vec![("SG", ctx.caps().subgroup_size), ("A_T", at), ("B_T", bt)],
                groups: blocks,
            });
        }
        let key = format!("gemm_f16 {:?}", [p.n, p.sam, p.sak, p.sbk, p.sbn]);
        let t = ctx.tiles();
        let tile = ctx.tile_for(key, || pick(t.gemm, |g| groups(&p, g), t.min_groups).0)?;
        Ok(GpuCall {
            entry: "gemm_f16",
            consts: vec![("TR", tile.0), ("TS", tile.1)],
            groups: groups(&p, tile),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        b[2] = cpu::matmul::gemm_f16(&self.g, &b[0], &b[1]);
    }

    fn at_batch(&self, _n: usize) -> Arc<dyn Launch> {
        Arc::new(*self)
    }

    fn describe(&self) -> String {
        let g = &self.g;
        format!("{}×{}·{}×{} (f16)", g.m, g.k, g.k, g.n)
    }

    /// 2·M·N·K.
    fn flops(&self) -> f64 {
        let g = &self.g;
        2.0 * g.m as f64 * g.n as f64 * g.k as f64
    }

    /// The inputs are the same f16 values on both sides and every product is exact, so only
    /// the f32 summation order differs: [`Tolerance::DEFAULT`], [`Tolerance::REDUCTION`] for
    /// sums over more than 1024 terms.
    fn tolerance(&self) -> Tolerance {
        if self.g.k > 1024 {
            Tolerance::REDUCTION
        } else {
            Tolerance::DEFAULT
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The uniform block of `gemm` / `gemm_naive` (`GemmUniform` in matmul.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct GemmUniform {
    m: u32,
    n: u32,
    k: u32,
    sam: u32,
    sak: u32,
    sbk: u32,
    sbn: u32,
    has_bias: u32,
    act_out: u32,
    act_in: u32,
    ones_col: u32,
    alpha: f32,
    alpha_in: f32,
    pad: [u32; 3],
}

/// The tiled GEMM's entry point, the key its tile is cached under and the candidate tiles.
/// Every candidate sums each output over k in the same order (k = 0, 1, …), so the choice
/// never changes a bit of the result.
fn tiled_choices(
    ctx: &GpuContext,
    p: &GemmUniform,
    shared: bool,
) -> (&'static str, String, &'static [(u32, u32)]) {
    let entry = if shared { "gemm_shared" } else { "gemm" };
    // M and K scale with the batch in the linear layer's products; N and the strides don't
    let key = format!(
        "{entry} {:?}",
        [p.n, p.sam, p.sak, p.sbk, p.sbn, p.has_bias, p.act_out, p.act_in, p.ones_col]
    );
    let t = ctx.tiles();
    let cands = if shared && !t.shared_gemm.is_empty() {
        t.shared_gemm
    } else {
        t.gemm
    };
    (entry, key, cands)
}

/// The tiled GEMM's call: `gemm_shared` (panels staged in workgroup memory) when `shared`,
/// else the register-only `gemm`, with the adapter's tile for this product.
fn tiled_call(
    ctx: &GpuContext,
    p: &GemmUniform,
    mut consts: Consts,
    shared: bool,
) -> Result<GpuCall> {
    let (entry, key, cands) = tiled_choices(ctx, p, shared);
    let t = ctx.tiles();
    let tile = ctx.tile_for(key, || pick(cands, |g| groups(p, g), t.min_groups).0)?;
    consts.extend([("TR", tile.0), ("TS", tile.1)]);
    if !shared {
        // a lane loads ⌈TR / 8⌉ ≤ 4 rows of A (every tile list's TR is at most 32)
        consts.extend([("SG_ROWS", t.sg_rows as u32), ("TRS", tile.0.div_ceil(8))]);
    }
    if shared {
        // each of the 64 invocations stages TR·SK/8 values of A and TS·SK/8 of B (SK = 16)
        consts.extend([("LA", 2 * tile.0), ("LB", 2 * tile.1)]);
    }
    Ok(GpuCall {
        entry,
        consts,
        groups: groups(p, tile),
    })
}

/// A [`MatMul`] that always runs `gemm_shared`, the variant hardware GPUs get (for tests and
/// the benchmark on adapters where [`MatMul`] picks the register-only `gemm`). Same
/// bindings, semantics and CPU twin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SharedMatMul(pub MatMul);

impl Launch for SharedMatMul {
    fn kernel(&self) -> &'static str {
        "gemm_shared"
    }

    fn bindings(&self) -> Vec<Binding> {
        self.0.bindings()
    }

    fn uniform(&self) -> Vec<u8> {
        self.0.uniform()
    }

    fn gpu(&self, ctx: &GpuContext) -> Result<GpuCall> {
        tiled_call(ctx, &self.0.uniform_block(), self.0.fused_consts(), true)
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        self.0.cpu(b)
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        let l = self.0.at_batch(n);
        let m = l
            .as_any()
            .downcast_ref::<MatMul>()
            .copied()
            .unwrap_or(self.0);
        Arc::new(SharedMatMul(m))
    }

    fn describe(&self) -> String {
        self.0.describe()
    }

    fn flops(&self) -> f64 {
        self.0.flops()
    }

    fn tolerance(&self) -> Tolerance {
        self.0.tolerance()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Workgroups of the tiled `gemm` for tile `(tr, ts)` (rows × columns per invocation).
fn groups(p: &GemmUniform, (tr, ts): (u32, u32)) -> u64 {
    let cols = (p.n + p.ones_col) as u64;
    cols.div_ceil(8 * ts as u64) * (p.m as u64).div_ceil(8 * tr as u64)
}

/// The graph builders of this family: each checks its shapes and names the node in errors.
impl Graph {
    /// Linear layer `x [in] → [out]` with `name.weight [out, in]` and `name.bias [out]`.
    pub fn linear(&mut self, name: &str, x: NodeId, out: usize, bias: bool) -> Result<NodeId> {
        let xs = self.check_ref(name, x)?.shape.clone();
        let xname = self.node(x).name.clone();
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
        let xname = self.node(x).name.clone();
        let have: usize = xs.iter().product();
        if xs.len() != 1 || have != inp {
            return Err(Error::shape(
                name,
                format!("expects {inp} input features, but '{xname}' produces shape {xs:?}"),
            ));
        }
        self.linear(name, x, out, bias)
    }
}

/// `Op::Linear`: `y = act(x·wᵀ + b)`; the gradient is `dx = dy'·w` and `dw = dy'ᵀ·x` with
/// `db` from the ones column, `dy' = dy·act'(y)` when an activation is fused.
pub(crate) struct LinearRule;

impl LinearRule {
    fn parts(lw: &Lowering, id: NodeId) -> (NodeId, usize, Option<usize>, usize, usize) {
        let Op::Linear { x, w, b, .. } = lw.g.node(id).op else {
            unreachable!("LinearRule on another op")
        };
        (x, w, b, lw.g.numel(x), lw.g.numel(id))
    }
}

impl Rule for LinearRule {
    fn forward(&self, lw: &mut Lowering, id: NodeId) {
        let (x, w, b, inp, outf) = Self::parts(lw, id);
        let y = lw.arena(lw.g.node(id).name.clone(), outf);
        let g = Gemm::linear_forward(lw.n, inp, outf, act_code(lw.fused_act(id)));
        let args = vec![
            Some(lw.out_of(x)),
            Some(lw.param(w)),
            b.map(|b| lw.param(b)),
            None,
            Some(y),
            None,
            lw.pre_activation(id),
        ];
        lw.emit_mixed(id, MatMul::new(g, b.is_some(), BatchAxis::M), args, &[0, 1]);
        lw.set_out(id, y);
    }

    fn backward(&self, lw: &mut Lowering, id: NodeId, dy: TensorId) {
        let (x, w, b, inp, outf) = Self::parts(lw, id);
        let act = act_code(lw.fused_act(id));
        let ya = lw.fused_grad_source(id);
        if lw.needs_grad(x) {
            let dx = lw.arena(format!("{}.dx", lw.g.node(id).name), inp);
            let g = Gemm::linear_backward_input(lw.n, inp, outf, act);
            let args = vec![Some(dy), Some(lw.param(w)), None, ya, Some(dx), None, None];
            lw.emit_mixed(id, MatMul::new(g, false, BatchAxis::M), args, &[0, 1]);
            lw.push_grad(x, dx);
        }
        let mut g = Gemm::linear_backward_weight(lw.n, inp, outf, act);
        g.ones_col = b.is_some();
        let args = vec![
            Some(dy),
            Some(lw.out_of(x)),
            None,
            ya,
            Some(lw.grad(w)),
            b.map(|b| lw.grad(b)),
            None,
        ];
        lw.emit_mixed(id, MatMul::new(g, false, BatchAxis::K), args, &[0, 1]);
    }
}
