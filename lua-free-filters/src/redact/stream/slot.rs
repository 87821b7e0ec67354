//! Where a stream event's text is, which texts an event ends: read from its parsed JSON,
//! or from its bytes when they say enough.

use serde_json::Value;

use crate::redact::raw::Ends;

/// Where an event's text delta is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::redact) enum Slot {
    Chat,
    Anthropic,
    Gemini(usize),
    Responses,
}

/// The index that tells one text from another in a stream: the choice, the block, the
/// candidate, the output item.
pub(super) fn index_of(doc: &Value) -> u64 {
    let index = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    if let Some([first, ..]) = doc
        .get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        return index(first.get("index"));
    }
    if let Some([first, ..]) = doc
        .get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        return index(first.get("index"));
    }
    if doc.get("output_index").is_some() {
        return index(doc.get("output_index"));
    }
    index(doc.get("index"))
}

impl Slot {
    /// The event's text delta, and whether the event ends its text (after which nothing
    /// may be held back).
    pub(in crate::redact) fn find(doc: &Value) -> Option<(Slot, bool)> {
        if let Some([choice]) = doc
            .get("choices")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            let text = field(choice, &["delta", "content"]).is_some_and(Value::is_string);
            let last = choice.get("finish_reason").is_some_and(|r| !r.is_null());
            return text.then_some((Slot::Chat, last));
        }
        if let Some([candidate]) = doc
            .get("candidates")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            let parts = field(candidate, &["content", "parts"]).and_then(Value::as_array)?;
            let mut texts = parts
                .iter()
                .enumerate()
                .filter(|(_, p)| p.get("text").is_some_and(Value::is_string));
            let (index, part) = texts.next()?;
            let thought = part.get("thought").and_then(Value::as_bool) == Some(true);
            let last = candidate.get("finishReason").is_some_and(|r| !r.is_null());
            return (texts.next().is_none() && !thought).then_some((Slot::Gemini(index), last));
        }
        match doc.get("type").and_then(Value::as_str) {
            Some("content_block_delta")
                if field(doc, &["delta", "type"]).and_then(Value::as_str) == Some("text_delta") =>
            {
                Some((Slot::Anthropic, false))
            }
            Some("response.output_text.delta")
                if doc.get("delta").is_some_and(Value::is_string) =>
            {
                Some((Slot::Responses, false))
            }
            _ => None,
        }
    }

    pub(in crate::redact) fn text(self, doc: &mut Value) -> Option<&mut String> {
        let value = match self {
            Slot::Chat => first_mut(doc, "choices")
                .and_then(|choice| choice.get_mut("delta"))
                .and_then(|delta| delta.get_mut("content")),
            Slot::Anthropic => doc.get_mut("delta").and_then(|delta| delta.get_mut("text")),
            Slot::Gemini(i) => first_mut(doc, "candidates")
                .and_then(|candidate| candidate.get_mut("content"))
                .and_then(|content| content.get_mut("parts"))
                .and_then(|parts| parts.get_mut(i))
                .and_then(|part| part.get_mut("text")),
            Slot::Responses => doc.get_mut("delta"),
        }?;
        match value {
            Value::String(text) => Some(text),
            _ => None,
        }
    }
}

/// `doc[keys[0]][keys[1]]…` (a JSON pointer's walk without its parse and its copies of
/// each key: asked of every event that is parsed).
fn field<'a>(doc: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(doc, |value, key| value.get(key))
}

/// The first element of the array `doc[key]`.
pub(super) fn first_mut<'a>(doc: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    doc.get_mut(key)?.as_array_mut()?.first_mut()
}

/// An event without a text delta that passes as it came, read from its bytes: what it
/// ends (see [`crate::redact::raw::plain_event`]). Its bytes hold no escape (which could hide a
/// value's edge) and nothing any pattern matches.
pub(super) fn plain_event(detector: &crate::redact::Detector, frame: &[u8]) -> Option<Ends> {
    let ends = crate::redact::raw::plain_event(frame)?;
    let clean =
        detector.reads_raw() && memchr::memchr(b'\\', frame).is_none() && !detector.any(frame);
    clean.then_some(ends)
}

/// Which texts a (parsed) event without a text delta ends: its index's, or every one when
/// it names none of its own.
pub(super) fn ends_of(doc: &Value) -> Ends {
    let named = doc
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty())
        || doc.get("index").is_some()
        || doc.get("output_index").is_some();
    if named {
        Ends::Text(index_of(doc))
    } else {
        Ends::Every
    }
}

/// Events that interrupt no text: a held tail waits through them.
pub(super) fn interrupts_nothing(doc: &Value) -> bool {
    matches!(doc.get("type").and_then(Value::as_str), Some("ping"))
}
