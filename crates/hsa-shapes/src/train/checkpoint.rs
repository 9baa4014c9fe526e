//! Training state on disk and the export of the shippable model folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use hsa_models::wan::weights::expected_tensors;

use super::optim::{AdamW, Ema};
use super::{plot, Result, TrainConfig, TrainError};

/// Training state on disk (`work_dir/checkpoint/`).
pub(super) struct Checkpoint {
    pub(super) dir: PathBuf,
}

impl Checkpoint {
    pub(super) fn tensors_path(&self) -> PathBuf {
        self.dir.join("state.safetensors")
    }
    pub(super) fn meta_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub(super) fn exists(&self) -> bool {
        self.tensors_path().is_file() && self.meta_path().is_file()
    }

    pub(super) fn save(
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

    pub(super) fn load(
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

/// Copies the files of folder `from` into folder `to` (created if needed).
pub(super) fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
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
    // Nothing in the pipeline subtracts the offset again, so such a model would generate
    // every first frame shifted: it stays a training experiment.
    if cfg.first_frame_offset != 0.0 {
        return Err(TrainError::Invalid(format!(
            "{} was trained with a first-frame offset of {}, which the pipeline does not \
             subtract: its export would generate every first frame shifted by it",
            work_dir.display(),
            cfg.first_frame_offset
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
    let dcfg = diffusers_config(&wcfg);
    std::fs::write(
        tdir.join("config.json"),
        serde_json::to_string_pretty(&dcfg)?,
    )?;
    for sub in ["tokenizer", "text_encoder"] {
        copy_files(&work_dir.join(sub), &out_dir.join(sub))?;
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
            "steps": 40,
            "position_channels": cfg.position_channels
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

/// The diffusers `config.json` of a DiT with this configuration (`WanTransformer3DModel`).
pub fn diffusers_config(wcfg: &hsa_models::wan::WanConfig) -> serde_json::Value {
    serde_json::json!({
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
    })
}
