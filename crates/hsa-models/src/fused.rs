//! Fused CPU passes for the elementwise parts of a DiT block, where a profile of the Wan block
//! showed them (docs/benchmarks.md): the tanh-GELU of the FFN (glibc's `tanhf` alone took
//! ~14% of a dense forward), LayerNorm followed by the AdaLN modulation `·(1 + scale) + shift`,
//! and the gated residual `x + y·gate`. Each is one parallel pass over rows instead of two to
//! four passes (and as many freshly allocated tensors) of candle ops.
//!
//! The fused paths run for f32 CPU tensors without gradient tracking; everything
//! else (other dtypes and devices, training) takes the plain candle ops, which are also the
//! reference the tests compare against.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::nn::{tracks_grad, LayerNorm};
use crate::Result;

/// Rows per rayon task (a task should cover tens of microseconds of work).
const ROWS_PER_TASK: usize = 16;

/// CPU f32 tensors outside training (strided ones are read through a copy).
fn fusable(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
        && !tracks_grad(ts)
}

/// `e^x` for `x` in about `[-87, 88]` (clamped), relative error ~2e-7: `2^n · p(r)` with
/// `x = n·ln2 + r`, `|r| ≤ ln2/2`, and a degree-6 Taylor polynomial for `e^r`. Written without
/// branches or libm calls so loops over it vectorise.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// tanh-approximated GELU, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, computed as
/// `x · sigmoid(2u)`, which is the same function without the cancellation of `1 + tanh` for
/// negative `x`.
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2 / pi)
    let u = K * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp_approx(-2.0 * u))
}

#[inline(always)]
fn gelu_slice(xs: &mut [f32]) {
    for v in xs {
        *v = gelu_one(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_avx2(xs: &mut [f32]) {
    gelu_slice(xs)
}

fn gelu_chunk(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function was compiled for.
        return unsafe { gelu_slice_avx2(xs) };
    }
    gelu_slice(xs)
}

/// tanh-GELU (PyTorch's `gelu(approximate="tanh")`, what Wan's FFN uses).
///
/// In training it is `x·sigmoid(2u)` built from candle ops: candle's own `gelu` backward
/// recomputes the tanh and calls `powf` twice per element, which was ~20% of a CPU training
/// step; through `sigmoid` the backward reuses the forward's result.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if tracks_grad(&[x]) {
        const K: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
        let two_u = (x * x.sqr()?.affine(2.0 * K * 0.044_715, 2.0 * K)?)?;
        return Ok((x * candle_nn::ops::sigmoid(&two_u)?)?);
    }
    if !fusable(&[x]) {
        return Ok(x.gelu()?);
    }
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    v.par_chunks_mut(4096).for_each(gelu_chunk);
    Ok(Tensor::from_vec(v, x.shape(), x.device())?)
}

/// Row `r` of a `[B, R, D]` modulation tensor for row `row` of a `[B, A, D]` input (`R` is 1
/// for per-sample modulation, `A` for per-token).
fn mod_row(m: &[f32], rows_per_batch: usize, m_rows: usize, row: usize, d: usize) -> &[f32] {
    let b = row / rows_per_batch;
    let r = if m_rows == 1 { 0 } else { row % rows_per_batch };
    let start = (b * m_rows + r) * d;
    &m[start..start + d]
}

/// Shape check for a modulation tensor `[B, 1 or A, D]` against `x [B, A, D]`; `Some(R)` when
/// it fits.
fn mod_rows(x: &Tensor, m: &Tensor) -> Option<usize> {
    let (b, a, d) = x.dims3().ok()?;
    let (mb, mr, md) = m.dims3().ok()?;
    (mb == b && md == d && (mr == 1 || mr == a)).then_some(mr)
}

/// `LayerNorm(x)·(1 + scale) + shift` for `x [B, A, D]` and `shift`, `scale` `[B, 1 or A, D]`
/// (the AdaLN input of Wan's self-attention and FFN).
pub fn norm_modulate(
    norm: &LayerNorm,
    x: &Tensor,
    shift: &Tensor,
    scale: &Tensor,
) -> Result<Tensor> {
    let (w, bias, eps) = norm.parts();
    let m_rows = match (mod_rows(x, shift), mod_rows(x, scale)) {
        (Some(r), Some(q)) if r == q && fusable(&[x, shift, scale, w, bias]) => r,
        _ => return crate::nn::modulate(&norm.forward(x)?, shift, scale),
    };
    let (_, a, d) = x.dims3()?;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let (sh, sc) = (
        shift.flatten_all()?.to_vec1::<f32>()?,
        scale.flatten_all()?.to_vec1::<f32>()?,
    );
    let (w, bias) = (w.to_vec1::<f32>()?, bias.to_vec1::<f32>()?);
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, o) in chunk.chunks_mut(d).enumerate() {
                let row = task * ROWS_PER_TASK + i;
                let xr = &xs[row * d..(row + 1) * d];
                let mean = xr.iter().sum::<f32>() / d as f32;
                let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                let rstd = 1.0 / (var + eps).sqrt();
                let (shr, scr) = (
                    mod_row(&sh, a, m_rows, row, d),
                    mod_row(&sc, a, m_rows, row, d),
                );
                for k in 0..d {
                    let n = (xr[k] - mean) * rstd * w[k] + bias[k];
                    o[k] = n * (1.0 + scr[k]) + shr[k];
                }
            }
        });
    Ok(Tensor::from_vec(out, x.shape(), x.device())?)
}

