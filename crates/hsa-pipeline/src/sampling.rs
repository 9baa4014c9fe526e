//! Sampler selection: one entry point that runs FM, UniPC, HSA, TeaCache or RAS over any
//! [`Denoiser`] and returns the latents with the run's statistics.

use candle_core::Tensor;
use hsa_core::hsa::planner::{parse_budget, plan_budget};
use hsa_core::teacache::{sample_teacache, TeaCacheConfig, Wan21Model};
use hsa_core::{
    sample_fm_euler, sample_hsa, sample_ras, sample_unipc, Denoiser, GroupSpec, Guidance,
    HsaConfig, IndicatorKind, RasConfig, RunStats, Schedule, ScheduleKind, StatsRecorder,
    StepEvent,
};

use crate::{PipelineError, Result};

/// A sampler with its settings.
#[derive(Debug, Clone)]
pub enum SamplerSpec {
    /// Plain FM Euler: every token, every step.
    Fm,
    /// UniPC-bh2, order 2 (Wan's default solver in diffusers and the official code): every
    /// token, every step, one model call per branch and step like Euler.
    UniPc,
    Hsa(HsaConfig),
    TeaCache(TeaCacheConfig),
    Ras(RasConfig),
}

impl SamplerSpec {
    pub fn name(&self) -> &'static str {
        match self {
            SamplerSpec::Fm => "fm",
            SamplerSpec::UniPc => "unipc",
            SamplerSpec::Hsa(_) => "hsa",
            SamplerSpec::TeaCache(_) => "teacache",
            SamplerSpec::Ras(_) => "ras",
        }
    }

    /// The sigma schedule to build when the user asked for `requested`.
    ///
    /// UniPC samples on diffusers' UniPC flow sigmas ([`ScheduleKind::DiffusersUniPc`], what
    /// diffusers' Wan pipelines run) when `requested` is the flow-match Euler table, which is
    /// the command line's default and belongs to the Euler scheduler; an explicit UniPC-family
    /// or linear table (`wan`, `diffusers-unipc`, `linear`) is kept. Every other sampler uses
    /// `requested` as is.
    pub fn schedule_kind(&self, requested: ScheduleKind) -> ScheduleKind {
        match (self, requested) {
            (SamplerSpec::UniPc, ScheduleKind::FlowMatchEuler) => ScheduleKind::DiffusersUniPc,
            _ => requested,
        }
    }
}

/// Whether the sampler named `sampler` works per token (keeps a K/V cache of the tokens it
/// skips and has a per-token step budget to map): hsa and ras.
pub fn is_token_level(sampler: &str) -> bool {
    matches!(sampler, "hsa" | "ras")
}

/// Sampler knobs as the command line gives them.
#[derive(Debug, Clone, Default)]
pub struct SamplerOptions {
    /// fm | unipc | hsa | teacache | ras
    pub sampler: String,
    /// Token-step budget: a number in (0, 1] or a preset (hsa-75, hsa-50, hsa-25).
    pub budget: Option<String>,
    /// Explicit HSA group spec, e.g. "0.2:1,0.3:2,0.5:4" (overrides the budget).
    pub groups: Option<String>,
    pub warmup: Option<usize>,
    pub tail: Option<usize>,
    /// HSA allocation score: relative-change | magnitude | random[:SEED] | inverse.
    pub score: Option<String>,
    /// Max-over-3x3 smoothing of the HSA score.
    pub smoothing: bool,
    pub teacache_threshold: Option<f64>,
    /// TeaCache indicator: e (default) or e0 (retention mode).
    pub teacache_mode: Option<String>,
    /// Polynomial coefficients, highest power first (default: published Wan2.1 T2V-1.3B).
    pub teacache_coefficients: Option<Vec<f64>>,
    pub ras_ratio: Option<f64>,
}

fn invalid(msg: impl Into<String>) -> PipelineError {
    PipelineError::Invalid(msg.into())
}

impl SamplerOptions {
    /// The sigma schedule to build for this sampler when the user asked for `requested`
    /// ([`SamplerSpec::schedule_kind`], usable before [`SamplerOptions::resolve`]).
    pub fn schedule_kind(&self, requested: ScheduleKind) -> ScheduleKind {
        match self.sampler.as_str() {
            "unipc" => SamplerSpec::UniPc.schedule_kind(requested),
            _ => requested,
        }
    }

