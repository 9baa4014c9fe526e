//! The training batches: generator clips, noise, noise levels and caption dropout, drawn on
//! the CPU from the run's seed and the step alone.

use crate::rng::Rng;
use crate::{displacement_field, generate_multi_mover, generate_single_mover, generate_train};

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
    /// Per-pixel loss weights `[B, 1, F, H, W]` ([`motion_weights`]), empty when the run's
    /// `motion_weight` is 0 (plain MSE).
    pub weights: Vec<f32>,
    /// Per-pixel displacement `[B, 2, F, H, W]` ([`displacement_field`]), the motion head's
    /// target; empty when the run's `displacement_weight` is 0.
    pub displacement: Vec<f32>,
}

/// Which part of the world a training sample is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curriculum {
    World,
    SingleMover,
    MultiMover,
}

/// The part of the world sample `seed` comes from: one uniform draw from the sample's own
/// stream, single movers below `single_mover_fraction`, multi movers in the next
/// `multi_mover_fraction`. The single-mover test is the same draw and comparison as before
/// multi movers existed, so runs without them get the batches they always got.
fn curriculum(cfg: &TrainConfig, seed: u64) -> Curriculum {
    let (single, multi) = (cfg.single_mover_fraction, cfg.multi_mover_fraction);
    if single <= 0.0 && multi <= 0.0 {
        return Curriculum::World;
    }
    let u = Rng::stream(seed, 0x51_6E1E).f32();
    if u < single as f32 {
        Curriculum::SingleMover
    } else if u < (single + multi) as f32 {
        Curriculum::MultiMover
    } else {
        Curriculum::World
    }
}

/// Draws update `step`'s batch. Sample `i` is generator clip `mix(seed, step·B + i)` with its
/// own noise stream, so samples are drawn in parallel (up to `threads` at once). With a
/// `single_mover_fraction` or `multi_mover_fraction` each sample is, with that probability
/// (decided from its own seed), a single straight mover or several instead. Noise levels and
/// caption dropout come from one stream per update, drawn first and in the same order as
/// before `prior_renders` existed, so runs without it keep their batches.
pub fn draw_batch(cfg: &TrainConfig, step: usize, threads: usize) -> BatchDraw {
    let clip_cfg = cfg.clip();
    let dims = [cfg.frames, cfg.height, cfg.width];
    let per = 3 * cfg.frames * cfg.height * cfg.width;
    let mut rng = Rng::stream(cfg.seed, 1_000_000 + step as u64);
    let levels: Vec<Level> = (0..cfg.batch).map(|_| draw_level(cfg, &mut rng)).collect();
    let sample = |i: usize| {
        let seed = crate::rng::mix(cfg.seed, (step * cfg.batch + i) as u64);
        let ex = match curriculum(cfg, seed) {
            Curriculum::SingleMover => generate_single_mover(seed, &clip_cfg),
            Curriculum::MultiMover => generate_multi_mover(seed, &clip_cfg),
            Curriculum::World => generate_train(seed, &clip_cfg),
        };
        let displacement = match cfg.displacement_weight > 0.0 {
            true => displacement_field(&ex.layout, &clip_cfg),
            false => Vec::new(),
        };
        let eps = hsa_models::wan::init::normal(per, 1.0, seed, "noise");
        let (x0, weights) = match levels[i].prior {
            true => prior_target(&ex.spec, ex.clip.data(), seed, cfg),
            false => {
                let weights = match cfg.motion_weight > 0.0 {
                    true => motion_weights(ex.clip.data(), dims, cfg.motion_weight as f32),
                    false => Vec::new(),
                };
                (ex.clip.into_data(), weights)
            }
        };
        (x0, eps, weights, ex.caption, displacement)
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
        sigmas: levels.iter().map(|l| l.sigma).collect(),
        prompts: Vec::with_capacity(cfg.batch),
        weights: Vec::new(),
        displacement: Vec::new(),
    };
    for ((x0, eps, weights, caption, displacement), level) in samples.into_iter().zip(&levels) {
        draw.x0.extend_from_slice(&x0);
        draw.eps.extend_from_slice(&eps);
        draw.weights.extend_from_slice(&weights);
        draw.displacement.extend_from_slice(&displacement);
        draw.prompts.push(if level.dropped {
            String::new()
        } else {
            caption
        });
    }
    if cfg.first_frame_offset != 0.0 {
        let frame = cfg.height * cfg.width;
        offset_first_frame(
            &mut draw.x0,
            cfg.frames,
            frame,
            cfg.first_frame_offset as f32,
        );
    }
    draw
}

