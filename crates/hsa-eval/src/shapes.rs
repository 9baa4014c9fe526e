//! The semantic check of the bundled model: generate held-out captions of the shapes world
//! and score each clip with the world's checker (colour, direction, shape agreement).

use std::path::PathBuf;

use candle_core::Device;
use hsa_core::ScheduleKind;
use hsa_pipeline::generate::{generate, GenerateRequest};
use hsa_pipeline::sampling::SamplerOptions;
use hsa_shapes::{
    caption, check, sample_eval, sample_multi_mover, sample_single_mover, sample_train, Clip,
    Motion, ObjectReport, SceneSpec,
};

use crate::{EvalError, Result};

/// Which part of the world's caption space the captions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptionSplit {
    /// Held-out (colour, shape, motion) combinations, never trained on: the model card's score.
    #[default]
    HeldOut,
    /// The training part of the caption space, from scene seeds no training run draws. A
    /// validation set: it separates fitting from generalising, and settings (guidance) can be
    /// chosen on it without looking at the held-out score.
    Train,
    /// One object moving straight, no camera pan, from the training part (as `Train`, new
    /// draws): the simplest test of whether a model follows the direction words, with no
    /// other object to bind them to (the held-out set has only about ten single-object
    /// captions in fifty).
    SingleMover,
    /// Two or three objects moving straight in different directions, no camera pan, from the
    /// training part (new draws): whether a model binds each direction to its object, where
    /// `SingleMover` asks only whether it follows the words.
    MultiMover,
}

/// Scene seeds of the validation splits are `i ^ VALIDATION_STREAM`. Training runs draw
/// `generate_train(mix(seed, n))`, a different stream, so these scenes are new draws from the
/// training part of the caption space.
const VALIDATION_STREAM: u64 = 0x5A11_DA7E_0000_0000;

impl CaptionSplit {
    /// How reports name the split's captions ("held-out", "training-space").
    pub fn label(self) -> &'static str {
        match self {
            CaptionSplit::HeldOut => "held-out",
            CaptionSplit::Train => "training-space",
            CaptionSplit::SingleMover => "single-mover",
            CaptionSplit::MultiMover => "multi-mover",
        }
    }

    /// Caption `i` of this split.
    pub fn scene(self, i: u64) -> SceneSpec {
        match self {
            CaptionSplit::HeldOut => sample_eval(i),
            CaptionSplit::Train => sample_train(i ^ VALIDATION_STREAM),
            CaptionSplit::SingleMover => sample_single_mover(i ^ VALIDATION_STREAM),
            CaptionSplit::MultiMover => sample_multi_mover(i ^ VALIDATION_STREAM),
        }
    }
}

impl std::str::FromStr for CaptionSplit {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "held-out" => Ok(Self::HeldOut),
            "train" => Ok(Self::Train),
            "single-mover" => Ok(Self::SingleMover),
            "multi-mover" => Ok(Self::MultiMover),
            _ => Err(EvalError::Invalid(format!(
                "unknown caption split {s:?} (held-out, train, single-mover or multi-mover)"
            ))),
        }
    }
}

/// Settings of a checker evaluation.
#[derive(Debug, Clone)]
pub struct CheckerEval {
    pub model_dir: PathBuf,
    /// Captions to generate (scene seeds 0..n of the split).
    pub captions: usize,
    pub split: CaptionSplit,
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    /// Timestep shift (default: the model's).
    pub shift: Option<f64>,
    pub schedule: Option<ScheduleKind>,
    pub sampler: SamplerOptions,
    /// Noise seed of every generation.
    pub seed: u64,
}

/// Scores of one generated clip.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClipScore {
    pub caption: String,
    pub overall: f32,
    pub colour: f32,
    /// The colour score before the penalty for extra colours.
    pub colour_recall: f32,
    /// Object colours shown that the caption does not name.
    pub extra_colours: usize,
    pub direction: f32,
    pub shape: Option<f32>,
    pub motion_energy: f32,
    /// Objects whose centroid jumped between neighbouring frames
    /// ([`hsa_shapes::ObjectReport::jumped`]).
    pub jumping_objects: usize,
    /// What the checker read for each object of the caption, in caption order.
    pub objects: Vec<ObjectVerdict>,
}

