//! `hsa bench vae`: Wan VAE decode (or encode) on random weights with the real architecture,
//! optionally against diffusers on the same weights and input, alternating in the same run
//! (`tools/bench/vae_decode_torch.py`).

use std::fmt;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::parse_dtype;
use super::torch::{
    f64_field, median, runs, version_and_threads, work_folder, TorchServer, TorchSideArgs,
};
use super::vae_weights::{write_random_vae, SplitMix};
use crate::{EvalError, Result};

/// Settings of the VAE benchmark: a Wan VAE with the real architecture and deterministic random
/// weights decodes (or encodes) a fixed random input; `--torch` runs the same pass in PyTorch
/// (diffusers `AutoencoderKLWan`, same weights, input and thread count) in the same invocation.
#[derive(Debug, Clone, clap::Args)]
pub struct VaeBenchArgs {
    /// Architecture: wan21 (Wan2.1 VAE, also Wan2.2 A14B) or wan22 (Wan2.2 TI2V-5B VAE).
    #[arg(long, default_value = "wan21")]
    pub config: String,
    /// Pixel frames of the video (1 + 4k; the latent has 1 + k frames).
    #[arg(long, default_value_t = 5)]
    pub frames: usize,
    /// Pixel size WxH (multiples of 8 for wan21, 16 for wan22). Real Wan size: 832x480.
    #[arg(long, default_value = "128x128")]
    pub size: String,
    /// Time the encoder (video -> latent mean) instead of the decoder.
    #[arg(long)]
    pub encode: bool,
    /// Timed passes per side (the median is reported), after one warm-up pass each.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Compute dtype of our side (f32 or bf16); PyTorch always runs f32.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[command(flatten)]
    pub side: TorchSideArgs,
    /// Seed of the random weights and input.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// What a VAE benchmark run does, derived and checked from its arguments.
#[derive(Debug, Clone)]
struct VaePlan {
    cfg: hsa_models::wan::WanVaeConfig,
    dtype: DType,
    /// `[1, 3, F, H, W]` for encode, `[1, z, f, h, w]` for decode.
    input_shape: Vec<usize>,
}

fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let v: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("size '{s}': {e}"))?;
    match v.as_slice() {
        [w, h] if *w > 0 && *h > 0 => Ok((*w, *h)),
        _ => Err(format!("size '{s}' must be WxH with positive sizes")),
    }
}

fn vae_plan(args: &VaeBenchArgs) -> std::result::Result<VaePlan, String> {
    use hsa_models::wan::WanVaeConfig;
    let cfg = match args.config.as_str() {
        "wan21" => WanVaeConfig::wan21(),
        "wan22" => WanVaeConfig::wan22(),
        other => return Err(format!("config '{other}' (expected wan21 or wan22)")),
    };
    let dtype = match parse_dtype(&args.dtype)? {
        DType::F16 => return Err("dtype f16 is not benchmarked (use f32 or bf16)".into()),
        d => d,
    };
    if args.repeats == 0 {
        return Err("repeats must be at least 1".into());
    }
    if args.side.threads == Some(0) {
        return Err("threads must be at least 1".into());
    }
    let tf = cfg.temporal_factor();
    if args.frames == 0 || !(args.frames - 1).is_multiple_of(tf) {
        return Err(format!(
            "frames {} must be 1 + {tf}k (1, 5, 9, ..., 81)",
            args.frames
        ));
    }
    let (w, h) = parse_size(&args.size)?;
    let s = cfg.spatial_factor();
    if w % s != 0 || h % s != 0 {
        return Err(format!(
            "size {w}x{h}: width and height must be multiples of {s} for {}",
            args.config
        ));
    }
    let input_shape = if args.encode {
        vec![1, cfg.video_in_channels(), args.frames, h, w]
    } else {
        vec![1, cfg.z_dim, cfg.latent_frames(args.frames), h / s, w / s]
    };
    Ok(VaePlan {
        cfg,
        dtype,
        input_shape,
    })
}

/// The PyTorch side of one run.
#[derive(Debug, Clone)]
pub struct TorchSide {
    pub version: String,
    pub threads: usize,
    pub warmup: f64,
    pub seconds: Vec<f64>,
    /// Largest |ours - PyTorch| over the last outputs.
    pub max_abs_diff: f64,
}

/// The VAE benchmark's result.
#[derive(Debug, Clone)]
pub struct VaeBenchReport {
    pub args: VaeBenchArgs,
    pub threads: usize,
    pub params: usize,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// Standard deviation of our output (a sanity check that it is not constant).
    pub output_std: f64,
    pub load_seconds: f64,
    pub warmup: f64,
    pub seconds: Vec<f64>,
    pub torch: Option<TorchSide>,
}

