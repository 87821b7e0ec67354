//! `budget.on_exceed: cut`: a stream whose running cost outgrows what its budget had left
//! is ended there, with the client format's own finish, as if the model had hit its
//! output cap: OpenAI Chat a last chunk with `finish_reason: "length"` and `[DONE]`;
//! Anthropic the open block's stop, `message_delta` with `stop_reason: "max_tokens"` and
//! `message_stop`; Gemini a last chunk with `finishReason: "MAX_TOKENS"`; Responses
//! `response.incomplete` with `incomplete_details.reason: "max_output_tokens"`.
//!
//! It reads the stream as the client receives it (after translation), so one set of
//! finishes serves passthrough and translated streams alike. The running cost is the
//! prompt's reserved price plus one output token per event delivered, the same estimate a
//! cut stream is settled to.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::format::Format;
use crate::sse::{Event, SseScanner};
use crate::stream_end::{stream_end, StreamEnd};

/// A stream watched against its allowance.
pub struct BudgetCut {
    /// The most this request may cost (USD).
    pub allowance: f64,
    /// The prompt's reserved price.
    pub input_usd: f64,
    /// The price of one output token.
    pub output_usd: f64,
    format: Format,
    scanner: SseScanner,
    frames: Vec<Bytes>,
    events: u64,
    /// What the finish needs to know of the stream so far.
    seen: Seen,
    /// The stream was ended here.
    pub fired: bool,
}

#[derive(Default)]
struct Seen {
    /// OpenAI Chat: the chunks' `id`, `created`, `model`.
    chunk: Option<Value>,
    /// Anthropic: the index of the content block still open.
    open_block: Option<u64>,
    /// Responses: the response so far, its items and their text.
    responses: ResponsesSoFar,
    /// Gemini: the model version its chunks name.
    model_version: Option<Value>,
    /// The line ending the stream's frames use (Gemini writes `\r\n`).
    crlf: bool,
    started: bool,
    /// The stream's own last event (or an error) went by: nothing is left to cut.
    terminal: bool,
}

/// What a Responses stream has said so far, enough to close it properly: the response of
/// `response.created`, each output item with the text or arguments streamed into it, the
/// last sequence number. Held up to [`RESPONSES_KEPT`] bytes of text.
#[derive(Default)]
struct ResponsesSoFar {
    response: Option<Value>,
    sequence: u64,
    items: Vec<Item>,
    kept: usize,
    /// More text than is kept: the stream is ended as failed, not as a truncated answer.
    overflow: bool,
}

struct Item {
    output_index: u64,
    item: Value,
    text: String,
    done: bool,
}

/// The text of a Responses stream held to close its open items when it is cut.
const RESPONSES_KEPT: usize = 1 << 20;

impl ResponsesSoFar {
    fn observe(&mut self, kind: &str, mut value: Value) {
        if let Some(n) = value["sequence_number"].as_u64() {
            self.sequence = n;
        }
        let index = value["output_index"].as_u64();
        match kind {
            "response.created" => self.response = Some(value["response"].take()),
            "response.output_item.added" => self.items.push(Item {
                output_index: index.unwrap_or(self.items.len() as u64),
                item: value["item"].take(),
                text: String::new(),
                done: false,
            }),
            "response.output_text.delta" | "response.function_call_arguments.delta" => {
                let delta = value["delta"].as_str().unwrap_or_default();
                if self.kept + delta.len() > RESPONSES_KEPT {
                    self.overflow = true;
                    return;
                }
                if let Some(item) = self
                    .items
                    .iter_mut()
                    .find(|i| Some(i.output_index) == index)
                {
                    self.kept += delta.len();
                    item.text.push_str(delta);
                }
            }
            "response.output_item.done" => {
                if let Some(item) = self
                    .items
                    .iter_mut()
                    .find(|i| Some(i.output_index) == index)
                {
                    item.item = value["item"].take();
                    item.done = true;
                    self.kept -= item.text.len();
                    item.text = String::new();
                }
            }
            _ => {}
        }
    }

