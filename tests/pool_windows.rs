//! Window placement beyond symmetric padding (issue 14, items 7 and 8):
//!
//! * pooling with PyTorch's `ceil_mode` and Keras's `same` against PyTorch goldens
//!   (`tests/golden/gen_pool_windows.py`), forward and backward, on both backends;
//! * the seed article's anchor with the true-convolution flip, for the convolution and for
//!   max-, min- and average pooling, against naive references written straight from the
//!   article's index formula `y[i] = Σ_t w[t]·x[i·s + σ·(t − a)·dil]` (σ = +1 for
//!   cross-correlation, −1 for the flipped kernel; pooling takes the max/min/mean over the
//!   same taps): the anchor element sits on the output position in both cases;
//! * GPU = CPU training steps of models with these windows (1-, 2- and 3-D), and typed errors.
//!
//! # Tolerances
//! Golden inputs are multiples of 1/8 and windows hold at most 9 of them, so sums are exact
//! and a mean is one rounding: forward and backward compare with atol = rtol = 1e-6. The
//! naive references add in another order than the kernels: the convolution's sums of up to
//! 2·3·3 products of values in [−1, 1) compare with atol = rtol = 1e-5; max/min/mean pooling
//! with 1e-6.

mod common;

use common::{assert_close, backends, executors_agree, values};
use wgcnn::ndarray::{Array1, Array4};
use wgcnn::nn::{Conv2d, Flatten, Linear, MaxPool2d, Pool1d, Pool2d, Pool3d, Relu, Sequential};
use wgcnn::{Backend, ConvParams, Error, PoolKind, PoolParams};

#[path = "golden/pool_windows.rs"]
mod golden;

const EXACT: (f32, f32) = (1e-6, 1e-6);
const CONV: (f32, f32) = (1e-5, 1e-5);

fn arr4(shape: [usize; 4], v: &[f32]) -> Array4<f32> {
    Array4::from_shape_vec((shape[0], shape[1], shape[2], shape[3]), v.to_vec()).unwrap()
}

fn dims(a: &Array4<f32>) -> [usize; 4] {
    let s = a.shape();
    [s[0], s[1], s[2], s[3]]
}

/// The golden case's window.
fn window(c: &golden::Window) -> PoolParams {
    let p = PoolParams::new(1)
        .kernel3([1, c.kernel[0], c.kernel[1]])
        .stride3([1, c.stride[0], c.stride[1]]);
    if c.same {
        p.same()
    } else {
        let [ph, pw] = c.padding;
        p.pad_sides([0, ph, pw], [0, ph, pw]).ceil_mode(true)
    }
}

#[test]
fn ceil_mode_and_same_match_pytorch() {
    for (be_name, be) in backends() {
        for c in golden::WINDOWS {
            let what = format!("{be_name} {}", c.name);
            let x = arr4(c.x_shape, c.x);
            let dy = arr4(c.y_shape, c.dy);
            let p = window(c);
            let (y, idx) = be.pool2d(&x, PoolKind::Max, p).unwrap();
            assert_eq!(dims(&y), c.y_shape, "{what}: output shape");
            let idx = idx.expect("max-pooling returns indices");
            assert_eq!(
                idx.iter().copied().collect::<Vec<_>>(),
                c.max_idx,
                "{what}: max indices"
            );
            assert_close(
                &format!("{what} max y"),
                y.as_slice().unwrap(),
                c.max_y,
                EXACT.0,
                EXACT.1,
            );
            let xs = c.x_shape;
            let dx = be
                .max_pool2d_backward(&dy, &idx, (xs[0], xs[1], xs[2], xs[3]))
                .unwrap();
            assert_close(
                &format!("{what} max dx"),
                dx.as_slice().unwrap(),
                c.max_dx,
                EXACT.0,
                EXACT.1,
            );
            let avgs = [
                (true, c.avg_pad_y, c.avg_pad_dx),
                (false, c.avg_nopad_y, c.avg_nopad_dx),
            ];
            for (count_pad, want_y, want_dx) in avgs {
                // Keras `same` never counts padding: its golden holds the same values twice
                let p = if c.same {
                    p
                } else {
                    p.count_include_pad(count_pad)
                };
                let w = format!("{what} avg (count_include_pad {})", p.count_include_pad);
                let (y, none) = be.pool2d(&x, PoolKind::Avg, p).unwrap();
                assert!(none.is_none(), "{w}: the average has no indices");
                assert_close(
                    &format!("{w} y"),
                    y.as_slice().unwrap(),
                    want_y,
                    EXACT.0,
                    EXACT.1,
                );
                let dx = be.pool2d_backward(&dy, c.x_shape, p).unwrap();
                assert_close(
                    &format!("{w} dx"),
                    dx.as_slice().unwrap(),
                    want_dx,
                    EXACT.0,
                    EXACT.1,
                );
            }
        }
    }
}

