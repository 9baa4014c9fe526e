//! The trainer's loss and every parameter's gradient against PyTorch autograd through
//! diffusers' `WanTransformer3DModel` (fixture: tools/fixtures/make_wan_training_fixtures.py).
//! The inference parity tests cannot see the training path: it swaps candle's fused kernels
//! for differentiable ops and builds broadcasts and GELU so that their backward is cheap.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use hsa_models::wan::WanModel;
use hsa_shapes::train::flow_matching_loss;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan_training")
}

/// `||a - b|| / ||b||` in f64.
fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let norm = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    (norm(&(&a - &b).unwrap()) / norm(&b)).sqrt()
}

#[test]
fn loss_and_every_gradient_equal_pytorch() {
    let dev = Device::Cpu;
    let dir = fixture();
    let cfg = hsa_models::wan::dit::read_config(&dir.join("model")).unwrap();
    let weights =
        candle_core::safetensors::load(dir.join("model/diffusion_pytorch_model.safetensors"), &dev)
            .unwrap();
    let io = candle_core::safetensors::load(dir.join("io.safetensors"), &dev).unwrap();
    let vars: HashMap<String, Var> = weights
        .iter()
        .map(|(k, t)| (k.clone(), Var::from_tensor(t).unwrap()))
        .collect();
    let model = WanModel::build(&cfg, DType::F32, &dev, &|name, _| {
        vars.get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| hsa_models::ModelError::Input(format!("fixture lacks {name}")))
    })
    .unwrap();

    let loss =
        flow_matching_loss(&model, &io["x0"], &io["eps"], &io["sigmas"], &io["context"]).unwrap();
    let want = io["loss"].to_vec1::<f32>().unwrap()[0];
    let got = loss.to_scalar::<f32>().unwrap();
    assert!(
        ((got - want) / want).abs() < 1e-5,
        "loss {got}, PyTorch {want}"
    );

    let grads = loss.backward().unwrap();
    let mut checked = 0;
    for (name, var) in &vars {
        let want = &io[&format!("grad.{name}")];
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached {name}"));
        let err = rel_l2(got, want);
        assert!(err < 1e-4, "gradient of {name}: relative error {err:.2e}");
        checked += 1;
    }
    let expected = io.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(
        checked, expected,
        "the fixture has gradients for other parameters"
    );
}
