//! Redaction that follows an answer's text across stream events.
//!
//! Providers cut text wherever their tokens fall, so `jane@example.com` may arrive as
//! `jane@exa` and `mple.com`. Each event's text delta is joined to what the previous one
//! held back; everything before the first place where a value could still be growing goes
//! out at once, redacted, and only that tail (bounded by the longest value a pattern can
//! match) waits for the next event. Text that ends where no value could continue is never
//! delayed. A held tail goes out when its text ends — before a finish, a block's end,
//! usage, `[DONE]` or the stream's end, in an event shaped like its last delta — and never
//! on events that interrupt nothing (pings, comments).
//!
//! The text followed is each choice's, block's or candidate's own (by its index): OpenAI
//! Chat `choices[].delta.content`, Anthropic `text_delta`, Gemini text parts, Responses
//! `response.output_text.delta`. Every other string of every event is redacted event by
//! event (reasoning and tool-argument deltas are not followed across events), and Chat
//! `logprobs`, which spell the text token by token, are dropped. An event that is not
//! UTF-8 ends the stream: what cannot be read cannot be redacted.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use regex_automata::hybrid::dfa::Cache;
use serde_json::Value;

use super::raw::Ends;
use super::{each_text, Rewriter};
use crate::event::Frame;
use crate::{FilterError, Memo, StreamFilter};
pub(super) use slot::Slot;
use slot::{ends_of, first_mut, index_of, interrupts_nothing, plain_event};

/// A held text event without its text (carried by a later event), everything else kept;
/// `text` is where its text is (found when it was held: its bytes alone may not tell).
fn without_text(event: Bytes, text: std::ops::Range<usize>) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity(event.len());
    out.extend_from_slice(&event[..text.start]);
    out.extend_from_slice(&event[text.end..]);
    out.freeze()
}

/// One text being followed.
struct Held {
    index: u64,
    /// Text not sent yet: it may be the start of a value.
    text: String,
    /// Events held back whole, unchanged, whose texts make `text` (each with where its
    /// text is in it): sent as they came when `text` turns out to be no value. Empty when `text`
    /// is a tail cut from an event already sent.
    events: Vec<(Bytes, std::ops::Range<usize>)>,
    /// The last event of this text, to carry the tail out in (`None`: the last of
    /// `events`, which is not empty then).
    template: Option<Bytes>,
    slot: Slot,
}

/// Most texts (choices, blocks, candidates) one stream follows at once: an upstream that
/// opens more ends its stream rather than grow what is held without bound.
const MAX_TEXTS: usize = 256;

/// Most events held back whole for one text; past it the text is carried in one event.
const MAX_HELD_EVENTS: usize = 64;

pub(crate) struct RedactStream {
    rewriter: Arc<Rewriter>,
    /// The request's placeholders, and those of values first seen in this answer.
    memo: Cow<'static, Memo>,
    /// The texts with a tail held back (one per choice or block that has one).
    held: Vec<Held>,
    /// Each text's last character sent: the context a value after it is judged in (a
    /// value starts at a word boundary).
    sent: Vec<(u64, char)>,
    cache: Option<Cache>,
    /// The bytes around the text of the last event handled in its bytes.
    framing: Option<Framing>,
    /// A buffer a text and what it held back are joined in, kept between events.
    scratch: String,
}

/// The largest scratch buffer kept between events.
const SCRATCH: usize = 16 << 10;

/// A text event's bytes around its text (the quotes included), known to hold nothing to
/// redact: a stream's events repeat them (id, model, created, the index), so an event with
/// the same ones is the same event around another text, found without another search.
struct Framing {
    before: Bytes,
    after: Bytes,
    slot: Slot,
    index: u64,
}

impl Framing {
    /// Where the text of `frame` is, if `frame` is this framing around a text without
    /// escapes.
    fn fits(&self, frame: &[u8]) -> Option<super::raw::RawSlot> {
        let start = self.before.len();
        let rest = frame.strip_prefix(&self.before[..])?;
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        let end = start + len;
        let fits = rest[len] == b'"'
            && frame[end..] == self.after[..]
            // The text itself makes no second data line (a colon first: most texts have
            // none, and looking for one costs less than setting up a substring search).
            && (memchr::memchr(b':', &rest[..len]).is_none()
                || memchr::memmem::find(&rest[..len], b"data:").is_none());
        fits.then_some(super::raw::RawSlot {
            start,
            end,
            slot: self.slot,
            index: self.index,
        })
    }
}

