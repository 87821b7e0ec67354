//! Token usage read from provider responses that pass through unchanged.
//!
//! Only the fields accounting needs are parsed (everything else is skipped by serde without
//! allocating), and stream events are parsed only when a cheap byte search says they carry
//! usage. Field meanings follow TRANSLATION.md §5: OpenAI `prompt_tokens` and Gemini
//! `promptTokenCount` include cached tokens; Anthropic `input_tokens` excludes cache reads
//! and writes, which sira adds back (see [`Usage`]).

use memchr::memmem;
use serde::Deserialize;

use crate::format::Format;
use crate::sse::Event;
use crate::translate::anthropic::{self, wire::UsageIn};
use crate::translate::gemini::{self, wire::UsageMetadata};
use crate::translate::openai_chat::{self, wire_response::ChatUsage};
use crate::translate::responses::{self, wire::UsageIo};
use crate::usage::Usage;

// The provider usage objects and their conversions to [`Usage`] are the translation
// layer's (one definition per format); accounting only reads them from passthrough bodies.

#[derive(Deserialize)]
struct WithUsage<U> {
    #[serde(default = "Option::default")]
    usage: Option<U>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WithUsageMetadata {
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
}

// === JSON responses ===

/// Usage from a complete JSON response body of `format` (embeddings responses included,
/// which carry OpenAI's `usage.prompt_tokens`).
///
/// The usage object sits near the end of every provider's answer, so it is first read from
/// where its key is, without walking the rest of the document; the whole body is parsed
/// only when that finds nothing usable.
pub fn usage_from_json(format: Format, body: &[u8]) -> Option<Usage> {
    if let Some(object) = usage_object(body) {
        let quick = match format {
            Format::OpenAiChat => chat_usage_quick(object)
                .or_else(|| first_value::<ChatUsage>(object).map(|u| openai_chat::usage_from(&u))),
            Format::OpenAiResponses => {
                first_value::<UsageIo>(object).map(|u| responses::usage_from(&u))
            }
            Format::Anthropic => first_value::<UsageIn>(object).map(|u| anthropic::usage_from(&u)),
            Format::Gemini => first_value::<UsageMetadata>(object).map(|u| gemini::usage_from(&u)),
        };
        if let Some(usage) = quick.filter(|u| !u.is_zero()) {
            return Some(usage);
        }
    }
    usage_from_whole_json(format, body)
}

fn usage_from_whole_json(format: Format, body: &[u8]) -> Option<Usage> {
    match format {
        Format::OpenAiChat => serde_json::from_slice::<WithUsage<ChatUsage>>(body)
            .ok()?
            .usage
            .map(|u| openai_chat::usage_from(&u)),
        Format::OpenAiResponses => serde_json::from_slice::<WithUsage<UsageIo>>(body)
            .ok()?
            .usage
            .map(|u| responses::usage_from(&u)),
        Format::Anthropic => serde_json::from_slice::<WithUsage<UsageIn>>(body)
            .ok()?
            .usage
            .map(|u| anthropic::usage_from(&u)),
        Format::Gemini => serde_json::from_slice::<WithUsageMetadata>(body)
            .ok()?
            .usage_metadata
            .map(|u| gemini::usage_from(&u)),
    }
}

/// The bytes from the `{` of the last `"usage"`/`"usageMetadata"` key whose value is an
/// object. A key inside a string value would be escaped (`\"usage\"`) and is not matched.
fn usage_object(body: &[u8]) -> Option<&[u8]> {
    // Backwards over the `u`s, with memchr's vectorised reverse scan: memmem's reverse
    // searcher has no vectorised path, and cost some 1,600 instructions on a small answer.
    memchr::memrchr_iter(b'u', body)
        .filter(|&at| at > 0 && body[at - 1] == b'"' && body[at..].starts_with(b"usage"))
        .find_map(|at| object_after_key(&body[at - 1..]))
}

/// `from_key` starts at a `"usage` match: the value, if the key is `"usage"` or
/// `"usageMetadata"` and its value is an object.
fn object_after_key(from_key: &[u8]) -> Option<&[u8]> {
    let rest = &from_key[b"\"usage".len()..];
    let rest = rest
        .strip_prefix(b"\"")
        .or_else(|| rest.strip_prefix(b"Metadata\""))?;
    let value = rest
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    (value.first() == Some(&b'{')).then_some(value)
}

/// OpenAI Chat's usage object read by hand. Every JSON answer an OpenAI client gets is read
/// for it, and serde spends some 20 instructions a byte on an object of counters. Reads
/// objects whose members are unsigned integers or objects of them; `None` for anything
/// else (a null, a string, a float, a negative number, a repeated counter), which serde
/// then reads and judges.
fn chat_usage_quick(object: &[u8]) -> Option<Usage> {
    let mut reader = Flat {
        bytes: object,
        at: 0,
    };
    let mut usage = Usage::default();
    // The fields read so far, one bit each: a repeated one is serde's to refuse.
    let mut seen = 0u8;
    let mut first = |bit: u8| {
        let new = seen & bit == 0;
        seen |= bit;
        new.then_some(())
    };
    reader.object(|reader, key| {
        match key {
            b"prompt_tokens" => {
                first(1)?;
                usage.input = reader.number()?;
            }
            b"completion_tokens" => {
                first(2)?;
                usage.output = reader.number()?;
            }
            b"total_tokens" => {
                first(4)?;
                reader.number()?;
            }
            b"prompt_tokens_details" => {
                first(8)?;
                reader.object(|reader, key| {
                    match key {
                        b"cached_tokens" => {
                            first(16)?;
                            usage.cached_input = reader.number()?;
                        }
                        b"cache_write_tokens" => {
                            first(32)?;
                            usage.cache_creation_input = reader.number()?;
                        }
                        _ => {
                            reader.number()?;
                        }
                    }
                    Some(())
                })?;
            }
            b"completion_tokens_details" => {
                first(64)?;
                reader.object(|reader, key| {
                    if key == b"reasoning_tokens" {
                        first(128)?;
                        usage.reasoning = reader.number()?;
                    } else {
                        reader.number()?;
                    }
                    Some(())
                })?;
            }
            _ => reader.number_or_object()?,
        }
        Some(())
    })?;
    Some(usage)
}

/// A cursor over a JSON object of counters (see [`chat_usage_quick`]).
struct Flat<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Flat<'a> {
    /// An indented answer's newline and indent in one step.
    fn skip_space(&mut self) {
        self.at = lua_free_filters::json_bytes::skip_space(self.bytes, self.at);
    }

