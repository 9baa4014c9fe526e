//! The HSA sampler (design §2-§3): warm-up, allocation, heterogeneous phase with the cached
//! Euler update, tail; expert switches as forced-dense steps; frozen conditioning tokens.

use candle_core::{DType, Tensor};

use super::allocation::{allocate, score_window, Allocation, ScoreAccumulator, ScoreKind};
use super::{apply_jumps, default_warmup, GroupSpec, StepLayout};
use crate::stats::{GroupMap, RunStats, StatsRecorder};
use crate::{
    check_state, guided_velocity, ActiveSet, CoreError, Denoiser, Guidance, Result, Schedule,
    StepEvent,
};

/// Settings of one HSA run.
#[derive(Debug, Clone, PartialEq)]
pub struct HsaConfig {
    /// Fractions and strides of the groups.
    pub groups: GroupSpec,
    /// Dense warm-up steps W (default [`default_warmup`]: 6 at T = 40).
    pub warmup: usize,
    /// Dense tail steps U (default 0).
    pub tail: usize,
    /// Allocation score (default relative change).
    pub score: ScoreKind,
    /// Max-over-3x3 spatial smoothing of the score before ranking (default off).
    pub smoothing: bool,
    /// Steps at which the model changes (Wan2.2 A14B expert boundary). Each is a forced-dense
    /// step: every token is evaluated, which rebuilds the new expert's K/V cache. Jumps never
    /// cross such a step (see [`StepLayout`]), so every token sits exactly at sigma_s when it
    /// begins; afterwards each group continues on its original grid `(i - W) mod m`.
    pub switch_steps: Vec<usize>,
    /// Conditioning tokens that never move (TI2V first frame). They are evaluated at dense
    /// steps, so their K/V is in the cache, but never in a partial active set, take no part in
    /// the allocation, and their state is never updated (their velocity is ignored).
    pub frozen_tokens: Vec<u32>,
}

impl HsaConfig {
    /// `groups` with warm-up W, tail U and every other setting at its default.
    pub fn new(groups: GroupSpec, warmup: usize, tail: usize) -> Self {
        Self {
            groups,
            warmup,
            tail,
            score: ScoreKind::RelativeChange,
            smoothing: false,
            switch_steps: Vec::new(),
            frozen_tokens: Vec::new(),
        }
    }

    /// `groups` with the default warm-up for `steps` and no tail.
    pub fn for_steps(groups: GroupSpec, steps: usize) -> Self {
        Self::new(groups, default_warmup(steps), 0)
    }

    /// The step layout of a `steps`-step run, checking W + U <= T and the switch steps.
    pub fn layout(&self, steps: usize) -> Result<StepLayout> {
        StepLayout::new(steps, self.warmup, self.tail, &self.switch_steps)
    }
}

/// The outcome of [`sample_hsa`].
#[derive(Debug, Clone)]
pub struct HsaRun {
    /// Final state `[N, P]` (f32) at sigma_T = 0.
    pub latents: Tensor,
    /// Per-step and per-run statistics; `group_map` is always set.
    pub stats: RunStats,
    /// Allocation score per token (before smoothing), when an allocation took place.
    pub scores: Option<Vec<f64>>,
    /// Schedule index each token's state ended at: T for every moving token, 0 for frozen
    /// ones. Every jump starts where the token's previous one ended, so T here means the
    /// token's dt's telescope to exactly `sigma_T - sigma_0`.
    pub final_positions: Vec<usize>,
}

impl HsaRun {
    /// Group map of the run (per-token step counts and groups).
    pub fn group_map(&self) -> Option<&GroupMap> {
        self.stats.group_map.as_ref()
    }
}

/// Sorted, de-duplicated frozen ids and a per-token mask; errors on out-of-range ids.
pub(crate) fn frozen_mask(frozen: &[u32], n: usize) -> Result<(Vec<bool>, Vec<u32>)> {
    let mut mask = vec![false; n];
    for &f in frozen {
        if f as usize >= n {
            return Err(CoreError::InvalidSetting(format!(
                "frozen token {f} is out of range for {n} tokens"
            )));
        }
        mask[f as usize] = true;
    }
    let movable = (0..n as u32).filter(|&t| !mask[t as usize]).collect();
    Ok((mask, movable))
}

/// Per-token bookkeeping of where each token's state is on the schedule.
pub(crate) struct Positions {
    pos: Vec<usize>,
}

impl Positions {
    pub(crate) fn new(n: usize) -> Self {
        Self { pos: vec![0; n] }
    }

    /// Records jumps of `tokens` from step `i` to `targets`, returning their dt's. A jump must
    /// start where the token is: anything else is a sampler bug, reported as an error.
    pub(crate) fn jump(
        &mut self,
        sigmas: &[f64],
        i: usize,
        tokens: &[u32],
        targets: &[usize],
    ) -> Result<Vec<f64>> {
        tokens
            .iter()
            .zip(targets)
            .map(|(&t, &j)| {
                let p = &mut self.pos[t as usize];
                if *p != i {
                    return Err(CoreError::Denoiser(format!(
                        "internal sampler error: token {t} is at step {p} but jumps from step {i}"
                    )));
                }
                *p = j;
                Ok(sigmas[j] - sigmas[i])
            })
            .collect()
    }

    pub(crate) fn into_vec(self) -> Vec<usize> {
        self.pos
    }
}

