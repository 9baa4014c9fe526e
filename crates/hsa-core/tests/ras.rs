//! The RAS-style baseline against the analytic denoiser.

mod common;

use common::{noise, rows, Analytic};
use hsa_core::ras::ras_select;
use hsa_core::{
    sample_fm_euler, sample_ras, Guidance, RasConfig, RasRun, Schedule, ScheduleKind, TokenGrid,
};

const P: usize = 4;
const SPREADS: [f64; 5] = [0.0, 0.2, 0.7, 1.5, 3.0];

fn schedule(steps: usize) -> Schedule {
    Schedule::new(ScheduleKind::Linear, steps, 3.0).unwrap()
}

fn run(model: &mut Analytic, steps: usize, scale: f64, config: &RasConfig) -> RasRun {
    sample_ras(
        model,
        &noise(24, P, 5),
        &schedule(steps),
        Guidance::new(scale).unwrap(),
        config,
        &mut |_| {},
    )
    .unwrap()
}

fn model(seed: u64) -> Analytic {
    Analytic::new(TokenGrid::new(2, 3, 4), P, &SPREADS, seed)
}

#[test]
fn ratio_one_is_fm_bit_for_bit() {
    let mut fm_model = model(1);
    let fm = sample_fm_euler(
        &mut fm_model,
        &noise(24, P, 5),
        &schedule(12),
        Guidance::new(3.0).unwrap(),
        &mut |_| {},
    )
    .unwrap();
    let mut m = model(1);
    let config = RasConfig {
        ratio: 1.0,
        ..RasConfig::for_steps(12)
    };
    let out = run(&mut m, 12, 3.0, &config);
    assert_eq!(rows(&out.latents), rows(&fm));
    assert!(m.calls.iter().all(|c| c.ids.is_none()));
}

#[test]
fn uses_its_ratio_and_dense_resets() {
    let steps = 20;
    let config = RasConfig {
        ratio: 0.25,
        reset_interval: 5,
        ..RasConfig::for_steps(steps)
    };
    assert_eq!(config.warmup, 3);
    let resets = config.reset_steps(steps);
    assert_eq!(resets, vec![8, 13, 18]);
    let mut m = model(2);
    let out = run(&mut m, steps, 1.0, &config);
    let calls = m.cond_calls();
    assert_eq!(calls.len(), steps);
    for (i, call) in calls.iter().enumerate() {
        let dense = i < 3 || resets.contains(&i);
        match &call.ids {
            None => assert!(dense, "step {i} should be re-ranked"),
            Some(ids) => {
                assert!(!dense, "step {i} should be dense");
                assert_eq!(ids.len(), 6, "24 - floor(0.75·24) tokens at step {i}");
            }
        }
    }
    let dense = (3 + resets.len()) as f64;
    let expect = (dense * 24.0 + (steps as f64 - dense) * 6.0) / (24.0 * steps as f64);
    assert!((out.stats.token_step_fraction - expect).abs() < 1e-12);
    assert_eq!(
        out.stats.token_evaluations,
        m.evaluations.iter().map(|&c| c as u64).sum::<u64>()
    );
    assert!(out.final_positions.iter().all(|&p| p == steps));
}

