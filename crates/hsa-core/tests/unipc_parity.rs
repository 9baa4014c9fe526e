//! UniPC against diffusers' `UniPCMultistepScheduler` (Wan configuration) on an analytic flow
//! model: `tests/fixtures/unipc.safetensors`, made by tools/fixtures/make_unipc_fixtures.py
//! (the model is defined there and restated in [`Fixture`] below).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use hsa_core::{
    sample_fm_euler, sample_unipc, ActiveSet, Branch, CoreError, Denoiser, Guidance, Result,
    Schedule, ScheduleKind, TokenGrid, UniPcSolver,
};

/// Max-norm relative error allowed per state (f32 arithmetic, coefficients in f64).
const TOL: f64 = 1e-5;
const CASES: usize = 11;

fn tables() -> HashMap<String, Tensor> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/unipc.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `max|a - b| / max|b|`.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    let scale = b.iter().map(|b| b.abs() as f64).fold(0.0, f64::max);
    diff / scale
}

/// The fixture's analytic two-branch model (see make_unipc_fixtures.py). Records the state and
/// timestep of every cond call, i.e. the sampler's state at the start of every step.
struct Fixture {
    mu: [Vec<f64>; 2],
    w: [Vec<f64>; 2],
    s2: Vec<f64>,
    tanh_scale: [f64; 2],
    states: Vec<Vec<f32>>,
    timesteps: Vec<f64>,
}

const N: usize = 16;
const P: usize = 4;

impl Fixture {
    fn new(t: &HashMap<String, Tensor>) -> Self {
        let c = f64s(&t["tanh_scale"]);
        Self {
            mu: [f64s(&t["mu_cond"]), f64s(&t["mu_uncond"])],
            w: [f64s(&t["w_cond"]), f64s(&t["w_uncond"])],
            s2: f64s(&t["s2"]),
            tanh_scale: [c[0], c[1]],
            states: Vec::new(),
            timesteps: Vec::new(),
        }
    }

    fn eval(&self, branch: usize, x: &[f32], timestep: f64) -> Vec<f32> {
        let sigma = timestep / 1000.0;
        let a = 1.0 - sigma;
        let (mu, w, c) = (&self.mu[branch], &self.w[branch], self.tanh_scale[branch]);
        let mut out = Vec::with_capacity(N * P);
        for n in 0..N {
            let s2 = self.s2[n];
            let k = (sigma - a * s2) / (a * a * s2 + sigma * sigma);
            for p in 0..P {
                let mix: f64 = (0..P).map(|q| w[p * P + q] * x[n * P + q] as f64).sum();
                let m = mu[n * P + p];
                let v = -m + k * (x[n * P + p] as f64 - a * m) + c * mix.tanh();
                out.push(v as f32);
            }
        }
        out
    }
}

impl Denoiser for Fixture {
    fn grid(&self) -> TokenGrid {
        TokenGrid::new(1, 4, 4)
    }
    fn token_dim(&self) -> usize {
        P
    }
    fn has_uncond(&self) -> bool {
        true
    }
    fn reset(&mut self) -> Result<()> {
        self.states.clear();
        self.timesteps.clear();
        Ok(())
    }
    fn velocity(
        &mut self,
        x: &Tensor,
        timestep: f64,
        branch: Branch,
        active: Option<&ActiveSet>,
    ) -> Result<Tensor> {
        if active.is_some() {
            return Err(CoreError::Denoiser("fixture model is dense only".into()));
        }
        let xs = f32s(x);
        let v = self.eval(branch.index(), &xs, timestep);
        if branch == Branch::Cond {
            self.states.push(xs);
            self.timesteps.push(timestep);
        }
        Ok(Tensor::from_vec(v, (N, P), x.device())?)
    }
}

struct Case {
    name: String,
    steps: usize,
    schedule: Schedule,
    guidance: Guidance,
    disable_corrector: Vec<usize>,
    noise: Tensor,
    sigmas: Vec<f64>,
    timesteps: Vec<f64>,
    /// `[T+1]` states, `[0]` = noise.
    trajectory: Vec<Vec<f32>>,
    /// `[T]` guided velocities diffusers handed to `scheduler.step`.
    model_outputs: Vec<Vec<f32>>,
}

