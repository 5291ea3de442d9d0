//! CPU twins of `shaders/layout.wgsl`.
//!
//! Shapes: x `xd` (4 dims, row-major), y `[xd[perm[0]], xd[perm[1]], xd[perm[2]], xd[perm[3]]]`.

/// `y[i0,i1,i2,i3] = x[j]` with `j[perm[k]] = i_k` (numpy `x.transpose(perm)`, made
/// contiguous). `perm` must be a permutation of `0..4`.
pub fn permute(xd: [usize; 4], perm: [usize; 4], x: &[f32]) -> Vec<f32> {
    // row-major strides of x, and the dims and x-strides of y's axes
    let xs = [xd[1] * xd[2] * xd[3], xd[2] * xd[3], xd[3], 1];
    let yd = perm.map(|a| xd[a]);
    let st = perm.map(|a| xs[a]);
    let mut y = Vec::with_capacity(x.len());
    for i0 in 0..yd[0] {
        for i1 in 0..yd[1] {
            for i2 in 0..yd[2] {
                for i3 in 0..yd[3] {
                    y.push(x[i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3]]);
                }
            }
        }
    }
    y
}
