//! The texts of a JSON document rewritten where they are, without building its tree.
//!
//! Parsing a body into a `serde_json::Value` and writing it out again costs more than
//! finding its values does, and the tree loses the document's key order (serde_json's map
//! is sorted). Here the document is walked once as bytes: the strings that are text (the
//! same rule as [`super::each_text`]) are handed over, unescaped when they need to be, and
//! only those that change are written back, escaped; every other byte is copied as it came.
//!
//! The walk follows JSON's grammar closely enough to tell keys from values. A document it
//! cannot follow (malformed, or nested deeper than serde_json reads) is left to the tree
//! path, which answers with the parse error. Bytes are checked as UTF-8 only in the texts
//! it hands over: elsewhere (a key, an id, a text its counts rule out) they are passed on
//! as they came, as they would be without the filter (requests were read as JSON before
//! any filter runs; an answer is the provider's).

use crate::json_bytes::{has_control, needs_escape, quote_or_escape, skip_space};

/// The walk gave up: the tree path decides.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unfollowable;

/// serde_json refuses documents nested deeper than this; so does the walk.
const MAX_DEPTH: usize = 128;

/// Calls `rewrite` on every text string of `body` (a string that is not the direct value
/// of a field whose name `skip` accepts); the document with the new texts if any call
/// returned one.
///
/// The walk goes from value to value: a field's key, its colon and the whitespace around
/// them are read on the way to its value, and a comma or a close on the way to the next,
/// so an indented answer costs one step per value rather than one per token.
///
/// Only the texts handed over need be UTF-8 (they are checked one by one, a few of a
/// document's bytes): the rest is passed on as it came.
pub(crate) fn rewrite_texts<A>(
    bytes: &[u8],
    skip: impl Fn(&[u8]) -> bool + Copy,
    texts: &mut Texts<'_, A>,
) -> Result<Option<Vec<u8>>, Unfollowable> {
    // Bit `d` says whether the container open at depth `d` is an object: the depth is
    // bounded, and a request should not allocate for it.
    let mut objects = [0u64; MAX_DEPTH / 64];
    let mut depth = 0;
    let mut out: Vec<u8> = Vec::new();
    // Bytes of `body` before this are in `out` (once something changed).
    let mut copied = 0;
    let mut changed = false;
    let mut at = skip_space(bytes, 0);
    // The key of the field whose value is at `at` (with its quotes, and whether it holds an
    // escape): read only if the value is a string.
    let mut key: Option<(usize, usize, bool)> = None;
    loop {
        // A value starts at `at`.
        let byte = *bytes.get(at).ok_or(Unfollowable)?;
        match byte {
            b'"' => {
                let (end, escaped) = string_end(bytes, at)?;
                let skipped = match key {
                    Some((start, end, escaped)) => is_skipped(&bytes[start..end], escaped, skip)?,
                    None => false,
                };
                if !skipped {
                    if let Some(new) = rewrite_string(&bytes[at..end], escaped, texts)? {
                        if !changed {
                            out.reserve(bytes.len() + new.len());
                        }
                        out.extend_from_slice(&bytes[copied..at]);
                        write_string(&mut out, &new);
                        copied = end;
                        changed = true;
                    }
                }
                at = end;
            }
            b'{' | b'[' => {
                if depth == MAX_DEPTH {
                    return Err(Unfollowable);
                }
                let object = byte == b'{';
                let (word, bit) = (depth / 64, 1 << (depth % 64));
                objects[word] = if object {
                    objects[word] | bit
                } else {
                    objects[word] & !bit
                };
                depth += 1;
                at = skip_space(bytes, at + 1);
                let close = if object { b'}' } else { b']' };
                if bytes.get(at) != Some(&close) {
                    key = if object {
                        Some(field_key(bytes, &mut at)?)
                    } else {
                        None
                    };
                    continue;
                }
                depth -= 1;
                at += 1;
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                // A number or literal, as far as it goes; serde_json read the request
                // already, and a provider's answer that is not JSON is not ours to fix.
                let len = bytes[at..]
                    .iter()
                    .position(|&b| !IN_NUMBER[usize::from(b)])
                    .unwrap_or(bytes.len() - at);
                at += len;
            }
            _ => return Err(Unfollowable),
        }
        // After a value: the next one, or closes until there is one.
        loop {
            at = skip_space(bytes, at);
            if depth == 0 {
                if at != bytes.len() {
                    return Err(Unfollowable);
                }
                if !changed {
                    return Ok(None);
                }
                out.extend_from_slice(&bytes[copied..]);
                return Ok(Some(out));
            }
            let top = depth - 1;
            let object = objects[top / 64] & (1 << (top % 64)) != 0;
            match bytes.get(at) {
                Some(b',') => {
                    at = skip_space(bytes, at + 1);
                    key = if object {
                        Some(field_key(bytes, &mut at)?)
                    } else {
                        None
                    };
                    break;
                }
                Some(b'}') if object => {}
                Some(b']') if !object => {}
                _ => return Err(Unfollowable),
            }
            depth -= 1;
            at += 1;
        }
    }
}

