//! Finite-difference gradient checks of every backward on the CPU reference path.
//!
//! For an op `y = f(x)` and a random upstream gradient `dy`, the scalar objective is
//! `L(x) = Σ dy ⊙ f(x)`, whose gradient is exactly what the backward returns for that
//! `dy`. Each checked coordinate `x_i` is compared with the central difference
//! `(L(x + h·e_i) − L(x − h·e_i)) / (x_i⁺ − x_i⁻)`, where `f` runs in f32 through the
//! public API and `L` is summed in f64 from its f32 outputs; the denominator is the
//! step actually taken in f32 (`x_i ± h` rounded), so representation error of the step
//! does not count. The losses are scalars already: `L` is the loss itself.
//!
//! Step and tolerance: `h = 1e-2`, `|num − analytic| ≤ ATOL + RTOL·|num|` with
//! `ATOL = 2e-4`, `RTOL = 2e-3` (tightened 10× from 2e-3 / 2e-2: the measured worst case was
//! 0.016 of the old tolerance, a conv weight gradient and a 7×10 cross-entropy). The two
//! error sources:
//! - truncation, `h²/6·|L'''|`: zero for the linear ops (conv, linear, pooling away
//!   from ties: `L` is linear in each coordinate there), at most ≈ 2e-5 for the
//!   activations and the losses (their third derivatives are O(1) on the ranges used);
//! - f32 rounding of the forward, amplified by `1/(x_i⁺ − x_i⁻) ≈ 50`: only outputs that
//!   depend on `x_i` differ between the two evaluations (the others are bit-identical
//!   and cancel), each off by ≲ k·2⁻²⁴·Σ|terms| for a k-term sum; with ≤ a few hundred
//!   affected outputs of magnitude ≲ 5, `|dy| ≤ 1`, that is ≲ 50 · √300 · 5 · 1e-7·k
//!   ≈ 5e-4 in the worst case and ~1e-5 typically.
//!
//! So the typical case sits far inside 2e-4 (the measured worst is below 0.2 of it) while
//! any real bug (a
//! transposed kernel, an off-by-one offset, a missing stride or scale) is off by
//! O(0.1–1) on most coordinates. Every check prints its worst error/tolerance ratio.
//!
//! Kinks are kept out of reach of the step: activation inputs satisfy
//! `|x| ≥ 0.05 > h` and pooling inputs are distinct multiples of 0.05, so no
//! perturbation crosses an activation kink or changes a window's argmax.

mod common;

use common::assert_close;
use wgcnn::ndarray::{Array1, Array2, Array4, ArrayD, IxDyn};
use wgcnn::{Activation, Backend, Conv2dParams, Pool2dParams};

const H: f32 = 1e-2;
const ATOL: f32 = 2e-4;
const RTOL: f32 = 2e-3;
/// Coordinates checked per tensor (all of them when the tensor is smaller).
const SAMPLES: usize = 20;

/// SplitMix64: deterministic, seedable, no dependency on a RNG crate's stream.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Values in ±[0.05, 3]: away from the activation kinks at 0 by more than `H`.
    fn away_from_zero(&mut self, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| {
                let m = self.uniform(0.05, 3.0);
                if self.next_u64() & 1 == 0 {
                    m
                } else {
                    -m
                }
            })
            .collect()
    }

    /// `len` distinct values `0.05·k` (k = 0..len shifted to be centred), shuffled.
    fn distinct(&mut self, len: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..len)
            .map(|k| (k as f32 - len as f32 / 2.0) * 0.05)
            .collect();
        for i in (1..len).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
        v
    }

    /// The coordinates to check: all when `len ≤ SAMPLES`, else `SAMPLES` distinct ones.
    fn coords(&mut self, len: usize) -> Vec<usize> {
        if len <= SAMPLES {
            return (0..len).collect();
        }
        let mut picked = Vec::with_capacity(SAMPLES);
        while picked.len() < SAMPLES {
            let i = self.below(len);
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        picked
    }
}

fn a4(d: [usize; 4], v: Vec<f32>) -> Array4<f32> {
    Array4::from_shape_vec((d[0], d[1], d[2], d[3]), v).expect("shape")
}

fn a2(d: [usize; 2], v: Vec<f32>) -> Array2<f32> {
    Array2::from_shape_vec((d[0], d[1]), v).expect("shape")
}

/// `Σ dy ⊙ y` in f64.
fn dot(dy: &[f32], y: impl IntoIterator<Item = f32>) -> f64 {
    let mut n = 0;
    let s = dy
        .iter()
        .zip(y)
        .map(|(&a, b)| {
            n += 1;
            a as f64 * b as f64
        })
        .sum();
    assert_eq!(n, dy.len(), "dy and the output differ in length");
    s
}

