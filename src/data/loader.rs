//! Mini-batch loading: normalization, deterministic per-epoch shuffling, batching.
//!
//! A [`Loader`] owns a copy of a [`Dataset`]'s bytes and yields [`Batch`]es of
//! normalized `f32` images shaped `[B, C, rows, cols]` (NCHW; `C = 1` for MNIST), each
//! channel normalized with its own mean and std ([`ChannelNormalize`]) or all with one
//! ([`Normalize`]). The
//! permutation of epoch `e` is a pure function of `(seed, e)`: a `StdRng` seeded with
//! `seed ^ splitmix64(e)` drives a Fisher–Yates shuffle, so runs are reproducible and
//! any epoch can be regenerated on its own (for example after resuming). Every example
//! appears exactly once per epoch; the last, partial batch is yielded, not dropped.
//!
//! ```
//! use wgcnn::data::{Dataset, Loader, Normalize};
//!
//! let ds = Dataset::new("toy", (0..20).collect(), vec![0, 1, 2, 3, 4], 2, 2, 10)?;
//! let loader = Loader::new(&ds, 2, true, 42, Normalize::default())?;
//! let sizes: Vec<usize> = loader.epoch(0).map(|b| b.map(|b| b.labels.len())).collect::<Result<_, _>>()?;
//! assert_eq!(sizes, vec![2, 2, 1]);
//! # Ok::<(), wgcnn::Error>(())
//! ```

use ndarray::Array4;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::Dataset;
use crate::error::{Error, Result};

/// Byte-to-float normalization: `x = (b · scale − mean) / std`.
///
/// The default maps `0..=255` to `0..=1` (`scale = 1/255`, `mean = 0`, `std = 1`).
///
/// # Examples
///
/// ```
/// use wgcnn::data::Normalize;
///
/// let n = Normalize::default();
/// assert_eq!(n.apply(0), 0.0);
/// assert_eq!(n.apply(255), 1.0);
///
/// let m = Normalize::mnist();
/// assert!((m.apply(0) + 0.1307 / 0.3081).abs() < 1e-6);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    /// Multiplier applied to the raw byte (usually `1/255`).
    pub scale: f32,
    /// Subtracted after scaling.
    pub mean: f32,
    /// Divides after subtracting the mean; must be finite and non-zero.
    pub std: f32,
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize {
            scale: 1.0 / 255.0,
            mean: 0.0,
            std: 1.0,
        }
    }
}

impl Normalize {
    /// The customary MNIST statistics: `scale = 1/255`, `mean = 0.1307`, `std = 0.3081`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wgcnn::data::Normalize::mnist().mean, 0.1307);
    /// ```
    pub fn mnist() -> Self {
        Normalize {
            scale: 1.0 / 255.0,
            mean: 0.1307,
            std: 0.3081,
        }
    }

    /// Normalizes one byte.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Normalize;
    /// let n = Normalize { scale: 1.0 / 255.0, mean: 0.5, std: 0.5 };
    /// assert_eq!(n.apply(255), 1.0);
    /// assert_eq!(n.apply(0), -1.0);
    /// ```
    pub fn apply(&self, b: u8) -> f32 {
        (f32::from(b) * self.scale - self.mean) / self.std
    }

    /// Checks that the parameters are finite and `std` is non-zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Normalize;
    /// assert!(Normalize::default().validate().is_ok());
    /// assert!(Normalize { std: 0.0, ..Normalize::default() }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if !(self.scale.is_finite() && self.mean.is_finite() && self.std.is_finite())
            || self.std == 0.0
        {
            return Err(Error::invalid(
                "Normalize",
                format!(
                    "scale ({}), mean ({}) and std ({}) must be finite and std non-zero",
                    self.scale, self.mean, self.std
                ),
            ));
        }
        Ok(())
    }

    fn table(&self) -> [f32; 256] {
        let mut t = [0.0; 256];
        for (b, v) in (0..=255u8).zip(t.iter_mut()) {
            *v = self.apply(b);
        }
        t
    }
}

