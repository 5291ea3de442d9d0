//! Adapter choice, device limits and error capture.
//!
//! The best adapter wins (discrete > integrated > virtual > CPU; Vulkan/Metal/DX12
//! before GL on a tie). `WGCNN_BACKEND=vulkan|metal|dx12|gl` restricts the backend,
//! `WGCNN_ADAPTER=<substring>` picks an adapter by name. [`GpuContext::new_for_local_rank`]
//! (one process per GPU, e.g. MPI ranks on a machine) takes the `local_rank`-th (modulo
//! their count) of the adapters that tie for best, unless `WGCNN_ADAPTER` names one. The
//! device is requested with the adapter's own limits, not the downlevel defaults.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// What was chosen, for the user to see.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// The optional shader features the device was opened with.
    pub caps: ShaderCaps,
}

/// Optional shader features of the device: requested when the adapter has them, never
/// required (their absence only disables the kernels that need them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaderCaps {
    /// `Features::SHADER_F16`: f16 arithmetic and 16-bit storage in WGSL (`enable f16;`).
    pub f16: bool,
    /// `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` enabled and a 16×16×16 configuration with
    /// f16 inputs and an f32 accumulator listed by `Adapter::cooperative_matrix_properties`.
    pub coop_16x16_f16: bool,
    /// The adapter's largest subgroup size (the cooperative-matrix kernel's workgroup size).
    pub subgroup_size: u32,
}

impl ShaderCaps {
    /// What `adapter` offers, and the features to request for it.
    fn of(adapter: &wgpu::Adapter) -> (Self, wgpu::Features) {
        let have = adapter.features();
        let mut want = wgpu::Features::empty();
        let f16 = have.contains(wgpu::Features::SHADER_F16);
        if f16 {
            want |= wgpu::Features::SHADER_F16;
        }
        let coop = f16
            && have.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
            && adapter.cooperative_matrix_properties().iter().any(|p| {
                use wgpu::CooperativeScalarType as T;
                (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
                    && p.ab_type == T::F16
                    && p.cr_type == T::F32
            });
        if coop {
            want |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let caps = ShaderCaps {
            f16,
            coop_16x16_f16: coop,
            subgroup_size: adapter.get_info().subgroup_max_size.max(1),
        };
        (caps, want)
    }
}

/// Whether the kernels may share loads across a subgroup of exactly 8 invocations — the 8
/// consecutive invocations of a 64-wide workgroup that share a register tile's rows
/// (`subgroupBroadcast`): `Features::SUBGROUP` with a fixed subgroup size of 8 (lavapipe on
/// 256-bit vectors), unless `WGCNN_SUBGROUPS=off`.
fn subgroups_of_eight(adapter: &wgpu::Adapter) -> bool {
    let info = adapter.get_info();
    adapter.features().contains(wgpu::Features::SUBGROUP)
        && (info.subgroup_min_size, info.subgroup_max_size) == (8, 8)
        && !std::env::var("WGCNN_SUBGROUPS").is_ok_and(|v| v == "off")
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {}{})",
            self.name,
            self.backend,
            self.device_type,
            if self.driver.is_empty() {
                String::new()
            } else {
                format!(", {}", self.driver)
            }
        )?;
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "; shader-f16: {}, cooperative matrix 16×16 f16→f32: {}",
            yes(self.caps.f16),
            yes(self.caps.coop_16x16_f16)
        )
    }
}

/// The device: adapter info, limits, queue, and the pipeline cache.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    pub(crate) summary: AdapterSummary,
    /// Subgroups enabled, each exactly 8 invocations (see [`subgroups_of_eight`]).
    pub(crate) subgroup8: bool,
    pub(crate) kernels: super::kernels::KernelCache,
    /// Why the device is unusable: lost (or, in the browser, the first uncaptured error).
    lost: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.summary)
            .finish()
    }
}

fn parse_backend_env() -> Result<wgpu::Backends> {
    match std::env::var("WGCNN_BACKEND") {
        Err(_) => Ok(wgpu::Backends::all()),
        Ok(v) => match v.to_ascii_lowercase().as_str() {
            "" => Ok(wgpu::Backends::all()),
            "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
            "metal" => Ok(wgpu::Backends::METAL),
            "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
            "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
            other => Err(Error::invalid(
                "WGCNN_BACKEND",
                format!("unknown backend '{other}' (expected vulkan|metal|dx12|gl)"),
            )),
        },
    }
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    }
}

