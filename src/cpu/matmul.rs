//! CPU twin of `shaders/matmul.wgsl`: one strided GEMM serving matmul and the linear
//! layer's three products (see the shader header for the stride conventions).

use super::elementwise::{act_fwd, act_grad_fused};

/// The problem one `gemm` call solves.
///
/// `c[m,n] = act_out(Σ_k A(m,k)·B(k,n) + bias[n])`, `A(m,k) = a[m·sam + k·sak]·act_in'(ya[..])`,
/// `B(k,n) = b[k·sbk + n·sbn]`; with `ones_col` the row sums `Σ_k A(m,k)` go to `cb[m]`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub sam: usize,
    pub sak: usize,
    pub sbk: usize,
    pub sbn: usize,
    pub act_out: (u32, f32),
    pub act_in: (u32, f32),
    pub ones_col: bool,
}

impl Gemm {
    /// `c[M,N] = a[M,K]·b[K,N]`
    pub fn matmul(m: usize, k: usize, n: usize) -> Self {
        Gemm {
            m,
            n,
            k,
            sam: k,
            sak: 1,
            sbk: n,
            sbn: 1,
            ..Default::default()
        }
    }
    /// `y[N,out] = act(x[N,in]·wᵀ + b)`
    pub fn linear_forward(batch: usize, inp: usize, out: usize, act: (u32, f32)) -> Self {
        Gemm {
            m: batch,
            n: out,
            k: inp,
            sam: inp,
            sak: 1,
            sbk: 1,
            sbn: inp,
            act_out: act,
            ..Default::default()
        }
    }
    /// `dx[N,in] = dy'[N,out]·w[out,in]`
    pub fn linear_backward_input(batch: usize, inp: usize, out: usize, act: (u32, f32)) -> Self {
        Gemm {
            m: batch,
            n: inp,
            k: out,
            sam: out,
            sak: 1,
            sbk: inp,
            sbn: 1,
            act_in: act,
            ..Default::default()
        }
    }
    /// `dw[out,in] = dy'ᵀ·x`, `db[out] = Σ_n dy'[n,·]`
    pub fn linear_backward_weight(batch: usize, inp: usize, out: usize, act: (u32, f32)) -> Self {
        Gemm {
            m: out,
            n: inp,
            k: batch,
            sam: 1,
            sak: out,
            sbk: inp,
            sbn: 1,
            act_in: act,
            ones_col: true,
            ..Default::default()
        }
    }
}

/// The CPU twin of the `gemm` kernel. Returns `(c [M,N], cb [M])` (`cb` empty without
/// `ones_col`).
pub fn gemm(
    g: &Gemm,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    ya: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let mut c = vec![0.0f32; g.m * g.n];
    let mut cb = vec![0.0f32; if g.ones_col { g.m } else { 0 }];
    let a_at = |m: usize, k: usize| {
        let i = m * g.sam + k * g.sak;
        match (g.act_in.0, ya) {
            (0, _) | (_, None) => a[i],
            (code, Some(ya)) => a[i] * act_grad_fused(ya[i], code, g.act_in.1),
        }
    };
    for m in 0..g.m {
        for n in 0..g.n {
            let mut acc = 0.0f32;
            for k in 0..g.k {
                acc += a_at(m, k) * b[k * g.sbk + n * g.sbn];
            }
            if let Some(bias) = bias {
                acc += bias[n];
            }
            c[m * g.n + n] = act_fwd(acc, g.act_out.0, g.act_out.1);
        }
        if g.ones_col {
            cb[m] = (0..g.k).map(|k| a_at(m, k)).sum();
        }
    }
    (c, cb)
}