    /// Resolves the options for a `steps`-step run over `n_tokens` tokens. Returns the spec
    /// and warnings for the user (e.g. a budget the planner could only approximate).
    pub fn resolve(&self, steps: usize, n_tokens: usize) -> Result<(SamplerSpec, Vec<String>)> {
        let mut warnings = Vec::new();
        let budget = self.budget.as_deref().map(parse_budget).transpose()?;
        let spec = match self.sampler.as_str() {
            "fm" | "euler" => {
                if budget.is_some() || self.groups.is_some() {
                    return Err(invalid("--budget/--groups apply to hsa, ras and teacache, not fm (use fewer --steps)"));
                }
                SamplerSpec::Fm
            }
            "unipc" => {
                if budget.is_some() || self.groups.is_some() {
                    return Err(invalid("--budget/--groups apply to hsa, ras and teacache, not unipc (use fewer --steps)"));
                }
                SamplerSpec::UniPc
            }
            "hsa" => {
                let warmup = self
                    .warmup
                    .unwrap_or_else(|| hsa_core::hsa::planner::default_warmup(steps));
                let tail = self.tail.unwrap_or(0);
                let groups = match (&self.groups, budget) {
                    (Some(g), _) => g.parse::<GroupSpec>()?,
                    (None, Some(b)) => {
                        let plan = plan_budget(b, steps, warmup, tail, Some(n_tokens))?;
                        warnings.extend(plan.warning.clone());
                        plan.spec
                    }
                    (None, None) => return Err(invalid("--sampler hsa needs --budget F (or a preset hsa-75/hsa-50/hsa-25) or --groups SPEC")),
                };
                let mut cfg = HsaConfig::new(groups, warmup, tail);
                if let Some(s) = &self.score {
                    cfg.score = s.parse()?;
                }
                cfg.smoothing = self.smoothing;
                SamplerSpec::Hsa(cfg)
            }
            "teacache" => {
                let kind = match self.teacache_mode.as_deref().unwrap_or("e") {
                    "e" => IndicatorKind::Embedding,
                    "e0" => IndicatorKind::Projection,
                    other => {
                        return Err(invalid(format!(
                            "--teacache-mode '{other}' (expected e or e0)"
                        )))
                    }
                };
                let threshold = self.teacache_threshold.ok_or_else(|| {
                    invalid("--sampler teacache needs --teacache-threshold (the reference uses 0.05-0.26 for Wan2.1)")
                })?;
                let coefficients = self
                    .teacache_coefficients
                    .clone()
                    .unwrap_or_else(|| Wan21Model::T2v1_3b.coefficients(kind).to_vec());
                SamplerSpec::TeaCache(TeaCacheConfig::new(threshold, coefficients, kind, steps)?)
            }
            "ras" => {
                let mut cfg = RasConfig::for_steps(steps);
                if let Some(w) = self.warmup {
                    cfg.warmup = w;
                }
                if let Some(u) = self.tail {
                    cfg.tail = u;
                }
                cfg.ratio = match (self.ras_ratio, budget) {
                    (Some(r), _) => r,
                    (None, Some(b)) => cfg.ratio_for_budget(b, steps)?,
                    (None, None) => cfg.ratio,
                };
                SamplerSpec::Ras(cfg)
            }
            other => {
                return Err(invalid(format!(
                    "unknown sampler '{other}' (expected fm, unipc, hsa, teacache or ras)"
                )))
            }
        };
        Ok((spec, warnings))
    }
}

