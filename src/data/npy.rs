//! NumPy arrays: `.npy` files and `.npz` archives, for handing data over from Python.
//!
//! **What is read.** An `.npy` file is the magic `\x93NUMPY`, a version (1, 2 or 3), a
//! header length and an ASCII header dict such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (10, 32, 32, 3), }`, then the data.
//! The header is parsed defensively: only C order (`fortran_order: False`), the element
//! types `u1 i1 u2 i2 u4 i4 u8 i8 f4 f8` in either byte order, a shape whose size is at
//! most [`MAX_NPY_BYTES`], and data of exactly that size (truncated or trailing bytes are
//! errors). An `.npz` is a zip of `.npy` files, stored (`np.savez`) or deflated
//! (`np.savez_compressed`); each entry is checked against its CRC-32.
//!
//! **Images** are `N×H×W` (one channel), `N×H×W×C` or `N×C×H×W` with `C` in 1, 3 or 4.
//! [`Layout::Auto`] takes the axis that is 1, 3 or 4: the last (`N×H×W×C`, NumPy/Keras/PIL
//! order) or the second (`N×C×H×W`, PyTorch order); when both are (a 3×3 image of 3
//! channels), the last wins — say [`Layout::Nchw`] to override. `N×H×W×C` is converted to
//! the CHW layout of a [`Dataset`].
//!
//! **Pixel values** must be bytes, exactly:
//! * `uint8` is taken as it is; other integer types must hold values in `0..=255`;
//! * `float32`/`float64` must hold either `k/255` ([`FloatRange::Unit`], what
//!   `x.astype(np.float32) / 255` gives) or whole numbers `k` ([`FloatRange::Byte`]),
//!   `k` in `0..=255`, each within `1e-3`; anything else (NaN, negative, normalized values,
//!   augmented in-between values) is refused with an error naming the element, never
//!   rounded silently. [`FloatRange::Auto`] picks `Unit` when no value exceeds 1, else
//!   `Byte` (an image of only 0s and 1s in bytes needs `Byte` said explicitly).
//!
//! **Labels** are `N` or `N×1` of any integer type, each in `0..classes`; `classes` is
//! [`NpyOptions::classes`] or else the largest label (of both splits for `.npz`) plus one,
//! at most 256.
//!
//! **Keys of an `.npz`** are Keras's `x_train`, `y_train`, `x_test`, `y_test` by default
//! ([`NpzKeys`]); a missing key is an error listing the keys present.
//!
//! ```
//! use wgcnn::data::{load_npy, NpyOptions};
//!
//! // version 1.0 header for a (2, 1, 1, 3) uint8 array, padded with spaces to 64 bytes
//! fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
//!     let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
//!     while (10 + h.len() + 1) % 64 != 0 { h.push(' '); }
//!     h.push('\n');
//!     let mut out = b"\x93NUMPY\x01\x00".to_vec();
//!     out.extend((h.len() as u16).to_le_bytes());
//!     out.extend(h.as_bytes());
//!     out.extend(data);
//!     out
//! }
//! let dir = std::env::temp_dir();
//! let (x, y) = (dir.join(format!("wgcnn-doc-x-{}.npy", std::process::id())), dir.join(format!("wgcnn-doc-y-{}.npy", std::process::id())));
//! // two 1×1 RGB images in N×H×W×C order, labels as int64
//! std::fs::write(&x, npy("|u1", "(2, 1, 1, 3)", &[1, 2, 3, 4, 5, 6]))?;
//! std::fs::write(&y, npy("<i8", "(2,)", &[[0u8; 8], [1, 0, 0, 0, 0, 0, 0, 0]].concat()))?;
//! let ds = load_npy(&x, &y, "toy", &NpyOptions::default())?;
//! assert_eq!((ds.n, ds.image_shape(), ds.classes), (2, [3, 1, 1], 2));
//! assert_eq!(ds.labels, vec![0, 1]);
//! assert_eq!(ds.image(1), &[4, 5, 6]);
//! # std::fs::remove_file(&x).ok(); std::fs::remove_file(&y).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use super::archive::{zip_entries, zip_extract};
use super::{check_labels, data_err, Dataset, DatasetPair};
use crate::error::{Error, Result};

/// Largest `.npy` payload read: 2³¹ bytes.
pub const MAX_NPY_BYTES: u64 = 1 << 31;

/// Largest header accepted (a real one is a few hundred bytes).
const MAX_HEADER: usize = 1 << 16;

