//! Image folders (issue 13 items 1 and 6): the bundled MNIST subset written as PNGs at test
//! time loads back equal to the IDX files (and trains to bitwise-equal parameters), grey,
//! RGB, RGBA, BMP and JPEG files, sizes, bad files, splits, and streamed batches in a
//! loader's order.

use std::path::{Path, PathBuf};

use image::{GrayImage, Rgb, RgbImage, Rgba, RgbaImage};
use wgcnn::data::{
    self, load_image_folders, ChannelNormalize, Dataset, Fit, FolderOptions, ImageFolder, Loader,
    Normalize,
};
use wgcnn::exec::Executor;
use wgcnn::{nn, train, Backend, Error, Optimizer};

/// A fresh, empty scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("folder-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Writes `ds` as `dir/<label>/<index:05>.png` (grey, 8-bit).
fn write_pngs(ds: &Dataset, dir: &Path) {
    for i in 0..ds.n {
        let class = dir.join(ds.labels[i].to_string());
        std::fs::create_dir_all(&class).unwrap();
        let img =
            GrayImage::from_raw(ds.cols as u32, ds.rows as u32, ds.image(i).to_vec()).unwrap();
        img.save(class.join(format!("{i:05}.png"))).unwrap();
    }
}

/// `ds` reordered as the folder lists it: by label, then by original index.
fn by_class(ds: &Dataset) -> Dataset {
    let mut order: Vec<usize> = (0..ds.n).collect();
    order.sort_by_key(|&i| ds.labels[i]);
    let images = order.iter().flat_map(|&i| ds.image(i).to_vec()).collect();
    let labels = order.iter().map(|&i| ds.labels[i]).collect();
    Dataset::new(
        ds.name.clone(),
        images,
        labels,
        ds.rows,
        ds.cols,
        ds.classes,
    )
    .unwrap()
}

/// One epoch of LeNet-5 on the CPU path over the first 512 examples; the parameters.
fn train_params(ds: &Dataset) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    let mut ds = ds.clone();
    ds.truncate(512);
    let loader = Loader::new(&ds, 64, true, 3, Normalize::mnist()).unwrap();
    let graph = nn::lenet5().unwrap();
    let mut ex = Executor::new(
        &Backend::cpu(),
        &graph,
        64,
        Optimizer::momentum(0.05, 0.9),
        1,
    )
    .unwrap();
    let stats = train::train_epoch(&mut ex, &loader, 0, 0, 0, |_, _| true).unwrap();
    assert_eq!(stats.steps, 8);
    ex.parameters()
        .unwrap()
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn mnist_subset_as_png_folder_equals_the_idx_files_and_trains_identically() {
    let idx = data::load_mnist_dir(&data::embedded_mnist_subset_dir(), "mnist").unwrap();
    let root = scratch("mnist");
    write_pngs(&idx.train, &root.join("train"));
    write_pngs(&idx.test, &root.join("test"));
    let opts = FolderOptions {
        workers: 2,
        ..FolderOptions::default()
    };
    let pair = load_image_folders(&root, "mnist", &opts).unwrap();
    for (got, want) in [
        (&pair.train, by_class(&idx.train)),
        (&pair.test, by_class(&idx.test)),
    ] {
        assert_eq!(
            (got.n, got.image_shape(), got.classes),
            (want.n, [1, 28, 28], 10)
        );
        assert_eq!(got.labels, want.labels);
        assert!(
            got.images == want.images,
            "decoded pixels differ from the IDX bytes"
        );
        assert_eq!(got.names, want.names); // "0".."9" both ways
        assert_eq!(got, &want);
    }
    let (a, b) = (
        train_params(&pair.train),
        train_params(&by_class(&idx.train)),
    );
    assert!(!a.is_empty());
    assert_eq!(
        a, b,
        "parameters trained from the PNG folder differ from the IDX ones"
    );
}

/// `root/<class>/<name>` with `img`.
fn save(root: &Path, class: &str, name: &str, img: impl FnOnce(&Path)) {
    let dir = root.join(class);
    std::fs::create_dir_all(&dir).unwrap();
    img(&dir.join(name));
}

