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
/// (decided from its own seed), a single straight mover or several instead.
pub fn draw_batch(cfg: &TrainConfig, step: usize, threads: usize) -> BatchDraw {
    let clip_cfg = cfg.clip();
    let per = 3 * cfg.frames * cfg.height * cfg.width;
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
        (ex.clip.into_data(), eps, ex.caption, displacement)
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
        weights: Vec::new(),
        displacement: Vec::new(),
    };
    let mut rng = Rng::stream(cfg.seed, 1_000_000 + step as u64);
    for (clip, eps, caption, displacement) in samples {
        draw.x0.extend_from_slice(&clip);
        draw.eps.extend_from_slice(&eps);
        draw.displacement.extend_from_slice(&displacement);
        let u = if rng.chance(0.5) {
            rng.f32() as f64
        } else {
            1.0 / (1.0 + (-standard_normal(&mut rng)).exp())
        };
        // Drawn only when asked for, so that runs without it keep their random stream.
        let top = cfg.top_noise_fraction > 0.0 && rng.chance(cfg.top_noise_fraction as f32);
        let shift = if top {
            super::TOP_NOISE_SHIFT
        } else {
            cfg.shift
        };
        draw.sigmas.push(hsa_core::shift_sigma(u, shift) as f32);
        let dropped = rng.chance(cfg.cfg_dropout as f32);
        draw.prompts
            .push(if dropped { String::new() } else { caption });
    }
    if cfg.motion_weight > 0.0 {
        let clip = [cfg.frames, cfg.height, cfg.width];
        draw.weights = draw
            .x0
            .chunks(per)
            .flat_map(|x| motion_weights(x, clip, cfg.motion_weight as f32))
            .collect();
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
