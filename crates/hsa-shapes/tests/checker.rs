//! The checker on generator clips, perturbed clips and wrong captions.

use hsa_shapes::*;

const N: u64 = 200;

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

fn scores(cfg: &ClipConfig, perturb: impl Fn(&Clip, u64) -> Clip) -> (f32, f32, f32, f32) {
    let (mut o, mut c, mut d, mut s) = (vec![], vec![], vec![], vec![]);
    for seed in 0..N {
        let ex = generate_train(seed, cfg);
        let clip = perturb(&ex.clip, seed);
        let r = check(&clip, &ex.caption).unwrap();
        o.push(r.overall);
        c.push(r.colour_score);
        d.push(r.direction_score);
        s.extend(r.shape_score);
    }
    (mean(&o), mean(&c), mean(&d), mean(&s))
}

#[test]
fn generator_clips_score_at_least_95_percent() {
    let cfg = ClipConfig::default();
    let (o, c, d, s) = scores(&cfg, |c, _| c.clone());
    eprintln!("clean 32x32x17: overall {o:.4} colour {c:.4} direction {d:.4} shape {s:.4}");
    assert!(o >= 0.95, "overall {o}");
    assert!(c >= 0.95 && d >= 0.95 && s >= 0.95);
}

#[test]
fn held_out_clips_score_at_least_95_percent() {
    let cfg = ClipConfig::default();
    let o = mean(
        &(0..N)
            .map(|seed| {
                let ex = generate_eval(seed, &cfg);
                check(&ex.clip, &ex.caption).unwrap().overall
            })
            .collect::<Vec<_>>(),
    );
    eprintln!("held-out 32x32x17: overall {o:.4}");
    assert!(o >= 0.95, "overall {o}");
}

#[test]
fn robust_to_noise_and_blur() {
    let cfg = ClipConfig::default();
    let (on, ..) = scores(&cfg, |c, seed| c.with_gaussian_noise(0.1, seed));
    let (ob, ..) = scores(&cfg, |c, _| c.box_blur3());
    let (onb, ..) = scores(&cfg, |c, seed| c.with_gaussian_noise(0.1, seed).box_blur3());
    eprintln!("noise 0.1: {on:.4}  blur 3x3: {ob:.4}  noise+blur: {onb:.4}");
    assert!(on >= 0.95, "noise {on}");
    assert!(ob >= 0.95, "blur {ob}");
    assert!(onb >= 0.9, "noise+blur {onb}");
}

#[test]
fn shuffled_captions_score_near_chance() {
    let cfg = ClipConfig::default();
    let specs: Vec<SceneSpec> = (0..N).map(sample_train).collect();
    let mut overall = vec![];
    for seed in 0..N {
        let clip = render(&specs[seed as usize], &cfg, seed);
        // A derangement: every clip gets another clip's caption.
        let other = &specs[((seed + 1 + (seed * 37) % (N - 1)) % N) as usize];
        overall.push(check(&clip, &caption(other)).unwrap().overall);
    }
    let o = mean(&overall);
    eprintln!("shuffled captions: overall {o:.4}");
    assert!(o < 0.5, "shuffled {o}");
}

#[test]
fn works_at_48_pixels() {
    let cfg = ClipConfig::square(48, 17);
    let (o, ..) = scores(&cfg, |c, _| c.clone());
    eprintln!("clean 48x48x17: overall {o:.4}");
    assert!(o >= 0.95);
}

