//! Random weights for `hsa bench vae`: every tensor name and shape of a Wan VAE with the real
//! architecture (diffusers names, block by block), filled with seeded values in PyTorch's
//! default init ranges and written as safetensors, so both sides of the benchmark load the same
//! file.

use candle_core::{Device, Tensor};

use crate::Result;

/// Diffusers names and shapes of VAE tensors, listed block by block.
#[derive(Default)]
struct VaeShapes(Vec<(String, Vec<usize>)>);

impl VaeShapes {
    fn push(&mut self, name: String, shape: Vec<usize>) {
        self.0.push((name, shape));
    }

    /// `{p}.weight [o, i, kernel...]` and `{p}.bias [o]`.
    fn conv(&mut self, p: &str, o: usize, i: usize, kernel: &[usize]) {
        let mut shape = vec![o, i];
        shape.extend_from_slice(kernel);
        self.push(format!("{p}.weight"), shape);
        self.push(format!("{p}.bias"), vec![o]);
    }

    /// diffusers `WanResidualBlock`.
    fn resnet(&mut self, p: &str, i: usize, o: usize) {
        self.push(format!("{p}.norm1.gamma"), vec![i, 1, 1, 1]);
        self.conv(&format!("{p}.conv1"), o, i, &[3, 3, 3]);
        self.push(format!("{p}.norm2.gamma"), vec![o, 1, 1, 1]);
        self.conv(&format!("{p}.conv2"), o, o, &[3, 3, 3]);
        if i != o {
            self.conv(&format!("{p}.conv_shortcut"), o, i, &[1, 1, 1]);
        }
    }

    /// diffusers `WanMidBlock` (residual, attention, residual).
    fn mid(&mut self, p: &str, d: usize) {
        self.resnet(&format!("{p}.resnets.0"), d, d);
        self.push(format!("{p}.attentions.0.norm.gamma"), vec![d, 1, 1]);
        self.conv(&format!("{p}.attentions.0.to_qkv"), 3 * d, d, &[1, 1]);
        self.conv(&format!("{p}.attentions.0.proj"), d, d, &[1, 1]);
        self.resnet(&format!("{p}.resnets.1"), d, d);
    }

    /// A resampling layer: the 3x3 conv `resample.1`, and `time_conv` when `time` is
    /// `Some(out channels)`.
    fn resample(&mut self, p: &str, i: usize, o: usize, time: Option<usize>) {
        self.conv(&format!("{p}.resample.1"), o, i, &[3, 3]);
        if let Some(t) = time {
            self.conv(&format!("{p}.time_conv"), t, i, &[3, 1, 1]);
        }
    }
}

