//! How a [`WanModel`] comes to exist: from a model folder, from a weight store, or fresh
//! (random weights for benchmarks and training), all through one [`WanModel::build`] that asks
//! a tensor source for every weight by its diffusers name.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{Block, PatchEmbed, WanModel};
use crate::nn::{LayerNorm, Linear, RmsNorm};
use crate::wan::attention::{CrossAttention, SelfAttention};
use crate::wan::config::WanConfig;
use crate::wan::embeddings::{ImageEmbedding, TextEmbedding, TimeEmbedding};
use crate::wan::weights::{expected_tensors, WeightStore};
use crate::{ModelError, Result};

/// Aligns the config's image branch with what the weights contain ("trust the weights": some
/// published configs declare an image branch their checkpoint does not have, and vice versa).
pub fn reconcile_with_weights(mut cfg: WanConfig, store: &WeightStore) -> WanConfig {
    let has_branch = store.contains("blocks.0.attn2.add_k_proj.weight");
    if !has_branch {
        cfg.image_dim = None;
        cfg.pos_embed_seq_len = None;
    } else if cfg.image_dim.is_none() {
        if let Some((shape, _)) = store.info("condition_embedder.image_embedder.norm1.weight") {
            cfg.image_dim = shape.first().copied();
        }
    }
    if cfg.image_dim.is_some() {
        cfg.pos_embed_seq_len = store
            .info("condition_embedder.image_embedder.pos_embed")
            .and_then(|(s, _)| s.get(1).copied());
    }
    cfg
}

/// Initial values of the tensor `name` (diffusers name) of a fresh model, deterministic in
/// `seed`: linear weights ~ N(0, 1/fan_in), biases 0, norm weights 1, modulation tables
/// ~ N(0, 1/D) (as diffusers initialises them).
pub fn init_values(name: &str, shape: &[usize], dim: usize, seed: u64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if name.ends_with(".bias") {
        vec![0.0; n]
    } else if name.contains("norm") {
        vec![1.0; n]
    } else {
        let std = if name.ends_with("scale_shift_table") {
            1.0 / (dim as f64).sqrt()
        } else {
            let fan_in: usize = shape[1..].iter().product();
            1.0 / (fan_in.max(1) as f64).sqrt()
        };
        crate::wan::init::normal(n, std, seed, name)
    }
}

/// Reads and parses `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<WanConfig> {
    let path = dir.join("config.json");
    let text = crate::store::read_text(&path)?;
    WanConfig::from_json(&text).map_err(|message| ModelError::Config { path, message })
}

impl WanModel {
    /// Loads `dir/config.json` and the weights beside it. `dtype` overrides the compute dtype
    /// (default: the dtype the matmul weights are stored in).
    pub fn load_dir(dir: &Path, dtype: Option<DType>, device: &Device) -> Result<Self> {
        let cfg = read_config(dir)?;
        let store = WeightStore::open_dir(dir)?;
        let cfg = reconcile_with_weights(cfg, &store);
        Self::load(&cfg, &store, dtype, device)
    }

    /// Builds the model from validated weights.
    pub fn load(
        cfg: &WanConfig,
        store: &WeightStore,
        dtype: Option<DType>,
        device: &Device,
    ) -> Result<Self> {
        store.check(&expected_tensors(cfg))?;
        let dtype = dtype.unwrap_or_else(|| store.storage_dtype());
        Self::build(cfg, dtype, device, &|name, dt| store.get(name, dt, device))
    }

    /// A model with freshly initialised weights (deterministic in `seed`): benchmarks and the
    /// starting point of training. Linear weights ~ N(0, 1/fan_in), biases 0, norm weights 1,
    /// modulation tables ~ N(0, 1/D) as diffusers initialises them.
    pub fn random(cfg: &WanConfig, dtype: DType, device: &Device, seed: u64) -> Result<Self> {
        cfg.validate().map_err(ModelError::Input)?;
        let shapes: BTreeMap<String, Vec<usize>> = expected_tensors(cfg).into_iter().collect();
        Self::build(cfg, dtype, device, &|name, dt| {
            let shape = shapes
                .get(name)
                .ok_or_else(|| ModelError::Input(format!("no initialiser for '{name}'")))?;
            let values = init_values(name, shape, cfg.dim(), seed);
            Ok(Tensor::from_vec(values, shape.as_slice(), device)?.to_dtype(dt)?)
        })
    }