/// The elements of an array, widened to one of four types.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    /// `uint8`.
    U8(Vec<u8>),
    /// Any other integer type (`uint64` values above `i64::MAX` are refused).
    Int(Vec<i64>),
    /// `float32`.
    F32(Vec<f32>),
    /// `float64`.
    F64(Vec<f64>),
}

/// A C-order array read from an `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// The shape, outermost first.
    pub shape: Vec<usize>,
    /// The elements in C (row-major) order.
    pub data: NpyData,
}

/// How 4-D image arrays are laid out; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// From the axis that is 1, 3 or 4 (the last when both are).
    #[default]
    Auto,
    /// `N×H×W×C` (NumPy, Keras, PIL).
    Nhwc,
    /// `N×C×H×W` (PyTorch).
    Nchw,
}

/// Which values float images hold; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FloatRange {
    /// `Unit` when no value is above 1, else `Byte`.
    #[default]
    Auto,
    /// `k/255` for a byte `k`.
    Unit,
    /// Whole numbers `0..=255`.
    Byte,
}

/// The names of the four arrays in an `.npz` (without the `.npy` suffix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpzKeys {
    pub x_train: String,
    pub y_train: String,
    pub x_test: String,
    pub y_test: String,
}

impl Default for NpzKeys {
    /// Keras's names: `x_train`, `y_train`, `x_test`, `y_test`.
    fn default() -> Self {
        NpzKeys {
            x_train: "x_train".into(),
            y_train: "y_train".into(),
            x_test: "x_test".into(),
            y_test: "y_test".into(),
        }
    }
}

/// Options of [`load_npy`] and [`load_npz`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NpyOptions {
    /// Layout of 4-D image arrays.
    pub layout: Layout,
    /// Values of float image arrays.
    pub float_range: FloatRange,
    /// Number of classes; `None`: the largest label plus one.
    pub classes: Option<usize>,
    /// Array names in an `.npz`.
    pub keys: NpzKeys,
}

/// Reads an `.npy` file; see the [module docs](self) for what is accepted.
///
/// # Examples
///
/// ```
/// let missing = wgcnn::data::read_npy(std::path::Path::new("/no/such.npy"));
/// assert!(matches!(missing, Err(wgcnn::Error::Io { .. })));
/// ```
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes, path)
}

/// Parses an `.npy` file's bytes (`path` names it in errors).
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use wgcnn::data::{parse_npy, NpyData};
///
/// let h = "{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }";
/// let mut b = b"\x93NUMPY\x01\x00".to_vec();
/// b.extend((h.len() as u16).to_le_bytes());
/// b.extend(h.as_bytes());
/// b.extend([5, 0, 0xff, 0xff]);
/// let a = parse_npy(&b, Path::new("a.npy"))?;
/// assert_eq!((a.shape, a.data), (vec![2], NpyData::Int(vec![5, -1])));
/// // one byte short
/// assert!(parse_npy(&b[..b.len() - 1], Path::new("a.npy")).is_err());
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn parse_npy(b: &[u8], path: &Path) -> Result<NpyArray> {
    let err = |msg: String| data_err(path, format!("npy: {msg}"));
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(err("bad magic: an .npy file starts with \\x93NUMPY".into()));
    }
    let (len, start) = match b[6] {
        1 => (usize::from(u16::from_le_bytes([b[8], b[9]])), 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(err(format!("unsupported format version {v}.{}", b[7]))),
    };
    if len > MAX_HEADER || start + len > b.len() {
        return Err(err(format!(
            "header of {len} bytes at offset {start} runs past the end of the {}-byte file",
            b.len()
        )));
    }
    let text = std::str::from_utf8(&b[start..start + len])
        .map_err(|_| err("header is not text".into()))?;
    let header = Header::parse(text).map_err(|m| err(format!("bad header {text:?}: {m}")))?;
    let (dtype, item) = Dtype::parse(&header.descr).map_err(err)?;
    let count = header
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&c| c.saturating_mul(item as u64) <= MAX_NPY_BYTES)
        .ok_or_else(|| {
            err(format!(
                "shape {:?} is larger than {MAX_NPY_BYTES} bytes",
                header.shape
            ))
        })?;
    let need = count as usize * item;
    let got = b.len() - start - len;
    if got != need {
        let what = if got < need {
            "truncated data"
        } else {
            "trailing bytes"
        };
        return Err(err(format!(
            "{what}: shape {:?} of {} needs {need} bytes after the header (offset {}), got {got}",
            header.shape,
            header.descr,
            start + len
        )));
    }
    let data = dtype.decode(&b[start + len..], path)?;
    Ok(NpyArray {
        shape: header.shape,
        data,
    })
}

