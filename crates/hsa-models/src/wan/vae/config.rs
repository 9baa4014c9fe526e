//! Wan VAE configuration: the two published VAEs as presets, and parsing of the diffusers
//! `vae/config.json` (`AutoencoderKLWan`).
//!
//! Field names follow diffusers, including its spelling `temperal_downsample`. The derived
//! quantities (channel widths per level, which levels resample in time, compression factors)
//! are computed here once so the encoder, decoder and weight list agree on them.

use serde::Deserialize;

/// Wan2.1 latent channel means (diffusers `AutoencoderKLWan` defaults).
pub const WAN21_LATENTS_MEAN: [f64; 16] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
    -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
];

/// Wan2.1 latent channel standard deviations (diffusers `AutoencoderKLWan` defaults).
pub const WAN21_LATENTS_STD: [f64; 16] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
    1.6382, 1.1253, 2.8251, 1.9160,
];

/// Wan2.2 (TI2V-5B) latent channel means.
pub const WAN22_LATENTS_MEAN: [f64; 48] = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813,
    0.0891, 0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108,
    -0.2158, 0.2502, -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313,
    -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944,
    0.3573, -0.0548, -0.1681, -0.0667,
];

/// Wan2.2 (TI2V-5B) latent channel standard deviations.
pub const WAN22_LATENTS_STD: [f64; 48] = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
];

/// Architecture and latent statistics of one Wan VAE.
#[derive(Debug, Clone, PartialEq)]
pub struct WanVaeConfig {
    /// Encoder width of the first level (96 for Wan2.1, 160 for Wan2.2).
    pub base_dim: usize,
    /// Decoder width of the last level (= `base_dim` for Wan2.1, 256 for Wan2.2).
    pub decoder_base_dim: usize,
    /// Latent channels (16 / 48).
    pub z_dim: usize,
    /// Width multiplier per level; one spatial ×2 resampling between consecutive levels.
    pub dim_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Per encoder level (all but the last): whether its downsampling also halves time.
    /// The decoder uses the reverse.
    pub temperal_downsample: Vec<bool>,
    pub latents_mean: Vec<f64>,
    pub latents_std: Vec<f64>,
    /// Wan2.2 layout: residual down/up blocks with parameter-free AvgDown3D / DupUp3D shortcuts,
    /// and upsampling convolutions that keep their width.
    pub is_residual: bool,
    /// Channels entering the encoder's first convolution (after patchify: 3·p²).
    pub in_channels: usize,
    /// Channels leaving the decoder's last convolution (before unpatchify: 3·p²).
    pub out_channels: usize,
    /// Pixel patchify/unpatchify factor (Wan2.2: 2), `None` for none.
    pub patch_size: Option<usize>,
}

/// Encoder or decoder level: channel widths and the resampling that ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub in_dim: usize,
    pub out_dim: usize,
    /// Spatial ×2 resampling after this level's residual blocks.
    pub spatial: bool,
    /// The resampling also works in time (×2 / ÷2).
    pub temporal: bool,
}

impl WanVaeConfig {
    /// The Wan2.1 VAE (`Wan2.1_VAE.pth`, also used by Wan2.2 A14B): spatial ×8, temporal ×4.
    pub fn wan21() -> Self {
        Self {
            base_dim: 96,
            decoder_base_dim: 96,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            temperal_downsample: vec![false, true, true],
            latents_mean: WAN21_LATENTS_MEAN.to_vec(),
            latents_std: WAN21_LATENTS_STD.to_vec(),
            is_residual: false,
            in_channels: 3,
            out_channels: 3,
            patch_size: None,
        }
    }

    /// The Wan2.2 VAE (`Wan2.2_VAE.pth`, TI2V-5B): patchify 2, spatial ×16, temporal ×4.
    pub fn wan22() -> Self {
        Self {
            base_dim: 160,
            decoder_base_dim: 256,
            z_dim: 48,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            temperal_downsample: vec![false, true, true],
            latents_mean: WAN22_LATENTS_MEAN.to_vec(),
            latents_std: WAN22_LATENTS_STD.to_vec(),
            is_residual: true,
            in_channels: 12,
            out_channels: 12,
            patch_size: Some(2),
        }
    }

    /// Number of levels (= `dim_mult.len()`).
    pub fn levels(&self) -> usize {
        self.dim_mult.len()
    }

    /// Pixel patch factor (1 without patchify).
    pub fn patch(&self) -> usize {
        self.patch_size.unwrap_or(1)
    }

