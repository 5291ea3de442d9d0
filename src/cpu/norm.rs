//! CPU twins of `shaders/norm.wgsl`: batch normalisation over `x [N, C, S]` (S = H·W for
//! `[N,C,H,W]`, 1 for `[N,F]`), statistics per channel over the `M = N·S` elements.
//!
//! The sums are accumulated as the plain kernels do (64 strided partial sums over the
//! elements, then a tree); the vec4 kernels (see [`units`]) add the same elements in units of
//! 4, which agrees to a few ulp. (The twin once followed the units too: then the CPU and GPU
//! executors rounded differently from the plain path's bitwise agreement, and one ReLU
//! decision flipped in a ResNet-20 step — tests/resnet.rs — so the twin keeps the order the
//! executors' step tests were written against.)

/// How the kernels walk a channel's planes of `s` elements (`c` channels): in units of 4
/// consecutive elements (vec4) when they can, else one element a unit. Depends on C and S
/// only, so every batch size of a layer runs the same pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Units {
    /// `s % 4 == 0`: `s/4` units per plane, all inside it.
    Aligned4,
    /// `c·s % 4 == 0` (every unit of the tensor in bounds): `(s + 2)/4 + 1` units per plane
    /// from the unit holding its first element; components outside the plane count as 0.
    Unaligned4,
    /// One element per unit, `s` per plane.
    Single,
}

/// The units of `c` channels of planes of `s` elements.
pub fn units(c: usize, s: usize) -> Units {
    if s.is_multiple_of(4) {
        Units::Aligned4
    } else if (c * s).is_multiple_of(4) {
        Units::Unaligned4
    } else {
        Units::Single
    }
}

/// Sum over channel `ch` of `f(k)` for its elements `k` (flat indices into `[N, C, S]`):
/// partial sums over the elements `i ≡ l (mod 64)` of the channel (i = n·S + s), reduced
/// pairwise `part[l] += part[l + s]` for `s = 32, 16, …, 1`.
fn wg_sum([n, c, s]: [usize; 3], ch: usize, f: impl Fn(usize) -> f32) -> f32 {
    let m = n * s;
    let mut part = [0.0f32; 64];
    for (l, p) in part.iter_mut().enumerate() {
        let mut i = l;
        while i < m {
            *p += f(idx(i, ch, c, s));
            i += 64;
        }
    }
    let mut s = 32;
    while s > 0 {
        for l in 0..s {
            part[l] += part[l + s];
        }
        s /= 2;
    }
    part[0]
}

/// Index of the `i`-th element (`i < N·S`) of channel `c`.
fn idx(i: usize, c: usize, nc: usize, s: usize) -> usize {
    ((i / s) * nc + c) * s + i % s
}

/// Training-mode forward: normalises with the batch statistics, returns
/// `(y, saved = [mean_0..mean_{C−1}, inv_std_0..inv_std_{C−1}])` and updates the running
/// statistics in place (`running_var` with the unbiased variance, as PyTorch).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train(
    d @ [n, c, s]: [usize; 3],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    momentum: f32,
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let m = n * s;
    let mut y = vec![0.0f32; x.len()];
    let mut saved = vec![0.0f32; 2 * c];
    for ch in 0..c {
        let mean = wg_sum(d, ch, |k| x[k]) / m as f32;
        let sq = wg_sum(d, ch, |k| {
            let e = x[k] - mean;
            e * e
        });
        let inv = 1.0 / (sq / m as f32 + eps).sqrt();
        for i in 0..m {
            let k = idx(i, ch, c, s);
            y[k] = (x[k] - mean) * inv * gamma[ch] + beta[ch];
        }
        saved[ch] = mean;
        saved[c + ch] = inv;
        let var_u = sq / (m.max(2) - 1) as f32;
        running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * mean;
        running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * var_u;
    }
    (y, saved)
}

/// Evaluation-mode forward: `y = γ·(x − running_mean)/√(running_var + eps) + β`.
pub fn batch_norm_forward_eval(
    [n, c, s]: [usize; 3],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> Vec<f32> {
    (0..n * c * s)
        .map(|k| {
            let ch = (k / s) % c;
            let inv = 1.0 / (running_var[ch] + eps).sqrt();
            (x[k] - running_mean[ch]) * inv * gamma[ch] + beta[ch]
        })
        .collect()
}

/// Backward from the saved statistics: returns `(dx, dgamma, dbeta)` with
/// `dβ = Σ dy`, `dγ = Σ dy·x̂`, `dx = γ·inv·(dy − dβ/M − x̂·dγ/M)`.
pub fn batch_norm_backward(
    d @ [n, c, s]: [usize; 3],
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    saved: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = n * s;
    let mut dx = vec![0.0f32; x.len()];
    let (mut dg, mut db) = (vec![0.0f32; c], vec![0.0f32; c]);
    for ch in 0..c {
        let (mean, inv) = (saved[ch], saved[c + ch]);
        let sdy = wg_sum(d, ch, |k| dy[k]);
        let sdyx = wg_sum(d, ch, |k| dy[k] * ((x[k] - mean) * inv));
        let scale = gamma[ch] * inv;
        let fm = m as f32;
        for i in 0..m {
            let k = idx(i, ch, c, s);
            let xh = (x[k] - mean) * inv;
            dx[k] = scale * (dy[k] - sdy / fm - xh * sdyx / fm);
        }
        dg[ch] = sdyx;
        db[ch] = sdy;
    }
    (dx, dg, db)
}
