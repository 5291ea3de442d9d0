//! Tests of the data layer: the IDX reader (well-formed and hostile input), loading
//! MNIST-format directories (including the embedded subset) and the batch loader.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use wgcnn::data::idx::{parse_idx, read_idx, IdxArray, MAX_PAYLOAD_BYTES};
use wgcnn::data::{
    class_names, embedded_mnist_subset_dir, load_mnist_dir, Dataset, Loader, Normalize,
};
use wgcnn::Error;

// ---- helpers -------------------------------------------------------------

/// Encodes an unsigned-byte IDX file.
fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("gzip write");
    enc.finish().expect("gzip finish")
}

/// A fresh, empty scratch directory for one test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("data-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Asserts `r` is `Error::Data` whose message contains every one of `needles`
/// (case-insensitive), and returns the message.
fn expect_data_err<T: std::fmt::Debug>(r: wgcnn::Result<T>, needles: &[&str]) -> String {
    match r {
        Err(Error::Data { msg, .. }) => {
            let lower = msg.to_lowercase();
            for n in needles {
                assert!(
                    lower.contains(&n.to_lowercase()),
                    "message {msg:?} does not mention {n:?}"
                );
            }
            msg
        }
        other => panic!("expected Error::Data mentioning {needles:?}, got {other:?}"),
    }
}

const MEM: &str = "<memory>";

fn parse(bytes: &[u8]) -> wgcnn::Result<IdxArray> {
    parse_idx(bytes, Path::new(MEM))
}

/// Writes a small MNIST-format directory: `n_train`/`n_test` images of 2×3 and the
/// given number of labels per split.
fn write_mnist_dir(dir: &Path, n_img: (u32, u32), n_lbl: (u32, u32), gz: bool) {
    let files = [
        ("train-images-idx3-ubyte", vec![n_img.0, 2, 3]),
        ("train-labels-idx1-ubyte", vec![n_lbl.0]),
        ("t10k-images-idx3-ubyte", vec![n_img.1, 2, 3]),
        ("t10k-labels-idx1-ubyte", vec![n_lbl.1]),
    ];
    for (name, dims) in files {
        let len: u32 = dims.iter().product();
        let data: Vec<u8> = (0..len).map(|i| (i % 10) as u8).collect();
        let bytes = idx_bytes(&dims, &data);
        let (name, bytes) = if gz {
            (format!("{name}.gz"), gzip(&bytes))
        } else {
            (name.to_string(), bytes)
        };
        std::fs::write(dir.join(name), bytes).expect("write idx");
    }
}

