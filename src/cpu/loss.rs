//! CPU twins of `shaders/loss.wgsl`.

/// Row-wise softmax of `x [rows, cols]`.
pub fn softmax_forward(rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let mut s = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - mx).exp()).sum();
        for c in 0..cols {
            s[r * cols + c] = (row[c] - mx).exp() / sum;
        }
    }
    s
}

/// Gradient of the row-wise softmax from its output `y [rows, cols]`:
/// `dx[r,c] = y[r,c] · (dy[r,c] − Σ_c' dy[r,c']·y[r,c'])`.
pub fn softmax_backward(rows: usize, cols: usize, y: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let (yr, dyr) = (&y[r * cols..(r + 1) * cols], &dy[r * cols..(r + 1) * cols]);
        let mut dot = 0.0f32;
        for c in 0..cols {
            dot += dyr[c] * yr[c];
        }
        for c in 0..cols {
            dx[r * cols + c] = yr[c] * (dyr[c] - dot);
        }
    }
    dx
}

/// Metrics written by the loss kernels: `[Σ per-row loss, correct, rows, non-finite flag]`.
pub type Metrics = [f32; 4];

/// Softmax + cross-entropy with integer targets: per-row loss `logsumexp(x_r) − x[r,t_r]`,
/// gradient `(softmax(x) − onehot(t))·scale`. Returns `(dx, metrics)`.
pub fn cross_entropy(
    rows: usize,
    cols: usize,
    x: &[f32],
    targets: &[u32],
    scale: f32,
) -> (Vec<f32>, Metrics) {
    cross_entropy_smoothed(rows, cols, x, targets, scale, 0.0)
}

/// [`cross_entropy`] with label smoothing `eps` (PyTorch's `label_smoothing`): the target
/// is `q_c = (1 − eps)·[c = t] + eps/C`, the per-row loss
/// `(1 − eps)(lse − x_t) + eps(lse − Σ_c x_c / C)`, the gradient `(softmax(x) − q)·scale`.
pub fn cross_entropy_smoothed(
    rows: usize,
    cols: usize,
    x: &[f32],
    targets: &[u32],
    scale: f32,
    eps: f32,
) -> (Vec<f32>, Metrics) {
    let mut dx = vec![0.0f32; rows * cols];
    let mut lsum = 0.0f32;
    let mut hits = 0.0f32;
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let t = targets[r] as usize;
        let (mut mx, mut arg) = (row[0], 0);
        for (c, &v) in row.iter().enumerate().skip(1) {
            if v > mx {
                mx = v;
                arg = c;
            }
        }
        let sum: f32 = row.iter().map(|v| (v - mx).exp()).sum();
        let lse = mx + sum.ln();
        if eps == 0.0 {
            lsum += lse - row[t];
        } else {
            let mean = row.iter().sum::<f32>() / cols as f32;
            lsum += (1.0 - eps) * (lse - row[t]) + eps * (lse - mean);
        }
        hits += (arg == t) as u32 as f32;
        for c in 0..cols {
            let s = (row[c] - mx).exp() / sum;
            let mut q = (c == t) as u32 as f32;
            if eps != 0.0 {
                q = (1.0 - eps) * q + eps / cols as f32;
            }
            dx[r * cols + c] = (s - q) * scale;
        }
    }
    let bad = (!lsum.is_finite()) as u32 as f32;
    (dx, [lsum, hits, rows as f32, bad])
}

/// Mean squared error over all `rows·cols` elements: gradient `2(p − q)·scale`
/// (`scale = 1/len`); metrics carry `rows · mean`.
pub fn mse(
    rows: usize,
    cols: usize,
    pred: &[f32],
    target: &[f32],
    scale: f32,
) -> (Vec<f32>, Metrics) {
    let mut dp = vec![0.0f32; rows * cols];
    let mut lsum = 0.0f32;
    for i in 0..rows * cols {
        let d = pred[i] - target[i];
        lsum += d * d;
        dp[i] = 2.0 * d * scale;
    }
    let l = lsum * scale * rows as f32;
    (dp, [l, 0.0, rows as f32, (!l.is_finite()) as u32 as f32])
}

/// `softplus(z) = max(z, 0) + ln(1 + e^(−|z|))`, as in loss.wgsl.
fn softplus(z: f32) -> f32 {
    z.max(0.0) + (1.0 + (-z.abs()).exp()).ln()
}

/// Binary cross-entropy with logits (PyTorch `BCEWithLogitsLoss`), summed in 64 strided
/// partial sums reduced pairwise as the kernel does: `ℓ_i = w_c·t_i·softplus(−x_i) +
/// (1 − t_i)·softplus(x_i)` (`w` = `pos_weight[c]`, or 1 when empty), gradient
/// `(σ(x_i)·(w_c·t_i + 1 − t_i) − w_c·t_i)·scale`. Metrics `[R·loss, Σ_r correct_r/C, R, bad]`.
pub fn bce_logits(
    rows: usize,
    cols: usize,
    x: &[f32],
    t: &[f32],
    pos_weight: &[f32],
    scale: f32,
) -> (Vec<f32>, Metrics) {
    let mut dx = vec![0.0f32; rows * cols];
    let (mut part, mut hit) = ([0.0f32; 64], [0.0f32; 64]);
    for i in 0..rows * cols {
        let w = pos_weight.get(i % cols).copied().unwrap_or(1.0);
        part[i % 64] += w * t[i] * softplus(-x[i]) + (1.0 - t[i]) * softplus(x[i]);
        hit[i % 64] += ((x[i] > 0.0) == (t[i] > 0.5)) as u32 as f32;
        let s = 1.0 / (1.0 + (-x[i]).exp());
        dx[i] = (s * (w * t[i] + 1.0 - t[i]) - w * t[i]) * scale;
    }
    let mut s = 32;
    while s > 0 {
        for l in 0..s {
            part[l] += part[l + s];
            hit[l] += hit[l + s];
        }
        s /= 2;
    }
    let l = part[0] * scale * rows as f32;
    (
        dx,
        [
            l,
            hit[0] / cols as f32,
            rows as f32,
            (!l.is_finite()) as u32 as f32,
        ],
    )
}
