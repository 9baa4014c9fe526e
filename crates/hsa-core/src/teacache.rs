//! TeaCache (ali-vilab/TeaCache, TeaCache4Wan2.1): skip whole model calls when the timestep
//! embedding has changed little since the last computed call, reusing that call's block-stack
//! residual. The decision depends only on the schedule, the threshold and the coefficients,
//! never on the content, which is exactly what HSA's per-token allocation improves upon.
//!
//! Reference logic (restated): calls are counted per generation, cond then uncond each step.
//! For each branch separately: `rel = mean|ind - prev| / mean|prev|`, `acc += poly(rel)`
//! (degree 4, highest power first); the call is skipped while `acc < threshold`, otherwise it
//! is computed and `acc` resets. Calls with index `< ret_steps` or `>= cutoff` are always
//! computed. `prev` is updated on every call.

use candle_core::{DType, Tensor};

use crate::euler::{check_state, StepEvent};
use crate::{Branch, CoreError, Denoiser, Guidance, IndicatorKind, Result, Schedule};

/// Published Wan2.1 coefficient sets (wan-spec §7): (model, mode) -> highest power first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wan21Model {
    T2v1_3b,
    T2v14b,
    I2v480p,
    I2v720p,
}

impl Wan21Model {
    /// Coefficients for TeaCache's default mode (`e`) or retention mode (`e0`).
    pub fn coefficients(self, kind: IndicatorKind) -> [f64; 5] {
        use IndicatorKind::*;
        match (self, kind) {
            (Self::T2v1_3b, Embedding) => [
                2.39676752e3,
                -1.31110545e3,
                2.01331979e2,
                -8.29855975,
                1.37887774e-1,
            ],
            (Self::T2v1_3b, Projection) => [
                -5.21862437e4,
                9.23041404e3,
                -5.28275948e2,
                1.36987616e1,
                -4.99875664e-2,
            ],
            (Self::T2v14b, Embedding) => [
                -5784.54975374,
                5449.50911966,
                -1811.16591783,
                256.27178429,
                -13.02252404,
            ],
            (Self::T2v14b, Projection) => [
                -3.03318725e5,
                4.90537029e4,
                -2.65530556e3,
                5.87365115e1,
                -3.15583525e-1,
            ],
            (Self::I2v480p, Embedding) => [
                -3.02331670e2,
                2.23948934e2,
                -5.25463970e1,
                5.87348440,
                -2.01973289e-1,
            ],
            (Self::I2v480p, Projection) => [
                2.57151496e5,
                -3.54229917e4,
                1.40286849e3,
                -1.35890334e1,
                1.32517977e-1,
            ],
            (Self::I2v720p, Embedding) => [
                -114.36346466,
                65.26524496,
                -18.82220707,
                4.91518089,
                -0.23412683,
            ],
            (Self::I2v720p, Projection) => [
                8.10705460e3,
                2.13393892e3,
                -3.72934672e2,
                1.66203073e1,
                -4.17769401e-2,
            ],
        }
    }
}

/// TeaCache settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TeaCacheConfig {
    pub threshold: f64,
    /// Rescaling polynomial, highest power first (numpy `poly1d` order).
    pub coefficients: Vec<f64>,
    pub indicator: IndicatorKind,
    /// Calls (2 per step with CFG) always computed at the start.
    pub ret_steps: usize,
    /// Calls from this index on are always computed.
    pub cutoff: usize,
    /// Steps at which the model changes (Wan2.2 A14B expert boundary): both branches are
    /// computed there, since the stored residual belongs to the other expert.
    pub switch_steps: Vec<usize>,
}

impl TeaCacheConfig {
    /// The reference defaults for `steps` steps: `e` mode computes the first and last step
    /// (ret 2, cutoff 2T-2); retention (`e0`) mode computes the first 5 steps (ret 10,
    /// cutoff 2T).
    pub fn new(
        threshold: f64,
        coefficients: Vec<f64>,
        indicator: IndicatorKind,
        steps: usize,
    ) -> Result<Self> {
        if !(threshold.is_finite() && threshold >= 0.0) {
            return Err(CoreError::InvalidSetting(format!(
                "TeaCache threshold must be >= 0, got {threshold}"
            )));
        }
        if coefficients.is_empty() || coefficients.iter().any(|c| !c.is_finite()) {
            return Err(CoreError::InvalidSetting(
                "TeaCache coefficients must be finite numbers".into(),
            ));
        }
        let (ret_steps, cutoff) = match indicator {
            IndicatorKind::Embedding => (2, 2 * steps - 2),
            IndicatorKind::Projection => (10, 2 * steps),
        };
        Ok(Self {
            threshold,
            coefficients,
            indicator,
            ret_steps,
            cutoff,
            switch_steps: Vec::new(),
        })
    }
}

