//! CPU twins of `shaders/conv2d.wgsl`: convolution over up to three spatial axes.
//!
//! Shapes: x [N,C,D,H,W], w [O,C/G,KD,KH,KW], b [O], y/dy [N,O,OD,OH,OW], all row-major
//! (2-D convolutions have D = KD = OD = 1, 1-D ones also H = KH = OH = 1). `G` groups:
//! output channel `o` belongs to group `o / (O/G)` and reads input channels
//! `g·(C/G) .. (g+1)·(C/G)`. Written straight from the formulas, one loop per index.

use super::elementwise::{act_fwd, fused_grad};
pub use crate::shape::ConvDims;

impl ConvDims {
    /// Input coordinate `i·s + t·dil − p` of output index `i` and kernel tap `t`, if inside.
    fn src(i: usize, t: usize, s: usize, dil: usize, p: usize, len: usize) -> Option<usize> {
        (i * s + t * dil).checked_sub(p).filter(|&v| v < len)
    }

    /// The weight tap used at kernel offset `(e, a, b)`: itself, or rotated by 180° for a
    /// true convolution.
    fn tap(&self, e: usize, a: usize, b: usize) -> (usize, usize, usize) {
        let [_, _, kd, kh, kw] = self.w;
        if self.flip {
            (kd - 1 - e, kh - 1 - a, kw - 1 - b)
        } else {
            (e, a, b)
        }
    }

    /// Calls `f(xi, wi)` with the flat x and w indices of every term of output
    /// `(n, o, z, i, j)`'s sum: `y[n,o,z,i,j] = Σ w[wi]·x[xi]` over the taps inside the input.
    fn terms(
        &self,
        n: usize,
        o: usize,
        (z, i, j): (usize, usize, usize),
        mut f: impl FnMut(usize, usize),
    ) {
        let [_, c_, d_, h_, w_] = self.x;
        let [o_, cg, kd, kh, kw] = self.w;
        let [sd, sh, sw] = self.stride;
        let [dd, dh, dw] = self.dilation;
        let [pd, ph, pw] = self.pad;
        let g = o / (o_ / self.groups);
        for cl in 0..cg {
            let c = g * cg + cl;
            for e in 0..kd {
                let Some(iz) = Self::src(z, e, sd, dd, pd, d_) else {
                    continue;
                };
                for a in 0..kh {
                    let Some(ih) = Self::src(i, a, sh, dh, ph, h_) else {
                        continue;
                    };
                    for b in 0..kw {
                        let Some(iw) = Self::src(j, b, sw, dw, pw, w_) else {
                            continue;
                        };
                        let (te, ta, tb) = self.tap(e, a, b);
                        let wi = (((o * cg + cl) * kd + te) * kh + ta) * kw + tb;
                        let xi = (((n * c_ + c) * d_ + iz) * h_ + ih) * w_ + iw;
                        f(xi, wi);
                    }
                }
            }
        }
    }

    /// Flat index of output `(n, o, z, i, j)`.
    fn yi(&self, n: usize, o: usize, z: usize, i: usize, j: usize) -> usize {
        let [_, o_, od, oh, ow] = self.y;
        (((n * o_ + o) * od + z) * oh + i) * ow + j
    }

    /// Every output index `(n, o, (z, i, j))`.
    fn outputs(&self) -> impl Iterator<Item = (usize, usize, (usize, usize, usize))> {
        let [n_, o_, od, oh, ow] = self.y;
        (0..n_).flat_map(move |n| {
            (0..o_).flat_map(move |o| {
                (0..od).flat_map(move |z| {
                    (0..oh).flat_map(move |i| (0..ow).map(move |j| (n, o, (z, i, j))))
                })
            })
        })
    }
}

/// `y[n,o,z,i,j] = act(b[o] + Σ_c Σ_e Σ_a Σ_b w[o,c,e,a,b]·x[n,c,z·sd+e·dd−pd, i·sh+a·dh−ph, j·sw+b·dw−pw])`
/// (c over the group of o; the tap rotated by 180° for a true convolution).
pub fn conv2d_forward(
    d: ConvDims,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: (u32, f32),
) -> Vec<f32> {
    let mut y = vec![0.0f32; d.y.iter().product()];
    for (n, o, (z, i, j)) in d.outputs() {
        let mut acc = 0.0f32;
        d.terms(n, o, (z, i, j), |xi, wi| acc += w[wi] * x[xi]);
        if let Some(b) = b {
            acc += b[o];
        }
        y[d.yi(n, o, z, i, j)] = act_fwd(acc, act.0, act.1);
    }
    y
}

/// `dx[n,c,·] = Σ_o Σ_taps dy'[n,o,z,i,j]·w[o,c,tap]` over the outputs whose window reads
/// `x[n,c,·]` through that tap: the full correlation of the stride-dilated `dy'` with the
/// 180°-flipped kernel, written as a scatter over the forward windows. `dy' = dy·act'(y)`
/// when `y_act` is given.
pub fn conv2d_backward_input(
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
    for (n, o, (z, i, j)) in d.outputs() {
        let g = dy[d.yi(n, o, z, i, j)];
        d.terms(n, o, (z, i, j), |xi, wi| dx[xi] += g * w[wi]);
    }
    dx
}

/// `dw[o,c,tap] = Σ_n Σ_z Σ_i Σ_j dy'[n,o,z,i,j]·x[n,c,·]` (the input the tap reads),
/// `db[o] = Σ dy'[n,o,·,·,·]`.
pub fn conv2d_backward_weight(
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
    for (n, o, (z, i, j)) in d.outputs() {
        let g = dy[d.yi(n, o, z, i, j)];
        db[o] += g;
        d.terms(n, o, (z, i, j), |xi, wi| dw[wi] += g * x[xi]);
    }
    (dw, db)
}
