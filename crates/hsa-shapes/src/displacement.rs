//! Per-pixel displacement of a rendered clip: where the content of each pixel goes next.
//!
//! The trainer's motion head learns to predict this field beside the velocity (as VideoJAM
//! predicts optical flow beside the pixels, arXiv 2502.02492), so the DiT's last hidden state
//! has to say how things move, not only where they are. The field is exact: it comes from the
//! layout's tracks and camera, not from an estimate on the pixels.

use crate::render::{for_each_covered, ClipConfig, Layout};

/// The displacement field `[2, F, H, W]` (x then y, pixels per frame, image axes: x right,
/// y down) of `layout` rendered at `cfg`.
///
/// Frame `t` holds the motion from `t` to `t + 1`; the last frame repeats the motion into it
/// (from `F - 2` to `F - 1`), and a one-frame clip is still. The background moves against the
/// camera; objects are composited over it in draw order with the renderer's anti-aliased
/// coverage, so a pixel half covered by an object holds the mean of the two motions.
pub fn displacement_field(layout: &Layout, cfg: &ClipConfig) -> Vec<f32> {
    let (w, h, frames) = (cfg.width, cfg.height, cfg.frames);
    let plane = w * h;
    let mut field = vec![0f32; 2 * frames * plane];
    if frames < 2 {
        return field;
    }
    let step = |points: &[(f32, f32)], t: usize| {
        let a = t.min(frames - 2);
        (points[a + 1].0 - points[a].0, points[a + 1].1 - points[a].1)
    };
    let mut frame = vec![(0f32, 0f32); plane];
    for t in 0..frames {
        // The camera moves by `step`, so the world (background) moves by minus that on screen.
        let (cx, cy) = step(&layout.camera, t);
        frame.fill((-cx, -cy));
        for o in &layout.objects {
            let (ox, oy) = step(&o.track, t);
            for_each_covered(o, t, w, h, |i, a| {
                let p = &mut frame[i];
                p.0 += (ox - p.0) * a;
                p.1 += (oy - p.1) * a;
            });
        }
        for (i, &(dx, dy)) in frame.iter().enumerate() {
            field[t * plane + i] = dx;
            field[(frames + t) * plane + i] = dy;
        }
    }
    field
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{layout, parse_caption};

    fn field_of(caption: &str, cfg: &ClipConfig, seed: u64) -> (Layout, Vec<f32>) {
        let lay = layout(&parse_caption(caption).unwrap(), cfg, seed);
        let field = displacement_field(&lay, cfg);
        (lay, field)
    }

    #[test]
    fn a_still_scene_has_no_motion() {
        let cfg = ClipConfig::square(16, 5);
        let (_, field) = field_of(
            "a red circle staying still on a blue striped background",
            &cfg,
            3,
        );
        assert_eq!(field.len(), 2 * 5 * 16 * 16);
        assert!(field.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn an_object_carries_its_own_motion_and_the_background_moves_against_the_camera() {
        let cfg = ClipConfig::square(32, 9);
        let (lay, field) = field_of(
            "a green square moving down right on a gray background, camera panning left",
            &cfg,
            5,
        );
        let plane = 32 * 32;
        let at = |c: usize, t: usize, x: usize, y: usize| field[(c * 9 + t) * plane + y * 32 + x];
        let o = &lay.objects[0];
        // Panning left moves the picture right: 0.15 x 32 px over 8 steps.
        let pan = 0.15 * 32.0 / 8.0;
        for t in 0..9 {
            let a = t.min(7);
            let (dx, dy) = (
                o.track[a + 1].0 - o.track[a].0,
                o.track[a + 1].1 - o.track[a].1,
            );
            // The object moves down-right on screen faster than the pan (which adds to its x).
            assert!(dx > pan && dy > 0.5, "frame {t}: ({dx}, {dy})");
            let (ox, oy) = o.track[t];
            let (x, y) = (ox as usize, oy as usize);
            assert!((at(0, t, x, y) - dx).abs() < 1e-5 && (at(1, t, x, y) - dy).abs() < 1e-5);
            // The corner farthest from the object (over 16 px away) shows the background.
            let (fx, fy) = (
                if ox < 16.0 { 31 } else { 0 },
                if oy < 16.0 { 31 } else { 0 },
            );
            assert!((at(0, t, fx, fy) - pan).abs() < 1e-5, "frame {t}");
            assert!(at(1, t, fx, fy).abs() < 1e-6, "frame {t}");
        }
    }

    #[test]
    fn a_bouncing_object_reverses_and_edges_hold_a_share_of_its_motion() {
        let cfg = ClipConfig::square(32, 17);
        let (lay, field) = field_of(
            "a cyan circle bouncing horizontally on a gray background",
            &cfg,
            11,
        );
        let plane = 32 * 32;
        let o = &lay.objects[0];
        let (ox, oy) = o.track[0];
        let centre = field[(oy as usize) * 32 + ox as usize];
        let last = field[16 * plane + (o.track[16].1 as usize) * 32 + o.track[16].0 as usize];
        assert!(centre.abs() > 0.5 && last.abs() > 0.5);
        assert!(centre.signum() != last.signum(), "{centre} then {last}");
        // Every x value of frame 0 lies between the background's 0 and the object's motion,
        // and some edge pixels lie strictly between (anti-aliasing).
        let frame0 = &field[..plane];
        assert!(frame0
            .iter()
            .all(|&v| v * centre >= 0.0 && v.abs() <= centre.abs()));
        assert!(frame0
            .iter()
            .any(|&v| v.abs() > 0.05 * centre.abs() && v.abs() < 0.95 * centre.abs()));
        // No vertical motion anywhere.
        assert!(field[17 * plane..].iter().all(|&v| v == 0.0));
    }
}
