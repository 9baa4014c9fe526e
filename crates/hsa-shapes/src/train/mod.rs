//! Flow-matching training of the bundled model: a Wan-architecture DiT in pixel space (3
//! channels, no VAE) on the moving-shapes world, conditioned through a small umT5 encoder.
//!
//! Recipe (defaults in [`TrainConfig`]):
//! * data: fresh clips every step from [`crate::generate_train`] (the held-out caption space is
//!   never seen), values in [-1, 1];
//! * noise level: half the samples `sigma ~ U(0, 1)`, half logit-normal `sigmoid(n)`,
//!   `n ~ N(0, 1)` (as SD3-style trainers use), then the timestep shift `S(·, shift)` with
//!   `shift = 1` by default; model timestep `1000·sigma`. A first run with shift 3 (Wan's
//!   habit of training where shifted sampling spends its steps) learned the high-noise end but
//!   left low-noise denoising far from converged within this CPU budget, and its samples stayed
//!   noisy; the uniform half keeps every noise level in view;
//! * target: the flow velocity `eps - x0` of `x_sigma = (1-sigma)·x0 + sigma·eps`; MSE, or
//!   with `motion_weight > 0` a weighted mean that counts pixels which change over the clip
//!   (moving objects) up to `1 + motion_weight` times ([`data::motion_weights`]);
//! * with `displacement_weight > 0`, a training-only head on the last hidden state (or on
//!   block `displacement_layer`'s output) also predicts every pixel's displacement
//!   ([`motion_head`]); export drops it;
//! * 10% of captions are replaced by the empty prompt so classifier-free guidance works;
//! * AdamW, linear warm-up then cosine decay to 10%, global-norm clipping at 1, an EMA of
//!   the weights (the EMA is what ships);
//! * the output projection starts at zero (the model starts by predicting 0 velocity).

mod checkpoint;
pub mod data;
pub mod loss;
pub mod motion_head;
pub mod optim;
pub mod plot;
pub mod text_stack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Var};
use hsa_models::wan::dit::init_values;
use hsa_models::wan::weights::expected_tensors;
use hsa_models::wan::{WanConfig, WanModel};

use crate::ClipConfig;
use checkpoint::Checkpoint;
pub use checkpoint::{diffusers_config, export};
pub use data::{draw_batch, BatchDraw};
pub use loss::{
    flow_matching_loss, training_loss, weighted_flow_matching_loss, with_positions, StepLoss,
};
use optim::{AdamW, AdamWConfig, Ema};
use text_stack::{write_text_stack, TextStack};

/// Errors of training and export.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Model(#[from] hsa_models::ModelError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;