fn toy_dataset(n: usize) -> Dataset {
    let images: Vec<u8> = (0..n * 4).map(|i| (i % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    Dataset::new("toy", images, labels, 2, 2, 10).expect("toy dataset")
}

// ---- IDX: well-formed input ------------------------------------------------

#[test]
fn idx_parses_raw_and_gzip_identically() {
    let data: Vec<u8> = (0..24).collect();
    let raw = idx_bytes(&[2, 3, 4], &data);
    let a = parse(&raw).expect("raw parses");
    assert_eq!(a.dims, vec![2, 3, 4]);
    assert_eq!(a.data, data);
    let b = parse(&gzip(&raw)).expect("gzip parses");
    assert_eq!(a, b);
}

#[test]
fn idx_supports_one_to_four_dims() {
    for dims in [vec![5u32], vec![1, 5], vec![1, 1, 5], vec![1, 1, 1, 5]] {
        let a = parse(&idx_bytes(&dims, &[9; 5])).expect("parses");
        assert_eq!(a.dims.len(), dims.len());
        assert_eq!(a.data, vec![9; 5]);
    }
}

#[test]
fn read_idx_detects_gzip_by_content_not_name() {
    let dir = scratch_dir("gzip-by-content");
    let raw = idx_bytes(&[3], &[7, 8, 9]);
    // gzip content under a plain name, raw content under a .gz name
    std::fs::write(dir.join("plain-name"), gzip(&raw)).expect("write");
    std::fs::write(dir.join("fake.gz"), &raw).expect("write");
    for name in ["plain-name", "fake.gz"] {
        let a = read_idx(&dir.join(name)).expect("reads");
        assert_eq!(a.dims, vec![3]);
        assert_eq!(a.data, vec![7, 8, 9]);
    }
}

#[test]
fn read_idx_missing_file_is_io_error() {
    let r = read_idx(Path::new("/definitely/not/here.idx"));
    assert!(matches!(r, Err(Error::Io { .. })), "got {r:?}");
}

// ---- IDX: hostile input ------------------------------------------------------

#[test]
fn idx_bad_magic() {
    let mut b = idx_bytes(&[3], &[1, 2, 3]);
    b[0] = 0x12;
    expect_data_err(parse(&b), &["magic"]);
    let mut b = idx_bytes(&[3], &[1, 2, 3]);
    b[1] = 0x01;
    expect_data_err(parse(&b), &["magic"]);
}

#[test]
fn idx_unsupported_type_is_named() {
    let mut b = idx_bytes(&[1], &[0, 0, 0, 0]);
    b[2] = 0x0D; // f32
    expect_data_err(parse(&b), &["0x0d", "f32"]);
    b[2] = 0x42;
    expect_data_err(parse(&b), &["0x42"]);
}

#[test]
fn idx_wrong_ndims() {
    let b = [0u8, 0, 8, 0];
    expect_data_err(parse(&b), &["dimensions", "0"]);
    let b = idx_bytes(&[1, 1, 1, 1, 1], &[1]);
    expect_data_err(parse(&b), &["dimensions", "5"]);
}

#[test]
fn idx_truncated_header() {
    expect_data_err(parse(&[]), &["truncated"]);
    expect_data_err(parse(&[0, 0, 8]), &["truncated", "got 3"]);
    // ndims = 3 but only one dimension present
    expect_data_err(
        parse(&[0, 0, 8, 3, 0, 0, 0, 1]),
        &["truncated", "12", "got 4"],
    );
}

#[test]
fn idx_truncated_payload_says_expected_and_got() {
    let mut b = idx_bytes(&[4, 5], &[1; 20]);
    b.truncate(b.len() - 3);
    let msg = expect_data_err(parse(&b), &["truncated", "20", "17"]);
    assert!(!msg.contains("trailing"), "{msg}");
    // the same through gzip
    expect_data_err(parse(&gzip(&b)), &["truncated", "20", "17"]);
}

#[test]
fn idx_trailing_bytes_rejected() {
    let mut b = idx_bytes(&[4], &[1; 4]);
    b.extend_from_slice(&[0, 0]);
    expect_data_err(parse(&b), &["trailing", "4", "6"]);
    expect_data_err(parse(&gzip(&b)), &["trailing", "4"]);
}

#[test]
fn idx_truncated_gzip_stream() {
    let g = gzip(&idx_bytes(&[64], &[3; 64]));
    let cut = &g[..g.len() / 2];
    let r = parse(cut);
    assert!(matches!(r, Err(Error::Data { .. })), "got {r:?}");
}

#[test]
fn idx_huge_header_rejected_without_allocating() {
    // 0xFFFFFFFF^3 bytes: overflow-free check must reject before reading anything
    let b = idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[]);
    expect_data_err(parse(&b), &["maximum"]);
    // just over the cap
    let over = u32::try_from(MAX_PAYLOAD_BYTES >> 16).expect("fits") + 1;
    let b = idx_bytes(&[1 << 16, over], &[1, 2, 3]);
    expect_data_err(parse(&b), &["maximum", &MAX_PAYLOAD_BYTES.to_string()]);
    // exactly at a plausible but large size with almost no data: truncated error,
    // and it returns promptly (the reader only holds what was actually there)
    let b = idx_bytes(&[1 << 16, 1 << 14], &[1, 2, 3]);
    expect_data_err(
        parse(&b),
        &["truncated", &(1u64 << 30).to_string(), "got 3"],
    );
    // the same lie inside gzip (the size is not known up front)
    expect_data_err(parse(&gzip(&b)), &["truncated", "got 3"]);
}

#[test]
fn idx_error_names_the_file() {
    let dir = scratch_dir("error-names-file");
    let p = dir.join("broken-idx");
    std::fs::write(&p, [9u8, 9, 9, 9]).expect("write");
    match read_idx(&p) {
        Err(e @ Error::Data { .. }) => {
            assert!(e.to_string().contains("broken-idx"), "{e}");
        }
        other => panic!("expected data error, got {other:?}"),
    }
}

// ---- directories -------------------------------------------------------------

#[test]
fn load_dir_raw_and_gz() {
    for gz in [false, true] {
        let dir = scratch_dir(if gz { "dir-gz" } else { "dir-raw" });
        write_mnist_dir(&dir, (5, 3), (5, 3), gz);
        let pair = load_mnist_dir(&dir, "fashion-mnist").expect("loads");
        assert_eq!((pair.train.n, pair.train.rows, pair.train.cols), (5, 2, 3));
        assert_eq!(pair.test.n, 3);
        assert_eq!(pair.train.images.len(), 30);
        assert_eq!(pair.train.labels, vec![0, 1, 2, 3, 4]);
        assert_eq!(pair.train.name, "fashion-mnist");
        assert_eq!(pair.train.class_names()[0], "T-shirt/top");
    }
}

#[test]
fn load_dir_count_mismatch() {
    let dir = scratch_dir("count-mismatch");
    write_mnist_dir(&dir, (5, 3), (4, 3), false);
    expect_data_err(load_mnist_dir(&dir, "mnist"), &["4 labels", "5 images"]);
}

#[test]
fn load_dir_missing_directory_is_named() {
    let dir = Path::new("/no/such/wgcnn/dataset-dir");
    let r = load_mnist_dir(dir, "mnist");
    match r {
        Err(e @ Error::Data { .. }) => {
            let s = e.to_string();
            assert!(s.contains("/no/such/wgcnn/dataset-dir"), "{s}");
            assert!(s.contains("does not exist"), "{s}");
        }
        other => panic!("expected data error, got {other:?}"),
    }
}

#[test]
fn load_dir_missing_file_lists_names_tried() {
    let dir = scratch_dir("missing-file");
    write_mnist_dir(&dir, (2, 2), (2, 2), false);
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).expect("rm");
    expect_data_err(
        load_mnist_dir(&dir, "mnist"),
        &["t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz"],
    );
}

