//! The Wan video VAE (Wan2.1 and Wan2.2), ported from diffusers `AutoencoderKLWan`.
//!
//! * [`WanVae::encode`]: video `[B, 3, F, H, W]` in `[-1, 1]`, `F = 1 + 4k` → latent mean
//!   `[B, z, 1 + k, H/s, W/s]` (what the Wan pipelines use; [`WanVae::encode_distribution`]
//!   also gives the log-variance). Frames are encoded as diffusers does: frame 0, then chunks
//!   of 4, every causal layer continuing from a [`TimeCache`] of the previous chunk.
//! * [`WanVae::decode`]: latent `[B, z, f, h, w]` → video `[B, 3, 1 + 4(f-1), H, W]` clamped
//!   to `[-1, 1]`, one latent frame at a time like diffusers (memory stays bounded by one
//!   chunk plus two cached frames per layer). [`WanVae::decode_stream`] hands each decoded
//!   chunk to a callback (progress bars, streaming to an encoder) instead of collecting them.
//!   Any chunk size gives the same result: chunked and whole-clip decoding are the same
//!   computation, because every temporal layer keeps exactly the frames it needs.
//! * [`WanVae::normalize_latents`] / [`WanVae::denormalize_latents`]: the per-channel latent
//!   statistics as the diffusers pipelines apply them (the VAE itself does not).
//!
//! Weights load from diffusers `vae/` folders or from files with the original Wan key names
//! (safetensors; see [`weights`]). Precision: compute in the dtype asked for at load time
//! (Wan runs its VAE in f32); RMS norms always compute in f32, and with bf16 on the CPU the
//! convolutions too (candle 0.11 has no CPU bf16 conv kernel).
//!
//! Cost at real sizes: nearly all the work is the 3×3×3 convolutions (stacked-tap `conv2d`,
//! see [`causal_conv`]; RMS norms, SiLU and copies measured at ~5 % on the CPU). A Wan2.1
//! decode of 81 frames at 832×480 is ≈ 0.27 PFLOP (≈ 1.2 TFLOP per output frame in each of
//! the two top levels): tens of minutes on a 2-core CPU (1.3–1.4× the wall time of PyTorch at
//! equal threads with our patch gathering in `im2col`; 3.7–5.2× with candle's conv2d;
//! `hsa bench vae --torch`, docs/benchmarks.md), so real-size decoding is a GPU job. The mid-block attention is per frame over the latent grid (6240 positions at
//! 832×480), small next to the convolutions.

pub mod blocks;
pub mod causal_conv;
pub mod config;
pub mod decoder;
pub mod encoder;
mod im2col;
pub mod infer;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

pub use causal_conv::TimeCache;
pub use config::WanVaeConfig;
pub use weights::{VaeKeyFormat, VaeStore};

use causal_conv::CausalConv3d;
use decoder::Decoder;
use encoder::Encoder;
use weights::Loader;

use crate::{ModelError, Result};

/// Pixel frames per encoder chunk after the first frame (diffusers' fixed chunking).
pub const ENCODE_CHUNK_FRAMES: usize = 4;

/// A loaded Wan VAE.
#[derive(Debug, Clone)]
pub struct WanVae {
    cfg: WanVaeConfig,
    /// Encoder and `quant_conv`; absent for decoder-only loads.
    encoder: Option<(Encoder, CausalConv3d)>,
    post_quant_conv: CausalConv3d,
    decoder: Decoder,
    /// `[1, z, 1, 1, 1]`, f32.
    latents_mean: Tensor,
    /// `1 / latents_std` (computed in f32, as the pipelines do), `[1, z, 1, 1, 1]`.
    latents_inv_std: Tensor,
    dtype: DType,
    device: Device,
}

/// Reads a diffusers `config.json` for the VAE.
pub fn read_config(path: &Path) -> Result<WanVaeConfig> {
    let text = crate::store::read_text(path)?;
    WanVaeConfig::from_json(&text).map_err(|message| ModelError::Config {
        path: path.to_path_buf(),
        message,
    })
}

/// The config and weight files for `path`: a folder (diffusers `vae/`: config.json +
/// safetensors) or a single weight file, safetensors or `.pth` (a VAE config.json beside it if
/// there is one, else the config read off its tensors, see [`config_of_files`]).
fn resolve(path: &Path) -> Result<(WanVaeConfig, Vec<PathBuf>)> {
    let (config, files) = if path.is_dir() {
        (
            path.join("config.json"),
            crate::store::find_weight_files(path)?,
        )
    } else if path.is_file() {
        // A file's folder may hold another model's config.json (the original Wan layout keeps
        // the DiT's there): only a VAE config counts.
        let config = path.with_file_name("config.json");
        let is_vae_config = std::fs::read_to_string(&config)
            .map(|t| t.contains("AutoencoderKLWan"))
            .unwrap_or(false);
        let config = if is_vae_config {
            config
        } else {
            PathBuf::new()
        };
        (config, vec![path.to_path_buf()])
    } else {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        });
    };
    let cfg = if config.is_file() {
        read_config(&config)?
    } else {
        config_of_files(&files)?
    };
    Ok((cfg, files))
}

