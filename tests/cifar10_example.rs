//! `examples/cifar10` end to end on CIFAR-10 binary files the test writes (random pixels,
//! so only the mechanics are checked, not learning; `docs/results/` has the real-data run):
//! the text equals the JSON, an interrupted run resumes to bitwise the same parameters (the
//! augmentation's draws depend on seed, epoch and image index only), no data says where to
//! get CIFAR-10, images of the wrong shape are refused naming both shapes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wgcnn::checkpoint::Checkpoint;

fn example() -> PathBuf {
    common::example_binary("cifar10", &["examples/cifar10", "examples/mnist"])
}

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cifar10-example-{test}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `cifar-10-batches-bin/` with 5 × `per` training records and `test` test records.
fn write_cifar(root: &Path, per: usize, test: usize) -> PathBuf {
    let d = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    let mut seed = 12345u32;
    let mut record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|_| {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 24) as u8
        }));
        r
    };
    for b in 1..=5 {
        let bytes: Vec<u8> = (0..per).flat_map(|i| record((i % 10) as u8)).collect();
        std::fs::write(d.join(format!("data_batch_{b}.bin")), bytes).unwrap();
    }
    let bytes: Vec<u8> = (0..test).flat_map(|i| record((i % 10) as u8)).collect();
    std::fs::write(d.join("test_batch.bin"), bytes).unwrap();
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    std::fs::write(d.join("batches.meta.txt"), names).unwrap();
    d
}

fn cifar10(args: &[&str]) -> Output {
    Command::new(example())
        .args(["--seed", "5", "--batch-size", "16"])
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

#[track_caller]
fn ok(o: &Output) -> String {
    let t = text(o);
    assert!(o.status.success(), "exit {:?}:\n{t}", o.status.code());
    t
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn text_and_json_agree_and_a_resume_is_bitwise() {
    let d = dir("run");
    let data = write_cifar(&d, 16, 32);
    let (a, b, j) = (
        d.join("a.safetensors"),
        d.join("b.safetensors"),
        d.join("s.json"),
    );
    let base = [
        "--data",
        s(&data),
        "--epochs",
        "2",
        "--augment",
        "crop=4,reflect,flip",
    ];
    let t = ok(&cifar10(
        &[&base[..], &["--checkpoint", s(&a), "--json", s(&j)]].concat(),
    ));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
    let acc = v["test_accuracy"].as_f64().unwrap();
    assert!(
        t.contains(&format!("done: test accuracy {:.2}%", 100.0 * acc)),
        "{t}"
    );
    assert_eq!(v["per_class_accuracy"].as_array().unwrap().len(), 10);
    assert_eq!(v["train_images"], 80);
    assert_eq!(v["epochs_trained"], 2);
    let mem = v["gpu_bytes_per_epoch"].as_array().unwrap();
    assert!(
        mem.len() == 2 && mem[0] == mem[1] && mem[0].as_u64().unwrap() > 0,
        "{mem:?}"
    );
    assert!(t.contains("per class: airplane"), "{t}");
    // interrupted after 2 of the 10 steps, then resumed
    let o = cifar10(&[&base[..], &["--checkpoint", s(&b), "--stop-after", "2"]].concat());
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let t = ok(&cifar10(
        &[&base[..], &["--checkpoint", s(&b), "--resume"]].concat(),
    ));
    assert!(t.contains("resumed: epoch 1, batch 2"), "{t}");
    let (ca, cb) = (Checkpoint::load(&a).unwrap(), Checkpoint::load(&b).unwrap());
    assert_eq!(
        ca.tensors, cb.tensors,
        "resumed parameters differ from the uninterrupted run's"
    );
}

#[test]
fn without_data_it_says_where_to_get_cifar10() {
    let o = cifar10(&[]);
    let t = text(&o);
    assert!(!o.status.success());
    for want in [
        "binary version",
        "cifar-10-binary.tar.gz",
        "data_batch_1..5.bin",
        "--image-folder",
        "--npz",
    ] {
        assert!(t.contains(want), "{want:?} missing:\n{t}");
    }
}

#[test]
fn images_of_another_shape_are_refused() {
    let d = dir("shape");
    for split in ["train", "test"] {
        for class in ["a", "b"] {
            let c = d.join("folder").join(split).join(class);
            std::fs::create_dir_all(&c).unwrap();
            for i in 0..2 {
                image::GrayImage::from_pixel(28, 28, image::Luma([i * 100]))
                    .save(c.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    let f = d.join("folder");
    let o = cifar10(&[
        "--image-folder",
        s(&f),
        "--checkpoint",
        s(&d.join("m.safetensors")),
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("[3, 32, 32]") && t.contains("[1, 28, 28]"),
        "{t}"
    );
}
