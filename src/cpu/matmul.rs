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

/// The CPU twin of `gemm_f16` and `gemm_coop` (`shaders/matmul_f16.wgsl`,
/// `shaders/matmul_coop.wgsl`): `c [M,N] = A·B` for a plain product `g` (its activations,
/// bias and ones column are ignored) on f16 inputs, `a` and `b` packed two per word by
/// [`pack_f16`] (the words' bits carried in `f32`s). Every product of two f16 values is exact
/// in f32; the sum is accumulated in f32, in order of `k`.
pub fn gemm_f16(g: &Gemm, a: &[f32], b: &[f32]) -> Vec<f32> {
    let (a, b) = (unpack_f16(a), unpack_f16(b));
    let mut c = vec![0.0f32; g.m * g.n];
    for m in 0..g.m {
        for n in 0..g.n {
            let mut acc = 0.0f32;
            for k in 0..g.k {
                acc += a[m * g.sam + k * g.sak] * b[k * g.sbk + n * g.sbn];
            }
            c[m * g.n + n] = acc;
        }
    }
    c
}

/// `x` rounded to the nearest f16 (ties to even) and returned as that f16's bits:
/// overflow gives ±∞, NaN stays NaN, values below the smallest subnormal (2⁻²⁴) round to ±0.
pub fn f16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    // the value is 1.man · 2^(exp − 127); an f16 has 10 fraction bits, exponent bias 15
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let (full, shift) = if e >= 1 {
        // normal: keep 10 of the 23 fraction bits
        ((man | 0x80_0000) as u64, 13u32)
    } else {
        // subnormal (or zero): the implicit bit moves into the fraction
        if e < -10 {
            return sign;
        }
        ((man | 0x80_0000) as u64, (14 - e) as u32)
    };
    let kept = full >> shift;
    let rest = full & ((1u64 << shift) - 1);
    let half = 1u64 << (shift - 1);
    let round_up = rest > half || (rest == half && kept & 1 == 1);
    let kept = kept + round_up as u64;
    if e >= 1 {
        // `kept` is 1.fraction with the implicit bit at 2^10; a carry moves up the exponent
        let v = ((e as u64) << 10) + (kept - 0x400);
        if v >= 0x7c00 {
            return sign | 0x7c00;
        }
        sign | v as u16
    } else {
        // a carry out of the subnormal range becomes the smallest normal, as the bits say
        sign | kept as u16
    }
}

/// The f32 value of the f16 with bits `h` (exact).
pub fn f16_value(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let man = (h & 0x3ff) as f32;
    match exp {
        0 => sign * man * (2.0f32).powi(-24),
        0x1f if man == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        _ => sign * (1.0 + man / 1024.0) * (2.0f32).powi(exp - 15),
    }
}

/// `x` rounded to f16 and back (round to nearest, ties to even).
pub fn round_f16(x: f32) -> f32 {
    f16_value(f16_bits(x))
}

/// `x` as f16 values packed two per 32-bit word (element `i` in the low half of word `i/2`
/// when `i` is even, the high half when odd; a last odd element is padded with 0), each word's
/// bits carried in an `f32` — the layout of an `array<f16>` binding, as the GPU and the twins
/// take it.
pub fn pack_f16(x: &[f32]) -> Vec<f32> {
    x.chunks(2)
        .map(|p| {
            let lo = f16_bits(p[0]) as u32;
            let hi = p.get(1).map_or(0, |&v| f16_bits(v) as u32);
            f32::from_bits(lo | hi << 16)
        })
        .collect()
}

/// The f16 values of words packed by [`pack_f16`], as f32 (two per word).
pub fn unpack_f16(w: &[f32]) -> Vec<f32> {
    w.iter()
        .flat_map(|v| {
            let b = v.to_bits();
            [f16_value(b as u16), f16_value((b >> 16) as u16)]
        })
        .collect()
}
