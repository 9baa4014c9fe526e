//! Parity of the Wan VAE with diffusers `AutoencoderKLWan` on tiny random configs (fixtures
//! from `tools/fixtures/make_wan_vae_fixtures.py`), plus chunking, key-layout and error tests.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{fixtures, load, rel_l2};
use hsa_models::wan::vae::{VaeKeyFormat, VaeStore, WanVae, WanVaeConfig};
use hsa_models::ModelError;

const CASES: [&str; 2] = ["wan21", "wan22"];
const TOL: f64 = 1e-4;

fn case_dir(name: &str) -> PathBuf {
    fixtures().join("wan_vae").join(name)
}

fn io(name: &str) -> HashMap<String, Tensor> {
    load(&case_dir(name).join("io.safetensors"))
}

fn vae(name: &str) -> WanVae {
    WanVae::load(case_dir(name), DType::F32, &Device::Cpu).unwrap()
}

/// A copy of a fixture folder whose weights went through `edit`.
fn edited_copy(name: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = case_dir(name);
    std::fs::copy(dir.join("config.json"), tmp.path().join("config.json")).unwrap();
    let mut tensors = load(&dir.join("diffusion_pytorch_model.safetensors"));
    edit(&mut tensors);
    candle_core::safetensors::save(
        &tensors,
        tmp.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    tmp
}

fn load_err(dir: &Path) -> ModelError {
    WanVae::load(dir, DType::F32, &Device::Cpu).unwrap_err()
}

#[test]
fn encode_matches_diffusers() {
    for case in CASES {
        let io = io(case);
        let vae = vae(case);
        let (mean, logvar) = vae.encode_distribution(&io["video"]).unwrap();
        let e_mean = rel_l2(&mean, &io["mean"]);
        let e_logvar = rel_l2(&logvar, &io["logvar"]);
        println!("{case}: encode mean rel err {e_mean:.2e}, logvar {e_logvar:.2e}");
        assert!(e_mean <= TOL, "{case}: mean rel err {e_mean:.3e}");
        assert!(e_logvar <= TOL, "{case}: logvar rel err {e_logvar:.3e}");
        assert_eq!(rel_l2(&vae.encode(&io["video"]).unwrap(), &mean), 0.0);
    }
}

#[test]
fn decode_matches_diffusers() {
    for case in CASES {
        let io = io(case);
        let out = vae(case).decode(&io["latent"]).unwrap();
        let err = rel_l2(&out, &io["decoded"]);
        println!("{case}: decode rel err {err:.2e}");
        assert!(err <= TOL, "{case}: decode rel err {err:.3e}");
    }
}

#[test]
fn chunked_decode_equals_whole_clip_decode() {
    for case in CASES {
        let io = io(case);
        let vae = vae(case);
        let latent = &io["latent"];
        let f = latent.dim(2).unwrap();
        let mut calls = Vec::new();
        let per_frame = vae
            .decode_with_progress(latent, 1, |done, total| calls.push((done, total)))
            .unwrap();
        assert_eq!(calls, (1..=f).map(|d| (d, f)).collect::<Vec<_>>());
        for chunk in [2, f] {
            let other = vae.decode_with_progress(latent, chunk, |_, _| {}).unwrap();
            let err = rel_l2(&other, &per_frame);
            assert!(err <= 1e-6, "{case}: chunk {chunk} vs 1: rel err {err:.3e}");
        }
        // Streaming: 1 pixel frame for the first latent frame, then 4 per latent frame.
        let mut sizes = Vec::new();
        vae.decode_stream(latent, 1, |frames, _, _| {
            sizes.push(frames.dim(2).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(sizes, [1, 4, 4]);
        // A sink error stops decoding and comes back.
        let err = vae
            .decode_stream(latent, 1, |_, done, _| {
                if done == 2 {
                    Err(ModelError::Input("stop".into()))
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert!(matches!(err, ModelError::Input(m) if m == "stop"));
    }
}

#[test]
fn encode_chunk_size_and_causality() {
    for case in CASES {
        let io = io(case);
        let vae = vae(case);
        let video = &io["video"];
        let (mean4, _) = vae.encode_distribution(video).unwrap();
        let (mean8, _) = vae.encode_chunked(video, 8).unwrap();
        let err = rel_l2(&mean8, &mean4);
        assert!(err <= 1e-6, "{case}: chunk 8 vs 4: rel err {err:.3e}");
        // Causal in time: the first latent frame depends on the first pixel frame only, and
        // the first pixel frame on the first latent frame only.
        let first = vae.encode(&video.narrow(2, 0, 1).unwrap()).unwrap();
        let err = rel_l2(&first, &mean4.narrow(2, 0, 1).unwrap());
        assert!(err <= 1e-6, "{case}: single-frame encode rel err {err:.3e}");
        let latent = &io["latent"];
        let first = vae.decode(&latent.narrow(2, 0, 1).unwrap()).unwrap();
        let err = rel_l2(&first, &io["decoded"].narrow(2, 0, 1).unwrap());
        assert!(err <= TOL, "{case}: single-frame decode rel err {err:.3e}");
    }
}

#[test]
fn latent_normalisation_matches_the_pipelines() {
    for case in CASES {
        let io = io(case);
        let vae = vae(case);
        let norm = vae.normalize_latents(&io["mean"]).unwrap();
        assert!(rel_l2(&norm, &io["normalized"]) <= 1e-7, "{case}");
        let denorm = vae.denormalize_latents(&io["latent"]).unwrap();
        assert_eq!(rel_l2(&denorm, &io["denormalized"]), 0.0, "{case}");
        let back = vae.normalize_latents(&denorm).unwrap();
        assert!(rel_l2(&back, &io["latent"]) <= 1e-6, "{case}");
    }
}

#[test]
fn original_key_names_load_to_the_same_model() {
    for case in CASES {
        let names: HashMap<String, String> = serde_json::from_str(
            &std::fs::read_to_string(case_dir(case).join("original_keys.json")).unwrap(),
        )
        .unwrap();
        let tmp = edited_copy(case, |t| {
            *t = t.drain().map(|(k, v)| (names[&k].clone(), v)).collect();
        });
        let cfg = WanVaeConfig::from_json(
            &std::fs::read_to_string(case_dir(case).join("config.json")).unwrap(),
        )
        .unwrap();
        let store = VaeStore::open(
            &[tmp.path().join("diffusion_pytorch_model.safetensors")],
            &cfg,
        )
        .unwrap();
        assert_eq!(store.format(), VaeKeyFormat::Original);
        let io = io(case);
        let reference = vae(case);
        let renamed = WanVae::load(tmp.path(), DType::F32, &Device::Cpu).unwrap();
        let a = renamed.decode(&io["latent"]).unwrap();
        assert_eq!(
            rel_l2(&a, &reference.decode(&io["latent"]).unwrap()),
            0.0,
            "{case}"
        );
        let a = renamed.encode(&io["video"]).unwrap();
        assert_eq!(
            rel_l2(&a, &reference.encode(&io["video"]).unwrap()),
            0.0,
            "{case}"
        );
    }
}

#[test]
fn single_file_and_decoder_only_loads() {
    let io = io("wan22");
    let reference = vae("wan22").decode(&io["latent"]).unwrap();
    // The weights file itself (config.json beside it).
    let file = case_dir("wan22").join("diffusion_pytorch_model.safetensors");
    let v = WanVae::load(&file, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(rel_l2(&v.decode(&io["latent"]).unwrap(), &reference), 0.0);
    // Decoder only, by choice and by file content.
    let v = WanVae::load_decoder(case_dir("wan22"), DType::F32, &Device::Cpu).unwrap();
    assert!(!v.has_encoder());
    assert_eq!(rel_l2(&v.decode(&io["latent"]).unwrap(), &reference), 0.0);
    let tmp = edited_copy("wan22", |t| {
        t.retain(|k, _| !k.starts_with("encoder.") && !k.starts_with("quant_conv."))
    });
    let v = WanVae::load(tmp.path(), DType::F32, &Device::Cpu).unwrap();
    assert!(!v.has_encoder());
    assert_eq!(rel_l2(&v.decode(&io["latent"]).unwrap(), &reference), 0.0);
    let err = v.encode(&io["video"]).unwrap_err();
    assert!(
        matches!(&err, ModelError::Input(m) if m.contains("without an encoder")),
        "{err}"
    );
}

#[test]
fn half_precision_compute_stays_close() {
    let io = io("wan21");
    for dtype in [DType::BF16, DType::F16] {
        let v = WanVae::load(case_dir("wan21"), dtype, &Device::Cpu).unwrap();
        let out = v.decode(&io["latent"]).unwrap();
        assert_eq!(out.dtype(), dtype);
        let err = rel_l2(&out, &io["decoded"]);
        println!("{dtype:?}: decode rel err {err:.2e}");
        assert!(err <= 3e-2, "{dtype:?}: decode rel err {err:.3e}");
        let err = rel_l2(&v.encode(&io["video"]).unwrap(), &io["mean"]);
        println!("{dtype:?}: encode rel err {err:.2e}");
        assert!(err <= 3e-2, "{dtype:?}: encode rel err {err:.3e}");
    }
}

#[test]
fn weight_errors_name_the_tensor() {
    let name = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight";
    let tmp = edited_copy("wan21", |t| {
        t.remove(name);
    });
    match load_err(tmp.path()) {
        ModelError::MissingTensor {
            name: n, expected, ..
        } => {
            assert_eq!(n, name);
            assert_eq!(expected, [8, 4, 1, 1, 1]);
        }
        other => panic!("expected MissingTensor, got {other}"),
    }

    let tmp = edited_copy("wan21", |t| {
        let w = t["decoder.conv_in.weight"].narrow(1, 0, 3).unwrap();
        t.insert("decoder.conv_in.weight".into(), w);
    });
    let err = load_err(tmp.path());
    let msg = err.to_string();
    match err {
        ModelError::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "decoder.conv_in.weight");
            assert_eq!(expected, [8, 4, 3, 3, 3]);
            assert_eq!(found, [8, 3, 3, 3, 3]);
            assert!(
                msg.contains("[8, 3, 3, 3, 3]") && msg.contains("[8, 4, 3, 3, 3]"),
                "{msg}"
            );
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }

    let tmp = edited_copy("wan21", |t| {
        let extra = t["decoder.conv_in.bias"].clone();
        t.insert("decoder.extra.bias".into(), extra);
    });
    assert!(matches!(
        load_err(tmp.path()),
        ModelError::UnexpectedTensor { name, .. } if name == "decoder.extra.bias"
    ));

    let tmp = edited_copy("wan21", |t| {
        *t = t.drain().map(|(k, v)| (format!("vae.{k}"), v)).collect();
    });
    assert!(matches!(
        load_err(tmp.path()),
        ModelError::UnknownVaeKeyFormat { .. }
    ));

    // A config that does not fit the weights: the first mismatch names the tensor.
    let tmp = edited_copy("wan21", |_| {});
    let cfg = std::fs::read_to_string(tmp.path().join("config.json"))
        .unwrap()
        .replace("\"base_dim\": 4", "\"base_dim\": 6");
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    assert!(matches!(
        load_err(tmp.path()),
        ModelError::ShapeMismatch { .. }
    ));

    let tmp = edited_copy("wan21", |_| {});
    std::fs::write(tmp.path().join("config.json"), "{\"z_dim\": 4").unwrap();
    assert!(matches!(load_err(tmp.path()), ModelError::Config { .. }));

    let missing = case_dir("wan21").join("nope");
    assert!(matches!(load_err(&missing), ModelError::Io { .. }));
}

#[test]
fn input_errors_are_typed_not_panics() {
    let v = vae("wan21");
    let dev = Device::Cpu;
    let input_err = |r: hsa_models::Result<Tensor>| match r {
        Err(ModelError::Input(m)) => m,
        Err(other) => panic!("expected an Input error, got {other}"),
        Ok(t) => panic!("expected an error, got shape {:?}", t.dims()),
    };
    for frames in [0, 2, 4, 8] {
        let video = Tensor::zeros((1, 3, frames, 16, 16), DType::F32, &dev).unwrap();
        let m = input_err(v.encode(&video));
        assert!(m.contains("4k+1"), "{frames} frames: {m}");
    }
    let m = input_err(v.encode(&Tensor::zeros((1, 3, 5, 12, 16), DType::F32, &dev).unwrap()));
    assert!(m.contains("multiples of 8"), "{m}");
    let m = input_err(v.encode(&Tensor::zeros((1, 4, 5, 16, 16), DType::F32, &dev).unwrap()));
    assert!(m.contains("channels"), "{m}");
    let m = input_err(v.encode(&Tensor::zeros((3, 5, 16, 16), DType::F32, &dev).unwrap()));
    assert!(m.contains("[B, C, F, H, W]"), "{m}");
    let m = input_err(
        v.encode_chunked(
            &Tensor::zeros((1, 3, 5, 16, 16), DType::F32, &dev).unwrap(),
            6,
        )
        .map(|(m, _)| m),
    );
    assert!(m.contains("multiple of 4"), "{m}");
    let m = input_err(v.decode(&Tensor::zeros((1, 5, 2, 2, 2), DType::F32, &dev).unwrap()));
    assert!(m.contains("[B, 4, f, h, w]"), "{m}");
    let m = input_err(v.decode(&Tensor::zeros((1, 4, 0, 2, 2), DType::F32, &dev).unwrap()));
    assert!(m.contains("positive"), "{m}");
    let m = input_err(v.decode_with_progress(
        &Tensor::zeros((1, 4, 2, 2, 2), DType::F32, &dev).unwrap(),
        0,
        |_, _| {},
    ));
    assert!(m.contains("latent_frames_per_chunk"), "{m}");
    let m =
        input_err(v.normalize_latents(&Tensor::zeros((1, 16, 2, 2, 2), DType::F32, &dev).unwrap()));
    assert!(m.contains("[B, 4, f, h, w]"), "{m}");
}

#[test]
fn shapes_and_factors_follow_the_config() {
    let v = vae("wan22");
    let cfg = v.config();
    assert_eq!((cfg.spatial_factor(), cfg.temporal_factor()), (16, 4));
    assert_eq!(v.latent_shape(81, 480, 832), [6, 21, 30, 52]);
    assert_eq!(cfg.pixel_frames(21), 81);
    let v = vae("wan21");
    assert_eq!(v.latent_shape(9, 16, 24), [4, 3, 2, 3]);
    assert_eq!(v.config().spatial_factor(), 8);
}

/// CPU seconds (user + system) this process has used so far (Linux `/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// Timing and parity on a full-size VAE; ignored by default. `WAN_VAE_BENCH_DIR` is a diffusers
/// `vae/` folder holding `bench_io.safetensors` with `z` (latent) and `y` (diffusers decode),
/// optionally `x` (video) and `mu` (diffusers encode mean). Run with
/// `WAN_VAE_BENCH_DIR=... cargo test --release -p hsa-models --test wan_vae_parity -- --ignored --nocapture`.
#[test]
#[ignore]
fn full_size_timing() {
    let Ok(dir) = std::env::var("WAN_VAE_BENCH_DIR") else {
        println!("WAN_VAE_BENCH_DIR not set; nothing to do");
        return;
    };
    let dir = PathBuf::from(dir);
    let io = load(&dir.join("bench_io.safetensors"));
    let vae = WanVae::load(&dir, DType::F32, &Device::Cpu).unwrap();
    for _ in 0..2 {
        let (t, c) = (std::time::Instant::now(), cpu_seconds());
        let y = vae.decode(&io["z"]).unwrap();
        println!(
            "decode {:?} -> {:?}: wall {:.2?}, cpu {:.2}s, rel err {:.2e}",
            io["z"].dims(),
            y.dims(),
            t.elapsed(),
            cpu_seconds() - c,
            rel_l2(&y, &io["y"])
        );
        if let (Some(x), Some(mu)) = (io.get("x"), io.get("mu")) {
            let (t, c) = (std::time::Instant::now(), cpu_seconds());
            let m = vae.encode(x).unwrap();
            println!(
                "encode {:?} -> {:?}: wall {:.2?}, cpu {:.2}s, rel err {:.2e}",
                x.dims(),
                m.dims(),
                t.elapsed(),
                cpu_seconds() - c,
                rel_l2(&m, mu)
            );
        }
    }
}
