//! The executor's device-side input pipeline (issue 13 item 2): byte batches with dataset
//! indices, normalised and augmented by the `augment` kernel in the step's submit (the CPU
//! executor runs its twin). GPU = CPU training on augmented bytes; without augmentation the
//! byte path equals the f32 path bit for bit; a quarter of the upload; typed errors.
//!
//! Tolerances: as `common::executors_agree` — losses 1e-3 relative, gradients atol 1e-4,
//! rtol 2e-3 (f32 sums in other orders); the input tensors themselves are bit-identical.

mod common;

use common::{assert_close, assert_same_tensors, gpu, labels, rand01};
use wgcnn::data::ChannelNormalize;
use wgcnn::exec::{Executor, InputPipeline, Targets};
use wgcnn::graph::Graph;
use wgcnn::nn::{Conv2d, Flatten, Linear, MaxPool2d, Relu, Sequential};
use wgcnn::ops::augment::Augmentation;
use wgcnn::plan::Mode;
use wgcnn::{Backend, Optimizer};

const SHAPE: [usize; 3] = [3, 8, 8];
const PER: usize = 3 * 8 * 8;

fn model() -> Graph {
    Sequential::new(&SHAPE)
        .add("c1", Conv2d::new(3, 4, 3).padding(1))
        .add("r1", Relu)
        .add("p1", MaxPool2d::new(2))
        .add("flat", Flatten)
        .add("fc", Linear::new(4 * 4 * 4, 5))
        .cross_entropy()
        .unwrap()
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    rand01(seed, len)
        .iter()
        .map(|v| (v * 256.0) as u8)
        .collect()
}

fn pipeline(aug: &str) -> InputPipeline {
    InputPipeline {
        normalize: ChannelNormalize::new(1.0 / 255.0, vec![0.5, 0.4, 0.3], vec![0.25, 0.3, 0.2]),
        augment: Augmentation::parse(aug).unwrap(),
        seed: 42,
    }
}

fn executor(be: &Backend, aug: &str) -> Executor {
    let mut ex = Executor::new(be, &model(), 6, Optimizer::momentum(0.05, 0.9), 1).unwrap();
    ex.set_input_pipeline(pipeline(aug)).unwrap();
    ex
}

#[test]
fn augmented_byte_batches_train_alike_on_gpu_and_cpu() {
    let Some(gb) = gpu() else { return };
    let (mut c, mut g) = (
        executor(&Backend::cpu(), "crop=2,reflect,flip"),
        executor(&gb, "crop=2,reflect,flip"),
    );
    for step in 0..3u64 {
        let n = if step == 2 { 4 } else { 6 }; // a short last batch too
        let x = bytes(step, n * PER);
        let idx: Vec<u32> = (0..n as u32).map(|i| i + 10 * step as u32).collect();
        let y = labels(step + 7, n, 5);
        c.train_step_bytes(&x, &idx, step as u32, Targets::Classes(&y))
            .unwrap();
        g.train_step_bytes(&x, &idx, step as u32, Targets::Classes(&y))
            .unwrap();
        let (lc, lg) = (
            c.take_metrics(Mode::Train).unwrap().loss,
            g.take_metrics(Mode::Train).unwrap().loss,
        );
        assert_close(&format!("step {step} loss"), &[lg], &[lc], 1e-4, 1e-3);
        let gc = c.gradients().unwrap();
        assert_same_tensors(
            &format!("step {step} grads"),
            &g.gradients().unwrap(),
            &gc,
            1e-4,
            2e-3,
        );
    }
    let x = bytes(99, 6 * PER);
    let y = labels(98, 6, 5);
    c.eval_batch_bytes(&x, Targets::Classes(&y)).unwrap();
    g.eval_batch_bytes(&x, Targets::Classes(&y)).unwrap();
    let (lc, lg) = (
        c.take_metrics(Mode::Eval).unwrap().loss,
        g.take_metrics(Mode::Eval).unwrap().loss,
    );
    assert_close("eval loss", &[lg], &[lc], 1e-4, 1e-3);
}

