//! [`Clip`]: an RGB video in the model's layout.

use crate::rng::Rng;
use crate::{Result, ShapesError};
use candle_core::{DType, Tensor};
use std::path::Path;

/// An RGB clip stored channel-major as `[3, frames, height, width]` (the DiT's
/// `[C, F, H, W]` layout for one sample), values in [-1, 1] (-1 is black, 1 full intensity).
/// Model outputs may leave the range; the checker clamps.
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    frames: usize,
    height: usize,
    width: usize,
    data: Vec<f32>,
}

impl Clip {
    /// A black clip.
    pub fn new(frames: usize, height: usize, width: usize) -> Self {
        Self {
            frames,
            height,
            width,
            data: vec![-1.0; 3 * frames * height * width],
        }
    }

    /// Wraps `[3, F, H, W]` data in [-1, 1] (e.g. a model output for one sample).
    pub fn from_cfhw(frames: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != 3 * frames * height * width {
            return Err(ShapesError::ClipShape(format!(
                "{} values for [3, {frames}, {height}, {width}]",
                data.len()
            )));
        }
        Ok(Self {
            frames,
            height,
            width,
            data,
        })
    }

    /// From a model's video tensor: `[3, F, H, W]`, or a batch of one `[1, 3, F, H, W]`
    /// (a sample or a clean-clip prediction), any float dtype, on any device. Values are kept
    /// as they are; the checker clamps.
    pub fn from_tensor(x: &Tensor) -> Result<Self> {
        let x = match x.dims() {
            [1, _, _, _, _] => x.squeeze(0)?,
            [_, _, _, _] => x.clone(),
            d => {
                return Err(ShapesError::ClipShape(format!(
                    "tensor of shape {d:?}, expected [3, F, H, W] or [1, 3, F, H, W]"
                )))
            }
        };
        let (c, f, h, w) = x.dims4()?;
        if c != 3 {
            return Err(ShapesError::ClipShape(format!(
                "{c} channels, expected 3 (RGB)"
            )));
        }
        let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::from_cfhw(f, h, w, data)
    }

    /// From interleaved 8-bit frames `[F, H, W, 3]` (0 maps to -1, 255 to 1).
    pub fn from_u8_fhwc(frames: usize, height: usize, width: usize, rgb: &[u8]) -> Result<Self> {
        if rgb.len() != 3 * frames * height * width {
            return Err(ShapesError::ClipShape(format!(
                "{} bytes for [{frames}, {height}, {width}, 3]",
                rgb.len()
            )));
        }
        let mut clip = Self::new(frames, height, width);
        let plane = frames * height * width;
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                clip.data[c * plane + i] = v as f32 / 127.5 - 1.0;
            }
        }
        Ok(clip)
    }

    pub fn frames(&self) -> usize {
        self.frames
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn width(&self) -> usize {
        self.width
    }
    /// `[3, frames, height, width]`.
    pub fn dims(&self) -> [usize; 4] {
        [3, self.frames, self.height, self.width]
    }
    /// The `[3, F, H, W]` values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    #[inline]
    fn plane(&self) -> usize {
        self.frames * self.height * self.width
    }

    /// The pixel at frame `t`, row `y`, column `x` in [-1, 1].
    #[inline]
    pub fn rgb(&self, t: usize, y: usize, x: usize) -> [f32; 3] {
        let i = (t * self.height + y) * self.width + x;
        let p = self.plane();
        [self.data[i], self.data[p + i], self.data[2 * p + i]]
    }

    #[inline]
    pub fn set_rgb(&mut self, t: usize, y: usize, x: usize, v: [f32; 3]) {
        let i = (t * self.height + y) * self.width + x;
        let p = self.plane();
        self.data[i] = v[0];
        self.data[p + i] = v[1];
        self.data[2 * p + i] = v[2];
    }

    /// Interleaved 8-bit frames `[F, H, W, 3]` (clamped, rounded).
    pub fn to_u8_fhwc(&self) -> Vec<u8> {
        let p = self.plane();
        let mut out = Vec::with_capacity(3 * p);
        for i in 0..p {
            for c in 0..3 {
                out.push(to_u8(self.data[c * p + i]));
            }
        }
        out
    }

    /// One frame as interleaved 8-bit `[H, W, 3]`.
    pub fn frame_u8(&self, t: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 * self.height * self.width);
        for y in 0..self.height {
            for x in 0..self.width {
                out.extend(self.rgb(t, y, x).map(to_u8));
            }
        }
        out
    }

    /// A copy with i.i.d. Gaussian noise of standard deviation `sigma` (in [-1, 1] units)
    /// added to every value, not clamped.
    pub fn with_gaussian_noise(&self, sigma: f32, seed: u64) -> Clip {
        let mut rng = Rng::stream(seed, 0x9015E);
        let mut out = self.clone();
        for pair in out.data.chunks_mut(2) {
            let (a, b) = rng.normal_pair();
            pair[0] += sigma * a;
            if let Some(v) = pair.get_mut(1) {
                *v += sigma * b;
            }
        }
        out
    }

    /// A copy blurred by a 3x3 box filter in every frame (edges replicated).
    pub fn box_blur3(&self) -> Clip {
        let (h, w) = (self.height, self.width);
        let mut out = self.clone();
        let mut rows = vec![0.0f32; h * w];
        for plane in 0..3 * self.frames {
            let src = &self.data[plane * h * w..(plane + 1) * h * w];
            for y in 0..h {
                for x in 0..w {
                    let (l, r) = (x.saturating_sub(1), (x + 1).min(w - 1));
                    rows[y * w + x] = src[y * w + l] + src[y * w + x] + src[y * w + r];
                }
            }
            let dst = &mut out.data[plane * h * w..(plane + 1) * h * w];
            for y in 0..h {
                let (u, d) = (y.saturating_sub(1), (y + 1).min(h - 1));
                for x in 0..w {
                    dst[y * w + x] = (rows[u * w + x] + rows[y * w + x] + rows[d * w + x]) / 9.0;
                }
            }
        }
        out
    }

    /// Writes all frames side by side (1 px white gaps), each pixel scaled up `scale` times,
    /// as one PNG.
    pub fn save_png_strip(&self, path: &Path, scale: usize) -> std::io::Result<()> {
        let scale = scale.max(1);
        let (fw, fh) = (self.width * scale, self.height * scale);
        let gap = 1;
        let w = self.frames * fw + self.frames.saturating_sub(1) * gap;
        let mut img = vec![255u8; w * fh * 3];
        for t in 0..self.frames {
            let frame = self.frame_u8(t);
            for y in 0..fh {
                for x in 0..fw {
                    let src = ((y / scale) * self.width + x / scale) * 3;
                    let dst = (y * w + t * (fw + gap) + x) * 3;
                    img[dst..dst + 3].copy_from_slice(&frame[src..src + 3]);
                }
            }
        }
        crate::png::write_rgb(path, w, fh, &img)
    }
}

