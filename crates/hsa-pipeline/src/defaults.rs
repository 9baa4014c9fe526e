//! Model folders for `hsa generate`: which components a folder has, what kind of Wan it is,
//! and the generation defaults that follow from that.
//!
//! Two kinds of folder are understood, both diffusers pipelines (`model_index.json` +
//! component folders):
//! * pixel-space models (the bundled model): no VAE; everything is declared under `_hsa` in
//!   model_index.json;
//! * latent-space Wan pipelines as diffusers saves them (`transformer/`, `transformer_2/` +
//!   `boundary_ratio` for Wan2.2 A14B, `text_encoder/`, `tokenizer/`, `vae/`, `scheduler/`).
//!   Defaults come from the official settings of the model kind (wan-spec §3.1), the shift
//!   and the default solver from `scheduler/scheduler_config.json`; an `_hsa` section still
//!   overrides any of them.
//!
//! [`ModelFolder`] also resolves a request against the folder (settings, size checks, token
//! grid, memory plan) and encodes prompts, all before any DiT weights are loaded.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use hsa_core::{Guidance, ScheduleKind, TokenGrid};
use hsa_models::text::{encode_text, Tokenizer};
use hsa_models::umt5::{UMT5Config, UMT5Encoder};
use hsa_models::wan::patch::grid_for;
use hsa_models::wan::{WanConfig, WanVae, WanVaeConfig};

use crate::generate::{GenerateRequest, PromptEmbeds, RunSettings};
use crate::memory::{MemoryPlan, PlanInputs};
use crate::sampling::SamplerOptions;
use crate::{PipelineError, Result};

/// The official Wan negative prompt (`sample_neg_prompt` in the Wan2.1 / Wan2.2 repositories'
/// `wan/configs/shared_config.py`), which the official code uses whenever the user passes none.
/// diffusers' pipelines default to `""` instead; pass `--negative-prompt ""` for that.
pub const WAN_NEGATIVE_PROMPT: &str = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走";

/// Which published Wan a latent pipeline folder holds (decides the official defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// The bundled kind: latents are pixels, no VAE.
    PixelSpace,
    /// Wan2.1 T2V (1.3B / 14B): 16 latent channels, one DiT.
    Wan21T2v,
    /// Wan2.2 TI2V-5B: 48 latent channels (VAE ×16 spatially).
    Wan22Ti2v5b,
    /// Wan2.2 T2V-A14B: two experts split at `boundary_ratio`.
    Wan22A14b,
}

/// Generation defaults of a model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDefaults {
    /// Latent = pixels: no VAE (the bundled model).
    pub pixel_space: bool,
    pub text_len: usize,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub fps: f64,
    pub shift: f64,
    /// Guidance scale (for A14B: of the high-noise expert).
    pub guidance: f64,
    /// Wan2.2 A14B: guidance scale of the low-noise expert.
    pub guidance_2: Option<f64>,
    pub steps: usize,
    /// Sampler used when the user picks none (the folder's scheduler class).
    pub sampler: String,
    /// Wan2.2 A14B: the high-noise expert serves timesteps ≥ `boundary_ratio · 1000`.
    pub boundary_ratio: Option<f64>,
    /// Negative prompt used when the user gives none.
    pub negative_prompt: String,
}

/// `_hsa` in model_index.json: any subset of the defaults.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HsaOverlay {
    pixel_space: Option<bool>,
    text_len: Option<usize>,
    frames: Option<usize>,
    height: Option<usize>,
    width: Option<usize>,
    fps: Option<f64>,
    shift: Option<f64>,
    guidance: Option<f64>,
    guidance_2: Option<f64>,
    steps: Option<usize>,
    sampler: Option<String>,
    negative_prompt: Option<String>,
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
            guidance_2: None,
            steps: 50,
            sampler: "unipc".into(),
            boundary_ratio: None,
            negative_prompt: WAN_NEGATIVE_PROMPT.into(),
        }
    }

    /// The official defaults of `kind` (wan-spec §3.1), before the folder's scheduler config.
    pub fn for_kind(kind: ModelKind) -> Self {
        let base = Self::wan21_t2v();
        match kind {
            ModelKind::Wan21T2v => base,
            ModelKind::PixelSpace => Self {
                pixel_space: true,
                sampler: "fm".into(),
                negative_prompt: String::new(),
                ..base
            },
            ModelKind::Wan22Ti2v5b => Self {
                frames: 121,
                height: 704,
                width: 1280,
                fps: 24.0,
                ..base
            },
            ModelKind::Wan22A14b => Self {
                steps: 40,
                shift: 12.0,
                guidance: 4.0,
                guidance_2: Some(3.0),
                boundary_ratio: Some(0.875),
                ..base
            },
        }
    }

    /// Reads the defaults of `dir`: the kind's official values, the scheduler's shift and
    /// class, then `_hsa` from model_index.json on top.
    pub fn read(dir: &Path) -> Result<Self> {
        Ok(ModelFolder::open(dir)?.defaults)
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| PipelineError::Input {
        path: path.to_path_buf(),
        message: format!("malformed JSON: {e}"),
    })
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