#[test]
fn load_dir_rejects_wrong_rank_and_bad_labels() {
    let dir = scratch_dir("wrong-rank");
    write_mnist_dir(&dir, (2, 2), (2, 2), false);
    // labels file with 2 dimensions
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_bytes(&[2, 1], &[0, 1]),
    )
    .expect("write");
    expect_data_err(load_mnist_dir(&dir, "mnist"), &["1 dimension", "found 2"]);
    // images file with 2 dimensions
    write_mnist_dir(&dir, (2, 2), (2, 2), false);
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        idx_bytes(&[2, 6], &[0; 12]),
    )
    .expect("write");
    expect_data_err(load_mnist_dir(&dir, "mnist"), &["3 dimensions", "found 2"]);
    // label 10 out of range
    write_mnist_dir(&dir, (2, 2), (2, 2), false);
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[2], &[3, 10]),
    )
    .expect("write");
    expect_data_err(load_mnist_dir(&dir, "mnist"), &["label 10", "index 1"]);
}

#[test]
fn embedded_subset_loads_with_known_counts() {
    let pair = load_mnist_dir(&embedded_mnist_subset_dir(), "mnist").expect("subset loads");
    let (train, test) = (&pair.train, &pair.test);
    assert_eq!((train.n, train.rows, train.cols), (8000, 28, 28));
    assert_eq!((test.n, test.rows, test.cols), (2000, 28, 28));
    assert_eq!(train.images.len(), 8000 * 784);
    assert_eq!(test.labels.len(), 2000);
    assert_eq!(train.classes, 10);
    assert_eq!(
        test.class_counts(),
        vec![211, 211, 191, 215, 201, 178, 220, 191, 187, 195]
    );
    assert_eq!(train.class_counts().iter().sum::<usize>(), 8000);
    // real digits: not blank, full byte range used
    assert_eq!(train.images.iter().max(), Some(&255));
    let mean = train.images.iter().map(|&b| f64::from(b)).sum::<f64>() / train.images.len() as f64;
    assert!((20.0..50.0).contains(&mean), "mean pixel {mean}");
}

