//! Model checkpoints in the [safetensors](https://github.com/huggingface/safetensors)
//! format, written atomically.
//!
//! A [`Checkpoint`] is an ordered list of named `f32` tensors (PyTorch names and
//! layouts, e.g. `c1.weight` as `[out, in, kh, kw]`, `fc.bias` as `[out]`) plus
//! string metadata (stored in the safetensors `__metadata__` entry). Files are plain
//! safetensors, readable by `safetensors.torch.load_file`.
//!
//! * **Order.** Tensors are written in insertion order (the header lists them and the
//!   data follows in that order), and [`Checkpoint::load`] returns them in file
//!   order, so a save/load round trip preserves the order.
//! * **Atomicity.** [`Checkpoint::save`] (and [`write_atomic`], reusable for any
//!   output file) writes `<name>.tmp-<pid>-<seq>` in the target's directory, syncs it,
//!   renames it over the target and then syncs the directory (best effort, unix), so a
//!   crash leaves either the old file or the new one, never a torn one.
//! * **Hostile input.** [`Checkpoint::load`] validates everything (header length,
//!   JSON, dtype `F32` only, shapes, offsets within the file, contiguous coverage)
//!   with checked arithmetic before touching the data, and reports any problem as
//!   [`Error::Checkpoint`]; it never panics.
//!
//! ```
//! use wgcnn::checkpoint::Checkpoint;
//!
//! let path = std::env::temp_dir().join(format!("wgcnn-doc-{}/model.safetensors", std::process::id()));
//! let mut ckpt = Checkpoint::default();
//! ckpt.push("fc.weight", vec![2, 3], vec![0.5; 6])?;
//! ckpt.push("fc.bias", vec![2], vec![0.0, 1.0])?;
//! ckpt.metadata.insert("epoch".into(), "3".into());
//! ckpt.save(&path)?;
//!
//! let back = Checkpoint::load(&path)?;
//! assert_eq!(back, ckpt);
//! assert_eq!(back.get("fc.bias"), Some((&[2usize][..], &[0.0f32, 1.0][..])));
//! # std::fs::remove_dir_all(path.parent().unwrap()).ok();
//! # Ok::<(), wgcnn::Error>(())
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Key of the safetensors metadata entry.
const METADATA_KEY: &str = "__metadata__";

/// Largest header accepted on load (the limit of the reference implementation).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Distinguishes concurrent temporary files of one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Named `f32` tensors and string metadata; see the [module docs](self).
///
/// # Examples
///
/// ```
/// use wgcnn::checkpoint::Checkpoint;
///
/// let mut ckpt = Checkpoint::default();
/// ckpt.push("c1.weight", vec![4, 1, 3, 3], vec![0.0; 36])?;
/// assert_eq!(ckpt.tensors[0].0, "c1.weight");
/// assert_eq!(ckpt.get("c1.weight").map(|(s, _)| s.to_vec()), Some(vec![4, 1, 3, 3]));
/// # Ok::<(), wgcnn::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// `(name, shape, values)` in insertion order; values are row-major and
    /// `values.len()` is the product of `shape`.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Free-form string metadata (model spec, epoch, optimizer, ...).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawTensorInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

