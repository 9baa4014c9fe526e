//! Finding, validating and loading Wan DiT weights.
//!
//! Three key layouts exist in the wild: diffusers (`blocks.0.attn1.to_q.weight`), the original
//! Wan repository (`blocks.0.self_attn.q.weight`), and ComfyUI single files (either layout
//! behind a `model.diffusion_model.` prefix). The layout is detected from the keys, every key
//! is mapped to its diffusers name (our canonical name), and the whole set is checked against
//! the config before anything is loaded, so a wrong file fails with the tensor's name.

use std::path::{Path, PathBuf};

use candle_core::DType;

use super::config::WanConfig;
use crate::store::{rename_block_key, Routing, TensorStore};
use crate::{ModelError, Result};

pub use crate::store::find_weight_files;

/// How the keys of a checkpoint are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    Diffusers,
    Original,
}

const COMFY_PREFIX: &str = "model.diffusion_model.";

/// Keys some checkpoints carry that the model does not use (diffusers ignores them too).
fn is_ignored(canonical: &str) -> bool {
    canonical.ends_with("attn2.norm_added_q.weight")
}

/// Original top-level key prefixes and their diffusers spelling.
const ORIGINAL_TOP: &[(&str, &str)] = &[
    (
        "text_embedding.0.",
        "condition_embedder.text_embedder.linear_1.",
    ),
    (
        "text_embedding.2.",
        "condition_embedder.text_embedder.linear_2.",
    ),
    (
        "time_embedding.0.",
        "condition_embedder.time_embedder.linear_1.",
    ),
    (
        "time_embedding.2.",
        "condition_embedder.time_embedder.linear_2.",
    ),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.modulation", "scale_shift_table"),
    ("head.head.", "proj_out."),
    (
        "img_emb.proj.0.",
        "condition_embedder.image_embedder.norm1.",
    ),
    (
        "img_emb.proj.1.",
        "condition_embedder.image_embedder.ff.net.0.proj.",
    ),
    (
        "img_emb.proj.3.",
        "condition_embedder.image_embedder.ff.net.2.",
    ),
    (
        "img_emb.proj.4.",
        "condition_embedder.image_embedder.norm2.",
    ),
    (
        "img_emb.emb_pos",
        "condition_embedder.image_embedder.pos_embed",
    ),
];

/// Original per-block key prefixes (after `blocks.N.`) and their diffusers spelling.
/// Note the deliberate norm3 -> norm2 swap: the original names the cross-attention norm norm3.
const ORIGINAL_BLOCK: &[(&str, &str)] = &[
    ("modulation", "scale_shift_table"),
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("cross_attn.k_img.", "attn2.add_k_proj."),
    ("cross_attn.v_img.", "attn2.add_v_proj."),
    ("cross_attn.norm_k_img.", "attn2.norm_added_k."),
    ("norm3.", "norm2."),
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
];

/// Maps an original Wan key to its diffusers name; unknown keys are returned unchanged (and
/// then reported as unexpected by the shape check).
pub fn original_to_diffusers(key: &str) -> String {
    if key.starts_with("blocks.") {
        return rename_block_key(key, "blocks.", "blocks.", ORIGINAL_BLOCK.iter().copied())
            .unwrap_or_else(|| key.to_string());
    }
    for (from, to) in ORIGINAL_TOP {
        if let Some(suffix) = key.strip_prefix(from) {
            return format!("{to}{suffix}");
        }
    }
    key.to_string()
}

/// Detects the key layout from the (prefix-stripped) key names.
pub fn detect_format<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> Option<KeyFormat> {
    let has = |needle: &str| keys.clone().any(|k| k.contains(needle));
    if has("attn1.to_q.") || has("condition_embedder.") {
        Some(KeyFormat::Diffusers)
    } else if has("self_attn.q.") || has("time_embedding.0.") {
        Some(KeyFormat::Original)
    } else {
        None
    }
}

