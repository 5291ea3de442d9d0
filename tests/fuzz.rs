//! Fuzzing of the two parsers that read untrusted files: the IDX reader
//! ([`wgcnn::data::parse_idx`]) and the checkpoint loader
//! ([`wgcnn::checkpoint::Checkpoint::from_bytes`]).
//!
//! `cargo-fuzz` needs a nightly toolchain, so the fuzzing is done with proptest on
//! stable: every target generates inputs (arbitrary bytes, valid files mutated with
//! bit flips, truncations, header fields set to huge values, gzip-wrapped variants and
//! structurally hostile headers) and checks, for every input:
//!
//! * **no panic** — the parser runs under `catch_unwind`;
//! * **the right error kind** — malformed input is `Error::Data` (IDX) or
//!   `Error::Checkpoint`, never `Io` or anything else, for in-memory bytes;
//! * **consistent success** — what parses re-encodes to the same bytes (IDX) or
//!   round-trips bit for bit through `to_bytes` (checkpoints), and gzip is
//!   transparent (the same IDX raw and gzip-wrapped parse alike);
//! * **bounded allocation** — a counting global allocator records the largest single
//!   allocation during the parse, which must stay within a bound proportional to the
//!   bytes actually present (plus the IDX reader's documented 64 MiB initial-capacity
//!   cap for gzip streams), whatever sizes the header claims; headers that claim
//!   more than 2³¹ bytes are refused quickly, with less than 1 MiB allocated;
//! * **bounded time** — no single parse takes more than two seconds.
//!
//! `PROPTEST_CASES` sets the cases per target (default 256, a few seconds in all);
//! `PROPTEST_RNG_SEED` fixes the seed (each target prints the one it used).
//! `scripts/fuzz.sh [minutes]` runs every target for a long time with fresh seeds.
//! An input that violates a property is written to `$WGCNN_FUZZ_ARTIFACTS` (default
//! `target/tmp/fuzz-artifacts`) before the test fails; add it to the regression
//! corpus in `fuzz/corpus/{idx,checkpoint}/`, which [`corpus_replay`] replays on
//! every run (file names starting with `ok-` must parse, `err-` must be refused).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use wgcnn::checkpoint::Checkpoint;
use wgcnn::data::parse_idx;
use wgcnn::Error;

// ---- allocation tracking -------------------------------------------------------

/// The system allocator, recording the largest single allocation of each thread.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| {
        if size > c.get() {
            c.set(size);
        }
    });
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

thread_local! {
    /// Set while a parser runs under `catch_unwind`: its panics are results, not noise.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// The last input that violated a property on this thread (the shrunk one, once
    /// the runner is done).
    static LAST_FAILURE: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// Installs (once) a panic hook that stays silent for panics caught by [`measured`].
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info)
            }
        }));
    });
}

/// Runs `f`, returning its result (or the panic message), the largest single
/// allocation it made and how long it took.
fn measured<T>(f: impl FnOnce() -> T) -> (Result<T, String>, usize, Duration) {
    quiet_panics();
    LARGEST.with(|c| c.set(0));
    QUIET.with(|q| q.set(true));
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    let r = r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into())
    });
    let elapsed = t.elapsed();
    (r, LARGEST.with(Cell::get), elapsed)
}

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The IDX reader's cap on the initial payload buffer (`MAX_INITIAL_CAPACITY`).
const IDX_INITIAL_CAP: usize = 64 * MIB;
/// Longest any single parse may take.
const MAX_PARSE_TIME: Duration = Duration::from_secs(2);

// ---- encoders ----------------------------------------------------------------------

fn idx_bytes(ty: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, ty, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).expect("gzip write");
    enc.finish().expect("gzip finish")
}

fn is_gzip(b: &[u8]) -> bool {
    b.len() >= 2 && b[..2] == [0x1f, 0x8b]
}

