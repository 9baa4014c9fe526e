//! Prompt to video: text encoding, sampling with any sampler, decoding.
//!
//! Model folders are diffusers pipelines (model_index.json + components). The bundled model
//! is a pixel-space Wan (no VAE) whose generation defaults live under `_hsa` in its
//! model_index.json; real Wan checkpoints need the VAE decoder, which is not wired in yet.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use hsa_core::{Guidance, RunStats, Schedule, ScheduleKind, StepEvent};
use hsa_models::text::{encode_text, Tokenizer};
use hsa_models::umt5::UMT5Encoder;
use hsa_models::wan::patch::{grid_for, unpatchify};
use hsa_models::wan::{WanDenoiser, WanModel};

use crate::sampling::{run_sampler, SamplerOptions};
use crate::{PipelineError, Result};

/// Generation defaults a model folder declares (`_hsa` in model_index.json).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ModelDefaults {
    /// Latent = pixels: no VAE (the bundled model).
    #[serde(default)]
    pub pixel_space: bool,
    pub text_len: usize,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub fps: f64,
    pub shift: f64,
    pub guidance: f64,
    pub steps: usize,
}

impl ModelDefaults {
    /// Wan2.1 T2V defaults (wan-spec §3.1) for folders that declare none.
    pub fn wan21_t2v() -> Self {
        Self {
            pixel_space: false,
            text_len: 512,
            frames: 81,
            height: 480,
            width: 832,
            fps: 16.0,
            shift: 5.0,
            guidance: 5.0,
            steps: 50,
        }
    }

    /// Reads `_hsa` from `dir/model_index.json`, else the Wan2.1 defaults.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("model_index.json");
        let text = std::fs::read_to_string(&path).map_err(|e| PipelineError::Io {
            path: path.clone(),
            source: e,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PipelineError::Input {
                path: path.clone(),
                message: format!("malformed JSON: {e}"),
            })?;
        match json.get("_hsa") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| PipelineError::Input {
                path,
                message: format!("invalid _hsa section: {e}"),
            }),
            None => Ok(Self::wan21_t2v()),
        }
    }
}

/// One generation request; `None` fields take the model's defaults.
#[derive(Debug, Clone, Default)]
pub struct GenerateRequest {
    pub model_dir: PathBuf,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub frames: Option<usize>,
    /// (width, height)
    pub size: Option<(usize, usize)>,
    pub steps: Option<usize>,
    pub shift: Option<f64>,
    pub guidance: Option<f64>,
    pub schedule: Option<ScheduleKind>,
    pub seed: u64,
    pub sampler: SamplerOptions,
    pub dtype: Option<DType>,
}

/// Stages reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    TextEncoding,
    Sampling,
    Decoding,
}

/// A generated clip.
#[derive(Debug)]
pub struct Generated {
    /// `[3, F, H, W]` f32 in [-1, 1].
    pub video: Tensor,
    pub fps: f64,
    pub stats: RunStats,
    pub warnings: Vec<String>,
    pub text_seconds: f64,
    pub sampling_seconds: f64,
}

/// Standard normal noise of `shape`, bit-identical for a seed on every machine.
pub fn seeded_noise(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let values = hsa_models::wan::init::normal(n, 1.0, seed, "hsa-generate-noise");
    Ok(Tensor::from_vec(values, shape, device)?)
}

fn component(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(PipelineError::Input {
            path: dir.to_path_buf(),
            message: format!("missing component '{name}' (expected {})", p.display()),
        })
    }
}

/// Runs text encoding, sampling and decoding. `on_step` sees sampler steps; `on_stage` stage
/// changes.
pub fn generate(
    req: &GenerateRequest,
    device: &Device,
    on_stage: &mut dyn FnMut(Stage),
    on_step: &mut dyn FnMut(&StepEvent),
) -> Result<Generated> {
    let dir = &req.model_dir;
    if !dir.is_dir() {
        return Err(PipelineError::Io {
            path: dir.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
        });
    }
    let defaults = ModelDefaults::read(dir)?;
    if !defaults.pixel_space {
        return Err(PipelineError::Invalid(
            "latent-space Wan checkpoints need the Wan VAE decoder, which hsa generate does not have yet; \
             use `hsa dev sample` on latents, or the bundled model"
                .into(),
        ));
    }
    let frames = req.frames.unwrap_or(defaults.frames);
    let (width, height) = req.size.unwrap_or((defaults.width, defaults.height));
    let steps = req.steps.unwrap_or(defaults.steps);
    let shift = req.shift.unwrap_or(defaults.shift);
    let guidance = Guidance::new(req.guidance.unwrap_or(defaults.guidance))?;
    let transformer = component(dir, "transformer")?;
    let tokenizer_path = component(dir, "tokenizer")?.join("tokenizer.json");
    let encoder_dir = component(dir, "text_encoder")?;

    let model = WanModel::load_dir(&transformer, Some(req.dtype.unwrap_or(DType::F32)), device)?;
    let cfg = model.config().clone();
    let grid = grid_for(frames, height, width, cfg.patch_size).map_err(|_| {
        PipelineError::Invalid(format!(
            "size {width}x{height} with {frames} frames does not fit the model's patch {:?}: width and height must be multiples of {} and {}",
            cfg.patch_size, cfg.patch_size[2], cfg.patch_size[1]
        ))
    })?;

    on_stage(Stage::TextEncoding);
    let start = Instant::now();
    let (cond, uncond) = {
        // The encoder lives only in this scope: it is freed before sampling.
        let tokenizer = Tokenizer::from_file(&tokenizer_path)?.with_text_len(defaults.text_len)?;
        let encoder = UMT5Encoder::load(&encoder_dir, DType::F32, device)?;
        let cond = encode_text(&encoder, &tokenizer, &[req.prompt.as_str()])?;
        let uncond = if guidance.uses_uncond() {
            let neg = req.negative_prompt.as_deref().unwrap_or("");
            Some(encode_text(&encoder, &tokenizer, &[neg])?)
        } else {
            None
        };
        (cond, uncond)
    };
    let text_seconds = start.elapsed().as_secs_f64();

    on_stage(Stage::Sampling);
    let start = Instant::now();
    let (spec, warnings) = req.sampler.resolve(steps, grid.len())?;
    let schedule = Schedule::new(
        req.schedule.unwrap_or(ScheduleKind::FlowMatchEuler),
        steps,
        shift,
    )?;
    let noise = seeded_noise(
        &[1, cfg.out_channels, frames, height, width],
        req.seed,
        device,
    )?;
    let noise = hsa_models::wan::patch::patchify(&noise, cfg.patch_size)?.squeeze(0)?;
    let mut den = WanDenoiser::new(&model, grid, &cond, uncond.as_ref(), None)?;
    let (latents, stats) = run_sampler(&mut den, &noise, &schedule, guidance, &spec, on_step)?;
    let sampling_seconds = start.elapsed().as_secs_f64();

    on_stage(Stage::Decoding);
    let video = unpatchify(&latents.unsqueeze(0)?, grid, cfg.patch_size)?
        .squeeze(0)?
        .clamp(-1f32, 1f32)?;
    Ok(Generated {
        video,
        fps: defaults.fps,
        stats,
        warnings,
        text_seconds,
        sampling_seconds,
    })
}
