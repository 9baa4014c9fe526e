//! The procedural renderer: [`SceneSpec`] + seed -> [`Clip`].
//!
//! Geometry is in pixels with pixel `(x, y)` centred at `(x + 0.5, y + 0.5)`; sizes and
//! travel distances are fractions of `S = min(width, height)` and of the whole clip, so a
//! caption means the same thing at every resolution and frame count. Shapes are drawn with
//! one-pixel anti-aliasing from their signed distance (`coverage = clamp(0.5 - sd, 0, 1)`).

use crate::clip::Clip;
use crate::rng::{mix, Rng};
use crate::scene::{Axis, BgColour, Motion, Pan, Pattern, SceneSpec, Shape};
use crate::{Result, ShapesError};

/// Clip size. Default: 32x32, 17 frames (4k+1 like Wan); any size and count work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClipConfig {
    pub width: usize,
    pub height: usize,
    pub frames: usize,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            width: 32,
            height: 32,
            frames: 17,
        }
    }
}

impl ClipConfig {
    pub fn new(width: usize, height: usize, frames: usize) -> Self {
        Self {
            width,
            height,
            frames,
        }
    }

    /// `size` x `size`, `frames` frames.
    pub fn square(size: usize, frames: usize) -> Self {
        Self::new(size, size, frames)
    }

    /// `S = min(width, height)`, the unit of sizes and distances.
    pub fn scale(&self) -> f32 {
        self.width.min(self.height) as f32
    }

    /// Needs at least 8x8 pixels and one frame.
    pub fn validate(&self) -> Result<()> {
        if self.width < 8 || self.height < 8 || self.frames == 0 {
            return Err(ShapesError::ClipShape(format!(
                "clips need at least 8x8 pixels and 1 frame, got {}x{}x{}",
                self.width, self.height, self.frames
            )));
        }
        Ok(())
    }

    /// Frame `t` as a fraction of the clip, 0 at the first frame and 1 at the last.
    pub fn progress(&self, t: usize) -> f32 {
        if self.frames <= 1 {
            0.0
        } else {
            t as f32 / (self.frames - 1) as f32
        }
    }
}

/// Object half-extent (radius; half the side of squares and triangles), fraction of S, for
/// scenes of 1, 2 and 3 objects (smaller when crowded, so objects need not overlap). At
/// 32x32 objects are 6.4 to 11.5 px across: large enough for the shape check.
pub const HALF_EXTENT: [(f32, f32); 3] = [(0.12, 0.18), (0.11, 0.15), (0.10, 0.13)];
/// Distance a moving object covers over the clip, fraction of S, for scenes of 1, 2 and 3
/// objects (for a bouncing object: its longer leg). At 32x32: 8 to 16 px.
pub const TRAVEL: [(f32, f32); 3] = [(0.30, 0.50), (0.28, 0.42), (0.25, 0.35)];
/// When a bouncing object reverses, fraction of the clip.
pub const BOUNCE_TURN: (f32, f32) = (0.35, 0.65);
/// Distance the camera covers over the clip when panning, fraction of S (4.8 px at 32x32):
/// slow next to the objects.
pub const PAN_TRAVEL: f32 = 0.15;
/// Inner radius of a ring over its outer radius.
pub const RING_INNER: f32 = 0.5;
/// Largest chroma (max - min of RGB in [0, 1]) of any background tone. Object colours have
/// chroma >= 0.72, so the checker can separate them by chroma alone.
pub const BG_MAX_CHROMA: f32 = 0.18;
/// Objects are placed (up to `LAYOUT_TRIES` draws) so their bounding boxes stay this many
/// pixels apart in every frame.
pub const OBJECT_GAP: f32 = 1.0;
const LAYOUT_TRIES: usize = 400;

/// The farthest the world moves an object on screen between neighbouring frames (px): the
/// fastest bouncing object (the longest travel, turning as near mid-clip as
/// [`BOUNCE_TURN`] allows, so twice the travel's speed) plus the camera pan. About 4.6 px at
/// 32x32 and 9 frames; 0 for a single frame. The checker's jump threshold is a multiple of it.
pub fn fastest_step_px(cfg: &ClipConfig) -> f32 {
    let longest = TRAVEL.iter().map(|t| t.1).fold(0.0, f32::max);
    let turn = 0.5f32.clamp(BOUNCE_TURN.0, BOUNCE_TURN.1);
    let bounce_speed = longest / turn.max(1.0 - turn);
    (bounce_speed + PAN_TRAVEL) * cfg.scale() * cfg.progress(1)
}