fn cases(t: &HashMap<String, Tensor>) -> Vec<Case> {
    let mut names: Vec<String> = t
        .keys()
        .filter_map(|k| k.strip_suffix("_settings").map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names.len(), CASES, "{names:?}");
    names
        .into_iter()
        .map(|name| {
            let s = f64s(&t[&format!("{name}_settings")]);
            let (steps, shift, scale, boundary, low, kind) =
                (s[0] as usize, s[1], s[2], s[3], s[4], s[5]);
            let kind = if kind == 0.0 {
                ScheduleKind::DiffusersUniPc
            } else {
                ScheduleKind::WanOfficial
            };
            let mut guidance = Guidance::new(scale).unwrap();
            if boundary >= 0.0 {
                guidance = guidance.with_low_noise(boundary, low).unwrap();
            }
            let rows = |key: &str| -> Vec<Vec<f32>> {
                let x = &t[&format!("{name}_{key}")];
                (0..x.dim(0).unwrap())
                    .map(|i| f32s(&x.get(i).unwrap()))
                    .collect()
            };
            Case {
                steps,
                schedule: Schedule::new(kind, steps, shift).unwrap(),
                guidance,
                disable_corrector: t
                    .get(&format!("{name}_disable_corrector"))
                    .map(|d| {
                        d.to_vec1::<i64>()
                            .unwrap()
                            .into_iter()
                            .map(|i| i as usize)
                            .collect()
                    })
                    .unwrap_or_default(),
                noise: t[&format!("{name}_noise")].clone(),
                sigmas: f64s(&t[&format!("{name}_sigmas")]),
                timesteps: f64s(&t[&format!("{name}_timesteps")]),
                trajectory: rows("trajectory"),
                model_outputs: rows("model_outputs"),
                name,
            }
        })
        .collect()
}

/// A solver loop over the fixture model, returning every state (`[0]` = noise).
fn solver_run(model: &mut Fixture, case: &Case, solver: UniPcSolver) -> Vec<Vec<f32>> {
    let mut solver = solver;
    let mut x = case.noise.clone();
    let mut states = vec![f32s(&x)];
    for i in 0..case.steps {
        let v =
            hsa_core::guided_velocity(model, &x, case.schedule.timesteps[i], case.guidance, None)
                .unwrap();
        x = solver.step(&x, &v, i).unwrap();
        states.push(f32s(&x));
    }
    states
}

/// Largest per-step error of `ours` against the fixture trajectory, and the final-state error.
fn trajectory_err(ours: &[Vec<f32>], reference: &[Vec<f32>], name: &str) -> (f64, f64) {
    assert_eq!(ours.len(), reference.len(), "{name}");
    let mut worst = 0.0f64;
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        let e = rel_err(a, b);
        assert!(
            e <= TOL,
            "{name}: state {i} relative error {e:.3e} > {TOL:.0e}"
        );
        worst = worst.max(e);
    }
    (
        worst,
        rel_err(ours.last().unwrap(), reference.last().unwrap()),
    )
}

#[test]
fn schedules_equal_the_ones_diffusers_sampled_with() {
    for case in cases(&tables()) {
        assert_eq!(case.sigmas.len(), case.steps + 1, "{}", case.name);
        for (i, (a, b)) in case.schedule.sigmas.iter().zip(&case.sigmas).enumerate() {
            // diffusers keeps sigmas in f32; ours are f64 that round to the same f32.
            assert_eq!(*a as f32 as f64, *b, "{} sigma[{i}]", case.name);
        }
        assert_eq!(case.schedule.timesteps, case.timesteps, "{}", case.name);
    }
}

#[test]
fn analytic_model_matches_the_fixture_model() {
    // The fixture's guided velocity at diffusers' states, recomputed here: isolates the model
    // from the solver if the trajectory test fails.
    let t = tables();
    let mut model = Fixture::new(&t);
    for case in cases(&t) {
        for i in 0..case.steps {
            let x = Tensor::from_vec(case.trajectory[i].clone(), (N, P), &Device::Cpu).unwrap();
            let v =
                hsa_core::guided_velocity(&mut model, &x, case.timesteps[i], case.guidance, None)
                    .unwrap();
            let e = rel_err(&f32s(&v), &case.model_outputs[i]);
            assert!(e <= 1e-6, "{} step {i}: velocity error {e:.3e}", case.name);
        }
    }
}

#[test]
fn unipc_reproduces_diffusers_trajectories() {
    let t = tables();
    let mut model = Fixture::new(&t);
    let mut overall = 0.0f64;
    let mut checked = 0;
    for case in cases(&t) {
        let (states, final_state) = if case.disable_corrector.is_empty() {
            // The sampler itself: its state at step i is what the model saw at step i.
            let mut events = Vec::new();
            let out = sample_unipc(
                &mut model,
                &case.noise,
                &case.schedule,
                case.guidance,
                &mut |e| events.push(e.clone()),
            )
            .unwrap();
            assert_eq!(events.len(), case.steps, "{}", case.name);
            let nfe = if case.guidance.uses_uncond() { 2 } else { 1 };
            for (i, e) in events.iter().enumerate() {
                assert_eq!(
                    (e.index, e.steps, e.nfe),
                    (i, case.steps, nfe),
                    "{}",
                    case.name
                );
                assert_eq!(e.sigma, case.schedule.sigmas[i]);
            }
            assert_eq!(
                model.timesteps, case.timesteps,
                "{}: model timesteps",
                case.name
            );
            let mut states = model.states.clone();
            states.push(f32s(&out));
            (states, f32s(&out))
        } else {
            let solver = UniPcSolver::new(&case.schedule)
                .unwrap()
                .with_disabled_corrector(case.disable_corrector.iter().copied());
            let states = solver_run(&mut model, &case, solver);
            let last = states.last().unwrap().clone();
            (states, last)
        };
        let (worst, fin) = trajectory_err(&states, &case.trajectory, &case.name);
        assert!(fin <= TOL);
        assert_eq!(&final_state, states.last().unwrap());
        println!(
            "{:20} steps {:2}: max state error {worst:.2e}, final {fin:.2e}",
            case.name, case.steps
        );
        overall = overall.max(worst);
        checked += 1;
    }
    assert_eq!(checked, CASES);
    println!("worst relative error over all cases and steps: {overall:.2e}");
}