/// One sample's noise level and caption dropout.
struct Level {
    sigma: f32,
    /// Trained at sigma 1 against [`prior_target`].
    prior: bool,
    dropped: bool,
}

fn draw_level(cfg: &TrainConfig, rng: &mut Rng) -> Level {
    let u = if rng.chance(0.5) {
        rng.f32() as f64
    } else {
        1.0 / (1.0 + (-standard_normal(rng)).exp())
    };
    // Drawn only when asked for, so that runs without it keep their random stream.
    let top = cfg.top_noise_fraction > 0.0 && rng.chance(cfg.top_noise_fraction as f32);
    let prior = top && cfg.prior_renders > 1;
    let shift = if top {
        super::TOP_NOISE_SHIFT
    } else {
        cfg.shift
    };
    Level {
        sigma: if prior {
            1.0
        } else {
            hsa_core::shift_sigma(u, shift) as f32
        },
        prior,
        dropped: rng.chance(cfg.cfg_dropout as f32),
    }
}

/// Stream of the extra layouts [`prior_target`] renders.
const PRIOR_STREAM: u64 = 0x9_0000;

/// The clean target and loss weights of a sample trained at sigma 1
/// ([`TrainConfig::prior_renders`]): `clip` (the sample's own render of `spec`) and
/// `prior_renders - 1` other layouts of the same scene (same caption), averaged pixel by pixel
/// with their motion weights, and the mean weight (empty when the run's `motion_weight` is 0).
///
/// Why: at sigma 1 the input holds nothing of the clip, so the velocity a model can learn
/// there is noise minus the caption's mean clip. One render per sample teaches that mean
/// through a loss that is mostly the renders' own spread (flat at 0.20-0.21 over segment 27's
/// pure-noise phase, the model's HISTORY). With the same noise, the gradient of this
/// sample's weighted loss equals the mean gradient of the K renders' losses exactly
/// (`Σ w_k (v - ε + x_k) = K·w̄·(v - ε + x̄)`), so one pass carries K renders' signal.
pub fn prior_target(
    spec: &crate::SceneSpec,
    clip: &[f32],
    seed: u64,
    cfg: &TrainConfig,
) -> (Vec<f32>, Vec<f32>) {
    let clip_cfg = cfg.clip();
    let dims = [cfg.frames, cfg.height, cfg.width];
    let channel = cfg.frames * cfg.height * cfg.width;
    let (mut sum, mut total) = (vec![0f32; 3 * channel], vec![0f32; channel]);
    let mut add = |x: &[f32]| {
        let w = match cfg.motion_weight > 0.0 {
            true => motion_weights(x, dims, cfg.motion_weight as f32),
            false => vec![1.0; channel],
        };
        for (s, x) in sum.chunks_mut(channel).zip(x.chunks(channel)) {
            for ((s, &x), &w) in s.iter_mut().zip(x).zip(&w) {
                *s += w * x;
            }
        }
        for (t, &w) in total.iter_mut().zip(&w) {
            *t += w;
        }
    };
    add(clip);
    for k in 1..cfg.prior_renders {
        let layout_seed = crate::rng::mix(seed, PRIOR_STREAM + k as u64);
        add(crate::render(spec, &clip_cfg, layout_seed).data());
    }
    let x0 = sum
        .chunks(channel)
        .flat_map(|s| s.iter().zip(&total).map(|(s, t)| s / t))
        .collect();
    let weights = match cfg.motion_weight > 0.0 {
        true => total.iter().map(|t| t / cfg.prior_renders as f32).collect(),
        false => Vec::new(),
    };
    (x0, weights)
}

