//! The checker: does a clip show what its caption says?
//!
//! For every object of the caption the checker
//! 1. marks the pixels of the object's named colour: chroma (max - min of RGB in [0, 1])
//!    at least [`CheckerParams::min_chroma`] and HSV hue nearest to the named hue, within
//!    [`CheckerParams::max_hue_distance`] degrees. Hue and chroma ignore brightness, so
//!    shading, contrast loss and a background tint do not move pixels between colours;
//!    backgrounds are rendered with chroma <= [`crate::render::BG_MAX_CHROMA`] (0.18) and
//!    objects with chroma >= 0.72, so the threshold sits between the two with room for
//!    noise on both sides;
//! 2. keeps, per frame, the largest 8-connected blob of those pixels (stray noise pixels
//!    and blur fringes fall away) if it has at least [`CheckerParams::min_pixels`] pixels,
//!    and records its centroid, bounding box and shape moments ([`Blob`]);
//! 3. scores **colour** as the fraction of frames where the blob is found (its recall),
//!    times the share of named colours among all object colours the clip shows (its
//!    precision: an unnamed colour found as a blob in at least
//!    [`CheckerParams::min_found_fraction`] of the frames counts against it);
//! 4. adds the camera offset the caption's pan implies (see [`crate::render::camera_offset`])
//!    to the centroids, giving world-space trajectories, and classifies the motion
//!    ([`classify_motion`]): a reversal along an axis with both legs at least
//!    [`CheckerParams::bounce_min_leg`] x S is "bouncing"; otherwise the least-squares
//!    velocity over the clip gives the displacement, "staying still" below
//!    [`CheckerParams::still_max_travel`] x S, else the 45-degree sector of its angle.
//!    **direction** is 1 when the class equals the caption's motion. For an object asked to
//!    move in a straight line, [`heading`] also grades the read velocity against the asked
//!    direction (a cosine; not part of `overall`);
//! 5. classifies the shape of each frame's blob ([`classify_shape`]: a weak centre is a
//!    ring, more mass below the middle row a triangle, box fill plus diagonal extent
//!    tells squares from circles) and takes the plurality over frames: **shape** is 1 when
//!    it equals the caption's shape. Only scored when the blobs are at least
//!    [`CheckerParams::min_shape_px`] across (median box side).
//!
//! `S = min(width, height)`. The thresholds, and the generator ranges they separate, are
//! documented on [`CheckerParams`]. Measured at 32x32x17 they hold with wide margins on
//! generator clips, under Gaussian noise (sigma 0.1) and under a 3x3 box blur; below about
//! 24x24 a 3x3 blur washes out the smallest objects.
//!
//! Attribute scores are averaged over the caption's objects; `overall` is the mean of the
//! attribute scores that apply. An object that is not found in at least half of the frames
//! gets 0 for direction and shape; direction needs at least two frames (a one-frame clip
//! scores 0 there). Colours that the caption does not mention but the clip shows are listed
//! in [`CheckReport::extra_colours`] and lower the colour score: without that, a clip of
//! scattered saturated noise found most named colours somewhere and scored about 0.5 on
//! colour (0.26 overall) for any caption.

mod blob;
mod motion;
mod pixels;

pub use blob::{classify_shape, largest_blob, Blob};
pub use motion::{classify_motion, distance_px, heading, least_squares_velocity, motion_energy};
pub use pixels::{classify_pixel, colour_strength, hue_chroma, nearest_colour};

use crate::caption::parse_caption;
use crate::clip::Clip;
use crate::render::{camera_offset, fastest_step_px, ClipConfig, HALF_EXTENT};
use crate::scene::{Colour, Motion, SceneSpec, Shape};
use crate::Result;

