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
//! * target: the flow velocity `eps - x0` of `x_sigma = (1-sigma)·x0 + sigma·eps`; MSE;
//! * 10% of captions are replaced by the empty prompt so classifier-free guidance works;
//! * AdamW, linear warm-up then cosine decay to 10%, global-norm clipping at 1, an EMA of
//!   the weights (the EMA is what ships);
//! * the output projection starts at zero (the model starts by predicting 0 velocity).

pub mod optim;
pub mod plot;
pub mod text_stack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use hsa_models::wan::dit::init_values;
use hsa_models::wan::weights::expected_tensors;
use hsa_models::wan::{WanConfig, WanModel};

use crate::rng::Rng;
use crate::{generate_train, ClipConfig};
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
}

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
            in_channels: 3,
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

    fn validate(&self) -> Result<()> {
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
    pub loss: f64,
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

/// Training state on disk (`work_dir/checkpoint/`).
struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    fn tensors_path(&self) -> PathBuf {
        self.dir.join("state.safetensors")
    }
    fn meta_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    fn exists(&self) -> bool {
        self.tensors_path().is_file() && self.meta_path().is_file()
    }

    fn save(
        &self,
        names: &[String],
        vars: &[Var],
        opt: &AdamW,
        ema: &Ema,
        losses: &[f32],
    ) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            let cpu = |t: &Tensor| t.to_device(&Device::Cpu);
            map.insert(format!("w/{n}"), cpu(vars[i].as_tensor())?);
            map.insert(format!("m/{n}"), cpu(&opt.m[i])?);
            map.insert(format!("v/{n}"), cpu(&opt.v[i])?);
            map.insert(format!("ema/{n}"), cpu(&ema.weights[i])?);
        }
        let tmp = self.dir.join("state.safetensors.tmp");
        candle_core::safetensors::save(&map, &tmp)?;
        let meta =
            serde_json::json!({"step": opt.step, "ema_updates": ema.updates, "losses": losses});
        let tmp_meta = self.dir.join("state.json.tmp");
        std::fs::write(&tmp_meta, serde_json::to_vec(&meta)?)?;
        std::fs::rename(&tmp, self.tensors_path())?;
        std::fs::rename(&tmp_meta, self.meta_path())?;
        Ok(())
    }

    fn load(
        &self,
        names: &[String],
        vars: &[Var],
        opt: &mut AdamW,
        ema: &mut Ema,
    ) -> Result<Vec<f32>> {
        let device = vars
            .first()
            .map(|v| v.device().clone())
            .unwrap_or(Device::Cpu);
        let map = candle_core::safetensors::load(self.tensors_path(), &device)?;
        let get = |k: String| {
            map.get(&k)
                .cloned()
                .ok_or_else(|| TrainError::Invalid(format!("checkpoint lacks {k}")))
        };
        for (i, n) in names.iter().enumerate() {
            vars[i].set(&get(format!("w/{n}"))?)?;
            opt.m[i] = get(format!("m/{n}"))?;
            opt.v[i] = get(format!("v/{n}"))?;
            ema.weights[i] = get(format!("ema/{n}"))?;
        }
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(self.meta_path())?)?;
        opt.step = meta["step"].as_u64().unwrap_or(0) as usize;
        ema.updates = meta["ema_updates"].as_u64().unwrap_or(0) as usize;
        Ok(serde_json::from_value(meta["losses"].clone())?)
    }
}