    /// Closes every open item and ends the response as incomplete (or, past what could be
    /// kept, as failed).
    fn finish(&self, named: &dyn Fn(&str, Value) -> String) -> String {
        let mut sequence = self.sequence;
        let mut next = || {
            sequence += 1;
            sequence
        };
        let mut response = self.response.clone().unwrap_or_else(|| json!({}));
        if self.overflow {
            response["status"] = json!("failed");
            response["error"] = json!({
                "code": "insufficient_quota",
                "message": "the budget ran out during this response",
            });
            return named(
                "response.failed",
                json!({"type": "response.failed", "sequence_number": next(), "response": response}),
            );
        }
        let mut out = String::new();
        let mut output = Vec::with_capacity(self.items.len());
        for open in &self.items {
            if open.done {
                output.push(open.item.clone());
                continue;
            }
            let (id, index) = (open.item["id"].clone(), open.output_index);
            let mut item = open.item.clone();
            item["status"] = json!("incomplete");
            match item["type"].as_str() {
                Some("message") => {
                    let part = json!({"type": "output_text", "text": open.text, "annotations": []});
                    out += &named(
                        "response.output_text.done",
                        json!({
                            "type": "response.output_text.done", "sequence_number": next(),
                            "item_id": id, "output_index": index, "content_index": 0,
                            "text": open.text,
                        }),
                    );
                    out += &named(
                        "response.content_part.done",
                        json!({
                            "type": "response.content_part.done", "sequence_number": next(),
                            "item_id": id, "output_index": index, "content_index": 0,
                            "part": part,
                        }),
                    );
                    item["content"] = json!([part]);
                }
                Some("function_call") => {
                    out += &named(
                        "response.function_call_arguments.done",
                        json!({
                            "type": "response.function_call_arguments.done",
                            "sequence_number": next(), "item_id": id, "output_index": index,
                            "arguments": open.text,
                        }),
                    );
                    item["arguments"] = json!(open.text);
                }
                _ => {}
            }
            out += &named(
                "response.output_item.done",
                json!({
                    "type": "response.output_item.done", "sequence_number": next(),
                    "output_index": index, "item": item,
                }),
            );
            output.push(item);
        }
        response["status"] = json!("incomplete");
        response["incomplete_details"] = json!({"reason": "max_output_tokens"});
        response["output"] = Value::Array(output);
        out += &named(
            "response.incomplete",
            json!({
                "type": "response.incomplete", "sequence_number": next(), "response": response,
            }),
        );
        out
    }
}

impl BudgetCut {
    pub fn new(
        format: Format,
        allowance: f64,
        input_usd: f64,
        output_usd: f64,
        max_event: usize,
    ) -> Self {
        BudgetCut {
            allowance,
            input_usd,
            output_usd,
            format,
            scanner: SseScanner::with_limit(max_event),
            frames: Vec::new(),
            events: 0,
            seen: Seen::default(),
            fired: false,
        }
    }

    /// Passes `body` on event by event; once the running cost is past the allowance, the
    /// rest is dropped and the finish put in its place. Returns whether it fired.
    pub fn filter(&mut self, body: &mut Vec<Bytes>, end_of_stream: bool) -> bool {
        if self.fired {
            body.clear();
            return false;
        }
        let mut out = Vec::with_capacity(body.len());
        for piece in std::mem::take(body) {
            self.frames.clear();
            // An event too large for the scanner goes on whole and unwatched: the
            // translation and accounting taps, which share the limit, end such a stream.
            if self.scanner.feed(piece.clone(), &mut self.frames).is_err() {
                out.push(piece);
                continue;
            }
            for frame in std::mem::take(&mut self.frames) {
                self.observe(&frame);
                out.push(frame);
                if self.over() {
                    out.push(self.finish());
                    self.fired = true;
                    *body = out;
                    return true;
                }
            }
        }
        if end_of_stream {
            if let Some(tail) = self.scanner.finish() {
                out.push(tail);
            }
        }
        *body = out;
        false
    }

