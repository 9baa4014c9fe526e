//! 3-D rotary position embedding of the Wan DiT.
//!
//! Each head's `d` channels form `d/2` rotation pairs split between time, rows and columns
//! (`h = w = 2·(d/6)` channels each, time takes the rest). Each axis has its own frequency
//! ladder `10000^(-2j/a)` over its width `a`; the angle is the token's integer grid index on
//! that axis. Pairs are adjacent channels (interleaved RoPE), as in both reference codes.

use candle_core::{DType, Device, Tensor};
use hsa_core::TokenGrid;

use crate::Result;

/// cos/sin tables `[N, d/2]` (f32) for every token of one grid.
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub cos: Tensor,
    pub sin: Tensor,
}

/// Channel widths of the (time, row, col) axes for head dimension `d`.
pub fn axis_dims(head_dim: usize) -> [usize; 3] {
    let hw = 2 * (head_dim / 6);
    [head_dim - 2 * hw, hw, hw]
}

/// Angles for positions `0..len` on one axis of width `a`: `[len][a/2]`, computed in f64
/// like the references, then rounded to f32 once.
fn axis_angles(a: usize, len: usize, theta: f64) -> Vec<Vec<f64>> {
    let freqs: Vec<f64> = (0..a / 2)
        .map(|j| 1.0 / theta.powf((2 * j) as f64 / a as f64))
        .collect();
    (0..len)
        .map(|p| freqs.iter().map(|f| p as f64 * f).collect())
        .collect()
}

impl RopeTable {
    pub fn new(grid: TokenGrid, head_dim: usize, device: &Device) -> Result<Self> {
        let [at, ah, aw] = axis_dims(head_dim);
        let theta = 10000.0;
        let (ft, fh, fw) = (
            axis_angles(at, grid.frames, theta),
            axis_angles(ah, grid.height, theta),
            axis_angles(aw, grid.width, theta),
        );
        let half = head_dim / 2;
        let n = grid.len();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for af in &ft {
            for ah in &fh {
                for aw in &fw {
                    for angle in af.iter().chain(ah).chain(aw) {
                        // The references build cos/sin in f64 and store them as f32.
                        cos.push(angle.cos() as f32);
                        sin.push(angle.sin() as f32);
                    }
                }
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (n, half), device)?,
            sin: Tensor::from_vec(sin, (n, half), device)?,
        })
    }

    /// Rows for the given token ids (all rows when `None`), in `dtype`.
    pub fn rows(&self, ids: Option<&Tensor>, dtype: DType) -> Result<(Tensor, Tensor)> {
        let (c, s) = match ids {
            None => (self.cos.clone(), self.sin.clone()),
            Some(ids) => (
                self.cos.index_select(ids, 0)?,
                self.sin.index_select(ids, 0)?,
            ),
        };
        Ok((c.to_dtype(dtype)?, s.to_dtype(dtype)?))
    }
}

/// Rotates `x` `[B, H, L, d]` with cos/sin `[L, d/2]`.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if crate::nn::tracks_grad(&[x]) {
        // candle's fused kernel has no backward pass; the slow form is plain ops.
        return Ok(candle_nn::rotary_emb::rope_i_slow(
            &x.contiguous()?,
            cos,
            sin,
        )?);
    }
    Ok(candle_nn::rotary_emb::rope_i(&x.contiguous()?, cos, sin)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_split_matches_wan_for_head_dim_128() {
        assert_eq!(axis_dims(128), [44, 42, 42]);
        assert_eq!(axis_dims(12), [4, 4, 4]);
        assert_eq!(axis_dims(16), [8, 4, 4]);
    }

    #[test]
    fn token_rows_follow_frame_row_col_order() {
        let grid = TokenGrid::new(2, 3, 4);
        let t = RopeTable::new(grid, 12, &Device::Cpu).unwrap();
        let sin = t.sin.to_vec2::<f32>().unwrap();
        // Token (1, 2, 3): time pairs use position 1, row pairs 2, col pairs 3.
        let n = 12 + 2 * 4 + 3;
        let expect = [
            1.0f64.sin(),
            (1.0f64 / 100.0).sin(),
            (2.0f64).sin(),
            (2.0f64 / 100.0).sin(),
            3.0f64.sin(),
        ];
        for (got, want) in sin[n].iter().zip(expect) {
            assert!((*got as f64 - want).abs() < 1e-6);
        }
    }
}
