//! The device-side input pipeline: training batches cross to the device as bytes (4× less
//! than f32) with their dataset indices, and the `augment` kernel
//! ([`crate::ops::augment`]) normalises them per channel, crops and flips them, in the same
//! submit as the step. The CPU executor runs the kernel's twin, so both paths see the same
//! values bit for bit.

use super::{Executor, Targets};
use crate::data::ChannelNormalize;
use crate::error::{Error, Result};
use crate::ops::augment::{normalization_lut, Augment, Augmentation};
use crate::ops::Launch;

/// What [`Executor::train_step_bytes`] does to the bytes it is given: per-channel
/// normalisation, and on training batches the augmentation, drawn from `seed`, the epoch and
/// each sample's dataset index (so a resumed run sees the same crops and flips).
///
/// ```no_run
/// # use wgcnn::{exec::{Executor, InputPipeline, Targets}, nn, Backend, Optimizer};
/// # use wgcnn::data::ChannelNormalize;
/// # use wgcnn::ops::augment::Augmentation;
/// # fn main() -> Result<(), wgcnn::Error> {
/// let mut ex = Executor::new(&Backend::gpu()?, &nn::resnet_cifar(20, 10)?, 128, Optimizer::sgd(0.1), 0)?;
/// ex.set_input_pipeline(InputPipeline {
///     normalize: ChannelNormalize::cifar10(),
///     augment: Augmentation::parse("crop=4,flip")?,
///     seed: 0,
/// })?;
/// let (bytes, indices, labels) = (vec![0u8; 128 * 3 * 32 * 32], (0..128).collect::<Vec<u32>>(), vec![0u32; 128]);
/// ex.train_step_bytes(&bytes, &indices, /*epoch*/ 0, Targets::Classes(&labels))?;
/// ex.eval_batch_bytes(&bytes, Targets::Classes(&labels))?;   // normalised, not augmented
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct InputPipeline {
    pub normalize: ChannelNormalize,
    pub augment: Augmentation,
    pub seed: u64,
}

/// An input pipeline checked against the plan, with its lookup table.
#[derive(Clone, Debug)]
pub(crate) struct Pipeline {
    pub spec: InputPipeline,
    /// `[C·256]`: the normalisation of every byte value per channel.
    pub lut: Vec<f32>,
}

/// A byte batch and the launch that turns it into the input tensor.
#[derive(Clone, Copy)]
pub(crate) struct RawInput<'a> {
    pub bytes: &'a [u8],
    pub samples: &'a [u32],
    pub lut: &'a [f32],
    pub launch: Augment,
}

impl RawInput<'_> {
    /// The input tensor, by the kernel's CPU twin.
    pub fn twin(&self) -> Vec<f32> {
        let words = crate::ops::augment::pack_bytes(self.bytes);
        let mut b = vec![
            bytemuck::cast_slice(&words).to_vec(),
            bytemuck::cast_slice(self.samples).to_vec(),
            self.lut.to_vec(),
            Vec::new(),
        ];
        self.launch.cpu(&mut b);
        b.pop().unwrap_or_default()
    }
}

impl Executor {
    /// Sets the device-side input pipeline of [`Executor::train_step_bytes`] and
    /// [`Executor::eval_batch_bytes`]. The model's input must be `[C, H, W]` images with as
    /// many channels as `p.normalize` has.
    pub fn set_input_pipeline(&mut self, p: InputPipeline) -> Result<()> {
        let shape = self.plan.input_shape.clone();
        let [c, h, w] = shape[..] else {
            return Err(Error::invalid(
                "input pipeline",
                format!("needs [C, H, W] image inputs, the model takes {shape:?}"),
            ));
        };
        p.normalize.validate(c)?;
        p.augment.check([c, h, w])?;
        let lut = normalization_lut(&(0..c).map(|k| p.normalize.channel(k)).collect::<Vec<_>>());
        self.pipeline = Some(Pipeline { spec: p, lut });
        Ok(())
    }

    /// A training step on a byte batch: `images` are `n` images `[C, H, W]` of bytes (CHW per
    /// image), `samples` their dataset indices; the input pipeline normalises and augments
    /// them on the device (the CPU executor runs the same kernel's twin), then the step runs
    /// as [`Executor::train_step`].
    pub fn train_step_bytes(
        &mut self,
        images: &[u8],
        samples: &[u32],
        epoch: u32,
        targets: Targets<'_>,
    ) -> Result<()> {
        self.train_bytes(images, samples, epoch, targets, true)
    }

