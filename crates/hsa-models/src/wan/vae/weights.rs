//! Finding, validating and loading Wan VAE weights.
//!
//! Two key layouts exist: diffusers (`decoder.up_blocks.0.resnets.0.conv1.weight`, what
//! `vae/diffusion_pytorch_model.safetensors` holds) and the original Wan code
//! (`decoder.upsamples.0.residual.2.weight`, what `Wan2.1_VAE.pth` / `Wan2.2_VAE.pth` and
//! ComfyUI's repackaged VAE safetensors hold). The layout is detected from the keys and every
//! key is routed under its diffusers name (our canonical name); the original names depend on
//! the config (flat indices), so routing needs it.
//!
//! Loading goes through [`Loader`], which checks every tensor it hands out against the shape
//! the model expects (missing → [`ModelError::MissingTensor`], wrong shape →
//! [`ModelError::ShapeMismatch`] naming both shapes) and afterwards reports any stored tensor
//! that was not used ([`ModelError::UnexpectedTensor`]). The model code is thus the single
//! list of expected tensors.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

use super::causal_conv::{CausalConv3d, Conv2d};
use super::config::WanVaeConfig;
use crate::store::{Routing, TensorStore};
use crate::{ModelError, Result};

/// How the keys of a VAE checkpoint are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeKeyFormat {
    Diffusers,
    Original,
}

/// Detects the key layout.
pub fn detect_format<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> Option<VaeKeyFormat> {
    let has = |pred: &dyn Fn(&str) -> bool| keys.clone().any(pred);
    if has(&|k| k.starts_with("decoder.conv_in.") || k.starts_with("decoder.mid_block.")) {
        Some(VaeKeyFormat::Diffusers)
    } else if has(&|k| k.starts_with("decoder.conv1.") || k.starts_with("decoder.middle.")) {
        Some(VaeKeyFormat::Original)
    } else {
        None
    }
}

/// Whether the keys have the Wan2.2 layout (residual down/up blocks).
fn keys_are_residual<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> bool {
    keys.clone().any(|k| {
        [
            "decoder.up_blocks.0.upsampler.",
            "decoder.upsamples.0.upsamples.",
            "encoder.down_blocks.0.resnets.",
            "encoder.downsamples.0.downsamples.",
        ]
        .iter()
        .any(|p| k.starts_with(p))
    })
}

/// The published VAE a weight file's keys belong to (for files without a config.json):
/// Wan2.2 for the residual layout, else Wan2.1. Shapes are checked at load time.
pub fn infer_config<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> WanVaeConfig {
    if keys_are_residual(keys) {
        WanVaeConfig::wan22()
    } else {
        WanVaeConfig::wan21()
    }
}

/// Original residual-block parts and their diffusers names.
const RESNET_PARTS: &[(&str, &str)] = &[
    ("residual.0.gamma", "norm1.gamma"),
    ("residual.2.", "conv1."),
    ("residual.3.gamma", "norm2.gamma"),
    ("residual.6.", "conv2."),
    ("shortcut.", "conv_shortcut."),
];

fn resnet_tail(tail: &str) -> Option<String> {
    RESNET_PARTS
        .iter()
        .find_map(|(o, d)| tail.strip_prefix(o).map(|rest| format!("{d}{rest}")))
}