/// Decompresses as much of a gzip stream as decodes (at most `cap` bytes).
fn gunzip_prefix(b: &[u8], cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dec = MultiGzDecoder::new(b).take(cap as u64);
    let mut buf = [0u8; 4096];
    loop {
        match dec.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

// ---- oracles -------------------------------------------------------------------------

/// Checks every property of one IDX input; `Err` describes the violation.
fn check_idx(input: &[u8]) -> Result<Option<wgcnn::data::IdxArray>, String> {
    let (r, largest, elapsed) = measured(|| parse_idx(input, Path::new("<fuzz>")));
    let r = r.map_err(|p| format!("parse_idx panicked: {p}"))?;
    if elapsed > MAX_PARSE_TIME {
        return Err(format!("parse_idx took {elapsed:?}"));
    }
    let gz = is_gzip(input);
    // What the parser could have read: the raw bytes, or the decompressed stream.
    let content = if gz {
        gunzip_prefix(input, 64 * MIB)
    } else {
        input.to_vec()
    };
    let bound = if gz {
        IDX_INITIAL_CAP + 2 * content.len() + 256 * KIB
    } else {
        input.len() + 64 * KIB
    };
    if largest > bound {
        return Err(format!(
            "parse_idx allocated {largest} bytes at once for {} input bytes ({} decompressed); bound {bound}",
            input.len(),
            content.len()
        ));
    }
    match r {
        Ok(a) => {
            if !(1..=4).contains(&a.dims.len()) {
                return Err(format!("accepted {} dimensions", a.dims.len()));
            }
            let n = a.dims.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
            if n != Some(a.data.len()) {
                return Err(format!(
                    "dims {:?} but {} payload bytes",
                    a.dims,
                    a.data.len()
                ));
            }
            let dims: Vec<u32> = a.dims.iter().map(|&d| d as u32).collect();
            let again = idx_bytes(0x08, &dims, &a.data);
            if again != content {
                return Err("accepted input does not re-encode to the same bytes".into());
            }
            Ok(Some(a))
        }
        Err(Error::Data { .. }) => Ok(None),
        Err(e) => Err(format!("wrong error kind for malformed IDX: {e:?}")),
    }
}

/// Checks every property of one checkpoint input; `Err` describes the violation.
fn check_checkpoint(input: &[u8]) -> Result<Option<Checkpoint>, String> {
    let path = Path::new("<fuzz>");
    let (r, largest, elapsed) = measured(|| Checkpoint::from_bytes(input, path));
    let r = r.map_err(|p| format!("from_bytes panicked: {p}"))?;
    if elapsed > MAX_PARSE_TIME {
        return Err(format!("from_bytes took {elapsed:?}"));
    }
    // serde_json's `Value` tree costs a few dozen bytes per input byte at most.
    let bound = 64 * input.len() + 256 * KIB;
    if largest > bound {
        return Err(format!(
            "from_bytes allocated {largest} bytes at once for {} input bytes; bound {bound}",
            input.len()
        ));
    }
    match r {
        Ok(c) => {
            for (name, shape, values) in &c.tensors {
                let n = shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
                if n != Some(values.len()) {
                    return Err(format!(
                        "tensor '{name}' of shape {shape:?} has {} values",
                        values.len()
                    ));
                }
            }
            // what loads must save, and load back bit for bit
            let bytes = c
                .to_bytes(path)
                .map_err(|e| format!("accepted checkpoint cannot be saved: {e}"))?;
            let back = Checkpoint::from_bytes(&bytes, path)
                .map_err(|e| format!("re-saved checkpoint does not load: {e}"))?;
            if bits(&back) != bits(&c) {
                return Err("re-saved checkpoint differs".into());
            }
            Ok(Some(c))
        }
        Err(Error::Checkpoint { .. }) => Ok(None),
        Err(e) => Err(format!(
            "wrong error kind for a malformed checkpoint: {e:?}"
        )),
    }
}

type CheckpointBits = (Vec<(String, Vec<usize>, Vec<u32>)>, Vec<(String, String)>);

fn bits(c: &Checkpoint) -> CheckpointBits {
    (
        c.tensors
            .iter()
            .map(|(n, s, v)| {
                (
                    n.clone(),
                    s.clone(),
                    v.iter().map(|x| x.to_bits()).collect(),
                )
            })
            .collect(),
        c.metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

// ---- the runner ------------------------------------------------------------------------

fn artifacts_dir() -> PathBuf {
    std::env::var_os("WGCNN_FUZZ_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-artifacts"))
}

/// FNV-1a, to name artifacts by content.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

/// Turns a violation into a test failure, remembering the input.
fn verdict<T>(input: &[u8], r: Result<T, String>) -> Result<T, TestCaseError> {
    r.map_err(|msg| {
        LAST_FAILURE.with(|f| *f.borrow_mut() = Some(input.to_vec()));
        TestCaseError::fail(format!("{msg} ({} bytes)", input.len()))
    })
}

/// Writes the (shrunk) failing input of `target` to the artifacts directory.
fn save_artifact(target: &str) -> String {
    let Some(input) = LAST_FAILURE.with(|f| f.borrow_mut().take()) else {
        return "no input recorded".into();
    };
    let dir = artifacts_dir();
    let file = dir.join(format!("{target}-{:016x}.bin", fnv(&input)));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, &input))
        .map(|()| format!("input saved to {}", file.display()))
        .unwrap_or_else(|e| format!("could not save the input: {e}"))
}

/// Runs one fuzz target: `PROPTEST_CASES` cases (default 256) from
/// `PROPTEST_RNG_SEED` (default: a fresh seed, printed), counting executions.
fn fuzz<S: Strategy>(
    target: &str,
    strategy: S,
    body: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) {
    let base = Config::default();
    let seed = match base.rng_seed {
        RngSeed::Fixed(s) => s,
        RngSeed::Random => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ fnv(target.as_bytes())
        }
    };
    let config = Config {
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        // hostile inputs are cheap; spend the shrinking budget on a small reproducer
        max_shrink_iters: 4096,
        ..base
    };
    let cases = config.cases;
    let (execs, accepted) = (AtomicU64::new(0), AtomicU64::new(0));
    let t = Instant::now();
    let result = TestRunner::new(config).run(&strategy, |v| {
        execs.fetch_add(1, Ordering::Relaxed);
        if body(v)? {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    let n = execs.load(Ordering::Relaxed);
    let ok = accepted.load(Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    let status = if result.is_ok() { "ok" } else { "FAILED" };
    // scripts/fuzz.sh parses this line
    eprintln!(
        "fuzz-target {target}: {n} executions ({cases} cases, {ok} inputs accepted) in {secs:.2} s, seed {seed}: {status}"
    );
    if let Err(e) = result {
        let saved = save_artifact(target);
        panic!(
            "fuzz target {target} failed (reproduce with PROPTEST_RNG_SEED={seed}; {saved}): {e}"
        );
    }
}

// ---- strategies ------------------------------------------------------------------------

/// Header values that stress size arithmetic.
fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(255),
        Just(65_536),
        Just(1 << 31),
        Just((1 << 31) - 1),
        Just(u32::MAX),
        Just(u32::MAX - 1),
        any::<u32>(),
    ]
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(4),
        Just(8),
        Just(100_000_000),
        Just(100_000_001),
        Just(1 << 31),
        Just(1 << 32),
        Just(1 << 53),
        Just(1 << 62),
        Just(1 << 63),
        Just(u64::MAX / 4 + 1),
        Just(u64::MAX - 3),
        Just(u64::MAX),
        any::<u64>(),
        0u64..300,
    ]
}

/// A byte-level mutation of a file.
#[derive(Clone, Debug)]
enum Mutation {
    /// Flip bit `bit` of the byte at `pos` (modulo the length).
    BitFlip(usize, u8),
    /// Overwrite the byte at `pos`.
    SetByte(usize, u8),
    /// Keep the first `pos` bytes (modulo length + 1).
    Truncate(usize),
    /// Remove `len` bytes at `pos`.
    Delete(usize, usize),
    /// Insert bytes at `pos`.
    Insert(usize, Vec<u8>),
    /// Append bytes.
    Append(Vec<u8>),
    /// Overwrite 4 bytes at `pos` with a big-endian `u32` (IDX header fields).
    SetU32Be(usize, u32),
    /// Overwrite 8 bytes at `pos` with a little-endian `u64` (safetensors length).
    SetU64Le(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = any::<usize>();
    prop_oneof![
        3 => (pos, 0u8..8).prop_map(|(p, b)| Mutation::BitFlip(p, b)),
        2 => (pos, any::<u8>()).prop_map(|(p, b)| Mutation::SetByte(p, b)),
        2 => pos.prop_map(Mutation::Truncate),
        1 => (pos, 1usize..16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        1 => (pos, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        1 => prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        // IDX: dims live at 4, 8, 12, 16
        2 => (0usize..5, interesting_u32()).prop_map(|(i, v)| Mutation::SetU32Be(i * 4, v)),
        // safetensors: the header length lives at 0
        1 => (Just(0usize), interesting_u64()).prop_map(|(p, v)| Mutation::SetU64Le(p, v)),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = b.len();
        match m {
            Mutation::BitFlip(p, bit) if len > 0 => b[p % len] ^= 1 << bit,
            Mutation::SetByte(p, v) if len > 0 => b[p % len] = *v,
            Mutation::Truncate(p) => b.truncate(p % (len + 1)),
            Mutation::Delete(p, n) if len > 0 => {
                let s = p % len;
                b.drain(s..(s + n).min(len));
            }
            Mutation::Insert(p, bytes) => {
                let s = p % (len + 1);
                b.splice(s..s, bytes.iter().copied());
            }
            Mutation::Append(bytes) => b.extend_from_slice(bytes),
            Mutation::SetU32Be(p, v) if p + 4 <= len => {
                b[*p..p + 4].copy_from_slice(&v.to_be_bytes())
            }
            Mutation::SetU64Le(p, v) if p + 8 <= len => {
                b[*p..p + 8].copy_from_slice(&v.to_le_bytes())
            }
            _ => {}
        }
    }
    b
}

/// A valid IDX file: 1–4 small dims and a random payload.
fn valid_idx() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u32..6, 1..=4).prop_flat_map(|dims| {
        let n: u32 = dims.iter().product();
        prop::collection::vec(any::<u8>(), n as usize)
            .prop_map(move |payload| idx_bytes(0x08, &dims, &payload))
    })
}

/// How a mutated IDX file is wrapped.
#[derive(Clone, Copy, Debug)]
enum Wrap {
    /// Mutate the raw file.
    Raw,
    /// Mutate the raw file, then gzip it (a well-formed stream of a bad file).
    MutateThenGzip,
    /// Gzip the valid file, then mutate the compressed stream.
    GzipThenMutate,
    /// Split the mutated file into two gzip members (MultiGzDecoder joins them).
    TwoMembers(usize),
}

fn wrap() -> impl Strategy<Value = Wrap> {
    prop_oneof![
        3 => Just(Wrap::Raw),
        2 => Just(Wrap::MutateThenGzip),
        2 => Just(Wrap::GzipThenMutate),
        1 => any::<usize>().prop_map(Wrap::TwoMembers),
    ]
}

fn build_idx(valid: &[u8], muts: &[Mutation], w: Wrap) -> Vec<u8> {
    match w {
        Wrap::Raw => apply(valid.to_vec(), muts),
        Wrap::MutateThenGzip => gzip(&apply(valid.to_vec(), muts)),
        Wrap::GzipThenMutate => apply(gzip(valid), muts),
        Wrap::TwoMembers(k) => {
            let m = apply(valid.to_vec(), muts);
            let k = k % (m.len() + 1);
            [gzip(&m[..k]), gzip(&m[k..])].concat()
        }
    }
}

/// A valid checkpoint: up to four tensors with small shapes and arbitrary bit
/// patterns (NaNs included), and some metadata.
fn valid_checkpoint() -> impl Strategy<Value = Vec<u8>> {
    let tensor = (
        "[a-z]{1,3}(\\.(weight|bias))?",
        prop::collection::vec(0usize..4, 0..4),
    );
    (
        prop::collection::vec(tensor, 0..4),
        prop::collection::btree_map("[a-z_]{1,6}", "[ -~]{0,8}", 0..3),
        any::<u64>(),
    )
        .prop_map(|(specs, meta, seed)| {
            let mut c = Checkpoint::new();
            let mut s = seed;
            for (name, shape) in specs {
                let n: usize = shape.iter().product();
                let v = (0..n)
                    .map(|_| {
                        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                        f32::from_bits((s >> 32) as u32)
                    })
                    .collect();
                let _ = c.push(name, shape, v); // duplicates are skipped
            }
            c.metadata = meta;
            c.to_bytes(Path::new("<fuzz>")).expect("valid checkpoint")
        })
}

/// One hostile header entry, serialized by hand so any value can appear.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    dtype: String,
    /// JSON numbers (or not-quite numbers).
    shape: Vec<String>,
    /// `None`: the offsets that tile the data section after the previous entries.
    offsets: Option<(String, String)>,
    extra_field: bool,
}

fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => (0u64..5).prop_map(|v| v.to_string()),
        6 => interesting_u64().prop_map(|v| v.to_string()),
        1 => Just("-1".to_string()),
        1 => Just("1.5".to_string()),
        1 => Just("1e3".to_string()),
        1 => Just("18446744073709551616".to_string()),
        1 => Just("\"4\"".to_string()),
        1 => Just("null".to_string()),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        prop_oneof![
            4 => "[a-z]{1,2}(\\.(weight|bias))?",
            1 => Just("__metadata__".to_string()),
            1 => Just(String::new()),
            1 => "[^\"\\\\]{0,4}",
        ],
        prop_oneof![
            12 => Just("F32".to_string()),
            1 => Just("F16".to_string()),
            1 => Just("BF16".to_string()),
            1 => Just("F64".to_string()),
            1 => Just("I64".to_string()),
            1 => Just("f32".to_string()),
        ],
        prop::collection::vec(json_number(), 0..4),
        prop::option::weighted(0.3, (json_number(), json_number())),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(name, dtype, shape, offsets, extra_field)| Entry {
            name,
            dtype,
            shape,
            offsets,
            extra_field,
        })
}

