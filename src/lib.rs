//! # wgcnn — convolutional networks on any GPU through WebGPU
//!
//! The architecture in one sentence: **graph → plan → executor → device**. A model is
//! a graph of ops ([`graph`]); the graph is planned for a batch size (schedule,
//! lifetimes, memory) ([`plan`]); an executor runs the plan with the WGSL kernels on
//! the GPU or with their CPU twins ([`exec`]); the device layer picks the adapter and
//! caches pipelines ([`gpu`]). Each op family lives in one place, [`ops`]: its kernel
//! launches (which every consumer runs from the same description) and its graph ops'
//! forward and gradient rules.
//!
//! Every kernel is also callable on its own through [`Backend`]:
//!
//! ```no_run
//! use wgcnn::{Backend, Conv2dParams, ndarray::Array4};
//! # fn main() -> Result<(), wgcnn::Error> {
//! let x = Array4::<f32>::ones((1, 1, 5, 5));
//! let w = Array4::<f32>::ones((2, 1, 3, 3));
//! let y_cpu = Backend::cpu().conv2d(&x, &w, None, Conv2dParams::default())?;
//! let y_gpu = Backend::gpu()?.conv2d(&x, &w, None, Conv2dParams::default())?;
//! assert_eq!(y_cpu, y_gpu);
//! # Ok(()) }
//! ```

pub use ndarray;
pub use shape::{Pool1dParams, Pool3dParams};

pub mod backend;
pub mod checkpoint;
pub mod cpu;
pub mod data;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod error;
pub mod exec;
pub mod gpu;
pub mod graph;
pub mod init;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod shape;
pub mod train;

pub use backend::{Backend, BatchNormGrads, BatchNormTrain, Conv2dGrads, LinearGrads};
pub use error::{Error, Result};
pub use exec::{Executor, Metrics, Targets};
pub use graph::Graph;
pub use init::Init;
pub use optim::{Optimizer, OptimizerKind, ParamSelect};
pub use plan::{GradScaler, Precision};
pub use shape::{
    Activation, Conv2dParams, ConvDims, ConvParams, Padding, Pool2dParams, PoolKind, PoolParams,
};

/// The README's Rust snippets, compiled as doc tests so they keep compiling.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
