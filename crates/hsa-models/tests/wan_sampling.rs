//! FM Euler with classifier-free guidance over the Wan denoiser, against a diffusers-driven
//! Euler loop (FlowMatchEulerDiscreteScheduler, WanPipeline's CFG) from the same noise.

mod common;

use candle_core::{Device, IndexOp};
use common::{load, rel_l2, wan_case};
use hsa_core::{sample_fm_euler, Guidance, Schedule, ScheduleKind};
use hsa_models::wan::patch::{patchify, unpatchify};
use hsa_models::wan::{WanDenoiser, WanModel};

#[test]
fn euler_with_and_without_cfg_matches_diffusers() {
    let fx = load(&wan_case("euler_cfg.safetensors"));
    let model = WanModel::load_dir(&wan_case("t2v"), None, &Device::Cpu).unwrap();
    let scalar = |n: &str| fx[n].to_vec1::<f64>().unwrap()[0];
    let (steps, shift, g) = (
        scalar("steps") as usize,
        scalar("shift"),
        scalar("guidance"),
    );
    let schedule = Schedule::new(ScheduleKind::FlowMatchEuler, steps, shift).unwrap();
    let sigmas = fx["sigmas"].to_vec1::<f64>().unwrap();
    for (a, b) in schedule.sigmas.iter().zip(&sigmas) {
        assert!((a - b).abs() < 1e-6);
    }
    let patch = model.config().patch_size;
    let noise = patchify(&fx["noise"], patch).unwrap().i(0).unwrap();
    let (_, _, f, h, w) = fx["noise"].dims5().unwrap();
    let grid = hsa_models::wan::patch::grid_for(f, h, w, patch).unwrap();

    for (guidance, reference) in [(g, "latents_cfg"), (1.0, "latents_nocfg")] {
        let mut den = WanDenoiser::new(
            &model,
            grid,
            &fx["encoder_hidden_states"],
            Some(&fx["negative_encoder_hidden_states"]),
            None,
        )
        .unwrap();
        let mut seen = 0;
        let out = sample_fm_euler(
            &mut den,
            &noise,
            &schedule,
            Guidance::new(guidance).unwrap(),
            &mut |e| {
                assert_eq!(e.nfe, if guidance == 1.0 { 1 } else { 2 });
                seen += 1;
            },
        )
        .unwrap();
        assert_eq!(seen, steps);
        let video = unpatchify(&out.unsqueeze(0).unwrap(), grid, patch).unwrap();
        let err = rel_l2(&video, &fx[reference]);
        assert!(err <= 1e-4, "{reference}: rel err {err:.3e}");
    }
}
