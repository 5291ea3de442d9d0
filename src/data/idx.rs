//! Reader for the IDX file format used by MNIST and Fashion-MNIST.
//!
//! An IDX file is a 4-byte magic number, `ndims` big-endian `u32` dimensions and
//! then the payload in row-major order:
//!
//! | offset | bytes | meaning |
//! |---|---|---|
//! | 0 | 2 | always `0x00 0x00` |
//! | 2 | 1 | element type (`0x08` = unsigned byte, the only one supported here) |
//! | 3 | 1 | number of dimensions, `1..=4` |
//! | 4 | 4·ndims | the dimensions, big-endian `u32` |
//! | 4 + 4·ndims | Π dims | the payload |
//!
//! Files may be gzip-compressed; compression is detected from the content (the
//! gzip magic `1f 8b`), never from the file name.
//!
//! The reader is defensive: the header is validated before anything is allocated
//! from it, the payload is capped at [`MAX_PAYLOAD_BYTES`], reading is bounded with
//! [`Read::take`] so a header that lies about its size cannot cause an unbounded
//! allocation, and both truncated and over-long payloads are errors.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// Largest payload (product of the dimensions, in bytes) that [`read_idx`] and
/// [`parse_idx`] accept: 2³¹ bytes. Larger headers are rejected before any allocation.
pub const MAX_PAYLOAD_BYTES: u64 = 1 << 31;

/// Element type code of unsigned bytes, the only type this reader supports.
pub const IDX_TYPE_U8: u8 = 0x08;

/// The gzip magic number.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Initial buffer capacity is never larger than this, whatever the header claims;
/// the buffer grows with the data actually read.
const MAX_INITIAL_CAPACITY: u64 = 64 << 20;

/// A decoded IDX array of unsigned bytes.
///
/// # Examples
///
/// ```
/// use wgcnn::data::idx::IdxArray;
///
/// let a = IdxArray { dims: vec![2, 3], data: vec![0, 1, 2, 3, 4, 5] };
/// assert_eq!(a.len(), 6);
/// assert!(!a.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions from the header, outermost first (e.g. `[N, 28, 28]` for images).
    pub dims: Vec<usize>,
    /// The payload in row-major order; `data.len()` equals the product of `dims`.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Number of elements (bytes) in the payload.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::idx::IdxArray;
    /// assert_eq!(IdxArray { dims: vec![3], data: vec![7, 8, 9] }.len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the payload is empty (some dimension is zero).
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::data::idx::IdxArray;
    /// assert!(IdxArray { dims: vec![0], data: vec![] }.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Reads an IDX file of unsigned bytes, raw or gzip-compressed (detected by content).
///
/// Errors: [`Error::Io`] when the file cannot be opened or read, [`Error::Data`] when
/// the content is malformed (bad magic, unsupported element type, wrong number of
/// dimensions, payload too large, truncated or with trailing bytes, corrupt gzip).
///
/// # Examples
///
/// ```
/// use wgcnn::data::idx::read_idx;
///
/// let dir = wgcnn::data::embedded_mnist_subset_dir();
/// let labels = read_idx(&dir.join("t10k-labels-idx1-ubyte.gz"))?;
/// assert_eq!(labels.dims, vec![2000]);
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let gz = is_gzip(reader.fill_buf().map_err(|e| Error::io(path, e))?);
    if gz {
        parse_reader(MultiGzDecoder::new(reader), path, None, true)
    } else {
        parse_reader(reader, path, Some(file_len), false)
    }
}

/// Parses an IDX array from bytes in memory, raw or gzip-compressed (detected by
/// content). `path` is only used in error messages.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use wgcnn::data::idx::parse_idx;
///
/// // magic 00 00 08 02, dims 2 × 3, six payload bytes
/// let bytes = [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6];
/// let a = parse_idx(&bytes, Path::new("<memory>"))?;
/// assert_eq!(a.dims, vec![2, 3]);
/// assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
///
/// // a wrong magic is a data error
/// assert!(matches!(
///     parse_idx(&[1, 0, 8, 1, 0, 0, 0, 0], Path::new("<memory>")),
///     Err(wgcnn::Error::Data { .. })
/// ));
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if is_gzip(bytes) {
        parse_reader(MultiGzDecoder::new(bytes), path, None, true)
    } else {
        parse_reader(bytes, path, Some(bytes.len() as u64), false)
    }
}

fn is_gzip(head: &[u8]) -> bool {
    head.len() >= 2 && head[..2] == GZIP_MAGIC
}

fn data_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Data {
        path: PathBuf::from(path),
        msg: msg.into(),
    }
}

/// Maps a read error: decoding problems and early EOF are data errors, the rest I/O.
fn read_err(path: &Path, gz: bool, what: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidData | ErrorKind::InvalidInput if gz => data_err(
            path,
            format!("corrupt gzip stream while reading {what}: {e}"),
        ),
        ErrorKind::UnexpectedEof if gz => data_err(
            path,
            format!("truncated gzip stream while reading {what}: {e}"),
        ),
        _ => Error::io(path, e),
    }
}