    /// Video channels at the API (3 for RGB).
    pub fn video_in_channels(&self) -> usize {
        self.in_channels / (self.patch() * self.patch())
    }

    /// Video channels the decoder produces after unpatchify.
    pub fn video_out_channels(&self) -> usize {
        self.out_channels / (self.patch() * self.patch())
    }

    /// Pixels per latent cell along H and W.
    pub fn spatial_factor(&self) -> usize {
        self.patch() << (self.levels() - 1)
    }

    /// Pixel frames per latent frame (after the first, which maps to one).
    pub fn temporal_factor(&self) -> usize {
        1 << self.temporal_flags().iter().filter(|t| **t).count()
    }

    /// Latent frames for `frames` pixel frames (`frames` = 1 + 4k).
    pub fn latent_frames(&self, frames: usize) -> usize {
        1 + frames.saturating_sub(1) / self.temporal_factor()
    }

    /// Pixel frames decoded from `latent_frames` latent frames.
    pub fn pixel_frames(&self, latent_frames: usize) -> usize {
        1 + latent_frames.saturating_sub(1) * self.temporal_factor()
    }

    /// Temporal flag of every encoder level that downsamples.
    fn temporal_flags(&self) -> Vec<bool> {
        (0..self.levels().saturating_sub(1))
            .map(|i| self.temperal_downsample.get(i).copied().unwrap_or(false))
            .collect()
    }

    /// Encoder levels: widths `base_dim·[1, dim_mult…]`; every level but the last downsamples.
    pub fn encoder_levels(&self) -> Vec<Level> {
        let dims: Vec<usize> = std::iter::once(1)
            .chain(self.dim_mult.iter().copied())
            .map(|m| m * self.base_dim)
            .collect();
        let flags = self.temporal_flags();
        (0..self.levels())
            .map(|i| Level {
                in_dim: dims[i],
                out_dim: dims[i + 1],
                spatial: i + 1 < self.levels(),
                temporal: flags.get(i).copied().unwrap_or(false),
            })
            .collect()
    }

    /// Decoder levels: widths `decoder_base_dim·[m_last, reversed dim_mult…]`; every level but
    /// the last upsamples, in time where the mirrored encoder level downsampled in time. In the
    /// Wan2.1 layout a level after an upsampler starts at half width (its upsampling
    /// convolution halves the channels).
    pub fn decoder_levels(&self) -> Vec<Level> {
        let last = *self.dim_mult.last().unwrap_or(&1);
        let dims: Vec<usize> = std::iter::once(last)
            .chain(self.dim_mult.iter().rev().copied())
            .map(|m| m * self.decoder_base_dim)
            .collect();
        let up_flags: Vec<bool> = self.temporal_flags().into_iter().rev().collect();
        (0..self.levels())
            .map(|i| Level {
                in_dim: if i > 0 && !self.is_residual {
                    dims[i] / 2
                } else {
                    dims[i]
                },
                out_dim: dims[i + 1],
                spatial: i + 1 < self.levels(),
                temporal: up_flags.get(i).copied().unwrap_or(false),
            })
            .collect()
    }

    /// Encoder output width before `quant_conv` (mean and log-variance).
    pub fn encoder_out_dim(&self) -> usize {
        self.base_dim * self.dim_mult.last().copied().unwrap_or(1)
    }

