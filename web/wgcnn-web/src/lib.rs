//! wgcnn in the browser: LeNet-5 trained on the bundled MNIST subset (embedded here) with
//! WebGPU (wgpu's browser backend) or with the CPU reference executor, both compiled into
//! this one wasm module. `web/app.js` drives it; `web/test.js` runs the browser test.
//!
//! Every call that reads the device back is async (a JS `Promise`): nothing blocks the
//! page. One call at a time: a second call while one is running is refused ("busy").

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use js_sys::{Float32Array, Uint8Array};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use wasm_bindgen::prelude::*;
use wgcnn::checkpoint::Checkpoint;
use wgcnn::data::parse_idx;
use wgcnn::exec::{Executor, NamedTensor};
use wgcnn::plan::Mode;
use wgcnn::{nn, Backend, Optimizer, Targets};

const TRAIN_IMAGES: &[u8] = include_bytes!("../../../data/mnist-subset/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../../data/mnist-subset/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../../data/mnist-subset/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../../data/mnist-subset/t10k-labels-idx1-ubyte.gz");

/// Pixels per image (1×28×28).
const PIXELS: usize = 28 * 28;

/// The MNIST example's normalisation: `(b/255 − 0.1307) / 0.3081`.
fn normalize(v: f32) -> f32 {
    (v - 0.1307) / 0.3081
}

#[wasm_bindgen]
extern "C" {
    /// `console.log`, for progress the page does not show.
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn console_log(s: &str);
}

fn js_err(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// One split, normalised: `x` is `[n, 1, 28, 28]`, `y` the labels.
struct Split {
    x: Vec<f32>,
    y: Vec<u32>,
}

impl Split {
    fn load(images: &[u8], labels: &[u8], name: &str) -> Result<Split, JsValue> {
        let im = parse_idx(images, Path::new(name)).map_err(js_err)?;
        let lb = parse_idx(labels, Path::new(name)).map_err(js_err)?;
        if im.dims.len() != 3 || im.dims[1] * im.dims[2] != PIXELS || lb.dims != [im.dims[0]] {
            return Err(js_err(format!(
                "{name}: images {:?} and labels {:?} are not N×28×28 and N",
                im.dims, lb.dims
            )));
        }
        Ok(Split {
            x: im
                .data
                .iter()
                .map(|&b| normalize(b as f32 / 255.0))
                .collect(),
            y: lb.data.iter().map(|&l| l as u32).collect(),
        })
    }

    fn len(&self) -> usize {
        self.y.len()
    }

    fn images(&self, idx: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(idx.len() * PIXELS);
        for &i in idx {
            out.extend_from_slice(&self.x[i * PIXELS..(i + 1) * PIXELS]);
        }
        out
    }
}

/// The embedded MNIST subset (8,000 training and 2,000 test digits).
fn dataset() -> Result<(Split, Split), JsValue> {
    Ok((
        Split::load(TRAIN_IMAGES, TRAIN_LABELS, "mnist-subset/train")?,
        Split::load(TEST_IMAGES, TEST_LABELS, "mnist-subset/t10k")?,
    ))
}

/// `"gpu"`: WebGPU (errors if the page has no adapter); `"cpu"`: the reference executor.
async fn backend(kind: &str) -> Result<Backend, JsValue> {
    match kind {
        "gpu" => Backend::gpu_async().await.map_err(js_err),
        "cpu" => Ok(Backend::cpu()),
        other => Err(js_err(format!("unknown backend '{other}' (gpu|cpu)"))),
    }
}

struct State {
    ex: Executor,
    train: Split,
    test: Split,
    batch: usize,
    order: Vec<usize>,
    cursor: usize,
    rng: rand::rngs::StdRng,
}

impl State {
    /// The next training batch's indices, reshuffling at each epoch's end (the last
    /// partial batch is dropped).
    fn next_batch(&mut self) -> Vec<usize> {
        if self.cursor + self.batch > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        let b = self.order[self.cursor..self.cursor + self.batch].to_vec();
        self.cursor += self.batch;
        b
    }
}

/// A LeNet-5 training run on the embedded digits.
#[wasm_bindgen]
pub struct Trainer {
    state: Rc<RefCell<Option<State>>>,
    adapter: String,
    train_len: usize,
    test_len: usize,
}

/// Creates a trainer on `backend` (`"gpu"` or `"cpu"`): LeNet-5, momentum SGD (`lr`,
/// 0.9), batches of `batch`, parameters and shuffling from `seed`.
#[wasm_bindgen(js_name = createTrainer)]
pub async fn create_trainer(
    backend_kind: String,
    batch: usize,
    lr: f32,
    seed: u32,
) -> Result<Trainer, JsValue> {
    let backend = backend(&backend_kind).await?;
    let adapter = backend.describe();
    let graph = nn::lenet5().map_err(js_err)?;
    let ex = Executor::new(
        &backend,
        &graph,
        batch,
        Optimizer::momentum(lr, 0.9),
        seed as u64,
    )
    .map_err(js_err)?;
    let (train, test) = dataset()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed as u64);
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rng);
    let (train_len, test_len) = (train.len(), test.len());
    Ok(Trainer {
        train_len,
        test_len,
        state: Rc::new(RefCell::new(Some(State {
            ex,
            train,
            test,
            batch,
            order,
            cursor: 0,
            rng,
        }))),
        adapter,
    })
}

