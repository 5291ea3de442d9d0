//! CIFAR-10 and CIFAR-100 in their "binary version", from a directory or from the
//! downloaded `.tar.gz` read in place.
//!
//! | dataset | files | record |
//! |---|---|---|
//! | CIFAR-10 | `data_batch_1.bin` … `data_batch_5.bin` (train), `test_batch.bin` | 1 label byte `< 10`, 3072 pixel bytes |
//! | CIFAR-100 | `train.bin`, `test.bin` | coarse label `< 20`, fine label `< 100`, 3072 pixel bytes |
//!
//! The 3072 pixel bytes of a record are the 32×32 red plane, then green, then blue (row
//! major): already the CHW layout of a [`Dataset`], so records are copied as they are.
//! Class names come from `batches.meta.txt` (CIFAR-10) or `fine_label_names.txt` /
//! `coarse_label_names.txt` (CIFAR-100) when present, else they are the numbers.
//!
//! [`load_cifar`] takes a directory holding the files, a directory holding the extracted
//! `cifar-10-batches-bin/` or `cifar-100-binary/` (or the archives
//! `cifar-10-binary.tar.gz` / `cifar-100-binary.tar.gz`), or an archive itself. Every file
//! is validated (its size a whole number of records, every label in range) and each problem
//! is an [`Error::Data`] naming the file (inside an archive: `archive.tar.gz/entry`) and the
//! record and byte offset.
//!
//! ```
//! use wgcnn::data::load_cifar;
//!
//! // a CIFAR-10 directory with 2 training records per batch and 1 test record
//! let dir = std::env::temp_dir().join(format!("wgcnn-doc-cifar-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let record = |label: u8| {
//!     let mut r = vec![label];
//!     r.extend((0..3072).map(|i| (i % 251) as u8));
//!     r
//! };
//! for b in 1..=5 {
//!     std::fs::write(dir.join(format!("data_batch_{b}.bin")), [record(b), record(0)].concat())?;
//! }
//! std::fs::write(dir.join("test_batch.bin"), record(9))?;
//! std::fs::write(dir.join("batches.meta.txt"), "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n")?;
//!
//! let pair = load_cifar(&dir)?;
//! assert_eq!((pair.train.n, pair.test.n), (10, 1));
//! assert_eq!(pair.train.image_shape(), [3, 32, 32]);
//! assert_eq!(pair.train.labels[..4], [1, 0, 2, 0]);
//! assert_eq!(pair.test.class_name(9), "truck");
//!
//! // a record cut short is an error naming the file
//! std::fs::write(dir.join("test_batch.bin"), &record(9)[..3000])?;
//! let err = load_cifar(&dir).unwrap_err().to_string();
//! assert!(err.contains("test_batch.bin"), "{err}");
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::archive::read_tar_gz;
use super::{data_err, Dataset, DatasetPair};
use crate::error::{Error, Result};

/// Side of a CIFAR image.
pub const CIFAR_SIDE: usize = 32;

/// Pixel bytes of one CIFAR record: 3 planes of 32×32.
pub const CIFAR_PIXELS: usize = 3 * CIFAR_SIDE * CIFAR_SIDE;

/// The CIFAR-10 training files, in the order their records are concatenated.
const CIFAR10_TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const CIFAR10_TEST: &str = "test_batch.bin";
const CIFAR10_META: &str = "batches.meta.txt";
const CIFAR100_TRAIN: &str = "train.bin";
const CIFAR100_TEST: &str = "test.bin";
const CIFAR100_FINE: &str = "fine_label_names.txt";
const CIFAR100_COARSE: &str = "coarse_label_names.txt";

/// Sub-directories and archives of the downloads that [`load_cifar`] looks into.
const SUBDIRS: [&str; 2] = ["cifar-10-batches-bin", "cifar-100-binary"];
const ARCHIVES: [&str; 2] = ["cifar-10-binary.tar.gz", "cifar-100-binary.tar.gz"];

/// Which CIFAR variant a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarKind {
    /// One label byte (`< 10`) per record.
    Cifar10,
    /// A coarse (`< 20`) and a fine (`< 100`) label byte per record.
    Cifar100,
}

impl CifarKind {
    /// Bytes per record: 3073 for CIFAR-10, 3074 for CIFAR-100.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::CifarKind;
    /// assert_eq!((CifarKind::Cifar10.record_len(), CifarKind::Cifar100.record_len()), (3073, 3074));
    /// ```
    pub fn record_len(self) -> usize {
        self.label_bytes() + CIFAR_PIXELS
    }

    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }

    /// Number of classes of the labels used (`coarse` only matters for CIFAR-100).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::CifarKind;
    /// assert_eq!(CifarKind::Cifar100.classes(false), 100);
    /// assert_eq!(CifarKind::Cifar100.classes(true), 20);
    /// ```
    pub fn classes(self, coarse: bool) -> usize {
        match (self, coarse) {
            (CifarKind::Cifar10, _) => 10,
            (CifarKind::Cifar100, false) => 100,
            (CifarKind::Cifar100, true) => 20,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar-10",
            CifarKind::Cifar100 => "cifar-100",
        }
    }
}

