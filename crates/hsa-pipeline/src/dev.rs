//! Developer entry points that expose model pieces on plain tensor files, so anyone can check
//! us against another implementation (`hsa dev ...`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use hsa_core::ActiveSet;
use hsa_models::wan::WanModel;

use crate::io::{load_tensors, require};
use crate::{PipelineError, Result};

/// One DiT forward on diffusers-named inputs (`hidden_states`, `timestep`,
/// `encoder_hidden_states`, optional `encoder_hidden_states_image`). With `active` (a file
/// holding `active`: sorted i64 token indices) a dense pass fills the K/V cache and a partial
/// pass computes those tokens; other values of the returned velocity are 0.
pub fn dit_forward(
    model_dir: &Path,
    inputs: &Path,
    active: Option<&Path>,
    dtype: Option<DType>,
    device: &Device,
) -> Result<Tensor> {
    let model = WanModel::load_dir(model_dir, dtype, device)?;
    let io = load_tensors(inputs, device)?;
    let hs = require(&io, "hidden_states", inputs)?;
    let t = require(&io, "timestep", inputs)?;
    let ehs = require(&io, "encoder_hidden_states", inputs)?;
    let img = io.get("encoder_hidden_states_image");
    match active {
        None => Ok(model.forward(hs, t, ehs, img, None)?),
        Some(path) => {
            let file = load_tensors(path, device)?;
            let ids = require(&file, "active", path)?;
            let ids: Vec<i64> = ids.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
            let dims = hs.dims();
            let n = if dims.len() == 5 {
                let p = model.config().patch_size;
                (dims[2] / p[0]) * (dims[3] / p[1]) * (dims[4] / p[2])
            } else {
                0
            };
            let ids: Vec<u32> = ids
                .iter()
                .map(|&i| {
                    u32::try_from(i).map_err(|_| PipelineError::Input {
                        path: path.to_path_buf(),
                        message: format!("active index {i} is negative or too large"),
                    })
                })
                .collect::<Result<_>>()?;
            let set = ActiveSet::new(ids, n, device).map_err(|e| PipelineError::Input {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            Ok(model.forward_dense_then_partial(hs, t, ehs, img, &set)?)
        }
    }
}

/// `hsa dev sample`: sampling from explicit noise and text embeddings.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub model_dir: std::path::PathBuf,
    /// safetensors with `noise` [1,C,F,H,W], `encoder_hidden_states` [1,S,text_dim] and, for
    /// guidance != 1, `negative_encoder_hidden_states`.
    pub inputs: std::path::PathBuf,
    pub steps: usize,
    pub shift: f64,
    pub guidance: f64,
    pub schedule: hsa_core::ScheduleKind,
    pub options: crate::sampling::SamplerOptions,
    pub dtype: Option<DType>,
}

/// Result of [`sample`].
#[derive(Debug)]
pub struct SampleResult {
    /// `[1, C, F, H, W]` f32.
    pub latents: Tensor,
    pub stats: hsa_core::RunStats,
    pub warnings: Vec<String>,
}

/// Runs the requested sampler on the model; `observer` sees every finished step.
pub fn sample(
    req: &SampleRequest,
    device: &Device,
    observer: &mut dyn FnMut(&hsa_core::StepEvent),
) -> Result<SampleResult> {
    let model = WanModel::load_dir(&req.model_dir, req.dtype, device)?;
    let cfg = model.config();
    let guidance = hsa_core::Guidance::new(req.guidance)?;
    let inputs = SamplingInputs::load(&model, &req.inputs, guidance, device)?;
    let grid = inputs.grid;
    let (spec, warnings) = req.options.resolve(req.steps, grid.len())?;
    // UniPC runs on diffusers' UniPC flow sigmas unless another table was asked for.
    let kind = req.options.schedule_kind(req.schedule);
    let schedule = hsa_core::Schedule::new(kind, req.steps, req.shift)?;
    let mut den = inputs.denoiser(&model)?;
    let (latents, stats) = crate::sampling::run_sampler(
        &mut den,
        &inputs.noise,
        &schedule,
        guidance,
        &spec,
        observer,
    )?;
    let latents = hsa_models::wan::patch::unpatchify(&latents.unsqueeze(0)?, grid, cfg.patch_size)?;
    Ok(SampleResult {
        latents,
        stats,
        warnings,
    })
}

/// Noise and text embeddings of a text-to-video sampling run, read from a tensor file.
struct SamplingInputs {
    /// `[N, P]` tokens.
    noise: Tensor,
    grid: hsa_core::TokenGrid,
    text: Tensor,
    negative: Option<Tensor>,
}

impl SamplingInputs {
    /// Reads `noise` [1,C,F,H,W], `encoder_hidden_states` and (needed when `guidance` uses the
    /// unconditional branch) `negative_encoder_hidden_states`.
    fn load(
        model: &WanModel,
        path: &Path,
        guidance: hsa_core::Guidance,
        device: &Device,
    ) -> Result<Self> {
        use hsa_models::wan::patch::{grid_for, patchify};
        let cfg = model.config();
        if cfg.in_channels != cfg.out_channels {
            return Err(PipelineError::Invalid(format!(
                "this command drives text-to-video models; this one takes {} input channels for {} output channels (image conditioning)",
                cfg.in_channels, cfg.out_channels
            )));
        }
        let io = load_tensors(path, device)?;
        let noise = require(&io, "noise", path)?;
        let dims = noise.dims().to_vec();
        if dims.len() != 5 || dims[0] != 1 || dims[1] != cfg.out_channels {
            return Err(PipelineError::Input {
                path: path.to_path_buf(),
                message: format!(
                    "noise must be [1, {}, F, H, W], got {dims:?}",
                    cfg.out_channels
                ),
            });
        }
        let grid = grid_for(dims[2], dims[3], dims[4], cfg.patch_size)?;
        let text = require(&io, "encoder_hidden_states", path)?.clone();
        let negative = if guidance.uses_uncond() {
            Some(
                io.get("negative_encoder_hidden_states")
                    .ok_or_else(|| PipelineError::Input {
                        path: path.to_path_buf(),
                        message: format!(
                            "guidance {} needs 'negative_encoder_hidden_states' (or use --guidance 1)",
                            guidance.scale
                        ),
                    })?
                    .clone(),
            )
        } else {
            None
        };
        let noise = patchify(&noise.to_dtype(DType::F32)?, cfg.patch_size)?.squeeze(0)?;
        Ok(Self {
            noise,
            grid,
            text,
            negative,
        })
    }

    fn denoiser<'m>(&self, model: &'m WanModel) -> Result<hsa_models::wan::WanDenoiser<'m>> {
        Ok(hsa_models::wan::WanDenoiser::new(
            model,
            self.grid,
            &self.text,
            self.negative.as_ref(),
            None,
        )?)
    }
}

