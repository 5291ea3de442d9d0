//! Tests of safetensors checkpoints: round trip, atomic writes, hostile files and
//! model matching.

use std::path::{Path, PathBuf};

use wgcnn::checkpoint::{write_atomic, write_atomic_with_hook, Checkpoint};
use wgcnn::Error;

/// A fresh, empty scratch directory for one test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ckpt-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A small LeNet-like checkpoint with deterministic, distinct values.
fn sample(seed: f32) -> Checkpoint {
    let mut c = Checkpoint::new();
    let specs: [(&str, Vec<usize>); 6] = [
        ("c1.weight", vec![6, 1, 5, 5]),
        ("c1.bias", vec![6]),
        ("fc.weight", vec![10, 24]),
        ("fc.bias", vec![10]),
        ("bn.running_mean", vec![6]),
        ("a.scalar", vec![]),
    ];
    for (k, (name, shape)) in specs.into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| seed + k as f32 * 1000.0 + i as f32 * 0.25 - 3.0)
            .collect();
        c.push(name, shape, data).expect("push");
    }
    c.metadata.insert("model".into(), "lenet5".into());
    c.metadata.insert("epoch".into(), "7".into());
    c
}

fn expect_ckpt_err<T: std::fmt::Debug>(r: wgcnn::Result<T>, needles: &[&str]) -> String {
    match r {
        Err(Error::Checkpoint { msg, .. }) => {
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
            }
            msg
        }
        other => panic!("expected Error::Checkpoint mentioning {needles:?}, got {other:?}"),
    }
}

#[test]
fn round_trip_preserves_everything_and_order() {
    let dir = scratch_dir("round-trip");
    let path = dir.join("sub/dir/model.safetensors");
    let c = sample(0.5);
    c.save(&path).expect("save");
    let back = Checkpoint::load(&path).expect("load");
    assert_eq!(back, c);
    // insertion order, not alphabetical
    let names: Vec<&str> = back.tensors.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "c1.weight",
            "c1.bias",
            "fc.weight",
            "fc.bias",
            "bn.running_mean",
            "a.scalar"
        ]
    );
    assert_eq!(back.metadata["model"], "lenet5");
    let (shape, data) = back.get("fc.bias").expect("fc.bias");
    assert_eq!(shape, &[10]);
    assert_eq!(data[3], 0.5 + 3000.0 + 0.75 - 3.0);
    let (shape, data) = back.get("a.scalar").expect("scalar");
    assert!(shape.is_empty());
    assert_eq!(data.len(), 1);
    // no temporary files left behind
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("model.safetensors")]
    );
}

#[test]
fn round_trip_special_values_bit_exact() {
    let dir = scratch_dir("special-values");
    let path = dir.join("m.safetensors");
    let vals = vec![
        0.0f32,
        -0.0,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::INFINITY,
        1e-45,
        -1.5,
    ];
    let mut c = Checkpoint::new();
    c.push("v", vec![vals.len()], vals.clone()).expect("push");
    c.push("empty", vec![0, 3], vec![]).expect("push");
    c.save(&path).expect("save");
    let back = Checkpoint::load(&path).expect("load");
    let got = back.get("v").expect("v").1;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(got), bits(&vals));
    assert_eq!(back.get("empty").expect("empty").0, &[0, 3]);
}

#[test]
fn file_is_standard_safetensors() {
    let c = sample(1.0);
    let bytes = c.to_bytes(Path::new("<memory>")).expect("bytes");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("reference parser accepts");
    assert_eq!(st.len(), c.tensors.len());
    let t = st.tensor("c1.weight").expect("c1.weight");
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    assert_eq!(t.shape(), &[6, 1, 5, 5]);
    let first = f32::from_le_bytes(t.data()[..4].try_into().expect("4 bytes"));
    assert_eq!(first, c.tensors[0].2[0]);
    // header length is a multiple of 8 so the data is aligned
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    assert_eq!(n % 8, 0);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("metadata");
    let m = meta.metadata().as_ref().expect("has metadata");
    assert_eq!(m.get("epoch").map(String::as_str), Some("7"));
}

#[test]
fn reads_files_written_by_the_reference_serializer() {
    // The reference serializer orders tensors by dtype then name.
    let w: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let b: Vec<u8> = [9.0f32].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "w",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &w)
                .expect("view"),
        ),
        (
            "b",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &b)
                .expect("view"),
        ),
    ];
    let bytes = safetensors::serialize(views, None).expect("serialize");
    let c = Checkpoint::from_bytes(&bytes, Path::new("<memory>")).expect("parse");
    assert_eq!(
        c.get("w"),
        Some((&[2usize, 2][..], &[1.0f32, 2.0, 3.0, 4.0][..]))
    );
    assert_eq!(c.get("b"), Some((&[1usize][..], &[9.0f32][..])));
    assert!(c.metadata.is_empty());
}

