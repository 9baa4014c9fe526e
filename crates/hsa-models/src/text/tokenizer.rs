//! The umT5 tokenizer: a `tokenizer.json` (google/umt5-xxl's is a SentencePiece Unigram model with
//! a `Precompiled` normalizer, a Metaspace pre-tokenizer and a post-processor that appends `</s>`)
//! run through the `tokenizers` crate, with the call Wan and diffusers make:
//! `tokenizer(texts, padding="max_length", max_length=512, truncation=True, add_special_tokens=True)`.
//!
//! Truncation keeps the first `text_len - 1` pieces and then appends `</s>`, exactly like the
//! `tokenizers` library does when `transformers` asks it to truncate; padding uses the `<pad>` id
//! (0 for T5) on the right, with mask 0.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use super::clean::clean_prompt;
use crate::{ModelError, Result};

/// Wan's text length: every prompt becomes 512 ids (`text_len` in the Wan configs).
pub const WAN_TEXT_LEN: usize = 512;

/// A loaded `tokenizer.json` plus the fixed output length.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    text_len: usize,
    pad_id: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("text_len", &self.text_len)
            .field("pad_id", &self.pad_id)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

/// Token ids and attention masks for a batch of prompts, each padded / truncated to `text_len`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPrompts {
    /// The strings that were tokenized (the cleaned prompts for [`Tokenizer::encode_prompts`]).
    pub texts: Vec<String>,
    /// Row-major `[batch, text_len]` ids.
    pub ids: Vec<u32>,
    /// Row-major `[batch, text_len]` attention mask (1 = token, 0 = padding).
    pub mask: Vec<u32>,
    /// Number of valid ids per prompt (including the appended `</s>`).
    pub lens: Vec<usize>,
    pub text_len: usize,
}

impl EncodedPrompts {
    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// The ids of prompt `i` (`text_len` values, padding included).
    pub fn row(&self, i: usize) -> &[u32] {
        &self.ids[i * self.text_len..(i + 1) * self.text_len]
    }

    /// Ids as a `[batch, text_len]` u32 tensor.
    pub fn ids_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.ids,
            (self.batch(), self.text_len),
            device,
        )?)
    }

    /// Attention mask as a `[batch, text_len]` u32 tensor.
    pub fn mask_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.mask,
            (self.batch(), self.text_len),
            device,
        )?)
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json` (output length [`WAN_TEXT_LEN`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|e| ModelError::Io {
            path: path.clone(),
            source: e,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses `tokenizer.json` content; `path` is only used in messages.
    pub fn from_bytes(bytes: &[u8], path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| ModelError::Config {
            path: path.clone(),
            message: format!("malformed tokenizer.json: {e}"),
        })?;
        let pad_id = inner.token_to_id("<pad>").unwrap_or(0);
        Self {
            inner,
            path,
            text_len: WAN_TEXT_LEN,
            pad_id,
        }
        .with_text_len(WAN_TEXT_LEN)
    }

    /// Changes the padded / truncated output length (`max_length`).
    pub fn with_text_len(mut self, text_len: usize) -> Result<Self> {
        let added = self.inner.get_post_processor().map_or(0, |p| {
            use tokenizers::PostProcessor;
            p.added_tokens(false)
        });
        if text_len <= added {
            return Err(ModelError::Input(format!(
                "text length {text_len} leaves no room for the {added} special token(s) the tokenizer appends"
            )));
        }
        self.inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: text_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| ModelError::Input(format!("cannot truncate to {text_len}: {e}")))?;
        self.inner.with_padding(None);
        self.text_len = text_len;
        Ok(self)
    }

    pub fn text_len(&self) -> usize {
        self.text_len
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers` tokenizer (truncation set to `text_len`, no padding).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Tokenizes `texts` as they are (no cleaning): special tokens added, truncated and padded to
    /// `text_len`.
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<EncodedPrompts> {
        let l = self.text_len;
        let mut out = EncodedPrompts {
            texts: Vec::with_capacity(texts.len()),
            ids: Vec::with_capacity(texts.len() * l),
            mask: Vec::with_capacity(texts.len() * l),
            lens: Vec::with_capacity(texts.len()),
            text_len: l,
        };
        for t in texts {
            let t = t.as_ref();
            let enc = self.inner.encode(t, true).map_err(|e| {
                ModelError::Input(format!(
                    "tokenizer {} failed on {t:?}: {e}",
                    self.path.display()
                ))
            })?;
            let ids = enc.get_ids();
            let n = ids.len();
            if n > l {
                return Err(ModelError::Input(format!(
                    "tokenizer produced {n} ids for a {l}-id budget (truncation not applied?)"
                )));
            }
            out.texts.push(t.to_string());
            out.ids.extend_from_slice(ids);
            out.ids.extend(std::iter::repeat_n(self.pad_id, l - n));
            out.mask.extend(std::iter::repeat_n(1u32, n));
            out.mask.extend(std::iter::repeat_n(0u32, l - n));
            out.lens.push(n);
        }
        Ok(out)
    }

    /// Wan's tokenizer call: cleans every prompt ([`clean_prompt`]) and tokenizes it.
    pub fn encode_prompts<S: AsRef<str>>(&self, prompts: &[S]) -> Result<EncodedPrompts> {
        let cleaned: Vec<String> = prompts.iter().map(|p| clean_prompt(p.as_ref())).collect();
        self.tokenize(&cleaned)
    }
}