impl Drop for RedactStream {
    fn drop(&mut self) {
        if let (Some(cache), Some(detector)) = (self.cache.take(), self.rewriter.response.as_ref())
        {
            detector.give_back(cache);
        }
    }
}

impl RedactStream {
    pub(crate) fn new(rewriter: Arc<Rewriter>, memo: Memo) -> RedactStream {
        RedactStream {
            rewriter,
            memo: Cow::Owned(memo),
            held: Vec::new(),
            sent: Vec::new(),
            cache: None,
            framing: None,
            scratch: String::new(),
        }
    }

    /// The context of text `index` (its last character sent, or nothing), in a string with
    /// room for `more` bytes after it: what follows is pushed onto it, every event.
    fn context(&self, index: u64, more: usize) -> String {
        let mut context = String::with_capacity(4 + more);
        if let Some((_, c)) = self.sent.iter().find(|(i, _)| *i == index) {
            context.push(*c);
        }
        context
    }

    /// The last character text `index` sent, if any.
    fn last_sent(&self, index: u64) -> Option<char> {
        self.sent.iter().find(|(i, _)| *i == index).map(|(_, c)| *c)
    }

    /// Keeps `whole`'s buffer for the next event, unless a large text made it large.
    fn keep_scratch(&mut self, whole: String) {
        if whole.capacity() <= SCRATCH {
            self.scratch = whole;
        }
    }

    /// Records what text `index` sent last (`sent` ends with it).
    fn sent_text(&mut self, index: u64, sent: &str) {
        let Some(last) = sent.chars().next_back() else {
            return;
        };
        match self.sent.iter_mut().find(|(i, _)| *i == index) {
            Some(entry) => entry.1 = last,
            None => {
                // Bounded like the texts held: the oldest context goes (a value after it is
                // then judged as if at the start of its text, which finds more, never less).
                if self.sent.len() >= MAX_TEXTS {
                    self.sent.remove(0);
                }
                self.sent.push((index, last));
            }
        }
    }

    /// Sends the held tails (of `index`, or all), redacted, each in an event shaped like
    /// its text's last delta.
    fn flush(&mut self, index: Option<u64>, out: &mut Vec<Bytes>) {
        let rewriter = Arc::clone(&self.rewriter);
        let Some(detector) = rewriter.response.as_ref() else {
            return;
        };
        let mut kept = Vec::new();
        for held in std::mem::take(&mut self.held) {
            if index.is_some_and(|i| i != held.index) {
                kept.push(held);
                continue;
            }
            let template = held
                .template
                .clone()
                .or_else(|| held.events.last().map(|(event, _)| event.clone()));
            let mut whole = self.context(held.index, held.text.len());
            let from = whole.len();
            whole.push_str(&held.text);
            self.sent_text(held.index, &whole);
            let text = match rewriter.rewrite_from(detector, &whole, from, &mut self.memo) {
                // Held back whole and nothing to change: they go as they came.
                None if !held.events.is_empty() => {
                    out.extend(held.events.into_iter().map(|(event, _)| event));
                    continue;
                }
                rewritten => {
                    out.extend(
                        held.events
                            .into_iter()
                            .map(|(event, text)| without_text(event, text)),
                    );
                    rewritten.unwrap_or(held.text)
                }
            };
            let Some(template) = template else {
                continue;
            };
            let Some(frame) = Frame::parse(&template) else {
                continue;
            };
            let Some(mut doc) = frame.json() else {
                continue;
            };
            // The tail belongs to the text, not to a finish the template may carry.
            if let Some(choice) = first_mut(&mut doc, "choices") {
                if let Some(reason) = choice.get_mut("finish_reason") {
                    *reason = Value::Null;
                }
            }
            if let Some(slot_text) = held.slot.text(&mut doc) {
                *slot_text = text;
                // The template's other strings go out again: redacted like any event's.
                self.rewrite_rest(&mut doc, Some(held.slot));
                if let Some(event) = frame.with_json(&doc) {
                    out.push(event);
                }
            }
        }
        self.held = kept;
    }

