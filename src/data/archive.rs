//! The two archive formats the dataset readers open in place: tar (inside gzip, for the
//! CIFAR downloads) and zip (NumPy's `.npz`, stored or deflated).
//!
//! Both are read defensively, like the IDX reader: every header field is checked before it
//! is used (tar checksums, octal sizes, zip signatures, offsets and sizes against the
//! file), sizes are capped at [`MAX_ENTRY_BYTES`], decompression is bounded with
//! [`Read::take`], zip entries are checked against their CRC-32, and every problem is an
//! [`Error::Data`] naming the archive, the entry and the byte offset.

use std::io::Read;
use std::path::Path;

use flate2::read::{DeflateDecoder, MultiGzDecoder};

use super::data_err;
use crate::error::{Error, Result};

/// Largest archive entry (uncompressed) that is read: 2³¹ bytes.
pub const MAX_ENTRY_BYTES: u64 = 1 << 31;

/// Size of a tar block (headers and data padding).
const BLOCK: usize = 512;

/// A file extracted from an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The entry's path inside the archive (`cifar-10-batches-bin/data_batch_1.bin`).
    pub name: String,
    /// Its content.
    pub data: Vec<u8>,
}

/// Maps a read error of a gzip stream: corrupt or truncated data is a data error.
fn gz_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidData | ErrorKind::InvalidInput | ErrorKind::UnexpectedEof => data_err(
            path,
            format!("corrupt gzip stream while reading {what}: {e}"),
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

/// Reads the regular files of the gzip-compressed tar archive `path` whose names `want`
/// accepts (the others are skipped without being kept).
pub(crate) fn read_tar_gz(path: &Path, want: impl Fn(&str) -> bool) -> Result<Vec<Entry>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let gz = MultiGzDecoder::new(std::io::BufReader::new(file));
    read_tar(gz, path, want)
}

/// Reads the regular files of a tar stream whose names `want` accepts. Understands
/// ustar/GNU/v7 headers, GNU long names (`L`) and pax `path` records (`x`).
pub(crate) fn read_tar(
    mut r: impl Read,
    path: &Path,
    want: impl Fn(&str) -> bool,
) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut long_name: Option<String> = None;
    loop {
        let mut header = [0u8; BLOCK];
        let got = read_full(&mut r, &mut header).map_err(|e| gz_err(path, "a tar header", e))?;
        if got == 0 || (got == BLOCK && header.iter().all(|&b| b == 0)) {
            if offset == 0 {
                return Err(data_err(path, "empty tar archive"));
            }
            return Ok(out);
        }
        if got < BLOCK {
            let msg = format!("truncated tar header at offset {offset}: {got} of 512 bytes");
            return Err(data_err(path, msg));
        }
        let h = TarHeader::parse(&header, path, offset)?;
        let regular = h.regular();
        let name = long_name.take().unwrap_or(h.name);
        let data_at = offset + BLOCK as u64;
        let keep = matches!(h.kind, b'L' | b'x') || (regular && want(&name));
        let data = read_tar_data(&mut r, path, &name, data_at, h.size, keep)?;
        match h.kind {
            b'L' => long_name = Some(c_string(&data)),
            b'x' => long_name = pax_path(&data),
            _ if keep => out.push(Entry { name, data }),
            _ => {}
        }
        offset = data_at + h.size.div_ceil(BLOCK as u64) * BLOCK as u64;
    }
}

/// One tar header block's fields that the reader uses.
struct TarHeader {
    name: String,
    size: u64,
    kind: u8,
}