    /// Assembles the model from a tensor source (`name`, `dtype`) -> tensor, by diffusers name
    /// (see [`expected_tensors`]). Training passes the tensors of its `Var`s here, so the
    /// forward pass builds a graph back to them.
    pub fn build(
        cfg: &WanConfig,
        dtype: DType,
        device: &Device,
        get: &dyn Fn(&str, DType) -> Result<Tensor>,
    ) -> Result<Self> {
        let linear = |name: &str, dt: DType| -> Result<Linear> {
            Ok(Linear::new(
                get(&format!("{name}.weight"), dt)?,
                Some(get(&format!("{name}.bias"), dt)?),
            ))
        };
        let f32 = DType::F32;
        let eps = cfg.eps;
        let rms = |name: &str| -> Result<Option<RmsNorm>> {
            if cfg.qk_norm {
                Ok(Some(RmsNorm::new(get(name, f32)?, eps)?))
            } else {
                Ok(None)
            }
        };
        let d = cfg.dim();
        let patch_embed = PatchEmbed::new(
            get("patch_embedding.weight", dtype)?,
            get("patch_embedding.bias", dtype)?,
        )?;
        let ce = "condition_embedder";
        let time = TimeEmbedding {
            linear_1: linear(&format!("{ce}.time_embedder.linear_1"), f32)?,
            linear_2: linear(&format!("{ce}.time_embedder.linear_2"), f32)?,
            proj: linear(&format!("{ce}.time_proj"), f32)?,
            freq_dim: cfg.freq_dim,
        };
        let text = TextEmbedding {
            linear_1: linear(&format!("{ce}.text_embedder.linear_1"), dtype)?,
            linear_2: linear(&format!("{ce}.text_embedder.linear_2"), dtype)?,
        };
        let image = match cfg.image_dim {
            None => None,
            Some(_) => {
                let p = format!("{ce}.image_embedder");
                let ln = |n: &str| -> Result<LayerNorm> {
                    LayerNorm::affine(
                        get(&format!("{p}.{n}.weight"), f32)?,
                        get(&format!("{p}.{n}.bias"), f32)?,
                        1e-5,
                    )
                };
                Some(ImageEmbedding {
                    norm1: ln("norm1")?,
                    linear_1: linear(&format!("{p}.ff.net.0.proj"), dtype)?,
                    linear_2: linear(&format!("{p}.ff.net.2"), dtype)?,
                    norm2: ln("norm2")?,
                    pos_embed: match cfg.pos_embed_seq_len {
                        Some(_) => Some(get(&format!("{p}.pos_embed"), f32)?),
                        None => None,
                    },
                })
            }
        };
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = format!("blocks.{i}");
            let attn1 = SelfAttention {
                to_q: linear(&format!("{b}.attn1.to_q"), dtype)?,
                to_k: linear(&format!("{b}.attn1.to_k"), dtype)?,
                to_v: linear(&format!("{b}.attn1.to_v"), dtype)?,
                to_out: linear(&format!("{b}.attn1.to_out.0"), dtype)?,
                norm_q: rms(&format!("{b}.attn1.norm_q.weight"))?,
                norm_k: rms(&format!("{b}.attn1.norm_k.weight"))?,
                heads: cfg.num_heads,
            };
            let image_proj = if cfg.has_image_branch() {
                Some((
                    linear(&format!("{b}.attn2.add_k_proj"), dtype)?,
                    linear(&format!("{b}.attn2.add_v_proj"), dtype)?,
                    rms(&format!("{b}.attn2.norm_added_k.weight"))?,
                ))
            } else {
                None
            };
            let attn2 = CrossAttention {
                to_q: linear(&format!("{b}.attn2.to_q"), dtype)?,
                to_k: linear(&format!("{b}.attn2.to_k"), dtype)?,
                to_v: linear(&format!("{b}.attn2.to_v"), dtype)?,
                to_out: linear(&format!("{b}.attn2.to_out.0"), dtype)?,
                norm_q: rms(&format!("{b}.attn2.norm_q.weight"))?,
                norm_k: rms(&format!("{b}.attn2.norm_k.weight"))?,
                image: image_proj,
                heads: cfg.num_heads,
            };
            let norm2 = if cfg.cross_attn_norm {
                Some(LayerNorm::affine(
                    get(&format!("{b}.norm2.weight"), f32)?,
                    get(&format!("{b}.norm2.bias"), f32)?,
                    eps,
                )?)
            } else {
                None
            };
            blocks.push(Block {
                table: get(&format!("{b}.scale_shift_table"), f32)?,
                norm1: LayerNorm::no_affine(d, eps, device)?,
                attn1,
                norm2,
                attn2,
                norm3: LayerNorm::no_affine(d, eps, device)?,
                ffn_1: linear(&format!("{b}.ffn.net.0.proj"), dtype)?,
                ffn_2: linear(&format!("{b}.ffn.net.2"), dtype)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            device: device.clone(),
            dtype,
            patch_embed,
            time,
            text,
            image,
            blocks,
            head_table: get("scale_shift_table", f32)?,
            norm_out: LayerNorm::no_affine(d, eps, device)?,
            proj_out: linear("proj_out", f32)?,
        })
    }
}
