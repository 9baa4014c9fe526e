//! Finding, validating and loading umT5 encoder weights.
//!
//! Two key layouts: HF `UMT5EncoderModel` (`shared.weight`, `encoder.block.N.layer.0.SelfAttention.q.weight`,
//! ...; also what diffusers' Wan `text_encoder/` folders and ComfyUI's umt5 files hold) and the original
//! Wan `T5Encoder` (`token_embedding.weight`, `blocks.N.attn.q.weight`, ...). Every key is mapped to
//! its HF name (our canonical name) and the set is checked against the config before loading.
//! Decoder / LM-head tensors of full (u)mT5 checkpoints are ignored, like transformers does when it
//! loads an encoder-only model from them.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::config::{parse_feed_forward_proj, Activation, UMT5Config};
use crate::store::{find_weight_files, rename_block_key, Routing, TensorStore};
use crate::{ModelError, Result};

/// How the keys of a checkpoint are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T5KeyFormat {
    /// transformers `UMT5EncoderModel` / `T5EncoderModel`.
    HuggingFace,
    /// Wan's `wan/modules/t5.py` `T5Encoder`.
    Original,
}

/// Original per-block key prefixes (after `blocks.N.`) and their HF spelling (after `encoder.block.N.`).
const ORIGINAL_BLOCK: &[(&str, &str)] = &[
    ("norm1.", "layer.0.layer_norm."),
    ("attn.q.", "layer.0.SelfAttention.q."),
    ("attn.k.", "layer.0.SelfAttention.k."),
    ("attn.v.", "layer.0.SelfAttention.v."),
    ("attn.o.", "layer.0.SelfAttention.o."),
    (
        "pos_embedding.embedding.",
        "layer.0.SelfAttention.relative_attention_bias.",
    ),
    ("norm2.", "layer.1.layer_norm."),
    ("ffn.gate.0.", "layer.1.DenseReluDense.wi_0."),
    ("ffn.fc1.", "layer.1.DenseReluDense.wi_1."),
    ("ffn.fc2.", "layer.1.DenseReluDense.wo."),
];

/// Maps an original Wan T5 key to its HF name; unknown keys come back unchanged (and are then
/// reported as unexpected).
pub fn original_to_hf(key: &str) -> String {
    if key.starts_with("blocks.") {
        return rename_block_key(
            key,
            "blocks.",
            "encoder.block.",
            ORIGINAL_BLOCK.iter().copied(),
        )
        .unwrap_or_else(|| key.to_string());
    }
    match key {
        "token_embedding.weight" => "shared.weight".into(),
        "norm.weight" => "encoder.final_layer_norm.weight".into(),
        other => other.to_string(),
    }
}

/// Detects the key layout.
pub fn detect_format<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> Option<T5KeyFormat> {
    let has = |pred: &dyn Fn(&str) -> bool| keys.clone().any(pred);
    if has(&|k| k.starts_with("encoder.block.") || k == "shared.weight") {
        Some(T5KeyFormat::HuggingFace)
    } else if has(&|k| {
        k == "token_embedding.weight" || (k.starts_with("blocks.") && k.contains(".attn.q."))
    }) {
        Some(T5KeyFormat::Original)
    } else {
        None
    }
}

/// Keys of full encoder-decoder checkpoints that an encoder does not use.
fn is_ignored(canonical: &str) -> bool {
    canonical.starts_with("decoder.") || canonical.starts_with("lm_head.")
}

pub const EMBED: &str = "shared.weight";
const EMBED_ALIAS: &str = "encoder.embed_tokens.weight";
pub const FINAL_NORM: &str = "encoder.final_layer_norm.weight";

/// HF names of block `i`'s tensors.
pub fn block_prefix(i: usize) -> String {
    format!("encoder.block.{i}.")
}

