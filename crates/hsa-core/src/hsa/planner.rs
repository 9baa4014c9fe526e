//! Budget planner and cost accounting (design §5).
//!
//! Cost is counted in token evaluations: `E = N·W + Σ_hetero |A_i| + N·U` (forced-dense steps
//! count N), and the token-step fraction is `f = E / (N·T)`. The planner turns a target `f`
//! into a group spec for a given layout, computing `f` exactly by simulating the active
//! schedule (strides count `ceil(L / m)` hetero evaluations, not `L / m`).
//!
//! Shape of a plan (a choice, see [`plan_budget_for`]): strides from the ladder 1, 2, 4, 8, ...
//! and geometric fractions `p_k ∝ r^k`. The ladder prefix is the shortest one for which
//! `r <= 2`, i.e. for which no calmer group receives more token evaluations per step than
//! the group before it (`p_k/m_k` non-increasing): the most dynamic tokens keep at least as
//! much compute as any calmer group, and strides stay as short as the budget allows.

use super::{Group, GroupSpec, StepLayout};
use crate::{CoreError, Result};

/// How far (absolute) the planned token-step fraction may be from the target.
pub const BUDGET_TOLERANCE: f64 = 0.01;

/// Largest growth factor between consecutive group fractions the planner accepts before it
/// extends the stride ladder (see the module doc).
pub const MAX_FRACTION_RATIO: f64 = 2.0;

/// Named budgets: `hsa-75`, `hsa-50`, `hsa-25`.
pub const PRESETS: &[(&str, f64)] = &[("hsa-75", 0.75), ("hsa-50", 0.5), ("hsa-25", 0.25)];

/// The budget of a preset name.
pub fn preset_budget(name: &str) -> Option<f64> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|&(_, b)| b)
}

/// Reads a budget: a preset name or a number in (0, 1].
pub fn parse_budget(s: &str) -> Result<f64> {
    if let Some(b) = preset_budget(s) {
        return Ok(b);
    }
    match s.parse::<f64>() {
        Ok(b) if b > 0.0 && b <= 1.0 => Ok(b),
        _ => Err(CoreError::InvalidSetting(format!(
            "budget '{s}' is neither a preset (hsa-75, hsa-50, hsa-25) nor a number in (0, 1]"
        ))),
    }
}

/// Default warm-up for T steps: 6 at T = 40, otherwise `round(0.15·T)` (the same share),
/// at least 2 because the default score (relative change) needs two warm-up velocities, and
/// at most T.
pub fn default_warmup(steps: usize) -> usize {
    ((0.15 * steps as f64).round() as usize).max(2).min(steps)
}

/// Token evaluations of a run: `n_movable` tokens split by `spec`, each group evaluated at its
/// stride's evaluation steps, plus `n_frozen` conditioning tokens evaluated at dense steps.
pub fn predict_token_evaluations(
    spec: &GroupSpec,
    layout: &StepLayout,
    n_movable: usize,
    n_frozen: usize,
) -> u64 {
    let groups: u64 = spec
        .sizes(n_movable)
        .iter()
        .zip(spec.groups())
        .map(|(&s, g)| (s * layout.evaluations(g.stride)) as u64)
        .sum();
    groups + (n_frozen * layout.dense_steps()) as u64
}

/// Exact token-step fraction of `spec` on `layout`: with `n_tokens` from the actual group sizes,
/// otherwise per token from the fractions (the large-N limit).
pub fn token_step_fraction(spec: &GroupSpec, layout: &StepLayout, n_tokens: Option<usize>) -> f64 {
    let t = layout.steps() as f64;
    match n_tokens {
        Some(n) if n > 0 => predict_token_evaluations(spec, layout, n, 0) as f64 / (n as f64 * t),
        _ => {
            spec.groups()
                .iter()
                .map(|g| g.fraction * layout.evaluations(g.stride) as f64)
                .sum::<f64>()
                / t
        }
    }
}

/// Strides 1, 2, 4, ... up to the first one that spans the whole heterogeneous phase (a token
/// of that stride is evaluated once in it; longer strides would cost the same).
pub fn stride_ladder(layout: &StepLayout) -> Vec<usize> {
    let phase = layout.hetero_range().len();
    let mut ladder = vec![1];
    while *ladder.last().unwrap_or(&1) < phase {
        ladder.push(ladder[ladder.len() - 1] * 2);
    }
    ladder
}

/// A planned spec and how close it gets.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BudgetPlan {
    pub spec: GroupSpec,
    /// Exact token-step fraction of `spec` (with the actual group sizes when N was given).
    pub planned_fraction: f64,
    /// Set when the target could not be met within [`BUDGET_TOLERANCE`].
    pub warning: Option<String>,
}

/// [`plan_budget_for`] with no forced-dense steps.
pub fn plan_budget(
    target: f64,
    steps: usize,
    warmup: usize,
    tail: usize,
    n_tokens: Option<usize>,
) -> Result<BudgetPlan> {
    plan_budget_for(
        target,
        &StepLayout::new(steps, warmup, tail, &[])?,
        n_tokens,
    )
}

