//! Helpers shared by the pipeline tests: fixture paths, error measures and the diffusers
//! video layout.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// `tests/fixtures/<name>` of the repository (made by `tools/fixtures/*.py`).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The tensors of a fixture's `io.safetensors`.
pub fn io(name: &str) -> HashMap<String, Tensor> {
    hsa_pipeline::io::load_tensors(&fixture(name).join("io.safetensors"), &Device::Cpu).unwrap()
}

/// Largest absolute difference of two same-shaped f32 tensors.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    hsa_models::nn::max_abs_diff(a, b).unwrap()
}

/// A generated `[3, F, H, W]` video in [-1, 1] as diffusers' `output_type="np"`:
/// `[F, H, W, 3]` in [0, 1].
pub fn np_video(video: Tensor) -> Tensor {
    ((video / 2.0).unwrap() + 0.5)
        .unwrap()
        .clamp(0f32, 1f32)
        .unwrap()
        .permute((1, 2, 3, 0))
        .unwrap()
        .contiguous()
        .unwrap()
}
