//! One error type for the whole crate, grouped by kind: shape, limits, device,
//! shader, numerics, data, checkpoint, io.
//!
//! Every public function returns `Result<T, Error>`; shapes and device limits are
//! checked before anything is dispatched, so a bad call never reaches the GPU.

use std::path::PathBuf;

/// `Result<T, wgcnn::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- shape -----------------------------------------------------------
    /// Operand shapes do not fit the op (`op` names the op or graph node).
    #[error("shape error in {op}: {msg}")]
    Shape { op: String, msg: String },

    /// A parameter is out of its valid range (stride 0, kernel larger than input, ...).
    #[error("invalid argument to {op}: {msg}")]
    InvalidArgument { op: String, msg: String },

    // ---- limits ----------------------------------------------------------
    /// A tensor is larger than the device allows for one binding or buffer.
    #[error(
        "{op}: tensor '{tensor}' needs {bytes} bytes, more than the device limit \
         {limit_name} = {limit} bytes"
    )]
    TooLarge {
        op: String,
        tensor: String,
        bytes: u64,
        limit_name: &'static str,
        limit: u64,
    },

    /// A kernel binds more storage buffers than the device allows per shader stage
    /// (`max_storage_buffers_per_shader_stage`: 10 in Chromium's WebGPU, 8 in the WebGPU
    /// defaults). Checked when the kernel's pipeline is built.
    #[error(
        "kernel '{kernel}' binds {bindings} storage buffers, more than the device limit \
         max_storage_buffers_per_shader_stage = {limit}"
    )]
    TooManyBindings {
        kernel: String,
        bindings: u32,
        limit: u32,
    },

    // ---- device ----------------------------------------------------------
    /// A kernel needs an optional device feature the adapter does not offer (`feature` is
    /// its WebGPU name, e.g. `shader-f16`). Checked before any GPU work.
    #[error("kernel '{kernel}' needs the device feature {feature}, which adapter '{adapter}' does not offer")]
    MissingFeature {
        kernel: String,
        feature: &'static str,
        adapter: String,
    },

    /// No usable adapter. The message says how to get one.
    #[error("no WebGPU adapter found{detail}. On Linux without a GPU install Mesa's CPU Vulkan driver: `apt-get install mesa-vulkan-drivers` (or try WGCNN_BACKEND=gl for llvmpipe)")]
    NoAdapter { detail: String },

    /// Requesting the device, mapping a buffer or submitting failed, or the device was lost.
    #[error("device error: {0}")]
    Device(String),

    /// The device ran out of memory while allocating `what`.
    #[error("out of GPU memory while {what}: {msg}")]
    OutOfMemory { what: String, msg: String },

    /// Data-parallel training (the `distributed` feature): a collective failed, a rank did
    /// not answer in time (`rank` names it), or the ranks disagree (world size, step).
    #[error("distributed training: rank {rank}: {msg}")]
    Distributed { rank: usize, msg: String },

    // ---- shader ----------------------------------------------------------
    /// Shader compilation or pipeline validation failed, or (under `WGCNN_VALIDATE=1`) the
    /// kernel's result disagreed with its CPU twin; `kernel` names the entry point.
    #[error("shader error in kernel '{kernel}': {msg}")]
    Shader { kernel: String, msg: String },

    // ---- numerics --------------------------------------------------------
    /// A NaN or infinity appeared in the loss or the gradients.
    #[error("non-finite loss or gradient detected at step {step}")]
    NonFinite { step: u64 },

    // ---- data ------------------------------------------------------------
    /// A data file is malformed (bad magic, wrong counts, truncated, ...).
    #[error("data error in {}: {msg}", path.display())]
    Data { path: PathBuf, msg: String },

    // ---- checkpoint ------------------------------------------------------
    /// A checkpoint does not match the model or is corrupt.
    #[error("checkpoint error in {}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },

    // ---- io --------------------------------------------------------------
    /// An I/O error on a named path.
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn shape(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Shape {
            op: op.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn invalid(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op: op.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
