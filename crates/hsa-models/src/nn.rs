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
            y = y.broadcast_add(b)?;
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
}

impl LayerNorm {
    /// A LayerNorm without learned parameters (`elementwise_affine=False`).
    pub fn no_affine(dim: usize, eps: f64, device: &Device) -> Result<Self> {
        Ok(Self {
            weight: Tensor::ones(dim, DType::F32, device)?,
            bias: Tensor::zeros(dim, DType::F32, device)?,
            eps: eps as f32,
        })
    }

    pub fn affine(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?,
            bias: bias.to_dtype(DType::F32)?,
            eps: eps as f32,
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
            return Ok(xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?);
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
            return Ok(xn.broadcast_mul(&self.weight)?.to_dtype(dtype)?);
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
    Ok(x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)?)
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