impl Checkpoint {
    /// An empty checkpoint.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(wgcnn::checkpoint::Checkpoint::new().tensors.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a tensor. Errors with [`Error::InvalidArgument`] when the name is
    /// empty, reserved (`__metadata__`) or already present, or when `data.len()` is
    /// not the product of `shape`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::checkpoint::Checkpoint;
    /// let mut c = Checkpoint::new();
    /// c.push("w", vec![2, 2], vec![1.0; 4])?;
    /// assert!(c.push("w", vec![1], vec![0.0]).is_err()); // duplicate
    /// assert!(c.push("v", vec![3], vec![0.0]).is_err()); // wrong length
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn push(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<()> {
        let name = name.into();
        if let Err(msg) = check_tensor(&name, &shape, data.len()) {
            return Err(Error::invalid("Checkpoint::push", msg));
        }
        if self.tensors.iter().any(|(n, _, _)| *n == name) {
            return Err(Error::invalid(
                "Checkpoint::push",
                format!("duplicate tensor name '{name}'"),
            ));
        }
        self.tensors.push((name, shape, data));
        Ok(())
    }

    /// The shape and values of tensor `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::checkpoint::Checkpoint;
    /// let mut c = Checkpoint::new();
    /// c.push("b", vec![2], vec![1.0, 2.0])?;
    /// let (shape, values) = c.get("b").expect("present");
    /// assert_eq!((shape, values), (&[2usize][..], &[1.0f32, 2.0][..]));
    /// assert!(c.get("nope").is_none());
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn get(&self, name: &str) -> Option<(&[usize], &[f32])> {
        self.tensors
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, d)| (s.as_slice(), d.as_slice()))
    }

    /// Serializes to safetensors bytes (tensors in insertion order, dtype `F32`,
    /// little-endian). `path` is only used in error messages. Errors with
    /// [`Error::Checkpoint`] on an empty, reserved or duplicate name or a data
    /// length that does not match the shape.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::path::Path;
    /// use wgcnn::checkpoint::Checkpoint;
    /// let mut c = Checkpoint::new();
    /// c.push("w", vec![1], vec![1.5])?;
    /// let bytes = c.to_bytes(Path::new("<memory>"))?;
    /// assert_eq!(Checkpoint::from_bytes(&bytes, Path::new("<memory>"))?, c);
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let err = |msg: String| ckpt_err(path, msg);

        let mut seen = HashSet::new();
        let mut header = String::from("{");
        if !self.metadata.is_empty() {
            header.push_str(&to_json(METADATA_KEY, path)?);
            header.push(':');
            header.push_str(&to_json(&self.metadata, path)?);
        }
        let mut offset = 0usize;
        for (name, shape, data) in &self.tensors {
            check_tensor(name, shape, data.len()).map_err(err)?;
            if !seen.insert(name.as_str()) {
                return Err(err(format!("duplicate tensor name '{name}'")));
            }
            let end = data
                .len()
                .checked_mul(4)
                .and_then(|b| b.checked_add(offset))
                .ok_or_else(|| err("checkpoint too large".into()))?;
            if header.len() > 1 {
                header.push(',');
            }
            header.push_str(&to_json(name, path)?);
            header.push_str(":{\"dtype\":\"F32\",\"shape\":");
            header.push_str(&to_json(shape, path)?);
            header.push_str(&format!(",\"data_offsets\":[{offset},{end}]}}"));
            offset = end;
        }
        header.push('}');
        // Pad the header with spaces to a multiple of 8 bytes, like the reference
        // implementation, so the data that follows is aligned.
        while header.len() % 8 != 0 {
            header.push(' ');
        }

        let mut out = Vec::with_capacity(8 + header.len() + offset);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        for (_, _, data) in &self.tensors {
            for v in data {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(out)
    }

    /// Parses safetensors bytes (see [`Checkpoint::load`]); `path` is only used in
    /// error messages.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::path::Path;
    /// use wgcnn::checkpoint::Checkpoint;
    /// // a truncated header is a checkpoint error, not a panic
    /// assert!(matches!(
    ///     Checkpoint::from_bytes(&[8, 0, 0], Path::new("<memory>")),
    ///     Err(wgcnn::Error::Checkpoint { .. })
    /// ));
    /// ```
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let err = |msg: String| ckpt_err(path, msg);
        let total = bytes.len() as u64;

        // ---- header length ----------------------------------------------
        let Some(len_bytes) = bytes.get(..8) else {
            return Err(err(format!(
                "truncated file: {total} bytes, shorter than the 8-byte header length"
            )));
        };
        let mut len_arr = [0u8; 8];
        len_arr.copy_from_slice(len_bytes);
        let header_len = u64::from_le_bytes(len_arr);
        if header_len > MAX_HEADER_BYTES {
            return Err(err(format!(
                "corrupt header: declared header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes"
            )));
        }
        if header_len > total - 8 {
            return Err(err(format!(
                "truncated file: header needs {header_len} bytes, only {} follow",
                total - 8
            )));
        }
        // header_len <= total - 8 <= usize::MAX, so these conversions are lossless.
        let data_start = 8 + header_len as usize;
        let header = &bytes[8..data_start];
        let data = &bytes[data_start..];
        let data_len = data.len() as u64;

        // ---- header JSON -------------------------------------------------
        let header = std::str::from_utf8(header)
            .map_err(|e| err(format!("corrupt header: not UTF-8 ({e})")))?;
        let entries: BTreeMap<String, serde_json::Value> = serde_json::from_str(header)
            .map_err(|e| err(format!("corrupt header: invalid JSON ({e})")))?;

        let mut metadata = BTreeMap::new();
        let mut infos: Vec<(String, Vec<usize>, u64, u64)> = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            if name == METADATA_KEY {
                metadata = serde_json::from_value(value).map_err(|e| {
                    err(format!(
                        "corrupt header: __metadata__ must map strings to strings ({e})"
                    ))
                })?;
                continue;
            }
            if name.is_empty() {
                // `push` and `to_bytes` refuse empty names too: what loads must save
                return Err(err("corrupt header: a tensor has an empty name".into()));
            }
            infos.push(tensor_info(name, value, data_len, path)?);
        }

        check_tiling(&mut infos, data_len, path)?;

        // ---- cross-check with the reference parser ---------------------------
        // All offsets are now known to lie within the buffer, so the reference
        // implementation's arithmetic cannot overflow.
        safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("rejected by the safetensors parser: {e}")))?;

        // ---- values ------------------------------------------------------
        let tensors = infos
            .into_iter()
            .map(|(name, shape, start, end)| {
                // start <= end <= data_len, which fits in usize.
                let raw = &data[start as usize..end as usize];
                let values = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (name, shape, values)
            })
            .collect();
        Ok(Checkpoint { tensors, metadata })
    }

    /// Writes the checkpoint atomically (see [`write_atomic`]), creating the parent
    /// directory if needed.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::checkpoint::Checkpoint;
    /// let dir = std::env::temp_dir().join(format!("wgcnn-doc-save-{}", std::process::id()));
    /// let mut c = Checkpoint::new();
    /// c.push("w", vec![1], vec![2.0])?;
    /// c.save(&dir.join("a/b/last.safetensors"))?; // parents are created
    /// assert_eq!(Checkpoint::load(&dir.join("a/b/last.safetensors"))?, c);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with_hook(path, |_| Ok(()))
    }

    /// Like [`Checkpoint::save`], but calls `before_rename` with the path of the
    /// fully written and synced temporary file just before it is renamed over the
    /// target. If the hook fails, the temporary file is removed, the target is left
    /// untouched and the hook's error is returned. This exists to test crash safety.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::checkpoint::Checkpoint;
    /// let dir = std::env::temp_dir().join(format!("wgcnn-doc-hook-{}", std::process::id()));
    /// let path = dir.join("m.safetensors");
    /// let c = Checkpoint::new();
    /// let r = c.save_with_hook(&path, |_tmp| {
    ///     Err(wgcnn::Error::Device("simulated crash".into()))
    /// });
    /// assert!(r.is_err());
    /// assert!(!path.exists());
    /// # std::fs::remove_dir_all(&dir).ok();
    /// ```
    pub fn save_with_hook(
        &self,
        path: &Path,
        before_rename: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let bytes = self.to_bytes(path)?;
        write_atomic_with_hook(path, &bytes, before_rename)
    }

    /// Reads a checkpoint. I/O failures are [`Error::Io`]; every format problem
    /// (truncated file, corrupt header, dtype other than `F32`, shape/offset/length
    /// mismatch) is [`Error::Checkpoint`] with a message saying which.
    ///
    /// # Examples
    ///
    /// ```
    /// use wgcnn::checkpoint::Checkpoint;
    /// let missing = Checkpoint::load(std::path::Path::new("/no/such/model.safetensors"));
    /// assert!(matches!(missing, Err(wgcnn::Error::Io { .. })));
    /// ```
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Checks that the checkpoint holds exactly the `expected` `(name, shape)`
    /// tensors. On mismatch returns one [`Error::Checkpoint`] (with `path`) listing
    /// all missing, unexpected and mis-shaped tensors by name.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::path::Path;
    /// use wgcnn::checkpoint::Checkpoint;
    /// let mut c = Checkpoint::new();
    /// c.push("fc.weight", vec![10, 4], vec![0.0; 40])?;
    /// c.push("extra", vec![1], vec![0.0])?;
    /// let expected = vec![
    ///     ("fc.weight".to_string(), vec![10, 5]),
    ///     ("fc.bias".to_string(), vec![10]),
    /// ];
    /// let msg = c.check_against(&expected, Path::new("m.safetensors")).unwrap_err().to_string();
    /// assert!(msg.contains("fc.bias") && msg.contains("extra") && msg.contains("fc.weight"));
    /// # Ok::<(), wgcnn::Error>(())
    /// ```
    pub fn check_against(&self, expected: &[(String, Vec<usize>)], path: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut mis_shaped = Vec::new();
        for (name, shape) in expected {
            match self.get(name) {
                None => missing.push(name.as_str()),
                Some((s, _)) if s != shape.as_slice() => {
                    mis_shaped.push(format!("{name} (checkpoint {s:?}, model {shape:?})"))
                }
                Some(_) => {}
            }
        }
        let wanted: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let extra: Vec<&str> = self
            .tensors
            .iter()
            .map(|(n, _, _)| n.as_str())
            .filter(|n| !wanted.contains(n))
            .collect();
        if missing.is_empty() && extra.is_empty() && mis_shaped.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing tensors: {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            parts.push(format!("unexpected tensors: {}", extra.join(", ")));
        }
        if !mis_shaped.is_empty() {
            parts.push(format!("shape mismatches: {}", mis_shaped.join(", ")));
        }
        Err(ckpt_err(
            path,
            format!("checkpoint does not match the model; {}", parts.join("; ")),
        ))
    }
}

