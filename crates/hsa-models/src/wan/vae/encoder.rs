//! The Wan VAE encoder (diffusers `WanEncoder3d`), Wan2.1 and Wan2.2 layouts.

use candle_core::Tensor;

use super::blocks::{AvgDown3d, ChannelRmsNorm, MidBlock, Resample, ResampleKind, ResidualBlock};
use super::causal_conv::{CausalConv3d, TimeCache};
use super::config::WanVaeConfig;
use super::weights::Loader;
use crate::Result;

/// One entry of the Wan2.1 encoder's flat `down_blocks` list.
#[derive(Debug, Clone)]
enum FlatLayer {
    Res(ResidualBlock),
    Resample(Resample),
}

/// A Wan2.2 `WanResidualDownBlock`: residual blocks, optional downsampler, and the
/// parameter-free `AvgDown3D` shortcut from the block's input.
#[derive(Debug, Clone)]
struct ResidualDownBlock {
    resnets: Vec<ResidualBlock>,
    downsampler: Option<Resample>,
    shortcut: AvgDown3d,
}

#[derive(Debug, Clone)]
enum DownBlocks {
    /// Wan2.1: `encoder.down_blocks.{i}` numbered across levels.
    Flat(Vec<FlatLayer>),
    /// Wan2.2: `encoder.down_blocks.{level}.{resnets.j | downsampler}`.
    Residual(Vec<ResidualDownBlock>),
}

fn down_kind(temporal: bool) -> ResampleKind {
    if temporal {
        ResampleKind::Downsample3d
    } else {
        ResampleKind::Downsample2d
    }
}

/// Encoder: `conv_in → down blocks → mid → RMS → SiLU → conv_out` to `2·z_dim` channels
/// (mean and log-variance, before `quant_conv`).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: CausalConv3d,
    down: DownBlocks,
    mid: MidBlock,
    norm_out: ChannelRmsNorm,
    conv_out: CausalConv3d,
}

impl Encoder {
    pub fn load(w: &Loader, cfg: &WanVaeConfig) -> Result<Self> {
        let levels = cfg.encoder_levels();
        let conv_in = w.causal_conv(
            "encoder.conv_in",
            cfg.in_channels,
            levels[0].in_dim,
            (3, 3),
            (1, 1),
            1,
        )?;
        let down = if cfg.is_residual {
            let mut blocks = Vec::with_capacity(levels.len());
            for (i, l) in levels.iter().enumerate() {
                let p = format!("encoder.down_blocks.{i}");
                let mut resnets = Vec::with_capacity(cfg.num_res_blocks);
                let mut in_dim = l.in_dim;
                for j in 0..cfg.num_res_blocks {
                    resnets.push(ResidualBlock::load(
                        w,
                        &format!("{p}.resnets.{j}"),
                        in_dim,
                        l.out_dim,
                    )?);
                    in_dim = l.out_dim;
                }
                let downsampler = if l.spatial {
                    Some(Resample::load(
                        w,
                        &format!("{p}.downsampler"),
                        down_kind(l.temporal),
                        l.out_dim,
                        l.out_dim,
                    )?)
                } else {
                    None
                };
                let ft = if l.temporal { 2 } else { 1 };
                let fs = if l.spatial { 2 } else { 1 };
                blocks.push(ResidualDownBlock {
                    resnets,
                    downsampler,
                    shortcut: AvgDown3d::new(l.in_dim, l.out_dim, ft, fs),
                });
            }
            DownBlocks::Residual(blocks)
        } else {
            let mut layers = Vec::new();
            for l in &levels {
                let mut in_dim = l.in_dim;
                for _ in 0..cfg.num_res_blocks {
                    let p = format!("encoder.down_blocks.{}", layers.len());
                    layers.push(FlatLayer::Res(ResidualBlock::load(
                        w, &p, in_dim, l.out_dim,
                    )?));
                    in_dim = l.out_dim;
                }
                if l.spatial {
                    let p = format!("encoder.down_blocks.{}", layers.len());
                    layers.push(FlatLayer::Resample(Resample::load(
                        w,
                        &p,
                        down_kind(l.temporal),
                        l.out_dim,
                        l.out_dim,
                    )?));
                }
            }
            DownBlocks::Flat(layers)
        };
        let dim = cfg.encoder_out_dim();
        Ok(Self {
            conv_in,
            down,
            mid: MidBlock::load(w, "encoder.mid_block", dim)?,
            norm_out: ChannelRmsNorm::new(
                w.tensor_f32("encoder.norm_out.gamma", &[dim, 1, 1, 1])?,
            )?,
            conv_out: w.causal_conv("encoder.conv_out", dim, 2 * cfg.z_dim, (3, 3), (1, 1), 1)?,
        })
    }

    /// One chunk of (patchified) frames `[B, T, C_in, H, W]` → `[B, T', 2·z, h, w]`.
    pub fn forward(&self, x: &Tensor, cache: &mut TimeCache) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x, cache.slot())?;
        match &self.down {
            DownBlocks::Flat(layers) => {
                for layer in layers {
                    x = match layer {
                        FlatLayer::Res(r) => r.forward(&x, cache)?,
                        FlatLayer::Resample(r) => r.forward(&x, cache)?,
                    };
                }
            }
            DownBlocks::Residual(blocks) => {
                for block in blocks {
                    let input = x.clone();
                    for r in &block.resnets {
                        x = r.forward(&x, cache)?;
                    }
                    if let Some(d) = &block.downsampler {
                        x = d.forward(&x, cache)?;
                    }
                    x = (x + block.shortcut.forward(&input)?)?;
                }
            }
        }
        let x = self.mid.forward(&x, cache)?;
        let x = crate::nn::silu(&self.norm_out.forward(&x, 2)?)?;
        self.conv_out.forward(&x, cache.slot())
    }
}