/// Per-channel byte-to-float normalization: channel `c` maps byte `b` to
/// `(b · scale − mean[c]) / std[c]` (torchvision's `Normalize(mean, std)` after
/// `ToTensor`). A [`Normalize`] converts into one with a single entry, which then applies
/// to every channel.
///
/// # Examples
///
/// ```
/// use wgcnn::data::{ChannelNormalize, Normalize};
///
/// let n = ChannelNormalize::new(1.0 / 255.0, vec![0.5, 0.0, 0.0], vec![0.5, 1.0, 1.0]);
/// assert_eq!(n.apply(0, 255), 1.0);
/// assert_eq!(n.apply(1, 255), 1.0);
/// assert!(n.validate(3).is_ok());
/// assert!(n.validate(1).is_err()); // three entries for one channel
///
/// let one: ChannelNormalize = Normalize::mnist().into();
/// assert_eq!(one.apply(2, 0), Normalize::mnist().apply(0));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelNormalize {
    /// Multiplier applied to the raw byte (usually `1/255`).
    pub scale: f32,
    /// Per-channel mean, subtracted after scaling (one entry: the same for every channel).
    pub mean: Vec<f32>,
    /// Per-channel std, divides after subtracting the mean (one entry: for every channel).
    pub std: Vec<f32>,
}

impl From<Normalize> for ChannelNormalize {
    fn from(n: Normalize) -> Self {
        ChannelNormalize {
            scale: n.scale,
            mean: vec![n.mean],
            std: vec![n.std],
        }
    }
}

impl ChannelNormalize {
    /// Per-channel statistics `mean` and `std` after scaling by `scale`.
    ///
    /// # Examples
    ///
    /// ```
    /// let n = wgcnn::data::ChannelNormalize::new(1.0, vec![1.0, 2.0], vec![1.0, 2.0]);
    /// assert_eq!((n.apply(0, 3), n.apply(1, 4)), (2.0, 1.0));
    /// ```
    pub fn new(scale: f32, mean: Vec<f32>, std: Vec<f32>) -> Self {
        ChannelNormalize { scale, mean, std }
    }

    /// The customary CIFAR-10 statistics: `scale = 1/255`, mean `(0.4914, 0.4822,
    /// 0.4465)`, std `(0.2470, 0.2435, 0.2616)` (the training set's, per channel).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wgcnn::data::ChannelNormalize::cifar10().mean.len(), 3);
    /// ```
    pub fn cifar10() -> Self {
        ChannelNormalize {
            scale: 1.0 / 255.0,
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// The [`Normalize`] of channel `c` (the single entry when there is one).
    ///
    /// # Examples
    ///
    /// ```
    /// let n = wgcnn::data::ChannelNormalize::cifar10();
    /// assert_eq!(n.channel(2).mean, 0.4465);
    /// ```
    pub fn channel(&self, c: usize) -> Normalize {
        let pick = |v: &[f32]| {
            if v.len() == 1 {
                v[0]
            } else {
                v.get(c).copied().unwrap_or(f32::NAN)
            }
        };
        Normalize {
            scale: self.scale,
            mean: pick(&self.mean),
            std: pick(&self.std),
        }
    }

    /// Normalizes byte `b` of channel `c`.
    ///
    /// # Examples
    ///
    /// ```
    /// let n = wgcnn::data::ChannelNormalize::new(1.0, vec![0.0, 10.0], vec![1.0, 5.0]);
    /// assert_eq!(n.apply(1, 20), 2.0);
    /// ```
    pub fn apply(&self, c: usize, b: u8) -> f32 {
        self.channel(c).apply(b)
    }

    /// Checks that `mean` and `std` have one entry or `channels` entries, each valid as a
    /// [`Normalize`] (finite, `std` non-zero).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::ChannelNormalize;
    /// assert!(ChannelNormalize::cifar10().validate(3).is_ok());
    /// assert!(ChannelNormalize::new(1.0, vec![0.0], vec![0.0]).validate(1).is_err());
    /// ```
    pub fn validate(&self, channels: usize) -> Result<()> {
        let ok = |len: usize| len == 1 || len == channels;
        if !ok(self.mean.len()) || !ok(self.std.len()) {
            return Err(Error::invalid(
                "ChannelNormalize",
                format!(
                    "{} means and {} stds for {channels} channels: give 1 or {channels} of each",
                    self.mean.len(),
                    self.std.len()
                ),
            ));
        }
        (0..channels).try_for_each(|c| self.channel(c).validate())
    }

    /// One lookup table of the 256 byte values per channel.
    fn tables(&self, channels: usize) -> Vec<[f32; 256]> {
        (0..channels).map(|c| self.channel(c).table()).collect()
    }
}

/// One mini-batch.
///
/// # Examples
///
/// ```
/// use wgcnn::data::{Dataset, Loader, Normalize};
///
/// let ds = Dataset::new("toy", vec![0, 255, 0, 255], vec![3, 7], 1, 2, 10)?;
/// let loader = Loader::new(&ds, 2, false, 0, Normalize::default())?;
/// let batch = loader.epoch(0).next().expect("one batch")?;
/// assert_eq!(batch.images.shape(), &[2, 1, 1, 2]);
/// assert_eq!(batch.labels, vec![3, 7]);
/// assert_eq!(batch.indices, vec![0, 1]);
/// assert_eq!(batch.len(), 2);
/// # Ok::<(), wgcnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Normalized images, `[B, C, rows, cols]`.
    pub images: Array4<f32>,
    /// Labels as `u32` (the form the loss kernels take).
    pub labels: Vec<u32>,
    /// Dataset indices of the examples, in batch order.
    pub indices: Vec<usize>,
}

impl Batch {
    /// The images as flat rows `[B, C·H·W]` (for models that take flattened samples).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0, 255, 255, 0], vec![1], 2, 2, 10)?;
    /// let b = Loader::new(&ds, 1, false, 0, Normalize::default())?.batch(&[0])?;
    /// assert_eq!(b.flat()?.dim(), (1, 4));
    /// assert_eq!(b.flat()?.row(0).to_vec(), vec![0.0, 1.0, 1.0, 0.0]);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn flat(&self) -> Result<ndarray::Array2<f32>> {
        let (b, c, h, w) = self.images.dim();
        let v: Vec<f32> = self.images.iter().copied().collect();
        ndarray::Array2::from_shape_vec((b, c * h * w), v)
            .map_err(|e| Error::shape("Batch::flat", e.to_string()))
    }