/// Writes `bytes` to `path` atomically: into `<name>.tmp-<pid>-<seq>` in the same
/// directory, `sync_all`, rename over `path`, then sync the directory (best effort,
/// unix only). Creates the parent directory if missing. A reader never sees a
/// partially written file; after a crash the old contents (or none) remain.
///
/// # Examples
///
/// ```
/// use wgcnn::checkpoint::write_atomic;
/// let path = std::env::temp_dir().join(format!("wgcnn-doc-atomic-{}/summary.json", std::process::id()));
/// write_atomic(&path, b"{\"ok\":true}")?;
/// assert_eq!(std::fs::read(&path).unwrap(), b"{\"ok\":true}");
/// # std::fs::remove_dir_all(path.parent().unwrap()).ok();
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with_hook(path, bytes, |_| Ok(()))
}

/// [`write_atomic`] with a hook called on the synced temporary file just before the
/// rename; if the hook fails the temporary file is removed, `path` is untouched and
/// the hook's error is returned.
///
/// # Examples
///
/// ```
/// use wgcnn::checkpoint::{write_atomic, write_atomic_with_hook};
/// let path = std::env::temp_dir().join(format!("wgcnn-doc-atomic-hook-{}/x.txt", std::process::id()));
/// write_atomic(&path, b"old")?;
/// let r = write_atomic_with_hook(&path, b"new", |tmp| {
///     assert_eq!(std::fs::read(tmp).unwrap(), b"new");
///     Err(wgcnn::Error::Device("simulated crash".into()))
/// });
/// assert!(r.is_err());
/// assert_eq!(std::fs::read(&path).unwrap(), b"old");
/// # std::fs::remove_dir_all(path.parent().unwrap()).ok();
/// # Ok::<(), wgcnn::Error>(())
/// ```
pub fn write_atomic_with_hook(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let mut hook = Some(before_rename);
    write_atomic_with_faults(path, bytes, &mut |op, tmp| match (op, hook.take()) {
        (IoOp::Rename, Some(h)) => h(tmp),
        (_, h) => {
            hook = h;
            Ok(())
        }
    })
}