/// Reads up to `buf.len()` bytes, returning how many were read (short only at EOF).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// The shared parser. `known_len` is the total (uncompressed) input length when it is
/// known up front (raw input), which allows exact byte counts in error messages
/// before reading the payload.
fn parse_reader(
    mut r: impl Read,
    path: &Path,
    known_len: Option<u64>,
    gz: bool,
) -> Result<IdxArray> {
    let ndims = read_magic(&mut r, path, gz)?;
    let dims = read_dims(&mut r, path, gz, ndims)?;
    let data = read_payload(r, path, gz, known_len, ndims, &dims)?;
    Ok(IdxArray { dims, data })
}

/// `" (after gzip decompression)"` for messages about a gzip file's content.
fn after_gzip(gz: bool) -> &'static str {
    if gz {
        " (after gzip decompression)"
    } else {
        ""
    }
}

/// The 4 magic bytes: checks the element type and returns the number of dimensions.
fn read_magic(r: &mut impl Read, path: &Path, gz: bool) -> Result<usize> {
    let compressed = after_gzip(gz);
    // ---- magic -----------------------------------------------------------
    let mut magic = [0u8; 4];
    let got = read_full(r, &mut magic).map_err(|e| read_err(path, gz, "the header", e))?;
    if got < 4 {
        return Err(data_err(
            path,
            format!("truncated header: expected 4 magic bytes, got {got}{compressed}"),
        ));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(data_err(
            path,
            format!(
                "bad magic number {:02x} {:02x} {:02x} {:02x}: an IDX file starts with two zero bytes",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    let ty = magic[2];
    if ty != IDX_TYPE_U8 {
        return Err(data_err(
            path,
            format!(
                "unsupported IDX element type 0x{ty:02x} ({}); only 0x08 (unsigned byte) is supported",
                type_name(ty)
            ),
        ));
    }
    let ndims = magic[3] as usize;
    if !(1..=4).contains(&ndims) {
        return Err(data_err(
            path,
            format!("unsupported number of dimensions {ndims}; expected 1 to 4"),
        ));
    }

    Ok(ndims)
}

/// The `ndims` big-endian dimensions, checked against the payload limit.
fn read_dims(r: &mut impl Read, path: &Path, gz: bool, ndims: usize) -> Result<Vec<usize>> {
    let compressed = after_gzip(gz);
    // ---- dimensions ------------------------------------------------------
    let mut dim_bytes = [0u8; 16];
    let dim_bytes = &mut dim_bytes[..4 * ndims];
    let got = read_full(r, dim_bytes).map_err(|e| read_err(path, gz, "the header", e))?;
    if got < dim_bytes.len() {
        return Err(data_err(
            path,
            format!(
                "truncated header: {ndims} dimensions need {} bytes, got {got}{compressed}",
                dim_bytes.len()
            ),
        ));
    }
    let dims: Vec<u64> = dim_bytes
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_PAYLOAD_BYTES)
        .ok_or_else(|| {
            data_err(
                path,
                format!(
                    "header dimensions {dims:?} describe more than the maximum of {MAX_PAYLOAD_BYTES} bytes"
                ),
            )
        })?;
    let dims_usize = dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| data_err(path, format!("dimensions {dims:?} do not fit in usize")))?;
    usize::try_from(expected).map_err(|_| {
        data_err(
            path,
            format!("payload of {expected} bytes does not fit in memory"),
        )
    })?;

    Ok(dims_usize)
}

/// The payload of exactly `Π dims` bytes (`known_len`: the file's size when known).
fn read_payload(
    r: impl Read,
    path: &Path,
    gz: bool,
    known_len: Option<u64>,
    ndims: usize,
    dims_usize: &[usize],
) -> Result<Vec<u8>> {
    let compressed = after_gzip(gz);
    let dims: Vec<u64> = dims_usize.iter().map(|&d| d as u64).collect();
    let expected: u64 = dims.iter().product();
    let expected_usize = expected as usize;
    // ---- payload ---------------------------------------------------------
    let header_len = 4 + 4 * ndims as u64;
    if let Some(total) = known_len {
        let got = total.saturating_sub(header_len);
        if got < expected {
            return Err(data_err(
                path,
                format!(
                    "truncated payload: dimensions {dims:?} need {expected} bytes, got {got} bytes"
                ),
            ));
        }
        if got > expected {
            return Err(data_err(
                path,
                format!(
                    "trailing bytes: dimensions {dims:?} need {expected} bytes, got {got} bytes ({} extra)",
                    got - expected
                ),
            ));
        }
    }
    let capacity = usize::try_from((expected + 1).min(MAX_INITIAL_CAPACITY)).unwrap_or(0);
    let mut data = Vec::with_capacity(capacity);
    r.take(expected + 1)
        .read_to_end(&mut data)
        .map_err(|e| read_err(path, gz, "the payload", e))?;
    if data.len() < expected_usize {
        return Err(data_err(
            path,
            format!(
                "truncated payload: dimensions {dims:?} need {expected} bytes, got {} bytes{compressed}",
                data.len()
            ),
        ));
    }
    if data.len() > expected_usize {
        return Err(data_err(
            path,
            format!(
                "trailing bytes: dimensions {dims:?} need {expected} bytes, got more (at least {}){compressed}",
                data.len()
            ),
        ));
    }
    Ok(data)
}
