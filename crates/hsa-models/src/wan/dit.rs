//! The Wan DiT (`WanModel` / diffusers `WanTransformer3DModel`): blocks, head and forward pass;
//! building it from weights is in `load`.
//!
//! The forward pass works on tokens and can compute any sorted subset of them
//! ([`WanModel::forward_tokens`]): projections, FFN, modulation and the head run on the active
//! rows only, while self-attention reads every token's K/V from a [`KvCache`] filled by an
//! earlier dense pass. [`WanModel::forward`] is the plain video-in, velocity-out call that
//! matches diffusers' `forward`.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use hsa_core::{ActiveSet, TokenGrid};

use super::attention::{scatter_index, CrossAttention, CrossKv, KvCache, Rows, SelfAttention};
use super::config::WanConfig;
use super::embeddings::{
    patch_weight_to_token_order, ImageEmbedding, TextEmbedding, TimeEmbedding,
};
use super::patch::{grid_for, patchify, unpatchify};
use super::rope::RopeTable;
use crate::fused;
use crate::nn::{chunk_squeeze, modulate, LayerNorm, Linear};
use crate::{ModelError, Result};

mod load;
pub use load::{init_values, read_config, reconcile_with_weights};

/// Observer of named intermediate tensors (parity debugging): `temb`, `timestep_proj`,
/// `text_embedding`, `block{i}_out` (every block's output, 0-based), `head_in`.
pub type Trace<'a> = &'a mut dyn FnMut(&str, &Tensor);

/// Timesteps of one forward: one per sample, or one per token (Wan2.2 TI2V).
#[derive(Debug, Clone, PartialEq)]
pub enum Timesteps {
    /// `[B]`.
    PerSample(Vec<f32>),
    /// `[B, N]` row-major, over all N tokens of the grid.
    PerToken(Vec<f32>),
}

impl Timesteps {
    /// From a `[B]` or `[B, N]` tensor.
    pub fn from_tensor(t: &Tensor, batch: usize, tokens: usize) -> Result<Self> {
        let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        match t.dims() {
            [b] if *b == batch => Ok(Self::PerSample(values)),
            [b, n] if *b == batch && *n == tokens => Ok(Self::PerToken(values)),
            dims => Err(ModelError::Input(format!(
                "timestep must have shape [{batch}] or [{batch}, {tokens}] (per token), got {dims:?}"
            ))),
        }
    }
}

/// Embedded context of one generation: per-layer cross-attention K/V.
#[derive(Debug, Clone)]
pub struct WanContext {
    pub layers: Vec<CrossKv>,
    pub batch: usize,
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    table: Tensor,
    norm1: LayerNorm,
    attn1: SelfAttention,
    norm2: Option<LayerNorm>,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ffn_1: Linear,
    ffn_2: Linear,
}

impl Block {
    /// `x [B, A, D]` f32; `e0 [B, 1 or A, 6, D]` f32. Returns the new residual stream (f32).
    fn forward(
        &self,
        x: &Tensor,
        e0: &Tensor,
        rows: &Rows,
        ctx: &CrossKv,
        layer: usize,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let m = self.table.unsqueeze(0)?.broadcast_add(e0)?;
        let c = chunk_squeeze(&m, 6, 2)?;
        let (shift1, scale1, gate1, shift2, scale2, gate2) =
            (&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]);

        let h = fused::norm_modulate(&self.norm1, x, shift1, scale1)?;
        let a = self
            .attn1
            .forward(&h, rows, layer, cache)?
            .to_dtype(DType::F32)?;
        let x = fused::gated_add(x, &a, gate1)?;

        let h = match &self.norm2 {
            Some(n) => n.forward(&x)?,
            None => x.clone(),
        };
        let x = (&x + self.attn2.forward(&h, ctx)?.to_dtype(DType::F32)?)?;

        let h = fused::norm_modulate(&self.norm3, &x, shift2, scale2)?;
        let f = self
            .ffn_2
            .forward(&fused::gelu_tanh(&self.ffn_1.forward(&h)?)?)?
            .to_dtype(DType::F32)?;
        fused::gated_add(&x, &f, gate2)
    }
}

/// The Conv3d patch embedding as a matmul over patchified tokens. The weight is kept in its
/// checkpoint layout `[D, C, pt, ph, pw]`; the token-order copy is made once for inference,
/// but rebuilt on every call while gradients are tracked, so a training step always sees the
/// weight the optimiser last wrote (a copy made once would silently freeze it).
#[derive(Debug, Clone)]
struct PatchEmbed {
    raw: Tensor,
    reordered: Linear,
}

