//! Prompt to video: text encoding, sampling with any sampler, decoding.
//!
//! Model folders are diffusers pipelines (model_index.json + components, see
//! [`crate::defaults`]): the bundled pixel-space Wan (no VAE), or latent Wan pipelines —
//! Wan2.1 T2V, Wan2.2 TI2V-5B (text-to-video), Wan2.2 T2V-A14B (two experts) — decoded with
//! the Wan VAE. [`generate`] runs the phases so that at most one big model is in memory at a
//! time: text encoder (freed after encoding), DiT(s) (freed after sampling), VAE decoder.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use hsa_core::{
    ActiveSet, Branch, Denoiser, Guidance, IndicatorKind, RunStats, Schedule, ScheduleKind,
    StepEvent, TokenGrid,
};
use hsa_models::wan::patch::{patchify, unpatchify};
use hsa_models::wan::{WanDenoiser, WanExperts, WanModel, WanVae};

pub use crate::defaults::{ModelDefaults, ModelKind, WAN_NEGATIVE_PROMPT};
pub use crate::folder::ModelFolder;
use crate::image_cond::{encode_image, Conditioning, ImageInputs, ImagePreprocess};
use crate::memory::MemoryPlan;
use crate::sampling::{run_sampler, SamplerOptions, SamplerSpec};
use crate::{PipelineError, Result};

/// One generation request; `None` fields take the model's defaults.
#[derive(Debug, Clone, Default)]
pub struct GenerateRequest {
    pub model_dir: PathBuf,
    pub prompt: String,
    /// `None`: the model's default (the official Wan negative prompt for latent Wan models).
    pub negative_prompt: Option<String>,
    pub frames: Option<usize>,
    /// (width, height)
    pub size: Option<(usize, usize)>,
    pub steps: Option<usize>,
    pub shift: Option<f64>,
    pub guidance: Option<f64>,
    /// Wan2.2 A14B: guidance of the low-noise expert (default: `guidance` when given, else the
    /// model's).
    pub guidance_2: Option<f64>,
    pub schedule: Option<ScheduleKind>,
    pub seed: u64,
    /// An empty sampler name picks the model's default (its scheduler class).
    pub sampler: SamplerOptions,
    pub dtype: Option<DType>,
    /// Initial noise `[1, C, f, h, w]` in the sampler's space instead of seeded noise (parity
    /// runs against other implementations).
    pub latents: Option<Tensor>,
    /// Skip the refusal when the memory plan exceeds the available memory.
    pub skip_memory_check: bool,
    /// First frame of an image-to-video run (PNG, JPEG or WebP).
    pub image: Option<PathBuf>,
    /// Whose image preprocessing to follow (the official Wan code by default).
    pub image_preprocess: ImagePreprocess,
}

/// Stages reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The memory estimate, before anything large is loaded.
    Plan(MemoryPlan),
    TextEncoding,
    /// VAE (and CLIP) encoding of the conditioning image.
    ImageEncoding,
    /// Loading the DiT(s).
    Loading,
    Sampling,
    /// `done` of `total` latent frames decoded (first reported with `done = 0`).
    Decoding {
        done: usize,
        total: usize,
    },
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
    pub decode_seconds: f64,
    pub plan: MemoryPlan,
}