impl GpuContext {
    /// Picks the best adapter (see the module docs) and opens a device on it (native only:
    /// blocks on [`GpuContext::new_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// One process per GPU: among the adapters that tie for best (same device type and
    /// backend class; e.g. a machine's 8 discrete GPUs on Vulkan), the one at
    /// `local_rank % count`, in enumeration order. `WGCNN_ADAPTER` still overrides: the first
    /// adapter whose name contains it is taken, whatever the rank.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_for_local_rank(local_rank: usize) -> Result<Self> {
        pollster::block_on(Self::new_async_for(Some(local_rank)))
    }

    /// Picks the best adapter (see the module docs) and opens a device on it. In the browser
    /// (wasm32) this is the only constructor: the page's `navigator.gpu` adapter, or its
    /// fallback adapter (e.g. SwiftShader) when that is all there is; a fallback adapter is
    /// reported as device type `Cpu` with the driver "WebGPU fallback adapter".
    pub async fn new_async() -> Result<Self> {
        Self::new_async_for(None).await
    }

    /// [`GpuContext::new_async`], taking the `local_rank`-th of the best adapters.
    async fn new_async_for(local_rank: Option<usize>) -> Result<Self> {
        let backends = parse_backend_env()?;
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        #[cfg_attr(not(target_arch = "wasm32"), allow(unused_mut))]
        let mut adapters = instance.enumerate_adapters(backends).await;
        #[cfg(target_arch = "wasm32")]
        if adapters.is_empty() {
            // the browser offers only a fallback adapter (no hardware GPU, or blocklisted)
            let opts = wgpu::RequestAdapterOptions {
                force_fallback_adapter: true,
                ..Default::default()
            };
            if let Ok(a) = instance.request_adapter(&opts).await {
                adapters.push(a);
            }
        }
        let all_names: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        if let Ok(want) = std::env::var("WGCNN_ADAPTER") {
            let want_l = want.to_ascii_lowercase();
            adapters.retain(|a| a.get_info().name.to_ascii_lowercase().contains(&want_l));
            if adapters.is_empty() {
                return Err(Error::NoAdapter {
                    detail: format!(
                        " whose name contains WGCNN_ADAPTER='{want}' (available: {})",
                        if all_names.is_empty() {
                            "none".to_string()
                        } else {
                            all_names.join(", ")
                        }
                    ),
                });
            }
        }
        let rank_of = |a: &wgpu::Adapter| {
            let i = a.get_info();
            (type_rank(i.device_type), backend_rank(i.backend))
        };
        adapters.sort_by_key(rank_of);
        let pick = match local_rank {
            Some(r) if std::env::var("WGCNN_ADAPTER").is_err() && !adapters.is_empty() => {
                let best = rank_of(&adapters[0]);
                r % adapters.iter().filter(|a| rank_of(a) == best).count()
            }
            _ => 0,
        };
        let Some(adapter) = adapters.into_iter().nth(pick) else {
            return Err(Error::NoAdapter {
                detail: if backends == wgpu::Backends::all() {
                    String::new()
                } else {
                    format!(" for WGCNN_BACKEND={backends:?}")
                },
            });
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (caps, mut features) = ShaderCaps::of(&adapter);
        let subgroup8 = subgroups_of_eight(&adapter);
        if subgroup8 {
            features |= wgpu::Features::SUBGROUP;
        }
        let experimental = if caps.coop_16x16_f16 {
            // SAFETY: the opt-in only permits requesting EXPERIMENTAL_COOPERATIVE_MATRIX;
            // it is used by `gemm_coop` alone (shaders/matmul_coop.wgsl), which is held to its
            // CPU twin by tests/precision.rs wherever the adapter offers it.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgcnn"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: experimental,
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Device(format!("request_device on '{}': {e}", info.name)))?;
        let lost = Arc::new(Mutex::new(None));
        let lost2 = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut l) = lost2.lock() {
                *l = Some(format!("device lost: {reason:?}: {msg}"));
            }
        });
        // Errors outside our error scopes must not abort the process; they are
        // reported by the scopes around every pipeline creation and submit.
        #[cfg(not(target_arch = "wasm32"))]
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            eprintln!("wgcnn: uncaptured wgpu error: {e}");
        }));
        // The browser cannot wait on an error scope (see `scoped`): the first error is kept
        // and fails the next call into the device.
        #[cfg(target_arch = "wasm32")]
        {
            let first = lost.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if let Ok(mut l) = first.lock() {
                    l.get_or_insert_with(|| format!("WebGPU error: {e}"));
                }
            }));
        }
        let mut summary = AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            caps,
        };
        if info.backend == wgpu::Backend::BrowserWebGpu {
            // wgpu maps the browser's `isFallbackAdapter` to DeviceType::Cpu
            if info.device_type == wgpu::DeviceType::Cpu {
                summary.driver = "WebGPU fallback adapter".into();
            }
            if summary.name.is_empty() {
                summary.name = "browser WebGPU adapter".into();
            }
        }
        Ok(GpuContext {
            device,
            queue,
            limits,
            subgroup8,
            summary,
            kernels: Default::default(),
            lost,
        })
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// The optional shader features the device was opened with.
    pub fn caps(&self) -> ShaderCaps {
        self.summary.caps
    }

    /// Whether the kernels share register-tile rows across subgroups of exactly 8
    /// invocations (`Features::SUBGROUP` with subgroup size 8, e.g. lavapipe; off with
    /// `WGCNN_SUBGROUPS=off`): the pointwise convolutions and the tiled GEMM then load each
    /// row once per subgroup and broadcast it (`SG_ROWS`), which halved their time on
    /// lavapipe (docs/results/issue17-subgroups.md).
    pub fn subgroups_of_eight(&self) -> bool {
        self.subgroup8
    }

    /// The device limits (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Lowers `max_storage_buffers_per_shader_stage` as the kernels see it (never raises
    /// it): every pipeline built afterwards is checked against `n`, e.g. the browser's 10,
    /// and one binding more storage buffers fails with [`Error::TooManyBindings`].
    pub fn limit_storage_buffers_per_stage(&mut self, n: u32) {
        let l = &mut self.limits.max_storage_buffers_per_shader_stage;
        *l = (*l).min(n);
    }

    /// Fails if the device was lost (in the browser also: after an uncaptured WebGPU error).
    pub(crate) fn check_lost(&self) -> Result<()> {
        if let Ok(l) = self.lost.lock() {
            if let Some(msg) = l.as_ref() {
                return Err(Error::Device(msg.clone()));
            }
        }
        Ok(())
    }

    /// Runs `f` (the browser form).
    ///
    /// In the browser nothing may block, so no scope is pushed: WebGPU reports the error
    /// asynchronously to the uncaptured-error handler, and it fails the next call (it is
    /// named there, not here).
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn scoped<T>(&self, _what: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_lost()?;
        Ok(f())
    }

    /// Runs `f` inside validation + out-of-memory error scopes and turns a captured
    /// error into a typed one that names `what`.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_lost()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let val_err = pollster::block_on(val.pop());
        let oom_err = pollster::block_on(oom.pop());
        if let Some(e) = oom_err {
            return Err(Error::OutOfMemory {
                what: what.to_string(),
                msg: e.to_string(),
            });
        }
        if let Some(e) = val_err {
            return Err(Error::Device(format!("{what}: {e}")));
        }
        Ok(out)
    }

    /// Checks a binding of `bytes` against the storage-binding and buffer limits.
    pub(crate) fn check_binding(&self, op: &str, tensor: &str, bytes: u64) -> Result<()> {
        let lim = self.limits.max_storage_buffer_binding_size;
        if bytes > lim {
            return Err(Error::TooLarge {
                op: op.to_string(),
                tensor: tensor.to_string(),
                bytes,
                limit_name: "max_storage_buffer_binding_size",
                limit: lim,
            });
        }
        if bytes > self.limits.max_buffer_size {
            return Err(Error::TooLarge {
                op: op.to_string(),
                tensor: tensor.to_string(),
                bytes,
                limit_name: "max_buffer_size",
                limit: self.limits.max_buffer_size,
            });
        }
        Ok(())
    }

    /// Workgroup grid for `groups` workgroups, folded into 2-D/3-D so that no
    /// dimension exceeds `max_compute_workgroups_per_dimension`.
    pub(crate) fn grid(&self, groups: u64) -> Result<[u32; 3]> {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1) as u64;
        let groups = groups.max(1);
        if groups <= max {
            return Ok([groups as u32, 1, 1]);
        }
        let y = groups.div_ceil(max);
        if y <= max {
            return Ok([max as u32, y as u32, 1]);
        }
        let z = y.div_ceil(max);
        if z <= max {
            return Ok([max as u32, max as u32, z as u32]);
        }
        Err(Error::TooLarge {
            op: "dispatch".into(),
            tensor: "grid".into(),
            bytes: groups,
            limit_name: "max_compute_workgroups_per_dimension³",
            limit: max * max * max,
        })
    }
}
