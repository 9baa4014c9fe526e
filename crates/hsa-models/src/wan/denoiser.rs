//! [`hsa_core::Denoiser`] for the Wan DiT: one generation's contexts, K/V caches and
//! conditioning, behind the sampler-facing trait.

use candle_core::{DType, Tensor};
use hsa_core::{ActiveSet, Branch, Denoiser, IndicatorKind, TokenGrid};

use super::attention::KvCache;
use super::dit::{Pass, Timesteps, WanContext, WanModel};
use super::rope::RopeTable;
use crate::{ModelError, Result};

/// A Wan DiT bound to one generation: grid, text contexts per CFG branch, a K/V cache per
/// branch, and optional conditioning.
pub struct WanDenoiser<'m> {
    model: &'m WanModel,
    grid: TokenGrid,
    rope: RopeTable,
    contexts: Vec<WanContext>,
    caches: [KvCache; 2],
    residuals: [Option<Tensor>; 2],
    /// Extra input channels per token `[N, K, C_cond]` (I2V: mask + image latent), appended to
    /// the state's channels at every patch position.
    condition: Option<Tensor>,
    /// Per-token multiplier of the timestep (TI2V: 0 on the conditioning frame, else 1).
    timestep_scale: Option<Vec<f32>>,
    /// TI2V: `(keep [N, 1] u8, clean [N, P])`: rows with `keep = 0` enter the model as `clean`
    /// whatever the sampler's state holds (diffusers re-imposes the image latent at every call).
    clean: Option<(Tensor, Tensor)>,
    capture_residual: bool,
}

impl<'m> WanDenoiser<'m> {
    /// `cond` / `uncond`: encoder hidden states `[1, S, text_dim]` of the prompt and the
    /// negative prompt; `image`: CLIP features `[1, S_img, image_dim]` for Wan2.1 I2V.
    pub fn new(
        model: &'m WanModel,
        grid: TokenGrid,
        cond: &Tensor,
        uncond: Option<&Tensor>,
        image: Option<&Tensor>,
    ) -> Result<Self> {
        let mut contexts = vec![model.prepare_context(cond, image, None)?];
        if let Some(u) = uncond {
            contexts.push(model.prepare_context(u, image, None)?);
        }
        if contexts.iter().any(|c| c.batch != 1) {
            return Err(ModelError::Input(
                "the denoiser runs one sample per branch: text batch must be 1".into(),
            ));
        }
        let n = model.config().num_layers;
        Ok(Self {
            model,
            grid,
            rope: RopeTable::new(grid, model.config().head_dim, model.device())?,
            contexts,
            caches: [KvCache::new(n), KvCache::new(n)],
            residuals: [None, None],
            condition: None,
            timestep_scale: None,
            clean: None,
            capture_residual: false,
        })
    }

    /// Sets the conditioning channels, given as tokens `[N, K·C_cond]` in the patch layout.
    pub fn with_condition(mut self, tokens: &Tensor) -> Result<Self> {
        let cfg = self.model.config();
        let k: usize = cfg.patch_size.iter().product();
        let c_cond = cfg.in_channels - cfg.out_channels;
        let (n, p) = tokens.dims2()?;
        if n != self.grid.len() || p != k * c_cond {
            return Err(ModelError::Input(format!(
                "conditioning tokens {:?} must be [{}, {}]",
                tokens.dims(),
                self.grid.len(),
                k * c_cond
            )));
        }
        self.condition = Some(tokens.to_dtype(DType::F32)?.reshape((n, k, c_cond))?);
        Ok(self)
    }

    /// Sets a per-token timestep multiplier (length N).
    pub fn with_timestep_scale(mut self, scale: Vec<f32>) -> Result<Self> {
        if scale.len() != self.grid.len() {
            return Err(ModelError::Input(format!(
                "timestep scale has {} entries for {} tokens",
                scale.len(),
                self.grid.len()
            )));
        }
        self.timestep_scale = Some(scale);
        Ok(self)
    }

    /// Replaces the state rows `rows` by `clean [N, P]`'s rows on every model input (the
    /// conditioning frame of TI2V image-to-video).
    pub fn with_clean_tokens(mut self, rows: &[u32], clean: &Tensor) -> Result<Self> {
        let n = self.grid.len();
        let p = self.model.config().out_token_dim();
        if clean.dims() != [n, p] || rows.iter().any(|&r| r as usize >= n) {
            return Err(ModelError::Input(format!(
                "clean tokens {:?} must be [{n}, {p}] with rows below {n}",
                clean.dims()
            )));
        }
        let mut keep = vec![1u8; n];
        for &r in rows {
            keep[r as usize] = 0;
        }
        let keep = Tensor::from_vec(keep, (n, 1), clean.device())?;
        self.clean = Some((keep, clean.to_dtype(DType::F32)?));
        Ok(self)
    }

