//! Checkpoints addressed by canonical tensor names: memory-mapped safetensors, and PyTorch
//! `torch.save` state dicts (`.pth`, as the official Wan checkpoints ship their VAE and umT5).
//!
//! [`TensorStore`] is the machinery the model-specific loaders ([`crate::wan::WeightStore`],
//! [`crate::umt5::UMT5Weights`]) share: finding the weight files of a folder, mapping them,
//! routing each canonical name to the file and key it is stored under, and checking the stored
//! set against the tensors a config expects. Detecting a key layout and choosing the canonical
//! names is left to those loaders.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::{ModelError, Result};

/// Canonical name -> (file index, key as stored).
pub type Routing = BTreeMap<String, (usize, String)>;

/// The weight files of one model in a folder: a single `diffusion_pytorch_model.safetensors`,
/// the shards named by a `*.safetensors.index.json`, or else every `*.safetensors` file.
pub fn find_weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |e| ModelError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if let Some(index) = entries
        .iter()
        .find(|p| name(p).ends_with(".safetensors.index.json"))
    {
        let text = std::fs::read_to_string(index).map_err(|e| ModelError::Io {
            path: index.clone(),
            source: e,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Config {
                path: index.clone(),
                message: format!("malformed index JSON: {e}"),
            })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Config {
                path: index.clone(),
                message: "index has no 'weight_map' object".into(),
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("diffusion_pytorch_model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let all: Vec<PathBuf> = entries
        .into_iter()
        .filter(|p| name(p).ends_with(".safetensors"))
        .collect();
    if all.is_empty() {
        return Err(ModelError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    Ok(all)
}

/// Renames a per-block key: `{from}{N}.{a}{rest}` becomes `{to}{N}.{b}{rest}` for the first
/// `(a, b)` of `table` that the key continues with; `None` when no row matches.
pub fn rename_block_key<'t>(
    key: &str,
    from: &str,
    to: &str,
    table: impl IntoIterator<Item = (&'t str, &'t str)>,
) -> Option<String> {
    let (n, tail) = key.strip_prefix(from)?.split_once('.')?;
    table.into_iter().find_map(|(a, b)| {
        tail.strip_prefix(a)
            .map(|rest| format!("{to}{n}.{b}{rest}"))
    })
}

/// One weight file: a memory-mapped safetensors file, or a `torch.save` zip archive (read
/// tensor by tensor; PyTorch's legacy non-zip format is not supported).
enum Source {
    Safetensors(MmapedSafetensors),
    Pth(PthTensors),
}

impl Source {
    /// Opens by content: a zip archive (`PK\x03\x04`) is a PyTorch checkpoint, anything else
    /// is read as safetensors.
    fn open(path: &Path) -> Result<Self> {
        let mut magic = [0u8; 4];
        let is_zip = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && magic == *b"PK\x03\x04";
        if magic == [0x80, 0x02, 0x8a, 0x0a] {
            // Pickle protocol 2 followed by torch's magic number: the legacy (pre-1.6) format.
            return Err(ModelError::Pickle {
                path: path.to_path_buf(),
                message: "legacy (non-zip) torch.save format, not supported; re-save it with a current PyTorch: torch.save(torch.load(p), p)".into(),
            });
        }
        if is_zip {
            let pth = PthTensors::new(path, None).map_err(|e| ModelError::Pickle {
                path: path.to_path_buf(),
                message: root_message(&e),
            })?;
            return Ok(Self::Pth(pth));
        }
        // SAFETY: the file is mapped read-only; like every mmap-based loader we rely on no
        // other process truncating it while it is mapped.
        let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            message: root_message(&e),
        })?;
        Ok(Self::Safetensors(st))
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Self::Safetensors(st) => st.tensors().into_iter().map(|(k, _)| k).collect(),
            Self::Pth(p) => {
                let mut keys: Vec<String> = p.tensor_infos().keys().cloned().collect();
                keys.sort();
                keys
            }
        }
    }

    fn info(&self, key: &str) -> Option<(Vec<usize>, DType)> {
        match self {
            Self::Safetensors(st) => {
                let view = st.get(key).ok()?;
                let dtype = DType::try_from(view.dtype()).ok().unwrap_or(DType::U8);
                Some((view.shape().to_vec(), dtype))
            }
            Self::Pth(p) => p
                .tensor_infos()
                .get(key)
                .map(|t| (t.layout.dims().to_vec(), t.dtype)),
        }
    }

    fn load(&self, key: &str, device: &Device, path: &Path) -> Result<Tensor> {
        match self {
            Self::Safetensors(st) => st.load(key, device).map_err(|e| ModelError::Safetensors {
                path: path.to_path_buf(),
                message: root_message(&e),
            }),
            Self::Pth(p) => {
                let err = |message: String| ModelError::Pickle {
                    path: path.to_path_buf(),
                    message,
                };
                let t = p
                    .get(key)
                    .map_err(|e| err(root_message(&e)))?
                    .ok_or_else(|| err(format!("no tensor {key}")))?;
                Ok(t.to_device(device)?)
            }
        }
    }
}

/// Weight files (safetensors or `.pth`) with every tensor routed under a canonical name.
pub struct TensorStore {
    files: Vec<Source>,
    paths: Vec<PathBuf>,
    routing: Routing,
}

impl std::fmt::Debug for TensorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorStore")
            .field("paths", &self.paths)
            .field("tensors", &self.routing.len())
            .finish()
    }
}

