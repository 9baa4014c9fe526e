//! The CLIP ViT vision tower forward pass (transformers `CLIPVisionModel`, eager attention).
//!
//! ```text
//! x   = [cls ; conv_p(pixels) flattened]  + pos            [B, 1+N, D]   (conv as a matmul over patches)
//! h_0 = pre_layrnorm(x)                                      = hidden_states[0]
//! per layer l (pre-LN, residual stream in f32):
//!   h = h + out_proj( softmax(q kᵀ / √d) v ),   q,k,v = proj(layer_norm1(h))   (all with biases)
//!   h = h + fc2( act(fc1(layer_norm2(h))) )     act = quick_gelu | gelu (erf) | gelu_tanh
//! h_l = hidden_states[l]; last_hidden_state = h_L (no norm); pooled = post_layernorm(h_L[:, 0])
//! ```
//! Wan2.1 I2V conditions on `h_{L-1}` (the output of 31 of 32 blocks, no post-LN): diffusers takes
//! `hidden_states[-2]`, the official code runs `use_31_block`. Norms, the residual stream and the
//! embeddings are f32; matmuls run in the weight dtype.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::config::{ClipActivation, ClipVisionConfig};
use super::weights::{
    layer_prefix, ClipWeights, CLASS_EMBEDDING, PATCH_EMBEDDING, POSITION_EMBEDDING,
    POST_LAYERNORM, PRE_LAYERNORM, PROJECTION,
};
use crate::nn::{LayerNorm, Linear};
use crate::wan::attention::scaled_dot_product;
use crate::{ModelError, Result};

struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// Outputs of a full pass ([`ClipVisionModel::forward`]).
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// `[B, 1+N, D]` f32: the output of the last layer, no norm.
    pub last_hidden_state: Tensor,
    /// `[B, D]` f32: `post_layernorm` of the class token of `last_hidden_state`.
    pub pooler_output: Tensor,
    /// `[B, projection_dim]` f32: `visual_projection(pooler_output)` when the checkpoint has it
    /// (`CLIPVisionModelWithProjection`'s `image_embeds`).
    pub image_embeds: Option<Tensor>,
}

/// A loaded CLIP ViT vision tower.
pub struct ClipVisionModel {
    cfg: ClipVisionConfig,
    /// Patch-embedding conv as a linear map over flattened `(C, p, p)` patches, `[D, C·p·p]`.
    patch: Linear,
    /// `[1, 1, D]` f32.
    class_embedding: Tensor,
    /// `[1, 1+N, D]` f32.
    position_embedding: Tensor,
    pre_layernorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    projection: Option<Linear>,
    dtype: DType,
    device: Device,
}

impl std::fmt::Debug for ClipVisionModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipVisionModel")
            .field("cfg", &self.cfg)
            .field("projection", &self.projection.is_some())
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .finish()
    }
}