/// A safetensors file with hand-written (possibly hostile) header entries, a data
/// section (exactly what consistent entries cover, or any length) and a
/// header-length field that may lie.
fn hostile_checkpoint() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(entry(), 0..4),
        prop::option::weighted(0.2, "[ -~]{0,12}"),
        prop::option::weighted(0.3, 0usize..160),
        prop_oneof![8 => Just(None), 1 => interesting_u64().prop_map(Some)],
        any::<u8>(),
    )
        .prop_map(|(entries, meta, data_len, header_len, fill)| {
            let mut cursor = 0u64;
            let mut parts: Vec<String> = entries
                .iter()
                .map(|e| {
                    let (start, end) = e.offsets.clone().unwrap_or_else(|| {
                        // 4 bytes per element, saturating on absurd shapes
                        let bytes = e
                            .shape
                            .iter()
                            .map(|d| d.parse::<u64>().unwrap_or(1))
                            .fold(4u64, |p, d| p.saturating_mul(d));
                        let start = cursor;
                        cursor = cursor.saturating_add(bytes);
                        (start.to_string(), cursor.to_string())
                    });
                    format!(
                        "{}:{{\"dtype\":{},\"shape\":[{}],\"data_offsets\":[{start},{end}]{}}}",
                        serde_json::to_string(&e.name).expect("json"),
                        serde_json::to_string(&e.dtype).expect("json"),
                        e.shape.join(","),
                        if e.extra_field { ",\"x\":1" } else { "" }
                    )
                })
                .collect();
            if let Some(m) = meta {
                parts.push(format!(
                    "\"__metadata__\":{{\"k\":{}}}",
                    serde_json::to_string(&m).expect("json")
                ));
            }
            let header = format!("{{{}}}", parts.join(","));
            let len = header_len.unwrap_or(header.len() as u64);
            let data_len = data_len.unwrap_or(cursor.min(4096) as usize);
            let mut out = len.to_le_bytes().to_vec();
            out.extend_from_slice(header.as_bytes());
            out.extend(std::iter::repeat_n(fill, data_len));
            out
        })
}