/// Shift and default sampler from a diffusers `scheduler_config.json`.
fn scheduler_defaults(path: &Path) -> Result<(Option<f64>, Option<String>)> {
    let json = read_json(path)?;
    let class = json
        .get("_class_name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let (key, sampler) = match class {
        "UniPCMultistepScheduler" => ("flow_shift", Some("unipc")),
        "FlowMatchEulerDiscreteScheduler" => ("shift", Some("fm")),
        // Other solvers (DPM++ etc.) are not implemented: keep the kind's default solver.
        _ => ("flow_shift", None),
    };
    let shift = json
        .get(key)
        .or_else(|| json.get("flow_shift"))
        .or_else(|| json.get("shift"))
        .and_then(|v| v.as_f64());
    Ok((shift, sampler.map(str::to_string)))
}

/// A model folder's components and defaults, read without loading any weights (what the
/// memory plan and the argument checks need before anything large is loaded).
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub kind: ModelKind,
    pub defaults: ModelDefaults,
    /// The DiT folder(s): one, or (high-noise, low-noise) for Wan2.2 A14B.
    pub transformers: Vec<PathBuf>,
    pub dit_config: WanConfig,
    pub text_encoder: PathBuf,
    /// `tokenizer/tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `vae/` and its config (latent models only).
    pub vae: Option<(PathBuf, WanVaeConfig)>,
}

impl ModelFolder {
    /// Checks that `dir` has every component generation needs and reads the configs.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(PipelineError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "model directory not found",
                ),
            });
        }
        let index_path = dir.join("model_index.json");
        let index = read_json(&index_path)?;
        let overlay: HsaOverlay = match index.get("_hsa") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| PipelineError::Input {
                path: index_path.clone(),
                message: format!("invalid _hsa section: {e}"),
            })?,
            None => HsaOverlay::default(),
        };
        let transformer = component(dir, "transformer")?;
        let text_encoder = component(dir, "text_encoder")?;
        let tokenizer = component(dir, "tokenizer")?.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(PipelineError::Input {
                path: dir.to_path_buf(),
                message: format!(
                    "missing component 'tokenizer' file (expected {})",
                    tokenizer.display()
                ),
            });
        }
        let dit_config = hsa_models::wan::read_config(&transformer)?;
        let pixel_space = overlay.pixel_space.unwrap_or(false);
        let boundary_ratio = index.get("boundary_ratio").and_then(|v| v.as_f64());
        let (kind, vae, transformers) = if pixel_space {
            (ModelKind::PixelSpace, None, vec![transformer])
        } else {
            let vae_dir = component(dir, "vae")?;
            let vae_cfg = hsa_models::wan::vae::read_config(&vae_dir.join("config.json"))?;
            let mut transformers = vec![transformer];
            let kind = if let Some(ratio) = boundary_ratio {
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(PipelineError::Input {
                        path: index_path,
                        message: format!("boundary_ratio {ratio} is not in [0, 1]"),
                    });
                }
                // diffusers: below the boundary the low-noise expert `transformer_2` runs.
                transformers.push(component(dir, "transformer_2")?);
                ModelKind::Wan22A14b
            } else if vae_cfg.z_dim == 48 {
                ModelKind::Wan22Ti2v5b
            } else {
                ModelKind::Wan21T2v
            };
            if dit_config.in_channels != dit_config.out_channels {
                return Err(PipelineError::Input {
                    path: dir.to_path_buf(),
                    message: format!(
                        "this is an image-conditioned Wan ({} input channels for {} latent channels); \
                         hsa generate does text-to-video only",
                        dit_config.in_channels, dit_config.out_channels
                    ),
                });
            }
            if dit_config.out_channels != vae_cfg.z_dim {
                return Err(PipelineError::Input {
                    path: dir.to_path_buf(),
                    message: format!(
                        "the transformer predicts {} channels but the VAE has {} latent channels",
                        dit_config.out_channels, vae_cfg.z_dim
                    ),
                });
            }
            (kind, Some((vae_dir, vae_cfg)), transformers)
        };
        let mut d = ModelDefaults::for_kind(kind);
        if kind == ModelKind::Wan22A14b {
            d.boundary_ratio = boundary_ratio;
        }
        let sched = dir.join("scheduler").join("scheduler_config.json");
        if !pixel_space && sched.is_file() {
            let (shift, sampler) = scheduler_defaults(&sched)?;
            if let Some(s) = shift {
                d.shift = s;
            }
            if let Some(s) = sampler {
                d.sampler = s;
            }
        }
        let o = overlay;
        d.pixel_space = pixel_space;
        macro_rules! set {
            ($($f:ident),*) => {$(if let Some(v) = o.$f { d.$f = v; })*};
        }
        set!(
            text_len,
            frames,
            height,
            width,
            fps,
            shift,
            guidance,
            steps,
            sampler,
            negative_prompt
        );
        if o.guidance_2.is_some() {
            d.guidance_2 = o.guidance_2;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            kind,
            defaults: d,
            transformers,
            dit_config,
            text_encoder,
            tokenizer,
            vae,
        })
    }

    /// Spatial and temporal downsampling of the VAE, (1, 1) for pixel-space models.
    pub fn vae_factors(&self) -> (usize, usize) {
        match &self.vae {
            Some((_, c)) => (c.spatial_factor(), c.temporal_factor()),
            None => (1, 1),
        }
    }

    /// The text encoder's config (for the memory plan): its config.json, else umT5-XXL.
    pub fn text_config(&self) -> UMT5Config {
        let p = self.text_encoder.join("config.json");
        UMT5Config::from_file(&p).unwrap_or_else(|_| UMT5Config::umt5_xxl())
    }
}

