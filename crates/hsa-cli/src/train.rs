//! `hsa train`: training and export of the bundled moving-shapes model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::progress;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Flow-matching training on the moving-shapes world (resumes from WORK's checkpoint).
    Shapes(Box<ShapesArgs>),
    /// Writes the shippable model folder (EMA weights, bf16) from a training folder.
    Export {
        #[arg(long, default_value = "runs/shapes")]
        work: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// `hsa train shapes`: the run's folder and the [`hsa_shapes::train::TrainConfig`] fields a
/// user sets (the rest keep their defaults).
#[derive(clap::Args)]
pub struct ShapesArgs {
    /// Training folder: config, text stack, checkpoints.
    #[arg(long, default_value = "runs/shapes")]
    pub work: PathBuf,
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 192)]
    pub dim: usize,
    #[arg(long, default_value_t = 3)]
    pub heads: usize,
    #[arg(long, default_value_t = 6)]
    pub layers: usize,
    #[arg(long, default_value_t = 768)]
    pub ffn: usize,
    #[arg(long, default_value_t = 4e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: usize,
    /// Frames per training clip.
    #[arg(long, default_value_t = 17)]
    pub frames: usize,
    /// Clip width and height.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// The DiT's patch, frames x height x width (Wan's latent patch is 1,2,2 over a VAE that
    /// folds 4 frames into one latent frame; this pixel-space model folds frames with a
    /// temporal patch instead). Must divide the clip.
    #[arg(long, value_name = "T,H,W", default_value = "1,4,4", value_parser = parse_patch)]
    pub patch: [usize; 3],
    /// Timestep shift of the sampled training noise levels (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub shift: f64,
    /// Decay of the weight average that ships (longer runs afford a slower average).
    #[arg(long, default_value_t = 0.995)]
    pub ema_decay: f64,
    /// Start every block as the identity (adaLN-Zero: modulation and cross-attention output
    /// start at zero); `false` gives the plain random init the first bundled model had.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub adaln_zero: bool,
    /// Start from this model folder's DiT (an export of the same architecture) with a fresh
    /// optimiser, instead of a fresh init.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// With --init-from: a fresh text encoder (from --seed) instead of the init folder's; the
    /// DiT then has to learn to read it.
    #[arg(long, requires = "init_from")]
    pub new_text_encoder: bool,
    /// Extra loss weight of pixels that change over the clip (moving objects): they weigh up
    /// to 1 + this, static pixels 1. 0 is plain MSE.
    #[arg(long, default_value_t = 0.0)]
    pub motion_weight: f64,
    /// Also train a motion head that predicts every pixel's displacement from the DiT's last
    /// hidden state, with this weight beside the velocity loss (VideoJAM-style; the head is
    /// dropped at export). 0 trains no head.
    #[arg(long, default_value_t = 0.0)]
    pub displacement_weight: f64,
    /// The block (1 to --layers) whose output the motion head reads, so that the blocks after
    /// it can use the motion it must encode; default: the last block's.
    #[arg(long)]
    pub displacement_layer: Option<usize>,
    /// Fraction (0 to 1) of the clips drawn as one object moving straight, without camera pan:
    /// a curriculum for the direction words. 0 draws the whole world.
    #[arg(long, default_value_t = 0.0)]
    pub single_mover_fraction: f64,
    /// Fraction (0 to 1) of the clips drawn as two or three objects moving straight in
    /// different directions, without camera pan: a curriculum for binding each direction to
    /// its object. With --single-mover-fraction, the two add up to at most 1.
    #[arg(long, default_value_t = 0.0)]
    pub multi_mover_fraction: f64,
    /// Experimental time anchor: added to every value of each training clip's first frame
    /// (-2 to 2). A model trained with it generates that frame offset; 0 adds nothing.
    #[arg(long, default_value_t = 0.0)]
    pub first_frame_offset: f64,
    /// Give the DiT each pixel's frame, row and column as three extra input channels, so it
    /// can place objects by their caption at high noise (the export marks the model and
    /// `hsa generate` appends the channels). With --init-from a plain model, the new channels'
    /// weights start as a fresh model's.
    #[arg(long)]
    pub position_channels: bool,
    /// Fraction (0 to 1) of the clips trained at the top of the noise (sigma ~1, shift 1000)
    /// instead of at --shift: where position channels let the caption alone place the objects.
    /// May change on resume.
    #[arg(long, default_value_t = 0.0)]
    pub top_noise_fraction: f64,
    /// Train the --top-noise-fraction clips at sigma 1 against the mean of this many renders
    /// of their scene (2 to 256): the caption's prior with less of one clip's spread. 0 or 1
    /// trains each clip against itself.
    #[arg(long, default_value_t = 0)]
    pub prior_renders: usize,
}