/// Adds `offset` to the first frame of every `[3, frames, H, W]` clip in `x0` (clips back to
/// back, `frame` = H·W values per channel and frame): the trainer's time anchor
/// ([`TrainConfig::first_frame_offset`]).
pub fn offset_first_frame(x0: &mut [f32], frames: usize, frame: usize, offset: f32) {
    for channel in x0.chunks_mut(frames * frame) {
        for v in &mut channel[..frame] {
            *v += offset;
        }
    }
}

/// Deviation from the pixel's temporal median (in [-1, 1] units, largest over the channels)
/// at which a pixel gets the full extra weight. Objects differ from backgrounds by at least
/// 0.7 in some channel, so a moving object's pixels reach it; a pan over a soft texture
/// mostly stays below it.
const MOTION_FULL_DEVIATION: f32 = 0.5;

/// Loss weights `[1, F, H, W]` of one clean clip `[3, F, H, W]` (`clip` = `[F, H, W]`): `1 +
/// strength · min(d / 0.5, 1)` where `d` is how far the pixel is from its own median over
/// the frames. Static pixels (background, still objects) weigh 1; pixels a moving object
/// covers, or has left, weigh up to `1 + strength`.
///
/// Why: a moving object covers a few percent of a clip's pixels, so plain MSE is dominated by
/// backgrounds the model already renders well, and the bundled model learned colour but left
/// direction at chance (its tracks jittered and jumped). Weighting the pixels whose value
/// changes over time spends more of each update on where things move.
pub fn motion_weights(x0: &[f32], clip: [usize; 3], strength: f32) -> Vec<f32> {
    let [frames, h, w] = clip;
    let plane = h * w;
    let channel = frames * plane;
    let mut weights = vec![1.0f32; channel];
    let mut values = vec![0.0f32; frames];
    for c in 0..3 {
        for p in 0..plane {
            for (f, v) in values.iter_mut().enumerate() {
                *v = x0[c * channel + f * plane + p];
            }
            values.sort_by(f32::total_cmp);
            let median = values[frames / 2];
            for f in 0..frames {
                let d = (x0[c * channel + f * plane + p] - median).abs();
                let wt = 1.0 + strength * (d / MOTION_FULL_DEVIATION).min(1.0);
                let slot = &mut weights[f * plane + p];
                *slot = slot.max(wt);
            }
        }
    }
    weights
}