/// Compares `analytic` with central differences of `objective` at the sampled
/// coordinates of `x`; returns the worst error/tolerance ratio.
fn check(
    what: &str,
    rng: &mut Rng,
    x: &[f32],
    analytic: &[f32],
    objective: impl FnMut(&[f32]) -> f64,
) -> f32 {
    let coords = rng.coords(x.len());
    check_at(what, &coords, x, analytic, objective)
}

/// [`check`] at the given coordinates.
fn check_at(
    what: &str,
    coords: &[usize],
    x: &[f32],
    analytic: &[f32],
    mut objective: impl FnMut(&[f32]) -> f64,
) -> f32 {
    assert_eq!(
        x.len(),
        analytic.len(),
        "{what}: gradient has the wrong length"
    );
    assert!(!coords.is_empty(), "{what}: no coordinate to check");
    let mut got = Vec::with_capacity(coords.len());
    let mut want = Vec::with_capacity(coords.len());
    let mut xp = x.to_vec();
    for &i in coords {
        let (plus, minus) = (x[i] + H, x[i] - H);
        xp[i] = plus;
        let lp = objective(&xp);
        xp[i] = minus;
        let lm = objective(&xp);
        xp[i] = x[i];
        want.push(((lp - lm) / (plus as f64 - minus as f64)) as f32);
        got.push(analytic[i]);
    }
    let worst = assert_close(
        &format!("{what} (checked coordinates {coords:?})"),
        &got,
        &want,
        ATOL,
        RTOL,
    );
    eprintln!(
        "{what}: {} coordinates, worst |err|/tol = {worst:.3}",
        coords.len()
    );
    worst
}

fn cpu() -> Backend {
    Backend::cpu()
}

// ---- conv2d ---------------------------------------------------------------------------

fn gradcheck_conv(seed: u64, xd: [usize; 4], wd: [usize; 4], p: Conv2dParams) {
    let mut rng = Rng(seed);
    let be = cpu();
    let x = a4(xd, rng.vec(xd.iter().product(), -1.0, 1.0));
    let w = a4(wd, rng.vec(wd.iter().product(), -1.0, 1.0));
    let b = Array1::from(rng.vec(wd[0], -1.0, 1.0));
    let y = be.conv2d(&x, &w, Some(&b), p).expect("conv2d");
    let yd = {
        let (n, c, h, w) = y.dim();
        [n, c, h, w]
    };
    let dyv = rng.vec(y.len(), -1.0, 1.0);
    let dy = a4(yd, dyv.clone());
    let g = be.conv2d_backward(&x, &w, &dy, p).expect("conv2d_backward");
    let tag = format!("conv2d x{xd:?} w{wd:?} {p:?}");

    let xv: Vec<f32> = x.iter().copied().collect();
    let wv: Vec<f32> = w.iter().copied().collect();
    let bv: Vec<f32> = b.to_vec();
    let dx: Vec<f32> = g.dx.iter().copied().collect();
    let dw: Vec<f32> = g.dw.iter().copied().collect();

    check(&format!("{tag} dx"), &mut rng, &xv, &dx, |xs| {
        let y = be
            .conv2d(&a4(xd, xs.to_vec()), &w, Some(&b), p)
            .expect("conv2d");
        dot(&dyv, y.iter().copied())
    });
    check(&format!("{tag} dw"), &mut rng, &wv, &dw, |ws| {
        let y = be
            .conv2d(&x, &a4(wd, ws.to_vec()), Some(&b), p)
            .expect("conv2d");
        dot(&dyv, y.iter().copied())
    });
    check(&format!("{tag} db"), &mut rng, &bv, &g.db.to_vec(), |bs| {
        let y = be
            .conv2d(&x, &w, Some(&Array1::from(bs.to_vec())), p)
            .expect("conv2d");
        dot(&dyv, y.iter().copied())
    });
}

#[test]
fn conv2d_stride1_no_padding() {
    gradcheck_conv(1, [2, 3, 7, 7], [4, 3, 3, 3], Conv2dParams::default());
}

#[test]
fn conv2d_stride2_padding1() {
    gradcheck_conv(2, [2, 2, 9, 8], [3, 2, 3, 3], Conv2dParams::new(2, 1));
}

#[test]
fn conv2d_non_square_kernel_mixed_stride_and_padding() {
    let p = Conv2dParams::new2([2, 1], [1, 2]);
    gradcheck_conv(3, [1, 3, 8, 10], [2, 3, 2, 4], p);
}

#[test]
fn conv2d_wide_kernel_stride_3_skips_inputs() {
    // stride > kernel height: some input rows feed no output (their dx must be 0)
    let p = Conv2dParams::new2([3, 2], [0, 2]);
    gradcheck_conv(4, [2, 2, 8, 6], [3, 2, 2, 5], p);
}

