//! Diagnostic: how much can each caption word lower the x0 error at pure noise?
//!
//! At sigma = 1 the input holds nothing of the clip, and the best x0 a model can give is the
//! mean of the clips that share the caption. This example estimates that mean by rendering
//! each caption's scene `K` times with other layout seeds, and measures its error on the
//! moving pixels of the clip (the same pixels and altered captions as the
//! `caption_sensitivity` example): with the true caption, with the first object's direction
//! reversed, its colour replaced, its shape replaced. Printed as altered / true, the ceiling of
//! what `caption_sensitivity` can show at sigma 1.
//!
//! Why: toy DiTs learn the colour words and not the direction words. The ceiling says whether
//! the direction words carry as much signal at high noise as the colour words do (they do, for
//! a model that knows each token's place: a clip moving right starts on the left), so that
//! the gap is the DiT's, not the data's. The mean is per pixel, i.e. it needs absolute
//! positions; a DiT with RoPE alone gives the same x0 at every place at sigma 1, for which
//! the direction words are worth nothing there.
//!
//! Env: `FRAMES` (default 9), `SINGLE=1` or `MULTI=1` (single or multi movers, as
//! `caption_sensitivity`), `K` renders per caption (default 200).
//!
//!     cargo run --release -p hsa-shapes --example caption_prior -- [CLIPS]
use hsa_shapes::train::data::motion_weights;
use hsa_shapes::{render, ClipConfig, Example, SceneSpec};

#[path = "common/clips.rs"]
mod clips;

const S: usize = 32;

fn main() {
    let clips: usize = std::env::args()
        .nth(1)
        .map_or(32, |a| a.parse().expect("clip count"));
    let f: usize = std::env::var("FRAMES").map_or(9, |v| v.parse().expect("FRAMES: a frame count"));
    let k: u64 = std::env::var("K").map_or(200, |v| v.parse().expect("K: renders per caption"));
    let cfg = ClipConfig {
        width: S,
        height: S,
        frames: f,
    };
    let (examples, kind) = clips::moving_examples(clips, &cfg);
    let mean = |spec: &SceneSpec| -> Vec<f32> {
        let mut sum = vec![0f32; 3 * f * S * S];
        for seed in 0..k {
            let clip = render(spec, &cfg, 900_000 + seed);
            for (a, v) in sum.iter_mut().zip(clip.data()) {
                *a += v;
            }
        }
        sum.iter().map(|a| a / k as f32).collect()
    };
    let mut sums = [0f64; 4];
    for ex in &examples {
        let x = ex.clip.data();
        let mask: Vec<f64> = motion_weights(x, [f, S, S], 1.0)
            .iter()
            .map(|&w| if w > 1.5 { 1.0 } else { 0.0 })
            .collect();
        let moving = 3.0 * mask.iter().sum::<f64>().max(1.0);
        for (i, spec) in altered(ex).iter().enumerate() {
            let m = mean(spec);
            let err: f64 = m
                .iter()
                .zip(x)
                .enumerate()
                .map(|(j, (a, b))| ((a - b) as f64).powi(2) * mask[j % (f * S * S)])
                .sum();
            sums[i] += err / moving;
        }
    }
    println!(
        "{} clips ({}), {f} frames, {k} renders per caption; best x0 at sigma 1 from the caption alone,",
        examples.len(),
        kind
    );
    println!(
        "error on moving pixels: true {:.4}",
        sums[0] / examples.len() as f64
    );
    println!(
        "altered / true: reversed {:.3}, colour {:.3}, shape {:.3}",
        sums[1] / sums[0],
        sums[2] / sums[0],
        sums[3] / sums[0]
    );
}

/// The true scene and the three alterations of its first object, as `caption_sensitivity`
/// makes them.
fn altered(ex: &Example) -> [SceneSpec; 4] {
    let [reversed, recoloured, reshaped] = ex.spec.first_object_alterations();
    [ex.spec.clone(), reversed, recoloured, reshaped]
}
