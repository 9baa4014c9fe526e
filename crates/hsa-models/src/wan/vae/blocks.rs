//! Building blocks of the Wan VAE (wan-spec §4.1): channel RMS norm, residual block, mid-block
//! attention, the resampling layers with their first-frame rules, and the parameter-free
//! Wan2.2 shortcuts `AvgDown3D` / `DupUp3D`.
//!
//! Every block takes and returns frames-major activations `[B, T, C, H, W]` (see
//! [`super::causal_conv`]) and threads a [`TimeCache`] through its causal layers, so one chunk
//! of frames continues exactly where the previous chunk stopped.

use candle_core::{DType, Tensor};

use super::causal_conv::{CausalConv3d, Conv2d, TimeCache};
use super::weights::Loader;
use crate::{ModelError, Result};

/// diffusers `WanRMS_norm` over channels: `x / max(‖x‖₂, 1e-12) · √C · γ`, computed in f32
/// (as diffusers does for half-precision inputs) and returned in the input dtype.
///
/// Cost: the reduction runs over a non-last axis of `[N, C, H·W]`, which candle does with a
/// generic strided loop; it is a few percent of the neighbouring 3×3×3 convolution.
#[derive(Debug, Clone)]
pub struct ChannelRmsNorm {
    /// `γ·√C` as `[1, C, 1]`, f32.
    gamma: Tensor,
    channels: usize,
}

impl ChannelRmsNorm {
    /// `gamma` of any shape with `C` elements (`[C,1,1,1]` in residual blocks, `[C,1,1]` in
    /// attention).
    pub fn new(gamma: Tensor) -> Result<Self> {
        let c = gamma.elem_count();
        let gamma = (gamma.to_dtype(DType::F32)?.reshape((1, c, 1))? * (c as f64).sqrt())?;
        Ok(Self { gamma, channels: c })
    }

    fn load(w: &Loader, name: &str, c: usize, images: bool) -> Result<Self> {
        let shape: &[usize] = if images { &[c, 1, 1] } else { &[c, 1, 1, 1] };
        Self::new(w.tensor_f32(name, shape)?)
    }

    /// Normalises `x` over dimension `channel_dim` (its size must be `C`).
    pub fn forward(&self, x: &Tensor, channel_dim: usize) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.get(channel_dim) != Some(&self.channels) {
            return Err(ModelError::Input(format!(
                "RMS norm over {} channels got shape {dims:?}",
                self.channels
            )));
        }
        let lead: usize = dims[..channel_dim].iter().product();
        let rest: usize = dims[channel_dim + 1..].iter().product();
        let xf = x
            .to_dtype(DType::F32)?
            .reshape((lead, self.channels, rest))?;
        let norm = xf.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        let y = xf.broadcast_div(&norm)?.broadcast_mul(&self.gamma)?;
        Ok(y.to_dtype(x.dtype())?.reshape(dims)?)
    }
}

