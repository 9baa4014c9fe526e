//! The budget planner over the design's grid of step counts and budgets, with the token-step
//! fraction recomputed here from the design's rules (not from the crate's layout code).

use hsa_core::hsa::planner::{default_warmup, plan_budget, predict_token_evaluations, PRESETS};
use hsa_core::{GroupSpec, StepLayout};

/// `f = (N·W + Σ_hetero |A_i| + N·U) / (N·T)`, simulated step by step.
#[allow(clippy::manual_is_multiple_of)] // MSRV 1.85
fn simulated_fraction(
    spec: &GroupSpec,
    steps: usize,
    warmup: usize,
    tail: usize,
    n: Option<usize>,
) -> f64 {
    let sizes: Vec<f64> = match n {
        Some(n) => spec.sizes(n).into_iter().map(|s| s as f64).collect(),
        None => spec.groups().iter().map(|g| g.fraction).collect(),
    };
    let total: f64 = sizes.iter().sum();
    let mut evaluated = 0.0;
    for i in 0..steps {
        if i < warmup || i >= steps - tail {
            evaluated += total;
        } else {
            for (g, s) in spec.groups().iter().zip(&sizes) {
                if (i - warmup) % g.stride == 0 {
                    evaluated += s;
                }
            }
        }
    }
    evaluated / (total * steps as f64)
}

#[test]
fn plans_are_within_one_percent_on_the_design_grid() {
    for steps in [20, 30, 40, 50] {
        let warmup = default_warmup(steps);
        for target in [0.75, 0.5, 0.35, 0.25] {
            for n in [None, Some(1560), Some(32760)] {
                let plan = plan_budget(target, steps, warmup, 0, n).unwrap();
                let f = simulated_fraction(&plan.spec, steps, warmup, 0, n);
                assert!(
                    (f - plan.planned_fraction).abs() < 1e-12,
                    "T={steps} {target}: {f} vs {plan:?}"
                );
                assert!(
                    (f - target).abs() <= 0.01,
                    "T={steps} target {target} N={n:?}: planned {f} ({})",
                    plan.spec
                );
                assert!(plan.warning.is_none(), "{plan:?}");
                if n.is_none() {
                    println!(
                        "T={steps:2} W={warmup} target {target:4}: {} (f = {f:.4})",
                        plan.spec
                    );
                }
            }
        }
    }
}

#[test]
fn plans_with_a_tail_and_presets() {
    for (name, target) in PRESETS {
        let plan = plan_budget(*target, 40, 6, 2, Some(4096)).unwrap();
        let f = simulated_fraction(&plan.spec, 40, 6, 2, Some(4096));
        assert!((f - target).abs() <= 0.01, "{name}: {f}");
    }
}

#[test]
fn prediction_counts_every_token_evaluation() {
    let spec: GroupSpec = "0.2:1,0.3:2,0.5:4".parse().unwrap();
    for (steps, warmup, tail, n) in [(40, 6, 0, 1000), (23, 5, 3, 77), (10, 2, 0, 9)] {
        let layout = StepLayout::new(steps, warmup, tail, &[]).unwrap();
        let e = predict_token_evaluations(&spec, &layout, n, 0) as f64;
        let f = simulated_fraction(&spec, steps, warmup, tail, Some(n));
        assert!((e / (n * steps) as f64 - f).abs() < 1e-12);
    }
}

#[test]
fn budgets_below_the_dense_cost_are_refused_with_the_reason() {
    // W = 6 of 40 plus one evaluation at step 6: at least 7/40 = 0.175.
    let err = plan_budget(0.17, 40, 6, 0, None).unwrap_err().to_string();
    assert!(
        err.contains("below the minimum") && err.contains("--warmup"),
        "{err}"
    );
    assert!(plan_budget(0.18, 40, 6, 0, None).is_ok());
}
