//! A port of `ftfy.fix_text` (ftfy 6.3.1) with its default configuration, as Wan's prompt cleaning
//! calls it.
//!
//! Ported step by step from ftfy's source, in ftfy's order, repeated until nothing changes, on
//! line-sized segments (the text is split after every `\n`, and every 1 000 000 characters):
//!
//! * `unescape_html` ("auto": skipped for a segment containing `<` and for every segment after it);
//!   ftfy's entity table (HTML5 names ending in `;` plus all-caps forms such as `&EACUTE;`) and
//!   numeric references through `html.unescape`.
//! * `fix_encoding`: the `badness` heuristic (ftfy's regex, transpiled), the ten single-byte codecs
//!   ftfy tries (latin-1, sloppy windows-1250/1/2/3/4/7, iso-8859-2, macroman, cp437) with the
//!   `restore_byte_a0` and `replace_lossy_sequences` byte fixes, strict UTF-8 and ftfy's
//!   `utf-8-variants` (CESU-8 surrogate pairs, Java `C0 80`), `decode_inconsistent_utf8`, the
//!   latin-1 → windows-1252 step and `fix_c1_controls`.
//! * `fix_c1_controls`, `fix_latin_ligatures`, `fix_character_width`, `uncurl_quotes`,
//!   `fix_line_breaks`, `remove_terminal_escapes`, `remove_control_chars`, NFC.
//!
//! Not covered / known differences:
//! * `fix_surrogates`: a Rust `&str` cannot hold lone UTF-16 surrogates, so there is nothing to fix.
//! * NFC uses the Unicode 9.0 tables of `unicode-normalization-alignments` (the crate the tokenizer
//!   uses); Python 3.11 uses Unicode 14.0. Only characters whose canonical (de)composition was
//!   added after Unicode 9.0 can differ. All other character data (badness classes, `\s`, `\w`,
//!   `\d`, the width map, the codecs, the HTML5 table) was generated from Python 3.11 / ftfy 6.3.1
//!   (`tables.rs`), so it matches exactly.
//! * The explanation / `fix_and_explain` API and the non-default configuration switches are not
//!   ported; nor are `fix_encoding`'s functions outside `fix_text` (`guess_bytes`, `decode_escapes`).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::bytes::Regex as BytesRegex;
use regex::Regex;
use unicode_normalization_alignments::UnicodeNormalization;

use super::html;
use super::tables;

const MAX_DECODE_LENGTH: usize = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Character data
// ---------------------------------------------------------------------------------------------

struct Charmap {
    name: &'static str,
    /// Characters of bytes 0x80..=0xFF.
    high: Vec<char>,
    /// Inverse map, including the character of byte 0x1A (U+FFFD for the sloppy codecs).
    encode: HashMap<char, u8>,
}

impl Charmap {
    fn sloppy(&self) -> bool {
        self.name.starts_with("sloppy")
    }

    /// `chardata.possible_encoding`: every character is ASCII other than U+1A, or in the table.
    fn possible(&self, text: &str) -> bool {
        text.chars()
            .all(|c| ((c as u32) < 0x80 && c != '\u{1a}') || self.encode.contains_key(&c))
    }

    fn encode(&self, text: &str) -> Vec<u8> {
        text.chars()
            .map(|c| {
                if (c as u32) < 0x80 && c != '\u{1a}' {
                    c as u8
                } else {
                    self.encode[&c]
                }
            })
            .collect()
    }
}

fn charmaps() -> &'static [Charmap] {
    static MAPS: OnceLock<Vec<Charmap>> = OnceLock::new();
    MAPS.get_or_init(|| {
        tables::CHARMAPS
            .iter()
            .map(|(name, high, sub)| {
                let high: Vec<char> = high.chars().collect();
                assert_eq!(high.len(), 128, "{name}");
                let mut encode: HashMap<char, u8> = high
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (*c, 0x80 + i as u8))
                    .collect();
                encode.insert(*sub, 0x1a);
                Charmap { name, high, encode }
            })
            .collect()
    })
}

