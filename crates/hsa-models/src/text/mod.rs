//! The prompt path in front of the umT5 encoder: Wan's prompt cleaning (an ftfy port plus
//! `html.unescape` and whitespace rules), the `tokenizer.json` tokenizer with Wan's
//! pad/truncate-to-512 call, and [`encode_text`], which turns prompts into the `[B, 512, d]`
//! context the DiT consumes.

pub mod clean;
pub mod encode;
pub mod ftfy;
pub mod html;
#[rustfmt::skip]
mod tables;
pub mod tokenizer;

pub use clean::{basic_clean, clean_prompt, whitespace_clean};
pub use encode::{encode_text, keep_valid_rows};
pub use tokenizer::{EncodedPrompts, Tokenizer, WAN_TEXT_LEN};