/// Checker thresholds. Distances are fractions of `S = min(width, height)` so they hold at
/// every resolution; the generator's ranges they must separate are in `crate::render`.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckerParams {
    /// Least chroma (RGB in [0, 1]) of an object pixel. Backgrounds have at most 0.18,
    /// objects at least 0.72; 0.38 leaves 0.2 above the backgrounds for noise (sigma 0.05
    /// in [0, 1] per channel widens a pixel's chroma by less than 0.2 except in rare tails,
    /// which the blob step discards) and keeps edge pixels of objects that are at least
    /// half covered.
    pub min_chroma: f32,
    /// Largest hue distance (degrees) to the named hue. Neighbouring hues are 30 degrees
    /// apart (red-orange-yellow, blue-purple-magenta), so pixels go to the nearest name
    /// and 25 degrees only matters beside the 60-degree gaps.
    pub max_hue_distance: f32,
    /// Least blob size, as a fraction of the frame's pixels (at least 3 pixels): 0.004 is
    /// 4 px at 32x32, about a seventh of the smallest object's area.
    pub min_pixels_fraction: f32,
    /// Fraction of frames an object must be found in before its motion and shape count.
    pub min_found_fraction: f32,
    /// Displacement over the clip below which an object is "staying still", fraction of S.
    /// Moving objects travel >= 0.30 S, still ones 0 (after pan compensation): 0.12 S
    /// (3.8 px at 32) sits between, with margin for blur and centroid jitter.
    pub still_max_travel: f32,
    /// Least length of both legs of a reversal for "bouncing", fraction of S. The
    /// generator's shorter leg is >= 0.3 x 0.35 / 0.65 = 0.16 S; straight and still tracks
    /// have legs ~0 (centroid jitter of a few tenths of a pixel).
    pub bounce_min_leg: f32,
    /// Least median box side (px) for the shape check. Below about 6 px circles, squares
    /// and rings are a handful of pixels and cannot be told apart.
    pub min_shape_px: f32,
    /// A blob whose colour strength around its centroid (radius 0.18 x box side) is less
    /// than this fraction of its mean strength is a ring. A ring's hole (radius 0.25 x box
    /// side) reads ~0 when sharp and <= 0.86 under a 3x3 blur even for the smallest rings;
    /// filled shapes read >= 1 (their centre is their strongest part).
    pub ring_centre_ratio: f32,
    /// Vertical mass balance ((below - above the middle row) / pixels) at or above which a
    /// blob is a triangle: an upright triangle has 3/4 of its area in the lower half
    /// (0.5 ideal, >= 0.31 sharp at 32x32, mostly >= 0.15 under a 3x3 blur); the
    /// symmetric shapes read |balance| <= 0.1 in 95% of frames.
    pub triangle_min_balance: f32,
    /// Fill below which a holeless blob is a triangle regardless of balance (ideal 0.5;
    /// circles never read below 0.61).
    pub triangle_max_fill: f32,
    /// `fill + diagonal` at or above which a holeless, balanced blob is a square: ideal
    /// 1 + 2 for squares, 0.785 + 1.41 for circles; measured at 32x32 circles <= 2.38 and
    /// squares >= 2.64 sharp (95% quantiles 2.32 / 2.45 under a 3x3 blur), so 2.42. The
    /// shape verdict is a plurality over frames, so per-frame errors near the threshold
    /// rarely change it.
    pub square_min_score: f32,
    /// A centroid that moves farther between neighbouring frames than this multiple of the
    /// world's fastest object ([`fastest_step_px`]) has jumped: the object re-formed
    /// elsewhere, or a fragment of its colour outgrew it. 1.75 is 8 px at 32x32 and 9 frames;
    /// no object of a generator clip comes near it (tests/checker.rs).
    pub jump_factor: f32,
}

impl Default for CheckerParams {
    fn default() -> Self {
        Self {
            min_chroma: 0.38,
            max_hue_distance: 25.0,
            min_pixels_fraction: 0.004,
            min_found_fraction: 0.5,
            still_max_travel: 0.12,
            bounce_min_leg: 0.08,
            min_shape_px: 6.0,
            ring_centre_ratio: 0.95,
            triangle_min_balance: 0.15,
            triangle_max_fill: 0.56,
            square_min_score: 2.42,
            jump_factor: 1.75,
        }
    }
}

impl CheckerParams {
    /// Least blob size in pixels for a `width` x `height` frame.
    pub fn min_pixels(&self, width: usize, height: usize) -> usize {
        ((self.min_pixels_fraction * (width * height) as f32).round() as usize).max(3)
    }
}

