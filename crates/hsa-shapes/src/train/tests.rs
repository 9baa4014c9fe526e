//! The training loop's tests: resume, init-from, widening, export, refusals.

use super::*;
use candle_core::Tensor;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    hsa_models::nn::max_abs_diff(a, b).unwrap()
}

pub(super) fn tiny() -> TrainConfig {
    TrainConfig {
        width: 8,
        height: 8,
        frames: 3,
        patch: [1, 2, 2],
        dim: 24,
        heads: 2,
        layers: 1,
        ffn: 32,
        text_len: 16,
        batch: 2,
        steps: 4,
        warmup_steps: 2,
        checkpoint_every: 2,
        ..Default::default()
    }
}

/// [`tiny`] with a text stack written to a temporary folder (kept alive by the guard).
pub(super) fn tiny_with_text() -> (TrainConfig, TextStack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny();
    write_text_stack(dir.path(), 0).unwrap();
    let text = TextStack::load(dir.path(), cfg.text_len, &Device::Cpu).unwrap();
    (cfg, text, dir)
}

#[test]
fn adaln_zero_starts_every_block_as_the_identity() {
    let text_dir = tempfile::tempdir().unwrap();
    write_text_stack(text_dir.path(), 0).unwrap();
    let text = TextStack::load(text_dir.path(), 16, &Device::Cpu).unwrap();
    let cfg = TrainConfig {
        layers: 2,
        ..tiny()
    };
    let draw = draw_batch(&cfg, 0, 1);
    // Max |block0_out - head_in| and max |timestep_proj| of the initial model's forward.
    let probe = |adaln_zero: bool| {
        let cfg = TrainConfig {
            adaln_zero,
            ..cfg.clone()
        };
        let (names, vars) = initial_weights(&cfg, &Device::Cpu).unwrap();
        let model = model_over(&cfg, &names, &vars).unwrap();
        let x = Tensor::from_slice(&draw.x0, (2, 3, 3, 8, 8), &Device::Cpu).unwrap();
        let t = Tensor::new(&[500f32, 900.0], &Device::Cpu).unwrap();
        let ctx = text.embed_batch(&draw.prompts).unwrap();
        let mut seen: HashMap<String, Tensor> = HashMap::new();
        let mut trace = |name: &str, t: &Tensor| {
            seen.insert(name.to_string(), t.clone());
        };
        model.forward(&x, &t, &ctx, None, Some(&mut trace)).unwrap();
        let proj = &seen["timestep_proj"];
        (
            max_abs_diff(&seen["head_in"], &seen["block0_out"]),
            max_abs_diff(proj, &proj.zeros_like().unwrap()),
        )
    };
    assert_eq!(probe(true), (0.0, 0.0));
    let (through, proj) = probe(false);
    assert!(through > 1e-3 && proj > 1e-3, "{through} {proj}");
}

#[test]
fn batches_do_not_depend_on_the_drawing_threads() {
    let cfg = TrainConfig { batch: 5, ..tiny() };
    let (a, b) = (draw_batch(&cfg, 3, 1), draw_batch(&cfg, 3, 4));
    assert_eq!(
        (&a.x0, &a.eps, &a.sigmas, &a.prompts),
        (&b.x0, &b.eps, &b.sigmas, &b.prompts)
    );
    assert_ne!(a.x0, draw_batch(&cfg, 4, 4).x0);
    assert_eq!(a.x0.len(), 5 * 3 * 3 * 8 * 8);
}

