//! The loss curve as a PNG: raw losses in light grey, a moving average in blue, log-scaled
//! vertical axis (flow-matching losses fall over an order of magnitude early on).

use std::path::Path;

/// Renders `losses` into an RGB image of `width` x `height` pixels.
pub fn loss_curve(losses: &[f32], width: usize, height: usize) -> Vec<u8> {
    let mut px = vec![255u8; width * height * 3];
    if losses.is_empty() {
        return px;
    }
    let logs: Vec<f64> = losses.iter().map(|&l| (l.max(1e-6) as f64).ln()).collect();
    let (lo, hi) = logs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let span = (hi - lo).max(1e-9);
    let (mx, my) = (4usize, 4usize);
    let (w, h) = (width - 2 * mx, height - 2 * my);
    let to_xy = |i: usize, v: f64| {
        let x = mx + i * (w - 1) / (logs.len() - 1).max(1);
        let y = my + ((hi - v) / span * (h - 1) as f64).round() as usize;
        (x, y.min(height - 1))
    };
    let mut put = |x: usize, y: usize, c: [u8; 3]| {
        let i = (y * width + x) * 3;
        px[i..i + 3].copy_from_slice(&c);
    };
    // Axes.
    for x in mx..mx + w {
        put(x, my + h - 1, [0, 0, 0]);
    }
    for y in my..my + h {
        put(mx, y, [0, 0, 0]);
    }
    for (i, &v) in logs.iter().enumerate() {
        let (x, y) = to_xy(i, v);
        put(x, y, [200, 200, 200]);
    }
    let k = (logs.len() / 50).max(1);
    let mut prev: Option<(usize, usize)> = None;
    for i in 0..logs.len() {
        let a = i.saturating_sub(k);
        let avg = logs[a..=i].iter().sum::<f64>() / (i - a + 1) as f64;
        let (x, y) = to_xy(i, avg);
        if let Some((px0, py0)) = prev {
            // Vertical run between consecutive points keeps the line connected.
            for yy in py0.min(y)..=py0.max(y) {
                put(x.max(px0), yy, [30, 90, 200]);
            }
        }
        put(x, y, [30, 90, 200]);
        prev = Some((x, y));
    }
    px
}

/// Writes the loss curve PNG.
pub fn write_loss_curve(losses: &[f32], path: &Path) -> std::io::Result<()> {
    let (w, h) = (480, 240);
    crate::png::write_rgb(path, w, h, &loss_curve(losses, w, h))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_falling_loss_draws_from_top_left_to_bottom_right() {
        let losses: Vec<f32> = (0..200).map(|i| 1.0 / (1.0 + i as f32 * 0.1)).collect();
        let (w, h) = (100, 60);
        let px = super::loss_curve(&losses, w, h);
        let blue_rows: Vec<usize> = (0..w)
            .filter_map(|x| {
                (0..h).find(|&y| px[(y * w + x) * 3 + 2] == 200 && px[(y * w + x) * 3] == 30)
            })
            .collect();
        assert!(blue_rows.first().unwrap() < blue_rows.last().unwrap());
    }
}
