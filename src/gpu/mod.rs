//! The device layer: adapter choice and limits ([`device`]), shader sources and the
//! pipeline cache ([`kernels`]), buffers, dispatch encoding and readback ([`buffers`]),
//! register tiles per adapter class (`tiles`), and launches timed on their own ([`mod@bench`]).

pub mod bench;
pub mod buffers;
pub mod device;
pub mod kernels;
pub(crate) mod tiles;

pub use bench::BenchProgram;
pub use device::{AdapterSummary, GpuContext};
pub use kernels::{shader_sources, KERNELS};
