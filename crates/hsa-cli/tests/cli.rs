//! The `hsa` binary end to end: outputs checked against the diffusers fixtures, bad input gives
//! a clear error, a non-zero exit and no output file.

use std::path::PathBuf;
use std::process::Command;

use candle_core::{Device, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan_dit")
}

fn hsa(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hsa"))
        .args(args)
        .output()
        .expect("run hsa")
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
    let num = (a - b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    num / b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
}

#[test]
fn dit_forward_matches_diffusers_dense_and_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let case = fixtures().join("grid");
    let io = candle_core::safetensors::load(case.join("io.safetensors"), &Device::Cpu).unwrap();
    let out = tmp.path().join("v.safetensors");
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let r = hsa(&[
        "dev",
        "dit-forward",
        "--model",
        &s(&case),
        "--inputs",
        &s(&case.join("io.safetensors")),
        "--out",
        &s(&out),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert!(rel_l2(&v["velocity"], &io["velocity"]) <= 1e-5);

    // Partial: tokens 0, 7, 44 of 45 active.
    let active = tmp.path().join("active.safetensors");
    let ids = Tensor::new(&[0i64, 7, 44], &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("active".to_string(), ids)]),
        &active,
    )
    .unwrap();
    let out2 = tmp.path().join("v2.safetensors");
    let r = hsa(&[
        "dev",
        "dit-forward",
        "--model",
        &s(&case),
        "--inputs",
        &s(&case.join("io.safetensors")),
        "--out",
        &s(&out2),
        "--active",
        &s(&active),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v2 = candle_core::safetensors::load(&out2, &Device::Cpu).unwrap()["velocity"].clone();
    // Token 7 is (frame 0, row 1, col 2): pixels rows 2..4, cols 4..6 of frame 0.
    let patch = |t: &Tensor| {
        t.narrow(2, 0, 1)
            .unwrap()
            .narrow(3, 2, 2)
            .unwrap()
            .narrow(4, 4, 2)
            .unwrap()
    };
    assert!(rel_l2(&patch(&v2), &patch(&io["velocity"])) <= 1e-5);
    // Token 1 (inactive) stays zero.
    let inactive = v2
        .narrow(2, 0, 1)
        .unwrap()
        .narrow(3, 0, 2)
        .unwrap()
        .narrow(4, 2, 2)
        .unwrap();
    assert_eq!(
        inactive
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}

#[test]
fn bad_inputs_fail_cleanly_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let case = fixtures().join("t2v");
    let out = tmp.path().join("v.safetensors");
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![s(&case), s(&tmp.path().join("missing.safetensors"))],
            "missing.safetensors",
        ),
        (
            vec![
                s(&tmp.path().join("no_model")),
                s(&case.join("io.safetensors")),
            ],
            "config.json",
        ),
        // The grid fixture's inputs do not fit the t2v model (4 channels, not 16).
        (
            vec![s(&case), s(&fixtures().join("grid/io.safetensors"))],
            "hidden_states must be [B, 16, F, H, W]",
        ),
    ];
    for (args, needle) in cases {
        let r = hsa(&[
            "dev",
            "dit-forward",
            "--model",
            &args[0],
            "--inputs",
            &args[1],
            "--out",
            &s(&out),
        ]);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "should fail: {args:?}");
        assert!(stderr.contains(needle), "stderr lacks '{needle}': {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists());
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "leftover files"
        );
    }
}

#[test]
fn a_bad_training_configuration_fails_before_its_work_folder_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("run");
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "--single-mover-fraction",
                "0.5",
                "--multi-mover-fraction",
                "0.75",
            ],
            "single-mover fraction 0.5 and multi-mover fraction 0.75 add up to more than 1",
        ),
        (
            &["--displacement-weight", "1", "--displacement-layer", "9"],
            "displacement layer 9 must name one of the 6 blocks",
        ),
        (&["--displacement-layer", "2"], "without a motion head"),
        (
            &["--single-mover-fraction", "1.5"],
            "single-mover fraction 1.5 must lie in [0, 1]",
        ),
        (
            &["--top-noise-fraction", "2"],
            "top-noise fraction 2 must lie in [0, 1]",
        ),
        (
            &["--first-frame-offset", "3"],
            "first-frame offset 3 must lie in [-2, 2]",
        ),
        (
            &["--patch", "3,4"],
            "expected three positive integers T,H,W",
        ),
        (&["--patch", "2,4,4"], "not divisible by patch [2, 4, 4]"),
    ];
    for (extra, needle) in cases {
        let mut args = vec![
            "train",
            "shapes",
            "--work",
            work.to_str().unwrap(),
            "--steps",
            "1",
        ];
        args.extend_from_slice(extra);
        let r = hsa(&args);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "should fail: {extra:?}");
        assert!(stderr.contains(needle), "stderr lacks '{needle}': {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!work.exists(), "{extra:?} left a work folder");
    }
}

