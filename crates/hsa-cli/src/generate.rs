//! `hsa generate`: prompt (and image) to video file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::ValueEnum;

use crate::{progress, Dtype, SamplerArgs};

#[derive(Clone, Copy, ValueEnum)]
pub enum ImagePreprocessArg {
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
pub struct GenerateArgs {
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
    #[command(flatten)]
    reports: progress::RunReports,
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

pub fn generate(args: GenerateArgs, sampler_given: bool, device: &Device) -> Result<()> {
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
    if sampler_given {
        args.reports.check(&sampler.sampler)?;
    } else {
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
    args.reports.write(&out.stats, &args.sampler.sampler)?;
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
