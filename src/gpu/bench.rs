//! Launches timed on their own, on device-resident buffers filled with valid values (for
//! `examples/bench/main.rs`): the same pipelines, specialisation and grids as the executor, from
//! the same [`Launch`] descriptions.

use std::sync::Arc;

use super::buffers::{bytes_of_len, Dispatch, Slice};
use super::device::GpuContext;
use crate::error::Result;
use crate::ops::{Access, Data, Launch};

/// `len` deterministic values in [−1, 1) (an xorshift stream from `seed`), for benchmarks
/// and tests.
pub fn bench_values(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Deterministic integers in `0..bound`.
fn bench_indices(seed: u64, len: usize, bound: usize) -> Vec<u32> {
    bench_values(seed, len.max(1))
        .iter()
        .map(|v| (((v + 1.0) * 0.5 * bound as f32) as u32).min(bound.max(1) as u32 - 1))
        .collect()
}

/// Dispatches recorded by [`GpuContext::bench_program`] on their own buffers.
pub struct BenchProgram {
    pub launches: Vec<Arc<dyn Launch>>,
    pub(crate) dispatches: Vec<Dispatch>,
    pub(crate) _buffers: Vec<Arc<wgpu::Buffer>>,
}

impl BenchProgram {
    /// The entry point recorded for launch `i` and its specialisation, e.g.
    /// `conv_backward_input_rows ACT=1 HAS_BIAS=0 … IR=6 IS=16`.
    pub fn variant(&self, i: usize) -> String {
        let k = &self.dispatches[i].kernel;
        let mut s = k.spec.name.to_string();
        for (n, v) in &k.consts {
            s.push_str(&format!(" {n}={v}"));
        }
        s
    }
}

impl std::fmt::Debug for BenchProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchProgram")
            .field("launches", &self.launches)
            .finish()
    }
}

impl GpuContext {
    /// Records one dispatch of each launch on its own freshly filled buffers (inputs with
    /// deterministic values in [−1, 1), valid indices and class labels). Pipelines are
    /// compiled here.
    pub fn bench_program(&self, launches: &[Arc<dyn Launch>]) -> Result<BenchProgram> {
        let mut bufs = Vec::new();
        let mut dispatches = Vec::new();
        for (i, l) in launches.iter().enumerate() {
            let mut slices = Vec::new();
            for (k, b) in l.bindings().iter().enumerate() {
                let seed = 1 + 16 * i as u64 + k as u64;
                let buf = match (b.access, b.data) {
                    (Access::Write, _) => self.zeros("bench.out", bytes_of_len(b.len.max(1))),
                    (_, Data::Index(bound)) => {
                        self.upload("bench.idx", &bench_indices(seed, b.len, bound))
                    }
                    (_, Data::Counter) => self.upload("bench.step", &[1u32]),
                    (_, Data::F16Pairs) => self.upload(
                        "bench.in",
                        &crate::cpu::matmul::pack_f16(&bench_values(seed, 2 * b.len.max(1))),
                    ),
                    (_, Data::F32) => self.upload("bench.in", &bench_values(seed, b.len.max(1))),
                };
                slices.push(Slice::whole(buf.clone()));
                bufs.push(buf);
            }
            let (d, u) = self.record_launch(l.as_ref(), &slices)?;
            bufs.push(u);
            dispatches.push(d);
        }
        Ok(BenchProgram {
            launches: launches.to_vec(),
            dispatches,
            _buffers: bufs,
        })
    }

    /// Runs `reps` repetitions of the program's dispatches (or of dispatch `only`) in one
    /// compute pass and one submit, waits for the device, and returns the wall-clock
    /// seconds per repetition (submit and wait included, amortised over the repetitions).
    pub fn bench_run(&self, prog: &BenchProgram, only: Option<usize>, reps: usize) -> Result<f64> {
        let ds: Vec<&Dispatch> = match only {
            Some(i) => vec![&prog.dispatches[i]],
            None => prog.dispatches.iter().collect(),
        };
        let t0 = std::time::Instant::now();
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bench"),
            });
        let reps = reps.max(1);
        self.encode(&mut encoder, (0..reps).flat_map(|_| ds.iter().copied()));
        self.finish_and_read(encoder, &[])?;
        Ok(t0.elapsed().as_secs_f64() / reps as f64)
    }

    /// Host seconds to encode the program's dispatches into one compute pass and finish the
    /// command buffer (what a training step costs the CPU before its submit), the mean of
    /// `reps` encodings. Nothing is submitted.
    pub fn bench_encode(&self, prog: &BenchProgram, reps: usize) -> f64 {
        let t0 = std::time::Instant::now();
        for _ in 0..reps.max(1) {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("bench"),
                });
            self.encode(&mut encoder, &prog.dispatches);
            drop(encoder.finish());
        }
        t0.elapsed().as_secs_f64() / reps.max(1) as f64
    }
}
