//! The device layer: adapter choice and limits ([`device`]), shader sources and the
//! pipeline cache ([`kernels`]), buffers, dispatch encoding and readback ([`buffers`]),
//! and the functional ops on the GPU (`ops`, crate-private; used by [`crate::Backend`]).

pub mod buffers;
pub mod device;
pub mod kernels;
pub(crate) mod ops;

pub use device::{AdapterSummary, GpuContext};
pub use kernels::{shader_sources, KERNELS};
