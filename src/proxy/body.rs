//! The client's request body: peeked once for the fields the gateway routes on, and
//! changed only where it must be, by splicing the original bytes rather than
//! re-serialising the whole document.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::GatewayError;

/// The few top-level fields the gateway itself needs, with their byte spans in the body.
#[derive(Clone, Debug, Default)]
pub struct Peek {
    pub model: Option<String>,
    model_span: Option<Range<usize>>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: bool,
    stream_options_span: Option<Range<usize>>,
    stream_options_null: bool,
    /// Responses: `store` as the client sent it (OpenAI's default is to store).
    pub store: Option<bool>,
    /// Responses: the stored response this request continues.
    pub previous_response_id: Option<String>,
}

#[derive(Deserialize)]
struct PeekWire<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    // Read only to be refused when out of range (a negative count, 1e400): a passthrough
    // request is held to the rule every translated one meets, and limits never reserve
    // against a number sira could not read. (Gemini's sits in `generationConfig`, which its
    // translation reads.)
    #[serde(default, rename = "max_tokens")]
    _max_tokens: Option<u64>,
    #[serde(default, rename = "max_completion_tokens")]
    _max_completion_tokens: Option<u64>,
    #[serde(default, rename = "max_output_tokens")]
    _max_output_tokens: Option<u64>,
}

/// `Some` whenever the key is present, `null` included: a plain `Option` would read `null`
/// as absent, and sira would then add a second `stream_options` key.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// How deep a client's JSON may nest: serde_json's own recursion limit, which every
/// translated request meets, so that a passthrough request (whose unread parts serde skips
/// without a limit) is held to the same rule.
pub const MAX_NESTING: usize = 128;

/// What a client's body must be before any part of sira or a provider reads it: UTF-8 (a
/// passthrough body is otherwise forwarded unread, while a translated one is refused) and
/// nested no deeper than [`MAX_NESTING`]. One pass that skips string contents with memchr.
pub fn check_untrusted(body: &[u8]) -> Result<(), GatewayError> {
    if std::str::from_utf8(body).is_err() {
        return Err(GatewayError::invalid("request body is not valid UTF-8"));
    }
    if nests_deeper_than(body, MAX_NESTING) {
        return Err(GatewayError::invalid(format!(
            "request body nests arrays and objects deeper than {MAX_NESTING} levels"
        )));
    }
    Ok(())
}

/// Whether `[`/`{` outside strings open more than `limit` levels at once. Malformed JSON
/// (an unterminated string, unbalanced brackets) is left to the parser that follows.
fn nests_deeper_than(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                i += 1;
                loop {
                    let Some(off) = body
                        .get(i..)
                        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                    else {
                        return false;
                    };
                    i += off;
                    if body[i] == b'"' {
                        break;
                    }
                    // An escape: the byte after the backslash is never the string's end.
                    i += 2;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Parses the body just enough to route it. Everything else is skipped by serde (validated
/// as JSON, not allocated).
pub fn peek(body: &[u8]) -> Result<Peek, GatewayError> {
    if body.is_empty() {
        return Err(GatewayError::invalid(
            "request body is empty; expected a JSON object",
        ));
    }
    let wire: PeekWire = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(format!("request body is not a valid JSON object: {e}"))
    })?;
    let mut peek = Peek {
        stream: wire.stream.unwrap_or(false),
        store: wire.store,
        previous_response_id: wire.previous_response_id,
        ..Peek::default()
    };
    if let Some(raw) = wire.model {
        let model: String = serde_json::from_str(raw.get())
            .map_err(|_| GatewayError::invalid_param("model", "`model` must be a string"))?;
        peek.model = Some(model);
        peek.model_span = Some(span_of(body, raw.get()));
    }
    if let Some(raw) = wire.stream_options {
        peek.stream_options_span = Some(span_of(body, raw.get()));
        if raw.get() == "null" {
            peek.stream_options_null = true;
        } else {
            let options: StreamOptions = serde_json::from_str(raw.get()).map_err(|_| {
                GatewayError::invalid_param("stream_options", "`stream_options` must be an object")
            })?;
            peek.include_usage = options.include_usage.unwrap_or(false);
        }
    }
    Ok(peek)
}

impl Peek {
    /// Makes this peek that of `edited`, a body that differs from `original` only in the
    /// text of string values (redaction): the fields stay as read, and their spans move by
    /// what the edits before them added. `false`, and the peek untouched, when that cannot be
    /// told from the bytes: a span in the changed stretch, a moved span whose bytes are not
    /// the same, or a string field the edit may have reached (`previous_response_id`).
    pub fn follow_text_edit(&mut self, original: &[u8], edited: &[u8]) -> bool {
        if self.previous_response_id.is_some() {
            return false;
        }
        let same_start = common_prefix(original, edited);
        let most_end = original.len().min(edited.len()) - same_start;
        let same_end = common_suffix(original, edited).min(most_end);
        let changed_from = same_start;
        let changed_to = original.len() - same_end;
        let moved = |span: &Option<Range<usize>>| -> Option<Option<Range<usize>>> {
            let Some(span) = span else {
                return Some(None);
            };
            let new = if span.end <= changed_from {
                span.clone()
            } else if span.start >= changed_to {
                // `at` ≥ `changed_to`, so this never goes below zero.
                let shift = |at: usize| at + edited.len() - original.len();
                shift(span.start)..shift(span.end)
            } else {
                return None;
            };
            (edited.get(new.clone())? == &original[span.clone()]).then_some(Some(new))
        };
        let (Some(model), Some(options)) =
            (moved(&self.model_span), moved(&self.stream_options_span))
        else {
            return false;
        };
        self.model_span = model;
        self.stream_options_span = options;
        true
    }
}

/// How many leading bytes `a` and `b` share (compared eight at a time).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let len = a.len().min(b.len());
    let mut at = 0;
    while at + 8 <= len && a[at..at + 8] == b[at..at + 8] {
        at += 8;
    }
    while at < len && a[at] == b[at] {
        at += 1;
    }
    at
}