impl PatchEmbed {
    fn new(weight: Tensor, bias: Tensor) -> Result<Self> {
        let reordered = Linear::new(patch_weight_to_token_order(&weight)?, Some(bias));
        Ok(Self {
            raw: weight,
            reordered,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if crate::nn::tracks_grad(&[&self.raw]) {
            let bias = self.reordered.bias().cloned();
            return Linear::new(patch_weight_to_token_order(&self.raw)?, bias).forward(x);
        }
        self.reordered.forward(x)
    }
}

/// What one token forward computes beyond the dense velocity: which rows, with which K/V
/// cache, and what else it reports.
#[derive(Default)]
pub struct Pass<'a> {
    /// `None` for a dense pass; the sorted ids of the computed rows otherwise.
    pub active: Option<&'a ActiveSet>,
    /// A dense pass with a cache fills it; a partial pass requires a filled one.
    pub cache: Option<&'a mut KvCache>,
    /// Also return the block stack's residual (TeaCache).
    pub capture_residual: bool,
    /// Observer of named intermediates (parity debugging).
    pub trace: Option<Trace<'a>>,
}

/// Result of a token forward.
#[derive(Debug, Clone)]
pub struct TokenOutput {
    /// `[B, A, P_out]` f32, rows in the order of the computed tokens.
    pub velocity: Tensor,
    /// Output minus input of the block stack, `[B, A, D]` f32, when requested (TeaCache).
    pub block_residual: Option<Tensor>,
}

/// A loaded Wan DiT.
#[derive(Debug, Clone)]
pub struct WanModel {
    cfg: WanConfig,
    device: Device,
    dtype: DType,
    patch_embed: PatchEmbed,
    time: TimeEmbedding,
    text: TextEmbedding,
    image: Option<ImageEmbedding>,
    blocks: Vec<Block>,
    head_table: Tensor,
    norm_out: LayerNorm,
    proj_out: Linear,
}

impl WanModel {
    pub fn config(&self) -> &WanConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Dtype of matmuls and attention (the norms, modulation and residual stream are f32).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Embeds the text (`[B, S, text_dim]`) and optional CLIP image features
    /// (`[B, S_img, image_dim]`) and projects every layer's cross-attention K/V once.
    pub fn prepare_context(
        &self,
        text: &Tensor,
        image: Option<&Tensor>,
        trace: Option<Trace>,
    ) -> Result<WanContext> {
        let (b, _, td) = text.dims3()?;
        if td != self.cfg.text_dim {
            return Err(ModelError::Input(format!(
                "encoder_hidden_states has width {td}, the model expects text_dim {}",
                self.cfg.text_dim
            )));
        }
        let text = self.text.forward(text)?;
        if let Some(trace) = trace {
            trace("text_embedding", &text);
        }
        let image = match (&self.image, image) {
            (Some(emb), Some(img)) => {
                let dims = img.dims();
                if dims.len() != 3 || Some(dims[2]) != self.cfg.image_dim {
                    return Err(ModelError::Input(format!(
                        "encoder_hidden_states_image must be [B, S_img, {}], got {dims:?}",
                        self.cfg.image_dim.unwrap_or(0)
                    )));
                }
                Some(emb.forward(img)?.to_dtype(self.dtype)?)
            }
            (Some(_), None) => {
                return Err(ModelError::Input(
                    "this model has an image branch: encoder_hidden_states_image is required"
                        .into(),
                ))
            }
            (None, Some(_)) => {
                return Err(ModelError::Input(
                    "encoder_hidden_states_image was given but this model has no image branch"
                        .into(),
                ))
            }
            (None, None) => None,
        };
        let layers = self
            .blocks
            .iter()
            .map(|blk| blk.attn2.context_kv(&text, image.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(WanContext { layers, batch: b })
    }

    /// Time embeddings `(e [B, 1|A, D], e0 [B, 1|A, 6, D])` for the computed rows.
    fn time_embeddings(
        &self,
        t: &Timesteps,
        b: usize,
        n: usize,
        active: Option<&ActiveSet>,
    ) -> Result<(Tensor, Tensor)> {
        let d = self.cfg.dim();
        let per_row: Vec<f32> = match t {
            Timesteps::PerSample(v) => v.clone(),
            Timesteps::PerToken(v) => match active {
                None => v.clone(),
                Some(set) => (0..b)
                    .flat_map(|bi| set.ids().iter().map(move |&i| v[bi * n + i as usize]))
                    .collect(),
            },
        };
        // Per-token timesteps take few distinct values (TI2V: two); embed each value once.
        let mut unique: BTreeMap<u32, u32> = BTreeMap::new();
        for v in &per_row {
            let next = unique.len() as u32;
            unique.entry(v.to_bits()).or_insert(next);
        }
        let mut values = vec![0f32; unique.len()];
        for (bits, &i) in &unique {
            values[i as usize] = f32::from_bits(*bits);
        }
        let (e, e0) = self.time.forward(&values, &self.device)?;
        let (e, e0) = if values.len() == per_row.len() {
            (e, e0)
        } else {
            let idx: Vec<u32> = per_row.iter().map(|v| unique[&v.to_bits()]).collect();
            let idx = Tensor::from_vec(idx, per_row.len(), &self.device)?;
            (e.index_select(&idx, 0)?, e0.index_select(&idx, 0)?)
        };
        let rows = per_row.len() / b;
        Ok((e.reshape((b, rows, d))?, e0.reshape((b, rows, 6, d))?))
    }

    /// Runs the model on tokens.
    ///
    /// * `x` — `[B, A, P_in]` input tokens of the computed rows (A = N for a dense pass,
    ///   A = `pass.active`'s length for a partial one).
    /// * `t` — timesteps over the whole grid.
    pub fn forward_tokens(
        &self,
        x: &Tensor,
        t: &Timesteps,
        grid: TokenGrid,
        ctx: &WanContext,
        rope: &RopeTable,
        pass: Pass,
    ) -> Result<TokenOutput> {
        let Pass {
            active,
            mut cache,
            capture_residual,
            mut trace,
        } = pass;
        let (b, a, p) = x.dims3()?;
        let n = grid.len();
        let expect_rows = active.map_or(n, |s| s.len());
        if p != self.cfg.in_token_dim() || a != expect_rows || b != ctx.batch {
            return Err(ModelError::Input(format!(
                "tokens {:?} do not match [batch {}, rows {expect_rows}, {} values per token]",
                x.dims(),
                ctx.batch,
                self.cfg.in_token_dim()
            )));
        }
        if rope.cos.dim(0)? != n {
            return Err(ModelError::Input(format!(
                "RoPE table has {} rows for {n} tokens",
                rope.cos.dim(0)?
            )));
        }
        let (e, e0) = self.time_embeddings(t, b, n, active)?;
        if let Some(tr) = trace.as_mut() {
            tr("temb", &e);
            tr("timestep_proj", &e0);
        }
        let ids = active.map(|s| s.tensor());
        let (cos, sin) = rope.rows(ids, self.dtype)?;
        let scatter = match ids {
            Some(ids) => Some(scatter_index(
                ids,
                b,
                self.cfg.num_heads,
                self.cfg.head_dim,
            )?),
            None => None,
        };
        let rows = Rows {
            partial: ids.zip(scatter.as_ref()),
            cos: &cos,
            sin: &sin,
        };

        let x0 = self.patch_embed.forward(x)?.to_dtype(DType::F32)?;
        let mut h = x0.clone();
        for (i, blk) in self.blocks.iter().enumerate() {
            h = blk.forward(&h, &e0, &rows, &ctx.layers[i], i, cache.as_deref_mut())?;
            if let Some(tr) = trace.as_mut() {
                tr(&format!("block{i}_out"), &h);
            }
        }
        if let Some(tr) = trace.as_mut() {
            tr("head_in", &h);
        }
        let block_residual = if capture_residual {
            Some((&h - &x0)?)
        } else {
            None
        };
        let velocity = self.head(&h, &e)?;
        Ok(TokenOutput {
            velocity,
            block_residual,
        })
    }

    /// The output head on the residual stream `h [B, A, D]` with time embedding `e`.
    fn head(&self, h: &Tensor, e: &Tensor) -> Result<Tensor> {
        let (b, rows, d) = e.dims3()?;
        let m = self
            .head_table
            .reshape((1, 1, 2, d))?
            .broadcast_add(&e.reshape((b, rows, 1, d))?)?;
        let c = chunk_squeeze(&m, 2, 2)?;
        let y = modulate(&self.norm_out.forward(h)?, &c[0], &c[1])?;
        Ok(self.proj_out.forward(&y)?.to_dtype(DType::F32)?)
    }

    /// Velocity from a stored block residual instead of the block stack (TeaCache's skip):
    /// patch embedding + residual, then the head. Dense only.
    pub fn forward_from_residual(
        &self,
        x: &Tensor,
        t: &Timesteps,
        grid: TokenGrid,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let (b, _, _) = x.dims3()?;
        let (e, _) = self.time_embeddings(t, b, grid.len(), None)?;
        let h = (self.patch_embed.forward(x)?.to_dtype(DType::F32)? + residual)?;
        self.head(&h, &e)
    }

    /// Time embedding of one timestep for TeaCache's indicator: `e [D]` or `e0 [6, D]`.
    pub fn timestep_embedding(&self, timestep: f32) -> Result<(Tensor, Tensor)> {
        let (e, e0) = self.time.forward(&[timestep], &self.device)?;
        Ok((e.squeeze(0)?, e0.squeeze(0)?))
    }

    /// The diffusers-equivalent forward: `hidden_states [B, C_in, F, H, W]`, `timestep [B]`
    /// or `[B, N]`, `encoder_hidden_states [B, S, text_dim]`, optional image features ->
    /// velocity `[B, C_out, F, H, W]` (f32).
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        encoder_hidden_states_image: Option<&Tensor>,
        mut trace: Option<Trace>,
    ) -> Result<Tensor> {
        let (x, t, grid) = self.prepare_inputs(hidden_states, timestep)?;
        let ctx = match trace.as_mut() {
            Some(tr) => self.prepare_context(
                encoder_hidden_states,
                encoder_hidden_states_image,
                Some(&mut **tr),
            )?,
            None => {
                self.prepare_context(encoder_hidden_states, encoder_hidden_states_image, None)?
            }
        };
        let rope = RopeTable::new(grid, self.cfg.head_dim, &self.device)?;
        let pass = Pass {
            trace,
            ..Pass::default()
        };
        let out = self.forward_tokens(&x, &t, grid, &ctx, &rope, pass)?;
        unpatchify(&out.velocity, grid, self.cfg.patch_size)
    }

    /// Validates a video input and returns its tokens, timesteps and grid.
    pub fn prepare_inputs(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
    ) -> Result<(Tensor, Timesteps, TokenGrid)> {
        let dims = hidden_states.dims();
        if dims.len() != 5 || dims[1] != self.cfg.in_channels {
            return Err(ModelError::Input(format!(
                "hidden_states must be [B, {}, F, H, W], got {dims:?}",
                self.cfg.in_channels
            )));
        }
        let grid = grid_for(dims[2], dims[3], dims[4], self.cfg.patch_size)?;
        let t = Timesteps::from_tensor(timestep, dims[0], grid.len())?;
        let x = patchify(&hidden_states.to_dtype(DType::F32)?, self.cfg.patch_size)?;
        Ok((x, t, grid))
    }

    /// Dense pass that fills a fresh K/V cache, then a partial pass on `active` from the same
    /// inputs. Returns the velocity video with the active tokens' patches filled and every other
    /// value 0 — the check behind `hsa dev dit-forward --active`.
    pub fn forward_dense_then_partial(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        encoder_hidden_states_image: Option<&Tensor>,
        active: &ActiveSet,
    ) -> Result<Tensor> {
        let (x, t, grid) = self.prepare_inputs(hidden_states, timestep)?;
        if active
            .ids()
            .last()
            .is_some_and(|&i| i as usize >= grid.len())
        {
            return Err(ModelError::Input(format!(
                "active token index out of range for {} tokens",
                grid.len()
            )));
        }
        let ctx = self.prepare_context(encoder_hidden_states, encoder_hidden_states_image, None)?;
        let rope = RopeTable::new(grid, self.cfg.head_dim, &self.device)?;
        let mut cache = KvCache::new(self.cfg.num_layers);
        let dense = Pass {
            cache: Some(&mut cache),
            ..Pass::default()
        };
        self.forward_tokens(&x, &t, grid, &ctx, &rope, dense)?;
        let xa = x.index_select(active.tensor(), 1)?;
        let partial = Pass {
            active: Some(active),
            cache: Some(&mut cache),
            ..Pass::default()
        };
        let va = self
            .forward_tokens(&xa, &t, grid, &ctx, &rope, partial)?
            .velocity;
        let (b, _, p) = va.dims3()?;
        let full = Tensor::zeros((b, grid.len(), p), DType::F32, &self.device)?;
        let full = full.index_add(active.tensor(), &va, 1)?;
        unpatchify(&full, grid, self.cfg.patch_size)
    }
}
