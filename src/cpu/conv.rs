//! CPU twins of `shaders/conv.wgsl`: convolution over up to three spatial axes.
//!
//! Shapes: x `[N,C,D,H,W]`, w `[O,C/G,KD,KH,KW]`, b `[O]`, y/dy `[N,O,OD,OH,OW]`, all row-major
//! (2-D convolutions have D = KD = OD = 1, 1-D ones also H = KH = OH = 1). `G` groups:
//! output channel `o` belongs to group `o / (O/G)` and reads input channels
//! `g·(C/G) .. (g+1)·(C/G)`. Written straight from the formulas, one loop per index.

use std::ops::Range;

use super::elementwise::{act_fwd, fused_grad};
pub use crate::shape::ConvDims;

impl ConvDims {
    /// The kernel taps `t` whose input coordinate `i·s + t·dil − p` lies inside `0..len`
    /// (output index `i`, stride `s`, dilation `dil`, padding before `p`, kernel `k`).
    fn taps(i: usize, s: usize, dil: usize, p: usize, len: usize, k: usize) -> Range<usize> {
        let start = i * s;
        // first t with start + t·dil ≥ p, last with start + t·dil ≤ p + len − 1
        let lo = p.saturating_sub(start).div_ceil(dil);
        let hi = if start > p + len - 1 {
            0
        } else {
            ((p + len - 1 - start) / dil + 1).min(k)
        };
        lo.min(hi)..hi
    }

    /// Calls `f(yi, xi, wi)` for every term `w[wi]·x[xi]` of every output `y[yi]`'s sum, in
    /// the order n, o, z, i, j (the output), then c (of o's group), e, a, b (the taps inside
    /// the input): `y[n,o,z,i,j] = Σ w[o,c,t(e,a,b)]·x[n,g·CG+c, z·sd+e·dd−pd, i·sh+a·dh−ph,
    /// j·sw+b·dw−pw]`, where `t(e,a,b) = (e,a,b)`, or `(kd−1−e, kh−1−a, kw−1−b)` for a true
    /// convolution (the kernel rotated by 180°).
    #[inline(always)]
    fn for_each_term(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [n_, c_, d_, h_, w_] = self.x;
        let [o_, cg, kd, kh, kw] = self.w;
        let [_, _, od, oh, ow] = self.y;
        let [sd, sh, sw] = self.stride;
        let [dd, dh, dw] = self.dilation;
        let [pd, ph, pw] = self.pad;
        let og = o_ / self.groups;
        let flip = |t: usize, k: usize| if self.flip { k - 1 - t } else { t };
        let mut yi = 0;
        for n in 0..n_ {
            for o in 0..o_ {
                let g = o / og;
                for z in 0..od {
                    let es = Self::taps(z, sd, dd, pd, d_, kd);
                    for i in 0..oh {
                        let as_ = Self::taps(i, sh, dh, ph, h_, kh);
                        for j in 0..ow {
                            let bs = Self::taps(j, sw, dw, pw, w_, kw);
                            for cl in 0..cg {
                                let c = g * cg + cl;
                                for e in es.clone() {
                                    let iz = z * sd + e * dd - pd;
                                    for a in as_.clone() {
                                        let ih = i * sh + a * dh - ph;
                                        let xrow = (((n * c_ + c) * d_ + iz) * h_ + ih) * w_;
                                        let wrow = (((o * cg + cl) * kd + flip(e, kd)) * kh
                                            + flip(a, kh))
                                            * kw;
                                        for b in bs.clone() {
                                            let iw = j * sw + b * dw - pw;
                                            f(yi, xrow + iw, wrow + flip(b, kw));
                                        }
                                    }
                                }
                            }
                            yi += 1;
                        }
                    }
                }
            }
        }
    }

    /// Output channel of flat output index `yi`.
    fn out_channel(&self, yi: usize) -> usize {
        let [_, o_, od, oh, ow] = self.y;
        (yi / (od * oh * ow)) % o_
    }
}

/// `y[n,o,z,i,j] = act(b[o] + Σ_c Σ_e Σ_a Σ_b w[o,c,e,a,b]·x[n,c,z·sd+e·dd−pd, i·sh+a·dh−ph, j·sw+b·dw−pw])`
/// (c over the group of o; the tap rotated by 180° for a true convolution).
pub fn conv_forward(
    d: ConvDims,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: (u32, f32),
) -> Vec<f32> {
    let mut y = vec![0.0f32; d.y.iter().product()];
    // accumulate each output's sum in a register, stored when the next output starts
    let (mut cur, mut acc) = (0, 0.0f32);
    d.for_each_term(|yi, xi, wi| {
        if yi != cur {
            y[cur] = acc;
            (cur, acc) = (yi, 0.0);
        }
        acc += w[wi] * x[xi];
    });
    if let Some(v) = y.get_mut(cur) {
        *v = acc;
    }
    for (yi, v) in y.iter_mut().enumerate() {
        let biased = match b {
            Some(b) => *v + b[d.out_channel(yi)],
            None => *v,
        };
        *v = act_fwd(biased, act.0, act.1);
    }
    y
}

