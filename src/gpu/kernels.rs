//! Shader sources and the pipeline cache.
//!
//! One WGSL file per op family in `shaders/`, each prefixed with `shaders/common.wgsl`.
//! Every kernel binds its read-only inputs first, then its outputs, then one uniform
//! params struct. Pipelines and bind group layouts are created once per device and
//! cached by entry point and specialisation; creation runs inside error scopes so a shader
//! or pipeline validation error becomes [`Error::Shader`] naming the kernel.
//!
//! **Specialisation.** A family declares module-scope `const NAME: u32 = v;` values (tile
//! sizes, fused activation codes, bias and ones-column flags, pooling geometry). A pipeline
//! may be compiled with some of them replaced ([`Consts`]): the text is substituted before
//! the module is created, so the driver sees true constants — loops get constant trip
//! counts, conditions on them fold away. (WGSL `override`s would do the same but need
//! pipeline-constant processing before naga's backends; substitution keeps every shader file
//! valid as written.) Loops marked `/*unroll*/` are then expanded into straight-line
//! blocks, so register tiles are only ever indexed by constants. The executor compiles all its variants when
//! the plan is built — register tiles are chosen per layer, not per batch size — and never
//! during training; [`GpuContext::pipeline_stats`] counts them.
//!
//! **Launches.** What a kernel needs to run (entry point, specialisation, bindings, uniform,
//! grid) is described by its [`crate::ops::Launch`]; [`KERNELS`] lists the entry points and
//! every pipeline's binding layout is checked against it when it is created.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where `BenchProgram` used to live (now `gpu::bench`); kept for code importing it here.
pub use super::bench::BenchProgram;
use super::device::GpuContext;
use super::Instant;
use crate::error::{Error, Result};
use crate::ops::Access;