/// The bytes a number or a literal (`true`, `false`, `null`) is read over.
static IN_NUMBER: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = b'0';
    while b <= b'9' {
        table[b as usize] = true;
        b += 1;
    }
    b = b'a';
    while b <= b'z' {
        table[b as usize] = true;
        b += 1;
    }
    table[b'+' as usize] = true;
    table[b'-' as usize] = true;
    table[b'.' as usize] = true;
    table[b'E' as usize] = true;
    table
};

/// `text` as a JSON string, as serde_json writes it: most texts need no escape, and are
/// copied between their quotes.
fn write_string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if needs_escape(bytes) {
        // A `&str` always serializes.
        let _ = serde_json::to_writer(out, text);
        return;
    }
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// Reads the key at `at`, its colon and the whitespace after it, leaving `at` on the
/// field's value; where the key is (with its quotes) and whether it holds an escape.
#[inline(always)]
fn field_key(bytes: &[u8], at: &mut usize) -> Result<(usize, usize, bool), Unfollowable> {
    if bytes.get(*at) != Some(&b'"') {
        return Err(Unfollowable);
    }
    let start = *at;
    let (end, escaped) = string_end(bytes, start)?;
    // A key with an escape is read now, so that one which is not JSON is found whatever
    // its value (an escape-free key needs no reading).
    if escaped {
        serde_json::from_slice::<String>(&bytes[start..end]).map_err(|_| Unfollowable)?;
    }
    let colon = skip_space(bytes, end);
    if bytes.get(colon) != Some(&b':') {
        return Err(Unfollowable);
    }
    *at = skip_space(bytes, colon + 1);
    Ok((start, end, escaped))
}

/// The end (one past the closing quote) of the string that opens at `start`, and whether
/// it holds an escape.
#[inline(always)]
fn string_end(bytes: &[u8], start: usize) -> Result<(usize, bool), Unfollowable> {
    let mut at = start + 1;
    let mut escaped = false;
    loop {
        let next = quote_or_escape(bytes.get(at..).ok_or(Unfollowable)?).ok_or(Unfollowable)?;
        at += next;
        if bytes[at] == b'"' {
            return Ok((at + 1, escaped));
        }
        escaped = true;
        // An escape: the byte after the backslash is never the string's end.
        at += 2;
    }
}

/// Whether the key `quoted` (with its quotes) names a field whose string is not text.
fn is_skipped(
    quoted: &[u8],
    escaped: bool,
    skip: impl Fn(&[u8]) -> bool,
) -> Result<bool, Unfollowable> {
    if !escaped {
        return Ok(skip(&quoted[1..quoted.len() - 1]));
    }
    let key: String = serde_json::from_slice(quoted).map_err(|_| Unfollowable)?;
    Ok(skip(key.as_bytes()))
}

/// What the walk does with a document's texts.
pub(crate) struct Texts<'a, A> {
    /// Whether a text, as its bytes, may hold anything to rewrite (and what was learnt
    /// saying so, handed to `rewrite`): a text it rules out is neither checked as UTF-8 nor
    /// handed over.
    pub may_change: &'a dyn Fn(&[u8]) -> Option<A>,
    /// The new text, if it changes.
    pub rewrite: &'a mut dyn FnMut(&str, A) -> Option<String>,
}

