//! Large tensors on the GPU against the CPU reference: sizes past one dispatch row.
//!
//! A dispatch dimension holds at most 65,535 workgroups (`max_compute_workgroups_per_dimension`),
//! i.e. 65,535 · 64 = 4,194,240 invocations for the 1-D kernels. Beyond that the host
//! folds the grid into 2-D/3-D and the shaders unfold it (`flat_group` in common.wgsl).
//! Every test here needs the fold: a wrong fold or unfold leaves the tail of the output
//! unwritten (zero) or writes elements twice/elsewhere, which the comparison catches at
//! the exact index. Inputs are pseudo-random so every element differs from its
//! neighbours.
//!
//! The elementwise tests use 65,535 · 256 + 1,000 elements: 262,156 workgroups, i.e. four
//! full rows of 65,535 plus a partial fifth, whose last workgroup is itself partial
//! (1,000 is not a multiple of 64), so both the unfolding and the bounds check of the
//! tail are exercised.
//!
//! Tolerances `|gpu − cpu| ≤ atol + rtol·|cpu|`: `add` and max-pooling are exact in f32
//! (one correctly rounded add; a copy of the max) so they are compared bit for bit; the
//! sigmoid differs only by the `exp` implementations (a few ulp: atol 1e-6, rtol 1e-5);
//! the 3×3 single-channel convolution sums 9 products plus a bias of O(1) values in a
//! possibly different order or with fused multiply-adds (≲ 10 ulp of Σ|terms| ≤ 10:
//! atol 1e-5, rtol 1e-5).
//!
//! Without an adapter the tests fail with a hint, like every GPU test; with
//! `WGCNN_SKIP_GPU=1` they are skipped.

mod common;

use common::values;

use std::time::Instant;

use common::{assert_close, gpu};
use wgcnn::ndarray::{Array1, Array4, ArrayD, IxDyn};
use wgcnn::{Activation, Backend, Conv2dParams, Pool2dParams};

/// Invocations of one full dispatch row: 65,535 workgroups of 64.
const ROW: usize = 65_535 * 64;

fn a4(seed: u64, d: [usize; 4]) -> Array4<f32> {
    Array4::from_shape_vec((d[0], d[1], d[2], d[3]), values(seed, d.iter().product()))
        .expect("shape")
}

fn flat<'a>(a: impl IntoIterator<Item = &'a f32>) -> Vec<f32> {
    a.into_iter().copied().collect()
}

/// Bit-for-bit equality, naming the first differing index.
fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        let bad = (i..got.len())
            .filter(|&j| got[j].to_bits() != want[j].to_bits())
            .count();
        panic!(
            "{what}: element {i} of {}: got {}, want {} ({bad} elements differ from there on)",
            got.len(),
            got[i],
            want[i]
        );
    }
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    eprintln!("{what}: {:.2} s", t.elapsed().as_secs_f64());
    r
}

fn gpu_or_skip() -> Option<Backend> {
    let g = gpu();
    if let Some(b) = &g {
        eprintln!("{}", b.describe());
    }
    g
}

/// 65,535 · 256 + 1,000 elements (16,777,960).
const EW_LEN: usize = ROW * 4 + 1000;
const _: () = assert!(EW_LEN > 65_535 * 256 && !EW_LEN.is_multiple_of(64));

#[test]
fn activation_past_one_dispatch_row() {
    let Some(g) = gpu_or_skip() else { return };
    let x = ArrayD::from_shape_vec(IxDyn(&[EW_LEN]), values(1, EW_LEN)).expect("shape");
    let act = Activation::Sigmoid;
    let want =
        timed("activation cpu", || Backend::cpu().activation(act, &x)).expect("cpu activation");
    let got = timed("activation gpu", || g.activation(act, &x)).expect("gpu activation");
    let worst = assert_close(
        "sigmoid, 16.8M elements",
        &flat(&got),
        &flat(&want),
        1e-6,
        1e-5,
    );
    eprintln!("activation: worst |err|/tol = {worst:.3}");
}