/// Everything that defines a training run (saved beside its checkpoints).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    /// Patch (frames, rows, cols) of the DiT.
    pub patch: [usize; 3],
    pub dim: usize,
    pub heads: usize,
    pub layers: usize,
    pub ffn: usize,
    /// Text rows the prompt is padded to.
    pub text_len: usize,
    pub batch: usize,
    pub steps: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub ema_decay: f64,
    pub cfg_dropout: f64,
    /// Timestep shift applied to the sampled noise levels (1 = none).
    pub shift: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub adamw: AdamWConfig,
    /// Start every block as the identity (DiT's adaLN-Zero): the timestep projection and the
    /// blocks' modulation tables start at zero, so all shifts, scales and gates are 0, and so
    /// does the (ungated) cross-attention output, as PixArt initialises it.
    /// Absent from configs written before it existed, which trained without it.
    #[serde(default)]
    pub adaln_zero: bool,
    /// Start from this model folder's DiT (same architecture) instead of a fresh init, with a
    /// fresh optimiser: continues a run whose checkpoint was lost but whose export was kept.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// With `init_from`: write a fresh text encoder (from `seed`) instead of taking the init
    /// folder's, so the DiT must learn to read new text features. Without it a run continues
    /// with the text stack the init folder's DiT was trained on.
    #[serde(default)]
    pub new_text_encoder: bool,
    /// Extra loss weight of pixels that change over the clip (moving objects), see
    /// [`data::motion_weights`]; 0 is plain MSE, as every run before it trained.
    #[serde(default)]
    pub motion_weight: f64,
    /// Weight of the motion head's displacement loss beside the velocity loss
    /// ([`motion_head`]); 0 trains no head, as every run before it did.
    #[serde(default)]
    pub displacement_weight: f64,
    /// The block whose output the motion head reads (1-based); `None`, as every run before
    /// it, reads the last block's (`head_in`). See [`motion_head::trace_name`].
    #[serde(default)]
    pub displacement_layer: Option<usize>,
    /// Fraction of each batch's clips drawn as single straight movers without pan
    /// ([`crate::sample_single_mover`]) instead of from the whole training world: a
    /// curriculum for the direction words, which every clip of that kind depends on. 0, as
    /// every run before it, draws the whole world only.
    #[serde(default)]
    pub single_mover_fraction: f64,
    /// Fraction of each batch's clips drawn as two or three straight movers in different
    /// directions without pan ([`crate::sample_multi_mover`]): a curriculum for binding each
    /// direction to its object, which the bundled model fails at in scenes of several
    /// objects though it follows the words on single movers. Drawn apart from the single
    /// movers; the two fractions add up to at most 1. 0, as every run before it, draws none.
    #[serde(default)]
    pub multi_mover_fraction: f64,
    /// Added to every value of each clip's first frame before noising: a time anchor, as
    /// real Wan's causal VAE gives its DiT by encoding frame 0 alone. The DiT has no
    /// absolute positions, so without one it tells the first frame from the last only
    /// weakly (`examples/position_probe.rs`), which a direction at high noise needs.
    /// Experimental: a model trained with it generates frame 0 offset by this much, and
    /// nothing downstream subtracts it yet, so `export` refuses such a run. In a toy run it gave the DiT its frame but not
    /// the direction words (`models/shapes-wan/HISTORY.md`, "Toy runs"). 0, as every run
    /// before it, adds nothing.
    #[serde(default)]
    pub first_frame_offset: f64,
    /// Give the DiT each pixel's frame, row and column as three clean input channels
    /// ([`hsa_models::wan::position_channels`]; `in_channels` 6, as Wan's image-to-video
    /// models take extra channels), so that at high noise it can put an object where its
    /// caption's direction says (a toy learned the direction words this way, and not without).
    /// The export marks the model (`_hsa.position_channels`) and the pipeline appends the
    /// channels. `false`, as every run before it, trains a plain 3-channel DiT.
    #[serde(default)]
    pub position_channels: bool,
    /// Fraction (0 to 1) of the clips trained at the top of the noise ([`TOP_NOISE_SHIFT`]:
    /// sigma above 0.99 for most of them) instead of at `shift`. Pure noise is where the
    /// caption alone must place the objects, so where a model with position channels learns
    /// the direction words (a toy did at shift 1000, not at 2 or 10); the rest of the batch
    /// keeps the lower noise levels trained. May change on resume. 0, as every run before it,
    /// draws every clip at `shift`.
    #[serde(default)]
    pub top_noise_fraction: f64,
    /// With more than 1, the `top_noise_fraction` clips are trained at sigma 1 against the
    /// mean of this many renders of their scene ([`data::prior_target`]), which carries the
    /// caption's prior with far less of the renders' spread than one clip. 0, as every run
    /// before it, trains each clip against itself.
    #[serde(default)]
    pub prior_renders: usize,
}

/// The timestep shift of [`TrainConfig::top_noise_fraction`]'s clips: it maps the sampled
/// levels' median to sigma 0.999.
pub const TOP_NOISE_SHIFT: f64 = 1000.0;

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            width: 32,
            height: 32,
            frames: 17,
            patch: [1, 4, 4],
            dim: 192,
            heads: 3,
            layers: 6,
            ffn: 768,
            text_len: 32,
            batch: 8,
            steps: 3000,
            lr: 4e-4,
            warmup_steps: 100,
            ema_decay: 0.995,
            cfg_dropout: 0.1,
            shift: 1.0,
            seed: 0,
            checkpoint_every: 100,
            adamw: AdamWConfig::default(),
            adaln_zero: true,
            init_from: None,
            new_text_encoder: false,
            motion_weight: 0.0,
            displacement_weight: 0.0,
            displacement_layer: None,
            single_mover_fraction: 0.0,
            multi_mover_fraction: 0.0,
            first_frame_offset: 0.0,
            position_channels: false,
            top_noise_fraction: 0.0,
            prior_renders: 0,
        }
    }
}

