//! The augmentation family (`shaders/augment.wgsl`, twin [`crate::cpu::augment`]): batches
//! cross to the device as bytes and one kernel normalises them per channel, with a random
//! crop from a padded image (zero or reflect padding) and a random horizontal flip. The
//! draws are a pure function of `(seed, epoch, sample index)`, so the CPU twin equals the
//! GPU bit for bit and a resumed run augments exactly as the uninterrupted one.
//!
//! # Shapes
//! `x [N,C,H,W]` bytes (packed four to a `u32`), `sample [N]` dataset indices,
//! `lut [C·256]`, `y [N,C,H,W]`.

use std::any::Any;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{bytes, groups64, Binding, Data, GpuCall, Launch};
use crate::cpu;
use crate::cpu::augment::AugmentDims;
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// What the input pipeline does to each training image: a random crop of the image padded
/// by `crop_pad` pixels on every side (zeros, or `reflect`), and a random horizontal flip
/// (torchvision's `RandomCrop(size, padding)` then `RandomHorizontalFlip()`). The default
/// does nothing (evaluation).
///
/// ```
/// use wgcnn::ops::augment::Augmentation;
/// let a = Augmentation::parse("crop=4,flip")?;
/// assert_eq!((a.crop_pad, a.flip, a.reflect), (4, true, false));
/// assert!(Augmentation::parse("crop=4,rotate").is_err());
/// # Ok::<(), wgcnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Augmentation {
    /// Padding on every side before the random crop back to the image size (0 = no crop).
    pub crop_pad: usize,
    /// Reflect padding (PyTorch `padding_mode='reflect'`) instead of zeros.
    pub reflect: bool,
    /// Random horizontal flip with probability ½.
    pub flip: bool,
}

impl Augmentation {
    /// Parses a comma-separated list: `crop=P` (pad by P, crop back), `reflect` (reflect
    /// padding), `flip`, or `none`. The empty string is `none`.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut a = Augmentation::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some(("crop", v)) => {
                    a.crop_pad = v.parse().map_err(|_| {
                        Error::invalid("--augment", format!("crop={v}: not a pixel count"))
                    })?
                }
                None if item == "flip" => a.flip = true,
                None if item == "reflect" => a.reflect = true,
                None if item == "none" => {}
                _ => {
                    return Err(Error::invalid(
                        "--augment",
                        format!("unknown item '{item}' (expected crop=P, reflect, flip or none)"),
                    ))
                }
            }
        }
        Ok(a)
    }

    /// Whether it changes anything.
    pub fn is_identity(&self) -> bool {
        self.crop_pad == 0 && !self.flip
    }

    /// Checks it against `[C, H, W]` images: reflect padding needs `crop_pad < H, W`.
    pub fn check(&self, image: [usize; 3]) -> Result<()> {
        let [_, h, w] = image;
        if self.reflect && self.crop_pad >= h.min(w) {
            return Err(Error::invalid(
                "--augment",
                format!(
                    "reflect padding {} needs images larger than it, got {h}x{w}",
                    self.crop_pad
                ),
            ));
        }
        Ok(())
    }
}

/// The lookup table `[C·256]` of the normalisation of every byte value per channel
/// (`norms[c].apply(b)`), so the device's values are bit-identical to the CPU loader's.
pub fn normalization_lut(norms: &[Normalize]) -> Vec<f32> {
    norms
        .iter()
        .flat_map(|n| (0..=255u8).map(move |b| n.apply(b)))
        .collect()
}

/// One augmentation launch over `[N, C, H, W]` images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// `[N, C, H, W]`.
    pub dims: [usize; 4],
    pub aug: Augmentation,
    pub seed: u64,
    pub epoch: u32,
}

impl Augment {
    fn twin_dims(&self) -> AugmentDims {
        AugmentDims {
            dims: self.dims,
            pad: self.aug.crop_pad,
            reflect: self.aug.reflect,
            flip: self.aug.flip,
            seed: self.seed,
            epoch: self.epoch,
        }
    }
}

impl Launch for Augment {
    fn kernel(&self) -> &'static str {
        "augment"
    }

    fn bindings(&self) -> Vec<Binding> {
        let [n, c, h, w] = self.dims;
        let len = n * c * h * w;
        vec![
            // packed bytes: any u32 is valid, the benchmark fills small values
            Binding::read("x", len.div_ceil(4)).holding(Data::Index(256)),
            Binding::read("sample", n).holding(Data::Index(1 << 20)),
            Binding::read("lut", c * 256),
            Binding::write("y", len),
        ]
    }

    fn uniform(&self) -> Vec<u8> {
        let [n, c, h, w] = self.dims.map(|v| v as u32);
        bytes(&AugmentUniform {
            n,
            c,
            h,
            w,
            pad: self.aug.crop_pad as u32,
            seed_lo: self.seed as u32,
            seed_hi: (self.seed >> 32) as u32,
            epoch: self.epoch,
        })
    }

    fn gpu(&self, _ctx: &GpuContext) -> Result<GpuCall> {
        Ok(GpuCall {
            entry: "augment",
            consts: vec![
                ("REFLECT", self.aug.reflect as u32),
                ("FLIP", self.aug.flip as u32),
            ],
            groups: groups64(self.dims.iter().product()),
        })
    }

    fn cpu(&self, b: &mut [Vec<f32>]) {
        let len: usize = self.dims.iter().product();
        let x: Vec<u8> = b[0]
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .take(len)
            .collect();
        let sample: Vec<u32> = b[1].iter().map(|v| v.to_bits()).collect();
        b[3] = cpu::augment::augment(&self.twin_dims(), &x, &sample, &b[2]);
    }

    fn at_batch(&self, n: usize) -> Arc<dyn Launch> {
        let mut l = *self;
        l.dims[0] = n;
        Arc::new(l)
    }

    fn describe(&self) -> String {
        format!("{:?} {:?}", self.dims, self.aug)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Packs bytes four to a little-endian `u32` (the layout `augment` reads), zero-filled.
pub fn pack_bytes(x: &[u8]) -> Vec<u32> {
    x.chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}

/// The uniform block of `augment` (`AugmentUniform` in augment.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct AugmentUniform {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    pad: u32,
    seed_lo: u32,
    seed_hi: u32,
    epoch: u32,
}
