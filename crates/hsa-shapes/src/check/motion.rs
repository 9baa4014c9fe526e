//! Motion: of a whole clip (energy), and of one object's trajectory (class, velocity, heading).

use super::CheckerParams;
use crate::clip::Clip;
use crate::scene::{Axis, Direction, Motion};

/// Mean squared difference of consecutive frames over every value, in [-1, 1] units
/// (0 for a clip of fewer than two frames). Zero exactly when nothing changes.
pub fn motion_energy(clip: &Clip) -> f32 {
    let [_, f, h, w] = clip.dims();
    if f < 2 {
        return 0.0;
    }
    let data = clip.data();
    let fs = h * w;
    let mut sum = 0.0f64;
    for c in 0..3 {
        for t in 1..f {
            let a = &data[(c * f + t - 1) * fs..(c * f + t) * fs];
            let b = &data[(c * f + t) * fs..(c * f + t + 1) * fs];
            sum += a
                .iter()
                .zip(b)
                .map(|(x, y)| ((y - x) as f64).powi(2))
                .sum::<f64>();
        }
    }
    (sum / (3 * (f - 1) * fs) as f64) as f32
}

/// Classifies a world-space trajectory `(frame, x, y)` of a clip whose scale is `s`
/// (`min(width, height)`) and whose frames span `frames`. `None` with fewer than 2 points.
pub fn classify_motion(
    params: &CheckerParams,
    points: &[(usize, f32, f32)],
    s: f32,
    frames: usize,
) -> Option<Motion> {
    if points.len() < 2 {
        return None;
    }
    // Reversal strength along one axis: the shorter leg to/from the extreme point.
    let reversal = |get: fn(&(usize, f32, f32)) -> f32| -> f32 {
        let p: Vec<f32> = points.iter().map(get).collect();
        let (first, last) = (p[0], p[p.len() - 1]);
        let mut best = 0.0f32;
        for &pk in &p[1..p.len() - 1] {
            let a = pk - first;
            let b = last - pk;
            if a * b < 0.0 {
                best = best.max(a.abs().min(b.abs()));
            }
        }
        best
    };
    let bx = reversal(|q| q.1);
    let by = reversal(|q| q.2);
    if bx.max(by) >= params.bounce_min_leg * s {
        return Some(Motion::Bouncing(if bx >= by {
            Axis::Horizontal
        } else {
            Axis::Vertical
        }));
    }
    let (vx, vy) = least_squares_velocity(points)?;
    let span = frames.saturating_sub(1) as f32;
    let travel = (vx * vx + vy * vy).sqrt() * span;
    if travel < params.still_max_travel * s {
        Some(Motion::Still)
    } else {
        Some(Motion::Moving(Direction::from_vector(vx, vy)))
    }
}

/// Least-squares velocity (px per frame) of a trajectory `(frame, x, y)`; `None` when all
/// points are in one frame.
pub fn least_squares_velocity(points: &[(usize, f32, f32)]) -> Option<(f32, f32)> {
    let n = points.len() as f32;
    let mt = points.iter().map(|q| q.0 as f32).sum::<f32>() / n;
    let mx = points.iter().map(|q| q.1).sum::<f32>() / n;
    let my = points.iter().map(|q| q.2).sum::<f32>() / n;
    let stt = points
        .iter()
        .map(|q| (q.0 as f32 - mt).powi(2))
        .sum::<f32>();
    if stt <= 0.0 {
        return None;
    }
    let slope = |get: fn(&(usize, f32, f32)) -> f32, m: f32| {
        points
            .iter()
            .map(|q| (q.0 as f32 - mt) * (get(q) - m))
            .sum::<f32>()
            / stt
    };
    Some((slope(|q| q.1, mx), slope(|q| q.2, my)))
}

/// Distance in pixels between two centroids `(x, y)`: how far an object stepped between two
/// frames (the checker's jumps, the generator's fastest step).
pub fn distance_px(a: (f32, f32), b: (f32, f32)) -> f32 {
    (b.0 - a.0).hypot(b.1 - a.1)
}

/// Graded direction agreement of an object asked to move in `direction`: the cosine between
/// that direction and the trajectory's least-squares velocity (1 along it, 0 across, -1
/// against; 0 for a trajectory that does not move). `None` with fewer than two frames.
///
/// Why beside the exact direction class: a model whose objects move in directions unrelated
/// to their captions averages 0 here, and one that starts to follow them moves this mean long
/// before enough objects land in the right 45-degree sector to move the direction score.
pub fn heading(points: &[(usize, f32, f32)], direction: Direction) -> Option<f32> {
    let (vx, vy) = least_squares_velocity(points)?;
    let (ux, uy) = direction.unit();
    let speed = (vx * vx + vy * vy).sqrt();
    Some(if speed > 0.0 {
        (vx * ux + vy * uy) / speed
    } else {
        0.0
    })
}
