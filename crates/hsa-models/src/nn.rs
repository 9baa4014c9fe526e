//! Small layers shared by the models: a dtype-aware linear layer and no-affine norms.
//!
//! Precision policy (wan-spec §1.7): matmuls run in the weights' dtype; norms, modulation and
//! the residual stream stay in f32. [`Linear::forward`] casts its input to the weight dtype
//! and returns the result in that dtype; callers cast back to f32 where the policy says so.

use candle_core::{DType, Device, Tensor, D};

use crate::Result;

/// `y = x·Wᵀ + b` over the last dimension of `x` (any number of leading dimensions).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn dtype(&self) -> DType {
        self.weight.dtype()
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (last, lead) = dims
            .split_last()
            .expect("linear input has at least one dimension");
        let rows: usize = lead.iter().product();
        let x2 = x.to_dtype(self.weight.dtype())?.reshape((rows, *last))?;
        let mut y = x2.matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = broadcast_add(&y, b)?;
        }
        let mut out_dims = lead.to_vec();
        out_dims.push(self.out_features());
        Ok(y.reshape(out_dims)?)
    }
}

/// LayerNorm over the last dimension in f32, with or without an affine transform.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
    /// False for `elementwise_affine=False` (weight ones, bias zeros, skipped when training).
    affine: bool,
}

impl LayerNorm {
    /// A LayerNorm without learned parameters (`elementwise_affine=False`).
    pub fn no_affine(dim: usize, eps: f64, device: &Device) -> Result<Self> {
        Ok(Self {
            weight: Tensor::ones(dim, DType::F32, device)?,
            bias: Tensor::zeros(dim, DType::F32, device)?,
            eps: eps as f32,
            affine: false,
        })
    }

    pub fn affine(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?,
            bias: bias.to_dtype(DType::F32)?,
            eps: eps as f32,
            affine: true,
        })
    }

    /// Weight, bias and epsilon (for fused passes).
    pub fn parts(&self) -> (&Tensor, &Tensor, f32) {
        (&self.weight, &self.bias, self.eps)
    }

    /// Normalises `x` (cast to f32); the result is f32. Uses candle's fused kernel, or plain
    /// differentiable ops when gradients are being tracked (training).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        if tracks_grad(&[&x, &self.weight, &self.bias]) {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            let xn = xc.broadcast_div(&(var + self.eps as f64)?.sqrt()?)?;
            if !self.affine {
                return Ok(xn);
            }
            return broadcast_add(&broadcast_mul(&xn, &self.weight)?, &self.bias);
        }
        Ok(candle_nn::ops::layer_norm(
            &x,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// RMSNorm over the last dimension, computed in f32 with an f32 weight.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?,
            eps: eps as f32,
        })
    }

    /// Normalises `x`; the result has `x`'s dtype. Differentiable ops when training.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?.contiguous()?;
        if tracks_grad(&[&xf, &self.weight]) {
            let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
            let xn = xf.broadcast_div(&(ms + self.eps as f64)?.sqrt()?)?;
            return Ok(broadcast_mul(&xn, &self.weight)?.to_dtype(dtype)?);
        }
        Ok(candle_nn::ops::rms_norm(&xf, &self.weight, self.eps)?.to_dtype(dtype)?)
    }
}

/// Largest absolute difference of two same-shaped tensors, computed in f32: the yardstick of
/// the parity tests and of the benchmarks' sanity check against PyTorch.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let d = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?;
    Ok(d.abs()?.max_all()?.to_scalar::<f32>()?)
}

/// Whether any of the tensors takes part in gradient tracking. candle's fused CPU kernels
/// (norms, softmax, RoPE) have no backward pass; layers switch to plain ops in that case.
pub fn tracks_grad(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op())
}

/// `x·(1 + scale) + shift` with broadcasting; all f32.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    broadcast_add(&broadcast_mul(x, &(scale + 1.0)?)?, shift)
}

/// `x + m` with `m` broadcast to `x`'s shape; see [`broadcast_rows`] for the training path.
pub fn broadcast_add(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    if tracks_grad(&[m]) && x.dims() != m.dims() {
        return Ok((x + broadcast_rows(m, x.dims())?)?);
    }
    Ok(x.broadcast_add(m)?)
}

/// `x·m` with `m` broadcast to `x`'s shape; see [`broadcast_rows`] for the training path.
pub fn broadcast_mul(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    if tracks_grad(&[m]) && x.dims() != m.dims() {
        return Ok((x * broadcast_rows(m, x.dims())?)?);
    }
    Ok(x.broadcast_mul(m)?)
}

/// `m` repeated over rows to `shape`, as a matmul with a column of ones, when `m` is
/// `[D]` (or `[1, .., 1, D]`) or `[B, 1, .., 1, D]` against `shape = [B, .., D]`; any other
/// broadcast is candle's.
///
/// Why a matmul: in training the gradient of a broadcast tensor is a sum over the repeated
/// rows. candle's backward takes that sum with its generic strided reduction, which on the
/// CPU does index arithmetic per element on one thread (~10% of a training step, for
/// biases, norm weights and AdaLN modulation) and on CUDA reads across rows uncoalesced.
/// Made by a matmul, the same sum is the transposed matmul, which is fast on both. (With
/// TF32 GEMMs, as `hsa train` uses on CUDA, the repeated values are rounded to TF32 like every
/// other matmul input.)
pub fn broadcast_rows(m: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let Some((&d, lead)) = shape.split_last() else {
        return Ok(m.broadcast_as(shape)?);
    };
    let md = m.dims();
    let batch = match md.split_last() {
        Some((&md_last, md_lead)) if md_last == d => {
            let ones_after_first = md_lead.iter().skip(1).all(|&n| n == 1);
            match md_lead.first() {
                None => Some(1),
                Some(&b) if md_lead.len() == lead.len() && ones_after_first && b == lead[0] => {
                    Some(b)
                }
                Some(_) if md_lead.iter().all(|&n| n == 1) => Some(1),
                Some(_) => None,
            }
        }
        _ => None,
    };
    let rows: usize = lead.iter().product();
    match batch {
        Some(b) if b > 0 && rows.is_multiple_of(b) => {
            let ones = Tensor::ones((b, rows / b, 1), m.dtype(), m.device())?;
            Ok(ones.matmul(&m.reshape((b, 1, d))?)?.reshape(shape)?)
        }
        _ => Ok(m.broadcast_as(shape)?),
    }
}