#[test]
fn grey_rgb_rgba_bmp_and_jpeg_with_channel_choice() {
    let root = scratch("colours");
    let rgba = RgbaImage::from_fn(3, 2, |x, y| Rgba([x as u8 * 10, y as u8 * 20, 7, 128]));
    save(&root, "a_rgba", "0.png", |p| rgba.save(p).unwrap());
    let rgb = RgbImage::from_fn(3, 2, |x, y| Rgb([x as u8, y as u8, 99]));
    save(&root, "b_bmp", "1.BMP", |p| {
        rgb.save_with_format(p, image::ImageFormat::Bmp).unwrap()
    });
    let grey = GrayImage::from_fn(3, 2, |x, y| image::Luma([(x + 3 * y) as u8 * 40]));
    save(&root, "c_grey", "2.png", |p| grey.save(p).unwrap());
    let flat = RgbImage::from_pixel(3, 2, Rgb([50, 100, 150]));
    save(&root, "d_jpeg", "3.jpg", |p| flat.save(p).unwrap());
    std::fs::write(root.join("d_jpeg").join("notes.txt"), "ignored").unwrap();

    let f = ImageFolder::open(&root, &FolderOptions::default()).unwrap();
    assert_eq!(f.classes(), &["a_rgba", "b_bmp", "c_grey", "d_jpeg"]);
    assert_eq!((f.len(), f.channels(), f.image_dims()), (4, 3, (2, 3)));
    // RGBA: alpha dropped, planes R, G, B
    assert_eq!(
        f.decode(0).unwrap(),
        [0, 10, 20, 0, 10, 20, 0, 0, 0, 20, 20, 20, 7, 7, 7, 7, 7, 7]
    );
    // BMP is lossless
    assert_eq!(
        f.decode(1).unwrap(),
        [0, 1, 2, 0, 1, 2, 0, 0, 0, 1, 1, 1, 99, 99, 99, 99, 99, 99]
    );
    // grey replicated into three planes
    let g: Vec<u8> = grey.as_raw().clone();
    assert_eq!(f.decode(2).unwrap(), [g.clone(), g.clone(), g].concat());
    // JPEG of a flat colour decodes close to it
    let j = f.decode(3).unwrap();
    for (c, want) in [50i32, 100, 150].into_iter().enumerate() {
        assert!(
            j[c * 6..(c + 1) * 6]
                .iter()
                .all(|&v| (i32::from(v) - want).abs() <= 3),
            "{j:?}"
        );
    }
    // one channel on request: grey stays exact
    let one = ImageFolder::open(
        &root,
        &FolderOptions {
            channels: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        (one.channels(), one.decode(2).unwrap()),
        (1, grey.as_raw().clone())
    );
    // the first file (the RGBA one) decides by default; a grey first image gives 1 channel
    let g_root = scratch("grey-first");
    save(&g_root, "x", "0.png", |p| grey.save(p).unwrap());
    save(&g_root, "y", "1.png", |p| rgb.save(p).unwrap());
    assert_eq!(
        ImageFolder::open(&g_root, &FolderOptions::default())
            .unwrap()
            .channels(),
        1
    );
    let bad = FolderOptions {
        channels: Some(2),
        ..Default::default()
    };
    assert!(matches!(
        ImageFolder::open(&g_root, &bad),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn sizes_must_agree_unless_resized_or_cropped() {
    let root = scratch("sizes");
    save(&root, "a", "0.png", |p| {
        RgbImage::from_pixel(4, 4, Rgb([1, 2, 3])).save(p).unwrap()
    });
    save(&root, "b", "1.png", |p| {
        RgbImage::from_pixel(8, 4, Rgb([9, 9, 9])).save(p).unwrap()
    });
    let e = ImageFolder::open(&root, &FolderOptions::default())
        .unwrap()
        .load("x")
        .unwrap_err();
    assert!(matches!(e, Error::Data { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("1.png") && msg.contains("4×8") && msg.contains("0.png"),
        "{msg}"
    );
    for fit in [Fit::Resize, Fit::CenterCrop] {
        let opts = FolderOptions {
            size: Some((2, 2)),
            fit,
            ..Default::default()
        };
        let ds = ImageFolder::open(&root, &opts).unwrap().load("x").unwrap();
        assert_eq!(ds.image_shape(), [3, 2, 2]);
        assert_eq!(
            ds.image(0),
            &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3],
            "{fit:?}"
        );
        assert_eq!(ds.image(1), &[9; 12], "{fit:?}");
    }
    // train/ and test/ of different sizes
    let split = scratch("sizes-split");
    save(&split.join("train"), "a", "0.png", |p| {
        RgbImage::new(4, 4).save(p).unwrap()
    });
    save(&split.join("test"), "a", "0.png", |p| {
        RgbImage::new(8, 4).save(p).unwrap()
    });
    let e = load_image_folders(&split, "x", &FolderOptions::default()).unwrap_err();
    assert!(e.to_string().contains("test images are (4, 8)"), "{e}");
}

#[test]
fn bad_files_fail_naming_them_or_are_skipped_and_reported() {
    let root = scratch("bad");
    for (class, i) in [("a", 0), ("a", 1), ("b", 2), ("b", 3)] {
        save(&root, class, &format!("{i}.png"), |p| {
            GrayImage::from_pixel(2, 2, image::Luma([i]))
                .save(p)
                .unwrap()
        });
    }
    std::fs::write(root.join("b").join("2.png"), b"not a png").unwrap();
    let e = ImageFolder::open(&root, &FolderOptions::default())
        .unwrap()
        .load("x")
        .unwrap_err();
    assert!(
        matches!(e, Error::Data { .. }) && e.to_string().contains("2.png"),
        "{e}"
    );
    let opts = FolderOptions {
        skip_bad: true,
        ..Default::default()
    };
    let f = ImageFolder::open(&root, &opts).unwrap();
    let batches: Vec<_> = f
        .batches(vec![0, 1, 2, 3], 2)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        (
            batches[0].skipped,
            batches[1].skipped,
            batches[1].indices.clone()
        ),
        (0, 1, vec![3])
    );
    let ds = f.load("x").unwrap();
    assert_eq!(
        (ds.n, ds.labels.clone(), ds.images.clone()),
        (3, vec![0, 0, 1], vec![0, 0, 0, 0, 1, 1, 1, 1, 3, 3, 3, 3])
    );
    let skipped = f.skipped();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].path.ends_with("b/2.png"));
    // an empty class directory and a missing root are errors naming them
    std::fs::create_dir_all(root.join("c_empty")).unwrap();
    let e = ImageFolder::open(&root, &opts).unwrap_err();
    assert!(e.to_string().contains("c_empty"), "{e}");
    let e = ImageFolder::open(&root.join("nope"), &opts).unwrap_err();
    assert!(
        matches!(e, Error::Data { .. }) && e.to_string().contains("nope"),
        "{e}"
    );
}

#[test]
fn streamed_batches_follow_the_loader_and_split_by_class() {
    let root = scratch("stream");
    for i in 0..23u8 {
        let class = ["p", "q", "r"][i as usize % 3];
        save(&root, class, &format!("{i:02}.png"), |p| {
            RgbImage::from_fn(2, 3, |x, y| Rgb([i, x as u8 + 10 * y as u8, 255 - i]))
                .save(p)
                .unwrap()
        });
    }
    let opts = FolderOptions {
        workers: 3,
        prefetch: 1,
        ..Default::default()
    };
    let f = ImageFolder::open(&root, &opts).unwrap();
    let ds = f.load("x").unwrap();
    let norm = ChannelNormalize::new(1.0 / 255.0, vec![0.1, 0.2, 0.3], vec![0.5, 0.6, 0.7]);
    let loader = Loader::per_channel(&ds, 5, true, 42, norm.clone()).unwrap();
    for epoch in 0..2 {
        let streamed: Vec<_> = f
            .epoch(5, true, 42, epoch)
            .map(|b| b.unwrap().normalize(&norm).unwrap())
            .collect();
        let loaded: Vec<_> = loader.epoch(epoch).map(|b| b.unwrap()).collect();
        assert_eq!(streamed, loaded, "epoch {epoch}");
    }
    // stopping early does not hang
    assert_eq!(f.epoch(2, true, 1, 0).take(1).count(), 1);
    // split: the last ~25% of each class's files
    let (train, val) = f.split(0.25).unwrap();
    assert_eq!((train.len(), val.len()), (17, 6));
    assert!(
        val.file(0).unwrap().0.ends_with("p/18.png"),
        "{:?}",
        val.file(0)
    );
    let pair = load_image_folders(
        &root,
        "x",
        &FolderOptions {
            val_split: Some(0.25),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        (pair.train.n, pair.test.n, pair.test.labels.clone()),
        (17, 6, vec![0, 0, 1, 1, 2, 2])
    );
    let e = load_image_folders(&root, "x", &FolderOptions::default()).unwrap_err();
    assert!(e.to_string().contains("train/ and test/"), "{e}");
}
