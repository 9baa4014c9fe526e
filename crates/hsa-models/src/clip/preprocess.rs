//! Image -> CLIP pixel tensor, as transformers' `CLIPImageProcessor` does it (the processor
//! diffusers' `WanImageToVideoPipeline` runs before its `image_encoder`).
//!
//! Steps (each switchable by `preprocessor_config.json`): resize so the shortest edge is `S`
//! (the long edge becomes `int(S·long/short)`) with PIL's resampling on 8-bit pixels
//! ([`super::resample`], bit-identical to Pillow), center crop to `crop_size` (top-left offset
//! `(in - crop) // 2`, zero padding where the image is smaller), rescale `u8 as f64 · 1/255`
//! rounded to f32, normalise `(x - mean) / std` in f32. The result equals transformers' PIL
//! backend (`CLIPImageProcessorPil`, what `CLIPImageProcessor` falls back to without
//! torchvision) exactly, given the same decoded RGB pixels.
//!
//! Differences to keep in mind:
//! * With torchvision installed, transformers 5's `CLIPImageProcessor` resizes with torchvision
//!   (antialiased bicubic on tensors) instead of PIL; resized images then differ by small amounts.
//!   An image already `S x S` is not resized by either, and matches exactly.
//! * The official Wan2.1 code (wan-spec §6.1) does not use this processor: it bicubic-resizes the
//!   `[-1, 1]` float image straight to 224 x 224 (torch `interpolate`, no crop, so the aspect
//!   ratio is not kept), maps to `[0, 1]` and normalises with the same OpenAI CLIP mean/std, in
//!   fp16. For non-square inputs the two see different pixels (the official path squeezes the
//!   whole image, diffusers' crops its center); for a 224 x 224 input they differ only by
//!   rounding. That path is [`wan_official_pixels`] (Wan's default in `hsa generate`).

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::Deserialize;

use super::resample::{resize, PilFilter};
use crate::{ModelError, Result};

/// OpenAI CLIP's normalisation mean (transformers `OPENAI_CLIP_MEAN`).
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP's normalisation std (transformers `OPENAI_CLIP_STD`).
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The resize step's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// Shortest edge to this many pixels, aspect ratio kept (`size: {"shortest_edge": S}`).
    ShortestEdge(u32),
    /// Exactly this size (`size: {"height": H, "width": W}`).
    Exact { height: u32, width: u32 },
}

