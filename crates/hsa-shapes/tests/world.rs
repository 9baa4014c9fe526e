//! The generator: determinism, captions, vocabulary, held-out split, clip geometry.

use hsa_shapes::*;
use std::collections::HashSet;

#[test]
fn generation_is_deterministic() {
    let cfg = ClipConfig::default();
    for seed in [0u64, 1, 17, 123_456_789, u64::MAX] {
        let a = generate_train(seed, &cfg);
        let b = generate_train(seed, &cfg);
        assert_eq!(a.spec, b.spec);
        assert_eq!(a.caption, b.caption);
        assert_eq!(a.clip.data(), b.clip.data(), "seed {seed}: clip differs");
        let e1 = generate_eval(seed, &cfg);
        let e2 = generate_eval(seed, &cfg);
        assert_eq!(e1.caption, e2.caption);
        assert_eq!(e1.clip, e2.clip);
    }
    // Different seeds give different clips, and the same scene renders differently under
    // different seeds (nuisance parameters come from the seed).
    assert_ne!(generate_train(1, &cfg).clip, generate_train(2, &cfg).clip);
    let spec = sample_train(5);
    assert_ne!(render(&spec, &cfg, 1), render(&spec, &cfg, 2));
    assert_eq!(render(&spec, &cfg, 3), render(&spec, &cfg, 3));
}

#[test]
fn a_fixed_seed_gives_a_fixed_caption() {
    // Pins the sampler's stream: a change here changes every dataset built from seeds.
    let captions: Vec<String> = (0..3).map(|s| caption(&sample_train(s))).collect();
    assert_eq!(
        captions[0],
        "a green ring moving down left on a purple gradient background"
    );
    assert_eq!(
        captions[1],
        "a green square moving down left and an orange triangle moving up left on a yellow \
         textured background"
    );
    assert_eq!(
        captions[2],
        "a yellow ring moving up right and a red circle moving up left on a cyan striped \
         background"
    );
}

