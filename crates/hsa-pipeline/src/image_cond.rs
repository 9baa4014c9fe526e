//! Image conditioning of image-to-video runs (wan-spec §6): the video size from the image,
//! the first frame as the official Wan code (or diffusers) prepares it, and what the DiT sees.
//!
//! * Wan2.1 I2V and Wan2.2 I2V-A14B ([`ImageMode::Channels`]): the VAE latent of
//!   `[image, zeros × (F−1)]` with 4 mask channels (ones on latent frame 0) is appended to the
//!   noise channels of every token, in both CFG branches; Wan2.1 also gives CLIP features
//!   (penultimate layer) to every cross-attention.
//! * Wan2.2 TI2V-5B ([`ImageMode::FirstFrame`]): the image's latent is the first latent frame;
//!   those tokens run at timestep 0, are re-imposed on the model input at every call and on the
//!   result. HSA keeps them frozen (never active after the dense steps, still in the K/V cache).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use hsa_models::clip::{
    load_image, rgb_planes, signed_pixels, wan_official_pixels, ClipImageProcessor,
    ClipVisionModel, PilFilter, RgbImage,
};
use hsa_models::interpolate::bicubic_resize;
use hsa_models::wan::patch::patchify;
use hsa_models::wan::WanVae;

use crate::folder::ModelFolder;
use crate::generate::RunSettings;
use crate::{PipelineError, Result};

/// How a model folder is conditioned on an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageMode {
    /// Mask + image latent as extra input channels (`clip`: Wan2.1's CLIP branch too).
    Channels { clip: bool },
    /// The image latent is the first latent frame (per-token timestep 0).
    FirstFrame,
}

/// Whose image preprocessing to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImagePreprocess {
    /// The official Wan code: PyTorch bicubic squash of the float image to the video size
    /// (TI2V: PIL Lanczos cover-resize and centre crop) and to 224 x 224 for CLIP.
    #[default]
    Official,
    /// diffusers' `WanImageToVideoPipeline`: PIL Lanczos resize of the 8-bit image to the video
    /// size, and the folder's `CLIPImageProcessor` (shortest side + centre crop) for CLIP.
    Diffusers,
}

/// Video size `(width, height)` of the official Wan I2V code for an image of `(w, h)` under
/// `max_area` pixels: the image's aspect ratio on the latent grid, rounded down to whole
/// patches (`spatial`: VAE factor, `patch`: DiT patch rows/cols).
pub fn i2v_size(w: u32, h: u32, max_area: usize, spatial: usize, patch: usize) -> (usize, usize) {
    let ar = h as f64 / w as f64;
    let lat = |side: f64| {
        let cells = (side / spatial as f64).floor() / patch as f64;
        (cells.floor() * patch as f64).round_ties_even() as usize
    };
    let lat_h = lat((max_area as f64 * ar).sqrt());
    let lat_w = lat((max_area as f64 / ar).sqrt());
    (lat_w * spatial, lat_h * spatial)
}

/// Wan2.2's `best_output_size`: the `(width, height)`, multiples of `(dw, dh)` with area at
/// most `area`, whose aspect ratio is closest to the image's (width-first and height-first
/// rounding compared).
pub fn best_output_size(w: u32, h: u32, dw: usize, dh: usize, area: usize) -> (usize, usize) {
    let (dw_f, dh_f, area_f) = (dw as f64, dh as f64, area as f64);
    let ratio = w as f64 / h as f64;
    let ow = (area_f * ratio).sqrt();
    let oh = area_f / ow;
    let floor_to = |x: f64, d: f64| ((x / d).floor() * d).max(d);
    let ow1 = floor_to(ow, dw_f);
    let oh1 = floor_to(area_f / ow1, dh_f);
    let oh2 = floor_to(oh, dh_f);
    let ow2 = floor_to(area_f / oh2, dw_f);
    let off = |r: f64| (ratio / r).max(r / ratio);
    if off(ow1 / oh1) < off(ow2 / oh2) {
        (ow1 as usize, oh1 as usize)
    } else {
        (ow2 as usize, oh2 as usize)
    }
}

