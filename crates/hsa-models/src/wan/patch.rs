//! Patchify / unpatchify between a latent video `[B, C, F, H, W]` and tokens `[B, N, P]`.
//!
//! Token features are ordered `(pt, ph, pw, c)` with the channel fastest, the order of the
//! output head; the patch-embedding weight is reordered to match (see
//! [`super::embeddings::patch_weight_to_token_order`]), so the sampler's state and the model's
//! input and output share one layout.

use candle_core::Tensor;
use hsa_core::TokenGrid;

use crate::{ModelError, Result};

/// Token grid of a `[.., F, H, W]` latent for patch `[pt, ph, pw]`, or an error naming the
/// axis that does not divide.
pub fn grid_for(
    frames: usize,
    height: usize,
    width: usize,
    patch: [usize; 3],
) -> Result<TokenGrid> {
    for (name, n, p) in [
        ("frames", frames, patch[0]),
        ("height", height, patch[1]),
        ("width", width, patch[2]),
    ] {
        if n == 0 || n % p != 0 {
            return Err(ModelError::Input(format!(
                "latent {name} {n} is not a positive multiple of the patch size {p}"
            )));
        }
    }
    Ok(TokenGrid::new(
        frames / patch[0],
        height / patch[1],
        width / patch[2],
    ))
}

/// `[B, C, F, H, W]` -> `[B, N, pt·ph·pw·C]`.
pub fn patchify(x: &Tensor, patch: [usize; 3]) -> Result<Tensor> {
    let (b, c, f, h, w) = x.dims5()?;
    let g = grid_for(f, h, w, patch)?;
    let [pt, ph, pw] = patch;
    Ok(
        x.reshape(vec![b, c, g.frames, pt, g.height, ph, g.width, pw])?
            .permute(vec![0, 2, 4, 6, 3, 5, 7, 1])?
            .reshape((b, g.len(), pt * ph * pw * c))?
            .contiguous()?,
    )
}

/// `[B, N, pt·ph·pw·C]` -> `[B, C, F, H, W]`.
pub fn unpatchify(tokens: &Tensor, grid: TokenGrid, patch: [usize; 3]) -> Result<Tensor> {
    let (b, n, p) = tokens.dims3()?;
    let [pt, ph, pw] = patch;
    let k = pt * ph * pw;
    if n != grid.len() || p % k != 0 {
        return Err(ModelError::Input(format!(
            "tokens {:?} do not fit grid {grid:?} with patch {patch:?}",
            tokens.dims()
        )));
    }
    let c = p / k;
    Ok(tokens
        .reshape(vec![b, grid.frames, grid.height, grid.width, pt, ph, pw, c])?
        .permute(vec![0, 7, 1, 4, 2, 5, 3, 6])?
        .reshape((b, c, grid.frames * pt, grid.height * ph, grid.width * pw))?
        .contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    #[test]
    fn unpatchify_inverts_patchify_and_puts_channels_last() {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 2.0 * 4.0 * 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 2, 4, 6))
            .unwrap();
        let t = patchify(&x, [1, 2, 2]).unwrap();
        assert_eq!(t.dims(), &[2, 2 * 2 * 3, 12]);
        // Token 0 of batch 0, feature (pt=0, ph=0, pw=1, c=2) is x[0, 2, 0, 0, 1].
        let v: f32 = t.i((0, 0, 2 + 3)).unwrap().to_scalar().unwrap();
        assert_eq!(v, x.i((0, 2, 0, 0, 1)).unwrap().to_scalar::<f32>().unwrap());
        let back = unpatchify(&t, TokenGrid::new(2, 2, 3), [1, 2, 2]).unwrap();
        let diff = (back - &x)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn indivisible_sizes_are_errors() {
        assert!(grid_for(3, 5, 4, [1, 2, 2])
            .unwrap_err()
            .to_string()
            .contains("height 5"));
    }
}