/// Replays the run from the recorded calls: every token takes a plain Euler step at every step
/// with its last evaluated velocity, and the selection at each re-ranked step is the top of
/// `mean|v| · exp(0.1 · skipped)`.
#[test]
fn stale_tokens_reuse_their_last_velocity_and_selection_follows_the_boosted_metric() {
    let steps = 16;
    let sched = schedule(steps);
    let config = RasConfig {
        ratio: 0.5,
        reset_interval: 6,
        ..RasConfig::for_steps(steps)
    };
    let mut m = model(3);
    let out = run(&mut m, steps, 1.0, &config);
    let mut x = rows(&noise(24, P, 5));
    let mut cache = vec![vec![0f32; P]; 24];
    let mut metric = vec![0f64; 24];
    let mut skipped = vec![0u32; 24];
    for (i, call) in m.cond_calls().iter().enumerate() {
        let ids: Vec<u32> = call.ids.clone().unwrap_or_else(|| (0..24).collect());
        if call.ids.is_some() {
            let all: Vec<u32> = (0..24).collect();
            assert_eq!(
                ids,
                ras_select(&metric, &skipped, &all, 12, 0.1, None),
                "selection at step {i}"
            );
            skipped.iter_mut().for_each(|k| *k += 1);
        }
        for (&t, v) in ids.iter().zip(&call.v) {
            cache[t as usize] = v.clone();
            metric[t as usize] = v.iter().map(|a| a.abs() as f64).sum::<f64>() / P as f64;
            skipped[t as usize] = 0;
        }
        let dt = (sched.sigmas[i + 1] - sched.sigmas[i]) as f32;
        for n in 0..24 {
            for p in 0..P {
                x[n][p] += cache[n][p] * dt;
            }
        }
    }
    assert_eq!(rows(&out.latents), x);
}

#[test]
fn max_skip_bounds_staleness_and_starvation_can_be_switched_off() {
    let steps = 20;
    let longest_wait = |config: &RasConfig| {
        let mut m = model(4);
        run(&mut m, steps, 1.0, config);
        let mut wait = [0usize; 24];
        let mut longest = 0;
        for call in m.cond_calls() {
            let ids = call.ids.clone().unwrap_or_else(|| (0..24).collect());
            for (n, w) in wait.iter_mut().enumerate() {
                *w = if ids.contains(&(n as u32)) { 0 } else { *w + 1 };
                longest = longest.max(*w);
            }
        }
        longest
    };
    let base = RasConfig {
        ratio: 0.5,
        reset_interval: 0,
        starvation_scale: 0.0,
        ..RasConfig::for_steps(steps)
    };
    let starved = longest_wait(&base);
    assert!(
        starved >= 8,
        "without boost or resets calm tokens wait long ({starved})"
    );
    assert_eq!(
        longest_wait(&RasConfig {
            max_skip: Some(2),
            ..base.clone()
        }),
        2
    );
    assert!(
        longest_wait(&RasConfig {
            reset_interval: 4,
            ..base.clone()
        }) <= 4
    );
}

#[test]
fn frozen_tokens_never_move() {
    let config = RasConfig {
        frozen_tokens: (0..12).collect(),
        switch_steps: vec![9],
        ..RasConfig::for_steps(16)
    };
    let mut m = model(5);
    let x0 = noise(24, P, 5);
    let out = sample_ras(
        &mut m,
        &x0,
        &schedule(16),
        Guidance::new(2.0).unwrap(),
        &config,
        &mut |_| {},
    )
    .unwrap();
    let (a, b) = (rows(&x0), rows(&out.latents));
    assert!((0..12).all(|n| a[n] == b[n]));
    assert!((12..24).all(|n| a[n] != b[n]));
    for call in &m.calls {
        if let Some(ids) = &call.ids {
            assert!(ids.iter().all(|&t| t >= 12));
            assert_eq!(ids.len(), 6);
        }
    }
    assert!(m.cond_calls()[9].ids.is_none(), "switch step is dense");
}

#[test]
fn bad_settings_are_errors() {
    let mut m = model(1);
    let x0 = noise(24, P, 5);
    for config in [
        RasConfig {
            ratio: 0.0,
            ..RasConfig::for_steps(10)
        },
        RasConfig {
            starvation_scale: -1.0,
            ..RasConfig::for_steps(10)
        },
        RasConfig {
            warmup: 11,
            ..RasConfig::for_steps(10)
        },
    ] {
        assert!(sample_ras(
            &mut m,
            &x0,
            &schedule(10),
            Guidance::new(1.0).unwrap(),
            &config,
            &mut |_| {}
        )
        .is_err());
    }
}
