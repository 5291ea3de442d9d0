//! The precision family (`shaders/precision.wgsl`, twins in [`crate::cpu::matmul`]'s f16
//! helpers and here): what [`crate::plan::Precision::F16Mixed`] adds to a plan.
//!
//! * [`CastF16`] — `h = f16(x)`, two values per word: the f16 copies of the tensors conv and
//!   linear layers multiply (their inputs, weights and output gradients).
//! * [`HalfInputs`] — any launch with some of its inputs read as f16: the same kernel compiled
//!   with those bindings declared `array<f16>` and every read widened to f32 (see
//!   [`crate::gpu::kernels`]), so each conv and GEMM variant has its f16-input twin without a
//!   second copy of its WGSL. Products of two f16 values are exact in f32, so the twin is the
//!   f32 twin on the f16 values, held to the f32 launch's tolerance.
//! * [`LossScale`], [`AmpUnscale`], [`AmpUpdate`] — the dynamic loss scale `S`: the loss
//!   gradient is multiplied by `S` before the backward pass, the weight gradients divided by it
//!   before the update, a non-finite gradient skips the update, and `S` backs off or grows
//!   (PyTorch's `GradScaler`).
//!
//! # Shapes
//! `x [len]` f32, `h [⌈len/2⌉]` words; `state [4]` = (S, good steps, skipped steps, 0);
//! `flags [3]` = (the optimizer's gradient factor, skip flag, skipped steps).

use std::any::Any;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{bytes, groups64, Binding, Data, GpuCall, Launch, Tolerance};
use crate::cpu::matmul::{pack_f16, unpack_f16};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::plan::GradScaler;

/// The uniform of the element-count kernels (`LenUniform` in precision.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LenUniform {
    len: u32,
    pad: [u32; 3],
}

fn len_uniform(len: usize) -> Vec<u8> {
    bytes(&LenUniform {
        len: len as u32,
        pad: [0; 3],
    })
}

/// `h = f16(x)` over `n` samples of `per` values (a tensor that is not `batched`, e.g. a
/// weight, is one sample at every batch size): round to nearest even, overflow to ±∞, two
/// values per word (element `2w` in the low half).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CastF16 {
    pub n: usize,
    pub per: usize,
    pub batched: bool,
}

impl CastF16 {
    fn len(&self) -> usize {
        self.n * self.per
    }
}

