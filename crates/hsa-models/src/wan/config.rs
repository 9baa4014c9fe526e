//! Wan DiT configuration: the published variants as presets, and parsing of both the diffusers
//! `config.json` (`WanTransformer3DModel`) and the original Wan `config.json` (`WanModel`).

use serde::Deserialize;

/// Architecture of one Wan DiT (one expert for the two-expert Wan2.2 A14B models).
#[derive(Debug, Clone, PartialEq)]
pub struct WanConfig {
    /// Patch size (frames, rows, cols); (1, 2, 2) for every published model.
    pub patch_size: [usize; 3],
    pub num_heads: usize,
    pub head_dim: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the text encoder's output (4096 for umT5-XXL).
    pub text_dim: usize,
    /// Width of the sinusoidal timestep features.
    pub freq_dim: usize,
    pub ffn_dim: usize,
    pub num_layers: usize,
    /// Affine LayerNorm before cross-attention.
    pub cross_attn_norm: bool,
    /// RMSNorm across heads on queries and keys.
    pub qk_norm: bool,
    pub eps: f64,
    /// CLIP feature width of the Wan2.1 image branch (1280); `None` without an image branch.
    pub image_dim: Option<usize>,
    /// Learned positions of the FLF2V image tokens (514); `None` otherwise.
    pub pos_embed_seq_len: Option<usize>,
    /// Positions covered by the RoPE tables of the reference implementations.
    pub rope_max_seq_len: usize,
}

impl WanConfig {
    /// Hidden width D.
    pub fn dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Whether cross-attention has the extra image K/V projections (Wan2.1 I2V / FLF2V).
    pub fn has_image_branch(&self) -> bool {
        self.image_dim.is_some()
    }

    /// Values per input token: `in_channels · pt · ph · pw`.
    pub fn in_token_dim(&self) -> usize {
        self.in_channels * self.patch_size.iter().product::<usize>()
    }

    /// Values per output token: `out_channels · pt · ph · pw`.
    pub fn out_token_dim(&self) -> usize {
        self.out_channels * self.patch_size.iter().product::<usize>()
    }

    fn base(dim: usize, ffn_dim: usize, num_heads: usize, num_layers: usize) -> Self {
        Self {
            patch_size: [1, 2, 2],
            num_heads,
            head_dim: dim / num_heads,
            in_channels: 16,
            out_channels: 16,
            text_dim: 4096,
            freq_dim: 256,
            ffn_dim,
            num_layers,
            cross_attn_norm: true,
            qk_norm: true,
            eps: 1e-6,
            image_dim: None,
            pos_embed_seq_len: None,
            rope_max_seq_len: 1024,
        }
    }

    /// Wan2.1 T2V-1.3B.
    pub fn wan21_t2v_1_3b() -> Self {
        Self::base(1536, 8960, 12, 30)
    }

    /// Wan2.1 T2V-14B; also each expert of Wan2.2 T2V-A14B.
    pub fn wan21_t2v_14b() -> Self {
        Self::base(5120, 13824, 40, 40)
    }

    /// Wan2.1 I2V-14B (480P and 720P): 36 input channels and the CLIP image branch.
    pub fn wan21_i2v_14b() -> Self {
        Self {
            in_channels: 36,
            image_dim: Some(1280),
            ..Self::wan21_t2v_14b()
        }
    }

    /// Wan2.1 FLF2V-14B: as I2V with learned positions for two images' CLIP tokens.
    pub fn wan21_flf2v_14b() -> Self {
        Self {
            pos_embed_seq_len: Some(514),
            ..Self::wan21_i2v_14b()
        }
    }

    /// Each expert of Wan2.2 I2V-A14B: 36 input channels, no CLIP branch.
    pub fn wan22_i2v_a14b() -> Self {
        Self {
            in_channels: 36,
            ..Self::wan21_t2v_14b()
        }
    }

    /// Wan2.2 TI2V-5B: 48 latent channels, per-token timesteps.
    pub fn wan22_ti2v_5b() -> Self {
        Self {
            in_channels: 48,
            out_channels: 48,
            ..Self::base(3072, 14336, 24, 30)
        }
    }

