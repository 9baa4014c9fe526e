//! `hsa`: a thin command line over the hsa library crates.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::{Parser, Subcommand, ValueEnum};

mod eval;
mod progress;
mod train;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hsa",
    version,
    about = "Heterogeneous Step Allocation for video diffusion transformers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a video from a prompt (default model: the bundled moving-shapes Wan).
    Generate(GenerateArgs),
    /// Report what a model directory holds: layout, config, parameters, dtypes, experts.
    Inspect {
        /// A DiT folder, a diffusers pipeline folder, or an original Wan folder.
        dir: PathBuf,
    },
    /// Developer tools operating on plain tensor files.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Training of the bundled moving-shapes model.
    Train {
        #[command(subcommand)]
        command: train::TrainCommand,
    },
    /// Quality evaluation.
    Eval(eval::EvalArgs),
    /// Offline calibration of baselines that need it (HSA needs none).
    Calibrate {
        #[command(subcommand)]
        command: CalibrateCommand,
    },
    /// Benchmarks (speed is measured here, never in tests).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Dtype {
    F32,
    Bf16,
    F16,
}

impl From<Dtype> for DType {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::F32 => DType::F32,
            Dtype::Bf16 => DType::BF16,
            Dtype::F16 => DType::F16,
        }
    }
}

