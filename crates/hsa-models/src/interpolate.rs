//! PyTorch's `F.interpolate(x, size, mode="bicubic", align_corners=False)` (no antialiasing)
//! for float images: the resize of the official Wan image-to-video code, which bicubic-resizes
//! the `[-1, 1]` input image to the video size for the VAE and to 224 x 224 for CLIP.
//!
//! Per axis, output index `i` samples the input at `(i + 0.5)·in/out − 0.5` with Keys' cubic
//! kernel (`a = −0.75`, PyTorch's choice, not PIL's −0.5) over the four nearest input samples,
//! indices clamped to the border. There is no antialiasing filter when shrinking (unlike PIL),
//! and values may overshoot the input range (no clamp), as in PyTorch.

use candle_core::{DType, Tensor};

use crate::{ModelError, Result};

const A: f32 = -0.75;

/// Taps of one output sample: the first of four input indices (before clamping) and weights.
fn taps(in_size: usize, out_size: usize) -> Vec<(isize, [f32; 4])> {
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let floor = real.floor();
            let t = real - floor;
            let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
            let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
            let w = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
            (floor as isize - 1, w)
        })
        .collect()
}

fn clamp_index(i: isize, size: usize) -> usize {
    i.clamp(0, size as isize - 1) as usize
}

/// Bicubic resize of `x [..., H, W]` (any leading dims, any float dtype) to `[..., out_h,
/// out_w]`; the result is f32.
pub fn bicubic_resize(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.len() < 2 || out_h == 0 || out_w == 0 || dims.contains(&0) {
        return Err(ModelError::Input(format!(
            "bicubic resize of a {dims:?} tensor to {out_h}x{out_w}: need [..., H, W] with non-zero sizes"
        )));
    }
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let planes: usize = dims[..dims.len() - 2].iter().product();
    let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let (tx, ty) = (taps(w, out_w), taps(h, out_h));
    let mut out = vec![0f32; planes * out_h * out_w];
    let mut rows = vec![0f32; h * out_w];
    for p in 0..planes {
        let src = &data[p * h * w..(p + 1) * h * w];
        // Horizontal pass into `rows [h, out_w]`, then the vertical pass.
        for y in 0..h {
            let line = &src[y * w..(y + 1) * w];
            for (o, (start, wt)) in rows[y * out_w..(y + 1) * out_w].iter_mut().zip(&tx) {
                *o = (0..4)
                    .map(|k| wt[k] * line[clamp_index(start + k as isize, w)])
                    .sum();
            }
        }
        let dst = &mut out[p * out_h * out_w..(p + 1) * out_h * out_w];
        for (oy, (start, wt)) in ty.iter().enumerate() {
            let r: [usize; 4] = std::array::from_fn(|k| clamp_index(start + k as isize, h));
            for ox in 0..out_w {
                dst[oy * out_w + ox] = (0..4).map(|k| wt[k] * rows[r[k] * out_w + ox]).sum();
            }
        }
    }
    let mut shape = dims;
    let n = shape.len();
    shape[n - 2] = out_h;
    shape[n - 1] = out_w;
    Ok(Tensor::from_vec(out, shape, x.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_size_is_the_identity_and_weights_sum_to_one() {
        let x = Tensor::randn(0f32, 1.0, (2, 5, 7), &Device::Cpu).unwrap();
        let y = bicubic_resize(&x, 5, 7).unwrap();
        assert_eq!(crate::nn::max_abs_diff(&x, &y).unwrap(), 0.0);
        for (n, m) in [(7, 3), (3, 11), (224, 224), (480, 224)] {
            for (_, w) in taps(n, m) {
                assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn empty_sizes_are_refused() {
        let x = Tensor::zeros((3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(bicubic_resize(&x, 0, 4).is_err());
        assert!(
            bicubic_resize(&Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(), 2, 2).is_err()
        );
    }
}
