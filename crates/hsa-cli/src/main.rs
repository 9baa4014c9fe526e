//! `hsa`: a thin command line over the hsa library crates.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::{Parser, Subcommand, ValueEnum};

mod eval;
mod generate;
mod progress;
mod train;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`, mimalloc.h; the v3
/// sources libmimalloc-sys builds by default): milliseconds before freed memory goes back to
/// the OS, 1000 by default, -1 never.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// Keeps freed memory in the process instead of returning it to the OS after mimalloc's
/// default second. A training step frees and reallocates gigabytes of activations and
/// gradients; returned pages came back as fresh huge pages that the kernel zeroed, which
/// took ~20% of a CPU training step (docs/benchmarks.md). The process's peak memory is
/// unchanged; its resident memory stays at that peak.
fn keep_freed_memory() {
    // SAFETY: sets a plain integer option of the linked allocator; valid at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[derive(Parser)]
#[command(
    name = "hsa",
    version,
    about = "Heterogeneous Step Allocation for video diffusion transformers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where models run: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a video from a prompt (default model: the bundled moving-shapes Wan).
    Generate(generate::GenerateArgs),
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
    Sample(Box<SampleArgs>),
}

/// `hsa dev sample`.
#[derive(clap::Args)]
struct SampleArgs {
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
    #[command(flatten)]
    reports: progress::RunReports,
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
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
    /// Times one update of the shapes trainer (loss, backward, AdamW, weight average) on random
    /// weights; --torch also times the same update in PyTorch in the same run.
    Train(hsa_eval::bench::TrainBenchArgs),
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
    let device = parse_device(&cli.device)?;
    match cli.command {
        Command::Generate(args) => generate::generate(args, sampler_given, &device)?,
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
            command: DevCommand::Sample(args),
        } => dev_sample(*args, &device)?,
        Command::Train { command } => {
            keep_freed_memory();
            train::train(command, &device)?
        }
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
        Command::Bench {
            command: BenchCommand::Train(args),
        } => {
            keep_freed_memory();
            print!("{}", hsa_eval::bench::train(&args, &device)?);
        }
    }
    Ok(())
}

fn dev_sample(args: SampleArgs, device: &Device) -> Result<()> {
    let SampleArgs {
        model,
        inputs,
        out,
        sampler,
        reports,
        dtype,
    } = args;
    reports.check(&sampler.sampler)?;
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
    reports.write(&result.stats, &sampler.sampler)?;
    println!("{}", progress::summary(&result.stats));
    Ok(())
}

/// `cpu`, `cuda` or `cuda:N`; a CUDA device in a build without the `cuda` feature is an error
/// naming the feature.
fn parse_device(name: &str) -> Result<candle_core::Device> {
    let ordinal = match name {
        "cpu" => return Ok(candle_core::Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => anyhow::bail!("unknown device '{other}': use cpu, cuda or cuda:N"),
        },
    };
    if !candle_core::utils::cuda_is_available() {
        anyhow::bail!(
            "device '{name}' needs a build with `--features cuda` (this one is CPU only)"
        );
    }
    Ok(candle_core::Device::new_cuda(ordinal)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_we_set() {
        // mimalloc v3's default purge delay is 1000 ms (src/options.c); the neighbouring
        // options (eager_commit_delay 1, use_numa_nodes 0) have other defaults, so a wrong
        // position in the enum fails here.
        // SAFETY: reads a plain integer option of the linked allocator.
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        keep_freed_memory();
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, -1);
    }
}
