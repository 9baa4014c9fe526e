//! Diagnostic: which caption words does an exported model use?
//!
//! For training clips whose first object moves in a straight line, the model's x0 error on the
//! moving pixels is measured with the true caption and with captions that each change one
//! thing about that object: its direction reversed, its colour replaced by an unused one, its
//! shape replaced; and with the empty prompt. Same clip, same noise. A word the model uses
//! raises the error when it is wrong; a word it ignores leaves the error where the true caption
//! has it. Printed per noise level as altered / true error, then how much each alteration
//! changes the text encoder's rows (relative Frobenius norm), to tell a word the encoder loses
//! from one the DiT ignores.
//!
//! Why: the checker reads the seventh bundled model's objects moving smoothly but in directions
//! unrelated to their captions (mean cosine about 0 between asked and read displacement). On it
//! the reversed direction leaves the error unchanged (ratio 1.00 at every noise level) while a
//! wrong colour doubles it, though the encoder's rows change as much for either: the DiT does
//! not use the direction words at all.
//!
//! With a training folder whose run trained the motion head (`--displacement-weight`), its
//! (EMA) head's displacement error over all pixels is measured the same way: at high noise
//! the best displacement guess is the caption's direction wherever the object may be, so a
//! head that reads the direction words shows a ratio above one even where the DiT's velocity
//! does not.
//!
//! The clips have 9 frames unless `FRAMES` says otherwise (the DiT takes any frame count): at 5
//! frames the world's objects step twice as far between neighbouring frames. With `SINGLE=1`
//! the clips are single movers (one object moving straight, no pan), for models trained on
//! those alone (`--single-mover-fraction 1`); with `MULTI=1` they are multi movers (two or
//! three objects moving straight in different directions, no pan), where reversing the
//! first object's direction alone asks whether the model binds each direction to its object.
//! `ANCHOR=o` adds `o` to the clips' first frame,
//! for models trained with `--first-frame-offset o`. `SIGMAS=1,0.95` picks the noise levels
//! (default 0.95, 0.8, 0.6, 0.4); at 1 the `caption_prior` example gives the ceiling.
//!
//!     cargo run --release -p hsa-shapes --example caption_sensitivity -- models/shapes-wan [CLIPS [WORK]]
use candle_core::{DType, Device, Tensor, Var};
use hsa_models::wan::WanModel;
use hsa_shapes::train::data::{motion_weights, offset_first_frame};
use hsa_shapes::train::text_stack::TextStack;
use hsa_shapes::train::with_positions;
use hsa_shapes::train::{motion_head, TrainConfig};
use hsa_shapes::{caption, displacement_field, ClipConfig, Example};

#[path = "common/clips.rs"]
mod clips;

