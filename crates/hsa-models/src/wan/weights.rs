//! Finding, validating and loading Wan DiT weights.
//!
//! Three key layouts exist in the wild: diffusers (`blocks.0.attn1.to_q.weight`), the original
//! Wan repository (`blocks.0.self_attn.q.weight`), and ComfyUI single files (either layout
//! behind a `model.diffusion_model.` prefix). The layout is detected from the keys, every key
//! is mapped to its diffusers name (our canonical name), and the whole set is checked against
//! the config before anything is loaded, so a wrong file fails with the tensor's name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::config::WanConfig;
use crate::{ModelError, Result};

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
    if let Some(rest) = key.strip_prefix("blocks.") {
        if let Some((n, tail)) = rest.split_once('.') {
            for (from, to) in ORIGINAL_BLOCK {
                if let Some(suffix) = tail.strip_prefix(from) {
                    return format!("blocks.{n}.{to}{suffix}");
                }
            }
        }
        return key.to_string();
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

/// The weight files of one DiT in a folder: a single `diffusion_pytorch_model.safetensors`,
/// the shards named by a `*.safetensors.index.json`, or else every `*.safetensors` file.
pub fn find_weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |e| ModelError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if let Some(index) = entries
        .iter()
        .find(|p| name(p).ends_with(".safetensors.index.json"))
    {
        let text = std::fs::read_to_string(index).map_err(|e| ModelError::Io {
            path: index.clone(),
            source: e,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Config {
                path: index.clone(),
                message: format!("malformed index JSON: {e}"),
            })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Config {
                path: index.clone(),
                message: "index has no 'weight_map' object".into(),
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("diffusion_pytorch_model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let all: Vec<PathBuf> = entries
        .into_iter()
        .filter(|p| name(p).ends_with(".safetensors"))
        .collect();
    if all.is_empty() {
        return Err(ModelError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    Ok(all)
}

/// Memory-mapped checkpoint files with every key mapped to its diffusers name.
pub struct WeightStore {
    files: Vec<MmapedSafetensors>,
    paths: Vec<PathBuf>,
    /// canonical name -> (file index, key as stored)
    routing: BTreeMap<String, (usize, String)>,
    format: KeyFormat,
    comfy: bool,
}

impl std::fmt::Debug for WeightStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightStore")
            .field("paths", &self.paths)
            .field("format", &self.format)
            .field("comfy", &self.comfy)
            .field("tensors", &self.routing.len())
            .finish()
    }
}

impl WeightStore {
    /// Opens (memory-maps) the given safetensors files and detects their key layout.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut raw: Vec<(usize, String)> = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            if !p.is_file() {
                return Err(ModelError::Io {
                    path: p.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
                });
            }
            // SAFETY: the file is mapped read-only; like every mmap-based loader we rely on no
            // other process truncating it while it is mapped.
            let st = unsafe { MmapedSafetensors::new(p) }.map_err(|e| ModelError::Safetensors {
                path: p.clone(),
                message: root_message(&e),
            })?;
            raw.extend(st.tensors().into_iter().map(|(k, _)| (i, k)));
            files.push(st);
        }
        let comfy = raw.iter().any(|(_, k)| k.starts_with(COMFY_PREFIX));
        let stripped: Vec<(usize, String, String)> = raw
            .into_iter()
            .map(|(i, k)| {
                let s = k.strip_prefix(COMFY_PREFIX).unwrap_or(&k).to_string();
                (i, k, s)
            })
            .collect();
        let format =
            detect_format(stripped.iter().map(|(_, _, s)| s.as_str())).ok_or_else(|| {
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
        Ok(Self {
            files,
            paths: paths.to_vec(),
            routing,
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

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn describe(&self) -> String {
        match self.paths.as_slice() {
            [one] => one.display().to_string(),
            many => format!(
                "{} files in {}",
                many.len(),
                many[0].parent().unwrap_or(Path::new(".")).display()
            ),
        }
    }

    /// Whether a tensor with this diffusers name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }

    /// Shape and dtype of a tensor by diffusers name.
    pub fn info(&self, name: &str) -> Option<(Vec<usize>, DType)> {
        let (i, key) = self.routing.get(name)?;
        let view = self.files[*i].get(key).ok()?;
        let dtype = DType::try_from(view.dtype()).ok().unwrap_or(DType::U8);
        Some((view.shape().to_vec(), dtype))
    }

    /// Counts of stored dtypes, for reporting (`hsa inspect`).
    pub fn dtype_histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        for (i, key) in self.routing.values() {
            if let Ok(view) = self.files[*i].get(key) {
                *h.entry(format!("{:?}", view.dtype()).to_lowercase())
                    .or_insert(0) += 1;
            }
        }
        h
    }

    /// Total number of stored parameters.
    pub fn parameter_count(&self) -> usize {
        self.routing
            .values()
            .filter_map(|(i, key)| self.files[*i].get(key).ok())
            .map(|v| v.shape().iter().product::<usize>())
            .sum()
    }

    /// Checks the stored tensors against `expected`: every expected tensor present with the
    /// right shape, nothing unexpected.
    pub fn check(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        let want: HashMap<&str, &Vec<usize>> =
            expected.iter().map(|(n, s)| (n.as_str(), s)).collect();
        for (name, shape) in expected {
            match self.info(name) {
                None => {
                    return Err(ModelError::MissingTensor {
                        name: name.clone(),
                        expected: shape.clone(),
                        source_desc: self.describe(),
                    })
                }
                Some((found, dtype)) => {
                    if &found != shape {
                        return Err(ModelError::ShapeMismatch {
                            name: name.clone(),
                            expected: shape.clone(),
                            found,
                        });
                    }
                    if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
                        return Err(ModelError::UnsupportedDtype {
                            name: name.clone(),
                            dtype: format!("{dtype:?}"),
                        });
                    }
                }
            }
        }
        if let Some(extra) = self
            .routing
            .keys()
            .find(|k| !want.contains_key(k.as_str()) && !is_ignored(k))
        {
            let shape = self.info(extra).map(|(s, _)| s).unwrap_or_default();
            return Err(ModelError::UnexpectedTensor {
                name: extra.clone(),
                shape,
                source_desc: self.describe(),
            });
        }
        Ok(())
    }

    /// Loads a tensor by diffusers name, cast to `dtype`.
    pub fn get(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (i, key) = self
            .routing
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                expected: vec![],
                source_desc: self.describe(),
            })?;
        let t = self.files[*i]
            .load(key, device)
            .map_err(|e| ModelError::Safetensors {
                path: self.paths[*i].clone(),
                message: root_message(&e),
            })?;
        Ok(t.to_dtype(dtype)?)
    }

    /// The dtype the matmul weights are stored in (that of the first block's query projection).
    pub fn storage_dtype(&self) -> DType {
        ["blocks.0.attn1.to_q.weight", "proj_out.weight"]
            .iter()
            .find_map(|n| self.info(n).map(|(_, d)| d))
            .unwrap_or(DType::F32)
    }
}

/// candle errors wrap the interesting message in context layers; keep the innermost one.
fn root_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithPath { inner, .. } => root_message(inner),
        candle_core::Error::WithBacktrace { inner, .. } => root_message(inner),
        candle_core::Error::Context { inner, .. } => root_message(inner),
        other => other.to_string(),
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
