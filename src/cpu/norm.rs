//! CPU twins of `shaders/norm.wgsl`: batch normalisation over `x [N, C, S]` (S = H·W for
//! `[N,C,H,W]`, 1 for `[N,F]`), statistics per channel over the `M = N·S` elements.
//!
//! The sums are accumulated in the kernels' order (64 strided partial sums over the units
//! of [`units`], then a tree), so both paths agree to a few ulp.

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

impl Units {
    /// Elements per unit and units per plane of `s` elements.
    fn shape(self, s: usize) -> (usize, usize) {
        match self {
            Units::Aligned4 => (4, s / 4),
            Units::Unaligned4 => (4, (s + 2) / 4 + 1),
            Units::Single => (1, s),
        }
    }
}

/// Sum over channel `ch` of `f(k)` for its elements `k` (flat indices into `[N, C, S]`), in
/// the kernels' order: invocation `l` walks units `j = l, l + 64, …` (plane `j / T`, unit
/// `j % T` of it), with a partial sum per unit component (0 added for components outside
/// the plane); the components' partials are added as `(p0 + p1) + (p2 + p3)`, then the 64
/// partials are reduced pairwise `part[l] += part[l + s]` for `s = 32, 16, …, 1`.
fn wg_sum([n, c, s]: [usize; 3], ch: usize, f: impl Fn(usize) -> f32) -> f32 {
    let (v, t) = units(c, s).shape(s);
    let mut part = [0.0f32; 64];
    for (l, p) in part.iter_mut().enumerate() {
        let mut acc = [0.0f32; 4];
        for j in (l..n * t).step_by(64) {
            let b = ((j / t) * c + ch) * s;
            for (k, a) in acc[..v].iter_mut().enumerate() {
                // element e of the plane: v·t + k − (b mod v)
                let e = (v * (j % t) + k) as isize - (b % v) as isize;
                *a += if (0..s as isize).contains(&e) {
                    f(b + e as usize)
                } else {
                    0.0
                };
            }
        }
        *p = (acc[0] + acc[1]) + (acc[2] + acc[3]);
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