/// The checker's reading of one captioned object: what was asked and what was seen, so a
/// report shows which motion or shape a model produces instead (a confusion table).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectVerdict {
    pub colour: &'static str,
    /// Frames in which the colour was found.
    pub found_frames: usize,
    /// The blob's centroid per frame (pixels, screen space, to 0.1 px), `None` where not
    /// found: shows whether a misread motion is a real reversal or a jittering track.
    pub track: Vec<Option<[f32; 2]>>,
    /// Caption words of the motion ("moving up left").
    pub expected_motion: String,
    /// `None` when the object was found in too few frames to read a motion.
    pub detected_motion: Option<String>,
    /// Cosine between the asked direction and the read velocity
    /// ([`hsa_shapes::check::heading`]); only for objects asked to move in a straight line.
    pub heading: Option<f32>,
    pub expected_shape: &'static str,
    /// `None` when the object was found in too few frames.
    pub detected_shape: Option<&'static str>,
    /// Largest move of the centroid between neighbouring frames (px, to 0.1 px); `None` when
    /// no two neighbouring frames show the object.
    pub largest_step_px: Option<f32>,
    /// Over the checker's jump threshold (8 px at 32x32 and 9 frames).
    pub jumped: bool,
}

impl ObjectVerdict {
    fn new(o: &ObjectReport) -> Self {
        let words = |m: Motion| m.words().join(" ");
        Self {
            colour: o.colour.name(),
            found_frames: o.found_frames,
            track: o
                .centroids
                .iter()
                .map(|c| c.map(|(x, y)| [(x * 10.0).round() / 10.0, (y * 10.0).round() / 10.0]))
                .collect(),
            expected_motion: words(o.expected_motion),
            detected_motion: o.detected_motion.map(words),
            heading: o.heading,
            expected_shape: o.expected_shape.name(),
            detected_shape: o.detected_shape.map(|s| s.name()),
            largest_step_px: o.largest_step_px.map(|d| (d * 10.0).round() / 10.0),
            jumped: o.jumped,
        }
    }
}

/// The evaluation's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckerReport {
    pub clips: Vec<ClipScore>,
    pub overall: f32,
    pub colour: f32,
    pub colour_recall: f32,
    pub direction: f32,
    /// Mean [`ObjectVerdict::heading`] over every object asked to move in a straight line and
    /// found: 1 when all move the asked way, about 0 when directions are unrelated to the
    /// captions. `None` when there was no such object.
    pub heading: Option<f32>,
    /// `None` when no clip had an object large enough for the shape check.
    pub shape: Option<f32>,
    /// Objects whose centroid jumped, over all clips, and the objects it could be read for
    /// (found in two neighbouring frames): erratic motion that `direction` counts only as a
    /// wrong motion.
    pub jumping_objects: usize,
    pub tracked_objects: usize,
    pub seconds: f64,
}

