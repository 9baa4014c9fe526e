//! CLIP vision tower configuration: transformers' `CLIPVisionConfig` (`config.json` of a
//! `CLIPVisionModel` / `CLIPVisionModelWithProjection`, or the `vision_config` section of a
//! full `CLIPConfig`), and the ViT-H/14 preset Wan2.1 I2V uses.

use std::path::Path;

use serde::Deserialize;

use crate::{ModelError, Result};

/// MLP activation (`ACT2FN[hidden_act]` in transformers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `quick_gelu`: `x * sigmoid(1.702 x)` (OpenAI CLIP, transformers' default).
    QuickGelu,
    /// `gelu`: exact erf GELU (open-clip / LAION ViT-H/14, the tower Wan2.1 I2V uses).
    GeluErf,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
}

impl ClipActivation {
    /// Parses transformers' `hidden_act` string.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "quick_gelu" => Self::QuickGelu,
            "gelu" => Self::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            other => {
                return Err(format!(
                    "unsupported hidden_act '{other}' (supported: quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)"
                ))
            }
        })
    }
}

/// Architecture of a CLIP ViT vision tower.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    /// Side of the (square) input image in pixels.
    pub image_size: usize,
    /// Side of a (square) patch; the patch-embedding conv has stride = kernel = `patch_size`.
    pub patch_size: usize,
    pub hidden_act: ClipActivation,
    pub layer_norm_eps: f64,
    /// Width of `visual_projection` (`CLIPVisionModelWithProjection`); only used when the
    /// checkpoint has that tensor.
    pub projection_dim: usize,
}

/// Every field optional: missing ones take transformers' `CLIPVisionConfig` defaults.
#[derive(Deserialize, Default)]
struct HfVisionConfig {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_channels: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    projection_dim: Option<usize>,
    model_type: Option<String>,
}

/// A full `CLIPConfig`: the vision tower's settings are in `vision_config`; `projection_dim` is
/// set at the top level there.
#[derive(Deserialize)]
struct HfFullConfig {
    model_type: Option<String>,
    vision_config: Option<serde_json::Value>,
    projection_dim: Option<usize>,
}

impl ClipVisionConfig {
    /// The open-clip ViT-H/14 visual tower of Wan2.1 I2V / FLF2V (= `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`,
    /// the `image_encoder` of diffusers' Wan I2V repos): 224² input, patch 14 (257 tokens),
    /// width 1280, 32 layers, 16 heads, MLP 5120 with erf GELU, LayerNorm eps 1e-5.
    pub fn vit_h14() -> Self {
        Self {
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 224,
            patch_size: 14,
            hidden_act: ClipActivation::GeluErf,
            layer_norm_eps: 1e-5,
            projection_dim: 1024,
        }
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Patches per side (`image_size / patch_size`).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image: one class token plus one per patch (257 for ViT-H/14 at 224²).
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// Parses a `config.json`: a `CLIPVisionConfig` (`model_type` "clip_vision_model", or
    /// absent) or a full `CLIPConfig` (`model_type` "clip") whose `vision_config` is used.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let err = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let full: HfFullConfig =
            serde_json::from_str(text).map_err(|e| err(format!("malformed JSON: {e}")))?;
        let (vision, top_projection) = match (full.model_type.as_deref(), full.vision_config) {
            (Some("clip"), Some(v)) | (None, Some(v)) => (v, full.projection_dim),
            (Some("clip"), None) => {
                return Err(err(
                    "a full CLIPConfig (model_type 'clip') needs a 'vision_config' section".into(),
                ))
            }
            (Some(mt), _) if mt != "clip_vision_model" => {
                return Err(err(format!(
                    "model_type '{mt}' is not a CLIP vision config (expected 'clip_vision_model' or 'clip')"
                )))
            }
            _ => (
                serde_json::from_str(text).map_err(|e| err(format!("malformed JSON: {e}")))?,
                None,
            ),
        };
        let c: HfVisionConfig = serde_json::from_value(vision)
            .map_err(|e| err(format!("malformed vision config: {e}")))?;
        if let Some(mt) = &c.model_type {
            if mt != "clip_vision_model" {
                return Err(err(format!(
                    "vision model_type '{mt}' is not 'clip_vision_model'"
                )));
            }
        }
        let hidden_act =
            ClipActivation::parse(c.hidden_act.as_deref().unwrap_or("quick_gelu")).map_err(err)?;
        let cfg = Self {
            hidden_size: c.hidden_size.unwrap_or(768),
            intermediate_size: c.intermediate_size.unwrap_or(3072),
            num_hidden_layers: c.num_hidden_layers.unwrap_or(12),
            num_attention_heads: c.num_attention_heads.unwrap_or(12),
            num_channels: c.num_channels.unwrap_or(3),
            image_size: c.image_size.unwrap_or(224),
            patch_size: c.patch_size.unwrap_or(32),
            hidden_act,
            layer_norm_eps: c.layer_norm_eps.unwrap_or(1e-5),
            projection_dim: top_projection.or(c.projection_dim).unwrap_or(512),
        };
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// Reads a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::store::read_text(path)?;
        Self::from_json_str(&text, path)
    }

    /// Checks the sizes are usable: all positive, heads divide the width, patches tile the image.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_channels", self.num_channels),
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("projection_dim", self.projection_dim),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            // transformers' conv silently drops the remainder; nothing published does this.
            return Err(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if !self.layer_norm_eps.is_finite() || self.layer_norm_eps <= 0.0 {
            return Err("layer_norm_eps must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClipVisionConfig> {
        ClipVisionConfig::from_json_str(text, Path::new("config.json"))
    }

    #[test]
    fn full_clip_config_uses_vision_section() {
        let cfg = parse(
            r#"{"model_type": "clip", "projection_dim": 1024,
                "text_config": {"hidden_size": 1024},
                "vision_config": {"hidden_size": 1280, "intermediate_size": 5120,
                  "num_hidden_layers": 32, "num_attention_heads": 16, "patch_size": 14,
                  "hidden_act": "gelu", "layer_norm_eps": 1e-5, "model_type": "clip_vision_model"}}"#,
        )
        .unwrap();
        assert_eq!(cfg, ClipVisionConfig::vit_h14());
        assert_eq!(cfg.num_positions(), 257);
    }

    #[test]
    fn defaults_are_transformers_defaults() {
        let cfg = parse("{}").unwrap();
        assert_eq!(cfg.hidden_size, 768);
        assert_eq!(cfg.patch_size, 32);
        assert_eq!(cfg.hidden_act, ClipActivation::QuickGelu);
        assert_eq!(cfg.num_positions(), 50);
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            r#"{"model_type": "t5"}"#,
            r#"{"model_type": "clip"}"#,
            r#"{"hidden_act": "swish"}"#,
            r#"{"hidden_size": 30, "num_attention_heads": 4}"#,
            r#"{"image_size": 30, "patch_size": 8}"#,
            r#"not json"#,
        ] {
            assert!(
                matches!(parse(bad), Err(ModelError::Config { .. })),
                "{bad}"
            );
        }
    }
}
