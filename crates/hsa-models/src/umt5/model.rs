//! The umT5 encoder forward pass (transformers `UMT5EncoderModel`, eager attention).
//!
//! Per block (pre-norm, residual stream in f32):
//! ```text
//! h = h + o( softmax_f32( q kᵀ + bias_l + mask ) v ),   q,k,v from T5RmsNorm(h)   (no 1/√d scaling)
//! h = h + wo( act(wi_0 x) * wi_1 x ),                    x = T5RmsNorm(h)          (gated; else wo(act(wi x)))
//! ```
//! then a final T5RmsNorm. `bias_l` is block `l`'s own relative-position table (umT5; T5 shares
//! block 0's), indexed by bidirectional buckets; `mask` adds `f32::MIN` (torch `finfo.min`) on
//! padded keys. Norms (variance in f32), the position bias, the mask and the softmax are f32;
//! matmuls run in the weight dtype.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::config::{Activation, UMT5Config};
use super::weights::{block_prefix, UMT5Weights, EMBED, FINAL_NORM};
use crate::nn::{Linear, RmsNorm};
use crate::{ModelError, Result};

/// transformers' `_relative_position_bucket` for `relative_position = key - query`.
///
/// Bidirectional (encoder): half the buckets per sign; of those, half are exact distances and the
/// rest log-spaced up to `max_distance`. Computed in f32 like torch, including the f32 rounding
/// at the exact bucket edges (16, 32, 64 for the umT5 settings).
pub fn relative_position_bucket(
    relative_position: i64,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let half = (num_buckets / 2) as i64;
    let mut bucket = if relative_position > 0 { half } else { 0 };
    let rp = relative_position.abs();
    let max_exact = half / 2;
    if rp < max_exact {
        bucket += rp;
    } else {
        let ratio = (rp as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32);
        let large = max_exact + (ratio * (half - max_exact) as f32) as i64;
        bucket += large.min(half - 1);
    }
    bucket as usize
}

struct Block {
    norm1: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// `[num_buckets, num_heads]`, f32.
    rel_bias: Tensor,
    norm2: RmsNorm,
    wi_0: Option<Linear>,
    wi: Linear,
    wo: Linear,
}

/// A loaded umT5 encoder.
pub struct UMT5Encoder {
    cfg: UMT5Config,
    /// `[vocab, d_model]` in the weight dtype.
    embed: Tensor,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    dtype: DType,
    device: Device,
}

impl std::fmt::Debug for UMT5Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UMT5Encoder")
            .field("cfg", &self.cfg)
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .finish()
    }
}

