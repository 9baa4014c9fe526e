//! Small raster line plots for reports (the Pareto plot): axes with ticks, one coloured line
//! with markers per method, a legend, text from the public-domain 8x8 bitmap font. Enough to
//! read a quality-runtime trade-off without a plotting stack.

use std::path::Path;

use font8x8::legacy::BASIC_LEGACY;

/// One line: a method's (x, y) points, drawn in x order.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: [u8; 3],
    pub points: Vec<(f64, f64)>,
}

/// One plot: title, axis labels, series; `x_range` fixes the horizontal axis (else from data).
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: Option<(f64, f64)>,
    pub series: Vec<Series>,
}

/// Distinct colours for up to eight series (then they repeat).
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

/// An RGB image being drawn on.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            rgb: vec![255; width * height * 3],
        }
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line `thick` pixels wide.
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: i64) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
        for s in 0..=steps {
            let x = x0 + (x1 - x0) * s / steps;
            let y = y0 + (y1 - y0) * s / steps;
            for dy in 0..thick {
                for dx in 0..thick {
                    self.put(x + dx - thick / 2, y + dy - thick / 2, c);
                }
            }
        }
    }

    pub fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, c);
            }
        }
    }

    /// Text with its top-left corner at (x, y); characters outside ASCII become '?'.
    pub fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            let code = if ch.is_ascii() {
                ch as usize
            } else {
                '?' as usize
            };
            let glyph = BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.put(x + k as i64 * 8 + col, y + row as i64, c);
                    }
                }
            }
        }
    }

    /// Pixel width of `s` in the 8x8 font.
    pub fn text_width(s: &str) -> i64 {
        s.chars().count() as i64 * 8
    }

    /// Writes a compressed PNG (the image crate's encoder: plots are mostly white, so this is
    /// ~100x smaller than stored blocks).
    pub fn write_png(&self, path: &Path) -> std::io::Result<()> {
        image::save_buffer_with_format(
            path,
            &self.rgb,
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(std::io::Error::other)
    }
}

/// About five round tick values covering `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{v:.decimals$}")
}

fn data_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    (lo <= hi).then(|| {
        let pad = ((hi - lo) * 0.08).max(hi.abs().max(1e-3) * 0.02);
        (lo - pad, hi + pad)
    })
}

/// Draws `panel` into the rectangle at (ox, oy) of size (w, h).
pub fn draw_panel(canvas: &mut Canvas, panel: &Panel, ox: i64, oy: i64, w: i64, h: i64) {
    let black = [0, 0, 0];
    let grey = [225, 225, 225];
    let (left, right, top, bottom) = (64, 16, 28, 40);
    let (px0, py0) = (ox + left, oy + top);
    let (pw, ph) = (w - left - right, h - top - bottom);
    canvas.text(
        ox + (w - Canvas::text_width(&panel.title)) / 2,
        oy + 8,
        &panel.title,
        black,
    );
    let all = || panel.series.iter().flat_map(|s| s.points.iter());
    let (x_lo, x_hi) = panel
        .x_range
        .or_else(|| data_range(all().map(|p| p.0)))
        .unwrap_or((0.0, 1.0));
    let (y_lo, y_hi) = data_range(all().map(|p| p.1)).unwrap_or((0.0, 1.0));
    let to_px = |x: f64, y: f64| {
        let fx = (x - x_lo) / (x_hi - x_lo).max(1e-12);
        let fy = (y - y_lo) / (y_hi - y_lo).max(1e-12);
        (
            px0 + (fx * (pw - 1) as f64).round() as i64,
            py0 + ph - 1 - (fy * (ph - 1) as f64).round() as i64,
        )
    };
    let xt = ticks(x_lo, x_hi);
    let yt = ticks(y_lo, y_hi);
    let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    for &t in &xt {
        let (x, _) = to_px(t, y_lo);
        canvas.line((x, py0), (x, py0 + ph - 1), grey, 1);
        let l = tick_label(t, xstep);
        canvas.text(x - Canvas::text_width(&l) / 2, py0 + ph + 4, &l, black);
    }
    for &t in &yt {
        let (_, y) = to_px(x_lo, t);
        canvas.line((px0, y), (px0 + pw - 1, y), grey, 1);
        let l = tick_label(t, ystep);
        canvas.text(px0 - 6 - Canvas::text_width(&l), y - 4, &l, black);
    }
    canvas.line((px0, py0 + ph - 1), (px0 + pw - 1, py0 + ph - 1), black, 1);
    canvas.line((px0, py0), (px0, py0 + ph - 1), black, 1);
    canvas.text(
        px0 + (pw - Canvas::text_width(&panel.x_label)) / 2,
        py0 + ph + 18,
        &panel.x_label,
        black,
    );
    canvas.text(ox + 4, oy + top - 12, &panel.y_label, black);
    for s in &panel.series {
        let mut pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let px: Vec<(i64, i64)> = pts.iter().map(|&(x, y)| to_px(x, y)).collect();
        for pair in px.windows(2) {
            canvas.line(pair[0], pair[1], s.color, 2);
        }
        for &(x, y) in &px {
            canvas.fill_rect(x - 3, y - 3, 7, 7, s.color);
        }
    }
}

/// Panels side by side with one legend row below them.
pub fn render(panels: &[Panel], panel_w: usize, panel_h: usize) -> Canvas {
    let legend_h = 24;
    let mut canvas = Canvas::new(panel_w * panels.len().max(1), panel_h + legend_h);
    for (i, p) in panels.iter().enumerate() {
        draw_panel(
            &mut canvas,
            p,
            (i * panel_w) as i64,
            0,
            panel_w as i64,
            panel_h as i64,
        );
    }
    let mut x = 16i64;
    let y = panel_h as i64 + 6;
    if let Some(first) = panels.first() {
        for s in &first.series {
            canvas.fill_rect(x, y + 1, 14, 6, s.color);
            canvas.text(x + 18, y, &s.name, [0, 0, 0]);
            x += 18 + Canvas::text_width(&s.name) + 24;
        }
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 1.0),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let t = ticks(23.7, 31.2);
        assert_eq!(t.first().copied(), Some(24.0));
        assert!(t.iter().all(|v| (23.7..=31.2).contains(v)));
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(30.0, 2.0), "30");
    }

    #[test]
    fn a_series_is_drawn_in_its_colour_and_text_is_dark() {
        let panel = Panel {
            title: "PSNR".into(),
            x_label: "runtime".into(),
            y_label: "dB".into(),
            x_range: Some((0.0, 1.0)),
            series: vec![Series {
                name: "hsa".into(),
                color: PALETTE[3],
                points: vec![(0.25, 20.0), (0.5, 25.0), (0.75, 30.0)],
            }],
        };
        let c = render(&[panel], 320, 240);
        let count = |col: [u8; 3]| c.rgb.chunks(3).filter(|p| *p == col).count();
        assert!(count(PALETTE[3]) > 100, "line and markers drawn");
        assert!(count([0, 0, 0]) > 200, "axes and text drawn");
        assert_eq!(c.rgb.len(), 320 * 264 * 3);
    }
}
