//! The CPU reference path: one twin per GPU kernel, with the kernel's name, written
//! straight from the formula as plain loops over row-major slices. Slow and obvious on
//! purpose: these functions are what the GPU path is proven against.

pub mod augment;
pub mod conv;
pub mod elementwise;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod pool;

/// The convolution twins under their former 2-D names (the family serves 1–3 axes).
#[deprecated(
    note = "use `wgcnn::cpu::conv` (`conv_forward`, `conv_backward_input`, `conv_backward_weight`)"
)]
pub mod conv2d {
    pub use super::conv::conv_backward_input as conv2d_backward_input;
    pub use super::conv::conv_backward_weight as conv2d_backward_weight;
    pub use super::conv::conv_forward as conv2d_forward;
    pub use super::conv::ConvDims;
}