    /// Parses a diffusers `AutoencoderKLWan` config.json; absent fields take diffusers'
    /// defaults (the Wan2.1 VAE).
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
        if let Some(class) = value.get("_class_name").and_then(|v| v.as_str()) {
            if class != "AutoencoderKLWan" {
                return Err(format!(
                    "_class_name is '{class}', expected 'AutoencoderKLWan' (is this the vae/ folder?)"
                ));
            }
        }
        let raw: DiffusersVaeConfig = serde_json::from_value(value)
            .map_err(|e| format!("not a valid diffusers AutoencoderKLWan config: {e}"))?;
        raw.into_config()
    }

    /// Checks the invariants the model code relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("base_dim", self.base_dim),
            ("decoder_base_dim", self.decoder_base_dim),
            ("z_dim", self.z_dim),
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if self.dim_mult.is_empty() || self.dim_mult.contains(&0) {
            return Err(format!(
                "dim_mult must be a non-empty list of positive numbers, got {:?}",
                self.dim_mult
            ));
        }
        if self.patch_size == Some(0) {
            return Err("patch_size must be positive".into());
        }
        let p2 = self.patch() * self.patch();
        if !self.in_channels.is_multiple_of(p2) || !self.out_channels.is_multiple_of(p2) {
            return Err(format!(
                "in_channels {} / out_channels {} must be multiples of patch_size² = {p2}",
                self.in_channels, self.out_channels
            ));
        }
        if self.temperal_downsample.len() + 1 != self.levels() {
            return Err(format!(
                "temperal_downsample has {} entries, dim_mult needs exactly {}",
                self.temperal_downsample.len(),
                self.levels() - 1
            ));
        }
        if self.temporal_factor() > 4 {
            return Err(format!(
                "temporal compression {} is not supported: frames are encoded in chunks of 4 \
                 (as diffusers does), so at most 2 levels may downsample in time",
                self.temporal_factor()
            ));
        }
        for (name, v) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if v.len() != self.z_dim {
                return Err(format!(
                    "{name} has {} values but z_dim is {}",
                    v.len(),
                    self.z_dim
                ));
            }
        }
        if self.latents_std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return Err("latents_std must be finite and non-zero".into());
        }
        if !self.is_residual {
            // The Wan2.1 upsampling convolutions halve the channels.
            for (i, l) in self.decoder_levels().iter().enumerate() {
                if l.spatial && l.out_dim % 2 != 0 {
                    return Err(format!(
                        "decoder level {i} width {} must be even (its upsampler halves it)",
                        l.out_dim
                    ));
                }
            }
        } else {
            for (i, l) in self.encoder_levels().iter().enumerate() {
                let factor = if l.spatial { 4 } else { 1 } * if l.temporal { 2 } else { 1 };
                if (l.in_dim * factor) % l.out_dim != 0 {
                    return Err(format!(
                        "encoder level {i}: AvgDown3D needs in·factor ({}·{factor}) divisible by out ({})",
                        l.in_dim, l.out_dim
                    ));
                }
            }
            for (i, l) in self.decoder_levels().iter().enumerate() {
                let factor = if l.temporal { 8 } else { 4 };
                if l.spatial && (l.out_dim * factor) % l.in_dim != 0 {
                    return Err(format!(
                        "decoder level {i}: DupUp3D needs out·factor ({}·{factor}) divisible by in ({})",
                        l.out_dim, l.in_dim
                    ));
                }
            }
        }
        Ok(())
    }
}

fn d_base_dim() -> usize {
    96
}
fn d_z_dim() -> usize {
    16
}
fn d_dim_mult() -> Vec<usize> {
    vec![1, 2, 4, 4]
}
fn d_num_res_blocks() -> usize {
    2
}
fn d_temperal() -> Vec<bool> {
    vec![false, true, true]
}
fn d_channels() -> usize {
    3
}

/// diffusers `AutoencoderKLWan` config.json (field names as in the file).
#[derive(Debug, Deserialize)]
struct DiffusersVaeConfig {
    #[serde(default = "d_base_dim")]
    base_dim: usize,
    decoder_base_dim: Option<usize>,
    #[serde(default = "d_z_dim")]
    z_dim: usize,
    #[serde(default = "d_dim_mult")]
    dim_mult: Vec<usize>,
    #[serde(default = "d_num_res_blocks")]
    num_res_blocks: usize,
    #[serde(default)]
    attn_scales: Vec<f64>,
    #[serde(default = "d_temperal")]
    temperal_downsample: Vec<bool>,
    latents_mean: Option<Vec<f64>>,
    latents_std: Option<Vec<f64>>,
    #[serde(default)]
    is_residual: bool,
    #[serde(default = "d_channels")]
    in_channels: usize,
    #[serde(default = "d_channels")]
    out_channels: usize,
    patch_size: Option<usize>,
    scale_factor_temporal: Option<usize>,
    scale_factor_spatial: Option<usize>,
}