/// Chooses a group spec whose token-step fraction on `layout` is `target` (module doc for the
/// shape). Errors when the target is below what the dense steps plus one evaluation of every
/// token at the first heterogeneous step cost; warns (nearest feasible) when token granularity
/// keeps the plan more than 1% away.
pub fn plan_budget_for(
    target: f64,
    layout: &StepLayout,
    n_tokens: Option<usize>,
) -> Result<BudgetPlan> {
    if !(target.is_finite() && target > 0.0 && target <= 1.0) {
        return Err(CoreError::InvalidSetting(format!(
            "budget must be in (0, 1], got {target}"
        )));
    }
    if n_tokens == Some(0) {
        return Err(CoreError::InvalidSetting(
            "cannot plan a budget for 0 tokens".into(),
        ));
    }
    let t = layout.steps() as f64;
    let ladder = stride_ladder(layout);
    let evals: Vec<f64> = ladder
        .iter()
        .map(|&m| layout.evaluations(m) as f64)
        .collect();
    let describe = format!(
        "T = {}, W = {}, U = {}",
        layout.steps(),
        layout.warmup(),
        layout.tail()
    );
    if layout.hetero_range().is_empty() && target < 1.0 {
        return Err(CoreError::InvalidSetting(format!(
            "budget {target} is impossible with {describe}: warm-up and tail cover every step, so \
             every token is evaluated at every step (f = 1); lower --warmup/--tail"
        )));
    }
    let f_min = evals[evals.len() - 1] / t;
    if target < f_min {
        return Err(CoreError::InvalidSetting(format!(
            "budget {target} is below the minimum {f_min:.4} for {describe}: the {} dense steps \
             plus one evaluation of every token at the first heterogeneous step already cost \
             that; lower --warmup/--tail, raise --steps, or raise the budget",
            layout.dense_steps()
        )));
    }
    let h = target * t;
    let fractions = if h >= t || ladder.len() == 1 {
        vec![1.0]
    } else {
        let mut chosen = None;
        for k in 2..=ladder.len() {
            if evals[k - 1] < h {
                let x = solve_log_ratio(&evals[..k], h);
                chosen = Some(geometric(k, x));
                if x <= MAX_FRACTION_RATIO.ln() {
                    break;
                }
            }
        }
        chosen.unwrap_or_else(|| geometric(ladder.len(), f64::INFINITY))
    };
    let units = n_tokens.unwrap_or(10_000);
    let mut counts = apportion(&fractions, units);
    if let Some(n) = n_tokens {
        improve_counts(&mut counts, &evals, target * t * n as f64);
    }
    let groups = counts
        .iter()
        .zip(&ladder)
        .enumerate()
        .filter(|&(k, (&c, _))| k == 0 || c > 0)
        .map(|(_, (&c, &stride))| Group {
            fraction: c as f64 / units as f64,
            stride,
        })
        .collect();
    let spec = GroupSpec::new(groups)?;
    let planned_fraction = token_step_fraction(&spec, layout, n_tokens);
    let warning = ((planned_fraction - target).abs() > BUDGET_TOLERANCE).then(|| {
        format!(
            "budget {target} cannot be met within {BUDGET_TOLERANCE} with {describe} and {} \
             tokens; using the nearest feasible spec {spec} (f = {planned_fraction:.4})",
            n_tokens.map_or("these".to_string(), |n| n.to_string())
        )
    });
    Ok(BudgetPlan {
        spec,
        planned_fraction,
        warning,
    })
}

/// Fractions `∝ e^{k·x}`, k = 0..len (x = +inf puts everything on the last stride).
fn geometric(len: usize, x: f64) -> Vec<f64> {
    if x.is_infinite() {
        let mut p = vec![0.0; len];
        p[len - 1] = 1.0;
        return p;
    }
    let top = x.max(0.0) * (len - 1) as f64;
    let w: Vec<f64> = (0..len).map(|k| (k as f64 * x - top).exp()).collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|w| w / s).collect()
}

