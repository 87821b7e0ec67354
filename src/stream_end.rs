//! Where a stream of each format ends: its last event, read by structure.
//!
//! Several decisions hang on it: whether a stream that ended with its connection was whole
//! (accounting), whether a client that hung up had its whole answer (the relay), whether a
//! stream is an answer to keep (the cache). Each is a decision about billing or about what
//! other clients are served, so a model's output or a client's own request must not be able
//! to fake it. Searching a frame for a quoted name is not enough: a text delta that is
//! exactly `error`, a tool the client named `message_stop`, or a function call whose
//! arguments have a `finishReason` key all put the quoted name in a frame. So the end is
//! read from what the frame is: its `event:` field (a JSON string cannot hold a line
//! break), a `data:` that is exactly `[DONE]`, or a top-level member of its JSON. A quoted
//! name only says that parsing the frame is worth it.

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::format::Format;
use crate::sse::Event;

/// How a stream's last event ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The provider finished its answer (its usage, where it gives one, has been sent).
    Done,
    /// The provider ended the stream with an error.
    Failed,
}

/// How `frame` (one SSE frame of a stream of `format`) ends the stream, if it does.
pub fn stream_end(format: Format, frame: &[u8]) -> Option<StreamEnd> {
    let event = Event::parse(frame);
    // Gemini's error object is not an SSE event: the frame is that JSON.
    let json: &[u8] = match (&event.data, event.bare) {
        (Some(data), _) => data,
        (None, Some(_)) => frame,
        (None, None) => b"",
    };
    let has = |needle: &[u8]| memchr::memmem::find(json, needle).is_some();
    // An `error` event ends a stream of any format with its error (chat-compatible
    // servers send them too).
    if event.event == Some(b"error") {
        return Some(StreamEnd::Failed);
    }
    match format {
        Format::OpenAiChat => {
            if json.trim_ascii() == b"[DONE]" {
                return Some(StreamEnd::Done);
            }
            // An error chunk, OpenAI's (`{"error": …}`), an older vLLM's
            // (`{"object": "error", …}`) or a typed one (`{"type": "error", …}`).
            if !has(b"\"error\"") {
                return None;
            }
            let top = Top::parse(json)?;
            (top.error.is_some()
                || top.object.as_deref() == Some("error")
                || top.kind.as_deref() == Some("error"))
            .then_some(StreamEnd::Failed)
        }
        Format::Anthropic => match event.event {
            Some(b"message_stop") => Some(StreamEnd::Done),
            Some(b"error") => Some(StreamEnd::Failed),
            Some(_) => None,
            // A server that sends data lines only: the event's `type`.
            None if has(b"\"message_stop\"") || has(b"\"error\"") => {
                match Top::parse(json)?.kind.as_deref()? {
                    "message_stop" => Some(StreamEnd::Done),
                    "error" => Some(StreamEnd::Failed),
                    _ => None,
                }
            }
            None => None,
        },
        Format::OpenAiResponses => match event.event {
            Some(name) => responses_end(name),
            None if has(b"\"response.completed\"")
                || has(b"\"response.incomplete\"")
                || has(b"\"response.failed\"")
                || has(b"\"error\"") =>
            {
                responses_end(Top::parse(json)?.kind.as_deref()?.as_bytes())
            }
            None => None,
        },
        // No last event: the chunk that gives a candidate's finish reason is the last, or
        // the error object Gemini appends to a failing stream.
        Format::Gemini => {
            if !has(b"\"finishReason\"") && !has(b"\"error\"") {
                return None;
            }
            let top = Top::parse(json)?;
            if top.error.is_some() {
                return Some(StreamEnd::Failed);
            }
            top.candidates?
                .iter()
                .any(|c| c.finish_reason.is_some())
                .then_some(StreamEnd::Done)
        }
    }
}

/// Whether `frame` ends a stream of `format` with a whole answer: a successful end, and
/// not a Responses answer cut at `max_output_tokens` (which ends its stream, usage and
/// all, but is no answer to keep).
pub fn whole_answer(format: Format, frame: &[u8]) -> bool {
    if stream_end(format, frame) != Some(StreamEnd::Done) {
        return false;
    }
    if format != Format::OpenAiResponses {
        return true;
    }
    let event = Event::parse(frame);
    match event.event {
        Some(name) => name != b"response.incomplete",
        // Data lines only: the event's `type`, which said the stream ended.
        None => Top::parse(event.data())
            .and_then(|top| top.kind)
            .is_none_or(|kind| kind != "response.incomplete"),
    }
}

