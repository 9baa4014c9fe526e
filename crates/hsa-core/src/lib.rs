//! Sampling for flow-matching video diffusion transformers.
//!
//! This crate knows nothing about any particular network. A model plugs in through the
//! [`Denoiser`] trait: the sampler hands it the current state in token layout `[N, P]`, a
//! timestep, a CFG branch and optionally a sorted set of active tokens; the model returns the
//! velocity of those tokens. The K/V cache that lets a partial step attend to every token lives
//! behind that trait, inside the model.

pub mod denoiser;
pub mod error;
pub mod euler;
pub mod hsa;
pub mod ras;
pub mod schedule;
pub mod stats;
pub mod teacache;
pub mod unipc;

pub use denoiser::{ActiveSet, Branch, Denoiser, IndicatorKind, TokenGrid};
pub use error::{CoreError, Result};
pub use euler::{check_state, guided_velocity, sample_fm_euler, Guidance, StepEvent};
pub use hsa::{
    plan_budget, sample_hsa, BudgetPlan, GroupSpec, HsaConfig, HsaRun, ScoreKind, StepLayout,
};
pub use ras::{sample_ras, RasConfig, RasMetric, RasRun};
pub use schedule::{shift_sigma, Schedule, ScheduleKind};
pub use stats::{GroupMap, RunStats, StatsRecorder, StepStats};
pub use unipc::{sample_unipc, UniPcSolver};