/// The fields of an `.npy` header dict.
struct Header {
    descr: String,
    shape: Vec<usize>,
}

impl Header {
    /// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
    fn parse(text: &str) -> std::result::Result<Header, String> {
        let mut p = Lexer {
            s: text.trim_end(),
            i: 0,
        };
        p.expect('{')?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        while !p.eat('}') {
            let key = p.string()?;
            p.expect(':')?;
            match key.as_str() {
                "descr" => descr = Some(p.string()?),
                "fortran_order" => fortran = Some(p.boolean()?),
                "shape" => shape = Some(p.tuple()?),
                k => return Err(format!("unknown key '{k}'")),
            }
            if !p.eat(',') {
                p.expect('}')?;
                break;
            }
        }
        if fortran != Some(false) {
            return Err("only C-order arrays are read (fortran_order must be False; use np.ascontiguousarray)".into());
        }
        match (descr, shape) {
            (Some(descr), Some(shape)) => Ok(Header { descr, shape }),
            _ => Err("'descr' and 'shape' are required".into()),
        }
    }
}

/// A cursor over the header's Python literal.
struct Lexer<'a> {
    s: &'a str,
    i: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while let Some(c) = self.s[self.i..]
            .chars()
            .next()
            .filter(|c| c.is_whitespace())
        {
            self.i += c.len_utf8();
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        let hit = self.s[self.i..].starts_with(c);
        if hit {
            self.i += c.len_utf8();
        }
        hit
    }

    fn expect(&mut self, c: char) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{c}' at character {}", self.i))
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        self.skip_ws();
        let q = self.s[self.i..]
            .chars()
            .next()
            .filter(|&q| q == '\'' || q == '"');
        let q = q.ok_or_else(|| format!("expected a quoted string at character {}", self.i))?;
        let rest = &self.s[self.i + 1..];
        let end = rest.find(q).ok_or("unterminated string")?;
        self.i += end + 2;
        Ok(rest[..end].to_string())
    }

    fn boolean(&mut self) -> std::result::Result<bool, String> {
        self.skip_ws();
        for (word, v) in [("True", true), ("False", false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!("expected True or False at character {}", self.i))
    }

    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect('(')?;
        let mut dims = Vec::new();
        while !self.eat(')') {
            self.skip_ws();
            let digits = self.s[self.i..]
                .chars()
                .take_while(char::is_ascii_digit)
                .count();
            let d = self.s[self.i..self.i + digits]
                .parse()
                .map_err(|_| format!("expected a dimension at character {}", self.i))?;
            self.i += digits;
            dims.push(d);
            if !self.eat(',') {
                self.expect(')')?;
                break;
            }
        }
        Ok(dims)
    }
}

/// An element type: kind (`u`, `i`, `f`), size in bytes and byte order.
#[derive(Clone, Copy)]
struct Dtype {
    kind: u8,
    size: usize,
    big: bool,
}

impl Dtype {
    fn parse(descr: &str) -> std::result::Result<(Dtype, usize), String> {
        let b = descr.as_bytes();
        let ok = b.len() >= 3 && b"<>|=".contains(&b[0]);
        let size: usize = match descr.get(2..) {
            Some(digits) if ok => digits.parse().unwrap_or(0),
            _ => 0,
        };
        let known = matches!(
            (b.get(1), size),
            (Some(b'u' | b'i'), 1 | 2 | 4 | 8) | (Some(b'f'), 4 | 8)
        );
        if !known {
            return Err(format!(
                "unsupported dtype '{descr}' (supported: u1 i1 u2 i2 u4 i4 u8 i8 f4 f8)"
            ));
        }
        let big = b[0] == b'>' || (b[0] == b'=' && cfg!(target_endian = "big"));
        Ok((
            Dtype {
                kind: b[1],
                size,
                big,
            },
            size,
        ))
    }

