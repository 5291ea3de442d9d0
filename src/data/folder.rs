//! Image folders in torchvision's `ImageFolder` layout: `root/<class>/<file>` with files
//! ending in `.png`, `.jpg`, `.jpeg` or `.bmp` (any case).
//!
//! * **Classes** are the sub-directories of `root`, sorted by name (as torchvision does);
//!   label `k` is the `k`-th. Files are sorted by name within a class, and example `i` is
//!   the `i`-th file in (class, file name) order. Other files and nested directories are
//!   ignored; a class without images is an error (as in torchvision).
//! * **Channels**: [`FolderOptions::channels`] (1 or 3), else those of the first image:
//!   grey (with or without alpha) gives 1, colour (with or without alpha) 3. Alpha is
//!   dropped; a colour image is converted to grey (and grey to colour) when they differ.
//!   8-bit files are decoded losslessly.
//! * **Size**: every image must have the first one's size, unless [`FolderOptions::size`]
//!   gives one: images of another size are then resized to it ([`Fit::Resize`]) or scaled
//!   to cover it and centre-cropped ([`Fit::CenterCrop`]). Otherwise a differing size is
//!   an [`Error::Data`] naming the file.
//! * **Bad files**: a file that cannot be read or decoded is an [`Error::Data`] naming it;
//!   with [`FolderOptions::skip_bad`] it is left out instead, counted in its batch and
//!   listed by [`ImageFolder::skipped`].
//!
//! Decoding runs on worker threads with bounded prefetch ([`ImageFolder::batches`]): an
//! epoch never holds more than `workers × (prefetch + 1)` decoded batches, whatever the
//! folder's size, and batches come in the order asked for ([`ImageFolder::epoch`] uses the
//! permutation of a [`Loader`](super::Loader) with the same seed). [`ImageFolder::load`]
//! (or [`load_image_folders`]) decodes a small folder into a [`Dataset`].
//!
//! ```
//! use wgcnn::data::{FolderOptions, ImageFolder};
//!
//! let root = std::env::temp_dir().join(format!("wgcnn-doc-folder-{}", std::process::id()));
//! for (class, shade) in [("cat", 10u8), ("dog", 200)] {
//!     std::fs::create_dir_all(root.join(class))?;
//!     for i in 0..3u8 {
//!         let img = image::RgbImage::from_pixel(4, 2, image::Rgb([shade, i, 0]));
//!         img.save(root.join(class).join(format!("{i}.png")))?;
//!     }
//! }
//! let folder = ImageFolder::open(&root, &FolderOptions::default())?;
//! assert_eq!(folder.classes(), &["cat", "dog"]);
//! assert_eq!((folder.len(), folder.channels(), folder.image_dims()), (6, 3, (2, 4)));
//!
//! // stream an epoch in batches of 4, shuffled with seed 7
//! let sizes: Vec<usize> = folder.epoch(4, true, 7, 0).map(|b| b.map(|b| b.len())).collect::<Result<_, _>>()?;
//! assert_eq!(sizes, vec![4, 2]);
//!
//! // or decode it all: images are CHW, R plane first
//! let ds = folder.load("pets")?;
//! assert_eq!((ds.labels.clone(), ds.names.clone()), (vec![0, 0, 0, 1, 1, 1], vec!["cat".to_string(), "dog".into()]));
//! assert_eq!(&ds.image(4)[..8], &[200; 8]);
//! assert_eq!(&ds.image(4)[8..16], &[1; 8]);
//! # std::fs::remove_dir_all(&root).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image::imageops::FilterType;
use image::{ColorType, DynamicImage};

use super::loader::epoch_order;
use super::{data_err, Batch, ChannelNormalize, Dataset, DatasetPair};
use crate::error::{Error, Result};

/// File extensions read (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// How images of another size are brought to [`FolderOptions::size`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fit {
    /// Resized to exactly the size (aspect ratio not kept), bilinear.
    #[default]
    Resize,
    /// Scaled (bilinear) to cover the size, keeping the aspect ratio, then centre-cropped.
    CenterCrop,
}