#[test]
fn conv2d_one_by_one_kernel() {
    gradcheck_conv(5, [3, 4, 5, 5], [2, 4, 1, 1], Conv2dParams::default());
}

// ---- max_pool2d -----------------------------------------------------------------------

fn gradcheck_pool(seed: u64, xd: [usize; 4], pp: Pool2dParams) {
    let mut rng = Rng(seed);
    let be = cpu();
    let len: usize = xd.iter().product();
    let xv = rng.distinct(len);
    let x = a4(xd, xv.clone());
    let (y, idx) = be.max_pool2d(&x, pp).expect("max_pool2d");
    let (n, c, oh, ow) = y.dim();
    let dyv = rng.vec(y.len(), -1.0, 1.0);
    let dy = a4([n, c, oh, ow], dyv.clone());
    let xdim = (xd[0], xd[1], xd[2], xd[3]);
    let dx: Vec<f32> = be
        .max_pool2d_backward(&dy, &idx, xdim)
        .expect("max_pool2d_backward")
        .iter()
        .copied()
        .collect();
    let dx_geo: Vec<f32> = be
        .max_pool2d_backward_with(&dy, &idx, xdim, Some(pp))
        .expect("max_pool2d_backward_with")
        .iter()
        .copied()
        .collect();
    assert_eq!(dx, dx_geo, "backward with and without the geometry");
    let tag = format!("max_pool2d x{xd:?} {pp:?}");
    // overlapping windows: some input must be the argmax of two or more windows, so
    // the summing path is exercised
    let mut hits = vec![0usize; len];
    let plane = xd[2] * xd[3];
    for (o, &k) in idx.iter().enumerate() {
        hits[(o / (oh * ow)) * plane + k as usize] += 1;
    }
    if pp.stride[0] < pp.kernel[0] || pp.stride[1] < pp.kernel[1] {
        assert!(
            hits.iter().any(|&h| h >= 2),
            "{tag}: no input is shared by two windows"
        );
    }
    // every coordinate: the tensors are small, and most inputs have a zero gradient
    // (not the argmax of any window), so a sample could miss the ones that matter
    let all: Vec<usize> = (0..len).collect();
    check_at(&format!("{tag} dx"), &all, &xv, &dx, |xs| {
        let (y, _) = be.max_pool2d(&a4(xd, xs.to_vec()), pp).expect("max_pool2d");
        dot(&dyv, y.iter().copied())
    });
}

#[test]
fn max_pool2d_overlapping_3x3_stride_2() {
    let pp = Pool2dParams {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [0, 0],
    };
    gradcheck_pool(11, [2, 2, 9, 9], pp);
}

#[test]
fn max_pool2d_overlapping_3x3_stride_1_padding_1() {
    let pp = Pool2dParams {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    };
    gradcheck_pool(12, [1, 3, 6, 7], pp);
}

#[test]
fn max_pool2d_non_square_overlapping() {
    let pp = Pool2dParams {
        kernel: [2, 4],
        stride: [1, 2],
        padding: [1, 1],
    };
    gradcheck_pool(13, [2, 1, 6, 9], pp);
}

#[test]
fn max_pool2d_2x2_stride_2() {
    gradcheck_pool(14, [2, 3, 8, 6], Pool2dParams::default());
}

// ---- linear ---------------------------------------------------------------------------

fn gradcheck_linear(seed: u64, n: usize, i: usize, o: usize) {
    let mut rng = Rng(seed);
    let be = cpu();
    let x = a2([n, i], rng.vec(n * i, -1.0, 1.0));
    let w = a2([o, i], rng.vec(o * i, -1.0, 1.0));
    let b = Array1::from(rng.vec(o, -1.0, 1.0));
    let dyv = rng.vec(n * o, -1.0, 1.0);
    let dy = a2([n, o], dyv.clone());
    let g = be.linear_backward(&x, &w, &dy).expect("linear_backward");
    let tag = format!("linear n={n} in={i} out={o}");
    let xv: Vec<f32> = x.iter().copied().collect();
    let wv: Vec<f32> = w.iter().copied().collect();
    let dx: Vec<f32> = g.dx.iter().copied().collect();
    let dw: Vec<f32> = g.dw.iter().copied().collect();
    check(&format!("{tag} dx"), &mut rng, &xv, &dx, |xs| {
        let y = be
            .linear(&a2([n, i], xs.to_vec()), &w, Some(&b))
            .expect("linear");
        dot(&dyv, y.iter().copied())
    });
    check(&format!("{tag} dw"), &mut rng, &wv, &dw, |ws| {
        let y = be
            .linear(&x, &a2([o, i], ws.to_vec()), Some(&b))
            .expect("linear");
        dot(&dyv, y.iter().copied())
    });
    check(
        &format!("{tag} db"),
        &mut rng,
        &b.to_vec(),
        &g.db.to_vec(),
        |bs| {
            let y = be
                .linear(&x, &w, Some(&Array1::from(bs.to_vec())))
                .expect("linear");
            dot(&dyv, y.iter().copied())
        },
    );
}