// ---- IDX targets ---------------------------------------------------------------------

/// Arbitrary bytes, half of them behind a plausible IDX magic.
#[test]
fn fuzz_idx_arbitrary_bytes() {
    let strategy = (
        prop::option::of((0u8..=0x0f, 0u8..=6)),
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(magic, rest)| match magic {
            Some((ty, nd)) => [&[0, 0, ty, nd][..], &rest].concat(),
            None => rest,
        });
    fuzz("idx_arbitrary_bytes", strategy, |input| {
        verdict(&input, check_idx(&input)).map(|r| r.is_some())
    });
}

/// Valid IDX files mutated (bit flips, truncations, huge dims, insertions), raw or
/// gzip-wrapped (mutate-then-gzip, gzip-then-mutate, split in two members).
#[test]
fn fuzz_idx_mutated() {
    let strategy = (valid_idx(), prop::collection::vec(mutation(), 0..5), wrap())
        .prop_map(|(valid, muts, w)| (valid.clone(), muts.is_empty(), build_idx(&valid, &muts, w)));
    fuzz("idx_mutated", strategy, |(valid, unmutated, input)| {
        let got = verdict(&input, check_idx(&input))?;
        if unmutated {
            // no mutation: every wrapping must parse to the valid file's content
            let want = parse_idx(&valid, Path::new("<fuzz>")).expect("valid seed");
            if got.as_ref() != Some(&want) {
                return verdict(&input, Err(format!("unmutated input parsed as {got:?}")));
            }
        }
        Ok(got.is_some())
    });
}