#[test]
fn system_fashion_mnist_if_installed() {
    let Some(dir) = wgcnn::data::fashion_mnist_system_dir() else {
        eprintln!("fashion-mnist not installed; skipping");
        return;
    };
    let pair = load_mnist_dir(&dir, "fashion-mnist").expect("fashion loads");
    assert_eq!((pair.train.n, pair.test.n), (60000, 10000));
    assert_eq!(pair.test.class_counts(), vec![1000; 10]);
}

#[test]
fn class_names_for_both_datasets() {
    assert_eq!(class_names("fashion-mnist")[9], "Ankle boot");
    assert_eq!(
        class_names("mnist"),
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    );
}

#[test]
fn truncate_keeps_prefix() {
    let mut ds = toy_dataset(10);
    let first = ds.image(0).to_vec();
    ds.truncate(3);
    assert_eq!((ds.n, ds.images.len(), ds.labels.len()), (3, 12, 3));
    assert_eq!(ds.image(0), first.as_slice());
    ds.truncate(50);
    assert_eq!(ds.n, 3);
}

#[test]
fn dataset_new_validates() {
    assert!(Dataset::new("x", vec![0; 7], vec![0, 0], 2, 2, 10).is_err());
    assert!(Dataset::new("x", vec![0; 4], vec![10], 2, 2, 10).is_err());
    assert!(Dataset::new("x", vec![], vec![], 0, 2, 10).is_err());
}

// ---- loader ----------------------------------------------------------------

#[test]
fn loader_visits_every_index_once_per_epoch() {
    let ds = toy_dataset(103);
    let loader = Loader::new(&ds, 10, true, 1234, Normalize::default()).expect("loader");
    assert_eq!(loader.num_batches(), 11);
    for epoch in 0..3 {
        let batches: Vec<_> = loader
            .epoch(epoch)
            .collect::<Result<_, _>>()
            .expect("batches");
        assert_eq!(batches.len(), 11);
        let mut seen = HashSet::new();
        for b in &batches {
            for &i in &b.indices {
                assert!(seen.insert(i), "index {i} twice in epoch {epoch}");
            }
        }
        assert_eq!(seen.len(), 103);
        assert!(seen.iter().all(|&i| i < 103));
    }
}

#[test]
fn loader_partial_last_batch() {
    let ds = toy_dataset(23);
    let loader = Loader::new(&ds, 8, false, 0, Normalize::default()).expect("loader");
    let sizes: Vec<usize> = loader.epoch(0).map(|b| b.expect("batch").len()).collect();
    assert_eq!(sizes, vec![8, 8, 7]);
    let last = loader.epoch(0).last().expect("batches").expect("batch");
    assert_eq!(last.images.shape(), &[7, 1, 2, 2]);
    assert_eq!(last.indices, (16..23).collect::<Vec<_>>());
    assert_eq!(loader.epoch(0).len(), 3);
}

#[test]
fn loader_epoch_orders_differ_and_seed_reproduces() {
    let ds = toy_dataset(200);
    let a = Loader::new(&ds, 16, true, 7, Normalize::default()).expect("loader");
    let b = Loader::new(&ds, 16, true, 7, Normalize::default()).expect("loader");
    let c = Loader::new(&ds, 16, true, 8, Normalize::default()).expect("loader");
    let order = |l: &Loader, e| -> Vec<usize> {
        l.epoch(e).flat_map(|x| x.expect("batch").indices).collect()
    };
    assert_eq!(order(&a, 0), order(&b, 0));
    assert_eq!(order(&a, 5), order(&b, 5));
    assert_ne!(order(&a, 0), order(&a, 1));
    assert_ne!(order(&a, 0), order(&c, 0));
    assert_ne!(order(&a, 0), (0..200).collect::<Vec<_>>());
    // epoch e does not depend on having iterated earlier epochs
    let _ = order(&b, 0);
    assert_eq!(order(&a, 3), order(&b, 3));
    // unshuffled is the identity every epoch
    let d = Loader::new(&ds, 16, false, 7, Normalize::default()).expect("loader");
    assert_eq!(order(&d, 9), (0..200).collect::<Vec<_>>());
}

