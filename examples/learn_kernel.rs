//! Learning a kernel (d2l.ai, "Convolutions for Images" §7.2.4): the edge detector `[1, −1]`
//! is recovered from an image and its edges by gradient descent.
//!
//! `X` is a 6×8 image of ones with a band of zeros in columns 2..6, `Y = X ⋆ [1, −1]` its
//! vertical edges (1 where X steps down, −1 where it steps up). A 1×2 convolution without
//! bias starts from PyTorch's default initialisation and is trained by SGD on the squared
//! error; the kernel is printed as it converges.
//!
//! ```text
//! cargo run --release --example learn_kernel                      # on the GPU
//! cargo run --release --example learn_kernel -- --backend cpu --steps 60
//! ```
//!
//! d2l sums the squared errors and steps with lr 3e-2; wgcnn's MSE averages them over the
//! 42 outputs, so its gradient is 1/42 of the sum's: the default lr here, 3e-2 · 42 = 1.26,
//! takes the same steps.

use clap::{Parser, ValueEnum};
use wgcnn::exec::{Executor, Targets};
use wgcnn::graph::Graph;
use wgcnn::plan::Mode;
use wgcnn::{Backend, Conv2dParams, Optimizer};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Gpu,
    Cpu,
}

#[derive(Parser, Debug)]
#[command(about = "Learn the edge-detection kernel [1, -1] from an image and its edges (d2l)")]
struct Args {
    #[arg(long, value_enum, default_value = "gpu")]
    backend: BackendArg,
    /// Gradient-descent steps.
    #[arg(long, default_value_t = 60)]
    steps: u64,
    /// Learning rate of SGD on the mean squared error.
    #[arg(long, default_value_t = 1.26)]
    lr: f32,
    /// Seed of the kernel's initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

const H: usize = 6;
const W: usize = 8;

/// d2l's `X` (ones, zeros in columns 2..6) and `Y = X ⋆ [1, −1]` (`[H, W − 1]`).
fn image_and_edges() -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = (0..H * W)
        .map(|i| if (2..6).contains(&(i % W)) { 0.0 } else { 1.0 })
        .collect();
    let y = (0..H)
        .flat_map(|r| (0..W - 1).map(move |c| (r, c)))
        .map(|(r, c)| x[r * W + c] - x[r * W + c + 1])
        .collect();
    (x, y)
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let backend = match args.backend {
        BackendArg::Gpu => Backend::gpu()?,
        BackendArg::Cpu => Backend::cpu(),
    };
    println!("backend: {}", backend.describe());
    let mut g = Graph::new();
    let x = g.input("x", &[1, H, W])?;
    let k = g.conv2d("conv", x, 1, [1, 2], Conv2dParams::default(), false)?;
    let f = g.flatten("flat", k)?;
    g.mse("loss", f)?;
    let mut ex = Executor::new(&backend, &g, 1, Optimizer::sgd(args.lr), args.seed)?;
    let (xv, yv) = image_and_edges();
    let kernel =
        |ex: &mut Executor| -> Result<Vec<f32>, wgcnn::Error> { Ok(ex.parameters()?.remove(0).2) };
    println!("initial kernel {:?}", kernel(&mut ex)?);
    for step in 1..=args.steps {
        ex.train_step(&xv, Targets::Values(&yv))?;
        if step % 10 == 0 || step == args.steps {
            let loss = ex.take_metrics(Mode::Train)?.loss;
            let kv = kernel(&mut ex)?;
            println!(
                "step {step:>4}  loss {loss:.6}  kernel [{:.5}, {:.5}]",
                kv[0], kv[1]
            );
        }
    }
    let kv = kernel(&mut ex)?;
    let err = (kv[0] - 1.0).abs().max((kv[1] + 1.0).abs());
    println!(
        "learned kernel [{:.5}, {:.5}] (target [1, -1], max error {err:.2e})",
        kv[0], kv[1]
    );
    Ok(())
}