impl TarHeader {
    /// Parses and validates (checksum, size) the header block at `offset`.
    fn parse(b: &[u8; BLOCK], path: &Path, offset: u64) -> Result<TarHeader> {
        let err = |msg: String| data_err(path, format!("tar header at offset {offset}: {msg}"));
        let stored = parse_octal(&b[148..156]).ok_or_else(|| {
            err("checksum field is not an octal number (not a tar archive?)".into())
        })?;
        let sum: u64 = b
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(v)
                }
            })
            .sum();
        if stored != sum {
            return Err(err(format!(
                "checksum {stored} does not match the header's {sum} (corrupt or not a tar archive)"
            )));
        }
        let size = if b[124] & 0x80 != 0 {
            // GNU base-256: the remaining 11 bytes, big-endian
            b[125..136].iter().fold(0u64, |acc, &v| {
                acc.saturating_mul(256).saturating_add(u64::from(v))
            })
        } else {
            parse_octal(&b[124..136])
                .ok_or_else(|| err("size field is not an octal number".into()))?
        };
        if size > MAX_ENTRY_BYTES {
            return Err(err(format!(
                "entry of {size} bytes is larger than the maximum of {MAX_ENTRY_BYTES}"
            )));
        }
        let mut name = c_string(&b[0..100]);
        if &b[257..262] == b"ustar" && b[345] != 0 {
            name = format!("{}/{name}", c_string(&b[345..500]));
        }
        Ok(TarHeader {
            name,
            size,
            kind: b[156],
        })
    }

    /// A regular file (`'0'`, the old `'\0'`, or contiguous `'7'`).
    fn regular(&self) -> bool {
        matches!(self.kind, b'0' | 0 | b'7')
    }
}

/// Reads an entry's `size` data bytes and skips its padding; keeps them when `keep`.
fn read_tar_data(
    r: &mut impl Read,
    path: &Path,
    name: &str,
    at: u64,
    size: u64,
    keep: bool,
) -> Result<Vec<u8>> {
    let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
    let mut data = Vec::new();
    let what = format!("tar entry '{name}'");
    let got = if keep {
        data.reserve(usize::try_from(size.min(64 << 20)).unwrap_or(0));
        r.by_ref()
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| gz_err(path, &what, e))? as u64
    } else {
        std::io::copy(&mut r.by_ref().take(size), &mut std::io::sink())
            .map_err(|e| gz_err(path, &what, e))?
    };
    let pad = std::io::copy(&mut r.by_ref().take(padded - size), &mut std::io::sink())
        .map_err(|e| gz_err(path, &what, e))?;
    if got < size || pad < padded - size {
        return Err(data_err(
            path,
            format!(
                "truncated tar archive: entry '{name}' at offset {at} needs {size} bytes \
                 (padded to {padded}), got {}",
                got + pad
            ),
        ));
    }
    Ok(data)
}

/// An octal number field, padded with spaces or NULs; `None` when malformed.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// The bytes up to the first NUL, as (lossy) UTF-8.
fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The `path` record of a pax extended header (`"<len> path=<name>\n"` records).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|rec| {
        let (_, kv) = rec.split_once(' ')?;
        kv.strip_prefix("path=").map(str::to_string)
    })
}

// ---- zip ----------------------------------------------------------------------

/// One file of a zip archive, from its central directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ZipEntry {
    /// The entry's name (`x_train.npy`).
    pub name: String,
    method: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    local_offset: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The end of central directory record: `(entries, directory size, directory offset)`,
