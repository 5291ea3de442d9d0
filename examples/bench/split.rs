//! Backward-weight ÷ forward time of every convolution of a model (issue 17's target:
//! ≤ 1.5×), the weight gradient measured both unsplit and split into row partitions
//! (`ConvWeightParts` + `SumParts`) as a plan aiming at [`TARGET`] workgroups splits it, each
//! dispatch timed alone, in the same process; beside it the partitions the executor's own
//! plan for this adapter uses (1 = unsplit).

use std::sync::Arc;

use serde_json::{json, Value};
use wgcnn::graph::Graph;
use wgcnn::ops::conv::{Conv, ConvPass, ConvWeightParts};
use wgcnn::ops::Launch;
use wgcnn::plan::{Plan, Split};
use wgcnn::Backend;

use super::time_gpu;

/// Workgroups per weight gradient the measured split aims at: more than the cores of the
/// machines this runs on, as a GPU's plan would (its default is 256).
pub const TARGET: u64 = 32;

/// One convolution's times.
pub struct BwdRow {
    pub model: &'static str,
    pub layer: String,
    pub shape: String,
    /// Row partitions of the executor's plan on this adapter (1: not split).
    pub planned: usize,
    /// Row partitions of the measured split (aiming at [`TARGET`]; 1: not split).
    pub parts: usize,
    pub fwd_s: f64,
    /// The unsplit weight gradient.
    pub whole_s: f64,
    /// The split one (partials + sum), when the plan aiming at [`TARGET`] splits the layer.
    pub split_s: Option<f64>,
    /// The executor's own plan here: its partials + sum where it splits, else the unsplit
    /// launch (what a training step runs).
    pub planned_s: f64,
}

impl BwdRow {
    pub fn to_json(&self) -> Value {
        json!({
            "model": self.model, "layer": self.layer, "shape": self.shape,
            "planned_parts": self.planned, "measured_parts": self.parts,
            "forward_s": self.fwd_s,
            "backward_weight_unsplit_s": self.whole_s,
            "backward_weight_split_s": self.split_s,
            "backward_weight_planned_s": self.planned_s,
        })
    }
}

/// Indices into the launch list: forward, unsplit weight gradient, split pair (if any).
struct Layer {
    name: String,
    shape: String,
    parts: usize,
    fwd: usize,
    whole: usize,
    split: Option<(usize, usize)>,
}

/// The conv layers of `graph`'s training plan at `batch`, split as `split` says, and the
/// launches to time.
fn layers(graph: &Graph, batch: usize, split: Split) -> (Vec<Layer>, Vec<Arc<dyn Launch>>) {
    let plan = Plan::with_split(graph, batch, split).expect("plan");
    let steps = &plan.train_steps;
    let (mut out, mut ops) = (Vec::new(), Vec::<Arc<dyn Launch>>::new());
    for s in steps {
        let Some(f) = s
            .launch_as::<Conv>()
            .filter(|c| c.pass == ConvPass::Forward)
        else {
            continue;
        };
        let mine = |i: &usize| steps[*i].node == s.node;
        let Some(b) = (0..steps.len()).filter(mine).find(|&i| {
            steps[i].launch_as::<ConvWeightParts>().is_some()
                || steps[i]
                    .launch_as::<Conv>()
                    .is_some_and(|c| c.pass == ConvPass::BackwardWeight)
        }) else {
            continue;
        };
        ops.push(s.launch.clone());
        let mut layer = Layer {
            name: graph.node(s.node).name.clone(),
            shape: f.describe(),
            parts: 1,
            fwd: ops.len() - 1,
            whole: ops.len(),
            split: None,
        };
        match steps[b].launch_as::<ConvWeightParts>() {
            Some(p) => {
                ops.push(Arc::new(p.whole()));
                ops.push(steps[b].launch.clone());
                ops.push(steps[b + 1].launch.clone());
                layer.parts = p.parts;
                layer.split = Some((ops.len() - 2, ops.len() - 1));
            }
            None => ops.push(steps[b].launch.clone()),
        }
        out.push(layer);
    }
    (out, ops)
}

/// Rounds of alternate forward and planned weight-gradient timings per layer.
const ROUNDS: usize = 3;

/// Times every conv of `graph` at `batch`: forward, weight gradient unsplit and split.
pub fn bench(gpu: &Backend, model: &'static str, graph: &Graph, batch: usize) -> Vec<BwdRow> {
    let ctx = gpu.gpu_context().expect("gpu backend");
    let (planned, planned_ops) = layers(graph, batch, Split::for_device(ctx));
    let (layers, mut ops) = layers(graph, batch, Split::for_device(ctx).aiming_at(TARGET));
    // the planned launches after the measured ones
    let at = ops.len();
    ops.extend(planned_ops);
    let prog = ctx.bench_program(&ops).expect("record");
    let t = |i: usize| time_gpu(ctx, &prog, Some(i), 0.1);
    layers
        .into_iter()
        .zip(planned)
        .map(|(l, p)| {
            let whole_s = t(l.whole);
            let planned = || {
                p.split
                    .map_or_else(|| t(l.whole), |(p, s)| t(at + p) + t(at + s))
            };
            // the ratio's two sides alternately, ROUNDS times, each side's best: a slow phase
            // of the machine (seconds long on a shared VM) then slows both, not one
            let (mut fwd_s, mut planned_s) = (f64::MAX, f64::MAX);
            for _ in 0..ROUNDS {
                fwd_s = fwd_s.min(t(l.fwd));
                planned_s = planned_s.min(planned());
            }
            BwdRow {
                model,
                planned: p.parts,
                layer: l.name,
                shape: l.shape,
                parts: l.parts,
                fwd_s,
                whole_s,
                split_s: l.split.map(|(p, s)| t(p) + t(s)),
                planned_s,
            }
        })
        .collect()
}

/// The table: times and both ratios per layer.
pub fn print(rows: &[BwdRow]) {
    println!("## Conv backward-weight ÷ forward (target ≤ 1.5×; each dispatch timed alone)");
    println!();
    println!("Unsplit: one `conv_backward_weight(_rows)` launch. Split: row partitions");
    println!(
        "(`ConvWeightParts`, as a plan aiming at {TARGET} workgroups chooses them from the shape"
    );
    println!(
        "and the adapter's tiles) plus their ordered sum (`sum_parts`); \"–\" where that plan"
    );
    println!(
        "does not split the layer. \"planned\": the partitions of the executor's own plan here,"
    );
    println!("and the time of its weight gradient (what a training step runs). The forward and");
    println!(
        "the planned weight gradient are timed alternately, {ROUNDS} rounds, each side's best."
    );
    println!();
    println!("| model | layer | shape | fwd ms | bwd-w unsplit ms | ÷ fwd | parts | bwd-w split ms | ÷ fwd | planned | planned ms | ÷ fwd |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (split_ms, split_ratio) = match r.split_s {
            Some(s) => (format!("{:.2}", s * 1e3), format!("{:.2}×", s / r.fwd_s)),
            None => ("–".into(), "–".into()),
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2}× | {} | {split_ms} | {split_ratio} | {} | {:.2} | {:.2}× |",
            r.model,
            r.layer,
            r.shape,
            r.fwd_s * 1e3,
            r.whole_s * 1e3,
            r.whole_s / r.fwd_s,
            r.parts,
            r.planned,
            r.planned_s * 1e3,
            r.planned_s / r.fwd_s,
        );
    }
    println!();
}
