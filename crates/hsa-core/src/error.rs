//! Typed errors of the sampling layer.

/// Errors raised while planning or running a sampler.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A tensor operation failed (shape mismatch inside a model, out of memory, ...).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// A sampler or schedule parameter is out of its valid range.
    #[error("invalid sampling setting: {0}")]
    InvalidSetting(String),
    /// The state handed to a sampler does not match what the denoiser expects.
    #[error("state shape {got:?} does not match the denoiser's token layout {expected:?}")]
    StateShape {
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A model-side failure reported through the [`crate::Denoiser`] trait.
    #[error("denoiser: {0}")]
    Denoiser(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;
