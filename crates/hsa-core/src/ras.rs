//! RAS-style re-ranking baseline (acceleration-landscape §1b; microsoft/RAS): the same
//! partial-step machinery as HSA, but the active set is re-chosen at every step.
//!
//! After a dense warm-up, each step evaluates a fixed number of tokens: those with the largest
//! last update, `metric_n · exp(starvation_scale · k_n)`, where `metric_n` is the mean |v| of
//! the token's last evaluated velocity and `k_n` the number of steps since it was last
//! evaluated. Tokens not evaluated keep their previous velocity and take a plain Euler step
//! with it (RAS reuses stale outputs); every token moves at every step, so no jumps. Dense
//! reset steps every R steps refresh all velocities (RAS's `error_reset_steps`).
//!
//! Differences from the microsoft/RAS code, all deliberate: its metric is the per-token std of
//! the update `dt·v` (the ranking at a step is the same as that of `std(v)`, offered as
//! [`RasMetric::Std`]); its starvation count is the cumulative number of drops over the run,
//! ours the number of consecutive skips (a token that was just refreshed has no claim); and
//! with its default `high_ratio = 1` it caches the *highest*-metric tokens, while we evaluate
//! them, as the HSA comparison needs (dynamic tokens are the ones worth refreshing).

use candle_core::{DType, Tensor};

use crate::hsa::sampler::{frozen_mask, Positions};
use crate::hsa::{apply_jumps, default_warmup, StepLayout};
use crate::stats::{GroupMap, RunStats, StatsRecorder};
use crate::{
    check_state, guided_velocity, ActiveSet, CoreError, Denoiser, Guidance, Result, Schedule,
    StepEvent,
};

/// Per-token size of the last update used for ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RasMetric {
    /// Mean |v| over the token's values (default).
    MeanAbs,
    /// Standard deviation of v over the token's values (the RAS code's `std` metric).
    Std,
}

/// Settings of a RAS-style run.
#[derive(Debug, Clone, PartialEq)]
pub struct RasConfig {
    /// Fraction of the movable tokens evaluated at each re-ranked step. Default 0.5, RAS's
    /// `sample_ratio` default. [`RasConfig::ratio_for_budget`] matches an HSA budget instead.
    pub ratio: f64,
    /// Dense warm-up steps. Default [`default_warmup`] (6 of 40), the HSA default, so both
    /// methods spend the same dense prefix (RAS's own default is 4 of 30, 13%).
    pub warmup: usize,
    /// Dense tail steps (default 0).
    pub tail: usize,
    /// A dense reset at every step `i > W` with `(i - W) mod R == 0`; 0 disables resets.
    /// Default `round(T/3)`: RAS resets at steps 12 and 22 of 30, about every 10 steps.
    pub reset_interval: usize,
    /// Starvation boost `exp(scale · k)` for a token skipped k consecutive steps. Default 0.1,
    /// RAS's `starvation_scale`. Multiplicative, so it cannot lift a zero metric; resets bound
    /// any token's staleness to R skipped steps regardless, and `max_skip` gives a hard cap.
    pub starvation_scale: f64,
    /// Tokens skipped this many consecutive steps are evaluated first (default `None`: the
    /// resets already bound staleness).
    pub max_skip: Option<usize>,
    /// Ranking metric (default mean |v|).
    pub metric: RasMetric,
    /// Expert switches: forced-dense steps, as for HSA.
    pub switch_steps: Vec<usize>,
    /// Conditioning tokens that never move; evaluated at dense steps only (as for HSA).
    pub frozen_tokens: Vec<u32>,
}

impl RasConfig {
    /// Defaults for a `steps`-step run (see the field docs).
    pub fn for_steps(steps: usize) -> Self {
        Self {
            ratio: 0.5,
            warmup: default_warmup(steps),
            tail: 0,
            reset_interval: ((steps as f64 / 3.0).round() as usize).max(2),
            starvation_scale: 0.1,
            max_skip: None,
            metric: RasMetric::MeanAbs,
            switch_steps: Vec::new(),
            frozen_tokens: Vec::new(),
        }
    }

