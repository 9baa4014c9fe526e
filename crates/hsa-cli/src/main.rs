//! `hsa`: a thin command line over the hsa library crates.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::{Parser, Subcommand, ValueEnum};

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
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Times the DiT forward on random weights: dense, and partial at 50% and 25% active tokens.
    Dit(hsa_eval::bench::DitBenchArgs),
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = Device::Cpu;
    match cli.command {
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
        Command::Bench {
            command: BenchCommand::Dit(args),
        } => {
            let report = hsa_eval::bench::dit_forward(&args, &device)?;
            print!("{report}");
        }
    }
    Ok(())
}
