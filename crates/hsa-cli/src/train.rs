//! `hsa train`: training and export of the bundled moving-shapes model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::progress;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Flow-matching training on the moving-shapes world (resumes from WORK's checkpoint).
    Shapes {
        /// Training folder: config, text stack, checkpoints.
        #[arg(long, default_value = "runs/shapes")]
        work: PathBuf,
        #[arg(long, default_value_t = 3000)]
        steps: usize,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 192)]
        dim: usize,
        #[arg(long, default_value_t = 3)]
        heads: usize,
        #[arg(long, default_value_t = 6)]
        layers: usize,
        #[arg(long, default_value_t = 768)]
        ffn: usize,
        #[arg(long, default_value_t = 4e-4)]
        lr: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 100)]
        checkpoint_every: usize,
        /// Frames per training clip.
        #[arg(long, default_value_t = 17)]
        frames: usize,
        /// Clip width and height.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Timestep shift of the sampled training noise levels (1 = none).
        #[arg(long, default_value_t = 1.0)]
        shift: f64,
        /// Decay of the weight average that ships (longer runs afford a slower average).
        #[arg(long, default_value_t = 0.995)]
        ema_decay: f64,
    },
    /// Writes the shippable model folder (EMA weights, bf16) from a training folder.
    Export {
        #[arg(long, default_value = "runs/shapes")]
        work: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn train(command: TrainCommand, device: &candle_core::Device) -> Result<()> {
    use hsa_shapes::train::{export, train, TrainConfig};
    match command {
        TrainCommand::Shapes {
            work,
            steps,
            batch,
            dim,
            heads,
            layers,
            ffn,
            lr,
            seed,
            checkpoint_every,
            frames,
            size,
            shift,
            ema_decay,
        } => {
            let cfg = TrainConfig {
                steps,
                batch,
                dim,
                heads,
                layers,
                ffn,
                lr,
                seed,
                checkpoint_every,
                frames,
                width: size,
                height: size,
                shift,
                ema_decay,
                ..Default::default()
            };
            let bar = progress::steps_bar(steps as u64, "training");
            let log_path = work.join("loss.csv");
            std::fs::create_dir_all(&work)?;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)?;
            let summary = train(&cfg, &work, device, &mut |p| {
                use std::io::Write;
                bar.set_position(p.step as u64);
                bar.set_message(format!("training, loss {:.4}", p.loss));
                let _ = writeln!(
                    log,
                    "{},{:.6},{:.4},{:.3e},{:.1}",
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
