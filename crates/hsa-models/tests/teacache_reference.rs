//! TeaCache's compute/skip sequence on the Wan denoiser equals the reference decision logic
//! (fixture from tools/fixtures/make_teacache_fixtures.py, with the published coefficients).

mod common;

use candle_core::Device;
use common::{fixtures, load, wan_case};
use hsa_core::teacache::{TeaCacheConfig, TeaCacheDecider, Wan21Model};
use hsa_core::{Branch, Denoiser, IndicatorKind, TokenGrid};
use hsa_models::wan::{WanDenoiser, WanModel};

#[test]
fn decisions_match_the_reference_for_both_indicator_modes() {
    let fx = load(&fixtures().join("teacache.safetensors"));
    let model = WanModel::load_dir(&wan_case("t2v"), None, &Device::Cpu).unwrap();
    let text =
        candle_core::Tensor::zeros((1, 4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut den = WanDenoiser::new(&model, TokenGrid::new(1, 2, 2), &text, None, None).unwrap();
    let timesteps = fx["timesteps"].to_vec1::<f64>().unwrap();
    let steps = timesteps.len();
    let mut mixed = 0;
    for (mode, kind, coeffs) in [
        ("e", IndicatorKind::Embedding, Wan21Model::T2v1_3b),
        ("e0", IndicatorKind::Projection, Wan21Model::I2v480p),
    ] {
        let indicators: Vec<_> = timesteps
            .iter()
            .map(|&t| den.timestep_indicator(t, kind).unwrap().unwrap())
            .collect();
        for k in 0..3 {
            let thresh = fx[&format!("{mode}_thresh{k}")].to_vec1::<f64>().unwrap()[0];
            let expected = fx[&format!("{mode}_computed{k}")].to_vec1::<u8>().unwrap();
            let cfg = TeaCacheConfig::new(thresh, coeffs.coefficients(kind).to_vec(), kind, steps)
                .unwrap();
            let mut decider = TeaCacheDecider::new(cfg);
            let ours: Vec<u8> = (0..2 * steps)
                .map(|call| {
                    let branch = if call % 2 == 0 {
                        Branch::Cond
                    } else {
                        Branch::Uncond
                    };
                    decider
                        .should_compute(call, branch, &indicators[call / 2])
                        .unwrap() as u8
                })
                .collect();
            assert_eq!(ours, expected, "{mode} threshold {thresh}");
            let computed = expected.iter().filter(|&&c| c == 1).count();
            if computed > 2 * steps / 5 && computed < 2 * steps {
                mixed += 1;
            }
        }
    }
    // The fixture must exercise skipping, not only the forced computes.
    assert!(mixed >= 4, "too few mixed sequences: {mixed}");
}

#[test]
fn reusing_the_stored_residual_at_the_same_input_reproduces_the_velocity() {
    let io = load(&wan_case("t2v").join("io.safetensors"));
    let model = WanModel::load_dir(&wan_case("t2v"), None, &Device::Cpu).unwrap();
    let (x, _, grid) = model
        .prepare_inputs(&io["hidden_states"], &io["timestep"])
        .unwrap();
    let x = x.squeeze(0).unwrap();
    let mut den = WanDenoiser::new(&model, grid, &io["encoder_hidden_states"], None, None).unwrap();
    assert!(
        den.velocity_reusing_residual(&x, 500.0, Branch::Cond)
            .is_err(),
        "no residual stored yet"
    );
    den.enable_residual_capture().unwrap();
    let v = den.velocity(&x, 500.0, Branch::Cond, None).unwrap();
    let reused = den
        .velocity_reusing_residual(&x, 500.0, Branch::Cond)
        .unwrap();
    assert!(common::rel_l2(&reused, &v) < 1e-6);
    // At another timestep the head and embedding change, the block stack does not.
    let other = den
        .velocity_reusing_residual(&x, 900.0, Branch::Cond)
        .unwrap();
    assert!(common::rel_l2(&other, &v) > 1e-4);
}