    /// Number of examples in the batch.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Batch;
    /// let b = Batch {
    ///     images: wgcnn::ndarray::Array4::zeros((3, 1, 2, 2)),
    ///     labels: vec![0, 1, 2],
    ///     indices: vec![5, 6, 7],
    /// };
    /// assert_eq!(b.len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty (never the case for batches from [`Loader::epoch`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Batch;
    /// let b = Batch { images: wgcnn::ndarray::Array4::zeros((0, 1, 2, 2)), labels: vec![], indices: vec![] };
    /// assert!(b.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Iterates a dataset in mini-batches; see the [module docs](self).
///
/// # Examples
///
/// ```
/// use wgcnn::data::{embedded_mnist_subset_dir, load_mnist_dir, Loader, Normalize};
///
/// let pair = load_mnist_dir(&embedded_mnist_subset_dir(), "mnist")?;
/// let loader = Loader::new(&pair.test, 64, true, 7, Normalize::default())?;
/// assert_eq!(loader.num_batches(), 32); // 31 full batches and one of 16
/// let last = loader.epoch(3).last().expect("non-empty")?;
/// assert_eq!(last.images.shape(), &[16, 1, 28, 28]);
/// # Ok::<(), wgcnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Loader {
    images: Vec<u8>,
    labels: Vec<u8>,
    n: usize,
    channels: usize,
    rows: usize,
    cols: usize,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    norm: ChannelNormalize,
    /// One table per channel: `tables[c][b]` is byte `b` of channel `c` normalized.
    tables: Vec<[f32; 256]>,
    drop_last: bool,
}

impl Loader {
    /// Creates a loader over a copy of `dataset`'s images and labels.
    ///
    /// Errors with [`Error::InvalidArgument`] when `batch_size` is 0, the
    /// normalization is invalid (see [`Normalize::validate`]) or the dataset's
    /// fields are inconsistent (`images.len() != n·rows·cols`, `labels.len() != n`).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 4], vec![0, 1], 1, 2, 10)?;
    /// assert!(Loader::new(&ds, 0, false, 0, Normalize::default()).is_err());
    /// assert!(Loader::new(&ds, 8, false, 0, Normalize::default()).is_ok());
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn new(
        dataset: &Dataset,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        norm: Normalize,
    ) -> Result<Loader> {
        norm.validate()?;
        Loader::per_channel(dataset, batch_size, shuffle, seed, norm.into())
    }

