//! Prompt to video: text encoding, sampling with any sampler, decoding.
//!
//! Model folders are diffusers pipelines (model_index.json + components). The bundled model
//! is a pixel-space Wan (no VAE) whose generation defaults live under `_hsa` in its
//! model_index.json; real Wan checkpoints need the VAE decoder, which is not wired in yet.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use hsa_core::{Denoiser, Guidance, RunStats, Schedule, ScheduleKind, StepEvent, TokenGrid};
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

/// Prompt embeddings: the conditional rows and, under CFG, the negative prompt's.
#[derive(Debug, Clone)]
pub struct PromptEmbeds {
    pub cond: Tensor,
    pub uncond: Option<Tensor>,
}

/// A loaded model folder: the DiT and the folder's defaults. The text stack is loaded only
/// while prompts are encoded ([`LoadedModel::encode_prompts`]) and freed afterwards.
pub struct LoadedModel {
    pub dir: PathBuf,
    pub defaults: ModelDefaults,
    pub model: WanModel,
    tokenizer_path: PathBuf,
    encoder_dir: PathBuf,
}

/// Resolved per-run settings (no defaults left open).
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub shift: f64,
    pub guidance: Guidance,
    pub schedule: ScheduleKind,
    pub seed: u64,
}

/// One sampled clip before any output file is written.
#[derive(Debug)]
pub struct SampledVideo {
    /// `[3, F, H, W]` f32 in [-1, 1].
    pub video: Tensor,
    pub stats: RunStats,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

impl LoadedModel {
    /// Loads the DiT of a pixel-space model folder (the bundled model's layout).
    pub fn load(dir: &Path, dtype: Option<DType>, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(PipelineError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "model directory not found",
                ),
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
        let transformer = component(dir, "transformer")?;
        let tokenizer_path = component(dir, "tokenizer")?.join("tokenizer.json");
        let encoder_dir = component(dir, "text_encoder")?;
        let model = WanModel::load_dir(&transformer, Some(dtype.unwrap_or(DType::F32)), device)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            defaults,
            model,
            tokenizer_path,
            encoder_dir,
        })
    }

    /// Fills the request's open fields from the folder's defaults.
    pub fn settings(&self, req: &GenerateRequest) -> Result<RunSettings> {
        let d = &self.defaults;
        let (width, height) = req.size.unwrap_or((d.width, d.height));
        Ok(RunSettings {
            frames: req.frames.unwrap_or(d.frames),
            width,
            height,
            steps: req.steps.unwrap_or(d.steps),
            shift: req.shift.unwrap_or(d.shift),
            guidance: Guidance::new(req.guidance.unwrap_or(d.guidance))?,
            schedule: req.schedule.unwrap_or(ScheduleKind::FlowMatchEuler),
            seed: req.seed,
        })
    }

    /// Encodes every prompt (and, when `with_uncond`, the negative prompt once). The text
    /// encoder lives only inside this call.
    pub fn encode_prompts(
        &self,
        prompts: &[&str],
        negative: Option<&str>,
        with_uncond: bool,
    ) -> Result<Vec<PromptEmbeds>> {
        let device = self.model.device().clone();
        let tokenizer =
            Tokenizer::from_file(&self.tokenizer_path)?.with_text_len(self.defaults.text_len)?;
        let encoder = UMT5Encoder::load(&self.encoder_dir, DType::F32, &device)?;
        let uncond = if with_uncond {
            Some(encode_text(
                &encoder,
                &tokenizer,
                &[negative.unwrap_or("")],
            )?)
        } else {
            None
        };
        prompts
            .iter()
            .map(|p| {
                Ok(PromptEmbeds {
                    cond: encode_text(&encoder, &tokenizer, &[*p])?,
                    uncond: uncond.clone(),
                })
            })
            .collect()
    }

    /// The token grid of a clip size, with a clear error when the size does not fit the patch.
    pub fn grid(&self, s: &RunSettings) -> Result<TokenGrid> {
        let p = self.model.config().patch_size;
        grid_for(s.frames, s.height, s.width, p).map_err(|_| {
            PipelineError::Invalid(format!(
                "size {}x{} with {} frames does not fit the model's patch {p:?}: width and height must be multiples of {} and {}",
                s.width, s.height, s.frames, p[2], p[1]
            ))
        })
    }

    /// The denoiser, seeded initial noise (`[N, P]`) and schedule of one run: what every sampler
    /// starts from (also used to calibrate TeaCache on this model).
    pub fn prepare<'a>(
        &'a self,
        embeds: &'a PromptEmbeds,
        s: &RunSettings,
    ) -> Result<(WanDenoiser<'a>, Tensor, Schedule)> {
        let cfg = self.model.config();
        let grid = self.grid(s)?;
        let schedule = Schedule::new(s.schedule, s.steps, s.shift)?;
        let noise = seeded_noise(
            &[1, cfg.out_channels, s.frames, s.height, s.width],
            s.seed,
            self.model.device(),
        )?;
        let noise = hsa_models::wan::patch::patchify(&noise, cfg.patch_size)?.squeeze(0)?;
        let uncond = if s.guidance.uses_uncond() {
            Some(embeds.uncond.as_ref().ok_or_else(|| {
                PipelineError::Invalid("guidance > 1 needs the negative prompt's embeddings".into())
            })?)
        } else {
            None
        };
        let den = WanDenoiser::new(&self.model, grid, &embeds.cond, uncond, None)?;
        Ok((den, noise, schedule))
    }

    /// Samples one clip from seeded noise with `sampler`.
    pub fn sample(
        &self,
        embeds: &PromptEmbeds,
        s: &RunSettings,
        sampler: &SamplerOptions,
        on_step: &mut dyn FnMut(&StepEvent),
    ) -> Result<SampledVideo> {
        let start = Instant::now();
        let (mut den, noise, schedule) = self.prepare(embeds, s)?;
        let grid = den.grid();
        let (spec, warnings) = sampler.resolve(s.steps, grid.len())?;
        let (latents, stats) =
            run_sampler(&mut den, &noise, &schedule, s.guidance, &spec, on_step)?;
        let video = unpatchify(&latents.unsqueeze(0)?, grid, self.model.config().patch_size)?
            .squeeze(0)?
            .clamp(-1f32, 1f32)?;
        Ok(SampledVideo {
            video,
            stats,
            warnings,
            seconds: start.elapsed().as_secs_f64(),
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
    let loaded = LoadedModel::load(&req.model_dir, req.dtype, device)?;
    let settings = loaded.settings(req)?;
    loaded.grid(&settings)?;

    on_stage(Stage::TextEncoding);
    let start = Instant::now();
    let embeds = loaded
        .encode_prompts(
            &[req.prompt.as_str()],
            req.negative_prompt.as_deref(),
            settings.guidance.uses_uncond(),
        )?
        .remove(0);
    let text_seconds = start.elapsed().as_secs_f64();

    on_stage(Stage::Sampling);
    let out = loaded.sample(&embeds, &settings, &req.sampler, on_step)?;
    on_stage(Stage::Decoding);
    Ok(Generated {
        video: out.video,
        fps: loaded.defaults.fps,
        stats: out.stats,
        warnings: out.warnings,
        text_seconds,
        sampling_seconds: out.seconds,
    })
}