/// `numpy.poly1d(coefficients)(x)`.
pub fn poly_eval(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().fold(0.0, |acc, c| acc * x + c)
}

/// `mean|a - b| / mean|b|` in f32, as the reference computes it before `.item()`.
pub fn relative_l1(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    let num = (&a - &b)?.abs()?.mean_all()?.to_scalar::<f32>()?;
    let den = b.abs()?.mean_all()?.to_scalar::<f32>()?;
    Ok((num / den) as f64)
}

/// Per-branch decision state.
#[derive(Debug, Default, Clone)]
struct BranchState {
    prev: Option<Tensor>,
    acc: f64,
}

/// The compute/skip decider, fed one indicator per model call.
#[derive(Debug, Clone)]
pub struct TeaCacheDecider {
    cfg: TeaCacheConfig,
    branches: [BranchState; 2],
}

impl TeaCacheDecider {
    pub fn new(cfg: TeaCacheConfig) -> Self {
        Self {
            cfg,
            branches: Default::default(),
        }
    }

    /// Whether call number `call` (counting every model call of the generation) on `branch`
    /// must be computed, given that call's indicator.
    pub fn should_compute(
        &mut self,
        call: usize,
        branch: Branch,
        indicator: &Tensor,
    ) -> Result<bool> {
        let st = &mut self.branches[branch.index()];
        let forced = self.cfg.switch_steps.contains(&(call / 2));
        let compute = if forced || call < self.cfg.ret_steps || call >= self.cfg.cutoff {
            st.acc = 0.0;
            true
        } else {
            let prev = st.prev.as_ref().ok_or_else(|| {
                CoreError::InvalidSetting("TeaCache: a skip decision needs a previous call (ret_steps must be >= 1 per branch)".into())
            })?;
            st.acc += poly_eval(&self.cfg.coefficients, relative_l1(indicator, prev)?);
            if st.acc < self.cfg.threshold {
                false
            } else {
                st.acc = 0.0;
                true
            }
        };
        st.prev = Some(indicator.clone());
        Ok(compute)
    }
}

/// Result of a TeaCache run.
#[derive(Debug, Clone)]
pub struct TeaCacheRun {
    pub latents: Tensor,
    /// Per step: whether the cond (and uncond) call was computed.
    pub computed: Vec<Vec<bool>>,
}

impl TeaCacheRun {
    /// Model calls that ran the block stack.
    pub fn computed_calls(&self) -> usize {
        self.computed.iter().flatten().filter(|c| **c).count()
    }
}

/// FM Euler with TeaCache skipping. Skipped calls still run the embedding and the head.
pub fn sample_teacache(
    denoiser: &mut dyn Denoiser,
    noise: &Tensor,
    schedule: &Schedule,
    guidance: Guidance,
    cfg: &TeaCacheConfig,
    observer: &mut dyn FnMut(&StepEvent),
) -> Result<TeaCacheRun> {
    check_state(denoiser, noise)?;
    denoiser.reset()?;
    denoiser.enable_residual_capture()?;
    let steps = schedule.steps();
    let branches: &[Branch] = if guidance.uses_uncond() {
        if !denoiser.has_uncond() {
            return Err(CoreError::InvalidSetting(format!(
                "guidance scale {} needs a negative (unconditional) context, but none was given",
                guidance.scale
            )));
        }
        &[Branch::Cond, Branch::Uncond]
    } else {
        &[Branch::Cond]
    };
    let mut decider = TeaCacheDecider::new(cfg.clone());
    let mut x = noise.to_dtype(DType::F32)?;
    let mut computed = Vec::with_capacity(steps);
    for i in 0..steps {
        let t = schedule.timesteps[i];
        let mut vs = Vec::with_capacity(2);
        let mut flags = Vec::with_capacity(2);
        for &b in branches {
            // Calls are numbered as in the reference, where every step makes two calls.
            let call = 2 * i + b.index();
            let ind = denoiser
                .timestep_indicator(t, cfg.indicator)?
                .ok_or_else(|| {
                    CoreError::Denoiser(
                        "this model offers no timestep indicator for TeaCache".into(),
                    )
                })?;
            let compute = decider.should_compute(call, b, &ind)?;
            vs.push(if compute {
                denoiser.velocity(&x, t, b, None)?
            } else {
                denoiser.velocity_reusing_residual(&x, t, b)?
            });
            flags.push(compute);
        }
        let v = match vs.as_slice() {
            [vc] => vc.clone(),
            [vc, vu] => crate::euler::combine_guidance(vc, vu, guidance.scale_at(t))?,
            _ => unreachable!("one or two branches"),
        };
        x = (&x + (v * (schedule.sigmas[i + 1] - schedule.sigmas[i]))?)?;
        observer(&StepEvent {
            index: i,
            steps,
            sigma: schedule.sigmas[i],
            active_fraction: flags.iter().filter(|c| **c).count() as f64 / flags.len() as f64,
            nfe: flags.iter().filter(|c| **c).count(),
        });
        computed.push(flags);
    }
    Ok(TeaCacheRun {
        latents: x,
        computed,
    })
}