impl Launch for CastF16 {
    fn kernel(&self) -> &'static str {
        "cast_f16"
    }

    fn bindings(&self) -> Vec<Binding> {
        let len = self.len();
        vec![
            Binding::read("x", len),
            Binding::write("h", len.div_ceil(2)).holding(Data::F16Pairs),
        ]
    }

    fn uniform(&self) -> Vec<u8> {
        len_uniform(self.len())
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(GpuCall {
            entry: "cast_f16",
            consts: Vec::new(),
            groups: groups64(self.len().div_ceil(2)),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        b[1] = pack_f16(&b[0][..self.len()]);
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        let n = if self.batched { n } else { self.n };
        Arc::new(CastF16 { n, ..*self })
    }

    fn describe(&self) -> String {
        format!("{} → f16", self.len())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `inner` with the inputs at binding positions `half` stored as f16 (two per word, as
/// [`CastF16`] writes them) and read as f32: the pipeline is `inner`'s, specialised with
/// `HALF` = the bit mask of those bindings. Needs `Features::SHADER_F16`
/// ([`Error::MissingFeature`] elsewhere, before any GPU work).
#[derive(Clone, Debug)]
pub struct HalfInputs {
    pub inner: Arc<dyn Launch>,
    /// Binding positions (inputs only) held as f16.
    pub half: Vec<usize>,
}

impl HalfInputs {
    /// `inner` reading its bindings `half` as f16; a binding that is not a read input is
    /// an [`Error::InvalidArgument`].
    pub fn new(inner: impl Launch, half: &[usize]) -> Result<Self> {
        let b = inner.bindings();
        if let Some(&bad) = half
            .iter()
            .find(|&&i| b.get(i).is_none_or(|b| b.access != super::Access::Read))
        {
            return Err(Error::invalid(
                inner.kernel(),
                format!("binding {bad} is not an input, so it cannot be read as f16"),
            ));
        }
        Ok(HalfInputs {
            inner: Arc::new(inner),
            half: half.to_vec(),
        })
    }

    fn mask(&self) -> u32 {
        self.half.iter().fold(0, |m, &i| m | 1 << i)
    }
}

impl Launch for HalfInputs {
    fn kernel(&self) -> &'static str {
        self.inner.kernel()
    }

    fn bindings(&self) -> Vec<Binding> {
        let mut b = self.inner.bindings();
        for &i in &self.half {
            b[i] = Binding::read(b[i].name, b[i].len.div_ceil(2)).holding(Data::F16Pairs);
        }
        b
    }

    fn uniform(&self) -> Vec<u8> {
        self.inner.uniform()
    }

    fn gpu(&self, ctx: &GpuContext) -> Result<GpuCall> {
        if !ctx.caps().f16 {
            return Err(Error::MissingFeature {
                kernel: format!("{} (f16 inputs)", self.inner.kernel()),
                feature: "shader-f16",
                adapter: ctx.adapter().name.clone(),
            });
        }
        let mut call = self.inner.gpu(ctx)?;
        call.consts.push(("HALF", self.mask()));
        Ok(call)
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let full = self.inner.bindings();
        for &i in &self.half {
            let mut v = unpack_f16(&b[i]);
            v.truncate(full[i].len);
            b[i] = v;
        }
        self.inner.cpu(b)
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        Arc::new(HalfInputs {
            inner: self.inner.at_batch(n),
            half: self.half.clone(),
        })
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self
            .half
            .iter()
            .map(|&i| self.inner.bindings()[i].name)
            .collect();
        format!("{} (f16 {})", self.inner.describe(), names.join(", "))
    }

    fn flops(&self) -> f64 {
        self.inner.flops()
    }

    fn tolerance(&self) -> Tolerance {
        self.inner.tolerance()
    }

    fn tile_choices(&self, ctx: &GpuContext) -> Option<(String, Vec<(u32, u32)>)> {
        // the f16 pipeline shares the f32 launch's tile cache entry
        self.inner.tile_choices(ctx)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `d ← S·d` in place over `n` samples of `per` values: the loss gradient times the loss scale
/// `state[0]`, before the backward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScale {
    pub n: usize,
    pub per: usize,
}

impl Launch for LossScale {
    fn kernel(&self) -> &'static str {
        "loss_scale"
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            Binding::read("state", 4),
            Binding::update("d", self.n * self.per),
        ]
    }

    fn uniform(&self) -> Vec<u8> {
        len_uniform(self.n * self.per)
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(GpuCall {
            entry: "loss_scale",
            consts: Vec::new(),
            groups: groups64(self.n * self.per),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let s = b[0][0];
        b[1].iter_mut().for_each(|d| *d *= s);
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        Arc::new(LossScale { n, ..*self })
    }

    fn describe(&self) -> String {
        format!("{}·S", self.n * self.per)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `g ← g·(1/S)` over the flat gradient buffer `[len]`, setting `flags[1] = 1` when a result
/// is not finite (the optimizer then skips the step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AmpUnscale {
    pub len: usize,
}

impl Launch for AmpUnscale {
    fn kernel(&self) -> &'static str {
        "amp_unscale"
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            Binding::read("state", 4),
            Binding::update("grad", self.len),
            Binding::update("flags", 3),
        ]
    }

    fn uniform(&self) -> Vec<u8> {
        len_uniform(self.len)
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(GpuCall {
            entry: "amp_unscale",
            consts: Vec::new(),
            groups: groups64(self.len),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let inv = 1.0 / b[0][0];
        let (g, flags) = b.split_at_mut(2);
        let mut found = false;
        for v in g[1].iter_mut() {
            *v *= inv;
            found |= !v.is_finite();
        }
        if found {
            flags[0][1] = 1.0;
        }
    }

    fn at_batch(&self, _n: usize) -> Arc<dyn Launch> {
        Arc::new(*self)
    }

    fn describe(&self) -> String {
        format!("{} grads / S", self.len)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The loss scale's update after a step (one invocation): back off and count a skipped step
/// when `flags[1]` is set, else count a good step and grow `S` every `interval` of them; then
/// clear `flags[1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AmpUpdate {
    pub scaler: GradScaler,
}

/// The uniform of `amp_update` (`ScalerUniform` in precision.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ScalerUniform {
    growth: f32,
    backoff: f32,
    interval: u32,
    pad: u32,
}

impl Launch for AmpUpdate {
    fn kernel(&self) -> &'static str {
        "amp_update"
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![Binding::update("flags", 3), Binding::update("state", 4)]
    }

    fn uniform(&self) -> Vec<u8> {
        let s = &self.scaler;
        bytes(&ScalerUniform {
            growth: s.growth_factor,
            backoff: s.backoff_factor,
            interval: s.growth_interval,
            pad: 0,
        })
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(GpuCall {
            entry: "amp_update",
            consts: Vec::new(),
            groups: 1,
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let (flags, state) = b.split_at_mut(1);
        let (flags, st) = (&mut flags[0], &mut state[0]);
        let s = &self.scaler;
        if flags[1] != 0.0 {
            st[0] *= s.backoff_factor;
            st[1] = 0.0;
            st[2] += 1.0;
        } else {
            let good = st[1] + 1.0;
            if good as u32 >= s.growth_interval {
                let grown = st[0] * s.growth_factor;
                if grown.is_finite() {
                    st[0] = grown;
                }
                st[1] = 0.0;
            } else {
                st[1] = good;
            }
        }
        flags[1] = 0.0;
        flags[2] = st[2];
    }

    fn at_batch(&self, _n: usize) -> Arc<dyn Launch> {
        Arc::new(*self)
    }

    fn describe(&self) -> String {
        "loss scale update".into()
    }

    fn tolerance(&self) -> Tolerance {
        Tolerance {
            atol: 0.0,
            rtol: 0.0,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
