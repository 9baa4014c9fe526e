//! Typed errors of the model layer. Every message names the file, tensor or argument at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "{path}: not a readable safetensors file ({message}); the file may be truncated or corrupt"
    )]
    Safetensors { path: PathBuf, message: String },
    #[error(
        "{path}: not a readable PyTorch checkpoint ({message}); the file may be truncated or corrupt, or not a torch.save state dict"
    )]
    Pickle { path: PathBuf, message: String },
    #[error("no weights found in {dir}: expected diffusion_pytorch_model.safetensors, a *.safetensors.index.json, or *.safetensors files")]
    NoWeights { dir: PathBuf },
    #[error("unknown weight key format: expected diffusers names (e.g. blocks.0.attn1.to_q.weight) or original Wan names (e.g. blocks.0.self_attn.q.weight); first keys found: {sample}")]
    UnknownKeyFormat { sample: String },
    #[error("unknown Wan VAE weight key format: expected diffusers names (e.g. decoder.conv_in.weight) or original Wan names (e.g. decoder.conv1.weight); first keys found: {sample}")]
    UnknownVaeKeyFormat { sample: String },
    #[error("missing tensor '{name}' (expected shape {expected:?}) in {source_desc}")]
    MissingTensor {
        name: String,
        expected: Vec<usize>,
        source_desc: String,
    },
    #[error("unexpected tensor '{name}' with shape {shape:?} in {source_desc}: the config does not use it (wrong config.json for these weights?)")]
    UnexpectedTensor {
        name: String,
        shape: Vec<usize>,
        source_desc: String,
    },
    #[error("tensor '{name}' has shape {found:?} but the config expects {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor '{name}' has unsupported dtype {dtype}; supported: f32, bf16, f16")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("{path}: not a readable image ({message}); supported formats: PNG, JPEG, WebP")]
    ImageDecode { path: PathBuf, message: String },
    #[error("{path}: image is {width}x{height} pixels; {message}")]
    ImageSize {
        path: PathBuf,
        width: u32,
        height: u32,
        message: String,
    },
    #[error("invalid input: {0}")]
    Input(String),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;

impl From<ModelError> for hsa_core::CoreError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Tensor(t) => hsa_core::CoreError::Tensor(t),
            other => hsa_core::CoreError::Denoiser(other.to_string()),
        }
    }
}
