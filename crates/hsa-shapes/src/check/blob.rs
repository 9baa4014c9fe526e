//! Per-frame blobs of one colour, their moments, and the shape those moments say.

use super::CheckerParams;
use crate::scene::Shape;

/// Features of one frame's blob.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Blob {
    pub pixels: usize,
    /// Centroid (pixel centres at +0.5).
    pub centroid: (f32, f32),
    /// Inclusive box: (x0, y0, x1, y1).
    pub bbox: (usize, usize, usize, usize),
    /// pixels / box area: square ~1, circle ~0.79, ring ~0.59, triangle ~0.5.
    pub fill: f32,
    /// Mean colour strength within 0.18 x box side of the centroid over the blob's mean
    /// strength: ~0 for a ring (its hole has radius 0.25 x box side), >= ~1 otherwise.
    pub centre_ratio: f32,
    /// (pixels below the box's middle row - pixels above) / pixels: ~0.5 for an upright
    /// triangle, ~0 for the symmetric shapes.
    pub balance: f32,
    /// Mean extent along the two diagonals over the mean box side: ~2 for a square,
    /// ~sqrt(2) for a circle.
    pub diagonal: f32,
}

impl Blob {
    pub fn box_side(&self) -> f32 {
        let (x0, y0, x1, y1) = self.bbox;
        ((x1 - x0 + 1) as f32).max((y1 - y0 + 1) as f32)
    }
}

/// The largest 8-connected blob of the pixels whose `strength` (row-major `w` x `h`) is at
/// least `threshold`, if it has at least `min_pixels` pixels.
pub fn largest_blob(
    strength: &[f32],
    threshold: f32,
    w: usize,
    h: usize,
    min_pixels: usize,
) -> Option<Blob> {
    let on = |i: usize| strength[i] >= threshold;
    let mut seen = vec![false; w * h];
    let mut stack = Vec::new();
    let mut best: Vec<usize> = Vec::new();
    let mut comp = Vec::new();
    for start in 0..w * h {
        if !on(start) || seen[start] {
            continue;
        }
        comp.clear();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            comp.push(i);
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if on(j) && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if comp.len() > best.len() {
            std::mem::swap(&mut best, &mut comp);
        }
    }
    if best.len() < min_pixels.max(1) {
        return None;
    }
    let (mut sx, mut sy, mut mass) = (0.0f32, 0.0f32, 0.0f32);
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    let (mut d0, mut d1, mut e0, mut e1) = (isize::MAX, isize::MIN, isize::MAX, isize::MIN);
    for &i in &best {
        let (x, y) = (i % w, i / w);
        let (s, d) = ((x + y) as isize, x as isize - y as isize);
        d0 = d0.min(s);
        d1 = d1.max(s);
        e0 = e0.min(d);
        e1 = e1.max(d);
        sx += x as f32 + 0.5;
        sy += y as f32 + 0.5;
        mass += strength[i];
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let n = best.len() as f32;
    let centroid = (sx / n, sy / n);
    let (bw, bh) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
    let side = bw.max(bh);
    let mid = (y0 + y1 + 1) as f32 * 0.5;
    let balance = best
        .iter()
        .map(|&i| ((i / w) as f32 + 0.5 - mid).clamp(-0.5, 0.5) * 2.0)
        .sum::<f32>()
        / n;
    // Colour strength around the centroid: a ring's hole, anything else's body.
    let rad = (0.18 * side).max(0.75);
    let (mut inside, mut centre) = (0usize, 0.0f32);
    let (cx, cy) = centroid;
    let ys = ((cy - rad - 0.5).floor().max(0.0) as usize)..=((cy + rad).ceil() as usize).min(h - 1);
    for y in ys {
        let xs =
            ((cx - rad - 0.5).floor().max(0.0) as usize)..=((cx + rad).ceil() as usize).min(w - 1);
        for x in xs {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            if dx * dx + dy * dy <= rad * rad {
                inside += 1;
                centre += strength[y * w + x];
            }
        }
    }
    let centre_ratio = if inside == 0 || mass <= 0.0 {
        1.0
    } else {
        (centre / inside as f32) / (mass / n)
    };
    Some(Blob {
        pixels: best.len(),
        centroid,
        bbox: (x0, y0, x1, y1),
        fill: n / (bw * bh),
        centre_ratio,
        balance,
        diagonal: 0.5 * ((d1 - d0 + 1) + (e1 - e0 + 1)) as f32 / (0.5 * (bw + bh)),
    })
}

/// Shape of one blob from its moments: a hole at the centroid means a ring; more mass in
/// the lower half (or a fill near 0.5) means an upright triangle; otherwise box fill plus
/// diagonal extent separates squares (~1 + ~1.9) from circles (~0.79 + ~1.41).
pub fn classify_shape(params: &CheckerParams, blob: &Blob) -> Shape {
    if blob.centre_ratio < params.ring_centre_ratio {
        Shape::Ring
    } else if blob.balance >= params.triangle_min_balance || blob.fill < params.triangle_max_fill {
        Shape::Triangle
    } else if blob.fill + blob.diagonal >= params.square_min_score {
        Shape::Square
    } else {
        Shape::Circle
    }
}
