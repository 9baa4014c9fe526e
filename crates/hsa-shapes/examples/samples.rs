//! Writes sample clips as PNG strips and prints the checker's verdicts and throughput.
//!
//! `cargo run -p hsa-shapes --release --example samples -- [OUT_DIR] [COUNT] [SIZE] [FRAMES]`

use hsa_shapes::{check, generate_train, Clip, ClipConfig};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(args.get(1).map_or("/tmp/hsa-shapes", String::as_str));
    let count: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(12);
    let size: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let frames: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(17);
    let cfg = ClipConfig::square(size, frames);
    std::fs::create_dir_all(&out).expect("create output dir");
    for seed in 0..count {
        let ex = generate_train(seed, &cfg);
        let report = check(&ex.clip, &ex.caption).expect("own caption parses");
        let path = out.join(format!("clip_{seed:03}.png"));
        ex.clip.save_png_strip(&path, 4).expect("write png");
        // First, middle and last frame, larger.
        let f = cfg.frames;
        let keys = [0, f / 2, f - 1];
        let mut key = Clip::new(keys.len(), cfg.height, cfg.width);
        for (k, &t) in keys.iter().enumerate() {
            for y in 0..cfg.height {
                for x in 0..cfg.width {
                    key.set_rgb(k, y, x, ex.clip.rgb(t, y, x));
                }
            }
        }
        key.save_png_strip(&out.join(format!("clip_{seed:03}_keys.png")), 8)
            .expect("write png");
        println!(
            "{} overall {:.2} (colour {:.2} direction {:.2} shape {:?}) | {}",
            path.display(),
            report.overall,
            report.colour_score,
            report.direction_score,
            report.shape_score,
            ex.caption
        );
    }
    let n = 2000u64;
    let start = Instant::now();
    let mut sink = 0.0f32;
    for seed in 0..n {
        sink += generate_train(1_000_000 + seed, &cfg).clip.data()[0];
    }
    let dt = start.elapsed().as_secs_f64();
    println!(
        "generated {n} clips of {size}x{size}x{frames} in {dt:.2} s on one core: {:.0} clips/min ({sink:.1})",
        n as f64 / dt * 60.0
    );
}
