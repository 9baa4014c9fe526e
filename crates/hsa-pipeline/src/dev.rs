//! Developer entry points that expose model pieces on plain tensor files, so anyone can check
//! us against another implementation (`hsa dev ...`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use hsa_core::ActiveSet;
use hsa_models::wan::WanModel;

use crate::io::{load_tensors, require};
use crate::{PipelineError, Result};

/// One DiT forward on diffusers-named inputs (`hidden_states`, `timestep`,
/// `encoder_hidden_states`, optional `encoder_hidden_states_image`). With `active` (a file
/// holding `active`: sorted i64 token indices) a dense pass fills the K/V cache and a partial
/// pass computes those tokens; other values of the returned velocity are 0.
pub fn dit_forward(
    model_dir: &Path,
    inputs: &Path,
    active: Option<&Path>,
    dtype: Option<DType>,
    device: &Device,
) -> Result<Tensor> {
    let model = WanModel::load_dir(model_dir, dtype, device)?;
    let io = load_tensors(inputs, device)?;
    let hs = require(&io, "hidden_states", inputs)?;
    let t = require(&io, "timestep", inputs)?;
    let ehs = require(&io, "encoder_hidden_states", inputs)?;
    let img = io.get("encoder_hidden_states_image");
    match active {
        None => Ok(model.forward(hs, t, ehs, img, None)?),
        Some(path) => {
            let file = load_tensors(path, device)?;
            let ids = require(&file, "active", path)?;
            let ids: Vec<i64> = ids.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
            let dims = hs.dims();
            let n = if dims.len() == 5 {
                let p = model.config().patch_size;
                (dims[2] / p[0]) * (dims[3] / p[1]) * (dims[4] / p[2])
            } else {
                0
            };
            let ids: Vec<u32> = ids
                .iter()
                .map(|&i| {
                    u32::try_from(i).map_err(|_| PipelineError::Input {
                        path: path.to_path_buf(),
                        message: format!("active index {i} is negative or too large"),
                    })
                })
                .collect::<Result<_>>()?;
            let set = ActiveSet::new(ids, n, device).map_err(|e| PipelineError::Input {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            Ok(model.forward_dense_then_partial(hs, t, ehs, img, &set)?)
        }
    }
}