#[test]
fn inspect_reports_format_and_problems() {
    // 28328 = embeddings 13320 + 2 blocks x 6680 + head 1648 for the tiny t2v config.
    let r = hsa(&["inspect", fixtures().join("t2v_sharded").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success());
    assert!(
        stdout.contains("key format: Diffusers")
            && stdout.contains("parameters: 28328")
            && stdout.contains("weights: ok"),
        "{stdout}"
    );
    let r = hsa(&["inspect", "/nonexistent/model"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("model directory not found"));
}

#[test]
fn dev_sample_runs_every_sampler_and_fm_matches_diffusers() {
    let tmp = tempfile::tempdir().unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let model = fixtures().join("t2v");
    let inputs = fixtures().join("euler_cfg.safetensors");
    let fx = candle_core::safetensors::load(&inputs, &Device::Cpu).unwrap();
    let base = [
        "dev",
        "sample",
        "--steps",
        "6",
        "--shift",
        "3",
        "--guidance",
        "5",
    ];
    let run = |extra: &[&str], out: &std::path::Path| {
        let mut args: Vec<String> = base.iter().map(|a| a.to_string()).collect();
        args.extend([
            "--model".into(),
            s(&model),
            "--inputs".into(),
            s(&inputs),
            "--out".into(),
            s(out),
        ]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        hsa(&refs)
    };
    let fm = tmp.path().join("fm.safetensors");
    let r = run(&["--sampler", "fm"], &fm);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let lat = candle_core::safetensors::load(&fm, &Device::Cpu).unwrap()["latents"].clone();
    assert!(rel_l2(&lat, &fx["latents_cfg"]) <= 1e-4);

    let hsa_out = tmp.path().join("hsa.safetensors");
    let (stats, map) = (tmp.path().join("stats.json"), tmp.path().join("map.png"));
    let r = run(
        &[
            "--sampler",
            "hsa",
            "--groups",
            "0.5:1,0.5:2",
            "--warmup",
            "2",
            "--stats",
            &s(&stats),
            "--group-map",
            &s(&map),
        ],
        &hsa_out,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        stdout.contains("token-step fraction") && stdout.contains("NFE"),
        "{stdout}"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    for key in [
        "nfe",
        "token_step_fraction",
        "wall_seconds",
        "steps",
        "group_map",
        "peak_rss_bytes",
    ] {
        assert!(json.get(key).is_some(), "stats lack {key}");
    }
    // W = 2 dense steps, then 4 steps where half the tokens run every step, half every other.
    let f = json["token_step_fraction"].as_f64().unwrap();
    assert!(
        (f - (2.0 + 4.0 * 0.5 + 2.0 * 0.5) / 6.0).abs() < 0.02,
        "{f}"
    );
    assert_eq!(json["steps"].as_array().unwrap().len(), 6);
    assert!(json["steps"][0]["sigma"].as_f64().unwrap() > 0.99);
    assert!(std::fs::read(&map).unwrap().starts_with(b"\x89PNG"));

    // A group map exists only for token-level samplers; asking FM for one names the problem
    // before any work, so no latents are written.
    let (fm_map, refused) = (
        tmp.path().join("fm_map.png"),
        tmp.path().join("refused.safetensors"),
    );
    let r = run(&["--sampler", "fm", "--group-map", &s(&fm_map)], &refused);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("needs a token-level sampler") && err.contains("fm"),
        "{err}"
    );
    assert!(!fm_map.exists() && !refused.exists());

    for extra in [
        vec!["--sampler", "ras", "--budget", "0.6"],
        vec!["--sampler", "teacache", "--teacache-threshold", "100"],
    ] {
        let out = tmp.path().join("other.safetensors");
        let r = run(&extra, &out);
        assert!(
            r.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }

    // Bad settings: clear error, non-zero exit, no output.
    let bad = tmp.path().join("bad.safetensors");
    for (extra, needle) in [
        (vec!["--sampler", "teacache"], "teacache-threshold"),
        (
            vec!["--sampler", "hsa", "--budget", "0.05"],
            "below the minimum",
        ),
        (vec!["--sampler", "hsa", "--groups", "0.5:1,0.6:2"], "sum"),
        (vec!["--sampler", "dpm"], "unknown sampler"),
    ] {
        let r = run(&extra, &bad);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.contains(needle),
            "{extra:?}: {err}"
        );
        assert!(!bad.exists());
    }
}

#[test]
fn teacache_calibration_fits_the_recorded_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cal.json");
    let inputs = fixtures().join("euler_cfg.safetensors");
    let model = fixtures().join("t2v");
    let r = hsa(&[
        "calibrate",
        "teacache",
        "--model",
        model.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        inputs.to_str().unwrap(),
        "--steps",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let cal: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let coeffs: Vec<f64> = cal["coefficients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_f64().unwrap())
        .collect();
    assert_eq!(coeffs.len(), 5);
    let pairs: Vec<(f64, f64)> = serde_json::from_value(cal["pairs"].clone()).unwrap();
    // Two inputs x two branches x (8 - 1) step pairs.
    assert_eq!(pairs.len(), 2 * 2 * 7);
    // Least squares: nudging any coefficient cannot lower the squared error.
    let sse = |c: &[f64]| -> f64 {
        pairs
            .iter()
            .map(|(x, y)| (c.iter().fold(0.0, |acc, k| acc * x + k) - y).powi(2))
            .sum()
    };
    let best = sse(&coeffs);
    let rms = cal["rms_residual"].as_f64().unwrap();
    assert!((rms - (best / pairs.len() as f64).sqrt()).abs() < 1e-9);
    for k in 0..5 {
        for sign in [-1.0, 1.0] {
            let mut c = coeffs.clone();
            c[k] += sign * (1e-3 * c[k].abs() + 1e-6);
            assert!(
                sse(&c) >= best * (1.0 - 1e-12),
                "coefficient {k} is not at the optimum"
            );
        }
    }
}

/// A model trained with position channels generates through `hsa generate` (the channels
/// are appended at every step, also for HSA's partial steps); a folder whose DiT takes more
/// channels than it declares is refused with the reason.
#[test]
fn a_model_with_position_channels_trains_and_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let (work, model) = (tmp.path().join("run"), tmp.path().join("model"));
    let (work, model) = (work.to_str().unwrap(), model.to_str().unwrap());
    let r = hsa(&[
        "train",
        "shapes",
        "--work",
        work,
        "--steps",
        "2",
        "--batch",
        "2",
        "--dim",
        "24",
        "--heads",
        "2",
        "--layers",
        "1",
        "--ffn",
        "32",
        "--frames",
        "3",
        "--size",
        "8",
        "--position-channels",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = hsa(&["train", "export", "--work", work, "--out", model]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for sampler in [
        &["--sampler", "fm"][..],
        &["--sampler", "hsa", "--budget", "0.5"],
    ] {
        let out = tmp.path().join(format!("frames-{}", sampler[1]));
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--prompt",
            "a red circle moving left on a gray background",
            "--steps",
            "8",
            "--frames",
            "3",
            "--size",
            "8x8",
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(sampler);
        let r = hsa(&args);
        assert!(
            r.status.success(),
            "{sampler:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(out.join("frame_0002.png").is_file(), "{sampler:?}");
    }
    // Without the marker the folder's DiT takes three channels too many.
    let index = std::path::Path::new(model).join("model_index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(
        &index,
        text.replace(
            "\"position_channels\": true",
            "\"position_channels\": false",
        ),
    )
    .unwrap();
    let out = tmp.path().join("refused");
    let r = hsa(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "a red circle",
        "--steps",
        "2",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && !out.exists());
    assert!(stderr.contains("takes 6 input channels"), "{stderr}");
}

/// The README's first command, shortened: the bundled model generates a clip, HSA at 50%,
/// and the same seed gives bit-identical frames.
#[test]
fn generate_with_the_bundled_model_is_deterministic() {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/shapes-wan");
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &std::path::Path, seed: &str| {
        hsa(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a red circle moving left on a gray background",
            "--steps",
            "8",
            "--sampler",
            "hsa",
            "--budget",
            "0.5",
            "--seed",
            seed,
            "-o",
            out.to_str().unwrap(),
        ])
    };
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let r = run(&a, "3");
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(stdout.contains("token-step fraction 0.5"), "{stdout}");
    assert!(run(&b, "3").status.success() && run(&c, "4").status.success());
    let frame = |d: &std::path::Path| std::fs::read(d.join("frame_0004.png")).unwrap();
    assert_eq!(frame(&a), frame(&b), "same seed, different frames");
    assert_ne!(frame(&a), frame(&c), "different seeds, same frames");

    // Bad requests: clear error, no output.
    let map = tmp.path().join("map.png");
    let map = map.to_str().unwrap();
    for (extra, needle) in [
        (vec!["--size", "30x32"], "multiples of 4"),
        (vec!["--sampler", "hsa"], "--budget"),
        (
            vec!["--prompt-file", "/nonexistent/prompt.txt"],
            "prompt file",
        ),
        (
            vec!["--sampler", "fm", "--group-map", map],
            "needs a token-level sampler",
        ),
    ] {
        let out = tmp.path().join("bad.mp4");
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        if !extra.contains(&"--prompt-file") {
            args.extend(["--prompt", "a red circle"]);
        }
        args.extend(extra.iter());
        let r = hsa(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.contains(needle),
            "{extra:?}: {err}"
        );
        assert!(!out.exists());
    }
}
