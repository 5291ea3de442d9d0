//! Buffers, bind groups, dispatch encoding and staging readback.

use std::num::NonZeroU64;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::device::GpuContext;
use super::kernels::Kernel;
use crate::error::{Error, Result};
use crate::ops::{Access, Launch};

/// Usage of every storage buffer: bound by kernels, written by the queue, copied out.
pub(crate) const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// A byte range of a buffer, as bound to a kernel.
#[derive(Clone, Debug)]
pub(crate) struct Slice {
    pub buffer: Arc<wgpu::Buffer>,
    pub offset: u64,
    pub bytes: u64,
}

impl Slice {
    pub fn whole(buffer: Arc<wgpu::Buffer>) -> Self {
        let bytes = buffer.size();
        Slice {
            buffer,
            offset: 0,
            bytes,
        }
    }
}

/// One recorded dispatch: a kernel, its bind group and its workgroup grid.
#[derive(Debug)]
pub(crate) struct Dispatch {
    pub kernel: Arc<Kernel>,
    pub bind_group: wgpu::BindGroup,
    pub grid: [u32; 3],
}

/// Bytes of a slice of 4-byte elements, at least 4 (bindings can't be empty).
pub(crate) fn bytes_of_len(len: usize) -> u64 {
    (len.max(1) * 4) as u64
}

impl GpuContext {
    /// A storage buffer holding `data` (at least 4 bytes).
    pub(crate) fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Arc<wgpu::Buffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = if bytes.is_empty() {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: &[0u8; 4],
                    usage: STORAGE,
                })
        } else {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage: STORAGE,
                })
        };
        Arc::new(buf)
    }

    /// A zero-filled storage buffer of `bytes` bytes (at least 4).
    pub(crate) fn zeros(&self, label: &str, bytes: u64) -> Arc<wgpu::Buffer> {
        Arc::new(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: STORAGE,
            mapped_at_creation: false,
        }))
    }

    /// A uniform buffer holding `contents` (a uniform struct's bytes).
    pub(crate) fn uniform(&self, label: &str, contents: &[u8]) -> Arc<wgpu::Buffer> {
        Arc::new(
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                }),
        )
    }

    /// Records launch `l` over `slices` (one per binding, in order): its pipeline,
    /// specialisation and grid, and a uniform buffer holding its uniform block (returned, for
    /// callers that rewrite it).
    pub(crate) fn record_launch(
        &self,
        l: &dyn Launch,
        slices: &[Slice],
    ) -> Result<(Dispatch, Arc<wgpu::Buffer>)> {
        let call = l.gpu(self)?;
        let access: Vec<Access> = l.bindings().iter().map(|b| b.access).collect();
        let kernel = self.kernel_with(call.entry, &call.consts, &access)?;
        let ubuf = self.uniform(call.entry, &l.uniform());
        let d = self.dispatch(&kernel, slices, &ubuf, call.groups)?;
        Ok((d, ubuf))
    }

    /// Binds `slices` (inputs then outputs) and `params` to `kernel`, and sizes the grid
    /// for `groups` workgroups.
    pub(crate) fn dispatch(
        &self,
        kernel: &Arc<Kernel>,
        slices: &[Slice],
        params: &wgpu::Buffer,
        groups: u64,
    ) -> Result<Dispatch> {
        let spec = kernel.spec;
        if slices.len() != (spec.inputs + spec.outputs) as usize {
            return Err(Error::Shader {
                kernel: spec.name.into(),
                msg: format!(
                    "expects {} buffers, got {}",
                    spec.inputs + spec.outputs,
                    slices.len()
                ),
            });
        }
        for s in slices {
            self.check_binding(spec.name, "binding", s.bytes)?;
        }
        let mut entries: Vec<wgpu::BindGroupEntry> = slices
            .iter()
            .enumerate()
            .map(|(i, s)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &s.buffer,
                    offset: s.offset,
                    size: NonZeroU64::new(s.bytes),
                }),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: slices.len() as u32,
            resource: params.as_entire_binding(),
        });
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(spec.name),
            layout: &kernel.layout,
            entries: &entries,
        });
        Ok(Dispatch {
            kernel: kernel.clone(),
            bind_group,
            grid: self.grid(groups)?,
        })
    }

    /// Records `dispatches` into one compute pass of `encoder`.
    pub(crate) fn encode<'d>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dispatches: impl IntoIterator<Item = &'d Dispatch>,
    ) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgcnn"),
            timestamp_writes: None,
        });
        for d in dispatches {
            pass.set_pipeline(&d.kernel.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.grid[0], d.grid[1], d.grid[2]);
        }
    }

    /// Runs `dispatches` in one submit, then copies `reads` back to the host.
    pub(crate) fn run<'d>(
        &self,
        dispatches: impl IntoIterator<Item = &'d Dispatch>,
        reads: &[Slice],
    ) -> Result<Vec<Vec<u8>>> {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("run") });
        self.encode(&mut encoder, dispatches);
        self.finish_and_read(encoder, reads)
    }

    /// Appends copies of `reads` to `encoder`, submits it, waits, and returns the bytes
    /// (blocking: native only; in the browser an error, see [`super::block_on`]).
    pub(crate) fn finish_and_read(
        &self,
        encoder: wgpu::CommandEncoder,
        reads: &[Slice],
    ) -> Result<Vec<Vec<u8>>> {
        super::block_on(self.finish_and_read_async(encoder, reads))
    }

    /// Appends copies of `reads` to `encoder`, submits it, and resolves to the bytes once
    /// the device has copied them (natively the wait happens here, in `poll`; in the browser
    /// the page's event loop drives the mapping).
    pub(crate) async fn finish_and_read_async(
        &self,
        mut encoder: wgpu::CommandEncoder,
        reads: &[Slice],
    ) -> Result<Vec<Vec<u8>>> {
        let total: u64 = reads.iter().map(|r| r.bytes.next_multiple_of(4)).sum();
        let staging = (total > 0).then(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: total,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let mut at = 0;
        if let Some(st) = &staging {
            for r in reads {
                encoder.copy_buffer_to_buffer(&r.buffer, r.offset, st, at, r.bytes);
                at += r.bytes.next_multiple_of(4);
            }
        }
        self.scoped("submit", || self.queue.submit(Some(encoder.finish())))?;
        let Some(staging) = staging else {
            #[cfg(not(target_arch = "wasm32"))]
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Device(format!("poll: {e}")))?;
            #[cfg(target_arch = "wasm32")]
            {
                let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
                self.queue.on_submitted_work_done(move || {
                    let _ = tx.send(());
                });
                rx.receive().await;
                self.check_lost()?;
            }
            return Ok(Vec::new());
        };
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device(format!("poll: {e}")))?;
        let mapped = rx.receive().await;
        self.check_lost()?;
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::Device(format!("map_async failed: {e}"))),
            None => return Err(Error::Device("map_async callback dropped".into())),
        }
        let mut out = Vec::with_capacity(reads.len());
        {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Device(format!("get_mapped_range: {e}")))?;
            let mut at = 0usize;
            for r in reads {
                out.push(view[at..at + r.bytes as usize].to_vec());
                at += r.bytes.next_multiple_of(4) as usize;
            }
        }
        staging.unmap();
        Ok(out)
    }
}

/// Reinterprets little-endian bytes as `f32`s.
pub(crate) fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