/// A `CLIPImageProcessor` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessor {
    /// `None` when `do_resize` is false.
    pub resize: Option<ResizeTo>,
    pub resample: PilFilter,
    /// `(height, width)`; `None` when `do_center_crop` is false.
    pub center_crop: Option<(u32, u32)>,
    /// `None` when `do_rescale` is false.
    pub rescale_factor: Option<f64>,
    /// `(mean, std)` per channel; `None` when `do_normalize` is false.
    pub normalize: Option<([f64; 3], [f64; 3])>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeJson {
    Int(u32),
    Dict {
        shortest_edge: Option<u32>,
        longest_edge: Option<u32>,
        height: Option<u32>,
        width: Option<u32>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PerChannel {
    One(f64),
    Three([f64; 3]),
}

impl PerChannel {
    fn get(&self) -> [f64; 3] {
        match *self {
            Self::One(v) => [v; 3],
            Self::Three(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct ProcessorJson {
    do_resize: Option<bool>,
    size: Option<SizeJson>,
    resample: Option<i64>,
    do_center_crop: Option<bool>,
    crop_size: Option<SizeJson>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<PerChannel>,
    image_std: Option<PerChannel>,
}

impl ClipImageProcessor {
    /// transformers' `CLIPImageProcessor` defaults for a square model input of side `size`:
    /// shortest edge to `size`, bicubic, center crop `size x size`, 1/255, OpenAI mean/std
    /// (`size = 224` is the processor of every Wan2.1 I2V repo).
    pub fn clip(size: u32) -> Self {
        Self {
            resize: Some(ResizeTo::ShortestEdge(size)),
            resample: PilFilter::Bicubic,
            center_crop: Some((size, size)),
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some((OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
        }
    }

    /// Parses a `preprocessor_config.json`; missing fields take `CLIPImageProcessor`'s defaults.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let err = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let c: ProcessorJson =
            serde_json::from_str(text).map_err(|e| err(format!("malformed JSON: {e}")))?;
        let resize = if c.do_resize.unwrap_or(true) {
            Some(match c.size {
                None => ResizeTo::ShortestEdge(224),
                Some(SizeJson::Int(s)) => ResizeTo::ShortestEdge(s),
                Some(SizeJson::Dict {
                    shortest_edge: Some(s),
                    longest_edge: None,
                    height: None,
                    width: None,
                }) => ResizeTo::ShortestEdge(s),
                Some(SizeJson::Dict {
                    shortest_edge: None,
                    longest_edge: None,
                    height: Some(height),
                    width: Some(width),
                }) => ResizeTo::Exact { height, width },
                Some(_) => {
                    return Err(err(
                        "unsupported 'size': expected an integer, {\"shortest_edge\": S} or {\"height\": H, \"width\": W}"
                            .into(),
                    ))
                }
            })
        } else {
            None
        };
        let code = c.resample.unwrap_or(3);
        let resample = PilFilter::from_pil_code(code).ok_or_else(|| {
            err(format!(
                "unsupported resample {code} (supported PIL filters: 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)"
            ))
        })?;
        let center_crop = if c.do_center_crop.unwrap_or(true) {
            Some(match c.crop_size {
                None => (224, 224),
                Some(SizeJson::Int(s)) => (s, s),
                Some(SizeJson::Dict {
                    height: Some(h),
                    width: Some(w),
                    shortest_edge: None,
                    longest_edge: None,
                }) => (h, w),
                Some(_) => return Err(err(
                    "unsupported 'crop_size': expected an integer or {\"height\": H, \"width\": W}"
                        .into(),
                )),
            })
        } else {
            None
        };
        let rescale_factor = if c.do_rescale.unwrap_or(true) {
            Some(c.rescale_factor.unwrap_or(1.0 / 255.0))
        } else {
            None
        };
        let normalize = if c.do_normalize.unwrap_or(true) {
            let mean = c.image_mean.map_or(OPENAI_CLIP_MEAN, |m| m.get());
            let std = c.image_std.map_or(OPENAI_CLIP_STD, |s| s.get());
            Some((mean, std))
        } else {
            None
        };
        let p = Self {
            resize,
            resample,
            center_crop,
            rescale_factor,
            normalize,
        };
        p.validate().map_err(err)?;
        Ok(p)
    }

    /// Reads a `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::store::read_text(path)?;
        Self::from_json_str(&text, path)
    }

    /// Checks sizes are positive and the normalisation is finite with non-zero std.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let size_ok = match self.resize {
            None => true,
            Some(ResizeTo::ShortestEdge(s)) => s > 0,
            Some(ResizeTo::Exact { height, width }) => height > 0 && width > 0,
        };
        if !size_ok {
            return Err("resize size must be positive".into());
        }
        if matches!(self.center_crop, Some((h, w)) if h == 0 || w == 0) {
            return Err("crop_size must be positive".into());
        }
        if matches!(self.rescale_factor, Some(f) if !f.is_finite()) {
            return Err("rescale_factor must be finite".into());
        }
        if let Some((mean, std)) = &self.normalize {
            if mean.iter().chain(std).any(|v| !v.is_finite()) || std.contains(&0.0) {
                return Err("image_mean/image_std must be finite with a non-zero std".into());
            }
        }
        Ok(())
    }

    /// The resize target `(width, height)` for an input of `width x height`
    /// (transformers' `get_resize_output_image_size` with `default_to_square=False`).
    pub fn resize_target(&self, width: u32, height: u32) -> Option<(u32, u32)> {
        match self.resize? {
            ResizeTo::Exact { height, width } => Some((width, height)),
            ResizeTo::ShortestEdge(s) => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                // Python: int(s * long / short), a float64 division truncated.
                let new_long = (s as f64 * long as f64 / short as f64) as u32;
                Some(if width <= height {
                    (s, new_long)
                } else {
                    (new_long, s)
                })
            }
        }
    }

    /// The 8-bit image after the resize and the center crop (before rescaling).
    pub fn resize_and_crop(&self, img: &RgbImage) -> Result<RgbImage> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(ModelError::Input(format!("image is empty ({w}x{h})")));
        }
        let resized = match self.resize_target(w, h) {
            Some((tw, th)) if tw == 0 || th == 0 => {
                return Err(ModelError::Input(format!(
                    "resizing a {w}x{h} image gives an empty {tw}x{th} image"
                )))
            }
            Some((tw, th)) => resize(img, tw, th, self.resample),
            None => img.clone(),
        };
        Ok(match self.center_crop {
            Some((ch, cw)) => center_crop(&resized, ch, cw),
            None => resized,
        })
    }

    /// `img` -> `[1, 3, H, W]` f32 pixel values on `device`, equal to the processor's
    /// `pixel_values` for the same RGB pixels.
    pub fn preprocess(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        let img = self.resize_and_crop(img)?;
        let (w, h) = img.dimensions();
        let (w, h) = (w as usize, h as usize);
        let raw = img.as_raw();
        let mut out = vec![0f32; 3 * h * w];
        let norm = self.normalize.map(|(m, s)| {
            (
                m.map(|v| v as f32), // numpy: np.array(mean, dtype=float32)
                s.map(|v| v as f32),
            )
        });
        for c in 0..3 {
            let plane = &mut out[c * h * w..(c + 1) * h * w];
            for (i, v) in plane.iter_mut().enumerate() {
                let u = raw[i * 3 + c];
                // transformers: (u8 as float64 * factor) downcast to float32.
                let x = match self.rescale_factor {
                    Some(f) => (u as f64 * f) as f32,
                    None => u as f32,
                };
                *v = match &norm {
                    Some((m, s)) => (x - m[c]) / s[c],
                    None => x,
                };
            }
        }
        Ok(Tensor::from_vec(out, (1, 3, h, w), device)?)
    }
}

/// transformers' `center_crop` on an 8-bit image: top-left corner at `((H - ch) // 2, (W - cw) // 2)`;
/// where the image is smaller than the crop it is first centred on a zero canvas
/// (`ceil((crop - in) / 2)` before it).
pub fn center_crop(img: &RgbImage, crop_h: u32, crop_w: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if (w, h) == (crop_w, crop_h) {
        return img.clone();
    }
    // Image coordinate of the crop's first row/column: `(in - crop) // 2`, or, on a zero canvas
    // of the crop's size with the image `ceil((crop - in) / 2)` in, minus that padding.
    let offset = |size: u32, crop: u32| -> i64 {
        let (size, crop) = (size as i64, crop as i64);
        if size >= crop {
            (size - crop) / 2
        } else {
            -((crop - size + 1) / 2)
        }
    };
    let (top, left) = (offset(h, crop_h), offset(w, crop_w));
    let mut out = RgbImage::new(crop_w, crop_h);
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if sx >= 0 && sy >= 0 && sx < w as i64 && sy < h as i64 {
            *p = *img.get_pixel(sx as u32, sy as u32);
        }
    }
    out
}