/// The config of VAE weight files without a config.json: read off the tensor shapes for the
/// original layout (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`), else the published VAE the keys
/// belong to.
pub fn config_of_files(files: &[PathBuf]) -> Result<WanVaeConfig> {
    let shapes = weights::stored_shapes(files)?;
    if weights::detect_format(shapes.keys().map(String::as_str))
        == Some(weights::VaeKeyFormat::Original)
    {
        infer::infer_original_config(&shapes)
    } else {
        Ok(weights::infer_config(shapes.keys().map(String::as_str)))
    }
}

/// The config of a VAE folder or weight file, without loading weights.
pub fn config_for(path: &Path) -> Result<WanVaeConfig> {
    Ok(resolve(path)?.0)
}

/// `[B, T, C, H, W]` → `[B, T, C·p², H/p, W/p]`, channel `c·p² + pw·p + ph` (diffusers
/// `patchify`: the w offset before the h offset).
fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, t, c, h, w) = x.dims5()?;
    Ok(x.reshape(vec![b, t, c, h / p, p, w / p, p])?
        .permute(vec![0, 1, 2, 6, 4, 3, 5])?
        .reshape((b, t, c * p * p, h / p, w / p))?)
}

/// Inverse of [`patchify`].
fn unpatchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, t, cp, h, w) = x.dims5()?;
    let c = cp / (p * p);
    Ok(x.reshape(vec![b, t, c, p, p, h, w])?
        .permute(vec![0, 1, 2, 5, 4, 6, 3])?
        .reshape((b, t, c, h * p, w * p))?)
}

/// `[B, C, T, H, W]` ↔ `[B, T, C, H, W]` (the same swap both ways), contiguous.
fn swap_ct(x: &Tensor) -> Result<Tensor> {
    Ok(x.transpose(1, 2)?.contiguous()?)
}

impl WanVae {
    /// Loads a VAE from a diffusers `vae/` folder or a single safetensors file, computing in
    /// `dtype` on `device`. The encoder is loaded when the weights have one.
    pub fn load(path: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
        let (cfg, files) = resolve(path.as_ref())?;
        Self::load_files(&cfg, &files, dtype, device, true)
    }

    /// [`Self::load`] without the encoder (text-to-video needs only the decoder).
    pub fn load_decoder(path: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
        let (cfg, files) = resolve(path.as_ref())?;
        Self::load_files(&cfg, &files, dtype, device, false)
    }

