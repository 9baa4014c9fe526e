//! `hsa generate` on a latent-space diffusers Wan pipeline (the tiny fixture in
//! tests/fixtures/wan_pipeline): from the fixture's initial latents with every default solver,
//! the HSA sampler, and bad requests (clear error, non-zero exit, no output left behind).
//! Pixel-exact parity with diffusers is checked in hsa-pipeline's wan_pipeline_parity test;
//! written files are 8-bit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan_pipeline")
}

fn hsa(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hsa"))
        .args(args)
        .output()
        .expect("run hsa")
}

/// The fixture's request (io.json) writing PNG frames to `out`; `extra` flags replace the
/// defaults of the same name or are appended.
fn generate(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let latents = fixture().join("io.safetensors");
    let mut args: Vec<(String, Option<String>)> = [
        ("--model", model.to_str().unwrap()),
        (
            "--prompt",
            "A red fox runs across a snowy field, cinematic lighting",
        ),
        ("--negative-prompt", "blurry, static, low quality"),
        ("--frames", "5"),
        ("--size", "32x32"),
        ("--steps", "4"),
        ("--guidance", "4"),
        ("--latents", latents.to_str().unwrap()),
        ("--scale", "1"),
        ("-o", out.to_str().unwrap()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
    .collect();
    let mut i = 0;
    while i < extra.len() {
        let flag = extra[i];
        let value = extra.get(i + 1).filter(|v| !v.starts_with("--"));
        i += 1 + usize::from(value.is_some());
        let value = value.map(|v| v.to_string());
        match args.iter_mut().find(|(k, _)| k == flag) {
            Some(slot) => slot.1 = value,
            None => args.push((flag.to_string(), value)),
        }
    }
    let mut flat = vec!["generate".to_string()];
    for (k, v) in args {
        flat.push(k);
        flat.extend(v);
    }
    let flat: Vec<&str> = flat.iter().map(String::as_str).collect();
    hsa(&flat)
}

/// (width, height) of a PNG from its IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

#[test]
fn generates_from_a_diffusers_pipeline_with_every_solver() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture().join("tiny");
    for (i, extra) in [
        vec![],
        vec!["--sampler", "unipc"],
        vec!["--sampler", "fm"],
        vec!["--sampler", "hsa", "--budget", "0.5", "--steps", "8"],
    ]
    .into_iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("run{i}"));
        let r = generate(&model, &out, &extra);
        let stderr = String::from_utf8_lossy(&r.stderr);
        let stdout = String::from_utf8_lossy(&r.stdout);
        assert!(r.status.success(), "{extra:?}: {stderr}");
        assert!(stdout.contains("5 frames 32x32"), "{stdout}");
        assert!(stderr.contains("memory plan: weights"), "{stderr}");
        let want = format!("sampler {}", extra.get(1).unwrap_or(&"unipc"));
        assert!(stdout.contains(&want), "{extra:?}: {stdout}");
        for f in 0..5 {
            let frame = out.join(format!("frame_{f:04}.png"));
            assert_eq!(png_size(&frame), (32, 32), "{}", frame.display());
        }
        assert!(!out.join("frame_0005.png").exists());
    }
}

#[test]
fn bad_requests_fail_cleanly_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture().join("tiny");
    // A copy of the pipeline without its VAE.
    let no_vae = tmp.path().join("no_vae");
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "vae" {
            continue;
        }
        let to = no_vae.join(&name);
        if entry.path().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        } else {
            std::fs::create_dir_all(&no_vae).unwrap();
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
    let outputs = tmp.path().join("outputs");
    std::fs::create_dir(&outputs).unwrap();
    let cases: Vec<(&Path, Vec<&str>, &str)> = vec![
        (&model, vec!["--frames", "6"], "4k+1"),
        (&model, vec!["--size", "40x32"], "multiples of 16"),
        (
            &model,
            vec!["--sampler", "bogus"],
            "unknown sampler 'bogus'",
        ),
        (&no_vae, vec![], "missing component 'vae'"),
        (
            &model,
            vec!["--prompt-file", "/nonexistent/prompt.txt"],
            "prompt file",
        ),
    ];
    for (dir, extra, needle) in cases {
        let out = outputs.join("bad.mp4");
        let r = if extra.contains(&"--prompt-file") {
            hsa(&[
                "generate",
                "--model",
                dir.to_str().unwrap(),
                "--prompt-file",
                extra[1],
                "-o",
                out.to_str().unwrap(),
            ])
        } else {
            generate(dir, &out, &extra)
        };
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{extra:?} should fail");
        assert!(
            err.contains(needle),
            "{extra:?}: stderr lacks '{needle}': {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            std::fs::read_dir(&outputs).unwrap().count(),
            0,
            "{extra:?}: leftover files"
        );
    }
}