    /// [`Loader::new`] with a normalization per channel (or one for all channels, when
    /// `norm` has single entries). Errors as [`Loader::new`], and when `norm` does not fit
    /// the dataset's channels (see [`ChannelNormalize::validate`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{ChannelNormalize, Dataset, Loader};
    /// // one RGB pixel (R=255, G=0, B=51)
    /// let ds = Dataset::with_channels("rgb", vec![255, 0, 51], vec![0], 3, 1, 1, 10)?;
    /// let norm = ChannelNormalize::new(1.0 / 255.0, vec![0.5, 0.5, 0.0], vec![0.5, 0.5, 0.1]);
    /// let loader = Loader::per_channel(&ds, 1, false, 0, norm)?;
    /// let b = loader.batch(&[0])?;
    /// assert_eq!(b.images.shape(), &[1, 3, 1, 1]);
    /// assert_eq!(b.images[[0, 0, 0, 0]], 1.0);
    /// assert_eq!(b.images[[0, 1, 0, 0]], -1.0);
    /// assert!((b.images[[0, 2, 0, 0]] - 2.0).abs() < 1e-6);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn per_channel(
        dataset: &Dataset,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        norm: ChannelNormalize,
    ) -> Result<Loader> {
        if batch_size == 0 {
            return Err(Error::invalid(
                "Loader::new",
                "batch_size must be at least 1",
            ));
        }
        let channels = dataset.channels;
        norm.validate(channels)?;
        let expected = [channels, dataset.rows, dataset.cols]
            .iter()
            .try_fold(dataset.n, |acc, &d| acc.checked_mul(d));
        if expected != Some(dataset.images.len()) || dataset.labels.len() != dataset.n {
            return Err(Error::invalid(
                "Loader::new",
                format!(
                    "inconsistent dataset '{}': n = {}, {}×{}×{} images, {} image bytes, {} labels",
                    dataset.name,
                    dataset.n,
                    channels,
                    dataset.rows,
                    dataset.cols,
                    dataset.images.len(),
                    dataset.labels.len()
                ),
            ));
        }
        Ok(Loader {
            images: dataset.images.clone(),
            labels: dataset.labels.clone(),
            n: dataset.n,
            channels,
            rows: dataset.rows,
            cols: dataset.cols,
            batch_size,
            shuffle,
            seed,
            tables: norm.tables(channels),
            norm,
            drop_last: false,
        })
    }

    /// Drops each epoch's last batch when it is partial (PyTorch's `drop_last`): every batch
    /// then has `batch_size` examples — e.g. for batch norm, which refuses a batch of 1 in
    /// training. An epoch of a dataset smaller than the batch is then empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 5], vec![0; 5], 1, 1, 10)?;
    /// let loader = Loader::new(&ds, 2, true, 3, Normalize::default())?.drop_last(true);
    /// assert_eq!(loader.num_batches(), 2);
    /// assert!(loader.epoch(0).all(|b| b.map_or(false, |b| b.len() == 2)));
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn drop_last(mut self, on: bool) -> Self {
        self.drop_last = on;
        self
    }

    /// Examples an epoch visits: all, or a whole number of batches with `drop_last`.
    fn used(&self) -> usize {
        if self.drop_last {
            self.n - self.n % self.batch_size
        } else {
            self.n
        }
    }

    /// Number of examples.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 3], vec![0, 1, 2], 1, 1, 10)?;
    /// assert_eq!(Loader::new(&ds, 2, false, 0, Normalize::default())?.len(), 3);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the dataset is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 3], vec![0, 1, 2], 1, 1, 10)?;
    /// assert!(!Loader::new(&ds, 2, false, 0, Normalize::default())?.is_empty());
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The batch size (the last batch of an epoch may be smaller).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 3], vec![0, 1, 2], 1, 1, 10)?;
    /// assert_eq!(Loader::new(&ds, 2, false, 0, Normalize::default())?.batch_size(), 2);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Image height and width.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 6], vec![0], 2, 3, 10)?;
    /// assert_eq!(Loader::new(&ds, 1, false, 0, Normalize::default())?.image_dims(), (2, 3));
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn image_dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Channels per image (the `C` of the batches' `[B, C, rows, cols]`).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::with_channels("rgb", vec![0; 12], vec![0], 3, 2, 2, 10)?;
    /// let l = Loader::new(&ds, 1, false, 0, Normalize::default())?;
    /// assert_eq!((l.channels(), l.sample_len()), (3, 12));
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Values per sample, `channels × rows × cols` (what [`Loader::fill`] writes per index).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 6], vec![0], 2, 3, 10)?;
    /// assert_eq!(Loader::new(&ds, 1, false, 0, Normalize::default())?.sample_len(), 6);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn sample_len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// The per-channel normalization in use.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{ChannelNormalize, Dataset, Loader};
    /// let ds = Dataset::with_channels("rgb", vec![0; 3], vec![0], 3, 1, 1, 10)?;
    /// let l = Loader::per_channel(&ds, 1, false, 0, ChannelNormalize::cifar10())?;
    /// assert_eq!(l.channel_normalize(), &ChannelNormalize::cifar10());
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn channel_normalize(&self) -> &ChannelNormalize {
        &self.norm
    }

    /// The normalization in use (that of channel 0 for a per-channel loader; see
    /// [`Loader::channel_normalize`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0], vec![0], 1, 1, 10)?;
    /// let l = Loader::new(&ds, 1, false, 0, Normalize::mnist())?;
    /// assert_eq!(l.normalize(), Normalize::mnist());
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn normalize(&self) -> Normalize {
        self.norm.channel(0)
    }

    /// Number of batches per epoch, `ceil(n / batch_size)` (the partial batch counts, unless
    /// [`Loader::drop_last`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 5], vec![0; 5], 1, 1, 10)?;
    /// assert_eq!(Loader::new(&ds, 2, false, 0, Normalize::default())?.num_batches(), 3);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn num_batches(&self) -> usize {
        self.used().div_ceil(self.batch_size)
    }

    /// The order in which epoch `epoch` visits the examples: the identity without
    /// shuffling, otherwise a permutation that depends only on `(seed, epoch)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 50], vec![0; 50], 1, 1, 10)?;
    /// let a = Loader::new(&ds, 8, true, 1, Normalize::default())?;
    /// let b = Loader::new(&ds, 8, true, 1, Normalize::default())?;
    /// assert_eq!(a.order(4), b.order(4));
    /// assert_ne!(a.order(4), a.order(5));
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        epoch_order(self.n, self.shuffle, self.seed, epoch)
    }

    /// The batches of epoch `epoch`, in order; the last one may be partial.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 5], vec![0; 5], 1, 1, 10)?;
    /// let loader = Loader::new(&ds, 2, true, 9, Normalize::default())?;
    /// let mut seen: Vec<usize> = Vec::new();
    /// for b in loader.epoch(0) {
    ///     seen.extend(b?.indices);
    /// }
    /// seen.sort();
    /// assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn epoch(&self, epoch: u64) -> Epoch<'_> {
        Epoch {
            loader: self,
            order: self.order(epoch),
            pos: 0,
            end: self.used(),
        }
    }

    /// Builds the batch of the given examples. Errors with
    /// [`Error::InvalidArgument`] if an index is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0, 255], vec![4, 5], 1, 1, 10)?;
    /// let loader = Loader::new(&ds, 2, false, 0, Normalize::default())?;
    /// let b = loader.batch(&[1])?;
    /// assert_eq!(b.images[[0, 0, 0, 0]], 1.0);
    /// assert_eq!(b.labels, vec![5]);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn batch(&self, indices: &[usize]) -> Result<Batch> {
        let b = indices.len();
        let mut images = vec![0.0f32; b * self.sample_len()];
        let mut labels = vec![0u32; b];
        self.fill(indices, &mut images, &mut labels)?;
        let images = Array4::from_shape_vec((b, self.channels, self.rows, self.cols), images)
            .map_err(|e| Error::shape("Loader::batch", e.to_string()))?;
        Ok(Batch {
            images,
            labels,
            indices: indices.to_vec(),
        })
    }

    /// Writes the normalized images of `indices` into `images` (`indices.len() ×
    /// channels × rows × cols` values, NCHW) and their labels into `labels`,
    /// without allocating. Errors with [`Error::InvalidArgument`] if a buffer has the
    /// wrong length or an index is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0, 255, 255, 0], vec![1, 2], 1, 2, 10)?;
    /// let loader = Loader::new(&ds, 2, false, 0, Normalize::default())?;
    /// let (mut x, mut y) = ([0.0f32; 4], [0u32; 2]);
    /// for idx in loader.epoch(0).batch_indices() {
    ///     loader.fill(idx, &mut x[..idx.len() * 2], &mut y[..idx.len()])?;
    /// }
    /// assert_eq!(x, [0.0, 1.0, 1.0, 0.0]);
    /// assert_eq!(y, [1, 2]);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn fill(&self, indices: &[usize], images: &mut [f32], labels: &mut [u32]) -> Result<()> {
        let ppi = self.sample_len();
        let plane = self.rows * self.cols;
        let want = indices.len().saturating_mul(ppi);
        if images.len() != want || labels.len() != indices.len() {
            return Err(Error::invalid(
                "Loader::fill",
                format!(
                    "{} indices need {} image values and {} labels, got buffers of {} and {}",
                    indices.len(),
                    want,
                    indices.len(),
                    images.len(),
                    labels.len()
                ),
            ));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.n) {
            return Err(Error::invalid(
                "Loader::fill",
                format!("index {bad} out of range for {} examples", self.n),
            ));
        }
        for ((&i, dst), label) in indices
            .iter()
            .zip(images.chunks_exact_mut(ppi.max(1)))
            .zip(labels.iter_mut())
        {
            let src = &self.images[i * ppi..(i + 1) * ppi];
            // dst, src: [C, rows, cols]; plane c is normalized with table c
            for ((d, s), table) in dst
                .chunks_exact_mut(plane.max(1))
                .zip(src.chunks_exact(plane.max(1)))
                .zip(&self.tables)
            {
                for (d, &s) in d.iter_mut().zip(s) {
                    *d = table[s as usize];
                }
            }
            *label = u32::from(self.labels[i]);
        }
        Ok(())
    }
}