/// Diffusers names and shapes of the tensors of `cfg`'s decoder and `post_quant_conv`, and with
/// `encoder` also of the encoder and `quant_conv`: the layout `WanVae` loads (its loader checks
/// every name and shape, and reports tensors it did not use) and diffusers `AutoencoderKLWan`
/// has (the PyTorch side loads the same file by name and checks for missing and extra keys).
pub(super) fn vae_tensor_shapes(
    cfg: &hsa_models::wan::WanVaeConfig,
    encoder: bool,
) -> Vec<(String, Vec<usize>)> {
    let mut t = VaeShapes::default();
    let z = cfg.z_dim;
    let nrb = cfg.num_res_blocks;
    let levels = cfg.decoder_levels();
    t.conv("post_quant_conv", z, z, &[1, 1, 1]);
    t.conv("decoder.conv_in", levels[0].in_dim, z, &[3, 3, 3]);
    t.mid("decoder.mid_block", levels[0].in_dim);
    for (i, l) in levels.iter().enumerate() {
        let p = format!("decoder.up_blocks.{i}");
        let mut in_dim = l.in_dim;
        for j in 0..=nrb {
            t.resnet(&format!("{p}.resnets.{j}"), in_dim, l.out_dim);
            in_dim = l.out_dim;
        }
        if l.spatial {
            // Wan2.1 upsampling convs halve the width; Wan2.2's keep it.
            let (up, out_dim) = if cfg.is_residual {
                (format!("{p}.upsampler"), l.out_dim)
            } else {
                (format!("{p}.upsamplers.0"), l.out_dim / 2)
            };
            let time = l.temporal.then_some(2 * l.out_dim);
            t.resample(&up, l.out_dim, out_dim, time);
        }
    }
    let last = levels[levels.len() - 1].out_dim;
    t.push("decoder.norm_out.gamma".into(), vec![last, 1, 1, 1]);
    t.conv("decoder.conv_out", cfg.out_channels, last, &[3, 3, 3]);
    if encoder {
        let levels = cfg.encoder_levels();
        t.conv("quant_conv", 2 * z, 2 * z, &[1, 1, 1]);
        t.conv(
            "encoder.conv_in",
            levels[0].in_dim,
            cfg.in_channels,
            &[3, 3, 3],
        );
        // Wan2.1: one flat `down_blocks` list across levels; Wan2.2: per level.
        let mut flat = 0usize;
        let mut next = |i: usize, part: String| -> String {
            if cfg.is_residual {
                format!("encoder.down_blocks.{i}.{part}")
            } else {
                flat += 1;
                format!("encoder.down_blocks.{}", flat - 1)
            }
        };
        for (i, l) in levels.iter().enumerate() {
            let mut in_dim = l.in_dim;
            for j in 0..nrb {
                let p = next(i, format!("resnets.{j}"));
                t.resnet(&p, in_dim, l.out_dim);
                in_dim = l.out_dim;
            }
            if l.spatial {
                let p = next(i, "downsampler".into());
                t.resample(&p, l.out_dim, l.out_dim, l.temporal.then_some(l.out_dim));
            }
        }
        let d = cfg.encoder_out_dim();
        t.mid("encoder.mid_block", d);
        t.push("encoder.norm_out.gamma".into(), vec![d, 1, 1, 1]);
        t.conv("encoder.conv_out", 2 * z, d, &[3, 3, 3]);
    }
    t.0
}

/// splitmix64: a small deterministic generator for the benchmark's weights and inputs.
pub(super) struct SplitMix(u64);

impl SplitMix {
    /// A stream for `name` under `seed` (independent of the order tensors are made in).
    pub(super) fn for_name(seed: u64, name: &str) -> Self {
        // FNV-1a of the name, mixed with the seed.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Self(h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub(super) fn symmetric(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Standard normal (Box-Muller).
    pub(super) fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

/// Writes deterministic random weights of `cfg` (decoder, plus encoder with `encoder`) to
/// `path`, drawn as PyTorch initialises a fresh model: conv weights and biases
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in channels x kernel size; RMS-norm gammas
/// 1 + U(-0.1, 0.1) (diffusers starts them at exactly 1; perturbed so that a dropped gamma
/// would show in the comparison). Returns the parameter count.
pub(super) fn write_random_vae(
    cfg: &hsa_models::wan::WanVaeConfig,
    encoder: bool,
    seed: u64,
    path: &std::path::Path,
) -> Result<usize> {
    let shapes = vae_tensor_shapes(cfg, encoder);
    let weight_fan_in: std::collections::HashMap<&str, usize> = shapes
        .iter()
        .filter_map(|(n, s)| Some((n.strip_suffix(".weight")?, s[1..].iter().product())))
        .collect();
    let mut tensors = std::collections::HashMap::new();
    let mut params = 0;
    for (name, shape) in &shapes {
        let n: usize = shape.iter().product();
        let mut rng = SplitMix::for_name(seed, name);
        let values: Vec<f32> = if name.ends_with(".gamma") {
            (0..n).map(|_| 1.0 + 0.1 * rng.symmetric()).collect()
        } else {
            let layer = name
                .strip_suffix(".weight")
                .or_else(|| name.strip_suffix(".bias"))
                .unwrap_or(name);
            let fan_in = weight_fan_in.get(layer).copied().unwrap_or(1).max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| bound * rng.symmetric()).collect()
        };
        params += n;
        tensors.insert(
            name.clone(),
            Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?,
        );
    }
    candle_core::safetensors::save(&tensors, path)?;
    Ok(params)
}
