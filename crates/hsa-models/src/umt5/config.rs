//! umT5 encoder configuration: HF `config.json` (`UMT5Config`), the umT5-XXL preset Wan uses, and
//! inference from the weight shapes for checkpoints that ship without a config (original Wan
//! `T5Encoder` files).

use std::path::Path;

use serde::Deserialize;

use crate::{ModelError, Result};

/// Feed-forward activation (`ACT2FN[dense_act_fn]` in transformers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation (what "gated-gelu" means for T5).
    GeluTanh,
    /// `gelu`: exact erf GELU.
    GeluErf,
    Relu,
    Silu,
}

/// Architecture of a umT5 encoder stack.
#[derive(Debug, Clone, PartialEq)]
pub struct UMT5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Per-head width of q/k/v.
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    /// `wo(act(wi_0 x) * wi_1 x)` when true, `wo(act(wi x))` otherwise.
    pub gated: bool,
    pub activation: Activation,
    pub layer_norm_epsilon: f64,
}

#[derive(Deserialize)]
struct HfConfig {
    vocab_size: Option<usize>,
    d_model: Option<usize>,
    d_kv: Option<usize>,
    d_ff: Option<usize>,
    num_layers: Option<usize>,
    num_heads: Option<usize>,
    relative_attention_num_buckets: Option<usize>,
    relative_attention_max_distance: Option<usize>,
    feed_forward_proj: Option<String>,
    layer_norm_epsilon: Option<f64>,
    model_type: Option<String>,
}

/// Parses transformers' `feed_forward_proj` ("gated-gelu", "relu", "gated-silu", ...).
pub fn parse_feed_forward_proj(s: &str) -> std::result::Result<(bool, Activation), String> {
    let parts: Vec<&str> = s.split('-').collect();
    let (gated, act) = match parts.as_slice() {
        [act] => (false, *act),
        ["gated", act] => (true, *act),
        _ => {
            return Err(format!(
                "feed_forward_proj '{s}' is not 'ACT' or 'gated-ACT'"
            ))
        }
    };
    let activation = match act {
        // transformers maps "gated-gelu" to gelu_new (tanh approximation).
        "gelu" if gated => Activation::GeluTanh,
        "gelu" => Activation::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "silu" | "swish" => Activation::Silu,
        other => {
            return Err(format!(
                "unsupported activation '{other}' in feed_forward_proj '{s}' (supported: gelu, gelu_new, relu, silu)"
            ))
        }
    };
    Ok((gated, activation))
}

impl UMT5Config {
    /// google/umt5-xxl's encoder, as used by every Wan 2.1 / 2.2 model.
    pub fn umt5_xxl() -> Self {
        Self {
            vocab_size: 256_384,
            d_model: 4096,
            d_kv: 64,
            d_ff: 10_240,
            num_layers: 24,
            num_heads: 64,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            gated: true,
            activation: Activation::GeluTanh,
            layer_norm_epsilon: 1e-6,
        }
    }

    /// Width of the concatenated heads (`num_heads * d_kv`).
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Parses an HF `config.json` (`UMT5Config` / `T5Config`); missing fields take transformers'
    /// `UMT5Config` defaults.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let err = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let c: HfConfig =
            serde_json::from_str(text).map_err(|e| err(format!("malformed JSON: {e}")))?;
        if let Some(mt) = &c.model_type {
            if !matches!(mt.as_str(), "umt5" | "t5" | "mt5") {
                return Err(err(format!(
                    "model_type '{mt}' is not a (u)mT5 encoder config"
                )));
            }
        }
        let (gated, activation) =
            parse_feed_forward_proj(c.feed_forward_proj.as_deref().unwrap_or("gated-gelu"))
                .map_err(err)?;
        let cfg = Self {
            vocab_size: c.vocab_size.unwrap_or(250_112),
            d_model: c.d_model.unwrap_or(512),
            d_kv: c.d_kv.unwrap_or(64),
            d_ff: c.d_ff.unwrap_or(1024),
            num_layers: c.num_layers.unwrap_or(8),
            num_heads: c.num_heads.unwrap_or(6),
            relative_attention_num_buckets: c.relative_attention_num_buckets.unwrap_or(32),
            relative_attention_max_distance: c.relative_attention_max_distance.unwrap_or(128),
            gated,
            activation,
            layer_norm_epsilon: c.layer_norm_epsilon.unwrap_or(1e-6),
        };
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// Reads an HF `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::store::read_text(path)?;
        Self::from_json_str(&text, path)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
            (
                "relative_attention_max_distance",
                self.relative_attention_max_distance,
            ),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.relative_attention_num_buckets < 4 {
            return Err("relative_attention_num_buckets must be at least 4".into());
        }
        if !self.layer_norm_epsilon.is_finite() || self.layer_norm_epsilon <= 0.0 {
            return Err("layer_norm_epsilon must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_feed_forward_proj() {
        assert_eq!(
            parse_feed_forward_proj("gated-gelu").unwrap(),
            (true, Activation::GeluTanh)
        );
        assert_eq!(
            parse_feed_forward_proj("gelu").unwrap(),
            (false, Activation::GeluErf)
        );
        assert_eq!(
            parse_feed_forward_proj("relu").unwrap(),
            (false, Activation::Relu)
        );
        assert!(parse_feed_forward_proj("gated-foo").is_err());
        assert!(parse_feed_forward_proj("a-b-c").is_err());
    }

    #[test]
    fn xxl_parameter_count() {
        // google/umt5-xxl encoder: 5.68 B parameters (embedding 1.05 B + 24 blocks).
        let c = UMT5Config::umt5_xxl();
        let block = 4 * c.d_model * c.inner_dim()
            + c.relative_attention_num_buckets * c.num_heads
            + 3 * c.d_model * c.d_ff
            + 2 * c.d_model;
        let n = c.vocab_size * c.d_model + c.num_layers * block + c.d_model;
        assert_eq!(n, 5_680_910_336);
    }
}
