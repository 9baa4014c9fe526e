//! Model directories: where the DiT expert(s) and the other components of a checkpoint live,
//! and the report `hsa inspect` prints.
//!
//! Layouts understood: a bare DiT folder (config.json + weights, diffusers or original keys);
//! a diffusers pipeline (model_index.json, transformer/, transformer_2/ for the Wan2.2 A14B
//! low-noise expert, text_encoder/, tokenizer/, vae/, scheduler/); the original Wan layout
//! (config.json + DiT shards at the top, or high_noise_model/ and low_noise_model/ for
//! Wan2.2 A14B, beside the VAE and umT5 files).

use std::fmt;
use std::path::{Path, PathBuf};

use hsa_models::wan::{
    dit::reconcile_with_weights, read_config, weights::expected_tensors, KeyFormat, WanConfig,
    WeightStore,
};

use crate::{PipelineError, Result};

/// Which part of the denoising trajectory an expert serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertRole {
    /// The only DiT of the model.
    Single,
    /// Wan2.2 A14B: timesteps at or above the boundary.
    HighNoise,
    /// Wan2.2 A14B: timesteps below the boundary.
    LowNoise,
}

impl fmt::Display for ExpertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExpertRole::Single => "single",
            ExpertRole::HighNoise => "high-noise expert",
            ExpertRole::LowNoise => "low-noise expert",
        })
    }
}

/// Layout of a model directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    BareDit,
    DiffusersPipeline,
    Original,
}

/// Where the DiT experts of a model directory are.
#[derive(Debug, Clone, PartialEq)]
pub struct DitExperts {
    pub layout: Layout,
    pub experts: Vec<(ExpertRole, PathBuf)>,
}

fn has_weights(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
            })
            .unwrap_or(false)
}

/// Finds the DiT expert folders of `dir`.
pub fn find_dits(dir: &Path) -> Result<DitExperts> {
    if !dir.is_dir() {
        return Err(PipelineError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
        });
    }
    if dir.join("model_index.json").is_file() {
        let (t1, t2) = (dir.join("transformer"), dir.join("transformer_2"));
        let experts = if t2.is_dir() {
            vec![(ExpertRole::HighNoise, t1), (ExpertRole::LowNoise, t2)]
        } else {
            vec![(ExpertRole::Single, t1)]
        };
        return Ok(DitExperts {
            layout: Layout::DiffusersPipeline,
            experts,
        });
    }
    let (hi, lo) = (dir.join("high_noise_model"), dir.join("low_noise_model"));
    if hi.is_dir() || lo.is_dir() {
        return Ok(DitExperts {
            layout: Layout::Original,
            experts: vec![(ExpertRole::HighNoise, hi), (ExpertRole::LowNoise, lo)],
        });
    }
    if has_weights(dir) {
        let layout = if dir.join("Wan2.1_VAE.pth").exists() || dir.join("Wan2.2_VAE.pth").exists() {
            Layout::Original
        } else {
            Layout::BareDit
        };
        return Ok(DitExperts {
            layout,
            experts: vec![(ExpertRole::Single, dir.to_path_buf())],
        });
    }
    Err(PipelineError::Input {
        path: dir.to_path_buf(),
        message: "no Wan model found: expected config.json with *.safetensors weights, a diffusers \
                  pipeline (model_index.json + transformer/), or high_noise_model/ + low_noise_model/"
            .into(),
    })
}

/// What `hsa inspect` found about one DiT expert.
#[derive(Debug)]
pub struct ExpertReport {
    pub role: ExpertRole,
    pub dir: PathBuf,
    pub config: std::result::Result<WanConfig, String>,
    pub format: Option<(KeyFormat, bool)>,
    pub parameters: usize,
    pub dtypes: Vec<(String, usize)>,
    /// `Ok` when every tensor matches the config; else what is wrong.
    pub weights_check: std::result::Result<(), String>,
}

/// The whole `hsa inspect` report.
#[derive(Debug)]
pub struct InspectReport {
    pub dir: PathBuf,
    pub layout: Layout,
    pub experts: Vec<ExpertReport>,
    /// Other components by name: found (path) or missing.
    pub components: Vec<(String, Option<PathBuf>)>,
}