#[test]
fn crash_before_rename_keeps_previous_checkpoint() {
    let dir = scratch_dir("atomic");
    let path = dir.join("last.safetensors");
    let old = sample(1.0);
    old.save(&path).expect("first save");
    let old_bytes = std::fs::read(&path).expect("read");

    let new = sample(2.0);
    let mut seen_tmp = None;
    let r = new.save_with_hook(&path, |tmp| {
        // At the moment of the "crash" the new data is fully on disk in the
        // temporary file, next to the target, and the target is still the old file.
        assert_ne!(tmp, path.as_path());
        assert_eq!(tmp.parent(), path.parent());
        assert_eq!(Checkpoint::load(tmp).expect("tmp is complete"), new);
        assert_eq!(Checkpoint::load(&path).expect("old intact"), old);
        seen_tmp = Some(tmp.to_path_buf());
        Err(Error::Device(
            "simulated crash between write and rename".into(),
        ))
    });
    match r {
        Err(Error::Device(m)) => assert!(m.contains("simulated crash")),
        other => panic!("hook error must propagate, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).expect("read"), old_bytes);
    assert_eq!(Checkpoint::load(&path).expect("still readable"), old);
    let tmp = seen_tmp.expect("hook ran");
    assert!(
        !tmp.exists(),
        "temporary file {} left behind",
        tmp.display()
    );

    // A save that goes through replaces the file.
    new.save(&path).expect("second save");
    assert_eq!(Checkpoint::load(&path).expect("load"), new);
}

#[test]
fn write_atomic_replaces_and_creates_parents() {
    let dir = scratch_dir("write-atomic");
    let path = dir.join("a/b/summary.json");
    write_atomic(&path, b"first").expect("write");
    write_atomic(&path, b"second").expect("overwrite");
    assert_eq!(std::fs::read(&path).expect("read"), b"second");
    let r = write_atomic_with_hook(&path, b"third", |_| Err(Error::Device("crash".into())));
    assert!(r.is_err());
    assert_eq!(std::fs::read(&path).expect("read"), b"second");
    let entries = std::fs::read_dir(path.parent().expect("parent"))
        .expect("read_dir")
        .count();
    assert_eq!(entries, 1, "temporary file left behind");
}

#[test]
fn truncated_files_are_checkpoint_errors() {
    let dir = scratch_dir("truncated");
    let path = dir.join("m.safetensors");
    let c = sample(3.0);
    c.save(&path).expect("save");
    let full = std::fs::read(&path).expect("read");
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().expect("8")) as usize;
    // Every cut point must fail cleanly (and never panic).
    let cuts: Vec<usize> = (0..=header_end + 16)
        .chain([full.len() - 4, full.len() - 1])
        .collect();
    for cut in cuts {
        std::fs::write(&path, &full[..cut]).expect("write");
        let r = Checkpoint::load(&path);
        assert!(
            matches!(r, Err(Error::Checkpoint { .. })),
            "cut at {cut}: {r:?}"
        );
    }
    std::fs::write(&path, &full[..4]).expect("write");
    expect_ckpt_err(Checkpoint::load(&path), &["truncated"]);
    std::fs::write(&path, &full[..full.len() - 4]).expect("write");
    expect_ckpt_err(Checkpoint::load(&path), &["a.scalar"]);
    // trailing garbage is rejected too
    let mut long = full.clone();
    long.extend_from_slice(&[0; 4]);
    std::fs::write(&path, &long).expect("write");
    expect_ckpt_err(Checkpoint::load(&path), &["trailing"]);
}

/// Builds a safetensors file with a hand-written header.
fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn corrupt_headers_are_checkpoint_errors() {
    let p = Path::new("bad.safetensors");
    let parse = |b: &[u8]| Checkpoint::from_bytes(b, p);
    // header length far beyond the file / beyond any sane limit
    let mut b = u64::MAX.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    expect_ckpt_err(parse(&b), &["header length"]);
    let mut b = 1000u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    expect_ckpt_err(parse(&b), &["truncated", "1000"]);
    // not UTF-8, not JSON
    expect_ckpt_err(parse(&with_header("\u{0}\u{0}", &[])), &["JSON"]);
    let mut b = 2u64.to_le_bytes().to_vec();
    b.extend_from_slice(&[0xff, 0xfe]);
    expect_ckpt_err(parse(&b), &["UTF-8"]);
    expect_ckpt_err(parse(&with_header("{\"w\":", &[])), &["JSON"]);
    // wrong dtype, named
    let h = r#"{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#;
    expect_ckpt_err(parse(&with_header(h, &[0; 4])), &["'w'", "F16", "F32"]);
    // shape and byte length disagree
    let h = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    expect_ckpt_err(parse(&with_header(h, &[0; 8])), &["'w'", "[3]"]);
    // offsets beyond the data
    let h = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    expect_ckpt_err(parse(&with_header(h, &[0; 8])), &["'w'", "offsets"]);
    // huge offsets and shapes must not overflow
    let h = r#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,18446744073709551615]}}"#;
    expect_ckpt_err(parse(&with_header(h, &[0; 8])), &["'w'"]);
    let h = r#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,0]}}"#;
    expect_ckpt_err(parse(&with_header(h, &[])), &["'w'"]);
    // overlapping tensors
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    expect_ckpt_err(parse(&with_header(h, &[0; 8])), &["'b'"]);
    // gap in the data
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    expect_ckpt_err(parse(&with_header(h, &[0; 8])), &["'a'"]);
    // missing field / metadata of the wrong type
    let h = r#"{"a":{"dtype":"F32","shape":[1]}}"#;
    expect_ckpt_err(parse(&with_header(h, &[0; 4])), &["'a'"]);
    let h = r#"{"__metadata__":{"epoch":3}}"#;
    expect_ckpt_err(parse(&with_header(h, &[])), &["__metadata__"]);
    // a header that is valid JSON but not an object
    expect_ckpt_err(parse(&with_header("[1,2]", &[])), &["JSON"]);
}

#[test]
fn random_byte_flips_never_panic() {
    let c = sample(4.0);
    let good = c.to_bytes(Path::new("<memory>")).expect("bytes");
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().expect("8")) as usize;
    // Deterministic xorshift so failures are reproducible.
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let mut b = good.clone();
        let pos = (s as usize) % header_end;
        b[pos] = (s >> 32) as u8;
        match Checkpoint::from_bytes(&b, Path::new("<fuzz>")) {
            Ok(_) | Err(Error::Checkpoint { .. }) => {}
            Err(e) => panic!("unexpected error kind: {e:?}"),
        }
    }
}