/// diffusers `WanResidualBlock`: `RMS → SiLU → conv3³ → RMS → SiLU → conv3³`, plus a 1×1×1
/// shortcut when the width changes (identity otherwise). Dropout is inference-time identity.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    norm1: ChannelRmsNorm,
    conv1: CausalConv3d,
    norm2: ChannelRmsNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    pub fn load(w: &Loader, p: &str, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            norm1: ChannelRmsNorm::load(w, &format!("{p}.norm1.gamma"), in_dim, false)?,
            conv1: w.causal_conv(&format!("{p}.conv1"), in_dim, out_dim, (3, 3), (1, 1), 1)?,
            norm2: ChannelRmsNorm::load(w, &format!("{p}.norm2.gamma"), out_dim, false)?,
            conv2: w.causal_conv(&format!("{p}.conv2"), out_dim, out_dim, (3, 3), (1, 1), 1)?,
            shortcut: if in_dim != out_dim {
                Some(w.causal_conv(
                    &format!("{p}.conv_shortcut"),
                    in_dim,
                    out_dim,
                    (1, 1),
                    (0, 0),
                    1,
                )?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Tensor, cache: &mut TimeCache) -> Result<Tensor> {
        let h = match &self.shortcut {
            Some(s) => s.forward(x, &mut None)?,
            None => x.clone(),
        };
        let y = crate::nn::silu(&self.norm1.forward(x, 2)?)?;
        let y = self.conv1.forward(&y, cache.slot())?;
        let y = crate::nn::silu(&self.norm2.forward(&y, 2)?)?;
        let y = self.conv2.forward(&y, cache.slot())?;
        Ok((y + h)?)
    }
}

/// diffusers `WanAttentionBlock`: per frame, single-head self-attention over the `H·W`
/// positions (scale `1/√C`), 1×1 projections, residual. No state across frames.
#[derive(Debug, Clone)]
pub struct AttentionBlock {
    norm: ChannelRmsNorm,
    to_qkv: Conv2d,
    proj: Conv2d,
    dim: usize,
}

impl AttentionBlock {
    pub fn load(w: &Loader, p: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            norm: ChannelRmsNorm::load(w, &format!("{p}.norm.gamma"), dim, true)?,
            to_qkv: w.conv2d(&format!("{p}.to_qkv"), dim, 3 * dim, 1, 0, 1)?,
            proj: w.conv2d(&format!("{p}.proj"), dim, dim, 1, 0, 1)?,
            dim,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        let n = b * t;
        let xr = x.reshape((n, c, h, w))?;
        let qkv = self.to_qkv.forward(&self.norm.forward(&xr, 1)?)?; // [N, 3C, H, W]
        let qkv = qkv.reshape((n, 3 * c, h * w))?.transpose(1, 2)?; // [N, HW, 3C]
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv.narrow(2, i * c, c)?.contiguous()?.unsqueeze(1)?)
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scale = 1.0 / (self.dim as f64).sqrt();
        let o = crate::wan::attention::scaled_dot_product(&q, &k, &v, scale)?; // [N,1,HW,C]
        let o = o
            .squeeze(1)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, c, h, w))?;
        let o = self.proj.forward(&o)?.reshape((b, t, c, h, w))?;
        Ok((o + x)?)
    }
}

/// diffusers `WanMidBlock` with one attention layer: residual, attention, residual.
#[derive(Debug, Clone)]
pub struct MidBlock {
    res0: ResidualBlock,
    attn: AttentionBlock,
    res1: ResidualBlock,
}

impl MidBlock {
    pub fn load(w: &Loader, p: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            res0: ResidualBlock::load(w, &format!("{p}.resnets.0"), dim, dim)?,
            attn: AttentionBlock::load(w, &format!("{p}.attentions.0"), dim)?,
            res1: ResidualBlock::load(w, &format!("{p}.resnets.1"), dim, dim)?,
        })
    }

    pub fn forward(&self, x: &Tensor, cache: &mut TimeCache) -> Result<Tensor> {
        let x = self.res0.forward(x, cache)?;
        let x = self.attn.forward(&x)?;
        self.res1.forward(&x, cache)
    }
}

/// Which resampling a [`Resample`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleKind {
    Upsample2d,
    Upsample3d,
    Downsample2d,
    Downsample3d,
}

/// diffusers `WanResample`.
///
/// * up: nearest ×2 in H, W, then a 3×3 conv. `Upsample3d` first doubles time with a causal
///   (3,1,1) conv to `2C` channels (channels `[0:C]` → frame `2j`, `[C:2C]` → frame `2j+1`),
///   except for the very first frame of the stream, which passes through alone; the frames
///   after it form a fresh causal sequence (zero history). T frames → `1 + 2(T-1)`.
/// * down: zero pad right/bottom by 1, 3×3 conv stride 2. `Downsample3d` then halves time
///   with a (3,1,1) stride-2 conv without padding: the first frame passes through, frame `j`
///   of the output is `conv(y[2j-2], y[2j-1], y[2j])`. `1 + 2K` frames → `1 + K`.
#[derive(Debug, Clone)]
pub struct Resample {
    kind: ResampleKind,
    conv: Conv2d,
    time_conv: Option<CausalConv3d>,
}

