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
//! path, which answers with the parse error.

/// The walk gave up: the tree path decides.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unfollowable;

/// serde_json refuses documents nested deeper than this; so does the walk.
const MAX_DEPTH: usize = 128;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (the document's, an array's first or next, or an object field's).
    Value,
    /// After `[`: a value or `]`.
    ValueOrClose,
    /// After `{`: a key or `}`.
    KeyOrClose,
    /// After `,` in an object.
    Key,
    Colon,
    /// After a value: `,` or the container's close (or the end of the document).
    CommaOrClose,
}

/// Calls `rewrite` on every text string of `body` (a string that is not the direct value
/// of a field whose name `skip` accepts); the document with the new texts if any call
/// returned one.
pub(crate) fn rewrite_texts(
    body: &str,
    skip: fn(&str) -> bool,
    rewrite: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Option<Vec<u8>>, Unfollowable> {
    let bytes = body.as_bytes();
    // Whether each open container is an object (a fixed array: the depth is bounded, and a
    // request should not allocate for it).
    let mut stack = [false; MAX_DEPTH];
    let mut depth = 0;
    let mut expect = Expect::Value;
    // The current field's key is one whose string value is not text.
    let mut skipped_key = false;
    let mut out: Vec<u8> = Vec::new();
    // Bytes of `body` before this are in `out` (once something changed).
    let mut copied = 0;
    let mut changed = false;
    let mut done = false;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {
                at += 1;
                // Indented documents (OpenAI's answers) have runs of spaces: eight at a time.
                while let Some(&chunk) = bytes.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
                    let other = u64::from_le_bytes(chunk) ^ u64::from_le_bytes([b' '; 8]);
                    if other != 0 {
                        at += (other.trailing_zeros() / 8) as usize;
                        break;
                    }
                    at += 8;
                }
                while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
                    at += 1;
                }
                continue;
            }
            _ if done => return Err(Unfollowable),
            b'"' => {
                let (end, escaped) = string_end(bytes, at)?;
                match expect {
                    Expect::KeyOrClose | Expect::Key => {
                        skipped_key = is_skipped(&body[at..end], escaped, skip)?;
                        expect = Expect::Colon;
                    }
                    Expect::Value | Expect::ValueOrClose => {
                        let in_field = depth > 0 && stack[depth - 1];
                        if !(in_field && skipped_key) {
                            if let Some(new) = rewrite_string(&body[at..end], escaped, rewrite)? {
                                if !changed {
                                    out.reserve(bytes.len() + new.len());
                                }
                                out.extend_from_slice(&bytes[copied..at]);
                                // A `String` always serializes.
                                let _ = serde_json::to_writer(&mut out, new.as_str());
                                copied = end;
                                changed = true;
                            }
                        }
                        expect = Expect::CommaOrClose;
                    }
                    _ => return Err(Unfollowable),
                }
                at = end;
            }
            b'{' | b'[' => {
                if !matches!(expect, Expect::Value | Expect::ValueOrClose) {
                    return Err(Unfollowable);
                }
                if depth >= MAX_DEPTH {
                    return Err(Unfollowable);
                }
                let object = byte == b'{';
                stack[depth] = object;
                depth += 1;
                expect = if object {
                    Expect::KeyOrClose
                } else {
                    Expect::ValueOrClose
                };
                at += 1;
            }
            b'}' | b']' => {
                let object = byte == b'}';
                let closes = match expect {
                    Expect::CommaOrClose => true,
                    Expect::KeyOrClose => object,
                    Expect::ValueOrClose => !object,
                    _ => false,
                };
                if !closes || depth == 0 || stack[depth - 1] != object {
                    return Err(Unfollowable);
                }
                depth -= 1;
                expect = Expect::CommaOrClose;
                at += 1;
            }
            b':' => {
                if expect != Expect::Colon {
                    return Err(Unfollowable);
                }
                expect = Expect::Value;
                at += 1;
            }
            b',' => {
                expect = match (expect, depth.checked_sub(1).map(|top| stack[top])) {
                    (Expect::CommaOrClose, Some(true)) => Expect::Key,
                    (Expect::CommaOrClose, Some(false)) => Expect::Value,
                    _ => return Err(Unfollowable),
                };
                at += 1;
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                if !matches!(expect, Expect::Value | Expect::ValueOrClose) {
                    return Err(Unfollowable);
                }
                // A number or literal, as far as it goes; serde_json read the request
                // already, and a provider's answer that is not JSON is not ours to fix.
                let len = bytes[at..]
                    .iter()
                    .position(
                        |b| !matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'+' | b'-' | b'.' | b'E'),
                    )
                    .unwrap_or(bytes.len() - at);
                at += len;
                expect = Expect::CommaOrClose;
            }
            _ => return Err(Unfollowable),
        }
        if depth == 0 && expect == Expect::CommaOrClose {
            done = true;
        }
    }
    if !done {
        return Err(Unfollowable);
    }
    if !changed {
        return Ok(None);
    }
    out.extend_from_slice(&bytes[copied..]);
    Ok(Some(out))
}

/// The end (one past the closing quote) of the string that opens at `start`, and whether
/// it holds an escape.
fn string_end(bytes: &[u8], start: usize) -> Result<(usize, bool), Unfollowable> {
    let mut at = start + 1;
    let mut escaped = false;
    loop {
        let next = memchr::memchr2(b'"', b'\\', &bytes[at..]).ok_or(Unfollowable)?;
        at += next;
        if bytes[at] == b'"' {
            return Ok((at + 1, escaped));
        }
        escaped = true;
        // An escape: the byte after the backslash is never the string's end.
        at += 2;
        if at > bytes.len() {
            return Err(Unfollowable);
        }
    }
}

/// Whether the key `quoted` (with its quotes) names a field whose string is not text.
fn is_skipped(quoted: &str, escaped: bool, skip: fn(&str) -> bool) -> Result<bool, Unfollowable> {
    let inner = &quoted[1..quoted.len() - 1];
    if !escaped {
        return Ok(skip(inner));
    }
    let key: String = serde_json::from_str(quoted).map_err(|_| Unfollowable)?;
    Ok(skip(&key))
}

/// The new text of the string `quoted` (with its quotes), if `rewrite` changes it.
fn rewrite_string(
    quoted: &str,
    escaped: bool,
    rewrite: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Option<String>, Unfollowable> {
    let inner = &quoted[1..quoted.len() - 1];
    if !escaped {
        if inner.bytes().any(|b| b < 0x20) {
            // A raw control character: not JSON.
            return Err(Unfollowable);
        }
        return Ok(rewrite(inner));
    }
    let text: String = serde_json::from_str(quoted).map_err(|_| Unfollowable)?;
    Ok(rewrite(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper_x(text: &str) -> Option<String> {
        text.contains('x').then(|| text.replace('x', "X"))
    }

    fn run(body: &str) -> Result<Option<String>, Unfollowable> {
        rewrite_texts(body, |k| matches!(k, "id" | "model"), &mut upper_x)
            .map(|o| o.map(|b| String::from_utf8(b).unwrap()))
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
            "",
        ] {
            assert_eq!(run(body), Err(Unfollowable), "{body}");
        }
        let deep = format!("{}\"x\"{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(run(&deep), Err(Unfollowable));
        assert_eq!(run(r#""x""#).unwrap().as_deref(), Some(r#""X""#));
    }
}
