//! Typed errors of the evaluation layer.

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] hsa_models::ModelError),
    #[error(transparent)]
    Sampling(#[from] hsa_core::CoreError),
    #[error(transparent)]
    Pipeline(#[from] hsa_pipeline::PipelineError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
    /// A report-folder file that cannot be read or written.
    #[error("{0}")]
    Io(String),
}

pub type Result<T> = std::result::Result<T, EvalError>;
