//! Attention with a backward pass, for training on the CPU.
//!
//! The forward is the fused tiled kernel of [`crate::cpu_attention`], so no `Lq x Lk` score
//! matrix is kept for the backward. The backward recomputes the probabilities one query chunk
//! at a time (as FlashAttention does) and takes, with `S = q·kᵀ·scale`, `P = softmax(S)`:
//! `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − Σ dP ⊙ P)`, `dQ = dS·K·scale`,
//! `dK = dSᵀ·Q·scale`. Composed from candle ops instead, the score-sized tensors (the largest
//! of a training step) went through about a dozen backward passes, each also zero-filling
//! and accumulating a gradient, and stayed in memory from the forward to the backward.

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Tensor};

use crate::softmax::{softmax_backward, softmax_no_grad, values};
use crate::Result;

/// Keeps the score matrix of one query chunk in the backward below about this many elements.
const SCORE_BUDGET: usize = 1 << 24;

/// Whether [`attention`] takes these inputs: f32 CPU tensors the fused kernel supports.
pub fn supports(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    [q, k, v]
        .iter()
        .all(|t| t.dtype() == candle_core::DType::F32)
        && crate::cpu_attention::supports(q, k, v)
}

/// `softmax(q·kᵀ·scale)·v` for `q [B,H,Lq,d]`, `k [B,H,Lk,d]`, `v [B,H,Lk,dv]`,
/// differentiable in all three (see the module doc).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    attention_chunked(q, k, v, scale, SCORE_BUDGET)
}

fn attention_chunked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    score_budget: usize,
) -> Result<Tensor> {
    Ok(q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            scale,
            score_budget,
        },
    )?)
}

struct Attention {
    scale: f64,
    score_budget: usize,
}

fn to_candle(e: crate::ModelError) -> candle_core::Error {
    match e {
        crate::ModelError::Tensor(t) => t,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

impl Attention {
    fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        d_out: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (q, k, v, d_out) = (q.detach(), k.detach(), v.detach(), d_out.detach());
        let (b, h, lq, _) = q.dims4()?;
        let lk = k.dim(2)?;
        let chunk = (self.score_budget / (b * h * lk).max(1)).clamp(1, lq.max(1));
        let (kt, vt) = (k.t()?, v.t()?);
        let mut dq = Vec::with_capacity(lq.div_ceil(chunk));
        let mut dk = k.zeros_like()?;
        let mut dv = v.zeros_like()?;
        let mut start = 0;
        while start < lq {
            let len = chunk.min(lq - start);
            let qc = q.narrow(2, start, len)?;
            let doc = d_out.narrow(2, start, len)?.contiguous()?;
            let p = softmax_no_grad(&(qc.matmul(&kt)? * self.scale)?)?;
            dv = (dv + p.t()?.matmul(&doc)?)?;
            let ds = (softmax_backward(&doc.matmul(&vt)?, &p)? * self.scale)?;
            dq.push(ds.matmul(&k)?);
            dk = (dk + ds.t()?.matmul(&qc)?)?;
            start += len;
        }
        let dq = if dq.len() == 1 {
            dq.pop().unwrap()
        } else {
            Tensor::cat(&dq, 2)?
        };
        Ok((dq, dk, dv))
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "hsa-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let tensor = |s: &CpuStorage, l: &Layout| -> candle_core::Result<Tensor> {
            Tensor::from_slice(values(s, l, self.name())?, l.dims(), &Device::Cpu)
        };
        let (q, k, v) = (tensor(qs, ql)?, tensor(ks, kl)?, tensor(vs, vl)?);
        let out = crate::cpu_attention::attention(&q, &k, &v, self.scale).map_err(to_candle)?;
        let shape = out.shape().clone();
        Ok((CpuStorage::F32(out.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        d_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) = self.backward(q, k, v, d_out).map_err(to_candle)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Values and gradients of `Σ w ⊙ attention(q, k, v)` in q, k and v.
    fn run(
        f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
        vars: &[Var; 3],
        w: &Tensor,
    ) -> (Tensor, Vec<Tensor>) {
        let y = f(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
        );
        let grads = (&y * w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).unwrap().clone())
            .collect();
        (y.detach(), g)
    }

    #[test]
    fn values_and_gradients_equal_the_composed_attention() {
        let dev = Device::Cpu;
        // Self-attention and cross-attention (Lq != Lk, dv != d); one query chunk and many.
        for (lq, lk, dv) in [(23, 23, 8), (17, 6, 5)] {
            let var = |l: usize, d: usize| Var::randn(0f32, 1.0, (2, 3, l, d), &dev).unwrap();
            let vars = [var(lq, 8), var(lk, 8), var(lk, dv)];
            let w = Tensor::randn(0f32, 1.0, (2, 3, lq, dv), &dev).unwrap();
            let reference = |q: &Tensor, k: &Tensor, v: &Tensor| {
                let s = (q.matmul(&k.t().unwrap()).unwrap() * 0.35).unwrap();
                let p = candle_nn::ops::softmax(&s, candle_core::D::Minus1).unwrap();
                p.matmul(v).unwrap()
            };
            let (y_ref, g_ref) = run(&reference, &vars, &w);
            for budget in [SCORE_BUDGET, 2 * 3 * lk * 4] {
                let fused = |q: &Tensor, k: &Tensor, v: &Tensor| {
                    attention_chunked(q, k, v, 0.35, budget).unwrap()
                };
                let (y, g) = run(&fused, &vars, &w);
                let err = crate::nn::max_abs_diff(&y, &y_ref).unwrap();
                assert!(err < 1e-5, "value ({lq}, {lk}, budget {budget}): {err}");
                for (name, (a, b)) in ["q", "k", "v"].iter().zip(g.iter().zip(&g_ref)) {
                    let err = crate::nn::max_abs_diff(a, b).unwrap();
                    assert!(err < 1e-5, "d{name} ({lq}, {lk}, budget {budget}): {err}");
                }
            }
        }
    }
}
