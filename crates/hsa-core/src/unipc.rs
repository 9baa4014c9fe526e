//! UniPC multistep sampling for flow-matching models: the solver Wan uses by default.
//!
//! This is the configuration both reference implementations run for Wan — diffusers'
//! `UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
//! solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True)` and the official
//! `FlowUniPCMultistepScheduler` (a fork with the same step maths): a second-order multistep
//! predictor (UniP) in the data (x0) domain with the "bh2" weighting B = e^(-h) - 1 (h: the
//! step in lambda), and a corrector (UniC) that refines each new state with the model output
//! evaluated there, at no extra model call. wan-spec §3.3 restates the update.
//!
//! With `alpha = 1 - sigma` and `lambda = ln(alpha) - ln(sigma)` (log signal-to-noise ratio), the
//! model's velocity v at state x and noise level sigma_i gives the x0 prediction
//! `m_i = x - sigma_i·v`. Step i (sigma_i -> sigma_{i+1}) then
//!
//! 1. corrects the incoming state (from step 1 on), re-taking the previous step from the state
//!    it started at with `m_i` added to the fit (order of the previous predictor, 1 or 2);
//! 2. predicts the next state from the corrected one with order
//!    `min(2, T - i, 1 + steps taken)`: first order at the first step (no history) and at the
//!    last step (`lower_order_final`; the step to sigma = 0 is the x0 prediction itself).
//!
//! The x0 prediction always comes from the state the model saw (before correction), and the
//! correction of the last state is never used, exactly as in the references.

use std::collections::BTreeSet;

use candle_core::{DType, Tensor};

use crate::euler::{check_state, sample_dense, StepEvent};
use crate::{CoreError, Denoiser, Guidance, Result, Schedule};

/// Highest order of the multistep predictor (diffusers' `solver_order`, Wan's default 2).
const SOLVER_ORDER: usize = 2;

/// The UniPC-bh2 solver state of one sampling run: the schedule's noise levels and the x0
/// predictions, corrector input and order that carry from one step to the next.
///
/// The solver does not call a model; a sampler hands it each step's velocity through
/// [`UniPcSolver::step`], so any sampler that produces a full-state velocity per step can use it.
/// Tensor maths is f32 (like the references). The step coefficients are computed in f64 from
/// the sigmas rounded to f32, because both references keep their sigma table in an f32 tensor:
/// near sigma = 1 that rounding moves `alpha = 1 - sigma` (and so lambda) by about 1 %, which
/// changes the first corrector visibly.
#[derive(Debug, Clone)]
pub struct UniPcSolver {
    /// sigma_0 .. sigma_T as f32 values (widened), strictly decreasing, in [0, 1].
    sigmas: Vec<f64>,
    /// lambda(sigma_i); -inf at sigma = 1, +inf at sigma = 0.
    lambdas: Vec<f64>,
    /// x0 predictions of the last steps, newest last (at most [`SOLVER_ORDER`]).
    x0_history: Vec<Tensor>,
    /// The (corrected) state the last predictor started from: the corrector's base.
    last_sample: Option<Tensor>,
    /// Order of the last predictor step, which the next corrector uses too.
    last_order: usize,
    /// Steps taken, capped at [`SOLVER_ORDER`] (diffusers' `lower_order_nums`).
    lower_order_nums: usize,
    /// Index of the next step.
    next_step: usize,
    /// Steps i whose following correction (applied at step i + 1) is skipped.
    disabled_corrector: BTreeSet<usize>,
}

impl UniPcSolver {
    /// A solver for the noise levels of `schedule`.
    pub fn new(schedule: &Schedule) -> Result<Self> {
        if schedule.sigmas.len() != schedule.timesteps.len() + 1 {
            return Err(CoreError::InvalidSetting(format!(
                "schedule has {} sigmas for {} timesteps (expected one more sigma than timesteps)",
                schedule.sigmas.len(),
                schedule.timesteps.len()
            )));
        }
        Self::from_sigmas(&schedule.sigmas)
    }