#[test]
fn loader_normalization_and_labels() {
    let ds = Dataset::new("toy", vec![0, 255, 51, 102], vec![3, 9], 1, 2, 10).expect("ds");
    let norm = Normalize {
        scale: 1.0 / 255.0,
        mean: 0.5,
        std: 0.25,
    };
    let loader = Loader::new(&ds, 4, false, 0, norm).expect("loader");
    let b = loader.epoch(0).next().expect("batch").expect("built");
    let got: Vec<f32> = b.images.iter().copied().collect();
    let want: Vec<f32> = [0.0f32, 255.0, 51.0, 102.0]
        .iter()
        .map(|&x| (x / 255.0 - 0.5) / 0.25)
        .collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
    }
    assert!((got[0] + 2.0).abs() < 1e-6 && (got[1] - 2.0).abs() < 1e-5);
    assert_eq!(b.labels, vec![3, 9]);

    let d = Loader::new(&ds, 4, false, 0, Normalize::default()).expect("loader");
    let b = d.epoch(0).next().expect("batch").expect("built");
    assert_eq!(b.images[[0, 0, 0, 0]], 0.0);
    assert!((b.images[[0, 0, 0, 1]] - 1.0).abs() < 1e-6);
    assert!((b.images[[1, 0, 0, 0]] - 0.2).abs() < 1e-6);
}

#[test]
fn loader_batch_matches_dataset_pixels() {
    let ds = toy_dataset(30);
    let loader = Loader::new(&ds, 7, true, 99, Normalize::default()).expect("loader");
    for b in loader.epoch(2) {
        let b = b.expect("batch");
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[k], u32::from(ds.labels[i]));
            for (p, &byte) in ds.image(i).iter().enumerate() {
                let v = b.images[[k, 0, p / 2, p % 2]];
                assert!((v - f32::from(byte) / 255.0).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn loader_fill_matches_batches() {
    let ds = toy_dataset(11);
    let loader = Loader::new(&ds, 4, true, 3, Normalize::mnist()).expect("loader");
    let mut x = [0.0f32; 4 * 4];
    let mut y = [0u32; 4];
    let epoch = loader.epoch(1);
    let batches: Vec<_> = loader.epoch(1).collect::<Result<_, _>>().expect("batches");
    for (idx, b) in epoch.batch_indices().zip(&batches) {
        let n = idx.len();
        loader
            .fill(idx, &mut x[..n * 4], &mut y[..n])
            .expect("fill");
        assert_eq!(b.images.as_slice().expect("contiguous"), &x[..n * 4]);
        assert_eq!(b.labels, &y[..n]);
    }
    // wrong buffer size and bad index are errors
    assert!(loader.fill(&[0, 1], &mut x[..7], &mut y[..2]).is_err());
    assert!(loader.fill(&[11], &mut x[..4], &mut y[..1]).is_err());
}

#[test]
fn loader_rejects_zero_batch_and_bad_norm() {
    let ds = toy_dataset(4);
    assert!(matches!(
        Loader::new(&ds, 0, false, 0, Normalize::default()),
        Err(Error::InvalidArgument { .. })
    ));
    let bad = Normalize {
        std: 0.0,
        ..Normalize::default()
    };
    assert!(matches!(
        Loader::new(&ds, 2, false, 0, bad),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn loader_on_embedded_subset() {
    let pair = load_mnist_dir(&embedded_mnist_subset_dir(), "mnist").expect("subset");
    let loader = Loader::new(&pair.train, 128, true, 0, Normalize::mnist()).expect("loader");
    assert_eq!(loader.num_batches(), 63);
    let mut count = 0;
    let mut label_counts = [0usize; 10];
    for b in loader.epoch(0) {
        let b = b.expect("batch");
        count += b.len();
        for &l in &b.labels {
            label_counts[l as usize] += 1;
        }
        assert!(b.images.iter().all(|v| v.is_finite()));
    }
    assert_eq!(count, 8000);
    assert_eq!(label_counts.to_vec(), pair.train.class_counts());
}