fn charmap(name: &str) -> &'static Charmap {
    charmaps()
        .iter()
        .find(|c| c.name == name)
        .expect("known charmap")
}

fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    ranges
        .binary_search_by(|(a, b)| {
            if *b < c {
                std::cmp::Ordering::Less
            } else if *a > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Python's `str.isspace()` (the characters `re`'s `\s` matches in a `str` pattern).
pub fn is_py_space(c: char) -> bool {
    in_ranges(tables::PY_SPACE, c)
}

fn class_of(ranges: &[(u32, u32)]) -> String {
    let mut s = String::from("[");
    for (a, b) in ranges {
        if a == b {
            s.push_str(&format!("\\x{{{a:x}}}"));
        } else {
            s.push_str(&format!("\\x{{{a:x}}}-\\x{{{b:x}}}"));
        }
    }
    s.push(']');
    s
}

// ---------------------------------------------------------------------------------------------
// Regexes
// ---------------------------------------------------------------------------------------------

fn badness_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::RegexBuilder::new(tables::BADNESS_RE)
            .size_limit(64 << 20)
            .build()
            .expect("badness regex")
    })
}

/// `UTF8_DETECTOR_RE` without its look-behind (applied by [`utf8_detector_find_at`]).
fn utf8_detector_re() -> &'static (Regex, Regex) {
    static RE: OnceLock<(Regex, Regex)> = OnceLock::new();
    RE.get_or_init(|| {
        let c = tables::UTF8_CONTINUATION;
        let body = format!(
            "(?:{f2}{c}|{f3}{c}{{2}}|{f4}{c}{{3}})+",
            f2 = tables::UTF8_FIRST_OF_2,
            f3 = tables::UTF8_FIRST_OF_3,
            f4 = tables::UTF8_FIRST_OF_4,
        );
        let strict = format!("^{}$", tables::UTF8_CONTINUATION_STRICT);
        (
            Regex::new(&body).expect("utf8 detector"),
            Regex::new(&strict).expect("utf8 strict continuation"),
        )
    })
}

/// Next match of `UTF8_DETECTOR_RE` at or after byte `pos`, honouring the look-behind
/// `(?<! [utf8_continuation_strict])`.
fn utf8_detector_find_at(text: &str, mut pos: usize) -> Option<(usize, usize)> {
    let (re, strict) = utf8_detector_re();
    while pos <= text.len() {
        let m = re.find_at(text, pos)?;
        let prev = text[..m.start()].chars().next_back();
        let blocked = prev
            .map(|p| strict.is_match(p.encode_utf8(&mut [0u8; 4])))
            .unwrap_or(false);
        if !blocked {
            return Some((m.start(), m.end()));
        }
        let step = text[m.start()..]
            .chars()
            .next()
            .map(char::len_utf8)
            .unwrap_or(1);
        pos = m.start() + step;
    }
    None
}

fn altered_utf8_re() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| {
        BytesRegex::new(concat!(
            r"(?-u)[\xc2\xc3\xc5\xce\xd0\xd9][\x20]",
            r"|[\xe2\xe3][\x20][\x80-\x84\x86-\x9f\xa1-\xbf]",
            r"|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf][\x20]",
            r"|[\xf0][\x20][\x80-\xbf][\x80-\xbf]",
            r"|[\xf0][\x80-\xbf][\x20][\x80-\xbf]",
            r"|[\xf0][\x80-\xbf][\x80-\xbf][\x20]",
        ))
        .expect("altered utf8 regex")
    })
}