    /// A solver for the noise levels `sigmas` (T+1 values, strictly decreasing, within [0, 1];
    /// usually ending at 0).
    pub fn from_sigmas(sigmas: &[f64]) -> Result<Self> {
        if sigmas.len() < 2 {
            return Err(CoreError::InvalidSetting(format!(
                "UniPC needs at least 2 sigmas (one step), got {}",
                sigmas.len()
            )));
        }
        if let Some(s) = sigmas
            .iter()
            .find(|s| !(s.is_finite() && (0.0..=1.0).contains(*s)))
        {
            return Err(CoreError::InvalidSetting(format!(
                "UniPC sigmas must lie in [0, 1], got {s}"
            )));
        }
        let rounded: Vec<f64> = sigmas.iter().map(|&s| s as f32 as f64).collect();
        if let Some(i) = rounded.windows(2).position(|w| w[0] <= w[1]) {
            return Err(CoreError::InvalidSetting(format!(
                "UniPC sigmas must be strictly decreasing (also in f32): sigma[{i}] = {} then \
                 sigma[{}] = {}",
                sigmas[i],
                i + 1,
                sigmas[i + 1]
            )));
        }
        let lambdas = rounded.iter().map(|&s| lambda(s)).collect();
        Ok(Self {
            sigmas: rounded,
            lambdas,
            x0_history: Vec::with_capacity(SOLVER_ORDER),
            last_sample: None,
            last_order: 0,
            lower_order_nums: 0,
            next_step: 0,
            disabled_corrector: BTreeSet::new(),
        })
    }

    /// Skips the correction that would follow each step in `steps` (diffusers'
    /// `disable_corrector`; step i's result is corrected at step i + 1). Empty by default, which
    /// is what Wan runs; a predictor-only UniP run disables every step.
    pub fn with_disabled_corrector(mut self, steps: impl IntoIterator<Item = usize>) -> Self {
        self.disabled_corrector = steps.into_iter().collect();
        self
    }

    /// Number of steps T.
    pub fn steps(&self) -> usize {
        self.sigmas.len() - 1
    }

    /// Index of the next step to take (0 before the first, T after the last).
    pub fn next_step(&self) -> usize {
        self.next_step
    }

    /// The most recent x0 prediction (`x - sigma·v` of the last step), if any step was taken.
    pub fn x0_prediction(&self) -> Option<&Tensor> {
        self.x0_history.last()
    }

    /// Forgets all history so the solver can run its schedule again.
    pub fn reset(&mut self) {
        self.x0_history.clear();
        self.last_sample = None;
        self.last_order = 0;
        self.lower_order_nums = 0;
        self.next_step = 0;
    }

    /// Takes step `i` (sigma_i -> sigma_{i+1}) from state `x` with the model's (guided)
    /// velocity `velocity` at x, and returns the next state. Steps must come in order
    /// 0, 1, ..., T-1, each from the state the previous call returned.
    pub fn step(&mut self, x: &Tensor, velocity: &Tensor, i: usize) -> Result<Tensor> {
        let steps = self.steps();
        if self.next_step == steps {
            return Err(CoreError::InvalidSetting(format!(
                "UniPC step {i} asked for, but all {steps} steps are taken (reset to rerun)"
            )));
        }
        if i != self.next_step {
            return Err(CoreError::InvalidSetting(format!(
                "UniPC step {i} out of order: the next step of this {steps}-step solver is {}",
                self.next_step
            )));
        }
        if velocity.dims() != x.dims() {
            return Err(CoreError::InvalidSetting(format!(
                "UniPC velocity shape {:?} does not match the state shape {:?}",
                velocity.dims(),
                x.dims()
            )));
        }
        if let Some(prev) = self.x0_history.last() {
            if prev.dims() != x.dims() {
                return Err(CoreError::InvalidSetting(format!(
                    "UniPC state shape {:?} changed from the previous step's {:?}",
                    x.dims(),
                    prev.dims()
                )));
            }
        }
        let x = x.to_dtype(DType::F32)?;
        let velocity = velocity.to_dtype(DType::F32)?;
        let sigma = self.sigmas[i];
        // x0 prediction from the state the model saw.
        let m_new = (&x - (velocity * sigma)?)?;

        // UniC: redo step i-1 from its start with m_new in the fit.
        let x = match &self.last_sample {
            Some(last) if i > 0 && !self.disabled_corrector.contains(&(i - 1)) => {
                self.correct(last, &m_new, i)?
            }
            _ => x,
        };

        if self.x0_history.len() == SOLVER_ORDER {
            self.x0_history.remove(0);
        }
        self.x0_history.push(m_new);
        // lower_order_final: the order never exceeds the number of remaining steps.
        let order = SOLVER_ORDER.min(steps - i).min(self.lower_order_nums + 1);
        let next = self.predict(&x, i, order)?;
        self.last_sample = Some(x);
        self.last_order = order;
        self.lower_order_nums = (self.lower_order_nums + 1).min(SOLVER_ORDER);
        self.next_step = i + 1;
        Ok(next)
    }

