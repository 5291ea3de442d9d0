//! Where the images come from: an in-memory dataset (CIFAR binary files, NumPy arrays) or
//! image folders decoded on worker threads as the batches are needed.

use std::path::{Path, PathBuf};

use wgcnn::data::{self, ChannelNormalize, DatasetPair, FolderOptions, ImageFolder, NpyOptions};
use wgcnn::ops::augment::Augmentation;
use wgcnn::train::ByteBatch;
use wgcnn::Backend;

use super::{Args, Res};

/// The training and test images of a run, with the per-channel normalisation measured on
/// the training images.
pub struct Source {
    kind: Kind,
    name: String,
    norm: ChannelNormalize,
}

enum Kind {
    Memory(DatasetPair),
    Folders {
        train: ImageFolder,
        test: ImageFolder,
    },
}

type Batches<'a> = Box<dyn Iterator<Item = wgcnn::Result<ByteBatch>> + 'a>;

impl Source {
    pub fn open(args: &Args) -> Res<Source> {
        let (kind, name) = if let Some(root) = &args.image_folder {
            (folders(root, args)?, root.display().to_string())
        } else {
            let (pair, name) = match (&args.data, &args.npz) {
                (Some(d), _) => (data::load_cifar(d)?, d.display().to_string()),
                (_, Some(f)) => {
                    let name = f.display().to_string();
                    (data::load_npz(f, &name, &NpyOptions::default())?, name)
                }
                _ => unreachable!("checked by check_args"),
            };
            let mut pair = pair;
            if let Some(n) = args.train_limit {
                pair.train.truncate(n);
            }
            if let Some(n) = args.test_limit {
                pair.test.truncate(n);
            }
            (Kind::Memory(pair), name)
        };
        let mut s = Source {
            kind,
            name,
            norm: ChannelNormalize::new(1.0 / 255.0, vec![0.0], vec![1.0]),
        };
        s.norm = s.measure_normalization()?;
        Ok(s)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn classes(&self) -> &[String] {
        match &self.kind {
            Kind::Memory(p) => &p.train.names,
            Kind::Folders { train, .. } => train.classes(),
        }
    }

    pub fn train_len(&self) -> usize {
        match &self.kind {
            Kind::Memory(p) => p.train.n,
            Kind::Folders { train, .. } => train.len(),
        }
    }

    pub fn test_len(&self) -> usize {
        match &self.kind {
            Kind::Memory(p) => p.test.n,
            Kind::Folders { test, .. } => test.len(),
        }
    }

    /// `[C, H, W]` of every image.
    pub fn shape(&self) -> [usize; 3] {
        match &self.kind {
            Kind::Memory(p) => p.train.image_shape(),
            Kind::Folders { train, .. } => {
                let (h, w) = train.image_dims();
                [train.channels(), h, w]
            }
        }
    }

    /// The model's input must be these images.
    pub fn check_shape(&self, want: &[usize]) -> Res<()> {
        let have = self.shape();
        if have[..] != *want {
            return Err(format!(
                "the model takes {want:?} images, {} has {have:?} (image folders: --image-size 32 32; 1-channel data: write it as 3 channels)",
                self.name
            )
            .into());
        }
        Ok(())
    }

    pub fn normalization(&self) -> ChannelNormalize {
        self.norm.clone()
    }

    pub fn describe(&self) {
        let what = match self.kind {
            Kind::Memory(_) => "in memory",
            Kind::Folders { .. } => "image folders, decoded on worker threads",
        };
        println!(
            "data:    {} ({what}): {} train / {} test images {:?}, {} classes; mean {:?} std {:?}",
            self.name,
            self.train_len(),
            self.test_len(),
            self.shape(),
            self.classes().len(),
            self.norm.mean,
            self.norm.std
        );
        if let Kind::Folders { train, .. } = &self.kind {
            println!("classes: {}", train.classes().join(", "));
        }
    }

    /// FNV-1a of the training labels (what a resume checks).
    pub fn labels_hash(&self) -> String {
        match &self.kind {
            Kind::Memory(p) => wgcnn::train::fnv1a_hex(&p.train.labels),
            Kind::Folders { train, .. } => {
                let labels: Vec<u8> = (0..train.len())
                    .filter_map(|i| train.file(i).map(|f| f.1))
                    .collect();
                wgcnn::train::fnv1a_hex(&labels)
            }
        }
    }

    /// The training batches of `epoch` (shuffled from `seed`) from batch `first` on.
    pub fn train_batches(&self, bs: usize, seed: u64, epoch: u64, first: usize) -> Batches<'_> {
        match &self.kind {
            Kind::Memory(p) => Box::new(wgcnn::train::dataset_byte_batches(
                &p.train,
                bs,
                (true, seed, epoch),
                first,
            )),
            Kind::Folders { train, .. } => {
                let mut order = data::epoch_order(train.len(), true, seed, epoch);
                order.drain(..(first * bs).min(order.len()));
                folder_batches(train, order, bs)
            }
        }
    }