/// `"{n}.{rest}"` → `(n, rest)`.
fn split_index(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

/// Maps an original Wan VAE key to its diffusers name for this config; `None` for keys the
/// layout does not have (they are then reported as unexpected under their own name).
pub fn original_to_diffusers(key: &str, cfg: &WanVaeConfig) -> Option<String> {
    let nrb = cfg.num_res_blocks;
    if let Some(rest) = key.strip_prefix("conv1.") {
        return Some(format!("quant_conv.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("conv2.") {
        return Some(format!("post_quant_conv.{rest}"));
    }
    let (side, rest) = key.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return None;
    }
    let out = |s: String| Some(format!("{side}.{s}"));
    if let Some(r) = rest.strip_prefix("conv1.") {
        return out(format!("conv_in.{r}"));
    }
    if rest == "head.0.gamma" {
        return out("norm_out.gamma".into());
    }
    if let Some(r) = rest.strip_prefix("head.2.") {
        return out(format!("conv_out.{r}"));
    }
    if let Some(r) = rest.strip_prefix("middle.1.") {
        return out(format!("mid_block.attentions.0.{r}"));
    }
    if let Some(r) = rest.strip_prefix("middle.") {
        let (i, tail) = split_index(r)?;
        if i != 0 && i != 2 {
            return None;
        }
        return out(format!(
            "mid_block.resnets.{}.{}",
            i / 2,
            resnet_tail(tail)?
        ));
    }
    let is_resample = |t: &str| t.starts_with("resample.") || t.starts_with("time_conv.");
    match (side, cfg.is_residual) {
        ("encoder", false) => {
            let (i, tail) = split_index(rest.strip_prefix("downsamples.")?)?;
            if is_resample(tail) {
                out(format!("down_blocks.{i}.{tail}"))
            } else {
                out(format!("down_blocks.{i}.{}", resnet_tail(tail)?))
            }
        }
        ("encoder", true) => {
            let (i, r) = split_index(rest.strip_prefix("downsamples.")?)?;
            let (j, tail) = split_index(r.strip_prefix("downsamples.")?)?;
            if j < nrb {
                out(format!(
                    "down_blocks.{i}.resnets.{j}.{}",
                    resnet_tail(tail)?
                ))
            } else if j == nrb && is_resample(tail) {
                out(format!("down_blocks.{i}.downsampler.{tail}"))
            } else {
                None
            }
        }
        ("decoder", false) => {
            // One flat list: per level nrb+1 residual blocks, then the upsampler (not after
            // the last level).
            let (mut k, tail) = split_index(rest.strip_prefix("upsamples.")?)?;
            for (level, l) in cfg.decoder_levels().iter().enumerate() {
                let len = nrb + 1 + usize::from(l.spatial);
                if k < len {
                    return if k <= nrb {
                        out(format!(
                            "up_blocks.{level}.resnets.{k}.{}",
                            resnet_tail(tail)?
                        ))
                    } else if is_resample(tail) {
                        out(format!("up_blocks.{level}.upsamplers.0.{tail}"))
                    } else {
                        None
                    };
                }
                k -= len;
            }
            None
        }
        _ => {
            let (i, r) = split_index(rest.strip_prefix("upsamples.")?)?;
            let (j, tail) = split_index(r.strip_prefix("upsamples.")?)?;
            if j <= nrb {
                out(format!("up_blocks.{i}.resnets.{j}.{}", resnet_tail(tail)?))
            } else if j == nrb + 1 && is_resample(tail) {
                out(format!("up_blocks.{i}.upsampler.{tail}"))
            } else {
                None
            }
        }
    }
}

/// The stored key names of safetensors files (without mapping them).
pub fn stored_keys(paths: &[PathBuf]) -> Result<Vec<String>> {
    let (_, keys) = TensorStore::open(paths, |raw| {
        let keys: Vec<String> = raw.iter().map(|(_, k)| k.clone()).collect();
        Ok((Routing::new(), keys))
    })?;
    Ok(keys)
}

/// The stored key names and shapes of weight files (without mapping them).
pub fn stored_shapes(paths: &[PathBuf]) -> Result<std::collections::BTreeMap<String, Vec<usize>>> {
    let (store, keys) = TensorStore::open(paths, |raw| {
        let routing: Routing = raw
            .iter()
            .map(|(i, k)| (k.clone(), (*i, k.clone())))
            .collect();
        let keys: Vec<String> = raw.into_iter().map(|(_, k)| k).collect();
        Ok((routing, keys))
    })?;
    Ok(keys
        .into_iter()
        .filter_map(|k| store.info(&k).map(|(s, _)| (k, s)))
        .collect())
}

/// Memory-mapped VAE weights with every key routed under its diffusers name.
#[derive(Debug)]
pub struct VaeStore {
    store: TensorStore,
    names: Vec<String>,
    format: VaeKeyFormat,
}

impl VaeStore {
    /// Opens (memory-maps) safetensors files and routes their keys for `cfg`.
    pub fn open(paths: &[PathBuf], cfg: &WanVaeConfig) -> Result<Self> {
        let (store, (format, names)) = TensorStore::open(paths, |raw| {
            let format = detect_format(raw.iter().map(|(_, k)| k.as_str())).ok_or_else(|| {
                let mut sample: Vec<&str> = raw.iter().map(|(_, k)| k.as_str()).take(5).collect();
                sample.sort();
                ModelError::UnknownVaeKeyFormat {
                    sample: sample.join(", "),
                }
            })?;
            let mut routing = Routing::new();
            for (i, k) in raw {
                let canonical = match format {
                    VaeKeyFormat::Diffusers => k.clone(),
                    VaeKeyFormat::Original => {
                        original_to_diffusers(&k, cfg).unwrap_or_else(|| k.clone())
                    }
                };
                routing.insert(canonical, (i, k));
            }
            let names = routing.keys().cloned().collect();
            Ok((routing, (format, names)))
        })?;
        Ok(Self {
            store,
            names,
            format,
        })
    }

    pub fn format(&self) -> VaeKeyFormat {
        self.format
    }

    /// Canonical (diffusers) names of all stored tensors.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether the files hold encoder weights (decoder-only files exist).
    pub fn has_encoder(&self) -> bool {
        self.names
            .iter()
            .any(|n| n.starts_with("encoder.") || n.starts_with("quant_conv."))
    }
}

impl std::ops::Deref for VaeStore {
    type Target = TensorStore;

    fn deref(&self) -> &TensorStore {
        &self.store
    }
}

/// Hands out checked tensors from a [`VaeStore`] and remembers which were used.
pub struct Loader<'a> {
    store: &'a VaeStore,
    dtype: DType,
    device: &'a Device,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> Loader<'a> {
    pub fn new(store: &'a VaeStore, dtype: DType, device: &'a Device) -> Self {
        Self {
            store,
            dtype,
            device,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dtype of convolution weights: the compute dtype, except bf16 on the CPU, where candle
    /// 0.11 has no bf16 matmul kernel for its conv2d: those weights stay f32 and each conv
    /// casts its input up and its output back (activations and caches stay bf16).
    pub fn conv_dtype(&self) -> DType {
        if self.dtype == DType::BF16 && self.device.is_cpu() {
            DType::F32
        } else {
            self.dtype
        }
    }

    fn checked(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let Some((found, stored)) = self.store.info(name) else {
            return Err(self.store.missing(name.to_string(), shape.to_vec()));
        };
        if found != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                found,
            });
        }
        if !matches!(stored, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ModelError::UnsupportedDtype {
                name: name.to_string(),
                dtype: format!("{stored:?}"),
            });
        }
        self.used.borrow_mut().insert(name.to_string());
        self.store.get(name, dtype, self.device)
    }

    /// A tensor in the compute dtype.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.checked(name, shape, self.dtype)
    }

    /// A tensor in f32 (norm weights).
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.checked(name, shape, DType::F32)
    }

    /// `{prefix}.weight [out, in, kt, k, k]` and `{prefix}.bias [out]` as a causal conv with
    /// padding `pad = (pad_t, pad_s)` and time stride `stride_t`.
    pub fn causal_conv(
        &self,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        kernel: (usize, usize),
        pad: (usize, usize),
        stride_t: usize,
    ) -> Result<CausalConv3d> {
        let (kt, k) = kernel;
        let dt = self.conv_dtype();
        let w = self.checked(
            &format!("{prefix}.weight"),
            &[out_dim, in_dim, kt, k, k],
            dt,
        )?;
        let b = self.checked(&format!("{prefix}.bias"), &[out_dim], dt)?;
        CausalConv3d::new(&w, b, pad, stride_t)
    }

    /// `{prefix}.weight [out, in, k, k]` and `{prefix}.bias [out]` as a 2-D conv.
    pub fn conv2d(
        &self,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        k: usize,
        padding: usize,
        stride: usize,
    ) -> Result<Conv2d> {
        let dt = self.conv_dtype();
        let w = self.checked(&format!("{prefix}.weight"), &[out_dim, in_dim, k, k], dt)?;
        let b = self.checked(&format!("{prefix}.bias"), &[out_dim], dt)?;
        Conv2d::new(w, b, padding, stride)
    }

    /// Fails with [`ModelError::UnexpectedTensor`] for a stored tensor nothing used, except
    /// those `skipped` accepts (e.g. the encoder when loading a decoder only).
    pub fn finish(&self, skipped: impl Fn(&str) -> bool) -> Result<()> {
        let used = self.used.borrow();
        if let Some(extra) = self
            .store
            .names()
            .iter()
            .find(|n| !used.contains(n.as_str()) && !skipped(n))
        {
            return Err(ModelError::UnexpectedTensor {
                name: extra.clone(),
                shape: self.store.info(extra).map(|(s, _)| s).unwrap_or_default(),
                source_desc: self.store.describe(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_keys_of_the_published_layouts_map_to_diffusers_names() {
        let c21 = WanVaeConfig::wan21();
        let cases = [
            ("conv1.weight", "quant_conv.weight"),
            ("conv2.bias", "post_quant_conv.bias"),
            ("encoder.conv1.weight", "encoder.conv_in.weight"),
            ("decoder.head.0.gamma", "decoder.norm_out.gamma"),
            ("decoder.head.2.bias", "decoder.conv_out.bias"),
            (
                "encoder.middle.2.residual.6.weight",
                "encoder.mid_block.resnets.1.conv2.weight",
            ),
            (
                "decoder.middle.1.to_qkv.bias",
                "decoder.mid_block.attentions.0.to_qkv.bias",
            ),
            (
                "encoder.downsamples.3.shortcut.weight",
                "encoder.down_blocks.3.conv_shortcut.weight",
            ),
            (
                "encoder.downsamples.5.time_conv.bias",
                "encoder.down_blocks.5.time_conv.bias",
            ),
            (
                "decoder.upsamples.3.resample.1.weight",
                "decoder.up_blocks.0.upsamplers.0.resample.1.weight",
            ),
            (
                "decoder.upsamples.4.shortcut.bias",
                "decoder.up_blocks.1.resnets.0.conv_shortcut.bias",
            ),
            (
                "decoder.upsamples.11.time_conv.weight",
                "decoder.up_blocks.2.upsamplers.0.time_conv.weight",
            ),
            (
                "decoder.upsamples.14.residual.3.gamma",
                "decoder.up_blocks.3.resnets.2.norm2.gamma",
            ),
        ];
        for (orig, diff) in cases {
            assert_eq!(
                original_to_diffusers(orig, &c21).as_deref(),
                Some(diff),
                "{orig}"
            );
        }
        assert_eq!(
            original_to_diffusers("decoder.upsamples.15.residual.2.weight", &c21),
            None
        );
        let c22 = WanVaeConfig::wan22();
        let cases = [
            (
                "encoder.downsamples.1.downsamples.2.time_conv.weight",
                "encoder.down_blocks.1.downsampler.time_conv.weight",
            ),
            (
                "encoder.downsamples.2.downsamples.0.shortcut.weight",
                "encoder.down_blocks.2.resnets.0.conv_shortcut.weight",
            ),
            (
                "decoder.upsamples.0.upsamples.3.resample.1.bias",
                "decoder.up_blocks.0.upsampler.resample.1.bias",
            ),
            (
                "decoder.upsamples.2.upsamples.2.residual.0.gamma",
                "decoder.up_blocks.2.resnets.2.norm1.gamma",
            ),
        ];
        for (orig, diff) in cases {
            assert_eq!(
                original_to_diffusers(orig, &c22).as_deref(),
                Some(diff),
                "{orig}"
            );
        }
    }
}