/// The new text of the string `quoted` (with its quotes), if it changes.
fn rewrite_string<A>(
    quoted: &[u8],
    escaped: bool,
    texts: &mut Texts<'_, A>,
) -> Result<Option<String>, Unfollowable> {
    if !escaped {
        let inner = &quoted[1..quoted.len() - 1];
        // Raw control characters are not JSON.
        if has_control(inner) {
            return Err(Unfollowable);
        }
        let Some(admitted) = (texts.may_change)(inner) else {
            return Ok(None);
        };
        // Bytes that are not UTF-8 are not text.
        let text = std::str::from_utf8(inner).map_err(|_| Unfollowable)?;
        return Ok((texts.rewrite)(text, admitted));
    }
    let text: String = serde_json::from_slice(quoted).map_err(|_| Unfollowable)?;
    let Some(admitted) = (texts.may_change)(text.as_bytes()) else {
        return Ok(None);
    };
    Ok((texts.rewrite)(&text, admitted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper_x(text: &str) -> Option<String> {
        text.contains('x').then(|| text.replace('x', "X"))
    }

    fn run(body: &str) -> Result<Option<String>, Unfollowable> {
        let mut texts = Texts {
            may_change: &|_| Some(()),
            rewrite: &mut |text, ()| upper_x(text),
        };
        rewrite_texts(
            body.as_bytes(),
            |k| matches!(k, b"id" | b"model"),
            &mut texts,
        )
        .map(|o| o.map(|b| String::from_utf8(b).unwrap()))
    }

    #[test]
    fn a_text_ruled_out_is_not_handed_over_even_when_it_is_not_utf8() {
        let handed = std::cell::Cell::new(0);
        let mut count = |_: &str, ()| {
            handed.set(handed.get() + 1);
            None
        };
        let mut texts = Texts {
            may_change: &|text: &[u8]| text.contains(&b'@').then_some(()),
            rewrite: &mut count,
        };
        let body = b"{\"a\": \"plain \xff\", \"b\": \"a@b\"}";
        assert_eq!(rewrite_texts(body, |_| false, &mut texts), Ok(None));
        assert_eq!(handed.get(), 1);
        // One that may hold a value must be text.
        let body = b"{\"a\": \"a@\xff\"}";
        assert_eq!(
            rewrite_texts(body, |_| false, &mut texts),
            Err(Unfollowable)
        );
    }

    #[test]
    fn only_text_values_change_and_every_other_byte_stays() {
        let body = r#"{ "model": "x1", "id": "x2", "messages": [ {"content": "a x", "x": 1.5e3},
            "x", ["x", {"id": ["x"]}], true, null, -2 ], "model2": "x" }"#;
        let want = r#"{ "model": "x1", "id": "x2", "messages": [ {"content": "a X", "x": 1.5e3},
            "X", ["X", {"id": ["X"]}], true, null, -2 ], "model2": "X" }"#;
        assert_eq!(run(body).unwrap().as_deref(), Some(want));
        assert_eq!(run(r#"{"a": "none", "b": [1, 2]}"#), Ok(None));
    }

    #[test]
    fn escaped_texts_and_keys_are_read_and_written_as_json() {
        // `\u0078` is `x`; the key `\u0069d` is `id`.
        let body = r#"{"t": "q\"\u0078\\", "\u0069d": "x", "n": "é\n"}"#;
        let out = run(body).unwrap().unwrap();
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["t"], "q\"X\\");
        assert_eq!(doc["id"], "x");
        assert!(out.ends_with(r#""n": "é\n"}"#), "{out}");
    }

    #[test]
    fn what_is_not_json_is_left_to_the_parser() {
        for body in [
            r#"{"a" "x"}"#,
            r#"{"a": "x",}"#,
            r#"["x" "y"]"#,
            r#"{"a": "x"} {}"#,
            r#"{"a": "x"#,
            r#"{"a": ["x"}"#,
            "{\"a\": \"x\u{1}\"}",
            r#"{"a": "x\"}"#,
            r#"{"\q": 1}"#,
            "",
        ] {
            assert_eq!(run(body), Err(Unfollowable), "{body}");
        }
        let deep = format!("{}\"x\"{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(run(&deep), Err(Unfollowable));
        assert_eq!(run(r#""x""#).unwrap().as_deref(), Some(r#""X""#));
    }
}
