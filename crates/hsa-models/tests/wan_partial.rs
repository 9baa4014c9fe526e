//! Token subsets and the K/V cache: a partial forward whose cache was filled by a dense pass at
//! the same inputs must reproduce the dense output on the active rows.

mod common;

use candle_core::{Device, IndexOp, Tensor};
use common::{load, rel_l2, wan_case};
use hsa_core::{ActiveSet, Branch, Denoiser};
use hsa_models::wan::{patch::patchify, WanDenoiser, WanModel};

/// Dense and partial (subset) velocities through the denoiser interface, for one fixture case.
/// Picks the active token ids out of `n` tokens.
type TokenSubset = fn(usize) -> Vec<u32>;

fn dense_vs_partial(case: &str, ids: TokenSubset) -> (f64, usize) {
    let dir = wan_case(case);
    let io = load(&dir.join("io.safetensors"));
    let model = WanModel::load_dir(&dir, None, &Device::Cpu).unwrap();
    let (_, t, grid) = model
        .prepare_inputs(&io["hidden_states"], &io["timestep"])
        .unwrap();
    let x = patchify(&io["hidden_states"], model.config().patch_size)
        .unwrap()
        .i(0)
        .unwrap();
    let cfg = model.config();
    let k: usize = cfg.patch_size.iter().product();
    // Split the model input into state channels and conditioning channels (I2V).
    let c_out = cfg.out_channels;
    let xs = x.reshape((grid.len(), k, cfg.in_channels)).unwrap();
    let state = xs
        .narrow(2, 0, c_out)
        .unwrap()
        .reshape((grid.len(), k * c_out))
        .unwrap();
    let timestep = match t {
        hsa_models::wan::Timesteps::PerSample(v) => v[0] as f64,
        hsa_models::wan::Timesteps::PerToken(v) => v.iter().cloned().fold(0f32, f32::max) as f64,
    };
    let mut den = WanDenoiser::new(
        &model,
        grid,
        &io["encoder_hidden_states"].i(0..1).unwrap(),
        None,
        io.get("encoder_hidden_states_image"),
    )
    .unwrap();
    if cfg.in_channels > c_out {
        let cond = xs
            .narrow(2, c_out, cfg.in_channels - c_out)
            .unwrap()
            .reshape((grid.len(), ()))
            .unwrap();
        den = den.with_condition(&cond).unwrap();
    }
    if let hsa_models::wan::Timesteps::PerToken(v) = model
        .prepare_inputs(&io["hidden_states"], &io["timestep"])
        .unwrap()
        .1
    {
        let scale = v.iter().map(|&ti| (ti as f64 / timestep) as f32).collect();
        den = den.with_timestep_scale(scale).unwrap();
    }
    let dense = den.velocity(&state, timestep, Branch::Cond, None).unwrap();
    let set = ActiveSet::new(ids(grid.len()), grid.len(), &Device::Cpu).unwrap();
    let partial = den
        .velocity(&state, timestep, Branch::Cond, Some(&set))
        .unwrap();
    let dense_rows = dense.index_select(set.tensor(), 0).unwrap();
    (rel_l2(&partial, &dense_rows), set.len())
}

#[test]
fn partial_forward_equals_dense_rows_after_a_dense_fill() {
    let subsets: [(&str, TokenSubset); 4] = [
        ("every third", |n| (0..n as u32).step_by(3).collect()),
        ("one token", |n| vec![(n / 2) as u32]),
        ("first and last", |n| vec![0, n as u32 - 1]),
        ("all", |n| (0..n as u32).collect()),
    ];
    for case in ["t2v", "i2v", "ti2v"] {
        for (name, ids) in subsets {
            let (err, len) = dense_vs_partial(case, ids);
            assert!(
                err <= 1e-5,
                "{case}/{name} ({len} tokens): rel err {err:.3e}"
            );
        }
    }
}

#[test]
fn the_video_level_check_fills_only_active_patches() {
    let dir = wan_case("grid");
    let io = load(&dir.join("io.safetensors"));
    let model = WanModel::load_dir(&dir, None, &Device::Cpu).unwrap();
    let n = 3 * 3 * 5;
    let set = ActiveSet::new(
        (0..n as u32).filter(|i| i % 4 == 1).collect(),
        n,
        &Device::Cpu,
    )
    .unwrap();
    let v = model
        .forward_dense_then_partial(
            &io["hidden_states"],
            &io["timestep"],
            &io["encoder_hidden_states"],
            None,
            &set,
        )
        .unwrap();
    let ours = patchify(&v, [1, 2, 2]).unwrap();
    let theirs = patchify(&io["velocity"], [1, 2, 2]).unwrap();
    let rows = |t: &Tensor, ids: &Tensor| t.index_select(ids, 1).unwrap();
    assert!(rel_l2(&rows(&ours, set.tensor()), &rows(&theirs, set.tensor())) <= 1e-5);
    let inactive: Vec<u32> = (0..n as u32).filter(|i| i % 4 != 1).collect();
    let inactive = Tensor::new(inactive.as_slice(), &Device::Cpu).unwrap();
    let zeros = rows(&ours, &inactive)
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(zeros, 0.0);
}

#[test]
fn stale_cache_rows_change_the_partial_result() {
    // The partial pass must read inactive tokens' K/V from the cache: filling the cache at a
    // different timestep must change what the active tokens see.
    let dir = wan_case("t2v");
    let io = load(&dir.join("io.safetensors"));
    let model = WanModel::load_dir(&dir, None, &Device::Cpu).unwrap();
    let (x, _, grid) = model
        .prepare_inputs(&io["hidden_states"], &io["timestep"])
        .unwrap();
    let state = x.i(0).unwrap();
    let mut den = WanDenoiser::new(&model, grid, &io["encoder_hidden_states"], None, None).unwrap();
    let set = ActiveSet::new(
        (0..grid.len() as u32).step_by(2).collect(),
        grid.len(),
        &Device::Cpu,
    )
    .unwrap();
    den.velocity(&state, 500.0, Branch::Cond, None).unwrap();
    let fresh = den
        .velocity(&state, 500.0, Branch::Cond, Some(&set))
        .unwrap();
    den.velocity(&state, 900.0, Branch::Cond, None).unwrap();
    let stale = den
        .velocity(&state, 500.0, Branch::Cond, Some(&set))
        .unwrap();
    assert!(rel_l2(&stale, &fresh) > 1e-4);
    // Without a dense fill a partial call is an error, not a panic.
    den.reset().unwrap();
    assert!(den
        .velocity(&state, 500.0, Branch::Cond, Some(&set))
        .is_err());
}