#[test]
fn save_rejects_inconsistent_tensors() {
    let dir = scratch_dir("save-invalid");
    let path = dir.join("m.safetensors");
    let mut c = Checkpoint::new();
    c.tensors.push(("w".into(), vec![2, 2], vec![0.0; 3]));
    expect_ckpt_err(c.save(&path), &["'w'", "[2, 2]", "3 values"]);
    let mut c = Checkpoint::new();
    c.tensors.push(("w".into(), vec![1], vec![0.0]));
    c.tensors.push(("w".into(), vec![1], vec![1.0]));
    expect_ckpt_err(c.save(&path), &["duplicate", "'w'"]);
    assert!(!path.exists());
}

#[test]
fn missing_file_is_io_error() {
    let r = Checkpoint::load(Path::new("/no/such/dir/m.safetensors"));
    assert!(matches!(r, Err(Error::Io { .. })), "got {r:?}");
}

#[test]
fn check_against_lists_all_problems_by_name() {
    let c = sample(0.0);
    let mut expected: Vec<(String, Vec<usize>)> = c
        .tensors
        .iter()
        .map(|(n, s, _)| (n.clone(), s.clone()))
        .collect();
    c.check_against(&expected, Path::new("m.safetensors"))
        .expect("exact match passes");

    expected.retain(|(n, _)| n != "bn.running_mean"); // checkpoint has an extra
    expected.push(("c2.weight".into(), vec![16, 6, 5, 5])); // and lacks one
    expected[2].1 = vec![10, 25]; // fc.weight mis-shaped
    let msg = expect_ckpt_err(
        c.check_against(&expected, Path::new("m.safetensors")),
        &[
            "missing tensors: c2.weight",
            "unexpected tensors: bn.running_mean",
            "fc.weight",
            "[10, 24]",
            "[10, 25]",
        ],
    );
    assert!(!msg.contains("c1.weight"), "{msg}");

    // only one kind of problem
    let only_missing = vec![
        ("c1.weight".to_string(), vec![6, 1, 5, 5]),
        ("zzz".to_string(), vec![1]),
    ];
    let mut small = Checkpoint::new();
    small
        .push("c1.weight", vec![6, 1, 5, 5], vec![0.0; 150])
        .expect("push");
    let msg = expect_ckpt_err(
        small.check_against(&only_missing, Path::new("m")),
        &["missing tensors: zzz"],
    );
    assert!(
        !msg.contains("unexpected") && !msg.contains("shape"),
        "{msg}"
    );
}