/// Generates and checks `captions` clips of the split.
pub fn evaluate_checker(
    cfg: &CheckerEval,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<CheckerReport> {
    if cfg.captions == 0 {
        return Err(EvalError::Invalid("--captions must be at least 1".into()));
    }
    let start = std::time::Instant::now();
    let mut clips = Vec::with_capacity(cfg.captions);
    for i in 0..cfg.captions {
        let text = caption(&cfg.split.scene(i as u64));
        let req = GenerateRequest {
            model_dir: cfg.model_dir.clone(),
            prompt: text.clone(),
            steps: cfg.steps,
            guidance: cfg.guidance,
            shift: cfg.shift,
            schedule: cfg.schedule,
            seed: cfg.seed,
            sampler: cfg.sampler.clone(),
            ..Default::default()
        };
        let out = generate(&req, device, &mut |_| {}, &mut |_| {})?;
        let clip = Clip::from_tensor(&out.video).map_err(|e| EvalError::Invalid(e.to_string()))?;
        let r = check(&clip, &text).map_err(|e| EvalError::Invalid(e.to_string()))?;
        clips.push(ClipScore {
            caption: text,
            overall: r.overall,
            colour: r.colour_score,
            colour_recall: r.colour_recall,
            extra_colours: r.extra_colours.len(),
            direction: r.direction_score,
            shape: r.shape_score,
            motion_energy: r.motion_energy,
            jumping_objects: r.jumping_objects,
            objects: r.objects.iter().map(ObjectVerdict::new).collect(),
        });
        progress(i + 1);
    }
    let mean = |f: &dyn Fn(&ClipScore) -> Option<f32>| {
        let v: Vec<f32> = clips.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
    };
    let all = |f: &dyn Fn(&ClipScore) -> f32| mean(&|c| Some(f(c))).unwrap_or(0.0);
    let headings: Vec<f32> = clips
        .iter()
        .flat_map(|c| c.objects.iter().filter_map(|o| o.heading))
        .collect();
    Ok(CheckerReport {
        heading: (!headings.is_empty())
            .then(|| headings.iter().sum::<f32>() / headings.len() as f32),
        overall: all(&|c| c.overall),
        colour: all(&|c| c.colour),
        colour_recall: all(&|c| c.colour_recall),
        direction: all(&|c| c.direction),
        shape: mean(&|c| c.shape),
        jumping_objects: clips.iter().map(|c| c.jumping_objects).sum(),
        tracked_objects: clips
            .iter()
            .flat_map(|c| &c.objects)
            .filter(|o| o.largest_step_px.is_some())
            .count(),
        clips,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_splits_keep_to_their_part_of_the_caption_space() {
        for i in 0..50 {
            assert!(hsa_shapes::is_held_out(&CaptionSplit::HeldOut.scene(i)));
            assert!(!hsa_shapes::is_held_out(&CaptionSplit::Train.scene(i)));
            let single = CaptionSplit::SingleMover.scene(i);
            assert!(hsa_shapes::is_single_mover(&single) && !hsa_shapes::is_held_out(&single));
            let multi = CaptionSplit::MultiMover.scene(i);
            assert!(hsa_shapes::is_multi_mover(&multi) && !hsa_shapes::is_held_out(&multi));
        }
        assert_eq!(
            "single-mover".parse::<CaptionSplit>().unwrap(),
            CaptionSplit::SingleMover
        );
        assert_eq!(
            "multi-mover".parse::<CaptionSplit>().unwrap(),
            CaptionSplit::MultiMover
        );
        assert_eq!(CaptionSplit::HeldOut.scene(3), sample_eval(3));
        assert!("validation".parse::<CaptionSplit>().is_err());
    }

    #[test]
    fn verdicts_name_what_was_asked_and_what_was_seen() {
        let cfg = hsa_shapes::ClipConfig::new(32, 32, 9);
        let spec = sample_eval(3);
        let text = caption(&spec);
        let report = check(&hsa_shapes::render(&spec, &cfg, 7), &text).unwrap();
        let verdicts: Vec<ObjectVerdict> = report.objects.iter().map(ObjectVerdict::new).collect();
        assert_eq!(verdicts.len(), spec.objects.len());
        for (v, o) in verdicts.iter().zip(&spec.objects) {
            // The caption's own words, as the caption spells them.
            let motion = o.motion.words().join(" ");
            assert!(text.contains(&format!("{} {} {motion}", o.colour.name(), o.shape.name())));
            assert_eq!(
                (v.colour, v.expected_shape),
                (o.colour.name(), o.shape.name())
            );
            assert_eq!(v.expected_motion, motion);
            assert_eq!(v.track.len(), 9);
            assert_eq!(v.track.iter().flatten().count(), v.found_frames);
            // Tracked in neighbouring frames, moving no farther per frame than the world does.
            assert!(v.largest_step_px.is_some_and(|d| d <= 5.0) && !v.jumped);
        }
        // A clean generator clip: the checker reads what the caption asks.
        let seen: Vec<_> = verdicts.iter().map(|v| v.detected_motion.clone()).collect();
        let asked: Vec<_> = verdicts
            .iter()
            .map(|v| Some(v.expected_motion.clone()))
            .collect();
        assert_eq!(seen, asked);
    }
}
