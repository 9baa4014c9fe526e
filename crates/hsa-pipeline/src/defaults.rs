//! Which kind of Wan a model folder holds and the generation defaults that follow from that
//! (the folder itself is read by [`crate::folder`]).
//!
//! Two kinds of folder are understood, both diffusers pipelines (`model_index.json` +
//! component folders):
//! * pixel-space models (the bundled model): no VAE; everything is declared under `_hsa` in
//!   model_index.json;
//! * latent-space Wan pipelines as diffusers saves them (`transformer/`, `transformer_2/` +
//!   `boundary_ratio` for Wan2.2 A14B, `text_encoder/`, `tokenizer/`, `vae/`, `scheduler/`;
//!   image-to-video folders add 36 input channels and, for Wan2.1 I2V, `image_encoder/` +
//!   `image_processor/`; TI2V-5B declares `expand_timesteps`).
//!   Defaults come from the official settings of the model kind (wan-spec §3.1), the shift
//!   and the default solver from `scheduler/scheduler_config.json`; an `_hsa` section still
//!   overrides any of them.

use std::path::Path;

use crate::folder::ModelFolder;
use crate::image_cond::ImageMode;
use crate::Result;

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
    /// Wan2.1 I2V-14B (480P / 720P): 36 input channels (mask + image latent) and CLIP features.
    Wan21I2v,
    /// Wan2.2 I2V-A14B: 36 input channels, no CLIP, two experts.
    Wan22I2vA14b,
}

impl ModelKind {
    /// How the kind is conditioned on an image (`None`: text-to-video only). TI2V-5B takes an
    /// image optionally.
    pub fn image_mode(self, clip: bool) -> Option<ImageMode> {
        match self {
            ModelKind::Wan21I2v => Some(ImageMode::Channels { clip }),
            ModelKind::Wan22I2vA14b => Some(ImageMode::Channels { clip: false }),
            ModelKind::Wan22Ti2v5b => Some(ImageMode::FirstFrame),
            _ => None,
        }
    }

    /// Whether generation needs `--image`.
    pub fn needs_image(self) -> bool {
        matches!(self, ModelKind::Wan21I2v | ModelKind::Wan22I2vA14b)
    }
}

/// Generation defaults of a model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDefaults {
    /// Latent = pixels: no VAE (the bundled model).
    pub pixel_space: bool,
    /// A pixel-space DiT that takes each pixel's frame, row and column as three extra input
    /// channels (`hsa_models::wan::position_channels`), appended at every step.
    pub position_channels: bool,
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
pub(crate) struct HsaOverlay {
    pub(crate) pixel_space: Option<bool>,
    pub(crate) position_channels: Option<bool>,
    pub(crate) text_len: Option<usize>,
    pub(crate) frames: Option<usize>,
    pub(crate) height: Option<usize>,
    pub(crate) width: Option<usize>,
    pub(crate) fps: Option<f64>,
    pub(crate) shift: Option<f64>,
    pub(crate) guidance: Option<f64>,
    pub(crate) guidance_2: Option<f64>,
    pub(crate) steps: Option<usize>,
    pub(crate) sampler: Option<String>,
    pub(crate) negative_prompt: Option<String>,
}

impl ModelDefaults {
    /// Wan2.1 T2V defaults (wan-spec §3.1) for folders that declare none.
    pub fn wan21_t2v() -> Self {
        Self {
            pixel_space: false,
            position_channels: false,
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
            // Height x width is the pixel area the image's aspect ratio is fitted into.
            ModelKind::Wan21I2v => Self {
                steps: 40,
                shift: 3.0,
                negative_prompt: format!("镜头晃动，{WAN_NEGATIVE_PROMPT}"),
                ..base
            },
            ModelKind::Wan22I2vA14b => Self {
                steps: 40,
                shift: 5.0,
                guidance: 3.5,
                guidance_2: Some(3.5),
                boundary_ratio: Some(0.9),
                height: 720,
                width: 1280,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_defaults_match_the_official_tables() {
        let a = ModelDefaults::for_kind(ModelKind::Wan22A14b);
        assert_eq!((a.steps, a.guidance, a.guidance_2), (40, 4.0, Some(3.0)));
        let t = ModelDefaults::for_kind(ModelKind::Wan22Ti2v5b);
        assert_eq!((t.frames, t.width, t.height, t.fps), (121, 1280, 704, 24.0));
        // wan-spec §3.1: I2V-14B 40 steps, shift 3 at 480P; I2V-A14B shift 5, g (3.5, 3.5),
        // boundary 0.9; the official I2V negative prompt starts with "镜头晃动，".
        let i = ModelDefaults::for_kind(ModelKind::Wan21I2v);
        assert_eq!((i.steps, i.shift, i.guidance), (40, 3.0, 5.0));
        assert!(i.negative_prompt.starts_with("镜头晃动，"));
        let a = ModelDefaults::for_kind(ModelKind::Wan22I2vA14b);
        assert_eq!(
            (a.steps, a.shift, a.guidance, a.guidance_2, a.boundary_ratio),
            (40, 5.0, 3.5, Some(3.5), Some(0.9))
        );
    }
}