/// Headers whose dimensions describe more than 2³¹ bytes: refused as `Error::Data`
/// quickly, whatever follows, with less than 1 MiB allocated.
#[test]
fn fuzz_idx_huge_claims() {
    let strategy = (
        prop::collection::vec(interesting_u32(), 1..=4),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
        (1u32 << 31) + 1..=u32::MAX,
    )
        .prop_map(|(mut dims, rest, gz, big)| {
            let claim = dims.iter().try_fold(1u64, |p, &d| p.checked_mul(d as u64));
            if claim.is_some_and(|n| n <= 1 << 31) {
                // make it a claim past 2^31: one dim past 2^31, none zero
                dims.iter_mut().for_each(|d| *d = (*d).max(1));
                dims[0] = big;
            }
            (dims, rest, gz)
        })
        .prop_map(|(dims, rest, gz)| {
            let raw = idx_bytes(0x08, &dims, &rest);
            if gz {
                gzip(&raw)
            } else {
                raw
            }
        });
    fuzz("idx_huge_claims", strategy, |input| {
        let (r, largest, elapsed) = measured(|| parse_idx(&input, Path::new("<fuzz>")));
        let r = verdict(&input, r.map_err(|p| format!("panicked: {p}")))?;
        let refused =
            matches!(&r, Err(Error::Data { msg, .. }) if msg.contains("more than the maximum"));
        verdict(
            &input,
            if !refused {
                Err(format!(
                    "a > 2^31-byte claim was not refused as too large: {r:?}"
                ))
            } else if largest >= MIB {
                Err(format!("refusing a huge claim allocated {largest} bytes"))
            } else if elapsed > Duration::from_secs(1) {
                Err(format!("refusing a huge claim took {elapsed:?}"))
            } else {
                Ok(false)
            },
        )
    });
}

