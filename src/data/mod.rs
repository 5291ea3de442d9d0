//! Datasets: labelled images stored as bytes (`N × C × H × W`), their readers, and batching.
//!
//! * [`idx`] reads the IDX format (raw or gzip) defensively.
//! * [`load_mnist_dir`] loads the four standard files of an MNIST-format directory
//!   (MNIST, Fashion-MNIST, the subset embedded in this repository at
//!   [`embedded_mnist_subset_dir`], or Debian's `fashion-mnist` package at
//!   [`FASHION_MNIST_SYSTEM_DIR`]) into a [`DatasetPair`]; [`csv`] reads Kaggle's CSV layout.
//! * Colour datasets (validated like IDX; errors name the file and the record or offset):
//!   - [`cifar`]: CIFAR-10 and CIFAR-100 binary files, from a directory or the downloaded
//!     `.tar.gz` ([`load_cifar`]);
//!   - [`npy`]: NumPy `.npy` pairs and `.npz` archives ([`load_npy`], [`load_npz`]);
//!   - [`folder`]: class folders of PNG/JPEG/BMP files, decoded on worker threads
//!     ([`ImageFolder`], [`load_image_folders`]).
//! * [`loader`] turns a [`Dataset`] into normalized (per channel), shuffled `f32` batches
//!   `[B, C, H, W]`.
//!
//! ```
//! use wgcnn::data::{embedded_mnist_subset_dir, load_mnist_dir};
//!
//! let pair = load_mnist_dir(&embedded_mnist_subset_dir(), "mnist")?;
//! assert_eq!((pair.train.n, pair.test.n), (8000, 2000));
//! assert_eq!((pair.train.rows, pair.train.cols), (28, 28));
//! # Ok::<(), wgcnn::Error>(())
//! ```

mod archive;
pub mod cifar;
pub mod csv;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod npy;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use cifar::{load_cifar, load_cifar_with, parse_cifar, CifarKind, CifarOptions};
pub use csv::read_csv;
pub use folder::{
    load_image_folders, BadFile, Fit, FolderBatches, FolderOptions, ImageFolder, RawBatch,
};
pub use idx::{parse_idx, read_idx, IdxArray};
pub use loader::{epoch_order, Batch, ChannelNormalize, Epoch, Loader, Normalize};
pub use npy::{
    load_npy, load_npz, parse_npy, read_npy, FloatRange, Layout, NpyArray, NpyData, NpyOptions,
    NpzKeys,
};

/// Number of classes of MNIST and Fashion-MNIST.
pub const NUM_CLASSES: usize = 10;

/// Where Debian's `fashion-mnist` package installs the dataset (standard file names,
/// gzip-compressed).
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Standard base names of the four files of an MNIST-format directory.
const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Class names of Fashion-MNIST, in label order.
const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Class names of MNIST digits, in label order.
const DIGIT_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// A labelled set of images stored as bytes, `n × channels × rows × cols` (CHW per image).
///
/// Datasets built by [`Dataset::new`] and the IDX/CSV readers have one channel; colour
/// datasets ([`Dataset::with_channels`], the CIFAR, NumPy and image-folder readers) have
/// three (or four). The `channels` and `names` fields were added after the others: code
/// that builds a `Dataset` with a struct literal must now set them too (`channels: 1`
/// and `names: default_class_names(&name, classes)` keep the old meaning); prefer the
/// validating constructors.
///
/// # Examples
///
/// ```
/// use wgcnn::data::Dataset;
///
/// // two 2×2 images
/// let ds = Dataset::new("toy", vec![0, 1, 2, 3, 4, 5, 6, 7], vec![1, 0], 2, 2, 10)?;
/// assert_eq!(ds.n, 2);
/// assert_eq!(ds.image(1), &[4, 5, 6, 7]);
/// # Ok::<(), wgcnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// Name of the dataset (`"mnist"`, `"fashion-mnist"`, ...), as given to the loader.
    pub name: String,
    /// `n × channels × rows × cols` bytes: image after image, each channel plane after
    /// plane (CHW), each plane row-major.
    pub images: Vec<u8>,
    /// One label per image, each `< classes`.
    pub labels: Vec<u8>,
    /// Number of images.
    pub n: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Number of classes (10 for MNIST and Fashion-MNIST).
    pub classes: usize,
    /// Channels per image: 1 (grey), 3 (RGB) or any other count.
    pub channels: usize,
    /// One name per class, in label order (`classes` entries): read from the dataset's
    /// files when it has them, else [`default_class_names`].
    pub names: Vec<String>,
}

