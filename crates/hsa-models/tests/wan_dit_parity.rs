//! Parity of the Wan DiT with diffusers `WanTransformer3DModel` on tiny random configs
//! (fixtures from `tools/fixtures/make_wan_dit_fixtures.py`).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::{load, rel_l2, wan_case};
use hsa_models::wan::WanModel;

const CASES: [&str; 4] = ["t2v", "grid", "i2v", "ti2v"];

fn run(
    model: &WanModel,
    io: &HashMap<String, Tensor>,
    trace: &mut HashMap<String, Tensor>,
) -> Tensor {
    let mut record = |name: &str, t: &Tensor| {
        trace.insert(name.to_string(), t.clone());
    };
    model
        .forward(
            &io["hidden_states"],
            &io["timestep"],
            &io["encoder_hidden_states"],
            io.get("encoder_hidden_states_image"),
            Some(&mut record),
        )
        .unwrap()
}

#[test]
fn f32_velocity_and_intermediates_match_diffusers() {
    for case in CASES {
        let dir = wan_case(case);
        let io = load(&dir.join("io.safetensors"));
        let model = WanModel::load_dir(&dir, None, &Device::Cpu).unwrap();
        let mut trace = HashMap::new();
        let v = run(&model, &io, &mut trace);
        let err = rel_l2(&v, &io["velocity"]);
        assert!(err <= 1e-5, "{case}: velocity rel err {err:.3e}");
        for name in [
            "temb",
            "timestep_proj",
            "text_embedding",
            "block0_out",
            "head_in",
        ] {
            let ours = &trace[name];
            let theirs = &io[name];
            let ours = ours.reshape(theirs.dims()).unwrap();
            let err = rel_l2(&ours, theirs);
            assert!(err <= 1e-5, "{case}: {name} rel err {err:.3e}");
        }
    }
}

#[test]
fn original_sharded_and_comfy_layouts_give_the_same_velocity() {
    let io = load(&wan_case("t2v").join("io.safetensors"));
    let reference = run(
        &WanModel::load_dir(&wan_case("t2v"), None, &Device::Cpu).unwrap(),
        &io,
        &mut HashMap::new(),
    );
    for variant in ["t2v_original", "t2v_sharded"] {
        let model = WanModel::load_dir(&wan_case(variant), None, &Device::Cpu).unwrap();
        let v = run(&model, &io, &mut HashMap::new());
        assert_eq!(rel_l2(&v, &reference), 0.0, "{variant}");
    }
    // ComfyUI single file: original keys behind `model.diffusion_model.`.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        wan_case("t2v_original").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let tensors: HashMap<String, Tensor> =
        load(&wan_case("t2v_original").join("diffusion_pytorch_model.safetensors"))
            .into_iter()
            .map(|(k, v)| (format!("model.diffusion_model.{k}"), v))
            .collect();
    candle_core::safetensors::save(&tensors, tmp.path().join("wan_comfy.safetensors")).unwrap();
    let model = WanModel::load_dir(tmp.path(), None, &Device::Cpu).unwrap();
    assert_eq!(
        rel_l2(&run(&model, &io, &mut HashMap::new()), &reference),
        0.0,
        "comfy"
    );

    let io = load(&wan_case("i2v").join("io.safetensors"));
    let model = WanModel::load_dir(&wan_case("i2v_original"), None, &Device::Cpu).unwrap();
    let err = rel_l2(&run(&model, &io, &mut HashMap::new()), &io["velocity"]);
    assert!(err <= 1e-5, "i2v_original rel err {err:.3e}");
}

#[test]
fn bf16_weights_stay_within_bf16_tolerance() {
    let io = load(&wan_case("t2v_bf16").join("io.safetensors"));
    let f32_ref = load(&wan_case("t2v").join("io.safetensors"));
    // Weights stored in bf16.
    let model = WanModel::load_dir(&wan_case("t2v_bf16"), None, &Device::Cpu).unwrap();
    assert_eq!(model.dtype(), DType::BF16);
    let v = run(&model, &io, &mut HashMap::new());
    for (what, reference) in [
        ("f32 reference", &f32_ref["velocity"]),
        ("diffusers bf16", &io["velocity"]),
    ] {
        let err = rel_l2(&v, reference);
        assert!(err <= 2e-2, "bf16 weights vs {what}: rel err {err:.3e}");
    }
    // f32 weights cast to bf16 / f16 at load time.
    for dtype in [DType::BF16, DType::F16] {
        let model = WanModel::load_dir(&wan_case("t2v"), Some(dtype), &Device::Cpu).unwrap();
        let err = rel_l2(&run(&model, &io, &mut HashMap::new()), &f32_ref["velocity"]);
        assert!(err <= 2e-2, "{dtype:?} compute: rel err {err:.3e}");
    }
}
