//! Bounded text: caps on messages and error chains, so that one bad job cannot eat memory.

use std::error::Error as StdError;
use std::fmt::{self, Write};

/// `s` cut to at most `max_chars` characters, on a character boundary.
pub(crate) fn truncate_chars(s: &str, max_chars: usize) -> &str {
    // A string of at most `max_chars` bytes has at most that many characters: skip the walk.
    if s.len() <= max_chars {
        return s;
    }
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// `s` cut to at most `max_bytes` bytes, on a character boundary.
pub(crate) fn truncate_bytes(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A `fmt::Write` that keeps at most `max_chars` characters and `max_bytes` bytes, then makes the
/// formatting stop by returning an error, so a hostile `Display` cannot make us allocate more.
pub(crate) struct Capped {
    buf: String,
    chars: usize,
    max_chars: usize,
    max_bytes: usize,
    /// Stop at the first line break.
    one_line: bool,
}

impl Capped {
    pub(crate) fn new(max_chars: usize, max_bytes: usize) -> Self {
        Capped {
            buf: String::new(),
            chars: 0,
            max_chars,
            max_bytes,
            one_line: false,
        }
    }

    pub(crate) fn into_string(self) -> String {
        self.buf
    }

    fn full(&self) -> bool {
        self.chars >= self.max_chars || self.buf.len() >= self.max_bytes
    }
}

impl Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.one_line && (c == '\n' || c == '\r') {
                return Err(fmt::Error);
            }
            if self.chars >= self.max_chars || self.buf.len() + c.len_utf8() > self.max_bytes {
                return Err(fmt::Error);
            }
            self.buf.push(c);
            self.chars += 1;
        }
        Ok(())
    }
}

/// How many `source()` links `error_chain` follows: a chain can be cyclic.
const MAX_CHAIN_DEPTH: usize = 64;

/// The error's own message, capped at `max_chars` characters.
/// The first line of the error's own message, capped at `max_chars` characters (the whole
/// message, with its other lines, is in the chain).
pub(crate) fn error_message(error: &(dyn StdError + 'static), max_chars: usize) -> String {
    let mut out = Capped::new(max_chars, usize::MAX);
    out.one_line = true;
    // An error here only means a cap (or the end of the first line) was reached.
    let _ = write!(out, "{error}");
    out.into_string()
}

/// The error and its `source()` chain, one per line, capped at `max_bytes` bytes.
pub(crate) fn error_chain(error: &(dyn StdError + 'static), max_bytes: usize) -> String {
    let mut out = Capped::new(usize::MAX, max_bytes);
    let _ = (|| -> fmt::Result {
        write!(out, "{error}")?;
        let mut source = error.source();
        for _ in 0..MAX_CHAIN_DEPTH {
            let Some(cause) = source else { return Ok(()) };
            write!(out, "\ncaused by: {cause}")?;
            source = cause.source();
        }
        if source.is_some() && !out.full() {
            out.write_str("\n(more causes not shown)")?;
        }
        Ok(())
    })();
    out.into_string()
}

/// `text` with every U+0000 (NUL) as U+FFFD, the replacement character: PostgreSQL cannot store
/// a NUL. Applied to progress and error messages, names, request bodies at the HTTP door, and by
/// the store to whatever else a status holds.
pub(crate) fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// [`without_nul`] for every string of a JSON value, object keys included, at any depth. Used at
/// the HTTP door and by the store.
#[cfg_attr(not(any(feature = "http", feature = "postgres")), allow(dead_code))]
pub(crate) fn value_without_nul(mut value: serde_json::Value) -> serde_json::Value {
    fn has_nul(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(map) => map
                .iter()
                .any(|(key, item)| key.contains('\0') || has_nul(item)),
            _ => false,
        }
    }
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => {
                if let std::borrow::Cow::Owned(replaced) = without_nul(text) {
                    *text = replaced;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            serde_json::Value::Object(map) => {
                if map.keys().any(|key| key.contains('\0')) {
                    for (key, item) in std::mem::take(map) {
                        map.insert(without_nul(&key).into_owned(), item);
                    }
                }
                map.values_mut().for_each(walk);
            }
            _ => {}
        }
    }
    // Most values hold none: looked for first, so that those are not rebuilt.
    if has_nul(&value) {
        walk(&mut value);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_nul_is_left_anywhere_in_a_value() {
        let value = serde_json::json!({"a\u{0}": ["x\u{0}y", {"k": "\u{0}"}], "n": 1});
        assert_eq!(
            value_without_nul(value),
            serde_json::json!({"a\u{FFFD}": ["x\u{FFFD}y", {"k": "\u{FFFD}"}], "n": 1})
        );
        assert!(matches!(
            without_nul("clean"),
            std::borrow::Cow::Borrowed("clean")
        ));
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("héllo", 10), "héllo");
        assert_eq!(truncate_chars("日本語", 2), "日本");
        assert_eq!(truncate_chars("", 0), "");
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 3), "hé");
        assert_eq!(truncate_bytes("abc", 10), "abc");
    }

    #[test]
    fn capped_writer_stops_at_either_limit() {
        let mut c = Capped::new(3, usize::MAX);
        assert!(write!(c, "abcdef").is_err());
        assert_eq!(c.into_string(), "abc");
        let mut c = Capped::new(usize::MAX, 4);
        assert!(write!(c, "ééé").is_err());
        assert_eq!(c.into_string(), "éé");
    }
}
