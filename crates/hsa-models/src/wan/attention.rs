//! Attention for the Wan DiT: self-attention over a per-layer K/V cache (so a subset of
//! tokens can be evaluated while attending to all of them) and cross-attention over text
//! (and image) K/V computed once per generation.

use candle_core::{DType, Tensor, D};

use super::rope;
use crate::nn::{Linear, RmsNorm};
use crate::Result;

/// Keeps the score matrix of one query chunk below about this many elements.
const SCORE_BUDGET: usize = 1 << 26;

/// `softmax(q·kᵀ·scale)·v` for `q [B,H,Lq,d]`, `k, v [B,H,Lk,d]`; returns `[B,H,Lq,d]`.
///
/// On the CPU (f32/bf16/f16) this is the fused tiled kernel of [`crate::cpu_attention`]
/// (in training, for f32, with the backward of [`crate::attention_grad`]); elsewhere it is
/// [`scaled_dot_product_reference`].
pub fn scaled_dot_product(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    // Training: candle's fused kernels have no backward pass; ours on the CPU has one.
    if crate::nn::tracks_grad(&[q, k, v]) {
        if crate::attention_grad::supports(q, k, v) {
            return crate::attention_grad::attention(q, k, v, scale);
        }
        return scaled_dot_product_reference(q, k, v, scale);
    }
    if crate::cpu_attention::supports(q, k, v) {
        return crate::cpu_attention::attention(q, k, v, scale);
    }
    scaled_dot_product_reference(q, k, v, scale)
}

/// Matmul → softmax → matmul attention (the reference for the fused CPU kernel, and the path
/// on non-CPU devices).
///
/// Queries are processed in chunks so the `Lq x Lk` score matrix never exists whole.
pub fn scaled_dot_product_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (b, h, lq, _) = q.dims4()?;
    let lk = k.dim(2)?;
    let chunk = (SCORE_BUDGET / (b * h * lk).max(1)).clamp(1, lq.max(1));
    let kt = k.t()?;
    let mut outs = Vec::with_capacity(lq.div_ceil(chunk));
    let mut start = 0;
    while start < lq {
        let len = chunk.min(lq - start);
        let qc = (q.narrow(2, start, len)? * scale)?;
        let scores = qc.matmul(&kt)?;
        let probs = if crate::nn::tracks_grad(&[&scores]) {
            if crate::softmax::supports(&scores) {
                crate::softmax::softmax_last_dim(&scores)?
            } else {
                candle_nn::ops::softmax(&scores, D::Minus1)?
            }
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        outs.push(probs.matmul(v)?);
        start += len;
    }
    Ok(if outs.len() == 1 {
        outs.pop().unwrap()
    } else {
        Tensor::cat(&outs, 2)?
    })
}

/// `[B, L, H·d]` -> `[B, H, L, d]` (contiguous).
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, dm) = x.dims3()?;
    Ok(x.reshape((b, l, heads, dm / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// `[B, H, L, d]` -> `[B, L, H·d]`.
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, l, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.reshape((b, l, h * d))?)
}

/// `x` through the (optional) q/k RMS norm.
fn maybe_norm(x: Tensor, norm: Option<&RmsNorm>) -> Result<Tensor> {
    match norm {
        Some(n) => n.forward(&x),
        None => Ok(x),
    }
}

/// K and V of one self-attention layer for every token, `[B, H, N, d]` each, in compute dtype.
#[derive(Debug, Clone)]
pub struct LayerKv {
    pub k: Tensor,
    pub v: Tensor,
}

/// Per-layer self-attention K/V of one CFG branch.
///
/// A dense forward overwrites every layer; a partial forward writes only the active rows and
/// reads all N. Rows of tokens that were not active keep the K/V of their last evaluation.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }

    /// Drops every cached tensor.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }

    /// Whether a dense pass has filled every layer.
    pub fn is_filled(&self) -> bool {
        !self.layers.is_empty() && self.layers.iter().all(Option::is_some)
    }

    pub fn layer(&self, i: usize) -> Option<&LayerKv> {
        self.layers.get(i).and_then(Option::as_ref)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Bytes held by the cache.
    pub fn memory_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * l.k.dtype().size_in_bytes())
            .sum()
    }

    fn slot(&mut self, i: usize) -> &mut Option<LayerKv> {
        if self.layers.len() <= i {
            self.layers.resize(i + 1, None);
        }
        &mut self.layers[i]
    }
}

/// Which rows a forward computes: all of them, or a sorted subset whose K/V rows are written
/// into an already filled cache.
#[derive(Debug, Clone)]
pub struct Rows<'a> {
    /// `None` for a dense pass; `(ids, scatter index [B,H,|A|,d])` for a partial one.
    pub partial: Option<(&'a Tensor, &'a Tensor)>,
    /// RoPE cos/sin rows of the computed tokens, in compute dtype.
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
}

/// Self-attention with RMS-normed q/k across heads and 3-D RoPE.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    pub(crate) to_q: Linear,
    pub(crate) to_k: Linear,
    pub(crate) to_v: Linear,
    pub(crate) to_out: Linear,
    pub(crate) norm_q: Option<RmsNorm>,
    pub(crate) norm_k: Option<RmsNorm>,
    pub(crate) heads: usize,
}