impl TrainConfig {
    /// The DiT architecture this run trains.
    pub fn dit_config(&self) -> WanConfig {
        let text = text_stack::text_encoder_config();
        WanConfig {
            patch_size: self.patch,
            num_heads: self.heads,
            head_dim: self.dim / self.heads.max(1),
            in_channels: match self.position_channels {
                true => 3 + hsa_models::wan::POSITION_CHANNELS,
                false => 3,
            },
            out_channels: 3,
            text_dim: text.d_model,
            freq_dim: 256,
            ffn_dim: self.ffn,
            num_layers: self.layers,
            cross_attn_norm: true,
            qk_norm: true,
            eps: 1e-6,
            image_dim: None,
            pos_embed_seq_len: None,
            rope_max_seq_len: 1024,
        }
    }

    pub fn clip(&self) -> ClipConfig {
        ClipConfig {
            width: self.width,
            height: self.height,
            frames: self.frames,
        }
    }

    /// Checks that the clip, patch, heads, batch and steps fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        if self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return bad(format!(
                "dim {} must be divisible by heads {}",
                self.dim, self.heads
            ));
        }
        if !self.width.is_multiple_of(self.patch[2])
            || !self.height.is_multiple_of(self.patch[1])
            || !self.frames.is_multiple_of(self.patch[0])
        {
            return bad(format!(
                "clip {}x{}x{} is not divisible by patch {:?}",
                self.frames, self.height, self.width, self.patch
            ));
        }
        if self.batch == 0 || self.steps == 0 {
            return bad("batch and steps must be positive".into());
        }
        for (what, w) in [
            ("motion weight", self.motion_weight),
            ("displacement weight", self.displacement_weight),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return bad(format!("{what} {w} must be a finite number >= 0"));
            }
        }
        let o = self.first_frame_offset;
        if !(o.is_finite() && o.abs() <= 2.0) {
            return bad(format!("first-frame offset {o} must lie in [-2, 2]"));
        }
        let f = self.single_mover_fraction;
        if !(0.0..=1.0).contains(&f) {
            return bad(format!("single-mover fraction {f} must lie in [0, 1]"));
        }
        let m = self.multi_mover_fraction;
        if !(0.0..=1.0).contains(&m) {
            return bad(format!("multi-mover fraction {m} must lie in [0, 1]"));
        }
        if f + m > 1.0 {
            return bad(format!(
                "single-mover fraction {f} and multi-mover fraction {m} add up to more than 1"
            ));
        }
        let f = self.top_noise_fraction;
        if !(0.0..=1.0).contains(&f) {
            return bad(format!("top-noise fraction {f} must lie in [0, 1]"));
        }
        let k = self.prior_renders;
        if k > 256 {
            return bad(format!("prior renders {k}: at most 256"));
        }
        if k > 1 && f == 0.0 {
            return bad(format!(
                "prior renders {k} average the targets of the top-noise clips; the top-noise fraction is 0"
            ));
        }
        if k > 1 && self.displacement_weight > 0.0 {
            return bad(format!(
                "prior renders {k} with a motion head: an averaged clip has no displacement target"
            ));
        }
        if let Some(k) = self.displacement_layer {
            if self.displacement_weight == 0.0 {
                return bad(format!(
                    "displacement layer {k} without a motion head (displacement weight 0)"
                ));
            }
            if k == 0 || k > self.layers {
                return bad(format!(
                    "displacement layer {k} must name one of the {} blocks (1 to {})",
                    self.layers, self.layers
                ));
            }
        }
        self.dit_config().validate().map_err(TrainError::Invalid)
    }

    /// Learning rate at update `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps.min(self.steps)).max(1) as f64;
        let p = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }
}

/// What the progress callback sees after every update.
#[derive(Debug, Clone)]
pub struct TrainProgress {
    pub step: usize,
    pub steps: usize,
    /// The flow-matching (velocity) loss, on the scale of every earlier run.
    pub loss: f64,
    /// The motion head's displacement loss, where the run trains one.
    pub displacement_loss: Option<f64>,
    pub grad_norm: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// Summary of a finished (or resumed-and-finished) run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub final_loss: f64,
    /// Mean loss of the last 100 updates.
    pub recent_loss: f64,
    pub seconds: f64,
}

/// Weights that start at zero: the output projection (the model starts by predicting zero
/// velocity) and, with adaLN-Zero, everything that makes the blocks' shifts, scales and gates,
/// plus the cross-attention output (Wan adds it ungated), so every block starts as the identity.
fn starts_at_zero(name: &str, adaln_zero: bool) -> bool {
    name == "proj_out.weight"
        || (adaln_zero
            && (name == "condition_embedder.time_proj.weight"
                || (name.starts_with("blocks.")
                    && (name.ends_with(".scale_shift_table")
                        || name.ends_with(".attn2.to_out.0.weight")))))
}