/// Heterogeneous Step Allocation over `schedule`, starting from `noise [N, P]`.
///
/// Dense steps (warm-up, tail, switches) evaluate every token with `guided_velocity(.., None)`;
/// heterogeneous steps evaluate the union of the active groups, through a dense call when that
/// union is every token. Each evaluated movable token jumps from step i to its next evaluation
/// step j: `x[G] += (sigma_j - sigma_i)·v_i[G]`. With the spec `1.0:1` this is `sample_fm_euler`
/// bit for bit. `observer` sees every step.
pub fn sample_hsa(
    denoiser: &mut dyn Denoiser,
    noise: &Tensor,
    schedule: &Schedule,
    guidance: Guidance,
    config: &HsaConfig,
    observer: &mut dyn FnMut(&StepEvent),
) -> Result<HsaRun> {
    check_state(denoiser, noise)?;
    let grid = denoiser.grid();
    let n = grid.len();
    let steps = schedule.steps();
    let layout = config.layout(steps)?;
    let (frozen, movable) = frozen_mask(&config.frozen_tokens, n)?;
    let hetero = !layout.hetero_range().is_empty();
    let w = config.warmup;
    if hetero && config.score.needs_velocities() && score_window(w).is_empty() {
        return Err(CoreError::InvalidSetting(format!(
            "the {:?} allocation score needs at least 2 warm-up steps, got --warmup {w}; raise it \
             or use the random score",
            config.score
        )));
    }
    let strides = config.groups.strides();
    let branches = if guidance.uses_uncond() { 2 } else { 1 };
    let device = noise.device().clone();
    let mut recorder = StatsRecorder::new(format!("hsa {}", config.groups), n, steps);
    denoiser.reset()?;

    let mut x = noise.to_dtype(DType::F32)?;
    let mut positions = Positions::new(n);
    let mut counts = vec![0u32; n];
    let mut accumulator = Some(ScoreAccumulator::new(config.score, w, n));
    let mut allocation: Option<Allocation> = None;
    let mut scores = None;
    for i in 0..steps {
        if i == w && hetero {
            let acc = accumulator.take().expect("allocation happens once");
            let s = acc.finish()?;
            let smoothing = config.smoothing.then_some(grid);
            allocation = Some(allocate(
                &s,
                config.score,
                smoothing,
                &movable,
                &config.groups,
            ));
            scores = Some(s);
        }
        // Where a token evaluated now jumps to: its group's next evaluation step (stride 1
        // before the allocation).
        let next_of_group: Vec<usize> = strides.iter().map(|&m| layout.next_active(m, i)).collect();
        let next_step = layout.next_active(1, i);
        let target = |t: &u32| match &allocation {
            Some(a) => a.group_of[*t as usize].map_or(next_step, |k| next_of_group[k]),
            None => next_step,
        };
        let timestep = schedule.timesteps[i];
        let (evaluated, nfe) = if layout.is_dense(i) {
            let v = guided_velocity(denoiser, &x, timestep, guidance, None)?;
            if let Some(acc) = accumulator.as_mut() {
                acc.observe(i, &v, i > 0 && config.switch_steps.contains(&i))?;
            }
            let targets: Vec<usize> = movable.iter().map(target).collect();
            let dts = positions.jump(&schedule.sigmas, i, &movable, &targets)?;
            let rows = (movable.len() < n).then_some(movable.as_slice());
            x = apply_jumps(&x, &v, rows, &movable, &dts)?;
            counts.iter_mut().for_each(|c| *c += 1);
            (n, branches)
        } else {
            let alloc = allocation
                .as_ref()
                .expect("allocated before the heterogeneous phase");
            let mut active = Vec::new();
            for (k, ids) in alloc.members.iter().enumerate() {
                if layout.is_active(strides[k], i) {
                    active.extend_from_slice(ids);
                }
            }
            active.sort_unstable();
            if active.is_empty() {
                (0, 0)
            } else {
                let v = if active.len() == n {
                    guided_velocity(denoiser, &x, timestep, guidance, None)?
                } else {
                    let set = ActiveSet::new(active.clone(), n, &device)?;
                    guided_velocity(denoiser, &x, timestep, guidance, Some(&set))?
                };
                let targets: Vec<usize> = active.iter().map(target).collect();
                let dts = positions.jump(&schedule.sigmas, i, &active, &targets)?;
                x = apply_jumps(&x, &v, None, &active, &dts)?;
                for &t in &active {
                    counts[t as usize] += 1;
                }
                (active.len(), branches)
            }
        };
        device.synchronize()?;
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

    let final_positions = positions.into_vec();
    if let Some(t) = movable
        .iter()
        .find(|&&t| final_positions[t as usize] != steps)
    {
        return Err(CoreError::Denoiser(format!(
            "internal sampler error: token {t} ended at step {} instead of {steps}",
            final_positions[*t as usize]
        )));
    }
    let groups = match &allocation {
        Some(a) => a.group_of.clone(),
        None => (0..n).map(|t| (!frozen[t]).then_some(0)).collect(),
    };
    let group_map = GroupMap {
        frames: grid.frames,
        height: grid.height,
        width: grid.width,
        step_counts: counts,
        groups,
        strides,
    };
    Ok(HsaRun {
        latents: x,
        stats: recorder.finish(Some(group_map)),
        scores,
        final_positions,
    })
}
