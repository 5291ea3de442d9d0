//! The per-step learning-rate schedules: `Schedule::OneCycle` against PyTorch's
//! `OneCycleLR` (`tests/golden/gen_schedules.py`), `Schedule::WarmupCosine`'s shape, and
//! parsing. Tolerance: f32 results of f64 formulas, relative 1e-6.

use wgcnn::train::Schedule;

#[path = "golden/schedules.rs"]
mod golden;

#[test]
fn one_cycle_matches_pytorch() {
    for &(lr, total, want) in golden::ONE_CYCLE {
        for (step, &w) in want.iter().enumerate() {
            let got = Schedule::OneCycle.lr_at(lr as f32, step as u64, total) as f64;
            assert!(
                (got - w).abs() <= 1e-6 * w.abs() + 1e-9,
                "max_lr {lr}, {total} steps, step {step}: got {got}, PyTorch {w}"
            );
        }
    }
}

#[test]
fn warmup_cosine_rises_then_anneals() {
    let s = Schedule::WarmupCosine;
    let lrs: Vec<f32> = (0..200).map(|t| s.lr_at(0.1, t, 200)).collect();
    // 5 % warm-up: 10 steps rising linearly to the base rate
    assert!((lrs[0] - 0.01).abs() < 1e-7 && (lrs[9] - 0.1).abs() < 1e-7);
    assert!(lrs[..10].windows(2).all(|w| w[1] > w[0]));
    assert!(lrs[10..].windows(2).all(|w| w[1] <= w[0]));
    assert!(lrs[199] < 1e-4);
    assert!(s.per_step() && Schedule::OneCycle.per_step() && !Schedule::Cosine.per_step());
    for name in ["one-cycle", "warmup-cosine", "cosine", "constant"] {
        assert!(name.parse::<Schedule>().is_ok(), "{name}");
    }
    let e = "linear".parse::<Schedule>().unwrap_err().to_string();
    assert!(e.contains("one-cycle"), "{e}");
}
