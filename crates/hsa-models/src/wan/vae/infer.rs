//! The config of an original-layout VAE checkpoint (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`, which
//! ship without a config.json), read off its tensor names and shapes: widths, levels, residual
//! blocks per level, which downsamplings are temporal, patching, and the latent statistics the
//! official code hard-codes for its 16- and 48-channel VAEs.

use std::collections::BTreeMap;

use super::config::{WanVaeConfig, WAN21_LATENTS_MEAN, WAN21_LATENTS_STD};
use super::config::{WAN22_LATENTS_MEAN, WAN22_LATENTS_STD};
use crate::{ModelError, Result};

/// One entry of an encoder stage list: a residual block (its output width) or a resampling
/// (whether it also halves time).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Res(usize),
    Down { temporal: bool },
}

/// The stages under `prefix` (`{prefix}{i}.…` for i = 0, 1, …), in order.
fn stages(shapes: &BTreeMap<String, Vec<usize>>, prefix: &str) -> Vec<Stage> {
    let mut out = Vec::new();
    for i in 0.. {
        let p = format!("{prefix}{i}.");
        if let Some(s) = shapes.get(&format!("{p}residual.2.weight")) {
            out.push(Stage::Res(s[0]));
        } else if shapes.contains_key(&format!("{p}resample.1.weight")) {
            let temporal = shapes.contains_key(&format!("{p}time_conv.weight"));
            out.push(Stage::Down { temporal });
        } else {
            break;
        }
    }
    out
}

/// The config of original-layout VAE weights given `name -> shape`, with the official latent
/// statistics of its channel count (an error for other counts).
pub fn infer_original_config(shapes: &BTreeMap<String, Vec<usize>>) -> Result<WanVaeConfig> {
    let mut cfg = infer_layout(shapes)?;
    let (mean, std) = match cfg.z_dim {
        16 => (WAN21_LATENTS_MEAN.to_vec(), WAN21_LATENTS_STD.to_vec()),
        48 => (WAN22_LATENTS_MEAN.to_vec(), WAN22_LATENTS_STD.to_vec()),
        z => {
            return Err(ModelError::Input(format!(
                "cannot read the VAE layout: {z} latent channels; the official latent statistics exist for 16 (Wan2.1) and 48 (Wan2.2) only: give a config.json"
            )))
        }
    };
    cfg.latents_mean = mean;
    cfg.latents_std = std;
    Ok(cfg)
}

/// The architecture part of [`infer_original_config`] (latent statistics left empty).
fn infer_layout(shapes: &BTreeMap<String, Vec<usize>>) -> Result<WanVaeConfig> {
    let bad = |m: String| ModelError::Input(format!("cannot read the VAE layout: {m}"));
    let shape = |k: &str| shapes.get(k).ok_or_else(|| bad(format!("no tensor {k}")));
    let conv_in = shape("encoder.conv1.weight")?;
    let base_dim = conv_in[0];
    let in_channels = conv_in[1];
    let z_dim = shape("conv2.weight")?[0];
    let head = shape("decoder.head.2.weight")?;
    // The decoder's last level runs at `decoder_base_dim · dim_mult[0]`.
    let (out_channels, decoder_width) = (head[0], head[1]);
    // Wan2.1: one flat list of blocks; Wan2.2: a list of levels, each with its own list.
    let is_residual = shapes
        .keys()
        .any(|k| k.starts_with("encoder.downsamples.0.downsamples."));
    let levels: Vec<Vec<Stage>> = if is_residual {
        (0..)
            .map(|l| stages(shapes, &format!("encoder.downsamples.{l}.downsamples.")))
            .take_while(|s| !s.is_empty())
            .collect()
    } else {
        let flat = stages(shapes, "encoder.downsamples.");
        let mut levels = vec![Vec::new()];
        for s in flat {
            levels.last_mut().unwrap().push(s);
            if matches!(s, Stage::Down { .. }) {
                levels.push(Vec::new());
            }
        }
        levels
    };
    let mut dim_mult = Vec::new();
    let mut temperal_downsample = Vec::new();
    let mut num_res_blocks = None;
    for (l, level) in levels.iter().enumerate() {
        let widths: Vec<usize> = level
            .iter()
            .filter_map(|s| match s {
                Stage::Res(w) => Some(*w),
                Stage::Down { .. } => None,
            })
            .collect();
        let (Some(&w), n) = (widths.last(), widths.len()) else {
            return Err(bad(format!("encoder level {l} has no residual block")));
        };
        if *num_res_blocks.get_or_insert(n) != n || w % base_dim != 0 {
            return Err(bad(format!(
                "encoder level {l} does not fit the Wan VAE layout"
            )));
        }
        dim_mult.push(w / base_dim);
        if let Some(Stage::Down { temporal }) = level.last() {
            temperal_downsample.push(*temporal);
        } else if l + 1 != levels.len() {
            return Err(bad(format!("encoder level {l} has no downsampling")));
        }
    }
    let Some(num_res_blocks) = num_res_blocks else {
        return Err(bad("no encoder blocks".into()));
    };
    let decoder_base_dim = decoder_width / dim_mult[0].max(1);
    let patch = (in_channels / 3) as f64;
    let patch_size = match patch.sqrt() as usize {
        1 => None,
        p if p * p * 3 == in_channels => Some(p),
        _ => return Err(bad(format!("{in_channels} input channels is not 3·p²"))),
    };
    Ok(WanVaeConfig {
        base_dim,
        decoder_base_dim,
        z_dim,
        dim_mult,
        num_res_blocks,
        temperal_downsample,
        latents_mean: Vec::new(),
        latents_std: Vec::new(),
        is_residual,
        in_channels,
        out_channels,
        patch_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The tiny diffusers VAE fixtures under their original names (original_keys.json, made
    /// by tools/fixtures/make_wan_vae_fixtures.py) give back their config.json.
    #[test]
    fn layout_of_the_original_names_equals_the_config() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan_vae");
        for case in ["wan21", "wan22"] {
            let dir = root.join(case);
            let diffusers = super::super::weights::stored_shapes(&[
                dir.join("diffusion_pytorch_model.safetensors")
            ])
            .unwrap();
            let names: BTreeMap<String, String> = serde_json::from_str(
                &std::fs::read_to_string(dir.join("original_keys.json")).unwrap(),
            )
            .unwrap();
            let original: BTreeMap<String, Vec<usize>> = diffusers
                .into_iter()
                .map(|(k, s)| (names[&k].clone(), s))
                .collect();
            let got = infer_layout(&original).unwrap();
            let want = super::super::read_config(&dir.join("config.json")).unwrap();
            assert_eq!(
                WanVaeConfig {
                    latents_mean: want.latents_mean.clone(),
                    latents_std: want.latents_std.clone(),
                    ..got
                },
                want,
                "{case}"
            );
            // Without the official channel count there are no statistics to assume.
            assert!(infer_original_config(&original).is_err());
        }
    }
}
