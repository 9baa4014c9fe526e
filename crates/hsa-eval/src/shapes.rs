//! The semantic check of the bundled model: generate held-out captions of the shapes world
//! and score each clip with the world's checker (colour, direction, shape agreement).

use std::path::PathBuf;

use candle_core::Device;
use hsa_core::ScheduleKind;
use hsa_pipeline::generate::{generate, GenerateRequest};
use hsa_pipeline::sampling::SamplerOptions;
use hsa_shapes::{caption, check, sample_eval, Clip};

use crate::{EvalError, Result};

/// Settings of a checker evaluation.
#[derive(Debug, Clone)]
pub struct CheckerEval {
    pub model_dir: PathBuf,
    /// Held-out captions to generate (scene seeds 0..n of `sample_eval`).
    pub captions: usize,
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
}

/// The evaluation's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckerReport {
    pub clips: Vec<ClipScore>,
    pub overall: f32,
    pub colour: f32,
    pub colour_recall: f32,
    pub direction: f32,
    /// `None` when no clip had an object large enough for the shape check.
    pub shape: Option<f32>,
    pub seconds: f64,
}

/// Generates and checks `captions` held-out clips.
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
        let text = caption(&sample_eval(i as u64));
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
        let (_, f, h, w) = out.video.dims4()?;
        let clip = Clip::from_cfhw(f, h, w, out.video.flatten_all()?.to_vec1::<f32>()?)
            .map_err(|e| EvalError::Invalid(e.to_string()))?;
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
        });
        progress(i + 1);
    }
    let mean = |f: &dyn Fn(&ClipScore) -> Option<f32>| {
        let v: Vec<f32> = clips.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
    };
    let all = |f: &dyn Fn(&ClipScore) -> f32| mean(&|c| Some(f(c))).unwrap_or(0.0);
    Ok(CheckerReport {
        overall: all(&|c| c.overall),
        colour: all(&|c| c.colour),
        colour_recall: all(&|c| c.colour_recall),
        direction: all(&|c| c.direction),
        shape: mean(&|c| c.shape),
        clips,
        seconds: start.elapsed().as_secs_f64(),
    })
}