/// Runs the VAE benchmark on the CPU.
pub fn vae(args: &VaeBenchArgs) -> Result<VaeBenchReport> {
    let plan = vae_plan(args).map_err(EvalError::Invalid)?;
    let threads = args.side.threads()?;
    let device = Device::Cpu;
    let (dir, _guard) = work_folder(args.side.workdir.as_ref(), "vae")?;
    let weights = dir.join("weights.safetensors");
    let input_path = dir.join("input.safetensors");
    let torch_out = dir.join("torch_output.safetensors");
    let params = write_random_vae(&plan.cfg, args.encode, args.seed, &weights)?;
    let n: usize = plan.input_shape.iter().product();
    let mut rng = SplitMix::for_name(args.seed, "input");
    let values: Vec<f32> = if args.encode {
        (0..n).map(|_| rng.symmetric()).collect()
    } else {
        (0..n).map(|_| rng.normal()).collect()
    };
    let input = Tensor::from_vec(values, plan.input_shape.as_slice(), &device)?;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("input".to_string(), input.clone())]),
        &input_path,
    )?;

    let start = Instant::now();
    let vae = hsa_models::wan::WanVae::load_files(
        &plan.cfg,
        std::slice::from_ref(&weights),
        plan.dtype,
        &device,
        args.encode,
    )?;
    let load_seconds = start.elapsed().as_secs_f64();
    let pass = || -> Result<(f64, Tensor)> {
        let start = Instant::now();
        let y = if args.encode {
            vae.encode(&input)?
        } else {
            vae.decode(&input)?
        };
        Ok((start.elapsed().as_secs_f64(), y))
    };
    let (warmup, mut out) = pass()?;

    let mut server = if args.side.torch {
        let mut cmd = args.side.command("vae_decode_torch.py");
        cmd.arg("--serve")
            .args(["--config", &args.config])
            .arg("--weights")
            .arg(&weights)
            .arg("--input")
            .arg(&input_path)
            .arg("--out")
            .arg(&torch_out)
            .args(["--threads", &threads.to_string()]);
        if args.encode {
            cmd.arg("--encode");
        }
        Some(TorchServer::start_ready(&mut cmd)?)
    } else {
        None
    };

    // Alternate the two sides: ours, PyTorch, ours, PyTorch, ...
    let mut seconds = Vec::with_capacity(args.repeats);
    let mut torch_seconds = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        let (s, y) = pass()?;
        seconds.push(s);
        out = y;
        if let Some((server, _)) = server.as_mut() {
            torch_seconds.push(server.run()?);
        }
    }

    let out = out.to_dtype(DType::F32)?;
    let torch = match server {
        None => None,
        Some((server, ready)) => {
            server.finish()?;
            let theirs = candle_core::safetensors::load(&torch_out, &device)?
                .remove("output")
                .ok_or_else(|| EvalError::Io("PyTorch output lacks 'output'".into()))?;
            if theirs.dims() != out.dims() {
                return Err(EvalError::Invalid(format!(
                    "PyTorch output shape {:?} differs from ours {:?}",
                    theirs.dims(),
                    out.dims()
                )));
            }
            let max_abs_diff = hsa_models::nn::max_abs_diff(&out, &theirs)? as f64;
            let (version, threads) = version_and_threads(&ready);
            Some(TorchSide {
                version,
                threads,
                warmup: f64_field(&ready, "warmup")?,
                seconds: torch_seconds,
                max_abs_diff,
            })
        }
    };
    let mean = out.mean_all()?.to_scalar::<f32>()? as f64;
    let var = out.sqr()?.mean_all()?.to_scalar::<f32>()? as f64 - mean * mean;
    Ok(VaeBenchReport {
        args: args.clone(),
        threads,
        params,
        input_shape: plan.input_shape,
        output_shape: out.dims().to_vec(),
        output_std: var.max(0.0).sqrt(),
        load_seconds,
        warmup,
        seconds,
        torch,
    })
}