/// The tensors (HF names) and shapes a config needs, in a stable order.
pub fn expected_tensors(cfg: &UMT5Config) -> Vec<(String, Vec<usize>)> {
    let (d, inner, f) = (cfg.d_model, cfg.inner_dim(), cfg.d_ff);
    let mut v = vec![(EMBED.to_string(), vec![cfg.vocab_size, d])];
    for i in 0..cfg.num_layers {
        let b = block_prefix(i);
        v.push((format!("{b}layer.0.layer_norm.weight"), vec![d]));
        for p in ["q", "k", "v"] {
            v.push((
                format!("{b}layer.0.SelfAttention.{p}.weight"),
                vec![inner, d],
            ));
        }
        v.push((format!("{b}layer.0.SelfAttention.o.weight"), vec![d, inner]));
        v.push((
            format!("{b}layer.0.SelfAttention.relative_attention_bias.weight"),
            vec![cfg.relative_attention_num_buckets, cfg.num_heads],
        ));
        v.push((format!("{b}layer.1.layer_norm.weight"), vec![d]));
        if cfg.gated {
            v.push((format!("{b}layer.1.DenseReluDense.wi_0.weight"), vec![f, d]));
            v.push((format!("{b}layer.1.DenseReluDense.wi_1.weight"), vec![f, d]));
        } else {
            v.push((format!("{b}layer.1.DenseReluDense.wi.weight"), vec![f, d]));
        }
        v.push((format!("{b}layer.1.DenseReluDense.wo.weight"), vec![d, f]));
    }
    v.push((FINAL_NORM.to_string(), vec![d]));
    v
}

/// Detects the layout of the raw keys and routes each under its HF name (`paths` only name
/// the checkpoint in the error for an unknown layout).
fn route_keys(raw: Vec<(usize, String)>, paths: &[PathBuf]) -> Result<(Routing, T5KeyFormat)> {
    let format = detect_format(raw.iter().map(|(_, k)| k.as_str())).ok_or_else(|| {
        let mut sample: Vec<&str> = raw.iter().map(|(_, k)| k.as_str()).collect();
        sample.sort();
        sample.truncate(5);
        ModelError::Config {
            path: paths.first().cloned().unwrap_or_default(),
            message: format!(
                "not a umT5 encoder checkpoint: expected HF names (shared.weight, encoder.block.0.layer.0.SelfAttention.q.weight) \
                 or original Wan names (token_embedding.weight, blocks.0.attn.q.weight); first keys found: {}",
                sample.join(", ")
            ),
        }
    })?;
    let mut routing = Routing::new();
    for (i, k) in raw {
        let canonical = match format {
            T5KeyFormat::HuggingFace => k.clone(),
            T5KeyFormat::Original => original_to_hf(&k),
        };
        routing.insert(canonical, (i, k));
    }
    // Tied embedding stored only under the encoder's name.
    if !routing.contains_key(EMBED) {
        if let Some(v) = routing.remove(EMBED_ALIAS) {
            routing.insert(EMBED.to_string(), v);
        }
    } else {
        routing.remove(EMBED_ALIAS);
    }
    Ok((routing, format))
}

/// Memory-mapped umT5 checkpoint files with every key mapped to its HF name.
///
/// Dereferences to its [`TensorStore`] for the queries by HF name (`contains`, `info`, `paths`,
/// `parameter_count`, `dtype_histogram`); [`Self::get`] and [`Self::check`] name tensors as
/// the checkpoint spells them.
#[derive(Debug)]
pub struct UMT5Weights {
    store: TensorStore,
    format: T5KeyFormat,
}

impl UMT5Weights {
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

    pub fn format(&self) -> T5KeyFormat {
        self.format
    }

    /// The dtype the matmul weights are stored in.
    pub fn storage_dtype(&self) -> DType {
        self.info("encoder.block.0.layer.0.SelfAttention.q.weight")
            .map(|(_, d)| d)
            .unwrap_or(DType::F32)
    }