fn lossy_utf8_re() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| {
        BytesRegex::new(concat!(
            r"(?-u)[\xc2-\xdf][\x1a]",
            r"|[\xc2-\xc3][?]",
            r"|\xed[\xa0-\xaf][\x1a?]\xed[\xb0-\xbf][\x1a?\x80-\xbf]",
            r"|\xed[\xa0-\xaf][\x1a?\x80-\xbf]\xed[\xb0-\xbf][\x1a?]",
            r"|[\xe0-\xef][\x1a?][\x1a\x80-\xbf]",
            r"|[\xe0-\xef][\x1a\x80-\xbf][\x1a?]",
            r"|[\xf0-\xf4][\x1a?][\x1a\x80-\xbf][\x1a\x80-\xbf]",
            r"|[\xf0-\xf4][\x1a\x80-\xbf][\x1a?][\x1a\x80-\xbf]",
            r"|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a?]",
            r"|\x1a",
        ))
        .expect("lossy utf8 regex")
    })
}

fn html_entity_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("entity regex"))
}

fn ansi_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let digit = class_of(tables::PY_DIGIT);
        Regex::new(&format!(r"\x1b\[((?:{digit}|;)*)([a-zA-Z])")).expect("ansi regex")
    })
}

// ---------------------------------------------------------------------------------------------
// Heuristic
// ---------------------------------------------------------------------------------------------

/// `ftfy.badness.badness`: the number of (non-overlapping) mojibake-looking sequences.
pub fn badness(text: &str) -> usize {
    badness_re().find_iter(text).count()
}

/// `ftfy.badness.is_bad`.
pub fn is_bad(text: &str) -> bool {
    badness_re().is_match(text)
}

// ---------------------------------------------------------------------------------------------
// Individual fixes
// ---------------------------------------------------------------------------------------------

/// ftfy's `unescape_html`: entities that end in `;` (HTML5 names, all-caps Latin forms, numeric).
pub fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    html_entity_re()
        .replace_all(text, |caps: &regex::Captures| {
            let m = &caps[0];
            let name = &m[1..];
            if let Some(v) = html::html5_entity(name).filter(|_| name.ends_with(';')) {
                return v.to_string();
            }
            if let Ok(i) = tables::FTFY_UPPER.binary_search_by(|(k, _)| (*k).cmp(name)) {
                return tables::FTFY_UPPER[i].1.to_string();
            }
            if m.starts_with("&#") {
                let u = html::unescape(m);
                return if u.contains(';') { m.to_string() } else { u };
            }
            m.to_string()
        })
        .into_owned()
}

