//! TeaCache in the harness: its polynomial fitted on the evaluated model and its threshold
//! searched so that its cost lands on each budget.
//!
//! TeaCache's threshold search: its cost depends on the model's outputs, so for each budget the
//! threshold is bisected on the calibration clips (the first two prompts, first seed) until the
//! mean work fraction is within half a reference step of the budget, or as close as 10
//! bisection steps get (after a doubling search from 0.01); the threshold found
//! is then used for every prompt (as a user would use one threshold). Its polynomial is fitted on
//! this model's own full-step runs of the calibration clips (as TeaCache's authors do per model)
//! unless the method says `coefficients=published`.

use std::collections::BTreeMap;

use hsa_core::teacache::{calibration_pairs, polyfit, Wan21Model};
use hsa_core::IndicatorKind;

use crate::harness::{work_of, write_json, Harness};
use crate::methods::Method;
use crate::{EvalError, Result};

/// TeaCache's per-model state: fitted polynomial and thresholds by budget.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TeaCacheState {
    /// By indicator mode ("e", "e0", or "<mode>-published"): coefficients.
    pub coefficients: BTreeMap<String, Vec<f64>>,
    /// By "<method label>@<budget>": (threshold, achieved mean work fraction).
    pub thresholds: BTreeMap<String, (f64, f64)>,
}

impl Harness<'_> {
    /// Fits TeaCache's polynomial on this model's full-step runs of the calibration clips.
    fn teacache_fit(&self, kind: IndicatorKind) -> Result<Vec<f64>> {
        let mut pairs = Vec::new();
        for p in 0..self.cfg.prompts.len().min(2) {
            let s = self.settings_for(self.cfg.steps, self.cfg.seeds[0]);
            let (mut den, noise, schedule) = self.model.prepare(&self.embeds[p], &s)?;
            pairs.extend(calibration_pairs(
                &mut den, &noise, &schedule, s.guidance, kind,
            )?);
        }
        let (x, y): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
        Ok(polyfit(&x, &y, 4)?)
    }

    /// Mean work fraction of TeaCache at `threshold` over the calibration clips, whose
    /// references did `ref_work` work each.
    fn teacache_cost(
        &self,
        m: &Method,
        coefficients: &[f64],
        threshold: f64,
        ref_work: &[f64],
    ) -> Result<f64> {
        let opts = m.sampler_options(1.0, Some((threshold, coefficients.to_vec())))?;
        let mut fractions = Vec::new();
        for (p, w) in ref_work.iter().enumerate() {
            let seed = self.cfg.seeds[0];
            let out = self.model.sample(
                &self.embeds[p],
                &self.settings_for(self.cfg.steps, seed),
                &opts,
                &mut |_| {},
            )?;
            fractions.push(work_of(&out.stats) / w);
        }
        Ok(fractions.iter().sum::<f64>() / fractions.len() as f64)
    }

    /// TeaCache's coefficients and the threshold for `budget` (cached in `teacache.json`).
    pub(crate) fn teacache_setting(
        &self,
        m: &Method,
        budget: f64,
        state: &mut TeaCacheState,
    ) -> Result<(f64, Vec<f64>)> {
        let kind = match m.teacache_mode() {
            "e" => IndicatorKind::Embedding,
            "e0" => IndicatorKind::Projection,
            other => {
                return Err(EvalError::Invalid(format!(
                    "TeaCache mode '{other}' (expected e or e0)"
                )))
            }
        };
        let published = m.teacache_published()?;
        let key = format!(
            "{}{}",
            m.teacache_mode(),
            if published { "-published" } else { "" }
        );
        let state_path = self.cfg.out_dir.join("teacache.json");
        if !state.coefficients.contains_key(&key) {
            let c = if published {
                Wan21Model::T2v1_3b.coefficients(kind).to_vec()
            } else {
                self.teacache_fit(kind)?
            };
            state.coefficients.insert(key.clone(), c);
            write_json(&state_path, state)?;
        }
        let coefficients = state.coefficients[&key].clone();
        let tkey = format!("{}@{budget:.3}", m.label);
        if let Some(&(t, _)) = state.thresholds.get(&tkey) {
            return Ok((t, coefficients));
        }
        // The calibration clips' reference work, read once for the whole search.
        let ref_work = (0..self.cfg.prompts.len().min(2))
            .map(|p| Ok(self.reference(p, self.cfg.seeds[0])?.0.work))
            .collect::<Result<Vec<f64>>>()?;
        let mut best = (0.0, 1.0);
        let consider = |best: &mut (f64, f64), t: f64, c: f64| {
            if (c - budget).abs() < (best.1 - budget).abs() - 1e-12 {
                *best = (t, c);
            }
        };
        let (mut lo, mut hi) = (0.0, 0.01);
        let mut c_hi = self.teacache_cost(m, &coefficients, hi, &ref_work)?;
        consider(&mut best, hi, c_hi);
        let mut doublings = 0;
        while c_hi > budget {
            lo = hi;
            hi *= 2.0;
            doublings += 1;
            if doublings > 30 {
                return Err(EvalError::Invalid(format!(
                    "TeaCache cannot reach budget {budget} on this model (work fraction {c_hi:.3} at threshold {hi:.3e})"
                )));
            }
            c_hi = self.teacache_cost(m, &coefficients, hi, &ref_work)?;
            consider(&mut best, hi, c_hi);
        }
        // Half a step of the reference is as close as a step-skipping method can get.
        let close_enough = 0.5 / self.cfg.steps as f64;
        for _ in 0..10 {
            if (best.1 - budget).abs() <= close_enough {
                break;
            }
            let mid = 0.5 * (lo + hi);
            let c = self.teacache_cost(m, &coefficients, mid, &ref_work)?;
            consider(&mut best, mid, c);
            if c > budget {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        state.thresholds.insert(tkey, best);
        write_json(&state_path, state)?;
        Ok((best.0, coefficients))
    }
}