/// Options of [`load_cifar_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CifarOptions {
    /// CIFAR-100: use the 20 coarse labels (superclasses) instead of the 100 fine ones.
    /// Ignored for CIFAR-10.
    pub coarse: bool,
}

/// Loads CIFAR-10 or CIFAR-100 (detected from the file names) with the default options
/// (CIFAR-100's fine labels); see the [module docs](self) for what `path` may be.
pub fn load_cifar(path: &Path) -> Result<DatasetPair> {
    load_cifar_with(path, &CifarOptions::default())
}

/// [`load_cifar`] with options (CIFAR-100's coarse labels).
///
/// # Examples
///
/// ```
/// use wgcnn::data::{load_cifar_with, CifarOptions};
///
/// let dir = std::env::temp_dir().join(format!("wgcnn-doc-c100-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// // one record: coarse label 3, fine label 42
/// let record: Vec<u8> = [3u8, 42].into_iter().chain(std::iter::repeat(7).take(3072)).collect();
/// std::fs::write(dir.join("train.bin"), &record)?;
/// std::fs::write(dir.join("test.bin"), &record)?;
/// assert_eq!(load_cifar_with(&dir, &CifarOptions::default())?.train.labels, vec![42]);
/// let coarse = load_cifar_with(&dir, &CifarOptions { coarse: true })?;
/// assert_eq!((coarse.test.labels[0], coarse.test.classes), (3, 20));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_cifar_with(path: &Path, opts: &CifarOptions) -> Result<DatasetPair> {
    let mut src = Source::open(path)?;
    let kind = src.kind()?;
    let classes = kind.classes(opts.coarse);
    let (train_files, test_file, names_file): (&[&str], &str, &str) = match kind {
        CifarKind::Cifar10 => (&CIFAR10_TRAIN, CIFAR10_TEST, CIFAR10_META),
        CifarKind::Cifar100 if opts.coarse => (&[CIFAR100_TRAIN], CIFAR100_TEST, CIFAR100_COARSE),
        CifarKind::Cifar100 => (&[CIFAR100_TRAIN], CIFAR100_TEST, CIFAR100_FINE),
    };
    let names = match src.take(names_file)? {
        Some((p, bytes)) => Some(parse_names(&bytes, &p, classes)?),
        None => None,
    };
    let mut split = |files: &[&str]| -> Result<Dataset> {
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for f in files {
            let (p, bytes) = src.require(f)?;
            let (i, l) = parse_cifar(&bytes, &p, kind, opts.coarse)?;
            images.extend_from_slice(&i);
            labels.extend_from_slice(&l);
        }
        let ds = Dataset::with_channels(
            kind.name(),
            images,
            labels,
            3,
            CIFAR_SIDE,
            CIFAR_SIDE,
            classes,
        )?;
        match &names {
            Some(n) => ds.with_names(n.clone()),
            None => Ok(ds),
        }
    };
    let train = split(train_files)?;
    let test = split(&[test_file])?;
    Ok(DatasetPair { train, test })
}

/// Parses one CIFAR binary file: its images (`n × 3 × 32 × 32`, CHW) and labels (fine
/// ones for CIFAR-100 unless `coarse`). `path` names the file in errors: a size that is no
/// whole number of records (the last one truncated) or a label out of range (naming the
/// record and its byte offset).
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use wgcnn::data::{parse_cifar, CifarKind};
///
/// let mut rec = vec![7u8];
/// rec.extend(std::iter::repeat(1).take(3072));
/// let (images, labels) = parse_cifar(&rec, Path::new("x.bin"), CifarKind::Cifar10, false)?;
/// assert_eq!((images.len(), labels), (3072, vec![7]));
/// rec[0] = 10; // out of range
/// assert!(parse_cifar(&rec, Path::new("x.bin"), CifarKind::Cifar10, false).is_err());
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn parse_cifar(
    bytes: &[u8],
    path: &Path,
    kind: CifarKind,
    coarse: bool,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let rec = kind.record_len();
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        let whole = bytes.len() / rec;
        return Err(data_err(
            path,
            format!(
                "file size {} is not a whole number of {rec}-byte {} records: record {whole} \
                 at offset {} is truncated ({} of {rec} bytes)",
                bytes.len(),
                kind.name(),
                whole * rec,
                bytes.len() % rec
            ),
        ));
    }
    let n = bytes.len() / rec;
    let mut images = Vec::with_capacity(n * CIFAR_PIXELS);
    let mut labels = Vec::with_capacity(n);
    // bounds: CIFAR-10 [label < 10]; CIFAR-100 [coarse < 20, fine < 100]
    let bounds: &[(usize, &str)] = match kind {
        CifarKind::Cifar10 => &[(10, "label")],
        CifarKind::Cifar100 => &[(20, "coarse label"), (100, "fine label")],
    };
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        for (k, &(limit, what)) in bounds.iter().enumerate() {
            if usize::from(r[k]) >= limit {
                return Err(data_err(
                    path,
                    format!(
                        "record {i} (offset {}): {what} {} is out of range (expected < {limit})",
                        i * rec + k,
                        r[k]
                    ),
                ));
            }
        }
        let pick = match kind {
            CifarKind::Cifar100 if !coarse => 1,
            _ => 0,
        };
        labels.push(r[pick]);
        images.extend_from_slice(&r[kind.label_bytes()..]);
    }
    Ok((images, labels))
}

