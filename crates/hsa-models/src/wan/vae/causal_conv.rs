//! Convolutions of the Wan VAE built from candle's `conv2d`, and the time cache that makes
//! frame-chunked processing equal whole-clip processing.
//!
//! Activations inside the VAE are kept **frames-major**, `[B, T, C, H, W]`, so that every
//! per-frame 2-D operation sees `[B·T, C, H, W]` through a free reshape (diffusers keeps
//! `[B, C, T, H, W]` and permutes around every 2-D op).
//!
//! A causal 3-D convolution with kernel `(kt, k, k)` is one `conv2d` over frames whose channels
//! are the `kt` time-shifted input frames stacked (`[B·T, kt·C, H, W]`), with the weight
//! `[O, C, kt, k, k]` re-laid out to `[O, kt·C, k, k]` once at load time. FLOPs equal a real
//! conv3d. Cost: the stacked input is a `kt`× copy of the chunk, and on CUDA candle's conv2d
//! materialises an im2col buffer of `frames·H·W·kt·C·k²` elements (≈4 GB in f32 per frame for
//! the 96-channel 3×3×3 convs at 480×832); [`FRAME_BATCH_BUDGET`] caps how many frames go
//! into one `conv2d` call so that buffer stays per-frame sized. On the CPU candle tiles the
//! im2col and never holds it whole.

use candle_core::Tensor;

use crate::{ModelError, Result};

/// Largest `frames · H·W · (kt·C·k²)` handed to one `conv2d` call (elements of its im2col
/// matrix); bigger inputs are split into frame batches. At least one frame always goes in.
pub const FRAME_BATCH_BUDGET: usize = 1 << 28;

/// Temporal state of one streaming pass (diffusers `feat_cache`): one slot per causal layer,
/// handed out in call order, which is the same for every chunk.
///
/// A slot holds the last input frames a layer needs from earlier chunks (2 for the 3-tap
/// convolutions, 1 for the stride-2 time downsampling); `None` means the layer has seen no
/// frame yet.
#[derive(Debug)]
pub struct TimeCache {
    slots: Vec<Option<Tensor>>,
    next: usize,
    first_chunk: bool,
}

impl Default for TimeCache {
    fn default() -> Self {
        Self::new()
    }
}

impl TimeCache {
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            next: 0,
            first_chunk: true,
        }
    }

    /// Starts a chunk: slots are handed out from the first again.
    pub fn begin_chunk(&mut self) {
        self.next = 0;
    }

    /// Ends a chunk; later chunks are no longer the first.
    pub fn end_chunk(&mut self) {
        self.first_chunk = false;
    }

    /// Whether the current chunk is the first of the stream (Wan2.2 `DupUp3D` drops frames).
    pub fn is_first_chunk(&self) -> bool {
        self.first_chunk
    }

    /// The next layer's slot.
    pub fn slot(&mut self) -> &mut Option<Tensor> {
        if self.next == self.slots.len() {
            self.slots.push(None);
        }
        self.next += 1;
        &mut self.slots[self.next - 1]
    }

    /// Bytes held by the cached frames (for reporting; bounded by two frames per layer).
    pub fn memory_bytes(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}