    /// Events delivered so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    fn over(&self) -> bool {
        !self.seen.terminal
            && self.input_usd + self.events as f64 * self.output_usd > self.allowance
    }

    fn observe(&mut self, frame: &Bytes) {
        let event = Event::parse(frame);
        let data = event.data();
        if data.is_empty() {
            return;
        }
        if !self.seen.started {
            self.seen.started = true;
            self.seen.crlf = frame.ends_with(b"\r\n\r\n");
        }
        let has = |needle: &[u8]| memchr::memmem::find(data, needle).is_some();
        // Only content counts as a delivered token; the stream's own end (or the provider's
        // error) means there is nothing left to cut.
        match self.format {
            Format::OpenAiChat => {
                // An error read by structure: a delta that is the text `error`, or a tool
                // of that name, ends nothing.
                if data == b"[DONE]"
                    || has(b"\"finish_reason\":\"")
                    || (has(b"\"error\"")
                        && stream_end(Format::OpenAiChat, frame) == Some(StreamEnd::Failed))
                {
                    self.seen.terminal = true;
                }
                if has(b"\"delta\"") {
                    self.events += 1;
                }
                if self.seen.chunk.is_none() {
                    if let Ok(value) = serde_json::from_slice::<Value>(data) {
                        self.seen.chunk = Some(json!({
                            "id": value["id"],
                            "created": value["created"],
                            "model": value["model"],
                        }));
                    }
                }
            }
            Format::Anthropic => {
                if has(b"content_block_delta") {
                    self.events += 1;
                    return;
                }
                if has(b"\"type\":\"message_stop\"")
                    || has(b"\"stop_reason\":\"")
                    || has(b"\"type\":\"error\"")
                {
                    self.seen.terminal = true;
                }
                if has(b"content_block_st") {
                    if let Ok(value) = serde_json::from_slice::<Value>(data) {
                        match value["type"].as_str() {
                            Some("content_block_start") => {
                                self.seen.open_block = value["index"].as_u64()
                            }
                            Some("content_block_stop") => self.seen.open_block = None,
                            _ => {}
                        }
                    }
                }
            }
            Format::Gemini => {
                if has(b"\"candidates\"") {
                    self.events += 1;
                }
                // By structure: a function call's arguments may have either key.
                if (has(b"\"finishReason\"") || has(b"\"error\""))
                    && stream_end(Format::Gemini, frame).is_some()
                {
                    self.seen.terminal = true;
                }
                if self.seen.model_version.is_none() {
                    if let Ok(value) = serde_json::from_slice::<Value>(data) {
                        self.seen.model_version = value.get("modelVersion").cloned();
                    }
                }
            }
            Format::OpenAiResponses => {
                let Ok(value) = serde_json::from_slice::<Value>(data) else {
                    return;
                };
                let kind = value["type"].as_str().unwrap_or_default().to_owned();
                let kind = kind.as_str();
                if kind.ends_with(".delta") {
                    self.events += 1;
                }
                if matches!(
                    kind,
                    "response.completed" | "response.incomplete" | "response.failed" | "error"
                ) {
                    self.seen.terminal = true;
                }
                self.seen.responses.observe(kind, value);
            }
        }
    }

    /// The client format's own ending of a generation stopped at its output cap.
    fn finish(&self) -> Bytes {
        let end = if self.seen.crlf { "\r\n\r\n" } else { "\n\n" };
        let data = |value: Value| format!("data: {value}{end}");
        let named = |name: &str, value: Value| format!("event: {name}\ndata: {value}{end}");
        let text = match self.format {
            Format::OpenAiChat => {
                let mut chunk = self.seen.chunk.clone().unwrap_or_else(|| json!({}));
                chunk["object"] = json!("chat.completion.chunk");
                chunk["choices"] = json!([{"index": 0, "delta": {}, "finish_reason": "length"}]);
                format!("{}data: [DONE]{end}", data(chunk))
            }
            Format::Anthropic => {
                let mut out = String::new();
                if let Some(index) = self.seen.open_block {
                    out += &named(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": index}),
                    );
                }
                out += &named(
                    "message_delta",
                    json!({
                        "type": "message_delta",
                        "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
                        "usage": {"output_tokens": self.events},
                    }),
                );
                out += &named("message_stop", json!({"type": "message_stop"}));
                out
            }
            Format::Gemini => {
                let mut chunk = json!({
                    "candidates": [{
                        "content": {"role": "model", "parts": [{"text": ""}]},
                        "finishReason": "MAX_TOKENS",
                        "index": 0,
                    }],
                });
                if let Some(version) = &self.seen.model_version {
                    chunk["modelVersion"] = version.clone();
                }
                data(chunk)
            }
            Format::OpenAiResponses => self.seen.responses.finish(&named),
        };
        Bytes::from(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: Format, stream: &str, allowance_events: u64) -> (String, bool) {
        // $1 per event, nothing for the prompt.
        let mut cut = BudgetCut::new(format, allowance_events as f64, 0.0, 1.0, 1 << 20);
        let mut body = vec![Bytes::from(stream.to_owned())];
        let fired = cut.filter(&mut body, true);
        let text: Vec<u8> = body.iter().flat_map(|b| b.to_vec()).collect();
        (String::from_utf8(text).unwrap(), fired)
    }

    #[test]
    fn openai_chat_ends_with_length_and_done() {
        let stream = "data: {\"id\":\"c1\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n\
                      data: {\"id\":\"c1\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n\
                      data: {\"id\":\"c1\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"c\"}}]}\n\n\
                      data: [DONE]\n\n";
        let (out, fired) = run(Format::OpenAiChat, stream, 1);
        assert!(fired);
        assert!(out.contains("\"content\":\"b\""), "{out}");
        assert!(!out.contains("\"content\":\"c\""), "{out}");
        assert!(out.contains("\"finish_reason\":\"length\""), "{out}");
        assert!(out.contains("\"id\":\"c1\""), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        let (out, fired) = run(Format::OpenAiChat, stream, 10);
        assert!(!fired);
        assert_eq!(out, stream);
    }

    #[test]
    fn anthropic_closes_its_open_block_then_the_message() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n\
                      event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
                      event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\n\n\
                      event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"b\"}}\n\n";
        let (out, fired) = run(Format::Anthropic, stream, 0);
        assert!(fired);
        let tail = &out[out.find("\"text\":\"a\"").unwrap()..];
        assert!(!tail.contains("\"text\":\"b\""), "{out}");
        let stop = tail.find("content_block_stop").unwrap();
        let delta = tail.find("\"stop_reason\":\"max_tokens\"").unwrap();
        let end = tail.find("message_stop").unwrap();
        assert!(stop < delta && delta < end, "{out}");
    }

    #[test]
    fn nothing_is_cut_after_the_streams_own_end() {
        let stream = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\n\
                      data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"delta\":1}}\n\n\
                      data: [DONE]\n\n";
        let (out, fired) = run(Format::OpenAiChat, stream, 0);
        assert!(!fired);
        assert_eq!(out, stream);
    }

    #[test]
    fn gemini_and_responses_finish_in_their_own_words() {
        let gemini = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"modelVersion\":\"g\"}\r\n\r\n\
                      data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]}}],\"modelVersion\":\"g\"}\r\n\r\n";
        let (out, fired) = run(Format::Gemini, gemini, 0);
        assert!(fired);
        assert!(out.ends_with("\"modelVersion\":\"g\"}\r\n\r\n"), "{out}");
        assert!(out.contains("\"finishReason\":\"MAX_TOKENS\""), "{out}");
        let responses = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[]}}\n\n\
                         event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}}\n\n\
                         event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hel\"}\n\n\
                         event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"lo\"}\n\n\
                         event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\" there\"}\n\n";
        let (out, fired) = run(Format::OpenAiResponses, responses, 1);
        assert!(fired);
        assert!(!out.contains(" there"), "{out}");
        // The open message is closed with what it said, then the response.
        let order = [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.incomplete",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|e| out.find(&format!("event: {e}")).expect(e))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{out}");
        assert!(out.contains("\"text\":\"Hello\""), "{out}");
        assert!(out.contains("\"sequence_number\":7"), "{out}");
        assert!(out.contains("\"reason\":\"max_output_tokens\""), "{out}");
        let incomplete = out.rsplit("data: ").next().unwrap().trim();
        let incomplete: Value = serde_json::from_str(incomplete).unwrap();
        assert_eq!(
            incomplete["response"]["output"][0]["content"][0]["text"],
            "Hello"
        );
        assert_eq!(incomplete["response"]["output"][0]["status"], "incomplete");
        assert!(out.contains("\"id\":\"resp_1\""), "{out}");
    }
}