    fn next_is(&mut self, byte: u8) -> bool {
        self.skip_space();
        let is = self.bytes.get(self.at) == Some(&byte);
        if is {
            self.at += 1;
        }
        is
    }

    /// An unsigned integer that fits in 64 bits.
    fn number(&mut self) -> Option<u64> {
        self.skip_space();
        let start = self.at;
        let mut value = 0u64;
        while let Some(digit) = self.bytes.get(self.at).and_then(|b| b.checked_sub(b'0')) {
            if digit > 9 {
                break;
            }
            value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
            self.at += 1;
        }
        let digits = self.at - start;
        // A fraction or an exponent: not a counter; a leading zero: not JSON.
        let leading_zero = digits > 1 && self.bytes[start] == b'0';
        if digits == 0
            || leading_zero
            || matches!(self.bytes.get(self.at), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        Some(value)
    }

    fn number_or_object(&mut self) -> Option<()> {
        self.skip_space();
        if self.bytes.get(self.at) == Some(&b'{') {
            self.object(|reader, _| reader.number().map(drop))
        } else {
            self.number().map(drop)
        }
    }

    /// Calls `member` with each key of the object at the cursor, the cursor on its value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        if !self.next_is(b'{') {
            return None;
        }
        if self.next_is(b'}') {
            return Some(());
        }
        loop {
            if !self.next_is(b'"') {
                return None;
            }
            let start = self.at;
            let len = memchr::memchr2(b'"', b'\\', &self.bytes[start..])?;
            let key = &self.bytes[start..start + len];
            // An escape, a control character or beyond ASCII: serde's to read.
            if self.bytes[start + len] != b'"' || key.iter().any(|b| !(0x20..0x80).contains(b)) {
                return None;
            }
            self.at = start + len + 1;
            if !self.next_is(b':') {
                return None;
            }
            member(self, key)?;
            if self.next_is(b'}') {
                return Some(());
            }
            if !self.next_is(b',') {
                return None;
            }
        }
    }
}