/// Runs `spec` from `noise` (`[N, P]`).
pub fn run_sampler(
    denoiser: &mut dyn Denoiser,
    noise: &Tensor,
    schedule: &Schedule,
    guidance: Guidance,
    spec: &SamplerSpec,
    observer: &mut dyn FnMut(&StepEvent),
) -> Result<(Tensor, RunStats)> {
    let n = denoiser.grid().len();
    let steps = schedule.steps();
    let mut recorder = StatsRecorder::new(spec.name(), n, steps);
    let mut both = |e: &StepEvent| {
        recorder.observe(e);
        observer(e);
    };
    let out = match spec {
        SamplerSpec::Fm => {
            let latents = sample_fm_euler(denoiser, noise, schedule, guidance, &mut both)?;
            (latents, recorder.finish(None))
        }
        SamplerSpec::UniPc => {
            let latents = sample_unipc(denoiser, noise, schedule, guidance, &mut both)?;
            (latents, recorder.finish(None))
        }
        SamplerSpec::TeaCache(cfg) => {
            let run = sample_teacache(denoiser, noise, schedule, guidance, cfg, &mut both)?;
            (run.latents, recorder.finish(None))
        }
        SamplerSpec::Hsa(cfg) => {
            let run = sample_hsa(denoiser, noise, schedule, guidance, cfg, observer)?;
            (run.latents, run.stats)
        }
        SamplerSpec::Ras(cfg) => {
            let run = sample_ras(denoiser, noise, schedule, guidance, cfg, observer)?;
            (run.latents, run.stats)
        }
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use hsa_core::{ActiveSet, Branch, TokenGrid};

    fn options(sampler: &str) -> SamplerOptions {
        SamplerOptions {
            sampler: sampler.into(),
            ..Default::default()
        }
    }

    /// A constant velocity field: the flow path is a straight line, which UniPC follows exactly.
    struct Constant(f64);

    impl Denoiser for Constant {
        fn grid(&self) -> TokenGrid {
            TokenGrid::new(1, 2, 3)
        }
        fn token_dim(&self) -> usize {
            2
        }
        fn has_uncond(&self) -> bool {
            false
        }
        fn reset(&mut self) -> hsa_core::Result<()> {
            Ok(())
        }
        fn velocity(
            &mut self,
            x: &Tensor,
            _timestep: f64,
            _branch: Branch,
            _active: Option<&ActiveSet>,
        ) -> hsa_core::Result<Tensor> {
            Ok((x.zeros_like()? + self.0)?)
        }
    }

    #[test]
    fn unipc_is_a_named_sampler_with_its_own_schedule() {
        let (spec, warnings) = options("unipc").resolve(10, 6).unwrap();
        assert!(matches!(spec, SamplerSpec::UniPc) && warnings.is_empty());
        assert_eq!(spec.name(), "unipc");
        assert_eq!(
            spec.schedule_kind(ScheduleKind::FlowMatchEuler),
            ScheduleKind::DiffusersUniPc
        );
        assert_eq!(
            spec.schedule_kind(ScheduleKind::WanOfficial),
            ScheduleKind::WanOfficial
        );
        assert_eq!(
            options("unipc").schedule_kind(ScheduleKind::FlowMatchEuler),
            ScheduleKind::DiffusersUniPc
        );
        assert_eq!(
            options("fm").schedule_kind(ScheduleKind::FlowMatchEuler),
            ScheduleKind::FlowMatchEuler
        );
        let with_budget = SamplerOptions {
            budget: Some("0.5".into()),
            ..options("unipc")
        };
        assert!(with_budget.resolve(10, 6).is_err());
    }

    #[test]
    fn unknown_sampler_error_lists_every_sampler() {
        let err = options("dpm").resolve(10, 6).unwrap_err().to_string();
        for name in ["fm", "unipc", "hsa", "teacache", "ras"] {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn run_sampler_runs_unipc_and_reports_its_steps() {
        // With v = c the path is x(sigma) = x(sigma_0) + (sigma - sigma_0)·c; every x0
        // prediction is its end point, so UniPC lands on x(0) = noise - sigma_0·c.
        let spec = SamplerSpec::UniPc;
        let kind = spec.schedule_kind(ScheduleKind::FlowMatchEuler);
        let schedule = Schedule::new(kind, 8, 3.0).unwrap();
        let noise = Tensor::ones((6, 2), DType::F32, &Device::Cpu).unwrap();
        let mut seen = 0;
        let (latents, stats) = run_sampler(
            &mut Constant(0.25),
            &noise,
            &schedule,
            Guidance::new(1.0).unwrap(),
            &spec,
            &mut |_| seen += 1,
        )
        .unwrap();
        assert_eq!(seen, 8);
        assert_eq!((stats.sampler.as_str(), stats.nfe), ("unipc", 8));
        let out = latents.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expected = 1.0 - schedule.sigmas[0] * 0.25;
        assert!(
            out.iter().all(|&v| (v as f64 - expected).abs() < 1e-6),
            "{out:?} vs {expected}"
        );
    }
}
