//! Loader options (issue 14 item 6): `drop_last`, flattened batches, CSV datasets (the
//! Kaggle MNIST layout) validated like IDX, and a batch-norm model whose trailing batch of 1
//! is refused with an error pointing at `drop_last`.

mod common;

use std::path::{Path, PathBuf};

use wgcnn::data::{read_csv, Dataset, Loader, Normalize};
use wgcnn::exec::Executor;
use wgcnn::nn::{BatchNorm1d, Flatten, Linear, Sequential};
use wgcnn::{train, Backend, Error, Optimizer};

fn toy(n: usize) -> Dataset {
    let images = (0..n * 4).map(|i| (i * 13 % 256) as u8).collect();
    let labels = (0..n).map(|i| (i % 3) as u8).collect();
    Dataset::new("toy", images, labels, 2, 2, 3).unwrap()
}

fn sizes(l: &Loader, epoch: u64) -> Vec<usize> {
    l.epoch(epoch).map(|b| b.unwrap().len()).collect()
}

#[test]
fn drop_last_drops_only_the_partial_batch() {
    let ds = toy(9);
    let keep = Loader::new(&ds, 4, true, 5, Normalize::default()).unwrap();
    let drop = Loader::new(&ds, 4, true, 5, Normalize::default())
        .unwrap()
        .drop_last(true);
    assert_eq!((keep.num_batches(), drop.num_batches()), (3, 2));
    assert_eq!(sizes(&keep, 1), [4, 4, 1]);
    assert_eq!(sizes(&drop, 1), [4, 4]);
    assert_eq!(drop.epoch(1).batch_indices().count(), 2);
    // the same shuffled order, its last example dropped
    let kept: Vec<usize> = keep.epoch(1).flat_map(|b| b.unwrap().indices).collect();
    let dropped: Vec<usize> = drop.epoch(1).flat_map(|b| b.unwrap().indices).collect();
    assert_eq!(&kept[..8], dropped.as_slice());
    // smaller than a batch: an empty epoch
    let tiny = Loader::new(&toy(3), 4, false, 0, Normalize::default())
        .unwrap()
        .drop_last(true);
    assert_eq!((tiny.num_batches(), sizes(&tiny, 0).len()), (0, 0));
}

#[test]
fn batches_flatten_to_rows() {
    let loader = Loader::new(&toy(5), 2, false, 0, Normalize::default()).unwrap();
    let b = loader.epoch(0).next().unwrap().unwrap();
    let f = b.flat().unwrap();
    assert_eq!(f.dim(), (2, 4));
    assert_eq!(
        f.iter().copied().collect::<Vec<_>>(),
        b.images.iter().copied().collect::<Vec<_>>()
    );
}

#[test]
fn a_trailing_batch_of_one_under_batch_norm_points_at_drop_last() {
    let g = Sequential::new(&[1, 2, 2])
        .add("flat", Flatten)
        .add("fc", Linear::new(4, 6))
        .add("bn", BatchNorm1d::new(6))
        .add("out", Linear::new(6, 3))
        .cross_entropy()
        .unwrap();
    let ds = toy(9);
    let mut ex = Executor::new(&Backend::cpu(), &g, 4, Optimizer::sgd(0.1), 0).unwrap();
    let loader = Loader::new(&ds, 4, true, 1, Normalize::default()).unwrap();
    let e = train::train_epoch(&mut ex, &loader, 0, 0, 0, |_, _| true).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(
        e.to_string().contains("bn") && e.to_string().contains("drop_last"),
        "{e}"
    );
    let loader = loader.drop_last(true);
    let s = train::train_epoch(&mut ex, &loader, 0, 0, 0, |_, _| true).unwrap();
    assert_eq!((s.steps, s.images, s.completed), (2, 8, true));
}

fn csv(name: &str, text: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loader-options");
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn csv_datasets_read_exactly() {
    let p = csv(
        "ok.csv",
        "label,pixel0,pixel1,pixel2,pixel3\n2,0,10,20,255\n\n0, 1, 2, 3, 4\n",
    );
    let ds = read_csv(&p, "kaggle", 2, 2, 3).unwrap();
    assert_eq!((ds.n, ds.rows, ds.cols, ds.classes), (2, 2, 2, 3));
    assert_eq!(ds.labels, [2, 0]);
    assert_eq!(ds.images, [0, 10, 20, 255, 1, 2, 3, 4]);
    // no header works too
    let p = csv("noheader.csv", "1,0,0,0,0\n");
    assert_eq!(read_csv(&p, "k", 2, 2, 3).unwrap().labels, [1]);
}

#[test]
fn every_csv_problem_is_a_data_error_naming_file_and_line() {
    for (file, text, needle) in [
        (
            "fields.csv",
            "label,a,b,c,d\n1,0,0,0\n",
            "line 2: expected 5 fields",
        ),
        (
            "label.csv",
            "1,0,0,0,0\nx,0,0,0,0\n",
            "line 2: label 'x' is not a whole number",
        ),
        (
            "range.csv",
            "5,0,0,0,0\n",
            "line 1: label 5 is out of range for 3 classes",
        ),
        (
            "pixel.csv",
            "1,0,256,0,0\n",
            "line 1: field 3: '256' is not a pixel value",
        ),
        ("float.csv", "1,0,0.5,0,0\n", "field 3: '0.5'"),
        ("empty.csv", "label,a,b,c,d\n", "no images"),
    ] {
        let p = csv(file, text);
        let e = read_csv(&p, "k", 2, 2, 3).unwrap_err();
        assert!(
            matches!(&e, Error::Data { path, .. } if path.ends_with(file)),
            "{e}"
        );
        assert!(e.to_string().contains(needle), "{file}: {e}");
    }
    let e = read_csv(Path::new("/no/such.csv"), "k", 2, 2, 3).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}