/// How many trailing bytes `a` and `b` share.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let len = a.len().min(b.len());
    let (a, b) = (&a[a.len() - len..], &b[b.len() - len..]);
    let mut n = 0;
    while n + 8 <= len && a[len - n - 8..len - n] == b[len - n - 8..len - n] {
        n += 8;
    }
    while n < len && a[len - n - 1] == b[len - n - 1] {
        n += 1;
    }
    n
}

/// Where `part`, a slice borrowed from `whole`, sits in it.
fn span_of(whole: &[u8], part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// Changes a passthrough body may need before it goes upstream.
#[derive(Debug, Default)]
pub struct Rewrite<'a> {
    /// Replace `model` with this upstream name.
    pub model: Option<&'a str>,
    /// Ask an OpenAI-format provider to report usage on a stream.
    pub include_usage: bool,
}

/// Applies `rewrite` to `body`, returning the original `Bytes` untouched when nothing
/// changes (the common case: same name, client already asks for usage, or not streaming).
pub fn rewrite(body: &Bytes, peek: &Peek, rewrite: &Rewrite) -> Bytes {
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    if let (Some(model), Some(span)) = (rewrite.model, &peek.model_span) {
        if peek.model.as_deref() != Some(model) {
            edits.push((span.clone(), json_string(model)));
        }
    }
    if rewrite.include_usage && !peek.include_usage {
        match &peek.stream_options_span {
            Some(span) if peek.stream_options_null => {
                edits.push((span.clone(), br#"{"include_usage":true}"#.to_vec()));
            }
            Some(span) => {
                // Keep the client's other options, set include_usage.
                let original = &body[span.clone()];
                let mut options: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(original).unwrap_or_default();
                options.insert("include_usage".into(), serde_json::Value::Bool(true));
                edits.push((
                    span.clone(),
                    serde_json::to_vec(&options).unwrap_or_default(),
                ));
            }
            None => {
                let open = body.iter().position(|b| *b == b'{').map_or(0, |i| i + 1);
                edits.push((
                    open..open,
                    br#""stream_options":{"include_usage":true},"#.to_vec(),
                ));
            }
        }
    }
    if edits.is_empty() {
        return body.clone();
    }
    edits.sort_by_key(|(span, _)| span.start);
    let grow: usize = edits.iter().map(|(_, text)| text.len()).sum();
    let mut out = BytesMut::with_capacity(body.len() + grow);
    let mut cursor = 0;
    for (span, text) in &edits {
        out.extend_from_slice(&body[cursor..span.start]);
        out.extend_from_slice(text);
        cursor = span.end;
    }
    out.extend_from_slice(&body[cursor..]);
    out.freeze()
}

fn json_string(text: &str) -> Vec<u8> {
    // Serialising a &str cannot fail.
    serde_json::to_vec(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn apply(body: &str, model: Option<&str>, include_usage: bool) -> Value {
        let bytes = Bytes::copy_from_slice(body.as_bytes());
        let p = peek(&bytes).unwrap();
        let out = rewrite(
            &bytes,
            &p,
            &Rewrite {
                model,
                include_usage,
            },
        );
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn peeks_model_and_stream() {
        let p = peek(br#"{"messages":[{"role":"user","content":"hi \"model\""}],"model":"gpt-4o","stream":true}"#).unwrap();
        assert_eq!(p.model.as_deref(), Some("gpt-4o"));
        assert!(p.stream && !p.include_usage);
        let p = peek(br#"{"model":"m","stream_options":{"include_usage":true}}"#).unwrap();
        assert!(p.include_usage);
    }

    #[test]
    fn rejects_bad_bodies() {
        assert!(peek(b"").is_err());
        assert!(peek(b"[1,2]").is_err());
        assert!(peek(b"{\"model\": 5}").is_err());
        assert!(
            peek(b"{\"model\":\"a\",\"model\":\"b\"}").is_err(),
            "duplicate keys must not smuggle a second model"
        );
        assert!(peek(b"{\"model\":\"a\"").is_err());
        assert!(peek(br#"{"model":"a","max_tokens":-1}"#).is_err());
        assert!(peek(br#"{"model":"a","max_tokens":1e400}"#).is_err());
        assert!(peek(br#"{"model":"a","max_tokens":null}"#).is_ok());
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!nests_deeper_than(nested(128).as_bytes(), 128));
        assert!(nests_deeper_than(nested(129).as_bytes(), 128));
        let quoted = format!(r#"{{"a":"{}","b":"\"[[[\\"}}"#, "[".repeat(500));
        assert!(!nests_deeper_than(quoted.as_bytes(), 2));
        // Escapes at the very end, unterminated strings: no panic, no verdict.
        for tail in [&br"\"[..], br#""\"#, br#""abc"#, br#""\""#] {
            assert!(!nests_deeper_than(tail, 0));
        }
        assert!(check_untrusted(b"{\"a\":\"\xff\"}").is_err());
        assert!(
            check_untrusted(r#"{"model":"m","messages":[{"content":"\"é"}]}"#.as_bytes()).is_ok()
        );
    }

    #[test]
    fn untouched_body_is_the_same_bytes() {
        let body = Bytes::from_static(br#"{"model":"gpt-4o","stream":false}"#);
        let p = peek(&body).unwrap();
        let out = rewrite(
            &body,
            &p,
            &Rewrite {
                model: Some("gpt-4o"),
                include_usage: false,
            },
        );
        assert_eq!(out.as_ptr(), body.as_ptr());
    }

    #[test]
    fn renames_model_and_injects_usage() {
        let v = apply(
            r#"{"messages":[],"model":"sonnet","stream":true}"#,
            Some("claude \"x\""),
            true,
        );
        assert_eq!(
            v,
            json!({"stream_options":{"include_usage":true},"messages":[],"model":"claude \"x\"","stream":true})
        );
        let v = apply(
            r#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}"#,
            None,
            true,
        );
        assert_eq!(
            v["stream_options"],
            json!({"include_obfuscation":false,"include_usage":true})
        );
        let v = apply(
            r#"{"model":"m","stream":true,"stream_options":null}"#,
            None,
            true,
        );
        assert_eq!(v["stream_options"], json!({"include_usage":true}));
        let v = apply(
            r#"  {"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
            Some("n"),
            true,
        );
        assert_eq!(
            v,
            json!({"model":"n","stream":true,"stream_options":{"include_usage":true}})
        );
    }

    #[test]
    fn a_peek_carried_over_a_text_edit_is_the_peek_of_the_edited_body() {
        let cases = [
            // Text before the fields, after them, on both sides, and none.
            (
                r#"{"messages":[{"content":"a@b.co"}],"model":"m","stream_options":{"include_usage":false}}"#,
                r#"{"messages":[{"content":"[EMAIL_1]"}],"model":"m","stream_options":{"include_usage":false}}"#,
                true,
            ),
            (
                r#"{"model":"m","stream_options":null,"messages":[{"content":"card 4111111111111111"}]}"#,
                r#"{"model":"m","stream_options":null,"messages":[{"content":"card [CARD_1]"}]}"#,
                true,
            ),
            (
                r#"{"messages":["x@y.io"],"model":"m","input":"x@y.io"}"#,
                r#"{"messages":["[EMAIL_1]"],"model":"m","input":"[EMAIL_1]"}"#,
                false,
            ),
            // The replacement shares bytes with what it replaced at both of its ends.
            (
                r#"{"t":"ab","model":"ab"}"#,
                r#"{"t":"abab","model":"ab"}"#,
                true,
            ),
        ];
        for (original, edited, carried) in cases {
            let mut got = peek(original.as_bytes()).unwrap();
            let reread = peek(edited.as_bytes()).unwrap();
            let followed = got.follow_text_edit(original.as_bytes(), edited.as_bytes());
            assert_eq!(followed, carried, "{edited}");
            if followed {
                assert_eq!(got.model, reread.model);
                assert_eq!(got.model_span, reread.model_span, "{edited}");
                assert_eq!(got.stream_options_span, reread.stream_options_span);
                assert_eq!(got.include_usage, reread.include_usage);
            }
        }
        // A string field redaction may reach is read again.
        let original = br#"{"model":"m","previous_response_id":"resp_1","input":"a@b.co"}"#;
        let edited = br#"{"model":"m","previous_response_id":"resp_1","input":"[EMAIL_1]"}"#;
        assert!(!peek(original).unwrap().follow_text_edit(original, edited));
    }
}