/// The batches of one epoch, from [`Loader::epoch`].
///
/// Besides being an iterator of [`Batch`]es it exposes the epoch's order, so callers
/// that reuse their own buffers can use [`Epoch::batch_indices`] with
/// [`Loader::fill`].
///
/// # Examples
///
/// ```
/// use wgcnn::data::{Dataset, Loader, Normalize};
/// let ds = Dataset::new("toy", vec![0; 7], vec![0; 7], 1, 1, 10)?;
/// let loader = Loader::new(&ds, 3, false, 0, Normalize::default())?;
/// let epoch = loader.epoch(0);
/// assert_eq!(epoch.len(), 3);
/// assert_eq!(epoch.order(), &[0, 1, 2, 3, 4, 5, 6]);
/// # Ok::<(), wgcnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Epoch<'a> {
    loader: &'a Loader,
    order: Vec<usize>,
    pos: usize,
    /// Where the epoch's batches end (before a dropped partial batch).
    end: usize,
}

impl Epoch<'_> {
    /// The full permutation of this epoch.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 4], vec![0; 4], 1, 1, 10)?;
    /// let loader = Loader::new(&ds, 3, true, 5, Normalize::default())?;
    /// assert_eq!(loader.epoch(2).order(), loader.order(2).as_slice());
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The index chunks of the remaining batches (the last may be partial), without
    /// building any batch.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::{Dataset, Loader, Normalize};
    /// let ds = Dataset::new("toy", vec![0; 5], vec![0; 5], 1, 1, 10)?;
    /// let loader = Loader::new(&ds, 2, false, 0, Normalize::default())?;
    /// let epoch = loader.epoch(0);
    /// let chunks: Vec<&[usize]> = epoch.batch_indices().collect();
    /// assert_eq!(chunks, vec![&[0, 1][..], &[2, 3][..], &[4][..]]);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn batch_indices(&self) -> std::slice::Chunks<'_, usize> {
        self.order[self.pos.min(self.end)..self.end].chunks(self.loader.batch_size)
    }
}

