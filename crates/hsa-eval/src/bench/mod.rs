//! `hsa bench dit`: DiT forward timings, dense against partial (token-subset) passes, on random
//! weights so no checkpoint is needed. Speed is reported as a ratio to the dense pass measured
//! in the same run.
//!
//! `hsa bench vae` ([`vae`]): Wan VAE decode (or encode) against diffusers.
//!
//! `hsa bench train` ([`train`]): one update of the bundled model's trainer against PyTorch.

use std::fmt;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use hsa_core::{ActiveSet, Branch, Denoiser, TokenGrid};
use hsa_models::wan::{WanConfig, WanDenoiser, WanModel};

use crate::{EvalError, Result};

mod torch;
pub use torch::TorchSideArgs;
pub mod train;
pub mod vae;
mod vae_weights;
pub use train::{train, TrainBenchArgs, TrainBenchReport};
pub use vae::{vae, VaeBenchArgs, VaeBenchReport};

/// Settings of the DiT benchmark (defaults: the reference configuration).
#[derive(Debug, Clone, clap::Args)]
pub struct DitBenchArgs {
    /// Hidden width D.
    #[arg(long, default_value_t = 1536)]
    pub dim: usize,
    #[arg(long, default_value_t = 12)]
    pub heads: usize,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value_t = 8960)]
    pub ffn: usize,
    /// Token grid frames x rows x cols (N = product).
    #[arg(long, default_value = "4x32x32")]
    pub grid: String,
    /// Text rows of the context.
    #[arg(long, default_value_t = 512)]
    pub text_len: usize,
    /// Active fractions of the partial passes.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.25")]
    pub fractions: Vec<f64>,
    /// Timed repetitions per case (the median is reported), after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// One timed case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub active_fraction: f64,
    pub seconds: Vec<f64>,
}

impl Case {
    pub fn median(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        s[s.len() / 2]
    }
}

/// The benchmark's result.
#[derive(Debug, Clone)]
pub struct DitBenchReport {
    pub args: DitBenchArgs,
    pub tokens: usize,
    pub threads: usize,
    pub cases: Vec<Case>,
}

fn parse_grid(s: &str) -> std::result::Result<TokenGrid, String> {
    let v: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("grid '{s}': {e}"))?;
    match v.as_slice() {
        [f, h, w] if f * h * w > 0 => Ok(TokenGrid::new(*f, *h, *w)),
        _ => Err(format!("grid '{s}' must be FxHxW with positive sizes")),
    }
}

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(format!("dtype '{other}' (expected f32, bf16 or f16)")),
    }
}

/// The benchmark's model (random weights, Wan2.1-1.3B layout with the requested sizes) and a
/// random text context of `text_len` rows.
fn random_model(args: &DitBenchArgs, dtype: DType, device: &Device) -> Result<(WanModel, Tensor)> {
    if args.heads == 0 || !args.dim.is_multiple_of(args.heads) {
        return Err(EvalError::Invalid(format!(
            "dim {} is not divisible by heads {}",
            args.dim, args.heads
        )));
    }
    let cfg = WanConfig {
        num_layers: args.layers,
        ffn_dim: args.ffn,
        num_heads: args.heads,
        head_dim: args.dim / args.heads,
        ..WanConfig::wan21_t2v_1_3b()
    };
    let model = WanModel::random(&cfg, dtype, device, 0)?;
    let text = Tensor::randn(0f32, 1.0, (1, args.text_len, cfg.text_dim), device)?;
    Ok((model, text))
}

/// Evenly spread sorted subset of `n` tokens with `fraction` of them.
fn spread_subset(n: usize, fraction: f64) -> Vec<u32> {
    let k = ((n as f64 * fraction).round() as usize).clamp(1, n);
    (0..k).map(|i| (i * n / k) as u32).collect()
}

/// Runs the benchmark.
pub fn dit_forward(args: &DitBenchArgs, device: &Device) -> Result<DitBenchReport> {
    let grid = parse_grid(&args.grid).map_err(EvalError::Invalid)?;
    let dtype = parse_dtype(&args.dtype).map_err(EvalError::Invalid)?;
    if args.reps == 0 {
        return Err(EvalError::Invalid("reps must be at least 1".into()));
    }
    let (model, text) = random_model(args, dtype, device)?;
    let cfg = model.config();
    let n = grid.len();
    let x = Tensor::randn(0f32, 1.0, (n, cfg.out_token_dim()), device)?;
    let mut den = WanDenoiser::new(&model, grid, &text, None, None)?;
    let time = |active: Option<&ActiveSet>,
                den: &mut WanDenoiser|
     -> std::result::Result<f64, hsa_core::CoreError> {
        let start = Instant::now();
        den.velocity(&x, 500.0, Branch::Cond, active)?;
        // GPU work is asynchronous: time it to completion.
        device.synchronize()?;
        Ok(start.elapsed().as_secs_f64())
    };
    // Warm-up (also fills the K/V cache for the partial passes).
    time(None, &mut den)?;
    let mut cases = vec![Case {
        name: "dense".into(),
        active_fraction: 1.0,
        seconds: (0..args.reps)
            .map(|_| time(None, &mut den))
            .collect::<std::result::Result<_, _>>()?,
    }];
    for &f in &args.fractions {
        let set = ActiveSet::new(spread_subset(n, f), n, device)?;
        time(Some(&set), &mut den)?;
        cases.push(Case {
            name: format!("partial {:.0}%", f * 100.0),
            active_fraction: set.len() as f64 / n as f64,
            seconds: (0..args.reps)
                .map(|_| time(Some(&set), &mut den))
                .collect::<std::result::Result<_, _>>()?,
        });
    }
    Ok(DitBenchReport {
        args: args.clone(),
        tokens: n,
        threads: candle_core::utils::get_num_threads(),
        cases,
    })
}

