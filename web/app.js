// The page: checks WebGPU, trains LeNet-5 with the wasm module (pkg/, built by
// scripts/web.sh) on WebGPU or on the CPU reference executor, and draws the progress,
// the loss/accuracy chart, the first-layer filters and the prediction of a drawn digit.
// With ?test=1 it runs the browser test (scripts/web_test.py reads window.__wgcnnTest):
// GPU vs CPU on one training step, then 200 WebGPU steps and the test accuracy.

import init, { createTrainer, compareGpuCpu } from "./pkg/wgcnn_web.js";

const $ = (id) => document.getElementById(id);
const log = (msg) => { $("log").textContent += msg + "\n"; console.log(msg); };
const BATCH = 64, LR = 0.05, SEED = 1, CHUNK = 10;

let trainer = null;
let busy = false;
const history = { loss: [], acc: [], test: [] }; // test: [step, acc]

// ---- environment --------------------------------------------------------------------
async function probeWebGpu() {
  if (!("gpu" in navigator)) {
    return { ok: false, why: "This browser has no WebGPU (navigator.gpu is missing). " +
      "Use Chrome/Edge ≥ 113, or Chromium on Linux with --enable-unsafe-webgpu " +
      "(and --enable-features=Vulkan), or Firefox ≥ 141 / Safari 26." };
  }
  let adapter = null;
  try { adapter = await navigator.gpu.requestAdapter(); } catch (e) { /* below */ }
  if (!adapter) {
    try { adapter = await navigator.gpu.requestAdapter({ forceFallbackAdapter: true }); } catch (e) { /* below */ }
  }
  if (!adapter) {
    return { ok: false, why: "navigator.gpu exists but no WebGPU adapter is available " +
      "(GPU blocklisted or WebGPU disabled)." };
  }
  const i = adapter.info || {};
  const fallback = i.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false;
  const name = [i.vendor, i.architecture, i.description].filter(Boolean).join(" ") || "unnamed adapter";
  return { ok: true, fallback, name,
    storageBuffers: adapter.limits.maxStorageBuffersPerShaderStage };
}

// ---- drawing helpers ----------------------------------------------------------------
function drawChart() {
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = "#ccc"; g.strokeRect(0.5, 0.5, c.width - 1, c.height - 1);
  const n = Math.max(history.loss.length, 2);
  const x = (i) => 4 + (c.width - 8) * i / (n - 1);
  const maxLoss = Math.max(2.4, ...history.loss);
  const line = (vals, color, scale) => {
    g.strokeStyle = color; g.beginPath();
    vals.forEach((v, i) => { const y = c.height - 4 - (c.height - 8) * scale(v); i ? g.lineTo(x(i), y) : g.moveTo(x(i), y); });
    g.stroke();
  };
  line(history.loss, "#d33", (v) => v / maxLoss);
  line(history.acc, "#36c", (v) => v);
  g.fillStyle = "#2a2";
  for (const [chunk, acc] of history.test) {
    g.beginPath(); g.arc(x(chunk), c.height - 4 - (c.height - 8) * acc, 4, 0, 7); g.fill();
  }
}

function drawFilters(w) { // [6,1,5,5]
  const c = $("filters"), g = c.getContext("2d"), cell = 10, pad = 2;
  g.clearRect(0, 0, c.width, c.height);
  for (let f = 0; f < 6; f++) {
    const v = w.slice(f * 25, f * 25 + 25);
    const lo = Math.min(...v), hi = Math.max(...v), span = hi - lo || 1;
    for (let k = 0; k < 25; k++) {
      const s = Math.round(255 * (v[k] - lo) / span);
      g.fillStyle = `rgb(${s},${s},${s})`;
      g.fillRect(pad + f * (5 * cell + pad + 10) + (k % 5) * cell, pad + Math.floor(k / 5) * cell, cell, cell);
    }
  }
}

function setEnabled(on) {
  for (const id of ["train-gpu", "train-cpu", "download"]) $(id).disabled = !on;
  if (!window.__gpuOk) $("train-gpu").disabled = true;
  if (!trainer) $("download").disabled = true;
}

// ---- training -----------------------------------------------------------------------
// Trains `steps` steps on `kind` ("gpu" | "cpu"); returns {accuracy, imagesPerSec, adapter}.
async function train(kind, steps) {
  busy = true; setEnabled(false);
  history.loss = []; history.acc = []; history.test = [];
  try {
    $("speed").textContent = `creating the ${kind === "gpu" ? "WebGPU" : "CPU"} executor (compiling kernels)…`;
    trainer = await createTrainer(kind, BATCH, LR, SEED);
    log(`backend: ${trainer.adapter}`);
    const t0 = performance.now();
    let done = 0;
    while (done < steps) {
      const k = Math.min(CHUNK, steps - done);
      const [loss, acc] = await trainer.train(k);
      done += k;
      history.loss.push(loss); history.acc.push(acc);
      const secs = (performance.now() - t0) / 1000;
      const ips = done * BATCH / secs;
      $("progress").value = done / steps;
      $("speed").textContent = `step ${done}/${steps}, loss ${loss.toFixed(4)}, train acc ${(100 * acc).toFixed(1)} %, ${ips.toFixed(0)} images/s`;
      drawChart();
    }
    const secs = (performance.now() - t0) / 1000;
    const imagesPerSec = steps * BATCH / secs;
    const [, testAcc] = await trainer.evaluate();
    history.test.push([history.loss.length - 1, testAcc]);
    drawChart();
    $("test-acc").textContent = `${(100 * testAcc).toFixed(2)} %`;
    drawFilters(await trainer.filters());
    $("speed").textContent = `${steps} steps of ${BATCH} in ${secs.toFixed(1)} s: ${imagesPerSec.toFixed(0)} images/s (${kind === "gpu" ? "WebGPU" : "CPU reference"})`;
    log(`trained ${steps} steps: test accuracy ${(100 * testAcc).toFixed(2)} %, ${imagesPerSec.toFixed(0)} images/s`);
    return { accuracy: testAcc, imagesPerSec, adapter: trainer.adapter };
  } finally {
    busy = false; setEnabled(true);
  }
}