/// Options of [`ImageFolder::open`]; see the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub struct FolderOptions {
    /// Channels of the decoded images (1 or 3); `None`: those of the first image.
    pub channels: Option<usize>,
    /// `(height, width)` every image is brought to; `None`: the first image's, and any
    /// other size is an error.
    pub size: Option<(usize, usize)>,
    /// How images are brought to `size`.
    pub fit: Fit,
    /// Leave out (and report) files that cannot be decoded instead of failing.
    pub skip_bad: bool,
    /// Decoding threads; 0: the machine's available parallelism.
    pub workers: usize,
    /// Decoded batches each worker may hold ahead of the consumer.
    pub prefetch: usize,
    /// For [`load_image_folders`] on a folder without `train/` and `test/`: the fraction
    /// of each class's files (its last ones, in name order) that becomes the test split.
    pub val_split: Option<f64>,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            channels: None,
            size: None,
            fit: Fit::Resize,
            skip_bad: false,
            workers: 0,
            prefetch: 2,
            val_split: None,
        }
    }
}

/// A file left out with [`FolderOptions::skip_bad`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFile {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be used.
    pub reason: String,
}

/// Image files and their labels, in example order.
type Files = Vec<(PathBuf, u8)>;

/// What the worker threads share.
struct Shared {
    files: Files,
    channels: usize,
    rows: usize,
    cols: usize,
    size_given: bool,
    fit: Fit,
    skip_bad: bool,
    /// The first image, which fixed the size when none was given.
    first: PathBuf,
    /// Files skipped so far, by example index.
    skipped: Mutex<BTreeMap<usize, BadFile>>,
    /// Images decoded so far (all threads; shows that prefetch is bounded).
    decoded: AtomicUsize,
}

/// An image folder opened for streaming; see the [module docs](self).
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    shared: Arc<Shared>,
    workers: usize,
    prefetch: usize,
}

impl std::fmt::Debug for ImageFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFolder")
            .field("root", &self.root)
            .field("classes", &self.classes)
            .field("len", &self.len())
            .field(
                "shape",
                &[self.shared.channels, self.shared.rows, self.shared.cols],
            )
            .finish()
    }
}

/// Sorted names of the entries of `dir` that `keep` accepts.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if keep(&e.path()) {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn is_image(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    p.is_file() && IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(ext))
}

/// The classes (sorted) and files (by class, then name) of `root`.
fn scan(root: &Path) -> Result<(Vec<String>, Files)> {
    if !root.is_dir() {
        return Err(data_err(
            root,
            "image folder does not exist or is not a directory",
        ));
    }
    let classes = sorted_entries(root, Path::is_dir)?;
    if classes.is_empty() || classes.len() > 256 {
        let msg = format!(
            "an image folder needs 1 to 256 class directories (root/<class>/<image>), found {}",
            classes.len()
        );
        return Err(data_err(root, msg));
    }
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let names = sorted_entries(&dir, is_image)?;
        if names.is_empty() {
            let msg = format!(
                "class '{class}' has no {} files",
                IMAGE_EXTENSIONS.join("/")
            );
            return Err(data_err(&dir, msg));
        }
        files.extend(names.into_iter().map(|n| (dir.join(n), label as u8)));
    }
    Ok((classes, files))
}

/// Decodes one file by its content (not its extension).
fn open_image(path: &Path) -> std::result::Result<DynamicImage, String> {
    let reader = image::io::Reader::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    reader
        .decode()
        .map_err(|e| format!("cannot decode image: {e}"))
}

/// Channels an image gives by default: 1 for grey (± alpha), 3 for colour (± alpha).
fn natural_channels(c: ColorType) -> usize {
    match c {
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16 => 1,
        _ => 3,
    }
}

impl Shared {
    /// Decodes example `i` as `channels × rows × cols` bytes (CHW).
    fn decode(&self, i: usize) -> std::result::Result<Vec<u8>, String> {
        let (path, _) = &self.files[i];
        self.decoded.fetch_add(1, Ordering::Relaxed);
        let mut img = open_image(path)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if (h, w) != (self.rows, self.cols) {
            if !self.size_given {
                return Err(format!(
                    "image is {h}×{w} (height×width) but the first image ({}) is {}×{}; \
                     give a size to resize or crop to",
                    self.first.display(),
                    self.rows,
                    self.cols
                ));
            }
            let (tw, th) = (self.cols as u32, self.rows as u32);
            img = match self.fit {
                Fit::Resize => img.resize_exact(tw, th, FilterType::Triangle),
                Fit::CenterCrop => img.resize_to_fill(tw, th, FilterType::Triangle),
            };
        }
        // hwc: [rows, cols, channels] → out: [channels, rows, cols]
        let hwc = if self.channels == 1 {
            img.to_luma8().into_raw()
        } else {
            img.to_rgb8().into_raw()
        };
        let (c, plane) = (self.channels, self.rows * self.cols);
        let mut out = vec![0u8; c * plane];
        for (p, px) in hwc.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                out[ch * plane + p] = v;
            }
        }
        Ok(out)
    }

    /// Decodes the examples `idx` into one batch (leaving out bad files with `skip_bad`).
    fn batch(&self, idx: &[usize]) -> Result<RawBatch> {
        let mut b = RawBatch {
            images: Vec::with_capacity(idx.len() * self.channels * self.rows * self.cols),
            labels: Vec::with_capacity(idx.len()),
            indices: Vec::with_capacity(idx.len()),
            shape: [self.channels, self.rows, self.cols],
            skipped: 0,
        };
        for &i in idx {
            let (path, label) = &self.files[i];
            match self.decode(i) {
                Ok(px) => {
                    b.images.extend_from_slice(&px);
                    b.labels.push(*label);
                    b.indices.push(i);
                }
                Err(reason) if self.skip_bad => {
                    b.skipped += 1;
                    let bad = BadFile {
                        path: path.clone(),
                        reason,
                    };
                    if let Ok(mut s) = self.skipped.lock() {
                        s.insert(i, bad);
                    }
                }
                Err(reason) => return Err(data_err(path, reason)),
            }
        }
        Ok(b)
    }
}