    /// Decodes `b` (a whole number of elements).
    fn decode(self, b: &[u8], path: &Path) -> Result<NpyData> {
        let word = |c: &[u8]| {
            let mut w = [0u8; 8];
            if self.big {
                w[..c.len()].copy_from_slice(c);
                w[..c.len()].reverse();
            } else {
                w[..c.len()].copy_from_slice(c);
            }
            u64::from_le_bytes(w)
        };
        let elems = b.chunks_exact(self.size).map(word);
        Ok(match (self.kind, self.size) {
            (b'u', 1) => NpyData::U8(b.to_vec()),
            (b'f', 4) => NpyData::F32(elems.map(|w| f32::from_bits(w as u32)).collect()),
            (b'f', _) => NpyData::F64(elems.map(f64::from_bits).collect()),
            (b'i', s) => {
                let shift = 64 - 8 * s as u32;
                NpyData::Int(elems.map(|w| ((w << shift) as i64) >> shift).collect())
            }
            _ => {
                let v: Vec<u64> = elems.collect();
                if let Some(i) = v.iter().position(|&x| x > i64::MAX as u64) {
                    return Err(data_err(
                        path,
                        format!("npy: element {i} ({}) does not fit in i64", v[i]),
                    ));
                }
                NpyData::Int(v.into_iter().map(|x| x as i64).collect())
            }
        })
    }
}

/// The images of `a` as bytes, CHW per image, and their `[N, C, H, W]` shape.
fn images(a: &NpyArray, path: &Path, opts: &NpyOptions) -> Result<(Vec<u8>, [usize; 4])> {
    let err = |msg: String| data_err(path, msg);
    let chan = |c: usize| matches!(c, 1 | 3 | 4);
    let (shape, nhwc) = match (a.shape.as_slice(), opts.layout) {
        (&[n, h, w], _) => ([n, 1, h, w], false),
        (&[n, h, w, c], Layout::Nhwc) => ([n, c, h, w], true),
        (&[n, c, h, w], Layout::Nchw) => ([n, c, h, w], false),
        (&[n, h, w, c], Layout::Auto) if chan(c) => ([n, c, h, w], true),
        (&[n, c, h, w], Layout::Auto) if chan(c) => ([n, c, h, w], false),
        (s, _) => {
            return Err(err(format!(
                "images must be N×H×W, N×H×W×C or N×C×H×W with C in 1, 3, 4; shape is {s:?}"
            )))
        }
    };
    if shape.contains(&0) {
        return Err(err(format!("empty image array, shape {:?}", a.shape)));
    }
    let bytes = to_bytes(&a.data, path, opts.float_range)?;
    if !nhwc {
        return Ok((bytes, shape));
    }
    let [n, c, h, w] = shape;
    let mut out = vec![0u8; bytes.len()];
    // in: [N, H, W, C] → out: [N, C, H, W]
    for (src, dst) in bytes
        .chunks_exact(h * w * c)
        .zip(out.chunks_exact_mut(c * h * w))
    {
        for (p, px) in src.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                dst[ch * h * w + p] = v;
            }
        }
    }
    debug_assert_eq!(out.len(), n * c * h * w);
    Ok((out, shape))
}

/// Pixel values as bytes, exactly (see the module docs) or an error naming the element.
fn to_bytes(data: &NpyData, path: &Path, range: FloatRange) -> Result<Vec<u8>> {
    let bad = |i: usize, v: String, why: &str| {
        data_err(path, format!("npy: image element {i} is {v}: {why}"))
    };
    let floats: Vec<f64> = match data {
        NpyData::U8(v) => return Ok(v.clone()),
        NpyData::Int(v) => {
            return v
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    u8::try_from(x)
                        .map_err(|_| bad(i, x.to_string(), "pixel values must be 0..=255"))
                })
                .collect()
        }
        NpyData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        NpyData::F64(v) => v.clone(),
    };
    let unit = match range {
        FloatRange::Unit => true,
        FloatRange::Byte => false,
        FloatRange::Auto => floats.iter().all(|&x| x <= 1.0),
    };
    let (scale, form) = if unit {
        (255.0, "k/255")
    } else {
        (1.0, "a whole number k")
    };
    floats
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let k = (x * scale).round();
            if !(0.0..=255.0).contains(&k) || (x * scale - k).abs() > 1e-3 {
                let why = format!("float images must hold {form} for a byte k in 0..=255 (within 1e-3), not normalized or interpolated values");
                return Err(bad(i, x.to_string(), &why));
            }
            Ok(k as u8)
        })
        .collect()
}

/// Labels as integers: shape `N` or `N×1`.
fn labels(a: &NpyArray, path: &Path) -> Result<Vec<i64>> {
    if !matches!(a.shape.as_slice(), [_] | [_, 1]) {
        return Err(data_err(
            path,
            format!("labels must be N or N×1, shape is {:?}", a.shape),
        ));
    }
    match &a.data {
        NpyData::U8(v) => Ok(v.iter().map(|&x| i64::from(x)).collect()),
        NpyData::Int(v) => Ok(v.clone()),
        _ => Err(data_err(path, "labels must be integers, not floats")),
    }
}

