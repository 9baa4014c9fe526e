//! Softmax over the last dimension with a backward pass, for training on the CPU.
//!
//! candle's fused softmax has no backward, and the softmax it composes from max, subtract,
//! exp, sum and divide gives the attention scores (the largest tensors of a training step,
//! `B·H·L²`) about a dozen backward passes, each also zero-filling and accumulating a
//! gradient. Here the forward is one pass per row and the backward one more:
//! `dx = p ⊙ (g − Σ g ⊙ p)`.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::Result;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 8;

/// Whether [`softmax_last_dim`] takes `x` (a CPU f32 tensor with a non-empty last dimension).
pub fn supports(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && x.dims().last().is_some_and(|&d| d > 0)
}

/// Softmax over the last dimension of a CPU f32 tensor, differentiable (see the module doc).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Softmax)?)
}

/// [`softmax_last_dim`]'s value without gradient tracking.
pub(crate) fn softmax_no_grad(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1_no_bwd(&Softmax)?)
}

/// The gradient of the scores from the gradient `g` of the probabilities `p`.
pub(crate) fn softmax_backward(g: &Tensor, p: &Tensor) -> Result<Tensor> {
    Ok(g.contiguous()?
        .apply_op2_no_bwd(&p.detach().contiguous()?, &SoftmaxGrad)?)
}

/// The contiguous f32 values of a storage, or an error naming the op.
pub(crate) fn values<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        bail!("{op}: f32 only")
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: contiguous input only"),
    }
}

#[inline(always)]
fn softmax_rows_portable(out: &mut [f32], x: &[f32], d: usize) {
    for (o, x) in out.chunks_mut(d).zip(x.chunks(d)) {
        // `if > else` (not f32::max, whose NaN rule keeps it scalar) vectorises to maxps.
        let max = x
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        for (o, &v) in o.iter_mut().zip(x) {
            *o = crate::fused::exp_approx(v - max);
        }
        // Eight running sums so the reduction vectorises (one sum would be a serial chain).
        let mut lanes = [0f32; 8];
        let mut rows = o.chunks_exact(8);
        for c in &mut rows {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l += v;
            }
        }
        let sum = lanes.iter().sum::<f32>() + rows.remainder().iter().sum::<f32>();
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(out: &mut [f32], x: &[f32], d: usize) {
    softmax_rows_portable(out, x, d)
}

/// Softmax of the `d`-wide rows of `x` into `out`; vectorised where the CPU has AVX2 (the
/// exponential's `floor` is a libm call otherwise).
fn softmax_rows(out: &mut [f32], x: &[f32], d: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { softmax_rows_avx2(out, x, d) };
    }
    softmax_rows_portable(out, x, d)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "hsa-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(s, l, self.name())?;
        let d = *l.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(o, x)| softmax_rows(o, x, d));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, p: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op2_no_bwd(
            &p.detach().contiguous()?,
            &SoftmaxGrad,
        )?))
    }
}

/// `(g, p) -> p ⊙ (g − Σ g ⊙ p)` row by row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "hsa-softmax-last-dim-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, p) = (values(gs, gl, self.name())?, values(ps, pl, self.name())?);
        if gl.dims() != pl.dims() {
            bail!(
                "{}: shapes {:?} and {:?}",
                self.name(),
                gl.dims(),
                pl.dims()
            );
        }
        let d = *gl.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(
                g.par_chunks(d * ROWS_PER_TASK)
                    .zip(p.par_chunks(d * ROWS_PER_TASK)),
            )
            .for_each(|(o, (g, p))| {
                for ((o, g), p) in o.chunks_mut(d).zip(g.chunks(d)).zip(p.chunks(d)) {
                    let dot: f32 = g.iter().zip(p).map(|(a, b)| a * b).sum();
                    for ((o, &gv), &pv) in o.iter_mut().zip(g).zip(p) {
                        *o = pv * (gv - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    #[test]
    fn values_and_gradients_equal_candles_softmax() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (2, 3, 5, 37), &dev).unwrap() + 1.0).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let w = Tensor::randn(0f32, 1.0, (2, 3, 5, 37), &dev).unwrap();
        let run = |f: &dyn Fn(&Tensor) -> Tensor| {
            let y = f(xv.as_tensor());
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            (y.detach(), grads.get(xv.as_tensor()).unwrap().clone())
        };
        let (y, g) = run(&|t| softmax_last_dim(t).unwrap());
        let (y_ref, g_ref) = run(&|t| candle_nn::ops::softmax(t, D::Minus1).unwrap());
        let close = |a: &Tensor, b: &Tensor| crate::nn::max_abs_diff(a, b).unwrap();
        assert!(close(&y, &y_ref) < 1e-6, "softmax: {}", close(&y, &y_ref));
        assert!(close(&g, &g_ref) < 1e-6, "gradient: {}", close(&g, &g_ref));
        // A transposed (strided) input is made contiguous first.
        let xt = x.transpose(2, 3).unwrap();
        let plain = candle_nn::ops::softmax_last_dim(&xt.contiguous().unwrap()).unwrap();
        assert!(close(&softmax_last_dim(&xt).unwrap(), &plain) < 1e-6);
    }
}
