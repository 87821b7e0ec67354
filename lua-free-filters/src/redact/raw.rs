//! The text delta of an event found in its bytes, without parsing its JSON: the common
//! shapes of each format's text events, written compactly (as sira and OpenAI write them),
//! with an unescaped text. Anything else — another shape, escapes in the text, pretty
//! JSON, several candidates — is left to the parsing path, which handles every event.
//!
//! Following a stream's text costs a JSON parse and write per event otherwise, most of a
//! stream's CPU; here an event whose text needs no change passes as it came, and one that
//! does is its bytes with the text spliced in.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::stream::Slot;

/// Searchers built once: building one costs more than searching an event with it.
struct Needles {
    data: Finder<'static>,
    unicode_escape: Finder<'static>,
    choices: Finder<'static>,
    finish_null: Finder<'static>,
    index: Finder<'static>,
    content: Finder<'static>,
    block_delta: Finder<'static>,
    text_delta: Finder<'static>,
    text: Finder<'static>,
    part_text: Finder<'static>,
    output_delta: Finder<'static>,
    output_index: Finder<'static>,
    delta: Finder<'static>,
    candidates: Finder<'static>,
    parts: Finder<'static>,
}

static NEEDLES: LazyLock<Needles> = LazyLock::new(|| Needles {
    data: Finder::new(b"data:"),
    unicode_escape: Finder::new(b"\\u"),
    choices: Finder::new(b"\"choices\":[{"),
    finish_null: Finder::new(b"\"finish_reason\":null"),
    index: Finder::new(b"\"index\":"),
    // The text where each format puts it, its key in the position the format writes it:
    // the same word elsewhere is not the text.
    content: Finder::new(b"\"delta\":{\"content\":\""),
    block_delta: Finder::new(b"\"type\":\"content_block_delta\""),
    text_delta: Finder::new(b"\"type\":\"text_delta\""),
    text: Finder::new(b"\"type\":\"text_delta\",\"text\":\""),
    part_text: Finder::new(b"\"parts\":[{\"text\":\""),
    output_delta: Finder::new(b"\"type\":\"response.output_text.delta\""),
    output_index: Finder::new(b"\"output_index\":"),
    delta: Finder::new(b"\"delta\":\""),
    candidates: Finder::new(b"\"candidates\":[{"),
    parts: Finder::new(b"\"parts\":["),
});

/// Free-text fields besides the text itself: an event that has one goes the parsing way,
/// where every string is redacted. One search for all of them (the regex crate runs a set
/// of literals as one SIMD multi-substring scan).
static OTHER_TEXT: LazyLock<Option<regex::bytes::Regex>> = LazyLock::new(|| {
    regex::bytes::Regex::new(
        // No common first byte: a shared `"` would make the search stop at every quote.
        r#"tool_calls"|refusal":"|reasoning|logprobs":\{|logprobs":\[\{|thinking|partial_json|citation|grounding|functionCall|thought|finishReason|annotations":\[\{"#,
    )
    .ok()
});
/// Where an event's text is in its bytes.
pub(super) struct RawSlot {
    /// The text, between its quotes.
    pub start: usize,
    pub end: usize,
    pub slot: Slot,
    pub index: u64,
}

/// The number after the only occurrence of `key` (e.g. `"index":`), 0 when absent; `None`
/// when it appears more than once or is not a plain number.
fn only_number(hay: &[u8], key: &Finder<'_>) -> Option<u64> {
    let mut found = key.find_iter(hay);
    let Some(at) = found.next() else {
        return Some(0);
    };
    if found.next().is_some() {
        return None;
    }
    let digits: &[u8] = &hay[at + key.needle().len()..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
}

/// The string that starts right after the only occurrence of `key` (which ends with its
/// opening quote), if it has no escapes.
fn only_string(hay: &[u8], key: &Finder<'_>) -> Option<(usize, usize)> {
    let mut found = key.find_iter(hay);
    let at = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let start = at + key.needle().len();
    let len = memchr::memchr2(b'"', b'\\', &hay[start..])?;
    (hay[start + len] == b'"').then_some((start, start + len))
}

/// The text slot of a frame (one `data:` line and its blank line, maybe an `event:` line
/// before it), when it can be found in the bytes.
pub(super) fn find(frame: &[u8]) -> Option<RawSlot> {
    let n = &*NEEDLES;
    // One data line: the JSON is on it, whole; no `\u` escape anywhere.
    let mut data = n.data.find_iter(frame);
    if data.next().is_none() || data.next().is_some() || n.unicode_escape.find(frame).is_some() {
        return None;
    }
    // (The expression is a constant that compiles; without it nothing goes this way.)
    if OTHER_TEXT
        .as_ref()
        .is_none_or(|other| other.is_match(frame))
    {
        return None;
    }
    if n.choices.find(frame).is_some() {
        // Not a finish: then the text ends here.
        n.finish_null.find(frame)?;
        let index = only_number(frame, &n.index)?;
        let (start, end) = only_string(frame, &n.content)?;
        return Some(RawSlot {
            start,
            end,
            slot: Slot::Chat,
            index,
        });
    }
    if n.block_delta.find(frame).is_some() {
        n.text_delta.find(frame)?;
        let index = only_number(frame, &n.index)?;
        let (start, end) = only_string(frame, &n.text)?;
        return Some(RawSlot {
            start,
            end,
            slot: Slot::Anthropic,
            index,
        });
    }
    if n.output_delta.find(frame).is_some() {
        let index = only_number(frame, &n.output_index)?;
        let (start, end) = only_string(frame, &n.delta)?;
        return Some(RawSlot {
            start,
            end,
            slot: Slot::Responses,
            index,
        });
    }
    if n.candidates.find(frame).is_some() {
        let mut parts = n.parts.find_iter(frame);
        let first = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let index = only_number(frame, &n.index)?;
        let (start, end) = only_string(frame, &n.part_text)?;
        if start < first {
            return None;
        }
        return Some(RawSlot {
            start,
            end,
            slot: Slot::Gemini(0),
            index,
        });
    }
    None
}