impl TensorStore {
    /// Opens `paths` (safetensors are memory-mapped, `.pth` archives indexed), then hands
    /// every stored key with its file index, in file order, to `route`, which returns the
    /// canonical routing plus whatever it learned about the layout (`T`). A missing file is
    /// [`ModelError::Io`]; a truncated or corrupt one is [`ModelError::Safetensors`] or
    /// [`ModelError::Pickle`] naming its path.
    pub fn open<T>(
        paths: &[PathBuf],
        route: impl FnOnce(Vec<(usize, String)>) -> Result<(Routing, T)>,
    ) -> Result<(Self, T)> {
        let mut files = Vec::with_capacity(paths.len());
        let mut raw: Vec<(usize, String)> = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            if !p.is_file() {
                return Err(ModelError::Io {
                    path: p.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
                });
            }
            let source = Source::open(p)?;
            raw.extend(source.keys().into_iter().map(|k| (i, k)));
            files.push(source);
        }
        let (routing, layout) = route(raw)?;
        let store = Self {
            files,
            paths: paths.to_vec(),
            routing,
        };
        Ok((store, layout))
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The file, or the files and their folder, for error messages.
    pub fn describe(&self) -> String {
        match self.paths.as_slice() {
            [one] => one.display().to_string(),
            many => format!(
                "{} files in {}",
                many.len(),
                many.first()
                    .and_then(|p| p.parent())
                    .unwrap_or(Path::new("."))
                    .display()
            ),
        }
    }

    /// [`ModelError::MissingTensor`] for `name` in these files.
    pub fn missing(&self, name: String, expected: Vec<usize>) -> ModelError {
        ModelError::MissingTensor {
            name,
            expected,
            source_desc: self.describe(),
        }
    }

    /// Whether a tensor with this canonical name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }

    /// The key a canonical name is stored under.
    pub fn stored_key(&self, name: &str) -> Option<&str> {
        self.routing.get(name).map(|(_, k)| k.as_str())
    }

    /// Shape and dtype of a tensor by canonical name.
    pub fn info(&self, name: &str) -> Option<(Vec<usize>, DType)> {
        let (i, key) = self.routing.get(name)?;
        self.files[*i].info(key)
    }

    /// Counts of stored dtypes, for reporting (`hsa inspect`).
    pub fn dtype_histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        for (i, key) in self.routing.values() {
            if let Some((_, dtype)) = self.files[*i].info(key) {
                *h.entry(format!("{dtype:?}").to_lowercase()).or_insert(0) += 1;
            }
        }
        h
    }

    /// Total number of stored parameters.
    pub fn parameter_count(&self) -> usize {
        self.routing
            .values()
            .filter_map(|(i, key)| self.files[*i].info(key))
            .map(|(shape, _)| shape.iter().product::<usize>())
            .sum()
    }

    /// Checks the stored tensors against `expected` (canonical names): every expected tensor
    /// present with the right shape and a float dtype, nothing unexpected except the names
    /// `ignored` accepts. Errors name tensors by their canonical name.
    pub fn check(
        &self,
        expected: &[(String, Vec<usize>)],
        ignored: impl Fn(&str) -> bool,
    ) -> Result<()> {
        self.check_named(expected, ignored, str::to_string)
    }

    /// [`Self::check`], with errors naming a tensor by `display(canonical name)`.
    pub fn check_named(
        &self,
        expected: &[(String, Vec<usize>)],
        ignored: impl Fn(&str) -> bool,
        display: impl Fn(&str) -> String,
    ) -> Result<()> {
        let want: HashMap<&str, &Vec<usize>> =
            expected.iter().map(|(n, s)| (n.as_str(), s)).collect();
        for (name, shape) in expected {
            let Some((found, dtype)) = self.info(name) else {
                return Err(self.missing(display(name), shape.clone()));
            };
            if &found != shape {
                return Err(ModelError::ShapeMismatch {
                    name: display(name),
                    expected: shape.clone(),
                    found,
                });
            }
            if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
                return Err(ModelError::UnsupportedDtype {
                    name: display(name),
                    dtype: format!("{dtype:?}"),
                });
            }
        }
        if let Some(extra) = self
            .routing
            .keys()
            .find(|k| !want.contains_key(k.as_str()) && !ignored(k))
        {
            return Err(ModelError::UnexpectedTensor {
                name: display(extra),
                shape: self.info(extra).map(|(s, _)| s).unwrap_or_default(),
                source_desc: self.describe(),
            });
        }
        Ok(())
    }

    /// Loads a tensor by canonical name, cast to `dtype`.
    pub fn get(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (i, key) = self
            .routing
            .get(name)
            .ok_or_else(|| self.missing(name.to_string(), vec![]))?;
        let t = self.files[*i].load(key, device, &self.paths[*i])?;
        Ok(t.to_dtype(dtype)?)
    }
}

/// Reads a text file (a config), with an I/O error naming the path.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// candle errors wrap the interesting message in context layers; keep the innermost one.
pub fn root_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithPath { inner, .. } => root_message(inner),
        candle_core::Error::WithBacktrace { inner, .. } => root_message(inner),
        candle_core::Error::Context { inner, .. } => root_message(inner),
        other => other.to_string(),
    }
}
