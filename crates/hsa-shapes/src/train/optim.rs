//! AdamW with serialisable state, global-norm gradient clipping and an EMA of the weights.
//! Written out (rather than candle-nn's optimiser) so a checkpoint holds the full training
//! state and a resumed run continues exactly.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not to biases, norms, tables).
    pub weight_decay: f64,
    /// Gradients are rescaled so their global L2 norm is at most this.
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
        }
    }
}

/// Optimiser state for a fixed list of variables.
pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Updates applied so far.
    pub step: usize,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, vars: &[Var]) -> candle_core::Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Self {
            cfg,
            step: 0,
            m: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            v: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
        })
    }

    /// One update with learning rate `lr`; returns the gradient norm before clipping.
    pub fn update(&mut self, vars: &[Var], grads: &GradStore, lr: f64) -> candle_core::Result<f64> {
        let gs: Vec<Option<&Tensor>> = vars.iter().map(|v| grads.get(v.as_tensor())).collect();
        // One device-to-host read per update (it is a sync point on a GPU).
        let sums: Vec<Tensor> = gs
            .iter()
            .flatten()
            .map(|g| g.sqr()?.sum_all())
            .collect::<candle_core::Result<_>>()?;
        let norm = if sums.is_empty() {
            0.0
        } else {
            Tensor::stack(&sums, 0)?.sum_all()?.to_scalar::<f32>()? as f64
        }
        .sqrt();
        let clip = if norm > self.cfg.max_grad_norm {
            self.cfg.max_grad_norm / norm
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for (i, (var, g)) in vars.iter().zip(gs).enumerate() {
            let Some(g) = g else { continue };
            // Gradients of variables come back tracked (they reference the forward graph);
            // the moments must not, or each would keep every earlier step alive.
            let g = (g.detach() * clip)?;
            self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let mhat = (&self.m[i] / c1)?;
            let vhat = (&self.v[i] / c2)?;
            let mut step = (mhat / (vhat.sqrt()? + self.cfg.eps)?)?;
            let w = var.as_tensor();
            if w.rank() >= 2 && self.cfg.weight_decay > 0.0 {
                step = (step + (w * self.cfg.weight_decay)?)?;
            }
            var.set(&(w - (step * lr)?)?)?;
        }
        Ok(norm)
    }
}

/// Exponential moving average of the weights, with the usual warm-up of the decay.
pub struct Ema {
    pub decay: f64,
    pub updates: usize,
    pub weights: Vec<Tensor>,
}

impl Ema {
    pub fn new(decay: f64, vars: &[Var]) -> candle_core::Result<Self> {
        Ok(Self {
            decay,
            updates: 0,
            // Detached copies: a copy of a variable records the variable as its input, and
            // each update's result would then keep the previous average alive, one full set
            // of weights per update (a GPU run ran out of memory after 774 updates).
            weights: vars
                .iter()
                .map(|v| v.as_tensor().detach().copy())
                .collect::<candle_core::Result<_>>()?,
        })
    }

    pub fn update(&mut self, vars: &[Var]) -> candle_core::Result<()> {
        self.updates += 1;
        let n = self.updates as f64;
        let d = self.decay.min((1.0 + n) / (10.0 + n));
        for (e, v) in self.weights.iter_mut().zip(vars) {
            *e = ((&*e * d)? + (v.as_tensor().detach() * (1.0 - d))?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_minimises_a_quadratic() {
        let x = Var::from_slice(&[3.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(
            AdamWConfig {
                weight_decay: 0.0,
                ..Default::default()
            },
            std::slice::from_ref(&x),
        )
        .unwrap();
        for _ in 0..500 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            opt.update(std::slice::from_ref(&x), &grads, 0.05).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|a| a.abs() < 1e-2), "{v:?}");
    }

    #[test]
    fn optimiser_and_average_state_hold_no_graph() {
        let x = Var::from_slice(&[1.0f32, 2.0], 2, &Device::Cpu).unwrap();
        let vars = std::slice::from_ref(&x);
        let mut opt = AdamW::new(AdamWConfig::default(), vars).unwrap();
        let mut ema = Ema::new(0.9, vars).unwrap();
        for _ in 0..3 {
            let grads = x
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            opt.update(vars, &grads, 0.1).unwrap();
            ema.update(vars).unwrap();
        }
        // A tracked tensor keeps its inputs (and theirs) alive: state must not be tracked.
        let tracked = |t: &Tensor| t.track_op();
        assert!(!tracked(&ema.weights[0]), "average");
        assert!(!tracked(&opt.m[0]), "first moment");
        assert!(!tracked(&opt.v[0]), "second moment");
    }

    #[test]
    fn gradient_norm_is_clipped() {
        let x = Var::from_slice(&[0.0f32], 1, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(
            AdamWConfig {
                max_grad_norm: 1.0,
                ..Default::default()
            },
            std::slice::from_ref(&x),
        )
        .unwrap();
        let loss = (x.as_tensor() * 100.0).unwrap().sum_all().unwrap();
        let norm = opt
            .update(std::slice::from_ref(&x), &loss.backward().unwrap(), 0.1)
            .unwrap();
        assert!((norm - 100.0).abs() < 1e-3);
        // First Adam step moves by ~lr regardless of scale.
        assert!((x.as_tensor().to_vec1::<f32>().unwrap()[0] + 0.1).abs() < 1e-3);
    }
}