/// Standard normal noise of `shape`, bit-identical for a seed on every machine.
pub fn seeded_noise(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let values = hsa_models::wan::init::normal(n, 1.0, seed, "hsa-generate-noise");
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// Prompt embeddings: the conditional rows and, under CFG, the negative prompt's.
#[derive(Debug, Clone)]
pub struct PromptEmbeds {
    pub cond: Tensor,
    pub uncond: Option<Tensor>,
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
    /// The requested sigma table; [`LoadedModel::sample_latents`] maps it for the sampler
    /// ([`SamplerOptions::schedule_kind`]: UniPC runs on diffusers' UniPC flow sigmas).
    pub schedule: ScheduleKind,
    pub seed: u64,
    /// Initial noise `[1, C, f, h, w]`; `None`: seeded noise.
    pub latents: Option<Tensor>,
    /// The encoded conditioning image of an image-to-video run.
    pub image: Option<ImageInputs>,
}

/// The denoiser of one run: one DiT, or Wan2.2 A14B's two experts.
pub enum RunDenoiser<'a> {
    Single(WanDenoiser<'a>),
    Experts(WanExperts<'a>),
}

impl RunDenoiser<'_> {
    fn inner(&mut self) -> &mut dyn Denoiser {
        match self {
            RunDenoiser::Single(d) => d,
            RunDenoiser::Experts(d) => d,
        }
    }
}

impl Denoiser for RunDenoiser<'_> {
    fn grid(&self) -> TokenGrid {
        match self {
            RunDenoiser::Single(d) => d.grid(),
            RunDenoiser::Experts(d) => d.grid(),
        }
    }
    fn token_dim(&self) -> usize {
        match self {
            RunDenoiser::Single(d) => d.token_dim(),
            RunDenoiser::Experts(d) => d.token_dim(),
        }
    }
    fn has_uncond(&self) -> bool {
        match self {
            RunDenoiser::Single(d) => d.has_uncond(),
            RunDenoiser::Experts(d) => d.has_uncond(),
        }
    }
    fn reset(&mut self) -> hsa_core::Result<()> {
        self.inner().reset()
    }
    fn velocity(
        &mut self,
        x: &Tensor,
        timestep: f64,
        branch: Branch,
        active: Option<&ActiveSet>,
    ) -> hsa_core::Result<Tensor> {
        self.inner().velocity(x, timestep, branch, active)
    }
    fn timestep_indicator(
        &mut self,
        timestep: f64,
        kind: IndicatorKind,
    ) -> hsa_core::Result<Option<Tensor>> {
        self.inner().timestep_indicator(timestep, kind)
    }
    fn enable_residual_capture(&mut self) -> hsa_core::Result<()> {
        self.inner().enable_residual_capture()
    }
    fn velocity_reusing_residual(
        &mut self,
        x: &Tensor,
        timestep: f64,
        branch: Branch,
    ) -> hsa_core::Result<Tensor> {
        self.inner().velocity_reusing_residual(x, timestep, branch)
    }
}

/// A loaded model folder: the DiT(s), the folder's defaults and (when loaded) the VAE. The
/// text stack is loaded only while prompts are encoded ([`LoadedModel::encode_prompts`]).
pub struct LoadedModel {
    pub dir: PathBuf,
    pub defaults: ModelDefaults,
    /// The DiT, or Wan2.2 A14B's high-noise expert.
    pub model: WanModel,
    /// Wan2.2 A14B's low-noise expert.
    pub model_2: Option<WanModel>,
    pub vae: Option<WanVae>,
    pub folder: ModelFolder,
    dtype: Option<DType>,
}

/// Sampler output before decoding.
#[derive(Debug)]
pub struct SampledLatents {
    /// `[1, C, f, h, w]` f32: latents (VAE models) or pixels (pixel-space models).
    pub latents: Tensor,
    pub stats: RunStats,
    pub warnings: Vec<String>,
    pub seconds: f64,
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

/// `[1, C, F, H, W]` pixels of any range → `[C, F, H, W]` in [-1, 1] (pixel-space models).
fn pixels(latents: &Tensor) -> Result<Tensor> {
    Ok(latents.squeeze(0)?.clamp(-1f32, 1f32)?)
}

/// VAE decode of sampler-space latents `[1, z, f, h, w]` → `[3, F, H, W]`, one latent frame at
/// a time; `progress(done, total)` after each.
pub fn decode_latents(
    vae: &WanVae,
    latents: &Tensor,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let z = vae.denormalize_latents(latents)?;
    let video = vae.decode_with_progress(&z, 1, progress)?;
    Ok(video.squeeze(0)?.to_dtype(DType::F32)?)
}

impl LoadedModel {
    /// Loads the DiT(s) and the VAE decoder of a model folder.
    pub fn load(dir: &std::path::Path, dtype: Option<DType>, device: &Device) -> Result<Self> {
        Self::from_folder(ModelFolder::open(dir)?, dtype, device, true)
    }