impl DiffusersVaeConfig {
    fn into_config(self) -> std::result::Result<WanVaeConfig, String> {
        if !self.attn_scales.is_empty() {
            // diffusers adds attention blocks to the encoder only (the original Wan code to
            // both sides); no published Wan VAE uses them.
            return Err(format!(
                "attn_scales {:?} is not supported (every Wan VAE has attn_scales = [])",
                self.attn_scales
            ));
        }
        let cfg = WanVaeConfig {
            base_dim: self.base_dim,
            decoder_base_dim: self.decoder_base_dim.unwrap_or(self.base_dim),
            z_dim: self.z_dim,
            dim_mult: self.dim_mult,
            num_res_blocks: self.num_res_blocks,
            temperal_downsample: self.temperal_downsample,
            latents_mean: self
                .latents_mean
                .unwrap_or_else(|| WAN21_LATENTS_MEAN.to_vec()),
            latents_std: self
                .latents_std
                .unwrap_or_else(|| WAN21_LATENTS_STD.to_vec()),
            is_residual: self.is_residual,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            // diffusers treats patch_size 1 like None.
            patch_size: self.patch_size.filter(|p| *p != 1),
        };
        cfg.validate()?;
        // The pipelines size latents with these factors: they must agree with the layout.
        if let Some(t) = self.scale_factor_temporal {
            if t != cfg.temporal_factor() {
                return Err(format!(
                    "scale_factor_temporal {t} disagrees with temperal_downsample (factor {})",
                    cfg.temporal_factor()
                ));
            }
        }
        if let Some(s) = self.scale_factor_spatial {
            if s != cfg.spatial_factor() {
                return Err(format!(
                    "scale_factor_spatial {s} disagrees with dim_mult/patch_size (factor {})",
                    cfg.spatial_factor()
                ));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusers_configs_parse_to_the_presets() {
        let wan21 = r#"{"_class_name":"AutoencoderKLWan","attn_scales":[],"base_dim":96,"dim_mult":[1,2,4,4],
            "dropout":0.0,"num_res_blocks":2,"temperal_downsample":[false,true,true],"z_dim":16}"#;
        assert_eq!(
            WanVaeConfig::from_json(wan21).unwrap(),
            WanVaeConfig::wan21()
        );
        let mean: Vec<String> = WAN22_LATENTS_MEAN.iter().map(|v| v.to_string()).collect();
        let std: Vec<String> = WAN22_LATENTS_STD.iter().map(|v| v.to_string()).collect();
        let wan22 = format!(
            r#"{{"_class_name":"AutoencoderKLWan","base_dim":160,"decoder_base_dim":256,"z_dim":48,
            "dim_mult":[1,2,4,4],"num_res_blocks":2,"attn_scales":[],"temperal_downsample":[false,true,true],
            "is_residual":true,"in_channels":12,"out_channels":12,"patch_size":2,"scale_factor_spatial":16,
            "scale_factor_temporal":4,"latents_mean":[{}],"latents_std":[{}]}}"#,
            mean.join(","),
            std.join(",")
        );
        let cfg = WanVaeConfig::from_json(&wan22).unwrap();
        assert_eq!(cfg, WanVaeConfig::wan22());
        assert_eq!((cfg.spatial_factor(), cfg.temporal_factor()), (16, 4));
        assert_eq!(WanVaeConfig::wan21().spatial_factor(), 8);
    }

    #[test]
    fn level_widths_match_the_published_models() {
        let dec: Vec<(usize, usize)> = WanVaeConfig::wan21()
            .decoder_levels()
            .iter()
            .map(|l| (l.in_dim, l.out_dim))
            .collect();
        assert_eq!(dec, [(384, 384), (192, 384), (192, 192), (96, 96)]);
        let dec22: Vec<(usize, usize, bool)> = WanVaeConfig::wan22()
            .decoder_levels()
            .iter()
            .map(|l| (l.in_dim, l.out_dim, l.temporal))
            .collect();
        assert_eq!(
            dec22,
            [
                (1024, 1024, true),
                (1024, 1024, true),
                (1024, 512, false),
                (512, 256, false)
            ]
        );
        let enc: Vec<bool> = WanVaeConfig::wan21()
            .encoder_levels()
            .iter()
            .map(|l| l.temporal)
            .collect();
        assert_eq!(enc, [false, true, true, false]);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let e = WanVaeConfig::from_json(r#"{"_class_name":"AutoencoderKL"}"#).unwrap_err();
        assert!(e.contains("AutoencoderKLWan"), "{e}");
        let e = WanVaeConfig::from_json(r#"{"z_dim":4}"#).unwrap_err();
        assert!(
            e.contains("latents_mean has 16 values but z_dim is 4"),
            "{e}"
        );
        let e = WanVaeConfig::from_json(r#"{"attn_scales":[0.5]}"#).unwrap_err();
        assert!(e.contains("attn_scales"), "{e}");
        let e = WanVaeConfig::from_json(r#"{"scale_factor_spatial":16}"#).unwrap_err();
        assert!(e.contains("scale_factor_spatial"), "{e}");
    }
}