/// Runs `$body` (an expression of type `Result<JsValue, JsValue>`, with `$s: &mut State`) as
/// a JS promise, holding the state for the duration: a second call meanwhile is refused.
macro_rules! with_state {
    ($self:ident, $s:ident, $body:block) => {{
        let cell = $self.state.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut owned = cell
                .borrow_mut()
                .take()
                .ok_or_else(|| js_err("busy: wait for the previous call to finish"))?;
            let r: Result<JsValue, JsValue> = async {
                let $s = &mut owned;
                $body
            }
            .await;
            *cell.borrow_mut() = Some(owned);
            r
        })
    }};
}

#[wasm_bindgen]
impl Trainer {
    /// The backend and adapter, e.g. `gpu: … (BrowserWebGpu, Cpu, WebGPU fallback adapter)`.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }

    /// Training images.
    #[wasm_bindgen(getter, js_name = trainLen)]
    pub fn train_len(&self) -> usize {
        self.train_len
    }

    /// Test images.
    #[wasm_bindgen(getter, js_name = testLen)]
    pub fn test_len(&self) -> usize {
        self.test_len
    }

    /// Runs `steps` training steps; resolves to `[mean loss, accuracy, samples]` over them
    /// (one metrics readback at the end).
    pub fn train(&self, steps: usize) -> js_sys::Promise {
        with_state!(self, s, {
            for _ in 0..steps {
                let idx = s.next_batch();
                let x = s.train.images(&idx);
                let y: Vec<u32> = idx.iter().map(|&i| s.train.y[i]).collect();
                s.ex.train_step(&x, Targets::Classes(&y)).map_err(js_err)?;
            }
            let m = s.ex.take_metrics_async(Mode::Train).await.map_err(js_err)?;
            Ok(Float32Array::from(&[m.loss, m.accuracy, m.samples as f32][..]).into())
        })
    }

    /// Evaluates the test split; resolves to `[mean loss, accuracy, samples]`.
    pub fn evaluate(&self) -> js_sys::Promise {
        with_state!(self, s, {
            let n = s.test.len();
            let mut at = 0;
            while at < n {
                let idx: Vec<usize> = (at..(at + s.batch).min(n)).collect();
                let x = s.test.images(&idx);
                let y: Vec<u32> = idx.iter().map(|&i| s.test.y[i]).collect();
                s.ex.eval_batch(&x, Targets::Classes(&y)).map_err(js_err)?;
                at += idx.len();
            }
            let m = s.ex.take_metrics_async(Mode::Eval).await.map_err(js_err)?;
            Ok(Float32Array::from(&[m.loss, m.accuracy, m.samples as f32][..]).into())
        })
    }

    /// The first layer's six 5×5 filters (`c1.weight`, `[6, 1, 5, 5]`, row-major).
    pub fn filters(&self) -> js_sys::Promise {
        with_state!(self, s, {
            let p = s.ex.parameters_async().await.map_err(js_err)?;
            let (_, _, w) = p
                .into_iter()
                .find(|(n, _, _)| n == "c1.weight")
                .ok_or_else(|| js_err("no c1.weight"))?;
            Ok(Float32Array::from(&w[..]).into())
        })
    }

    /// Class probabilities `[10]` of one 28×28 image given as 784 values in `0..=1`
    /// (white digit on black, as MNIST).
    pub fn predict(&self, pixels: Vec<f32>) -> js_sys::Promise {
        with_state!(self, s, {
            if pixels.len() != PIXELS {
                return Err(js_err(format!("{} pixels, expected 784", pixels.len())));
            }
            let x: Vec<f32> = pixels.iter().map(|&v| normalize(v)).collect();
            let logits = s.ex.predict_async(&x).await.map_err(js_err)?;
            let row: Vec<f32> = logits.row(0).to_vec();
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            let p: Vec<f32> = e.iter().map(|v| v / sum).collect();
            Ok(Float32Array::from(&p[..]).into())
        })
    }

    /// The trained model as safetensors bytes with PyTorch's parameter names
    /// (`c1.weight`, `c1.bias`, …, `f7.bias`): `model.load_state_dict(load_file(path))`.
    pub fn safetensors(&self) -> js_sys::Promise {
        with_state!(self, s, {
            let mut c = Checkpoint::new();
            let mut all = s.ex.parameters_async().await.map_err(js_err)?;
            all.extend(s.ex.buffers_async().await.map_err(js_err)?);
            for (name, shape, v) in all {
                c.push(name, shape, v).map_err(js_err)?;
            }
            c.metadata.insert("model".into(), "lenet5".into());
            c.metadata
                .insert("steps".into(), s.ex.step_count().to_string());
            let bytes = c
                .to_bytes(Path::new("lenet5.safetensors"))
                .map_err(js_err)?;
            Ok(Uint8Array::from(&bytes[..]).into())
        })
    }
}

