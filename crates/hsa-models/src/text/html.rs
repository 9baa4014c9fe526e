//! Python's `html.unescape` (CPython 3.11 `Lib/html/__init__.py`), ported exactly: HTML5 named
//! references with and without `;` (longest-prefix rule for the legacy names), decimal and hex
//! numeric references, the WHATWG replacement table for invalid numbers, and removal of the
//! non-characters / control code points Python drops.

use std::sync::OnceLock;

use regex::{Captures, Regex};

use super::tables;

/// Looks up an HTML5 entity name (without `&`; with the trailing `;` where it has one).
pub fn html5_entity(name: &str) -> Option<&'static str> {
    tables::HTML5
        .binary_search_by(|(k, _)| (*k).cmp(name))
        .ok()
        .map(|i| tables::HTML5[i].1)
}

fn charref_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)")
            .expect("charref regex")
    })
}

/// Decodes one numeric reference body (`#123`, `#x7B`, optional trailing `;`).
pub(crate) fn numeric_charref(s: &str) -> String {
    let body = s.trim_start_matches('#');
    let (digits, radix) = match body.strip_prefix(['x', 'X']) {
        Some(hex) => (hex.trim_end_matches(';'), 16),
        None => (body.trim_end_matches(';'), 10),
    };
    // Python uses big integers; anything past u64 is certainly > 0x10FFFF.
    let num = u64::from_str_radix(digits, radix).unwrap_or(u64::MAX);
    if num <= u32::MAX as u64 {
        let n = num as u32;
        if let Ok(i) = tables::INVALID_CHARREFS.binary_search_by(|(k, _)| k.cmp(&n)) {
            return tables::INVALID_CHARREFS[i].1.to_string();
        }
    }
    if (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
        return "\u{FFFD}".to_string();
    }
    let n = num as u32;
    if tables::INVALID_CODEPOINTS.binary_search(&n).is_ok() {
        return String::new();
    }
    char::from_u32(n).map(String::from).unwrap_or_default()
}

fn replace_charref(caps: &Captures) -> String {
    let s = &caps[1];
    if s.starts_with('#') {
        return numeric_charref(s);
    }
    if let Some(v) = html5_entity(s) {
        return v.to_string();
    }
    // Longest prefix of at least two characters that is a (legacy, `;`-less) entity.
    let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    for x in (2..bounds.len()).rev() {
        let (head, tail) = s.split_at(bounds[x]);
        if let Some(v) = html5_entity(head) {
            return format!("{v}{tail}");
        }
    }
    format!("&{s}")
}

/// `html.unescape(s)`.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    charref_re().replace_all(s, replace_charref).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_examples() {
        let cases = [
            ("&amp;", "&"),
            ("&amp", "&"),
            ("&ampx", "&x"),
            ("&notit;", "¬it;"),
            ("&notin;", "∉"),
            ("&#39;", "'"),
            ("&#x27;", "'"),
            ("&#0;", "\u{FFFD}"),
            ("&#128;", "€"),
            ("&#xD800;", "\u{FFFD}"),
            ("&#1114112;", "\u{FFFD}"),
            ("&#1;", ""),
            ("&#99999999999999999999999;", "\u{FFFD}"),
            ("&lt;b&gt;", "<b>"),
            ("&unknown;", "&unknown;"),
            ("& amp;", "& amp;"),
            ("&#x1F600;", "😀"),
        ];
        for (i, o) in cases {
            assert_eq!(unescape(i), o, "{i}");
        }
    }
}