const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// The op families: `(name, source without the common prelude)`.
const FAMILIES: &[(&str, &str)] = &[
    ("conv", include_str!("../../shaders/conv.wgsl")),
    ("pool", include_str!("../../shaders/pool.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    (
        "elementwise",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("loss", include_str!("../../shaders/loss.wgsl")),
    ("optim", include_str!("../../shaders/optim.wgsl")),
    ("norm", include_str!("../../shaders/norm.wgsl")),
    ("layout", include_str!("../../shaders/layout.wgsl")),
    ("augment", include_str!("../../shaders/augment.wgsl")),
    ("precision", include_str!("../../shaders/precision.wgsl")),
];

/// The families that need an optional device feature: `(name, source, feature)`. Their
/// `enable` directives make the module invalid on a device without the feature, so they are
/// compiled only where [`GpuContext::caps`] has it, and validated by naga with the matching
/// capabilities (not with the portable families of [`shader_sources`]).
const FEATURE_FAMILIES: &[(&str, &str, &str)] = &[
    (
        "matmul_f16",
        include_str!("../../shaders/matmul_f16.wgsl"),
        "shader-f16",
    ),
    (
        "matmul_coop",
        include_str!("../../shaders/matmul_coop.wgsl"),
        "wgpu-cooperative-matrix",
    ),
];

/// A kernel: entry point, family, number of read-only inputs and of outputs.
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    pub name: &'static str,
    pub family: &'static str,
    pub inputs: u32,
    pub outputs: u32,
}

const fn k(name: &'static str, family: &'static str, inputs: u32, outputs: u32) -> KernelSpec {
    KernelSpec {
        name,
        family,
        inputs,
        outputs,
    }
}

/// Every kernel of the library. The CPU twin of each lives in `src/cpu/<family>.rs`
/// under the same name, except for alternative kernels computing the same function, which
/// share their twin: `conv_backward_input_rows`, `conv_backward_weight_rows` (stride-1
/// layers), `conv_*_depthwise` (depthwise layers), `conv_*_pointwise(_v4)` (1×1 layers; the
/// launch picks these variants), `gemm_shared` (`gemm` through workgroup memory, picked on
/// hardware GPUs) and `gemm_naive` (the untiled baseline the benchmark compares `gemm`
/// with). The split weight gradient (`ConvWeightParts`, twin `conv_backward_weight_parts`)
/// runs the backward-weight entry points with `SPLIT = 1`.
/// The mixed-precision `gemm_f16` and `gemm_coop` (families `matmul_f16`, `matmul_coop`,
/// which need optional device features) share the twin `cpu::matmul::gemm_f16`.
/// Each launch's bindings are checked against its row.
pub const KERNELS: &[KernelSpec] = &[
    k("conv_forward", "conv", 3, 2),
    k("conv_forward_depthwise", "conv", 3, 2),
    k("conv_backward_input", "conv", 3, 1),
    k("conv_backward_input_rows", "conv", 3, 1),
    k("conv_backward_input_depthwise", "conv", 3, 1),
    k("conv_backward_weight", "conv", 3, 2),
    k("conv_backward_weight_rows", "conv", 3, 2),
    k("conv_backward_weight_depthwise", "conv", 3, 2),
    k("conv_forward_pointwise", "conv", 3, 2),
    k("conv_forward_pointwise_v4", "conv", 3, 2),
    k("conv_backward_input_pointwise", "conv", 3, 1),
    k("conv_backward_input_pointwise_v4", "conv", 3, 1),
    k("conv_backward_weight_pointwise", "conv", 3, 2),
    k("conv_backward_weight_pointwise_v4", "conv", 3, 2),
    k("max_pool2d_forward", "pool", 1, 2),
    k("max_pool2d_backward", "pool", 2, 1),
    k("max_pool2d_backward_blocks", "pool", 2, 1),
    k("min_pool2d_forward", "pool", 1, 2),
    k("avg_pool2d_forward", "pool", 1, 1),
    k("avg_pool2d_backward", "pool", 1, 1),
    k("global_avg_pool_forward", "pool", 1, 1),
    k("global_avg_pool_backward", "pool", 1, 1),
    k("gemm", "matmul", 4, 3),
    k("gemm_naive", "matmul", 4, 3),
    k("gemm_shared", "matmul", 4, 3),
    k("gemm_f16", "matmul_f16", 2, 1),
    k("gemm_coop", "matmul_coop", 2, 1),
    k("activation_forward", "elementwise", 1, 1),
    k("activation_forward_v4", "elementwise", 1, 1),
    k("activation_backward", "elementwise", 2, 1),
    k("activation_backward_v4", "elementwise", 2, 1),
    k("add", "elementwise", 2, 1),
    k("add_v4", "elementwise", 2, 1),
    k("dropout_forward", "elementwise", 2, 1),
    k("dropout_backward", "elementwise", 2, 1),
    k("rescale", "elementwise", 1, 1),
    k("sum_parts", "elementwise", 1, 2),
    k("softmax_forward", "loss", 1, 1),
    k("softmax_backward", "loss", 2, 1),
    k("cross_entropy", "loss", 2, 2),
    k("mse", "loss", 2, 2),
    k("bce_logits", "loss", 3, 2),
    k("grad_norm_scale", "optim", 1, 1),
    k("optimizer_step", "optim", 3, 4),
    k("batch_norm_forward_train", "norm", 3, 4),
    k("batch_norm_forward_train_v4", "norm", 3, 4),
    k("batch_norm_forward_train_u4", "norm", 3, 4),
    k("batch_norm_forward_eval", "norm", 5, 1),
    k("batch_norm_backward", "norm", 4, 3),
    k("batch_norm_backward_v4", "norm", 4, 3),
    k("batch_norm_backward_u4", "norm", 4, 3),
    k("permute", "layout", 1, 1),
    k("augment", "augment", 3, 1),
    k("cast_f16", "precision", 1, 1),
    k("loss_scale", "precision", 1, 1),
    k("amp_unscale", "precision", 1, 2),
    k("amp_update", "precision", 0, 2),
];

/// The full WGSL source of every portable family (common prelude included) as a device
/// without subgroups compiles it, for validation and translation tests.
pub fn shader_sources() -> Vec<(&'static str, String)> {
    FAMILIES
        .iter()
        .map(|(name, src)| (*name, without_subgroups(assemble(src))))
        .collect()
}

/// The full WGSL source of every portable family that shares loads across a subgroup
/// (`subgroupBroadcast`, the `SG_ROWS` specialisations), as a device with subgroups of 8
/// compiles it (WebGPU feature `subgroups`, naga capability `SUBGROUP`): with its default
/// constants and its `/*unroll*/` loops unrolled, which makes each broadcast's lane a
/// constant as WGSL requires.
pub fn subgroup_shader_sources() -> Result<Vec<(&'static str, String)>> {
    FAMILIES
        .iter()
        .filter(|(_, src)| src.contains(BROADCAST))
        .map(|(name, src)| Ok((*name, assemble(&unroll(name, src)?))))
        .collect()
}

const BROADCAST: &str = "subgroupBroadcast(";

/// The branch every `SG_ROWS` kernel writes: `if (SG_ROWS == 1u) { shared rows } else { own
/// rows }`.
const SG_BRANCH: &str = "if (SG_ROWS == 1u) {";

/// `src` for a device without subgroups: its broadcasts, which only the `SG_ROWS = 1`
/// specialisations execute, call the stand-in `sg_absent` of common.wgsl instead, so the
/// module validates without the capability.
fn without_subgroups(src: String) -> String {
    src.replace(BROADCAST, "sg_absent(")
}

/// The index of the `}` closing the block whose `{` is at `open` in `s`.
fn block_close(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, ch) in s[open..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `src` with every `SG_ROWS` branch replaced by its `then` block (`shared`) or its `else`
/// block — what the specialisation executes — so that no compiler wades through the dead one
/// (llvmpipe's GL compiler took minutes over them in CI). Leaves the text as it is where the
/// pattern is not `if (…) { … } else { … }` (it then still compiles, only more slowly).
fn keep_sg_branch(mut src: String, shared: bool) -> String {
    let block_end = |s: &str, open: usize| block_close(s, open).map(|c| c + 1);
    let mut from = 0;
    while let Some(found) = src[from..].find(SG_BRANCH) {
        let at = from + found;
        let then_open = at + SG_BRANCH.len() - 1;
        let Some(then_end) = block_end(&src, then_open) else {
            break;
        };
        if !src[then_end..].starts_with(" else {") {
            from = then_end;
            continue;
        }
        let else_open = then_end + " else ".len();
        let Some(else_end) = block_end(&src, else_open) else {
            break;
        };
        let kept = if shared {
            src[then_open..then_end].to_string()
        } else {
            src[else_open..else_end].to_string()
        };
        src.replace_range(at..else_end, &kept);
        from = at + kept.len();
    }
    src
}

/// The full WGSL source of every family that needs an optional device feature, with the
/// feature's WebGPU name (`shader-f16`, `wgpu-cooperative-matrix`).
pub fn feature_shader_sources() -> Vec<(&'static str, String, &'static str)> {
    FEATURE_FAMILIES
        .iter()
        .map(|(name, src, feature)| (*name, assemble(src), *feature))
        .collect()
}

/// The module as the device compiles it: the family's `enable` directives (which must
/// precede every declaration), the common prelude, then the rest of the family.
fn assemble(src: &str) -> String {
    let (enables, rest): (Vec<&str>, Vec<&str>) = src
        .lines()
        .partition(|l| l.trim_start().starts_with("enable "));
    let mut out = String::new();
    for e in enables {
        out.push_str(e);
        out.push('\n');
    }
    out.push_str(COMMON);
    out.push('\n');
    out.push_str(&rest.join("\n"));
    out.push('\n');
    out
}

/// Specialisation constants of one pipeline: `(name, value)` pairs replacing the family's
/// module-scope `const NAME: u32 = …;` declarations.
pub type Consts = Vec<(&'static str, u32)>;

/// A compiled kernel: its pipeline and bind group layout.
#[derive(Debug)]
pub struct Kernel {
    pub spec: KernelSpec,
    /// The specialisation it was compiled with.
    pub consts: Consts,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// Pipelines and shader modules, created once per device and specialisation.
#[derive(Default)]
pub(crate) struct KernelCache {
    modules: Mutex<HashMap<String, Arc<wgpu::ShaderModule>>>,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    /// Register tile chosen per batch-independent launch description (`src/gpu/tiles.rs`).
    pub(crate) tiles: Mutex<HashMap<String, (u32, u32)>>,
    compiled: AtomicU64,
    compile_ns: AtomicU64,
}

/// Pipelines compiled on a device so far, and the host time spent creating them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PipelineStats {
    pub pipelines: u64,
    pub seconds: f64,
}

/// Whether `WGCNN_SHADER_CHECKS=off` asks for shader modules without wgpu's runtime checks
/// (`ShaderRuntimeChecks::unchecked()`: no injected bounds checks, no forced loop bounding,
/// no guarded integer division) — measured in docs/PERFORMANCE.md. Off by default: it trusts
/// every kernel to stay within its bindings, which the crate's kernels do by construction
/// (clamped loads, masked stores) but a driver would not catch if one did not.
pub fn unchecked_shaders() -> bool {
    std::env::var("WGCNN_SHADER_CHECKS").is_ok_and(|v| v == "off")
}

/// `src` with each `const NAME: u32 = …;` of `consts` replaced; an unknown name is an error.
fn specialise(family: &str, src: &str, consts: &[(&'static str, u32)]) -> Result<String> {
    let mut out = src.to_string();
    for (name, v) in consts {
        let pat = format!("\nconst {name}: u32 = ");
        let Some(at) = out.find(&pat) else {
            return Err(Error::Shader {
                kernel: format!("{family}.wgsl"),
                msg: format!("no specialisation constant `{name}`"),
            });
        };
        let start = at + pat.len();
        let end = start
            + out[start..].find(';').ok_or_else(|| Error::Shader {
                kernel: format!("{family}.wgsl"),
                msg: format!("unterminated constant `{name}`"),
            })?;
        out.replace_range(start..end, &format!("{v}u"));
    }
    Ok(out)
}

/// Expands every `/*unroll*/ for (var V = 0u; V < B; V++) { BODY }` of `src` into `B` blocks
/// `{ let V = ku; BODY }` (k = 0, 1, …), innermost loops included. `B` is a literal or the
/// name of a module-scope `const B: u32 = …;` of `src`. The bodies of such loops must not
/// `break` or `continue`. A CPU adapter keeps a register tile in registers only when every
/// index into it is a constant, and its compiler does not reliably unroll these loops itself.
fn unroll(family: &str, src: &str) -> Result<String> {
    const MARK: &str = "/*unroll*/";
    let err = |msg: String| Error::Shader {
        kernel: format!("{family}.wgsl"),
        msg,
    };
    let mut s = src.to_string();
    let mut from = 0;
    while let Some(found) = s[from..].find(MARK) {
        let at = from + found;
        // a mention inside a `//` comment is not a marker
        let line_start = s[..at].rfind('\n').map_or(0, |i| i + 1);
        if s[line_start..at].contains("//") {
            from = at + MARK.len();
            continue;
        }
        let head_at = at + MARK.len();
        let open = head_at
            + s[head_at..]
                .find('{')
                .ok_or_else(|| err("unroll: no loop body".into()))?;
        let head = s[head_at..open].trim();
        let inner = head
            .strip_prefix("for")
            .map(str::trim)
            .and_then(|h| h.strip_prefix('('))
            .and_then(|h| h.strip_suffix(')'))
            .ok_or_else(|| err(format!("unroll: not a for loop: `{head}`")))?;
        let parts: Vec<&str> = inner.split(';').map(str::trim).collect();
        let var = parts
            .first()
            .and_then(|p| p.strip_prefix("var "))
            .and_then(|p| p.strip_suffix("= 0u"))
            .map(str::trim)
            .ok_or_else(|| err(format!("unroll: loop must start at 0u: `{head}`")))?;
        let bound = parts
            .get(1)
            .and_then(|p| p.strip_prefix(var))
            .map(str::trim)
            .and_then(|p| p.strip_prefix('<'))
            .map(str::trim)
            .ok_or_else(|| err(format!("unroll: loop must test `{var} < N`: `{head}`")))?;
        if parts.get(2) != Some(&format!("{var}++").as_str()) {
            return Err(err(format!("unroll: loop must step `{var}++`: `{head}`")));
        }
        let n = match bound.trim_end_matches('u').parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let pat = format!("\nconst {bound}: u32 = ");
                let at = s
                    .find(&pat)
                    .ok_or_else(|| err(format!("unroll: no constant `{bound}`")))?
                    + pat.len();
                let end = at + s[at..].find(';').unwrap_or(0);
                s[at..end]
                    .trim()
                    .trim_end_matches('u')
                    .parse::<u32>()
                    .map_err(|_| err(format!("unroll: `{bound}` is not a literal")))?
            }
        };
        let close = block_close(&s, open).ok_or_else(|| err("unroll: unbalanced braces".into()))?;
        let body = &s[open + 1..close];
        let expanded: String = (0..n)
            .map(|k| format!("{{ let {var} = {k}u;{body}}}"))
            .collect::<Vec<_>>()
            .join(" ");
        s.replace_range(at..close + 1, &expanded);
    }
    Ok(s)
}

/// `src` with the read-only storage bindings whose numbers are set in `mask` declared with f16
/// elements — `array<f32>` as `array<f16>`, `array<vec4<f32>>` as `array<vec4<f16>>` (the
/// same element order, so a vec4 kernel reads the same four values) — and every read of them
/// widened back (`f32(name[i])`, `vec4<f32>(name[i])`), behind `enable f16;` (the `HALF`
/// pseudo-constant of [`crate::ops::precision::HalfInputs`]). The kernel's arithmetic is
/// unchanged: an f16 value is exact in f32, and so is the product of two of them. A binding
/// with no such declaration is an error.
fn halve(family: &str, src: &str, mask: u32) -> Result<String> {
    const TYPES: [(&str, &str, &str); 2] = [
        ("array<f32>;", "array<f16>;", "f32"),
        ("array<vec4<f32>>;", "array<vec4<f16>>;", "vec4<f32>"),
    ];
    let mut out = src.to_string();
    for b in (0..32).filter(|b| mask & 1 << b != 0) {
        let decl = format!("@binding({b}) var<storage, read> ");
        let mut names = Vec::new();
        let lines: Vec<String> = out
            .lines()
            .map(|l| {
                let found = l.find(&decl).and_then(|at| {
                    let (name, ty) = l[at + decl.len()..].split_once(':')?;
                    let t = TYPES.iter().find(|t| ty.trim() == t.0)?;
                    Some((name.trim().to_string(), t))
                });
                match found {
                    Some((n, t)) => {
                        names.push((n, t.2));
                        l.replace(t.0, t.1)
                    }
                    None => l.to_string(),
                }
            })
            .collect();
        if names.is_empty() {
            return Err(Error::Shader {
                kernel: format!("{family}.wgsl"),
                msg: format!("HALF: no read-only array<f32> or array<vec4<f32>> at binding {b}"),
            });
        }
        out = lines.join("\n");
        for (n, widen_to) in &names {
            out = widen(&out, n, widen_to);
        }
    }
    Ok(format!("enable f16;\n{out}"))
}

/// `src` with every indexing `name[…]` (not part of a longer identifier) wrapped in `to(…)`.
fn widen(src: &str, name: &str, to: &str) -> String {
    let pat = format!("{name}[");
    let mut out = String::with_capacity(src.len() + 1024);
    let mut rest = src;
    while let Some(at) = rest.find(&pat) {
        let glued = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let open = at + name.len();
        let mut depth = 0usize;
        let close = rest[open..].char_indices().find_map(|(i, ch)| {
            match ch {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            (depth == 0).then_some(open + i)
        });
        match close {
            Some(close) if !glued => {
                out.push_str(&rest[..at]);
                out.push_str(to);
                out.push('(');
                out.push_str(&rest[at..=close]);
                out.push(')');
                rest = &rest[close + 1..];
            }
            _ => {
                out.push_str(&rest[..at + pat.len()]);
                rest = &rest[at + pat.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn cache_key(name: &str, consts: &[(&'static str, u32)]) -> String {
    let mut key = name.to_string();
    for (n, v) in consts {
        key.push_str(&format!(" {n}={v}"));
    }
    key
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl GpuContext {
    fn module(
        &self,
        family: &'static str,
        consts: &[(&'static str, u32)],
    ) -> Result<Arc<wgpu::ShaderModule>> {
        let key = cache_key(family, consts);
        let mut modules = self
            .kernels
            .modules
            .lock()
            .map_err(|_| Error::Device("shader cache lock poisoned".into()))?;
        if let Some(m) = modules.get(&key) {
            return Ok(m.clone());
        }
        // `HALF` is not a constant of the source: it names the bindings read as f16
        let half = consts.iter().find(|(n, _)| *n == "HALF").map(|c| c.1);
        let consts: Consts = consts
            .iter()
            .filter(|(n, _)| *n != "HALF")
            .copied()
            .collect();
        let src = FAMILIES
            .iter()
            .copied()
            .chain(FEATURE_FAMILIES.iter().map(|(n, s, _)| (*n, *s)))
            .find(|(n, _)| *n == family)
            .map(|(_, s)| {
                specialise(family, s, &consts)
                    .map(|s| keep_sg_branch(s, consts.contains(&("SG_ROWS", 1))))
                    .and_then(|s| unroll(family, &s))
                    .and_then(|s| half.map_or(Ok(s.clone()), |m| halve(family, &s, m)))
                    .map(|s| assemble(&s))
                    .map(|s| {
                        if self.subgroup8 {
                            s
                        } else {
                            without_subgroups(s)
                        }
                    })
            })
            .ok_or_else(|| Error::Shader {
                kernel: family.into(),
                msg: "unknown shader family".into(),
            })??;
        let module = self
            .scoped(family, || {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(family),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                };
                if unchecked_shaders() {
                    // SAFETY: opted into with WGCNN_SHADER_CHECKS=off (see `unchecked_shaders`):
                    // every kernel of this crate indexes only within the lengths its uniform
                    // gives (loads clamped or guarded, stores masked), every loop is bounded by
                    // uniform or constant trip counts, and no divisor a plan passes is zero.
                    unsafe {
                        self.device.create_shader_module_trusted(
                            desc,
                            wgpu::ShaderRuntimeChecks::unchecked(),
                        )
                    }
                } else {
                    self.device.create_shader_module(desc)
                }
            })
            .map_err(|e| Error::Shader {
                kernel: format!("{family}.wgsl"),
                msg: e.to_string(),
            })?;
        let m = Arc::new(module);
        modules.insert(key, m.clone());
        Ok(m)
    }

    /// The cached kernel `name` specialised with `consts`, compiling it on first use.
    /// `access` is the launch's binding list; it must match the kernel's row of [`KERNELS`]
    /// (its read-only inputs first, then its outputs).
    pub(crate) fn kernel_with(
        &self,
        name: &str,
        consts: &[(&'static str, u32)],
        access: &[Access],
    ) -> Result<Arc<Kernel>> {
        let spec = *KERNELS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::Shader {
                kernel: name.into(),
                msg: "no such kernel".into(),
            })?;
        let reads = access.iter().take_while(|a| **a == Access::Read).count();
        if reads != spec.inputs as usize || access.len() != (spec.inputs + spec.outputs) as usize {
            return Err(Error::Shader {
                kernel: name.into(),
                msg: format!(
                    "the launch binds {access:?}, the kernel {} inputs then {} outputs",
                    spec.inputs, spec.outputs
                ),
            });
        }
        let storage = spec.inputs + spec.outputs;
        if storage > self.limits.max_storage_buffers_per_shader_stage {
            return Err(Error::TooManyBindings {
                kernel: name.into(),
                bindings: storage,
                limit: self.limits.max_storage_buffers_per_shader_stage,
            });
        }
        let key = cache_key(spec.name, consts);
        if let Some(k) = self
            .kernels
            .kernels
            .lock()
            .map_err(|_| Error::Device("kernel cache lock poisoned".into()))?
            .get(&key)
        {
            return Ok(k.clone());
        }
        let t0 = Instant::now();
        let module = self.module(spec.family, consts)?;
        let (layout, pipeline) = self
            .scoped(spec.name, || {
                let mut entries = Vec::new();
                for b in 0..spec.inputs {
                    entries.push(storage_entry(b, true));
                }
                for b in spec.inputs..spec.inputs + spec.outputs {
                    entries.push(storage_entry(b, false));
                }
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: spec.inputs + spec.outputs,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                });
                let layout =
                    self.device
                        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                            label: Some(spec.name),
                            entries: &entries,
                        });
                let pl = self
                    .device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some(spec.name),
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    });
                let pipeline =
                    self.device
                        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                            label: Some(spec.name),
                            layout: Some(&pl),
                            module: &module,
                            entry_point: Some(spec.name),
                            // Every kernel writes its workgroup memory before reading it.
                            compilation_options: wgpu::PipelineCompilationOptions {
                                constants: &[],
                                zero_initialize_workgroup_memory: false,
                            },
                            cache: None,
                        });
                (layout, pipeline)
            })
            .map_err(|e| Error::Shader {
                kernel: spec.name.into(),
                msg: e.to_string(),
            })?;
        let kernel = Arc::new(Kernel {
            spec,
            consts: consts.to_vec(),
            pipeline,
            layout,
        });
        self.kernels
            .kernels
            .lock()
            .map_err(|_| Error::Device("kernel cache lock poisoned".into()))?
            .insert(key, kernel.clone());
        let c = &self.kernels;
        c.compiled.fetch_add(1, Ordering::Relaxed);
        c.compile_ns
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(kernel)
    }

    /// Pipelines compiled on this device so far and the host time their creation took
    /// (shader module + pipeline; on a CPU adapter this includes the JIT compilation).
    pub fn pipeline_stats(&self) -> PipelineStats {
        let c = &self.kernels;
        PipelineStats {
            pipelines: c.compiled.load(Ordering::Relaxed),
            seconds: c.compile_ns.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }
}
