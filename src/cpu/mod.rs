//! The CPU reference path: one twin per GPU kernel, with the kernel's name, written
//! straight from the formula as plain loops over row-major slices. Slow and obvious on
//! purpose: these functions are what the GPU path is proven against.

pub mod conv2d;
pub mod elementwise;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod pool;