impl Iterator for Epoch<'_> {
    /// A batch, or the error building it (never swallowed: the epoch does not end early).
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.pos >= self.end {
            return None;
        }
        let end = (self.pos + self.loader.batch_size).min(self.end);
        let indices = &self.order[self.pos..end];
        self.pos = end;
        Some(self.loader.batch(indices))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self
            .end
            .saturating_sub(self.pos)
            .div_ceil(self.loader.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Epoch<'_> {}

/// The order in which epoch `epoch` of `n` examples is visited: the identity without
/// shuffling, else the permutation of `(seed, epoch)` that [`Loader::order`] uses (an
/// [`ImageFolder`](super::ImageFolder) uses it to visit its files in the same order as a
/// loader over the same examples).
///
/// # Examples
///
/// ```
/// use wgcnn::data::{epoch_order, Dataset, Loader, Normalize};
/// let ds = Dataset::new("toy", vec![0; 9], vec![0; 9], 1, 1, 10)?;
/// let l = Loader::new(&ds, 4, true, 11, Normalize::default())?;
/// assert_eq!(epoch_order(9, true, 11, 2), l.order(2));
/// assert_eq!(epoch_order(3, false, 11, 2), vec![0, 1, 2]);
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn epoch_order(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = StdRng::seed_from_u64(seed ^ splitmix64(epoch));
        order.shuffle(&mut rng);
    }
    order
}

/// SplitMix64 finalizer: spreads an epoch number over all 64 bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
