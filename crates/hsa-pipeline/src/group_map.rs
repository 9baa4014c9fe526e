//! The group map as a PNG heat map: each token's step budget, frame by frame (paper Fig. 6
//! style), so a user sees where the steps went. Frames are laid out left to right; brighter
//! means more model evaluations; conditioning tokens that never move are grey.

use std::path::Path;

use hsa_core::GroupMap;

use crate::io::write_atomic;
use crate::{PipelineError, Result};

/// Viridis-like colour stops (dark blue -> teal -> yellow).
const STOPS: [[f64; 3]; 5] = [
    [68.0, 1.0, 84.0],
    [59.0, 82.0, 139.0],
    [33.0, 145.0, 140.0],
    [94.0, 201.0, 98.0],
    [253.0, 231.0, 37.0],
];

fn colour(t: f64) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let mut c = [0u8; 3];
    for k in 0..3 {
        c[k] = (STOPS[i][k] * (1.0 - f) + STOPS[i + 1][k] * f).round() as u8;
    }
    c
}

/// RGB image (width, height, pixels) of the map with `cell` pixels per token.
pub fn render(map: &GroupMap, cell: usize) -> (usize, usize, Vec<u8>) {
    let (f, h, w) = (map.frames, map.height, map.width);
    let gap = 2;
    let width = f * w * cell + (f.saturating_sub(1)) * gap;
    let height = h * cell;
    let mut px = vec![255u8; width * height * 3];
    let movable: Vec<u32> = map
        .step_counts
        .iter()
        .zip(&map.groups)
        .filter(|(_, g)| g.is_some())
        .map(|(c, _)| *c)
        .collect();
    let (lo, hi) = movable
        .iter()
        .fold((u32::MAX, 0), |(lo, hi), &c| (lo.min(c), hi.max(c)));
    for n in 0..map.step_counts.len() {
        let (fi, r, col) = (n / (h * w), (n % (h * w)) / w, n % w);
        let rgb = match map.groups[n] {
            None if !movable.is_empty() => [128, 128, 128],
            _ => {
                let span = (hi.saturating_sub(lo)).max(1) as f64;
                colour((map.step_counts[n].saturating_sub(lo)) as f64 / span)
            }
        };
        let x0 = fi * (w * cell + gap) + col * cell;
        for y in r * cell..(r + 1) * cell {
            for x in x0..x0 + cell {
                let i = (y * width + x) * 3;
                px[i..i + 3].copy_from_slice(&rgb);
            }
        }
    }
    (width, height, px)
}

/// Writes the heat map PNG atomically. Cells are sized so a frame is at least ~96 px wide.
pub fn write_png(map: &GroupMap, path: &Path) -> Result<()> {
    let cell = (96 / map.width.max(1)).clamp(1, 16);
    let (w, h, px) = render(map, cell);
    write_atomic(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| PipelineError::Io {
            path: tmp.to_path_buf(),
            source: e,
        })?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let png_err =
            |e: png::EncodingError| PipelineError::Invalid(format!("PNG encoding failed: {e}"));
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(&px).map_err(png_err)?;
        writer.finish().map_err(png_err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_tokens_are_brighter_and_frozen_tokens_grey() {
        let map = GroupMap {
            frames: 2,
            height: 1,
            width: 2,
            step_counts: vec![40, 10, 20, 6],
            groups: vec![Some(0), Some(2), Some(1), None],
            strides: vec![1, 2, 4],
        };
        let (w, h, px) = render(&map, 1);
        assert_eq!((w, h), (2 * 2 + 2, 1));
        let at = |x: usize| [px[x * 3], px[x * 3 + 1], px[x * 3 + 2]];
        assert_eq!(at(0), [253, 231, 37]); // 40 steps: the maximum
        assert_eq!(at(1), [68, 1, 84]); // 10 steps: the minimum over movable tokens
        assert_eq!(at(5), [128, 128, 128]); // frozen
    }
}