// ---- the drawing canvas ---------------------------------------------------------------
function setupDrawing() {
  const c = $("draw"), g = c.getContext("2d");
  const clear = () => { g.fillStyle = "#000"; g.fillRect(0, 0, c.width, c.height); $("pred").textContent = "—"; $("probs").textContent = ""; };
  clear();
  let down = false, last = null;
  const pos = (e) => { const r = c.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  c.addEventListener("pointerdown", (e) => { down = true; last = pos(e); c.setPointerCapture(e.pointerId); });
  c.addEventListener("pointermove", (e) => {
    if (!down) return;
    const p = pos(e);
    g.strokeStyle = "#fff"; g.lineWidth = 14; g.lineCap = "round";
    g.beginPath(); g.moveTo(...last); g.lineTo(...p); g.stroke(); last = p;
  });
  c.addEventListener("pointerup", () => { down = false; predictDrawing(); });
  $("clear").addEventListener("click", clear);
}

// Downscales the 196×196 drawing to 28×28 (MNIST: white on black, ~20 px digit).
async function predictDrawing() {
  if (!trainer || busy) { $("pred").textContent = "train first"; return; }
  const small = document.createElement("canvas"); small.width = small.height = 28;
  const sg = small.getContext("2d");
  sg.drawImage($("draw"), 0, 0, 28, 28);
  const rgba = sg.getImageData(0, 0, 28, 28).data;
  const px = new Float32Array(784);
  for (let i = 0; i < 784; i++) px[i] = rgba[4 * i] / 255;
  busy = true;
  try {
    const p = await trainer.predict(px);
    let best = 0; p.forEach((v, i) => { if (v > p[best]) best = i; });
    $("pred").textContent = String(best);
    $("probs").innerHTML = Array.from(p, (v, i) => `<div>${i} ${"█".repeat(Math.round(v * 30)).padEnd(30, "·")} ${(100 * v).toFixed(1)} %</div>`).join("");
  } finally { busy = false; }
}

async function download() {
  const bytes = await trainer.safetensors();
  const url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
  const a = document.createElement("a"); a.href = url; a.download = "lenet5.safetensors"; a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---- the browser test (?test=1) -------------------------------------------------------
async function runTest(env) {
  const result = { done: false, ok: false, env };
  window.__wgcnnTest = result;
  try {
    if (!env.ok) throw new Error(env.why);
    log("comparing one training step: WebGPU vs the CPU executor…");
    const cmp = JSON.parse(await compareGpuCpu());
    result.compare = cmp;
    log(`GPU vs CPU, one step: ${cmp.ok ? "agree" : "DISAGREE"} (loss ${cmp.loss_cpu} vs ${cmp.loss_gpu})`);
    for (const c of cmp.checks) if (!c.ok) log(`  mismatch: ${c.what} max |diff| ${c.max_abs_diff}`);
    const r = await train("gpu", 200);
    Object.assign(result, r);
    // the drawing canvas: a "1", as a user would draw it
    const g = $("draw").getContext("2d");
    g.strokeStyle = "#fff"; g.lineWidth = 14; g.lineCap = "round";
    g.beginPath(); g.moveTo(100, 40); g.lineTo(98, 160); g.stroke();
    await predictDrawing();
    result.prediction = $("pred").textContent;
    // the download's bytes: a safetensors header naming every LeNet-5 parameter
    const st = await trainer.safetensors();
    const hlen = Number(new DataView(st.buffer, st.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(st.subarray(8, 8 + hlen)));
    result.safetensors = { bytes: st.length, tensors: Object.keys(header).filter((k) => k !== "__metadata__").sort() };
    result.ok = cmp.ok && r.accuracy >= 0.8 && /^[0-9]$/.test(result.prediction);
  } catch (e) {
    result.error = String(e && e.stack || e);
    log(`test error: ${result.error}`);
  }
  result.done = true;
}

// ---- start --------------------------------------------------------------------------
async function main() {
  try {
    await init();
  } catch (e) {
    $("env").className = "bad";
    $("env").textContent = `Could not load the wasm module (pkg/wgcnn_web.js; build it with scripts/web.sh): ${e}`;
    window.__wgcnnTest = { done: true, ok: false, error: String(e) };
    return;
  }
  const env = await probeWebGpu();
  window.__gpuOk = env.ok;
  if (env.ok) {
    $("env").textContent = `WebGPU adapter: ${env.name}${env.fallback ? " — a fallback (software) adapter: correct but slow" : ""}; ` +
      `${env.storageBuffers} storage buffers per shader stage.`;
  } else {
    $("env").className = "bad";
    $("env").textContent = `${env.why} You can still train with the CPU reference path (the same kernels' CPU twins, compiled to wasm; slower).`;
  }
  setupDrawing();
  $("train-gpu").addEventListener("click", () => train("gpu", +$("steps").value).catch((e) => log(`error: ${e}`)));
  $("train-cpu").addEventListener("click", () => train("cpu", +$("steps").value).catch((e) => log(`error: ${e}`)));
  $("download").addEventListener("click", () => download().catch((e) => log(`error: ${e}`)));
  setEnabled(true);
  if (new URLSearchParams(location.search).get("test") === "1") await runTest(env);
}

main();
