//! Prompts -> DiT context, as Wan's `T5EncoderModel.__call__` and diffusers'
//! `WanPipeline._get_t5_prompt_embeds` do it: clean, tokenize to `text_len` ids (`</s>` appended,
//! padded with mask 0), run the encoder on all ids with the mask, keep the first `n_valid` rows of
//! each prompt (its tokens and `</s>`) and zero the rest back to `text_len` rows.

use candle_core::{DType, Tensor};

use super::tokenizer::Tokenizer;
use crate::umt5::UMT5Encoder;
use crate::{ModelError, Result};

/// Keeps rows `[0, lens[i])` of `hidden[i]` (`[B, L, D]`) and replaces the others with zeros.
pub fn keep_valid_rows(hidden: &Tensor, lens: &[usize]) -> Result<Tensor> {
    let (b, l, d) = hidden.dims3()?;
    if lens.len() != b {
        return Err(ModelError::Input(format!(
            "{} lengths for a batch of {b}",
            lens.len()
        )));
    }
    let mut rows = Vec::with_capacity(b);
    for (i, &n) in lens.iter().enumerate() {
        if n > l {
            return Err(ModelError::Input(format!(
                "prompt {i} has {n} valid rows, more than the {l} encoded"
            )));
        }
        let h = hidden.get(i)?;
        let row = if n == l {
            h
        } else {
            let zeros = Tensor::zeros((l - n, d), hidden.dtype(), hidden.device())?;
            Tensor::cat(&[&h.narrow(0, 0, n)?, &zeros], 0)?
        };
        rows.push(row);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// Encodes prompts to the `[B, text_len, d_model]` f32 context (rows past each prompt's
/// `n_valid` ids are zero).
pub fn encode_text<S: AsRef<str>>(
    encoder: &UMT5Encoder,
    tokenizer: &Tokenizer,
    prompts: &[S],
) -> Result<Tensor> {
    if prompts.is_empty() {
        return Err(ModelError::Input("no prompts to encode".into()));
    }
    let enc = tokenizer.encode_prompts(prompts)?;
    let device = encoder.device();
    let hidden = encoder.forward(&enc.ids_tensor(device)?, Some(&enc.mask_tensor(device)?))?;
    keep_valid_rows(&hidden.to_dtype(DType::F32)?, &enc.lens)
}