/// Without augmentation, bytes through the pipeline are the f32 batch the loader's
/// normalisation makes: training on either gives the same parameters bit for bit; with
/// augmentation the parameters differ (the kernel did something).
#[test]
fn byte_path_equals_the_f32_path_without_augmentation() {
    let norm = pipeline("none").normalize;
    let mut backends = vec![Backend::cpu()];
    backends.extend(gpu());
    for be in backends {
        let (mut a, mut b, mut c) = (
            executor(&be, "none"),
            executor(&be, "none"),
            executor(&be, "crop=1,flip"),
        );
        for step in 0..2u64 {
            let x = bytes(step, 6 * PER);
            let idx: Vec<u32> = (0..6).collect();
            let y = labels(step, 6, 5);
            let f: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(k, &v)| norm.apply((k / 64) % 3, v))
                .collect();
            a.train_step_bytes(&x, &idx, 0, Targets::Classes(&y))
                .unwrap();
            b.train_step(&f, Targets::Classes(&y)).unwrap();
            c.train_step_bytes(&x, &idx, 0, Targets::Classes(&y))
                .unwrap();
        }
        let pa = a.parameters().unwrap();
        assert_eq!(pa, b.parameters().unwrap(), "{be:?}: byte path vs f32 path");
        assert_ne!(
            pa,
            c.parameters().unwrap(),
            "{be:?}: augmentation changed nothing"
        );
    }
}

#[test]
fn byte_batches_upload_a_quarter() {
    let Some(gb) = gpu() else { return };
    let mut ex = executor(&gb, "crop=2,flip");
    let (x, idx, y) = (
        bytes(1, 6 * PER),
        (0..6).collect::<Vec<u32>>(),
        labels(1, 6, 5),
    );
    ex.train_step_bytes(&x, &idx, 0, Targets::Classes(&y))
        .unwrap(); // first: the lookup table too
    let before = ex.counters().bytes_uploaded;
    ex.train_step_bytes(&x, &idx, 1, Targets::Classes(&y))
        .unwrap();
    let bytes_step = ex.counters().bytes_uploaded - before;
    let f = vec![0.5f32; 6 * PER];
    let before = ex.counters().bytes_uploaded;
    ex.train_step(&f, Targets::Classes(&y)).unwrap();
    let f32_step = ex.counters().bytes_uploaded - before;
    // per step beyond the images: labels, indices, uniforms (the same few hundred bytes)
    let images = (6 * PER) as u64;
    assert!(
        f32_step - bytes_step >= 3 * images - 64,
        "f32 step {f32_step} B, byte step {bytes_step} B"
    );
}

#[test]
fn bad_byte_batches_are_typed_errors() {
    let be = Backend::cpu();
    let mut ex = Executor::new(&be, &model(), 6, Optimizer::sgd(0.1), 1).unwrap();
    let (x, y) = (bytes(1, 2 * PER), [0u32, 1]);
    let e = ex
        .train_step_bytes(&x, &[0, 1], 0, Targets::Classes(&y))
        .unwrap_err();
    assert!(e.to_string().contains("set_input_pipeline"), "{e}");
    ex.set_input_pipeline(pipeline("crop=1")).unwrap();
    let e = ex
        .train_step_bytes(&x, &[0], 0, Targets::Classes(&y))
        .unwrap_err();
    assert!(
        e.to_string().contains("1 dataset indices for 2 images"),
        "{e}"
    );
    let e = ex
        .train_step_bytes(&x[1..], &[0, 1], 0, Targets::Classes(&y))
        .unwrap_err();
    assert!(
        e.to_string().contains("not a whole number of samples"),
        "{e}"
    );
    let mut p = pipeline("none");
    // one mean and std serve every channel; two for three channels are refused
    p.normalize = ChannelNormalize::new(1.0 / 255.0, vec![0.5, 0.4], vec![0.5, 0.5]);
    let e = ex.set_input_pipeline(p).unwrap_err();
    assert!(
        e.to_string().contains("2 means and 2 stds for 3 channels"),
        "{e}"
    );
    let e = ex
        .set_input_pipeline(pipeline("crop=8,reflect"))
        .unwrap_err();
    assert!(e.to_string().contains("reflect padding 8"), "{e}");
    let mut flat = Executor::new(
        &be,
        &Sequential::new(&[4])
            .add("fc", Linear::new(4, 2))
            .cross_entropy()
            .unwrap(),
        2,
        Optimizer::sgd(0.1),
        0,
    )
    .unwrap();
    let e = flat.set_input_pipeline(pipeline("none")).unwrap_err();
    assert!(e.to_string().contains("[C, H, W]"), "{e}");
}