#[derive(Subcommand)]
enum DevCommand {
    /// One DiT forward on diffusers-named inputs; writes `velocity` [B,C_out,F,H,W] (f32).
    DitForward {
        /// DiT folder: config.json + weights (diffusers, original or ComfyUI keys).
        #[arg(long)]
        model: PathBuf,
        /// safetensors with hidden_states, timestep, encoder_hidden_states [, encoder_hidden_states_image].
        #[arg(long)]
        inputs: PathBuf,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// safetensors with `active` (sorted i64 token indices): dense pass to fill the K/V
        /// cache, then a partial pass on these tokens.
        #[arg(long)]
        active: Option<PathBuf>,
        /// Compute dtype (default: the dtype the weights are stored in).
        #[arg(long, value_enum)]
        dtype: Option<Dtype>,
    },
    /// Samples latents from explicit noise and text embeddings with any sampler.
    Sample {
        /// DiT folder (text-to-video model).
        #[arg(long)]
        model: PathBuf,
        /// safetensors with noise [1,C,F,H,W], encoder_hidden_states [1,S,D_text] and, for CFG,
        /// negative_encoder_hidden_states.
        #[arg(long)]
        inputs: PathBuf,
        /// Output safetensors: `latents` (same shape as noise).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        sampler: SamplerArgs,
        /// Write run statistics as JSON (per-step sigma, active fraction, wall time; NFE,
        /// token-step fraction, runtime, peak memory, group map).
        #[arg(long)]
        stats: Option<PathBuf>,
        /// Write the per-token step budget as a PNG heat map (HSA and RAS runs).
        #[arg(long)]
        group_map: Option<PathBuf>,
        #[arg(long, value_enum)]
        dtype: Option<Dtype>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ImagePreprocessArg {
    Official,
    Diffusers,
}

impl From<ImagePreprocessArg> for hsa_pipeline::image_cond::ImagePreprocess {
    fn from(a: ImagePreprocessArg) -> Self {
        match a {
            ImagePreprocessArg::Official => Self::Official,
            ImagePreprocessArg::Diffusers => Self::Diffusers,
        }
    }
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Model folder (diffusers layout). Default: the bundled model in models/shapes-wan.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt.
    #[arg(long, short = 'p', required_unless_present = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from a file instead.
    #[arg(long, conflicts_with = "prompt")]
    prompt_file: Option<PathBuf>,
    /// Negative prompt for classifier-free guidance (default: the model's; for latent Wan
    /// models the official Wan negative prompt, for the bundled model empty).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Guidance scale of the low-noise expert of two-expert models (Wan2.2 A14B; default:
    /// --guidance if given, else the model's).
    #[arg(long)]
    guidance_2: Option<f64>,
    /// Start from these initial latents instead of seeded noise: a safetensors file with a
    /// `latents` tensor [1, C, f, h, w] (parity runs against diffusers).
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Run even when the memory plan exceeds the available memory.
    #[arg(long)]
    ignore_memory_plan: bool,
    /// First frame for image-to-video models (Wan2.1 I2V, Wan2.2 I2V-A14B, TI2V-5B): PNG,
    /// JPEG or WebP. Without --size the video takes the image's aspect ratio within the
    /// model's pixel area.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Whose image preprocessing to follow: the official Wan code (bicubic squash; TI2V:
    /// Lanczos cover + centre crop; CLIP on the whole image) or diffusers (Lanczos resize;
    /// CLIP shortest side + centre crop).
    #[arg(long, value_enum, default_value_t = ImagePreprocessArg::Official)]
    image_preprocess: ImagePreprocessArg,
    /// Number of frames, 4k+1 for latent Wan models (default: the model's).
    #[arg(long)]
    frames: Option<usize>,
    /// WIDTHxHEIGHT, multiples of 16 for Wan2.1 / A14B, 32 for TI2V-5B (default: the model's).
    #[arg(long)]
    size: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file: .mp4 (default), .gif, or a folder for PNG frames.
    #[arg(long, short = 'o', default_value = "out.mp4")]
    output: PathBuf,
    /// Also write a GIF beside the output.
    #[arg(long)]
    gif: bool,
    /// Nearest-neighbour upscale factor for the written video (small models make small clips;
    /// default: enough for about 256 px).
    #[arg(long)]
    scale: Option<usize>,
    #[command(flatten)]
    sampler: SamplerArgs,
    /// Write run statistics as JSON.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Write the per-token step budget as a PNG heat map (hsa and ras).
    #[arg(long)]
    group_map: Option<PathBuf>,
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
}

/// The bundled model's folder: `models/shapes-wan` under the current directory, else in the
/// source tree this binary was built from.
pub(crate) fn default_model_dir() -> PathBuf {
    let local = PathBuf::from("models/shapes-wan");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/shapes-wan")
}

fn parse_size(s: &str) -> Result<(usize, usize)> {
    let (w, h) = s
        .split_once(['x', '*'])
        .with_context(|| format!("--size '{s}' must be WIDTHxHEIGHT, e.g. 32x32"))?;
    Ok((
        w.trim().parse().context("--size width")?,
        h.trim().parse().context("--size height")?,
    ))
}

/// Sampler choice and knobs shared by the sampling commands.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct SamplerArgs {
    /// fm | unipc | hsa | teacache | ras (generate: default from the model's scheduler,
    /// unipc for diffusers Wan pipelines, fm for the bundled model).
    #[arg(long, default_value = "fm")]
    sampler: String,
    /// Denoising steps T (default: the model's; 40 for `dev sample`).
    #[arg(long)]
    steps: Option<usize>,
    /// Timestep shift of the sigma schedule (default: the model's; 5 for `dev sample`).
    #[arg(long)]
    shift: Option<f64>,
    /// Classifier-free guidance scale, 1 = conditional branch only (default: the model's; 5
    /// for `dev sample`).
    #[arg(long)]
    guidance: Option<f64>,
    /// Sigma schedule: flow-match-euler (diffusers), wan (official), diffusers-unipc, linear.
    #[arg(long, default_value = "flow-match-euler")]
    schedule: String,
    /// Token-step budget for hsa/ras: a fraction in (0,1] or hsa-75 / hsa-50 / hsa-25.
    #[arg(long)]
    budget: Option<String>,
    /// Explicit HSA groups "fraction:stride,..." (overrides --budget), e.g. 0.2:1,0.3:2,0.5:4.
    #[arg(long)]
    groups: Option<String>,
    /// Dense warm-up steps W (default round(0.15 T), at least 2).
    #[arg(long)]
    warmup: Option<usize>,
    /// Dense tail steps U (default 0).
    #[arg(long)]
    tail: Option<usize>,
    /// HSA allocation score: relative-change | magnitude | random[:SEED] | inverse.
    #[arg(long)]
    score: Option<String>,
    /// Smooth the HSA score with a 3x3 max per frame.
    #[arg(long)]
    smoothing: bool,
    /// TeaCache threshold.
    #[arg(long)]
    teacache_threshold: Option<f64>,
    /// TeaCache indicator: e (default) or e0 (retention mode).
    #[arg(long)]
    teacache_mode: Option<String>,
    /// TeaCache polynomial, highest power first, comma separated (default: Wan2.1 T2V-1.3B).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    teacache_coefficients: Option<Vec<f64>>,
    /// RAS: fraction of tokens re-evaluated per step (default 0.5, or from --budget).
    #[arg(long)]
    ras_ratio: Option<f64>,
}

impl SamplerArgs {
    pub(crate) fn options(&self) -> hsa_pipeline::sampling::SamplerOptions {
        hsa_pipeline::sampling::SamplerOptions {
            sampler: self.sampler.clone(),
            budget: self.budget.clone(),
            groups: self.groups.clone(),
            warmup: self.warmup,
            tail: self.tail,
            score: self.score.clone(),
            smoothing: self.smoothing,
            teacache_threshold: self.teacache_threshold,
            teacache_mode: self.teacache_mode.clone(),
            teacache_coefficients: self.teacache_coefficients.clone(),
            ras_ratio: self.ras_ratio,
        }
    }
}

#[derive(Subcommand)]
enum CalibrateCommand {
    /// Fits TeaCache's 4th-order rescaling polynomial for a model from full-step runs.
    Teacache {
        #[arg(long)]
        model: PathBuf,
        /// One or more sampling input files (noise, encoder_hidden_states, negative_...).
        #[arg(long, num_args = 1.., required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long, default_value_t = 40)]
        steps: usize,
        #[arg(long, default_value_t = 5.0)]
        shift: f64,
        #[arg(long, default_value_t = 5.0)]
        guidance: f64,
        #[arg(long, default_value = "flow-match-euler")]
        schedule: String,
        /// Indicator: e (default) or e0.
        #[arg(long, default_value = "e")]
        mode: String,
        /// Output JSON with the coefficients and the data they were fitted on.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum)]
        dtype: Option<Dtype>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Times the DiT forward on random weights: dense, and partial at 50% and 25% active tokens.
    Dit(hsa_eval::bench::DitBenchArgs),
    /// Times whole sampling runs: FM(T) against HSA at each budget, same model and noise.
    Samplers(hsa_eval::bench::SamplerBenchArgs),
    /// Times a Wan VAE decode (or --encode) on random weights, CPU; --torch also times
    /// diffusers on the same weights and input in the same run.
    Vae(hsa_eval::bench::VaeBenchArgs),
}

fn main() {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `hsa generate` takes its default sampler from the model when --sampler is not given.
    let sampler_given = matches
        .subcommand_matches("generate")
        .is_some_and(|m| m.value_source("sampler") == Some(clap::parser::ValueSource::CommandLine));
    if let Err(e) = run(cli, sampler_given) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli, sampler_given: bool) -> Result<()> {
    let device = Device::Cpu;
    match cli.command {
        Command::Generate(args) => generate(args, sampler_given, &device)?,
        Command::Inspect { dir } => {
            let report = hsa_pipeline::model_dir::inspect(&dir)?;
            print!("{report}");
            if !report.is_ok() {
                anyhow::bail!("{} has problems (see above)", dir.display());
            }
        }
        Command::Dev {
            command:
                DevCommand::DitForward {
                    model,
                    inputs,
                    out,
                    active,
                    dtype,
                },
        } => {
            let start = Instant::now();
            let v = hsa_pipeline::dev::dit_forward(
                &model,
                &inputs,
                active.as_deref(),
                dtype.map(Into::into),
                &device,
            )
            .with_context(|| format!("dit-forward with {}", model.display()))?;
            let tensors = HashMap::from([("velocity".to_string(), v.to_dtype(DType::F32)?)]);
            hsa_pipeline::io::save_tensors(&out, &tensors)?;
            println!(
                "wrote velocity {:?} to {} in {:.2} s",
                v.dims(),
                out.display(),
                start.elapsed().as_secs_f64()
            );
        }
        Command::Dev {
            command:
                DevCommand::Sample {
                    model,
                    inputs,
                    out,
                    sampler,
                    stats,
                    group_map,
                    dtype,
                },
        } => {
            dev_sample(
                model, inputs, out, sampler, stats, group_map, dtype, &device,
            )?;
        }
        Command::Train { command } => train::train(command)?,
        Command::Eval(args) => eval::eval(args, &device)?,
        Command::Calibrate {
            command:
                CalibrateCommand::Teacache {
                    model,
                    inputs,
                    steps,
                    shift,
                    guidance,
                    schedule,
                    mode,
                    out,
                    dtype,
                },
        } => {
            let kind = match mode.as_str() {
                "e" => hsa_core::IndicatorKind::Embedding,
                "e0" => hsa_core::IndicatorKind::Projection,
                other => anyhow::bail!("--mode '{other}' (expected e or e0)"),
            };
            let bar = progress::steps_bar(inputs.len() as u64, "calibrating (full-step runs)");
            let cal = hsa_pipeline::dev::calibrate_teacache(
                &model,
                &inputs,
                steps,
                shift,
                guidance,
                schedule.parse()?,
                kind,
                dtype.map(Into::into),
                &device,
                &mut |i| bar.set_position(i as u64),
            )?;
            bar.finish_and_clear();
            hsa_pipeline::io::write_bytes_atomic(
                &out,
                serde_json::to_string_pretty(&cal)?.as_bytes(),
            )?;
            let coeffs: Vec<String> = cal.coefficients.iter().map(|c| format!("{c:e}")).collect();
            println!(
                "teacache ({}) coefficients {} from {} pairs, rms residual {:.3e}, {:.1} s of full-step runs",
                cal.mode,
                coeffs.join(","),
                cal.pairs.len(),
                cal.rms_residual,
                cal.wall_seconds
            );
        }
        Command::Bench {
            command: BenchCommand::Samplers(args),
        } => {
            print!("{}", hsa_eval::bench::samplers(&args, &device)?);
        }
        Command::Bench {
            command: BenchCommand::Dit(args),
        } => {
            let report = hsa_eval::bench::dit_forward(&args, &device)?;
            print!("{report}");
        }
        Command::Bench {
            command: BenchCommand::Vae(args),
        } => {
            print!("{}", hsa_eval::bench::vae(&args)?);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn dev_sample(
    model: PathBuf,
    inputs: PathBuf,
    out: PathBuf,
    sampler: SamplerArgs,
    stats_path: Option<PathBuf>,
    group_map: Option<PathBuf>,
    dtype: Option<Dtype>,
    device: &Device,
) -> Result<()> {
    let request = hsa_pipeline::dev::SampleRequest {
        model_dir: model,
        inputs,
        steps: sampler.steps.unwrap_or(40),
        shift: sampler.shift.unwrap_or(5.0),
        guidance: sampler.guidance.unwrap_or(5.0),
        schedule: sampler.schedule.parse()?,
        options: sampler.options(),
        dtype: dtype.map(Into::into),
    };
    let bar = progress::steps_bar(
        request.steps as u64,
        &format!("sampling ({})", sampler.sampler),
    );
    let result = hsa_pipeline::dev::sample(&request, device, &mut |e| progress::on_step(&bar, e))?;
    bar.finish_and_clear();
    for w in &result.warnings {
        eprintln!("warning: {w}");
    }
    let tensors = HashMap::from([("latents".to_string(), result.latents.clone())]);
    hsa_pipeline::io::save_tensors(&out, &tensors)?;
    if let Some(path) = &stats_path {
        let json = progress::stats_json(&result.stats)?;
        hsa_pipeline::io::write_bytes_atomic(path, json.as_bytes())?;
    }
    if let Some(path) = &group_map {
        let map = result.stats.group_map.as_ref().with_context(|| {
            format!(
                "--group-map needs a token-level sampler (hsa or ras), not {}",
                sampler.sampler
            )
        })?;
        hsa_pipeline::group_map::write_png(map, path)?;
    }
    println!("{}", progress::summary(&result.stats));
    Ok(())
}

fn generate(args: GenerateArgs, sampler_given: bool, device: &Device) -> Result<()> {
    use hsa_pipeline::generate::{generate, GenerateRequest, Stage};
    use hsa_pipeline::video::{write_video, VideoFormat, VideoFrames};
    let start = std::time::Instant::now();
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read prompt file {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!("give --prompt or --prompt-file"),
    };
    let format = VideoFormat::from_path(&args.output)?;
    let latents = match &args.latents {
        Some(path) => {
            let tensors = hsa_pipeline::io::load_tensors(path, device)?;
            Some(hsa_pipeline::io::require(&tensors, "latents", path)?.clone())
        }
        None => None,
    };
    let mut sampler = args.sampler.options();
    if !sampler_given {
        sampler.sampler.clear(); // the model's default
    }
    let request = GenerateRequest {
        model_dir: args.model.clone().unwrap_or_else(default_model_dir),
        prompt,
        negative_prompt: args.negative_prompt.clone(),
        frames: args.frames,
        size: args.size.as_deref().map(parse_size).transpose()?,
        steps: args.sampler.steps,
        shift: args.sampler.shift,
        guidance: args.sampler.guidance,
        guidance_2: args.guidance_2,
        schedule: Some(args.sampler.schedule.parse()?),
        seed: args.seed,
        sampler,
        dtype: args.dtype.map(Into::into),
        latents,
        skip_memory_check: args.ignore_memory_plan,
        image: args.image.clone(),
        image_preprocess: args.image_preprocess.into(),
    };
    let bar = progress::steps_bar(1, "loading");
    let mut stage = |s: Stage| match s {
        Stage::Plan(plan) => bar.suspend(|| eprintln!("memory plan: {plan}")),
        Stage::TextEncoding => bar.set_message("encoding text"),
        Stage::ImageEncoding => bar.set_message("encoding the image"),
        Stage::Loading => bar.set_message("loading the model"),
        Stage::Sampling => bar.set_message("sampling"),
        Stage::Decoding { done, total } => progress::on_decode(&bar, done, total),
    };
    let mut step = |e: &hsa_core::StepEvent| {
        bar.set_length(e.steps as u64);
        progress::on_step(&bar, e);
    };
    let out = generate(&request, device, &mut stage, &mut step)
        .with_context(|| format!("generating with {}", request.model_dir.display()))?;
    bar.finish_and_clear();
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    let (_, f, h, w) = out.video.dims4()?;
    let data = out.video.flatten_all()?.to_vec1::<f32>()?;
    let mut frames = VideoFrames::from_cfhw(&data, f, h, w, out.fps)?;
    let scale = args.scale.unwrap_or_else(|| (256 / w.max(h).max(1)).max(1));
    if scale > 1 {
        frames = frames.upscale_nearest(scale)?;
    }
    write_video(&frames, &args.output, format)?;
    if args.gif {
        write_video(
            &frames,
            &args.output.with_extension("gif"),
            VideoFormat::Gif,
        )?;
    }
    if let Some(path) = &args.stats {
        hsa_pipeline::io::write_bytes_atomic(path, progress::stats_json(&out.stats)?.as_bytes())?;
    }
    if let Some(path) = &args.group_map {
        let map = out.stats.group_map.as_ref().with_context(|| {
            format!(
                "--group-map needs a token-level sampler (hsa or ras), not {}",
                args.sampler.sampler
            )
        })?;
        hsa_pipeline::group_map::write_png(map, path)?;
    }
    println!(
        "wrote {} ({f} frames {w}x{h} at {} fps); {}; text {:.2} s, decode {:.2} s, total {:.2} s",
        args.output.display(),
        out.fps,
        progress::summary(&out.stats),
        out.text_seconds,
        out.decode_seconds,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