#[test]
fn wrong_attributes_score_zero() {
    let cfg = ClipConfig::default();
    let opposite = |m: Motion| match m {
        Motion::Still => Motion::Moving(Direction::Left),
        Motion::Moving(d) => {
            let (x, y) = d.unit();
            Motion::Moving(Direction::from_vector(-x, -y))
        }
        Motion::Bouncing(Axis::Horizontal) => Motion::Bouncing(Axis::Vertical),
        Motion::Bouncing(Axis::Vertical) => Motion::Bouncing(Axis::Horizontal),
    };
    for seed in 0..40 {
        let ex = generate_train(seed, &cfg);
        let mut wrong = ex.spec.clone();
        for o in &mut wrong.objects {
            o.motion = opposite(o.motion);
            o.shape = Shape::ALL[(o.shape.index() + 1) % 4];
        }
        let r = check_spec(&ex.clip, &wrong, &CheckerParams::default());
        assert_eq!(r.colour_score, 1.0);
        assert!(r.direction_score <= 0.34, "seed {seed}: {r:?}");
        assert!(r.shape_score.unwrap() <= 0.34, "seed {seed}: {r:?}");
    }
}

#[test]
fn missing_objects_and_blank_clips() {
    let cfg = ClipConfig::default();
    let blank = Clip::new(cfg.frames, cfg.height, cfg.width);
    let r = check(&blank, "a red circle moving left on a gray background").unwrap();
    assert_eq!(r.overall, 0.0);
    assert_eq!(r.motion_energy, 0.0);
    assert!(check(&blank, "a red blob").is_err());
    // A clip with only a green square, asked about a red circle: nothing found.
    let spec = parse_caption("a green square moving right on a blue background").unwrap();
    let clip = render(&spec, &cfg, 9);
    let r = check(&clip, "a red circle moving right on a blue background").unwrap();
    assert_eq!(r.colour_score, 0.0);
    assert_eq!(r.overall, 0.0);
    assert_eq!(r.extra_colours, vec![Colour::Green]);
    assert!(check(&clip, &caption(&spec))
        .unwrap()
        .extra_colours
        .is_empty());
}

#[test]
fn extra_colours_lower_the_colour_score() {
    let cfg = ClipConfig::default();
    let spec = parse_caption(
        "a red circle staying still and a green square moving right on a gray background",
    )
    .unwrap();
    let clip = render(&spec, &cfg, 3);
    let full = check(&clip, &caption(&spec)).unwrap();
    assert_eq!((full.colour_score, full.colour_recall), (1.0, 1.0));
    // Asked for the red circle alone, the clip also shows a green object.
    let r = check(&clip, "a red circle staying still on a gray background").unwrap();
    assert_eq!(r.extra_colours, vec![Colour::Green]);
    assert_eq!((r.colour_score, r.colour_recall), (0.5, 1.0));
}

#[test]
fn saturated_noise_scores_little() {
    let cfg = ClipConfig::default();
    let overall = (0..40)
        .map(|seed| {
            let noise = Clip::new(cfg.frames, cfg.height, cfg.width).with_gaussian_noise(1.0, seed);
            check(&noise, &generate_eval(seed, &cfg).caption)
                .unwrap()
                .overall
        })
        .collect::<Vec<_>>();
    let o = mean(&overall);
    eprintln!("saturated noise: overall {o:.4}");
    assert!(o < 0.15, "noise {o}");
}

#[test]
fn camera_pan_is_compensated() {
    let cfg = ClipConfig::default();
    for pan in ["left", "right", "up", "down"] {
        for seed in 0..10 {
            let text = format!(
                "a red circle staying still and a blue square moving {pan} on a gray striped \
                 background, camera panning {pan}"
            );
            let clip = render(&parse_caption(&text).unwrap(), &cfg, seed);
            let r = check(&clip, &text).unwrap();
            assert_eq!(r.direction_score, 1.0, "{text}: {:?}", r.objects);
            // Without the pan in the caption the still circle reads as moving.
            let no_pan = text.split(", camera").next().unwrap();
            let r = check(&clip, no_pan).unwrap();
            assert_eq!(
                r.objects[0].detected_motion.map(|m| m == Motion::Still),
                Some(false)
            );
        }
    }
}