    /// Reset steps of a `steps`-step run (inside the re-ranked phase only).
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` needs Rust 1.87; MSRV is 1.85
    pub fn reset_steps(&self, steps: usize) -> Vec<usize> {
        if self.reset_interval == 0 {
            return Vec::new();
        }
        let end = steps.saturating_sub(self.tail);
        (self.warmup + 1..end)
            .filter(|i| (i - self.warmup) % self.reset_interval == 0)
            .collect()
    }

    /// Dense steps: warm-up, tail, resets and switches.
    pub fn layout(&self, steps: usize) -> Result<StepLayout> {
        let mut forced = self.reset_steps(steps);
        forced.extend_from_slice(&self.switch_steps);
        StepLayout::new(steps, self.warmup, self.tail, &forced)
    }

    /// Tokens evaluated at a re-ranked step: `n - floor((1 - ratio)·n)`, as RAS counts.
    pub fn active_count(&self, n_movable: usize) -> usize {
        n_movable - ((1.0 - self.ratio) * n_movable as f64 + 1e-9).floor() as usize
    }

    /// The ratio whose token-step fraction over `steps` is `target` (large-N limit), with this
    /// config's warm-up, tail, resets and switches.
    pub fn ratio_for_budget(&self, target: f64, steps: usize) -> Result<f64> {
        let layout = self.layout(steps)?;
        let dense = layout.dense_steps() as f64;
        let sparse = steps as f64 - dense;
        let ratio = (target * steps as f64 - dense) / sparse;
        if !(sparse > 0.0 && ratio > 0.0 && ratio <= 1.0) {
            return Err(CoreError::InvalidSetting(format!(
                "RAS cannot reach budget {target} in {steps} steps with {dense} dense steps \
                 (warm-up, tail, resets, switches); change the budget or those settings"
            )));
        }
        Ok(ratio)
    }

    fn validate(&self) -> Result<()> {
        if !(self.ratio > 0.0 && self.ratio <= 1.0) {
            return Err(CoreError::InvalidSetting(format!(
                "RAS ratio must be in (0, 1], got {}",
                self.ratio
            )));
        }
        if !(self.starvation_scale.is_finite() && self.starvation_scale >= 0.0) {
            return Err(CoreError::InvalidSetting(format!(
                "RAS starvation scale must be a non-negative number, got {}",
                self.starvation_scale
            )));
        }
        Ok(())
    }
}

/// The outcome of [`sample_ras`].
#[derive(Debug, Clone)]
pub struct RasRun {
    pub latents: Tensor,
    /// Statistics; the group map has step counts and no groups.
    pub stats: RunStats,
    /// Schedule index each token ended at (T for moving tokens, 0 for frozen ones).
    pub final_positions: Vec<usize>,
}

/// Picks `count` of the `candidates`: first those skipped at least `max_skip` steps (longest
/// first), then by `metric · exp(scale · skipped)` descending; ties by token index. Sorted.
pub fn ras_select(
    metric: &[f64],
    skipped: &[u32],
    candidates: &[u32],
    count: usize,
    starvation_scale: f64,
    max_skip: Option<usize>,
) -> Vec<u32> {
    let forced = |t: u32| max_skip.is_some_and(|m| skipped[t as usize] as usize >= m);
    let key = |t: u32| metric[t as usize] * (starvation_scale * skipped[t as usize] as f64).exp();
    let mut order = candidates.to_vec();
    order.sort_by(|&a, &b| {
        forced(b)
            .cmp(&forced(a))
            .then_with(|| {
                if forced(a) {
                    skipped[b as usize].cmp(&skipped[a as usize])
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| key(b).total_cmp(&key(a)))
            .then(a.cmp(&b))
    });
    order.truncate(count);
    order.sort_unstable();
    order
}

fn token_metric(v: &Tensor, metric: RasMetric) -> Result<Vec<f64>> {
    let v = v.to_dtype(DType::F32)?;
    let m = match metric {
        RasMetric::MeanAbs => v.abs()?.mean(1)?,
        RasMetric::Std => v
            .broadcast_sub(&v.mean_keepdim(1)?)?
            .sqr()?
            .mean(1)?
            .sqrt()?,
    };
    Ok(m.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
}

/// RAS-style sampling over `schedule` from `noise [N, P]` (module doc for the method).
pub fn sample_ras(
    denoiser: &mut dyn Denoiser,
    noise: &Tensor,
    schedule: &Schedule,
    guidance: Guidance,
    config: &RasConfig,
    observer: &mut dyn FnMut(&StepEvent),
) -> Result<RasRun> {
    check_state(denoiser, noise)?;
    config.validate()?;
    let grid = denoiser.grid();
    let (n, p) = (grid.len(), denoiser.token_dim());
    let steps = schedule.steps();
    let layout = config.layout(steps)?;
    let (_, movable) = frozen_mask(&config.frozen_tokens, n)?;
    let count = config.active_count(movable.len());
    let branches = if guidance.uses_uncond() { 2 } else { 1 };
    let device = noise.device().clone();
    let mut recorder = StatsRecorder::new(format!("ras ratio {}", config.ratio), n, steps);
    denoiser.reset()?;

    let mut x = noise.to_dtype(DType::F32)?;
    let mut cache: Option<Tensor> = None;
    let mut metric = vec![0.0; n];
    let mut skipped = vec![0u32; n];
    let mut counts = vec![0u32; n];
    let mut positions = Positions::new(n);
    for i in 0..steps {
        let timestep = schedule.timesteps[i];
        let selected = match &cache {
            Some(_) if !layout.is_dense(i) => ras_select(
                &metric,
                &skipped,
                &movable,
                count,
                config.starvation_scale,
                config.max_skip,
            ),
            _ => (0..n as u32).collect(),
        };
        let evaluated = selected.len();
        if evaluated == n {
            let v =
                guided_velocity(denoiser, &x, timestep, guidance, None)?.to_dtype(DType::F32)?;
            metric = token_metric(&v, config.metric)?;
            skipped.iter_mut().for_each(|k| *k = 0);
            cache = Some(v);
        } else if let (Some(old), false) = (&cache, selected.is_empty()) {
            let set = ActiveSet::new(selected.clone(), n, &device)?;
            let v = guided_velocity(denoiser, &x, timestep, guidance, Some(&set))?
                .to_dtype(DType::F32)?;
            for (&t, m) in selected.iter().zip(token_metric(&v, config.metric)?) {
                metric[t as usize] = m;
            }
            for &t in &movable {
                skipped[t as usize] += 1;
            }
            for &t in &selected {
                skipped[t as usize] = 0;
            }
            let index = set
                .tensor()
                .reshape((evaluated, 1))?
                .broadcast_as((evaluated, p))?
                .contiguous()?;
            cache = Some(old.scatter(&index, &v, 0)?);
        } else {
            for &t in &movable {
                skipped[t as usize] += 1;
            }
        }
        for &t in &selected {
            counts[t as usize] += 1;
        }
        let v = cache.as_ref().expect("the first step is dense");
        let targets = vec![i + 1; movable.len()];
        let dts = positions.jump(&schedule.sigmas, i, &movable, &targets)?;
        let rows = (movable.len() < n).then_some(movable.as_slice());
        x = apply_jumps(&x, v, rows, &movable, &dts)?;
        device.synchronize()?;
        let nfe = if evaluated > 0 { branches } else { 0 };
        let event = StepEvent {
            index: i,
            steps,
            sigma: schedule.sigmas[i],
            active_fraction: evaluated as f64 / n as f64,
            nfe,
        };
        recorder.record(&event, evaluated);
        observer(&event);
    }
    let group_map = GroupMap {
        frames: grid.frames,
        height: grid.height,
        width: grid.width,
        step_counts: counts,
        groups: vec![None; n],
        strides: Vec::new(),
    };
    Ok(RasRun {
        latents: x,
        stats: recorder.finish(Some(group_map)),
        final_positions: positions.into_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_ras_and_the_hsa_warmup() {
        let c = RasConfig::for_steps(30);
        assert_eq!(
            (c.ratio, c.warmup, c.reset_interval, c.starvation_scale),
            (0.5, 5, 10, 0.1)
        );
        assert_eq!(c.reset_steps(30), vec![15, 25]);
        assert_eq!(RasConfig::for_steps(40).reset_steps(40), vec![19, 32]);
        assert_eq!(c.active_count(10), 5);
        assert_eq!(
            RasConfig {
                ratio: 0.3,
                ..c.clone()
            }
            .active_count(10),
            3
        );
    }

    #[test]
    fn selection_prefers_large_updates_and_boosts_starved_tokens() {
        let metric = [1.0, 5.0, 3.0, 3.0, 0.0];
        let all = [0, 1, 2, 3, 4];
        assert_eq!(ras_select(&metric, &[0; 5], &all, 2, 0.1, None), vec![1, 2]);
        // Skipped 12 steps: 1.0·e^1.2 = 3.32 beats 3.0.
        assert_eq!(
            ras_select(&metric, &[12, 0, 0, 0, 0], &all, 2, 0.1, None),
            vec![0, 1]
        );
        // A zero metric is never lifted by the multiplicative boost, but max_skip forces it.
        assert_eq!(
            ras_select(&metric, &[0, 0, 0, 0, 50], &all, 2, 0.1, None),
            vec![1, 2]
        );
        assert_eq!(
            ras_select(&metric, &[0, 0, 0, 0, 3], &all, 2, 0.1, Some(3)),
            vec![1, 4]
        );
    }

    #[test]
    fn ratio_for_budget_inverts_the_cost() {
        let c = RasConfig::for_steps(40);
        let r = c.ratio_for_budget(0.5, 40).unwrap();
        let dense = c.layout(40).unwrap().dense_steps() as f64;
        assert!(((dense + r * (40.0 - dense)) / 40.0 - 0.5).abs() < 1e-12);
        assert!(c.ratio_for_budget(0.1, 40).is_err());
    }
}