/// The article's taps of output `i` along one axis: `(t, i·s + σ·(t − a)·dil)` for the
/// window elements `t < k` that land inside `[0, len)`.
fn taps(
    i: usize,
    k: usize,
    s: usize,
    a: usize,
    dil: usize,
    flip: bool,
    len: usize,
) -> Vec<(usize, usize)> {
    (0..k)
        .filter_map(|t| {
            let off = (t as i64 - a as i64) * dil as i64;
            let pos = (i * s) as i64 + if flip { -off } else { off };
            (0..len as i64).contains(&pos).then_some((t, pos as usize))
        })
        .collect()
}

/// Naive anchored convolution `x [N,C,H,W]`, `w [O,C,kh,kw]`, from the article's formula.
fn naive_conv(
    x: &Array4<f32>,
    w: &Array4<f32>,
    b: &Array1<f32>,
    s: usize,
    dil: usize,
    a: [usize; 2],
    flip: bool,
) -> Array4<f32> {
    let [n, c, h, wd] = dims(x);
    let [o, _, kh, kw] = dims(w);
    let (oh, ow) = (h.div_ceil(s), wd.div_ceil(s));
    Array4::from_shape_fn((n, o, oh, ow), |(n, o, i, j)| {
        let mut acc = b[o];
        for ci in 0..c {
            for (t, hi) in taps(i, kh, s, a[0], dil, flip, h) {
                for (u, wi) in taps(j, kw, s, a[1], dil, flip, wd) {
                    acc += w[[o, ci, t, u]] * x[[n, ci, hi, wi]];
                }
            }
        }
        acc
    })
}

/// Naive anchored pooling from the article's formula: the values, and for max/min the
/// position `h·W + w` of the extremum (inputs are distinct, so it is unique). The mean
/// divides by `kh·kw`: every anchored window lies inside the padded input.
fn naive_pool(
    x: &Array4<f32>,
    kind: PoolKind,
    k: [usize; 2],
    s: usize,
    a: [usize; 2],
    flip: bool,
) -> (Vec<f32>, Vec<u32>) {
    let [n, c, h, w] = dims(x);
    let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
    let (mut ys, mut idx) = (Vec::new(), Vec::new());
    for (n, c, i, j) in itertools(n, c, oh, ow) {
        let mut vals = Vec::new();
        for (_, hi) in taps(i, k[0], s, a[0], 1, flip, h) {
            for (_, wi) in taps(j, k[1], s, a[1], 1, flip, w) {
                vals.push((x[[n, c, hi, wi]], (hi * w + wi) as u32));
            }
        }
        let pick = |better: fn(f32, f32) -> bool| {
            vals.iter()
                .copied()
                .reduce(|m, v| if better(v.0, m.0) { v } else { m })
                .unwrap()
        };
        match kind {
            PoolKind::Max => {
                let (v, at) = pick(|a, b| a > b);
                ys.push(v);
                idx.push(at);
            }
            PoolKind::Min => {
                let (v, at) = pick(|a, b| a < b);
                ys.push(v);
                idx.push(at);
            }
            PoolKind::Avg => ys.push(vals.iter().map(|v| v.0).sum::<f32>() / (k[0] * k[1]) as f32),
        }
    }
    (ys, idx)
}

/// `(n, c, i, j)` in row-major order.
fn itertools(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..n).flat_map(move |a| {
        (0..c).flat_map(move |b| (0..h).flat_map(move |i| (0..w).map(move |j| (a, b, i, j))))
    })
}

/// `(kh, kw, anchor, stride, dilation)`
const ANCHORS: [([usize; 2], [usize; 2], usize, usize); 6] = [
    ([3, 3], [0, 0], 1, 1),
    ([3, 3], [2, 1], 2, 1),
    ([3, 2], [0, 1], 1, 2),
    ([2, 3], [1, 2], 3, 1),
    ([4, 3], [1, 0], 2, 2),
    ([1, 3], [0, 2], 1, 1),
];

#[test]
fn anchored_flipped_conv_follows_the_article() {
    for (be_name, be) in backends() {
        for (i, (k, a, s, dil)) in ANCHORS.into_iter().enumerate() {
            for flip in [false, true] {
                let seed = 10 * i as u64 + flip as u64;
                let x = arr4([2, 2, 9, 8], &values(seed, 2 * 2 * 9 * 8));
                let w = arr4([3, 2, k[0], k[1]], &values(seed + 100, 3 * 2 * k[0] * k[1]));
                let b = Array1::from(values(seed + 200, 3));
                let p = ConvParams::default()
                    .stride(s)
                    .dilation(dil)
                    .anchor([0, a[0], a[1]])
                    .flipped(flip);
                let got = be.conv(&x, &w, Some(&b), p).unwrap();
                let want = naive_conv(&x, &w, &b, s, dil, a, flip);
                let what = format!("{be_name} conv k{k:?} anchor {a:?} s{s} d{dil} flip {flip}");
                assert_eq!(got.shape(), want.shape(), "{what}: shape");
                assert_close(
                    &what,
                    got.as_slice().unwrap(),
                    want.as_slice().unwrap(),
                    CONV.0,
                    CONV.1,
                );
            }
        }
    }
}

