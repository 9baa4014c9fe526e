//! Model folders for `hsa generate`: which components a folder has and which kind of Wan it
//! is ([`ModelFolder::open`]), and a request resolved against it (settings, size checks, token
//! grid, memory plan, prompt encoding), all before any DiT weights are loaded.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use hsa_core::{Guidance, ScheduleKind, TokenGrid};
use hsa_models::clip::ClipVisionConfig;
use hsa_models::text::{encode_text, Tokenizer};
use hsa_models::umt5::{UMT5Config, UMT5Encoder};
use hsa_models::wan::patch::grid_for;
use hsa_models::wan::{WanConfig, WanVae, WanVaeConfig};

use crate::defaults::{HsaOverlay, ModelDefaults, ModelKind};
use crate::generate::{GenerateRequest, PromptEmbeds, RunSettings};
use crate::image_cond::ImageMode;
use crate::memory::{MemoryPlan, PlanInputs};
use crate::model_dir::{find_dits, DitExperts, Layout};
use crate::sampling::SamplerOptions;
use crate::{PipelineError, Result};

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

/// Which Wan a latent folder holds, from its DiT and VAE configs, its number of experts and
/// diffusers' `expand_timesteps` flag; errors for channel counts no Wan has.
fn detect_kind(
    dir: &Path,
    dit: &WanConfig,
    vae: &WanVaeConfig,
    experts: usize,
    expand_timesteps: bool,
) -> Result<ModelKind> {
    let (z, tf) = (vae.z_dim, vae.temporal_factor());
    let bad = |message: String| PipelineError::Input {
        path: dir.to_path_buf(),
        message,
    };
    if dit.out_channels != z {
        return Err(bad(format!(
            "the transformer predicts {} channels but the VAE has {z} latent channels",
            dit.out_channels
        )));
    }
    let channel_cond = dit.in_channels != dit.out_channels;
    if channel_cond && dit.in_channels != 2 * z + tf {
        return Err(bad(format!(
            "the transformer takes {} input channels; a Wan takes {z} (text to video) or {} (image to video: latents + {tf} mask + image latent)",
            dit.in_channels,
            2 * z + tf
        )));
    }
    Ok(match (experts > 1, channel_cond) {
        (true, true) => ModelKind::Wan22I2vA14b,
        (true, false) => ModelKind::Wan22A14b,
        (false, true) => ModelKind::Wan21I2v,
        (false, false) if expand_timesteps || z == 48 => ModelKind::Wan22Ti2v5b,
        (false, false) => ModelKind::Wan21T2v,
    })
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
    /// How the folder takes an image (`None`: text-to-video only).
    pub image_mode: Option<ImageMode>,
    /// Wan2.1 I2V: `image_encoder/` (CLIP vision tower) and `image_processor/` if present.
    pub image_encoder: Option<PathBuf>,
    pub image_processor: Option<PathBuf>,
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
        if !index_path.is_file() {
            let dits = find_dits(dir)?;
            if dits.layout == Layout::Original {
                return Self::open_original(dir, dits);
            }
        }
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
            let expand_timesteps = index
                .get("expand_timesteps")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if let Some(ratio) = boundary_ratio {
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(PipelineError::Input {
                        path: index_path,
                        message: format!("boundary_ratio {ratio} is not in [0, 1]"),
                    });
                }
                // diffusers: below the boundary the low-noise expert `transformer_2` runs.
                transformers.push(component(dir, "transformer_2")?);
            }
            let kind = detect_kind(
                dir,
                &dit_config,
                &vae_cfg,
                transformers.len(),
                expand_timesteps,
            )?;
            (kind, Some((vae_dir, vae_cfg)), transformers)
        };
        let mut d = ModelDefaults::for_kind(kind);
        if boundary_ratio.is_some() {
            d.boundary_ratio = boundary_ratio;
        }
        let image_mode = kind.image_mode(dit_config.has_image_branch());
        let image_encoder = match image_mode {
            Some(ImageMode::Channels { clip: true }) => Some(component(dir, "image_encoder")?),
            _ => None,
        };
        let image_processor = Some(dir.join("image_processor"))
            .filter(|p| image_encoder.is_some() && p.join("preprocessor_config.json").is_file());
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
        d.position_channels = o.position_channels.unwrap_or(false);
        if pixel_space {
            let extra = match d.position_channels {
                true => hsa_models::wan::POSITION_CHANNELS,
                false => 0,
            };
            if dit_config.in_channels != dit_config.out_channels + extra {
                return Err(PipelineError::Input {
                    path: dir.to_path_buf(),
                    message: format!(
                        "the transformer takes {} input channels and predicts {}; a pixel-space model {} takes {}",
                        dit_config.in_channels,
                        dit_config.out_channels,
                        match d.position_channels {
                            true => "with position channels",
                            false => "without position channels (_hsa.position_channels)",
                        },
                        dit_config.out_channels + extra
                    ),
                });
            }
        } else if d.position_channels {
            return Err(PipelineError::Input {
                path: index_path,
                message: "_hsa.position_channels applies to pixel-space models only".into(),
            });
        }
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
            image_mode,
            image_encoder,
            image_processor,
        })
    }

    /// The original Wan layout (the official repositories): the DiT config.json and shards at
    /// the top (or `high_noise_model/` + `low_noise_model/` for Wan2.2 A14B), the umT5 encoder
    /// as `models_t5_umt5-xxl-enc-bf16.pth`, its tokenizer under `google/umt5-xxl/`, and
    /// `Wan2.1_VAE.pth` or `Wan2.2_VAE.pth`. Defaults are the kind's official ones.
    fn open_original(dir: &Path, dits: DitExperts) -> Result<Self> {
        let transformers: Vec<PathBuf> = dits.experts.into_iter().map(|(_, p)| p).collect();
        for t in &transformers {
            if !t.join("config.json").is_file() {
                return Err(PipelineError::Input {
                    path: t.clone(),
                    message: "missing the DiT's config.json".into(),
                });
            }
        }
        let dit_config = hsa_models::wan::read_config(&transformers[0])?;
        let first_file = |prefix: &str, what: &str| -> Result<PathBuf> {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| PipelineError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .collect();
            found.sort();
            found
                .into_iter()
                .next()
                .ok_or_else(|| PipelineError::Input {
                    path: dir.to_path_buf(),
                    message: format!("missing the {what} (expected a file {prefix}*)"),
                })
        };
        let text_encoder = first_file("models_t5_", "umT5 text encoder")?;
        let tokenizer = dir.join("google").join("umt5-xxl").join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(PipelineError::Input {
                path: dir.to_path_buf(),
                message: format!(
                    "missing the umT5 tokenizer (expected {})",
                    tokenizer.display()
                ),
            });
        }
        let vae_path = ["Wan2.2_VAE.pth", "Wan2.1_VAE.pth"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| PipelineError::Input {
                path: dir.to_path_buf(),
                message: "missing the VAE (expected Wan2.1_VAE.pth or Wan2.2_VAE.pth)".into(),
            })?;
        let vae_cfg = hsa_models::wan::vae::config_for(&vae_path)?;
        let kind = detect_kind(dir, &dit_config, &vae_cfg, transformers.len(), false)?;
        if kind == ModelKind::Wan21I2v {
            return Err(PipelineError::Input {
                path: dir.to_path_buf(),
                message: "original-layout Wan2.1 I2V ships its CLIP in open-clip format, which is not supported yet; use the diffusers folder of the same model (…-Diffusers)".into(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            kind,
            defaults: ModelDefaults::for_kind(kind),
            transformers,
            dit_config,
            text_encoder,
            tokenizer,
            vae: Some((vae_path, vae_cfg)),
            image_mode: kind.image_mode(false),
            image_encoder: None,
            image_processor: None,
        })
    }

    /// Spatial and temporal downsampling of the VAE, (1, 1) for pixel-space models.
    pub fn vae_factors(&self) -> (usize, usize) {
        match &self.vae {
            Some((_, c)) => (c.spatial_factor(), c.temporal_factor()),
            None => (1, 1),
        }
    }

    /// The text encoder's config (for the memory plan): its config.json, for a single weight
    /// file (original layout) the one its tensor shapes give, else umT5-XXL.
    pub fn text_config(&self) -> UMT5Config {
        let inferred = || {
            hsa_models::umt5::UMT5Weights::open(std::slice::from_ref(&self.text_encoder))
                .and_then(|w| w.infer_config())
        };
        let cfg = if self.text_encoder.is_file() {
            inferred().ok()
        } else {
            UMT5Config::from_file(&self.text_encoder.join("config.json")).ok()
        };
        cfg.unwrap_or_else(UMT5Config::umt5_xxl)
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
        match (&req.image, self.image_mode) {
            (None, _) if self.kind.needs_image() => {
                return Err(PipelineError::Invalid(
                    "this is an image-to-video model: give the first frame with --image".into(),
                ))
            }
            (Some(_), None) => {
                return Err(PipelineError::Invalid(
                    "--image needs an image-to-video model (Wan2.1 I2V, Wan2.2 I2V-A14B or TI2V-5B); this one is text-to-video only".into(),
                ))
            }
            _ => {}
        }
        let (width, height) = match (req.size, &req.image, self.image_mode) {
            (Some(size), _, _) => size,
            (None, Some(path), Some(mode)) => {
                let (w, h) = hsa_models::clip::image_size(path)?;
                let (sp, _) = self.vae_factors();
                let p = self.dit_config.patch_size;
                let area = d.width * d.height;
                match mode {
                    ImageMode::Channels { .. } => crate::image_cond::i2v_size(w, h, area, sp, p[1]),
                    ImageMode::FirstFrame => {
                        crate::image_cond::best_output_size(w, h, sp * p[2], sp * p[1], area)
                    }
                }
            }
            _ => (d.width, d.height),
        };
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
            image: None,
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
                "size {}x{} with {} frames does not fit the model's patch {p:?}: width and height must be multiples of {} and {}{}",
                s.width, s.height, s.frames, p[2], p[1],
                match (p[0] > 1, self.vae.is_some()) {
                    (false, _) => String::new(),
                    (true, true) => format!(", and the latent frames a multiple of {}", p[0]),
                    (true, false) => format!(", and the frames a multiple of {}", p[0]),
                }
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

    /// The memory plan of a run of `sampler` (already defaulted) at `s`; `with_image`: an
    /// image-to-video run (the VAE encoder and CLIP tower run before the DiT loads).
    pub fn memory_plan(
        &self,
        s: &RunSettings,
        sampler: &str,
        dtype: Option<DType>,
        with_image: bool,
    ) -> Result<MemoryPlan> {
        let grid = self.grid(s)?;
        let text = self.text_config();
        let clip = self
            .image_encoder
            .as_ref()
            .and_then(|d| ClipVisionConfig::from_file(&d.join("config.json")).ok());
        Ok(crate::memory::plan(&PlanInputs {
            dit: &self.dit_config,
            experts: self.transformers.len(),
            dit_bytes: Self::dit_dtype(dtype).size_in_bytes(),
            tokens: grid.len(),
            branches: if s.guidance.uses_uncond() { 2 } else { 1 },
            kv_cache: crate::sampling::is_token_level(sampler),
            text: &text,
            text_bytes: Self::text_dtype(dtype).size_in_bytes(),
            text_len: self.defaults.text_len,
            vae: self
                .vae
                .as_ref()
                .map(|(_, c)| (c, s.frames, s.height, s.width)),
            image: with_image.then_some(clip.as_ref()),
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
    use crate::defaults::WAN_NEGATIVE_PROMPT;

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

    /// A pixel-space model with a temporal patch (frames folded into tokens): the frame count
    /// must divide by it, and the error says so rather than blaming the width and height.
    #[test]
    fn a_temporal_patch_needs_whole_frame_groups() {
        let tmp = tempfile::tempdir().unwrap();
        let src = fixture("models/shapes-wan");
        for part in [
            "model_index.json",
            "tokenizer/tokenizer.json",
            "text_encoder/config.json",
        ] {
            std::fs::create_dir_all(tmp.path().join(part).parent().unwrap()).unwrap();
            std::fs::copy(src.join(part), tmp.path().join(part)).unwrap();
        }
        let mut dit = read_json(&src.join("transformer/config.json")).unwrap();
        dit["patch_size"] = serde_json::json!([3, 4, 4]);
        std::fs::create_dir_all(tmp.path().join("transformer")).unwrap();
        std::fs::write(tmp.path().join("transformer/config.json"), dit.to_string()).unwrap();
        let f = ModelFolder::open(tmp.path()).unwrap();
        let request = |frames| GenerateRequest {
            model_dir: tmp.path().to_path_buf(),
            frames: Some(frames),
            ..Default::default()
        };
        let grid = f.grid(&f.settings(&request(9)).unwrap()).unwrap();
        assert_eq!(grid.frames, 3, "9 frames in groups of 3");
        let err = f
            .grid(&f.settings(&request(8)).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("frames a multiple of 3"), "{err}");
    }
}