impl fmt::Display for DitBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.args;
        writeln!(
            f,
            "DiT forward: D={} heads={} layers={} ffn={} N={} text={} dtype={} threads={} reps={} (median)",
            a.dim, a.heads, a.layers, a.ffn, self.tokens, a.text_len, a.dtype, self.threads, a.reps
        )?;
        let dense = self.cases[0].median();
        writeln!(
            f,
            "{:<14} {:>8} {:>10} {:>12} {:>10}",
            "case", "active", "seconds", "vs dense", "ideal"
        )?;
        for c in &self.cases {
            writeln!(
                f,
                "{:<14} {:>7.1}% {:>10.3} {:>11.3}x {:>9.3}x",
                c.name,
                c.active_fraction * 100.0,
                c.median(),
                c.median() / dense,
                c.active_fraction
            )?;
        }
        Ok(())
    }
}

/// Settings of the sampler benchmark: FM(T) against HSA at several budgets, same model,
/// same noise, same run.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplerBenchArgs {
    #[command(flatten)]
    pub model: DitBenchArgs,
    /// Steps T of every run.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// HSA token-step budgets.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.25")]
    pub budgets: Vec<f64>,
}

/// One sampler run of the benchmark.
#[derive(Debug, Clone)]
pub struct SamplerCase {
    pub name: String,
    pub token_step_fraction: f64,
    pub seconds: f64,
}

/// The sampler benchmark's result.
#[derive(Debug, Clone)]
pub struct SamplerBenchReport {
    pub args: SamplerBenchArgs,
    pub tokens: usize,
    pub threads: usize,
    pub cases: Vec<SamplerCase>,
}

/// Runs FM(T) and HSA at each budget on random weights; wall time of whole sampling runs.
pub fn samplers(args: &SamplerBenchArgs, device: &Device) -> Result<SamplerBenchReport> {
    use hsa_core::{
        plan_budget, sample_fm_euler, sample_hsa, Guidance, HsaConfig, Schedule, ScheduleKind,
    };
    let m = &args.model;
    let grid = parse_grid(&m.grid).map_err(EvalError::Invalid)?;
    let dtype = parse_dtype(&m.dtype).map_err(EvalError::Invalid)?;
    let (model, text) = random_model(m, dtype, device)?;
    let n = grid.len();
    let noise = Tensor::randn(0f32, 1.0, (n, model.config().out_token_dim()), device)?;
    let schedule = Schedule::new(ScheduleKind::FlowMatchEuler, args.steps, 5.0)?;
    let guidance = Guidance::new(1.0)?;
    let mut den = WanDenoiser::new(&model, grid, &text, None, None)?;
    // Warm-up: one dense call.
    den.velocity(&noise, 999.0, Branch::Cond, None)?;
    let start = Instant::now();
    sample_fm_euler(&mut den, &noise, &schedule, guidance, &mut |_| {})?;
    let mut cases = vec![SamplerCase {
        name: format!("fm T={}", args.steps),
        token_step_fraction: 1.0,
        seconds: start.elapsed().as_secs_f64(),
    }];
    for &b in &args.budgets {
        let warmup = hsa_core::hsa::planner::default_warmup(args.steps);
        let plan = plan_budget(b, args.steps, warmup, 0, Some(n))?;
        let hsa_cfg = HsaConfig::new(plan.spec.clone(), warmup, 0);
        let start = Instant::now();
        let run = sample_hsa(&mut den, &noise, &schedule, guidance, &hsa_cfg, &mut |_| {})?;
        cases.push(SamplerCase {
            name: format!("hsa {b} ({})", plan.spec),
            token_step_fraction: run.stats.token_step_fraction,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(SamplerBenchReport {
        args: args.clone(),
        tokens: n,
        threads: candle_core::utils::get_num_threads(),
        cases,
    })
}

impl fmt::Display for SamplerBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.args.model;
        writeln!(
            f,
            "samplers: D={} heads={} layers={} N={} T={} dtype={} threads={}",
            a.dim, a.heads, a.layers, self.tokens, self.args.steps, a.dtype, self.threads
        )?;
        let fm = self.cases[0].seconds;
        writeln!(
            f,
            "{:<52} {:>10} {:>9} {:>10} {:>9}",
            "run", "seconds", "runtime", "token-step", "overhead"
        )?;
        for c in &self.cases {
            let frac = c.seconds / fm;
            writeln!(
                f,
                "{:<52} {:>10.2} {:>8.3}x {:>10.3} {:>+9.3}",
                c.name,
                c.seconds,
                frac,
                c.token_step_fraction,
                frac - c.token_step_fraction
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_sorted_and_sized() {
        let s = spread_subset(10, 0.25);
        assert_eq!(s.len(), 3);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(spread_subset(4096, 0.5).len(), 2048);
    }

    #[test]
    fn grid_and_dtype_parse_with_errors() {
        assert_eq!(parse_grid("4x32x32").unwrap().len(), 4096);
        assert!(parse_grid("4x32").is_err());
        assert!(parse_dtype("f64").is_err());
    }
}