#[test]
fn linear_small() {
    gradcheck_linear(21, 3, 5, 4);
}

#[test]
fn linear_wider_than_a_tile() {
    // more than one 32×32 GEMM tile in every direction of every product
    gradcheck_linear(22, 37, 45, 33);
}

// ---- activations ----------------------------------------------------------------------

fn gradcheck_activation(seed: u64, act: Activation) {
    let mut rng = Rng(seed);
    let be = cpu();
    let shape = [2usize, 3, 4, 5];
    let len: usize = shape.iter().product();
    let xv = rng.away_from_zero(len);
    let x = ArrayD::from_shape_vec(IxDyn(&shape), xv.clone()).expect("shape");
    let dyv = rng.vec(len, -1.0, 1.0);
    let dy = ArrayD::from_shape_vec(IxDyn(&shape), dyv.clone()).expect("shape");
    let dx: Vec<f32> = be
        .activation_backward(act, &x, &dy)
        .expect("activation_backward")
        .iter()
        .copied()
        .collect();
    check(&format!("{act:?} dx"), &mut rng, &xv, &dx, |xs| {
        let xa = ArrayD::from_shape_vec(IxDyn(&shape), xs.to_vec()).expect("shape");
        let y = be.activation(act, &xa).expect("activation");
        dot(&dyv, y.iter().copied())
    });
}

#[test]
fn activations() {
    let acts = [
        Activation::Relu,
        Activation::LeakyRelu(0.1),
        Activation::LeakyRelu(0.01),
        Activation::Elu(1.0),
        Activation::Elu(0.5),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Step,
    ];
    for (k, act) in acts.into_iter().enumerate() {
        gradcheck_activation(31 + k as u64, act);
    }
}

#[test]
fn add_passes_the_gradient_to_both_inputs() {
    // add has no backward kernel of its own: d(a+b)/da = d(a+b)/db = dy. Checked here
    // so that every differentiable op of the API has a finite-difference check.
    let mut rng = Rng(41);
    let be = cpu();
    let shape = [3usize, 7];
    let av = rng.vec(21, -1.0, 1.0);
    let bv = rng.vec(21, -1.0, 1.0);
    let dyv = rng.vec(21, -1.0, 1.0);
    let arr = |v: &[f32]| ArrayD::from_shape_vec(IxDyn(&shape), v.to_vec()).expect("shape");
    let b = arr(&bv);
    check("add da", &mut rng, &av, &dyv, |xs| {
        dot(&dyv, be.add(&arr(xs), &b).expect("add").iter().copied())
    });
    let a = arr(&av);
    check("add db", &mut rng, &bv, &dyv, |xs| {
        dot(&dyv, be.add(&a, &arr(xs)).expect("add").iter().copied())
    });
}

// ---- losses ---------------------------------------------------------------------------

#[test]
fn cross_entropy_dlogits() {
    for (seed, (r, c)) in [(51u64, (4usize, 5usize)), (52, (7, 10)), (53, (1, 3))] {
        let mut rng = Rng(seed);
        let be = cpu();
        let xv = rng.vec(r * c, -3.0, 3.0);
        let targets: Vec<u32> = (0..r).map(|_| rng.below(c) as u32).collect();
        let (_, dl) = be
            .cross_entropy(&a2([r, c], xv.clone()), &targets)
            .expect("cross_entropy");
        let dl: Vec<f32> = dl.iter().copied().collect();
        check(
            &format!("cross_entropy [{r},{c}] dlogits"),
            &mut rng,
            &xv,
            &dl,
            |xs| {
                let (loss, _) = be
                    .cross_entropy(&a2([r, c], xs.to_vec()), &targets)
                    .expect("cross_entropy");
                loss as f64
            },
        );
    }
}

#[test]
fn mse_dpred() {
    for (seed, shape) in [(61u64, vec![4usize, 6]), (62, vec![2, 3, 5]), (63, vec![9])] {
        let mut rng = Rng(seed);
        let be = cpu();
        let len: usize = shape.iter().product();
        let pv = rng.vec(len, -2.0, 2.0);
        let tv = rng.vec(len, -2.0, 2.0);
        let arr = |v: &[f32]| ArrayD::from_shape_vec(IxDyn(&shape), v.to_vec()).expect("shape");
        let t = arr(&tv);
        let (_, dp) = be.mse(&arr(&pv), &t).expect("mse");
        let dp: Vec<f32> = dp.iter().copied().collect();
        check(&format!("mse {shape:?} dpred"), &mut rng, &pv, &dp, |xs| {
            let (loss, _) = be.mse(&arr(xs), &t).expect("mse");
            loss as f64
        });
    }
}
