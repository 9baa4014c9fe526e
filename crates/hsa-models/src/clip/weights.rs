//! Finding, validating and loading CLIP vision tower weights.
//!
//! Key layouts (transformers names): a `CLIPVisionModel` saved by transformers 5 has bare names
//! (`embeddings.patch_embedding.weight`, `encoder.layers.N.self_attn.q_proj.weight`, ...);
//! transformers 4 `CLIPVisionModel`s, every `CLIPVisionModelWithProjection`, full `CLIPModel`
//! checkpoints (diffusers' Wan I2V `image_encoder/`, ComfyUI's `clip_vision_h.safetensors`) put
//! them under `vision_model.`. The canonical name is the bare one. `visual_projection.weight`
//! (never prefixed) is loaded when present; the text tower of a full CLIP checkpoint and the
//! `position_ids` buffer of old checkpoints are ignored.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::config::ClipVisionConfig;
use crate::store::{find_weight_files, Routing, TensorStore};
use crate::{ModelError, Result};

/// How the keys of a checkpoint are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipKeyFormat {
    /// `embeddings.…`, `encoder.layers.N.…` (transformers 5 `CLIPVisionModel`).
    Bare,
    /// `vision_model.embeddings.…` (transformers 4, `…WithProjection`, full `CLIPModel`).
    VisionModelPrefix,
}

const PREFIX: &str = "vision_model.";
pub const CLASS_EMBEDDING: &str = "embeddings.class_embedding";
pub const PATCH_EMBEDDING: &str = "embeddings.patch_embedding.weight";
pub const POSITION_EMBEDDING: &str = "embeddings.position_embedding.weight";
/// transformers spells it "layrnorm".
pub const PRE_LAYERNORM: &str = "pre_layrnorm.";
pub const POST_LAYERNORM: &str = "post_layernorm.";
pub const PROJECTION: &str = "visual_projection.weight";

/// Canonical prefix of encoder layer `i`'s tensors.
pub fn layer_prefix(i: usize) -> String {
    format!("encoder.layers.{i}.")
}

/// Detects the key layout from the raw keys.
pub fn detect_format<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> Option<ClipKeyFormat> {
    let has = |name: &str| keys.clone().any(|k| k == name);
    if has(&format!("{PREFIX}{PATCH_EMBEDDING}")) {
        Some(ClipKeyFormat::VisionModelPrefix)
    } else if has(PATCH_EMBEDDING) {
        Some(ClipKeyFormat::Bare)
    } else {
        None
    }
}

/// Stored keys that a vision tower does not use: the `position_ids` buffer of old checkpoints
/// and the text half of a full `CLIPModel`.
fn is_ignored(canonical: &str) -> bool {
    canonical == "embeddings.position_ids"
        || canonical.starts_with("text_model.")
        || canonical == "text_projection.weight"
        || canonical == "logit_scale"
}

/// The tensors (canonical names) and shapes a config needs, in a stable order;
/// `with_projection` adds `visual_projection.weight`.
pub fn expected_tensors(
    cfg: &ClipVisionConfig,
    with_projection: bool,
) -> Vec<(String, Vec<usize>)> {
    let (d, f, p, c) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.patch_size,
        cfg.num_channels,
    );
    let mut v = vec![
        (CLASS_EMBEDDING.to_string(), vec![d]),
        (PATCH_EMBEDDING.to_string(), vec![d, c, p, p]),
        (POSITION_EMBEDDING.to_string(), vec![cfg.num_positions(), d]),
        (format!("{PRE_LAYERNORM}weight"), vec![d]),
        (format!("{PRE_LAYERNORM}bias"), vec![d]),
    ];
    for i in 0..cfg.num_hidden_layers {
        let l = layer_prefix(i);
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            v.push((format!("{l}self_attn.{proj}.weight"), vec![d, d]));
            v.push((format!("{l}self_attn.{proj}.bias"), vec![d]));
        }
        for norm in ["layer_norm1", "layer_norm2"] {
            v.push((format!("{l}{norm}.weight"), vec![d]));
            v.push((format!("{l}{norm}.bias"), vec![d]));
        }
        v.push((format!("{l}mlp.fc1.weight"), vec![f, d]));
        v.push((format!("{l}mlp.fc1.bias"), vec![f]));
        v.push((format!("{l}mlp.fc2.weight"), vec![d, f]));
        v.push((format!("{l}mlp.fc2.bias"), vec![d]));
    }
    v.push((format!("{POST_LAYERNORM}weight"), vec![d]));
    v.push((format!("{POST_LAYERNORM}bias"), vec![d]));
    if with_projection {
        v.push((PROJECTION.to_string(), vec![cfg.projection_dim, d]));
    }
    v
}

