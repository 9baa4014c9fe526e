//! Flow-matching Euler sampling with classifier-free guidance (the "FM" baseline).

use candle_core::Tensor;

use crate::{ActiveSet, Branch, CoreError, Denoiser, Result, Schedule};

/// Classifier-free guidance setting: `v = v_u + scale·(v_c - v_u)`. A scale of 1 runs the
/// conditional branch alone. Two-expert models (Wan2.2 A14B) use a second scale once the
/// timestep drops below the expert boundary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    pub scale: f64,
    /// `(boundary timestep, scale)`: the scale used at timesteps below the boundary.
    pub low_noise: Option<(f64, f64)>,
}

fn check_scale(scale: f64) -> Result<()> {
    if !scale.is_finite() || scale < 0.0 {
        return Err(CoreError::InvalidSetting(format!(
            "guidance scale must be a non-negative number, got {scale}"
        )));
    }
    Ok(())
}

impl Guidance {
    pub fn new(scale: f64) -> Result<Self> {
        check_scale(scale)?;
        Ok(Self {
            scale,
            low_noise: None,
        })
    }

    /// Uses `scale` instead at timesteps below `boundary` (the low-noise expert's guidance).
    pub fn with_low_noise(self, boundary: f64, scale: f64) -> Result<Self> {
        check_scale(scale)?;
        Ok(Self {
            low_noise: Some((boundary, scale)),
            ..self
        })
    }

    /// The scale in force at `timestep`.
    pub fn scale_at(&self, timestep: f64) -> f64 {
        match self.low_noise {
            Some((boundary, s)) if timestep < boundary => s,
            _ => self.scale,
        }
    }

    /// Whether the unconditional branch is needed at some step.
    pub fn uses_uncond(&self) -> bool {
        self.scale != 1.0 || self.low_noise.is_some_and(|(_, s)| s != 1.0)
    }
}

/// One finished sampler step, reported to an observer (progress bars, run statistics).
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    /// Step index i in `0..T`.
    pub index: usize,
    pub steps: usize,
    /// sigma_i, the noise level the step started from.
    pub sigma: f64,
    /// Fraction of tokens evaluated by the model at this step.
    pub active_fraction: f64,
    /// Model evaluations (one per branch call) made at this step.
    pub nfe: usize,
}

/// Guided velocity of the tokens in `active` (all tokens when `None`).
pub fn guided_velocity(
    denoiser: &mut dyn Denoiser,
    x: &Tensor,
    timestep: f64,
    guidance: Guidance,
    active: Option<&ActiveSet>,
) -> Result<Tensor> {
    let v_cond = denoiser.velocity(x, timestep, Branch::Cond, active)?;
    if !guidance.uses_uncond() {
        return Ok(v_cond);
    }
    if !denoiser.has_uncond() {
        return Err(CoreError::InvalidSetting(format!(
            "guidance scale {} needs a negative (unconditional) context, but none was given",
            guidance.scale
        )));
    }
    let v_uncond = denoiser.velocity(x, timestep, Branch::Uncond, active)?;
    combine_guidance(&v_cond, &v_uncond, guidance.scale_at(timestep))
}

/// `v_u + scale·(v_c - v_u)`, in the operation order of diffusers' pipelines.
pub fn combine_guidance(v_cond: &Tensor, v_uncond: &Tensor, scale: f64) -> Result<Tensor> {
    Ok((v_uncond + ((v_cond - v_uncond)? * scale)?)?)
}

/// Checks that `x` is a `[N, P]` state for `denoiser`.
pub fn check_state(denoiser: &dyn Denoiser, x: &Tensor) -> Result<()> {
    let expected = vec![denoiser.grid().len(), denoiser.token_dim()];
    if x.dims() != expected.as_slice() {
        return Err(CoreError::StateShape {
            got: x.dims().to_vec(),
            expected,
        });
    }
    Ok(())
}

/// Plain Euler over `schedule`: `x_{i+1} = x_i + (sigma_{i+1} - sigma_i)·v_i`, every token
/// evaluated at every step. `noise` is the initial state `[N, P]`; returns the final sample.
pub fn sample_fm_euler(
    denoiser: &mut dyn Denoiser,
    noise: &Tensor,
    schedule: &Schedule,
    guidance: Guidance,
    observer: &mut dyn FnMut(&StepEvent),
) -> Result<Tensor> {
    sample_dense(
        denoiser,
        noise,
        schedule,
        guidance,
        observer,
        &mut |x, v, i| {
            let dt = schedule.sigmas[i + 1] - schedule.sigmas[i];
            Ok((x + (v * dt)?)?)
        },
    )
}

/// The loop every full-step solver shares: at each step the guided velocity of all tokens,
/// then `update(x_i, v_i, i) -> x_{i+1}` (Euler, UniPC), and one [`StepEvent`].
pub fn sample_dense(
    denoiser: &mut dyn Denoiser,
    noise: &Tensor,
    schedule: &Schedule,
    guidance: Guidance,
    observer: &mut dyn FnMut(&StepEvent),
    update: &mut dyn FnMut(&Tensor, &Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    check_state(denoiser, noise)?;
    denoiser.reset()?;
    let steps = schedule.steps();
    let branches = if guidance.uses_uncond() { 2 } else { 1 };
    let mut x = noise.to_dtype(candle_core::DType::F32)?;
    for i in 0..steps {
        let v = guided_velocity(denoiser, &x, schedule.timesteps[i], guidance, None)?;
        x = update(&x, &v, i)?;
        observer(&StepEvent {
            index: i,
            steps,
            sigma: schedule.sigmas[i],
            active_fraction: 1.0,
            nfe: branches,
        });
    }
    Ok(x)
}
