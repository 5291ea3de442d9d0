//! The `augment` kernel (issue 13 item 2): bytes in, normalised, randomly cropped and
//! flipped images out. Against PyTorch (`tests/golden/gen_augment.py`: `F.pad`, slicing,
//! `torch.flip`, normalisation), GPU = CPU bit for bit on random problems (proptest), the
//! draws a pure function of (seed, epoch, dataset index) with the right statistics, and
//! typed errors.
//!
//! Tolerance: the kernel looks values up in a table the host fills with
//! `Normalize::apply`, the same f32 operations PyTorch's reference performs, so the golden
//! comparison is exact up to 1 ulp (atol 1e-6 on values of magnitude ≤ ~4); GPU and CPU are
//! compared bitwise.

mod common;

use common::{backends, gpu, proptest_config};
use proptest::prelude::*;
use wgcnn::cpu::augment::sample_augmentation;
use wgcnn::data::Normalize;
use wgcnn::ops::augment::Augmentation;
use wgcnn::Backend;

#[path = "golden/augment.rs"]
mod golden;

fn norms(means: &[f32], stds: &[f32]) -> Vec<Normalize> {
    means
        .iter()
        .zip(stds)
        .map(|(&mean, &std)| Normalize {
            scale: 1.0 / 255.0,
            mean,
            std,
        })
        .collect()
}

#[test]
fn matches_pytorch_crop_pad_flip() {
    for (be_name, be) in backends() {
        for c in golden::CASES {
            let aug = Augmentation {
                crop_pad: c.pad,
                reflect: c.reflect,
                flip: c.flip,
            };
            let ns = norms(c.means, c.stds);
            let y = be
                .augment(c.images, c.dims, c.samples, &ns, aug, c.seed, c.epoch)
                .unwrap();
            common::assert_close(
                &format!("{be_name} {}", c.name),
                y.as_slice().unwrap(),
                c.y,
                1e-6,
                0.0,
            );
        }
    }
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    common::rand01(seed, len)
        .iter()
        .map(|v| (v * 256.0) as u8)
        .collect()
}

#[test]
fn without_augmentation_it_is_the_loaders_normalisation() {
    let (dims, x) = ([3, 2, 5, 7], bytes(1, 3 * 2 * 5 * 7));
    let ns = [
        Normalize::mnist(),
        Normalize {
            scale: 1.0 / 255.0,
            mean: 0.5,
            std: 0.25,
        },
    ];
    for (be_name, be) in backends() {
        let y = be
            .augment(&x, dims, &[0, 1, 2], &ns, Augmentation::default(), 9, 0)
            .unwrap();
        for (k, (&b, &v)) in x.iter().zip(y.iter()).enumerate() {
            let c = (k / 35) % 2;
            assert_eq!(
                v.to_bits(),
                ns[c].apply(b).to_bits(),
                "{be_name} element {k}"
            );
        }
    }
}

#[test]
fn draws_are_a_function_of_seed_epoch_and_index() {
    let (dims, x) = ([4, 1, 6, 6], bytes(2, 4 * 36));
    let aug = Augmentation::parse("crop=2,flip").unwrap();
    let be = Backend::cpu();
    let ns = [Normalize::default()];
    let y = be
        .augment(&x, dims, &[10, 11, 12, 13], &ns, aug, 5, 3)
        .unwrap();
    // the same image under the same dataset index in another batch position: same output
    let mut x2 = x.clone();
    x2.rotate_left(36);
    let y2 = be
        .augment(&x2, dims, &[11, 12, 13, 10], &ns, aug, 5, 3)
        .unwrap();
    assert_eq!(y.as_slice().unwrap()[36..], y2.as_slice().unwrap()[..108]);
    // another epoch or seed draws again
    let y3 = be
        .augment(&x, dims, &[10, 11, 12, 13], &ns, aug, 5, 4)
        .unwrap();
    let y4 = be
        .augment(&x, dims, &[10, 11, 12, 13], &ns, aug, 6, 3)
        .unwrap();
    assert_ne!(y, y3);
    assert_ne!(y, y4);
    // statistics over 20,000 draws: flips ½ ± 0.02, each of the 2p+1 = 9 offsets 1/9 ± 0.01
    let pad = 4;
    let (mut flips, mut oy) = (0usize, [0usize; 9]);
    let draws = 20_000;
    for s in 0..draws {
        let (y, _, f) = sample_augmentation(77, 1, s, pad, true);
        flips += f as usize;
        oy[y] += 1;
    }
    assert!(
        (flips as f64 / draws as f64 - 0.5).abs() < 0.02,
        "flip rate {flips}/{draws}"
    );
    for (k, &c) in oy.iter().enumerate() {
        assert!(
            (c as f64 / draws as f64 - 1.0 / 9.0).abs() < 0.01,
            "offset {k}: {c}/{draws}"
        );
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let be = Backend::cpu();
    let x = bytes(3, 2 * 3 * 4 * 4);
    let ns = [Normalize::default(); 3];
    let aug = Augmentation::default();
    let e = be
        .augment(&x[1..], [2, 3, 4, 4], &[0, 1], &ns, aug, 0, 0)
        .unwrap_err();
    assert!(e.to_string().contains("95 bytes"), "{e}");
    let e = be
        .augment(&x, [2, 3, 4, 4], &[0], &ns, aug, 0, 0)
        .unwrap_err();
    assert!(e.to_string().contains("1 sample indices"), "{e}");
    let e = be
        .augment(&x, [2, 3, 4, 4], &[0, 1], &ns[..1], aug, 0, 0)
        .unwrap_err();
    assert!(e.to_string().contains("1 normalisations"), "{e}");
    let reflect = Augmentation::parse("crop=4,reflect").unwrap();
    let e = be
        .augment(&x, [2, 3, 4, 4], &[0, 1], &ns, reflect, 0, 0)
        .unwrap_err();
    assert!(e.to_string().contains("reflect padding 4"), "{e}");
    for bad in ["crop=x", "rotate", "crop"] {
        assert!(Augmentation::parse(bad).is_err(), "{bad}");
    }
}

proptest! {
    #![proptest_config(proptest_config(24))]

    #[test]
    fn gpu_equals_cpu_bitwise(
        n in 1usize..5, c in 1usize..4, h in 1usize..12, w in 1usize..12,
        pad in 0usize..5, reflect: bool, flip: bool, seed: u64, epoch in 0u32..100,
        data_seed: u64,
    ) {
        let Some(gb) = gpu() else { return Ok(()) };
        let reflect = reflect && pad < h.min(w);
        let aug = Augmentation { crop_pad: pad, reflect, flip };
        let dims = [n, c, h, w];
        let x = bytes(data_seed, n * c * h * w);
        let samples: Vec<u32> = (0..n as u32).map(|i| i * 7 + (seed as u32 % 1000)).collect();
        let ns: Vec<Normalize> = (0..c)
            .map(|k| Normalize { scale: 1.0 / 255.0, mean: 0.1 * k as f32, std: 0.3 + 0.1 * k as f32 })
            .collect();
        let want = Backend::cpu().augment(&x, dims, &samples, &ns, aug, seed, epoch).unwrap();
        let got = gb.augment(&x, dims, &samples, &ns, aug, seed, epoch).unwrap();
        let bits = |a: &wgcnn::ndarray::Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&got), bits(&want));
    }
}