impl ImageFolder {
    /// Scans `root` (classes and files) and decodes its first image to fix the channels
    /// and size (unless both are given). Errors: [`Error::Data`] naming the root (missing,
    /// no classes, more than 256), an empty class directory, or the first image (when it
    /// cannot be decoded and `skip_bad` is off); [`Error::InvalidArgument`] for
    /// `channels` other than 1 or 3 or an empty `size`.
    pub fn open(root: &Path, opts: &FolderOptions) -> Result<ImageFolder> {
        let (classes, files) = scan(root)?;
        Self::from_files(root, classes, files, opts)
    }

    fn from_files(
        root: &Path,
        classes: Vec<String>,
        files: Files,
        opts: &FolderOptions,
    ) -> Result<ImageFolder> {
        if opts.channels.is_some_and(|c| c != 1 && c != 3) {
            let msg = format!("channels must be 1 or 3, got {:?}", opts.channels);
            return Err(Error::invalid("ImageFolder", msg));
        }
        if opts.size.is_some_and(|(h, w)| h == 0 || w == 0) {
            let msg = format!("image size must be non-zero, got {:?}", opts.size);
            return Err(Error::invalid("ImageFolder", msg));
        }
        let mut first = None;
        for (path, _) in &files {
            match open_image(path) {
                Ok(img) => {
                    first = Some((path.clone(), img));
                    break;
                }
                Err(reason) if !opts.skip_bad => return Err(data_err(path, reason)),
                Err(_) => {}
            }
        }
        let (first, img) = first.ok_or_else(|| data_err(root, "no image could be decoded"))?;
        let (rows, cols) = opts
            .size
            .unwrap_or((img.height() as usize, img.width() as usize));
        let shared = Shared {
            files,
            channels: opts.channels.unwrap_or(natural_channels(img.color())),
            rows,
            cols,
            size_given: opts.size.is_some(),
            fit: opts.fit,
            skip_bad: opts.skip_bad,
            first,
            skipped: Mutex::new(BTreeMap::new()),
            decoded: AtomicUsize::new(0),
        };
        let workers = match opts.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            w => w,
        };
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            shared: Arc::new(shared),
            workers,
            prefetch: opts.prefetch,
        })
    }

    /// Splits off the last `fraction` of each class's files (in name order, at least one
    /// when `fraction > 0`) as a second folder: `(train, validation)`. Errors with
    /// [`Error::InvalidArgument`] unless `0 < fraction < 1`.
    pub fn split(&self, fraction: f64) -> Result<(ImageFolder, ImageFolder)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            let msg = format!("validation fraction must be in (0, 1), got {fraction}");
            return Err(Error::invalid("ImageFolder::split", msg));
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for label in 0..self.classes.len() {
            let class: Vec<_> = self
                .shared
                .files
                .iter()
                .filter(|f| f.1 as usize == label)
                .cloned()
                .collect();
            let k = ((class.len() as f64 * fraction).round() as usize).clamp(1, class.len());
            let (a, b) = class.split_at(class.len() - k);
            train.extend_from_slice(a);
            val.extend_from_slice(b);
        }
        let opts = self.options();
        let t = Self::from_files(&self.root, self.classes.clone(), train, &opts)?;
        let v = Self::from_files(&self.root, self.classes.clone(), val, &opts)?;
        Ok((t, v))
    }

    /// Options that reopen this folder with the same channels and size.
    fn options(&self) -> FolderOptions {
        let s = &self.shared;
        FolderOptions {
            channels: Some(s.channels),
            size: s.size_given.then_some((s.rows, s.cols)),
            fit: s.fit,
            skip_bad: s.skip_bad,
            workers: self.workers,
            prefetch: self.prefetch,
            val_split: None,
        }
    }

    /// The class names, sorted; label `k` is `classes()[k]`.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Number of image files (examples), bad ones included.
    pub fn len(&self) -> usize {
        self.shared.files.len()
    }

    /// Whether there are no files (never the case for an opened folder).
    pub fn is_empty(&self) -> bool {
        self.shared.files.is_empty()
    }

    /// Channels of the decoded images.
    pub fn channels(&self) -> usize {
        self.shared.channels
    }

    /// Height and width of the decoded images.
    pub fn image_dims(&self) -> (usize, usize) {
        (self.shared.rows, self.shared.cols)
    }

    /// The file and label of example `i` (`None` when out of range).
    pub fn file(&self, i: usize) -> Option<(&Path, u8)> {
        self.shared.files.get(i).map(|(p, l)| (p.as_path(), *l))
    }

    /// Files left out so far with [`FolderOptions::skip_bad`], in example order.
    pub fn skipped(&self) -> Vec<BadFile> {
        self.shared
            .skipped
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Decodes example `i` as `channels × rows × cols` bytes (CHW). An error names the file.
    pub fn decode(&self, i: usize) -> Result<Vec<u8>> {
        let (path, _) = self.shared.files.get(i).ok_or_else(|| {
            Error::invalid(
                "ImageFolder::decode",
                format!("index {i} out of range for {} files", self.len()),
            )
        })?;
        self.shared
            .decode(i)
            .map_err(|reason| data_err(path, reason))
    }

    /// Batches of epoch `epoch` in the order a [`Loader`](super::Loader) with the same
    /// `shuffle` and `seed` visits the same number of examples ([`epoch_order`]).
    pub fn epoch(&self, batch_size: usize, shuffle: bool, seed: u64, epoch: u64) -> FolderBatches {
        self.batches(epoch_order(self.len(), shuffle, seed, epoch), batch_size)
    }

    /// Decodes the examples of `order` in batches of `batch_size` (the last may be smaller)
    /// on worker threads, yielding them in order. Out-of-range indices are dropped.
    pub fn batches(&self, mut order: Vec<usize>, batch_size: usize) -> FolderBatches {
        order.retain(|&i| i < self.len());
        let batch_size = batch_size.max(1);
        let order = Arc::new(order);
        let total = order.len().div_ceil(batch_size);
        let workers = self.workers.clamp(1, total.max(1));
        let (mut handles, mut receivers) = (Vec::new(), Vec::new());
        for w in 0..workers {
            let (tx, rx) = sync_channel(self.prefetch);
            let (shared, order) = (Arc::clone(&self.shared), Arc::clone(&order));
            handles.push(std::thread::spawn(move || {
                // worker w decodes batches w, w + workers, w + 2·workers, …
                for k in (w..total).step_by(workers) {
                    let idx = &order[k * batch_size..((k + 1) * batch_size).min(order.len())];
                    let b = shared.batch(idx);
                    let failed = b.is_err();
                    if tx.send(b).is_err() || failed {
                        return;
                    }
                }
            }));
            receivers.push(rx);
        }
        FolderBatches {
            receivers,
            handles,
            next: 0,
            total,
            failed: false,
        }
    }

    /// Decodes every image (in example order) into a [`Dataset`] named `name` with the
    /// folder's class names. Bad files fail, or are left out with `skip_bad` (see
    /// [`ImageFolder::skipped`]).
    pub fn load(&self, name: &str) -> Result<Dataset> {
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for b in self.batches((0..self.len()).collect(), 256) {
            let b = b?;
            images.extend_from_slice(&b.images);
            labels.extend_from_slice(&b.labels);
        }
        let s = &self.shared;
        let ds = Dataset::with_channels(
            name,
            images,
            labels,
            s.channels,
            s.rows,
            s.cols,
            self.classes.len(),
        )?;
        ds.with_names(self.classes.clone())
    }
}

