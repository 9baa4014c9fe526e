//! Measurement: benchmarks of the model and samplers, quality metrics, and the
//! quality-runtime harness that compares HSA with its baselines.

pub mod bench;
pub mod error;
pub mod harness;
pub mod methods;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod shapes;
pub mod teacache_search;

pub use error::{EvalError, Result};
