//! The browser's limits (issue 16): every kernel fits WebGPU's storage-buffer budget per
//! shader stage (10 in Chromium), and a device with fewer fails when the plan's pipelines
//! are built with `Error::TooManyBindings` naming the kernel, before anything runs.

mod common;

use std::sync::Arc;

use wgcnn::gpu::{GpuContext, KERNELS};
use wgcnn::{nn, Backend, Error, Executor, Optimizer};

/// Chromium's `maxStorageBuffersPerShaderStage`.
const BROWSER_STORAGE_BUFFERS: u32 = 10;

#[test]
fn every_kernel_fits_the_browsers_storage_buffer_limit() {
    for k in KERNELS {
        assert!(
            k.inputs + k.outputs <= BROWSER_STORAGE_BUFFERS,
            "kernel {} binds {} storage buffers",
            k.name,
            k.inputs + k.outputs
        );
    }
}

/// A fresh context with `max_storage_buffers_per_shader_stage` lowered to `n`.
fn limited(n: u32) -> Option<Backend> {
    common::gpu()?; // honours WGCNN_SKIP_GPU, fails without an adapter
    let mut ctx = GpuContext::new().unwrap();
    ctx.limit_storage_buffers_per_stage(n);
    assert_eq!(
        ctx.limits().max_storage_buffers_per_shader_stage,
        n.min(
            common::gpu()?
                .gpu_context()?
                .limits()
                .max_storage_buffers_per_shader_stage
        )
    );
    Some(Backend::Gpu(Arc::new(ctx)))
}

#[test]
fn lenet5_plans_within_the_browsers_limit() {
    let Some(b) = limited(BROWSER_STORAGE_BUFFERS) else {
        return;
    };
    let g = nn::lenet5().unwrap();
    Executor::new(&b, &g, 8, Optimizer::momentum(0.05, 0.9), 0).unwrap();
}

#[test]
fn a_kernel_over_the_limit_is_a_typed_error_naming_it() {
    let Some(b) = limited(6) else { return };
    let g = nn::lenet5().unwrap();
    let e = Executor::new(&b, &g, 8, Optimizer::momentum(0.05, 0.9), 0)
        .err()
        .expect("LeNet-5 has kernels with 7 storage bindings (gemm, optimizer_step)");
    let Error::TooManyBindings {
        kernel,
        bindings,
        limit,
    } = &e
    else {
        panic!("expected TooManyBindings, got {e:?}");
    };
    let spec = KERNELS.iter().find(|k| k.name == kernel).unwrap();
    assert_eq!(*bindings, spec.inputs + spec.outputs);
    assert!(*bindings > 6);
    assert_eq!(*limit, 6);
    let msg = e.to_string();
    assert!(
        msg.contains(kernel.as_str()) && msg.contains("max_storage_buffers_per_shader_stage"),
        "{msg}"
    );
}
