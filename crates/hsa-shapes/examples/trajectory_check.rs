//! Diagnostic: at which step of sampling does an object's path get decided, and when do the
//! jumps (a tracked centroid moving farther between neighbouring frames than the world ever
//! moves an object) come in?
//!
//! Samples held-out captions with FM Euler (T = 40, shift 3, guidance 4, empty negative
//! prompt: the bundled model's defaults) from the pipeline's noise for one seed, as `hsa eval
//! checker --seed` does for every caption, and runs the world's checker on the model's
//! clean-clip prediction `x - sigma * v` at several steps. Per step it prints the direction
//! score of that prediction, how many objects move as captioned, how many jump by more than
//! 8 px between frames, and how far (px, mean over frames) each object's track lies from where
//! the finished sample puts it. A path fixed in the first steps, with jumps already there,
//! points at the high-noise end of training; jumps that come in late point at the low-noise
//! end.
//!
//!     cargo run --release -p hsa-shapes --example trajectory_check -- models/shapes-wan [CAPTIONS] [SEED]
use candle_core::{DType, Device, Tensor};
use hsa_models::wan::WanModel;
use hsa_shapes::train::text_stack::TextStack;
use hsa_shapes::train::with_positions;
use hsa_shapes::{caption, check, sample_eval, CheckReport, Clip};

const F: usize = 9;
const S: usize = 32;
const STEPS: usize = 40;
const GUIDANCE: f64 = 4.0;
/// Farther than the world's fastest object moves between frames (about 4.6 px at 32x32).
const JUMP_PX: f32 = 8.0;
const PROBES: [usize; 9] = [0, 3, 6, 10, 15, 20, 25, 30, 39];

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("model folder"));
    let captions: u64 = args
        .next()
        .map_or(12, |a| a.parse().expect("caption count"));
    let seed: u64 = args.next().map_or(0, |a| a.parse().expect("noise seed"));
    let dev = Device::Cpu;
    let model = WanModel::load_dir(&dir.join("transformer"), Some(DType::F32), &dev).unwrap();
    let text = TextStack::load(&dir, 32, &dev).unwrap();
    let uncond = text.embed("").unwrap().unsqueeze(0).unwrap();
    let sched =
        hsa_core::Schedule::new(hsa_core::ScheduleKind::FlowMatchEuler, STEPS, 3.0).unwrap();
    // Per probe: (direction sum, right motions, jumping objects, distance to final sum, objects).
    let mut rows = vec![(0f32, 0usize, 0usize, 0f32, 0usize); PROBES.len()];
    let mut clips = 0usize;
    for i in 0..captions {
        let prompt = caption(&sample_eval(i));
        let cond = text.embed(&prompt).unwrap().unsqueeze(0).unwrap();
        let n = 3 * F * S * S;
        let noise = hsa_models::wan::init::normal(n, 1.0, seed, "hsa-generate-noise");
        let mut x = Tensor::from_vec(noise, (1, 3, F, S, S), &dev).unwrap();
        let mut probes: Vec<CheckReport> = Vec::new();
        for step in 0..STEPS {
            let t = Tensor::new(&[sched.timesteps[step] as f32], &dev).unwrap();
            let input = with_positions(&model, &x).unwrap();
            let vc = model.forward(&input, &t, &cond, None, None).unwrap();
            let vu = model.forward(&input, &t, &uncond, None, None).unwrap();
            let v = (&vu + ((&vc - &vu).unwrap() * GUIDANCE).unwrap()).unwrap();
            if PROBES.contains(&step) {
                let x0 = (&x - (&v * sched.sigmas[step]).unwrap()).unwrap();
                probes.push(check(&to_clip(&x0), &prompt).unwrap());
            }
            x = (&x + (v * (sched.sigmas[step + 1] - sched.sigmas[step])).unwrap()).unwrap();
        }
        let last = check(&to_clip(&x), &prompt).unwrap();
        clips += 1;
        for (row, report) in rows.iter_mut().zip(&probes) {
            row.0 += report.direction_score;
            for (o, fin) in report.objects.iter().zip(&last.objects) {
                row.4 += 1;
                row.1 += usize::from(o.detected_motion == Some(o.expected_motion));
                let tr = &o.centroids;
                row.2 += usize::from(tr.windows(2).any(|w| match (w[0], w[1]) {
                    (Some(a), Some(b)) => dist(a, b) > JUMP_PX,
                    _ => false,
                }));
                let d: Vec<f32> = tr
                    .iter()
                    .zip(&fin.centroids)
                    .filter_map(|(a, b)| Some(dist((*a)?, (*b)?)))
                    .collect();
                row.3 += if d.is_empty() {
                    0.0
                } else {
                    d.iter().sum::<f32>() / d.len() as f32
                };
            }
        }
        let right = last
            .objects
            .iter()
            .filter(|o| o.detected_motion == Some(o.expected_motion))
            .count();
        eprintln!(
            "{i}: {prompt}: final direction {:.2}, right motions {right}/{}",
            last.direction_score,
            last.objects.len()
        );
    }
    println!("step  sigma  direction  right  jumping  px from final   ({clips} clips)");
    for (step, row) in PROBES.iter().zip(&rows) {
        println!(
            "{step:4}  {:.3}  {:9.3}  {:2}/{:2}  {:2}/{:2}  {:13.1}",
            sched.sigmas[*step],
            row.0 / clips as f32,
            row.1,
            row.4,
            row.2,
            row.4,
            row.3 / row.4.max(1) as f32
        );
    }
}

fn to_clip(x: &Tensor) -> Clip {
    let data = x
        .clamp(-1f32, 1f32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    Clip::from_cfhw(F, S, S, data).unwrap()
}

fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}
