//! Diagnostic: does an exported model know where in the clip each token is?
//!
//! The DiT has no absolute positions: 3-D RoPE makes self-attention see only offsets between
//! tokens, and the patch embedding has no padding. To draw "a circle moving right" at high
//! noise, where the object's position is not yet in the input, the best x0 guess puts the
//! object left of centre in early frames and right of it in late ones, which needs each token
//! to know its frame index. Without an anchor (real Wan has one: its causal VAE encodes the
//! first frame alone, so latent frame 0 looks unlike the others) the model can learn it only
//! from edge effects of attention.
//!
//! A linear probe (ridge regression on one-hot labels, then arg max) is fitted on the hidden
//! state after chosen blocks, over the tokens of training clips noised to one level, and
//! scored on other clips: accuracy for the frame index and for the column (chance 1/F and
//! 1/8), and for first frame against last on those two frames' tokens alone (chance 1/2: the
//! frame index may be readable near both ends, as distance from an edge, without telling
//! early from late, which is what a direction needs). Printed per noise level and block, after
//! a control row (`input`) that fits the same probes on each token's noised pixels: the
//! world is symmetric under time reversal, so there the frame probes must sit at chance, and
//! what the blocks add above it is the model's own sense of time.
//!
//! `ANCHOR=o` adds `o` to the clips' first frame, for models trained with
//! `--first-frame-offset o`.
//!
//!     cargo run --release -p hsa-shapes --example position_probe -- models/shapes-wan [CLIPS]
use candle_core::{DType, Device, Tensor};
use hsa_models::wan::patch::patchify;
use hsa_models::wan::WanModel;
use hsa_shapes::train::data::offset_first_frame;
use hsa_shapes::train::text_stack::TextStack;
use hsa_shapes::train::with_positions;
use hsa_shapes::{generate_train, ClipConfig};

#[path = "common/probe.rs"]
mod linear_probe;
use linear_probe::LinearProbe;

const S: usize = 32;
const BLOCKS: [usize; 3] = [0, 2, 5];

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("model folder"));
    let clips: usize = args.next().map_or(24, |a| a.parse().expect("clip count"));
    let f: usize = std::env::var("FRAMES").map_or(9, |v| v.parse().expect("FRAMES"));
    let anchor: f32 = std::env::var("ANCHOR").map_or(0.0, |v| v.parse().expect("ANCHOR"));
    let dev = Device::Cpu;
    let model = WanModel::load_dir(&dir.join("transformer"), Some(DType::F32), &dev).unwrap();
    let text = TextStack::load(&dir, 32, &dev).unwrap();
    let cfg = ClipConfig {
        width: S,
        height: S,
        frames: f,
    };
    // Token frames, rows and columns, from the model's own patch (square patches): a
    // temporal patch of pt folds pt frames into one token frame.
    let [pt, ph, _] = model.config().patch_size;
    assert!(
        f.is_multiple_of(pt),
        "FRAMES={f} is not divisible by the temporal patch {pt}"
    );
    let ft = f / pt;
    let grid = S / ph;
    let tokens = ft * grid * grid;
    let frame_of: Vec<usize> = (0..tokens).map(|i| i / (grid * grid)).collect();
    let column_of: Vec<usize> = (0..tokens).map(|i| i % grid).collect();
    // Probes are fitted on the first 3/4 of the clips and scored on the rest.
    let fit = clips * 3 / 4;
    println!("{clips} clips ({fit} to fit), {f} frames; probe accuracy on held-back clips");
    println!(
        "sigma  block   frame (chance {:.2})   column (chance {:.2})   first/last (chance 0.50)",
        1.0 / ft as f64,
        1.0 / grid as f64
    );
    for s in [0.95f64, 0.8, 0.6] {
        // hidden[0] = the tokens' noised pixels, hidden[1 + k] = the output of BLOCKS[k]: rows
        // of every clip's tokens, clip after clip.
        let mut hidden: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 1 + BLOCKS.len()];
        for c in 0..clips {
            let ex = generate_train(9_000 + c as u64, &cfg);
            let mut data = ex.clip.data().to_vec();
            offset_first_frame(&mut data, f, S * S, anchor);
            let x0 = Tensor::from_vec(data, (1, 3, f, S, S), &dev).unwrap();
            let noise = hsa_models::wan::init::normal(x0.elem_count(), 1.0, c as u64, "noise");
            let eps = Tensor::from_vec(noise, x0.shape(), &dev).unwrap();
            let xt = ((&x0 * (1.0 - s)).unwrap() + (&eps * s).unwrap()).unwrap();
            let t = Tensor::new(&[(s * 1000.0) as f32], &dev).unwrap();
            let pixels = patchify(&xt, model.config().patch_size).unwrap();
            hidden[0].extend(pixels.squeeze(0).unwrap().to_vec2::<f32>().unwrap());
            let ctx = text.embed(&ex.caption).unwrap().unsqueeze(0).unwrap();
            let mut keep = |name: &str, h: &Tensor| {
                if let Some(k) = BLOCKS.iter().position(|b| name == format!("block{b}_out")) {
                    hidden[1 + k].extend(h.squeeze(0).unwrap().to_vec2::<f32>().unwrap());
                }
            };
            let input = with_positions(&model, &xt).unwrap();
            model
                .forward(&input, &t, &ctx, None, Some(&mut keep))
                .unwrap();
        }
        // Blocks past the model's depth leave their rows empty.
        for (k, rows) in hidden.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            let label = |of: &[usize], n: usize| {
                let ys: Vec<usize> = (0..rows.len()).map(|i| of[i % tokens]).collect();
                probe(rows, &ys, n, fit * tokens)
            };
            // Tokens of the first and the last token frame only, labelled 0 and 1.
            let ends: Vec<(Vec<f32>, usize)> = rows
                .iter()
                .enumerate()
                .filter(|(i, _)| frame_of[i % tokens] == 0 || frame_of[i % tokens] == ft - 1)
                .map(|(i, r)| (r.clone(), usize::from(frame_of[i % tokens] != 0)))
                .collect();
            let (end_rows, end_labels): (Vec<_>, Vec<_>) = ends.into_iter().unzip();
            let per_clip = 2 * grid * grid;
            println!(
                "{s:<5}  {:>5}   {:>17.3}   {:>18.3}   {:>22.3}",
                if k == 0 {
                    "input".to_string()
                } else {
                    BLOCKS[k - 1].to_string()
                },
                label(&frame_of, ft),
                label(&column_of, grid),
                probe(&end_rows, &end_labels, 2, fit * per_clip)
            );
        }
    }
}

/// Fits a [`LinearProbe`] on `rows[..fit]` and returns its accuracy on `rows[fit..]`.
fn probe(rows: &[Vec<f32>], labels: &[usize], classes: usize, fit: usize) -> f64 {
    let probe = LinearProbe::fit(&rows[..fit], &labels[..fit], classes);
    let correct = (rows[fit..].iter().zip(&labels[fit..]))
        .filter(|(r, &y)| probe.predict(r) == y)
        .count();
    correct as f64 / (rows.len() - fit) as f64
}