/// Gzip is transparent: a (possibly mutated) file parses the same raw, gzipped and
/// split into two gzip members.
#[test]
fn fuzz_idx_gzip_differential() {
    let strategy = (
        valid_idx(),
        prop::collection::vec(mutation(), 0..3),
        any::<usize>(),
    );
    fuzz("idx_gzip_differential", strategy, |(valid, muts, k)| {
        let raw = apply(valid, &muts);
        if is_gzip(&raw) {
            return Ok(false); // a mutation produced the gzip magic: not a raw file
        }
        let want = verdict(&raw, check_idx(&raw))?;
        let k = k % (raw.len() + 1);
        for input in [gzip(&raw), [gzip(&raw[..k]), gzip(&raw[k..])].concat()] {
            let got = verdict(&input, check_idx(&input))?;
            if got != want {
                let msg = format!("gzip-wrapped input parses as {got:?}, raw as {want:?}");
                return verdict(&input, Err(msg));
            }
        }
        Ok(want.is_some())
    });
}

// ---- checkpoint targets ----------------------------------------------------------------

/// Arbitrary bytes, half of them behind a header length that fits.
#[test]
fn fuzz_checkpoint_arbitrary_bytes() {
    let strategy =
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..400)).prop_map(|(fit, rest)| {
            if fit {
                let n = (rest.len() as u64).saturating_sub(8) / 2;
                [&n.to_le_bytes()[..], &rest].concat()
            } else {
                rest
            }
        });
    fuzz("checkpoint_arbitrary_bytes", strategy, |input| {
        verdict(&input, check_checkpoint(&input)).map(|r| r.is_some())
    });
}

/// Valid checkpoints mutated: bit flips, truncations, a lying header length,
/// insertions; and gzip-wrapped (which is not a checkpoint).
#[test]
fn fuzz_checkpoint_mutated() {
    let strategy = (
        valid_checkpoint(),
        prop::collection::vec(mutation(), 0..5),
        prop::bool::weighted(0.1),
    );
    fuzz("checkpoint_mutated", strategy, |(valid, muts, gz)| {
        let mut input = apply(valid.clone(), &muts);
        if gz {
            input = gzip(&input);
        }
        let got = verdict(&input, check_checkpoint(&input))?;
        if muts.is_empty() && !gz && got.is_none() {
            return verdict(&input, Err("a valid checkpoint was refused".into()));
        }
        if gz && got.is_some() {
            return verdict(&input, Err("a gzip stream was accepted".into()));
        }
        Ok(got.is_some())
    });
}

/// Hand-written headers: huge or negative offsets and shapes, foreign dtypes,
/// reserved and empty names, non-string metadata, lying header lengths.
#[test]
fn fuzz_checkpoint_hostile_header() {
    fuzz("checkpoint_hostile_header", hostile_checkpoint(), |input| {
        verdict(&input, check_checkpoint(&input)).map(|r| r.is_some())
    });
}

// ---- regression corpus ---------------------------------------------------------------------

fn corpus_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(kind)
}