/// A 2-D convolution (weight `[O, C, k, k]`, bias), square kernel, symmetric zero padding.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    /// `weight [O, C, k, k]`, `bias [O]`.
    pub fn new(weight: Tensor, bias: Tensor, padding: usize, stride: usize) -> Result<Self> {
        let out = weight.dim(0)?;
        Ok(Self {
            weight: weight.contiguous()?,
            bias: bias.reshape((1, out, 1, 1))?,
            padding,
            stride,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Kernel size along H and W.
    pub fn kernel(&self) -> usize {
        self.weight.dims()[2]
    }

    /// `x [N, C, H, W]` -> `[N, O, H', W']`, in frame batches under [`FRAME_BATCH_BUDGET`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with_budget(x, FRAME_BATCH_BUDGET)
    }

    fn forward_with_budget(&self, x: &Tensor, budget: usize) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let k = self.kernel();
        let per_frame = (h * w * c * k * k).max(1);
        let batch = (budget / per_frame).clamp(1, n.max(1));
        if batch >= n {
            return self.forward_batch(x);
        }
        let mut outs = Vec::with_capacity(n.div_ceil(batch));
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            outs.push(self.forward_batch(&x.narrow(0, start, len)?)?);
            start += len;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// Computes in the weight dtype and returns the input's dtype (they differ for bf16 on
    /// the CPU, where candle has no bf16 conv and the weights are kept in f32).
    fn forward_batch(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(self.weight.dtype())?;
        let y = if super::im2col::supports(&x, &self.weight) && self.kernel() > 1 {
            super::im2col::conv2d(&x, &self.weight, self.padding, self.stride)?
        } else {
            x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
        };
        Ok(y.broadcast_add(&self.bias)?.to_dtype(dtype)?)
    }
}

/// Causal 3-D convolution (diffusers `WanCausalConv3d`): zero padding of `time_pad` frames in
/// front only (`2·pad_t`; the cached frames of earlier chunks take its place), symmetric
/// spatial padding, time stride 1 or 2.
#[derive(Debug, Clone)]
pub struct CausalConv3d {
    /// Weight re-laid out as `[O, kt·C, k, k]`: channel `j·C + c` is input channel `c` at tap `j`.
    conv: Conv2d,
    in_channels: usize,
    kt: usize,
    time_pad: usize,
    stride_t: usize,
}

impl CausalConv3d {
    /// `weight [O, C, kt, k, k]`, `bias [O]`; `pad = (pad_t, pad_s)` as in the PyTorch module
    /// (the front time padding is `2·pad_t`).
    pub fn new(
        weight: &Tensor,
        bias: Tensor,
        pad: (usize, usize),
        stride_t: usize,
    ) -> Result<Self> {
        let (o, c, kt, kh, kw) = weight.dims5()?;
        if kh != kw {
            return Err(ModelError::Input(format!(
                "non-square conv kernel {kh}x{kw} is not supported"
            )));
        }
        let w2 = weight
            .permute((0, 2, 1, 3, 4))?
            .reshape((o, kt * c, kh, kw))?;
        Ok(Self {
            conv: Conv2d::new(w2, bias, pad.1, 1)?,
            in_channels: c,
            kt,
            time_pad: 2 * pad.0,
            stride_t,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.conv.out_channels()
    }

    /// Whether the layer looks back in time (needs a cache slot).
    pub fn is_temporal(&self) -> bool {
        self.time_pad > 0
    }

    /// Valid (unpadded) convolution over frames: `x [B, T, C, H, W]` ->
    /// `[B, (T - kt)/stride + 1, O, H', W']`.
    pub fn conv_frames(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        if c != self.in_channels {
            return Err(ModelError::Input(format!(
                "causal conv expects {} channels, got {c}",
                self.in_channels
            )));
        }
        if t < self.kt {
            return Err(ModelError::Input(format!(
                "causal conv needs at least {} frames, got {t}",
                self.kt
            )));
        }
        let t_out = (t - self.kt) / self.stride_t + 1;
        let stacked = if self.kt == 1 && self.stride_t == 1 {
            x.clone()
        } else {
            let taps = (0..self.kt)
                .map(|j| {
                    if self.stride_t == 1 {
                        Ok(x.narrow(1, j, t_out)?)
                    } else {
                        let ids: Vec<u32> =
                            (0..t_out).map(|i| (j + i * self.stride_t) as u32).collect();
                        let ids = Tensor::new(ids.as_slice(), x.device())?;
                        Ok(x.index_select(&ids, 1)?)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&taps, 2)?
        };
        let y = self
            .conv
            .forward(&stacked.reshape((b * t_out, self.kt * c, h, w))?)?;
        let (_, o, ho, wo) = y.dims4()?;
        Ok(y.reshape((b, t_out, o, ho, wo))?)
    }

    /// Causal convolution of one chunk `x [B, T, C, H, W]`, continuing from `state` (the last
    /// `time_pad` input frames of earlier chunks; `None` = zeros, the start of the sequence).
    /// Afterwards `state` holds the last `time_pad` frames of (zero padding ++ all input so far).
    /// Layers without temporal padding ignore `state`.
    pub fn forward(&self, x: &Tensor, state: &mut Option<Tensor>) -> Result<Tensor> {
        if self.time_pad == 0 {
            return self.conv_frames(x);
        }
        let t = x.dim(1)?;
        let history = match state.take() {
            Some(h) => h,
            None => {
                let (b, _, c, h, w) = x.dims5()?;
                Tensor::zeros((b, self.time_pad, c, h, w), x.dtype(), x.device())?
            }
        };
        let input = Tensor::cat(&[&history, x], 1)?;
        // A copy, so the cache does not keep the whole chunk alive.
        *state = Some(input.narrow(1, t, self.time_pad)?.force_contiguous()?);
        self.conv_frames(&input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Direct triple loop of a valid conv3d with stride (st, 1, 1), for reference.
    fn conv3d_naive(x: &[f32], xs: [usize; 5], w: &[f32], ws: [usize; 5], st: usize) -> Vec<f32> {
        let [b, t, c, h, wd] = xs;
        let [o, _, kt, k, _] = ws;
        let p = k / 2;
        let t_out = (t - kt) / st + 1;
        let mut out = vec![0f32; b * t_out * o * h * wd];
        for bi in 0..b {
            for to in 0..t_out {
                for oc in 0..o {
                    for y in 0..h {
                        for xx in 0..wd {
                            let mut acc = 0f32;
                            for ic in 0..c {
                                for dt in 0..kt {
                                    for dy in 0..k {
                                        for dx in 0..k {
                                            let (iy, ix) = (y + dy, xx + dx);
                                            if iy < p || ix < p || iy - p >= h || ix - p >= wd {
                                                continue;
                                            }
                                            let ti = to * st + dt;
                                            let xi = (((bi * t + ti) * c + ic) * h + iy - p) * wd
                                                + ix
                                                - p;
                                            let wi = (((oc * c + ic) * kt + dt) * k + dy) * k + dx;
                                            acc += x[xi] * w[wi];
                                        }
                                    }
                                }
                            }
                            out[(((bi * t_out + to) * o + oc) * h + y) * wd + xx] = acc;
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn stacked_conv2d_equals_a_direct_conv3d() {
        let dev = Device::Cpu;
        for (kt, k, st) in [(3, 3, 1), (3, 1, 2), (1, 1, 1)] {
            let xs = [2, 5, 3, 4, 5];
            let ws = [4, 3, kt, k, k];
            let x = Tensor::randn(0f32, 1.0, xs.to_vec(), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, ws.to_vec(), &dev).unwrap();
            let conv = CausalConv3d::new(
                &w,
                Tensor::zeros(4, DType::F32, &dev).unwrap(),
                (0, k / 2),
                st,
            )
            .unwrap();
            let ours = conv.conv_frames(&x).unwrap().flatten_all().unwrap();
            let want = conv3d_naive(
                &x.flatten_all().unwrap().to_vec1().unwrap(),
                xs,
                &w.flatten_all().unwrap().to_vec1().unwrap(),
                ws,
                st,
            );
            let ours: Vec<f32> = ours.to_vec1().unwrap();
            assert_eq!(ours.len(), want.len());
            for (a, b) in ours.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "kt={kt} k={k} st={st}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn chunked_causal_conv_equals_whole_sequence() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 7, 3, 4, 4), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (2, 3, 3, 3, 3), &dev).unwrap();
        let conv =
            CausalConv3d::new(&w, Tensor::ones(2, DType::F32, &dev).unwrap(), (1, 1), 1).unwrap();
        let whole = conv.forward(&x, &mut None).unwrap();
        let mut state = None;
        let mut parts = Vec::new();
        for (s, l) in [(0, 1), (1, 1), (2, 4), (6, 1)] {
            parts.push(
                conv.forward(&x.narrow(1, s, l).unwrap(), &mut state)
                    .unwrap(),
            );
        }
        let chunked = Tensor::cat(&parts, 1).unwrap();
        let d = crate::nn::max_abs_diff(&whole, &chunked).unwrap();
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn frame_batches_give_the_same_result() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (9, 2, 6, 6), &dev).unwrap();
        let conv = Conv2d::new(
            Tensor::randn(0f32, 1.0, (3, 2, 3, 3), &dev).unwrap(),
            Tensor::randn(0f32, 1.0, 3, &dev).unwrap(),
            1,
            1,
        )
        .unwrap();
        let whole = conv.forward_batch(&x).unwrap();
        // A budget of two frames' im2col: 5 batches.
        let split = conv.forward_with_budget(&x, 6 * 6 * 2 * 9 * 2).unwrap();
        let d = crate::nn::max_abs_diff(&whole, &split).unwrap();
        assert!(d < 1e-5);
    }
}