const S: usize = 32;
const LABELS: [&str; 4] = ["reversed", "colour", "shape", "empty"];

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("model folder"));
    let clips: usize = args.next().map_or(24, |a| a.parse().expect("clip count"));
    let f: usize = std::env::var("FRAMES").map_or(9, |v| v.parse().expect("FRAMES: a frame count"));
    let dev = Device::Cpu;
    let model = WanModel::load_dir(&dir.join("transformer"), Some(DType::F32), &dev).unwrap();
    let text = TextStack::load(&dir, 32, &dev).unwrap();
    let head = args
        .next()
        .map(|work| load_head(std::path::Path::new(&work), &dev));
    let cfg = ClipConfig {
        width: S,
        height: S,
        frames: f,
    };
    let anchor: f32 = std::env::var("ANCHOR").map_or(0.0, |v| v.parse().expect("ANCHOR"));
    let (examples, _) = clips::moving_examples(clips, &cfg);
    let prompts: Vec<[String; 5]> = examples.iter().map(prompts).collect();
    // Text contexts and displacement targets do not depend on the noise level: once per clip.
    let contexts: Vec<Vec<Tensor>> = prompts
        .iter()
        .map(|ps| {
            ps.iter()
                .map(|p| text.embed(p).unwrap().unsqueeze(0).unwrap())
                .collect()
        })
        .collect();
    let targets: Vec<Option<Tensor>> = examples
        .iter()
        .map(|ex| {
            head.as_ref().map(|_| {
                let d = displacement_field(&ex.layout, &cfg);
                Tensor::from_vec(d, (1, 2, f, S, S), &dev).unwrap()
            })
        })
        .collect();
    let read = head.as_ref().map(|(c, _)| motion_head::trace_name(c));
    let n = examples.len() as f64;

    println!(
        "{} clips; x0 error on moving pixels, altered / true caption",
        examples.len()
    );
    println!("sigma  {}", LABELS.map(|l| format!("{l:>9}")).join(""));
    let levels: Vec<f64> = std::env::var("SIGMAS").map_or(vec![0.95, 0.8, 0.6, 0.4], |v| {
        v.split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .expect("SIGMAS: noise levels, comma-separated")
            })
            .collect()
    });
    for s in levels {
        let mut sums = [0f64; 5];
        let mut head_sums = [0f64; 5];
        for (seed, ((ex, contexts), target)) in
            examples.iter().zip(&contexts).zip(&targets).enumerate()
        {
            let mut data = ex.clip.data().to_vec();
            let mask: Vec<f32> = motion_weights(&data, [f, S, S], 1.0)
                .iter()
                .map(|w| if *w > 1.5 { 1.0 } else { 0.0 })
                .collect();
            offset_first_frame(&mut data, f, S * S, anchor);
            let moving = 3.0 * mask.iter().sum::<f32>().max(1.0) as f64;
            let mask = Tensor::from_vec(mask, (1, 1, f, S, S), &dev).unwrap();
            let x0 = Tensor::from_vec(data, (1, 3, f, S, S), &dev).unwrap();
            let noise = hsa_models::wan::init::normal(x0.elem_count(), 1.0, seed as u64, "noise");
            let eps = Tensor::from_vec(noise, x0.shape(), &dev).unwrap();
            let xt = ((&x0 * (1.0 - s)).unwrap() + (&eps * s).unwrap()).unwrap();
            let t = Tensor::new(&[(s * 1000.0) as f32], &dev).unwrap();
            for (i, ctx) in contexts.iter().enumerate() {
                let mut hidden = None;
                let mut keep = |name: &str, t: &Tensor| {
                    if read.as_deref() == Some(name) {
                        hidden = Some(t.clone());
                    }
                };
                let input = with_positions(&model, &xt).unwrap();
                let v = model
                    .forward(&input, &t, ctx, None, Some(&mut keep))
                    .unwrap();
                if let (Some((tcfg, vars)), Some(target), Some(h)) = (&head, target, &hidden) {
                    let loss = motion_head::loss(tcfg, vars, h, target).unwrap();
                    head_sums[i] += loss.to_scalar::<f32>().unwrap() as f64;
                }
                let x0_hat = (&xt - (v * s).unwrap()).unwrap();
                let err = (x0_hat - &x0)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .broadcast_mul(&mask)
                    .unwrap();
                sums[i] += err.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64 / moving;
            }
        }
        print_ratios(&format!("{s:<5}"), &sums, n);
        if head.is_some() {
            print_ratios("  head", &head_sums, n);
        }
    }

    let mut change = [0f64; 4];
    for prompts in &prompts {
        let base = text.embed(&prompts[0]).unwrap();
        let norm = |t: &Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        for (c, p) in change.iter_mut().zip(&prompts[1..]) {
            let diff = (text.embed(p).unwrap() - &base).unwrap();
            *c += (norm(&diff) / norm(&base)).sqrt() as f64 / n;
        }
    }
    let change: Vec<String> = change.iter().map(|c| format!("{c:>9.3}")).collect();
    println!(
        "rows   {}   (relative change of the encoder's output)",
        change.join("")
    );
}

/// One row: each altered caption's summed error over the true caption's, then the true
/// caption's mean error.
fn print_ratios(label: &str, sums: &[f64; 5], n: f64) {
    let ratios: Vec<String> = sums[1..]
        .iter()
        .map(|e| format!("{:>9.3}", e / sums[0]))
        .collect();
    println!(
        "{label}  {}   (true caption: {:.4})",
        ratios.join(""),
        sums[0] / n
    );
}

/// A training folder's configuration and its motion head's EMA variables.
fn load_head(work: &std::path::Path, dev: &Device) -> (TrainConfig, Vec<Var>) {
    let cfg: TrainConfig =
        serde_json::from_slice(&std::fs::read(work.join("train_config.json")).unwrap()).unwrap();
    let state =
        candle_core::safetensors::load(work.join("checkpoint/state.safetensors"), dev).unwrap();
    let vars = motion_head::NAMES
        .iter()
        .map(|name| {
            let t = state.get(&format!("ema/{name}"));
            Var::from_tensor(t.expect("a run that trained the motion head")).unwrap()
        })
        .collect();
    (cfg, vars)
}

/// The true caption, then the first object's direction reversed, its colour replaced by one
/// no object or background has, its shape replaced, and the empty prompt.
fn prompts(ex: &Example) -> [String; 5] {
    let [reversed, recoloured, reshaped] = ex.spec.first_object_alterations();
    [
        ex.caption.clone(),
        caption(&reversed),
        caption(&recoloured),
        caption(&reshaped),
        String::new(),
    ]
}