/// `dx[n,c,·] = Σ_o Σ_taps dy'[n,o,z,i,j]·w[o,c,tap]` over the outputs whose window reads
/// `x[n,c,·]` through that tap: the full correlation of the stride-dilated `dy'` with the
/// 180°-flipped kernel, written as a scatter over the forward windows. `dy' = dy·act'(y)`
/// when `y_act` is given.
pub fn conv_backward_input(
    d: ConvDims,
    dy: &[f32],
    w: &[f32],
    y_act: Option<(&[f32], u32, f32)>,
) -> Vec<f32> {
    let dy = match y_act {
        Some((y, code, alpha)) => fused_grad(dy, y, code, alpha),
        None => dy.to_vec(),
    };
    let mut dx = vec![0.0f32; d.x.iter().product()];
    d.for_each_term(|yi, xi, wi| dx[xi] += dy[yi] * w[wi]);
    dx
}

/// `dw[o,c,tap] = Σ_n Σ_z Σ_i Σ_j dy'[n,o,z,i,j]·x[n,c,·]` (the input the tap reads),
/// `db[o] = Σ dy'[n,o,·,·,·]`.
pub fn conv_backward_weight(
    d: ConvDims,
    x: &[f32],
    dy: &[f32],
    y_act: Option<(&[f32], u32, f32)>,
) -> (Vec<f32>, Vec<f32>) {
    let dy = match y_act {
        Some((y, code, alpha)) => fused_grad(dy, y, code, alpha),
        None => dy.to_vec(),
    };
    let mut dw = vec![0.0f32; d.w.iter().product()];
    let mut db = vec![0.0f32; d.w[0]];
    for (yi, g) in dy.iter().enumerate() {
        db[d.out_channel(yi)] += g;
    }
    d.for_each_term(|yi, xi, wi| dw[wi] += dy[yi] * x[xi]);
    (dw, db)
}

/// The first row of each of `parts` partitions of `rows` rows, and `rows` last: partition `q`
/// holds rows `s[q] .. s[q+1]` with `s[q] = q·rows / parts` (rounded down; empty partitions
/// when `parts > rows`). The GPU kernels compute the same boundaries (`part_start`).
pub fn part_starts(rows: usize, parts: usize) -> Vec<usize> {
    (0..=parts).map(|q| q * rows / parts.max(1)).collect()
}

/// The partial sums of [`conv_backward_weight`] over `parts` partitions of the N·OD·OH output
/// rows (rows `(n, z, i)`, partitions by [`part_starts`]): `[parts, O·K + O]` with a bias
/// (`K = C/G·KD·KH·KW`), `[parts, O·K]` without; partition `q` holds `dw` then `db` summed
/// over its rows only. Summed over `q` they give the full gradients.
pub fn conv_backward_weight_parts(
    d: ConvDims,
    parts: usize,
    bias: bool,
    x: &[f32],
    dy: &[f32],
    y_act: Option<(&[f32], u32, f32)>,
) -> Vec<f32> {
    let dy = match y_act {
        Some((y, code, alpha)) => fused_grad(dy, y, code, alpha),
        None => dy.to_vec(),
    };
    let [_, o_, od, oh, ow] = d.y;
    let dw_len: usize = d.w.iter().product();
    let stride = dw_len + if bias { o_ } else { 0 };
    let starts = part_starts(d.y[0] * od * oh, parts);
    let mut part_of_row = vec![0; d.y[0] * od * oh];
    for q in 0..parts {
        part_of_row[starts[q]..starts[q + 1]].fill(q);
    }
    // output element yi = (((n·O + o)·OD + z)·OH + i)·OW + j lies in row (n·OD + z)·OH + i
    let base = |yi: usize| {
        let n = yi / (o_ * od * oh * ow);
        part_of_row[n * od * oh + (yi / ow) % (od * oh)] * stride
    };
    let mut out = vec![0.0f32; parts * stride];
    if bias {
        for (yi, g) in dy.iter().enumerate() {
            out[base(yi) + dw_len + d.out_channel(yi)] += g;
        }
    }
    d.for_each_term(|yi, xi, wi| out[base(yi) + wi] += dy[yi] * x[xi]);
    out
}