/// What the checker found for one object of the caption.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectReport {
    pub colour: Colour,
    pub expected_shape: Shape,
    pub expected_motion: Motion,
    /// Frames in which a blob of the colour was found.
    pub found_frames: usize,
    /// Centroid per frame (pixels, screen space), `None` where not found.
    pub centroids: Vec<Option<(f32, f32)>>,
    /// `found_frames / frames`.
    pub colour_score: f32,
    /// The motion read from the trajectory, if enough frames were found.
    pub detected_motion: Option<Motion>,
    pub direction_score: f32,
    /// [`heading`] of the world-space trajectory, for an object asked to move in a straight
    /// line and found in enough frames to read a motion.
    pub heading: Option<f32>,
    /// Median box side of the blob (px), 0 when never found.
    pub size_px: f32,
    /// The plurality shape over the frames, if enough frames were found.
    pub detected_shape: Option<Shape>,
    /// `None` when the object is too small for the shape check.
    pub shape_score: Option<f32>,
    /// Largest centroid move between neighbouring frames that both show the object (px,
    /// screen space); `None` when no two neighbouring frames do.
    pub largest_step_px: Option<f32>,
    /// `largest_step_px` is over the jump threshold ([`CheckerParams::jump_factor`]).
    pub jumped: bool,
}

/// The checker's verdict on a clip and caption. Scores are in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// `colour_recall` x named / (named + extra colours).
    pub colour_score: f32,
    /// Mean over the caption's objects of the fraction of frames where each is found.
    pub colour_recall: f32,
    pub direction_score: f32,
    /// `None` when no object is large enough for the shape check.
    pub shape_score: Option<f32>,
    /// [`motion_energy`] of the clip.
    pub motion_energy: f32,
    /// Mean of the attribute scores that apply.
    pub overall: f32,
    pub objects: Vec<ObjectReport>,
    /// Object colours the caption does not mention that are nevertheless found (a blob of
    /// at least `min_pixels` in at least `min_found_fraction` of the frames): hallucinated
    /// or miscoloured objects. They lower `colour_score`.
    pub extra_colours: Vec<Colour>,
    /// Objects whose centroid jumped ([`ObjectReport::jumped`]). Not part of `overall`: a
    /// diagnostic of erratic motion, which the direction score sees only as a wrong motion.
    pub jumping_objects: usize,
}

/// Checks a clip against a caption (parsed with [`parse_caption`]) with default thresholds.
pub fn check(clip: &Clip, caption: &str) -> Result<CheckReport> {
    Ok(check_spec(
        clip,
        &parse_caption(caption)?,
        &CheckerParams::default(),
    ))
}