    /// UniP from sigma_i to sigma_{i+1} starting at (corrected) `x`, with the x0 predictions in
    /// the history (newest = this step's).
    fn predict(&self, x: &Tensor, i: usize, order: usize) -> Result<Tensor> {
        let m0 = &self.x0_history[self.x0_history.len() - 1];
        let (s, t) = (self.sigmas[i], self.sigmas[i + 1]);
        if t == 0.0 {
            // alpha = 1, lambda = +inf, phi_1 = e^-inf - 1 = -1: the step lands on the x0
            // prediction (order is 1 here: this is always the last step).
            return Ok(m0.clone());
        }
        let h = self.lambdas[i + 1] - self.lambdas[i];
        let (alpha_t, hh) = (1.0 - t, -h);
        let phi1 = hh.exp_m1();
        let b_h = hh.exp_m1(); // bh2
        let base = ((x * (t / s))? - (m0 * (alpha_t * phi1))?)?;
        if order < 2 {
            return Ok(base);
        }
        // Second order: D1 = (m_{i-1} - m_i) / r with r = (lambda_{i-1} - lambda_i) / h, weight 1/2.
        let m1 = &self.x0_history[self.x0_history.len() - 2];
        let r = (self.lambdas[i - 1] - self.lambdas[i]) / h;
        let c = alpha_t * b_h * 0.5 / r;
        Ok((base - ((m1 - m0)? * c)?)?)
    }

    /// UniC at step i: re-takes step i-1 (sigma_{i-1} -> sigma_i) from `last` (the state that
    /// step started from) using the x0 predictions of step i-1 (and i-2 at order 2) and `m_new`
    /// (step i's, not yet in the history).
    fn correct(&self, last: &Tensor, m_new: &Tensor, i: usize) -> Result<Tensor> {
        let order = self.last_order;
        let m0 = &self.x0_history[self.x0_history.len() - 1];
        let (s, t) = (self.sigmas[i - 1], self.sigmas[i]);
        let h = self.lambdas[i] - self.lambdas[i - 1];
        let (alpha_t, hh) = (1.0 - t, -h);
        let phi1 = hh.exp_m1();
        let b_h = hh.exp_m1(); // bh2
        let base = ((last * (t / s))? - (m0 * (alpha_t * phi1))?)?;
        let d_new = (m_new - m0)?;
        if order < 2 {
            return Ok((base - (d_new * (alpha_t * b_h * 0.5))?)?);
        }
        // Second order: solve [[1, 1], [r, 1]]·rho = b for the weights of D1 and of d_new.
        let m1 = &self.x0_history[self.x0_history.len() - 2];
        let r = (self.lambdas[i - 2] - self.lambdas[i - 1]) / h;
        let g1 = phi1 / hh - 1.0;
        let b1 = g1 / b_h;
        let g2 = g1 / hh - 0.5;
        let b2 = g2 * 2.0 / b_h;
        // r < 0 always (lambda increases along the schedule), so r - 1 != 0; an infinite r
        // (sigma = 1 at step i-2) gives rho0 = 0 and D1 = 0, the first-order limit.
        let rho0 = (b2 - b1) / (r - 1.0);
        let rho1 = b1 - rho0;
        let c_d1 = alpha_t * b_h * rho0 / r;
        let c_new = alpha_t * b_h * rho1;
        let out = (base - ((m1 - m0)? * c_d1)?)?;
        Ok((out - (d_new * c_new)?)?)
    }
}

