//! Shader sources and the pipeline cache.
//!
//! One WGSL file per op family in `shaders/`, each prefixed with `shaders/common.wgsl`.
//! Every kernel binds its read-only inputs first, then its outputs, then one uniform
//! params struct. Pipelines and bind group layouts are created once per device and
//! cached by entry point; creation runs inside error scopes so a shader or pipeline
//! validation error becomes [`Error::Shader`] naming the kernel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::device::GpuContext;
use crate::error::{Error, Result};

const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// The op families: `(name, source without the common prelude)`.
const FAMILIES: &[(&str, &str)] = &[
    ("conv2d", include_str!("../../shaders/conv2d.wgsl")),
    ("pool", include_str!("../../shaders/pool.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    (
        "elementwise",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("loss", include_str!("../../shaders/loss.wgsl")),
    ("optim", include_str!("../../shaders/optim.wgsl")),
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
/// under the same name.
pub const KERNELS: &[KernelSpec] = &[
    k("conv2d_forward", "conv2d", 3, 1),
    k("conv2d_backward_input", "conv2d", 3, 1),
    k("conv2d_backward_weight", "conv2d", 3, 2),
    k("max_pool2d_forward", "pool", 1, 2),
    k("max_pool2d_backward", "pool", 2, 1),
    k("gemm", "matmul", 4, 2),
    k("activation_forward", "elementwise", 1, 1),
    k("activation_backward", "elementwise", 2, 1),
    k("add", "elementwise", 2, 1),
    k("softmax_forward", "loss", 1, 1),
    k("cross_entropy", "loss", 2, 2),
    k("mse", "loss", 2, 2),
    k("optimizer_step", "optim", 1, 3),
];

/// The full WGSL source of every family (common prelude included), for validation
/// and translation tests.
pub fn shader_sources() -> Vec<(&'static str, String)> {
    FAMILIES
        .iter()
        .map(|(name, src)| (*name, format!("{COMMON}\n{src}")))
        .collect()
}

/// A compiled kernel: its pipeline and bind group layout.
#[derive(Debug)]
pub struct Kernel {
    pub spec: KernelSpec,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// Pipelines and shader modules, created once per device.
#[derive(Default)]
pub(crate) struct KernelCache {
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    kernels: Mutex<HashMap<&'static str, Arc<Kernel>>>,
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
    fn module(&self, family: &'static str) -> Result<Arc<wgpu::ShaderModule>> {
        let mut modules = self
            .kernels
            .modules
            .lock()
            .map_err(|_| Error::Device("shader cache lock poisoned".into()))?;
        if let Some(m) = modules.get(family) {
            return Ok(m.clone());
        }
        let src = FAMILIES
            .iter()
            .find(|(n, _)| *n == family)
            .map(|(_, s)| format!("{COMMON}\n{s}"))
            .ok_or_else(|| Error::Shader {
                kernel: family.into(),
                msg: "unknown shader family".into(),
            })?;
        let module = self
            .scoped(family, || {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(family),
                        source: wgpu::ShaderSource::Wgsl(src.into()),
                    })
            })
            .map_err(|e| Error::Shader {
                kernel: format!("{family}.wgsl"),
                msg: e.to_string(),
            })?;
        let m = Arc::new(module);
        modules.insert(family, m.clone());
        Ok(m)
    }

    /// The cached kernel `name`, compiling it on first use.
    pub(crate) fn kernel(&self, name: &str) -> Result<Arc<Kernel>> {
        let spec = *KERNELS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::Shader {
                kernel: name.into(),
                msg: "no such kernel".into(),
            })?;
        if let Some(k) = self
            .kernels
            .kernels
            .lock()
            .map_err(|_| Error::Device("kernel cache lock poisoned".into()))?
            .get(spec.name)
        {
            return Ok(k.clone());
        }
        let module = self.module(spec.family)?;
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
                            compilation_options: Default::default(),
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
            pipeline,
            layout,
        });
        self.kernels
            .kernels
            .lock()
            .map_err(|_| Error::Device("kernel cache lock poisoned".into()))?
            .insert(spec.name, kernel.clone());
        Ok(kernel)
    }
}