fn standard_normal(rng: &mut Rng) -> f64 {
    let u1 = (rng.f32() as f64).max(1e-12);
    let u2 = rng.f32() as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[3, F, H, W]` clip of background -1 with one pixel per frame set to `value` in every
    /// channel at `spots[f]` (or none).
    fn clip_with(spots: &[Option<usize>], h: usize, w: usize, value: f32) -> Vec<f32> {
        let frames = spots.len();
        let mut x = vec![-1.0f32; 3 * frames * h * w];
        for c in 0..3 {
            for (f, spot) in spots.iter().enumerate() {
                if let Some(p) = spot {
                    x[(c * frames + f) * h * w + p] = value;
                }
            }
        }
        x
    }

    #[test]
    fn only_pixels_that_change_over_the_clip_weigh_more() {
        let (h, w) = (2, 4);
        // A static clip, and one with a still object, weigh 1 everywhere.
        let still = clip_with(&[Some(5); 5], h, w, 1.0);
        assert!(motion_weights(&still, [5, h, w], 4.0)
            .iter()
            .all(|&x| x == 1.0));
        // An object stepping along the first row: each pixel it visits weighs 1 + strength in
        // the frame it is there (full deviation 2 >= 0.5), every other pixel and frame 1.
        let moving = clip_with(&[Some(0), Some(1), Some(2), Some(3), None], h, w, 1.0);
        let wts = motion_weights(&moving, [5, h, w], 4.0);
        for f in 0..5 {
            for p in 0..h * w {
                let want = if f < 4 && p == f { 5.0 } else { 1.0 };
                assert_eq!(wts[f * h * w + p], want, "frame {f}, pixel {p}");
            }
        }
        // A faint change gets a proportional share: deviation 0.25 is half of 0.5.
        let faint = clip_with(&[Some(0), None, None], h, w, -0.75);
        assert_eq!(motion_weights(&faint, [3, h, w], 4.0)[0], 3.0);
    }

    #[test]
    fn weights_are_drawn_only_when_the_run_asks_for_them() {
        let mut cfg = TrainConfig {
            width: 8,
            height: 8,
            frames: 3,
            batch: 2,
            ..Default::default()
        };
        assert!(draw_batch(&cfg, 0, 1).weights.is_empty());
        cfg.motion_weight = 3.0;
        let draw = draw_batch(&cfg, 0, 1);
        assert_eq!(draw.weights.len(), 2 * 3 * 8 * 8);
        assert!(draw.weights.iter().all(|&x| (1.0..=4.0).contains(&x)));
    }

    #[test]
    fn the_single_mover_fraction_sets_how_many_clips_are_one_straight_mover() {
        let cfg = |fraction: f64| TrainConfig {
            width: 8,
            height: 8,
            frames: 3,
            batch: 16,
            cfg_dropout: 0.0,
            single_mover_fraction: fraction,
            ..Default::default()
        };
        let singles = |fraction: f64| -> usize {
            (0..4)
                .flat_map(|step| draw_batch(&cfg(fraction), step, 2).prompts)
                .filter(|p| crate::is_single_mover(&crate::parse_caption(p).unwrap()))
                .count()
        };
        // 64 clips each: the whole world has about one in six; the curriculum all, or half.
        assert!(singles(0.0) < 25, "{}", singles(0.0));
        assert_eq!(singles(1.0), 64);
        assert!((24..=48).contains(&singles(0.5)), "{}", singles(0.5));
        // Clips are still the generator's own, rendered from their sample seed.
        let draw = draw_batch(&cfg(1.0), 1, 1);
        let seed = crate::rng::mix(0, 16);
        let ex = generate_single_mover(seed, &cfg(1.0).clip());
        assert_eq!(
            (&draw.x0[..3 * 64 * 3], &draw.prompts[0]),
            (ex.clip.data(), &ex.caption)
        );
    }

    #[test]
    fn the_multi_mover_fraction_sets_how_many_clips_bind_several_directions() {
        let cfg = |single: f64, multi: f64| TrainConfig {
            width: 8,
            height: 8,
            frames: 3,
            batch: 16,
            cfg_dropout: 0.0,
            single_mover_fraction: single,
            multi_mover_fraction: multi,
            ..Default::default()
        };
        let kinds = |single: f64, multi: f64| -> (usize, usize) {
            let specs: Vec<_> = (0..4)
                .flat_map(|step| draw_batch(&cfg(single, multi), step, 2).prompts)
                .map(|p| crate::parse_caption(&p).unwrap())
                .collect();
            let singles = specs.iter().filter(|s| crate::is_single_mover(s)).count();
            let multis = specs.iter().filter(|s| crate::is_multi_mover(s)).count();
            (singles, multis)
        };
        // 64 clips each: the whole world has about one multi mover in six.
        assert!(kinds(0.0, 0.0).1 < 20, "{:?}", kinds(0.0, 0.0));
        assert_eq!(kinds(0.0, 1.0), (0, 64));
        let (singles, multis) = kinds(0.5, 0.5);
        assert_eq!(singles + multis, 64);
        assert!((20..=44).contains(&singles), "{singles}");
        // A multi-mover share takes its clips from the whole-world ones only: with it the
        // single movers are the same clips, and every clip that changed is a multi mover.
        let (a, b) = (
            draw_batch(&cfg(0.25, 0.0), 2, 1),
            draw_batch(&cfg(0.25, 0.5), 2, 1),
        );
        let changed: Vec<_> = (a.prompts.iter().zip(&b.prompts))
            .filter(|(pa, pb)| pa != pb)
            .map(|(_, pb)| crate::parse_caption(pb).unwrap())
            .collect();
        assert!(!changed.is_empty() && changed.iter().all(crate::is_multi_mover));
        let seed = crate::rng::mix(0, 16);
        let ex = generate_multi_mover(seed, &cfg(0.0, 1.0).clip());
        let draw = draw_batch(&cfg(0.0, 1.0), 1, 1);
        assert_eq!(
            (&draw.x0[..3 * 64 * 3], &draw.prompts[0]),
            (ex.clip.data(), &ex.caption)
        );
    }

    #[test]
    fn the_top_noise_fraction_moves_that_share_of_clips_to_pure_noise() {
        let cfg = |fraction: f64| TrainConfig {
            width: 8,
            height: 8,
            frames: 3,
            batch: 16,
            shift: 1.0,
            cfg_dropout: 0.0,
            top_noise_fraction: fraction,
            ..Default::default()
        };
        let sigmas = |fraction: f64| -> Vec<f32> {
            (0..4)
                .flat_map(|step| draw_batch(&cfg(fraction), step, 2).sigmas)
                .collect()
        };
        let high = |s: &[f32]| s.iter().filter(|&&x| x > 0.99).count();
        // 64 clips each. At shift 1 a sigma above 0.99 is rare (about one in fifty).
        let (none, all, half) = (sigmas(0.0), sigmas(1.0), sigmas(0.5));
        assert!(high(&none) < 6, "{}", high(&none));
        assert!(high(&all) > 50, "{}", high(&all));
        assert!((18..=46).contains(&high(&half)), "{}", high(&half));
        assert!(all.iter().all(|&x| x > 0.5 && x <= 1.0), "{all:?}");
        // Clips and captions do not depend on it: only the noise levels move.
        let (a, b) = (draw_batch(&cfg(0.0), 3, 1), draw_batch(&cfg(1.0), 3, 1));
        assert_eq!((a.x0, a.eps, a.prompts), (b.x0, b.eps, b.prompts));
    }

    /// A pure-noise run of multi movers on 8x8, 5-frame clips.
    fn prior_cfg(renders: usize, motion_weight: f64) -> TrainConfig {
        TrainConfig {
            width: 8,
            height: 8,
            frames: 5,
            batch: 6,
            seed: 29,
            cfg_dropout: 0.0,
            multi_mover_fraction: 1.0,
            top_noise_fraction: 1.0,
            prior_renders: renders,
            motion_weight,
            ..Default::default()
        }
    }

    #[test]
    fn prior_targets_sit_at_pure_noise_and_lie_close_to_their_scenes_mean() {
        let (one, many) = (
            draw_batch(&prior_cfg(0, 0.0), 2, 2),
            draw_batch(&prior_cfg(16, 0.0), 2, 2),
        );
        assert!(many.sigmas.iter().all(|&s| s == 1.0), "{:?}", many.sigmas);
        // Same captions and noise: only the targets and levels change.
        assert_eq!((&one.eps, &one.prompts), (&many.eps, &many.prompts));
        // Against a 400-render estimate of each caption's mean clip (drawn here from the
        // captions, with other layouts than the trainer's), the 16-render targets are far closer
        // than the clips themselves: about 1/16 of the spread, plus the estimate's own.
        let cfg = prior_cfg(16, 0.0);
        let per = 3 * 5 * 8 * 8;
        let (mut err_one, mut err_many) = (0.0f64, 0.0f64);
        for (i, prompt) in many.prompts.iter().enumerate() {
            let spec = crate::parse_caption(prompt).unwrap();
            let mut mean = vec![0f64; per];
            for k in 0..400 {
                let clip = crate::render(&spec, &cfg.clip(), 5_000_000 + k);
                for (m, &v) in mean.iter_mut().zip(clip.data()) {
                    *m += v as f64 / 400.0;
                }
            }
            let sq = |x: &[f32]| {
                x.iter()
                    .zip(&mean)
                    .map(|(&a, b)| (a as f64 - b).powi(2))
                    .sum::<f64>()
            };
            err_one += sq(&one.x0[i * per..(i + 1) * per]);
            err_many += sq(&many.x0[i * per..(i + 1) * per]);
        }
        assert!(err_many < err_one / 5.0, "{err_many} against {err_one}");
    }

    #[test]
    fn a_prior_samples_weighted_loss_has_the_gradient_of_its_renders_losses() {
        // Σ_k w_k·(d + x_k) = K·w̄·(d + x̄) per pixel, for any d = v - eps: training on the
        // averaged sample moves the model as training on all K renders with the same noise.
        let k = 6;
        let cfg = prior_cfg(k, 4.0);
        let dims = [cfg.frames, cfg.height, cfg.width];
        let channel = dims.iter().product::<usize>();
        let seed = 77;
        let ex = crate::generate_multi_mover(seed, &cfg.clip());
        let (x_bar, w_bar) = prior_target(&ex.spec, ex.clip.data(), seed, &cfg);
        let renders: Vec<Vec<f32>> = std::iter::once(ex.clip.data().to_vec())
            .chain((1..k).map(|j| {
                let layout_seed = crate::rng::mix(seed, PRIOR_STREAM + j as u64);
                crate::render(&ex.spec, &cfg.clip(), layout_seed).into_data()
            }))
            .collect();
        let weights: Vec<Vec<f32>> = renders
            .iter()
            .map(|x| motion_weights(x, dims, 4.0))
            .collect();
        // The renders differ (several layouts), and so do their motion weights.
        assert!(renders.windows(2).all(|r| r[0] != r[1]));
        assert!(weights.windows(2).all(|w| w[0] != w[1]));
        let mut rng = Rng::stream(3, 4);
        for i in 0..3 * channel {
            let d = rng.f32() * 4.0 - 2.0;
            let p = i % channel;
            let sum: f32 = renders
                .iter()
                .zip(&weights)
                .map(|(x, w)| w[p] * (d + x[i]))
                .sum();
            let averaged = k as f32 * w_bar[p] * (d + x_bar[i]);
            assert!(
                (sum - averaged).abs() < 1e-4 * (1.0 + sum.abs()),
                "pixel {i}: {sum} against {averaged}"
            );
        }
    }

    #[test]
    fn prior_renders_need_pure_noise_clips() {
        let cfg = TrainConfig {
            top_noise_fraction: 0.0,
            ..prior_cfg(16, 0.0)
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("prior renders 16"), "{err}");
        assert!(prior_cfg(16, 0.0).validate().is_ok());
    }

    #[test]
    fn the_first_frame_offset_moves_only_each_clips_first_frame() {
        let mut cfg = TrainConfig {
            width: 8,
            height: 8,
            frames: 3,
            batch: 2,
            motion_weight: 2.0,
            ..Default::default()
        };
        let plain = draw_batch(&cfg, 0, 1);
        cfg.first_frame_offset = 0.5;
        let anchored = draw_batch(&cfg, 0, 1);
        // Per clip and channel: 64 values of frame 0, then 128 of frames 1-2.
        for (i, (a, p)) in anchored.x0.iter().zip(&plain.x0).enumerate() {
            let want = if i % (3 * 64) < 64 { p + 0.5 } else { *p };
            assert_eq!(*a, want, "value {i}");
        }
        // Same clips, noise and captions otherwise; loss weights from the clean clips.
        assert_eq!(
            (&anchored.eps, &anchored.prompts, &anchored.weights),
            (&plain.eps, &plain.prompts, &plain.weights)
        );
    }

    #[test]
    fn displacement_targets_are_the_generator_clips_own_motion() {
        let mut cfg = TrainConfig {
            width: 16,
            height: 16,
            frames: 5,
            batch: 3,
            ..Default::default()
        };
        let plain = draw_batch(&cfg, 2, 2);
        assert!(plain.displacement.is_empty());
        cfg.displacement_weight = 1.0;
        let draw = draw_batch(&cfg, 2, 2);
        // The same clips, captions and noise as without the head.
        assert_eq!(
            (&plain.x0, &plain.eps, &plain.sigmas, &plain.prompts),
            (&draw.x0, &draw.eps, &draw.sigmas, &draw.prompts)
        );
        let clip_cfg = cfg.clip();
        let per = 2 * 5 * 16 * 16;
        assert_eq!(draw.displacement.len(), 3 * per);
        for i in 0..3 {
            let seed = crate::rng::mix(cfg.seed, (2 * 3 + i) as u64);
            let ex = generate_train(seed, &clip_cfg);
            assert_eq!(
                &draw.x0[i * 3 * 5 * 256..(i + 1) * 3 * 5 * 256],
                ex.clip.data()
            );
            let lay = crate::layout(&ex.spec, &clip_cfg, seed);
            assert_eq!(
                &draw.displacement[i * per..(i + 1) * per],
                displacement_field(&lay, &clip_cfg).as_slice()
            );
        }
    }
}
