//! CPU twins of `shaders/pool.wgsl`.
//!
//! Shapes: x/dx `[N,C,H,W]`, y/dy/idx `[N,C,OH,OW]`.

use crate::shape::{AvgDivisor, Pool2dParams};

/// `y = max over the window` (padding is −∞), `idx = h·W + w` of the first maximum.
pub fn max_pool2d_forward(
    x_dim: [usize; 4],
    y_dim: [usize; 4],
    p: Pool2dParams,
    x: &[f32],
) -> (Vec<f32>, Vec<u32>) {
    arg_pool(x_dim, y_dim, p, x, false)
}

/// `y = min over the window` (padding is +∞), `idx = h·W + w` of the first minimum.
/// Its backward is [`max_pool2d_backward`]: routing by indices is the same.
pub fn min_pool2d_forward(
    x_dim: [usize; 4],
    y_dim: [usize; 4],
    p: Pool2dParams,
    x: &[f32],
) -> (Vec<f32>, Vec<u32>) {
    arg_pool(x_dim, y_dim, p, x, true)
}

/// The window's maximum (or minimum when `is_min`) and the index of its first occurrence,
/// as `arg_pool` in pool.wgsl.
fn arg_pool(
    x_dim: [usize; 4],
    y_dim: [usize; 4],
    p: Pool2dParams,
    x: &[f32],
    is_min: bool,
) -> (Vec<f32>, Vec<u32>) {
    let [n_, c_, h_, w_] = x_dim;
    let [_, _, oh, ow] = y_dim;
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let better = |v: f32, best: f32| if is_min { v < best } else { v > best };
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
                        if best.is_none_or(|(bv, _)| better(xp[k], bv)) {
                            best = Some((xp[k], k));
                        }
                    }
                }
                let pad = if is_min {
                    f32::INFINITY
                } else {
                    f32::NEG_INFINITY
                };
                let (v, k) = best.unwrap_or((pad, 0));
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

/// `y = mean over the window`, padding counted as 0 and included in the divisor `kh·kw`
/// (PyTorch's `count_include_pad=True`).
pub fn avg_pool2d_forward(
    x_dim: [usize; 4],
    y_dim: [usize; 4],
    p: Pool2dParams,
    x: &[f32],
) -> Vec<f32> {
    avg_pool2d_forward_div(x_dim, y_dim, p, AvgDivisor::Window, x)
}

/// [`avg_pool2d_forward`] with the divisor `div` (`p.padding` is the padding before each
/// axis): `y[i,j] = Σ_window x / div(i,j)`.
pub fn avg_pool2d_forward_div(
    x_dim: [usize; 4],
    y_dim: [usize; 4],
    p: Pool2dParams,
    div: AvgDivisor,
    x: &[f32],
) -> Vec<f32> {
    let [n_, c_, h_, w_] = x_dim;
    let [_, _, oh, ow] = y_dim;
    let mut y = vec![0.0f32; n_ * c_ * oh * ow];
    for plane in 0..n_ * c_ {
        let xp = &x[plane * h_ * w_..(plane + 1) * h_ * w_];
        for i in 0..oh {
            for j in 0..ow {
                let mut acc = 0.0f32;
                for_window(x_dim, p, i, j, |k| acc += xp[k]);
                y[(plane * oh + i) * ow + j] = acc / divisor(x_dim, p, div, i, j);
            }
        }
    }
    y
}

/// `dx[n,c,h,w] = Σ dy[n,c,i,j] / (kh·kw)` over the windows `(i,j)` that hold `(h,w)`.
pub fn avg_pool2d_backward(
    x_dim: [usize; 4],
    y_dim: [usize; 4],
    p: Pool2dParams,
    dy: &[f32],
) -> Vec<f32> {
    avg_pool2d_backward_div(x_dim, y_dim, p, AvgDivisor::Window, dy)
}

/// [`avg_pool2d_backward`] with the divisor `div`: `dx[h,w] = Σ dy[i,j] / div(i,j)`.
pub fn avg_pool2d_backward_div(
    x_dim: [usize; 4],
    y_dim: [usize; 4],
    p: Pool2dParams,
    div: AvgDivisor,
    dy: &[f32],
) -> Vec<f32> {
    let [n_, c_, h_, w_] = x_dim;
    let [_, _, oh, ow] = y_dim;
    let mut dx = vec![0.0f32; n_ * c_ * h_ * w_];
    for plane in 0..n_ * c_ {
        let dxp = &mut dx[plane * h_ * w_..(plane + 1) * h_ * w_];
        for i in 0..oh {
            for j in 0..ow {
                let g = dy[(plane * oh + i) * ow + j] / divisor(x_dim, p, div, i, j);
                for_window(x_dim, p, i, j, |k| dxp[k] += g);
            }
        }
    }
    dx
}

/// Calls `f(h·W + w)` for the inputs of window `(i, j)` inside the plane, in row-major order.
fn for_window(x_dim: [usize; 4], p: Pool2dParams, i: usize, j: usize, mut f: impl FnMut(usize)) {
    let [_, _, h_, w_] = x_dim;
    for a in 0..p.kernel[0] {
        let Some(ih) = (i * p.stride[0] + a)
            .checked_sub(p.padding[0])
            .filter(|&v| v < h_)
        else {
            continue;
        };
        for b in 0..p.kernel[1] {
            if let Some(iw) = (j * p.stride[1] + b)
                .checked_sub(p.padding[1])
                .filter(|&v| v < w_)
            {
                f(ih * w_ + iw);
            }
        }
    }
}

/// The divisor of window `(i, j)` (`avg_div` in pool.wgsl).
fn divisor(x_dim: [usize; 4], p: Pool2dParams, div: AvgDivisor, i: usize, j: usize) -> f32 {
    let count = |o: usize, a: usize, len: usize, e: usize| {
        let start = (o * p.stride[a]) as i64 - p.padding[a] as i64;
        let k = p.kernel[a] as i64;
        match div {
            AvgDivisor::Window => k,
            AvgDivisor::Padded(_) => (start + k).min((len + e) as i64) - start,
            AvgDivisor::Valid => (start + k).min(len as i64) - start.max(0),
        }
    };
    let end = match div {
        AvgDivisor::Padded(end) => end,
        _ => [0, 0],
    };
    (count(i, 0, x_dim[2], end[0]) * count(j, 1, x_dim[3], end[1])) as f32
}

/// `y[r] = mean of x[r·hw .. (r+1)·hw]` over `rows = N·C` planes of `hw = H·W` elements.
pub fn global_avg_pool_forward(rows: usize, hw: usize, x: &[f32]) -> Vec<f32> {
    (0..rows)
        .map(|r| x[r * hw..(r + 1) * hw].iter().sum::<f32>() / hw as f32)
        .collect()
}

/// `dx[r·hw + k] = dy[r] / hw`.
pub fn global_avg_pool_backward(rows: usize, hw: usize, dy: &[f32]) -> Vec<f32> {
    (0..rows * hw).map(|i| dy[i / hw] / hw as f32).collect()
}
