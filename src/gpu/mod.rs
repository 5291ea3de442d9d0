//! The device layer: adapter choice and limits ([`device`]), shader sources and the
//! pipeline cache ([`kernels`]), buffers, dispatch encoding and readback ([`buffers`]),
//! register tiles per adapter class (`tiles`) and their autotuner ([`tune`]), and launches timed
//! on their own ([`mod@bench`]).

pub mod bench;
pub mod buffers;
pub mod device;
pub mod kernels;
pub(crate) mod tiles;
pub mod tune;

pub use bench::BenchProgram;
pub use device::{AdapterSummary, GpuContext, ShaderCaps};
pub use kernels::{feature_shader_sources, shader_sources, subgroup_shader_sources, KERNELS};

/// `Instant` that works in the browser too (`performance.now()` there).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use std::time::Instant;
#[cfg(target_arch = "wasm32")]
pub(crate) use web_time::Instant;

/// Waits for an async readback: the native blocking API is this over the `*_async` forms.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn block_on<T>(
    f: impl std::future::Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    pollster::block_on(f)
}

/// The browser cannot block: the future is polled once, which completes whatever needs no
/// device round trip (the CPU executor, an empty read); anything that would wait for the GPU
/// is an [`crate::Error::Device`] pointing to the `*_async` form.
#[cfg(target_arch = "wasm32")]
pub(crate) fn block_on<T>(
    f: impl std::future::Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => Err(crate::Error::Device(
            "a blocking GPU readback is not possible in the browser: use the *_async form (e.g. Executor::take_metrics_async)".into(),
        )),
    }
}