/// The tensors (diffusers names) and shapes a config needs, in a stable order.
pub fn expected_tensors(cfg: &WanConfig) -> Vec<(String, Vec<usize>)> {
    let d = cfg.dim();
    let [pt, ph, pw] = cfg.patch_size;
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let lin = |v: &mut Vec<(String, Vec<usize>)>, name: &str, out: usize, inp: usize| {
        v.push((format!("{name}.weight"), vec![out, inp]));
        v.push((format!("{name}.bias"), vec![out]));
    };
    v.push((
        "patch_embedding.weight".into(),
        vec![d, cfg.in_channels, pt, ph, pw],
    ));
    v.push(("patch_embedding.bias".into(), vec![d]));
    lin(
        &mut v,
        "condition_embedder.time_embedder.linear_1",
        d,
        cfg.freq_dim,
    );
    lin(&mut v, "condition_embedder.time_embedder.linear_2", d, d);
    lin(&mut v, "condition_embedder.time_proj", 6 * d, d);
    lin(
        &mut v,
        "condition_embedder.text_embedder.linear_1",
        d,
        cfg.text_dim,
    );
    lin(&mut v, "condition_embedder.text_embedder.linear_2", d, d);
    if let Some(img) = cfg.image_dim {
        let p = "condition_embedder.image_embedder";
        v.push((format!("{p}.norm1.weight"), vec![img]));
        v.push((format!("{p}.norm1.bias"), vec![img]));
        lin(&mut v, &format!("{p}.ff.net.0.proj"), img, img);
        lin(&mut v, &format!("{p}.ff.net.2"), d, img);
        v.push((format!("{p}.norm2.weight"), vec![d]));
        v.push((format!("{p}.norm2.bias"), vec![d]));
        if let Some(n) = cfg.pos_embed_seq_len {
            v.push((format!("{p}.pos_embed"), vec![1, n, img]));
        }
    }
    for i in 0..cfg.num_layers {
        let b = format!("blocks.{i}");
        v.push((format!("{b}.scale_shift_table"), vec![1, 6, d]));
        for attn in ["attn1", "attn2"] {
            for p in ["to_q", "to_k", "to_v", "to_out.0"] {
                lin(&mut v, &format!("{b}.{attn}.{p}"), d, d);
            }
            if cfg.qk_norm {
                v.push((format!("{b}.{attn}.norm_q.weight"), vec![d]));
                v.push((format!("{b}.{attn}.norm_k.weight"), vec![d]));
            }
        }
        if cfg.has_image_branch() {
            lin(&mut v, &format!("{b}.attn2.add_k_proj"), d, d);
            lin(&mut v, &format!("{b}.attn2.add_v_proj"), d, d);
            if cfg.qk_norm {
                v.push((format!("{b}.attn2.norm_added_k.weight"), vec![d]));
            }
        }
        if cfg.cross_attn_norm {
            v.push((format!("{b}.norm2.weight"), vec![d]));
            v.push((format!("{b}.norm2.bias"), vec![d]));
        }
        lin(&mut v, &format!("{b}.ffn.net.0.proj"), cfg.ffn_dim, d);
        lin(&mut v, &format!("{b}.ffn.net.2"), d, cfg.ffn_dim);
    }
    v.push(("scale_shift_table".into(), vec![1, 2, d]));
    lin(&mut v, "proj_out", cfg.out_token_dim(), d);
    v
}