/// Where the camera is at frame `t` relative to frame 0, in pixels. Screen position =
/// world position - camera offset.
pub fn camera_offset(pan: Option<Pan>, cfg: &ClipConfig, t: usize) -> (f32, f32) {
    match pan {
        None => (0.0, 0.0),
        Some(p) => {
            let (ux, uy) = p.unit();
            let d = PAN_TRAVEL * cfg.scale() * cfg.progress(t);
            (ux * d, uy * d)
        }
    }
}

/// HSV (hue in degrees, s and v in [0, 1]) to RGB in [0, 1].
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h = h.rem_euclid(360.0) / 60.0;
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

/// The drawn state of one object.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectLayout {
    pub shape: Shape,
    /// Half-extent in pixels.
    pub half_extent: f32,
    /// Fill colour, RGB in [0, 1].
    pub rgb: [f32; 3],
    /// Screen position of the shape's box centre in every frame (pixels, camera applied).
    pub track: Vec<(f32, f32)>,
}

#[derive(Clone, Debug, PartialEq)]
enum BgKind {
    Plain,
    /// t = 0.5 + dot(p - origin, dir) / length
    Gradient {
        dir: (f32, f32),
        origin: (f32, f32),
        length: f32,
    },
    /// Stripes across `normal`, `period` px, phase offset in px.
    Striped {
        normal: (f32, f32),
        period: f32,
        phase: f32,
    },
    Checkered {
        period: f32,
        phase: (f32, f32),
    },
    /// Two octaves of smooth value noise of cell size `cell`.
    Textured {
        cell: f32,
        seed: u64,
    },
}

/// Background parameters: two tones and a pattern, evaluated in world coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct BackgroundLayout {
    /// RGB in [0, 1]; `Plain` uses only `tone_a`.
    pub tone_a: [f32; 3],
    pub tone_b: [f32; 3],
    kind: BgKind,
}

/// Every nuisance parameter of one render (derived from the seed).
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub objects: Vec<ObjectLayout>,
    pub background: BackgroundLayout,
    /// Camera offset per frame.
    pub camera: Vec<(f32, f32)>,
    /// Frames in which two objects' boxes come closer than [`OBJECT_GAP`] (0 almost always).
    pub overlap_frames: usize,
}

fn muted_tone(rng: &mut Rng, hue: Option<f32>, v: f32) -> [f32; 3] {
    match hue {
        None => [v; 3],
        Some(h) => {
            let s = (BG_MAX_CHROMA / v).min(0.6) * rng.range(0.5, 1.0);
            hsv_to_rgb(h + rng.range(-6.0, 6.0), s, v)
        }
    }
}

fn background_layout(
    rng: &mut Rng,
    colour: BgColour,
    pattern: Pattern,
    s: f32,
) -> BackgroundLayout {
    let hue = match colour {
        BgColour::Gray => None,
        BgColour::Tint(c) => Some(c.hue()),
    };
    let (tone_a, tone_b) = if pattern == Pattern::Plain {
        let v = rng.range(0.3, 0.8);
        let t = muted_tone(rng, hue, v);
        (t, t)
    } else {
        let dark = rng.range(0.22, 0.42);
        let light = rng.range(0.58, 0.85);
        let a = muted_tone(rng, hue, dark);
        let b = muted_tone(rng, hue, light);
        if rng.chance(0.5) {
            (a, b)
        } else {
            (b, a)
        }
    };
    let kind = match pattern {
        Pattern::Plain => BgKind::Plain,
        Pattern::Gradient => {
            let a = rng.range(0.0, std::f32::consts::TAU);
            BgKind::Gradient {
                dir: (a.cos(), a.sin()),
                origin: (rng.range(0.3, 0.7) * s, rng.range(0.3, 0.7) * s),
                length: rng.range(1.0, 1.5) * s,
            }
        }
        Pattern::Striped => {
            let a = rng.pick(&[0.0f32, 45.0, 90.0, 135.0]).to_radians();
            let period = rng.range(0.2, 0.4) * s;
            BgKind::Striped {
                normal: (a.cos(), a.sin()),
                period,
                phase: rng.range(0.0, period),
            }
        }
        Pattern::Checkered => {
            let period = rng.range(0.25, 0.5) * s;
            BgKind::Checkered {
                period,
                phase: (rng.range(0.0, period), rng.range(0.0, period)),
            }
        }
        Pattern::Textured => BgKind::Textured {
            cell: rng.range(0.15, 0.3) * s,
            seed: rng.next_u64(),
        },
    };
    BackgroundLayout {
        tone_a,
        tone_b,
        kind,
    }
}

