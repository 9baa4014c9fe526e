//! End-to-end checks of `sample_hsa` against an analytic Gaussian-data denoiser.

mod common;

use common::{eval_steps, noise, reference_token, rows, Analytic};
use hsa_core::hsa::planner::predict_token_evaluations;
use hsa_core::{
    sample_fm_euler, sample_hsa, Branch, GroupSpec, Guidance, HsaConfig, HsaRun, Schedule,
    ScheduleKind, ScoreKind, TokenGrid,
};

const P: usize = 4;
const SPREADS: [f64; 5] = [0.0, 0.2, 0.7, 1.5, 3.0];

fn grid() -> TokenGrid {
    TokenGrid::new(2, 3, 4)
}

fn schedule(steps: usize) -> Schedule {
    Schedule::new(ScheduleKind::Linear, steps, 3.0).unwrap()
}

fn run(model: &mut Analytic, sched: &Schedule, scale: f64, config: &HsaConfig) -> HsaRun {
    let x0 = noise(model.grid.len(), P, 11);
    sample_hsa(
        model,
        &x0,
        sched,
        Guidance::new(scale).unwrap(),
        config,
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn dense_spec_reproduces_fm_bit_for_bit() {
    for (scale, tail, switches) in [(1.0, 0, vec![]), (5.0, 0, vec![]), (4.0, 2, vec![7])] {
        let sched = schedule(12);
        let x0 = noise(24, P, 11);
        let mut fm_model = Analytic::new(grid(), P, &SPREADS, 1);
        let fm = sample_fm_euler(
            &mut fm_model,
            &x0,
            &sched,
            Guidance::new(scale).unwrap(),
            &mut |_| {},
        )
        .unwrap();
        let mut model = Analytic::new(grid(), P, &SPREADS, 1);
        let mut config = HsaConfig::new(GroupSpec::dense(), 3, tail);
        config.switch_steps = switches;
        let hsa = run(&mut model, &sched, scale, &config);
        assert_eq!(rows(&hsa.latents), rows(&fm), "scale {scale}");
        assert!(
            model.calls.iter().all(|c| c.ids.is_none()),
            "every call of 1.0:1 is dense"
        );
        assert_eq!(model.calls.len(), fm_model.calls.len());
        assert_eq!(hsa.stats.nfe, fm_model.calls.len());
        assert_eq!(hsa.stats.token_step_fraction, 1.0);
    }
}

/// Each token must follow Euler on its own group's grid: recomputed here token by token from
/// the design's rules, with no use of the sampler's bookkeeping beyond the group assignment.
fn check_groups_follow_their_grids(scale: f64, tail: usize, switches: &[usize]) {
    let (steps, warmup) = (20, 4);
    let sched = schedule(steps);
    let spec: GroupSpec = "0.25:1,0.25:2,0.5:4".parse().unwrap();
    let mut model = Analytic::new(grid(), P, &SPREADS, 2);
    let mut config = HsaConfig::new(spec.clone(), warmup, tail);
    config.switch_steps = switches.to_vec();
    let out = run(&mut model, &sched, scale, &config);
    let map = out.group_map().unwrap();
    let x0 = rows(&noise(24, P, 11));
    let latents = rows(&out.latents);
    let strides = spec.strides();
    for n in 0..24 {
        let m = strides[map.groups[n].unwrap()];
        let evals = eval_steps(m, steps, warmup, tail, switches);
        let expect = reference_token(&model, n, &x0[n], &sched, &evals, scale);
        assert_eq!(latents[n], expect, "token {n} (stride {m}), scale {scale}");
        assert_eq!(map.step_counts[n] as usize, evals.len());
        // Schedule bookkeeping: the chain 0 -> ... -> T telescopes to -sigma_0.
        assert_eq!(evals[0], 0);
        assert_eq!(out.final_positions[n], steps);
    }
    // The model saw exactly the tokens whose grids contain each step.
    for (i, call) in model.cond_calls().iter().enumerate() {
        let expect: Vec<u32> = (0..24u32)
            .filter(|&n| {
                eval_steps(
                    strides[map.groups[n as usize].unwrap()],
                    steps,
                    warmup,
                    tail,
                    switches,
                )
                .contains(&i)
            })
            .collect();
        let got = call.ids.clone().unwrap_or_else(|| (0..24).collect());
        assert_eq!(got, expect, "step {i}");
        assert_eq!(call.timestep, sched.timesteps[i]);
    }
    let dense: Vec<usize> = (0..steps)
        .filter(|&i| model.cond_calls()[i].ids.is_none())
        .collect();
    for s in switches {
        assert!(dense.contains(s), "switch step {s} must be dense");
    }
}

#[test]
fn each_group_follows_euler_on_its_own_grid() {
    check_groups_follow_their_grids(1.0, 0, &[]);
}

#[test]
fn each_group_follows_its_grid_with_cfg_and_tail() {
    check_groups_follow_their_grids(4.5, 3, &[]);
}

#[test]
fn an_expert_switch_is_dense_and_no_jump_crosses_it() {
    // Step 10 is active only for stride 1 and 2 (i - W = 6), so stride-4 tokens are mid-jump.
    check_groups_follow_their_grids(1.0, 0, &[10]);
    check_groups_follow_their_grids(3.0, 2, &[9, 13]);
}

#[test]
fn every_token_lands_on_sigma_zero() {
    // Calm tokens (s = 0) move on a straight line: whatever their grid, they must end exactly
    // at x0 = mu iff their dt's sum to -sigma_0. Checked with sigma_0 = 1 and sigma_0 = 0.9
    // (float timesteps, so the model's sigma is the sampler's).
    let full = Schedule::new(ScheduleKind::Linear, 24, 5.0).unwrap();
    let sigmas: Vec<f64> = full.sigmas.iter().map(|s| 0.9 * s).collect();
    let timesteps = sigmas[..24].iter().map(|s| 1000.0 * s).collect();
    let partial = Schedule { sigmas, timesteps };
    for (kind, sched) in [("sigma_0 = 1", full), ("sigma_0 = 0.9", partial)] {
        let spreads: Vec<f64> = (0..24)
            .map(|n| if n % 2 == 0 { 0.0 } else { 2.0 })
            .collect();
        let mut model = Analytic::with_spreads(grid(), P, &spreads, 3);
        let config = HsaConfig::new("0.2:1,0.3:2,0.3:4,0.2:8".parse().unwrap(), 4, 0);
        let out = run(&mut model, &sched, 1.0, &config);
        let latents = rows(&out.latents);
        let strides: Vec<usize> = (0..24)
            .map(|n| [1, 2, 4, 8][out.group_map().unwrap().groups[n].unwrap()])
            .collect();
        assert!(
            strides.iter().step_by(2).any(|&m| m >= 4),
            "some calm token must take long jumps"
        );
        for n in (0..24).step_by(2) {
            for (p, &got) in latents[n].iter().enumerate() {
                let mu = model.mu[0][n * P + p] as f32;
                assert!(
                    (got - mu).abs() < 2e-5,
                    "{kind:?} token {n} (stride {}): {got} vs {mu}",
                    strides[n]
                );
            }
        }
        assert!(out.final_positions.iter().all(|&p| p == 24));
    }
}

#[test]
fn evaluations_match_the_prediction_exactly() {
    let (steps, warmup) = (20, 3);
    let sched = schedule(steps);
    let plan = hsa_core::plan_budget(0.5, steps, warmup, 0, Some(24)).unwrap();
    let mut model = Analytic::new(grid(), P, &SPREADS, 4);
    let config = HsaConfig::new(plan.spec.clone(), warmup, 0);
    let out = run(&mut model, &sched, 2.0, &config);
    let layout = config.layout(steps).unwrap();
    let predicted = predict_token_evaluations(&plan.spec, &layout, 24, 0);
    let counted: u64 = model.evaluations.iter().map(|&c| c as u64).sum();
    assert_eq!(counted, predicted);
    assert_eq!(out.stats.token_evaluations, predicted);
    assert_eq!(out.stats.token_step_fraction, plan.planned_fraction);
    assert_eq!(model.evaluations, out.group_map().unwrap().step_counts);
    // CFG: both branches see the same sets; NFE counts branch calls, empty steps cost none.
    let cond: Vec<_> = model
        .calls
        .iter()
        .filter(|c| c.branch == Branch::Cond)
        .map(|c| c.ids.clone())
        .collect();
    let uncond: Vec<_> = model
        .calls
        .iter()
        .filter(|c| c.branch == Branch::Uncond)
        .map(|c| c.ids.clone())
        .collect();
    assert_eq!(cond, uncond);
    assert_eq!(out.stats.nfe, model.calls.len());
    assert_eq!(
        out.stats
            .steps
            .iter()
            .map(|s| s.active_tokens as u64)
            .sum::<u64>(),
        predicted
    );
}

#[test]
fn frozen_tokens_never_move_and_are_only_evaluated_densely() {
    let (steps, warmup) = (16, 3);
    let sched = schedule(steps);
    let frozen: Vec<u32> = (0..12).collect(); // the first frame
    let mut model = Analytic::new(grid(), P, &SPREADS, 5);
    let mut config = HsaConfig::new("0.2:1,0.3:2,0.5:4".parse().unwrap(), warmup, 2);
    config.frozen_tokens = frozen.clone();
    config.switch_steps = vec![8];
    let x0 = noise(24, P, 11);
    let out = sample_hsa(
        &mut model,
        &x0,
        &sched,
        Guidance::new(3.0).unwrap(),
        &config,
        &mut |_| {},
    )
    .unwrap();
    let (start, end) = (rows(&x0), rows(&out.latents));
    for &f in &frozen {
        assert_eq!(start[f as usize], end[f as usize], "frozen token {f} moved");
        assert_eq!(out.group_map().unwrap().groups[f as usize], None);
        assert_eq!(out.final_positions[f as usize], 0);
    }
    for n in 12..24 {
        assert_ne!(start[n], end[n]);
    }
    for call in &model.calls {
        if let Some(ids) = &call.ids {
            assert!(
                ids.iter().all(|&t| t >= 12),
                "a frozen token was in a partial set"
            );
        }
    }
    let dense_steps = config.layout(steps).unwrap().dense_steps() as u32;
    assert!(frozen
        .iter()
        .all(|&f| model.evaluations[f as usize] == dense_steps));
    let predicted =
        predict_token_evaluations(&config.groups, &config.layout(steps).unwrap(), 12, 12);
    assert_eq!(
        model.evaluations.iter().map(|&c| c as u64).sum::<u64>(),
        predicted
    );
    // Movable tokens still follow their grids.
    let map = out.group_map().unwrap();
    for n in 12..24 {
        let m = [1, 2, 4][map.groups[n].unwrap()];
        let expect = reference_token(
            &model,
            n,
            &start[n],
            &sched,
            &eval_steps(m, steps, warmup, 2, &[8]),
            3.0,
        );
        assert_eq!(end[n], expect, "token {n}");
    }
}

#[test]
fn allocation_gives_dynamic_tokens_the_most_steps() {
    // Dynamic tokens (large s) are scattered over the grid; calm ones (s = 0) elsewhere.
    let dynamic = [1usize, 6, 11, 13, 20, 22];
    let spreads: Vec<f64> = (0..24)
        .map(|n| if dynamic.contains(&n) { 2.5 } else { 0.0 })
        .collect();
    let spec: GroupSpec = "0.25:1,0.75:4".parse().unwrap(); // 6 tokens in G1
    let sched = schedule(20);
    let groups_of = |score| {
        let mut model = Analytic::with_spreads(grid(), P, &spreads, 6);
        let mut config = HsaConfig::new(spec.clone(), 4, 0);
        config.score = score;
        let out = run(&mut model, &sched, 1.0, &config);
        let g = out.group_map().unwrap().groups.clone();
        (0..24).filter(|&n| g[n] == Some(0)).collect::<Vec<usize>>()
    };
    assert_eq!(groups_of(ScoreKind::RelativeChange), dynamic);
    assert!(groups_of(ScoreKind::Inverse)
        .iter()
        .all(|n| !dynamic.contains(n)));
    let random = groups_of(ScoreKind::Random { seed: 9 });
    assert_eq!(random.len(), 6);
    assert_eq!(
        random,
        groups_of(ScoreKind::Random { seed: 9 }),
        "random allocation is seeded"
    );
    assert_ne!(random, groups_of(ScoreKind::Random { seed: 10 }));
}

#[test]
fn allocation_ties_are_broken_by_token_index() {
    // All tokens identical: every score ties, so the ranking is the token order.
    let mut model = Analytic::with_spreads(grid(), P, &[1.0; 24], 7);
    model.mu = [vec![0.5; 24 * P], vec![0.1; 24 * P]];
    let same_noise =
        candle_core::Tensor::ones((24, P), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    let config = HsaConfig::new("0.25:1,0.25:2,0.5:4".parse().unwrap(), 4, 0);
    let sched = schedule(16);
    let first = sample_hsa(
        &mut model,
        &same_noise,
        &sched,
        Guidance::new(1.0).unwrap(),
        &config,
        &mut |_| {},
    )
    .unwrap();
    let g = first.group_map().unwrap().groups.clone();
    let expect: Vec<Option<usize>> = (0..24)
        .map(|n| {
            Some(if n < 6 {
                0
            } else if n < 12 {
                1
            } else {
                2
            })
        })
        .collect();
    assert_eq!(g, expect);
    let scores = first.scores.unwrap();
    assert!(
        scores.iter().all(|&s| s == scores[0]),
        "identical tokens must tie exactly"
    );
}

#[test]
fn smoothing_pulls_the_neighbourhood_of_a_dynamic_token_into_its_group() {
    // One dynamic token at frame 1, row 1, col 2 (index 12 + 4 + 2 = 18).
    let spreads: Vec<f64> = (0..24).map(|n| if n == 18 { 3.0 } else { 0.0 }).collect();
    let spec: GroupSpec = "0.25:1,0.75:2".parse().unwrap(); // 6 tokens in G1
    let sched = schedule(16);
    let top = |smoothing| {
        let mut model = Analytic::with_spreads(grid(), P, &spreads, 8);
        let mut config = HsaConfig::new(spec.clone(), 4, 0);
        config.smoothing = smoothing;
        let out = run(&mut model, &sched, 1.0, &config);
        let g = out.group_map().unwrap().groups.clone();
        (0..24).filter(|&n| g[n] == Some(0)).collect::<Vec<usize>>()
    };
    // Neighbourhood of (1, 1, 2) in a 3x4 frame: rows 0-2, cols 1-3 -> 9 tokens; the first six
    // by index win the ties.
    assert_eq!(top(true), vec![13, 14, 15, 17, 18, 19]);
    let plain = top(false);
    assert!(plain.contains(&18));
    assert_ne!(plain, top(true));
}

#[test]
fn invalid_settings_are_clear_errors() {
    let sched = schedule(10);
    let x0 = noise(24, P, 1);
    let err = |config: HsaConfig| {
        let mut model = Analytic::new(grid(), P, &SPREADS, 1);
        sample_hsa(
            &mut model,
            &x0,
            &sched,
            Guidance::new(1.0).unwrap(),
            &config,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string()
    };
    let spec: GroupSpec = "0.5:1,0.5:2".parse().unwrap();
    assert!(err(HsaConfig::new(spec.clone(), 8, 3)).contains("exceed"));
    assert!(err(HsaConfig::new(spec.clone(), 1, 0)).contains("at least 2 warm-up steps"));
    let mut c = HsaConfig::new(spec.clone(), 3, 0);
    c.frozen_tokens = vec![24];
    assert!(err(c).contains("out of range"));
    let mut c = HsaConfig::new(spec.clone(), 3, 0);
    c.switch_steps = vec![10];
    assert!(err(c).contains("outside the steps"));
    // Random scoring needs no warm-up at all.
    let mut model = Analytic::new(grid(), P, &SPREADS, 1);
    let mut c = HsaConfig::new(spec, 0, 0);
    c.score = ScoreKind::Random { seed: 1 };
    assert!(sample_hsa(
        &mut model,
        &x0,
        &sched,
        Guidance::new(1.0).unwrap(),
        &c,
        &mut |_| {}
    )
    .is_ok());
    // A state of the wrong shape.
    let mut model = Analytic::new(grid(), P, &SPREADS, 1);
    let bad = noise(23, P, 1);
    let c = HsaConfig::new("1.0:1".parse().unwrap(), 3, 0);
    assert!(sample_hsa(
        &mut model,
        &bad,
        &sched,
        Guidance::new(1.0).unwrap(),
        &c,
        &mut |_| {}
    )
    .is_err());
}

#[test]
fn observer_and_stats_report_every_step() {
    let sched = schedule(12);
    let mut model = Analytic::new(grid(), P, &SPREADS, 1);
    let config = HsaConfig::new("0.5:1,0.5:4".parse().unwrap(), 3, 0);
    let mut events = Vec::new();
    let out = sample_hsa(
        &mut model,
        &noise(24, P, 1),
        &sched,
        Guidance::new(1.0).unwrap(),
        &config,
        &mut |e| events.push(e.clone()),
    )
    .unwrap();
    assert_eq!(events.len(), 12);
    assert_eq!(out.stats.steps.len(), 12);
    for (e, s) in events.iter().zip(&out.stats.steps) {
        assert_eq!(
            (e.index, e.sigma, e.active_fraction, e.nfe),
            (s.index, s.sigma, s.active_fraction, s.nfe)
        );
    }
    // Steps 4, 5, 6 of the hetero phase evaluate only the stride-1 half.
    assert_eq!(events[4].active_fraction, 0.5);
    assert_eq!(events[3].active_fraction, 1.0);
    let json: serde_json::Value = serde_json::from_str(&out.stats.to_json().unwrap()).unwrap();
    assert_eq!(
        json["group_map"]["step_counts"].as_array().unwrap().len(),
        24
    );
    assert_eq!(json["group_map"]["strides"], serde_json::json!([1, 4]));
}