    /// An event that carries no text of its own to follow, its strings redacted.
    fn push_rest(
        &mut self,
        mut doc: Value,
        parsed: &Frame<'_>,
        frame: &Bytes,
        out: &mut Vec<Bytes>,
    ) {
        let changed = self.rewrite_rest(&mut doc, None);
        match changed.then(|| parsed.with_json(&doc)).flatten() {
            Some(edited) => out.push(edited),
            None => out.push(frame.clone()),
        }
    }

    /// Every string of `doc` but its text delta, redacted; Chat `logprobs` dropped.
    fn rewrite_rest(&mut self, doc: &mut Value, slot: Option<Slot>) -> bool {
        let Some(detector) = self.rewriter.response.as_ref() else {
            return false;
        };
        let mut changed = false;
        if let Some(choice) = first_mut(doc, "choices").and_then(Value::as_object_mut) {
            if choice.get("logprobs").is_some_and(|l| !l.is_null()) {
                choice.insert("logprobs".into(), Value::Null);
                changed = true;
            }
        }
        // The text delta is redacted (or restored) already: out of the way meanwhile.
        let text = slot.and_then(|s| s.text(doc)).map(std::mem::take);
        let memo = &mut self.memo;
        let rewriter = &self.rewriter;
        changed |= each_text(doc, &mut |s| match rewriter.rewrite(detector, s, memo) {
            Some(new) => {
                *s = new;
                true
            }
            None => false,
        });
        if let (Some(text), Some(slot)) = (text, slot) {
            if let Some(place) = slot.text(doc) {
                *place = text;
            }
        }
        changed
    }
}

impl RedactStream {
    /// `text`, this event's delta of the text `index`, after what that text held back:
    /// what goes out now (`None`: `text` itself, unchanged) and the tail to hold.
    fn follow(
        &mut self,
        detector: &super::Detector,
        index: u64,
        text: &str,
        last: bool,
    ) -> (Option<String>, String) {
        let held = match self.held.iter().position(|h| h.index == index) {
            Some(at) => Some(self.held.swap_remove(at)),
            None => None,
        };
        let was_holding = held.is_some();
        // The text after its context: values are judged as they stand in the whole answer.
        let held_len = held.as_ref().map_or(0, |h| h.text.len());
        let mut whole = self.context(index, held_len + text.len());
        let from = whole.len();
        whole.push_str(&held.map(|h| h.text).unwrap_or_default());
        whole.push_str(text);
        // Values as they stand in all the text there is: the text before a cut is not
        // judged as if it ended there (`+1 415 575` is no number where `f` follows).
        let mut found = detector.find_from(&whole, from);
        let cut = if last {
            whole.len()
        } else {
            let cache = self.cache.get_or_insert_with(|| detector.cache());
            let mut cut = detector.hold_after(&whole, from, cache);
            // A value that ends past the cut starts the held tail, whole.
            for value in &found {
                if value.start < cut && value.end > cut {
                    cut = value.start;
                }
            }
            // But never more than the longest value back: the tail stays bounded.
            let mut floor = whole.len().saturating_sub(detector.hold()).max(from);
            while !whole.is_char_boundary(floor) {
                floor += 1;
            }
            let mut cut = cut.max(floor);
            // A value the floor would split goes out now, whole and replaced: never its
            // start as text, with the rest judged alone later.
            for value in &found {
                if value.start < cut && value.end > cut {
                    cut = value.end;
                }
            }
            cut
        };
        found.retain(|value| value.end <= cut);
        let rewritten =
            self.rewriter
                .rewrite_found(detector, &whole[..cut], from, &found, &mut self.memo);
        let tail = whole.split_off(cut);
        self.sent_text(index, &whole);
        let changed = was_holding || !tail.is_empty() || rewritten.is_some();
        (
            changed.then(|| rewritten.unwrap_or_else(|| whole.split_off(from))),
            tail,
        )
    }

    fn hold(&mut self, index: u64, tail: String, frame: Bytes, slot: Slot) {
        if !tail.is_empty() {
            self.held.push(Held {
                index,
                text: tail,
                events: Vec::new(),
                template: Some(frame),
                slot,
            });
        }
    }

