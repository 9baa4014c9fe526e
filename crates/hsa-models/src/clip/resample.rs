//! Pillow's convolution resize for 8-bit RGB images (`Image.resize` with BICUBIC, BILINEAR,
//! LANCZOS, HAMMING or BOX; Pillow's `libImaging/Resample.c`), restated so that the result is
//! bit-identical to PIL's, which is what transformers' `CLIPImageProcessor` resizes with.
//!
//! Per axis, output pixel `i` covers the input interval centred at `(i + 0.5)·scale` with
//! `scale = in / out`; the filter is stretched by `max(scale, 1)` (antialiasing when
//! downscaling), its taps are normalised to sum 1 in f64 and then rounded to 22-bit fixed point.
//! The horizontal pass runs first and rounds (and clamps) to u8, then the vertical pass.

use image::RgbImage;

/// The fixed-point fraction bits of Pillow's 8-bit path (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// A PIL resampling filter with the convolution implementation (`Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    /// `BOX` (4): each output pixel averages the input pixels it covers.
    Box,
    /// `BILINEAR` (2): triangle filter, support 1.
    Bilinear,
    /// `HAMMING` (5): Hamming-windowed sinc, support 1.
    Hamming,
    /// `BICUBIC` (3): Keys cubic with `a = -0.5`, support 2 (CLIP's default).
    Bicubic,
    /// `LANCZOS` (1): Lanczos-3.
    Lanczos,
}

impl PilFilter {
    /// From PIL's integer code (`preprocessor_config.json` `resample`); `None` for NEAREST (0),
    /// which PIL implements differently, and unknown codes.
    pub fn from_pil_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }

    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                1.0
            } else {
                let x = x * std::f64::consts::PI;
                x.sin() / x
            }
        }
        match self {
            Self::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow writes these two as C float literals.
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// Taps of one axis: for output `i`, input pixels `start[i] .. start[i] + len[i]` with weights
/// `coeffs[i·ksize ..]` in fixed point.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    ksize: usize,
    coeffs: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the full input range.
fn taps(in_size: usize, out_size: usize, filter: PilFilter) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut coeffs = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for i in 0..out_size {
        let center = (i as f64 + 0.5) * scale;
        // C's (int) truncates toward zero; negatives are clamped to 0 either way.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut total = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.weight(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            total += w;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let w = if total != 0.0 { kx / total } else { *kx };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            // Round half away from zero, then truncate (C's (int)).
            coeffs[i * ksize + x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        start.push(xmin);
        len.push(n);
    }
    Taps {
        start,
        len,
        ksize,
        coeffs,
    }
}

/// Pillow's `clip8`: drop the fraction bits (arithmetic shift = floor) and clamp to u8.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `img` to `width x height` exactly as Pillow's `Image.resize(size, filter)` does for
/// an RGB image (no `box`, no `reducing_gap`). Same size returns a copy, as in Pillow.
/// Both target sides must be positive.
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: PilFilter) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    if (in_w, in_h) == (width, height) {
        return img.clone();
    }
    let (in_w, in_h, out_w, out_h) = (
        in_w as usize,
        in_h as usize,
        width as usize,
        height as usize,
    );
    let src = img.as_raw();
    let round = 1i32 << (PRECISION_BITS - 1);

    // Horizontal pass over every input row (Pillow only does the rows the vertical taps use;
    // the result is the same).
    let (tmp, tmp_w) = if out_w != in_w {
        let t = taps(in_w, out_w, filter);
        let mut out = vec![0u8; out_w * in_h * 3];
        for y in 0..in_h {
            let row = &src[y * in_w * 3..(y + 1) * in_w * 3];
            for x in 0..out_w {
                let k = &t.coeffs[x * t.ksize..x * t.ksize + t.len[x]];
                let mut acc = [round; 3];
                for (j, &w) in k.iter().enumerate() {
                    let p = &row[(t.start[x] + j) * 3..(t.start[x] + j) * 3 + 3];
                    for c in 0..3 {
                        acc[c] = acc[c].wrapping_add((p[c] as i32).wrapping_mul(w));
                    }
                }
                let o = (y * out_w + x) * 3;
                for c in 0..3 {
                    out[o + c] = clip8(acc[c]);
                }
            }
        }
        (out, out_w)
    } else {
        (src.to_vec(), in_w)
    };

    // Vertical pass.
    let out = if out_h != in_h {
        let t = taps(in_h, out_h, filter);
        let mut out = vec![0u8; tmp_w * out_h * 3];
        for y in 0..out_h {
            let k = &t.coeffs[y * t.ksize..y * t.ksize + t.len[y]];
            for x in 0..tmp_w {
                let mut acc = [round; 3];
                for (j, &w) in k.iter().enumerate() {
                    let o = ((t.start[y] + j) * tmp_w + x) * 3;
                    for c in 0..3 {
                        acc[c] = acc[c].wrapping_add((tmp[o + c] as i32).wrapping_mul(w));
                    }
                }
                let o = (y * tmp_w + x) * 3;
                for c in 0..3 {
                    out[o + c] = clip8(acc[c]);
                }
            }
        }
        out
    } else {
        tmp
    };
    RgbImage::from_raw(width, height, out).expect("buffer sized for the output image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        for filter in [
            PilFilter::Box,
            PilFilter::Bilinear,
            PilFilter::Hamming,
            PilFilter::Bicubic,
            PilFilter::Lanczos,
        ] {
            let img = RgbImage::from_pixel(13, 7, image::Rgb([200, 0, 255]));
            for (w, h) in [(5, 3), (40, 19), (13, 30)] {
                let out = resize(&img, w, h, filter);
                assert_eq!(out.dimensions(), (w, h));
                assert!(
                    out.pixels().all(|p| p.0 == [200, 0, 255]),
                    "{filter:?} {w}x{h}"
                );
            }
        }
    }

    #[test]
    fn bicubic_taps_sum_to_one() {
        let t = taps(45, 49, PilFilter::Bicubic);
        for i in 0..49 {
            let s: i64 = t.coeffs[i * t.ksize..i * t.ksize + t.len[i]]
                .iter()
                .map(|&c| c as i64)
                .sum();
            assert!((s - (1 << PRECISION_BITS)).abs() <= 4, "{i}: {s}");
        }
    }
}
