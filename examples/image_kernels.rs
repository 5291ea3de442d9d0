//! The classic image kernels of the Keras layer article (identity, three edge detectors,
//! sharpen, box blur, Gaussian blur 3×3 and 5×5) applied with the functional convolution
//! (`Backend::conv2d`, `same`-size zero padding) to bundled MNIST digits, or to your own
//! PNG, saved as one labelled grid: a row per image, a column per kernel.
//!
//! ```text
//! cargo run --release --example image_kernels                          # 3 bundled digits
//! cargo run --release --example image_kernels -- --png photo.png --out runs/kernels
//! ```

#[allow(dead_code)]
#[path = "mnist/plots.rs"]
mod plots;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use wgcnn::data::{embedded_mnist_subset_dir, load_mnist_dir};
use wgcnn::ndarray::Array4;
use wgcnn::{Backend, Conv2dParams};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Gpu,
    Cpu,
}

#[derive(Parser, Debug)]
#[command(about = "Apply the classic image kernels with wgcnn's convolution and save a grid")]
struct Args {
    #[arg(long, value_enum, default_value = "gpu")]
    backend: BackendArg,
    /// A PNG to filter (converted to grayscale) instead of the bundled digits.
    #[arg(long)]
    png: Option<PathBuf>,
    /// How many bundled test digits to filter.
    #[arg(long, default_value_t = 3)]
    digits: usize,
    /// Output directory of `kernels.png`.
    #[arg(long, default_value = "runs/kernels")]
    out: PathBuf,
}

/// `(name, size, row-major weights)` of the article's kernels.
fn kernels() -> Vec<(&'static str, usize, Vec<f32>)> {
    let g5: [f32; 5] = [1.0, 4.0, 6.0, 4.0, 1.0];
    vec![
        ("identity", 3, vec![0., 0., 0., 0., 1., 0., 0., 0., 0.]),
        (
            "edges (diagonal)",
            3,
            vec![1., 0., -1., 0., 0., 0., -1., 0., 1.],
        ),
        (
            "edges (4-neighbour)",
            3,
            vec![0., 1., 0., 1., -4., 1., 0., 1., 0.],
        ),
        (
            "edges (8-neighbour)",
            3,
            vec![-1., -1., -1., -1., 8., -1., -1., -1., -1.],
        ),
        ("sharpen", 3, vec![0., -1., 0., -1., 5., -1., 0., -1., 0.]),
        ("box blur", 3, vec![1.0 / 9.0; 9]),
        (
            "Gaussian 3×3",
            3,
            [1., 2., 1., 2., 4., 2., 1., 2., 1.]
                .map(|v| v / 16.0)
                .to_vec(),
        ),
        (
            "Gaussian 5×5",
            5,
            (0..25).map(|i| g5[i / 5] * g5[i % 5] / 256.0).collect(),
        ),
    ]
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// An image: `(label, height, width, row-major pixels or values)`.
type Image = (String, usize, usize, Vec<f32>);

/// The images to filter (pixels in [0, 1]).
fn images(args: &Args) -> Result<Vec<Image>, Box<dyn std::error::Error>> {
    if let Some(p) = &args.png {
        let img = image::open(p)
            .map_err(|e| format!("--png '{}': {e}", p.display()))?
            .to_luma8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let px = img.into_raw().iter().map(|&v| v as f32 / 255.0).collect();
        return Ok(vec![(p.display().to_string(), h, w, px)]);
    }
    let test = load_mnist_dir(&embedded_mnist_subset_dir(), "mnist")?.test;
    Ok((0..args.digits.min(test.n))
        .map(|i| {
            let px = test.image(i).iter().map(|&v| v as f32 / 255.0).collect();
            (
                format!("digit {}", test.labels[i]),
                test.rows,
                test.cols,
                px,
            )
        })
        .collect())
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let be = match args.backend {
        BackendArg::Gpu => Backend::gpu()?,
        BackendArg::Cpu => Backend::cpu(),
    };
    println!("backend: {}", be.describe());
    let mut tiles: Vec<Image> = Vec::new();
    let ks = kernels();
    for (label, h, w, px) in images(&args)? {
        let x = Array4::from_shape_vec((1, 1, h, w), px.clone())?;
        tiles.push((format!("{label}: input"), h, w, px.clone()));
        for (name, k, weights) in &ks {
            let wk = Array4::from_shape_vec((1, 1, *k, *k), weights.clone())?;
            let y = be.conv2d(&x, &wk, None, Conv2dParams::new(1, k / 2))?;
            let yv: Vec<f32> = y.iter().copied().collect();
            if *name == "identity" {
                // the identity kernel must give the image back exactly
                let worst = yv
                    .iter()
                    .zip(&px)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                println!("{label}: identity kernel, max |y − x| = {worst}");
                if worst != 0.0 {
                    return Err(format!("the identity kernel changed {label}").into());
                }
            }
            tiles.push((name.to_string(), h, w, yv));
        }
    }
    let refs: Vec<plots::Tile> = tiles
        .iter()
        .map(|(l, h, w, v)| (l.clone(), *h, *w, v.as_slice()))
        .collect();
    let title = "Classic image kernels (Keras article) through wgcnn's conv2d";
    let path = plots::grid(&args.out, "kernels.png", title, &refs, ks.len() + 1)?;
    println!(
        "grid:    {} ({} images × {} kernels)",
        path.display(),
        tiles.len() / (ks.len() + 1),
        ks.len()
    );
    Ok(())
}
