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
    role_content: Finder<'static>,
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
    // A stream's first Chat event, which names the role.
    role_content: Finder::new(b"\"delta\":{\"role\":\"assistant\",\"content\":\""),
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
        let (start, end) =
            only_string(frame, &n.content).or_else(|| only_string(frame, &n.role_content))?;
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

/// Which texts an event without a text delta ends, as the parsed path would judge it
/// ([`super::stream`]'s `on_event`): a finish, a block's end, usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ends {
    /// The text of this index.
    Text(u64),
    /// Every text (the event names no index of its own).
    Every,
}

/// Searchers for [`plain_event`], built once.
struct Keys {
    content: Finder<'static>,
    text: Finder<'static>,
    delta: Finder<'static>,
    text_delta: Finder<'static>,
    ping: Finder<'static>,
    logprobs: Finder<'static>,
    choices: Finder<'static>,
    choices_some: Finder<'static>,
    choices_none: Finder<'static>,
    candidates: Finder<'static>,
    index: Finder<'static>,
    index_colon: Finder<'static>,
    output_index: Finder<'static>,
    output_index_colon: Finder<'static>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    content: Finder::new(b"\"content\""),
    text: Finder::new(b"\"text\""),
    delta: Finder::new(b"\"delta\""),
    text_delta: Finder::new(b"text_delta"),
    ping: Finder::new(b"ping"),
    logprobs: Finder::new(b"\"logprobs\""),
    choices: Finder::new(b"\"choices\""),
    choices_some: Finder::new(b"\"choices\":[{"),
    choices_none: Finder::new(b"\"choices\":[]"),
    candidates: Finder::new(b"\"candidates\""),
    index: Finder::new(b"\"index\""),
    index_colon: Finder::new(b"\"index\":"),
    output_index: Finder::new(b"\"output_index\""),
    output_index_colon: Finder::new(b"\"output_index\":"),
});

/// Whether some `key` in `hay` has a string value (whitespace allowed around the colon):
/// where a text delta could be.
fn has_string_value(hay: &[u8], key: &Finder<'_>) -> bool {
    let skip = |at: usize| {
        at + hay[at..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count()
    };
    key.find_iter(hay).any(|at| {
        let colon = skip(at + key.needle().len());
        hay.get(colon) == Some(&b':') && hay.get(skip(colon + 1)) == Some(&b'"')
    })
}

/// The number after `key` (with its colon), when the bare key occurs exactly once, with
/// no space before its colon and digits right after it; 0 when the key is absent.
fn sole_number(hay: &[u8], bare: &Finder<'_>, key: &Finder<'_>) -> Option<u64> {
    match bare.find_iter(hay).count() {
        0 => Some(0),
        1 if key.find(hay).is_some() => only_number(hay, key),
        _ => None,
    }
}

/// An event that carries no text delta, has nothing to redact or restore (`clean`: no
/// escape and no pattern matches its bytes, checked by the caller) and no `logprobs` to
/// drop passes as it came; this says which texts it ends. `None` when its bytes do not
/// say for sure — whitespace the keys are looked up without, several indexes, a ping, a
/// data line that is not one JSON object — and it is parsed instead.
///
/// Every verdict here ends no more texts than the parsed path would: ending a text early
/// could cut a value in two, ending fewer only holds a tail a little longer.
pub(super) fn plain_event(frame: &[u8]) -> Option<Ends> {
    let n = &*NEEDLES;
    let k = &*KEYS;
    let mut data = n.data.find_iter(frame);
    let at = data.next()?;
    if data.next().is_some() {
        return None;
    }
    let json = frame[at + 5..].trim_ascii_start();
    if json.first() != Some(&b'{')
        || has_string_value(frame, &k.content)
        || has_string_value(frame, &k.text)
        || has_string_value(frame, &k.delta)
        || k.text_delta.find(frame).is_some()
        || k.ping.find(frame).is_some()
        || k.logprobs
            .find_iter(frame)
            .any(|at| !frame[at + k.logprobs.needle().len()..].starts_with(b":null"))
    {
        return None;
    }
    let has = |key: &Finder<'_>| key.find(frame).is_some();
    if has(&k.choices) {
        if k.choices.find_iter(frame).count() != 1 {
            return None;
        }
        if has(&k.choices_some) {
            return sole_number(frame, &k.index, &k.index_colon).map(Ends::Text);
        }
        let unnamed = has(&k.choices_none) && !has(&k.index) && !has(&k.output_index);
        return unnamed.then_some(Ends::Every);
    }
    if has(&k.output_index) {
        return sole_number(frame, &k.output_index, &k.output_index_colon).map(Ends::Text);
    }
    if has(&k.index) {
        if has(&k.candidates) {
            return None;
        }
        return sole_number(frame, &k.index, &k.index_colon).map(Ends::Text);
    }
    Some(Ends::Every)
}
