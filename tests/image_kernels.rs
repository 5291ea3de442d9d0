//! `examples/image_kernels.rs` (issue 14 item 10): the classic kernels through the functional
//! convolution, on bundled digits and on a PNG the test writes; the identity kernel gives
//! each image back exactly, and the grid is a PNG with a row per image.

mod common;

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let bin = common::example_binary("image_kernels", &["examples", "examples/mnist"]);
    let out = Command::new(bin)
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("image-kernels-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bundled_digits_make_a_grid() {
    let d = dir("digits");
    let (ok, text) = run(&[
        "--backend",
        "cpu",
        "--digits",
        "2",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert_eq!(
        text.matches("identity kernel, max |y − x| = 0").count(),
        2,
        "{text}"
    );
    assert!(text.contains("(2 images × 8 kernels)"), "{text}");
    let img = image::open(d.join("kernels.png")).unwrap();
    assert!(
        img.width() > img.height() && img.height() > 200,
        "{}×{}",
        img.width(),
        img.height()
    );
}

#[test]
fn a_png_is_filtered_and_a_bad_one_is_named() {
    let d = dir("png");
    let png = d.join("gradient.png");
    let g = image::GrayImage::from_fn(12, 10, |x, y| image::Luma([(x * 20 + y * 5) as u8]));
    g.save(&png).unwrap();
    let (ok, text) = run(&[
        "--backend",
        "cpu",
        "--png",
        png.to_str().unwrap(),
        "--out",
        d.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("identity kernel, max |y − x| = 0")
            && text.contains("(1 images × 8 kernels)"),
        "{text}"
    );
    let bad = d.join("not-a.png");
    std::fs::write(&bad, b"nope").unwrap();
    let (ok, text) = run(&["--backend", "cpu", "--png", bad.to_str().unwrap()]);
    assert!(
        !ok && text.contains("--png") && text.contains("not-a.png"),
        "{text}"
    );
}
