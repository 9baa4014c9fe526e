//! An analytic denoiser for sampler tests, and independent reference computations.
//!
//! Data: token n has values x0[n, p] ~ N(mu[n, p], s_n²), independent. With
//! `x_sigma = (1 - sigma)·x0 + sigma·eps` (eps ~ N(0, 1)) the pair (x0, x_sigma) is jointly
//! Gaussian, so the flow velocity `E[eps - x0 | x_sigma]` is affine in x_sigma:
//!
//! ```text
//! a = 1 - sigma, b = sigma
//! E[x_sigma] = a·mu,  Var[x_sigma] = a²s² + b²,  Cov(eps - x0, x_sigma) = b - a·s²
//! v(x) = -mu + (b - a·s²) / (a²s² + b²) · (x - a·mu)
//! ```
//!
//! With s = 0 the velocity is constant along the exact path (Euler is exact: "calm" tokens);
//! with larger s it turns as sigma falls ("dynamic" tokens). Tokens are independent, so each
//! token's trajectory can be recomputed alone in the test. The model records every call.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use hsa_core::{ActiveSet, Branch, CoreError, Denoiser, Result, Schedule, TokenGrid};

/// One recorded model call.
#[derive(Debug, Clone)]
pub struct Call {
    pub timestep: f64,
    pub branch: Branch,
    /// `None` for a dense call.
    pub ids: Option<Vec<u32>>,
    /// Returned velocity rows, in call order.
    pub v: Vec<Vec<f32>>,
}

pub struct Analytic {
    pub grid: TokenGrid,
    pub p: usize,
    /// Per branch (cond, uncond): mu, `[N·P]`.
    pub mu: [Vec<f64>; 2],
    /// Per token: s_n².
    pub s2: Vec<f64>,
    pub with_uncond: bool,
    pub calls: Vec<Call>,
    /// Per token: number of cond-branch evaluations.
    pub evaluations: Vec<u32>,
}

/// splitmix64-based generator for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        hsa_core::hsa::allocation::splitmix64(&mut self.0)
    }
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

impl Analytic {
    /// Tokens with spreads `s[n % s.len()]`, random means, two branches.
    pub fn new(grid: TokenGrid, p: usize, spreads: &[f64], seed: u64) -> Self {
        let n = grid.len();
        let mut rng = Rng::new(seed);
        let cond: Vec<f64> = (0..n * p).map(|_| rng.normal()).collect();
        let uncond: Vec<f64> = cond.iter().map(|m| 0.5 * m + 0.3 * rng.normal()).collect();
        let s2 = (0..n).map(|t| spreads[t % spreads.len()].powi(2)).collect();
        Self {
            grid,
            p,
            mu: [cond, uncond],
            s2,
            with_uncond: true,
            calls: Vec::new(),
            evaluations: vec![0; n],
        }
    }

    /// Same model with per-token spreads given explicitly.
    pub fn with_spreads(grid: TokenGrid, p: usize, spreads: &[f64], seed: u64) -> Self {
        assert_eq!(spreads.len(), grid.len());
        Self::new(grid, p, spreads, seed)
    }

    /// The branch velocity of token `n` at state `x` (f64 maths, f32 result).
    pub fn velocity_row(&self, branch: Branch, n: usize, x: &[f32], timestep: f64) -> Vec<f32> {
        let sigma = timestep / 1000.0;
        let (a, b, s2) = (1.0 - sigma, sigma, self.s2[n]);
        let k = (b - a * s2) / (a * a * s2 + b * b);
        let mu = &self.mu[branch.index()][n * self.p..(n + 1) * self.p];
        x.iter()
            .zip(mu)
            .map(|(&x, &m)| (-m + k * (x as f64 - a * m)) as f32)
            .collect()
    }

    /// Guided velocity of token `n`, with exactly the f32 operations of `guided_velocity`.
    pub fn guided_row(&self, n: usize, x: &[f32], timestep: f64, scale: f64) -> Vec<f32> {
        let c = self.velocity_row(Branch::Cond, n, x, timestep);
        if scale == 1.0 {
            return c;
        }
        let u = self.velocity_row(Branch::Uncond, n, x, timestep);
        c.iter()
            .zip(&u)
            .map(|(&c, &u)| u + ((c - u) * scale as f32 + 0.0))
            .collect()
    }

    /// Calls made at a timestep for the cond branch, in order.
    pub fn cond_calls(&self) -> Vec<&Call> {
        self.calls
            .iter()
            .filter(|c| c.branch == Branch::Cond)
            .collect()
    }
}

impl Denoiser for Analytic {
    fn grid(&self) -> TokenGrid {
        self.grid
    }
    fn token_dim(&self) -> usize {
        self.p
    }
    fn has_uncond(&self) -> bool {
        self.with_uncond
    }
    fn reset(&mut self) -> Result<()> {
        Ok(())
    }
    fn velocity(
        &mut self,
        x: &Tensor,
        timestep: f64,
        branch: Branch,
        active: Option<&ActiveSet>,
    ) -> Result<Tensor> {
        let n = self.grid.len();
        if x.dims() != [n, self.p] {
            return Err(CoreError::Denoiser(format!(
                "bad state shape {:?}",
                x.dims()
            )));
        }
        let xs = x.to_vec2::<f32>()?;
        let ids: Vec<u32> = match active {
            Some(set) => set.ids().to_vec(),
            None => (0..n as u32).collect(),
        };
        let v: Vec<Vec<f32>> = ids
            .iter()
            .map(|&t| self.velocity_row(branch, t as usize, &xs[t as usize], timestep))
            .collect();
        if branch == Branch::Cond {
            for &t in &ids {
                self.evaluations[t as usize] += 1;
            }
        }
        let flat: Vec<f32> = v.iter().flatten().copied().collect();
        let out = Tensor::from_vec(flat, (ids.len(), self.p), x.device())?;
        self.calls.push(Call {
            timestep,
            branch,
            ids: active.map(|s| s.ids().to_vec()),
            v,
        });
        Ok(out)
    }
}

/// Deterministic standard-normal noise `[N, P]`.
pub fn noise(n: usize, p: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed ^ 0xABCD);
    let v: Vec<f32> = (0..n * p).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(v, (n, p), &Device::Cpu).unwrap()
}

/// Steps at which a stride-`m` token is evaluated, computed from the design's rules alone.
#[allow(clippy::manual_is_multiple_of)] // MSRV 1.85
pub fn eval_steps(
    m: usize,
    steps: usize,
    warmup: usize,
    tail: usize,
    forced: &[usize],
) -> Vec<usize> {
    (0..steps)
        .filter(|&i| {
            i < warmup || i >= steps - tail || forced.contains(&i) || (i - warmup) % m == 0
        })
        .collect()
}

/// Token `n` integrated by Euler on its own grid `evals` (then to T), with the analytic
/// guided velocity and the sampler's f32 update arithmetic `x + v·fl32(dt)`.
pub fn reference_token(
    model: &Analytic,
    n: usize,
    x0: &[f32],
    sched: &Schedule,
    evals: &[usize],
    scale: f64,
) -> Vec<f32> {
    let steps = sched.steps();
    let mut x = x0.to_vec();
    for (j, &e) in evals.iter().enumerate() {
        let next = evals.get(j + 1).copied().unwrap_or(steps);
        let v = model.guided_row(n, &x, sched.timesteps[e], scale);
        let dt = (sched.sigmas[next] - sched.sigmas[e]) as f32;
        for (x, v) in x.iter_mut().zip(v) {
            *x += v * dt;
        }
    }
    x
}

pub fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}