/// A Responses stream's end by its event's name. An incomplete response (its output cut at
/// `max_output_tokens`) is a finished stream with its usage.
fn responses_end(name: &[u8]) -> Option<StreamEnd> {
    match name {
        b"response.completed" | b"response.incomplete" => Some(StreamEnd::Done),
        b"response.failed" | b"error" => Some(StreamEnd::Failed),
        _ => None,
    }
}

/// Whether `bytes` (whole frames, as a stream is written) ends with the event that
/// finishes a stream of `format`.
pub fn ends_done(format: Format, bytes: &[u8]) -> bool {
    let frame = last_frame(bytes);
    if frame.is_empty() {
        return false;
    }
    // Asked of every batch a client is sent: a chat stream's end is its `[DONE]`, and no
    // error chunk is worth parsing for it.
    if format == Format::OpenAiChat {
        return Event::parse(frame).data().trim_ascii() == b"[DONE]";
    }
    stream_end(format, frame) == Some(StreamEnd::Done)
}

/// The last frame of `bytes`: what follows its last blank line (those at its very end
/// aside), comment-only frames (`: keep-alive`) passed over.
pub fn last_frame(bytes: &[u8]) -> &[u8] {
    let mut body = bytes.trim_ascii_end();
    loop {
        let frame = &body[frame_start(body)..];
        if is_event(frame) || frame.len() == body.len() {
            return frame;
        }
        body = body[..body.len() - frame.len()].trim_ascii_end();
    }
}

/// Whether `frame` holds a field: neither blank nor only comments (`: keep-alive`).
pub fn is_event(frame: &[u8]) -> bool {
    frame
        .split(|&b| b == b'\n')
        .any(|line| !line.trim_ascii().is_empty() && !line.starts_with(b":"))
}

/// Where the last frame of `body` (no blank line at its end) starts: after its last blank
/// line, a line feed, an optional carriage return, a line feed.
fn frame_start(body: &[u8]) -> usize {
    let mut end = body.len();
    while let Some(at) = memchr::memrchr(b'\n', &body[..end]) {
        let before = &body[..at];
        if before
            .strip_suffix(b"\r")
            .unwrap_or(before)
            .ends_with(b"\n")
        {
            return at + 1;
        }
        end = at;
    }
    0
}

/// The top-level members of an event's JSON that say whether it ends the stream.
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    object: Option<std::borrow::Cow<'a, str>>,
    /// `null` reads as absent.
    #[serde(default)]
    error: Option<IgnoredAny>,
    #[serde(default)]
    candidates: Option<Vec<Candidate>>,
}

#[derive(Deserialize)]
struct Candidate {
    #[serde(rename = "finishReason", default)]
    finish_reason: Option<IgnoredAny>,
}