    /// The text event handled in its bytes ([`raw`]); given back when it is not one the
    /// bytes say enough about, and nothing was done.
    ///
    /// Events whose text could still be the start of a value are held back whole rather
    /// than cut, and go out as they came once the next says it was no value: no event is
    /// rewritten unless a value is there.
    fn on_raw_event(
        &mut self,
        detector: &super::Detector,
        frame: Bytes,
        out: &mut Vec<Bytes>,
    ) -> Result<(), Bytes> {
        if !detector.reads_raw() {
            return Err(frame);
        }
        let found = match self.framing.as_ref().and_then(|f| f.fits(&frame)) {
            // Its bytes around the text are the framing's, known to be UTF-8; the text's
            // own are checked below.
            Some(found) => found,
            None => {
                if std::str::from_utf8(&frame).is_err() {
                    return Err(frame);
                }
                let Some(found) = super::raw::find(&frame) else {
                    return Err(frame);
                };
                // Every other string of the event holds nothing to redact or restore, as far
                // as its bytes tell (an escape could split a value from its word boundary:
                // parsed then).
                let (before, after) = (&frame[..found.start - 1], &frame[found.end + 1..]);
                let clean =
                    |part: &[u8]| memchr::memchr(b'\\', part).is_none() && !detector.any(part);
                if !clean(before) || !clean(after) {
                    return Err(frame);
                }
                self.framing = Some(Framing {
                    before: frame.slice(..found.start),
                    after: frame.slice(found.end..),
                    slot: found.slot,
                    index: found.index,
                });
                found
            }
        };
        let Ok(text) = std::str::from_utf8(&frame[found.start..found.end]) else {
            return Err(frame);
        };
        let at = self.held.iter().position(|h| h.index == found.index);
        let whole_events = at.is_none_or(|at| !self.held[at].events.is_empty());
        if whole_events {
            let held = at.map(|at| self.held.swap_remove(at));
            let (mut events, held_text) = match held {
                Some(h) => (h.events, h.text),
                None => (Vec::new(), String::new()),
            };
            // Built in the stream's scratch buffer, and the held tail in the buffer the last
            // one had: no allocation per event while a stream goes this way.
            let mut whole = std::mem::take(&mut self.scratch);
            whole.clear();
            whole.extend(self.last_sent(found.index));
            let from = whole.len();
            whole.push_str(&held_text);
            whole.push_str(text);
            let mut carried = held_text;
            if detector.find_from(&whole, from).is_empty() {
                let cache = self.cache.get_or_insert_with(|| detector.cache());
                let cut = detector.hold_after(&whole, from, cache);
                // Events whose text ends before the cut are final: out as they came.
                let mut sent = from;
                let mut released = 0;
                for (_, held_text) in &events {
                    if sent + held_text.len() > cut {
                        break;
                    }
                    sent += held_text.len();
                    released += 1;
                }
                out.extend(events.drain(..released).map(|(event, _)| event));
                if cut == whole.len() {
                    self.sent_text(found.index, &whole);
                    self.keep_scratch(whole);
                    out.push(frame);
                    return Ok(());
                }
                self.sent_text(found.index, &whole[..sent]);
                carried.clear();
                if events.len() < MAX_HELD_EVENTS && whole.len() - sent <= detector.hold() {
                    carried.push_str(&whole[sent..]);
                    self.keep_scratch(whole);
                    // The event itself is the template: the last of those held.
                    events.push((frame, found.start..found.end));
                    self.held.push(Held {
                        index: found.index,
                        text: carried,
                        events,
                        template: None,
                        slot: found.slot,
                    });
                    return Ok(());
                }
                carried.push_str(&whole[sent..whole.len() - text.len()]);
            }
            self.keep_scratch(whole);
            // A value to replace (or too much held): the held events go out with their
            // text taken out (what else they carry stays, in order), and this one carries
            // it all, cut and rewritten below.
            out.extend(
                events
                    .into_iter()
                    .map(|(event, text)| without_text(event, text)),
            );
            self.held.push(Held {
                index: found.index,
                text: carried,
                events: Vec::new(),
                template: Some(frame.clone()),
                slot: found.slot,
            });
        }
        let (new_text, tail) = self.follow(detector, found.index, text, false);
        match new_text {
            None => out.push(frame.clone()),
            Some(new_text) => {
                let quoted = serde_json::Value::String(new_text).to_string();
                let mut edited = bytes::BytesMut::with_capacity(frame.len() + quoted.len());
                // The quotes around the text are replaced with the new text's own.
                edited.extend_from_slice(&frame[..found.start - 1]);
                edited.extend_from_slice(quoted.as_bytes());
                edited.extend_from_slice(&frame[found.end + 1..]);
                out.push(edited.freeze());
            }
        }
        self.hold(found.index, tail, frame, found.slot);
        Ok(())
    }
}

