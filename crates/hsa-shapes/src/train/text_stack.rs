//! The bundled model's text side: a word-level `tokenizer.json` over the world's vocabulary
//! and a small umT5 encoder with frozen random weights, both in the layouts real Wan
//! checkpoints use, so `hsa generate` loads them through the same code paths.
//!
//! Why frozen: every caption is a short sentence over 35 words, and training the encoder jointly
//! would cost a backward pass through it on every step. The encoder's content weights are random;
//! its relative-position biases are set so that each head looks at one neighbour.
//!
//! Why set the position biases: the DiT's cross-attention has no positions of its own (it sees
//! the encoder's rows as a set), so word order reaches it only through the encoder. With
//! T5-style random biases (std 0.1) a random umT5 mixes every word into every row by content
//! alone: "a red circle on a blue background" and "a blue circle on a red background" came out
//! as nearly the same set of rows (each row within 5% of one of the other's), so no model could
//! tell which colour belongs to the object. With each head pinned to a small offset, a row holds
//! its word and its neighbours ("circle" holds "red" before it and "moving up left" after it),
//! and the two captions' rows differ by about half their norm.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use hsa_models::text::{encode_text, Tokenizer};
use hsa_models::umt5::{
    relative_position_bucket, weights::expected_tensors, UMT5Config, UMT5Encoder,
};
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

/// Relative offset (key − query) that each head of a layer attends to. In the first layer a
/// shape word gathers its colour (−1) and up to three motion words (+1..+3); the second layer
/// spreads that to both sides. Layers and heads beyond the table wrap around.
const HEAD_OFFSETS: [[i64; 4]; 2] = [[-1, 1, 2, 3], [-1, 1, -2, 2]];

/// Bias added at a head's offset. T5 attention has no 1/sqrt(d) scale, so content logits are
/// several units; 16 makes each head attend almost only to its offset where that word exists.
const OFFSET_BIAS: f32 = 16.0;

/// Bias at offset 0 for every head: where a head's offset falls outside the prompt, it attends
/// to its own word rather than, by content, to the whole prompt.
const SELF_BIAS: f32 = 8.0;

/// Encoder weights (HF names), deterministic in `seed`: embeddings ~ N(0, 1) as T5 initialises
/// them, projections ~ N(0, 1/fan_in), norms 1, and position biases ~ N(0, 0.1) plus 16
/// (`OFFSET_BIAS`) at each head's own offset (`HEAD_OFFSETS`) and 8 (`SELF_BIAS`) at offset 0.
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
                let mut bias = normal(n, 0.1, seed, &name);
                let bucket = |offset| {
                    relative_position_bucket(
                        offset,
                        cfg.relative_attention_num_buckets,
                        cfg.relative_attention_max_distance,
                    )
                };
                let offsets = HEAD_OFFSETS[layer_index(&name) % HEAD_OFFSETS.len()];
                for head in 0..cfg.num_heads {
                    bias[bucket(0) * cfg.num_heads + head] += SELF_BIAS;
                    let offset = offsets[head % offsets.len()];
                    bias[bucket(offset) * cfg.num_heads + head] += OFFSET_BIAS;
                }
                bias
            } else if name.ends_with("shared.weight") || name.contains("embed_tokens") {
                normal(n, 1.0, seed, &name)
            } else {
                normal(n, 1.0 / (shape[1] as f64).sqrt(), seed, &name)
            };
            Ok((name, Tensor::from_vec(values, shape.as_slice(), device)?))
        })
        .collect()
}

/// The block number in an HF encoder weight name (`encoder.block.{i}.…`).
fn layer_index(name: &str) -> usize {
    name.split('.')
        .skip_while(|part| *part != "block")
        .nth(1)
        .and_then(|i| i.parse().ok())
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean over `a`'s rows of the distance to the nearest row of `b`, relative to the row's
    /// norm: 0 when `b` holds every row of `a` in any order (all the DiT can see).
    fn set_distance(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        let norm = |r: &[f32]| r.iter().map(|x| x * x).sum::<f32>().sqrt();
        let rows: Vec<f32> = a
            .iter()
            .filter(|r| norm(r) > 0.0) // padding rows are zero in both
            .map(|r| {
                let nearest = b
                    .iter()
                    .map(|s| {
                        let d: Vec<f32> = r.iter().zip(s).map(|(x, y)| x - y).collect();
                        norm(&d)
                    })
                    .fold(f32::INFINITY, f32::min);
                nearest / norm(r)
            })
            .collect();
        rows.iter().sum::<f32>() / rows.len() as f32
    }

    #[test]
    fn word_order_reaches_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        write_text_stack(dir.path(), 0).unwrap();
        let text = TextStack::load(dir.path(), 32, &Device::Cpu).unwrap();
        let embed = |s: &str| text.embed(s).unwrap();
        let swapped = [
            (
                "a red circle moving right on a blue background",
                "a blue circle moving right on a red background",
            ),
            (
                "a red circle moving left and a blue square moving up on a gray background",
                "a red circle moving up and a blue square moving left on a gray background",
            ),
        ];
        for (a, b) in swapped {
            // Position-blind random biases give about 0.05 here; pinned heads about 0.5.
            let d = set_distance(&embed(a), &embed(b));
            assert!(d > 0.25, "{a:?} and {b:?} differ only by {d}");
        }
        // The same words with different neighbours far away stay close: a row describes its
        // own phrase, which is what lets held-out combinations be read.
        let (a, b) = (
            embed("a red circle moving right on a blue background"),
            embed("a red circle moving right on a green striped background"),
        );
        let head = |t: &Tensor| t.narrow(0, 0, 3).unwrap();
        let near = set_distance(&head(&a), &head(&b));
        assert!(
            near < 0.15,
            "\"a red circle\" moved by {near} with the background"
        );
    }
}
