//! Image to video end to end — image preprocessing, VAE (and CLIP) encoding of the condition,
//! DiT with mask channels / image tokens / per-token timesteps, Euler, VAE decode — against
//! tiny random diffusers `WanImageToVideoPipeline`s run from the same latents and image
//! (tests/fixtures/wan_i2v, made by tools/fixtures/make_wan_i2v_fixtures.py): Wan2.1 I2V
//! (CLIP branch), Wan2.2 I2V-A14B (two experts) and Wan2.2 TI2V-5B (first-frame latent).

mod common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::{max_abs, np_video};
use hsa_pipeline::generate::{generate, GenerateRequest, ModelFolder, ModelKind};
use hsa_pipeline::image_cond::{encode_image, Conditioning, ImageMode, ImagePreprocess};
use hsa_pipeline::sampling::SamplerOptions;

fn settings(case: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(common::fixture("wan_i2v").join("io.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()[case].clone()
}

/// The fixture's request for `case` (its prompts, size, steps, guidance, latents and image).
fn request(case: &str, sampler: &str) -> GenerateRequest {
    let s = settings(case);
    let get = |k: &str| s[k].as_u64().unwrap() as usize;
    GenerateRequest {
        model_dir: common::fixture("wan_i2v").join(case),
        prompt: s["prompt"].as_str().unwrap().into(),
        negative_prompt: Some(s["negative_prompt"].as_str().unwrap().into()),
        frames: Some(get("num_frames")),
        size: Some((get("width"), get("height"))),
        steps: Some(get("num_inference_steps")),
        guidance: s["guidance_scale"].as_f64(),
        guidance_2: s["guidance_scale_2"].as_f64(),
        sampler: SamplerOptions {
            sampler: sampler.into(),
            ..Default::default()
        },
        latents: Some(common::io("wan_i2v")[&format!("{case}/latents")].clone()),
        image: Some(common::fixture("wan_i2v").join(s["image"].as_str().unwrap())),
        ..Default::default()
    }
}

/// The video as diffusers' `output_type="np"`: `[F, H, W, 3]` in [0, 1].
fn run(req: &GenerateRequest) -> (Tensor, hsa_core::RunStats) {
    let out = generate(req, &Device::Cpu, &mut |_| {}, &mut |_| {}).unwrap();
    (np_video(out.video), out.stats)
}

const CASES: [(&str, ModelKind); 3] = [
    ("wan21_i2v", ModelKind::Wan21I2v),
    ("wan22_i2v_a14b", ModelKind::Wan22I2vA14b),
    ("wan22_ti2v", ModelKind::Wan22Ti2v5b),
];

#[test]
fn euler_videos_equal_diffusers() {
    let fx = common::io("wan_i2v");
    for (case, kind) in CASES {
        assert_eq!(
            ModelFolder::open(&common::fixture("wan_i2v").join(case))
                .unwrap()
                .kind,
            kind
        );
        // The images are the video size (and square for CLIP), where the official and the
        // diffusers preprocessing agree.
        for pre in [ImagePreprocess::Official, ImagePreprocess::Diffusers] {
            let mut req = request(case, "fm");
            req.image_preprocess = pre;
            let (video, _) = run(&req);
            let err = max_abs(&video, &fx[&format!("{case}/video")]);
            eprintln!("{case} {pre:?}: max abs error {err:.2e}");
            assert!(err <= 1e-3, "{case} {pre:?}: max abs error {err}");
        }
    }
}

#[test]
fn conditioning_equals_diffusers() {
    let fx = common::io("wan_i2v");
    for (case, _) in CASES {
        let req = request(case, "fm");
        let folder = ModelFolder::open(&req.model_dir).unwrap();
        let s = folder.settings(&req).unwrap();
        let path = req.image.as_ref().unwrap();
        let got =
            encode_image(&folder, path, req.image_preprocess, &s, None, &Device::Cpu).unwrap();
        let patch = folder.dit_config.patch_size;
        let want = &fx[&format!("{case}/condition")];
        let err = match &got.conditioning {
            Conditioning::Channels { tokens } => {
                let want = hsa_models::wan::patch::patchify(want, patch)
                    .unwrap()
                    .squeeze(0)
                    .unwrap();
                max_abs(tokens, &want)
            }
            Conditioning::FirstFrame { clean, first } => {
                // The image latent `[1, z, 1, h, w]` is latent frame 0.
                let want = hsa_models::wan::patch::patchify(want, patch)
                    .unwrap()
                    .squeeze(0)
                    .unwrap();
                assert_eq!(first.len(), want.dim(0).unwrap());
                max_abs(&clean.narrow(0, 0, first.len()).unwrap(), &want)
            }
        };
        assert!(err < 1e-5, "{case}: condition max abs error {err}");
        match (&got.clip, fx.get(&format!("{case}/image_embeds"))) {
            (Some(c), Some(w)) => {
                let err = max_abs(c, w);
                assert!(err < 1e-5, "{case}: CLIP features max abs error {err}");
            }
            (None, None) => {}
            (c, w) => panic!(
                "{case}: CLIP features {:?} vs fixture {:?}",
                c.is_some(),
                w.is_some()
            ),
        }
    }
}

#[test]
fn ti2v_with_hsa_keeps_the_image_tokens_frozen() {
    let mut req = request("wan22_ti2v", "hsa");
    req.steps = Some(8);
    req.sampler.budget = Some("0.5".into());
    let folder = ModelFolder::open(&req.model_dir).unwrap();
    assert_eq!(folder.image_mode, Some(ImageMode::FirstFrame));
    let (video, stats) = run(&req);
    assert_eq!(video.dims(), &[5, 32, 64, 3]);
    let map = stats.group_map.expect("hsa reports a group map");
    let per_frame = map.height * map.width;
    // Frame 0 is the image: no group (conditioning); every other token is in a group.
    assert!(map.groups[..per_frame].iter().all(Option::is_none));
    assert!(map.groups[per_frame..].iter().all(Option::is_some));
    assert!(stats.token_step_fraction < 0.75);
    // The decoded first frame is the image's latent decoded, as with the dense sampler.
    let (dense, _) = run(&request("wan22_ti2v", "fm"));
    let first = |v: &Tensor| v.narrow(0, 0, 1).unwrap();
    let err = max_abs(&first(&video), &first(&dense));
    assert!(
        err < 0.05,
        "first frame differs from the dense run by {err}"
    );
}

#[test]
fn image_requests_are_checked() {
    type Edit = Box<dyn Fn(&mut GenerateRequest)>;
    let t2v = common::fixture("wan_i2v").join("../wan_pipeline/tiny");
    let not_an_image = common::fixture("wan_i2v").join("io.json");
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|r| r.image = None), "--image"),
        (
            Box::new(move |r| r.model_dir = t2v.clone()),
            "text-to-video only",
        ),
        (
            Box::new(move |r| r.image = Some(not_an_image.clone())),
            "io.json",
        ),
        (
            Box::new(|r| r.image = Some(PathBuf::from("/nonexistent/first.png"))),
            "first.png",
        ),
    ];
    for (edit, needle) in cases {
        let mut req = request("wan21_i2v", "fm");
        edit(&mut req);
        let err = generate(&req, &Device::Cpu, &mut |_| {}, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

/// TI2V-5B is also a text-to-video model: without --image the folder runs as diffusers'
/// `WanPipeline(expand_timesteps=True)` does, and its sizes are multiples of 32 (VAE x16, patch 2).
#[test]
fn ti2v_text_to_video_equals_diffusers_and_checks_its_size() {
    let mut req = request("wan22_ti2v", "fm");
    req.image = None;
    let folder = ModelFolder::open(&req.model_dir).unwrap();
    let d = &folder.defaults;
    assert_eq!((d.frames, d.fps), (121, 24.0));
    let (video, _) = run(&req);
    let err = max_abs(&video, &common::io("wan_i2v")["wan22_ti2v/video_t2v"]);
    assert!(err <= 1e-3, "max abs error {err}");
    req.size = Some((48, 32));
    let err = generate(&req, &Device::Cpu, &mut |_| {}, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 32"), "{err}");
}

/// The memory plan of an image-to-video run counts the image encoders (they run before the DiT
/// loads): at least the CLIP tower's weights as stored.
#[test]
fn memory_plan_counts_the_image_encoders() {
    let req = request("wan21_i2v", "fm");
    let folder = ModelFolder::open(&req.model_dir).unwrap();
    let s = folder.settings(&req).unwrap();
    let with = folder.memory_plan(&s, "fm", None, true).unwrap();
    let without = folder.memory_plan(&s, "fm", None, false).unwrap();
    assert_eq!(without.image_encode, 0);
    let clip_file = std::fs::metadata(req.model_dir.join("image_encoder/model.safetensors"))
        .unwrap()
        .len();
    let mut no_clip = folder.clone();
    no_clip.image_encoder = None;
    let vae_only = no_clip.memory_plan(&s, "fm", None, true).unwrap();
    let clip_part = with.image_encode - vae_only.image_encode;
    assert!(
        vae_only.image_encode > 0 && clip_part >= clip_file * 8 / 10,
        "CLIP part {clip_part} < CLIP weights {clip_file}"
    );
    assert!(with.peak() >= with.image_encode);
    assert!(with.to_string().contains("image encoding"));
}