fn inspect_expert(role: ExpertRole, dir: &Path) -> ExpertReport {
    let mut report = ExpertReport {
        role,
        dir: dir.to_path_buf(),
        config: Err(String::new()),
        format: None,
        parameters: 0,
        dtypes: vec![],
        weights_check: Ok(()),
    };
    let config = read_config(dir).map_err(|e| e.to_string());
    match WeightStore::open_dir(dir) {
        Err(e) => report.weights_check = Err(e.to_string()),
        Ok(store) => {
            report.format = Some((store.format(), store.is_comfy()));
            report.parameters = store.parameter_count();
            report.dtypes = store.dtype_histogram().into_iter().collect();
            if let Ok(cfg) = &config {
                let cfg = reconcile_with_weights(cfg.clone(), &store);
                report.weights_check = store
                    .check(&expected_tensors(&cfg))
                    .map_err(|e| e.to_string());
                report.config = Ok(cfg);
                return report;
            }
        }
    }
    report.config = config;
    report
}

/// Inspects a model directory without loading any weights into memory.
pub fn inspect(dir: &Path) -> Result<InspectReport> {
    let dits = find_dits(dir)?;
    let experts = dits
        .experts
        .iter()
        .map(|(role, d)| inspect_expert(*role, d))
        .collect();
    let candidates: &[(&str, &[&str])] = match dits.layout {
        Layout::DiffusersPipeline => &[
            ("text encoder", &["text_encoder"]),
            ("tokenizer", &["tokenizer"]),
            ("vae", &["vae"]),
            ("scheduler", &["scheduler"]),
            ("image encoder", &["image_encoder"]),
            ("image processor", &["image_processor"]),
        ],
        Layout::Original => &[
            ("text encoder", &["models_t5_umt5-xxl-enc-bf16.pth"]),
            ("tokenizer", &["google/umt5-xxl"]),
            ("vae", &["Wan2.1_VAE.pth", "Wan2.2_VAE.pth"]),
        ],
        Layout::BareDit => &[],
    };
    let components = candidates
        .iter()
        .map(|(name, paths)| {
            (
                name.to_string(),
                paths.iter().map(|p| dir.join(p)).find(|p| p.exists()),
            )
        })
        // The image components exist in Wan2.1 I2V folders only: listed when present.
        .filter(|(name, found)| found.is_some() || !name.starts_with("image "))
        .collect();
    Ok(InspectReport {
        dir: dir.to_path_buf(),
        layout: dits.layout,
        experts,
        components,
    })
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model: {}", self.dir.display())?;
        writeln!(f, "layout: {:?}", self.layout)?;
        for e in &self.experts {
            writeln!(f, "dit ({}): {}", e.role, e.dir.display())?;
            match &e.format {
                Some((fmt_, comfy)) => writeln!(
                    f,
                    "  key format: {fmt_:?}{}",
                    if *comfy { " (ComfyUI prefix)" } else { "" }
                )?,
                None => writeln!(f, "  key format: -")?,
            }
            match &e.config {
                Ok(c) => writeln!(
                    f,
                    "  config: dim {} ({} heads x {}), {} layers, ffn {}, in {} / out {} channels, text_dim {}, patch {:?}, image branch: {}",
                    c.dim(),
                    c.num_heads,
                    c.head_dim,
                    c.num_layers,
                    c.ffn_dim,
                    c.in_channels,
                    c.out_channels,
                    c.text_dim,
                    c.patch_size,
                    c.image_dim.map_or("no".to_string(), |d| format!("yes (CLIP dim {d})"))
                )?,
                Err(msg) => writeln!(f, "  config: ERROR {msg}")?,
            }
            let dtypes: Vec<String> = e.dtypes.iter().map(|(d, n)| format!("{d} x{n}")).collect();
            writeln!(
                f,
                "  parameters: {} ({:.3} B)",
                e.parameters,
                e.parameters as f64 / 1e9
            )?;
            writeln!(
                f,
                "  dtypes: {}",
                if dtypes.is_empty() {
                    "-".into()
                } else {
                    dtypes.join(", ")
                }
            )?;
            match &e.weights_check {
                Ok(()) => writeln!(f, "  weights: ok")?,
                Err(msg) => writeln!(f, "  weights: ERROR {msg}")?,
            }
        }
        writeln!(f, "experts: {}", self.experts.len())?;
        for (name, found) in &self.components {
            match found {
                Some(p) => writeln!(f, "{name}: found ({})", p.display())?,
                None => writeln!(f, "{name}: missing")?,
            }
        }
        Ok(())
    }
}

impl InspectReport {
    /// Whether every expert loaded cleanly.
    pub fn is_ok(&self) -> bool {
        self.experts
            .iter()
            .all(|e| e.config.is_ok() && e.weights_check.is_ok())
    }
}