#[test]
fn a_run_with_the_motion_head_resumes_exactly_and_exports_only_the_dit() {
    let cfg = TrainConfig {
        displacement_weight: 1.0,
        ..tiny()
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = train(&cfg, a.path(), &Device::Cpu, &mut |_| {}).unwrap();
    let short = TrainConfig {
        steps: 2,
        ..cfg.clone()
    };
    train(&short, b.path(), &Device::Cpu, &mut |_| {}).unwrap();
    let mut seen = Vec::new();
    let resumed = train(&cfg, b.path(), &Device::Cpu, &mut |p| {
        seen.push(p.displacement_loss)
    })
    .unwrap();
    assert_eq!(full.final_loss, resumed.final_loss);
    assert!(seen.len() == 2 && seen.iter().all(|d| d.is_some_and(|d| d > 0.0)));
    // The head is checkpointed, then left out of the export, which loads as a plain DiT.
    let state = candle_core::safetensors::load(
        b.path().join("checkpoint").join("state.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(state.contains_key("ema/motion_head.weight"));
    let out = tempfile::tempdir().unwrap();
    export(b.path(), out.path()).unwrap();
    let exported = candle_core::safetensors::load(
        out.path()
            .join("transformer/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(exported.keys().all(|k| !k.starts_with("motion_head")));
    assert_eq!(exported.len(), expected_tensors(&cfg.dit_config()).len());
    WanModel::load_dir(&out.path().join("transformer"), None, &Device::Cpu).unwrap();
    // A head cannot be switched on or off in a run's folder.
    let err = train(&tiny(), b.path(), &Device::Cpu, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("different settings"), "{err}");
}

/// A run with position channels trains a 6-channel DiT and marks its export; one started
/// from a plain export keeps every weight of it and gives the new channels a fresh init's
/// weights (from zero they never grew in the bundled model: segment 16 in
/// `models/shapes-wan/HISTORY.md`).
#[test]
fn position_channels_widen_the_input_from_the_plain_model_with_fresh_weights() {
    let (plain_work, plain) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    train(&tiny(), plain_work.path(), &Device::Cpu, &mut |_| {}).unwrap();
    export(plain_work.path(), plain.path()).unwrap();
    let cfg = TrainConfig {
        position_channels: true,
        init_from: Some(plain.path().to_path_buf()),
        ..tiny()
    };
    let (names, vars) = initial_weights(&cfg, &Device::Cpu).unwrap();
    let widened = model_over(&cfg, &names, &vars).unwrap();
    assert_eq!(widened.config().in_channels, 6);
    let store = hsa_models::wan::WeightStore::open_dir(&plain.path().join("transformer")).unwrap();
    let fresh = initial_weights(
        &TrainConfig {
            init_from: None,
            ..cfg.clone()
        },
        &Device::Cpu,
    )
    .unwrap();
    for (name, var) in names.iter().zip(&vars) {
        let plain_w = store.get(name, DType::F32, &Device::Cpu).unwrap();
        if name != "patch_embedding.weight" {
            assert_eq!(max_abs_diff(var.as_tensor(), &plain_w), 0.0, "{name}");
            continue;
        }
        // The pixels' weights are the plain model's, the positions' a fresh model's.
        let pixels = var.as_tensor().narrow(1, 0, 3).unwrap();
        assert_eq!(max_abs_diff(&pixels, &plain_w), 0.0);
        let i = fresh.0.iter().position(|n| n == name).unwrap();
        let want = fresh.1[i].as_tensor().narrow(1, 3, 3).unwrap();
        let got = var.as_tensor().narrow(1, 3, 3).unwrap();
        assert_eq!(max_abs_diff(&got, &want), 0.0);
        assert!(max_abs_diff(&got, &got.zeros_like().unwrap()) > 0.01);
    }

    // Trained, the positions' weights move and the export says the model takes them.
    let (work, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    train(&cfg, work.path(), &Device::Cpu, &mut |_| {}).unwrap();
    export(work.path(), out.path()).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("model_index.json")).unwrap())
            .unwrap();
    assert_eq!(index["_hsa"]["position_channels"], true);
    let w = candle_core::safetensors::load(
        out.path()
            .join("transformer/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap()["patch_embedding.weight"]
        .to_dtype(DType::F32)
        .unwrap();
    assert_eq!(w.dim(1).unwrap(), 6);
    let new = w.narrow(1, 3, 3).unwrap();
    assert!(max_abs_diff(&new, &new.zeros_like().unwrap()) > 0.0);
    // A plain run refuses a position-channel model as its start.
    let back = TrainConfig {
        init_from: Some(out.path().to_path_buf()),
        ..tiny()
    };
    let err = initial_weights(&back, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("different architecture"), "{err}");
}

/// A run with a first-frame offset trains, but its export is refused with the reason: the
/// pipeline would not undo the offset, so the model's first frames would come out shifted.
#[test]
fn a_run_with_a_first_frame_offset_is_not_exported() {
    let cfg = TrainConfig {
        first_frame_offset: 0.5,
        steps: 2,
        ..tiny()
    };
    let (work, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    train(&cfg, work.path(), &Device::Cpu, &mut |_| {}).unwrap();
    let err = export(work.path(), out.path()).unwrap_err();
    assert!(
        err.to_string().contains("first-frame offset of 0.5"),
        "{err}"
    );
    assert!(!out.path().join("model_index.json").exists());
}

/// Frames folded into tokens (`--patch 3,2,2` on 3-frame clips: one token per place) train
/// and export a model whose config carries the patch and whose velocity has the clip's shape.
#[test]
fn a_temporal_patch_trains_and_exports() {
    let cfg = TrainConfig {
        patch: [3, 2, 2],
        steps: 2,
        ..tiny()
    };
    let (work, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = train(&cfg, work.path(), &Device::Cpu, &mut |_| {}).unwrap();
    assert!(run.final_loss.is_finite());
    export(work.path(), out.path()).unwrap();
    let model = WanModel::load_dir(
        &out.path().join("transformer"),
        Some(DType::F32),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(model.config().patch_size, [3, 2, 2]);
    let text = TextStack::load(out.path(), 16, &Device::Cpu).unwrap();
    let ctx = text
        .embed("a red circle moving left on a gray background")
        .unwrap();
    let x = Tensor::zeros((1, 3, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::new(&[500f32], &Device::Cpu).unwrap();
    let v = model
        .forward(&x, &t, &ctx.unsqueeze(0).unwrap(), None, None)
        .unwrap();
    assert_eq!(v.dims(), &[1, 3, 3, 8, 8]);
    // 2 frames do not fold into groups of 3.
    let err = train(
        &TrainConfig { frames: 2, ..cfg },
        tempfile::tempdir().unwrap().path(),
        &Device::Cpu,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("not divisible by patch"), "{err}");
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one_and_exports_a_loadable_model() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = train(&tiny(), a.path(), &Device::Cpu, &mut |_| {}).unwrap();
    train(
        &TrainConfig { steps: 2, ..tiny() },
        b.path(),
        &Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    let resumed = train(&tiny(), b.path(), &Device::Cpu, &mut |_| {}).unwrap();
    assert_eq!(full.steps, 4);
    assert_eq!(resumed.steps, 4);
    assert_eq!(full.final_loss, resumed.final_loss);
    // Different settings in the same folder are refused.
    assert!(train(
        &TrainConfig { dim: 48, ..tiny() },
        b.path(),
        &Device::Cpu,
        &mut |_| {}
    )
    .is_err());

    let out = tempfile::tempdir().unwrap();
    let losses = export(b.path(), out.path()).unwrap();
    assert_eq!(losses.len(), 4);
    let model = WanModel::load_dir(&out.path().join("transformer"), None, &Device::Cpu).unwrap();
    assert_eq!(model.dtype(), DType::BF16);
    assert_eq!(model.config(), &tiny().dit_config());
    TextStack::load(out.path(), 16, &Device::Cpu)
        .unwrap()
        .embed("a red circle moving left on a gray background")
        .unwrap();

    // A run started from the export starts from its (bf16) average weights.
    let from = |dim| TrainConfig {
        dim,
        init_from: Some(out.path().to_path_buf()),
        ..tiny()
    };
    let (names, vars) = initial_weights(&from(24), &Device::Cpu).unwrap();
    let state = candle_core::safetensors::load(
        b.path().join("checkpoint").join("state.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let i = names.iter().position(|n| n == "proj_out.weight").unwrap();
    let ema = &state["ema/proj_out.weight"];
    let bf16 = ema
        .to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let zero = ema.zeros_like().unwrap();
    assert!(
        max_abs_diff(ema, &zero) > 0.0,
        "trained weights moved off zero"
    );
    assert_eq!(max_abs_diff(vars[i].as_tensor(), &bf16), 0.0);
    let err = initial_weights(&from(48), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("different architecture"), "{err}");

    // A continuation reads text as the export's DiT learned to, whatever its data seed;
    // asked for, it gets a fresh encoder from its seed instead.
    let encoder = |dir: &Path| std::fs::read(dir.join("text_encoder/model.safetensors"));
    let continue_in = |new_text_encoder| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            steps: 1,
            seed: 7,
            init_from: Some(out.path().to_path_buf()),
            new_text_encoder,
            ..tiny()
        };
        train(&cfg, dir.path(), &Device::Cpu, &mut |_| {}).unwrap();
        encoder(dir.path()).unwrap()
    };
    let shipped = encoder(out.path()).unwrap();
    assert_eq!(continue_in(false), shipped);
    assert_ne!(continue_in(true), shipped);
}