#[test]
fn model_layout_round_trips() {
    // A model output arrives as [3, F, H, W] floats, or as 8-bit frames.
    let ex = generate_train(11, &ClipConfig::default());
    let [_, f, h, w] = ex.clip.dims();
    let back = Clip::from_cfhw(f, h, w, ex.clip.data().to_vec()).unwrap();
    assert_eq!(check(&back, &ex.caption).unwrap().overall, 1.0);
    let bytes = ex.clip.to_u8_fhwc();
    let q = Clip::from_u8_fhwc(f, h, w, &bytes).unwrap();
    assert_eq!(check(&q, &ex.caption).unwrap().overall, 1.0);
}

#[test]
fn single_frame_clips_score_colour_and_shape() {
    let cfg = ClipConfig::new(32, 32, 1);
    let spec = parse_caption("a red square staying still on a gray background").unwrap();
    let r = check(&render(&spec, &cfg, 4), &caption(&spec)).unwrap();
    assert_eq!(r.colour_score, 1.0);
    assert_eq!(r.shape_score, Some(1.0));
    assert_eq!(r.direction_score, 0.0, "motion needs two frames");
    assert_eq!(r.motion_energy, 0.0);
}

/// Mean heading over the objects of `clips` (clip, caption) that have one, and their number.
fn mean_heading(clips: impl Iterator<Item = (Clip, String)>) -> (f32, usize) {
    let h: Vec<f32> = clips
        .flat_map(|(clip, text)| {
            let r = check(&clip, &text).unwrap();
            r.objects
                .into_iter()
                .filter_map(|o| o.heading)
                .collect::<Vec<_>>()
        })
        .collect();
    (mean(&h), h.len())
}

/// `clip` played backwards: every motion reversed.
fn reversed(clip: &Clip) -> Clip {
    let mut out = clip.clone();
    let [_, f, h, w] = clip.dims();
    for t in 0..f {
        for y in 0..h {
            for x in 0..w {
                out.set_rgb(t, y, x, clip.rgb(f - 1 - t, y, x));
            }
        }
    }
    out
}

#[test]
fn heading_is_one_on_generator_clips_minus_one_played_backwards_and_near_zero_shuffled() {
    let cfg = ClipConfig::new(32, 32, 9);
    let examples: Vec<Example> = (0..N).map(|seed| generate_train(seed, &cfg)).collect();
    let (forward, n) = mean_heading(examples.iter().map(|e| (e.clip.clone(), e.caption.clone())));
    // Camera pans are compensated forwards only, so backwards clips keep to pan-free scenes.
    let still_camera = examples.iter().filter(|e| e.spec.camera.is_none());
    let (backward, _) = mean_heading(still_camera.map(|e| (reversed(&e.clip), e.caption.clone())));
    // Every clip with the caption of the clip after it: asked and shown directions unrelated.
    let shuffled = (0..N as usize).map(|i| {
        let other = &examples[(i + 1) % examples.len()];
        (examples[i].clip.clone(), other.caption.clone())
    });
    let (unrelated, m) = mean_heading(shuffled);
    eprintln!("heading: forward {forward:.3} ({n} objects), backward {backward:.3}, shuffled {unrelated:.3} ({m})");
    assert!(n >= 50 && m >= 10, "too few straight movers: {n}, {m}");
    assert!(forward >= 0.95, "forward {forward}");
    assert!(backward <= -0.9, "backward {backward}");
    assert!(unrelated.abs() <= 0.3, "shuffled {unrelated}");
}

#[test]
fn heading_is_the_cosine_to_the_asked_direction() {
    let right: Vec<(usize, f32, f32)> = (0..5).map(|t| (t, 3.0 + 2.0 * t as f32, 10.0)).collect();
    let close = |a: Option<f32>, b: f32| (a.unwrap() - b).abs() < 1e-5;
    assert!(close(check::heading(&right, Direction::Right), 1.0));
    assert!(close(check::heading(&right, Direction::Left), -1.0));
    assert!(close(check::heading(&right, Direction::Up), 0.0));
    assert!(close(
        check::heading(&right, Direction::UpRight),
        std::f32::consts::FRAC_1_SQRT_2
    ));
    let still: Vec<(usize, f32, f32)> = (0..5).map(|t| (t, 3.0, 10.0)).collect();
    assert!(close(check::heading(&still, Direction::Right), 0.0));
    assert_eq!(check::heading(&right[..1], Direction::Right), None);
}

