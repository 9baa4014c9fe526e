//! The training-only motion head: a linear read-out of the DiT's last hidden state that
//! predicts each pixel's displacement ([`crate::displacement_field`]).
//!
//! Why: after nine segments the bundled model placed and coloured objects but moved barely one
//! in five the way its caption says, and more updates of the velocity loss alone (segment 9)
//! did not move that. VideoJAM (arXiv 2502.02492) trains a video model to predict optical flow
//! beside the pixels and reports much better motion: the shared representation has to encode
//! how things move. Here the head reads `head_in` (the residual stream after the last block,
//! layer-normalised) with one linear map per token, so the blocks must carry the motion of every
//! pixel in a linearly readable form. The head is not part of Wan's layout: export drops it, and
//! the shipped DiT is computed exactly as before.

use candle_core::{Device, Tensor, Var};
use hsa_models::nn::{LayerNorm, Linear};
use hsa_models::wan::patch::patchify;

use super::{Result, TrainConfig};

/// Variable names of the head (in checkpoints beside the DiT's; never exported).
pub const NAMES: [&str; 2] = ["motion_head.weight", "motion_head.bias"];

/// The DiT trace entry the head reads: the output of block `displacement_layer` (1-based), or
/// by default `head_in`, the last block's output.
///
/// Why a choice: a head on the last block's output learns the caption's direction words while
/// the velocity beside it does not use them (segment 11 in `models/shapes-wan/HISTORY.md`):
/// no attention is left after that point to move content between frames. Read at a middle
/// block, the motion the head needs sits in the residual stream that the later blocks'
/// attention reads.
pub fn trace_name(cfg: &TrainConfig) -> String {
    match cfg.displacement_layer {
        Some(k) => format!("block{}_out", k - 1),
        None => "head_in".to_string(),
    }
}

/// Displacements are divided by this (pixels per frame) before the loss: objects move 1 to
/// 4 px per frame at 32x32, so targets are of order one.
pub const DISPLACEMENT_SCALE: f32 = 2.0;

/// The head's initial variables: weight `[2·pt·ph·pw, dim]` drawn with std 0.02 from the run's
/// seed, bias zero. Not zero like the velocity head: a zero weight would pass no gradient to
/// the blocks until it had grown.
pub fn initial(cfg: &TrainConfig, device: &Device) -> Result<Vec<Var>> {
    let out = 2 * cfg.patch.iter().product::<usize>();
    let w = hsa_models::wan::init::normal(out * cfg.dim, 0.02, cfg.seed, NAMES[0]);
    Ok(vec![
        Var::from_vec(w, (out, cfg.dim), device)?,
        Var::zeros(out, candle_core::DType::F32, device)?,
    ])
}

/// Mean squared error of the head's prediction from `hidden` (`head_in`, `[B, N, dim]`)
/// against `target` (`[B, 2, F, H, W]` in pixels per frame, divided by
/// [`DISPLACEMENT_SCALE`] here).
pub fn loss(cfg: &TrainConfig, head: &[Var], hidden: &Tensor, target: &Tensor) -> Result<Tensor> {
    let norm = LayerNorm::no_affine(cfg.dim, 1e-6, hidden.device())?;
    let linear = Linear::new(
        head[0].as_tensor().clone(),
        Some(head[1].as_tensor().clone()),
    );
    let pred = linear.forward(&norm.forward(hidden)?)?;
    let want = patchify(&(target / DISPLACEMENT_SCALE as f64)?, cfg.patch)?;
    Ok((pred - want)?.sqr()?.mean_all()?)
}