#[test]
fn the_solver_loop_equals_the_sampler_bit_for_bit() {
    let t = tables();
    let mut model = Fixture::new(&t);
    let case = cases(&t)
        .into_iter()
        .find(|c| c.name == "d_n20_s5_experts")
        .unwrap();
    let states = solver_run(&mut model, &case, UniPcSolver::new(&case.schedule).unwrap());
    let out = sample_unipc(
        &mut model,
        &case.noise,
        &case.schedule,
        case.guidance,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(&f32s(&out), states.last().unwrap());
}

#[test]
fn the_corrector_and_the_second_order_terms_matter() {
    // The same noise sampled by UniPC, by its predictor alone (UniP) and by Euler ends in
    // clearly different states, so the parity test would fail without the corrector.
    let t = tables();
    let mut model = Fixture::new(&t);
    let all = cases(&t);
    let full = all.iter().find(|c| c.name == "d_n10_s3").unwrap();
    let unip = all.iter().find(|c| c.name == "d_n10_s3_nocorr").unwrap();
    assert_eq!(f32s(&full.noise), f32s(&unip.noise));
    let reference = full.trajectory.last().unwrap();

    let ours = f32s(
        &sample_unipc(
            &mut model,
            &full.noise,
            &full.schedule,
            full.guidance,
            &mut |_| {},
        )
        .unwrap(),
    );
    let predictor_only = solver_run(
        &mut model,
        full,
        UniPcSolver::new(&full.schedule)
            .unwrap()
            .with_disabled_corrector(0..full.steps),
    );
    let euler = f32s(
        &sample_fm_euler(
            &mut model,
            &full.noise,
            &full.schedule,
            full.guidance,
            &mut |_| {},
        )
        .unwrap(),
    );
    let d_unip = rel_err(predictor_only.last().unwrap(), reference);
    let d_euler = rel_err(&euler, reference);
    println!("UniPC vs UniP {d_unip:.2e}, vs Euler {d_euler:.2e} (tolerance {TOL:.0e})");
    assert!(rel_err(&ours, reference) <= TOL);
    // Our predictor-only run is diffusers' predictor-only run...
    assert!(
        rel_err(
            predictor_only.last().unwrap(),
            unip.trajectory.last().unwrap()
        ) <= TOL
    );
    // ...and both are far outside the tolerance from UniPC, as is Euler.
    assert!(
        d_unip > 100.0 * TOL,
        "corrector changed the result by only {d_unip:.2e}"
    );
    assert!(
        d_euler > 100.0 * TOL,
        "UniPC is not distinguishable from Euler: {d_euler:.2e}"
    );
}

#[test]
fn bad_inputs_are_errors() {
    let t = tables();
    let mut model = Fixture::new(&t);
    let schedule = Schedule::new(ScheduleKind::DiffusersUniPc, 4, 3.0).unwrap();
    let g = Guidance::new(1.0).unwrap();
    let wrong = Tensor::zeros((N, P + 1), DType::F32, &Device::Cpu).unwrap();
    match sample_unipc(&mut model, &wrong, &schedule, g, &mut |_| {}) {
        Err(CoreError::StateShape { got, expected }) => {
            assert_eq!((got, expected), (vec![N, P + 1], vec![N, P]));
        }
        other => panic!("expected a state-shape error, got {other:?}"),
    }
    let noise = Tensor::zeros((N, P), DType::F32, &Device::Cpu).unwrap();
    let mut broken = schedule.clone();
    broken.sigmas.swap(1, 2);
    assert!(matches!(
        sample_unipc(&mut model, &noise, &broken, g, &mut |_| {}),
        Err(CoreError::InvalidSetting(_))
    ));
    let mut short = schedule.clone();
    short.sigmas.pop();
    assert!(matches!(
        sample_unipc(&mut model, &noise, &short, g, &mut |_| {}),
        Err(CoreError::InvalidSetting(_))
    ));
}