/// `fixes.restore_byte_a0` on bytes.
fn restore_byte_a0(bytes: &[u8]) -> Vec<u8> {
    // A_GRAVE_WORD_RE = b"\xc3 (?! |quele|quela|quilo|s )" -> b"\xc3\xa0 "
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xC3 && bytes.get(i + 1) == Some(&b' ') {
            let rest = &bytes[i + 2..];
            let excluded = [&b" "[..], b"quele", b"quela", b"quilo", b"s "]
                .iter()
                .any(|p| rest.starts_with(p));
            if !excluded {
                out.extend_from_slice(b"\xc3\xa0 ");
                i += 2;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    altered_utf8_re()
        .replace_all(&out, |caps: &regex::bytes::Captures| {
            caps[0]
                .iter()
                .map(|b| if *b == 0x20 { 0xA0 } else { *b })
                .collect::<Vec<u8>>()
        })
        .into_owned()
}

/// `fixes.replace_lossy_sequences` on bytes.
fn replace_lossy_sequences(bytes: &[u8]) -> Vec<u8> {
    lossy_utf8_re()
        .replace_all(bytes, &b"\xef\xbf\xbd"[..])
        .into_owned()
}

/// Decodes one strictly valid UTF-8 character at the start of `b`; `None` if invalid.
fn utf8_char(b: &[u8]) -> Option<(char, usize)> {
    let n = match b.first()? {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let s = std::str::from_utf8(b.get(..n)?).ok()?;
    Some((s.chars().next()?, n))
}

/// ftfy's `utf-8-variants` codec: UTF-8 plus CESU-8 surrogate pairs and Java's `C0 80` NUL.
fn decode_utf8_variants(b: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    let cont = |x: u8| (0x80..=0xBF).contains(&x);
    while i < b.len() {
        if b[i] == 0xC0 && b.get(i + 1) == Some(&0x80) {
            out.push('\0');
            i += 2;
            continue;
        }
        if b[i] == 0xED
            && i + 6 <= b.len()
            && (0xA0..=0xAF).contains(&b[i + 1])
            && cont(b[i + 2])
            && b[i + 3] == 0xED
            && (0xB0..=0xBF).contains(&b[i + 4])
            && cont(b[i + 5])
        {
            let cp = (((b[i + 1] & 0x0F) as u32) << 16)
                + (((b[i + 2] & 0x3F) as u32) << 10)
                + (((b[i + 4] & 0x0F) as u32) << 6)
                + ((b[i + 5] & 0x3F) as u32)
                + 0x10000;
            out.push(char::from_u32(cp)?);
            i += 6;
            continue;
        }
        let (c, n) = utf8_char(&b[i..])?;
        out.push(c);
        i += n;
    }
    Some(out)
}

/// `fixes.decode_inconsistent_utf8`.
fn decode_inconsistent_utf8(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut pos = 0;
    while let Some((s, e)) = utf8_detector_find_at(text, pos) {
        out.push_str(&text[last..s]);
        let sub = &text[s..e];
        if sub.len() < text.len() && is_bad(sub) {
            out.push_str(&fix_encoding(sub));
        } else {
            out.push_str(sub);
        }
        last = e;
        pos = e;
    }
    out.push_str(&text[last..]);
    out
}

/// `fixes.fix_c1_controls`: U+0080..U+009F read as their windows-1252 characters.
pub fn fix_c1_controls(text: &str) -> String {
    let cp1252 = charmap("sloppy-windows-1252");
    text.chars()
        .map(|c| match c as u32 {
            0x80..=0x9F => cp1252.high[c as usize - 0x80],
            _ => c,
        })
        .collect()
}

fn has_c1(text: &str) -> bool {
    text.chars().any(|c| (0x80..=0x9F).contains(&(c as u32)))
}

fn fix_encoding_one_step(text: &str) -> String {
    if text.is_empty() || text.is_ascii() || !is_bad(text) {
        return text.to_string();
    }
    let mut latin1_possible = false;
    for cm in charmaps() {
        if !cm.possible(text) {
            continue;
        }
        if cm.name == "latin-1" {
            latin1_possible = true;
        }
        let mut bytes = cm.encode(text);
        if cm.name != "macroman" && altered_utf8_re().is_match(&bytes) {
            bytes = restore_byte_a0(&bytes);
        }
        if cm.sloppy() {
            bytes = replace_lossy_sequences(&bytes);
        }
        let decoded = if bytes.contains(&0xED) || bytes.contains(&0xC0) {
            decode_utf8_variants(&bytes)
        } else {
            std::str::from_utf8(&bytes).ok().map(str::to_string)
        };
        if let Some(fixed) = decoded {
            return fixed;
        }
    }
    if utf8_detector_find_at(text, 0).is_some() {
        let fixed = decode_inconsistent_utf8(text);
        if fixed != text {
            return fixed;
        }
    }
    if latin1_possible {
        // text.encode("latin-1").decode("windows-1252") (strict: the five holes fail)
        let cp1252 = charmap("sloppy-windows-1252");
        let decodable = text
            .chars()
            .all(|c| !tables::CP1252_HOLES.contains(&(c as u32 as u8)) || (c as u32) > 0xFF);
        if decodable {
            let fixed: String = text
                .chars()
                .map(|c| match c as u32 {
                    0x80..=0xFF => cp1252.high[c as usize - 0x80],
                    _ => c,
                })
                .collect();
            if fixed != text {
                return fixed;
            }
        }
    }
    if has_c1(text) {
        return fix_c1_controls(text);
    }
    text.to_string()
}

/// `ftfy.fix_encoding` with the default configuration.
pub fn fix_encoding(text: &str) -> String {
    let mut text = text.to_string();
    loop {
        let next = fix_encoding_one_step(&text);
        if next == text {
            return text;
        }
        text = next;
    }
}

/// `fixes.fix_latin_ligatures`.
pub fn fix_latin_ligatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match tables::LIGATURES.binary_search_by(|(k, _)| k.cmp(&c)) {
            Ok(i) => out.push_str(tables::LIGATURES[i].1),
            Err(_) => out.push(c),
        }
    }
    out
}

/// `fixes.fix_character_width` (fullwidth ASCII, halfwidth katakana / hangul, U+3000 -> space).
pub fn fix_character_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match tables::WIDTH_MAP.binary_search_by(|(k, _)| k.cmp(&c)) {
            Ok(i) => out.push_str(tables::WIDTH_MAP[i].1),
            Err(_) => out.push(c),
        }
    }
    out
}