/// The first video frame `[3, height, width]` in `[-1, 1]` (f32) from the image.
pub fn first_frame(
    img: &RgbImage,
    width: usize,
    height: usize,
    mode: ImageMode,
    pre: ImagePreprocess,
    device: &Device,
) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let resized =
        |filter| hsa_models::clip::resample::resize(img, width as u32, height as u32, filter);
    Ok(match (mode, pre) {
        (ImageMode::Channels { .. }, ImagePreprocess::Official) => {
            bicubic_resize(&signed_pixels(img, device)?, height, width)?
        }
        (ImageMode::FirstFrame, ImagePreprocess::Official) => {
            // Cover the target (Python's round-half-even), Lanczos, then a centre crop.
            let scale = (width as f64 / w as f64).max(height as f64 / h as f64);
            let (cw, ch) = (
                ((w as f64 * scale).round_ties_even() as u32).max(width as u32),
                ((h as f64 * scale).round_ties_even() as u32).max(height as u32),
            );
            let cover = hsa_models::clip::resample::resize(img, cw, ch, PilFilter::Lanczos);
            let (x0, y0) = ((cw - width as u32) / 2, (ch - height as u32) / 2);
            let crop =
                image::imageops::crop_imm(&cover, x0, y0, width as u32, height as u32).to_image();
            signed_pixels(&crop, device)?
        }
        (_, ImagePreprocess::Diffusers) => {
            let img = if (w as usize, h as usize) == (width, height) {
                img.clone()
            } else {
                resized(PilFilter::Lanczos)
            };
            diffusers_pixels(&img, device)?
        }
    })
}

/// diffusers' `VaeImageProcessor`: `u8 / 255` (float32), then `2x − 1`.
fn diffusers_pixels(img: &RgbImage, device: &Device) -> Result<Tensor> {
    Ok(rgb_planes(img, |u| 2.0 * (u as f32 / 255.0) - 1.0, device)?)
}

/// Everything an image contributes to one run, computed before the DiT loads.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    pub conditioning: Conditioning,
    /// Wan2.1 I2V: CLIP features `[1, 257, 1280]` (penultimate layer).
    pub clip: Option<Tensor>,
}

/// Loads the image, builds its first frame for the run's size, encodes it with the folder's
/// VAE encoder (and CLIP tower for Wan2.1 I2V), and frees both before returning.
pub fn encode_image(
    folder: &ModelFolder,
    path: &Path,
    pre: ImagePreprocess,
    s: &RunSettings,
    dtype: Option<DType>,
    device: &Device,
) -> Result<ImageInputs> {
    let mode = folder.image_mode.ok_or_else(|| {
        PipelineError::Invalid("this model does not take an image (text-to-video only)".into())
    })?;
    let img = load_image(path)?;
    let frame = first_frame(&img, s.width, s.height, mode, pre, device)?;
    let (vae_dir, _) = folder.vae.as_ref().ok_or_else(|| {
        PipelineError::Invalid("image conditioning needs the model's VAE (vae/)".into())
    })?;
    let vae = WanVae::load(vae_dir, DType::F32, device)?;
    let patch = folder.dit_config.patch_size;
    let [_, f, _, _] = folder.state_shape(s)?;
    let conditioning = match mode {
        ImageMode::Channels { .. } => Conditioning::channels(&vae, &frame, s.frames, patch)?,
        ImageMode::FirstFrame => Conditioning::first_frame(&vae, &frame, f, patch)?,
    };
    drop(vae);
    let clip = match (mode, &folder.image_encoder) {
        (ImageMode::Channels { clip: true }, Some(dir)) => {
            let dt = ModelFolder::dit_dtype(dtype);
            let tower = ClipVisionModel::load(dir, DType::F32, device)?;
            let size = tower.config().image_size;
            let pixels = match (pre, &folder.image_processor) {
                (ImagePreprocess::Diffusers, Some(p)) => {
                    ClipImageProcessor::from_file(&p.join("preprocessor_config.json"))?
                        .preprocess(&img, device)?
                }
                (ImagePreprocess::Diffusers, None) => {
                    ClipImageProcessor::clip(size as u32).preprocess(&img, device)?
                }
                (ImagePreprocess::Official, _) => wan_official_pixels(&img, size, device)?,
            };
            Some(tower.penultimate_hidden_state(&pixels)?.to_dtype(dt)?)
        }
        _ => None,
    };
    Ok(ImageInputs { conditioning, clip })
}

/// What the denoiser needs for one image-conditioned run.
#[derive(Debug, Clone)]
pub enum Conditioning {
    /// Extra input channels per token `[N, K·(4 + z)]` (patch layout of the state).
    Channels { tokens: Tensor },
    /// TI2V: the clean tokens `[N, P]` (rows of `first` hold the image's latent) and the
    /// indices of the first latent frame's tokens.
    FirstFrame { clean: Tensor, first: Vec<u32> },
}