/// Deserialises the first JSON value of `bytes`, ignoring what follows it.
fn first_value<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Option<T> {
    T::deserialize(&mut serde_json::Deserializer::from_slice(bytes)).ok()
}

// === streams ===

/// What to do with a stream frame after accounting looked at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameVerdict {
    Forward,
    /// An OpenAI chunk with `choices: []` that only carries usage, which sira asked for on
    /// the client's behalf: the client did not ask for it, so it must not see it.
    UsageOnly,
}

/// Reads usage from the frames of one passthrough stream.
#[derive(Debug)]
pub struct StreamUsage {
    format: Format,
    usage: Usage,
    /// Anthropic's counters as last reported, merged event by event.
    anthropic: UsageIn,
    seen: bool,
}

#[derive(Deserialize)]
struct OpenAiChunk {
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum AnthropicEvent {
    #[serde(rename = "message_start")]
    MessageStart { message: WithUsage<UsageIn> },
    #[serde(rename = "message_delta")]
    MessageDelta {
        #[serde(default)]
        usage: Option<UsageIn>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ResponsesEvent {
    #[serde(default)]
    response: Option<WithUsage<UsageIo>>,
}

// Searchers are built once: building one per call costs more than the search itself.
static USAGE_KEY: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\"usage"));

/// Whether `frame` has a `"usage"` or `"usageMetadata"` key whose value is an object: a
/// byte scan, so that only the one or two events of a stream that carry usage are parsed.
fn carries_usage(frame: &[u8]) -> bool {
    // Forward, with memmem's vectorised search: most frames have no usage key, and OpenAI's
    // have one, `"usage":null`, rejected after a few bytes. (The reverse searcher that finds
    // the last object in a whole body has no vectorised path: per event it cost more than
    // the rest of the usage tap together.)
    USAGE_KEY
        .find_iter(frame)
        .any(|at| object_after_key(&frame[at..]).is_some())
}

impl StreamUsage {
    pub fn new(format: Format) -> StreamUsage {
        StreamUsage {
            format,
            usage: Usage::default(),
            anthropic: UsageIn::default(),
            seen: false,
        }
    }

    /// Usage seen so far: final once the stream has ended.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether any event carried usage.
    pub fn seen(&self) -> bool {
        self.seen
    }