/// Splits `t` into `n` equal chunks along `dim`, squeezing that dimension when chunks are 1 wide.
pub fn chunk_squeeze(t: &Tensor, n: usize, dim: usize) -> Result<Vec<Tensor>> {
    (0..n)
        .map(|i| Ok(t.narrow(dim, i, 1)?.squeeze(dim)?))
        .collect()
}

/// SiLU in the tensor's dtype.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::silu(x)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Value and gradient (in `m`) of `Σ w ⊙ f(m)`.
    fn value_and_grad(m: &Var, w: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
        let y = f(m.as_tensor());
        let grads = (&y * w).unwrap().sum_all().unwrap().backward().unwrap();
        (y.detach(), grads.get(m.as_tensor()).unwrap().clone())
    }

    #[test]
    fn broadcast_rows_equals_broadcast_as_in_value_and_gradient() {
        let dev = Device::Cpu;
        let cases: [(&[usize], &[usize]); 8] = [
            (&[8], &[5, 3, 8]),
            (&[1, 8], &[15, 8]),
            (&[2, 1, 8], &[2, 6, 8]),
            (&[1, 1, 8], &[2, 6, 8]),
            (&[2, 1, 1, 8], &[2, 3, 4, 8]),
            // Not rows of a matrix: candle's broadcast.
            (&[1, 6, 8], &[2, 6, 8]),
            (&[2, 6, 1], &[2, 6, 8]),
            (&[2, 6, 8], &[2, 6, 8]),
        ];
        for (m_dims, shape) in cases {
            let m = Var::randn(0f32, 1.0, m_dims, &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let (y, g) = value_and_grad(&m, &w, |m| broadcast_rows(m, shape).unwrap());
            let (y_ref, g_ref) = value_and_grad(&m, &w, |m| m.broadcast_as(shape).unwrap());
            assert_eq!(y.dims(), shape);
            assert_eq!(
                max_abs_diff(&y, &y_ref).unwrap(),
                0.0,
                "{m_dims:?} -> {shape:?}"
            );
            let err = max_abs_diff(&g, &g_ref).unwrap();
            assert!(err < 1e-5, "gradient {m_dims:?} -> {shape:?}: {err}");
        }
    }

    #[test]
    fn training_paths_equal_the_inference_kernels_and_candles_gradients() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 2.0, (2, 7, 16), &dev).unwrap() + 0.3).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let w = Tensor::randn(0f32, 1.0, (2, 7, 16), &dev).unwrap();
        let close = |a: &Tensor, b: &Tensor, tol: f32, what: &str| {
            let err = max_abs_diff(a, b).unwrap();
            assert!(err < tol, "{what}: {err}");
        };
        // Norms: the tracked path (plain ops) against candle's fused kernels.
        let affine = LayerNorm::affine(
            Tensor::randn(1f32, 0.1, 16, &dev).unwrap(),
            Tensor::randn(0f32, 0.1, 16, &dev).unwrap(),
            1e-6,
        )
        .unwrap();
        let plain = LayerNorm::no_affine(16, 1e-6, &dev).unwrap();
        let rms = RmsNorm::new(Tensor::randn(1f32, 0.1, 16, &dev).unwrap(), 1e-6).unwrap();
        type Named<'a> = (&'a str, &'a dyn Fn(&Tensor) -> Tensor);
        let norms: [Named; 3] = [
            ("affine layer norm", &|t| affine.forward(t).unwrap()),
            ("layer norm", &|t| plain.forward(t).unwrap()),
            ("rms norm", &|t| rms.forward(t).unwrap()),
        ];
        for (what, f) in norms {
            let (tracked, _) = value_and_grad(&xv, &w, f);
            close(&tracked, &f(&x), 1e-5, what);
        }
        // GELU: value against candle's kernel, gradient against candle's backward of it.
        let (y, g) = value_and_grad(&xv, &w, |t| crate::fused::gelu_tanh(t).unwrap());
        let (y_ref, g_ref) = value_and_grad(&xv, &w, |t| t.gelu().unwrap());
        close(&y, &y_ref, 2e-6, "gelu");
        close(&g, &g_ref, 1e-5, "gelu gradient");
        // AdaLN modulation with tracked per-sample shift and scale.
        let shift = Var::randn(0f32, 1.0, (2, 1, 16), &dev).unwrap();
        let scale = Tensor::randn(0f32, 1.0, (2, 1, 16), &dev).unwrap();
        let (y, g) = value_and_grad(&shift, &w, |s| modulate(&x, s, &scale).unwrap());
        let (y_ref, g_ref) = value_and_grad(&shift, &w, |s| {
            x.broadcast_mul(&(&scale + 1.0).unwrap())
                .unwrap()
                .broadcast_add(s)
                .unwrap()
        });
        close(&y, &y_ref, 1e-6, "modulate");
        close(&g, &g_ref, 1e-5, "modulate gradient");
    }
}