    /// Parses a `config.json` in either the diffusers or the original Wan format.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
        let obj = value
            .as_object()
            .ok_or("expected a JSON object at the top level")?;
        let cfg = if obj.contains_key("num_attention_heads") {
            serde_json::from_value::<DiffusersConfig>(value)
                .map_err(|e| format!("not a valid diffusers WanTransformer3DModel config: {e}"))?
                .into_config()?
        } else if obj.contains_key("dim") && obj.contains_key("num_heads") {
            serde_json::from_value::<OriginalConfig>(value)
                .map_err(|e| format!("not a valid original Wan config: {e}"))?
                .into_config()?
        } else {
            return Err("neither a diffusers config (num_attention_heads) nor an original Wan config (dim, num_heads)".into());
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the model code relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("num_heads", self.num_heads),
            ("head_dim", self.head_dim),
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("text_dim", self.text_dim),
            ("ffn_dim", self.ffn_dim),
            ("num_layers", self.num_layers),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if self.patch_size.contains(&0) {
            return Err(format!("patch_size {:?} must be positive", self.patch_size));
        }
        if self.freq_dim == 0 || !self.freq_dim.is_multiple_of(2) {
            return Err(format!(
                "freq_dim must be a positive even number, got {}",
                self.freq_dim
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim < 6 {
            return Err(format!(
                "head_dim must be even and at least 6 for 3-D RoPE, got {}",
                self.head_dim
            ));
        }
        if self.pos_embed_seq_len.is_some() && self.image_dim.is_none() {
            return Err("pos_embed_seq_len needs an image branch (image_dim)".into());
        }
        Ok(())
    }
}

fn default_patch() -> Vec<usize> {
    vec![1, 2, 2]
}
fn default_freq_dim() -> usize {
    256
}
fn default_text_dim() -> usize {
    4096
}
fn default_eps() -> f64 {
    1e-6
}
fn default_true() -> bool {
    true
}
fn default_rope_len() -> usize {
    1024
}

fn patch_array(p: &[usize]) -> std::result::Result<[usize; 3], String> {
    <[usize; 3]>::try_from(p).map_err(|_| format!("patch_size must have 3 entries, got {p:?}"))
}

/// diffusers `WanTransformer3DModel` config.json (field names as in the checkpoint).
#[derive(Debug, Deserialize)]
struct DiffusersConfig {
    #[serde(default = "default_patch")]
    patch_size: Vec<usize>,
    num_attention_heads: usize,
    attention_head_dim: usize,
    in_channels: usize,
    out_channels: Option<usize>,
    #[serde(default = "default_text_dim")]
    text_dim: usize,
    #[serde(default = "default_freq_dim")]
    freq_dim: usize,
    ffn_dim: usize,
    num_layers: usize,
    #[serde(default = "default_true")]
    cross_attn_norm: bool,
    qk_norm: Option<String>,
    #[serde(default = "default_eps")]
    eps: f64,
    image_dim: Option<usize>,
    added_kv_proj_dim: Option<usize>,
    #[serde(default = "default_rope_len")]
    rope_max_seq_len: usize,
    pos_embed_seq_len: Option<usize>,
}

impl DiffusersConfig {
    fn into_config(self) -> std::result::Result<WanConfig, String> {
        let qk_norm = match self.qk_norm.as_deref() {
            None => false,
            Some("rms_norm_across_heads") => true,
            Some(other) => {
                return Err(format!(
                    "qk_norm '{other}' is not supported (expected rms_norm_across_heads)"
                ))
            }
        };
        let dim = self.num_attention_heads * self.attention_head_dim;
        if let Some(kv) = self.added_kv_proj_dim {
            if kv != dim {
                return Err(format!(
                    "added_kv_proj_dim {kv} must equal the hidden width {dim}"
                ));
            }
        }
        Ok(WanConfig {
            patch_size: patch_array(&self.patch_size)?,
            num_heads: self.num_attention_heads,
            head_dim: self.attention_head_dim,
            in_channels: self.in_channels,
            out_channels: self.out_channels.unwrap_or(self.in_channels),
            text_dim: self.text_dim,
            freq_dim: self.freq_dim,
            ffn_dim: self.ffn_dim,
            num_layers: self.num_layers,
            cross_attn_norm: self.cross_attn_norm,
            qk_norm,
            eps: self.eps,
            // Without added K/V projections diffusers merges image tokens into the text
            // context; the image branch exists only with both.
            image_dim: self.image_dim.filter(|_| self.added_kv_proj_dim.is_some()),
            pos_embed_seq_len: self.pos_embed_seq_len,
            rope_max_seq_len: self.rope_max_seq_len,
        })
    }
}

/// Original Wan `WanModel` config.json.
#[derive(Debug, Deserialize)]
struct OriginalConfig {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default = "default_patch")]
    patch_size: Vec<usize>,
    dim: usize,
    ffn_dim: usize,
    #[serde(default = "default_freq_dim")]
    freq_dim: usize,
    in_dim: usize,
    out_dim: usize,
    num_heads: usize,
    num_layers: usize,
    #[serde(default = "default_text_dim")]
    text_dim: usize,
    #[serde(default = "default_eps")]
    eps: f64,
    #[serde(default = "default_true")]
    qk_norm: bool,
    #[serde(default = "default_true")]
    cross_attn_norm: bool,
    /// Not in the official files (always 1280 there); accepted for small test models.
    image_dim: Option<usize>,
}

impl OriginalConfig {
    fn into_config(self) -> std::result::Result<WanConfig, String> {
        if self.num_heads == 0 || !self.dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "dim {} is not divisible by num_heads {}",
                self.dim, self.num_heads
            ));
        }
        let (image_dim, pos) = match self.model_type.as_deref() {
            None | Some("t2v") | Some("ti2v") | Some("t2i") => (None, None),
            Some("i2v") => (Some(self.image_dim.unwrap_or(1280)), None),
            Some("flf2v") => (Some(self.image_dim.unwrap_or(1280)), Some(514)),
            Some(other) => {
                return Err(format!(
                    "model_type '{other}' is not supported (t2v, i2v, flf2v, ti2v)"
                ))
            }
        };
        Ok(WanConfig {
            patch_size: patch_array(&self.patch_size)?,
            num_heads: self.num_heads,
            head_dim: self.dim / self.num_heads,
            in_channels: self.in_dim,
            out_channels: self.out_dim,
            text_dim: self.text_dim,
            freq_dim: self.freq_dim,
            ffn_dim: self.ffn_dim,
            num_layers: self.num_layers,
            cross_attn_norm: self.cross_attn_norm,
            qk_norm: self.qk_norm,
            eps: self.eps,
            image_dim,
            pos_embed_seq_len: pos,
            rope_max_seq_len: 1024,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats_to_the_same_preset() {
        let diffusers = r#"{"_class_name":"WanTransformer3DModel","attention_head_dim":128,"cross_attn_norm":true,
            "eps":1e-06,"ffn_dim":8960,"freq_dim":256,"in_channels":16,"num_attention_heads":12,"num_layers":30,
            "out_channels":16,"patch_size":[1,2,2],"qk_norm":"rms_norm_across_heads","rope_max_seq_len":1024,"text_dim":4096}"#;
        let original = r#"{"_class_name":"WanModel","dim":1536,"eps":1e-06,"ffn_dim":8960,"freq_dim":256,
            "in_dim":16,"model_type":"t2v","num_heads":12,"num_layers":30,"out_dim":16,"text_len":512}"#;
        assert_eq!(
            WanConfig::from_json(diffusers).unwrap(),
            WanConfig::wan21_t2v_1_3b()
        );
        assert_eq!(
            WanConfig::from_json(original).unwrap(),
            WanConfig::wan21_t2v_1_3b()
        );
    }

    #[test]
    fn original_i2v_has_the_image_branch() {
        let original = r#"{"dim":5120,"ffn_dim":13824,"in_dim":36,"model_type":"i2v","num_heads":40,"num_layers":40,"out_dim":16}"#;
        assert_eq!(
            WanConfig::from_json(original).unwrap(),
            WanConfig::wan21_i2v_14b()
        );
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        assert!(WanConfig::from_json("{not json")
            .unwrap_err()
            .contains("malformed JSON"));
        assert!(WanConfig::from_json(r#"{"foo": 1}"#)
            .unwrap_err()
            .contains("neither"));
        let odd = r#"{"dim":100,"ffn_dim":10,"in_dim":4,"num_heads":3,"num_layers":1,"out_dim":4}"#;
        assert!(WanConfig::from_json(odd).unwrap_err().contains("divisible"));
    }
}