    /// Loads `files` (diffusers or original key names) for `cfg`. `encoder`: load the encoder
    /// if the files have one.
    pub fn load_files(
        cfg: &WanVaeConfig,
        files: &[PathBuf],
        dtype: DType,
        device: &Device,
        encoder: bool,
    ) -> Result<Self> {
        cfg.validate().map_err(|message| ModelError::Config {
            path: files.first().cloned().unwrap_or_default(),
            message,
        })?;
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ModelError::Input(format!(
                "VAE compute dtype must be f32, bf16 or f16, got {dtype:?}"
            )));
        }
        let store = VaeStore::open(files, cfg)?;
        let w = Loader::new(&store, dtype, device);
        let with_encoder = encoder && store.has_encoder();
        let encoder = if with_encoder {
            let z2 = 2 * cfg.z_dim;
            Some((
                Encoder::load(&w, cfg)?,
                w.causal_conv("quant_conv", z2, z2, (1, 1), (0, 0), 1)?,
            ))
        } else {
            None
        };
        let post_quant_conv =
            w.causal_conv("post_quant_conv", cfg.z_dim, cfg.z_dim, (1, 1), (0, 0), 1)?;
        let decoder = Decoder::load(&w, cfg)?;
        w.finish(|name| {
            !with_encoder && (name.starts_with("encoder.") || name.starts_with("quant_conv."))
        })?;
        let stats = |v: &[f64], inv: bool| -> Result<Tensor> {
            let v: Vec<f32> = v
                .iter()
                .map(|x| if inv { 1.0f32 / *x as f32 } else { *x as f32 })
                .collect();
            Ok(Tensor::from_vec(v, (1, cfg.z_dim, 1, 1, 1), device)?)
        };
        Ok(Self {
            latents_mean: stats(&cfg.latents_mean, false)?,
            latents_inv_std: stats(&cfg.latents_std, true)?,
            cfg: cfg.clone(),
            encoder,
            post_quant_conv,
            decoder,
            dtype,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &WanVaeConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// Latent mean of a video `[B, 3, 1+4k, H, W]` in `[-1, 1]` (H, W multiples of the
    /// spatial factor) → `[B, z, 1+k, H/s, W/s]`, in the compute dtype.
    pub fn encode(&self, video: &Tensor) -> Result<Tensor> {
        Ok(self.encode_distribution(video)?.0)
    }

    /// Mean and log-variance (clamped to `[-30, 20]` as diffusers'
    /// `DiagonalGaussianDistribution` does) of the latent distribution.
    pub fn encode_distribution(&self, video: &Tensor) -> Result<(Tensor, Tensor)> {
        self.encode_chunked(video, ENCODE_CHUNK_FRAMES)
    }

    /// [`Self::encode_distribution`] with `frames_per_chunk` (a multiple of 4) pixel frames per
    /// chunk after the first frame; larger chunks trade memory for fewer, bigger convolutions.
    /// The result equals the 4-frame chunking up to float rounding.
    pub fn encode_chunked(
        &self,
        video: &Tensor,
        frames_per_chunk: usize,
    ) -> Result<(Tensor, Tensor)> {
        let Some((encoder, quant_conv)) = &self.encoder else {
            return Err(ModelError::Input(
                "this VAE was loaded without an encoder (decoder-only weights or load_decoder)"
                    .into(),
            ));
        };
        if frames_per_chunk == 0 || !frames_per_chunk.is_multiple_of(ENCODE_CHUNK_FRAMES) {
            return Err(ModelError::Input(format!(
                "frames_per_chunk must be a positive multiple of {ENCODE_CHUNK_FRAMES}, got {frames_per_chunk}"
            )));
        }
        let f = self.check_video(video)?;
        let x = patchify(&swap_ct(&video.to_dtype(self.dtype)?)?, self.cfg.patch())?;
        let mut cache = TimeCache::new();
        let mut outs = Vec::new();
        let mut start = 0;
        while start < f {
            let len = if start == 0 {
                1
            } else {
                frames_per_chunk.min(f - start)
            };
            cache.begin_chunk();
            outs.push(encoder.forward(&x.narrow(1, start, len)?, &mut cache)?);
            cache.end_chunk();
            start += len;
        }
        let out = Tensor::cat(&outs, 1)?;
        let moments = swap_ct(&quant_conv.forward(&out, &mut None)?)?; // [B, 2z, f, h, w]
        let z = self.cfg.z_dim;
        let mean = moments.narrow(1, 0, z)?.contiguous()?;
        let logvar = moments.narrow(1, z, z)?.clamp(-30f32, 20f32)?;
        Ok((mean, logvar))
    }

    /// Checks a video's shape for encoding: `[B, C, F, H, W]` with C the video channels,
    /// F = 1 + 4k, H and W multiples of the spatial factor. Returns F.
    fn check_video(&self, video: &Tensor) -> Result<usize> {
        let dims = video.dims();
        let [b, c, f, h, w] = <[usize; 5]>::try_from(dims).map_err(|_| {
            ModelError::Input(format!("video must be [B, C, F, H, W], got shape {dims:?}"))
        })?;
        let want_c = self.cfg.video_in_channels();
        if c != want_c {
            return Err(ModelError::Input(format!(
                "video has {c} channels, the VAE expects {want_c} (shape [B, C, F, H, W])"
            )));
        }
        let tf = ENCODE_CHUNK_FRAMES;
        if f == 0 || (f - 1) % tf != 0 {
            return Err(ModelError::Input(format!(
                "video has {f} frames; the Wan VAE encodes 4k+1 frames (1, 5, 9, …, 81); \
                 trim or pad to {} or {}",
                1 + (f.max(1) - 1) / tf * tf,
                1 + (f.max(1) - 1).div_ceil(tf) * tf
            )));
        }
        let s = self.cfg.spatial_factor();
        if h == 0 || w == 0 || h % s != 0 || w % s != 0 {
            return Err(ModelError::Input(format!(
                "video is {h}x{w} (HxW); both must be positive multiples of {s}"
            )));
        }
        if b == 0 {
            return Err(ModelError::Input("video batch is empty".into()));
        }
        Ok(f)
    }

    /// Video `[B, 3, 1 + 4(f-1), H·s, W·s]` in `[-1, 1]` from a latent `[B, z, f, h, w]`
    /// (denormalised: apply [`Self::denormalize_latents`] to a sampler's output first),
    /// decoding one latent frame at a time as diffusers does.
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        self.decode_with_progress(latent, 1, |_, _| {})
    }

    /// [`Self::decode`] with `latent_frames_per_chunk` latent frames per chunk, calling
    /// `progress(latent frames done, total)` after each chunk.
    pub fn decode_with_progress(
        &self,
        latent: &Tensor,
        latent_frames_per_chunk: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Tensor> {
        let mut chunks = Vec::new();
        self.decode_stream(latent, latent_frames_per_chunk, |frames, done, total| {
            chunks.push(frames);
            progress(done, total);
            Ok(())
        })?;
        Ok(Tensor::cat(&chunks, 2)?)
    }

    /// Decodes `latent [B, z, f, h, w]` in chunks of `latent_frames_per_chunk` latent frames,
    /// handing each chunk's pixel frames `[B, 3, n, H, W]` (clamped) to
    /// `sink(frames, latent frames done, total)` in order. The first latent frame yields one
    /// pixel frame, every later one 4 (Wan's temporal factor). An error from `sink` stops
    /// decoding and is returned.
    pub fn decode_stream(
        &self,
        latent: &Tensor,
        latent_frames_per_chunk: usize,
        mut sink: impl FnMut(Tensor, usize, usize) -> Result<()>,
    ) -> Result<()> {
        if latent_frames_per_chunk == 0 {
            return Err(ModelError::Input(
                "latent_frames_per_chunk must be positive".into(),
            ));
        }
        let f = self.check_latent(latent, "latent")?;
        let z = self
            .post_quant_conv
            .forward(&swap_ct(&latent.to_dtype(self.dtype)?)?, &mut None)?;
        let mut cache = TimeCache::new();
        let mut start = 0;
        while start < f {
            let len = latent_frames_per_chunk.min(f - start);
            cache.begin_chunk();
            let out = self
                .decoder
                .forward(&z.narrow(1, start, len)?, &mut cache)?;
            cache.end_chunk();
            let out = unpatchify(&out, self.cfg.patch())?.clamp(-1f32, 1f32)?;
            start += len;
            sink(swap_ct(&out)?, start, f)?;
        }
        Ok(())
    }

    /// Checks a latent `[B, z, f, h, w]`; returns f.
    fn check_latent(&self, latent: &Tensor, what: &str) -> Result<usize> {
        let dims = latent.dims();
        let z = self.cfg.z_dim;
        match dims {
            [b, c, f, h, w] if *c == z && *b > 0 && *f > 0 && *h > 0 && *w > 0 => Ok(*f),
            _ => Err(ModelError::Input(format!(
                "{what} must be [B, {z}, f, h, w] with all sizes positive, got shape {dims:?}"
            ))),
        }
    }

    /// Encoder mean → sampler space: `(mu - mean) · (1/std)` per channel
    /// (diffusers `WanImageToVideoPipeline.prepare_latents`). Computed in f32; returns the
    /// input's dtype.
    pub fn normalize_latents(&self, mu: &Tensor) -> Result<Tensor> {
        self.check_latent(mu, "latent")?;
        let x = mu.to_dtype(DType::F32)?;
        let y = x
            .broadcast_sub(&self.latents_mean)?
            .broadcast_mul(&self.latents_inv_std)?;
        Ok(y.to_dtype(mu.dtype())?)
    }

    /// Sampler output → decoder input: `z / (1/std) + mean` per channel (diffusers
    /// `WanPipeline`, written the way it computes it so the results match to the bit).
    pub fn denormalize_latents(&self, z: &Tensor) -> Result<Tensor> {
        self.check_latent(z, "latent")?;
        let x = z.to_dtype(DType::F32)?;
        let y = x
            .broadcast_div(&self.latents_inv_std)?
            .broadcast_add(&self.latents_mean)?;
        Ok(y.to_dtype(z.dtype())?)
    }

    /// Latent shape `[z, f, h, w]` for `frames` pixel frames of `height`×`width`.
    pub fn latent_shape(&self, frames: usize, height: usize, width: usize) -> [usize; 4] {
        let s = self.cfg.spatial_factor();
        [
            self.cfg.z_dim,
            self.cfg.latent_frames(frames),
            height / s,
            width / s,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patchify_matches_the_diffusers_channel_order_and_round_trips() {
        let dev = Device::Cpu;
        // [B=1, T=1, C=1, H=2, W=2]: pixel (h, w) has value 10h + w.
        let x = Tensor::from_vec(vec![0f32, 1., 10., 11.], (1, 1, 1, 2, 2), &dev).unwrap();
        let p = patchify(&x, 2).unwrap();
        // channel = pw·2 + ph: (0,0)=0, (ph=1,pw=0)=10, (ph=0,pw=1)=1, (1,1)=11.
        let v: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, [0., 10., 1., 11.]);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 3, 4, 6), &dev).unwrap();
        let back = unpatchify(&patchify(&x, 2).unwrap(), 2).unwrap();
        let d = crate::nn::max_abs_diff(&back, &x).unwrap();
        assert_eq!(d, 0.0);
    }
}