/// Class names, one per non-empty line; there must be exactly `classes`.
fn parse_names(bytes: &[u8], path: &Path, classes: usize) -> Result<Vec<String>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| data_err(path, format!("class names are not UTF-8: {e}")))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != classes {
        return Err(data_err(
            path,
            format!("{} class names for {classes} classes", names.len()),
        ));
    }
    Ok(names)
}

/// Where the CIFAR files come from: a directory, or the entries of an archive (by base
/// name, each with the path errors name it by).
enum Source {
    Dir(PathBuf),
    Archive(PathBuf, HashMap<String, (PathBuf, Vec<u8>)>),
}

impl Source {
    fn open(path: &Path) -> Result<Source> {
        if path.is_file() {
            return Source::archive(path);
        }
        if !path.is_dir() {
            return Err(data_err(path, "CIFAR path does not exist"));
        }
        let has = |d: &Path| {
            [
                CIFAR10_TRAIN[0],
                CIFAR10_TEST,
                CIFAR100_TRAIN,
                CIFAR100_TEST,
            ]
            .iter()
            .any(|f| d.join(f).is_file())
        };
        if has(path) {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        if let Some(sub) = SUBDIRS.iter().map(|s| path.join(s)).find(|d| has(d)) {
            return Ok(Source::Dir(sub));
        }
        if let Some(a) = ARCHIVES.iter().map(|s| path.join(s)).find(|a| a.is_file()) {
            return Source::archive(&a);
        }
        Err(data_err(
            path,
            format!(
                "no CIFAR files: expected data_batch_1..5.bin and test_batch.bin (CIFAR-10) or \
                 train.bin and test.bin (CIFAR-100), here or in {} / {}, or the archive {} / {}",
                SUBDIRS[0], SUBDIRS[1], ARCHIVES[0], ARCHIVES[1]
            ),
        ))
    }

    fn archive(path: &Path) -> Result<Source> {
        let known = |n: &str| {
            let base = n.rsplit('/').next().unwrap_or(n);
            CIFAR10_TRAIN.contains(&base)
                || [
                    CIFAR10_TEST,
                    CIFAR10_META,
                    CIFAR100_TRAIN,
                    CIFAR100_TEST,
                    CIFAR100_FINE,
                    CIFAR100_COARSE,
                ]
                .contains(&base)
        };
        let mut files = HashMap::new();
        for e in read_tar_gz(path, known)? {
            let base = e.name.rsplit('/').next().unwrap_or(&e.name).to_string();
            files.insert(base, (path.join(&e.name), e.data));
        }
        Ok(Source::Archive(path.to_path_buf(), files))
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Source::Dir(d) => d.join(name).is_file(),
            Source::Archive(_, files) => files.contains_key(name),
        }
    }

    fn kind(&self) -> Result<CifarKind> {
        if self.has(CIFAR10_TRAIN[0]) || self.has(CIFAR10_TEST) {
            Ok(CifarKind::Cifar10)
        } else if self.has(CIFAR100_TRAIN) || self.has(CIFAR100_TEST) {
            Ok(CifarKind::Cifar100)
        } else {
            Err(data_err(
                self.root(),
                "no CIFAR files: expected data_batch_1..5.bin and test_batch.bin (CIFAR-10) \
                 or train.bin and test.bin (CIFAR-100)",
            ))
        }
    }

    fn root(&self) -> &Path {
        match self {
            Source::Dir(d) | Source::Archive(d, _) => d,
        }
    }

    /// The file `name` (its path for errors, its bytes), `None` when absent.
    fn take(&mut self, name: &str) -> Result<Option<(PathBuf, Vec<u8>)>> {
        match self {
            Source::Dir(d) => {
                let p = d.join(name);
                if !p.is_file() {
                    return Ok(None);
                }
                let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                Ok(Some((p, bytes)))
            }
            Source::Archive(_, files) => Ok(files.remove(name)),
        }
    }

    /// The file `name`; its absence is an error naming the missing file.
    fn require(&mut self, name: &str) -> Result<(PathBuf, Vec<u8>)> {
        let missing = self.root().join(name);
        self.take(name)?
            .ok_or_else(|| data_err(&missing, "missing CIFAR file"))
    }
}