impl SelfAttention {
    /// `h [B, |rows|, D]` (normed, modulated) -> attention output `[B, |rows|, D]` (compute dtype).
    pub fn forward(
        &self,
        h: &Tensor,
        rows: &Rows,
        layer: usize,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let dtype = self.to_q.dtype();
        let q = maybe_norm(self.to_q.forward(h)?, self.norm_q.as_ref())?;
        let k = maybe_norm(self.to_k.forward(h)?, self.norm_k.as_ref())?;
        let v = self.to_v.forward(h)?;
        let q = rope::apply(&split_heads(&q, self.heads)?, rows.cos, rows.sin)?;
        let k = rope::apply(&split_heads(&k, self.heads)?, rows.cos, rows.sin)?;
        let v = split_heads(&v, self.heads)?;
        let head_dim = q.dim(D::Minus1)?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let out = match (rows.partial, cache) {
            (None, None) => scaled_dot_product(&q, &k, &v, scale)?,
            (None, Some(cache)) => {
                let out = scaled_dot_product(&q, &k, &v, scale)?;
                *cache.slot(layer) = Some(LayerKv { k, v });
                out
            }
            (Some((_, scatter)), Some(cache)) => {
                let kv = cache.slot(layer).as_mut().ok_or_else(|| {
                    crate::ModelError::Input(format!(
                        "partial forward at layer {layer} needs a K/V cache filled by a dense pass first"
                    ))
                })?;
                kv.k.scatter_set(scatter, &k, 2)?;
                kv.v.scatter_set(scatter, &v, 2)?;
                scaled_dot_product(&q, &kv.k, &kv.v, scale)?
            }
            (Some(_), None) => {
                return Err(crate::ModelError::Input(
                    "a partial forward needs a K/V cache".into(),
                ));
            }
        };
        self.to_out.forward(&merge_heads(&out.to_dtype(dtype)?)?)
    }
}

/// Cross-attention K/V of one layer for one context (text, plus image tokens for Wan2.1 I2V).
#[derive(Debug, Clone)]
pub struct CrossKv {
    pub k: Tensor,
    pub v: Tensor,
    pub image: Option<(Tensor, Tensor)>,
}

/// Cross-attention from video tokens to the text (and image) context.
#[derive(Debug, Clone)]
pub struct CrossAttention {
    pub(crate) to_q: Linear,
    pub(crate) to_k: Linear,
    pub(crate) to_v: Linear,
    pub(crate) to_out: Linear,
    pub(crate) norm_q: Option<RmsNorm>,
    pub(crate) norm_k: Option<RmsNorm>,
    /// `(add_k_proj, add_v_proj, norm_added_k)` of the Wan2.1 image branch.
    pub(crate) image: Option<(Linear, Linear, Option<RmsNorm>)>,
    pub(crate) heads: usize,
}

impl CrossAttention {
    /// Projects the embedded context once; reused by every step of a generation.
    pub fn context_kv(&self, text: &Tensor, image: Option<&Tensor>) -> Result<CrossKv> {
        let k = split_heads(
            &maybe_norm(self.to_k.forward(text)?, self.norm_k.as_ref())?,
            self.heads,
        )?;
        let v = split_heads(&self.to_v.forward(text)?, self.heads)?;
        let image = match (&self.image, image) {
            (Some((pk, pv, nk)), Some(img)) => Some((
                split_heads(&maybe_norm(pk.forward(img)?, nk.as_ref())?, self.heads)?,
                split_heads(&pv.forward(img)?, self.heads)?,
            )),
            (Some(_), None) => {
                return Err(crate::ModelError::Input(
                    "this model has an image branch: encoder_hidden_states_image is required"
                        .into(),
                ))
            }
            (None, _) => None,
        };
        Ok(CrossKv { k, v, image })
    }

    /// `h [B, L, D]` -> `[B, L, D]` (compute dtype).
    pub fn forward(&self, h: &Tensor, ctx: &CrossKv) -> Result<Tensor> {
        let dtype = self.to_q.dtype();
        let q = maybe_norm(self.to_q.forward(h)?, self.norm_q.as_ref())?;
        let q = split_heads(&q, self.heads)?;
        let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
        let mut out = scaled_dot_product(&q, &ctx.k, &ctx.v, scale)?;
        if let Some((ki, vi)) = &ctx.image {
            out = (out + scaled_dot_product(&q, ki, vi, scale)?)?;
        }
        self.to_out.forward(&merge_heads(&out.to_dtype(dtype)?)?)
    }
}

/// Index tensor `[B, H, |A|, d]` that scatters rows `ids` along the token axis of a cache.
pub fn scatter_index(ids: &Tensor, b: usize, heads: usize, head_dim: usize) -> Result<Tensor> {
    let a = ids.dim(0)?;
    Ok(ids
        .to_dtype(DType::U32)?
        .reshape((1, 1, a, 1))?
        .broadcast_as((b, heads, a, head_dim))?
        .contiguous()?)
}