/// Anti-aliased square wave in [0, 1]: 1 on the first half of each period.
#[inline]
fn soft_square(u: f32, period: f32) -> f32 {
    let f = (u / period).rem_euclid(1.0);
    // Signed distance (in periods) to the nearest edge, positive inside the "on" half.
    let d = if f < 0.5 {
        f.min(0.5 - f)
    } else {
        -(f - 0.5).min(1.0 - f)
    };
    (0.5 + d * period).clamp(0.0, 1.0)
}

#[inline]
fn lattice(ix: i64, iy: i64, seed: u64) -> f32 {
    let h = mix(
        seed ^ (ix as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        iy as u64,
    );
    (h >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

#[inline]
fn value_noise(x: f32, y: f32, seed: u64) -> f32 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i64, fy as i64);
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = lattice(ix, iy, seed);
    let b = lattice(ix + 1, iy, seed);
    let c = lattice(ix, iy + 1, seed);
    let d = lattice(ix + 1, iy + 1, seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

impl BackgroundLayout {
    /// Mix weight of `tone_b` at world point (u, v).
    fn weight(&self, u: f32, v: f32) -> f32 {
        match self.kind {
            BgKind::Plain => 0.0,
            BgKind::Gradient {
                dir,
                origin,
                length,
            } => (0.5 + ((u - origin.0) * dir.0 + (v - origin.1) * dir.1) / length).clamp(0.0, 1.0),
            BgKind::Striped {
                normal,
                period,
                phase,
            } => soft_square(u * normal.0 + v * normal.1 + phase, period),
            BgKind::Checkered { period, phase } => {
                let a = soft_square(u + phase.0, period);
                let b = soft_square(v + phase.1, period);
                a * (1.0 - b) + (1.0 - a) * b
            }
            BgKind::Textured { cell, seed } => {
                let n = 0.67 * value_noise(u / cell, v / cell, seed)
                    + 0.33 * value_noise(2.0 * u / cell, 2.0 * v / cell, seed ^ 0xABCD);
                // Stretch the noise (which rarely leaves [0.25, 0.75]) to the full range.
                ((n - 0.5) * 2.2 + 0.5).clamp(0.0, 1.0)
            }
        }
    }

    /// RGB in [0, 1] at world point (u, v).
    pub fn colour_at(&self, u: f32, v: f32) -> [f32; 3] {
        let w = self.weight(u, v);
        [
            self.tone_a[0] + (self.tone_b[0] - self.tone_a[0]) * w,
            self.tone_a[1] + (self.tone_b[1] - self.tone_a[1]) * w,
            self.tone_a[2] + (self.tone_b[2] - self.tone_a[2]) * w,
        ]
    }
}

/// Signed distance (px, negative inside) from `(px, py)` (relative to the box centre) to a
/// shape of half-extent `r`.
#[inline]
pub fn shape_sd(shape: Shape, px: f32, py: f32, r: f32) -> f32 {
    match shape {
        Shape::Circle => (px * px + py * py).sqrt() - r,
        Shape::Ring => {
            let mid = 0.5 * (1.0 + RING_INNER) * r;
            let half_width = 0.5 * (1.0 - RING_INNER) * r;
            ((px * px + py * py).sqrt() - mid).abs() - half_width
        }
        Shape::Square => {
            let qx = px.abs() - r;
            let qy = py.abs() - r;
            let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
            outside + qx.max(qy).min(0.0)
        }
        Shape::Triangle => {
            // Apex (0, -r), base from (-r, r) to (r, r); side normals (+-2, -1)/sqrt(5).
            const K: f32 = 0.447_213_6; // 1/sqrt(5)
            let base = py - r;
            let side = (2.0 * px.abs() - (py + r)) * K;
            base.max(side)
        }
    }
}

fn object_track(
    rng: &mut Rng,
    motion: Motion,
    travel: f32,
    cfg: &ClipConfig,
    camera: &[(f32, f32)],
) -> Vec<(f32, f32)> {
    let bounce = match motion {
        Motion::Bouncing(_) => {
            let sign = if rng.chance(0.5) { 1.0 } else { -1.0 };
            let k = rng.range(BOUNCE_TURN.0, BOUNCE_TURN.1);
            Some((sign, k, travel / k.max(1.0 - k)))
        }
        _ => None,
    };
    (0..cfg.frames)
        .map(|t| {
            let p = cfg.progress(t);
            let (wx, wy) = match motion {
                Motion::Still => (0.0, 0.0),
                Motion::Moving(d) => {
                    let (ux, uy) = d.unit();
                    (ux * travel * p, uy * travel * p)
                }
                Motion::Bouncing(axis) => {
                    let (sign, k, speed) = bounce.unwrap();
                    let a = sign * speed * (k - (p - k).abs());
                    match axis {
                        Axis::Horizontal => (a, 0.0),
                        Axis::Vertical => (0.0, a),
                    }
                }
            };
            (wx - camera[t].0, wy - camera[t].1)
        })
        .collect()
}

/// Samples every nuisance parameter of a render of `spec` from `seed`.
pub fn layout(spec: &SceneSpec, cfg: &ClipConfig, seed: u64) -> Layout {
    let s = cfg.scale();
    let mut rng = Rng::stream(seed, 0x1A7007);
    let camera: Vec<(f32, f32)> = (0..cfg.frames)
        .map(|t| camera_offset(spec.camera, cfg, t))
        .collect();
    let background =
        background_layout(&mut rng, spec.background.colour, spec.background.pattern, s);
    let crowd = spec.objects.len().clamp(1, 3) - 1;
    let mut objects: Vec<ObjectLayout> = spec
        .objects
        .iter()
        .map(|o| {
            let (lo, hi) = HALF_EXTENT[crowd];
            let half_extent = rng.range(lo, hi) * s;
            let rgb = hsv_to_rgb(
                o.colour.hue() + rng.range(-4.0, 4.0),
                rng.range(0.85, 1.0),
                rng.range(0.85, 1.0),
            );
            let (lo, hi) = TRAVEL[crowd];
            let travel = rng.range(lo, hi) * s;
            let track = object_track(&mut rng, o.motion, travel, cfg, &camera);
            ObjectLayout {
                shape: o.shape,
                half_extent,
                rgb,
                track,
            }
        })
        .collect();

    // Ranges for the start position that keep each object inside the frame throughout.
    let ranges: Vec<[(f32, f32); 2]> = objects
        .iter()
        .map(|o| {
            let m = o.half_extent + 0.5;
            let axis = |size: f32, get: fn(&(f32, f32)) -> f32| {
                let lo = o.track.iter().map(get).fold(f32::INFINITY, f32::min);
                let hi = o.track.iter().map(get).fold(f32::NEG_INFINITY, f32::max);
                let (a, b) = (m - lo, size - m - hi);
                if a <= b {
                    (a, b)
                } else {
                    let c = 0.5 * (a + b);
                    (c, c)
                }
            };
            [
                axis(cfg.width as f32, |p| p.0),
                axis(cfg.height as f32, |p| p.1),
            ]
        })
        .collect();
    let overlaps = |starts: &[(f32, f32)]| -> usize {
        (0..cfg.frames)
            .filter(|&t| {
                (0..objects.len()).any(|i| {
                    (0..i).any(|j| {
                        let (a, b) = (&objects[i], &objects[j]);
                        let lim = a.half_extent + b.half_extent + OBJECT_GAP;
                        let dx = (starts[i].0 + a.track[t].0) - (starts[j].0 + b.track[t].0);
                        let dy = (starts[i].1 + a.track[t].1) - (starts[j].1 + b.track[t].1);
                        dx.abs() < lim && dy.abs() < lim
                    })
                })
            })
            .count()
    };
    let mut best: Option<(usize, Vec<(f32, f32)>)> = None;
    for _ in 0..LAYOUT_TRIES {
        let starts: Vec<(f32, f32)> = ranges
            .iter()
            .map(|[rx, ry]| (rng.range(rx.0, rx.1), rng.range(ry.0, ry.1)))
            .collect();
        let n = overlaps(&starts);
        if best.as_ref().is_none_or(|b| n < b.0) {
            best = Some((n, starts));
        }
        if n == 0 {
            break;
        }
    }
    let (overlap_frames, starts) = best.expect("at least one try");
    for (o, st) in objects.iter_mut().zip(&starts) {
        for p in &mut o.track {
            p.0 += st.0;
            p.1 += st.1;
        }
    }
    Layout {
        objects,
        background,
        camera,
        overlap_frames,
    }
}

/// Calls `paint(y·w + x, coverage)` for every pixel of a `w` x `h` frame that object `o`
/// covers in frame `t` (coverage in (0, 1], one-pixel anti-aliasing from its signed
/// distance). Objects are composited in order, each over what is already there.
pub(crate) fn for_each_covered(
    o: &ObjectLayout,
    t: usize,
    w: usize,
    h: usize,
    mut paint: impl FnMut(usize, f32),
) {
    let (ox, oy) = o.track[t];
    let r = o.half_extent;
    let x0 = ((ox - r - 1.0).floor().max(0.0)) as usize;
    let x1 = ((ox + r + 1.0).ceil().max(0.0) as usize).min(w);
    let y0 = ((oy - r - 1.0).floor().max(0.0)) as usize;
    let y1 = ((oy + r + 1.0).ceil().max(0.0) as usize).min(h);
    for y in y0..y1 {
        for x in x0..x1 {
            let sd = shape_sd(o.shape, x as f32 + 0.5 - ox, y as f32 + 0.5 - oy, r);
            let a = (0.5 - sd).clamp(0.0, 1.0);
            if a > 0.0 {
                paint(y * w + x, a);
            }
        }
    }
}

/// Draws a layout.
pub fn render_layout(layout: &Layout, cfg: &ClipConfig) -> Clip {
    let (w, h) = (cfg.width, cfg.height);
    let mut clip = Clip::new(cfg.frames, h, w);
    let mut frame = vec![[0f32; 3]; w * h];
    for t in 0..cfg.frames {
        let (cx, cy) = layout.camera[t];
        for y in 0..h {
            for x in 0..w {
                frame[y * w + x] = layout
                    .background
                    .colour_at(x as f32 + 0.5 + cx, y as f32 + 0.5 + cy);
            }
        }
        for o in &layout.objects {
            for_each_covered(o, t, w, h, |i, a| {
                for (p, &v) in frame[i].iter_mut().zip(&o.rgb) {
                    *p += (v - *p) * a;
                }
            });
        }
        for y in 0..h {
            for x in 0..w {
                clip.set_rgb(t, y, x, frame[y * w + x].map(|v| v * 2.0 - 1.0));
            }
        }
    }
    clip
}

/// Renders `spec` at `cfg`; every nuisance parameter comes from `seed`. Deterministic:
/// the same (spec, cfg, seed) gives the same clip bit for bit.
pub fn render(spec: &SceneSpec, cfg: &ClipConfig, seed: u64) -> Clip {
    render_layout(&layout(spec, cfg, seed), cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_square_is_half_on() {
        let period = 8.0;
        let n = 800;
        let mean: f32 = (0..n)
            .map(|i| soft_square(i as f32 * period / n as f32, period))
            .sum::<f32>()
            / n as f32;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!(soft_square(2.0, period) > 0.99);
        assert!(soft_square(6.0, period) < 0.01);
        assert!((soft_square(0.0, period) - 0.5).abs() < 0.01);
        assert!((soft_square(4.0, period) - 0.5).abs() < 0.01);
    }

    #[test]
    fn hsv_primaries() {
        assert_eq!(hsv_to_rgb(0.0, 1.0, 1.0), [1.0, 0.0, 0.0]);
        assert_eq!(hsv_to_rgb(120.0, 1.0, 1.0), [0.0, 1.0, 0.0]);
        assert_eq!(hsv_to_rgb(240.0, 1.0, 1.0), [0.0, 0.0, 1.0]);
        let o = hsv_to_rgb(30.0, 1.0, 1.0);
        assert!((o[1] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn shape_areas() {
        // Coverage integrated over a fine grid matches the nominal areas.
        let r = 10.0;
        for (shape, area) in [
            (Shape::Circle, std::f32::consts::PI * r * r),
            (Shape::Square, 4.0 * r * r),
            (Shape::Triangle, 2.0 * r * r),
            (
                Shape::Ring,
                std::f32::consts::PI * r * r * (1.0 - RING_INNER * RING_INNER),
            ),
        ] {
            let mut a = 0.0;
            for y in -12..12 {
                for x in -12..12 {
                    a += (0.5 - shape_sd(shape, x as f32 + 0.5, y as f32 + 0.5, r)).clamp(0.0, 1.0);
                }
            }
            assert!((a - area).abs() / area < 0.03, "{shape:?}: {a} vs {area}");
        }
    }
}