/// One batch: clean clips `[B, 3, F, H, W]` and their captions.
fn batch(cfg: &TrainConfig, step: usize, device: &Device) -> Result<(Tensor, Vec<String>)> {
    let clip_cfg = cfg.clip();
    let mut data = Vec::with_capacity(cfg.batch * 3 * cfg.frames * cfg.height * cfg.width);
    let mut captions = Vec::with_capacity(cfg.batch);
    for i in 0..cfg.batch {
        let seed = crate::rng::mix(cfg.seed, (step * cfg.batch + i) as u64);
        let ex = generate_train(seed, &clip_cfg);
        data.extend_from_slice(ex.clip.data());
        captions.push(ex.caption);
    }
    let x0 = Tensor::from_vec(
        data,
        (cfg.batch, 3, cfg.frames, cfg.height, cfg.width),
        device,
    )?;
    Ok((x0, captions))
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
            ..saved.clone()
        };
        if &same_arch != cfg {
            return Err(TrainError::Invalid(format!(
                "{} holds a run with different settings; use another folder or the same settings (only --steps, --lr and --shift may change)",
                work_dir.display()
            )));
        }
    }
    std::fs::write(&cfg_path, serde_json::to_string_pretty(cfg)?)?;
    write_text_stack(work_dir, cfg.seed)?;
    let mut text = TextStack::load(work_dir, cfg.text_len, &device)?;
    let empty = text.embed("")?;

    let wcfg = cfg.dit_config();
    let shapes = expected_tensors(&wcfg);
    let names: Vec<String> = shapes.iter().map(|(n, _)| n.clone()).collect();
    let vars: Vec<Var> = shapes
        .iter()
        .map(|(name, shape)| {
            let values = if name == "proj_out.weight" {
                vec![0.0; shape.iter().product()]
            } else {
                init_values(name, shape, wcfg.dim(), cfg.seed)
            };
            Var::from_vec(values, shape.as_slice(), &device)
        })
        .collect::<candle_core::Result<_>>()?;
    let by_name: HashMap<&str, &Var> = names.iter().map(String::as_str).zip(&vars).collect();
    let model = WanModel::build(&wcfg, DType::F32, &device, &|name, _| {
        by_name
            .get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| hsa_models::ModelError::Input(format!("no variable for {name}")))
    })?;
    let mut opt = AdamW::new(cfg.adamw, &vars)?;
    let mut ema = Ema::new(cfg.ema_decay, &vars)?;
    let ckpt = Checkpoint {
        dir: work_dir.join("checkpoint"),
    };
    let mut losses: Vec<f32> = if ckpt.exists() {
        ckpt.load(&names, &vars, &mut opt, &mut ema)?
    } else {
        Vec::new()
    };

    let start = Instant::now();
    while opt.step < cfg.steps {
        let step = opt.step;
        let loss = training_loss(&model, &mut text, &empty, cfg, step, &device)?;
        let grads = loss.backward()?;
        let lr = cfg.lr_at(step);
        let grad_norm = opt.update(&vars, &grads, lr)?;
        ema.update(&vars)?;
        let loss_v = loss.to_scalar::<f32>()?;
        if !loss_v.is_finite() {
            return Err(TrainError::Invalid(format!(
                "loss became {loss_v} at step {step}; lower --lr"
            )));
        }
        losses.push(loss_v);
        progress(&TrainProgress {
            step: opt.step,
            steps: cfg.steps,
            loss: loss_v as f64,
            grad_norm,
            lr,
            seconds: start.elapsed().as_secs_f64(),
        });
        if opt.step % cfg.checkpoint_every == 0 || opt.step == cfg.steps {
            ckpt.save(&names, &vars, &opt, &ema, &losses)?;
        }
    }
    let recent = &losses[losses.len().saturating_sub(100)..];
    Ok(TrainSummary {
        steps: opt.step,
        final_loss: *losses.last().unwrap_or(&f32::NAN) as f64,
        recent_loss: recent.iter().map(|&l| l as f64).sum::<f64>() / recent.len().max(1) as f64,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The flow-matching loss of update `step` (its batch, noise, noise levels and caption
/// dropout are all determined by the seed and the step).
pub fn training_loss(
    model: &WanModel,
    text: &mut TextStack,
    empty: &Tensor,
    cfg: &TrainConfig,
    step: usize,
    device: &Device,
) -> Result<Tensor> {
    let (x0, captions) = batch(cfg, step, device)?;
    let mut rng = Rng::stream(cfg.seed, 1_000_000 + step as u64);
    let eps = Tensor::from_vec(
        hsa_models::wan::init::normal(
            x0.elem_count(),
            1.0,
            crate::rng::mix(cfg.seed, step as u64),
            "noise",
        ),
        x0.shape(),
        device,
    )?;
    let sigmas: Vec<f32> = (0..cfg.batch)
        .map(|_| {
            let u = if rng.chance(0.5) {
                rng.f32() as f64
            } else {
                1.0 / (1.0 + (-standard_normal(&mut rng)).exp())
            };
            hsa_core::shift_sigma(u, cfg.shift) as f32
        })
        .collect();
    let ctx: Vec<Tensor> = captions
        .iter()
        .map(|c| {
            if rng.chance(cfg.cfg_dropout as f32) {
                Ok(empty.clone())
            } else {
                text.embed(c)
            }
        })
        .collect::<Result<_>>()?;
    let ctx = Tensor::stack(&ctx, 0)?;
    let s = Tensor::from_vec(sigmas.clone(), (cfg.batch, 1, 1, 1, 1), device)?;
    let xt = (x0.broadcast_mul(&(1.0 - &s)?)? + eps.broadcast_mul(&s)?)?;
    let t = Tensor::from_vec(
        sigmas.iter().map(|s| s * 1000.0).collect::<Vec<_>>(),
        cfg.batch,
        device,
    )?;
    let v = model.forward(&xt, &t, &ctx, None, None)?;
    Ok((v - (&eps - &x0)?)?.sqr()?.mean_all()?)
}

fn standard_normal(rng: &mut Rng) -> f64 {
    let u1 = (rng.f32() as f64).max(1e-12);
    let u2 = rng.f32() as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Writes the shippable model folder from a training folder: EMA weights in bf16 under
/// `transformer/` (diffusers names and config), the text stack, `model_index.json`, and the
/// loss curve. Returns the loss history.
pub fn export(work_dir: &Path, out_dir: &Path) -> Result<Vec<f32>> {
    let cfg: TrainConfig =
        serde_json::from_slice(&std::fs::read(work_dir.join("train_config.json"))?)?;
    let ckpt = Checkpoint {
        dir: work_dir.join("checkpoint"),
    };
    if !ckpt.exists() {
        return Err(TrainError::Invalid(format!(
            "no checkpoint in {}",
            work_dir.display()
        )));
    }
    let map = candle_core::safetensors::load(ckpt.tensors_path(), &Device::Cpu)?;
    let wcfg = cfg.dit_config();
    let mut weights = HashMap::new();
    for (name, _) in expected_tensors(&wcfg) {
        let t = map
            .get(&format!("ema/{name}"))
            .ok_or_else(|| TrainError::Invalid(format!("checkpoint lacks ema/{name}")))?;
        weights.insert(name, t.to_dtype(DType::BF16)?);
    }
    let tdir = out_dir.join("transformer");
    std::fs::create_dir_all(&tdir)?;
    candle_core::safetensors::save(&weights, tdir.join("diffusion_pytorch_model.safetensors"))?;
    let dcfg = serde_json::json!({
        "_class_name": "WanTransformer3DModel",
        "_diffusers_version": "0.42.1",
        "patch_size": wcfg.patch_size,
        "num_attention_heads": wcfg.num_heads,
        "attention_head_dim": wcfg.head_dim,
        "in_channels": wcfg.in_channels,
        "out_channels": wcfg.out_channels,
        "text_dim": wcfg.text_dim,
        "freq_dim": wcfg.freq_dim,
        "ffn_dim": wcfg.ffn_dim,
        "num_layers": wcfg.num_layers,
        "cross_attn_norm": true,
        "qk_norm": "rms_norm_across_heads",
        "eps": wcfg.eps,
        "image_dim": null,
        "added_kv_proj_dim": null,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": null
    });
    std::fs::write(
        tdir.join("config.json"),
        serde_json::to_string_pretty(&dcfg)?,
    )?;
    for sub in ["tokenizer", "text_encoder"] {
        let to = out_dir.join(sub);
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(work_dir.join(sub))? {
            let entry = entry?;
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    let index = serde_json::json!({
        "_class_name": "WanPipeline",
        "_diffusers_version": "0.42.1",
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "vae": [null, null],
        "scheduler": [null, null],
        "_hsa": {
            "pixel_space": true,
            "text_len": cfg.text_len,
            "frames": cfg.frames,
            "height": cfg.height,
            "width": cfg.width,
            "fps": 8,
            "shift": 3.0,
            "guidance": 4.0,
            "steps": 40
        }
    });
    std::fs::write(
        out_dir.join("model_index.json"),
        serde_json::to_string_pretty(&index)?,
    )?;
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(ckpt.meta_path())?)?;
    let losses: Vec<f32> = serde_json::from_value(meta["losses"].clone())?;
    plot::write_loss_curve(&losses, &out_dir.join("loss_curve.png"))?;
    std::fs::write(
        out_dir.join("train_config.json"),
        serde_json::to_string_pretty(&cfg)?,
    )?;
    Ok(losses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> TrainConfig {
        TrainConfig {
            width: 8,
            height: 8,
            frames: 3,
            patch: [1, 2, 2],
            dim: 24,
            heads: 2,
            layers: 1,
            ffn: 32,
            text_len: 16,
            batch: 2,
            steps: 4,
            warmup_steps: 2,
            checkpoint_every: 2,
            ..Default::default()
        }
    }

    #[test]
    fn every_parameter_receives_a_gradient() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny();
        write_text_stack(dir.path(), 0).unwrap();
        let mut text = TextStack::load(dir.path(), cfg.text_len, &Device::Cpu).unwrap();
        let empty = text.embed("").unwrap();
        let wcfg = cfg.dit_config();
        let shapes = expected_tensors(&wcfg);
        let vars: Vec<Var> = shapes
            .iter()
            .map(|(n, s)| {
                Var::from_vec(init_values(n, s, wcfg.dim(), 1), s.as_slice(), &Device::Cpu).unwrap()
            })
            .collect();
        let by_name: HashMap<&str, &Var> =
            shapes.iter().map(|(n, _)| n.as_str()).zip(&vars).collect();
        let model = WanModel::build(&wcfg, DType::F32, &Device::Cpu, &|n, _| {
            Ok(by_name[n].as_tensor().clone())
        })
        .unwrap();
        let loss = training_loss(&model, &mut text, &empty, &cfg, 0, &Device::Cpu).unwrap();
        let grads = loss.backward().unwrap();
        for ((name, _), var) in shapes.iter().zip(&vars) {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient norm {norm}"
            );
        }
    }

    #[test]
    fn a_resumed_run_equals_an_uninterrupted_one_and_exports_a_loadable_model() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let full = train(&tiny(), a.path(), &Device::Cpu, &mut |_| {}).unwrap();
        train(
            &TrainConfig { steps: 2, ..tiny() },
            b.path(),
            &Device::Cpu,
            &mut |_| {},
        )
        .unwrap();
        let resumed = train(&tiny(), b.path(), &Device::Cpu, &mut |_| {}).unwrap();
        assert_eq!(full.steps, 4);
        assert_eq!(resumed.steps, 4);
        assert_eq!(full.final_loss, resumed.final_loss);
        // Different settings in the same folder are refused.
        assert!(train(
            &TrainConfig { dim: 48, ..tiny() },
            b.path(),
            &Device::Cpu,
            &mut |_| {}
        )
        .is_err());

        let out = tempfile::tempdir().unwrap();
        let losses = export(b.path(), out.path()).unwrap();
        assert_eq!(losses.len(), 4);
        let model =
            WanModel::load_dir(&out.path().join("transformer"), None, &Device::Cpu).unwrap();
        assert_eq!(model.dtype(), DType::BF16);
        assert_eq!(model.config(), &tiny().dit_config());
        TextStack::load(out.path(), 16, &Device::Cpu)
            .unwrap()
            .embed("a red circle moving left on a gray background")
            .unwrap();
    }
}
