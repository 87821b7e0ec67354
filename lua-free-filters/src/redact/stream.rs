//! Redaction that follows an answer's text across stream events.
//!
//! Providers cut text wherever their tokens fall, so `jane@example.com` may arrive as
//! `jane@exa` and `mple.com`. Each event's text delta is joined to what the previous one
//! held back; everything before the first place where a value could still be growing goes
//! out at once, redacted, and only that tail (bounded by the longest value a pattern can
//! match) waits for the next event. Text that ends where no value could continue is never
//! delayed. A held tail goes out when the text ends: before any event that is not a text
//! delta (a finish, a block's end, usage), in an event shaped like the last delta.
//!
//! The text deltas followed are those of a single choice or part: OpenAI Chat
//! `choices[0].delta.content`, Anthropic `text_delta`, Gemini `candidates[0]` text parts,
//! Responses `response.output_text.delta`. Everything else (reasoning, tool arguments,
//! several choices at once) is redacted event by event.

use std::sync::Arc;

use bytes::Bytes;
use regex_automata::hybrid::dfa::Cache;
use serde_json::Value;

use super::{each_text, Rewriter};
use crate::event::Frame;
use crate::{FilterError, Memo, StreamFilter};

/// Where an event's text delta is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    Chat,
    Anthropic,
    Gemini(usize),
    Responses,
}

impl Slot {
    /// The event's text delta, and whether the event ends its choice (after which nothing
    /// may be held back).
    pub(super) fn find(doc: &Value) -> Option<(Slot, bool)> {
        if let Some([choice]) = doc
            .get("choices")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            let text = choice
                .pointer("/delta/content")
                .is_some_and(Value::is_string);
            let last = choice.get("finish_reason").is_some_and(|r| !r.is_null());
            return text.then_some((Slot::Chat, last));
        }
        if let Some([candidate]) = doc
            .get("candidates")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            let parts = candidate
                .pointer("/content/parts")
                .and_then(Value::as_array)?;
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
                if doc.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta") =>
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

    pub(super) fn text(self, doc: &mut Value) -> Option<&mut String> {
        let value = match self {
            Slot::Chat => doc.pointer_mut("/choices/0/delta/content"),
            Slot::Anthropic => doc.pointer_mut("/delta/text"),
            Slot::Gemini(i) => doc
                .pointer_mut("/candidates/0/content/parts")
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

pub(crate) struct RedactStream {
    rewriter: Arc<Rewriter>,
    /// The request's placeholders, and those of values first seen in this answer.
    memo: Memo,
    /// Text not sent yet: it may be the start of a value.
    held: String,
    /// The last text event, to carry a held tail out when the text ends.
    template: Option<(Bytes, Slot)>,
    cache: Option<Cache>,
}

impl RedactStream {
    pub(crate) fn new(rewriter: Arc<Rewriter>, memo: Memo) -> RedactStream {
        RedactStream {
            rewriter,
            memo,
            held: String::new(),
            template: None,
            cache: None,
        }
    }

    /// Sends what is held, redacted, in an event shaped like the last text delta.
    fn flush(&mut self, out: &mut Vec<Bytes>) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        let Some(detector) = self.rewriter.response.as_ref() else {
            return;
        };
        let text = self
            .rewriter
            .rewrite(detector, &held, &mut self.memo)
            .unwrap_or(held);
        let Some((template, slot)) = &self.template else {
            return;
        };
        let Some(frame) = Frame::parse(template) else {
            return;
        };
        let Some(mut doc) = frame.json() else {
            return;
        };
        // The tail belongs to the text, not to a finish the template may carry.
        if let Some(choice) = doc.pointer_mut("/choices/0") {
            if let Some(reason) = choice.get_mut("finish_reason") {
                *reason = Value::Null;
            }
        }
        if let Some(slot_text) = slot.text(&mut doc) {
            *slot_text = text;
            if let Some(event) = frame.with_json(&doc) {
                out.push(event);
            }
        }
    }
}

impl StreamFilter for RedactStream {
    fn on_event(&mut self, frame: Bytes, out: &mut Vec<Bytes>) -> Result<(), FilterError> {
        let rewriter = Arc::clone(&self.rewriter);
        let Some(detector) = rewriter.response.as_ref() else {
            out.push(frame);
            return Ok(());
        };
        let Some(parsed) = Frame::parse(&frame) else {
            self.flush(out);
            out.push(frame);
            return Ok(());
        };
        let Some(mut doc) = parsed.json() else {
            self.flush(out);
            out.push(frame);
            return Ok(());
        };
        let Some((slot, last)) = Slot::find(&doc) else {
            self.flush(out);
            let memo = &mut self.memo;
            let changed = each_text(&mut doc, &mut |text| match rewriter
                .rewrite(detector, text, memo)
            {
                Some(new) => {
                    *text = new;
                    true
                }
                None => false,
            });
            match changed.then(|| parsed.with_json(&doc)).flatten() {
                Some(edited) => out.push(edited),
                None => out.push(frame),
            }
            return Ok(());
        };
        let Some(text) = slot.text(&mut doc) else {
            out.push(frame);
            return Ok(());
        };
        let was_holding = !self.held.is_empty();
        let mut whole = std::mem::take(&mut self.held);
        whole.push_str(text);
        let cut = if last {
            whole.len()
        } else {
            let cache = self.cache.get_or_insert_with(|| detector.cache());
            let mut cut = detector.hold_from(&whole, cache);
            // A value that ends past the cut starts the held tail, whole.
            for found in detector.find(&whole) {
                if found.start < cut && found.end > cut {
                    cut = found.start;
                }
            }
            cut
        };
        let rewritten = rewriter.rewrite(detector, &whole[..cut], &mut self.memo);
        let unchanged = !was_holding && cut == whole.len() && rewritten.is_none();
        self.held = whole.split_off(cut);
        if unchanged {
            out.push(frame.clone());
        } else {
            *text = rewritten.unwrap_or(whole);
            if let Some(edited) = parsed.with_json(&doc) {
                out.push(edited);
            }
        }
        self.template = Some((frame, slot));
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Bytes>) {
        self.flush(out);
    }
}