/// An 8-bit RGB image as `[3, H, W]` f32 planes, each value mapped by `map`.
pub fn rgb_planes(img: &RgbImage, map: impl Fn(u8) -> f32, device: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let (w, h) = (w as usize, h as usize);
    let raw = img.as_raw();
    let mut out = vec![0f32; 3 * h * w];
    for c in 0..3 {
        for (i, v) in out[c * h * w..(c + 1) * h * w].iter_mut().enumerate() {
            *v = map(raw[i * 3 + c]);
        }
    }
    Ok(Tensor::from_vec(out, (3, h, w), device)?)
}

/// An 8-bit RGB image as the official Wan code reads it: `TF.to_tensor(img).sub_(0.5).div_(0.5)`,
/// `[3, H, W]` f32 in `[-1, 1]`.
pub fn signed_pixels(img: &RgbImage, device: &Device) -> Result<Tensor> {
    rgb_planes(img, |u| (u as f32 / 255.0 - 0.5) / 0.5, device)
}

/// The official Wan2.1 CLIP input: the whole `[-1, 1]` image bicubic-resized (PyTorch's
/// kernel, no crop, aspect ratio not kept) to `size x size`, mapped to `[0, 1]` and normalised
/// with the OpenAI CLIP mean/std; `[1, 3, size, size]` f32.
pub fn wan_official_pixels(img: &RgbImage, size: usize, device: &Device) -> Result<Tensor> {
    let x = crate::interpolate::bicubic_resize(&signed_pixels(img, device)?, size, size)?;
    let x = ((x * 0.5)? + 0.5)?;
    let mean = Tensor::new(&OPENAI_CLIP_MEAN.map(|v| v as f32), device)?.reshape((3, 1, 1))?;
    let std = Tensor::new(&OPENAI_CLIP_STD.map(|v| v as f32), device)?.reshape((3, 1, 1))?;
    Ok(x.broadcast_sub(&mean)?.broadcast_div(&std)?.unsqueeze(0)?)
}
