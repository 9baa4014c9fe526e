//! Heterogeneous Step Allocation (design doc `hsa-algorithm.md`): tokens whose velocity
//! changes fast get every step, calmer tokens every 2nd, 4th, ... step, advanced in between by
//! one cached Euler jump.
//!
//! - [`groups`]: the `(fraction, stride)` group spec.
//! - [`layout`]: which steps are dense and when a stride is next evaluated.
//! - [`allocation`]: warm-up scores, ranking, smoothing, cut into groups.
//! - [`planner`]: budget to spec, exact cost accounting, presets.
//! - [`sampler`]: the sampler, [`sample_hsa`].
//! - [`update`]: the cached Euler update on token rows (shared with RAS).

pub mod allocation;
pub mod groups;
pub mod layout;
pub mod planner;
pub mod sampler;
pub mod update;

pub use allocation::{Allocation, ScoreKind};
pub use groups::{Group, GroupSpec};
pub use layout::StepLayout;
pub use planner::{
    default_warmup, parse_budget, plan_budget, plan_budget_for, predict_token_evaluations,
    preset_budget, token_step_fraction, BudgetPlan,
};
pub use sampler::{sample_hsa, HsaConfig, HsaRun};
pub use update::apply_jumps;