/// Result of [`calibrate_teacache`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct TeaCacheCalibration {
    /// Rescaling polynomial, highest power first (`--teacache-coefficients`).
    pub coefficients: Vec<f64>,
    /// `e` or `e0`.
    pub mode: String,
    pub steps: usize,
    pub shift: f64,
    pub guidance: f64,
    /// (indicator change, output change) pairs the fit used.
    pub pairs: Vec<(f64, f64)>,
    /// Root-mean-square residual of the fit.
    pub rms_residual: f64,
    /// Wall time of the full-step runs: the offline cost HSA does not have.
    pub wall_seconds: f64,
}

/// `hsa calibrate teacache`: full FM runs over every input file, then a 4th-order fit of the
/// output change against the timestep-indicator change.
#[allow(clippy::too_many_arguments)]
pub fn calibrate_teacache(
    model_dir: &Path,
    inputs: &[std::path::PathBuf],
    steps: usize,
    shift: f64,
    guidance: f64,
    schedule: hsa_core::ScheduleKind,
    kind: hsa_core::IndicatorKind,
    dtype: Option<DType>,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<TeaCacheCalibration> {
    use hsa_core::teacache::{calibration_pairs, poly_eval, polyfit};
    if inputs.is_empty() {
        return Err(PipelineError::Invalid(
            "calibration needs at least one --inputs file".into(),
        ));
    }
    let start = std::time::Instant::now();
    let model = WanModel::load_dir(model_dir, dtype, device)?;
    let g = hsa_core::Guidance::new(guidance)?;
    let schedule = hsa_core::Schedule::new(schedule, steps, shift)?;
    let mut pairs = Vec::new();
    for (i, path) in inputs.iter().enumerate() {
        let inp = SamplingInputs::load(&model, path, g, device)?;
        let mut den = inp.denoiser(&model)?;
        pairs.extend(calibration_pairs(&mut den, &inp.noise, &schedule, g, kind)?);
        progress(i + 1);
    }
    let (x, y): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
    let coefficients = polyfit(&x, &y, 4)?;
    let rms_residual = (pairs
        .iter()
        .map(|(x, y)| (poly_eval(&coefficients, *x) - y).powi(2))
        .sum::<f64>()
        / pairs.len() as f64)
        .sqrt();
    Ok(TeaCacheCalibration {
        coefficients,
        mode: match kind {
            hsa_core::IndicatorKind::Embedding => "e".into(),
            hsa_core::IndicatorKind::Projection => "e0".into(),
        },
        steps,
        shift,
        guidance,
        pairs,
        rms_residual,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}
