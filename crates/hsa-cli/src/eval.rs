//! `hsa eval`: the quality-runtime harness (default) and the shapes checker.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Args, Subcommand};

use crate::generate::default_model_dir;
use crate::{progress, SamplerArgs};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    #[command(flatten)]
    run: EvalRunArgs,
}

/// Every method at every budget against a cached FM(T) reference; writes report.{json,md},
/// pareto.png and side-by-side videos into --out. Interrupted runs resume.
#[derive(Args)]
struct EvalRunArgs {
    /// Model folder (default: the bundled model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompt file, one per line (`#` comments). Without it: --held-out captions of the shapes world.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Held-out shapes-world captions to use when no --prompts file is given.
    #[arg(long, default_value_t = 8)]
    held_out: usize,
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    /// Steps T of the FM reference.
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// Runtime budgets as fractions of FM(T).
    #[arg(long, value_delimiter = ',', default_value = "0.75,0.5,0.25")]
    budgets: Vec<f64>,
    /// Methods: fm, hsa, teacache, ras, each with optional `:key=value` settings, e.g.
    /// hsa:score=random, hsa:warmup=4:tail=2, teacache:mode=e0, teacache:coefficients=published.
    #[arg(long, default_value = "fm,teacache,ras,hsa")]
    methods: String,
    /// Guidance scale (default: the model's).
    #[arg(long)]
    guidance: Option<f64>,
    /// Timing repeats per run (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Prompts (first seed) that get side-by-side videos.
    #[arg(long, default_value_t = 2)]
    side_by_side: usize,
    /// Report folder (also the cache that lets an interrupted run resume).
    #[arg(short, long, default_value = "report")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Generates held-out captions of the shapes world and scores them with its checker.
    Checker {
        /// Model folder (default: the bundled model).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 50)]
        captions: usize,
        /// Caption space: `held-out` (never trained on; the model card's score), `train`
        /// (new scenes from the training part: a validation set for choosing settings) or
        /// `single-mover` (training-part scenes of one object moving straight, no pan: does
        /// the model follow the direction words at all) or `multi-mover` (two or three
        /// objects moving straight in different directions, no pan: does it bind each
        /// direction to its object).
        #[arg(long, default_value = "held-out")]
        split: hsa_eval::shapes::CaptionSplit,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        sampler: SamplerArgs,
        /// Write the per-clip scores as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn eval(args: EvalArgs, device: &Device) -> Result<()> {
    match args.command {
        Some(EvalCommand::Checker {
            model,
            captions,
            split,
            seed,
            sampler,
            out,
        }) => checker(model, captions, split, seed, sampler, out, device),
        None => run(args.run, device),
    }
}

fn run(a: EvalRunArgs, device: &Device) -> Result<()> {
    let prompts = match &a.prompts {
        Some(path) => hsa_eval::report::read_prompts(path)?,
        None => (0..a.held_out as u64)
            .map(|i| hsa_shapes::caption(&hsa_shapes::sample_eval(i)))
            .collect(),
    };
    let cfg = hsa_eval::harness::EvalConfig {
        model_dir: a.model.unwrap_or_else(default_model_dir),
        prompts,
        seeds: a.seeds,
        steps: a.steps,
        budgets: a.budgets,
        methods: hsa_eval::methods::parse_methods(&a.methods)?,
        out_dir: a.out,
        repeats: a.repeats,
        guidance: a.guidance,
        side_by_side: a.side_by_side,
    };
    let start = std::time::Instant::now();
    let harness = hsa_eval::harness::Harness::new(&cfg, device)?;
    let bar = progress::steps_bar(0, "evaluating");
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} runs, {elapsed} elapsed, eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let results = harness.run(&mut |p| match p {
        hsa_eval::harness::Progress::Total(n) => bar.set_length(n as u64),
        hsa_eval::harness::Progress::Done(label) => {
            bar.set_message(format!("evaluating ({label})"));
            bar.inc(1)
        }
    })?;
    bar.finish_and_clear();
    let command: Vec<String> = std::env::args().collect();
    let md = hsa_eval::report::write_report(&harness, &cfg, &results, &command.join(" "))
        .context("writing the report")?;
    println!("{md}");
    println!(
        "eval: {} runs + {} references, report in {}, {:.1} s",
        results.runs.len(),
        results.references.len(),
        cfg.out_dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn checker(
    model: Option<PathBuf>,
    captions: usize,
    split: hsa_eval::shapes::CaptionSplit,
    seed: u64,
    sampler: SamplerArgs,
    out: Option<PathBuf>,
    device: &Device,
) -> Result<()> {
    let cfg = hsa_eval::shapes::CheckerEval {
        model_dir: model.unwrap_or_else(default_model_dir),
        captions,
        split,
        steps: sampler.steps,
        guidance: sampler.guidance,
        shift: sampler.shift,
        schedule: Some(sampler.schedule.parse()?),
        sampler: sampler.options(),
        seed,
    };
    let what = split.label();
    let bar = progress::steps_bar(captions as u64, &format!("generating {what} captions"));
    let report =
        hsa_eval::shapes::evaluate_checker(&cfg, device, &mut |i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    if let Some(path) = &out {
        hsa_pipeline::io::write_bytes_atomic(
            path,
            serde_json::to_string_pretty(&report)?.as_bytes(),
        )?;
    }
    let shape = report
        .shape
        .map_or("n/a (objects too small)".to_string(), |s| format!("{s:.3}"));
    let heading = report
        .heading
        .map_or("n/a".to_string(), |h| format!("{h:.2}"));
    println!(
        "checker on {} {what} captions ({}): overall {:.3}, colour {:.3} (found {:.3}), direction {:.3} (heading {heading}), shape {shape}, jumping objects {}/{}; {:.1} s",
        captions, sampler.sampler, report.overall, report.colour, report.colour_recall, report.direction,
        report.jumping_objects, report.tracked_objects, report.seconds
    );
    Ok(())
}
