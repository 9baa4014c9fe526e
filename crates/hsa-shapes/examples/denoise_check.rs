//! Diagnostic: one-step velocity error of an exported model on training clips at several noise
//! levels (against predicting zero), then a plain 30-step Euler sample written to
//! /tmp/manual_strip.png with its checker score. Shows whether a training run has learned the
//! low-noise end, which decides whether samples come out clean.
//!
//!     cargo run --release -p hsa-shapes --example denoise_check -- models/shapes-wan
use candle_core::{DType, Device, Tensor};
use hsa_models::wan::WanModel;
use hsa_shapes::train::text_stack::TextStack;
use hsa_shapes::train::with_positions;
use hsa_shapes::{generate_train, ClipConfig};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let dev = Device::Cpu;
    let model = WanModel::load_dir(&dir.join("transformer"), Some(DType::F32), &dev).unwrap();
    let text = TextStack::load(&dir, 32, &dev).unwrap();
    let cfg = ClipConfig {
        width: 32,
        height: 32,
        frames: 9,
    };
    for seed in 0..2u64 {
        let ex = generate_train(seed, &cfg);
        let x0 = Tensor::from_vec(ex.clip.data().to_vec(), (1, 3, 9, 32, 32), &dev).unwrap();
        let eps = Tensor::randn(0f32, 1.0, x0.shape(), &dev).unwrap();
        let ctx = text.embed(&ex.caption).unwrap().unsqueeze(0).unwrap();
        for s in [0.2f64, 0.5, 0.8, 0.95] {
            let xt = ((&x0 * (1.0 - s)).unwrap() + (&eps * s).unwrap()).unwrap();
            let t = Tensor::new(&[(s * 1000.0) as f32], &dev).unwrap();
            let input = with_positions(&model, &xt).unwrap();
            let v = model.forward(&input, &t, &ctx, None, None).unwrap();
            let target = (&eps - &x0).unwrap();
            let err = (&v - &target)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let zero = target
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            println!("seed {seed} sigma {s}: v mse {err:.4} (predicting 0: {zero:.4})");
        }
    }
    // Per-frame x0 error at high noise, where a sample's layout is decided: a model that
    // treats frames alike has no trend over the clip.
    for s in [0.9f64, 0.7] {
        let mut per_frame = [0f64; 9];
        let n = 16u64;
        for seed in 0..n {
            let ex = generate_train(100 + seed, &cfg);
            let x0 = Tensor::from_vec(ex.clip.data().to_vec(), (1, 3, 9, 32, 32), &dev).unwrap();
            let eps = Tensor::randn(0f32, 1.0, x0.shape(), &dev).unwrap();
            let ctx = text.embed(&ex.caption).unwrap().unsqueeze(0).unwrap();
            let xt = ((&x0 * (1.0 - s)).unwrap() + (&eps * s).unwrap()).unwrap();
            let t = Tensor::new(&[(s * 1000.0) as f32], &dev).unwrap();
            let input = with_positions(&model, &xt).unwrap();
            let v = model.forward(&input, &t, &ctx, None, None).unwrap();
            let x0_hat = (&xt - (v * s).unwrap()).unwrap();
            let err = (x0_hat - &x0).unwrap().sqr().unwrap();
            for (f, e) in per_frame.iter_mut().enumerate() {
                *e += err
                    .narrow(2, f, 1)
                    .unwrap()
                    .mean_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
                    / n as f64;
            }
        }
        let row: Vec<String> = per_frame.iter().map(|e| format!("{e:.4}")).collect();
        println!("sigma {s}: x0 mse per frame {}", row.join(" "));
    }
    // Manual Euler sampling, no CFG.
    let sched = hsa_core::Schedule::new(hsa_core::ScheduleKind::FlowMatchEuler, 30, 3.0).unwrap();
    let caption = "a red circle moving right on a gray background";
    let ctx = text.embed(caption).unwrap().unsqueeze(0).unwrap();
    let mut x = Tensor::randn(0f32, 1.0, (1, 3, 9, 32, 32), &dev).unwrap();
    for i in 0..30 {
        let t = Tensor::new(&[sched.timesteps[i] as f32], &dev).unwrap();
        let input = with_positions(&model, &x).unwrap();
        let v = model.forward(&input, &t, &ctx, None, None).unwrap();
        x = (&x + (v * (sched.sigmas[i + 1] - sched.sigmas[i])).unwrap()).unwrap();
    }
    let clip = hsa_shapes::Clip::from_tensor(&x.clamp(-1f32, 1f32).unwrap()).unwrap();
    clip.save_png_strip(std::path::Path::new("/tmp/manual_strip.png"), 4)
        .unwrap();
    println!("{:?}", hsa_shapes::check(&clip, caption).unwrap().overall);
}
