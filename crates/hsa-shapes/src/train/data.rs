//! The training batches: generator clips, noise, noise levels and caption dropout, drawn on
//! the CPU from the run's seed and the step alone.

use crate::generate_train;
use crate::rng::Rng;

use super::TrainConfig;

/// Everything random about one update, drawn on the CPU from the seed and the step alone, so
/// a resumed run sees the same batches and the drawing can run ahead on another thread.
pub struct BatchDraw {
    /// Clean clips `[B, 3, F, H, W]`, row-major.
    pub x0: Vec<f32>,
    /// Noise of the same shape.
    pub eps: Vec<f32>,
    /// Noise level of each sample.
    pub sigmas: Vec<f32>,
    /// Each sample's caption, or the empty prompt where it was dropped for guidance.
    pub prompts: Vec<String>,
}

/// Draws update `step`'s batch. Sample `i` is generator clip `mix(seed, step·B + i)` with its
/// own noise stream, so samples are drawn in parallel (up to `threads` at once).
pub fn draw_batch(cfg: &TrainConfig, step: usize, threads: usize) -> BatchDraw {
    let clip_cfg = cfg.clip();
    let per = 3 * cfg.frames * cfg.height * cfg.width;
    let sample = |i: usize| {
        let seed = crate::rng::mix(cfg.seed, (step * cfg.batch + i) as u64);
        let ex = generate_train(seed, &clip_cfg);
        let eps = hsa_models::wan::init::normal(per, 1.0, seed, "noise");
        (ex.clip.into_data(), eps, ex.caption)
    };
    let chunk = cfg.batch.div_ceil(threads.clamp(1, cfg.batch));
    let samples: Vec<_> = std::thread::scope(|scope| {
        let jobs: Vec<_> = (0..cfg.batch)
            .step_by(chunk)
            .map(|lo| {
                let sample = &sample;
                scope.spawn(move || {
                    (lo..(lo + chunk).min(cfg.batch))
                        .map(sample)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        jobs.into_iter()
            .flat_map(|j| j.join().expect("clip generation does not panic"))
            .collect()
    });
    let mut draw = BatchDraw {
        x0: Vec::with_capacity(cfg.batch * per),
        eps: Vec::with_capacity(cfg.batch * per),
        sigmas: Vec::with_capacity(cfg.batch),
        prompts: Vec::with_capacity(cfg.batch),
    };
    let mut rng = Rng::stream(cfg.seed, 1_000_000 + step as u64);
    for (clip, eps, caption) in samples {
        draw.x0.extend_from_slice(&clip);
        draw.eps.extend_from_slice(&eps);
        let u = if rng.chance(0.5) {
            rng.f32() as f64
        } else {
            1.0 / (1.0 + (-standard_normal(&mut rng)).exp())
        };
        draw.sigmas.push(hsa_core::shift_sigma(u, cfg.shift) as f32);
        let dropped = rng.chance(cfg.cfg_dropout as f32);
        draw.prompts
            .push(if dropped { String::new() } else { caption });
    }
    draw
}

fn standard_normal(rng: &mut Rng) -> f64 {
    let u1 = (rng.f32() as f64).max(1e-12);
    let u2 = rng.f32() as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