    /// The K/V cache of a branch (inspection and tests).
    pub fn cache(&self, branch: Branch) -> &KvCache {
        &self.caches[branch.index()]
    }

    /// Bytes held by both branches' K/V caches.
    pub fn cache_bytes(&self) -> usize {
        self.caches.iter().map(KvCache::memory_bytes).sum()
    }

    /// Model input tokens `[1, A, P_in]` for state rows `x [A, P]`.
    fn model_input(&self, x: &Tensor, active: Option<&ActiveSet>) -> Result<Tensor> {
        let pick = |t: &Tensor| -> Result<Tensor> {
            Ok(match active {
                None => t.clone(),
                Some(s) => t.index_select(s.tensor(), 0)?,
            })
        };
        let x = match &self.clean {
            None => x.clone(),
            Some((keep, clean)) => {
                let keep = pick(keep)?.broadcast_as(x.shape())?;
                keep.where_cond(x, &pick(clean)?.to_dtype(x.dtype())?)?
            }
        };
        let x = match &self.condition {
            None => x.clone(),
            Some(c) => {
                let c = match active {
                    None => c.clone(),
                    Some(s) => c.index_select(s.tensor(), 0)?,
                };
                let (a, k, _) = c.dims3()?;
                let xs = x.reshape((a, k, ()))?;
                Tensor::cat(&[&xs, &c], 2)?.reshape((a, ()))?
            }
        };
        Ok(x.unsqueeze(0)?)
    }

    fn timesteps(&self, timestep: f64) -> Timesteps {
        let t = timestep as f32;
        match &self.timestep_scale {
            None => Timesteps::PerSample(vec![t]),
            Some(s) => Timesteps::PerToken(s.iter().map(|m| m * t).collect()),
        }
    }
}

impl Denoiser for WanDenoiser<'_> {
    fn grid(&self) -> TokenGrid {
        self.grid
    }

    fn token_dim(&self) -> usize {
        self.model.config().out_token_dim()
    }

    fn has_uncond(&self) -> bool {
        self.contexts.len() > 1
    }

    fn reset(&mut self) -> hsa_core::Result<()> {
        self.caches.iter_mut().for_each(KvCache::clear);
        self.residuals = [None, None];
        Ok(())
    }

    fn velocity(
        &mut self,
        x: &Tensor,
        timestep: f64,
        branch: Branch,
        active: Option<&ActiveSet>,
    ) -> hsa_core::Result<Tensor> {
        let rows = match active {
            None => x.clone(),
            Some(s) => x.index_select(s.tensor(), 0)?,
        };
        let input = self.model_input(&rows, active)?;
        let t = self.timesteps(timestep);
        let capture = self.capture_residual && active.is_none();
        let ctx = self
            .contexts
            .get(branch.index())
            .ok_or_else(|| ModelError::Input("no negative context was given for CFG".into()))?;
        let pass = Pass {
            active,
            cache: Some(&mut self.caches[branch.index()]),
            capture_residual: capture,
            trace: None,
        };
        let out = self
            .model
            .forward_tokens(&input, &t, self.grid, ctx, &self.rope, pass)?;
        if capture {
            self.residuals[branch.index()] = out.block_residual;
        }
        Ok(out.velocity.squeeze(0)?)
    }

    fn timestep_indicator(
        &mut self,
        timestep: f64,
        kind: IndicatorKind,
    ) -> hsa_core::Result<Option<Tensor>> {
        let (e, e0) = self.model.timestep_embedding(timestep as f32)?;
        Ok(Some(match kind {
            IndicatorKind::Embedding => e,
            IndicatorKind::Projection => e0,
        }))
    }

    fn enable_residual_capture(&mut self) -> hsa_core::Result<()> {
        self.capture_residual = true;
        Ok(())
    }

    fn velocity_reusing_residual(
        &mut self,
        x: &Tensor,
        timestep: f64,
        branch: Branch,
    ) -> hsa_core::Result<Tensor> {
        let residual = self.residuals[branch.index()].as_ref().ok_or_else(|| {
            hsa_core::CoreError::Denoiser(
                "no block residual stored yet: run a dense step of this branch first".into(),
            )
        })?;
        let input = self.model_input(x, None)?;
        let t = self.timesteps(timestep);
        Ok(self
            .model
            .forward_from_residual(&input, &t, self.grid, residual)?
            .squeeze(0)?)
    }
}