/// Log signal-to-noise ratio `ln(1 - sigma) - ln(sigma)` of the flow path.
fn lambda(sigma: f64) -> f64 {
    (1.0 - sigma).ln() - sigma.ln()
}

/// UniPC-bh2 (order 2, x0 prediction, lower order at the last step) over `schedule`, every token
/// evaluated at every step, with classifier-free guidance through [`crate::guided_velocity`] (its
/// per-timestep scale covers the two-expert switch). `noise` is the initial state `[N, P]`;
/// returns the final sample. One model evaluation per branch and step, like Euler.
///
/// Pair it with [`crate::ScheduleKind::DiffusersUniPc`] (diffusers' Wan pipelines) or
/// [`crate::ScheduleKind::WanOfficial`] (the official code) to reproduce those samplers.
pub fn sample_unipc(
    denoiser: &mut dyn Denoiser,
    noise: &Tensor,
    schedule: &Schedule,
    guidance: Guidance,
    observer: &mut dyn FnMut(&StepEvent),
) -> Result<Tensor> {
    check_state(denoiser, noise)?;
    let mut solver = UniPcSolver::new(schedule)?;
    sample_dense(
        denoiser,
        noise,
        schedule,
        guidance,
        observer,
        &mut |x, v, i| solver.step(x, v, i),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn schedule(steps: usize) -> Schedule {
        Schedule::new(crate::ScheduleKind::DiffusersUniPc, steps, 3.0).unwrap()
    }

    #[test]
    fn bad_sigma_tables_are_errors() {
        assert!(UniPcSolver::from_sigmas(&[0.5]).is_err());
        assert!(UniPcSolver::from_sigmas(&[0.5, 0.6, 0.0]).is_err());
        assert!(UniPcSolver::from_sigmas(&[1.5, 0.5, 0.0]).is_err());
        assert!(UniPcSolver::from_sigmas(&[0.5, f64::NAN, 0.0]).is_err());
        // Distinct in f64, equal in f32.
        assert!(UniPcSolver::from_sigmas(&[0.5 + 1e-12, 0.5, 0.0]).is_err());
        let mut s = schedule(4);
        s.sigmas.pop();
        assert!(UniPcSolver::new(&s).is_err());
    }

    #[test]
    fn steps_out_of_order_or_mismatched_shapes_are_errors() {
        let mut solver = UniPcSolver::new(&schedule(3)).unwrap();
        let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        let v = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(solver.step(&x, &v, 1).is_err());
        assert!(solver.step(&x, &v.reshape((3, 2)).unwrap(), 0).is_err());
        let x1 = solver.step(&x, &v, 0).unwrap();
        assert_eq!(solver.next_step(), 1);
        assert!(solver
            .step(&x1.reshape((3, 2)).unwrap(), &v.reshape((3, 2)).unwrap(), 1)
            .is_err());
    }

    #[test]
    fn a_finished_solver_refuses_more_steps_until_reset() {
        let mut solver = UniPcSolver::new(&schedule(2)).unwrap();
        let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        let v = (&x * 0.5).unwrap();
        let x1 = solver.step(&x, &v, 0).unwrap();
        let x2 = solver.step(&x1, &v, 1).unwrap();
        assert!(solver.step(&x2, &v, 2).is_err());
        assert!(solver.x0_prediction().is_some());
        solver.reset();
        let again = solver.step(&x, &v, 0).unwrap();
        assert_eq!(
            again.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x1.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn sigma_one_and_sigma_zero_give_finite_states() {
        // A schedule starting exactly at sigma = 1 (lambda = -inf) must not produce NaN.
        let s = Schedule::new(crate::ScheduleKind::Linear, 5, 3.0).unwrap();
        assert_eq!(s.sigmas[0], 1.0);
        let mut solver = UniPcSolver::new(&s).unwrap();
        let mut x = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        for i in 0..5 {
            let v = (&x * 0.7).unwrap();
            x = solver.step(&x, &v, i).unwrap();
            let vals = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(vals.iter().all(|v| v.is_finite()), "step {i}: {vals:?}");
        }
    }
}