impl Resample {
    /// `dim` input channels; `out_dim` the upsampling conv's output (`dim/2` in Wan2.1,
    /// `dim` in Wan2.2; downsampling keeps `dim`).
    pub fn load(
        w: &Loader,
        p: &str,
        kind: ResampleKind,
        dim: usize,
        out_dim: usize,
    ) -> Result<Self> {
        let (conv, time_conv) = match kind {
            ResampleKind::Upsample2d => (
                w.conv2d(&format!("{p}.resample.1"), dim, out_dim, 3, 1, 1)?,
                None,
            ),
            ResampleKind::Upsample3d => (
                w.conv2d(&format!("{p}.resample.1"), dim, out_dim, 3, 1, 1)?,
                Some(w.causal_conv(&format!("{p}.time_conv"), dim, 2 * dim, (3, 1), (1, 0), 1)?),
            ),
            ResampleKind::Downsample2d => (
                w.conv2d(&format!("{p}.resample.1"), dim, dim, 3, 0, 2)?,
                None,
            ),
            ResampleKind::Downsample3d => (
                w.conv2d(&format!("{p}.resample.1"), dim, dim, 3, 0, 2)?,
                Some(w.causal_conv(&format!("{p}.time_conv"), dim, dim, (3, 1), (0, 0), 2)?),
            ),
        };
        Ok(Self {
            kind,
            conv,
            time_conv,
        })
    }

    pub fn forward(&self, x: &Tensor, cache: &mut TimeCache) -> Result<Tensor> {
        match (self.kind, &self.time_conv) {
            (ResampleKind::Upsample3d, Some(conv)) => {
                let x = Self::time_upsample(conv, x, cache.slot())?;
                self.spatial(&x)
            }
            (ResampleKind::Downsample3d, Some(conv)) => {
                let y = self.spatial(x)?;
                Self::time_downsample(conv, &y, cache.slot())
            }
            (ResampleKind::Upsample3d | ResampleKind::Downsample3d, None) => Err(
                ModelError::Input("temporal resampling layer built without its time_conv".into()),
            ),
            _ => self.spatial(x),
        }
    }

    /// The per-frame 2-D part.
    fn spatial(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        let xr = x.reshape((b * t, c, h, w))?;
        let xr = match self.kind {
            ResampleKind::Upsample2d | ResampleKind::Upsample3d => {
                xr.upsample_nearest2d(2 * h, 2 * w)?
            }
            ResampleKind::Downsample2d | ResampleKind::Downsample3d => {
                xr.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?
            }
        };
        let y = self.conv.forward(&xr)?;
        let (_, o, ho, wo) = y.dims4()?;
        Ok(y.reshape((b, t, o, ho, wo))?)
    }

    fn time_upsample(conv: &CausalConv3d, x: &Tensor, slot: &mut Option<Tensor>) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        // [B, T, 2C, H, W] -> [B, 2T, C, H, W] is a plain reshape: channel half i of frame j
        // becomes frame 2j + i.
        let doubled = |y: Tensor| -> Result<Tensor> {
            let n = y.dim(1)?;
            Ok(y.reshape((b, 2 * n, c, h, w))?)
        };
        match slot.take() {
            Some(history) => {
                let mut state = Some(history);
                let y = doubled(conv.forward(x, &mut state)?)?;
                *slot = state;
                Ok(y)
            }
            None => {
                // Start of the stream: frame 0 skips the time conv (diffusers' "Rep" marker).
                let first = x.narrow(1, 0, 1)?;
                let mut state = None;
                let out = if t > 1 {
                    let rest = doubled(conv.forward(&x.narrow(1, 1, t - 1)?, &mut state)?)?;
                    Tensor::cat(&[&first, &rest], 1)?
                } else {
                    first
                };
                *slot = Some(match state {
                    Some(s) => s,
                    None => Tensor::zeros((b, 2, c, h, w), x.dtype(), x.device())?,
                });
                Ok(out)
            }
        }
    }

    fn time_downsample(
        conv: &CausalConv3d,
        y: &Tensor,
        slot: &mut Option<Tensor>,
    ) -> Result<Tensor> {
        let t = y.dim(1)?;
        let (head, body) = match slot.take() {
            Some(prev) => (None, Tensor::cat(&[&prev, y], 1)?),
            None => {
                let first = y.narrow(1, 0, 1)?;
                (Some(first), y.clone())
            }
        };
        let pairs = body.dim(1)? - 1;
        if pairs % 2 != 0 {
            return Err(ModelError::Input(format!(
                "temporal downsampling got a chunk of {t} frames that does not continue the \
                 1 + 2k frame pattern"
            )));
        }
        *slot = Some(y.narrow(1, t - 1, 1)?.force_contiguous()?);
        let rest = if pairs > 0 {
            Some(conv.conv_frames(&body)?)
        } else {
            None
        };
        match (head, rest) {
            (Some(h), Some(r)) => Ok(Tensor::cat(&[&h, &r], 1)?),
            (Some(h), None) => Ok(h),
            (None, Some(r)) => Ok(r),
            (None, None) => Err(ModelError::Input(
                "temporal downsampling got an empty chunk".into(),
            )),
        }
    }
}

