//! `hsa bench train`: one update of the bundled model's trainer (flow-matching loss, backward,
//! AdamW with gradient clipping, weight average) on random weights, optionally against the
//! same update in PyTorch (diffusers `WanTransformer3DModel`, `tools/bench/train_step_torch.py`)
//! on the same config, weights, batch and thread count, alternating in the same run.
//!
//! The batch is drawn once and the text context is random: data drawing runs on other threads
//! during training, and the frozen text encoder (2 layers of width 64) is negligible, so the
//! update itself is what is timed on both sides.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use hsa_models::wan::dit::init_values;
use hsa_models::wan::weights::expected_tensors;
use hsa_shapes::train::optim::{AdamW, Ema};
use hsa_shapes::train::{
    diffusers_config, draw_batch, flow_matching_loss, model_over, TrainConfig,
};

use super::torch::{
    f64_field, median, runs, version_and_threads, work_folder, TorchServer, TorchSideArgs,
};
use crate::{EvalError, Result};

/// Settings of the training benchmark (defaults: the bundled model's architecture and clips).
#[derive(Debug, Clone, clap::Args)]
pub struct TrainBenchArgs {
    #[arg(long, default_value_t = 256)]
    pub dim: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 6)]
    pub layers: usize,
    #[arg(long, default_value_t = 1024)]
    pub ffn: usize,
    /// Frames per clip.
    #[arg(long, default_value_t = 9)]
    pub frames: usize,
    /// Clip width and height.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed updates per side (the median is reported), after one warm-up update each.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    #[command(flatten)]
    pub side: TorchSideArgs,
    /// Seed of the random weights, batch and context.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The PyTorch side of a run.
#[derive(Debug, Clone)]
pub struct TorchTrainSide {
    pub version: String,
    pub threads: usize,
    /// Loss of the first update, on the weights both sides start from.
    pub first_loss: f64,
    pub warmup: f64,
    pub seconds: Vec<f64>,
}

/// The benchmark's result.
#[derive(Debug, Clone)]
pub struct TrainBenchReport {
    pub args: TrainBenchArgs,
    pub device: String,
    pub threads: usize,
    pub params: usize,
    pub tokens_per_clip: usize,
    pub first_loss: f64,
    pub warmup: f64,
    pub seconds: Vec<f64>,
    pub torch: Option<TorchTrainSide>,
}