/// TeaCache calibration data from one full FM run: for every model call after the first of
/// its branch, `(x, y)` = (relative L1 change of the timestep indicator, relative L1 change of
/// the model output) against the previous call of the same branch. Fitting `y ≈ poly(x)` over
/// a set of prompts gives the rescaling polynomial (TeaCache's offline calibration).
pub fn calibration_pairs(
    denoiser: &mut dyn Denoiser,
    noise: &Tensor,
    schedule: &Schedule,
    guidance: Guidance,
    indicator: IndicatorKind,
) -> Result<Vec<(f64, f64)>> {
    check_state(denoiser, noise)?;
    denoiser.reset()?;
    let branches: &[Branch] = if guidance.uses_uncond() {
        &[Branch::Cond, Branch::Uncond]
    } else {
        &[Branch::Cond]
    };
    let mut prev: [Option<(Tensor, Tensor)>; 2] = [None, None];
    let mut pairs = Vec::new();
    let mut x = noise.to_dtype(DType::F32)?;
    for i in 0..schedule.steps() {
        let t = schedule.timesteps[i];
        let mut vs = Vec::with_capacity(2);
        for &b in branches {
            let ind = denoiser.timestep_indicator(t, indicator)?.ok_or_else(|| {
                CoreError::Denoiser("this model offers no timestep indicator for TeaCache".into())
            })?;
            let v = denoiser.velocity(&x, t, b, None)?;
            if let Some((pi, pv)) = &prev[b.index()] {
                pairs.push((relative_l1(&ind, pi)?, relative_l1(&v, pv)?));
            }
            prev[b.index()] = Some((ind, v.clone()));
            vs.push(v);
        }
        let v = match vs.as_slice() {
            [vc] => vc.clone(),
            [vc, vu] => crate::euler::combine_guidance(vc, vu, guidance.scale_at(t))?,
            _ => unreachable!("one or two branches"),
        };
        x = (&x + (v * (schedule.sigmas[i + 1] - schedule.sigmas[i]))?)?;
    }
    Ok(pairs)
}

/// Least-squares polynomial fit `y ≈ poly(x)` of `degree`, highest power first (numpy
/// `polyfit` order): TeaCache's offline calibration for a model without published
/// coefficients.
pub fn polyfit(x: &[f64], y: &[f64], degree: usize) -> Result<Vec<f64>> {
    let n = degree + 1;
    if x.len() != y.len() || x.len() < n {
        return Err(CoreError::InvalidSetting(format!(
            "polynomial fit of degree {degree} needs at least {n} (x, y) pairs, got {}",
            x.len().min(y.len())
        )));
    }
    // Normal equations on x scaled to [-1, 1] for conditioning, solved by Gaussian elimination
    // with partial pivoting, then mapped back to the unscaled basis.
    let scale = x.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
    let mut a = vec![vec![0f64; n + 1]; n];
    for (&xi, &yi) in x.iter().zip(y) {
        let u = xi / scale;
        let pow: Vec<f64> = (0..n).map(|k| u.powi(k as i32)).collect();
        for r in 0..n {
            for c in 0..n {
                a[r][c] += pow[r] * pow[c];
            }
            a[r][n] += pow[r] * yi;
        }
    }
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap();
        if a[piv][col].abs() < 1e-300 {
            return Err(CoreError::InvalidSetting(
                "polynomial fit is singular: x has too few distinct values".into(),
            ));
        }
        a.swap(col, piv);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row[col..=n].iter_mut().zip(&pivot_row[col..=n]) {
                    *x -= f * p;
                }
            }
        }
    }
    // Coefficient of u^k is a[k][n] / a[k][k]; of x^k it is that / scale^k.
    let low_first: Vec<f64> = (0..n)
        .map(|k| a[k][n] / a[k][k] / scale.powi(k as i32))
        .collect();
    Ok(low_first.into_iter().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poly_eval_is_highest_power_first() {
        assert_eq!(poly_eval(&[2.0, 0.0, 1.0], 3.0), 19.0);
    }

    #[test]
    fn polyfit_recovers_a_quartic() {
        let coeffs = [3.0, -2.0, 0.5, 0.25, -1.0];
        let x: Vec<f64> = (0..40).map(|i| 0.01 + i as f64 * 0.005).collect();
        let y: Vec<f64> = x.iter().map(|&v| poly_eval(&coeffs, v)).collect();
        let fit = polyfit(&x, &y, 4).unwrap();
        for (a, b) in fit.iter().zip(coeffs) {
            assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "{fit:?}");
        }
        assert!(polyfit(&x[..3], &y[..3], 4).is_err());
    }
}
