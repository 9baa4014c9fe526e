//! `generate` on the original Wan layout of the official repositories — DiT config.json +
//! safetensors with original names, `models_t5_umt5-xxl-enc-bf16.pth`, `google/umt5-xxl/`,
//! `Wan2.1_VAE.pth` without a config — against the diffusers `WanPipeline` holding the same
//! weights (tests/fixtures/wan_original, made by tools/fixtures/make_wan_original_fixtures.py).

mod common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::{max_abs, np_video};
use hsa_pipeline::generate::{generate, GenerateRequest, ModelFolder, ModelKind};
use hsa_pipeline::sampling::SamplerOptions;

fn request(dir: PathBuf, sampler: &str) -> GenerateRequest {
    let io = hsa_pipeline::io::load_tensors(
        &common::fixture("wan_original").join("io.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    GenerateRequest {
        model_dir: dir,
        prompt: "a small red kite over a green hill".into(),
        negative_prompt: Some("blurry, static".into()),
        frames: Some(5),
        size: Some((32, 32)),
        steps: Some(4),
        guidance: Some(4.0),
        shift: Some(3.0),
        sampler: SamplerOptions {
            sampler: sampler.into(),
            ..Default::default()
        },
        latents: Some(io["latents"].clone()),
        ..Default::default()
    }
}

fn video(req: &GenerateRequest) -> Tensor {
    let out = generate(req, &Device::Cpu, &mut |_| {}, &mut |_| {}).unwrap();
    np_video(out.video)
}

#[test]
fn original_layout_videos_equal_diffusers() {
    let folder = ModelFolder::open(&common::fixture("wan_original")).unwrap();
    assert_eq!(folder.kind, ModelKind::Wan21T2v);
    // The VAE config is read off the .pth: the fixture's tiny widths, the official statistics.
    let (_, vae) = folder.vae.as_ref().unwrap();
    assert_eq!(
        (
            vae.z_dim,
            vae.base_dim,
            vae.num_res_blocks,
            vae.dim_mult.clone()
        ),
        (16, 4, 1, vec![1, 2, 2, 2])
    );
    let io = hsa_pipeline::io::load_tensors(
        &common::fixture("wan_original").join("io.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for (sampler, key) in [("unipc", "video_unipc"), ("fm", "video_euler")] {
        let err = max_abs(
            &video(&request(common::fixture("wan_original"), sampler)),
            &io[key],
        );
        eprintln!("{sampler}: max abs error {err:.2e}");
        assert!(err <= 1e-3, "{sampler}: max abs error {err}");
    }
}

#[test]
fn damaged_or_missing_original_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wan");
    std::fs::create_dir_all(dir.join("google/umt5-xxl")).unwrap();
    for f in [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "models_t5_umt5-xxl-enc-bf16.pth",
        "Wan2.1_VAE.pth",
        "google/umt5-xxl/tokenizer.json",
    ] {
        std::fs::copy(common::fixture("wan_original").join(f), dir.join(f)).unwrap();
    }
    // A truncated VAE archive: the error names the file.
    let vae = std::fs::read(dir.join("Wan2.1_VAE.pth")).unwrap();
    std::fs::write(dir.join("Wan2.1_VAE.pth"), &vae[..vae.len() / 2]).unwrap();
    let err = ModelFolder::open(&dir).unwrap_err().to_string();
    assert!(err.contains("Wan2.1_VAE.pth"), "{err}");
    // No text encoder at all.
    std::fs::write(dir.join("Wan2.1_VAE.pth"), &vae).unwrap();
    std::fs::remove_file(dir.join("models_t5_umt5-xxl-enc-bf16.pth")).unwrap();
    let err = ModelFolder::open(&dir).unwrap_err().to_string();
    assert!(err.contains("models_t5_"), "{err}");
}
