//! Input embeddings of the Wan DiT: patches, timesteps, text and (Wan2.1 I2V) CLIP images.

use candle_core::{DType, Device, Tensor};

use crate::nn::{silu, LayerNorm, Linear};
use crate::Result;

/// Sinusoidal timestep features `[cos(t·f) ; sin(t·f)]`, `f_i = 10000^(-i/half)`, computed in
/// f32 exactly as diffusers' `Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)`.
/// `t` holds one timestep per row; the result is `[len(t), dim]` f32.
pub fn timestep_features(t: &[f32], dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let log_period = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((log_period * i as f32) / half as f32).exp())
        .collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in t {
        out.extend(freqs.iter().map(|f| (ti * f).cos()));
        out.extend(freqs.iter().map(|f| (ti * f).sin()));
    }
    Ok(Tensor::from_vec(out, (t.len(), dim), device)?)
}

/// The time MLP and the six-fold modulation projection (kept in f32).
#[derive(Debug, Clone)]
pub struct TimeEmbedding {
    pub(crate) linear_1: Linear,
    pub(crate) linear_2: Linear,
    pub(crate) proj: Linear,
    pub(crate) freq_dim: usize,
}

impl TimeEmbedding {
    /// For timesteps `t` (flat, f32) returns `(e [len, D], e0 [len, 6, D])`, both f32.
    pub fn forward(&self, t: &[f32], device: &Device) -> Result<(Tensor, Tensor)> {
        let feats = timestep_features(t, self.freq_dim, device)?;
        let e = self
            .linear_2
            .forward(&silu(&self.linear_1.forward(&feats)?)?)?
            .to_dtype(DType::F32)?;
        let e0 = self.proj.forward(&silu(&e)?)?.to_dtype(DType::F32)?;
        let d = e.dim(1)?;
        Ok((e, e0.reshape((t.len(), 6, d))?))
    }
}

/// Text projection: Linear -> GELU(tanh) -> Linear.
#[derive(Debug, Clone)]
pub struct TextEmbedding {
    pub(crate) linear_1: Linear,
    pub(crate) linear_2: Linear,
}

impl TextEmbedding {
    pub fn forward(&self, text: &Tensor) -> Result<Tensor> {
        let h = self.linear_1.forward(text)?.gelu()?;
        self.linear_2.forward(&h)
    }
}

/// CLIP feature projection of Wan2.1 I2V / FLF2V: LN -> Linear -> GELU(erf) -> Linear -> LN.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    pub(crate) norm1: LayerNorm,
    pub(crate) linear_1: Linear,
    pub(crate) linear_2: Linear,
    pub(crate) norm2: LayerNorm,
    /// FLF2V: learned positions added to the two images' concatenated tokens.
    pub(crate) pos_embed: Option<Tensor>,
}

impl ImageEmbedding {
    /// `x [B, S, image_dim]` -> `[B, S', D]` (f32). With positions, pairs of images in the
    /// batch are joined into one sequence first (as both references do for FLF2V).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let x = match &self.pos_embed {
            Some(pos) => {
                let (b, s, c) = x.dims3()?;
                if b % 2 != 0 || 2 * s != pos.dim(1)? {
                    return Err(crate::ModelError::Input(format!(
                        "FLF2V image tokens {:?} do not fit the position table {:?}",
                        x.dims(),
                        pos.dims()
                    )));
                }
                x.reshape((b / 2, 2 * s, c))?.broadcast_add(pos)?
            }
            None => x,
        };
        let h = self.norm1.forward(&x)?;
        let h = self.linear_1.forward(&h)?.gelu_erf()?;
        let h = self.linear_2.forward(&h)?;
        self.norm2.forward(&h)
    }
}

/// Patch embedding as a matmul over patchified tokens: the Conv3d weight `[D, C, pt, ph, pw]`
/// is reordered to `[D, pt·ph·pw·C]`, the token layout shared with the output head.
pub fn patch_weight_to_token_order(w: &Tensor) -> Result<Tensor> {
    let (d, c, pt, ph, pw) = w.dims5()?;
    Ok(w.permute((0, 2, 3, 4, 1))?
        .reshape((d, pt * ph * pw * c))?
        .contiguous()?)
}
