//! candle model code for video diffusion transformers.
//!
//! `wan` holds the Wan 2.1 / 2.2 DiT: configs for every published variant, weight loading
//! for the diffusers, original and ComfyUI key layouts, and a forward pass that can run a
//! subset of tokens against a per-layer K/V cache (the contract HSA samplers rely on).

pub mod attention_grad;
pub mod clip;
pub mod cpu_attention;
pub mod error;
pub mod fused;
pub mod interpolate;
pub mod nn;
pub mod softmax;
pub mod store;
pub mod text;
pub mod umt5;
pub mod wan;

pub use error::{ModelError, Result};
