//! File output that never leaves a half-written file behind: write a temp file beside the
//! target, then rename it into place.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::{PipelineError, Result};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A temp path in the target's folder (same filesystem, so the rename is atomic).
fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Runs `write` on a temp file beside `target` and renames it into place; on failure the temp
/// file is removed and `target` is untouched.
pub fn write_atomic(target: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(PipelineError::Io {
                path: parent.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "output folder does not exist",
                ),
            });
        }
    }
    let tmp = temp_path(target);
    match write(&tmp).and_then(|_| std::fs::rename(&tmp, target).map_err(io_err(target))) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes `bytes` to `target` atomically.
pub fn write_bytes_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(target, |tmp| {
        std::fs::write(tmp, bytes).map_err(io_err(tmp))
    })
}

/// Saves named tensors as safetensors, atomically.
pub fn save_tensors(target: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    write_atomic(target, |tmp| {
        Ok(candle_core::safetensors::save(tensors, tmp)?)
    })
}

/// Loads every tensor of a safetensors file, with errors naming the file.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(PipelineError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        });
    }
    candle_core::safetensors::load(path, device).map_err(|e| PipelineError::Input {
        path: path.to_path_buf(),
        message: format!("not a readable safetensors file: {e}"),
    })
}

/// Fetches a required tensor from a loaded file, naming the file and tensor when absent.
pub fn require<'a>(
    tensors: &'a HashMap<String, Tensor>,
    name: &str,
    path: &Path,
) -> Result<&'a Tensor> {
    tensors.get(name).ok_or_else(|| PipelineError::Input {
        path: path.to_path_buf(),
        message: format!("missing tensor '{name}' (found: {})", sorted_names(tensors)),
    })
}

fn sorted_names(tensors: &HashMap<String, Tensor>) -> String {
    let mut names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    names.sort();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let err = write_atomic(&target, |tmp| {
            std::fs::write(tmp, b"partial").unwrap();
            Err(PipelineError::Invalid("boom".into()))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_bytes_atomic(&target, b"ok").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"ok");
    }

    #[test]
    fn missing_output_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_bytes_atomic(&dir.path().join("nope/out.bin"), b"x").is_err());
    }
}
