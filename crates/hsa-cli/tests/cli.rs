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