    /// Loads the DiT(s) of an opened folder, and the VAE when `with_vae`.
    pub fn from_folder(
        folder: ModelFolder,
        dtype: Option<DType>,
        device: &Device,
        with_vae: bool,
    ) -> Result<Self> {
        let dt = Some(ModelFolder::dit_dtype(dtype));
        let model = WanModel::load_dir(&folder.transformers[0], dt, device)?;
        let model_2 = folder
            .transformers
            .get(1)
            .map(|t| WanModel::load_dir(t, dt, device))
            .transpose()?;
        let vae = if with_vae {
            folder.load_vae(device)?
        } else {
            None
        };
        Ok(Self {
            dir: folder.dir.clone(),
            defaults: folder.defaults.clone(),
            model,
            model_2,
            vae,
            folder,
            dtype,
        })
    }

    /// Fills the request's open fields from the folder's defaults.
    pub fn settings(&self, req: &GenerateRequest) -> Result<RunSettings> {
        self.folder.settings(req)
    }

    /// Encodes every prompt (and, when `with_uncond`, the negative prompt once; `None` takes
    /// the model's default). The text encoder lives only inside this call.
    pub fn encode_prompts(
        &self,
        prompts: &[&str],
        negative: Option<&str>,
        with_uncond: bool,
    ) -> Result<Vec<PromptEmbeds>> {
        self.folder.encode_prompts(
            prompts,
            negative,
            with_uncond,
            self.dtype,
            self.model.device(),
        )
    }

    /// The token grid of a clip size, with a clear error when the size does not fit.
    pub fn grid(&self, s: &RunSettings) -> Result<TokenGrid> {
        self.folder.grid(s)
    }

    /// The denoiser, initial noise (`[N, P]`: the settings' latents, else seeded) and
    /// schedule (`s.schedule`) of one run: what every sampler starts from (also used to
    /// calibrate TeaCache on this model).
    pub fn prepare<'a>(
        &'a self,
        embeds: &'a PromptEmbeds,
        s: &RunSettings,
    ) -> Result<(RunDenoiser<'a>, Tensor, Schedule)> {
        let cfg = self.model.config();
        let grid = self.grid(s)?;
        let schedule = Schedule::new(s.schedule, s.steps, s.shift)?;
        let [c, f, h, w] = self.folder.state_shape(s)?;
        let shape = [1, c, f, h, w];
        let noise = match &s.latents {
            None => seeded_noise(&shape, s.seed, self.model.device())?,
            Some(l) if l.dims() == shape => l.to_dtype(DType::F32)?,
            Some(l) => {
                return Err(PipelineError::Invalid(format!(
                    "initial latents have shape {:?}; this run needs {shape:?}",
                    l.dims()
                )))
            }
        };
        let noise = patchify(&noise, cfg.patch_size)?.squeeze(0)?;
        let uncond = if s.guidance.uses_uncond() {
            Some(embeds.uncond.as_ref().ok_or_else(|| {
                PipelineError::Invalid("guidance > 1 needs the negative prompt's embeddings".into())
            })?)
        } else {
            None
        };
        let image = s.image.as_ref();
        let clip = image.and_then(|i| i.clip.as_ref());
        // A pixel-space model with position channels takes them as conditioning channels.
        let positions = match self.defaults.position_channels {
            true => Some(
                patchify(
                    &hsa_models::wan::position_channels(f, h, w, self.model.device())?,
                    cfg.patch_size,
                )?
                .squeeze(0)?,
            ),
            false => None,
        };
        let den = |m: &'a WanModel| -> Result<WanDenoiser<'a>> {
            let d = WanDenoiser::new(m, grid, &embeds.cond, uncond, clip)?;
            Ok(match image.map(|i| &i.conditioning) {
                None => match &positions {
                    Some(tokens) => d.with_condition(tokens)?,
                    None => d,
                },
                Some(Conditioning::Channels { tokens }) => d.with_condition(tokens)?,
                Some(Conditioning::FirstFrame { clean, first }) => {
                    let mut scale = vec![1f32; grid.len()];
                    first.iter().for_each(|&r| scale[r as usize] = 0.0);
                    d.with_timestep_scale(scale)?
                        .with_clean_tokens(first, clean)?
                }
            })
        };
        let den = match (&self.model_2, self.defaults.boundary_ratio) {
            (Some(low), Some(ratio)) => RunDenoiser::Experts(WanExperts::new(
                den(&self.model)?,
                den(low)?,
                ratio * 1000.0,
            )?),
            _ => RunDenoiser::Single(den(&self.model)?),
        };
        Ok((den, noise, schedule))
    }

