//! Diagnostic: does an exported model pool evidence across frames?
//!
//! Each training clip is frozen at its middle frame (all 9 frames equal), then noised two ways:
//! with one noise draw shared by every frame (the other frames add nothing) and with an
//! independent draw per frame (nine looks at the same picture). A model that reads the other
//! frames denoises the second far better at high noise; a model that treats frames one by one
//! scores both alike. The ratio (independent / shared x0 error) is printed per noise level, on
//! the objects' pixels (where the clip differs from its blurred background) and overall.
//! Noise shared across frames is itself unlike training noise, so read the ratio as a rough
//! measure. The shipped model gives about 0.2-0.5 from sigma 0.95 down to 0.4: it does pool
//! across frames, so its flickering samples are not a model that ignores time.
//!
//!     cargo run --release -p hsa-shapes --example temporal_check -- models/shapes-wan [CLIPS]
use candle_core::{DType, Device, Tensor};
use hsa_models::wan::WanModel;
use hsa_shapes::train::text_stack::TextStack;
use hsa_shapes::train::with_positions;
use hsa_shapes::{generate_train, ClipConfig};

const F: usize = 9;
const S: usize = 32;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("model folder"));
    let clips: u64 = args.next().map_or(16, |a| a.parse().expect("clip count"));
    let dev = Device::Cpu;
    let model = WanModel::load_dir(&dir.join("transformer"), Some(DType::F32), &dev).unwrap();
    let text = TextStack::load(&dir, 32, &dev).unwrap();
    let cfg = ClipConfig {
        width: S,
        height: S,
        frames: F,
    };
    println!("sigma  shared-noise err  independent err  ratio   (object pixels | all pixels)");
    for s in [0.95f64, 0.9, 0.8, 0.6, 0.4] {
        let mut sums = [0f64; 4];
        for seed in 0..clips {
            let ex = generate_train(500 + seed, &cfg);
            let data = ex.clip.data();
            let plane = F * S * S;
            // Freeze the middle frame: [3, F, S, S] with every frame equal to frame F/2.
            let mut frozen = vec![0f32; 3 * plane];
            for c in 0..3 {
                let mid = &data[c * plane + (F / 2) * S * S..][..S * S];
                for f in 0..F {
                    frozen[c * plane + f * S * S..][..S * S].copy_from_slice(mid);
                }
            }
            let mask = object_mask(&frozen);
            let x0 = Tensor::from_vec(frozen, (1, 3, F, S, S), &dev).unwrap();
            let one = Tensor::randn(0f32, 1.0, (1, 3, 1, S, S), &dev).unwrap();
            let shared = one.repeat((1, 1, F, 1, 1)).unwrap();
            let independent = Tensor::randn(0f32, 1.0, (1, 3, F, S, S), &dev).unwrap();
            let ctx = text.embed(&ex.caption).unwrap().unsqueeze(0).unwrap();
            for (k, eps) in [shared, independent].iter().enumerate() {
                let xt = ((&x0 * (1.0 - s)).unwrap() + (eps * s).unwrap()).unwrap();
                let t = Tensor::new(&[(s * 1000.0) as f32], &dev).unwrap();
                let input = with_positions(&model, &xt).unwrap();
                let v = model.forward(&input, &t, &ctx, None, None).unwrap();
                let x0_hat = (&xt - (v * s).unwrap()).unwrap();
                let err: Vec<f32> = (x0_hat - &x0)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let (mut on, mut n_on) = (0f64, 0usize);
                for (i, e) in err.iter().enumerate() {
                    if mask[i % plane] {
                        on += *e as f64;
                        n_on += 1;
                    }
                }
                sums[k] += on / n_on.max(1) as f64;
                sums[2 + k] += err.iter().map(|&e| e as f64).sum::<f64>() / err.len() as f64;
            }
        }
        let n = clips as f64;
        println!(
            "{s:<5}  {:.4} | {:.4}    {:.4} | {:.4}    {:.2} | {:.2}",
            sums[0] / n,
            sums[2] / n,
            sums[1] / n,
            sums[3] / n,
            sums[1] / sums[0],
            sums[3] / sums[2],
        );
    }
}

/// Pixels (per frame-plane position, any of the 3 channels) that differ from a 7x7 box blur of
/// the clip by more than 0.3: object edges and bodies, not smooth backgrounds.
fn object_mask(clip: &[f32]) -> Vec<bool> {
    let plane = F * S * S;
    let mut mask = vec![false; plane];
    for c in 0..3 {
        for f in 0..F {
            let img = &clip[c * plane + f * S * S..][..S * S];
            for y in 0..S {
                for x in 0..S {
                    let (mut sum, mut n) = (0f32, 0f32);
                    for yy in y.saturating_sub(3)..(y + 4).min(S) {
                        for xx in x.saturating_sub(3)..(x + 4).min(S) {
                            sum += img[yy * S + xx];
                            n += 1.0;
                        }
                    }
                    if (img[y * S + x] - sum / n).abs() > 0.3 {
                        mask[f * S * S + y * S + x] = true;
                    }
                }
            }
        }
    }
    mask
}