/// The training and test splits of a dataset.
///
/// # Examples
///
/// ```
/// use wgcnn::data::{embedded_mnist_subset_dir, load_mnist_dir};
///
/// let pair = load_mnist_dir(&embedded_mnist_subset_dir(), "mnist")?;
/// assert_eq!(pair.test.labels.len(), 2000);
/// # Ok::<(), wgcnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetPair {
    /// The training split (`train-*` files).
    pub train: Dataset,
    /// The test split (`t10k-*` files).
    pub test: Dataset,
}

impl Dataset {
    /// Builds a one-channel dataset from raw parts, validating that the sizes agree and
    /// that every label is `< classes`. Errors are [`Error::Data`] (with path `<memory>`),
    /// or [`Error::InvalidArgument`] for zero `rows`, `cols` or `classes`. The class
    /// names are [`default_class_names`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Dataset;
    ///
    /// assert!(Dataset::new("toy", vec![0; 4], vec![3], 2, 2, 10).is_ok());
    /// // label 12 is out of range for 10 classes
    /// assert!(Dataset::new("toy", vec![0; 4], vec![12], 2, 2, 10).is_err());
    /// ```
    pub fn new(
        name: impl Into<String>,
        images: Vec<u8>,
        labels: Vec<u8>,
        rows: usize,
        cols: usize,
        classes: usize,
    ) -> Result<Dataset> {
        Dataset::with_channels(name, images, labels, 1, rows, cols, classes)
    }

    /// Builds a dataset of `channels`-channel images from raw parts: `images` holds
    /// `labels.len() × channels × rows × cols` bytes, CHW per image. Validated like
    /// [`Dataset::new`] (a zero `channels` is an [`Error::InvalidArgument`] too).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Dataset;
    ///
    /// // two RGB images of 1×2 pixels: R plane, G plane, B plane
    /// let ds = Dataset::with_channels("rgb", (0..12).collect(), vec![0, 1], 3, 1, 2, 2)?;
    /// assert_eq!((ds.channels, ds.pixels_per_image()), (3, 6));
    /// assert_eq!(ds.image(1), &[6, 7, 8, 9, 10, 11]);
    /// assert_eq!(ds.names, vec!["0", "1"]);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn with_channels(
        name: impl Into<String>,
        images: Vec<u8>,
        labels: Vec<u8>,
        channels: usize,
        rows: usize,
        cols: usize,
        classes: usize,
    ) -> Result<Dataset> {
        let path = Path::new("<memory>");
        if channels == 0 || rows == 0 || cols == 0 || classes == 0 {
            return Err(Error::invalid(
                "Dataset::new",
                format!(
                    "channels ({channels}), rows ({rows}), cols ({cols}) and classes ({classes}) must be non-zero"
                ),
            ));
        }
        let n = labels.len();
        let pixels = [channels, rows, cols]
            .iter()
            .try_fold(n, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| data_err(path, "image size overflows"))?;
        if images.len() != pixels {
            return Err(data_err(
                path,
                format!(
                    "{} image bytes do not hold {n} images of {channels}×{rows}×{cols} ({pixels} bytes)",
                    images.len()
                ),
            ));
        }
        check_labels(&labels, classes, path)?;
        let name = name.into();
        let names = default_class_names(&name, classes);
        Ok(Dataset {
            name,
            images,
            labels,
            n,
            rows,
            cols,
            classes,
            channels,
            names,
        })
    }

    /// This dataset with the class names `names` (one per class). Errors with
    /// [`Error::InvalidArgument`] when the count is not `classes`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Dataset;
    /// let ds = Dataset::new("toy", vec![0; 2], vec![0, 1], 1, 1, 2)?
    ///     .with_names(vec!["cat".into(), "dog".into()])?;
    /// assert_eq!(ds.class_name(1), "dog");
    /// assert!(ds.clone().with_names(vec!["one".into()]).is_err());
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn with_names(mut self, names: Vec<String>) -> Result<Dataset> {
        if names.len() != self.classes {
            return Err(Error::invalid(
                "Dataset::with_names",
                format!(
                    "{} class names given for {} classes",
                    names.len(),
                    self.classes
                ),
            ));
        }
        self.names = names;
        Ok(self)
    }

    /// The name of class `label` (its number when `names` has no entry for it).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Dataset;
    /// let ds = Dataset::new("fashion-mnist", vec![0], vec![9], 1, 1, 10)?;
    /// assert_eq!(ds.class_name(9), "Ankle boot");
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn class_name(&self, label: usize) -> std::borrow::Cow<'_, str> {
        match self.names.get(label) {
            Some(n) => n.as_str().into(),
            None => label.to_string().into(),
        }
    }

    /// The shape of one image, `[channels, rows, cols]` (a model's per-sample input).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Dataset;
    /// let ds = Dataset::new("toy", vec![0; 6], vec![0], 2, 3, 10)?;
    /// assert_eq!(ds.image_shape(), [1, 2, 3]);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.rows, self.cols]
    }

    /// Bytes per image, `channels × rows × cols` (`rows × cols` pixels for one channel).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Dataset;
    /// let ds = Dataset::new("toy", vec![0; 6], vec![0], 2, 3, 10)?;
    /// assert_eq!(ds.pixels_per_image(), 6);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn pixels_per_image(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// The bytes of image `i`, CHW (row-major planes). Panics if `i >= n`, like slice
    /// indexing.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Dataset;
    /// let ds = Dataset::new("toy", vec![1, 2, 3, 4], vec![0, 1], 1, 2, 10)?;
    /// assert_eq!(ds.image(1), &[3, 4]);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn image(&self, i: usize) -> &[u8] {
        let p = self.pixels_per_image();
        &self.images[i * p..(i + 1) * p]
    }

    /// Keeps only the first `n` examples (no-op when `n >= self.n`); used for
    /// `--train-limit`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Dataset;
    /// let mut ds = Dataset::new("toy", vec![0; 12], vec![0, 1, 2], 2, 2, 10)?;
    /// ds.truncate(2);
    /// assert_eq!((ds.n, ds.images.len(), ds.labels.len()), (2, 8, 2));
    /// ds.truncate(100);
    /// assert_eq!(ds.n, 2);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn truncate(&mut self, n: usize) {
        if n < self.n {
            self.images.truncate(n * self.pixels_per_image());
            self.labels.truncate(n);
            self.n = n;
        }
    }

    /// Number of examples of each class (`classes` entries).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Dataset;
    /// let ds = Dataset::new("toy", vec![0; 3], vec![2, 0, 2], 1, 1, 3)?;
    /// assert_eq!(ds.class_counts(), vec![1, 0, 2]);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// The ten built-in class names for this dataset's name (see [`class_names`]): right
    /// for the MNIST family only. Datasets with other classes (CIFAR-100, image folders)
    /// keep theirs in [`Dataset::names`]; [`Dataset::class_name`] works for all.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::Dataset;
    /// let ds = Dataset::new("fashion-mnist", vec![0], vec![9], 1, 1, 10)?;
    /// assert_eq!(ds.class_names()[9], "Ankle boot");
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn class_names(&self) -> [&'static str; 10] {
        class_names(&self.name)
    }
}