    /// Samples one clip with `sampler` (an empty name: the model's default) and returns the
    /// sampler-space result `[1, C, f, h, w]`.
    pub fn sample_latents(
        &self,
        embeds: &PromptEmbeds,
        s: &RunSettings,
        sampler: &SamplerOptions,
        on_step: &mut dyn FnMut(&StepEvent),
    ) -> Result<SampledLatents> {
        let start = Instant::now();
        let sampler = self.folder.sampler_options(sampler);
        let s = RunSettings {
            schedule: sampler.schedule_kind(s.schedule),
            ..s.clone()
        };
        let (mut den, noise, schedule) = self.prepare(embeds, &s)?;
        let grid = den.grid();
        let (mut spec, warnings) = sampler.resolve(s.steps, grid.len())?;
        if let (Some(_), Some(ratio)) = (&self.model_2, self.defaults.boundary_ratio) {
            // Each expert has its own K/V cache: the first step after the switch is dense.
            let switch: Vec<usize> = schedule
                .expert_switch_step(ratio * 1000.0)
                .into_iter()
                .collect();
            match &mut spec {
                SamplerSpec::Hsa(c) => c.switch_steps = switch,
                SamplerSpec::Ras(c) => c.switch_steps = switch,
                SamplerSpec::TeaCache(c) => c.switch_steps = switch,
                SamplerSpec::Fm | SamplerSpec::UniPc => {}
            }
        }
        if let Some(Conditioning::FirstFrame { first, .. }) =
            s.image.as_ref().map(|i| &i.conditioning)
        {
            // The image's tokens never move: HSA and RAS skip them after the dense steps.
            match &mut spec {
                SamplerSpec::Hsa(c) => c.frozen_tokens = first.clone(),
                SamplerSpec::Ras(c) => c.frozen_tokens = first.clone(),
                _ => {}
            }
        }
        let (latents, stats) =
            run_sampler(&mut den, &noise, &schedule, s.guidance, &spec, on_step)?;
        let latents = match s.image.as_ref() {
            Some(i) => i.conditioning.reimpose(&latents)?,
            None => latents,
        };
        let latents = unpatchify(&latents.unsqueeze(0)?, grid, self.model.config().patch_size)?;
        Ok(SampledLatents {
            latents,
            stats,
            warnings,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Sampler output → video `[3, F, H, W]` in [-1, 1] (VAE decode for latent models).
    pub fn decode(
        &self,
        latents: &Tensor,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        match (&self.folder.vae, &self.vae) {
            (None, _) => pixels(latents),
            (Some(_), Some(vae)) => decode_latents(vae, latents, progress),
            (Some(_), None) => Err(PipelineError::Invalid(
                "this model was loaded without its VAE".into(),
            )),
        }
    }

    /// Samples and decodes one clip with `sampler`.
    pub fn sample(
        &self,
        embeds: &PromptEmbeds,
        s: &RunSettings,
        sampler: &SamplerOptions,
        on_step: &mut dyn FnMut(&StepEvent),
    ) -> Result<SampledVideo> {
        let start = Instant::now();
        let out = self.sample_latents(embeds, s, sampler, on_step)?;
        let video = self.decode(&out.latents, &mut |_, _| {})?;
        Ok(SampledVideo {
            video,
            stats: out.stats,
            warnings: out.warnings,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// The memory plan of `req`, and the settings and sampler it was computed for (reads configs
/// only).
pub fn memory_plan(req: &GenerateRequest) -> Result<MemoryPlan> {
    let folder = ModelFolder::open(&req.model_dir)?;
    let s = folder.settings(req)?;
    folder.memory_plan(
        &s,
        &folder.sampler_options(&req.sampler).sampler,
        req.dtype,
        req.image.is_some(),
    )
}

/// Runs text encoding, sampling and decoding. `on_step` sees sampler steps; `on_stage` stage
/// changes and decoding progress. Checks every argument and the memory plan before loading
/// anything large; on the CPU a run whose plan exceeds the available memory is refused.
pub fn generate(
    req: &GenerateRequest,
    device: &Device,
    on_stage: &mut dyn FnMut(Stage),
    on_step: &mut dyn FnMut(&StepEvent),
) -> Result<Generated> {
    let folder = ModelFolder::open(&req.model_dir)?;
    let settings = folder.settings(req)?;
    let grid = folder.grid(&settings)?;
    let sampler = folder.sampler_options(&req.sampler);
    sampler.resolve(settings.steps, grid.len())?;
    let plan = folder.memory_plan(&settings, &sampler.sampler, req.dtype, req.image.is_some())?;
    on_stage(Stage::Plan(plan));
    if device.is_cpu() && !req.skip_memory_check {
        if let Some(available) = crate::memory::available_bytes() {
            plan.check(available).map_err(PipelineError::Invalid)?;
        }
    }

    on_stage(Stage::TextEncoding);
    let start = Instant::now();
    let embeds = folder
        .encode_prompts(
            &[req.prompt.as_str()],
            req.negative_prompt.as_deref(),
            settings.guidance.uses_uncond(),
            req.dtype,
            device,
        )?
        .remove(0);
    let text_seconds = start.elapsed().as_secs_f64();

    let mut settings = settings;
    if let Some(path) = &req.image {
        on_stage(Stage::ImageEncoding);
        settings.image = Some(encode_image(
            &folder,
            path,
            req.image_preprocess,
            &settings,
            req.dtype,
            device,
        )?);
    }

    on_stage(Stage::Loading);
    let loaded = LoadedModel::from_folder(folder, req.dtype, device, false)?;
    on_stage(Stage::Sampling);
    let out = loaded.sample_latents(&embeds, &settings, &sampler, on_step)?;
    let LoadedModel {
        folder,
        defaults,
        model,
        model_2,
        vae,
        ..
    } = loaded;
    drop((model, model_2, vae)); // free the DiT(s) before the VAE loads

    let start = Instant::now();
    let video = match folder.load_vae(device)? {
        None => pixels(&out.latents)?,
        Some(vae) => {
            let total = out.latents.dim(2)?;
            on_stage(Stage::Decoding { done: 0, total });
            decode_latents(&vae, &out.latents, &mut |done, total| {
                on_stage(Stage::Decoding { done, total })
            })?
        }
    };
    Ok(Generated {
        video,
        fps: defaults.fps,
        stats: out.stats,
        warnings: out.warnings,
        text_seconds,
        sampling_seconds: out.seconds,
        decode_seconds: start.elapsed().as_secs_f64(),
        plan,
    })
}
