//! Two-expert Wan2.2 A14B as one [`Denoiser`]: the high-noise expert serves timesteps at or
//! above the boundary (`boundary_ratio · 1000`), the low-noise expert the rest. Each expert
//! keeps its own K/V caches, so the first step after the switch must be dense (samplers get
//! it from [`hsa_core::Schedule::expert_switch_step`]); a partial call on an expert whose
//! cache is empty is an error, never a silent use of the other expert's K/V.

use candle_core::Tensor;
use hsa_core::{ActiveSet, Branch, Denoiser, IndicatorKind, TokenGrid};

use super::denoiser::WanDenoiser;
use crate::{ModelError, Result};

pub struct WanExperts<'m> {
    high: WanDenoiser<'m>,
    low: WanDenoiser<'m>,
    boundary: f64,
}

impl<'m> WanExperts<'m> {
    /// `boundary` is a model timestep (e.g. 875 for Wan2.2 T2V-A14B, 900 for I2V-A14B).
    pub fn new(high: WanDenoiser<'m>, low: WanDenoiser<'m>, boundary: f64) -> Result<Self> {
        if high.grid() != low.grid() || high.token_dim() != low.token_dim() {
            return Err(ModelError::Input(
                "the two experts must share the token grid and layout".into(),
            ));
        }
        if high.has_uncond() != low.has_uncond() {
            return Err(ModelError::Input(
                "both experts need the same CFG contexts".into(),
            ));
        }
        Ok(Self {
            high,
            low,
            boundary,
        })
    }

    fn expert(&mut self, timestep: f64) -> &mut WanDenoiser<'m> {
        if timestep >= self.boundary {
            &mut self.high
        } else {
            &mut self.low
        }
    }
}

impl Denoiser for WanExperts<'_> {
    fn grid(&self) -> TokenGrid {
        self.high.grid()
    }

    fn token_dim(&self) -> usize {
        self.high.token_dim()
    }

    fn has_uncond(&self) -> bool {
        self.high.has_uncond()
    }

    fn reset(&mut self) -> hsa_core::Result<()> {
        self.high.reset()?;
        self.low.reset()
    }

    fn velocity(
        &mut self,
        x: &Tensor,
        timestep: f64,
        branch: Branch,
        active: Option<&ActiveSet>,
    ) -> hsa_core::Result<Tensor> {
        self.expert(timestep).velocity(x, timestep, branch, active)
    }

    fn timestep_indicator(
        &mut self,
        timestep: f64,
        kind: IndicatorKind,
    ) -> hsa_core::Result<Option<Tensor>> {
        self.expert(timestep).timestep_indicator(timestep, kind)
    }

    fn enable_residual_capture(&mut self) -> hsa_core::Result<()> {
        self.high.enable_residual_capture()?;
        self.low.enable_residual_capture()
    }

    fn velocity_reusing_residual(
        &mut self,
        x: &Tensor,
        timestep: f64,
        branch: Branch,
    ) -> hsa_core::Result<Tensor> {
        self.expert(timestep)
            .velocity_reusing_residual(x, timestep, branch)
    }
}