impl ModelFolder {
    /// The request's sampler options with an empty name replaced by the model's default.
    pub fn sampler_options(&self, o: &SamplerOptions) -> SamplerOptions {
        let mut o = o.clone();
        if o.sampler.is_empty() {
            o.sampler = self.defaults.sampler.clone();
        }
        o
    }

    /// Fills the request's open fields from the folder's defaults.
    pub fn settings(&self, req: &GenerateRequest) -> Result<RunSettings> {
        let d = &self.defaults;
        let (width, height) = req.size.unwrap_or((d.width, d.height));
        let scale = req.guidance.unwrap_or(d.guidance);
        let mut guidance = Guidance::new(scale)?;
        if let Some(ratio) = d.boundary_ratio {
            let low = req
                .guidance_2
                .or(req.guidance)
                .or(d.guidance_2)
                .unwrap_or(scale);
            guidance = guidance.with_low_noise(ratio * 1000.0, low)?;
        } else if req.guidance_2.is_some() {
            return Err(PipelineError::Invalid(
                "--guidance-2 applies to two-expert models (Wan2.2 A14B) only".into(),
            ));
        }
        let requested = req.schedule.unwrap_or(ScheduleKind::FlowMatchEuler);
        Ok(RunSettings {
            frames: req.frames.unwrap_or(d.frames),
            width,
            height,
            steps: req.steps.unwrap_or(d.steps),
            shift: req.shift.unwrap_or(d.shift),
            guidance,
            schedule: requested,
            seed: req.seed,
            latents: req.latents.clone(),
        })
    }

    /// Shape `[C, f, h, w]` of the sampler's state before patchifying: latents for VAE
    /// models, pixels for pixel-space models; with a clear error when the clip size does not
    /// fit the VAE or the patch.
    pub fn state_shape(&self, s: &RunSettings) -> Result<[usize; 4]> {
        let c = self.dit_config.out_channels;
        let p = self.dit_config.patch_size;
        let Some((_, vae)) = &self.vae else {
            return Ok([c, s.frames, s.height, s.width]);
        };
        let (sp, tf) = (vae.spatial_factor(), vae.temporal_factor());
        if s.frames == 0
            || !(s.frames - 1).is_multiple_of(tf)
            || !((s.frames - 1) / tf + 1).is_multiple_of(p[0])
        {
            return Err(PipelineError::Invalid(format!(
                "{} frames: this model makes {tf}k+1 frames (e.g. 5, 9, 17, 33, 81); use {} or {}",
                s.frames,
                1 + (s.frames.max(1) - 1) / tf * tf,
                1 + (s.frames.max(1) - 1).div_ceil(tf) * tf
            )));
        }
        let (mh, mw) = (sp * p[1], sp * p[2]);
        if s.width == 0
            || s.height == 0
            || !s.width.is_multiple_of(mw)
            || !s.height.is_multiple_of(mh)
        {
            return Err(PipelineError::Invalid(format!(
                "size {}x{}: width and height must be positive multiples of {mw} and {mh} for this model \
                 (VAE x{sp}, patch {}x{})",
                s.width, s.height, p[2], p[1]
            )));
        }
        Ok([c, (s.frames - 1) / tf + 1, s.height / sp, s.width / sp])
    }