/// A decoded batch of an image folder, before normalization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBatch {
    /// `[B, C, H, W]` bytes.
    pub images: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
    /// The example index of each image.
    pub indices: Vec<usize>,
    /// `[C, H, W]` of one image.
    pub shape: [usize; 3],
    /// Files of this batch left out with `skip_bad`.
    pub skipped: usize,
}

impl RawBatch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether no image is left (all of the batch's files were bad).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The normalized `[B, C, H, W]` batch, as a [`Loader`](super::Loader) would build it.
    pub fn normalize(&self, norm: &ChannelNormalize) -> Result<Batch> {
        let [c, h, w] = self.shape;
        let ds = Dataset::with_channels(
            "batch",
            self.images.clone(),
            self.labels.clone(),
            c,
            h,
            w,
            256,
        )?;
        let loader = super::Loader::per_channel(&ds, self.len().max(1), false, 0, norm.clone())?;
        let mut b = loader.batch(&(0..self.len()).collect::<Vec<_>>())?;
        b.indices.clone_from(&self.indices);
        Ok(b)
    }
}

/// The batches of [`ImageFolder::batches`], decoded ahead on worker threads. An error ends
/// the iteration. Dropping it stops the workers.
pub struct FolderBatches {
    receivers: Vec<Receiver<Result<RawBatch>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    total: usize,
    failed: bool,
}