    /// Infers the architecture from tensor shapes (for checkpoints without a `config.json`).
    /// `relative_attention_max_distance` (128) and `layer_norm_epsilon` (1e-6) cannot be seen in
    /// the weights and take the umT5 values; the FFN is gated-GELU when `wi_0` is present.
    pub fn infer_config(&self) -> Result<UMT5Config> {
        let shape = |name: &str| -> Result<Vec<usize>> {
            self.info(name)
                .map(|(s, _)| s)
                .ok_or_else(|| self.store.missing(name.to_string(), vec![]))
        };
        let emb = shape(EMBED)?;
        let q = shape("encoder.block.0.layer.0.SelfAttention.q.weight")?;
        let rel = shape("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")?;
        let gated = self.contains("encoder.block.0.layer.1.DenseReluDense.wi_0.weight");
        let wi = shape(if gated {
            "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
        } else {
            "encoder.block.0.layer.1.DenseReluDense.wi.weight"
        })?;
        let num_layers = (0..)
            .take_while(|i| {
                self.contains(&format!(
                    "{}layer.0.SelfAttention.q.weight",
                    block_prefix(*i)
                ))
            })
            .count();
        let bad = |m: String| ModelError::Config {
            path: self.paths().first().cloned().unwrap_or_default(),
            message: m,
        };
        if emb.len() != 2 || q.len() != 2 || rel.len() != 2 || wi.len() != 2 {
            return Err(bad(
                "unexpected tensor ranks while inferring the umT5 config".into(),
            ));
        }
        let num_heads = rel[1];
        if q[0] % num_heads != 0 {
            return Err(bad(format!(
                "query width {} is not a multiple of the {num_heads} heads of the position bias",
                q[0]
            )));
        }
        let (gated, activation) = if gated {
            (true, Activation::GeluTanh)
        } else {
            parse_feed_forward_proj("relu").map_err(bad)?
        };
        Ok(UMT5Config {
            vocab_size: emb[0],
            d_model: emb[1],
            d_kv: q[0] / num_heads,
            d_ff: wi[0],
            num_layers,
            num_heads,
            relative_attention_num_buckets: rel[0],
            relative_attention_max_distance: 128,
            gated,
            activation,
            layer_norm_epsilon: 1e-6,
        })
    }

    /// Checks the stored tensors against `cfg`: everything present with the right shape and a
    /// float dtype, nothing unexpected. Errors name tensors as this checkpoint spells them.
    pub fn check(&self, cfg: &UMT5Config) -> Result<()> {
        self.store
            .check_named(&expected_tensors(cfg), is_ignored, |n| self.stored_name(n))
    }

    /// The name a canonical tensor has (or would have) in this checkpoint's own layout.
    fn stored_name(&self, canonical: &str) -> String {
        if let Some(k) = self.store.stored_key(canonical) {
            return k.to_string();
        }
        match self.format {
            T5KeyFormat::HuggingFace => canonical.to_string(),
            T5KeyFormat::Original => {
                hf_to_original(canonical).unwrap_or_else(|| canonical.to_string())
            }
        }
    }

    /// Loads a tensor by HF name, cast to `dtype`.
    pub fn get(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        if !self.store.contains(name) {
            return Err(self.store.missing(self.stored_name(name), vec![]));
        }
        self.store.get(name, dtype, device)
    }
}

impl std::ops::Deref for UMT5Weights {
    type Target = TensorStore;

    fn deref(&self) -> &TensorStore {
        &self.store
    }
}

/// Inverse of [`original_to_hf`] for the names the encoder uses.
pub fn hf_to_original(name: &str) -> Option<String> {
    match name {
        EMBED => return Some("token_embedding.weight".into()),
        FINAL_NORM => return Some("norm.weight".into()),
        _ => {}
    }
    let swapped = ORIGINAL_BLOCK.iter().map(|&(orig, hf)| (hf, orig));
    rename_block_key(name, "encoder.block.", "blocks.", swapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_names_round_trip() {
        let cfg = UMT5Config {
            num_layers: 2,
            ..UMT5Config::umt5_xxl()
        };
        for (name, _) in expected_tensors(&cfg) {
            let orig = hf_to_original(&name).expect(&name);
            assert_eq!(original_to_hf(&orig), name);
        }
        assert_eq!(
            original_to_hf("blocks.3.ffn.gate.0.weight"),
            "encoder.block.3.layer.1.DenseReluDense.wi_0.weight"
        );
        assert_eq!(
            original_to_hf("blocks.0.pos_embedding.embedding.weight"),
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        );
    }
}