    /// The token grid of a clip size, with a clear error when the size does not fit.
    pub fn grid(&self, s: &RunSettings) -> Result<TokenGrid> {
        let [_, f, h, w] = self.state_shape(s)?;
        let p = self.dit_config.patch_size;
        grid_for(f, h, w, p).map_err(|_| {
            PipelineError::Invalid(format!(
                "size {}x{} with {} frames does not fit the model's patch {p:?}: width and height must be multiples of {} and {}",
                s.width, s.height, s.frames, p[2], p[1]
            ))
        })
    }

    /// Dtype the DiT computes in (the request's, else f32).
    pub(crate) fn dit_dtype(dtype: Option<DType>) -> DType {
        dtype.unwrap_or(DType::F32)
    }

    /// The text encoder runs in f32, or bf16 when the DiT is asked for a half dtype (umT5
    /// overflows in f16).
    pub(crate) fn text_dtype(dtype: Option<DType>) -> DType {
        match dtype {
            Some(DType::BF16) | Some(DType::F16) => DType::BF16,
            _ => DType::F32,
        }
    }

    /// The memory plan of a run of `sampler` (already defaulted) at `s`.
    pub fn memory_plan(
        &self,
        s: &RunSettings,
        sampler: &str,
        dtype: Option<DType>,
    ) -> Result<MemoryPlan> {
        let grid = self.grid(s)?;
        let text = self.text_config();
        Ok(crate::memory::plan(&PlanInputs {
            dit: &self.dit_config,
            experts: self.transformers.len(),
            dit_bytes: Self::dit_dtype(dtype).size_in_bytes(),
            tokens: grid.len(),
            branches: if s.guidance.uses_uncond() { 2 } else { 1 },
            kv_cache: matches!(sampler, "hsa" | "ras"),
            text: &text,
            text_bytes: Self::text_dtype(dtype).size_in_bytes(),
            text_len: self.defaults.text_len,
            vae: self
                .vae
                .as_ref()
                .map(|(_, c)| (c, s.frames, s.height, s.width)),
        }))
    }

    /// Encodes every prompt (and, when `with_uncond`, the negative prompt once; `None` takes
    /// the model's default). The text encoder lives only inside this call.
    pub fn encode_prompts(
        &self,
        prompts: &[&str],
        negative: Option<&str>,
        with_uncond: bool,
        dtype: Option<DType>,
        device: &Device,
    ) -> Result<Vec<PromptEmbeds>> {
        let tokenizer =
            Tokenizer::from_file(&self.tokenizer)?.with_text_len(self.defaults.text_len)?;
        let encoder = UMT5Encoder::load(&self.text_encoder, Self::text_dtype(dtype), device)?;
        let uncond = if with_uncond {
            let neg = negative.unwrap_or(&self.defaults.negative_prompt);
            Some(encode_text(&encoder, &tokenizer, &[neg])?)
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

    /// Loads the VAE decoder (latent models), computing in f32 as Wan does.
    pub fn load_vae(&self, device: &Device) -> Result<Option<WanVae>> {
        self.vae
            .as_ref()
            .map(|(dir, _)| Ok(WanVae::load_decoder(dir, DType::F32, device)?))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(rel)
    }

    #[test]
    fn tiny_pipeline_defaults_follow_its_scheduler() {
        let f = ModelFolder::open(&fixture("tests/fixtures/wan_pipeline/tiny")).unwrap();
        assert_eq!(f.kind, ModelKind::Wan21T2v);
        let d = &f.defaults;
        assert_eq!(
            (d.shift, d.sampler.as_str(), d.text_len),
            (3.0, "unipc", 512)
        );
        assert_eq!((d.frames, d.width, d.height, d.steps), (81, 832, 480, 50));
        assert_eq!(d.negative_prompt, WAN_NEGATIVE_PROMPT);
        assert_eq!(f.vae_factors(), (8, 4));
    }

    #[test]
    fn bundled_model_keeps_its_hsa_section() {
        let f = ModelFolder::open(&fixture("models/shapes-wan")).unwrap();
        assert_eq!(f.kind, ModelKind::PixelSpace);
        let d = &f.defaults;
        assert!(d.pixel_space);
        assert_eq!(
            (d.frames, d.width, d.height, d.steps, d.text_len),
            (9, 32, 32, 40, 32)
        );
        assert_eq!((d.shift, d.guidance, d.fps), (3.0, 4.0, 8.0));
        assert_eq!((d.sampler.as_str(), d.negative_prompt.as_str()), ("fm", ""));
    }

    #[test]
    fn kind_defaults_match_the_official_tables() {
        let a = ModelDefaults::for_kind(ModelKind::Wan22A14b);
        assert_eq!((a.steps, a.guidance, a.guidance_2), (40, 4.0, Some(3.0)));
        let t = ModelDefaults::for_kind(ModelKind::Wan22Ti2v5b);
        assert_eq!((t.frames, t.width, t.height, t.fps), (121, 1280, 704, 24.0));
    }
}
