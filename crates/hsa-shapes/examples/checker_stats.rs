//! Checker statistics on generator clips: mean scores clean, under Gaussian noise
//! (sigma 0.1), a 3x3 box blur and both; the shape confusion matrix; motion errors; and the
//! score against shuffled captions (chance level).
//!
//! `cargo run -p hsa-shapes --release --example checker_stats -- [SIZE] [FRAMES] [COUNT]`

use hsa_shapes::*;
use std::collections::BTreeMap;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let frames: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(17);
    let n: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let cfg = ClipConfig::square(size, frames);
    let p = CheckerParams::default();
    println!("{n} training clips of {size}x{size}x{frames}");
    for variant in ["clean", "noise", "blur", "noise+blur"] {
        let mut shape_conf = [[0usize; 5]; 4];
        let mut motion_err = BTreeMap::new();
        let (mut tot, mut col, mut dir, mut shp, mut nshp) = (0.0, 0.0, 0.0, 0.0, 0);
        for seed in 0..n {
            let ex = generate_train(seed, &cfg);
            let clip = match variant {
                "clean" => ex.clip.clone(),
                "noise" => ex.clip.with_gaussian_noise(0.1, seed),
                "blur" => ex.clip.box_blur3(),
                _ => ex.clip.with_gaussian_noise(0.1, seed).box_blur3(),
            };
            let r = check_spec(&clip, &ex.spec, &p);
            tot += r.overall;
            col += r.colour_score;
            dir += r.direction_score;
            if let Some(s) = r.shape_score {
                shp += s;
                nshp += 1;
            }
            for o in &r.objects {
                let detected = o.detected_shape.map_or(4, |s| s.index());
                shape_conf[o.expected_shape.index()][detected] += 1;
                if o.detected_motion != Some(o.expected_motion) {
                    let key = format!("{:?} -> {:?}", o.expected_motion, o.detected_motion);
                    *motion_err.entry(key).or_insert(0) += 1;
                }
            }
        }
        let nf = n as f32;
        println!(
            "{variant:>10}: overall {:.4} colour {:.4} direction {:.4} shape {:.4} \
             (shape scored in {nshp} clips)",
            tot / nf,
            col / nf,
            dir / nf,
            shp / nshp.max(1) as f32
        );
        println!("            shape confusion (rows C S T R, cols C S T R none): {shape_conf:?}");
        if !motion_err.is_empty() {
            println!("            motion errors: {motion_err:?}");
        }
    }
    let specs: Vec<SceneSpec> = (0..n).map(sample_train).collect();
    let (mut o, mut c, mut d, mut s) = (0.0, 0.0, 0.0, 0.0);
    for seed in 0..n {
        let clip = render(&specs[seed as usize], &cfg, seed);
        let other = &specs[((seed + 1 + (seed * 7919) % (n - 1)) % n) as usize];
        let r = check_spec(&clip, other, &p);
        o += r.overall;
        c += r.colour_score;
        d += r.direction_score;
        s += r.shape_score.unwrap_or(0.0);
    }
    let nf = n as f32;
    println!(
        "  shuffled: overall {:.4} colour {:.4} direction {:.4} shape {:.4}",
        o / nf,
        c / nf,
        d / nf,
        s / nf
    );
}