/// Wan2.2 `AvgDown3D` shortcut: zero-pad time in front to a multiple of `ft`, fold
/// `ft × fs × fs` neighbourhoods into channels (order `c, t, h, w`), average groups of
/// `in·ft·fs²/out` consecutive channels. Padding is per call, like diffusers (per chunk).
#[derive(Debug, Clone, Copy)]
pub struct AvgDown3d {
    out: usize,
    ft: usize,
    fs: usize,
    group: usize,
}

impl AvgDown3d {
    pub fn new(in_dim: usize, out_dim: usize, ft: usize, fs: usize) -> Self {
        Self {
            out: out_dim,
            ft,
            fs,
            group: in_dim * ft * fs * fs / out_dim,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        if self.ft == 1 && self.fs == 1 && self.group == 1 {
            return Ok(x.clone());
        }
        let pad = (self.ft - t % self.ft) % self.ft;
        let x = if pad > 0 {
            x.pad_with_zeros(1, pad, 0)?
        } else {
            x.clone()
        };
        let (t2, h2, w2) = ((t + pad) / self.ft, h / self.fs, w / self.fs);
        let (ft, fs) = (self.ft, self.fs);
        let y = x
            .reshape(vec![b, t2, ft, c, h2, fs, w2, fs])?
            .permute(vec![0, 1, 3, 2, 5, 7, 4, 6])? // b, t2, c, ft, fs_h, fs_w, h2, w2
            .reshape(vec![b, t2, self.out, self.group, h2, w2])?
            .mean(3)?;
        Ok(y)
    }
}

/// Wan2.2 `DupUp3D` shortcut: repeat each channel `out·ft·fs²/in` times, unfold the copies
/// into `(out, ft, fs, fs)` → time ×`ft`, space ×`fs`. On the first chunk of the stream the
/// first `ft - 1` output frames are dropped (the first latent frame maps to one frame).
#[derive(Debug, Clone, Copy)]
pub struct DupUp3d {
    out: usize,
    ft: usize,
    fs: usize,
    repeats: usize,
}

impl DupUp3d {
    pub fn new(in_dim: usize, out_dim: usize, ft: usize, fs: usize) -> Self {
        Self {
            out: out_dim,
            ft,
            fs,
            repeats: out_dim * ft * fs * fs / in_dim,
        }
    }

    pub fn forward(&self, x: &Tensor, first_chunk: bool) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        let (ft, fs) = (self.ft, self.fs);
        let y = x
            .unsqueeze(3)?
            .broadcast_as((b, t, c, self.repeats, h, w))?
            .reshape(vec![b, t, self.out, ft, fs, fs, h, w])?
            .permute(vec![0, 1, 3, 2, 6, 4, 7, 5])? // b, t, ft, out, h, fs_h, w, fs_w
            .reshape((b, t * ft, self.out, h * fs, w * fs))?;
        if first_chunk && ft > 1 {
            Ok(y.narrow(1, ft - 1, t * ft - (ft - 1))?)
        } else {
            Ok(y)
        }
    }
}
