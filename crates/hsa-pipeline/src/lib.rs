//! Prompt to video: model directories, conditioning, sampling, decoding and output files.
//!
//! This crate wires models (`hsa-models`) to samplers (`hsa-core`); neither of those knows
//! about the other.

pub mod defaults;
pub mod dev;
pub mod error;
pub mod folder;
pub mod generate;
pub mod group_map;
pub mod image_cond;
pub mod io;
pub mod memory;
pub mod model_dir;
pub mod sampling;
pub mod video;

pub use error::{PipelineError, Result};
