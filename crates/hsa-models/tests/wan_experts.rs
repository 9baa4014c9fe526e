//! Wan2.2 A14B-style two-expert sampling: expert choice by timestep, a second guidance scale
//! below the boundary, and a dense refresh at the switch for token-level samplers.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{load, wan_case};
use hsa_core::teacache::{sample_teacache, TeaCacheConfig, Wan21Model};
use hsa_core::{
    sample_fm_euler, sample_hsa, sample_ras, Branch, Denoiser, GroupSpec, Guidance, HsaConfig,
    IndicatorKind, RasConfig, Schedule, ScheduleKind,
};
use hsa_models::wan::patch::{grid_for, patchify};
use hsa_models::wan::{WanDenoiser, WanExperts, WanModel};

const BOUNDARY: f64 = 700.0;

#[test]
fn experts_switch_at_the_boundary_with_their_own_guidance() {
    let fx = load(&wan_case("euler_cfg.safetensors"));
    let high = WanModel::load_dir(&wan_case("t2v"), None, &Device::Cpu).unwrap();
    let low = WanModel::random(high.config(), DType::F32, &Device::Cpu, 7).unwrap();
    let noise = patchify(&fx["noise"], [1, 2, 2]).unwrap().i(0).unwrap();
    let (_, _, f, h, w) = fx["noise"].dims5().unwrap();
    let grid = grid_for(f, h, w, [1, 2, 2]).unwrap();
    let (cond, neg) = (
        &fx["encoder_hidden_states"],
        &fx["negative_encoder_hidden_states"],
    );
    let den = |m| WanDenoiser::new(m, grid, cond, Some(neg), None).unwrap();
    let experts = || WanExperts::new(den(&high), den(&low), BOUNDARY).unwrap();
    let schedule = Schedule::new(ScheduleKind::FlowMatchEuler, 8, 3.0).unwrap();
    let switch = schedule
        .expert_switch_step(BOUNDARY)
        .expect("the schedule crosses the boundary");
    let guidance = Guidance::new(5.0)
        .unwrap()
        .with_low_noise(BOUNDARY, 3.0)
        .unwrap();

    // Reference: an explicit loop choosing model and scale per step.
    let (mut dh, mut dl) = (den(&high), den(&low));
    let mut x = noise.clone();
    for i in 0..8 {
        let t = schedule.timesteps[i];
        let (d, g) = if t >= BOUNDARY {
            (&mut dh, 5.0)
        } else {
            (&mut dl, 3.0)
        };
        let vc = d.velocity(&x, t, Branch::Cond, None).unwrap();
        let vu = d.velocity(&x, t, Branch::Uncond, None).unwrap();
        let v = (&vu + ((vc - &vu).unwrap() * g).unwrap()).unwrap();
        x = (&x + (v * (schedule.sigmas[i + 1] - schedule.sigmas[i])).unwrap()).unwrap();
    }
    let max_diff = |a: &Tensor, b: &Tensor| hsa_models::nn::max_abs_diff(a, b).unwrap();
    let fm = sample_fm_euler(&mut experts(), &noise, &schedule, guidance, &mut |_| {}).unwrap();
    assert_eq!(max_diff(&fm, &x), 0.0);

    // HSA: the dense spec is FM bit for bit across the switch; a real spec runs partial steps
    // on both sides of it (the low expert's cache is filled by the forced dense step).
    let mut dense = HsaConfig::new("1.0:1".parse::<GroupSpec>().unwrap(), 2, 0);
    dense.switch_steps = vec![switch];
    let run = sample_hsa(
        &mut experts(),
        &noise,
        &schedule,
        guidance,
        &dense,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(max_diff(&run.latents, &x), 0.0);
    let mut cfg = HsaConfig::new("0.5:1,0.5:2".parse::<GroupSpec>().unwrap(), 2, 0);
    cfg.switch_steps = vec![switch];
    let run = sample_hsa(
        &mut experts(),
        &noise,
        &schedule,
        guidance,
        &cfg,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        run.stats.steps[switch].dense,
        "the switch step must be dense"
    );
    assert!(run.stats.token_step_fraction < 1.0);
    // Without the forced dense step the low expert has no cache: a clear error.
    let no_switch = HsaConfig::new("0.5:1,0.5:2".parse::<GroupSpec>().unwrap(), 2, 0);
    if !(switch - 2).is_multiple_of(2) {
        assert!(sample_hsa(
            &mut experts(),
            &noise,
            &schedule,
            guidance,
            &no_switch,
            &mut |_| {}
        )
        .is_err());
    }

    let mut ras = RasConfig::for_steps(8);
    ras.warmup = 2;
    ras.switch_steps = vec![switch];
    sample_ras(
        &mut experts(),
        &noise,
        &schedule,
        guidance,
        &ras,
        &mut |_| {},
    )
    .unwrap();

    let mut tc = TeaCacheConfig::new(
        1e9,
        Wan21Model::T2v1_3b
            .coefficients(IndicatorKind::Embedding)
            .to_vec(),
        IndicatorKind::Embedding,
        8,
    )
    .unwrap();
    tc.switch_steps = vec![switch];
    let run = sample_teacache(
        &mut experts(),
        &noise,
        &schedule,
        guidance,
        &tc,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        run.computed[switch].iter().all(|c| *c),
        "TeaCache must compute at the switch"
    );
    assert!(
        !run.computed[switch + 1].iter().any(|c| *c),
        "and may skip after it"
    );
}