#[test]
fn captions_round_trip() {
    let mut seen = HashSet::new();
    for seed in 0..5000 {
        let spec = sample_scene(seed);
        let text = caption(&spec);
        let parsed = parse_caption(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(parsed, spec, "{text}");
        assert_eq!(caption(&parsed), text);
        seen.insert(text);
    }
    assert!(
        seen.len() > 4900,
        "captions repeat too often: {}",
        seen.len()
    );
    // Every motion, pattern and pan word appears.
    let all: String = seen.iter().cloned().collect::<Vec<_>>().join(" ");
    for w in [
        "staying still",
        "moving up left",
        "moving down right",
        "bouncing horizontally",
        "bouncing vertically",
        "checkered",
        "textured",
        "gradient",
        "striped",
        "camera panning left",
        "an orange",
        "on a gray background",
    ] {
        assert!(all.contains(w), "{w:?} never generated");
    }
    // Parsing is case and comma-spacing tolerant; printing is canonical.
    let s =
        parse_caption("A Red circle moving left on a blue background , camera panning up").unwrap();
    assert_eq!(
        caption(&s),
        "a red circle moving left on a blue background, camera panning up"
    );
}

#[test]
fn vocabulary_is_small_and_complete() {
    let vocab = vocabulary();
    assert_eq!(vocab.len(), 35);
    let set: HashSet<&str> = vocab.iter().copied().collect();
    assert_eq!(set.len(), vocab.len());
    for seed in 0..2000 {
        for w in tokenize(&caption(&sample_scene(seed))) {
            assert!(set.contains(w.as_str()), "{w:?} not in the vocabulary");
        }
    }
}

#[test]
fn held_out_split() {
    // Triple level: non-empty, and every pair of attributes of a held-out triple also
    // occurs in some training triple (held-out = unseen combinations of seen parts).
    let mut held = Vec::new();
    let mut train = Vec::new();
    for c in Colour::ALL {
        for s in Shape::ALL {
            for m in Motion::ALL {
                if is_held_out_triple(c, s, m) {
                    held.push((c, s, m));
                } else {
                    train.push((c, s, m));
                }
            }
        }
    }
    eprintln!(
        "held-out triples: {} of {}",
        held.len(),
        held.len() + train.len()
    );
    assert!(held.len() >= 40 && held.len() <= 60);
    for &(c, s, m) in &held {
        assert!(train.iter().any(|t| t.0 == c && t.1 == s));
        assert!(train.iter().any(|t| t.0 == c && t.2 == m));
        assert!(train.iter().any(|t| t.1 == s && t.2 == m));
    }

    // Scene level: the samplers are disjoint and both cover every colour, shape and motion.
    let mut train_specs = HashSet::new();
    let mut eval_specs = HashSet::new();
    let mut cover = [
        [HashSet::new(), HashSet::new(), HashSet::new()],
        [HashSet::new(), HashSet::new(), HashSet::new()],
    ];
    for seed in 0..3000 {
        let t = sample_train(seed);
        let e = sample_eval(seed);
        assert!(!is_held_out(&t));
        assert!(is_held_out(&e));
        t.validate().unwrap();
        e.validate().unwrap();
        for (side, spec) in [(0, &t), (1, &e)] {
            for o in &spec.objects {
                cover[side][0].insert(o.colour.index());
                cover[side][1].insert(o.shape.index());
                cover[side][2].insert(o.motion.index());
            }
        }
        train_specs.insert(caption(&t));
        eval_specs.insert(caption(&e));
    }
    assert!(train_specs.is_disjoint(&eval_specs));
    assert!(!eval_specs.is_empty());
    for side in &cover {
        assert_eq!(side[0].len(), 8, "colours");
        assert_eq!(side[1].len(), 4, "shapes");
        assert_eq!(side[2].len(), 11, "motions");
    }
    // Every held-out triple shows up in evaluation scenes.
    let mut eval_triples = HashSet::new();
    for seed in 0..3000 {
        for o in sample_eval(seed).objects {
            if is_held_out_triple(o.colour, o.shape, o.motion) {
                eval_triples.insert((o.colour, o.shape, o.motion));
            }
        }
    }
    assert_eq!(eval_triples.len(), held.len());
}

#[test]
fn any_size_and_frame_count_renders() {
    for (w, h, f) in [
        (32, 32, 17),
        (48, 48, 17),
        (40, 24, 9),
        (16, 16, 5),
        (64, 48, 33),
        (32, 32, 1),
    ] {
        let cfg = ClipConfig::new(w, h, f);
        cfg.validate().unwrap();
        for seed in 0..50 {
            let spec = sample_train(seed);
            let lay = layout(&spec, &cfg, seed);
            let clip = render_layout(&lay, &cfg);
            assert_eq!(clip.dims(), [3, f, h, w]);
            assert!(clip.data().iter().all(|v| (-1.0..=1.0).contains(v)));
            // Objects stay inside the frame.
            for o in &lay.objects {
                for &(x, y) in &o.track {
                    let r = o.half_extent;
                    assert!(
                        x - r >= -0.01 && x + r <= w as f32 + 0.01,
                        "{w}x{h}: x {x} r {r}"
                    );
                    assert!(
                        y - r >= -0.01 && y + r <= h as f32 + 0.01,
                        "{w}x{h}: y {y} r {r}"
                    );
                }
            }
        }
    }
    assert!(ClipConfig::new(4, 32, 17).validate().is_err());
}

#[test]
fn objects_rarely_overlap() {
    let cfg = ClipConfig::default();
    let n = 1000;
    let overlapping = (0..n)
        .filter(|&s| layout(&sample_train(s), &cfg, s).overlap_frames > 0)
        .count();
    eprintln!("clips with touching objects: {overlapping} of {n}");
    assert!(overlapping < n as usize / 20);
}

#[test]
fn motion_energy_of_static_and_moving_scenes() {
    let cfg = ClipConfig::default();
    let still = parse_caption(
        "a red circle staying still and a blue square staying still on a gray textured background",
    )
    .unwrap();
    assert!(still.is_static());
    for seed in 0..10 {
        assert_eq!(motion_energy(&render(&still, &cfg, seed)), 0.0);
    }
    let moving = parse_caption("a red circle moving left on a gray textured background").unwrap();
    let panning =
        parse_caption("a red circle staying still on a gray striped background, camera panning up")
            .unwrap();
    for seed in 0..10 {
        assert!(motion_energy(&render(&moving, &cfg, seed)) > 1e-3);
        assert!(motion_energy(&render(&panning, &cfg, seed)) > 1e-4);
    }
    let one_frame = render(&moving, &ClipConfig::new(32, 32, 1), 0);
    assert_eq!(motion_energy(&one_frame), 0.0);
}

#[test]
fn objects_have_their_colour_and_backgrounds_are_muted() {
    let cfg = ClipConfig::default();
    let params = CheckerParams::default();
    for seed in 0..200 {
        let spec = sample_train(seed);
        let lay = layout(&spec, &cfg, seed);
        for (o, l) in spec.objects.iter().zip(&lay.objects) {
            let rgb = l.rgb.map(|v| v * 2.0 - 1.0);
            assert_eq!(check::classify_pixel(&params, rgb), Some(o.colour));
        }
        let clip = render_layout(&lay, &cfg);
        // Pixels far from every object are background and never read as an object colour.
        for y in 0..cfg.height {
            for x in 0..cfg.width {
                let far = lay.objects.iter().all(|o| {
                    let (ox, oy) = o.track[0];
                    (x as f32 + 0.5 - ox).abs() > o.half_extent + 1.0
                        || (y as f32 + 0.5 - oy).abs() > o.half_extent + 1.0
                });
                if far {
                    assert_eq!(check::classify_pixel(&params, clip.rgb(0, y, x)), None);
                }
            }
        }
    }
}

#[test]
fn png_strip_is_written() {
    let dir = tempdir();
    let path = dir.join("strip.png");
    generate_train(3, &ClipConfig::default())
        .clip
        .save_png_strip(&path, 2)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hsa-shapes-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