impl fmt::Display for VaeBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.args;
        let (what, arrow) = if a.encode {
            ("encode", "video -> latent mean")
        } else {
            ("decode", "latent -> video")
        };
        writeln!(
            f,
            "VAE {what} ({}, {:.1}M parameters, random weights): {arrow} {:?} -> {:?}, ours {}, \
             threads {}, {} repeats (median after a warm-up), load {:.1} s",
            a.config,
            self.params as f64 / 1e6,
            self.input_shape,
            self.output_shape,
            a.dtype,
            self.threads,
            a.repeats,
            self.load_seconds
        )?;
        writeln!(
            f,
            "{:<28} {:>10} {:>10}   runs",
            "side", "median s", "warm-up s"
        )?;
        let ours = median(&self.seconds);
        writeln!(
            f,
            "{:<28} {:>10.3} {:>10.2}   {}",
            format!("hsa (candle, {})", a.dtype),
            ours,
            self.warmup,
            runs(&self.seconds)
        )?;
        if let Some(t) = &self.torch {
            let theirs = median(&t.seconds);
            writeln!(
                f,
                "{:<28} {:>10.3} {:>10.2}   {}",
                format!("PyTorch {} (f32)", t.version),
                theirs,
                t.warmup,
                runs(&t.seconds)
            )?;
            let paired: Vec<String> = self
                .seconds
                .iter()
                .zip(&t.seconds)
                .map(|(o, p)| format!("{:.2}", o / p))
                .collect();
            writeln!(
                f,
                "hsa / PyTorch time: {:.2}x (medians; per round: {}); PyTorch threads {}",
                ours / theirs,
                paired.join(", "),
                t.threads
            )?;
            writeln!(
                f,
                "max |hsa - PyTorch| over the output: {:.3e} (output std {:.3})",
                t.max_abs_diff, self.output_std
            )?;
        } else {
            writeln!(f, "output std {:.3}", self.output_std)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::vae_weights::vae_tensor_shapes;
    use super::*;

    #[derive(clap::Parser)]
    struct VaeCli {
        #[command(flatten)]
        args: VaeBenchArgs,
    }

    fn vae_args(extra: &[&str]) -> VaeBenchArgs {
        use clap::Parser;
        let argv = std::iter::once("bench").chain(extra.iter().copied());
        VaeCli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn vae_bench_arguments_are_checked() {
        let plan = vae_plan(&vae_args(&[])).unwrap();
        assert_eq!(plan.input_shape, [1, 16, 2, 16, 16]);
        let plan = vae_plan(&vae_args(&[
            "--encode", "--size", "832x480", "--frames", "9",
        ]))
        .unwrap();
        assert_eq!(plan.input_shape, [1, 3, 9, 480, 832]);
        let plan = vae_plan(&vae_args(&["--config", "wan22", "--size", "832x480"])).unwrap();
        assert_eq!(plan.input_shape, [1, 48, 2, 30, 52]);
        for (bad, needle) in [
            (&["--frames", "6"][..], "1 + 4k"),
            (&["--size", "250x256"], "multiples of 8"),
            (
                &["--config", "wan22", "--size", "264x256"],
                "multiples of 16",
            ),
            (&["--size", "256"], "WxH"),
            (&["--config", "wan3"], "wan21 or wan22"),
            (&["--repeats", "0"], "repeats"),
            (&["--threads", "0"], "threads"),
            (&["--dtype", "f16"], "f16"),
        ] {
            let err = vae_plan(&vae_args(bad)).unwrap_err();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    /// The benchmark's tensor list is the one diffusers saves (names and shapes), checked
    /// against the small AutoencoderKLWan fixtures of both layouts, and loads into `WanVae`
    /// with and without the encoder.
    #[test]
    fn vae_tensor_list_matches_diffusers_and_loads() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan_vae");
        for name in ["wan21", "wan22"] {
            let dir = root.join(name);
            let cfg = hsa_models::wan::vae::read_config(&dir.join("config.json")).unwrap();
            let stored = candle_core::safetensors::load(
                dir.join("diffusion_pytorch_model.safetensors"),
                &Device::Cpu,
            )
            .unwrap();
            let mut ours = vae_tensor_shapes(&cfg, true);
            ours.sort();
            let mut theirs: Vec<(String, Vec<usize>)> = stored
                .iter()
                .map(|(k, t)| (k.clone(), t.dims().to_vec()))
                .collect();
            theirs.sort();
            assert_eq!(ours, theirs, "{name}");

            let tmp = tempfile::tempdir().unwrap();
            for encoder in [false, true] {
                let path = tmp.path().join(format!("{encoder}.safetensors"));
                write_random_vae(&cfg, encoder, 7, &path).unwrap();
                let vae = hsa_models::wan::WanVae::load_files(
                    &cfg,
                    std::slice::from_ref(&path),
                    DType::F32,
                    &Device::Cpu,
                    encoder,
                )
                .unwrap();
                assert_eq!(vae.has_encoder(), encoder, "{name}");
            }
        }
    }
}