/// The run's weights at step 0, as named variables (diffusers names).
pub fn initial_weights(cfg: &TrainConfig, device: &Device) -> Result<(Vec<String>, Vec<Var>)> {
    let wcfg = cfg.dit_config();
    let shapes = expected_tensors(&wcfg);
    if let Some(dir) = &cfg.init_from {
        let tdir = dir.join("transformer");
        let found = hsa_models::wan::dit::read_config(&tdir)?;
        // A plain model may start a run with position channels: their patch-embedding
        // weights start as a fresh model's. Not at zero: from zero they stayed near it (RMS
        // 0.002 against the pixels' 0.15 after 600 updates of the bundled model), since the
        // blocks had never seen positions and so gave their weights no steady gradient.
        let inputs_fit = found.in_channels == wcfg.in_channels
            || (cfg.position_channels && found.in_channels == wcfg.out_channels);
        let same = WanConfig {
            in_channels: wcfg.in_channels,
            ..found.clone()
        };
        if same != wcfg || !inputs_fit {
            return Err(TrainError::Invalid(format!(
                "{} holds a different architecture than this run's",
                tdir.display()
            )));
        }
        let store = hsa_models::wan::WeightStore::open_dir(&tdir)?;
        store.check(&expected_tensors(&found))?;
        let vars = shapes
            .iter()
            .map(|(name, shape)| {
                let t = store.get(name, DType::F32, device)?;
                // patch_embedding.weight [D, C, pt, ph, pw] of a widened run: the new
                // channels' weights are a fresh init's.
                let t = if t.dims() == shape.as_slice() {
                    t
                } else {
                    let fresh = init_values(name, shape, wcfg.dim(), cfg.seed);
                    let fresh = candle_core::Tensor::from_vec(fresh, shape.as_slice(), device)?;
                    let old = t.dim(1)?;
                    let extra = fresh.narrow(1, old, shape[1] - old)?;
                    candle_core::Tensor::cat(&[&t, &extra], 1)?
                };
                Ok(Var::from_tensor(&t)?)
            })
            .collect::<Result<_>>()?;
        return Ok((shapes.into_iter().map(|(n, _)| n).collect(), vars));
    }
    let vars = shapes
        .iter()
        .map(|(name, shape)| {
            let values = if starts_at_zero(name, cfg.adaln_zero) {
                vec![0.0; shape.iter().product()]
            } else {
                init_values(name, shape, wcfg.dim(), cfg.seed)
            };
            Var::from_vec(values, shape.as_slice(), device)
        })
        .collect::<candle_core::Result<_>>()?;
    Ok((shapes.into_iter().map(|(n, _)| n).collect(), vars))
}

/// The DiT computing with `vars` (so gradients reach them).
pub fn model_over(cfg: &TrainConfig, names: &[String], vars: &[Var]) -> Result<WanModel> {
    let by_name: HashMap<&str, &Var> = names.iter().map(String::as_str).zip(vars).collect();
    let device = vars.first().map_or(Device::Cpu, |v| v.device().clone());
    Ok(WanModel::build(
        &cfg.dit_config(),
        DType::F32,
        &device,
        &|name, _| {
            by_name
                .get(name)
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| hsa_models::ModelError::Input(format!("no variable for {name}")))
        },
    )?)
}