/// Solves `Σ p_k(x)·evals_k = h` for `x = ln r` by bisection (the cost falls as x grows).
fn solve_log_ratio(evals: &[f64], h: f64) -> f64 {
    let cost = |x: f64| {
        geometric(evals.len(), x)
            .iter()
            .zip(evals)
            .map(|(p, e)| p * e)
            .sum::<f64>()
    };
    let (mut lo, mut hi) = (-60.0, 60.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cost(mid) > h {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Integer counts summing to `total` proportional to `p` (largest remainder), the first at
/// least 1 so that the stride-1 group exists.
fn apportion(p: &[f64], total: usize) -> Vec<usize> {
    let exact: Vec<f64> = p.iter().map(|&p| p * total as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|&e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let mut left = total.saturating_sub(counts.iter().sum());
    for &k in order.iter().cycle().take(left.min(p.len() * 2)) {
        if left == 0 {
            break;
        }
        counts[k] += 1;
        left -= 1;
    }
    if counts[0] == 0 && total > 0 {
        let big = (0..counts.len()).max_by_key(|&k| counts[k]).unwrap_or(0);
        counts[big] -= 1;
        counts[0] += 1;
    }
    counts
}

/// Moves single tokens between groups while that brings `Σ counts_k·evals_k` closer to `goal`.
fn improve_counts(counts: &mut [usize], evals: &[f64], goal: f64) {
    loop {
        let total: f64 = counts.iter().zip(evals).map(|(&c, e)| c as f64 * e).sum();
        let mut best = ((total - goal).abs(), None);
        for from in 0..counts.len() {
            let floor = usize::from(from == 0);
            if counts[from] <= floor {
                continue;
            }
            for to in 0..counts.len() {
                let gap = (total - evals[from] + evals[to] - goal).abs();
                if to != from && gap < best.0 - 1e-9 {
                    best = (gap, Some((from, to)));
                }
            }
        }
        match best.1 {
            Some((from, to)) => {
                counts[from] -= 1;
                counts[to] += 1;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_budget_strings() {
        assert_eq!(parse_budget("hsa-50").unwrap(), 0.5);
        assert_eq!(parse_budget("0.35").unwrap(), 0.35);
        assert!(parse_budget("1.5").is_err());
        assert!(parse_budget("fast").is_err());
    }

    #[test]
    fn default_warmup_is_six_at_forty_steps() {
        assert_eq!(default_warmup(40), 6);
        assert_eq!(default_warmup(20), 3);
        assert_eq!(default_warmup(50), 8);
        assert_eq!(default_warmup(4), 2);
        assert_eq!(default_warmup(1), 1);
    }

    #[test]
    fn ladder_ends_at_the_phase_length() {
        let l = StepLayout::new(40, 6, 0, &[]).unwrap();
        assert_eq!(stride_ladder(&l), vec![1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(l.evaluations(64), 7);
        let l = StepLayout::new(10, 2, 0, &[]).unwrap();
        assert_eq!(stride_ladder(&l), vec![1, 2, 4, 8]);
    }

    #[test]
    fn exact_fraction_counts_the_rounded_up_strides() {
        let l = StepLayout::new(40, 6, 0, &[]).unwrap();
        let spec: GroupSpec = "0.2:1,0.3:2,0.5:4".parse().unwrap();
        // Hetero phase of 34 steps: strides 1, 2, 4 evaluate 34, 17, 9 times.
        let f = (6.0 + 0.2 * 34.0 + 0.3 * 17.0 + 0.5 * 9.0) / 40.0;
        assert!((token_step_fraction(&spec, &l, None) - f).abs() < 1e-12);
        assert_eq!(
            predict_token_evaluations(&spec, &l, 10, 0),
            10 * 6 + 2 * 34 + 3 * 17 + 5 * 9
        );
        assert_eq!(
            predict_token_evaluations(&spec, &l, 10, 2),
            10 * 6 + 2 * 34 + 3 * 17 + 5 * 9 + 2 * 6
        );
    }

    #[test]
    fn plans_hit_the_target_and_keep_fractions_graded() {
        let plan = plan_budget(0.75, 40, 6, 0, None).unwrap();
        assert_eq!(plan.spec.strides(), vec![1, 2]);
        assert!((plan.planned_fraction - 0.75).abs() < 1e-3, "{plan:?}");
        assert!(plan.warning.is_none());
        let plan = plan_budget(0.5, 40, 6, 0, Some(32760)).unwrap();
        assert!((plan.planned_fraction - 0.5).abs() < 1e-4, "{plan:?}");
        let p: Vec<f64> = plan.spec.groups().iter().map(|g| g.fraction).collect();
        assert!(
            p.windows(2)
                .all(|w| w[1] <= MAX_FRACTION_RATIO * w[0] + 1e-3),
            "{p:?}"
        );
        assert_eq!(
            plan_budget(1.0, 40, 6, 0, None).unwrap().spec,
            GroupSpec::dense()
        );
    }

    #[test]
    fn infeasible_budgets_are_errors_or_warnings() {
        let e = plan_budget(0.1, 40, 6, 0, None).unwrap_err().to_string();
        assert!(e.contains("below the minimum 0.1750"), "{e}");
        assert!(plan_budget(0.5, 10, 6, 4, None)
            .unwrap_err()
            .to_string()
            .contains("every step"));
        assert!(plan_budget(0.0, 40, 6, 0, None).is_err());
        assert!(plan_budget(0.5, 40, 30, 20, None).is_err());
        // Two tokens cannot express 0.5 exactly: nearest feasible, with a warning.
        let plan = plan_budget(0.5, 40, 6, 0, Some(2)).unwrap();
        assert!(plan.warning.is_some(), "{plan:?}");
        let exact = token_step_fraction(
            &plan.spec,
            &StepLayout::new(40, 6, 0, &[]).unwrap(),
            Some(2),
        );
        assert_eq!(plan.planned_fraction, exact);
    }

    #[test]
    fn apportion_sums_to_the_total() {
        assert_eq!(apportion(&[0.5, 0.5], 3).iter().sum::<usize>(), 3);
        assert_eq!(apportion(&[0.0, 1.0], 5), vec![1, 4]);
        assert_eq!(apportion(&[0.2, 0.3, 0.5], 10_000), vec![2000, 3000, 5000]);
    }
}