/// One file-system operation of an atomic write, as [`write_atomic_with_faults`] announces
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Writing the bytes into the temporary file.
    Write,
    /// `fsync` of the temporary file.
    Fsync,
    /// Renaming the temporary file over the target.
    Rename,
}

/// [`write_atomic`] calling `fault(op, tmp)` before each of its operations: the seam that
/// fault-injection tests use to fail at each write, fsync and rename in turn. An error
/// from `fault` (or from the operation) removes the temporary file, leaves `path`
/// untouched and is returned.
pub fn write_atomic_with_faults(
    path: &Path,
    bytes: &[u8],
    fault: &mut dyn FnMut(IoOp, &Path) -> Result<()>,
) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::invalid(
            "write_atomic",
            format!("'{}' does not name a file", path.display()),
        )
    })?;
    let dir = parent_dir(path);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let result = fault(IoOp::Write, &tmp)
        .and_then(|()| write_synced(&tmp, bytes, &mut *fault))
        .and_then(|()| fault(IoOp::Rename, &tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if let Err(e) = result {
        // Best effort: never leave a stray temporary file behind on error.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir);
    Ok(())
}

/// The directory a file `path` lives in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn write_synced(
    tmp: &Path,
    bytes: &[u8],
    fault: &mut dyn FnMut(IoOp, &Path) -> Result<()>,
) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(|e| Error::io(tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(tmp, e))?;
    fault(IoOp::Fsync, tmp)?;
    f.sync_all().map_err(|e| Error::io(tmp, e))
}

/// Makes the rename durable by syncing the directory (best effort; unix only).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn check_tensor(name: &str, shape: &[usize], len: usize) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty tensor name".into());
    }
    if name == METADATA_KEY {
        return Err(format!(
            "'{METADATA_KEY}' is reserved and cannot name a tensor"
        ));
    }
    let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if numel != Some(len) {
        return Err(format!(
            "tensor '{name}' has shape {shape:?} but {len} values"
        ));
    }
    Ok(())
}

