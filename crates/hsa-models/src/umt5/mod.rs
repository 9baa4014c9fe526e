//! umT5 text encoder (google/umt5-xxl's encoder, as used by Wan 2.1 / 2.2): config, weight
//! loading for the HF and the original Wan key layouts, and a forward pass with transformers'
//! numerics.

pub mod config;
pub mod model;
pub mod weights;

pub use config::{Activation, UMT5Config};
pub use model::{relative_position_bucket, UMT5Encoder};
pub use weights::{T5KeyFormat, UMT5Weights};
