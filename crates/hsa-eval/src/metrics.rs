//! Quality metrics of a clip against a reference clip: PSNR, SSIM and motion preservation.
//!
//! Clips are `[C, F, H, W]` f32 in `[-1, 1]` (what the pipeline produces), so the data range is 2.
//! PSNR and SSIM are computed per frame and averaged over frames. SSIM follows Wang et al. (2004)
//! as scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
//! use_sample_covariance=False)` computes it, so numbers compare with the usual Python tooling
//! (the tests check it against scikit-image on fixtures).

use crate::{EvalError, Result};

/// Value range of the pipeline's clips ([-1, 1]).
pub const DATA_RANGE: f64 = 2.0;

/// PSNR reported for a frame identical to its reference (instead of infinity, so averages stay
/// finite and comparable).
pub const PSNR_CAP_DB: f64 = 100.0;

/// A borrowed `[C, F, H, W]` clip.
#[derive(Debug, Clone, Copy)]
pub struct ClipView<'a> {
    pub data: &'a [f32],
    pub channels: usize,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
}

impl<'a> ClipView<'a> {
    pub fn new(
        data: &'a [f32],
        channels: usize,
        frames: usize,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        if data.len() != channels * frames * height * width || data.is_empty() {
            return Err(EvalError::Invalid(format!(
                "clip buffer holds {} values, expected {channels}x{frames}x{height}x{width}",
                data.len()
            )));
        }
        Ok(Self {
            data,
            channels,
            frames,
            height,
            width,
        })
    }

    /// The `[H, W]` plane of channel `c`, frame `f`.
    pub fn plane(&self, c: usize, f: usize) -> &'a [f32] {
        let hw = self.height * self.width;
        let start = (c * self.frames + f) * hw;
        &self.data[start..start + hw]
    }

    fn same_shape(&self, other: &ClipView) -> Result<()> {
        let a = (self.channels, self.frames, self.height, self.width);
        let b = (other.channels, other.frames, other.height, other.width);
        if a != b {
            return Err(EvalError::Invalid(format!(
                "clip shapes differ: {a:?} against reference {b:?}"
            )));
        }
        Ok(())
    }
}

/// PSNR in dB of one frame (all channels) against the reference frame.
fn frame_psnr(x: &ClipView, r: &ClipView, f: usize) -> f64 {
    let mut se = 0.0f64;
    let mut n = 0usize;
    for c in 0..x.channels {
        for (a, b) in x.plane(c, f).iter().zip(r.plane(c, f)) {
            let d = (*a as f64) - (*b as f64);
            se += d * d;
            n += 1;
        }
    }
    let mse = se / n as f64;
    if mse == 0.0 {
        return PSNR_CAP_DB;
    }
    (10.0 * (DATA_RANGE * DATA_RANGE / mse).log10()).min(PSNR_CAP_DB)
}

/// Mean over frames of the per-frame PSNR (dB), capped at [`PSNR_CAP_DB`].
pub fn psnr(x: &ClipView, reference: &ClipView) -> Result<f64> {
    x.same_shape(reference)?;
    let sum: f64 = (0..x.frames).map(|f| frame_psnr(x, reference, f)).sum();
    Ok(sum / x.frames as f64)
}

/// Gaussian window of SSIM: sigma 1.5, truncated at 3.5 sigma (radius 5, an 11-tap window).
const SSIM_SIGMA: f64 = 1.5;
const SSIM_RADIUS: usize = 5;

fn gaussian_taps() -> [f64; 2 * SSIM_RADIUS + 1] {
    let mut k = [0.0; 2 * SSIM_RADIUS + 1];
    for (i, v) in k.iter_mut().enumerate() {
        let x = i as f64 - SSIM_RADIUS as f64;
        *v = (-0.5 * x * x / (SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// Index into `0..n` with half-sample symmetric reflection (`d c b a | a b c d | d c b a`), the
/// border rule of scipy.ndimage's `reflect` mode.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let mut m = i.rem_euclid(period);
    if m >= n {
        m = period - 1 - m;
    }
    m as usize
}

/// Separable Gaussian filter of an `[h, w]` plane.
fn blur(src: &[f64], h: usize, w: usize, taps: &[f64]) -> Vec<f64> {
    let r = SSIM_RADIUS as isize;
    let mut tmp = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for (k, t) in taps.iter().enumerate() {
                acc += t * src[y * w + reflect(x as isize + k as isize - r, w)];
            }
            tmp[y * w + x] = acc;
        }
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for (k, t) in taps.iter().enumerate() {
                acc += t * tmp[reflect(y as isize + k as isize - r, h) * w + x];
            }
            out[y * w + x] = acc;
        }
    }
    out
}

/// Mean SSIM of one `[h, w]` plane against its reference, over the interior that the window
/// covers without reflection (scikit-image crops the same border).
pub fn ssim_plane(x: &[f32], r: &[f32], h: usize, w: usize) -> Result<f64> {
    let pad = SSIM_RADIUS;
    if h <= 2 * pad || w <= 2 * pad {
        return Err(EvalError::Invalid(format!(
            "SSIM needs frames larger than {0}x{0} pixels, got {w}x{h}",
            2 * pad + 1
        )));
    }
    let taps = gaussian_taps();
    let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let rs: Vec<f64> = r.iter().map(|&v| v as f64).collect();
    let prod = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).collect::<Vec<_>>();
    let mu_x = blur(&xs, h, w, &taps);
    let mu_r = blur(&rs, h, w, &taps);
    let xx = blur(&prod(&xs, &xs), h, w, &taps);
    let rr = blur(&prod(&rs, &rs), h, w, &taps);
    let xr = blur(&prod(&xs, &rs), h, w, &taps);
    let c1 = (0.01 * DATA_RANGE).powi(2);
    let c2 = (0.03 * DATA_RANGE).powi(2);
    let mut sum = 0.0;
    let mut n = 0usize;
    for y in pad..h - pad {
        for x in pad..w - pad {
            let i = y * w + x;
            let (mx, mr) = (mu_x[i], mu_r[i]);
            let vx = xx[i] - mx * mx;
            let vr = rr[i] - mr * mr;
            let cov = xr[i] - mx * mr;
            let num = (2.0 * mx * mr + c1) * (2.0 * cov + c2);
            let den = (mx * mx + mr * mr + c1) * (vx + vr + c2);
            sum += num / den;
            n += 1;
        }
    }
    Ok(sum / n as f64)
}