impl Conditioning {
    /// Mask + normalised latent of `[frame, zeros × (frames − 1)]`, as tokens of a state of
    /// `[z, f, h, w]` latents with DiT patch `patch`.
    pub fn channels(
        vae: &WanVae,
        frame: &Tensor,
        frames: usize,
        patch: [usize; 3],
    ) -> Result<Self> {
        let (c, h, w) = frame.dims3()?;
        let dev = frame.device();
        let frame = frame.to_dtype(DType::F32)?.reshape((1, c, 1, h, w))?;
        let video = if frames > 1 {
            let zeros = Tensor::zeros((1, c, frames - 1, h, w), DType::F32, dev)?;
            Tensor::cat(&[&frame, &zeros], 2)?
        } else {
            frame
        };
        let latent = encode_normalized(vae, &video)?;
        let (_, _, f, lh, lw) = latent.dims5()?;
        let tf = vae.config().temporal_factor();
        // Pixel frame 0 is the image: latent frame 0 gets ones on all `tf` mask channels.
        let first = Tensor::ones((1, tf, 1, lh, lw), DType::F32, dev)?;
        let mask = if f > 1 {
            Tensor::cat(
                &[
                    &first,
                    &Tensor::zeros((1, tf, f - 1, lh, lw), DType::F32, dev)?,
                ],
                2,
            )?
        } else {
            first
        };
        let cond = Tensor::cat(&[&mask, &latent], 1)?;
        Ok(Self::Channels {
            tokens: patchify(&cond, patch)?.squeeze(0)?,
        })
    }

    /// TI2V: the image's normalised latent placed as latent frame 0 of a `[z, f, h, w]`
    /// state, as tokens, and the indices of that frame's tokens.
    pub fn first_frame(
        vae: &WanVae,
        frame: &Tensor,
        latent_frames: usize,
        patch: [usize; 3],
    ) -> Result<Self> {
        let (c, h, w) = frame.dims3()?;
        let dev = frame.device();
        if patch[0] != 1 {
            return Err(PipelineError::Invalid(format!(
                "first-frame conditioning needs a temporal patch of 1, this model has {}",
                patch[0]
            )));
        }
        let video = frame.to_dtype(DType::F32)?.reshape((1, c, 1, h, w))?;
        let latent = encode_normalized(vae, &video)?;
        let (_, z, _, lh, lw) = latent.dims5()?;
        let state = if latent_frames > 1 {
            let rest = Tensor::zeros((1, z, latent_frames - 1, lh, lw), DType::F32, dev)?;
            Tensor::cat(&[&latent, &rest], 2)?
        } else {
            latent
        };
        let per_frame = (lh / patch[1]) * (lw / patch[2]);
        Ok(Self::FirstFrame {
            clean: patchify(&state, patch)?.squeeze(0)?,
            first: (0..per_frame as u32).collect(),
        })
    }
}

impl Conditioning {
    /// The sampler's result `[N, P]` with the conditioning frame's tokens set back to the
    /// image's latent (TI2V; unchanged otherwise).
    pub fn reimpose(&self, tokens: &Tensor) -> Result<Tensor> {
        let Self::FirstFrame { clean, first } = self else {
            return Ok(tokens.clone());
        };
        let n = tokens.dim(0)?;
        let mut keep = vec![1u8; n];
        first.iter().for_each(|&r| keep[r as usize] = 0);
        let keep = Tensor::from_vec(keep, (n, 1), tokens.device())?.broadcast_as(tokens.shape())?;
        Ok(keep.where_cond(tokens, &clean.to_dtype(tokens.dtype())?)?)
    }
}

/// VAE mean of `video [1, 3, F, H, W]` in sampler space (f32).
fn encode_normalized(vae: &WanVae, video: &Tensor) -> Result<Tensor> {
    let mu = vae.encode(&video.to_dtype(vae.dtype())?)?;
    Ok(vae.normalize_latents(&mu)?.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_sizes() {
        // Expected values: the official Python functions (wan-spec §6.1 sizing, Wan2.2
        // `best_output_size`) evaluated in Python on the same inputs.
        // Wan2.1 I2V-480P on a 16:9 image: 832x480 area -> 832 x 464 (lat 104 x 58).
        assert_eq!(i2v_size(1920, 1080, 480 * 832, 8, 2), (832, 464));
        // Portrait image: width and height swap roles.
        assert_eq!(i2v_size(1080, 1920, 480 * 832, 8, 2), (464, 832));
        // Square.
        assert_eq!(i2v_size(512, 512, 480 * 832, 8, 2), (624, 624));
        assert_eq!(i2v_size(1000, 333, 720 * 1280, 8, 2), (1648, 544));
        // TI2V-5B: 1280x704 area, multiples of 32.
        assert_eq!(best_output_size(1280, 704, 32, 32, 1280 * 704), (1280, 704));
        assert_eq!(
            best_output_size(1920, 1080, 32, 32, 1280 * 704),
            (1248, 704)
        );
        assert_eq!(best_output_size(704, 1280, 32, 32, 1280 * 704), (704, 1280));
        assert_eq!(best_output_size(1000, 333, 32, 32, 1280 * 704), (1632, 544));
    }
}