impl UMT5Encoder {
    /// Loads an encoder from a folder (`config.json` if present, else the config is inferred
    /// from the weight shapes; safetensors file(s)) or from one weight file, safetensors or
    /// `.pth` (the official `models_t5_umt5-xxl-enc-bf16.pth`; a T5 config.json beside it is
    /// used, another model's is not), in HF or original Wan key names.
    /// Matmul weights are cast to `dtype` (f32, bf16 or f16); norms and position biases stay f32.
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let (weights, cfg_path) = if path.is_file() {
            let cfg = path.with_file_name("config.json");
            let is_t5 = std::fs::read_to_string(&cfg)
                .map(|t| t.contains("\"d_model\""))
                .unwrap_or(false);
            (
                UMT5Weights::open(&[path.to_path_buf()])?,
                if is_t5 { cfg } else { Default::default() },
            )
        } else {
            (UMT5Weights::open_dir(path)?, path.join("config.json"))
        };
        let cfg = if cfg_path.is_file() {
            UMT5Config::from_file(&cfg_path)?
        } else {
            weights.infer_config()?
        };
        Self::from_weights(&weights, &cfg, dtype, device)
    }

    /// Builds the encoder from opened weights after checking them against `cfg`.
    pub fn from_weights(
        weights: &UMT5Weights,
        cfg: &UMT5Config,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ModelError::Input(format!(
                "umT5 compute dtype must be f32, bf16 or f16, got {dtype:?}"
            )));
        }
        cfg.validate().map_err(|m| ModelError::Config {
            path: weights.paths().first().cloned().unwrap_or_default(),
            message: m,
        })?;
        weights.check(cfg)?;
        let eps = cfg.layer_norm_epsilon;
        let lin = |name: &str| -> Result<Linear> {
            Ok(Linear::new(weights.get(name, dtype, device)?, None))
        };
        let norm = |name: &str| -> Result<RmsNorm> {
            RmsNorm::new(weights.get(name, DType::F32, device)?, eps)
        };
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = block_prefix(i);
            let a = format!("{b}layer.0.SelfAttention.");
            let f = format!("{b}layer.1.DenseReluDense.");
            let (wi_0, wi) = if cfg.gated {
                (
                    Some(lin(&format!("{f}wi_0.weight"))?),
                    lin(&format!("{f}wi_1.weight"))?,
                )
            } else {
                (None, lin(&format!("{f}wi.weight"))?)
            };
            blocks.push(Block {
                norm1: norm(&format!("{b}layer.0.layer_norm.weight"))?,
                q: lin(&format!("{a}q.weight"))?,
                k: lin(&format!("{a}k.weight"))?,
                v: lin(&format!("{a}v.weight"))?,
                o: lin(&format!("{a}o.weight"))?,
                rel_bias: weights.get(
                    &format!("{a}relative_attention_bias.weight"),
                    DType::F32,
                    device,
                )?,
                norm2: norm(&format!("{b}layer.1.layer_norm.weight"))?,
                wi_0,
                wi,
                wo: lin(&format!("{f}wo.weight"))?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            embed: weights.get(EMBED, dtype, device)?,
            blocks,
            final_norm: norm(FINAL_NORM)?,
            dtype,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &UMT5Config {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bucket indices `[len*len]` (row = query, column = key).
    fn buckets(&self, len: usize) -> Result<Tensor> {
        let (nb, md) = (
            self.cfg.relative_attention_num_buckets,
            self.cfg.relative_attention_max_distance,
        );
        // Only 2*len-1 distinct distances.
        let table: Vec<u32> = (0..2 * len as i64 - 1)
            .map(|r| relative_position_bucket(r - (len as i64 - 1), nb, md) as u32)
            .collect();
        let mut idx = Vec::with_capacity(len * len);
        for q in 0..len {
            for k in 0..len {
                idx.push(table[k + len - 1 - q]);
            }
        }
        Ok(Tensor::from_vec(idx, len * len, &self.device)?)
    }

    /// Encodes `ids` `[B, L]` (any integer dtype) with an optional attention mask `[B, L]`
    /// (non-zero = token, 0 = padding; `None` = all tokens). Returns `[B, L, d_model]` f32 for every
    /// position, padded ones included (as transformers does).
    pub fn forward(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, l) = ids.dims2().map_err(|_| {
            ModelError::Input(format!("ids must be [batch, len], got {:?}", ids.dims()))
        })?;
        if l == 0 || b == 0 {
            return Err(ModelError::Input(format!(
                "ids must be non-empty, got {:?}",
                ids.dims()
            )));
        }
        // Validate on the host: an out-of-range index is UB on some backends.
        let host: Vec<i64> = ids
            .flatten_all()?
            .to_dtype(DType::I64)?
            .to_device(&Device::Cpu)?
            .to_vec1()?;
        if let Some(bad) = host
            .iter()
            .find(|v| **v < 0 || **v as usize >= self.cfg.vocab_size)
        {
            return Err(ModelError::Input(format!(
                "token id {bad} outside the vocabulary (size {})",
                self.cfg.vocab_size
            )));
        }
        let idx: Vec<u32> = host.iter().map(|v| *v as u32).collect();
        let idx = Tensor::from_vec(idx, b * l, &self.device)?;
        let mut h = self
            .embed
            .index_select(&idx, 0)?
            .reshape((b, l, self.cfg.d_model))?
            .to_dtype(DType::F32)?;

        // Additive key mask [B,1,1,L]: 0 for tokens, f32::MIN (torch finfo.min) for padding.
        let mask_bias = match mask {
            None => None,
            Some(m) => {
                if m.dims() != [b, l] {
                    return Err(ModelError::Input(format!(
                        "mask must be [{b}, {l}] like the ids, got {:?}",
                        m.dims()
                    )));
                }
                let valid = m
                    .to_device(&self.device)?
                    .to_dtype(DType::F32)?
                    .ne(0f64)?
                    .to_dtype(DType::F32)?;
                let bias = ((valid - 1.0)? * (-(f32::MIN as f64)))?;
                Some(bias.reshape((b, 1, 1, l))?)
            }
        };
        let buckets = self.buckets(l)?;
        let (nh, dk) = (self.cfg.num_heads, self.cfg.d_kv);

        for blk in &self.blocks {
            // Self-attention.
            let x = blk.norm1.forward(&h)?;
            let split = |t: Tensor| -> Result<Tensor> {
                Ok(t.reshape((b, l, nh, dk))?.transpose(1, 2)?.contiguous()?)
            };
            let q = split(blk.q.forward(&x)?)?;
            let k = split(blk.k.forward(&x)?)?;
            let v = split(blk.v.forward(&x)?)?;
            let pos = blk
                .rel_bias
                .index_select(&buckets, 0)?
                .reshape((l, l, nh))?
                .permute((2, 0, 1))?
                .unsqueeze(0)?;
            let mut scores = q
                .matmul(&k.transpose(2, 3)?.contiguous()?)?
                .to_dtype(DType::F32)?
                .broadcast_add(&pos)?;
            if let Some(mb) = &mask_bias {
                scores = scores.broadcast_add(mb)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?;
            let attn = probs
                .to_dtype(v.dtype())?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, l, nh * dk))?;
            h = (h + blk.o.forward(&attn)?.to_dtype(DType::F32)?)?;

            // Feed-forward.
            let x = blk.norm2.forward(&h)?;
            let ff = match &blk.wi_0 {
                Some(wi_0) => self.act(&wi_0.forward(&x)?)?.mul(&blk.wi.forward(&x)?)?,
                None => self.act(&blk.wi.forward(&x)?)?,
            };
            h = (h + blk.wo.forward(&ff)?.to_dtype(DType::F32)?)?;
        }
        self.final_norm.forward(&h)
    }

    fn act(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.cfg.activation {
            Activation::GeluTanh => x.gelu()?,
            Activation::GeluErf => x.gelu_erf()?,
            Activation::Relu => x.relu()?,
            Activation::Silu => x.silu()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umt5_buckets_at_the_edges() {
        // transformers (torch CPU f32): |d| = 16, 32, 64 land exactly on bucket edges.
        let b = |d| relative_position_bucket(d, 32, 128);
        assert_eq!(b(0), 0);
        assert_eq!(b(-7), 7);
        assert_eq!(b(7), 23);
        assert_eq!(b(-15), 9);
        assert_eq!(b(-16), 10);
        assert_eq!(b(-32), 12);
        assert_eq!(b(-64), 14);
        assert_eq!(b(-127), 15);
        assert_eq!(b(-1000), 15);
        assert_eq!(b(1000), 31);
    }
}
