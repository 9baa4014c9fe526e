//! 2-D convolution on the CPU as patch gathering plus one GEMM per band of output rows.
//!
//! candle 0.11's CPU `conv2d` for k > 1 gathers input patches element by element into small
//! tiles; `hsa bench vae` measured the Wan VAE at 3.7–5.2× PyTorch's time with ~2/3 of it in
//! that gathering. Here each frame's patches are laid out as `[C·k·k, rows·W_out]` with whole
//! row segments copied at a time (stride 1; element-wise for other strides), in parallel over
//! channels, and multiplied by the weight `[O, C·k·k]` with candle's GEMM. Bands of output rows
//! keep the patch matrix under [`BAND_BUDGET`] bytes.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::Result;

/// Bytes of one band's patch matrix.
pub const BAND_BUDGET: usize = 1 << 27;

/// Whether [`conv2d`] takes these tensors (f32 on the CPU, 4-D input, square kernel).
pub fn supports(x: &Tensor, weight: &Tensor) -> bool {
    x.device().is_cpu()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && x.rank() == 4
        && weight.dims4().is_ok_and(|(_, _, kh, kw)| kh == kw)
}

/// `x [N, C, H, W]` ⋆ `weight [O, C, k, k]` with symmetric zero `padding` and `stride`
/// → `[N, O, H', W']` (no bias), as `Tensor::conv2d`.
pub fn conv2d(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    conv2d_banded(x, weight, padding, stride, BAND_BUDGET)
}

fn conv2d_banded(
    x: &Tensor,
    weight: &Tensor,
    padding: usize,
    stride: usize,
    budget: usize,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (o, _, k, _) = weight.dims4()?;
    let (ho, wo) = (
        (h + 2 * padding - k) / stride + 1,
        (w + 2 * padding - k) / stride + 1,
    );
    let wmat = weight.reshape((o, c * k * k))?;
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let band = (budget / (4 * c * k * k * wo).max(1)).clamp(1, ho);
    let mut frames = Vec::with_capacity(n);
    for f in 0..n {
        let src = &xs[f * c * h * w..(f + 1) * c * h * w];
        let mut bands = Vec::with_capacity(ho.div_ceil(band));
        let mut y0 = 0;
        while y0 < ho {
            let rows = band.min(ho - y0);
            let cols = patches(src, (c, h, w), (k, padding, stride), (y0, rows, wo));
            let cols = Tensor::from_vec(cols, (c * k * k, rows * wo), x.device())?;
            bands.push(wmat.matmul(&cols)?);
            y0 += rows;
        }
        let out = if bands.len() == 1 {
            bands
                .pop()
                .unwrap_or(Tensor::zeros((o, 0), DType::F32, x.device())?)
        } else {
            Tensor::cat(&bands, 1)?
        };
        frames.push(out.reshape((o, ho, wo))?);
    }
    Ok(Tensor::stack(&frames, 0)?)
}

/// The patch matrix `[C·k·k, rows·wo]` of output rows `y0..y0+rows` (row `(c·k + ky)·k + kx`).
fn patches(
    src: &[f32],
    (c, h, w): (usize, usize, usize),
    (k, pad, stride): (usize, usize, usize),
    (y0, rows, wo): (usize, usize, usize),
) -> Vec<f32> {
    let len = rows * wo;
    let mut cols = vec![0f32; c * k * k * len];
    cols.par_chunks_mut(k * k * len)
        .enumerate()
        .for_each(|(ci, dst)| {
            let plane = &src[ci * h * w..(ci + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let d = &mut dst[(ky * k + kx) * len..(ky * k + kx + 1) * len];
                    for r in 0..rows {
                        let iy = ((y0 + r) * stride + ky) as isize - pad as isize;
                        if iy < 0 || iy >= h as isize {
                            continue; // zero padding (already zero)
                        }
                        let line = &plane[iy as usize * w..(iy as usize + 1) * w];
                        let out = &mut d[r * wo..(r + 1) * wo];
                        if stride == 1 {
                            // Output x reads input x + kx - pad: one contiguous segment.
                            let shift = kx as isize - pad as isize;
                            let lo = (-shift).max(0) as usize;
                            let hi =
                                (w as isize - shift).min(wo as isize).max(lo as isize) as usize;
                            let from = (lo as isize + shift) as usize;
                            out[lo..hi].copy_from_slice(&line[from..from + (hi - lo)]);
                        } else {
                            for (ox, v) in out.iter_mut().enumerate() {
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if ix >= 0 && ix < w as isize {
                                    *v = line[ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        });
    cols
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_candle_conv2d() {
        let dev = Device::Cpu;
        for (n, c, h, w, o, k, pad, stride) in [
            (2, 3, 7, 9, 4, 3, 1, 1),
            (1, 5, 8, 6, 2, 3, 0, 2),
            (1, 2, 5, 5, 3, 1, 0, 1),
            (3, 4, 6, 11, 5, 3, 1, 2),
            (1, 1, 1, 1, 2, 3, 1, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (o, c, k, k), &dev).unwrap();
            let want = x.conv2d(&wt, pad, stride, 1, 1).unwrap();
            // One band, and one output row per band.
            for budget in [BAND_BUDGET, 1] {
                let got = conv2d_banded(&x, &wt, pad, stride, budget).unwrap();
                assert_eq!(got.dims(), want.dims());
                let err = crate::nn::max_abs_diff(&got, &want).unwrap();
                assert!(err < 1e-5, "{:?}: {err}", (n, c, h, w, o, k, pad, stride));
            }
        }
    }
}