    /// The test batches in order.
    pub fn test_batches(&self, bs: usize) -> Batches<'_> {
        match &self.kind {
            Kind::Memory(p) => Box::new(wgcnn::train::dataset_byte_batches(
                &p.test,
                bs,
                (false, 0, 0),
                0,
            )),
            Kind::Folders { test, .. } => folder_batches(test, (0..test.len()).collect(), bs),
        }
    }

    /// Per-channel mean and standard deviation of up to 10,000 training images.
    fn measure_normalization(&self) -> Res<ChannelNormalize> {
        let [c, h, w] = self.shape();
        let (mut sum, mut sq, mut count) = (vec![0f64; c], vec![0f64; c], 0usize);
        for b in self
            .train_batches(256, 0, 0, 0)
            .take(10_000usize.div_ceil(256))
        {
            let b = b?;
            for (i, &v) in b.images.iter().enumerate() {
                let k = (i / (h * w)) % c;
                let x = f64::from(v) / 255.0;
                sum[k] += x;
                sq[k] += x * x;
            }
            count += b.labels.len() * h * w;
        }
        let n = count.max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std: Vec<f32> = sq
            .iter()
            .zip(&sum)
            .map(|(q, s)| ((q / n - (s / n).powi(2)).max(1e-6)).sqrt() as f32)
            .collect();
        Ok(ChannelNormalize::new(1.0 / 255.0, mean, std))
    }
}

/// `root/train` + `root/test`, or `root` split by `--val-split`.
fn folders(root: &Path, args: &Args) -> Res<Kind> {
    let opts = FolderOptions {
        size: args.image_size.as_ref().map(|s| (s[0], s[1])),
        skip_bad: args.skip_bad,
        ..FolderOptions::default()
    };
    let (tr, te) = (root.join("train"), root.join("test"));
    let (train, test) = if tr.is_dir() && te.is_dir() {
        let train = ImageFolder::open(&tr, &opts)?;
        let test_opts = FolderOptions {
            channels: Some(train.channels()),
            size: Some(train.image_dims()),
            ..opts
        };
        (train, ImageFolder::open(&te, &test_opts)?)
    } else if let Some(f) = args.val_split {
        ImageFolder::open(root, &opts)?.split(f)?
    } else {
        return Err(format!(
            "{} has no train/ and test/ folders: give --val-split F to hold out a fraction of each class",
            root.display()
        )
        .into());
    };
    if train.classes() != test.classes() {
        return Err(format!(
            "{}: train/ and test/ have different classes",
            root.display()
        )
        .into());
    }
    Ok(Kind::Folders { train, test })
}

/// Decoded batches of `folder` in `order`, as byte batches.
fn folder_batches(folder: &ImageFolder, order: Vec<usize>, bs: usize) -> Batches<'_> {
    Box::new(folder.batches(order, bs).map(|b| {
        let b = b?;
        Ok(ByteBatch {
            images: b.images,
            labels: b.labels.iter().map(|&l| u32::from(l)).collect(),
            indices: b.indices.iter().map(|&i| i as u32).collect(),
        })
    }))
}

/// `augmented.png`: the first 32 training images as the training step sees them (the
/// device kernel's CPU twin, epoch 0), 8 per row, enlarged 3×.
pub fn augmented_grid(dir: &Path, src: &Source, aug: &Augmentation, seed: u64) -> Res<PathBuf> {
    let Some(b) = src.train_batches(32, seed, 0, 0).next() else {
        return Err("no training images to show".into());
    };
    let b = b?;
    let [c, h, w] = src.shape();
    let n = b.labels.len();
    // the identity "normalisation" returns the bytes as floats
    let id = vec![
        data::Normalize {
            scale: 1.0,
            mean: 0.0,
            std: 1.0
        };
        c
    ];
    let x = Backend::cpu().augment(&b.images, [n, c, h, w], &b.indices, &id, *aug, seed, 0)?;
    let (zoom, gap, cols) = (3u32, 4u32, 8u32);
    let rows = (n as u32).div_ceil(cols);
    let (tw, th) = (w as u32 * zoom + gap, h as u32 * zoom + gap);
    let mut img = image::RgbImage::from_pixel(
        cols * tw + gap,
        rows * th + gap,
        image::Rgb([255, 255, 255]),
    );
    for k in 0..n {
        let (ox, oy) = (gap + (k as u32 % cols) * tw, gap + (k as u32 / cols) * th);
        for (px, py, p) in image::RgbImage::from_fn(w as u32 * zoom, h as u32 * zoom, |px, py| {
            let (i, j) = ((py / zoom) as usize, (px / zoom) as usize);
            let v = |ch: usize| x[[k, ch.min(c - 1), i, j]] as u8;
            image::Rgb([v(0), v(1), v(2)])
        })
        .enumerate_pixels()
        {
            img.put_pixel(ox + px, oy + py, *p);
        }
    }
    let path = dir.join("augmented.png");
    img.save(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
