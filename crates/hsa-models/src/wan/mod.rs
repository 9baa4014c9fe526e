//! Wan 2.1 / 2.2 diffusion transformer.

pub mod attention;
pub mod config;
pub mod denoiser;
pub mod dit;
pub mod embeddings;
pub mod experts;
pub mod init;
pub mod patch;
pub mod position;
pub mod rope;
pub mod vae;
pub mod weights;

pub use attention::KvCache;
pub use config::WanConfig;
pub use denoiser::WanDenoiser;
pub use dit::{read_config, Timesteps, WanContext, WanModel};
pub use experts::WanExperts;
pub use position::{position_channels, POSITION_CHANNELS};
pub use rope::RopeTable;
pub use vae::{WanVae, WanVaeConfig};
pub use weights::{KeyFormat, WeightStore};
