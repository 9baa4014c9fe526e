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
    use hsa_models::wan::patch::{grid_for, patchify, unpatchify};
    let model = WanModel::load_dir(&req.model_dir, req.dtype, device)?;
    let cfg = model.config();
    if cfg.in_channels != cfg.out_channels {
        return Err(PipelineError::Invalid(format!(
            "dev sample drives text-to-video models; this one takes {} input channels for {} output channels (image conditioning)",
            cfg.in_channels, cfg.out_channels
        )));
    }
    let io = load_tensors(&req.inputs, device)?;
    let noise = require(&io, "noise", &req.inputs)?;
    let dims = noise.dims().to_vec();
    if dims.len() != 5 || dims[0] != 1 || dims[1] != cfg.out_channels {
        return Err(PipelineError::Input {
            path: req.inputs.clone(),
            message: format!(
                "noise must be [1, {}, F, H, W], got {dims:?}",
                cfg.out_channels
            ),
        });
    }
    let grid = grid_for(dims[2], dims[3], dims[4], cfg.patch_size)?;
    let text = require(&io, "encoder_hidden_states", &req.inputs)?;
    let negative = io.get("negative_encoder_hidden_states");
    let guidance = hsa_core::Guidance::new(req.guidance)?;
    if guidance.uses_uncond() && negative.is_none() {
        return Err(PipelineError::Input {
            path: req.inputs.clone(),
            message: format!(
                "guidance {} needs 'negative_encoder_hidden_states' (or use --guidance 1)",
                req.guidance
            ),
        });
    }
    let negative = if guidance.uses_uncond() {
        negative
    } else {
        None
    };
    let (spec, warnings) = req.options.resolve(req.steps, grid.len())?;
    let schedule = hsa_core::Schedule::new(req.schedule, req.steps, req.shift)?;
    let mut den = hsa_models::wan::WanDenoiser::new(&model, grid, text, negative, None)?;
    let x = patchify(&noise.to_dtype(DType::F32)?, cfg.patch_size)?.squeeze(0)?;
    let (latents, stats) =
        crate::sampling::run_sampler(&mut den, &x, &schedule, guidance, &spec, observer)?;
    let latents = unpatchify(&latents.unsqueeze(0)?, grid, cfg.patch_size)?;
    Ok(SampleResult {
        latents,
        stats,
        warnings,
    })
}
