//! Position channels: each pixel's frame, row and column as three clean input channels
//! (CoordConv), appended to the noisy video the way Wan's image-to-video models append their
//! conditioning channels.
//!
//! Why: Wan's DiT knows positions only through 3-D RoPE, i.e. only relative to other tokens.
//! At pure noise its input is the same everywhere, so its x0 is the same at every place, and a
//! caption word that says where things are ("moving right": on the left early, on the right
//! late) is worth nothing there. The bundled pixel-space model ignores its direction words;
//! with these channels and training at the highest noise a toy DiT learned them
//! (`models/shapes-wan/HISTORY.md`, "Toys 5-8").

use candle_core::{Device, Tensor};

use crate::Result;

/// Number of position channels.
pub const POSITION_CHANNELS: usize = 3;

/// `[1, 3, F, H, W]`: frame, row and column of every pixel, each spread linearly over
/// [-1, 1] from the first to the last index (0 for an axis of length 1), so they read the same
/// at any clip size.
pub fn position_channels(
    frames: usize,
    height: usize,
    width: usize,
    device: &Device,
) -> Result<Tensor> {
    let ramp = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| match n {
                1 => 0.0,
                _ => 2.0 * i as f32 / (n - 1) as f32 - 1.0,
            })
            .collect()
    };
    let (t, y, x) = (ramp(frames), ramp(height), ramp(width));
    let plane = frames * height * width;
    let mut data = Vec::with_capacity(POSITION_CHANNELS * plane);
    data.extend((0..plane).map(|i| t[i / (height * width)]));
    data.extend((0..plane).map(|i| y[i / width % height]));
    data.extend((0..plane).map(|i| x[i % width]));
    Ok(Tensor::from_vec(
        data,
        (1, POSITION_CHANNELS, frames, height, width),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_hold_frame_row_and_column() {
        let p = position_channels(3, 2, 5, &Device::Cpu).unwrap();
        assert_eq!(p.dims(), &[1, 3, 3, 2, 5]);
        let at = |c: usize, t: usize, y: usize, x: usize| {
            p.get(0)
                .unwrap()
                .get(c)
                .unwrap()
                .get(t)
                .unwrap()
                .get(y)
                .unwrap()
                .get(x)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        // Frame 2 of 3, row 0 of 2, column 1 of 5.
        assert_eq!(
            (at(0, 2, 0, 1), at(1, 2, 0, 1), at(2, 2, 0, 1)),
            (1.0, -1.0, -0.5)
        );
        assert_eq!(
            (at(0, 0, 1, 4), at(1, 0, 1, 4), at(2, 0, 1, 4)),
            (-1.0, 1.0, 1.0)
        );
        assert_eq!((at(0, 1, 1, 2), at(2, 1, 1, 2)), (0.0, 0.0));
        let one = position_channels(1, 1, 1, &Device::Cpu).unwrap();
        assert_eq!(
            one.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0; 3]
        );
    }
}
