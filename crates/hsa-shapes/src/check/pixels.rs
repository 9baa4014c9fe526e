//! Pixel colours: hue and chroma, and the named colour they are nearest.

use super::CheckerParams;
use crate::clip::Clip;
use crate::scene::Colour;

/// Hue (degrees, [0, 360)) and chroma of an RGB pixel in [0, 1].
#[inline]
pub fn hue_chroma(rgb: [f32; 3]) -> (f32, f32) {
    let [r, g, b] = rgb;
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let c = max - min;
    if c <= 0.0 {
        return (0.0, 0.0);
    }
    let h = if max == r {
        60.0 * ((g - b) / c)
    } else if max == g {
        60.0 * ((b - r) / c + 2.0)
    } else {
        60.0 * ((r - g) / c + 4.0)
    };
    (h.rem_euclid(360.0), c)
}

/// The named colour whose hue is nearest `hue`, if within `max_hue_distance`.
#[inline]
pub fn nearest_colour(params: &CheckerParams, hue: f32) -> Option<Colour> {
    let mut best = (f32::INFINITY, Colour::Red);
    for col in Colour::ALL {
        let d = (hue - col.hue()).abs();
        let d = d.min(360.0 - d);
        if d < best.0 {
            best = (d, col);
        }
    }
    (best.0 <= params.max_hue_distance).then_some(best.1)
}

/// The named colour of a pixel (values in [-1, 1]), or `None` for background-like pixels
/// (chroma below `min_chroma`).
#[inline]
pub fn classify_pixel(params: &CheckerParams, rgb: [f32; 3]) -> Option<Colour> {
    let (h, c) = hue_chroma(rgb.map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0)));
    if c < params.min_chroma {
        return None;
    }
    nearest_colour(params, h)
}

/// Per-pixel strength of `colour` in frame `t` (row-major): the chroma of pixels whose hue
/// is nearest the named hue (within `max_hue_distance`), 0 elsewhere.
pub fn colour_strength(params: &CheckerParams, clip: &Clip, t: usize, colour: Colour) -> Vec<f32> {
    let (h, w) = (clip.height(), clip.width());
    (0..h * w)
        .map(|i| {
            let rgb = clip
                .rgb(t, i / w, i % w)
                .map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0));
            let (hue, chroma) = hue_chroma(rgb);
            if nearest_colour(params, hue) == Some(colour) {
                chroma
            } else {
                0.0
            }
        })
        .collect()
}