/// The number of classes: given, or the largest label plus one (at most 256).
fn class_count(given: Option<usize>, all: &[(&[i64], &Path)]) -> Result<usize> {
    if let Some(c) = given {
        return Ok(c);
    }
    let mut classes = 0;
    for (ls, path) in all {
        if let Some((i, &l)) = ls
            .iter()
            .enumerate()
            .find(|&(_, &l)| !(0..256).contains(&l))
        {
            return Err(data_err(
                path,
                format!("label {l} at index {i} is out of range 0..256"),
            ));
        }
        classes = classes.max(ls.iter().max().map_or(0, |&m| m as usize + 1));
    }
    Ok(classes)
}

/// Builds a dataset from decoded images and labels, naming `xp` and `yp` in errors.
fn dataset(
    name: &str,
    x: &NpyArray,
    xp: &Path,
    y: &[i64],
    yp: &Path,
    classes: usize,
    opts: &NpyOptions,
) -> Result<Dataset> {
    let (bytes, [n, c, h, w]) = images(x, xp, opts)?;
    if y.len() != n {
        return Err(data_err(
            yp,
            format!("{} labels for {n} images in {}", y.len(), xp.display()),
        ));
    }
    if let Some((i, &l)) = y.iter().enumerate().find(|&(_, &l)| !(0..256).contains(&l)) {
        return Err(data_err(
            yp,
            format!("label {l} at index {i} is out of range (expected < {classes})"),
        ));
    }
    let y: Vec<u8> = y.iter().map(|&l| l as u8).collect();
    check_labels(&y, classes, yp)?;
    Dataset::with_channels(name, bytes, y, c, h, w, classes)
}

/// Loads a dataset from an images `.npy` and a labels `.npy`; see the
/// [module docs](self) for the shapes and values accepted.
pub fn load_npy(
    images: &Path,
    labels_path: &Path,
    name: &str,
    opts: &NpyOptions,
) -> Result<Dataset> {
    let x = read_npy(images)?;
    let y = labels(&read_npy(labels_path)?, labels_path)?;
    let classes = class_count(opts.classes, &[(&y, labels_path)])?;
    dataset(name, &x, images, &y, labels_path, classes, opts)
}

/// Loads the training and test splits from an `.npz` written by `np.savez` or
/// `np.savez_compressed` with the arrays named by [`NpyOptions::keys`] (Keras's
/// `x_train`, `y_train`, `x_test`, `y_test` by default).
///
/// # Examples
///
/// ```
/// let missing = wgcnn::data::load_npz(std::path::Path::new("/no/such.npz"), "x", &Default::default());
/// assert!(missing.is_err());
/// ```
pub fn load_npz(path: &Path, name: &str, opts: &NpyOptions) -> Result<DatasetPair> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let entries = zip_entries(&bytes, path)?;
    let by_key: BTreeMap<&str, _> = entries
        .iter()
        .map(|e| (e.name.strip_suffix(".npy").unwrap_or(&e.name), e))
        .collect();
    let k = &opts.keys;
    let mut arrays = Vec::new();
    for key in [&k.x_train, &k.y_train, &k.x_test, &k.y_test] {
        let entry = by_key.get(key.as_str()).ok_or_else(|| {
            let present: Vec<&str> = by_key.keys().copied().collect();
            data_err(
                path,
                format!(
                    "npz has no array '{key}'; its arrays are: {}",
                    present.join(", ")
                ),
            )
        })?;
        let p = path.join(&entry.name);
        let a = parse_npy(&zip_extract(&bytes, path, entry)?, &p)?;
        arrays.push((a, p));
    }
    let yt = labels(&arrays[1].0, &arrays[1].1)?;
    let ye = labels(&arrays[3].0, &arrays[3].1)?;
    let classes = class_count(opts.classes, &[(&yt, &arrays[1].1), (&ye, &arrays[3].1)])?;
    let train = dataset(
        name,
        &arrays[0].0,
        &arrays[0].1,
        &yt,
        &arrays[1].1,
        classes,
        opts,
    )?;
    let test = dataset(
        name,
        &arrays[2].0,
        &arrays[2].1,
        &ye,
        &arrays[3].1,
        classes,
        opts,
    )?;
    if train.image_shape() != test.image_shape() {
        return Err(data_err(
            path,
            format!(
                "training images are {:?} but test images {:?}",
                train.image_shape(),
                test.image_shape()
            ),
        ));
    }
    Ok(DatasetPair { train, test })
}
