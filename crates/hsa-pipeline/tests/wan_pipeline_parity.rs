//! `generate` on a latent-space Wan pipeline end to end — umT5 text encoder, DiT, sampler, Wan
//! VAE decode — against a tiny random diffusers `WanPipeline` run from the same initial
//! latents (tests/fixtures/wan_pipeline, made by tools/fixtures/make_wan_pipeline_fixtures.py).

mod common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::{max_abs, np_video};
use hsa_pipeline::generate::{generate, GenerateRequest, ModelFolder, Stage};
use hsa_pipeline::sampling::SamplerOptions;

const PROMPT: &str = "A red fox runs across a snowy field, cinematic lighting";
const NEGATIVE: &str = "blurry, static, low quality";

/// The fixture's settings (io.json): 32x32, 5 frames, 4 steps, guidance 4, its latents.
fn request(sampler: &str) -> GenerateRequest {
    GenerateRequest {
        model_dir: common::fixture("wan_pipeline").join("tiny"),
        prompt: PROMPT.into(),
        negative_prompt: Some(NEGATIVE.into()),
        frames: Some(5),
        size: Some((32, 32)),
        steps: Some(4),
        guidance: Some(4.0),
        sampler: SamplerOptions {
            sampler: sampler.into(),
            ..Default::default()
        },
        latents: Some(common::io("wan_pipeline")["latents"].clone()),
        ..Default::default()
    }
}

/// Generates and returns the video as diffusers' `output_type="np"`: `[F, H, W, 3]` in [0, 1].
fn run(req: &GenerateRequest) -> (Tensor, Vec<Stage>) {
    let mut stages = Vec::new();
    let out = generate(req, &Device::Cpu, &mut |s| stages.push(s), &mut |_| {}).unwrap();
    (np_video(out.video), stages)
}

#[test]
fn unipc_video_equals_diffusers() {
    let want = common::io("wan_pipeline")["video_unipc"].clone();
    // Explicit unipc, and the default sampler (the folder's UniPCMultistepScheduler).
    for sampler in ["unipc", ""] {
        let (video, stages) = run(&request(sampler));
        let err = max_abs(&video, &want);
        eprintln!("unipc ({sampler:?}): max abs error {err:.2e}");
        assert!(err <= 1e-3, "sampler {sampler:?}: max abs error {err}");
        // Stages in order, decoding reported per latent frame (2 latent frames).
        assert!(matches!(stages[0], Stage::Plan(_)));
        assert_eq!(stages[1], Stage::TextEncoding);
        let decoded: Vec<_> = stages
            .iter()
            .filter_map(|s| match s {
                Stage::Decoding { done, total } => Some((*done, *total)),
                _ => None,
            })
            .collect();
        assert_eq!(decoded, vec![(0, 2), (1, 2), (2, 2)]);
    }
}

#[test]
fn euler_video_equals_diffusers() {
    // `fm` runs diffusers' FlowMatchEulerDiscreteScheduler(shift) table at the model's shift.
    let (video, _) = run(&request("fm"));
    let err = max_abs(&video, &common::io("wan_pipeline")["video_euler"]);
    eprintln!("fm: max abs error {err:.2e}");
    assert!(err <= 1e-3, "max abs error {err}");
}

#[test]
fn prompt_embeddings_equal_diffusers() {
    let folder = ModelFolder::open(&common::fixture("wan_pipeline").join("tiny")).unwrap();
    let e = folder
        .encode_prompts(&[PROMPT], Some(NEGATIVE), true, None, &Device::Cpu)
        .unwrap()
        .remove(0);
    let fx = common::io("wan_pipeline");
    let err_c = max_abs(&e.cond, &fx["prompt_embeds"]);
    let err_u = max_abs(e.uncond.as_ref().unwrap(), &fx["negative_prompt_embeds"]);
    assert!(err_c < 1e-4 && err_u < 1e-4, "{err_c} {err_u}");
}