fn corpus_files(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus_dir(kind))
        .unwrap_or_else(|e| panic!("fuzz/corpus/{kind}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Replays every file of `fuzz/corpus/{idx,checkpoint}` through the same checks as
/// the fuzz targets; `ok-*` files must parse and `err-*` files must be refused.
#[test]
fn corpus_replay() {
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for kind in ["idx", "checkpoint"] {
        let files = corpus_files(kind);
        counts.push((kind, files.len()));
        assert!(
            files.len() >= 10,
            "fuzz/corpus/{kind} holds {} files",
            files.len()
        );
        for f in files {
            let input = std::fs::read(&f).expect("read corpus file");
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let parsed = if kind == "idx" {
                check_idx(&input).map(|r| r.is_some())
            } else {
                check_checkpoint(&input).map(|r| r.is_some())
            };
            match parsed {
                Err(msg) => failures.push(format!("{kind}/{name}: {msg}")),
                Ok(false) if name.starts_with("ok-") => {
                    failures.push(format!("{kind}/{name}: refused"))
                }
                Ok(true) if name.starts_with("err-") => {
                    failures.push(format!("{kind}/{name}: accepted"))
                }
                Ok(_) => {}
            }
        }
    }
    eprintln!("corpus: {counts:?}");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Rewrites the seed part of the corpus (`ok-*` / `err-*` files generated here); the
/// files found by fuzzing are added by hand. Run with
/// `cargo test --release --test fuzz -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    let idx_dir = corpus_dir("idx");
    let ck_dir = corpus_dir("checkpoint");
    std::fs::create_dir_all(&idx_dir).unwrap();
    std::fs::create_dir_all(&ck_dir).unwrap();
    let w = |dir: &Path, name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();

    // ---- IDX ----
    let labels = idx_bytes(0x08, &[10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let images: Vec<u8> = idx_bytes(0x08, &[2, 4, 4], &(0..32).collect::<Vec<u8>>());
    let four = idx_bytes(0x08, &[1, 2, 2, 3], &[7; 12]);
    w(&idx_dir, "ok-labels-1d.idx", &labels);
    w(&idx_dir, "ok-images-3d.idx", &images);
    w(&idx_dir, "ok-4d.idx", &four);
    w(
        &idx_dir,
        "ok-empty-dim.idx",
        &idx_bytes(0x08, &[0, 28, 28], &[]),
    );
    w(&idx_dir, "ok-images-3d.idx.gz", &gzip(&images));
    let mut members = gzip(&images[..9]);
    members.extend(gzip(&images[9..]));
    w(&idx_dir, "ok-two-gzip-members.idx.gz", &members);
    w(&idx_dir, "err-empty.idx", &[]);
    w(&idx_dir, "err-magic-only.idx", &[0, 0, 8]);
    w(&idx_dir, "err-bad-magic.idx", &[1, 0, 8, 1, 0, 0, 0, 1, 5]);
    w(
        &idx_dir,
        "err-type-f32.idx",
        &idx_bytes(0x0d, &[1], &[0, 0, 0, 0]),
    );
    w(&idx_dir, "err-zero-dims.idx", &[0, 0, 8, 0]);
    w(
        &idx_dir,
        "err-five-dims.idx",
        &idx_bytes(0x08, &[1; 5], &[1]),
    );
    w(&idx_dir, "err-truncated-dims.idx", &labels[..6]);
    w(
        &idx_dir,
        "err-truncated-payload.idx",
        &labels[..labels.len() - 1],
    );
    w(
        &idx_dir,
        "err-trailing-byte.idx",
        &[labels.as_slice(), &[0]].concat(),
    );
    w(
        &idx_dir,
        "err-claims-2pow31-plus-1.idx",
        &idx_bytes(0x08, &[(1 << 31) + 1], &[1, 2, 3]),
    );
    w(
        &idx_dir,
        "err-claims-2pow31-exactly.idx",
        &idx_bytes(0x08, &[1 << 16, 1 << 15], &[1, 2, 3]),
    );
    w(
        &idx_dir,
        "err-dims-overflow-u64.idx",
        &idx_bytes(0x08, &[u32::MAX; 4], &[]),
    );
    w(
        &idx_dir,
        "err-claims-2pow31-exactly.idx.gz",
        &gzip(&idx_bytes(0x08, &[1 << 16, 1 << 15], &[1, 2, 3])),
    );
    w(
        &idx_dir,
        "err-claims-4gib.idx.gz",
        &gzip(&idx_bytes(0x08, &[u32::MAX, 2], &[9; 40])),
    );
    let gz = gzip(&images);
    w(&idx_dir, "err-truncated-gzip.idx.gz", &gz[..gz.len() - 5]);
    w(&idx_dir, "err-gzip-header-only.idx.gz", &gz[..10]);
    let mut crc = gz.clone();
    let n = crc.len();
    crc[n - 6] ^= 0xff; // CRC32 of the trailer
    w(&idx_dir, "err-gzip-bad-crc.idx.gz", &crc);
    w(
        &idx_dir,
        "err-gzip-then-garbage.idx.gz",
        &[gz.as_slice(), &[1, 2, 3, 4]].concat(),
    );
    w(
        &idx_dir,
        "err-gzip-of-truncated.idx.gz",
        &gzip(&images[..images.len() - 3]),
    );

    // ---- checkpoints ----
    let mut c = Checkpoint::new();
    c.push(
        "c1.weight",
        vec![2, 1, 3, 3],
        (0..18).map(|i| i as f32).collect(),
    )
    .unwrap();
    c.push("c1.bias", vec![2], vec![f32::NAN, f32::NEG_INFINITY])
        .unwrap();
    c.push("scalar", vec![], vec![-0.0]).unwrap();
    c.push("empty", vec![0, 3], vec![]).unwrap();
    c.metadata.insert("epoch".into(), "3".into());
    let p = Path::new("<corpus>");
    let good = c.to_bytes(p).unwrap();
    w(&ck_dir, "ok-small.safetensors", &good);
    w(
        &ck_dir,
        "ok-empty.safetensors",
        &Checkpoint::new().to_bytes(p).unwrap(),
    );
    let raw = |header: &str, data: &[u8]| {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    };
    w(
        &ck_dir,
        "ok-unpadded-header.safetensors",
        &raw(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            &[0, 0, 128, 63],
        ),
    );
    w(
        &ck_dir,
        "ok-two-zero-sized-at-same-offset.safetensors",
        &raw(
            r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[2,0],"data_offsets":[0,0]}}"#,
            &[],
        ),
    );
    let hl = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    w(&ck_dir, "err-empty.safetensors", &[]);
    w(&ck_dir, "err-len-only.safetensors", &good[..8]);
    w(
        &ck_dir,
        "err-truncated-header.safetensors",
        &good[..8 + hl / 2],
    );
    w(
        &ck_dir,
        "err-truncated-data.safetensors",
        &good[..good.len() - 1],
    );
    w(
        &ck_dir,
        "err-trailing-data.safetensors",
        &[good.as_slice(), &[0; 4]].concat(),
    );
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    w(&ck_dir, "err-header-len-u64-max.safetensors", &huge);
    huge[..8].copy_from_slice(&(100_000_001u64).to_le_bytes());
    w(&ck_dir, "err-header-len-over-limit.safetensors", &huge);
    huge[..8].copy_from_slice(&(1u64 << 31).to_le_bytes());
    w(&ck_dir, "err-header-len-2pow31.safetensors", &huge);
    let cases: [(&str, &str, usize); 16] = [
        ("err-not-json", "{nope", 0),
        ("err-json-array", "[1,2,3]", 0),
        (
            "err-dtype-f16",
            r#"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
            4,
        ),
        (
            "err-offsets-reversed",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
            4,
        ),
        (
            "err-offsets-u64-max",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551611,18446744073709551615]}}"#,
            4,
        ),
        (
            "err-offsets-over-u64",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}}"#,
            4,
        ),
        (
            "err-negative-offset",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#,
            4,
        ),
        (
            "err-shape-overflow",
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}}"#,
            4,
        ),
        (
            "err-shape-4gib-claim",
            r#"{"a":{"dtype":"F32","shape":[1073741824],"data_offsets":[0,4294967296]}}"#,
            4,
        ),
        (
            "err-shape-mismatch",
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            4,
        ),
        (
            "err-overlap",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            4,
        ),
        (
            "err-gap",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            8,
        ),
        (
            "err-metadata-not-strings",
            r#"{"__metadata__":{"epoch":3}}"#,
            0,
        ),
        (
            "err-missing-field",
            r#"{"a":{"dtype":"F32","shape":[1]}}"#,
            4,
        ),
        ("err-deep-nesting", &"[".repeat(10_000), 0),
        ("err-tensor-not-object", r#"{"a":7}"#, 0),
    ];
    for (name, header, data) in cases {
        w(
            &ck_dir,
            &format!("{name}.safetensors"),
            &raw(header, &vec![0; data]),
        );
    }
    let mut bad_utf8 = raw(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    bad_utf8[10] = 0xff;
    w(&ck_dir, "err-header-not-utf8.safetensors", &bad_utf8);
    w(&ck_dir, "err-gzipped.safetensors.gz", &gzip(&good));
}

