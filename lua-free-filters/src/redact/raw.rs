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
    // Bare keys and words, wherever they stand: events are refused or parsed on them.
    content_key: Finder<'static>,
    text_key: Finder<'static>,
    delta_key: Finder<'static>,
    text_delta_word: Finder<'static>,
    ping: Finder<'static>,
    logprobs_key: Finder<'static>,
    choices_key: Finder<'static>,
    choices_none: Finder<'static>,
    candidates_key: Finder<'static>,
    index_key: Finder<'static>,
    output_index_key: Finder<'static>,
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
    content_key: Finder::new(b"\"content\""),
    text_key: Finder::new(b"\"text\""),
    delta_key: Finder::new(b"\"delta\""),
    text_delta_word: Finder::new(b"text_delta"),
    ping: Finder::new(b"ping"),
    logprobs_key: Finder::new(b"\"logprobs\""),
    choices_key: Finder::new(b"\"choices\""),
    choices_none: Finder::new(b"\"choices\":[]"),
    candidates_key: Finder::new(b"\"candidates\""),
    index_key: Finder::new(b"\"index\""),
    output_index_key: Finder::new(b"\"output_index\""),
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
    // A plain integer, as `as_u64` reads it: `1.0` or `1e0` is no index there.
    if !matches!(digits.get(len), Some(b',' | b'}')) {
        return None;
    }
    std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
}

/// The only `data:` field of a frame, at the start of a line (where SSE reads one): where
/// it is.
fn only_data_line(frame: &[u8]) -> Option<usize> {
    let mut data = NEEDLES.data.find_iter(frame);
    let at = data.next()?;
    let line_start = at == 0 || matches!(frame[at - 1], b'\n' | b'\r');
    (line_start && data.next().is_none()).then_some(at)
}

/// The first byte at or after `at` that is not JSON whitespace (`at` itself when past the
/// end: the caller's `get` then finds nothing).
fn skip_space(hay: &[u8], at: usize) -> usize {
    at + hay
        .get(at..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count()
}

/// Where the JSON of the frame's data line starts.
fn json_start(frame: &[u8], data_at: usize) -> usize {
    skip_space(frame, data_at + "data:".len())
}

/// The nesting depth at `to` of the JSON read from `from` (strings skipped with their
/// escapes, so a brace inside one counts for nothing), and whether a comma stood at depth
/// `watch` on the way; `None` when `to` is inside a string.
fn depth_at(frame: &[u8], from: usize, to: usize, watch: usize) -> Option<(usize, bool)> {
    let bytes = frame.get(from..to).unwrap_or_default();
    let (mut depth, mut comma, mut i) = (0usize, false, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // A string, skipped to its closing quote (escapes jumped over whole).
                i += 1;
                loop {
                    let at = i + memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
                    if bytes[at] == b'"' {
                        i = at;
                        break;
                    }
                    i = at + 2;
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == watch => comma = true,
            _ => {}
        }
        i += 1;
    }
    Some((depth, comma))
}

/// Whether the first `key` in `frame` (if any) belongs to the top-level object of the JSON
/// at `json`: a key nested deeper is not the one a reader of the event takes.
fn at_top(frame: &[u8], json: usize, key: &Finder<'_>) -> bool {
    key.find(frame)
        .is_none_or(|at| depth_at(frame, json, at, 0).is_some_and(|(depth, _)| depth == 1))
}

/// Whether the only `"index"` (if any) is a key of the first element of the top-level
/// `choices` array, as `index_of` reads it.
fn first_choice_index(frame: &[u8], json: usize) -> bool {
    let n = &*NEEDLES;
    let Some(index) = n.index_key.find(frame) else {
        return true;
    };
    let Some(choices) = n.choices_key.find(frame) else {
        return false;
    };
    // The array's `[`: after the key, its colon and any whitespace.
    let colon = skip_space(frame, choices + n.choices_key.needle().len());
    let open = skip_space(frame, colon + 1);
    at_top(frame, json, &n.choices_key)
        && frame.get(colon) == Some(&b':')
        && frame.get(open) == Some(&b'[')
        && index > open
        && depth_at(frame, open, index, 1) == Some((2, false))
}

/// Whether `key` occurs exactly once: a second one (a duplicate key, which a JSON reader
/// takes the last of) could hide the real text behind a decoy.
fn once(hay: &[u8], key: &Finder<'_>) -> bool {
    let mut found = key.find_iter(hay);
    found.next().is_some() && found.next().is_none()
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
    let json = json_start(frame, only_data_line(frame)?);
    if n.unicode_escape.find(frame).is_some() {
        return None;
    }
    // The index read is the one the parsed event is followed by (see `index_of`).
    let top = |key: &Finder<'_>| at_top(frame, json, key);
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
        if !once(frame, &n.content_key) || !top(&n.choices_key) || !first_choice_index(frame, json)
        {
            return None;
        }
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
        if !once(frame, &n.text_key) || !top(&n.index_key) {
            return None;
        }
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
        if !once(frame, &n.delta_key) || !top(&n.output_index_key) {
            return None;
        }
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
        // A candidate's index could be any candidate's: parsed instead.
        if n.index_key.find(frame).is_some() || !once(frame, &n.text_key) {
            return None;
        }
        let index = 0;
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

/// Whether some `key` in `hay` has a string value (whitespace allowed around the colon):
/// where a text delta could be.
fn has_string_value(hay: &[u8], key: &Finder<'_>) -> bool {
    key.find_iter(hay).any(|at| {
        let colon = skip_space(hay, at + key.needle().len());
        hay.get(colon) == Some(&b':') && hay.get(skip_space(hay, colon + 1)) == Some(&b'"')
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
    let json = json_start(frame, only_data_line(frame)?);
    let top = |key: &Finder<'_>| at_top(frame, json, key);
    if frame.get(json) != Some(&b'{')
        || has_string_value(frame, &n.content_key)
        || has_string_value(frame, &n.text_key)
        || has_string_value(frame, &n.delta_key)
        || n.text_delta_word.find(frame).is_some()
        || n.ping.find(frame).is_some()
        || n.logprobs_key
            .find_iter(frame)
            .any(|at| !frame[at + n.logprobs_key.needle().len()..].starts_with(b":null"))
    {
        return None;
    }
    let has = |key: &Finder<'_>| key.find(frame).is_some();
    if has(&n.choices_key) {
        if n.choices_key.find_iter(frame).count() != 1 || !top(&n.choices_key) {
            return None;
        }
        if has(&n.choices) {
            if !first_choice_index(frame, json) {
                return None;
            }
            return sole_number(frame, &n.index_key, &n.index).map(Ends::Text);
        }
        let unnamed = has(&n.choices_none) && !has(&n.index_key) && !has(&n.output_index_key);
        return unnamed.then_some(Ends::Every);
    }
    if has(&n.output_index_key) {
        // Beside candidates or an `index` the parsed event may be read by another key.
        if has(&n.candidates_key) || has(&n.index_key) || !top(&n.output_index_key) {
            return None;
        }
        return sole_number(frame, &n.output_index_key, &n.output_index).map(Ends::Text);
    }
    if has(&n.index_key) {
        if has(&n.candidates_key) || !top(&n.index_key) {
            return None;
        }
        return sole_number(frame, &n.index_key, &n.index).map(Ends::Text);
    }
    Some(Ends::Every)
}
