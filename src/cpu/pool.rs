//! CPU twins of `shaders/pool.wgsl`.
//!
//! Shapes: x/dx [N,C,H,W], y/dy/idx [N,C,OH,OW].

use crate::shape::Pool2dParams;

/// `y = max over the window` (padding is −∞), `idx = h·W + w` of the first maximum.
pub fn max_pool2d_forward(
    x_dim: [usize; 4],
    y_dim: [usize; 4],
    p: Pool2dParams,
    x: &[f32],
) -> (Vec<f32>, Vec<u32>) {
    let [n_, c_, h_, w_] = x_dim;
    let [_, _, oh, ow] = y_dim;
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let mut y = vec![0.0f32; n_ * c_ * oh * ow];
    let mut idx = vec![0u32; n_ * c_ * oh * ow];
    for plane in 0..n_ * c_ {
        let xp = &x[plane * h_ * w_..(plane + 1) * h_ * w_];
        for i in 0..oh {
            for j in 0..ow {
                let mut best: Option<(f32, usize)> = None;
                for a in 0..kh {
                    let Some(ih) = (i * sh + a).checked_sub(ph).filter(|&v| v < h_) else {
                        continue;
                    };
                    for b in 0..kw {
                        let Some(iw) = (j * sw + b).checked_sub(pw).filter(|&v| v < w_) else {
                            continue;
                        };
                        let k = ih * w_ + iw;
                        if best.is_none_or(|(bv, _)| xp[k] > bv) {
                            best = Some((xp[k], k));
                        }
                    }
                }
                let (v, k) = best.unwrap_or((f32::NEG_INFINITY, 0));
                y[(plane * oh + i) * ow + j] = v;
                idx[(plane * oh + i) * ow + j] = k as u32;
            }
        }
    }
    (y, idx)
}

/// `dx[n,c,h,w] = Σ dy[n,c,i,j]` over the outputs whose recorded argmax is `(h,w)`.
pub fn max_pool2d_backward(
    x_dim: [usize; 4],
    y_dim: [usize; 4],
    dy: &[f32],
    idx: &[u32],
) -> Vec<f32> {
    let [n_, c_, h_, w_] = x_dim;
    let [_, _, oh, ow] = y_dim;
    let mut dx = vec![0.0f32; n_ * c_ * h_ * w_];
    for plane in 0..n_ * c_ {
        for o in 0..oh * ow {
            let k = idx[plane * oh * ow + o] as usize;
            dx[plane * h_ * w_ + k] += dy[plane * oh * ow + o];
        }
    }
    dx
}