#[test]
fn activation_backward_past_one_dispatch_row() {
    let Some(g) = gpu_or_skip() else { return };
    let x = ArrayD::from_shape_vec(IxDyn(&[EW_LEN]), values(2, EW_LEN)).expect("shape");
    let dy = ArrayD::from_shape_vec(IxDyn(&[EW_LEN]), values(3, EW_LEN)).expect("shape");
    // LeakyReLU's gradient is exact (dy or α·dy): compared bit for bit
    let act = Activation::LeakyRelu(0.25);
    let want = Backend::cpu()
        .activation_backward(act, &x, &dy)
        .expect("cpu activation_backward");
    let got = timed("activation_backward gpu", || {
        g.activation_backward(act, &x, &dy)
    })
    .expect("gpu activation_backward");
    assert_bits_eq(
        "leaky-ReLU backward, 16.8M elements",
        &flat(&got),
        &flat(&want),
    );
}

#[test]
fn add_past_one_dispatch_row() {
    let Some(g) = gpu_or_skip() else { return };
    let a = ArrayD::from_shape_vec(IxDyn(&[EW_LEN]), values(4, EW_LEN)).expect("shape");
    let b = ArrayD::from_shape_vec(IxDyn(&[EW_LEN]), values(5, EW_LEN)).expect("shape");
    let want = Backend::cpu().add(&a, &b).expect("cpu add");
    let got = timed("add gpu", || g.add(&a, &b)).expect("gpu add");
    assert_bits_eq("add, 16.8M elements", &flat(&got), &flat(&want));
}

#[test]
fn conv2d_output_past_one_dispatch_row() {
    let Some(g) = gpu_or_skip() else { return };
    let x = a4(6, [2, 1, 1100, 1100]);
    let w = a4(7, [4, 1, 3, 3]);
    let b = Array1::from(values(8, 4));
    let p = Conv2dParams::default();
    let want =
        timed("conv2d cpu", || Backend::cpu().conv2d(&x, &w, Some(&b), p)).expect("cpu conv2d");
    assert_eq!(want.dim(), (2, 4, 1098, 1098));
    assert!(want.len() > 2 * ROW, "{} outputs", want.len());
    let got = timed("conv2d gpu", || g.conv2d(&x, &w, Some(&b), p)).expect("gpu conv2d");
    let worst = assert_close(
        "conv2d [2,1,1100,1100] * [4,1,3,3] (9.6M outputs)",
        &flat(&got),
        &flat(&want),
        1e-5,
        1e-5,
    );
    eprintln!("conv2d: worst |err|/tol = {worst:.3}");
}

#[test]
fn max_pool2d_past_one_dispatch_row() {
    let Some(g) = gpu_or_skip() else { return };
    // overlapping 3×3 windows, stride 1, padding 1: output as large as the input
    let pp = Pool2dParams {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    };
    let x = a4(9, [1, 4, 1050, 1050]);
    let (want_y, want_i) =
        timed("max_pool2d cpu", || Backend::cpu().max_pool2d(&x, pp)).expect("cpu max_pool2d");
    assert!(want_y.len() > ROW, "{} outputs", want_y.len());
    let (got_y, got_i) = timed("max_pool2d gpu", || g.max_pool2d(&x, pp)).expect("gpu max_pool2d");
    assert_bits_eq(
        "max_pool2d values (4.4M outputs)",
        &flat(&got_y),
        &flat(&want_y),
    );
    if let Some((k, (a, b))) = got_i
        .iter()
        .zip(want_i.iter())
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!("max_pool2d argmax: output {k}: got {a}, want {b}");
    }
    // backward over 4.4M inputs (the geometry-aware gather), routing a random dy
    let (n, c, oh, ow) = want_y.dim();
    let dy = a4(10, [n, c, oh, ow]);
    let xd = x.dim();
    let want_dx = Backend::cpu()
        .max_pool2d_backward_with(&dy, &want_i, xd, Some(pp))
        .expect("cpu max_pool2d_backward");
    let got_dx = timed("max_pool2d_backward gpu", || {
        g.max_pool2d_backward_with(&dy, &want_i, xd, Some(pp))
    })
    .expect("gpu max_pool2d_backward");
    // each dx sums ≤ 9 routed dy values in a fixed window order on both paths, but the
    // CPU scatters in output order: allow f32 reassociation of ≤ 9 terms
    let worst = assert_close(
        "max_pool2d backward (4.4M inputs)",
        &flat(&got_dx),
        &flat(&want_dx),
        1e-6,
        1e-6,
    );
    eprintln!("max_pool2d backward: worst |err|/tol = {worst:.3}");
}