/// Runs the training benchmark on `device`.
pub fn train(args: &TrainBenchArgs, device: &Device) -> Result<TrainBenchReport> {
    if args.repeats == 0 {
        return Err(EvalError::Invalid("--repeats must be at least 1".into()));
    }
    let threads = args.side.threads()?;
    let cfg = TrainConfig {
        width: args.size,
        height: args.size,
        frames: args.frames,
        dim: args.dim,
        heads: args.heads,
        layers: args.layers,
        ffn: args.ffn,
        batch: args.batch,
        seed: args.seed,
        ..TrainConfig::default()
    };
    cfg.validate()
        .map_err(|e| EvalError::Invalid(e.to_string()))?;
    if device.is_cuda() {
        // As `hsa train` does on a GPU.
        candle_core::cuda::set_gemm_reduced_precision_f32(true);
    }
    let wcfg = cfg.dit_config();

    // Every weight random (none starts at zero), so the first losses of the two sides check
    // each other.
    let (dir, _guard) = work_folder(args.side.workdir.as_ref(), "train")?;
    let shapes = expected_tensors(&wcfg);
    let weights: HashMap<String, Tensor> = shapes
        .iter()
        .map(|(name, shape)| {
            let v = init_values(name, shape, wcfg.dim(), args.seed);
            Ok((
                name.clone(),
                Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)?,
            ))
        })
        .collect::<Result<_>>()?;
    let params = weights.values().map(Tensor::elem_count).sum();
    let draw = draw_batch(&cfg, 0, threads);
    let clip = (cfg.batch, 3, cfg.frames, cfg.height, cfg.width);
    let context_shape = (cfg.batch, cfg.text_len, wcfg.text_dim);
    let inputs = HashMap::from([
        (
            "x0".to_string(),
            Tensor::from_slice(&draw.x0, clip, &Device::Cpu)?,
        ),
        (
            "eps".to_string(),
            Tensor::from_slice(&draw.eps, clip, &Device::Cpu)?,
        ),
        (
            "sigmas".to_string(),
            Tensor::from_slice(&draw.sigmas, cfg.batch, &Device::Cpu)?,
        ),
        (
            "context".to_string(),
            Tensor::from_vec(
                hsa_models::wan::init::normal(
                    cfg.batch * cfg.text_len * wcfg.text_dim,
                    1.0,
                    args.seed,
                    "context",
                ),
                context_shape,
                &Device::Cpu,
            )?,
        ),
    ]);
    let (weights_path, inputs_path, config_path) = (
        dir.join("weights.safetensors"),
        dir.join("inputs.safetensors"),
        dir.join("config.json"),
    );
    candle_core::safetensors::save(&weights, &weights_path)?;
    candle_core::safetensors::save(&inputs, &inputs_path)?;
    std::fs::write(&config_path, diffusers_config(&wcfg).to_string())
        .map_err(|e| EvalError::Io(format!("cannot write {}: {e}", config_path.display())))?;

    // Our side.
    let names: Vec<String> = shapes.into_iter().map(|(n, _)| n).collect();
    let vars: Vec<Var> = names
        .iter()
        .map(|n| Var::from_tensor(&weights[n].to_device(device)?))
        .collect::<candle_core::Result<_>>()?;
    let model = model_over(&cfg, &names, &vars).map_err(|e| EvalError::Invalid(e.to_string()))?;
    let on_device = |name: &str| inputs[name].to_device(device);
    let (x0, eps, sigmas, context) = (
        on_device("x0")?,
        on_device("eps")?,
        on_device("sigmas")?,
        on_device("context")?,
    );
    let mut opt = AdamW::new(cfg.adamw, &vars)?;
    let mut ema = Ema::new(cfg.ema_decay, &vars)?;
    let mut update = || -> Result<(f64, f64)> {
        let start = Instant::now();
        let loss = flow_matching_loss(&model, &x0, &eps, &sigmas, &context)
            .map_err(|e| EvalError::Invalid(e.to_string()))?;
        let grads = loss.backward()?;
        opt.update(&vars, &grads, cfg.lr)?;
        ema.update(&vars)?;
        // Copying the loss to the host waits for the device.
        let loss = loss.to_scalar::<f32>()? as f64;
        Ok((start.elapsed().as_secs_f64(), loss))
    };
    let (warmup, first_loss) = update()?;

    let mut server = if args.side.torch {
        let mut cmd = args.side.command("train_step_torch.py");
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--weights")
            .arg(&weights_path)
            .arg("--inputs")
            .arg(&inputs_path)
            .args(["--threads", &threads.to_string()])
            .args(["--device", if device.is_cuda() { "cuda" } else { "cpu" }])
            .args(["--lr", &cfg.lr.to_string()])
            .args(["--weight-decay", &cfg.adamw.weight_decay.to_string()])
            .args(["--max-grad-norm", &cfg.adamw.max_grad_norm.to_string()])
            .args(["--ema-decay", &cfg.ema_decay.to_string()]);
        Some(TorchServer::start_ready(&mut cmd)?)
    } else {
        None
    };

    // Alternate the two sides: ours, PyTorch, ours, PyTorch, ...
    let mut seconds = Vec::with_capacity(args.repeats);
    let mut torch_seconds = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        seconds.push(update()?.0);
        if let Some((server, _)) = server.as_mut() {
            torch_seconds.push(server.run()?);
        }
    }
    let torch = match server {
        None => None,
        Some((server, ready)) => {
            server.finish()?;
            let (version, threads) = version_and_threads(&ready);
            Some(TorchTrainSide {
                version,
                threads,
                first_loss: f64_field(&ready, "loss")?,
                warmup: f64_field(&ready, "warmup")?,
                seconds: torch_seconds,
            })
        }
    };
    let (f, h, w) = (
        cfg.frames / cfg.patch[0],
        cfg.height / cfg.patch[1],
        cfg.width / cfg.patch[2],
    );
    Ok(TrainBenchReport {
        args: args.clone(),
        device: format!("{device:?}"),
        threads,
        params,
        tokens_per_clip: f * h * w,
        first_loss,
        warmup,
        seconds,
        torch,
    })
}

impl fmt::Display for TrainBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.args;
        writeln!(
            f,
            "training update (loss, backward, AdamW, weight average): D {} x {} layers, ffn {}, \
             {:.2}M parameters; batch {} of {}x{}x{} clips ({} tokens each); {}, {} threads; \
             {} repeats (median after a warm-up)",
            a.dim,
            a.layers,
            a.ffn,
            self.params as f64 / 1e6,
            a.batch,
            a.frames,
            a.size,
            a.size,
            self.tokens_per_clip,
            self.device,
            self.threads,
            a.repeats
        )?;
        writeln!(
            f,
            "{:<24} {:>12} {:>10} {:>10}   runs",
            "side", "s / update", "clips / s", "warm-up s"
        )?;
        let ours = median(&self.seconds);
        let row = |f: &mut fmt::Formatter<'_>, side: &str, med: f64, warm: f64, all: &[f64]| {
            writeln!(
                f,
                "{side:<24} {med:>12.3} {:>10.1} {warm:>10.2}   {}",
                a.batch as f64 / med,
                runs(all)
            )
        };
        row(f, "hsa (candle, f32)", ours, self.warmup, &self.seconds)?;
        match &self.torch {
            Some(t) => {
                let theirs = median(&t.seconds);
                row(
                    f,
                    &format!("PyTorch {} (f32)", t.version),
                    theirs,
                    t.warmup,
                    &t.seconds,
                )?;
                writeln!(
                    f,
                    "hsa / PyTorch time: {:.2}x (medians); PyTorch threads {}",
                    ours / theirs,
                    t.threads
                )?;
                writeln!(
                    f,
                    "first-update loss on the shared weights: hsa {:.6}, PyTorch {:.6} (relative difference {:.1e})",
                    self.first_loss,
                    t.first_loss,
                    ((self.first_loss - t.first_loss) / t.first_loss).abs()
                )
            }
            None => writeln!(f, "first-update loss {:.6}", self.first_loss),
        }
    }
}