    /// Looks at one complete SSE frame.
    pub fn observe(&mut self, frame: &[u8]) -> FrameVerdict {
        // Most events carry no usage object, or `"usage":null` (every OpenAI chunk once
        // usage is requested): skip them without parsing.
        if !carries_usage(frame) {
            return FrameVerdict::Forward;
        }
        let event = Event::parse(frame);
        let data = event.data();
        match self.format {
            Format::OpenAiChat => {
                let Ok(chunk) = serde_json::from_slice::<OpenAiChunk>(data) else {
                    return FrameVerdict::Forward;
                };
                let Some(usage) = chunk.usage else {
                    return FrameVerdict::Forward;
                };
                self.usage = openai_chat::usage_from(&usage);
                self.seen = true;
                if chunk.choices.is_some_and(|c| c.is_empty()) {
                    return FrameVerdict::UsageOnly;
                }
            }
            Format::Anthropic => match serde_json::from_slice::<AnthropicEvent>(data) {
                Ok(AnthropicEvent::MessageStart {
                    message: WithUsage { usage: Some(u) },
                })
                | Ok(AnthropicEvent::MessageDelta { usage: Some(u) }) => {
                    self.anthropic.merge(&u);
                    self.usage = anthropic::usage_from(&self.anthropic);
                    self.seen = true;
                }
                Ok(_) | Err(_) => {}
            },
            Format::OpenAiResponses => {
                if let Ok(ResponsesEvent {
                    response: Some(WithUsage { usage: Some(u) }),
                }) = serde_json::from_slice::<ResponsesEvent>(data)
                {
                    self.usage = responses::usage_from(&u);
                    self.seen = true;
                }
            }
            Format::Gemini => {
                // Every chunk repeats the running totals; the last one is final.
                if let Ok(WithUsageMetadata {
                    usage_metadata: Some(u),
                }) = serde_json::from_slice::<WithUsageMetadata>(data)
                {
                    self.usage = gemini::usage_from(&u);
                    self.seen = true;
                }
            }
        }
        FrameVerdict::Forward
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::sse::SseScanner;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn stream_usage(format: Format, path: &str) -> (Usage, Vec<FrameVerdict>) {
        let mut scanner = SseScanner::new();
        let mut frames = Vec::new();
        scanner
            .feed(Bytes::from(fixture(path)), &mut frames)
            .unwrap();
        frames.extend(scanner.finish());
        let mut tap = StreamUsage::new(format);
        let verdicts = frames.iter().map(|f| tap.observe(f)).collect();
        (tap.usage(), verdicts)
    }

    #[test]
    fn openai_json_and_stream() {
        let u = usage_from_json(Format::OpenAiChat, &fixture("openai/chat_basic.json")).unwrap();
        assert_eq!((u.input, u.output, u.reasoning), (8, 377, 320));
        let (u, verdicts) = stream_usage(Format::OpenAiChat, "openai/chat_stream_usage.sse");
        assert_eq!((u.input, u.output, u.cached_input), (12, 100, 0));
        // Exactly one frame is the usage-only chunk, the one before [DONE].
        let usage_only: Vec<usize> = verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| **v == FrameVerdict::UsageOnly)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(usage_only, [verdicts.len() - 2]);
        let (u, verdicts) = stream_usage(Format::OpenAiChat, "openai/chat_stream_plain.sse");
        assert!(u.is_zero());
        assert!(verdicts.iter().all(|v| *v == FrameVerdict::Forward));
    }

    #[test]
    fn anthropic_json_adds_cache_tokens_back() {
        let u = usage_from_json(
            Format::Anthropic,
            &fixture("anthropic/messages_cache_read.json"),
        )
        .unwrap();
        assert_eq!(u.cached_input, 2055);
        assert_eq!(u.input, 11 + 2055 + u.cache_creation_input);
    }

    #[test]
    fn anthropic_stream_combines_start_and_delta() {
        let (u, _) = stream_usage(Format::Anthropic, "anthropic/messages_stream_plain.sse");
        assert_eq!(u.input, 770);
        assert!(u.output > 8, "output comes from message_delta: {u:?}");
        let (u, _) = stream_usage(
            Format::Anthropic,
            "anthropic/messages_stream_cache_read.sse",
        );
        assert!(u.cached_input > 0, "{u:?}");
    }

