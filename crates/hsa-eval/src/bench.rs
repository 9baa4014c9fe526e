//! `hsa bench dit`: DiT forward timings, dense against partial (token-subset) passes, on random
//! weights so no checkpoint is needed. Speed is reported as a ratio to the dense pass measured
//! in the same run.
//!
//! `hsa bench vae`: Wan VAE decode (or encode) on random weights with the real architecture,
//! optionally against diffusers on the same weights and input, alternating in the same run
//! (`tools/bench/vae_decode_torch.py`).

use std::fmt;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use hsa_core::{ActiveSet, Branch, Denoiser, TokenGrid};
use hsa_models::wan::{WanConfig, WanDenoiser, WanModel};

use crate::{EvalError, Result};

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
    if args.heads == 0 || args.dim % args.heads != 0 {
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
    /// Threads of both sides (sets RAYON_NUM_THREADS for candle; torch.set_num_threads for
    /// PyTorch). Default: candle's count (RAYON_NUM_THREADS, else the cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed passes per side (the median is reported), after one warm-up pass each.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Compute dtype of our side (f32 or bf16); PyTorch always runs f32.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Also run the pass in PyTorch (tools/bench/vae_decode_torch.py), alternating repeats.
    #[arg(long)]
    pub torch: bool,
    /// Python with torch and diffusers (default: $HSA_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<String>,
    /// The PyTorch script (default: tools/bench/vae_decode_torch.py of this repository).
    #[arg(long)]
    pub torch_script: Option<std::path::PathBuf>,
    /// Folder for the weights and I/O files, kept afterwards (default: a temporary folder,
    /// removed at the end).
    #[arg(long)]
    pub workdir: Option<std::path::PathBuf>,
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
    if args.threads == Some(0) {
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

/// Diffusers names and shapes of VAE tensors, listed block by block.
#[derive(Default)]
struct VaeShapes(Vec<(String, Vec<usize>)>);

impl VaeShapes {
    fn push(&mut self, name: String, shape: Vec<usize>) {
        self.0.push((name, shape));
    }

    /// `{p}.weight [o, i, kernel...]` and `{p}.bias [o]`.
    fn conv(&mut self, p: &str, o: usize, i: usize, kernel: &[usize]) {
        let mut shape = vec![o, i];
        shape.extend_from_slice(kernel);
        self.push(format!("{p}.weight"), shape);
        self.push(format!("{p}.bias"), vec![o]);
    }

    /// diffusers `WanResidualBlock`.
    fn resnet(&mut self, p: &str, i: usize, o: usize) {
        self.push(format!("{p}.norm1.gamma"), vec![i, 1, 1, 1]);
        self.conv(&format!("{p}.conv1"), o, i, &[3, 3, 3]);
        self.push(format!("{p}.norm2.gamma"), vec![o, 1, 1, 1]);
        self.conv(&format!("{p}.conv2"), o, o, &[3, 3, 3]);
        if i != o {
            self.conv(&format!("{p}.conv_shortcut"), o, i, &[1, 1, 1]);
        }
    }

    /// diffusers `WanMidBlock` (residual, attention, residual).
    fn mid(&mut self, p: &str, d: usize) {
        self.resnet(&format!("{p}.resnets.0"), d, d);
        self.push(format!("{p}.attentions.0.norm.gamma"), vec![d, 1, 1]);
        self.conv(&format!("{p}.attentions.0.to_qkv"), 3 * d, d, &[1, 1]);
        self.conv(&format!("{p}.attentions.0.proj"), d, d, &[1, 1]);
        self.resnet(&format!("{p}.resnets.1"), d, d);
    }

    /// A resampling layer: the 3x3 conv `resample.1`, and `time_conv` when `time` is
    /// `Some(out channels)`.
    fn resample(&mut self, p: &str, i: usize, o: usize, time: Option<usize>) {
        self.conv(&format!("{p}.resample.1"), o, i, &[3, 3]);
        if let Some(t) = time {
            self.conv(&format!("{p}.time_conv"), t, i, &[3, 1, 1]);
        }
    }
}

/// Diffusers names and shapes of the tensors of `cfg`'s decoder and `post_quant_conv`, and with
/// `encoder` also of the encoder and `quant_conv`: the layout `WanVae` loads (its loader checks
/// every name and shape, and reports tensors it did not use) and diffusers `AutoencoderKLWan`
/// has (the PyTorch side loads the same file by name and checks for missing and extra keys).
fn vae_tensor_shapes(
    cfg: &hsa_models::wan::WanVaeConfig,
    encoder: bool,
) -> Vec<(String, Vec<usize>)> {
    let mut t = VaeShapes::default();
    let z = cfg.z_dim;
    let nrb = cfg.num_res_blocks;
    let levels = cfg.decoder_levels();
    t.conv("post_quant_conv", z, z, &[1, 1, 1]);
    t.conv("decoder.conv_in", levels[0].in_dim, z, &[3, 3, 3]);
    t.mid("decoder.mid_block", levels[0].in_dim);
    for (i, l) in levels.iter().enumerate() {
        let p = format!("decoder.up_blocks.{i}");
        let mut in_dim = l.in_dim;
        for j in 0..=nrb {
            t.resnet(&format!("{p}.resnets.{j}"), in_dim, l.out_dim);
            in_dim = l.out_dim;
        }
        if l.spatial {
            // Wan2.1 upsampling convs halve the width; Wan2.2's keep it.
            let (up, out_dim) = if cfg.is_residual {
                (format!("{p}.upsampler"), l.out_dim)
            } else {
                (format!("{p}.upsamplers.0"), l.out_dim / 2)
            };
            let time = l.temporal.then_some(2 * l.out_dim);
            t.resample(&up, l.out_dim, out_dim, time);
        }
    }
    let last = levels[levels.len() - 1].out_dim;
    t.push("decoder.norm_out.gamma".into(), vec![last, 1, 1, 1]);
    t.conv("decoder.conv_out", cfg.out_channels, last, &[3, 3, 3]);
    if encoder {
        let levels = cfg.encoder_levels();
        t.conv("quant_conv", 2 * z, 2 * z, &[1, 1, 1]);
        t.conv(
            "encoder.conv_in",
            levels[0].in_dim,
            cfg.in_channels,
            &[3, 3, 3],
        );
        // Wan2.1: one flat `down_blocks` list across levels; Wan2.2: per level.
        let mut flat = 0usize;
        let mut next = |i: usize, part: String| -> String {
            if cfg.is_residual {
                format!("encoder.down_blocks.{i}.{part}")
            } else {
                flat += 1;
                format!("encoder.down_blocks.{}", flat - 1)
            }
        };
        for (i, l) in levels.iter().enumerate() {
            let mut in_dim = l.in_dim;
            for j in 0..nrb {
                let p = next(i, format!("resnets.{j}"));
                t.resnet(&p, in_dim, l.out_dim);
                in_dim = l.out_dim;
            }
            if l.spatial {
                let p = next(i, "downsampler".into());
                t.resample(&p, l.out_dim, l.out_dim, l.temporal.then_some(l.out_dim));
            }
        }
        let d = cfg.encoder_out_dim();
        t.mid("encoder.mid_block", d);
        t.push("encoder.norm_out.gamma".into(), vec![d, 1, 1, 1]);
        t.conv("encoder.conv_out", 2 * z, d, &[3, 3, 3]);
    }
    t.0
}

/// splitmix64: a small deterministic generator for the benchmark's weights and inputs.
struct SplitMix(u64);

impl SplitMix {
    /// A stream for `name` under `seed` (independent of the order tensors are made in).
    fn for_name(seed: u64, name: &str) -> Self {
        // FNV-1a of the name, mixed with the seed.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Self(h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

/// Writes deterministic random weights of `cfg` (decoder, plus encoder with `encoder`) to
/// `path`, drawn as PyTorch initialises a fresh model: conv weights and biases
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in channels x kernel size; RMS-norm gammas
/// 1 + U(-0.1, 0.1) (diffusers starts them at exactly 1; perturbed so that a dropped gamma
/// would show in the comparison). Returns the parameter count.
fn write_random_vae(
    cfg: &hsa_models::wan::WanVaeConfig,
    encoder: bool,
    seed: u64,
    path: &std::path::Path,
) -> Result<usize> {
    let shapes = vae_tensor_shapes(cfg, encoder);
    let weight_fan_in: std::collections::HashMap<&str, usize> = shapes
        .iter()
        .filter_map(|(n, s)| Some((n.strip_suffix(".weight")?, s[1..].iter().product())))
        .collect();
    let mut tensors = std::collections::HashMap::new();
    let mut params = 0;
    for (name, shape) in &shapes {
        let n: usize = shape.iter().product();
        let mut rng = SplitMix::for_name(seed, name);
        let values: Vec<f32> = if name.ends_with(".gamma") {
            (0..n).map(|_| 1.0 + 0.1 * rng.symmetric()).collect()
        } else {
            let layer = name
                .strip_suffix(".weight")
                .or_else(|| name.strip_suffix(".bias"))
                .unwrap_or(name);
            let fan_in = weight_fan_in.get(layer).copied().unwrap_or(1).max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| bound * rng.symmetric()).collect()
        };
        params += n;
        tensors.insert(
            name.clone(),
            Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?,
        );
    }
    candle_core::safetensors::save(&tensors, path)?;
    Ok(params)
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

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// A running `tools/bench/vae_decode_torch.py --serve`.
struct TorchServer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl TorchServer {
    fn start(cmd: &mut std::process::Command) -> Result<Self> {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| EvalError::Io(format!("cannot start {cmd:?}: {e}")))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        Ok(Self {
            child,
            stdin,
            lines: std::io::BufReader::new(stdout).lines(),
        })
    }

    /// The next JSON event; other lines (library messages) go to stderr.
    fn event(&mut self, want: &str) -> Result<serde_json::Value> {
        loop {
            let Some(line) = self.lines.next() else {
                let status = self.child.wait().map(|s| s.to_string());
                return Err(EvalError::Io(format!(
                    "the PyTorch script ended before '{want}' ({})",
                    status.unwrap_or_else(|e| e.to_string())
                )));
            };
            let line = line.map_err(|e| EvalError::Io(format!("PyTorch script output: {e}")))?;
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) if v.get("event").and_then(|e| e.as_str()) == Some(want) => return Ok(v),
                Ok(v) => {
                    return Err(EvalError::Io(format!(
                        "the PyTorch script answered {v} (expected '{want}')"
                    )))
                }
                Err(_) => eprintln!("{line}"),
            }
        }
    }

    fn send(&mut self, cmd: &str) -> Result<()> {
        use std::io::Write;
        writeln!(self.stdin, "{cmd}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| EvalError::Io(format!("PyTorch script input: {e}")))
    }
}

/// Removes the benchmark's temporary folder when dropped (also on errors).
struct TempDir(Option<std::path::PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn f64_field(v: &serde_json::Value, key: &str) -> Result<f64> {
    v.get(key)
        .and_then(|x| x.as_f64())
        .ok_or_else(|| EvalError::Io(format!("PyTorch script event {v} lacks '{key}'")))
}

/// Runs the VAE benchmark on the CPU.
pub fn vae(args: &VaeBenchArgs) -> Result<VaeBenchReport> {
    let plan = vae_plan(args).map_err(EvalError::Invalid)?;
    if let Some(n) = args.threads {
        // Read by candle for every parallel kernel; rayon's pool reads it when first used,
        // which is after this point in `hsa bench vae`.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let threads = candle_core::utils::get_num_threads();
    let device = Device::Cpu;
    let (dir, _guard) = match &args.workdir {
        Some(d) => (d.clone(), TempDir(None)),
        None => {
            let d = std::env::temp_dir().join(format!("hsa-bench-vae-{}", std::process::id()));
            (d.clone(), TempDir(Some(d)))
        }
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| EvalError::Io(format!("cannot create {}: {e}", dir.display())))?;
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

    let mut server = if args.torch {
        let python = args
            .python
            .clone()
            .or_else(|| std::env::var("HSA_PYTHON").ok())
            .unwrap_or_else(|| "python3".into());
        let script = args.torch_script.clone().unwrap_or_else(|| {
            let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let p = repo.join("tools/bench/vae_decode_torch.py");
            if p.is_file() {
                p
            } else {
                "tools/bench/vae_decode_torch.py".into()
            }
        });
        let mut cmd = std::process::Command::new(&python);
        cmd.arg(&script)
            .arg("--serve")
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
        let mut s = TorchServer::start(&mut cmd)?;
        let ready = s.event("ready")?;
        Some((s, ready))
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
            server.send("run")?;
            torch_seconds.push(f64_field(&server.event("run")?, "seconds")?);
        }
    }

    let out = out.to_dtype(DType::F32)?;
    let torch = match server {
        None => None,
        Some((mut server, ready)) => {
            server.send("quit")?;
            server.event("done")?;
            let _ = server.child.wait();
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
            let max_abs_diff = (&out - &theirs)?
                .abs()?
                .max_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            Some(TorchSide {
                version: ready
                    .get("torch")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_string(),
                threads: ready.get("threads").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
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
        let runs = |v: &[f64]| {
            v.iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
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
    use super::*;

    #[test]
    fn subsets_are_sorted_and_sized() {
        let s = spread_subset(10, 0.25);
        assert_eq!(s.len(), 3);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(spread_subset(4096, 0.5).len(), 2048);
    }

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

    #[test]
    fn grid_and_dtype_parse_with_errors() {
        assert_eq!(parse_grid("4x32x32").unwrap().len(), 4096);
        assert!(parse_grid("4x32").is_err());
        assert!(parse_dtype("f64").is_err());
    }
}
