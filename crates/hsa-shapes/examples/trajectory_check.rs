//! Diagnostic: at which step of sampling does an object's path get decided, and when do the
//! jumps (a tracked centroid moving farther between neighbouring frames than the world ever
//! moves an object) come in?
//!
//! Samples held-out captions with FM Euler (T = 40, shift 3, guidance 4, empty negative
//! prompt: the bundled model's defaults) from the pipeline's noise for one seed, as `hsa eval
//! checker --seed` does for every caption, and runs the world's checker on the model's
//! clean-clip prediction `x - sigma * v` at several steps. Per step it prints the direction
//! score of that prediction, how many objects move as captioned, how many jump (the checker's
//! `jumped`: more than 8 px between frames at this size), and how far (px, mean over frames)
//! each object's track lies from where the finished sample puts it. A path fixed in the first
//! steps, with jumps already there, points at the high-noise end of training; jumps that come
//! in late point at the low-noise end.
//!
//!     cargo run --release -p hsa-shapes --example trajectory_check -- models/shapes-wan [CAPTIONS] [SEED]
use candle_core::{DType, Device, Tensor};
use hsa_core::euler::combine_guidance;
use hsa_models::wan::WanModel;
use hsa_shapes::train::text_stack::TextStack;
use hsa_shapes::train::with_positions;
use hsa_shapes::{caption, check, sample_eval, CheckReport, Clip};

const F: usize = 9;
const S: usize = 32;
const STEPS: usize = 40;
const GUIDANCE: f64 = 4.0;
const PROBES: [usize; 9] = [0, 3, 6, 10, 15, 20, 25, 30, 39];

/// Sums over the clips of what the checker reads at one probe step.
#[derive(Clone, Copy, Default)]
struct ProbeSums {
    direction: f32,
    right_motions: usize,
    jumping: usize,
    /// Sum over objects of each track's mean distance (px) from the finished sample's.
    px_from_final: f32,
    objects: usize,
}

impl ProbeSums {
    fn add(&mut self, probe: &CheckReport, last: &CheckReport) {
        self.direction += probe.direction_score;
        self.jumping += probe.jumping_objects;
        for (o, fin) in probe.objects.iter().zip(&last.objects) {
            self.objects += 1;
            self.right_motions += usize::from(o.detected_motion == Some(o.expected_motion));
            let d: Vec<f32> = o
                .centroids
                .iter()
                .zip(&fin.centroids)
                .filter_map(|(a, b)| Some(check::distance_px((*a)?, (*b)?)))
                .collect();
            if !d.is_empty() {
                self.px_from_final += d.iter().sum::<f32>() / d.len() as f32;
            }
        }
    }
}

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
    // One seed, so every caption starts from the same noise (as `hsa eval checker` does).
    let noise = hsa_models::wan::init::normal(3 * F * S * S, 1.0, seed, "hsa-generate-noise");
    let noise = Tensor::from_vec(noise, (1, 3, F, S, S), &dev).unwrap();
    let mut sums = [ProbeSums::default(); PROBES.len()];
    for i in 0..captions {
        let prompt = caption(&sample_eval(i));
        let cond = text.embed(&prompt).unwrap().unsqueeze(0).unwrap();
        let mut x = noise.clone();
        let mut probes: Vec<CheckReport> = Vec::new();
        for step in 0..STEPS {
            let t = Tensor::new(&[sched.timesteps[step] as f32], &dev).unwrap();
            let input = with_positions(&model, &x).unwrap();
            let vc = model.forward(&input, &t, &cond, None, None).unwrap();
            let vu = model.forward(&input, &t, &uncond, None, None).unwrap();
            let v = combine_guidance(&vc, &vu, GUIDANCE).unwrap();
            if PROBES.contains(&step) {
                let x0 = (&x - (&v * sched.sigmas[step]).unwrap()).unwrap();
                probes.push(check(&Clip::from_tensor(&x0).unwrap(), &prompt).unwrap());
            }
            x = (&x + (v * (sched.sigmas[step + 1] - sched.sigmas[step])).unwrap()).unwrap();
        }
        let last = check(&Clip::from_tensor(&x).unwrap(), &prompt).unwrap();
        for (sum, probe) in sums.iter_mut().zip(&probes) {
            sum.add(probe, &last);
        }
        let right = last
            .objects
            .iter()
            .filter(|o| o.detected_motion == Some(o.expected_motion))
            .count();
        eprintln!(
            "{i}: {prompt}: final direction {:.2}, right motions {right}/{}, jumping {}",
            last.direction_score,
            last.objects.len(),
            last.jumping_objects
        );
    }
    println!("step  sigma  direction  right  jumping  px from final   ({captions} clips)");
    for (step, sum) in PROBES.iter().zip(&sums) {
        println!(
            "{step:4}  {:.3}  {:9.3}  {:2}/{:2}  {:2}/{:2}  {:13.1}",
            sched.sigmas[*step],
            sum.direction / captions.max(1) as f32,
            sum.right_motions,
            sum.objects,
            sum.jumping,
            sum.objects,
            sum.px_from_final / sum.objects.max(1) as f32
        );
    }
}
