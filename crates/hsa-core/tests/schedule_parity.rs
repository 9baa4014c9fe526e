//! Sigma tables against diffusers' schedulers and the official Wan schedule
//! (`tests/fixtures/schedules.safetensors`, made by tools/fixtures/make_wan_dit_fixtures.py).

use candle_core::Device;
use hsa_core::{Schedule, ScheduleKind};

#[test]
fn sigma_and_timestep_tables_match_the_references() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/schedules.safetensors");
    let tables = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let mut checked = 0;
    for (kind, name) in [
        (ScheduleKind::FlowMatchEuler, "fm_euler"),
        (ScheduleKind::DiffusersUniPc, "unipc_flow"),
        (ScheduleKind::WanOfficial, "wan_official"),
    ] {
        for shift in [1, 3, 5, 12] {
            for steps in [4, 10, 40, 50] {
                let key = format!("{name}_s{shift}_n{steps}");
                let sigmas = tables[&format!("{key}_sigmas")].to_vec1::<f64>().unwrap();
                let timesteps = tables[&format!("{key}_timesteps")]
                    .to_vec1::<f64>()
                    .unwrap();
                let ours = Schedule::new(kind, steps, shift as f64).unwrap();
                assert_eq!(ours.sigmas.len(), sigmas.len(), "{key}");
                for (i, (a, b)) in ours.sigmas.iter().zip(&sigmas).enumerate() {
                    assert!((a - b).abs() <= 1e-6, "{key} sigma[{i}]: {a} vs {b}");
                }
                for (i, (a, b)) in ours.timesteps.iter().zip(&timesteps).enumerate() {
                    // Float timesteps are stored as f32 by diffusers: 1e-6 relative.
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                        "{key} timestep[{i}]: {a} vs {b}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 48);
}