/// Mean over frames of the per-frame SSIM (itself the mean over channels).
pub fn ssim(x: &ClipView, reference: &ClipView) -> Result<f64> {
    x.same_shape(reference)?;
    let mut total = 0.0;
    for f in 0..x.frames {
        let mut frame = 0.0;
        for c in 0..x.channels {
            frame += ssim_plane(x.plane(c, f), reference.plane(c, f), x.height, x.width)?;
        }
        total += frame / x.channels as f64;
    }
    Ok(total / x.frames as f64)
}

/// Mean squared difference of consecutive frames: how much the clip moves.
pub fn motion_energy(x: &ClipView) -> f64 {
    if x.frames < 2 {
        return 0.0;
    }
    let mut se = 0.0f64;
    let mut n = 0usize;
    for c in 0..x.channels {
        for f in 1..x.frames {
            for (a, b) in x.plane(c, f).iter().zip(x.plane(c, f - 1)) {
                let d = (*a as f64) - (*b as f64);
                se += d * d;
                n += 1;
            }
        }
    }
    se / n as f64
}

/// Motion preservation: the clip's frame-difference energy over the reference's (1 = as much
/// motion as the reference; below 1 = motion lost, e.g. frozen regions). `None` when the
/// reference does not move at all.
pub fn motion_ratio(x: &ClipView, reference: &ClipView) -> Result<Option<f64>> {
    x.same_shape(reference)?;
    let e_ref = motion_energy(reference);
    Ok((e_ref > 0.0).then(|| motion_energy(x) / e_ref))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(data: &[f32], c: usize, f: usize, h: usize, w: usize) -> ClipView<'_> {
        ClipView::new(data, c, f, h, w).unwrap()
    }

    #[test]
    fn psnr_of_a_constant_offset_matches_its_closed_form() {
        let (c, f, h, w) = (3, 2, 4, 5);
        let r: Vec<f32> = (0..c * f * h * w)
            .map(|i| (i as f32 * 0.37).sin() * 0.5)
            .collect();
        let x: Vec<f32> = r.iter().map(|v| v + 0.1).collect();
        let got = psnr(&clip(&x, c, f, h, w), &clip(&r, c, f, h, w)).unwrap();
        // MSE = 0.01 -> 10 log10(4 / 0.01) = 26.0206 dB.
        assert!((got - 26.020_599_913).abs() < 1e-4, "{got}");
        assert_eq!(
            psnr(&clip(&r, c, f, h, w), &clip(&r, c, f, h, w)).unwrap(),
            PSNR_CAP_DB
        );
    }

    #[test]
    fn ssim_of_identical_frames_is_one_and_of_flat_frames_follows_luminance_term() {
        let (h, w) = (16, 16);
        let r: Vec<f32> = (0..h * w)
            .map(|i| ((i * 7 % 13) as f32 / 13.0) - 0.5)
            .collect();
        assert!((ssim_plane(&r, &r, h, w).unwrap() - 1.0).abs() < 1e-12);
        // Flat frames: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
        let a = vec![0.2f32; h * w];
        let b = vec![-0.3f32; h * w];
        let c1 = (0.01 * DATA_RANGE).powi(2);
        let (fa, fb) = (0.2f32 as f64, -0.3f32 as f64);
        let want = (2.0 * fa * fb + c1) / (fa * fa + fb * fb + c1);
        assert!((ssim_plane(&a, &b, h, w).unwrap() - want).abs() < 1e-9);
    }

    #[test]
    fn reflect_is_half_sample_symmetric() {
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
    }

    #[test]
    fn motion_ratio_sees_a_frozen_clip() {
        let (c, f, h, w) = (1, 3, 2, 2);
        let moving: Vec<f32> = (0..c * f * h * w).map(|i| (i / 4) as f32 * 0.5).collect();
        let frozen = vec![0.0f32; c * f * h * w];
        let r = clip(&moving, c, f, h, w);
        assert_eq!(motion_ratio(&r, &r).unwrap(), Some(1.0));
        assert_eq!(
            motion_ratio(&clip(&frozen, c, f, h, w), &r).unwrap(),
            Some(0.0)
        );
        assert_eq!(motion_ratio(&r, &clip(&frozen, c, f, h, w)).unwrap(), None);
    }

    #[test]
    fn shape_mismatch_and_tiny_frames_are_errors() {
        let a = vec![0.0f32; 12];
        let b = vec![0.0f32; 12];
        assert!(psnr(&clip(&a, 1, 3, 2, 2), &clip(&b, 1, 1, 3, 4)).is_err());
        assert!(ssim(&clip(&a, 1, 3, 2, 2), &clip(&b, 1, 3, 2, 2)).is_err());
        assert!(ClipView::new(&a, 1, 2, 2, 2).is_err());
    }
}
