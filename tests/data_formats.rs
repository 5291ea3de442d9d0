//! Colour datasets (issue 13 items 1 and 6): CIFAR-10/100 binary files (in a directory and
//! in a `.tar.gz`), NumPy `.npy`/`.npz` (stored and deflated) written here from known
//! arrays and read back exactly; every corruption is a typed error naming the file; and
//! the loader's `[B, 3, H, W]` batches with per-channel normalization.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::Compression;
use wgcnn::data::{
    self, load_cifar, load_cifar_with, load_npy, load_npz, ChannelNormalize, CifarOptions, Dataset,
    FloatRange, Layout, Loader, Normalize, NpyOptions,
};
use wgcnn::Error;

/// A fresh, empty scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("formats-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Asserts a data error whose message names `file` (and contains each of `words`).
fn assert_data_err<T: std::fmt::Debug>(r: wgcnn::Result<T>, file: &str, words: &[&str]) {
    let e = r.expect_err("expected an error");
    assert!(matches!(e, Error::Data { .. }), "not a data error: {e}");
    let msg = e.to_string();
    assert!(msg.contains(file), "error does not name {file}: {msg}");
    for w in words {
        assert!(msg.contains(w), "error lacks '{w}': {msg}");
    }
}

// ---- CIFAR ------------------------------------------------------------------

/// Known CIFAR content: `n` images of 3×32×32 and their labels.
struct Split {
    images: Vec<u8>,
    labels: Vec<u8>,
    coarse: Vec<u8>,
}

fn split(seed: u64, n: usize, classes: u8) -> Split {
    Split {
        images: bytes(seed, n * 3072),
        labels: bytes(seed + 100, n).iter().map(|b| b % classes).collect(),
        coarse: bytes(seed + 200, n).iter().map(|b| b % 20).collect(),
    }
}

/// CIFAR records: `[coarse,] label, 3072 pixels` each.
fn records(s: &Split, cifar100: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, img) in s.images.chunks(3072).enumerate() {
        if cifar100 {
            out.push(s.coarse[i]);
        }
        out.push(s.labels[i]);
        out.extend_from_slice(img);
    }
    out
}

const NAMES10: &str = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";

/// Writes a CIFAR-10 directory with batches of 3, 2, 4, 1, 2 images and 3 test images;
/// returns the files (name, content) and the expected train/test splits.
fn cifar10_files() -> (Vec<(String, Vec<u8>)>, Split, Split) {
    let sizes = [3, 2, 4, 1, 2];
    let mut train = Split {
        images: vec![],
        labels: vec![],
        coarse: vec![],
    };
    let mut files = Vec::new();
    for (b, &n) in sizes.iter().enumerate() {
        let s = split(b as u64, n, 10);
        files.push((format!("data_batch_{}.bin", b + 1), records(&s, false)));
        train.images.extend(&s.images);
        train.labels.extend(&s.labels);
    }
    let test = split(9, 3, 10);
    files.push(("test_batch.bin".into(), records(&test, false)));
    files.push((
        "batches.meta.txt".into(),
        format!("{NAMES10}\n").into_bytes(),
    ));
    (files, train, test)
}

fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, data) in files {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// A ustar archive of `files` under `prefix/`, gzip-compressed.
fn tar_gz(prefix: &str, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    gzip(&tar(prefix, files))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A ustar archive of `files` under `prefix/`.
fn tar(prefix: &str, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        let full = format!("{prefix}/{name}");
        h[..full.len()].copy_from_slice(full.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    tar
}

fn check_cifar10(pair: &data::DatasetPair, train: &Split, test: &Split) {
    assert_eq!(pair.train.images, train.images);
    assert_eq!(pair.train.labels, train.labels);
    assert_eq!(pair.test.images, test.images);
    assert_eq!(pair.test.labels, test.labels);
    assert_eq!((pair.train.n, pair.test.n), (12, 3));
    assert_eq!(pair.train.image_shape(), [3, 32, 32]);
    assert_eq!(
        (pair.train.classes, pair.train.name.as_str()),
        (10, "cifar-10")
    );
    assert_eq!(pair.train.names[0], "airplane");
    assert_eq!(pair.test.class_name(9), "truck");
    // R plane first: byte 0 of the image is the red of pixel (0, 0), byte 1024 its green
    assert_eq!(pair.train.image(1)[1024], train.images[3072 + 1024]);
}

#[test]
fn cifar10_directory_subdirectory_and_tar_gz_read_back_exactly() {
    let (files, train, test) = cifar10_files();
    let dir = scratch("cifar10");
    write_files(&dir, &files);
    check_cifar10(&load_cifar(&dir).unwrap(), &train, &test);

    let parent = scratch("cifar10-parent");
    write_files(&parent.join("cifar-10-batches-bin"), &files);
    check_cifar10(&load_cifar(&parent).unwrap(), &train, &test);

    let tgz = scratch("cifar10-tgz").join("cifar-10-binary.tar.gz");
    std::fs::write(&tgz, tar_gz("cifar-10-batches-bin", &files)).unwrap();
    check_cifar10(&load_cifar(&tgz).unwrap(), &train, &test);
    // a directory holding the downloaded archive
    check_cifar10(&load_cifar(tgz.parent().unwrap()).unwrap(), &train, &test);

    // without batches.meta.txt the names are the numbers
    std::fs::remove_file(dir.join("batches.meta.txt")).unwrap();
    assert_eq!(load_cifar(&dir).unwrap().train.names[3], "3");
}

#[test]
fn cifar100_fine_and_coarse_labels() {
    let (train, test) = (split(1, 5, 100), split(2, 4, 100));
    let fine: String = (0..100).map(|i| format!("fine{i}\n")).collect();
    let coarse: String = (0..20).map(|i| format!("coarse{i}\n")).collect();
    let files = vec![
        ("train.bin".to_string(), records(&train, true)),
        ("test.bin".to_string(), records(&test, true)),
        ("fine_label_names.txt".to_string(), fine.into_bytes()),
        ("coarse_label_names.txt".to_string(), coarse.into_bytes()),
    ];
    let dir = scratch("cifar100");
    write_files(&dir, &files);
    let tgz = dir.join("c100.tar.gz");
    std::fs::write(&tgz, tar_gz("cifar-100-binary", &files)).unwrap();
    for src in [dir.clone(), tgz] {
        let pair = load_cifar(&src).unwrap();
        assert_eq!(
            (pair.train.images.clone(), pair.train.labels.clone()),
            (train.images.clone(), train.labels.clone())
        );
        assert_eq!(
            (pair.test.images.clone(), pair.test.labels.clone()),
            (test.images.clone(), test.labels.clone())
        );
        assert_eq!(
            (pair.train.classes, pair.train.names[42].as_str()),
            (100, "fine42")
        );
        let c = load_cifar_with(&src, &CifarOptions { coarse: true }).unwrap();
        assert_eq!(
            (c.train.labels.clone(), c.test.labels.clone()),
            (train.coarse.clone(), test.coarse.clone())
        );
        assert_eq!(
            (c.train.classes, c.train.names[19].as_str()),
            (20, "coarse19")
        );
    }
}

#[test]
fn cifar_corruptions_are_typed_errors_naming_the_file() {
    let (files, _, _) = cifar10_files();
    let fresh = |name: &str| {
        let d = scratch(name);
        write_files(&d, &files);
        d
    };
    // truncated record
    let d = fresh("c-trunc");
    let f = d.join("data_batch_3.bin");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    assert_data_err(
        load_cifar(&d),
        "data_batch_3.bin",
        &["record 3", "truncated"],
    );
    // wrong file size (an extra byte: no whole number of records)
    let d = fresh("c-size");
    let mut t = files[5].1.clone();
    t.push(0);
    std::fs::write(d.join("test_batch.bin"), &t).unwrap();
    assert_data_err(load_cifar(&d), "test_batch.bin", &["file size 9220"]);
    // empty file
    std::fs::write(d.join("test_batch.bin"), []).unwrap();
    assert_data_err(load_cifar(&d), "test_batch.bin", &["file size 0"]);
    // label ≥ classes, in record 1 (offset 3073)
    let d = fresh("c-label");
    let mut b = files[1].1.clone();
    b[3073] = 10;
    std::fs::write(d.join("data_batch_2.bin"), &b).unwrap();
    assert_data_err(
        load_cifar(&d),
        "data_batch_2.bin",
        &["record 1", "offset 3073", "label 10"],
    );
    // missing file
    let d = fresh("c-missing");
    std::fs::remove_file(d.join("data_batch_4.bin")).unwrap();
    assert_data_err(load_cifar(&d), "data_batch_4.bin", &["missing"]);
    // wrong number of class names
    let d = fresh("c-names");
    std::fs::write(d.join("batches.meta.txt"), "a\nb\n").unwrap();
    assert_data_err(load_cifar(&d), "batches.meta.txt", &["2 class names"]);
    // no CIFAR files at all
    let d = scratch("c-none");
    assert_data_err(load_cifar(&d), "c-none", &["no CIFAR files"]);
    // CIFAR-100 fine label ≥ 100
    let d = scratch("c100-label");
    let mut r = records(&split(3, 2, 100), true);
    r[3074 + 1] = 100;
    std::fs::write(d.join("train.bin"), &r).unwrap();
    std::fs::write(d.join("test.bin"), &r[..3074]).unwrap();
    assert_data_err(load_cifar(&d), "train.bin", &["record 1", "fine label 100"]);
}

#[test]
fn cifar_bad_archives_are_typed_errors() {
    let (files, _, _) = cifar10_files();
    let dir = scratch("c-tar");
    let good = tar_gz("cifar-10-batches-bin", &files);
    let p = dir.join("cifar-10-binary.tar.gz");
    // not gzip at all
    std::fs::write(&p, b"this is not a gzip file").unwrap();
    assert_data_err(load_cifar(&p), "cifar-10-binary.tar.gz", &["gzip"]);
    // gzip cut short
    std::fs::write(&p, &good[..good.len() / 2]).unwrap();
    assert_data_err(load_cifar(&p), "cifar-10-binary.tar.gz", &[]);
    // gzip of something that is not a tar archive
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&[7u8; 2048]).unwrap();
    std::fs::write(&p, gz.finish().unwrap()).unwrap();
    assert_data_err(load_cifar(&p), "cifar-10-binary.tar.gz", &["checksum"]);
    // a tar whose entry is truncated inside the archive
    let mut short = files.clone();
    short[2].1.truncate(3073 * 2 + 5);
    std::fs::write(&p, tar_gz("cifar-10-batches-bin", &short)).unwrap();
    assert_data_err(
        load_cifar(&p),
        "cifar-10-batches-bin/data_batch_3.bin",
        &["truncated"],
    );
    // an archive missing a batch names the missing file
    let fewer: Vec<_> = files
        .iter()
        .filter(|(n, _)| n != "data_batch_5.bin")
        .cloned()
        .collect();
    std::fs::write(&p, tar_gz("cifar-10-batches-bin", &fewer)).unwrap();
    assert_data_err(load_cifar(&p), "data_batch_5.bin", &["missing"]);
}

// ---- NumPy ------------------------------------------------------------------

/// An `.npy` file (version 1.0) of `descr` with `shape` and raw little-endian `data`.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out.extend(data);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_bytes(v: &[u8]) -> Vec<u8> {
    v.iter().flat_map(|&x| i64::from(x).to_le_bytes()).collect()
}

/// A zip archive of `files`, each stored or deflated, as `zipfile` writes it.
fn zip(files: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in files {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let body = if deflate {
            let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        } else {
            data.clone()
        };
        let method: u16 = if deflate { 8 } else { 0 };
        let fields = |sig: u32| {
            let mut h = sig.to_le_bytes().to_vec();
            h.extend([20, 0, 0, 0]); // version needed, flags
            h.extend(method.to_le_bytes());
            h.extend([0, 0, 0x21, 0]); // time, date
            h.extend(crc.sum().to_le_bytes());
            h.extend((body.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend([0, 0]); // extra length
            h
        };
        let offset = out.len() as u32;
        out.extend(fields(0x0403_4b50));
        out.extend(name.as_bytes());
        out.extend(&body);
        let mut c = 0x0201_4b50u32.to_le_bytes().to_vec();
        c.extend([20, 0]); // version made by
        c.extend(&fields(0)[4..]);
        c.extend([0; 8]); // comment length, disk, internal and external attributes
        c.extend([0, 0]);
        c.extend(offset.to_le_bytes());
        c.extend(name.as_bytes());
        central.extend(c);
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0; 4]);
    out.extend((files.len() as u16).to_le_bytes());
    out.extend((files.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend([0, 0]);
    out
}

/// `n` images `c×h×w` as CHW bytes and the same in HWC order.
fn chw_and_hwc(seed: u64, n: usize, c: usize, h: usize, w: usize) -> (Vec<u8>, Vec<u8>) {
    let chw = bytes(seed, n * c * h * w);
    let mut hwc = vec![0; chw.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                hwc[i * c * h * w + p * c + ch] = chw[i * c * h * w + ch * h * w + p];
            }
        }
    }
    (chw, hwc)
}

#[test]
fn npy_both_layouts_and_dtypes_read_back_exactly() {
    let dir = scratch("npy");
    let (chw, hwc) = chw_and_hwc(1, 4, 3, 5, 6);
    let labels = [0u8, 3, 1, 2];
    let y = dir.join("y.npy");
    std::fs::write(&y, npy("<i8", &[4], &i64_bytes(&labels))).unwrap();
    let x = dir.join("x.npy");
    let opts = NpyOptions::default();
    let cases: Vec<(String, Vec<u8>)> = vec![
        ("nhwc u8".into(), npy("|u1", &[4, 5, 6, 3], &hwc)),
        ("nchw u8".into(), npy("|u1", &[4, 3, 5, 6], &chw)),
        (
            "nhwc f32/255".into(),
            npy(
                "<f4",
                &[4, 5, 6, 3],
                &f32_bytes(&hwc.iter().map(|&b| b as f32 / 255.0).collect::<Vec<_>>()),
            ),
        ),
        (
            "nchw f32 0..255".into(),
            npy(
                "<f4",
                &[4, 3, 5, 6],
                &f32_bytes(&chw.iter().map(|&b| b as f32).collect::<Vec<_>>()),
            ),
        ),
    ];
    for (what, file) in cases {
        std::fs::write(&x, file).unwrap();
        let ds = load_npy(&x, &y, "toy", &opts).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(ds.images, chw, "{what}");
        assert_eq!(
            (ds.labels.as_slice(), ds.classes, ds.image_shape()),
            (&labels[..], 4, [3, 5, 6]),
            "{what}"
        );
    }
    // ambiguous 3×3×3: the last axis wins, the override reads it as N×C×H×W
    let (chw3, hwc3) = chw_and_hwc(2, 4, 3, 3, 3);
    std::fs::write(&x, npy("|u1", &[4, 3, 3, 3], &hwc3)).unwrap();
    assert_eq!(load_npy(&x, &y, "t", &opts).unwrap().images, chw3);
    std::fs::write(&x, npy("|u1", &[4, 3, 3, 3], &chw3)).unwrap();
    let nchw = NpyOptions {
        layout: Layout::Nchw,
        ..NpyOptions::default()
    };
    assert_eq!(load_npy(&x, &y, "t", &nchw).unwrap().images, chw3);
    // one-channel N×H×W, labels N×1 of uint8, explicit class count
    let grey = bytes(3, 4 * 2 * 2);
    std::fs::write(&x, npy("|u1", &[4, 2, 2], &grey)).unwrap();
    let y1 = dir.join("y1.npy");
    std::fs::write(&y1, npy("|u1", &[4, 1], &labels)).unwrap();
    let ten = NpyOptions {
        classes: Some(10),
        ..NpyOptions::default()
    };
    let ds = load_npy(&x, &y1, "t", &ten).unwrap();
    assert_eq!(
        (ds.images.clone(), ds.channels, ds.classes),
        (grey.clone(), 1, 10)
    );
    // 0/1 floats are k/255 by default; FloatRange::Byte reads them as bytes 0 and 1
    std::fs::write(&x, npy("<f4", &[4, 2, 2], &f32_bytes(&[1.0; 16]))).unwrap();
    assert_eq!(load_npy(&x, &y, "t", &opts).unwrap().images, vec![255; 16]);
    let byte = NpyOptions {
        float_range: FloatRange::Byte,
        ..NpyOptions::default()
    };
    assert_eq!(load_npy(&x, &y, "t", &byte).unwrap().images, vec![1; 16]);
}

#[test]
fn npz_stored_and_deflated_read_back_exactly() {
    let dir = scratch("npz");
    let (chw, hwc) = chw_and_hwc(4, 3, 3, 4, 4);
    let (chw_t, hwc_t) = chw_and_hwc(5, 2, 3, 4, 4);
    let files = vec![
        ("x_train.npy", npy("|u1", &[3, 4, 4, 3], &hwc)),
        ("y_train.npy", npy("<i8", &[3], &i64_bytes(&[0, 1, 2]))),
        ("x_test.npy", npy("|u1", &[2, 4, 4, 3], &hwc_t)),
        ("y_test.npy", npy("<u2", &[2], &[4, 0, 0, 0])),
    ];
    for deflate in [false, true] {
        let p = dir.join(format!("d{deflate}.npz"));
        std::fs::write(&p, zip(&files, deflate)).unwrap();
        let pair = load_npz(&p, "toy", &NpyOptions::default()).unwrap();
        assert_eq!(
            (pair.train.images.clone(), pair.test.images.clone()),
            (chw.clone(), chw_t.clone())
        );
        assert_eq!(
            (pair.train.labels.clone(), pair.test.labels.clone()),
            (vec![0, 1, 2], vec![4, 0])
        );
        assert_eq!((pair.train.classes, pair.test.classes), (5, 5));
    }
    // missing key: the error lists the keys present
    let p = dir.join("missing.npz");
    std::fs::write(&p, zip(&files[..3], true)).unwrap();
    assert_data_err(
        load_npz(&p, "t", &NpyOptions::default()),
        "missing.npz",
        &["y_test", "x_test, x_train, y_train"],
    );
    // a flipped byte of a stored entry fails its CRC
    let mut z = zip(&files, false);
    z[200] ^= 0xff;
    std::fs::write(&p, &z).unwrap();
    assert_data_err(
        load_npz(&p, "t", &NpyOptions::default()),
        "missing.npz",
        &["CRC-32"],
    );
    // a cut archive has no end record
    let z = zip(&files, true);
    std::fs::write(&p, &z[..z.len() - 30]).unwrap();
    assert_data_err(
        load_npz(&p, "t", &NpyOptions::default()),
        "missing.npz",
        &["zip"],
    );
}

#[test]
fn malformed_npy_is_rejected_naming_the_file() {
    let dir = scratch("npy-bad");
    let y = dir.join("y.npy");
    std::fs::write(&y, npy("|u1", &[2], &[0, 1])).unwrap();
    let x = dir.join("bad_x.npy");
    let opts = NpyOptions::default();
    let good = npy("|u1", &[2, 2, 2], &[0; 8]);
    let header_end = good.len() - 8;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic", b"NUMPY\x01\x00xxxxxxx".to_vec(), "magic"),
        (
            "version",
            [&good[..6], &[9, 0], &good[8..]].concat(),
            "version 9",
        ),
        ("header past end", good[..40].to_vec(), "runs past the end"),
        (
            "truncated data",
            good[..good.len() - 1].to_vec(),
            "truncated data",
        ),
        (
            "trailing data",
            [&good[..], &[0]].concat(),
            "trailing bytes",
        ),
        (
            "fortran",
            npy("|u1", &[2, 2, 2], &[0; 8]).replace_all(b"False", b"True "),
            "fortran_order",
        ),
        (
            "dtype",
            npy("<c8", &[2, 2, 2], &[0; 64]),
            "unsupported dtype",
        ),
        (
            "unknown key",
            npy("|u1", &[2, 2, 2], &[0; 8]).replace_all(b"'shape'", b"'shapy'"),
            "unknown key",
        ),
        (
            "bad shape",
            npy("|u1", &[2, 2, 2], &[0; 8]).replace_all(b"(2, 2, 2)", b"(2, x, 2)"),
            "dimension",
        ),
        (
            "5-d",
            npy("|u1", &[2, 1, 1, 1, 2], &[0; 4]),
            "shape is [2, 1, 1, 1, 2]",
        ),
        (
            "4-d without channel axis",
            npy("|u1", &[2, 2, 2, 2], &[0; 16]),
            "C in 1, 3, 4",
        ),
        (
            "normalized floats",
            npy("<f4", &[2, 2, 2], &f32_bytes(&[-0.5; 8])),
            "element 0",
        ),
        (
            "in-between floats",
            npy(
                "<f4",
                &[2, 2, 2],
                &f32_bytes(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 12.5]),
            ),
            "element 7",
        ),
        (
            "nan",
            npy("<f4", &[2, 2, 2], &f32_bytes(&[f32::NAN; 8])),
            "NaN",
        ),
        (
            "int out of range",
            npy(
                "<i2",
                &[2, 2, 2],
                &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            "256",
        ),
    ];
    assert!(header_end > 10);
    for (what, bytes, word) in cases {
        std::fs::write(&x, &bytes).unwrap();
        let r = load_npy(&x, &y, "t", &opts);
        let e = r.expect_err(what);
        assert!(matches!(e, Error::Data { .. }), "{what}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains("bad_x.npy") && msg.contains(word),
            "{what}: {msg}"
        );
    }
    // labels: floats, 2-D, negative, count mismatch
    std::fs::write(&x, &good).unwrap();
    let bad_labels: Vec<(Vec<u8>, &str)> = vec![
        (npy("<f4", &[2], &f32_bytes(&[0.0, 1.0])), "not floats"),
        (npy("|u1", &[2, 2], &[0; 4]), "N or N×1"),
        (
            npy("<i8", &[2], &[[0u8; 8], [0xff; 8]].concat()),
            "label -1",
        ),
        (npy("|u1", &[3], &[0, 1, 1]), "3 labels for 2 images"),
    ];
    for (bytes, word) in bad_labels {
        std::fs::write(&y, &bytes).unwrap();
        assert_data_err(load_npy(&x, &y, "t", &opts), "y.npy", &[word]);
    }
}

/// Byte-string replacement for building malformed headers.
trait ReplaceAll {
    fn replace_all(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceAll for Vec<u8> {
    fn replace_all(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.len() {
            if self[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
            } else {
                out.push(self[i]);
                i += 1;
            }
        }
        out
    }
}

// ---- the loader with channels -------------------------------------------------

#[test]
fn loader_normalizes_each_channel_in_bchw_layout() {
    // two RGB images of 1×2 pixels; image i, channel c, pixel p = 100·i + 10·c + p
    let images: Vec<u8> = (0..2)
        .flat_map(|i| (0..3).flat_map(move |c| (0..2).map(move |p| (100 * i + 10 * c + p) as u8)))
        .collect();
    let ds = Dataset::with_channels("rgb", images, vec![1, 0], 3, 1, 2, 2).unwrap();
    let norm = ChannelNormalize::new(0.5, vec![1.0, 2.0, 3.0], vec![2.0, 4.0, 8.0]);
    let loader = Loader::per_channel(&ds, 2, false, 0, norm).unwrap();
    assert_eq!(
        (loader.channels(), loader.sample_len(), loader.image_dims()),
        (3, 6, (1, 2))
    );
    let b = loader.batch(&[1, 0]).unwrap();
    assert_eq!(b.images.shape(), &[2, 3, 1, 2]);
    // by hand: (v·0.5 − mean[c]) / std[c]
    let want = |i: usize, c: usize, p: usize| {
        let v = (100 * i + 10 * c + p) as f32;
        (v * 0.5 - [1.0, 2.0, 3.0][c]) / [2.0, 4.0, 8.0][c]
    };
    assert_eq!(b.images[[0, 0, 0, 0]], 24.5); // image 1, R, pixel 0: (50 − 1) / 2
    assert_eq!(b.images[[0, 2, 0, 1]], 7.1875); // image 1, B, pixel 1: (60.5 − 3) / 8
    for (bi, i) in [1usize, 0].into_iter().enumerate() {
        for c in 0..3 {
            for p in 0..2 {
                assert_eq!(
                    b.images[[bi, c, 0, p]],
                    want(i, c, p),
                    "image {i} channel {c} pixel {p}"
                );
            }
        }
    }
    assert_eq!(b.labels, vec![0, 1]);
    // a scalar Normalize applies to every channel; the wrong count of stds is refused
    let l = Loader::new(&ds, 1, false, 0, Normalize::default()).unwrap();
    assert_eq!(
        l.batch(&[0]).unwrap().images[[0, 2, 0, 1]],
        Normalize::default().apply(21)
    );
    let two = ChannelNormalize::new(1.0, vec![0.0, 0.0], vec![1.0, 1.0]);
    assert!(matches!(
        Loader::per_channel(&ds, 1, false, 0, two),
        Err(Error::InvalidArgument { .. })
    ));
    // the flat view is [B, C·H·W] in CHW order
    assert_eq!(
        b.flat().unwrap().row(1).to_vec(),
        (0..3)
            .flat_map(|c| (0..2).map(move |p| want(0, c, p)))
            .collect::<Vec<_>>()
    );
}

#[test]
fn one_channel_datasets_keep_their_meaning() {
    let ds = Dataset::new("fashion-mnist", vec![0, 1, 2, 3], vec![9], 2, 2, 10).unwrap();
    assert_eq!(
        (ds.channels, ds.image_shape(), ds.pixels_per_image()),
        (1, [1, 2, 2], 4)
    );
    assert_eq!(ds.class_names()[9], "Ankle boot");
    assert_eq!(ds.names[9], "Ankle boot");
    let mut rgb = Dataset::with_channels("rgb", (0..24).collect(), vec![0, 1], 3, 2, 2, 2).unwrap();
    assert_eq!(rgb.image(1), &(12..24).collect::<Vec<u8>>()[..]);
    rgb.truncate(1);
    assert_eq!((rgb.n, rgb.images.len()), (1, 12));
    assert!(Dataset::with_channels("x", vec![0; 11], vec![0], 3, 2, 2, 2).is_err());
    assert!(Dataset::with_channels("x", vec![], vec![], 0, 2, 2, 2).is_err());
}

// ---- never a panic ------------------------------------------------------------

/// `good` with a few bytes changed within its first `span` bytes, or cut short.
fn mutations(good: &[u8], span: usize, count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let r = bytes(77, count * 8);
    (0..count).map(move |k| {
        let pick = |j: usize| usize::from(r[k * 8 + j]) << 8 | usize::from(r[k * 8 + j + 1]);
        let mut b = good.to_vec();
        if k % 4 == 3 {
            b.truncate(pick(0) % good.len());
        } else {
            for j in 0..=(k % 3) {
                let at = pick(2 * j) % span.min(good.len());
                b[at] = r[k * 8 + 7 - j];
            }
        }
        b
    })
}

#[test]
fn mutated_files_give_errors_never_panics() {
    let dir = scratch("fuzz");
    let opts = NpyOptions::default();
    // npy: header and data
    let (_, hwc) = chw_and_hwc(8, 2, 3, 4, 4);
    let x = npy("|u1", &[2, 4, 4, 3], &hwc);
    let (xp, yp) = (dir.join("x.npy"), dir.join("y.npy"));
    std::fs::write(&yp, npy("<i8", &[2], &i64_bytes(&[0, 1]))).unwrap();
    let mut errors = 0;
    for m in mutations(&x, 128, 400) {
        std::fs::write(&xp, &m).unwrap();
        errors += usize::from(load_npy(&xp, &yp, "f", &opts).is_err());
    }
    // npz: directory, headers and data, stored and deflated
    let files = vec![
        ("x_train.npy", x.clone()),
        ("y_train.npy", npy("<i8", &[2], &i64_bytes(&[0, 1]))),
        ("x_test.npy", x.clone()),
        ("y_test.npy", npy("|u1", &[2], &[1, 0])),
    ];
    for deflate in [false, true] {
        let z = zip(&files, deflate);
        let len = z.len();
        for m in mutations(&z, len, 400) {
            std::fs::write(&xp, &m).unwrap();
            errors += usize::from(load_npz(&xp, "f", &opts).is_err());
        }
    }
    // CIFAR tar (before gzip: tar headers and records)
    let (cifar, _, _) = cifar10_files();
    let t = tar("cifar-10-batches-bin", &cifar);
    let tp = dir.join("c.tar.gz");
    for m in mutations(&t, t.len(), 150) {
        std::fs::write(&tp, gzip(&m)).unwrap();
        errors += usize::from(load_cifar(&tp).is_err());
    }
    assert!(errors > 1000, "only {errors} of 1350 mutations were errors");
}
