//! CPU twins of `shaders/conv2d.wgsl`.
//!
//! Shapes: x [N,C,H,W], w [O,C,KH,KW], b [O], y/dy [N,O,OH,OW], all row-major.

use super::elementwise::{act_fwd, fused_grad};
use crate::shape::Conv2dParams;

/// Dimensions of one convolution, shared by the three passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub x: [usize; 4],
    pub w: [usize; 4],
    pub y: [usize; 4],
    pub p: Conv2dParams,
}

impl ConvDims {
    /// Input coordinate `i·s + a − p` of output row/col `i` and kernel offset `a`, if inside.
    fn src(i: usize, a: usize, s: usize, p: usize, len: usize) -> Option<usize> {
        (i * s + a).checked_sub(p).filter(|&v| v < len)
    }
}

/// `y[n,o,i,j] = act(b[o] + Σ_c Σ_a Σ_b w[o,c,a,b]·x[n,c,i·sh+a−ph, j·sw+b−pw])`
pub fn conv2d_forward(
    d: ConvDims,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: (u32, f32),
) -> Vec<f32> {
    let [n_, c_, h_, w_] = d.x;
    let [o_, _, kh, kw] = d.w;
    let [_, _, oh, ow] = d.y;
    let [sh, sw] = d.p.stride;
    let [ph, pw] = d.p.padding;
    let mut y = vec![0.0f32; n_ * o_ * oh * ow];
    for n in 0..n_ {
        for o in 0..o_ {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = 0.0f32;
                    for c in 0..c_ {
                        for a in 0..kh {
                            let Some(ih) = ConvDims::src(i, a, sh, ph, h_) else {
                                continue;
                            };
                            for bb in 0..kw {
                                let Some(iw) = ConvDims::src(j, bb, sw, pw, w_) else {
                                    continue;
                                };
                                acc += w[((o * c_ + c) * kh + a) * kw + bb]
                                    * x[((n * c_ + c) * h_ + ih) * w_ + iw];
                            }
                        }
                    }
                    if let Some(b) = b {
                        acc += b[o];
                    }
                    y[((n * o_ + o) * oh + i) * ow + j] = act_fwd(acc, act.0, act.1);
                }
            }
        }
    }
    y
}

/// `dx[n,c,h,w] = Σ_o Σ_a Σ_b dy'[n,o,i,j]·w[o,c,a,b]` where `i·sh+a−ph = h`, `j·sw+b−pw = w`:
/// the full correlation of the stride-dilated `dy'` with the 180°-flipped kernel, written as
/// a scatter over the forward windows. `dy' = dy·act'(y)` when `y_act` is given.
pub fn conv2d_backward_input(
    d: ConvDims,
    dy: &[f32],
    w: &[f32],
    y_act: Option<(&[f32], u32, f32)>,
) -> Vec<f32> {
    let [n_, c_, h_, w_] = d.x;
    let [o_, _, kh, kw] = d.w;
    let [_, _, oh, ow] = d.y;
    let [sh, sw] = d.p.stride;
    let [ph, pw] = d.p.padding;
    let dy = match y_act {
        Some((y, code, alpha)) => fused_grad(dy, y, code, alpha),
        None => dy.to_vec(),
    };
    let mut dx = vec![0.0f32; n_ * c_ * h_ * w_];
    for n in 0..n_ {
        for o in 0..o_ {
            for i in 0..oh {
                for j in 0..ow {
                    let g = dy[((n * o_ + o) * oh + i) * ow + j];
                    for c in 0..c_ {
                        for a in 0..kh {
                            let Some(ih) = ConvDims::src(i, a, sh, ph, h_) else {
                                continue;
                            };
                            for bb in 0..kw {
                                let Some(iw) = ConvDims::src(j, bb, sw, pw, w_) else {
                                    continue;
                                };
                                dx[((n * c_ + c) * h_ + ih) * w_ + iw] +=
                                    g * w[((o * c_ + c) * kh + a) * kw + bb];
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// `dw[o,c,a,b] = Σ_n Σ_i Σ_j dy'[n,o,i,j]·x[n,c,i·sh+a−ph, j·sw+b−pw]`, `db[o] = Σ dy'[n,o,·,·]`.
pub fn conv2d_backward_weight(
    d: ConvDims,
    x: &[f32],
    dy: &[f32],
    y_act: Option<(&[f32], u32, f32)>,
) -> (Vec<f32>, Vec<f32>) {
    let [n_, c_, h_, w_] = d.x;
    let [o_, _, kh, kw] = d.w;
    let [_, _, oh, ow] = d.y;
    let [sh, sw] = d.p.stride;
    let [ph, pw] = d.p.padding;
    let dy = match y_act {
        Some((y, code, alpha)) => fused_grad(dy, y, code, alpha),
        None => dy.to_vec(),
    };
    let mut dw = vec![0.0f32; o_ * c_ * kh * kw];
    let mut db = vec![0.0f32; o_];
    for n in 0..n_ {
        for o in 0..o_ {
            for i in 0..oh {
                for j in 0..ow {
                    let g = dy[((n * o_ + o) * oh + i) * ow + j];
                    db[o] += g;
                    for c in 0..c_ {
                        for a in 0..kh {
                            let Some(ih) = ConvDims::src(i, a, sh, ph, h_) else {
                                continue;
                            };
                            for bb in 0..kw {
                                let Some(iw) = ConvDims::src(j, bb, sw, pw, w_) else {
                                    continue;
                                };
                                dw[((o * c_ + c) * kh + a) * kw + bb] +=
                                    g * x[((n * c_ + c) * h_ + ih) * w_ + iw];
                            }
                        }
                    }
                }
            }
        }
    }
    (dw, db)
}