    #[test]
    fn gemini_and_responses() {
        let u = usage_from_json(
            Format::Gemini,
            &fixture("gemini/generate_content_cached_tokens.json"),
        )
        .unwrap();
        assert!(u.cached_input > 0 && u.input >= u.cached_input, "{u:?}");
        let (u, _) = stream_usage(Format::Gemini, "gemini/stream_generate_content.sse");
        assert!(u.input > 0 && u.output > 0, "{u:?}");
        let u = usage_from_json(
            Format::OpenAiResponses,
            &fixture("openai_responses/cached_tokens.json"),
        )
        .unwrap();
        assert!(u.cached_input > 0, "{u:?}");
        let (u, _) = stream_usage(Format::OpenAiResponses, "openai_responses/stream_text.sse");
        assert!(u.input > 0 && u.output > 0, "{u:?}");
    }

    #[test]
    fn only_usage_objects_are_parsed() {
        assert!(carries_usage(
            b"data: {\"usage\": {\"prompt_tokens\":1}}\n\n"
        ));
        assert!(carries_usage(
            b"data: {\"usageMetadata\":{\"promptTokenCount\":1}}\r\n\r\n"
        ));
        assert!(carries_usage(
            b"data: {\"a\":\"usage\",\"usage\" :\n {}}\n\n"
        ));
        assert!(!carries_usage(b"data: {\"choices\":[],\"usage\":null}\n\n"));
        assert!(!carries_usage(b"data: {\"text\":\"usage: {\"}\n\n"));
        assert!(!carries_usage(b"data: {\"usages\":{}}\n\n"));
    }

    #[test]
    fn reading_usage_from_its_key_agrees_with_parsing_everything() {
        let mut checked = 0;
        for (name, format, body) in crate::format::recorded("json") {
            let whole = usage_from_whole_json(format, &body);
            if whole.is_some_and(|u| !u.is_zero()) {
                assert_eq!(usage_from_json(format, &body), whole, "{name}");
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked}");
    }

    #[test]
    fn chat_usage_read_by_hand_is_what_serde_reads_or_left_to_it() {
        let serde =
            |o: &str| first_value::<ChatUsage>(o.as_bytes()).map(|u| openai_chat::usage_from(&u));
        for object in [
            r#"{"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
                "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 4, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}, "x": 1"#,
            r#"{"prompt_tokens":5,"completion_tokens":0,"prompt_tokens_details":{"cache_write_tokens":2}}"#,
            r#"{}"#,
            r#"{"completion_tokens": 18446744073709551615}"#,
        ] {
            assert_eq!(
                chat_usage_quick(object.as_bytes()),
                serde(object),
                "{object}"
            );
            assert!(chat_usage_quick(object.as_bytes()).is_some(), "{object}");
        }
        for object in [
            r#"{"prompt_tokens": null}"#,
            r#"{"prompt_tokens": 1.0}"#,
            r#"{"prompt_tokens": -1}"#,
            r#"{"prompt_tokens": 1, "prompt_tokens": 2}"#,
            r#"{"prompt_tokens": 18446744073709551616}"#,
            r#"{"prompt_tokens_details": null, "prompt_tokens": 4}"#,
            r#"{"service_tier": "default", "prompt_tokens": 4}"#,
            r#"{"prompt_tokens": 4,}"#,
            r#"{"prompt_tokens" 4}"#,
            r#"{"prompt_tokens": 4"#,
            r#"{"prompt_tokens": 01}"#,
            r#"{"total_tokens": 1, "total_tokens": 1}"#,
            r#"{"completion_tokens_details": {}, "completion_tokens_details": {}}"#,
            "{\"pr\u{1}\": 1}",
            r#"{"prompt\u005ftokens": 1}"#,
            "{\"pr\u{e9}\": 1}",
        ] {
            assert_eq!(chat_usage_quick(object.as_bytes()), None, "{object}");
        }
    }

    #[test]
    fn garbage_is_not_usage() {
        assert_eq!(usage_from_json(Format::OpenAiChat, b"not json"), None);
        let mut tap = StreamUsage::new(Format::OpenAiChat);
        assert_eq!(
            tap.observe(b"data: {\"usage\": broken\n\n"),
            FrameVerdict::Forward
        );
        assert!(!tap.seen());
    }
}