impl ClipVisionModel {
    /// Loads a tower from a folder holding `config.json` (a `CLIPVisionConfig` or a full
    /// `CLIPConfig`) and the safetensors file(s) in transformers names. Matmul weights are cast
    /// to `dtype` (f32, bf16 or f16); embeddings and norms stay f32. For a checkpoint without a
    /// `config.json` (e.g. ComfyUI's `clip_vision_h.safetensors`) open it with
    /// [`ClipWeights::open`] and use [`Self::from_weights`] with [`ClipVisionConfig::vit_h14`].
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = ClipVisionConfig::from_file(&dir.join("config.json"))?;
        let weights = ClipWeights::open_dir(dir)?;
        Self::from_weights(&weights, &cfg, dtype, device)
    }

    /// Builds the tower from opened weights after checking them against `cfg`.
    pub fn from_weights(
        weights: &ClipWeights,
        cfg: &ClipVisionConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ModelError::Input(format!(
                "CLIP compute dtype must be f32, bf16 or f16, got {dtype:?}"
            )));
        }
        cfg.validate().map_err(|m| ModelError::Config {
            path: weights.paths().first().cloned().unwrap_or_default(),
            message: m,
        })?;
        weights.check(cfg)?;
        let eps = cfg.layer_norm_eps;
        let d = cfg.hidden_size;
        let lin = |prefix: &str| -> Result<Linear> {
            Ok(Linear::new(
                weights.get(&format!("{prefix}.weight"), dtype, device)?,
                Some(weights.get(&format!("{prefix}.bias"), dtype, device)?),
            ))
        };
        let norm = |prefix: &str| -> Result<LayerNorm> {
            LayerNorm::affine(
                weights.get(&format!("{prefix}weight"), DType::F32, device)?,
                weights.get(&format!("{prefix}bias"), DType::F32, device)?,
                eps,
            )
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = layer_prefix(i);
            layers.push(EncoderLayer {
                layer_norm1: norm(&format!("{l}layer_norm1."))?,
                q_proj: lin(&format!("{l}self_attn.q_proj"))?,
                k_proj: lin(&format!("{l}self_attn.k_proj"))?,
                v_proj: lin(&format!("{l}self_attn.v_proj"))?,
                out_proj: lin(&format!("{l}self_attn.out_proj"))?,
                layer_norm2: norm(&format!("{l}layer_norm2."))?,
                fc1: lin(&format!("{l}mlp.fc1"))?,
                fc2: lin(&format!("{l}mlp.fc2"))?,
            });
        }
        let patch_w = weights
            .get(PATCH_EMBEDDING, dtype, device)?
            .reshape((d, cfg.num_channels * cfg.patch_size * cfg.patch_size))?;
        let projection = if weights.has_projection() {
            Some(Linear::new(weights.get(PROJECTION, dtype, device)?, None))
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            patch: Linear::new(patch_w, None),
            class_embedding: weights
                .get(CLASS_EMBEDDING, DType::F32, device)?
                .reshape((1, 1, d))?,
            position_embedding: weights
                .get(POSITION_EMBEDDING, DType::F32, device)?
                .unsqueeze(0)?,
            pre_layernorm: norm(PRE_LAYERNORM)?,
            layers,
            post_layernorm: norm(POST_LAYERNORM)?,
            projection,
            dtype,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether [`ClipVisionOutput::image_embeds`] will be computed.
    pub fn has_projection(&self) -> bool {
        self.projection.is_some()
    }

    /// Checks `pixels` is `[B, C, S, S]` float with the config's channels and image size
    /// (no position-embedding interpolation: other sizes are an error, as in transformers).
    fn check_pixels(&self, pixels: &Tensor) -> Result<usize> {
        let (c, s) = (self.cfg.num_channels, self.cfg.image_size);
        let bad = || {
            ModelError::Input(format!(
                "pixels must be [batch, {c}, {s}, {s}] (float), got {:?} {:?}",
                pixels.dims(),
                pixels.dtype()
            ))
        };
        let (b, pc, h, w) = pixels.dims4().map_err(|_| bad())?;
        if b == 0 || pc != c || h != s || w != s || !pixels.dtype().is_float() {
            return Err(bad());
        }
        Ok(b)
    }

    /// Patch + class + position embeddings followed by the pre-layernorm: `hidden_states[0]`,
    /// `[B, 1+N, D]` f32.
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = self.check_pixels(pixels)?;
        let (c, p, g, d) = (
            self.cfg.num_channels,
            self.cfg.patch_size,
            self.cfg.grid(),
            self.cfg.hidden_size,
        );
        // [B, C, g·p, g·p] -> rows of (C, p, p) patches in raster order, as the conv's output
        // flattened over (gy, gx).
        let patches = pixels
            .to_device(&self.device)?
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, c * p * p))?;
        let patch_embeds = self.patch.forward(&patches)?.to_dtype(DType::F32)?;
        let cls = self.class_embedding.broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&cls, &patch_embeds], 1)?.broadcast_add(&self.position_embedding)?;
        self.pre_layernorm.forward(&x)
    }

    /// The hidden state after the first `n_layers` encoder layers, `[B, 1+N, D]` f32
    /// (transformers' `hidden_states[n_layers]`; `0` = the embeddings after the pre-layernorm).
    /// No post-layernorm. Wan2.1 I2V uses `n_layers = num_hidden_layers - 1`
    /// ([`Self::penultimate_hidden_state`]); later layers are not computed.
    pub fn forward_hidden_states(&self, pixels: &Tensor, n_layers: usize) -> Result<Tensor> {
        if n_layers > self.layers.len() {
            return Err(ModelError::Input(format!(
                "asked for the hidden state after {n_layers} layers, but the model has {}",
                self.layers.len()
            )));
        }
        let mut h = self.embed(pixels)?;
        for layer in &self.layers[..n_layers] {
            h = self.layer_forward(layer, &h)?;
        }
        Ok(h)
    }

    /// The image features Wan2.1 I2V / FLF2V condition on: the hidden state after all but the
    /// last layer, no post-layernorm (`[B, 257, 1280]` for ViT-H/14 at 224²).
    pub fn penultimate_hidden_state(&self, pixels: &Tensor) -> Result<Tensor> {
        let n = self.layers.len().checked_sub(1).ok_or_else(|| {
            ModelError::Input("the model has no layers: no penultimate hidden state".into())
        })?;
        self.forward_hidden_states(pixels, n)
    }

    /// Full pass: last hidden state, pooled (post-layernormed class token) output and, with a
    /// projection, the image embeddings.
    pub fn forward(&self, pixels: &Tensor) -> Result<ClipVisionOutput> {
        let last_hidden_state = self.forward_hidden_states(pixels, self.layers.len())?;
        let cls = last_hidden_state.narrow(1, 0, 1)?.squeeze(1)?;
        let pooler_output = self.post_layernorm.forward(&cls)?;
        let image_embeds = match &self.projection {
            Some(p) => Some(p.forward(&pooler_output)?.to_dtype(DType::F32)?),
            None => None,
        };
        Ok(ClipVisionOutput {
            last_hidden_state,
            pooler_output,
            image_embeds,
        })
    }

    fn layer_forward(&self, layer: &EncoderLayer, h: &Tensor) -> Result<Tensor> {
        let (b, l, d) = h.dims3()?;
        let heads = self.cfg.num_attention_heads;
        let hd = d / heads;
        let x = layer.layer_norm1.forward(h)?;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, l, heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(layer.q_proj.forward(&x)?)?;
        let k = split(layer.k_proj.forward(&x)?)?;
        let v = split(layer.v_proj.forward(&x)?)?;
        let attn = scaled_dot_product(&q, &k, &v, (hd as f64).powf(-0.5))?
            .transpose(1, 2)?
            .reshape((b, l, d))?;
        let h = (h + layer.out_proj.forward(&attn)?.to_dtype(DType::F32)?)?;

        let x = layer.layer_norm2.forward(&h)?;
        let ff = self.act(&layer.fc1.forward(&x)?)?;
        Ok((&h + layer.fc2.forward(&ff)?.to_dtype(DType::F32)?)?)
    }

    fn act(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.cfg.hidden_act {
            ClipActivation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            ClipActivation::GeluErf => x.gelu_erf()?,
            ClipActivation::GeluTanh => x.gelu()?,
        })
    }
}
