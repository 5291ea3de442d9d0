//! CPU twin of `shaders/augment.wgsl`: u8 images to normalised, randomly cropped and
//! flipped f32 images.
//!
//! Shapes: x `[N,C,H,W]` bytes, sample `[N]`, lut `[C·256]`, y `[N,C,H,W]`.

/// The 32-bit mixer of the shader (`mix32`, lowbias32).
pub fn mix32(v: u32) -> u32 {
    let mut x = v;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Draw `k` for the sample with dataset index `s` in `epoch` (`rnd` in the shader): a pure
/// function of `(seed, epoch, s, k)`.
pub fn draw(seed: u64, epoch: u32, s: u32, k: u32) -> u32 {
    let (lo, hi) = (seed as u32, (seed >> 32) as u32);
    let h = mix32(lo ^ mix32(hi ^ mix32(epoch ^ mix32(s))));
    mix32(h ^ k.wrapping_mul(0x9e37_79b9))
}

/// The augmentation of sample `s`: crop offsets `(oy, ox)` in `[0, 2·pad]` and whether it
/// is flipped.
pub fn sample_augmentation(
    seed: u64,
    epoch: u32,
    s: u32,
    pad: usize,
    flip: bool,
) -> (usize, usize, bool) {
    let span = 2 * pad as u32 + 1;
    let oy = draw(seed, epoch, s, 0) % span;
    let ox = draw(seed, epoch, s, 1) % span;
    let flipped = flip && draw(seed, epoch, s, 2) & 1 == 1;
    (oy as usize, ox as usize, flipped)
}

/// The source index of output position `o` shifted by `off − pad` (`source` in the shader).
fn source(o: usize, off: usize, pad: usize, len: usize, reflect: bool) -> Option<usize> {
    let mut t = o as i64 + off as i64 - pad as i64;
    let len = len as i64;
    if reflect {
        t = t.abs();
        if t >= len {
            t = 2 * (len - 1) - t;
        }
    }
    (0..len).contains(&t).then_some(t as usize)
}

/// The geometry and options of one augmentation launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentDims {
    /// `[N, C, H, W]`.
    pub dims: [usize; 4],
    pub pad: usize,
    pub reflect: bool,
    pub flip: bool,
    pub seed: u64,
    pub epoch: u32,
}

/// `y[n,c,i,j] = lut[c·256 + x[n,c, i + oy − pad, j' + ox − pad]]` (see the shader).
pub fn augment(a: &AugmentDims, x: &[u8], sample: &[u32], lut: &[f32]) -> Vec<f32> {
    let [n_, c_, h_, w_] = a.dims;
    let mut y = vec![0.0f32; n_ * c_ * h_ * w_];
    for (n, &s) in sample.iter().enumerate().take(n_) {
        let (oy, ox, flipped) = sample_augmentation(a.seed, a.epoch, s, a.pad, a.flip);
        for c in 0..c_ {
            let plane = (n * c_ + c) * h_ * w_;
            for i in 0..h_ {
                for j in 0..w_ {
                    let jj = if flipped { w_ - 1 - j } else { j };
                    let si = source(i, oy, a.pad, h_, a.reflect);
                    let sj = source(jj, ox, a.pad, w_, a.reflect);
                    let b = match (si, sj) {
                        (Some(si), Some(sj)) => x[plane + si * w_ + sj],
                        _ => 0,
                    };
                    y[plane + i * w_ + j] = lut[c * 256 + b as usize];
                }
            }
        }
    }
    y
}