    /// The first half of [`Executor::train_step_bytes`], as [`Executor::forward_backward`]
    /// is of [`Executor::train_step`]: the input pipeline, forward, loss and backward (one
    /// submit on the GPU), leaving the batch-mean gradient in the flat gradient buffer and
    /// counting the step. Follow it with [`Executor::apply_update`]: the pair is bitwise one
    /// `train_step_bytes` (the augmentation draws depend on the pipeline's seed, `epoch` and
    /// `samples` only, so a shard of a batch gets the draws its samples get in the whole).
    ///
    /// ```
    /// # use wgcnn::{exec::{Executor, InputPipeline, Targets}, nn, Backend, Optimizer};
    /// # use wgcnn::data::ChannelNormalize;
    /// # use wgcnn::ops::augment::Augmentation;
    /// # fn main() -> Result<(), wgcnn::Error> {
    /// let mut ex = Executor::new(&Backend::cpu(), &nn::resnet_cifar(8, 10)?, 2, Optimizer::sgd(0.1), 0)?;
    /// ex.set_input_pipeline(InputPipeline {
    ///     normalize: ChannelNormalize::cifar10(),
    ///     augment: Augmentation::parse("crop=4,flip")?,
    ///     seed: 0,
    /// })?;
    /// ex.forward_backward_bytes(&vec![7u8; 2 * 3 * 32 * 32], &[40, 41], 0, Targets::Classes(&[1, 7]))?;
    /// let g = ex.read_flat_gradients()?;   // e.g. summed over ranks
    /// ex.write_flat_gradients(&g)?;
    /// ex.apply_update()?;
    /// assert_eq!(ex.step_count(), 1);
    /// # Ok(()) }
    /// ```
    pub fn forward_backward_bytes(
        &mut self,
        images: &[u8],
        samples: &[u32],
        epoch: u32,
        targets: Targets<'_>,
    ) -> Result<()> {
        self.train_bytes(images, samples, epoch, targets, false)?;
        self.update_pending = true;
        Ok(())
    }

    /// A training step on a byte batch, with the optimizer update or without it.
    fn train_bytes(
        &mut self,
        images: &[u8],
        samples: &[u32],
        epoch: u32,
        targets: Targets<'_>,
        update: bool,
    ) -> Result<()> {
        let n = self.check_batch_len(images.len(), Some(targets))?;
        let p = self.pipeline_checked(n, samples.len())?;
        let launch =
            Self::augment_launch(&self.plan.input_shape, n, &p.spec, p.spec.augment, epoch);
        let raw = RawInput {
            bytes: images,
            samples,
            lut: &p.lut,
            launch,
        };
        self.train(n, &[], Some(raw), targets, update)
    }

    /// Forward pass and loss on a byte batch (normalised by the input pipeline, not
    /// augmented), accumulating the evaluation metrics as [`Executor::eval_batch`].
    pub fn eval_batch_bytes(&mut self, images: &[u8], targets: Targets<'_>) -> Result<()> {
        let n = self.check_batch_len(images.len(), Some(targets))?;
        let samples: Vec<u32> = (0..n as u32).collect();
        let p = self.pipeline_checked(n, n)?;
        let none = Augmentation::default();
        let launch = Self::augment_launch(&self.plan.input_shape, n, &p.spec, none, 0);
        let raw = RawInput {
            bytes: images,
            samples: &samples,
            lut: &p.lut,
            launch,
        };
        let t = Self::target_words(targets);
        self.run(&super::Batch {
            n,
            mode: crate::plan::Mode::Eval,
            images: &[],
            raw: Some(raw),
            targets: &t,
            opt: None,
            skip_loss: false,
            update: false,
        })
    }

    /// The pipeline, checked against a batch of `n` images with `samples` indices.
    fn pipeline_checked(&self, n: usize, samples: usize) -> Result<Pipeline> {
        let p = self.pipeline.clone().ok_or_else(|| {
            Error::invalid(
                "input pipeline",
                "byte batches need Executor::set_input_pipeline first",
            )
        })?;
        if samples != n {
            return Err(Error::shape(
                "samples",
                format!("{samples} dataset indices for {n} images"),
            ));
        }
        Ok(p)
    }

    fn augment_launch(
        shape: &[usize],
        n: usize,
        p: &InputPipeline,
        aug: Augmentation,
        epoch: u32,
    ) -> Augment {
        Augment {
            dims: [n, shape[0], shape[1], shape[2]],
            aug,
            seed: p.seed,
            epoch,
        }
    }
}