#[test]
fn the_fastest_step_bounds_the_generator_tightly() {
    for frames in [9, 17] {
        let cfg = ClipConfig::new(32, 32, frames);
        let bound = fastest_step_px(&cfg);
        let mut largest = 0f32;
        for seed in 0..1000 {
            let l = layout(&sample_train(seed), &cfg, seed);
            for o in &l.objects {
                for pair in o.track.windows(2) {
                    largest = largest.max(check::distance_px(pair[0], pair[1]));
                }
            }
        }
        eprintln!("{frames} frames: largest step {largest:.3} px, bound {bound:.3} px");
        assert!(largest <= bound + 1e-4, "{largest} over {bound}");
        assert!(largest >= 0.8 * bound, "{largest} far under {bound}");
    }
    assert!((fastest_step_px(&ClipConfig::new(32, 32, 9)) - 4.6).abs() < 1e-4);
    assert_eq!(fastest_step_px(&ClipConfig::new(32, 32, 1)), 0.0);
}

#[test]
fn generator_clips_do_not_jump() {
    for cfg in [ClipConfig::new(32, 32, 9), ClipConfig::default()] {
        let bound = fastest_step_px(&cfg);
        let mut tracked = 0;
        for seed in 0..N {
            let ex = generate_train(seed, &cfg);
            let r = check(&ex.clip, &ex.caption).unwrap();
            assert_eq!(r.jumping_objects, 0, "seed {seed}: {}", ex.caption);
            for o in &r.objects {
                assert!(!o.jumped);
                if let Some(s) = o.largest_step_px {
                    tracked += 1;
                    assert!(s <= bound + 1.0, "seed {seed}: step {s} px");
                }
            }
        }
        assert!(tracked >= 300, "{tracked} objects tracked");
    }
}

#[test]
fn an_object_that_reappears_elsewhere_jumps() {
    // One still object, no pan, drawn from two seeds: frames 0-4 from one render, 5-8 from
    // the other, so the object is in one place and then, a frame later, in another.
    let cfg = ClipConfig::new(32, 32, 9);
    let spec = (0..)
        .map(sample_train)
        .find(|s| {
            s.objects.len() == 1 && s.objects[0].motion == Motion::Still && s.camera.is_none()
        })
        .unwrap();
    let place = |seed: u64| layout(&spec, &cfg, seed).objects[0].track[0];
    let (a, b) = (0..)
        .map(|k| (1, 2 + k))
        .find(|&(a, b)| check::distance_px(place(a), place(b)) > 12.0)
        .unwrap();
    let first = render(&spec, &cfg, a);
    let mut spliced = first.clone();
    let second = render(&spec, &cfg, b);
    let frame = 32 * 32;
    for c in 0..3 {
        let range = (c * 9 + 5) * frame..(c + 1) * 9 * frame;
        spliced.data_mut()[range.clone()].copy_from_slice(&second.data()[range]);
    }
    let text = caption(&spec);
    let whole = check(&first, &text).unwrap();
    assert_eq!(whole.jumping_objects, 0);
    assert!(whole.objects[0].largest_step_px.unwrap() < 0.5);
    let r = check(&spliced, &text).unwrap();
    assert_eq!(r.jumping_objects, 1);
    assert!(r.objects[0].jumped);
    let moved = check::distance_px(place(a), place(b));
    let seen = r.objects[0].largest_step_px.unwrap();
    assert!(
        (seen - moved).abs() < 1.0,
        "read {seen} px, moved {moved} px"
    );
}
