//! Run statistics (design §7): per step sigma, active fraction, NFE and wall time; per run NFE,
//! token-step fraction, wall time and a group map. Plain serde data; rendering and peak memory
//! live elsewhere.

use std::time::Instant;

use crate::{StepEvent, TokenGrid};

/// One finished step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepStats {
    pub index: usize,
    /// sigma_i, the noise level the step started from.
    pub sigma: f64,
    /// |A_i| / N.
    pub active_fraction: f64,
    /// |A_i|: tokens the model evaluated at this step.
    pub active_tokens: usize,
    /// Whether every token was evaluated (warm-up, tail, forced-dense step).
    pub dense: bool,
    /// Model calls (one per CFG branch call).
    pub nfe: usize,
    pub wall_seconds: f64,
}

/// Where the steps went: per-token evaluation count and group, over the token grid.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupMap {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Number of steps at which each token got a fresh velocity (frozen conditioning tokens
    /// count their dense-step evaluations, although they never move).
    pub step_counts: Vec<u32>,
    /// Group index per token (into `strides`); `None` for frozen tokens and for samplers
    /// without groups.
    pub groups: Vec<Option<usize>>,
    /// Stride of each group.
    pub strides: Vec<usize>,
}

impl GroupMap {
    pub fn grid(&self) -> TokenGrid {
        TokenGrid::new(self.frames, self.height, self.width)
    }
}

/// Everything a run reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunStats {
    /// Sampler name and setting, e.g. `hsa 0.2:1,0.3:2,0.5:4`.
    pub sampler: String,
    pub n_tokens: usize,
    pub total_steps: usize,
    /// Model calls over the run (CFG branches counted separately).
    pub nfe: usize,
    /// Σ_i |A_i|.
    pub token_evaluations: u64,
    /// token_evaluations / (N·T).
    pub token_step_fraction: f64,
    pub wall_seconds: f64,
    pub steps: Vec<StepStats>,
    pub group_map: Option<GroupMap>,
}

impl RunStats {
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

/// Collects [`StepStats`] as a run goes; usable as (part of) any sampler's observer.
#[derive(Debug)]
pub struct StatsRecorder {
    sampler: String,
    n_tokens: usize,
    total_steps: usize,
    start: Instant,
    last: Instant,
    steps: Vec<StepStats>,
}

impl StatsRecorder {
    /// Starts the clock.
    pub fn new(sampler: impl Into<String>, n_tokens: usize, total_steps: usize) -> Self {
        let now = Instant::now();
        Self {
            sampler: sampler.into(),
            n_tokens,
            total_steps,
            start: now,
            last: now,
            steps: Vec::with_capacity(total_steps),
        }
    }

    /// Records a step event, timing it from the previous event (or the start). The active
    /// token count is taken from the event's fraction.
    pub fn observe(&mut self, event: &StepEvent) {
        let tokens = (event.active_fraction * self.n_tokens as f64).round() as usize;
        self.record(event, tokens);
    }

    /// Records a step whose exact active token count is known.
    pub fn record(&mut self, event: &StepEvent, active_tokens: usize) {
        let now = Instant::now();
        let wall_seconds = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.steps.push(StepStats {
            index: event.index,
            sigma: event.sigma,
            active_fraction: event.active_fraction,
            active_tokens,
            dense: active_tokens == self.n_tokens,
            nfe: event.nfe,
            wall_seconds,
        });
    }

    /// Totals over the recorded steps.
    pub fn finish(self, group_map: Option<GroupMap>) -> RunStats {
        let token_evaluations: u64 = self.steps.iter().map(|s| s.active_tokens as u64).sum();
        let denom = (self.n_tokens * self.total_steps).max(1) as f64;
        RunStats {
            sampler: self.sampler,
            n_tokens: self.n_tokens,
            total_steps: self.total_steps,
            nfe: self.steps.iter().map(|s| s.nfe).sum(),
            token_evaluations,
            token_step_fraction: token_evaluations as f64 / denom,
            wall_seconds: self.start.elapsed().as_secs_f64(),
            steps: self.steps,
            group_map,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_json_fields() {
        let mut rec = StatsRecorder::new("fm", 10, 2);
        for (index, fraction) in [(0, 1.0), (1, 0.3)] {
            rec.observe(&StepEvent {
                index,
                steps: 2,
                sigma: 1.0 - index as f64 * 0.5,
                active_fraction: fraction,
                nfe: 2,
            });
        }
        let stats = rec.finish(None);
        assert_eq!(stats.nfe, 4);
        assert_eq!(stats.token_evaluations, 13);
        assert!((stats.token_step_fraction - 0.65).abs() < 1e-12);
        assert!(stats.steps[0].dense && !stats.steps[1].dense);
        let json: serde_json::Value = serde_json::from_str(&stats.to_json().unwrap()).unwrap();
        for key in ["nfe", "token_step_fraction", "wall_seconds", "steps"] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert_eq!(json["steps"][1]["active_fraction"], 0.3);
        assert!(json["steps"][0]["sigma"].is_number());
        let back: RunStats = serde_json::from_value(json).unwrap();
        assert_eq!((back.nfe, back.steps.len()), (4, 2));
    }
}