/// Trains (or resumes) in `work_dir`. The text stack and checkpoints live there; call
/// [`export`] afterwards to write the shippable model folder.
pub fn train(
    cfg: &TrainConfig,
    work_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<TrainSummary> {
    cfg.validate()?;
    let device = device.clone();
    if device.is_cuda() {
        // TF32 matrix products on a GPU: training tolerates the shorter mantissa, and f32
        // GEMMs would otherwise run at a fraction of the tensor cores' rate.
        candle_core::cuda::set_gemm_reduced_precision_f32(true);
    }
    std::fs::create_dir_all(work_dir)?;
    let cfg_path = work_dir.join("train_config.json");
    if cfg_path.is_file() {
        let saved: TrainConfig = serde_json::from_slice(&std::fs::read(&cfg_path)?)?;
        // Schedule settings may change on resume (continued training); the architecture and
        // data may not.
        let same_arch = TrainConfig {
            steps: cfg.steps,
            checkpoint_every: cfg.checkpoint_every,
            shift: cfg.shift,
            lr: cfg.lr,
            top_noise_fraction: cfg.top_noise_fraction,
            ..saved.clone()
        };
        if &same_arch != cfg {
            return Err(TrainError::Invalid(format!(
                "{} holds a run with different settings; use another folder or the same settings (only --steps, --lr, --shift and --top-noise-fraction may change)",
                work_dir.display()
            )));
        }
    }
    std::fs::write(&cfg_path, serde_json::to_string_pretty(cfg)?)?;
    if let (Some(from), false) = (&cfg.init_from, cfg.new_text_encoder) {
        copy_text_stack(from, work_dir)?;
    }
    write_text_stack(work_dir, cfg.seed)?;
    let text = TextStack::load(work_dir, cfg.text_len, &device)?;

    let ckpt = Checkpoint {
        dir: work_dir.join("checkpoint"),
    };
    // A resumed run overwrites the start with its checkpoint: no need for the init folder.
    let start_from = match ckpt.exists() {
        true => TrainConfig {
            init_from: None,
            ..cfg.clone()
        },
        false => cfg.clone(),
    };
    let (mut names, mut vars) = initial_weights(&start_from, &device)?;
    let model = model_over(cfg, &names, &vars)?;
    // The motion head trains beside the DiT (and is checkpointed with it) but is not the DiT's.
    let dit_vars = vars.len();
    if cfg.displacement_weight > 0.0 {
        names.extend(motion_head::NAMES.map(String::from));
        vars.extend(motion_head::initial(cfg, &device)?);
    }
    let mut opt = AdamW::new(cfg.adamw, &vars)?;
    let mut ema = Ema::new(cfg.ema_decay, &vars)?;
    let mut losses: Vec<f32> = if ckpt.exists() {
        ckpt.load(&names, &vars, &mut opt, &mut ema)?
    } else {
        Vec::new()
    };

    let start = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let first = opt.step;
    std::thread::scope(|scope| -> Result<()> {
        // The next batches are drawn on CPU threads while the current update runs.
        let (send, batches) = std::sync::mpsc::sync_channel(2);
        scope.spawn(move || {
            for step in first..cfg.steps {
                if send.send(draw_batch(cfg, step, threads)).is_err() {
                    break; // the training loop stopped early
                }
            }
        });
        while opt.step < cfg.steps {
            let step = opt.step;
            let draw = batches
                .recv()
                .map_err(|_| TrainError::Invalid("the batch drawing thread stopped".into()))?;
            let loss = training_loss(&model, &vars[dit_vars..], &text, cfg, &draw, &device)?;
            let grads = loss.total.backward()?;
            let lr = cfg.lr_at(step);
            let grad_norm = opt.update(&vars, &grads, lr)?;
            ema.update(&vars)?;
            let loss_v = loss.velocity.to_scalar::<f32>()?;
            let displacement_loss = match &loss.displacement {
                Some(d) => Some(d.to_scalar::<f32>()? as f64),
                None => None,
            };
            let total = loss.total.to_scalar::<f32>()?;
            if !total.is_finite() {
                return Err(TrainError::Invalid(format!(
                    "loss became {total} at step {step}; lower --lr"
                )));
            }
            losses.push(loss_v);
            progress(&TrainProgress {
                step: opt.step,
                steps: cfg.steps,
                loss: loss_v as f64,
                displacement_loss,
                grad_norm,
                lr,
                seconds: start.elapsed().as_secs_f64(),
            });
            if opt.step % cfg.checkpoint_every == 0 || opt.step == cfg.steps {
                ckpt.save(&names, &vars, &opt, &ema, &losses)?;
            }
        }
        Ok(())
    })?;
    let recent = &losses[losses.len().saturating_sub(100)..];
    Ok(TrainSummary {
        steps: opt.step,
        final_loss: *losses.last().unwrap_or(&f32::NAN) as f64,
        recent_loss: recent.iter().map(|&l| l as f64).sum::<f64>() / recent.len().max(1) as f64,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Copies `from`'s tokenizer and text encoder into `to` where `to` has none yet: a DiT is only
/// good with the text features it was trained on, and a fresh encoder from another seed would
/// silently replace them.
fn copy_text_stack(from: &Path, to: &Path) -> Result<()> {
    for part in ["tokenizer", "text_encoder"] {
        let (src, dst) = (from.join(part), to.join(part));
        if dst.exists() {
            continue;
        }
        if !src.is_dir() {
            return Err(TrainError::Invalid(format!(
                "{} has no {part} folder to continue with (or pass --new-text-encoder)",
                from.display()
            )));
        }
        checkpoint::copy_files(&src, &dst)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