/// The ten class names for a dataset name: Fashion-MNIST's names when the name
/// contains `fashion` (case-insensitive), otherwise the digits `"0"`..`"9"`.
///
/// # Examples
///
/// ```
/// use wgcnn::data::class_names;
///
/// assert_eq!(class_names("fashion-mnist")[0], "T-shirt/top");
/// assert_eq!(class_names("Fashion")[7], "Sneaker");
/// assert_eq!(class_names("mnist")[3], "3");
/// ```
pub fn class_names(name: &str) -> [&'static str; 10] {
    if name.to_ascii_lowercase().contains("fashion") {
        FASHION_CLASSES
    } else {
        DIGIT_CLASSES
    }
}

/// Class names for a dataset without a class table: [`class_names`] of `name` when
/// there are 10 classes (digits, or Fashion-MNIST's names), else the numbers
/// `"0"`..`"classes-1"`.
///
/// # Examples
///
/// ```
/// use wgcnn::data::default_class_names;
///
/// assert_eq!(default_class_names("fashion-mnist", 10)[0], "T-shirt/top");
/// assert_eq!(default_class_names("toy", 3), vec!["0", "1", "2"]);
/// ```
pub fn default_class_names(name: &str, classes: usize) -> Vec<String> {
    if classes == 10 {
        class_names(name).iter().map(|s| s.to_string()).collect()
    } else {
        (0..classes).map(|c| c.to_string()).collect()
    }
}

/// The directory of the MNIST subset shipped with this repository (8000 training and
/// 2000 test digits of the real MNIST, gzip-compressed).
///
/// # Examples
///
/// ```
/// let dir = wgcnn::data::embedded_mnist_subset_dir();
/// assert!(dir.join("train-images-idx3-ubyte.gz").is_file());
/// ```
pub fn embedded_mnist_subset_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-subset"))
}

/// Debian's Fashion-MNIST directory ([`FASHION_MNIST_SYSTEM_DIR`]) if it exists.
///
/// # Examples
///
/// ```no_run
/// if let Some(dir) = wgcnn::data::fashion_mnist_system_dir() {
///     let pair = wgcnn::data::load_mnist_dir(&dir, "fashion-mnist")?;
///     assert_eq!(pair.train.n, 60000);
/// }
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn fashion_mnist_system_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(FASHION_MNIST_SYSTEM_DIR);
    dir.is_dir().then_some(dir)
}