impl StreamFilter for RedactStream {
    fn on_event(&mut self, frame: Bytes, out: &mut Vec<Bytes>) -> Result<(), FilterError> {
        self.on_frame(frame, out)?;
        if self.held.len() > MAX_TEXTS {
            return Err(FilterError::Body(format!(
                "the stream holds back text of more than {MAX_TEXTS} choices or blocks at once"
            )));
        }
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Bytes>) {
        self.flush(None, out);
    }
}

impl RedactStream {
    fn on_frame(&mut self, frame: Bytes, out: &mut Vec<Bytes>) -> Result<(), FilterError> {
        let rewriter = Arc::clone(&self.rewriter);
        let Some(detector) = rewriter.response.as_ref() else {
            out.push(frame);
            return Ok(());
        };
        let frame = match self.on_raw_event(detector, frame, out) {
            Ok(()) => return Ok(()),
            Err(frame) => frame,
        };
        if std::str::from_utf8(&frame).is_err() {
            return Err(FilterError::Body("a stream event is not UTF-8".into()));
        }
        if let Some(ends) = plain_event(detector, &frame) {
            self.flush(
                match ends {
                    Ends::Text(index) => Some(index),
                    Ends::Every => None,
                },
                out,
            );
            out.push(frame);
            return Ok(());
        }
        let Some(parsed) = Frame::parse(&frame) else {
            // A comment or a blank keep-alive: no text in it, none interrupted.
            out.push(frame);
            return Ok(());
        };
        let Some(mut doc) = parsed.json() else {
            // `[DONE]`, or data that is not an object: whatever was held is complete. Its
            // text is searched as it stands (no format says where text is in it).
            self.flush(None, out);
            let text = std::str::from_utf8(&frame).unwrap_or_default();
            match rewriter.rewrite(detector, text, &mut self.memo) {
                Some(redacted) => out.push(Bytes::from(redacted)),
                None => out.push(frame),
            }
            return Ok(());
        };
        if interrupts_nothing(&doc) {
            self.push_rest(doc, &parsed, &frame, out);
            return Ok(());
        }
        let index = index_of(&doc);
        let Some((slot, last)) = Slot::find(&doc) else {
            // A finish, a block's end, usage: the text of this index (of every index when
            // the event names none of its own) is over.
            self.flush(
                match ends_of(&doc) {
                    Ends::Text(index) => Some(index),
                    Ends::Every => None,
                },
                out,
            );
            self.push_rest(doc, &parsed, &frame, out);
            return Ok(());
        };
        // Events this text held back whole: out first, their text carried by this one.
        if let Some(held) = self.held.iter_mut().find(|h| h.index == index) {
            // Its template is the last of them: kept, for the text may stay held.
            if held.template.is_none() {
                held.template = held.events.last().map(|(event, _)| event.clone());
            }
            out.extend(
                held.events
                    .drain(..)
                    .map(|(event, text)| without_text(event, text)),
            );
        }
        let Some(text) = slot.text(&mut doc) else {
            self.push_rest(doc, &parsed, &frame, out);
            return Ok(());
        };
        let (new_text, tail) = self.follow(detector, index, text, last);
        let text_changed = new_text.is_some();
        if let (Some(new_text), Some(text)) = (new_text, slot.text(&mut doc)) {
            *text = new_text;
        }
        let rest_changed = self.rewrite_rest(&mut doc, Some(slot));
        if text_changed || rest_changed {
            if let Some(edited) = parsed.with_json(&doc) {
                out.push(edited);
            }
        } else {
            out.push(frame.clone());
        }
        self.hold(index, tail, frame, slot);
        Ok(())
    }
}

mod slot;
#[cfg(test)]
mod tests;