/// `T,H,W`: three positive integers.
fn parse_patch(s: &str) -> std::result::Result<[usize; 3], String> {
    s.split(',')
        .map(|p| p.trim().parse().ok().filter(|&v| v > 0))
        .collect::<Option<Vec<usize>>>()
        .and_then(|parts| parts.try_into().ok())
        .ok_or_else(|| format!("patch {s:?}: expected three positive integers T,H,W"))
}

impl ShapesArgs {
    fn config(&self) -> hsa_shapes::train::TrainConfig {
        hsa_shapes::train::TrainConfig {
            steps: self.steps,
            batch: self.batch,
            dim: self.dim,
            heads: self.heads,
            layers: self.layers,
            ffn: self.ffn,
            lr: self.lr,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            frames: self.frames,
            patch: self.patch,
            width: self.size,
            height: self.size,
            shift: self.shift,
            ema_decay: self.ema_decay,
            adaln_zero: self.adaln_zero,
            init_from: self.init_from.clone(),
            new_text_encoder: self.new_text_encoder,
            motion_weight: self.motion_weight,
            displacement_weight: self.displacement_weight,
            displacement_layer: self.displacement_layer,
            single_mover_fraction: self.single_mover_fraction,
            multi_mover_fraction: self.multi_mover_fraction,
            first_frame_offset: self.first_frame_offset,
            position_channels: self.position_channels,
            top_noise_fraction: self.top_noise_fraction,
            prior_renders: self.prior_renders,
            ..Default::default()
        }
    }
}

pub fn train(command: TrainCommand, device: &candle_core::Device) -> Result<()> {
    use hsa_shapes::train::{export, train};
    match command {
        TrainCommand::Shapes(args) => {
            let (cfg, work) = (args.config(), args.work);
            // Refuse a bad configuration before the work folder and its loss.csv exist.
            cfg.validate()?;
            let bar = progress::steps_bar(cfg.steps as u64, "training");
            let log_path = work.join("loss.csv");
            std::fs::create_dir_all(&work)?;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)?;
            let summary = train(&cfg, &work, device, &mut |p| {
                use std::io::Write;
                bar.set_position(p.step as u64);
                // loss.csv: step, velocity loss, gradient norm, learning rate, seconds, and the
                // motion head's loss where the run trains one.
                let (shown, column) = match p.displacement_loss {
                    Some(d) => (format!(", displacement {d:.4}"), format!(",{d:.6}")),
                    None => (String::new(), String::new()),
                };
                bar.set_message(format!("training, loss {:.4}{shown}", p.loss));
                let _ = writeln!(
                    log,
                    "{},{:.6},{:.4},{:.3e},{:.1}{column}",
                    p.step, p.loss, p.grad_norm, p.lr, p.seconds
                );
            })?;
            bar.finish_and_clear();
            println!(
                "trained {} steps: loss {:.4} (mean of last 100: {:.4}) in {:.1} min",
                summary.steps,
                summary.final_loss,
                summary.recent_loss,
                summary.seconds / 60.0
            );
        }
        TrainCommand::Export { work, out } => {
            let losses = export(&work, &out)?;
            println!(
                "exported {} ({} training steps) to {}",
                work.display(),
                losses.len(),
                out.display()
            );
        }
    }
    Ok(())
}