/// following the zip64 locator when the classic fields overflow.
fn zip_directory(b: &[u8], path: &Path) -> Result<(u64, u64, u64)> {
    let err = |msg: &str| data_err(path, format!("zip: {msg}"));
    let lowest = b.len().saturating_sub(22 + 65535);
    let eocd = (lowest..=b.len().saturating_sub(22))
        .rev()
        .find(|&i| b.len() >= 22 && b[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(|| {
            err("no end of central directory record (not a zip archive, or truncated)")
        })?;
    let short = || err("truncated end of central directory record");
    let entries = u64::from(u16_at(b, eocd + 10).ok_or_else(short)?);
    let size = u64::from(u32_at(b, eocd + 12).ok_or_else(short)?);
    let offset = u64::from(u32_at(b, eocd + 16).ok_or_else(short)?);
    if entries != 0xFFFF && size != 0xFFFF_FFFF && offset != 0xFFFF_FFFF {
        return Ok((entries, size, offset));
    }
    // zip64: the locator sits just before the classic record
    let loc = eocd
        .checked_sub(20)
        .filter(|&l| b[l..l + 4] == [0x50, 0x4b, 0x06, 0x07])
        .ok_or_else(|| err("zip64 end of central directory locator missing"))?;
    let rec = u64_at(b, loc + 8)
        .and_then(|r| usize::try_from(r).ok())
        .filter(|&r| {
            r.checked_add(4).and_then(|e| b.get(r..e)) == Some(&[0x50, 0x4b, 0x06, 0x06][..])
        })
        .ok_or_else(|| err("zip64 end of central directory record missing"))?;
    let field = |at: usize| u64_at(b, rec + at).ok_or_else(|| err("truncated zip64 record"));
    Ok((field(32)?, field(40)?, field(48)?))
}

/// The entries of the zip archive `b` (read from `path`), from its central directory.
pub(crate) fn zip_entries(b: &[u8], path: &Path) -> Result<Vec<ZipEntry>> {
    let (count, size, offset) = zip_directory(b, path)?;
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
    if end > b.len() {
        return Err(data_err(
            path,
            format!(
                "zip: central directory at offset {offset} of {size} bytes runs past the end \
                 of the {}-byte file",
                b.len()
            ),
        ));
    }
    let mut at = start;
    let mut out = Vec::new();
    for i in 0..count {
        let (entry, next) = zip_central_entry(b, path, at, end, i)?;
        out.push(entry);
        at = next;
    }
    Ok(out)
}

/// Parses the central directory record at `at` (entry number `i`); returns it and where
/// the next one starts.
fn zip_central_entry(
    b: &[u8],
    path: &Path,
    at: usize,
    end: usize,
    i: u64,
) -> Result<(ZipEntry, usize)> {
    let err = |msg: String| {
        data_err(
            path,
            format!("zip: central directory entry {i} at offset {at}: {msg}"),
        )
    };
    if b.get(at..at + 4) != Some(&[0x50, 0x4b, 0x01, 0x02][..]) || at + 46 > end {
        return Err(err("bad signature or truncated record".into()));
    }
    let f16 = |o: usize| u16_at(b, at + o).unwrap_or(0);
    let f32_ = |o: usize| u32_at(b, at + o).unwrap_or(0);
    let (name_len, extra_len, comment_len) = (f16(28) as usize, f16(30) as usize, f16(32) as usize);
    let next = at + 46 + name_len + extra_len + comment_len;
    if next > end {
        return Err(err("record runs past the central directory".into()));
    }
    let name = String::from_utf8_lossy(&b[at + 46..at + 46 + name_len]).into_owned();
    if f16(8) & 1 != 0 {
        return Err(err(format!("entry '{name}' is encrypted")));
    }
    let mut size = u64::from(f32_(24));
    let mut compressed = u64::from(f32_(20));
    let mut local_offset = u64::from(f32_(42));
    let extra = &b[at + 46 + name_len..at + 46 + name_len + extra_len];
    zip64_extra(extra, &mut size, &mut compressed, &mut local_offset);
    let entry = ZipEntry {
        name,
        method: f16(10),
        crc: f32_(16),
        compressed,
        size,
        local_offset,
    };
    Ok((entry, next))
}

/// Replaces the saturated (`0xFFFFFFFF`) sizes and offset with a zip64 extra field's.
fn zip64_extra(mut extra: &[u8], size: &mut u64, compressed: &mut u64, offset: &mut u64) {
    while let (Some(tag), Some(len)) = (u16_at(extra, 0), u16_at(extra, 2)) {
        let len = len as usize;
        let Some(body) = extra.get(4..4 + len) else {
            return;
        };
        if tag == 1 {
            let mut pos = 0;
            for v in [&mut *size, &mut *compressed, &mut *offset] {
                if *v == 0xFFFF_FFFF {
                    if let Some(x) = u64_at(body, pos) {
                        *v = x;
                        pos += 8;
                    }
                }
            }
        }
        extra = &extra[4 + len..];
    }
}

/// The content of `entry`: stored or deflated, checked against its size and CRC-32.
pub(crate) fn zip_extract(b: &[u8], path: &Path, entry: &ZipEntry) -> Result<Vec<u8>> {
    let name = &entry.name;
    let err = |msg: String| data_err(path, format!("zip entry '{name}': {msg}"));
    if entry.size > MAX_ENTRY_BYTES {
        return Err(err(format!(
            "{} bytes is more than the maximum of {MAX_ENTRY_BYTES}",
            entry.size
        )));
    }
    let at = usize::try_from(entry.local_offset).unwrap_or(usize::MAX);
    if b.get(at..at.saturating_add(4)) != Some(&[0x50, 0x4b, 0x03, 0x04][..]) {
        return Err(err(format!("no local header at offset {at}")));
    }
    let lens = u16_at(b, at + 26).zip(u16_at(b, at + 28));
    let start = lens.map(|(n, e)| at + 30 + n as usize + e as usize);
    let data = start
        .and_then(|s| b.get(s..s.checked_add(usize::try_from(entry.compressed).ok()?)?))
        .ok_or_else(|| {
            err(format!(
                "data at offset {at} ({} bytes) runs past the end of the file",
                entry.compressed
            ))
        })?;
    let out = match entry.method {
        0 => data.to_vec(),
        8 => {
            let mut out =
                Vec::with_capacity(usize::try_from(entry.size.min(64 << 20)).unwrap_or(0));
            DeflateDecoder::new(data)
                .take(entry.size + 1)
                .read_to_end(&mut out)
                .map_err(|e| err(format!("corrupt deflate stream: {e}")))?;
            out
        }
        m => {
            return Err(err(format!(
                "unsupported compression method {m} (only stored and deflate)"
            )))
        }
    };
    if out.len() as u64 != entry.size {
        return Err(err(format!(
            "{} bytes after decompression, the directory says {}",
            out.len(),
            entry.size
        )));
    }
    let mut crc = flate2::Crc::new();
    crc.update(&out);
    if crc.sum() != entry.crc {
        return Err(err(format!(
            "CRC-32 {:08x} does not match the directory's {:08x}",
            crc.sum(),
            entry.crc
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_header(name: &str, size: usize, kind: u8) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in files {
            out.extend_from_slice(&tar_header(name, data.len(), b'0'));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        out.extend_from_slice(&[0; 2 * BLOCK]);
        out
    }

    #[test]
    fn tar_round_trip_filters_and_detects_corruption() {
        let bytes = tar(&[("d/a.bin", b"hello"), ("d/b.txt", &[7; 600])]);
        let p = Path::new("t.tar");
        let all = read_tar(&bytes[..], p, |_| true).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].name.as_str(), all[0].data.as_slice()),
            ("d/a.bin", &b"hello"[..])
        );
        assert_eq!(all[1].data, vec![7; 600]);
        let some = read_tar(&bytes[..], p, |n| n.ends_with(".txt")).unwrap();
        assert_eq!(some.len(), 1);
        // truncated data of the second entry
        let e = read_tar(&bytes[..BLOCK * 3 + 10], p, |_| true).unwrap_err();
        assert!(e.to_string().contains("d/b.txt"), "{e}");
        // a flipped header byte breaks the checksum
        let mut bad = bytes.clone();
        bad[3] ^= 1;
        let e = read_tar(&bad[..], p, |_| true).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn zip_rejects_garbage() {
        let p = Path::new("x.npz");
        assert!(zip_entries(b"not a zip at all, not even close.....", p).is_err());
        assert!(zip_entries(&[], p).is_err());
    }
}