/// Large hostile headers: the largest allocation stays proportional to the input
/// (the JSON value tree), and huge claims in a small file allocate almost nothing.
#[test]
fn checkpoint_allocation_is_bounded_by_the_input() {
    let raw = |header: &str| {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v
    };
    let long_shape = format!(
        r#"{{"a":{{"dtype":"F32","shape":[{}],"data_offsets":[0,0]}}}}"#,
        vec!["0"; 200_000].join(",")
    );
    let many_tensors = format!(
        "{{{}}}",
        (0..20_000)
            .map(|i| format!(r#""t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let long_metadata = format!(r#"{{"__metadata__":{{"k":"{}"}}}}"#, "x".repeat(1_000_000));
    let nested = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
    for (what, input) in [
        ("long shape", raw(&long_shape)),
        ("many tensors", raw(&many_tensors)),
        ("long metadata", raw(&long_metadata)),
        ("nested arrays", raw(&nested)),
    ] {
        let (r, largest, elapsed) = measured(|| Checkpoint::from_bytes(&input, Path::new("<big>")));
        let r = r.unwrap_or_else(|p| panic!("{what}: panicked: {p}"));
        eprintln!(
            "{what}: {} input bytes, largest allocation {largest} ({:.1}×), {elapsed:?}, ok = {}",
            input.len(),
            largest as f64 / input.len() as f64,
            r.is_ok()
        );
        assert!(largest <= 64 * input.len() + 256 * KIB, "{what}: {largest}");
        assert!(elapsed < MAX_PARSE_TIME, "{what}: {elapsed:?}");
    }
    // a 100-byte file claiming a 2^31-byte header, tensor or shape
    for header in [
        r#"{"a":{"dtype":"F32","shape":[536870912],"data_offsets":[0,2147483648]}}"#,
        r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#,
    ] {
        let input = [raw(header), vec![0; 4]].concat();
        let (r, largest, _) = measured(|| Checkpoint::from_bytes(&input, Path::new("<big>")));
        assert!(matches!(r, Ok(Err(Error::Checkpoint { .. }))), "{r:?}");
        assert!(largest < 64 * KIB, "{header}: {largest}");
    }
    let mut lying = raw(r#"{"a":1}"#);
    lying[..8].copy_from_slice(&(1u64 << 31).to_le_bytes());
    let (r, largest, _) = measured(|| Checkpoint::from_bytes(&lying, Path::new("<big>")));
    assert!(matches!(r, Ok(Err(Error::Checkpoint { .. }))), "{r:?}");
    assert!(largest < KIB, "lying header length: {largest}");
}