/// Largest `|a − b| − (atol + rtol·|b|)` over two tensors (≤ 0: within tolerance), and
/// the worst absolute difference.
fn excess(a: &[f32], b: &[f32], atol: f32, rtol: f32) -> (f32, f32) {
    let mut worst = f32::NEG_INFINITY;
    let mut diff = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        let d = if d.is_nan() { f32::INFINITY } else { d };
        diff = diff.max(d);
        worst = worst.max(d - (atol + rtol * y.abs()));
    }
    if a.len() != b.len() || a.is_empty() {
        worst = f32::INFINITY;
    }
    (worst, diff)
}

/// The browser test's check: one LeNet-5 training step on 64 training digits, WebGPU
/// against the CPU executor in this module (same seed): the logits before the step, the
/// loss, every gradient and every updated parameter must agree within the native test
/// suite's tolerances (`atol 1e-4 + rtol 2e-3`; loss `1e-3` relative). Resolves to a JSON
/// report `{ok, adapter, loss_cpu, loss_gpu, checks: [{what, max_abs_diff, ok}]}`.
#[wasm_bindgen(js_name = compareGpuCpu)]
pub async fn compare_gpu_cpu() -> Result<String, JsValue> {
    let (atol, rtol) = (1e-4, 2e-3);
    let n = 64;
    let gpu = backend("gpu").await?;
    console_log(&format!("compare: {}", gpu.describe()));
    let adapter = gpu.describe();
    let graph = nn::lenet5().map_err(js_err)?;
    let opt = Optimizer::momentum(0.05, 0.9);
    let mut c = Executor::new(&Backend::cpu(), &graph, n, opt, 11).map_err(js_err)?;
    console_log("compare: CPU executor ready");
    let mut g = Executor::new(&gpu, &graph, n, opt, 11).map_err(js_err)?;
    console_log("compare: WebGPU executor ready (kernels compiled)");
    let (train, _) = dataset()?;
    let idx: Vec<usize> = (0..n).collect();
    let x = train.images(&idx);
    let y: Vec<u32> = train.y[..n].to_vec();
    let mut checks: Vec<(String, f32, bool)> = Vec::new();
    let mut check = |what: String, a: &[f32], b: &[f32]| {
        let (w, d) = excess(a, b, atol, rtol);
        checks.push((what, d, w <= 0.0));
    };
    let lc = c.predict_async(&x).await.map_err(js_err)?;
    console_log("compare: CPU logits");
    let lg = g.predict_async(&x).await.map_err(js_err)?;
    console_log("compare: WebGPU logits");
    let flat = |a: &wgcnn::ndarray::Array2<f32>| a.iter().copied().collect::<Vec<f32>>();
    check("logits".into(), &flat(&lg), &flat(&lc));
    c.train_step(&x, Targets::Classes(&y)).map_err(js_err)?;
    g.train_step(&x, Targets::Classes(&y)).map_err(js_err)?;
    let mc = c.take_metrics_async(Mode::Train).await.map_err(js_err)?;
    let mg = g.take_metrics_async(Mode::Train).await.map_err(js_err)?;
    console_log("compare: one training step each");
    let loss_ok = mc.loss.is_finite() && (mc.loss - mg.loss).abs() <= 1e-3 * mc.loss.abs().max(1.0);
    checks.push(("loss".into(), (mc.loss - mg.loss).abs(), loss_ok));
    let pairs = |a: Vec<NamedTensor>, b: Vec<NamedTensor>| a.into_iter().zip(b);
    let grads = pairs(
        g.gradients_async().await.map_err(js_err)?,
        c.gradients_async().await.map_err(js_err)?,
    );
    for (a, b) in grads {
        let same = a.0 == b.0 && a.1 == b.1;
        let (w, d) = excess(&a.2, &b.2, atol, rtol);
        checks.push((format!("grad {}", a.0), d, same && w <= 0.0));
    }
    let params = pairs(
        g.parameters_async().await.map_err(js_err)?,
        c.parameters_async().await.map_err(js_err)?,
    );
    for (a, b) in params {
        let same = a.0 == b.0 && a.1 == b.1;
        let (w, d) = excess(&a.2, &b.2, atol, rtol);
        checks.push((format!("param {}", a.0), d, same && w <= 0.0));
    }
    let ok = checks.len() == 2 + 2 * 10 && checks.iter().all(|c| c.2);
    let list: Vec<serde_json::Value> = checks
        .iter()
        .map(|(w, d, o)| serde_json::json!({"what": w, "max_abs_diff": d, "ok": o}))
        .collect();
    Ok(serde_json::json!({
        "ok": ok,
        "adapter": adapter,
        "loss_cpu": mc.loss,
        "loss_gpu": mg.loss,
        "checks": list,
    })
    .to_string())
}