/// Detects the layout of the raw keys and routes each under its diffusers name; also returns
/// the layout and whether the keys carried the ComfyUI prefix.
fn route_keys(raw: Vec<(usize, String)>) -> Result<(Routing, (KeyFormat, bool))> {
    let comfy = raw.iter().any(|(_, k)| k.starts_with(COMFY_PREFIX));
    let stripped: Vec<(usize, String, String)> = raw
        .into_iter()
        .map(|(i, k)| {
            let s = k.strip_prefix(COMFY_PREFIX).unwrap_or(&k).to_string();
            (i, k, s)
        })
        .collect();
    let format = detect_format(stripped.iter().map(|(_, _, s)| s.as_str())).ok_or_else(|| {
        let mut sample: Vec<&str> = stripped
            .iter()
            .map(|(_, k, _)| k.as_str())
            .take(5)
            .collect();
        sample.sort();
        ModelError::UnknownKeyFormat {
            sample: sample.join(", "),
        }
    })?;
    let routing = stripped
        .into_iter()
        .map(|(i, k, s)| {
            let canonical = match format {
                KeyFormat::Diffusers => s,
                KeyFormat::Original => original_to_diffusers(&s),
            };
            (canonical, (i, k))
        })
        .collect();
    Ok((routing, (format, comfy)))
}

/// Memory-mapped checkpoint files with every key mapped to its diffusers name.
///
/// Dereferences to its [`TensorStore`] for the queries by diffusers name (`contains`, `info`,
/// `get`, `paths`, `parameter_count`, `dtype_histogram`).
#[derive(Debug)]
pub struct WeightStore {
    store: TensorStore,
    format: KeyFormat,
    comfy: bool,
}

impl WeightStore {
    /// Opens (memory-maps) the given safetensors files and detects their key layout.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let (store, (format, comfy)) = TensorStore::open(paths, route_keys)?;
        Ok(Self {
            store,
            format,
            comfy,
        })
    }

    /// Opens the weight files found in `dir` (see [`find_weight_files`]).
    pub fn open_dir(dir: &Path) -> Result<Self> {
        Self::open(&find_weight_files(dir)?)
    }

    pub fn format(&self) -> KeyFormat {
        self.format
    }

    /// Whether the keys carried the ComfyUI `model.diffusion_model.` prefix.
    pub fn is_comfy(&self) -> bool {
        self.comfy
    }

    /// Checks the stored tensors against `expected`: every expected tensor present with the
    /// right shape, nothing unexpected.
    pub fn check(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        self.store.check(expected, is_ignored)
    }

    /// The dtype the matmul weights are stored in (that of the first block's query projection).
    pub fn storage_dtype(&self) -> DType {
        ["blocks.0.attn1.to_q.weight", "proj_out.weight"]
            .iter()
            .find_map(|n| self.info(n).map(|(_, d)| d))
            .unwrap_or(DType::F32)
    }
}

impl std::ops::Deref for WeightStore {
    type Target = TensorStore;

    fn deref(&self) -> &TensorStore {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_keys_map_to_diffusers_names() {
        let cases = [
            (
                "blocks.3.self_attn.o.weight",
                "blocks.3.attn1.to_out.0.weight",
            ),
            ("blocks.0.norm3.bias", "blocks.0.norm2.bias"),
            ("blocks.1.modulation", "blocks.1.scale_shift_table"),
            ("head.modulation", "scale_shift_table"),
            ("head.head.weight", "proj_out.weight"),
            (
                "blocks.2.cross_attn.norm_k_img.weight",
                "blocks.2.attn2.norm_added_k.weight",
            ),
            (
                "time_projection.1.bias",
                "condition_embedder.time_proj.bias",
            ),
            (
                "img_emb.proj.4.weight",
                "condition_embedder.image_embedder.norm2.weight",
            ),
            ("patch_embedding.weight", "patch_embedding.weight"),
        ];
        for (orig, diff) in cases {
            assert_eq!(original_to_diffusers(orig), diff);
        }
    }

    #[test]
    fn expected_set_matches_the_preset_parameter_count() {
        // Wan2.1 T2V-1.3B has 1,418,996,800 parameters in its official checkpoint (~5.68 GB f32).
        let n: usize = expected_tensors(&WanConfig::wan21_t2v_1_3b())
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(n, 1_418_996_800);
    }
}