/// `x + y·gate` for `x`, `y` `[B, A, D]` and `gate` `[B, 1 or A, D]` (Wan's gated residuals).
pub fn gated_add(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let m_rows = match mod_rows(x, gate) {
        Some(r) if x.dims() == y.dims() && fusable(&[x, y, gate]) => r,
        _ => return Ok((x + crate::nn::broadcast_mul(y, gate)?)?),
    };
    let (_, a, d) = x.dims3()?;
    let mut out = x.flatten_all()?.to_vec1::<f32>()?;
    let ys = y.flatten_all()?.to_vec1::<f32>()?;
    let g = gate.flatten_all()?.to_vec1::<f32>()?;
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, o) in chunk.chunks_mut(d).enumerate() {
                let row = task * ROWS_PER_TASK + i;
                let (yr, gr) = (&ys[row * d..(row + 1) * d], mod_row(&g, a, m_rows, row, d));
                for k in 0..d {
                    o[k] += yr[k] * gr[k];
                }
            }
        });
    Ok(Tensor::from_vec(out, x.shape(), x.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        crate::nn::max_abs_diff(a, b).unwrap()
    }

    #[test]
    fn exp_is_accurate_over_its_range() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = (x as f64).exp();
            let rel = ((exp_approx(x) as f64 - want) / want).abs();
            assert!(rel < 5e-7, "exp({x}): rel {rel}");
        }
    }

    #[test]
    fn gelu_matches_the_exact_formula_in_f64() {
        for i in -20000..=20000 {
            let x = i as f32 / 1000.0;
            let xd = x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3));
            let want = 0.5 * xd * (1.0 + u.tanh());
            let err = (gelu_one(x) as f64 - want).abs();
            assert!(err <= 4e-7 * xd.abs().max(1e-3), "gelu({x}): err {err}");
        }
    }

    #[test]
    fn fused_passes_equal_the_plain_ops() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (2, 37, 24), &dev).unwrap() + 0.5).unwrap();
        // GELU against candle's (PyTorch's formula; f32 cancellation in `1 + tanh` bounds
        // the agreement for negative inputs).
        let err = max_abs(&gelu_tanh(&x).unwrap(), &x.gelu().unwrap());
        assert!(err < 2e-6, "gelu: {err}");
        let norm = LayerNorm::affine(
            Tensor::randn(1f32, 0.1, 24, &dev).unwrap(),
            Tensor::randn(0f32, 0.1, 24, &dev).unwrap(),
            1e-6,
        )
        .unwrap();
        for rows in [1, 37] {
            let shift = Tensor::randn(0f32, 1.0, (2, rows, 24), &dev).unwrap();
            let scale = Tensor::randn(0f32, 1.0, (2, rows, 24), &dev).unwrap();
            let fused = norm_modulate(&norm, &x, &shift, &scale).unwrap();
            let plain = crate::nn::modulate(&norm.forward(&x).unwrap(), &shift, &scale).unwrap();
            let err = max_abs(&fused, &plain);
            assert!(err < 1e-5, "norm_modulate rows {rows}: {err}");
            let y = Tensor::randn(0f32, 1.0, (2, 37, 24), &dev).unwrap();
            let fused = gated_add(&x, &y, &shift).unwrap();
            let plain = (&x + y.broadcast_mul(&shift).unwrap()).unwrap();
            assert!(max_abs(&fused, &plain) < 1e-6, "gated_add rows {rows}");
        }
        // Shapes the fused paths do not take fall back to the plain ops.
        let odd = Tensor::randn(0f32, 1.0, (2, 1, 1), &dev).unwrap();
        let plain = (&x + x.broadcast_mul(&odd).unwrap()).unwrap();
        assert!(max_abs(&gated_add(&x, &x, &odd).unwrap(), &plain) < 1e-6);
    }
}