impl Iterator for FolderBatches {
    type Item = Result<RawBatch>;

    fn next(&mut self) -> Option<Result<RawBatch>> {
        if self.failed || self.next >= self.total {
            return None;
        }
        let rx = &self.receivers[self.next % self.receivers.len()];
        self.next += 1;
        let b = rx
            .recv()
            .unwrap_or_else(|_| Err(Error::invalid("ImageFolder", "a decoding thread stopped")));
        self.failed = b.is_err();
        Some(b)
    }
}

impl Drop for FolderBatches {
    fn drop(&mut self) {
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Loads an image folder's training and test splits: `root/train/<class>/…` and
/// `root/test/<class>/…` (the same classes), or, without them, `root/<class>/…` split
/// with [`FolderOptions::val_split`] ([`ImageFolder::split`]). Both splits get the
/// training split's channels and size. Errors as [`ImageFolder::open`], and when neither
/// layout applies or the classes differ.
pub fn load_image_folders(root: &Path, name: &str, opts: &FolderOptions) -> Result<DatasetPair> {
    let (train_dir, test_dir) = (root.join("train"), root.join("test"));
    let (train, test) = if train_dir.is_dir() && test_dir.is_dir() {
        let train = ImageFolder::open(&train_dir, opts)?;
        let test = ImageFolder::open(&test_dir, &train.options())?;
        if test.classes != train.classes {
            let msg = format!(
                "test classes {:?} differ from training classes {:?}",
                test.classes, train.classes
            );
            return Err(data_err(&test_dir, msg));
        }
        if test.image_dims() != train.image_dims() {
            let msg = format!(
                "test images are {:?} (height, width) but training images {:?}; give a size",
                test.image_dims(),
                train.image_dims()
            );
            return Err(data_err(&test_dir, msg));
        }
        (train, test)
    } else if let Some(f) = opts.val_split {
        ImageFolder::open(root, opts)?.split(f)?
    } else {
        return Err(data_err(
            root,
            "expected train/ and test/ class folders, or give a validation split",
        ));
    };
    Ok(DatasetPair {
        train: train.load(name)?,
        test: test.load(name)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An epoch holds at most `workers × (prefetch + 1)` decoded batches beyond those taken.
    #[test]
    fn prefetch_is_bounded() {
        let root = std::env::temp_dir().join(format!("wgcnn-prefetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a")).unwrap();
        for i in 0..40u8 {
            let img = image::GrayImage::from_pixel(2, 2, image::Luma([i]));
            img.save(root.join("a").join(format!("{i:02}.png")))
                .unwrap();
        }
        let opts = FolderOptions {
            workers: 2,
            prefetch: 1,
            ..FolderOptions::default()
        };
        let f = ImageFolder::open(&root, &opts).unwrap();
        let mut batches = f.batches((0..40).collect(), 2);
        assert_eq!(batches.next().unwrap().unwrap().labels, vec![0, 0]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        // taken: 1 batch; ahead: 2 workers × (1 queued + 1 in hand) batches of 2 images
        let decoded = f.shared.decoded.load(Ordering::Relaxed);
        assert!(decoded <= 10, "{decoded} images decoded");
        assert_eq!(batches.count(), 19);
        assert_eq!(f.shared.decoded.load(Ordering::Relaxed), 40);
        std::fs::remove_dir_all(&root).ok();
    }
}