fn ckpt_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T, path: &Path) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| ckpt_err(path, format!("cannot encode header JSON: {e}")))
}

/// `(name, shape, start, end)` of one header entry, checked: F32, offsets inside the
/// `data_len` data bytes, and a shape that matches them.
fn tensor_info(
    name: String,
    value: serde_json::Value,
    data_len: u64,
    path: &Path,
) -> Result<(String, Vec<usize>, u64, u64)> {
    let err = |msg: String| ckpt_err(path, msg);
    let info: RawTensorInfo = serde_json::from_value(value)
        .map_err(|e| err(format!("corrupt header entry for tensor '{name}': {e}")))?;
    if info.dtype != "F32" {
        return Err(err(format!(
            "tensor '{name}' has dtype {}; only F32 is supported",
            info.dtype
        )));
    }
    let (start, end) = info.data_offsets;
    if start > end || end > data_len {
        return Err(err(format!(
                "tensor '{name}' has data offsets [{start}, {end}] outside the {data_len} data bytes (truncated or corrupt file)"
            )));
    }
    let numel = info
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|n| n.checked_mul(4).is_some_and(|b| b == end - start));
    if numel.is_none() {
        return Err(err(format!(
            "tensor '{name}' of shape {:?} (F32) does not match its {} data bytes",
            info.shape,
            end - start
        )));
    }
    let shape = info
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| err(format!("tensor '{name}' has a dimension beyond usize")))?;
    Ok((name, shape, start, end))
}

/// The tensors (sorted here by offset) must tile the `data_len` data bytes exactly.
fn check_tiling(
    infos: &mut [(String, Vec<usize>, u64, u64)],
    data_len: u64,
    path: &Path,
) -> Result<()> {
    let err = |msg: String| ckpt_err(path, msg);
    infos.sort_by_key(|&(_, _, start, end)| (start, end));
    let mut cursor = 0u64;
    for (name, _, start, end) in infos.iter() {
        if *start != cursor {
            return Err(err(format!(
                "tensor '{name}' starts at data offset {start}, expected {cursor} (overlapping or gapped offsets)"
            )));
        }
        cursor = *end;
    }
    if cursor != data_len {
        return Err(err(format!(
            "data section has {data_len} bytes but the tensors cover {cursor} (trailing or missing data)"
        )));
    }

    Ok(())
}
