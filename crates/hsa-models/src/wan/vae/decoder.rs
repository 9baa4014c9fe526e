//! The Wan VAE decoder (diffusers `WanDecoder3d`), Wan2.1 and Wan2.2 layouts.

use candle_core::Tensor;

use super::blocks::{ChannelRmsNorm, DupUp3d, MidBlock, Resample, ResampleKind, ResidualBlock};
use super::causal_conv::{CausalConv3d, TimeCache};
use super::config::WanVaeConfig;
use super::weights::Loader;
use crate::Result;

/// One decoder level: `num_res_blocks + 1` residual blocks, an optional upsampler, and in the
/// Wan2.2 layout the parameter-free `DupUp3D` shortcut from the level's input.
#[derive(Debug, Clone)]
struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
    shortcut: Option<DupUp3d>,
}

/// Decoder: `conv_in → mid → up blocks → RMS → SiLU → conv_out` (before unpatchify/clamp).
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: CausalConv3d,
    mid: MidBlock,
    blocks: Vec<UpBlock>,
    norm_out: ChannelRmsNorm,
    conv_out: CausalConv3d,
}

impl Decoder {
    pub fn load(w: &Loader, cfg: &WanVaeConfig) -> Result<Self> {
        let levels = cfg.decoder_levels();
        let top = levels[0].in_dim;
        let conv_in = w.causal_conv("decoder.conv_in", cfg.z_dim, top, (3, 3), (1, 1), 1)?;
        let mid = MidBlock::load(w, "decoder.mid_block", top)?;
        let mut blocks = Vec::with_capacity(levels.len());
        for (i, l) in levels.iter().enumerate() {
            let p = format!("decoder.up_blocks.{i}");
            let mut resnets = Vec::with_capacity(cfg.num_res_blocks + 1);
            let mut in_dim = l.in_dim;
            for j in 0..=cfg.num_res_blocks {
                resnets.push(ResidualBlock::load(
                    w,
                    &format!("{p}.resnets.{j}"),
                    in_dim,
                    l.out_dim,
                )?);
                in_dim = l.out_dim;
            }
            let kind = if l.temporal {
                ResampleKind::Upsample3d
            } else {
                ResampleKind::Upsample2d
            };
            let (upsampler, shortcut) = match (l.spatial, cfg.is_residual) {
                (false, _) => (None, None),
                (true, false) => (
                    Some(Resample::load(
                        w,
                        &format!("{p}.upsamplers.0"),
                        kind,
                        l.out_dim,
                        l.out_dim / 2,
                    )?),
                    None,
                ),
                (true, true) => (
                    Some(Resample::load(
                        w,
                        &format!("{p}.upsampler"),
                        kind,
                        l.out_dim,
                        l.out_dim,
                    )?),
                    Some(DupUp3d::new(
                        l.in_dim,
                        l.out_dim,
                        if l.temporal { 2 } else { 1 },
                        2,
                    )),
                ),
            };
            blocks.push(UpBlock {
                resnets,
                upsampler,
                shortcut,
            });
        }
        let out_dim = levels[levels.len() - 1].out_dim;
        Ok(Self {
            conv_in,
            mid,
            blocks,
            norm_out: ChannelRmsNorm::new(
                w.tensor_f32("decoder.norm_out.gamma", &[out_dim, 1, 1, 1])?,
            )?,
            conv_out: w.causal_conv(
                "decoder.conv_out",
                out_dim,
                cfg.out_channels,
                (3, 3),
                (1, 1),
                1,
            )?,
        })
    }

    /// One chunk of latent frames `[B, T, z, h, w]` (after `post_quant_conv`) →
    /// `[B, T', C_out, H, W]` (before unpatchify and clamp).
    pub fn forward(&self, x: &Tensor, cache: &mut TimeCache) -> Result<Tensor> {
        let first = cache.is_first_chunk();
        let x = self.conv_in.forward(x, cache.slot())?;
        let mut x = self.mid.forward(&x, cache)?;
        for block in &self.blocks {
            let input = x.clone();
            for r in &block.resnets {
                x = r.forward(&x, cache)?;
            }
            if let Some(u) = &block.upsampler {
                x = u.forward(&x, cache)?;
            }
            if let Some(s) = &block.shortcut {
                x = (x + s.forward(&input, first)?)?;
            }
        }
        let x = crate::nn::silu(&self.norm_out.forward(&x, 2)?)?;
        self.conv_out.forward(&x, cache.slot())
    }
}