/// `fixes.uncurl_quotes`.
pub fn uncurl_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{201c}'..='\u{201f}' => '"',
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
            _ => c,
        })
        .collect()
}

/// `fixes.fix_line_breaks`.
pub fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// `fixes.remove_terminal_escapes`.
pub fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\x1b') {
        return text.to_string();
    }
    ansi_re().replace_all(text, "").into_owned()
}

/// `fixes.remove_control_chars`.
pub fn remove_control_chars(text: &str) -> String {
    text.chars()
        .filter(|c| tables::CONTROL_CHARS.binary_search(&(*c as u32)).is_err())
        .collect()
}

/// Unicode NFC.
pub fn nfc(text: &str) -> String {
    text.nfc().map(|(c, _)| c).collect()
}

/// ftfy's `fix_and_explain` loop on one segment (default configuration).
fn fix_segment(text: &str, unescape: bool) -> String {
    let mut text = text.to_string();
    loop {
        let orig = text.clone();
        if unescape {
            text = unescape_html(&text);
        }
        text = fix_encoding(&text);
        text = fix_c1_controls(&text);
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        // fix_surrogates: a Rust string holds no surrogates.
        text = remove_terminal_escapes(&text);
        text = remove_control_chars(&text);
        text = nfc(&text);
        if text == orig {
            return text;
        }
    }
}

/// `ftfy.fix_text(text)` with ftfy's default configuration.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true; // unescape_html="auto", until a segment contains '<'
    let mut rest = text;
    while !rest.is_empty() {
        // Segment: up to and including the next '\n', at most MAX_DECODE_LENGTH characters.
        let mut end = rest.find('\n').map(|i| i + 1).unwrap_or(rest.len());
        if let Some((i, _)) = rest[..end].char_indices().nth(MAX_DECODE_LENGTH) {
            end = i;
        }
        let (segment, tail) = rest.split_at(end);
        if unescape && segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftfy_docstring_examples() {
        let cases = [
            ("âœ” No problems", "✔ No problems"),
            ("&macr;\\_(ã\u{83}\u{84})_/&macr;", "¯\\_(ツ)_/¯"),
            (
                "Broken text&hellip; it&#x2019;s ﬂubberiﬁc!",
                "Broken text… it's flubberific!",
            ),
            ("ＬＯＵＤ　ＮＯＩＳＥＳ", "LOUD NOISES"),
            ("sÃ³", "só"),
            ("voilÃ le travail", "voilà le travail"),
            ("schÃ¶n", "schön"),
            ("P&EACUTE;REZ", "PÉREZ"),
            ("&ntilde; &Ntilde; &NTILDE; &nTILDE;", "ñ Ñ Ñ &nTILDE;"),
        ];
        for (i, o) in cases {
            assert_eq!(fix_text(i), o, "{i:?}");
        }
    }

    #[test]
    fn cesu8_and_java_nul() {
        assert_eq!(
            decode_utf8_variants(b"\xed\xa0\xbd\xed\xb8\x8d").as_deref(),
            Some("😍")
        );
        assert_eq!(decode_utf8_variants(b"a\xc0\x80b").as_deref(), Some("a\0b"));
        assert_eq!(decode_utf8_variants(b"\xed\xa0\x80"), None);
    }
}