/// Detects the layout of the raw keys and routes each under its canonical name.
fn route_keys(raw: Vec<(usize, String)>, paths: &[PathBuf]) -> Result<(Routing, ClipKeyFormat)> {
    let format = detect_format(raw.iter().map(|(_, k)| k.as_str())).ok_or_else(|| {
        let mut sample: Vec<&str> = raw.iter().map(|(_, k)| k.as_str()).collect();
        sample.sort();
        sample.truncate(5);
        ModelError::Config {
            path: paths.first().cloned().unwrap_or_default(),
            message: format!(
                "not a CLIP vision checkpoint: expected transformers names ({PATCH_EMBEDDING} or \
                 {PREFIX}{PATCH_EMBEDDING}); first keys found: {}",
                sample.join(", ")
            ),
        }
    })?;
    let mut routing = Routing::new();
    for (i, k) in raw {
        let canonical = match format {
            ClipKeyFormat::VisionModelPrefix => k.strip_prefix(PREFIX).unwrap_or(&k).to_string(),
            ClipKeyFormat::Bare => k.clone(),
        };
        routing.insert(canonical, (i, k));
    }
    Ok((routing, format))
}

/// Memory-mapped CLIP vision checkpoint files with every key mapped to its canonical name.
///
/// Dereferences to its [`TensorStore`] for queries by canonical name; [`Self::get`] and
/// [`Self::check`] name tensors in errors as the checkpoint spells them.
#[derive(Debug)]
pub struct ClipWeights {
    store: TensorStore,
    format: ClipKeyFormat,
}

impl ClipWeights {
    /// Opens (memory-maps) the given safetensors files and detects their key layout.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let (store, format) = TensorStore::open(paths, |raw| route_keys(raw, paths))?;
        Ok(Self { store, format })
    }

    /// Opens the weight files in `dir`: a single file, the shards of a `*.safetensors.index.json`,
    /// or every `*.safetensors` file.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        Self::open(&find_weight_files(dir)?)
    }

    pub fn format(&self) -> ClipKeyFormat {
        self.format
    }

    /// Whether the checkpoint has `visual_projection.weight` (`CLIPVisionModelWithProjection`).
    pub fn has_projection(&self) -> bool {
        self.store.contains(PROJECTION)
    }

    /// Checks the stored tensors against `cfg`: everything present with the right shape and a
    /// float dtype, nothing unexpected. Errors name tensors as this checkpoint spells them.
    pub fn check(&self, cfg: &ClipVisionConfig) -> Result<()> {
        self.store.check_named(
            &expected_tensors(cfg, self.has_projection()),
            is_ignored,
            |n| self.stored_name(n),
        )
    }

    /// The name a canonical tensor has (or would have) in this checkpoint's own layout.
    pub fn stored_name(&self, canonical: &str) -> String {
        if let Some(k) = self.store.stored_key(canonical) {
            return k.to_string();
        }
        match self.format {
            ClipKeyFormat::VisionModelPrefix if canonical != PROJECTION => {
                format!("{PREFIX}{canonical}")
            }
            _ => canonical.to_string(),
        }
    }

    /// Loads a tensor by canonical name, cast to `dtype`.
    pub fn get(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        if !self.store.contains(name) {
            return Err(self.store.missing(self.stored_name(name), vec![]));
        }
        self.store.get(name, dtype, device)
    }
}

impl std::ops::Deref for ClipWeights {
    type Target = TensorStore;

    fn deref(&self) -> &TensorStore {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vit_h14_parameter_count() {
        // ViT-H/14 vision tower with its 1280 -> 1024 visual_projection (1.31 M of the total).
        let cfg = ClipVisionConfig::vit_h14();
        let n: usize = expected_tensors(&cfg, true)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(n, 632_076_800);
    }

    #[test]
    fn detects_layouts() {
        let bare = [PATCH_EMBEDDING, CLASS_EMBEDDING];
        assert_eq!(
            detect_format(bare.iter().copied()),
            Some(ClipKeyFormat::Bare)
        );
        let pre = ["vision_model.embeddings.patch_embedding.weight", PROJECTION];
        assert_eq!(
            detect_format(pre.iter().copied()),
            Some(ClipKeyFormat::VisionModelPrefix)
        );
        let t5 = ["shared.weight"];
        assert_eq!(detect_format(t5.iter().copied()), None);
    }
}