/// `hsa dev sample --sampler unipc` on the pipeline's DiT, from the fixture's latents and
/// diffusers' prompt embeddings, runs on diffusers' UniPC sigmas: decoded with the pipeline's
/// VAE it is diffusers' UniPC video.
#[test]
fn dev_sample_unipc_uses_the_diffusers_unipc_table() {
    use candle_core::{Device, Tensor};
    use std::collections::HashMap;
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().unwrap();
    let fx = candle_core::safetensors::load(fixture().join("io.safetensors"), &dev).unwrap();
    let inputs = tmp.path().join("in.safetensors");
    let tensors: HashMap<String, Tensor> = [
        ("noise", "latents"),
        ("encoder_hidden_states", "prompt_embeds"),
        ("negative_encoder_hidden_states", "negative_prompt_embeds"),
    ]
    .iter()
    .map(|(to, from)| (to.to_string(), fx[*from].clone()))
    .collect();
    candle_core::safetensors::save(&tensors, &inputs).unwrap();
    let out = tmp.path().join("out.safetensors");
    let tiny = fixture().join("tiny");
    let r = hsa(&[
        "dev",
        "sample",
        "--model",
        tiny.join("transformer").to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--sampler",
        "unipc",
        "--steps",
        "4",
        "--shift",
        "3",
        "--guidance",
        "4",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let latents = candle_core::safetensors::load(&out, &dev).unwrap()["latents"].clone();
    let vae =
        hsa_models::wan::WanVae::load_decoder(tiny.join("vae"), candle_core::DType::F32, &dev)
            .unwrap();
    let video = vae
        .decode(&vae.denormalize_latents(&latents).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap();
    let np = ((video / 2.0).unwrap() + 0.5)
        .unwrap()
        .clamp(0f32, 1f32)
        .unwrap()
        .permute((1, 2, 3, 0))
        .unwrap();
    let err = hsa_models::nn::max_abs_diff(&np, &fx["video_unipc"]).unwrap();
    assert!(err <= 1e-3, "max abs error {err}");
}

/// `--image` on the tiny Wan2.1 I2V fixture (tests/fixtures/wan_i2v): a video from the image,
/// and clear errors for an unreadable image or a text-to-video model.
#[test]
fn image_to_video_from_the_command_line() {
    let i2v = fixture().join("../wan_i2v");
    let model = i2v.join("wan21_i2v");
    let image = i2v.join("image_wan21_i2v.png");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("i2v.mp4");
    let base = [
        "generate",
        "--prompt",
        "a paper boat",
        "--frames",
        "5",
        "--steps",
        "2",
        "--scale",
        "1",
        "-o",
        out.to_str().unwrap(),
    ];
    let run = |model: &Path, extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(&["--model", model.to_str().unwrap()]);
        args.extend_from_slice(extra);
        hsa(&args)
    };
    let ok = run(
        &model,
        &["--image", image.to_str().unwrap(), "--size", "32x32"],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.is_file());
    std::fs::remove_file(&out).unwrap();

    let text = dir.path().join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let t2v = fixture().join("tiny");
    let cases: [(&Path, Vec<&str>, &str); 3] = [
        (&model, vec!["--image", text.to_str().unwrap()], "notes.png"),
        (&model, vec![], "--image"),
        (
            &t2v,
            vec!["--image", image.to_str().unwrap()],
            "text-to-video only",
        ),
    ];
    for (model, extra, needle) in cases {
        let bad = run(model, &extra);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            !bad.status.success() && err.contains(needle),
            "{needle}: {err}"
        );
        assert!(!out.exists(), "no output file after an error ({needle})");
    }
}
