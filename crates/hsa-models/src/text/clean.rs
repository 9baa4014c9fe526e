//! Wan's prompt cleaning (`wan/modules/tokenizers.py`, `HuggingfaceTokenizer(clean="whitespace")`;
//! diffusers' `prompt_clean` is the same):
//!
//! ```python
//! def basic_clean(text):
//!     text = ftfy.fix_text(text)
//!     text = html.unescape(html.unescape(text))
//!     return text.strip()
//!
//! def whitespace_clean(text):
//!     text = re.sub(r"\s+", " ", text)
//!     return text.strip()
//!
//! clean = whitespace_clean(basic_clean(text))
//! ```

use super::{ftfy, html};

/// Python's `str.strip()` (strips `str.isspace()` characters).
fn py_strip(s: &str) -> &str {
    s.trim_matches(ftfy::is_py_space)
}

/// `basic_clean`: `ftfy.fix_text`, `html.unescape` twice, strip.
pub fn basic_clean(text: &str) -> String {
    let t = ftfy::fix_text(text);
    let t = html::unescape(&html::unescape(&t));
    py_strip(&t).to_string()
}

/// `whitespace_clean`: every run of Python whitespace becomes one space, then strip.
pub fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if ftfy::is_py_space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    py_strip(&out).to_string()
}

/// The full Wan prompt cleaning: `whitespace_clean(basic_clean(text))`.
pub fn clean_prompt(text: &str) -> String {
    whitespace_clean(&basic_clean(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_wan() {
        assert_eq!(clean_prompt("  a \t b\n\nc  "), "a b c");
        assert_eq!(clean_prompt("fish &amp;amp; chips"), "fish & chips");
        assert_eq!(clean_prompt("cafÃ©"), "café");
        assert_eq!(clean_prompt("\u{3000}x\u{a0}y\u{2028}"), "x y");
        assert_eq!(clean_prompt(""), "");
    }
}
