//! Measurement: benchmarks of the model and samplers, quality metrics, and the
//! quality-runtime harness that compares HSA with its baselines.

pub mod bench;
pub mod error;
pub mod metrics;
pub mod shapes;

pub use error::{EvalError, Result};
