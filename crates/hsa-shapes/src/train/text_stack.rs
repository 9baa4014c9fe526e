//! The bundled model's text side: a word-level `tokenizer.json` over the world's vocabulary
//! and a small umT5 encoder with frozen random weights, both in the layouts real Wan
//! checkpoints use, so `hsa generate` loads them through the same code paths.
//!
//! Why frozen random: every caption is a short sentence over 35 words. A random umT5 still
//! gives each (word, position) a distinct contextual vector; the DiT's text projection and
//! cross-attention learn to read them. Training the encoder jointly would cost backward passes
//! through it on every step for little gain in this world.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use hsa_models::text::{encode_text, Tokenizer};
use hsa_models::umt5::{weights::expected_tensors, UMT5Config, UMT5Encoder};
use hsa_models::wan::init::normal;

use crate::vocabulary;

/// Special tokens, in id order, as T5 tokenizers number them.
const SPECIALS: [&str; 3] = ["<pad>", "</s>", "<unk>"];

/// Architecture of the bundled text encoder.
pub fn text_encoder_config() -> UMT5Config {
    UMT5Config {
        vocab_size: SPECIALS.len() + vocabulary().len(),
        d_model: 64,
        d_kv: 16,
        d_ff: 128,
        num_layers: 2,
        num_heads: 4,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
        gated: true,
        activation: hsa_models::umt5::config::Activation::GeluTanh,
        layer_norm_epsilon: 1e-6,
    }
}

/// A word-level `tokenizer.json`: lower-casing, whitespace/punctuation split, `</s>` appended.
pub fn tokenizer_json() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = SPECIALS
        .iter()
        .copied()
        .chain(vocabulary())
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

/// HF `config.json` of the text encoder.
pub fn text_encoder_config_json(cfg: &UMT5Config) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["UMT5EncoderModel"],
        "model_type": "umt5",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.d_kv,
        "d_ff": cfg.d_ff,
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "feed_forward_proj": "gated-gelu",
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "pad_token_id": 0,
        "eos_token_id": 1,
    })
}

/// Random encoder weights (HF names), deterministic in `seed`: embeddings ~ N(0, 1) as T5
/// initialises them, projections ~ N(0, 1/fan_in), position biases ~ N(0, 0.1), norms 1.
pub fn text_encoder_weights(
    cfg: &UMT5Config,
    seed: u64,
    device: &Device,
) -> candle_core::Result<HashMap<String, Tensor>> {
    expected_tensors(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values = if name.contains("layer_norm") {
                vec![1.0f32; n]
            } else if name.contains("relative_attention_bias") {
                normal(n, 0.1, seed, &name)
            } else if name.ends_with("shared.weight") || name.contains("embed_tokens") {
                normal(n, 1.0, seed, &name)
            } else {
                normal(n, 1.0 / (shape[1] as f64).sqrt(), seed, &name)
            };
            Ok((name, Tensor::from_vec(values, shape.as_slice(), device)?))
        })
        .collect()
}

/// Writes `tokenizer/tokenizer.json` and `text_encoder/{config.json, model.safetensors}` under
/// `dir` unless they exist (so a resumed run keeps its encoder).
pub fn write_text_stack(dir: &Path, seed: u64) -> crate::train::Result<()> {
    let tok_dir = dir.join("tokenizer");
    let enc_dir = dir.join("text_encoder");
    std::fs::create_dir_all(&tok_dir)?;
    std::fs::create_dir_all(&enc_dir)?;
    let tok = tok_dir.join("tokenizer.json");
    if !tok.exists() {
        std::fs::write(&tok, serde_json::to_string_pretty(&tokenizer_json())?)?;
    }
    let weights = enc_dir.join("model.safetensors");
    if !weights.exists() {
        let cfg = text_encoder_config();
        std::fs::write(
            enc_dir.join("config.json"),
            serde_json::to_string_pretty(&text_encoder_config_json(&cfg))?,
        )?;
        let tensors = text_encoder_weights(&cfg, seed, &Device::Cpu)?;
        candle_core::safetensors::save(&tensors, &weights)?;
    }
    Ok(())
}

/// Loaded tokenizer + encoder.
pub struct TextStack {
    tokenizer: Tokenizer,
    encoder: UMT5Encoder,
}

impl TextStack {
    /// Loads the stack written by [`write_text_stack`], padding prompts to `text_len` rows.
    pub fn load(dir: &Path, text_len: usize, device: &Device) -> crate::train::Result<Self> {
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer").join("tokenizer.json"))?
            .with_text_len(text_len)?;
        let encoder = UMT5Encoder::load(&dir.join("text_encoder"), DType::F32, device)?;
        Ok(Self { tokenizer, encoder })
    }

    /// `[text_len, d_model]` context of one prompt.
    pub fn embed(&self, prompt: &str) -> crate::train::Result<Tensor> {
        Ok(self.embed_batch(&[prompt])?.squeeze(0)?)
    }

    /// `[B, text_len, d_model]` contexts of a batch of prompts in one encoder pass (on a GPU
    /// the encoder is all launch overhead, so one pass per update rather than one per prompt).
    pub fn embed_batch<S: AsRef<str>>(&self, prompts: &[S]) -> crate::train::Result<Tensor> {
        Ok(encode_text(&self.encoder, &self.tokenizer, prompts)?)
    }
}