#[test]
fn anchored_flipped_pooling_follows_the_article() {
    for (be_name, be) in backends() {
        for (i, (k, a, s, _)) in ANCHORS.into_iter().enumerate() {
            for flip in [false, true] {
                let x = arr4([2, 3, 9, 7], &values(50 + i as u64, 2 * 3 * 9 * 7));
                for kind in [PoolKind::Max, PoolKind::Min, PoolKind::Avg] {
                    let what = format!("{be_name} {kind:?} k{k:?} anchor {a:?} s{s} flip {flip}");
                    let p = Pool2d::new(kind, 1)
                        .kernel_axes(k)
                        .stride(s)
                        .anchor(a)
                        .flipped(flip)
                        .params;
                    let (y, idx) = be.pool2d(&x, kind, p).unwrap();
                    let (want, want_idx) = naive_pool(&x, kind, k, s, a, flip);
                    assert_close(&what, y.as_slice().unwrap(), &want, EXACT.0, EXACT.1);
                    if let Some(idx) = idx {
                        assert_eq!(
                            idx.iter().copied().collect::<Vec<_>>(),
                            want_idx,
                            "{what}: indices"
                        );
                    }
                }
            }
        }
    }
}

/// Without the mirrored padding a flipped, anchored window would sit elsewhere: the two
/// flags must give different outputs for an off-centre anchor (guards the mirror itself).
#[test]
fn flip_moves_an_off_centre_window() {
    let x = arr4([1, 1, 6, 6], &values(7, 36));
    let be = Backend::cpu();
    let p = PoolParams::new(3).stride(1).anchor([0, 0, 0]);
    let (a, _) = be.pool2d(&x, PoolKind::Max, p).unwrap();
    let (b, _) = be.pool2d(&x, PoolKind::Max, p.flipped(true)).unwrap();
    assert_eq!(a.shape(), b.shape());
    assert_ne!(a, b, "flip(true) with anchor 0 must look back, not forward");
    // with anchor 0 and the flip the window ends at the output position: y[0,0] = x[0,0]
    assert_eq!(b[[0, 0, 0, 0]], x[[0, 0, 0, 0]]);
}

#[test]
fn models_with_these_windows_train_alike_on_gpu_and_cpu() {
    let g2 = Sequential::new(&[2, 11, 11])
        .add("c1", Conv2d::new(2, 4, 3).anchor([2, 0]).flipped(true))
        .add("r1", Relu)
        .add("p1", MaxPool2d::new(3).stride(2).same())
        .add("p2", Pool2d::avg(2).padding(1).ceil_mode(true))
        .add("p3", Pool2d::min(2).stride(1).anchor([1, 0]).flipped(true))
        .add("p4", Pool2d::avg(3).stride(2).same())
        .add("flat", Flatten)
        .add("fc", Linear::new(4 * 2 * 2, 3))
        .cross_entropy()
        .unwrap();
    executors_agree(&g2, 3, 2 * 11 * 11, 3, 2);
    let g1 = Sequential::new(&[2, 13])
        .add("p1", Pool1d::max(3).stride(2).same())
        .add(
            "p2",
            Pool1d::avg(2)
                .ceil_mode(true)
                .count_include_pad(false)
                .padding(1),
        )
        .add("flat", Flatten)
        .add("fc", Linear::new(2 * 4, 3))
        .cross_entropy()
        .unwrap();
    executors_agree(&g1, 3, 2 * 13, 3, 2);
    let g3 = Sequential::new(&[1, 5, 6, 7])
        .add("p1", Pool3d::avg(2).ceil_mode(true))
        .add("p2", Pool3d::max(2).stride(1).same())
        .add("flat", Flatten)
        .add("fc", Linear::new(3 * 3 * 4, 3))
        .cross_entropy()
        .unwrap();
    executors_agree(&g3, 2, 5 * 6 * 7, 3, 2);
}

fn invalid(r: Result<impl std::fmt::Debug, Error>, words: &[&str]) {
    let e = r.expect_err("must be refused").to_string();
    for w in words {
        assert!(e.contains(w), "error '{e}' lacks '{w}'");
    }
}

#[test]
fn bad_windows_are_typed_errors() {
    let be = Backend::cpu();
    let x = arr4([1, 1, 5, 5], &values(1, 25));
    invalid(
        be.pool2d(&x, PoolKind::Max, PoolParams::new(3).anchor([0, 3, 0])),
        &["anchor 3", "window 3"],
    );
    invalid(
        be.pool2d(&x, PoolKind::Avg, PoolParams::new(2).padding(2)),
        &["padding 2+2", "less than the window 2"],
    );
    invalid(
        be.pool2d(&x, PoolKind::Min, PoolParams::new(7)),
        &["window 7", "padded input 5"],
    );
    invalid(
        be.pool2d(&x, PoolKind::Max, PoolParams::new(2).stride(0)),
        &["stride"],
    );
    let built = Sequential::new(&[2, 5])
        .add("p", Pool2d::max(2))
        .cross_entropy();
    invalid(built, &["p", "Pool2d", "[2, 5]"]);
    let built = Sequential::new(&[2, 5, 5])
        .add("pool", Pool2d::max(3).anchor([0, 4]))
        .cross_entropy();
    invalid(built, &["pool", "anchor 4"]);
}
