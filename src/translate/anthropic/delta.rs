//! `content_block_delta` events, nearly every event of an Anthropic stream: read from a
//! provider and written for a client.
//!
//! Anthropic writes them in one compact layout,
//! `{"type":"content_block_delta","index":N,"delta":{"type":KIND,FIELD:STRING}}`. Reading that
//! layout directly, and only the string with serde, costs a fraction of the general
//! derive-driven parse, which was a quarter of a translated stream's instructions. Any other
//! layout (key order, whitespace, extra or unknown fields) goes through serde, so both paths
//! give the same result for every input.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::Deserialize;

use super::wire::{ContentBlockDelta, DeltaIn, DeltaOut};

/// Parses a `content_block_delta` payload.
pub(crate) fn parse(data: &[u8]) -> Result<ContentBlockDelta<'_>, serde_json::Error> {
    match compact(data) {
        Some(delta) => Ok(delta),
        None => serde_json::from_slice(data),
    }
}

/// The delta kinds sira translates, each with the field that carries its string.
const KINDS: [(&str, &str); 4] = [
    ("text_delta", "text"),
    ("input_json_delta", "partial_json"),
    ("thinking_delta", "thinking"),
    ("signature_delta", "signature"),
];

/// A JSON string literal, borrowed from the payload when it has no escapes.
#[derive(Deserialize)]
struct Literal<'a>(#[serde(borrow)] Cow<'a, str>);

fn compact(data: &[u8]) -> Option<ContentBlockDelta<'_>> {
    let rest = data.strip_prefix(br#"{"type":"content_block_delta","index":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    // JSON numbers have no leading zeros; leave such oddities to serde's verdict.
    if digits == 0 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let index = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(br#","delta":{"type":""#)?;
    let (kind, field, rest) = KINDS.iter().find_map(|&(kind, field)| {
        let rest = rest.strip_prefix(kind.as_bytes())?.strip_prefix(b"\",\"")?;
        Some((kind, field, rest.strip_prefix(field.as_bytes())?))
    })?;
    let rest = rest.strip_prefix(b"\":")?;
    let literal = rest.strip_suffix(b"}}")?;
    if literal.first() != Some(&b'"') {
        return None;
    }
    // Exactly one string, or nothing: `"a"},"b":"c"` is trailing data and falls back.
    let Literal(value) = serde_json::from_slice(literal).ok()?;
    let mut delta = DeltaIn {
        kind: Cow::Borrowed(kind),
        text: None,
        partial_json: None,
        thinking: None,
        signature: None,
        citation: None,
    };
    let slot = match field {
        "text" => &mut delta.text,
        "partial_json" => &mut delta.partial_json,
        "thinking" => &mut delta.thinking,
        _ => &mut delta.signature,
    };
    *slot = Some(value);
    Some(ContentBlockDelta { index, delta })
}

/// Appends the whole SSE event for one delta: the bytes serde gives for
/// `EventOut::ContentBlockDelta`, written directly (serde's tagged-enum path cost ~2.5k
/// instructions per event, most of an Anthropic client's stream).
pub(crate) fn write(out: &mut BytesMut, index: u32, delta: &DeltaOut<'_>) {
    let (kind, field, value): (&str, &str, &str) = match delta {
        DeltaOut::Text { text } => ("text_delta", "text", text),
        DeltaOut::InputJson { partial_json } => ("input_json_delta", "partial_json", partial_json),
        DeltaOut::Thinking { thinking } => ("thinking_delta", "thinking", thinking),
        DeltaOut::Signature { signature } => ("signature_delta", "signature", signature),
    };
    out.reserve(96 + value.len());
    out.extend_from_slice(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
    );
    // `itoa` rather than `write!`: the formatting machinery was a third of this function.
    out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
    out.extend_from_slice(b",\"delta\":{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
    // Writing a string into memory cannot fail.
    let _ = serde_json::to_writer((&mut *out).writer(), value);
    out.extend_from_slice(b"}}\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::anthropic::wire::EventOut;
    use crate::translate::util::{write_sse, Framing};

    #[test]
    fn written_deltas_are_the_serialized_events() {
        let value = "a \"quoted\" \\ line\nnext\ttab \u{1} é 日本 🦀";
        for index in [0, 7, 4_000_000_000] {
            for delta in [
                DeltaOut::Text { text: value },
                DeltaOut::Text { text: "" },
                DeltaOut::InputJson {
                    partial_json: "{\"city\": \"Pa",
                },
                DeltaOut::Thinking { thinking: value },
                DeltaOut::Signature { signature: "EqQB" },
            ] {
                let mut fast = BytesMut::new();
                write(&mut fast, index, &delta);
                let mut slow = BytesMut::new();
                let event = EventOut::ContentBlockDelta { index, delta };
                write_sse(&mut slow, Framing::Lf, Some(event.name()), &event);
                assert_eq!(
                    std::str::from_utf8(&fast).unwrap(),
                    std::str::from_utf8(&slow).unwrap()
                );
            }
        }
    }

    fn both(data: &str) -> (Option<String>, Option<String>) {
        let show = |d: ContentBlockDelta<'_>| {
            let x = &d.delta;
            format!(
                "{} {} {:?} {:?} {:?} {:?}",
                d.index, x.kind, x.text, x.partial_json, x.thinking, x.signature
            )
        };
        let fast = compact(data.as_bytes()).map(show);
        let slow = serde_json::from_slice(data.as_bytes()).ok().map(show);
        (fast, slow)
    }

    #[test]
    fn the_compact_layout_reads_as_serde_reads_it() {
        for data in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_delta","index":12,"delta":{"type":"text_delta","text":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a\"b\\c\n\u00e9 日本"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}"#,
        ] {
            let (fast, slow) = both(data);
            assert!(fast.is_some(), "not read compactly: {data}");
            assert_eq!(fast, slow, "{data}");
        }
    }

    #[test]
    fn other_layouts_fall_back_to_serde() {
        for data in [
            // Whitespace, key order, extra fields, unknown kinds, mismatched fields.
            r#"{"type": "content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"},"index":0}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi","x":1}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"},"x":"b"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","thinking":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":null}}"#,
            // Not JSON at all, or numbers serde refuses.
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\"}}"#,
            r#"{"type":"content_block_delta","index":01,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":99999999999,"delta":{"type":"text_delta","text":"a"}}"#,
        ] {
            let (fast, slow) = both(data);
            assert_eq!(fast, None, "read compactly: {data}");
            // The public entry point gives serde's answer.
            assert_eq!(
                parse(data.as_bytes()).ok().map(|d| d.index),
                slow.as_ref()
                    .map(|s| s.split(' ').next().unwrap().parse().unwrap()),
                "{data}"
            );
        }
    }
}