/// Loads an MNIST-format directory: `train-images-idx3-ubyte`,
/// `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`,
/// each raw or gzip-compressed with a `.gz` suffix (the raw file is preferred when
/// both exist; the variant with a dot, `train-images.idx3-ubyte`, is accepted too).
/// Works for MNIST and Fashion-MNIST alike; `name` becomes [`Dataset::name`] of both
/// splits and selects the class names.
///
/// Validates that images are 3-D, labels 1-D, that the counts agree and that every
/// label is `< 10`. Errors are [`Error::Data`] naming the directory (missing) or the
/// offending file, or [`Error::Io`].
///
/// # Examples
///
/// ```
/// use wgcnn::data::{embedded_mnist_subset_dir, load_mnist_dir};
///
/// let pair = load_mnist_dir(&embedded_mnist_subset_dir(), "mnist")?;
/// assert_eq!(pair.train.images.len(), 8000 * 28 * 28);
/// assert!(load_mnist_dir(std::path::Path::new("/no/such/dir"), "mnist").is_err());
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn load_mnist_dir(dir: &Path, name: &str) -> Result<DatasetPair> {
    if !dir.is_dir() {
        let msg = if dir.exists() {
            "dataset path is not a directory"
        } else {
            "dataset directory does not exist"
        };
        return Err(data_err(dir, msg));
    }
    let train = load_split(dir, name, TRAIN_IMAGES, TRAIN_LABELS)?;
    let test = load_split(dir, name, TEST_IMAGES, TEST_LABELS)?;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(data_err(
            dir,
            format!(
                "training images are {}×{} but test images are {}×{}",
                train.rows, train.cols, test.rows, test.cols
            ),
        ));
    }
    Ok(DatasetPair { train, test })
}

fn load_split(dir: &Path, name: &str, images_base: &str, labels_base: &str) -> Result<Dataset> {
    let images_path = find_file(dir, images_base)?;
    let labels_path = find_file(dir, labels_base)?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    from_idx(name, images, &images_path, labels, &labels_path)
}

/// Builds a dataset from an images IDX (`[N, rows, cols]`) and a labels IDX (`[N]`).
fn from_idx(
    name: &str,
    images: IdxArray,
    images_path: &Path,
    labels: IdxArray,
    labels_path: &Path,
) -> Result<Dataset> {
    let &[n, rows, cols] = images.dims.as_slice() else {
        return Err(data_err(
            images_path,
            format!(
                "image file must have 3 dimensions [N, rows, cols], found {} ({:?})",
                images.dims.len(),
                images.dims
            ),
        ));
    };
    let &[n_labels] = labels.dims.as_slice() else {
        return Err(data_err(
            labels_path,
            format!(
                "label file must have 1 dimension [N], found {} ({:?})",
                labels.dims.len(),
                labels.dims
            ),
        ));
    };
    if n_labels != n {
        return Err(data_err(
            labels_path,
            format!(
                "count mismatch: {n_labels} labels but {n} images in {}",
                images_path.display()
            ),
        ));
    }
    if n == 0 || rows == 0 || cols == 0 {
        return Err(data_err(
            images_path,
            format!("empty image set: dimensions [{n}, {rows}, {cols}]"),
        ));
    }
    check_labels(&labels.data, NUM_CLASSES, labels_path)?;
    Ok(Dataset {
        name: name.to_string(),
        images: images.data,
        labels: labels.data,
        n,
        rows,
        cols,
        classes: NUM_CLASSES,
        channels: 1,
        names: default_class_names(name, NUM_CLASSES),
    })
}

pub(crate) fn check_labels(labels: &[u8], classes: usize, path: &Path) -> Result<()> {
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(data_err(
            path,
            format!("label {l} at index {i} is out of range (expected < {classes})"),
        ));
    }
    Ok(())
}

/// Finds `base`, `base.gz` or the dotted variants (`train-images.idx3-ubyte`) in `dir`.
/// The images file of the training (`train`) or test split in an MNIST-format directory
/// (raw or `.gz`, either naming convention), as [`load_mnist_dir`] finds it.
pub fn mnist_images_file(dir: &Path, train: bool) -> Result<PathBuf> {
    find_file(dir, if train { TRAIN_IMAGES } else { TEST_IMAGES })
}

fn find_file(dir: &Path, base: &str) -> Result<PathBuf> {
    let dotted = base.replacen("-idx", ".idx", 1);
    let candidates = [
        base.to_string(),
        format!("{base}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ];
    for c in &candidates {
        let p = dir.join(c);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(data_err(
        dir,
        format!("missing dataset file; tried {}", candidates.join(", ")),
    ))
}

pub(crate) fn data_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}