/// Checks a clip against a scene with the given thresholds.
pub fn check_spec(clip: &Clip, spec: &SceneSpec, params: &CheckerParams) -> CheckReport {
    let [_, frames, h, w] = clip.dims();
    let cfg = ClipConfig::new(w, h, frames);
    let s = cfg.scale();
    let min_pixels = params.min_pixels(w, h);
    let jump_px = params.jump_factor * fastest_step_px(&cfg);

    // Nearest named colour and chroma of every pixel, once.
    let mut label = vec![u8::MAX; frames * h * w];
    let mut chroma = vec![0.0f32; frames * h * w];
    let plane = frames * h * w;
    let data = clip.data();
    for i in 0..plane {
        let rgb = [data[i], data[plane + i], data[2 * plane + i]]
            .map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0));
        let (hue, c) = hue_chroma(rgb);
        chroma[i] = c;
        if let Some(col) = nearest_colour(params, hue) {
            label[i] = col.index() as u8;
        }
    }

    let mut objects = Vec::with_capacity(spec.objects.len());
    let mut strength = vec![0.0f32; h * w];
    for o in &spec.objects {
        let id = o.colour.index() as u8;
        let mut blobs: Vec<Option<Blob>> = Vec::with_capacity(frames);
        for t in 0..frames {
            let range = t * h * w..(t + 1) * h * w;
            for ((st, &l), &c) in strength
                .iter_mut()
                .zip(&label[range.clone()])
                .zip(&chroma[range])
            {
                *st = if l == id { c } else { 0.0 };
            }
            blobs.push(largest_blob(&strength, params.min_chroma, w, h, min_pixels));
        }
        let found: Vec<(usize, Blob)> = blobs
            .iter()
            .enumerate()
            .filter_map(|(t, b)| b.map(|b| (t, b)))
            .collect();
        let found_frames = found.len();
        let colour_score = if frames == 0 {
            0.0
        } else {
            found_frames as f32 / frames as f32
        };
        // Shape needs one frame, motion two.
        let enough =
            found_frames >= 1 && found_frames as f32 >= params.min_found_fraction * frames as f32;

        let points: Vec<(usize, f32, f32)> = found
            .iter()
            .map(|(t, b)| {
                let (cx, cy) = camera_offset(spec.camera, &cfg, *t);
                (*t, b.centroid.0 + cx, b.centroid.1 + cy)
            })
            .collect();
        let detected_motion = if enough && found_frames >= 2 {
            classify_motion(params, &points, s, frames)
        } else {
            None
        };
        let direction_score = f32::from(u8::from(detected_motion == Some(o.motion)));
        let heading = match o.motion {
            Motion::Moving(d) if detected_motion.is_some() => heading(&points, d),
            _ => None,
        };

        let size_px = if found.is_empty() {
            0.0
        } else {
            let mut sides: Vec<f32> = found.iter().map(|(_, b)| b.box_side()).collect();
            sides.sort_by(f32::total_cmp);
            sides[sides.len() / 2]
        };
        let detected_shape = enough.then(|| {
            let mut votes = [0usize; 4];
            for (_, b) in &found {
                votes[classify_shape(params, b).index()] += 1;
            }
            let best = (0..4).max_by_key(|&i| (votes[i], usize::MAX - i)).unwrap();
            Shape::ALL[best]
        });
        // Shape applies when the blob is big enough, or, if the object was not found,
        // when the generator's smallest object would be.
        let shape_applies = if found_frames > 0 {
            size_px >= params.min_shape_px
        } else {
            2.0 * HALF_EXTENT[spec.objects.len().clamp(1, 3) - 1].0 * s >= params.min_shape_px
        };
        let shape_score =
            shape_applies.then(|| f32::from(u8::from(detected_shape == Some(o.shape))));
        let largest_step_px = blobs
            .windows(2)
            .filter_map(|pair| match pair {
                [Some(a), Some(b)] => Some(distance_px(a.centroid, b.centroid)),
                _ => None,
            })
            .reduce(f32::max);
        objects.push(ObjectReport {
            colour: o.colour,
            expected_shape: o.shape,
            expected_motion: o.motion,
            found_frames,
            centroids: blobs.iter().map(|b| b.map(|b| b.centroid)).collect(),
            colour_score,
            detected_motion,
            direction_score,
            heading,
            size_px,
            detected_shape,
            shape_score,
            largest_step_px,
            jumped: largest_step_px.is_some_and(|d| d > jump_px),
        });
    }

    let extra_colours: Vec<Colour> = Colour::ALL
        .into_iter()
        .filter(|c| !spec.objects.iter().any(|o| o.colour == *c))
        .filter(|c| {
            let id = c.index() as u8;
            if !label.contains(&id) {
                return false;
            }
            let found = (0..frames)
                .filter(|&t| {
                    let range = t * h * w..(t + 1) * h * w;
                    for ((st, &l), &ch) in strength
                        .iter_mut()
                        .zip(&label[range.clone()])
                        .zip(&chroma[range])
                    {
                        *st = if l == id { ch } else { 0.0 };
                    }
                    largest_blob(&strength, params.min_chroma, w, h, min_pixels).is_some()
                })
                .count();
            found >= 1 && found as f32 >= params.min_found_fraction * frames as f32
        })
        .collect();

    let mean = |v: &[f32]| -> Option<f32> {
        (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
    };
    let colour_recall =
        mean(&objects.iter().map(|o| o.colour_score).collect::<Vec<_>>()).unwrap_or(0.0);
    let named = objects.len() as f32;
    let colour_score = colour_recall * named / (named + extra_colours.len() as f32).max(1.0);
    let direction_score = mean(
        &objects
            .iter()
            .map(|o| o.direction_score)
            .collect::<Vec<_>>(),
    )
    .unwrap_or(0.0);
    let shape_score = mean(
        &objects
            .iter()
            .filter_map(|o| o.shape_score)
            .collect::<Vec<_>>(),
    );
    let mut attrs = vec![colour_score, direction_score];
    attrs.extend(shape_score);
    let overall = mean(&attrs).unwrap_or(0.0);
    CheckReport {
        jumping_objects: objects.iter().filter(|o| o.jumped).count(),
        colour_score,
        colour_recall,
        direction_score,
        shape_score,
        motion_energy: motion_energy(clip),
        overall,
        objects,
        extra_colours,
    }
}