#[test]
fn hsa_runs_on_the_pipeline() {
    let mut req = request("hsa");
    req.steps = Some(8);
    req.sampler.budget = Some("0.5".into());
    let out = generate(&req, &Device::Cpu, &mut |_| {}, &mut |_| {}).unwrap();
    assert_eq!(out.video.dims(), &[3, 5, 32, 32]);
    assert!(out.stats.token_step_fraction < 1.0);
    assert!(out.plan.kv_cache > 0);
}

#[test]
fn bad_requests_are_refused_before_loading() {
    type Edit = Box<dyn Fn(&mut GenerateRequest)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|r| r.frames = Some(6)), "4k+1"),
        (Box::new(|r| r.size = Some((40, 32))), "multiples of 16"),
        (
            Box::new(|r| r.sampler.sampler = "bogus".into()),
            "unknown sampler",
        ),
        (
            Box::new(|r| r.frames = Some(9)),
            "initial latents have shape",
        ),
        (Box::new(|r| r.guidance_2 = Some(2.0)), "two-expert"),
    ];
    for (edit, needle) in cases {
        let mut req = request("unipc");
        edit(&mut req);
        let err = generate(&req, &Device::Cpu, &mut |_| {}, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

/// A copy of the tiny pipeline as a Wan2.2 A14B folder: `transformer_2/` (the same DiT as
/// `transformer/`) and `boundary_ratio` in model_index.json.
fn two_expert_copy(dir: &std::path::Path) -> PathBuf {
    let src = common::fixture("wan_pipeline").join("tiny");
    let dst = dir.join("a14b");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            let to = dst.join(entry.file_name());
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        }
    }
    let t2 = dst.join("transformer_2");
    std::fs::create_dir_all(&t2).unwrap();
    for f in std::fs::read_dir(src.join("transformer")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), t2.join(f.file_name())).unwrap();
    }
    let index = std::fs::read_to_string(src.join("model_index.json")).unwrap();
    let index = index.replace("\"boundary_ratio\": null", "\"boundary_ratio\": 0.9");
    std::fs::write(dst.join("model_index.json"), index).unwrap();
    dst
}

#[test]
fn two_experts_switch_at_the_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_expert_copy(tmp.path());
    let folder = ModelFolder::open(&dir).unwrap();
    assert_eq!(folder.kind, hsa_pipeline::generate::ModelKind::Wan22A14b);
    assert_eq!(folder.defaults.boundary_ratio, Some(0.9));
    assert_eq!(
        (folder.defaults.steps, folder.defaults.guidance_2),
        (40, Some(3.0))
    );
    // Identical experts and one guidance scale: the single-DiT video.
    let mut req = request("unipc");
    req.model_dir = dir.clone();
    let (video, _) = run(&req);
    let err = max_abs(&video, &common::io("wan_pipeline")["video_unipc"]);
    assert!(err <= 1e-3, "max abs error {err}");
    // A second guidance scale below the boundary changes the clip.
    req.guidance_2 = Some(1.5);
    let (other, _) = run(&req);
    assert!(max_abs(&other, &video) > 1e-3);
    // HSA across the expert switch (a forced dense step for the low-noise expert's cache).
    req.sampler.sampler = "hsa".into();
    req.sampler.budget = Some("0.5".into());
    req.steps = Some(8);
    let out = generate(&req, &Device::Cpu, &mut |_| {}, &mut |_| {}).unwrap();
    assert_eq!(out.video.dims(), &[3, 5, 32, 32]);
    assert_eq!(out.plan.weights % 2, 0);
}

#[test]
fn runs_that_do_not_fit_are_refused_with_advice() {
    let Some(available) = hsa_pipeline::memory::available_bytes() else {
        return;
    };
    let mut req = request("hsa");
    req.latents = None;
    req.steps = Some(8);
    req.sampler.budget = Some("0.5".into());
    req.frames = Some(81);
    // Grow the clip until its plan exceeds this machine's available memory.
    let mut side = 256;
    loop {
        req.size = Some((side, side));
        let plan = hsa_pipeline::generate::memory_plan(&req).unwrap();
        if plan.peak() > available {
            break;
        }
        side *= 2;
    }
    let err = generate(&req, &Device::Cpu, &mut |_| {}, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GiB is available") && err.contains("--size"),
        "{err}"
    );
}