#[inline]
fn to_u8(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_round_trip() {
        let bytes: Vec<u8> = (0..2 * 3 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let clip = Clip::from_u8_fhwc(2, 3, 4, &bytes).unwrap();
        assert_eq!(clip.to_u8_fhwc(), bytes);
        assert_eq!(clip.dims(), [3, 2, 3, 4]);
        assert!(Clip::from_cfhw(2, 3, 4, vec![0.0; 5]).is_err());
    }

    #[test]
    fn from_tensor_reads_the_model_layout() {
        let dev = candle_core::Device::Cpu;
        let data: Vec<f32> = (0..3 * 2 * 3 * 4).map(|i| i as f32 / 72.0 - 0.5).collect();
        let batch = Tensor::from_vec(data.clone(), (1, 3, 2, 3, 4), &dev).unwrap();
        let clip = Clip::from_tensor(&batch).unwrap();
        assert_eq!(clip.dims(), [3, 2, 3, 4]);
        // Pixel (t, y, x) of channel c sits at ((c * F + t) * H + y) * W + x.
        let [r, g, b] = clip.rgb(1, 2, 3);
        assert_eq!(
            [r, g, b],
            [23, 47, 71].map(|i: usize| i as f32 / 72.0 - 0.5)
        );
        let single = batch.squeeze(0).unwrap().to_dtype(DType::BF16).unwrap();
        let from_bf16 = Clip::from_tensor(&single).unwrap();
        for (a, b) in from_bf16.data().iter().zip(&data) {
            assert!((a - b).abs() < 1e-2);
        }
        let two = Tensor::cat(&[&batch, &batch], 0).unwrap();
        assert!(matches!(
            Clip::from_tensor(&two),
            Err(ShapesError::ClipShape(_))
        ));
        let four = Tensor::zeros((4, 2, 3, 4), DType::F32, &dev).unwrap();
        assert!(matches!(
            Clip::from_tensor(&four),
            Err(ShapesError::ClipShape(_))
        ));
        let flat = Tensor::zeros((3, 2, 3), DType::F32, &dev).unwrap();
        assert!(matches!(
            Clip::from_tensor(&flat),
            Err(ShapesError::ClipShape(_))
        ));
    }

    #[test]
    fn blur_matches_direct_sum() {
        let mut c = Clip::new(2, 5, 7);
        for (i, v) in c.data_mut().iter_mut().enumerate() {
            *v = ((i * 37) % 11) as f32 / 11.0;
        }
        let b = c.box_blur3();
        let (h, w) = (5isize, 7isize);
        for t in 0..2 {
            for y in 0..h {
                for x in 0..w {
                    let mut s = [0.0f32; 3];
                    for dy in -1..=1 {
                        for dx in -1..=1 {
                            let p = c.rgb(
                                t,
                                (y + dy).clamp(0, h - 1) as usize,
                                (x + dx).clamp(0, w - 1) as usize,
                            );
                            for k in 0..3 {
                                s[k] += p[k] / 9.0;
                            }
                        }
                    }
                    let got = b.rgb(t, y as usize, x as usize);
                    for k in 0..3 {
                        assert!((got[k] - s[k]).abs() < 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn blur_keeps_constants() {
        let mut c = Clip::new(1, 4, 4);
        c.data_mut().iter_mut().for_each(|v| *v = 0.25);
        assert!(c.box_blur3().data().iter().all(|v| (v - 0.25).abs() < 1e-6));
    }
}