impl<'a> Top<'a> {
    fn parse(json: &'a [u8]) -> Option<Top<'a>> {
        serde_json::from_slice(json).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frames(bytes: &[u8]) -> Vec<Bytes> {
        let mut frames = crate::sse::frames_of(bytes);
        frames.retain(|f| !f.trim_ascii().is_empty());
        frames
    }

    /// Every recorded stream: its last frame ends it (a failure for the recorded errors),
    /// no frame before does (up to an error event, after which Responses still sends its
    /// `response.failed`), and neither does any whole number of frames short of the end.
    #[test]
    fn only_the_recorded_streams_last_event_ends_them() {
        let mut seen = 0;
        for (name, format, whole) in crate::format::recorded("sse") {
            let frames = frames(&whole);
            let (last, before) = frames.split_last().unwrap();
            let failure = name.contains("error") || name.contains("failed");
            let expected = if failure {
                StreamEnd::Failed
            } else {
                StreamEnd::Done
            };
            assert_eq!(stream_end(format, last), Some(expected), "{name}: {last:?}");
            assert_eq!(ends_done(format, &whole), !failure, "{name}");
            // This recorded Gemini failure (a hand-edited mock of the Firebase SDKs)
            // marks every chunk finished before its error.
            let before = if name.ends_with("stream_error_mid_stream.sse") {
                &[]
            } else {
                before
            };
            let mut prefix = Vec::new();
            for frame in before {
                if Event::parse(frame).event == Some(b"error") {
                    break;
                }
                assert_eq!(stream_end(format, frame), None, "{name}: {frame:?}");
                prefix.extend_from_slice(frame);
                assert!(!ends_done(format, &prefix), "{name}");
            }
            seen += 1;
        }
        assert!(seen >= 30, "{seen} streams");
    }

    /// What a model writes or a client asks for can put a last event's quoted name in a
    /// frame; it never ends the stream.
    #[test]
    fn names_in_text_tools_or_arguments_end_nothing() {
        let chat = |v: serde_json::Value| format!("data: {v}\n\n");
        let cases = [
            (
                Format::OpenAiChat,
                chat(serde_json::json!({"choices": [{"delta": {"content": "error"}}]})),
            ),
            (
                Format::OpenAiChat,
                chat(serde_json::json!({"choices": [{"delta": {"content": "data: [DONE]"}}]})),
            ),
            (
                Format::OpenAiChat,
                chat(serde_json::json!({"choices": [{"delta": {"tool_calls": [
                    {"index": 0, "function": {"name": "error", "arguments": ""}}]}}]})),
            ),
            (
                Format::Anthropic,
                format!(
                    "event: content_block_start\ndata: {}\n\n",
                    serde_json::json!({"type": "content_block_start", "index": 1,
                        "content_block": {"type": "tool_use", "id": "t", "name": "message_stop", "input": {}}})
                ),
            ),
            (
                Format::Anthropic,
                chat(serde_json::json!({"type": "content_block_delta",
                    "delta": {"type": "text_delta", "text": "message_stop"}})),
            ),
            (
                Format::Gemini,
                chat(serde_json::json!({"candidates": [{"content": {"parts": [
                    {"functionCall": {"name": "f", "args": {"finishReason": 1, "error": 2}}}]}}]})),
            ),
            (
                Format::OpenAiResponses,
                chat(serde_json::json!({"type": "response.created",
                    "response": {"instructions": "response.completed", "error": null}})),
            ),
        ];
        for (format, frame) in cases {
            assert_eq!(stream_end(format, frame.as_bytes()), None, "{frame}");
            assert!(!ends_done(format, frame.as_bytes()), "{frame}");
        }
    }

    #[test]
    fn compatible_servers_spellings_of_the_end() {
        for done in [
            "data:[DONE]\n\n",
            "data: [DONE]\r\n\r\n",
            "data: [DONE]  \n\n",
        ] {
            assert!(ends_done(Format::OpenAiChat, done.as_bytes()), "{done:?}");
        }
        let vllm = "data: {\"object\":\"error\",\"message\":\"x\",\"code\":400}\n\n";
        assert_eq!(
            stream_end(Format::OpenAiChat, vllm.as_bytes()),
            Some(StreamEnd::Failed)
        );
        // Data lines only, the event's type telling.
        let anthropic = "data: {\"type\":\"message_stop\"}\n\n";
        assert!(ends_done(Format::Anthropic, anthropic.as_bytes()));
        let responses = "data: {\"type\":\"response.completed\",\"response\":{}}\n\n";
        assert!(ends_done(Format::OpenAiResponses, responses.as_bytes()));
        // An answer cut at its output limit ends its stream but is no whole answer.
        assert!(whole_answer(Format::OpenAiResponses, responses.as_bytes()));
        for incomplete in [
            "data: {\"type\":\"response.incomplete\",\"response\":{}}\n\n",
            "event: response.incomplete\ndata: {}\n\n",
        ] {
            assert!(ends_done(Format::OpenAiResponses, incomplete.as_bytes()));
            assert!(!whole_answer(
                Format::OpenAiResponses,
                incomplete.as_bytes()
            ));
        }
        // An `event:` line without its space.
        assert!(ends_done(
            Format::Anthropic,
            b"event:message_stop\ndata: {}\n\n"
        ));
        assert!(!ends_done(Format::OpenAiChat, b"\n\n"));
        assert!(!ends_done(Format::OpenAiChat, b""));
    }

    #[test]
    fn the_last_frame_is_after_the_last_blank_line() {
        assert_eq!(last_frame(b"data: a\n\ndata: b\n\n"), b"data: b");
        assert_eq!(
            last_frame(b"data: a\r\n\r\nevent: x\r\ndata: b\r\n\r\n"),
            b"event: x\r\ndata: b"
        );
        assert_eq!(last_frame(b"data: a"), b"data: a");
        assert_eq!(last_frame(b"\n\n"), b"");
        // Comments after the last event are no frame of their own.
        assert_eq!(
            last_frame(b"data: [DONE]\n\n: keep-alive\n\n"),
            b"data: [DONE]"
        );
        assert_eq!(last_frame(b": a\n\n: b\n\n"), b": a");
        assert!(ends_done(
            Format::OpenAiChat,
            b"data: [DONE]\r\n\r\n:\r\n\r\n"
        ));
    }
}
