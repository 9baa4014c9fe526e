//! The cached Euler update on token rows, shared by HSA and RAS.

use candle_core::{DType, Tensor};

use crate::Result;

/// `x[tokens[r]] += dts[r] · v[rows[r]]` for every r, out of place.
///
/// `v` holds fresh velocities: in token order `[N, P]` when `v_rows` is `None` and `tokens`
/// covers all N rows, in `tokens` order `[|tokens|, P]` when `v_rows` is `None` otherwise, or
/// any rows of which `v_rows` picks the ones to use. When every token of the state moves by
/// the same `dt`, the update is the FM Euler expression `x + v·dt` itself, so a dense HSA step
/// is bitwise a dense FM step. Otherwise the scaled rows are scattered back with `index_add`
/// (each element still computes `x + fl32(dt)·v`, the same arithmetic).
pub fn apply_jumps(
    x: &Tensor,
    v: &Tensor,
    v_rows: Option<&[u32]>,
    tokens: &[u32],
    dts: &[f64],
) -> Result<Tensor> {
    debug_assert_eq!(tokens.len(), dts.len());
    if tokens.is_empty() {
        return Ok(x.clone());
    }
    let v = v.to_dtype(DType::F32)?;
    let uniform = dts.iter().all(|&d| d == dts[0]);
    let scale = |rows: &Tensor| -> Result<Tensor> {
        if uniform {
            Ok((rows * dts[0])?)
        } else {
            let col: Vec<f32> = dts.iter().map(|&d| d as f32).collect();
            let col = Tensor::from_vec(col, (dts.len(), 1), x.device())?;
            Ok(rows.broadcast_mul(&col)?)
        }
    };
    if v_rows.is_none() && tokens.len() == x.dim(0)? {
        return Ok((x + scale(&v)?)?);
    }
    let rows = match v_rows {
        Some(r) => v.index_select(&Tensor::from_slice(r, r.len(), x.device())?, 0)?,
        None => v,
    };
    let ids = Tensor::from_slice(tokens, tokens.len(), x.device())?;
    Ok(x.index_add(&ids, &scale(&rows)?, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rows_move_by_their_own_dt_and_others_stay() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 1.], [2., 2.], [3., 3.]], &dev).unwrap();
        let v = Tensor::new(&[[10f32, 20.], [30., 40.]], &dev).unwrap();
        let y = apply_jumps(&x, &v, None, &[0, 2], &[-0.5, -0.25]).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            vec![vec![-4., -9.], vec![2., 2.], vec![-4.5, -7.]]
        );
        let y = apply_jumps(&x, &v, Some(&[1]), &[1], &[0.5]).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            vec![vec![1., 1.], vec![17., 22.], vec![3., 3.]]
        );
    }

    #[test]
    fn a_uniform_dense_update_is_the_fm_expression() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0.1f32, 0.7], [0.3, -0.9]], &dev).unwrap();
        let v = Tensor::new(&[[1.3f32, -0.2], [0.11, 5.0]], &dev).unwrap();
        let dt = -0.0371;
        let fm = (&x + (&v * dt).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(
            apply_jumps(&x, &v, None, &[0, 1], &[dt, dt])
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            fm
        );
        // The scattered and per-row forms do the same arithmetic.
        assert_eq!(
            apply_jumps(&x, &v, Some(&[0, 1]), &[0, 1], &[dt, dt])
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            fm
        );
        let y = apply_jumps(&x, &v, None, &[0, 1], &[dt, dt * 2.0])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(y[0], fm[0]);
    }
}
