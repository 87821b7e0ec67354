use bytes::Bytes;
use serde_json::Value;

use super::super::raw::{plain_event, Ends};
use super::{ends_of, interrupts_nothing, Slot};
use crate::event::Frame;
use crate::Filter;

/// Events without a text delta as providers write them, and as they could: compact,
/// spaced, with several indexes, nested look-alikes.
const EVENTS: &[&str] = &[
    // OpenAI Chat: the finish, the usage, a finish with logprobs.
    r#"data: {"id":"c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    r#"data: {"id":"c","choices":[{"index":2,"delta":{},"finish_reason":"length"}]}"#,
    r#"data: {"id":"c","choices":[{"delta":{},"finish_reason":"stop"}]}"#,
    r#"data: {"id":"c","choices":[],"usage":{"prompt_tokens":29,"completion_tokens":96}}"#,
    r#"data: {"id":"c","choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]}"#,
    r#"data: {"id":"c","choices" : [{"index":1,"delta":{},"finish_reason":"stop"}]}"#,
    r#"data: {"id":"c","choices":[{"delta":{},"finish_reason":"stop","index" :1}]}"#,
    r#"data: {"id":"c","choices":[{"index":0,"delta":{}},{"index":1,"delta":{}}]}"#,
    r#"data: {"id":"c","choices":[{"index":0,"delta":{},"logprobs":{"content":[]}}]}"#,
    r#"data: {"id":"c","choices":[],"usage":{"index":3}}"#,
    r#"data: {"id":"index","choices":[{"delta":{},"finish_reason":"stop"}]}"#,
    // Anthropic: a block's end, the message's delta and end, pings.
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\": 1}",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}",
    "event: ping\ndata: {\"type\": \"ping\"}",
    "event: ping\ndata: {\"type\":\"ping\"}",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\"}}",
    // Gemini: a finish with and without an index.
    r#"data: {"candidates":[{"finishReason":"STOP","index":0}],"usageMetadata":{"totalTokenCount":9}}"#,
    r#"data: {"candidates":[{"finishReason":"STOP"}]}"#,
    // Responses: an item's end, the response's end.
    "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"output_index\":1,\"item\":{\"id\":\"m\",\"status\":\"completed\"}}",
    "event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"output_index\":0,\"text\":\"all of it\"}",
    // Not one JSON object.
    "data: [DONE]",
    "data: {\"a\":",
    "data: {\"id\":\"c\"}\ndata: {\"choices\":[]}",
    // Look-alikes: `data:` that starts no line, an index that is not the first choice's or
    // not at the top, a number that is not an integer, keys read by another name.
    ": data: {}",
    "event: data:{\"type\":\"x\"}",
    r#"data: {"index":3,"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
    r#"data: {"choices":[{"delta":{},"finish_reason":"stop"},{"index":3,"delta":{}}]}"#,
    r#"data: {"choices":[{"delta":{},"finish_reason":"stop","x":{"index":3}}]}"#,
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1.0}",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1e0}",
    r#"data: {"candidates":[{"finishReason":"STOP"}],"output_index":3}"#,
    r#"data: {"type":"x","index":0,"meta":{"output_index":3}}"#,
    r#"data: {"type":"x","meta":{"index":3}}"#,
    r#"data: {"type":"x","note":"a}b","meta":{"index":3}}"#,
    r#"data: {"x":{"choices":[{"index":3,"delta":{},"finish_reason":"stop"}]}}"#,
];

/// What a stream of `events` becomes under `filter`, its end included.
fn run(filter: &super::super::Redact, events: impl IntoIterator<Item = Bytes>) -> Vec<Bytes> {
    let mut stream = filter.on_stream(&crate::Memo::default()).unwrap();
    let mut out = Vec::new();
    for event in events {
        stream.on_event(event, &mut out).unwrap();
    }
    stream.on_end(&mut out);
    out
}

fn build(yaml: &str) -> super::super::Redact {
    serde_yaml::from_str::<super::super::RedactSpec>(yaml)
        .unwrap()
        .build()
        .unwrap()
}

fn frame(event: &str) -> Bytes {
    Bytes::from(format!("{event}\n\n"))
}

/// What the parsed path does with an event: `None` when it carries a text delta (then the
/// bytes' verdict must be `None` too), `Some(None)` when it ends nothing.
fn parsed_verdict(event: &Bytes) -> Option<Option<Ends>> {
    let Some(parsed) = Frame::parse(event) else {
        // No data field (a comment): nothing ends.
        return Some(None);
    };
    let Some(doc) = parsed.json() else {
        // `[DONE]` or not an object: every text ends.
        return Some(Some(Ends::Every));
    };
    if interrupts_nothing(&doc) {
        return Some(None);
    }
    if Slot::find(&doc).is_some() {
        return None;
    }
    Some(Some(ends_of(&doc)))
}

#[test]
fn an_event_read_in_its_bytes_ends_what_the_parsed_event_ends() {
    let mut read = 0;
    for event in EVENTS {
        let event = frame(event);
        let Some(bytes) = plain_event(&event) else {
            continue;
        };
        read += 1;
        assert_eq!(
            parsed_verdict(&event),
            Some(Some(bytes)),
            "{}",
            String::from_utf8_lossy(&event)
        );
    }
    // The common ones are read in their bytes: the finishes, the usage, the block ends.
    assert!(read >= 9, "only {read} events read in their bytes");
    for common in [0, 1, 2, 3, 11, 13, 14, 20, 21] {
        assert!(
            plain_event(&frame(EVENTS[common])).is_some(),
            "{}",
            EVENTS[common]
        );
    }
}

/// A value split by a finish of another choice, a spaced ping and a usage event, in a
/// stream whose deltas go the byte way: each text is still whole where it is judged.
#[test]
fn events_read_in_their_bytes_release_only_what_they_end() {
    let filter = build("patterns: [email]\non: [response]");
    let delta = |index: u64, text: &str| {
        frame(&format!(
            r#"data: {{"id":"c","choices":[{{"index":{index},"delta":{{"content":"{text}"}},"finish_reason":null}}]}}"#
        ))
    };
    let out = run(
        &filter,
        [
            delta(0, "mail jane@exa"),
            frame(r#"data: {"id":"c","choices":[{"index":1,"delta":{},"finish_reason":"stop"}]}"#),
            frame("event: ping\ndata: {\"type\": \"ping\"}"),
            delta(0, "mple.com now"),
            frame(r#"data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#),
            frame(r#"data: {"id":"c","choices":[],"usage":{"prompt_tokens":1}}"#),
        ],
    );
    assert_eq!(read_text(&out), "mail **************** now");
    // The events with nothing to change went out as they came.
    let usage = r#"data: {"id":"c","choices":[],"usage":{"prompt_tokens":1}}"#;
    assert!(out.iter().any(|e| e == &frame(usage)));
}

/// An operator's expression anchored to the text's edges (`^…$`) matches a string alone
/// but not the same string inside an event's bytes: such a filter parses every event.
#[test]
fn anchored_expressions_are_judged_on_each_string_alone() {
    let filter = build("patterns: [{name: code, regex: '^[A-Z]{3}-[0-9]{4}$'}]\non: [response]");
    let events = [
        r#"data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}],"note":"ABC-1234"}"#,
        r#"data: {"id":"c","choices":[{"index":0,"delta":{"content":"XYZ-9876"},"finish_reason":null}],"note":"ABC-1234"}"#,
        r#"data: {"id":"c","choices":[],"usage":{"prompt_tokens":1},"note":"ABC-1234"}"#,
    ];
    let out = run(&filter, events.map(frame));
    let all: Vec<Value> = out
        .iter()
        .filter_map(|e| Frame::parse(e).and_then(|f| f.json()))
        .collect();
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("ABC-1234"), "{text}");
}

/// The text a client reads from a stream's events.
fn read_text(out: &[Bytes]) -> String {
    out.iter()
        .filter_map(|e| {
            let mut doc = Frame::parse(e)?.json()?;
            let (slot, _) = Slot::find(&doc)?;
            Some(slot.text(&mut doc)?.clone())
        })
        .collect()
}

fn chat_delta(text: &str) -> Bytes {
    frame(&format!(
        r#"data: {{"id":"c","choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}]}}"#
    ))
}

#[test]
fn a_line_that_only_mentions_data_releases_nothing() {
    let filter = build("patterns: [email]\non: [response]");
    let out = run(
        &filter,
        [
            chat_delta("mail jane@exa"),
            frame(": data: {}"),
            frame("event: data:{\"type\":\"x\"}"),
            chat_delta("mple.com now"),
        ],
    );
    assert_eq!(read_text(&out), "mail **************** now");
}

#[test]
fn a_duplicate_text_key_is_no_decoy() {
    let filter = build("patterns: [email]\non: [response]");
    for first in [
        r#"data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"","content":"mail jane@exa"},"finish_reason":null}]}"#,
        r#"data: {"id":"c","choices":[{"index":0,"delta":{"content":"","content":"mail jane@exa"},"finish_reason":null}]}"#,
    ] {
        let out = run(&filter, [frame(first), chat_delta("mple.com now")]);
        let all = out
            .iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect::<String>();
        assert!(!all.contains("jane@exa"), "{all}");
    }
}

/// Events the following leaves alone still have their strings redacted: a ping with more
/// in it, a text delta without its text, data that is not JSON, a frame cut by lone CRs.
#[test]
fn every_event_is_redacted_whatever_its_shape() {
    let filter = build("patterns: [email]\non: [response]");
    for event in [
        "event: ping\ndata: {\"type\":\"ping\",\"note\":\"jane@example.com\"}",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\"},\"note\":\"jane@example.com\"}",
        "data: jane@example.com",
        "event: content_block_delta\rdata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"jane@example.com\"}}\r",
    ] {
        let out = run(&filter, [frame(event)]);
        let all = out.iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect::<String>();
        assert!(!all.contains("jane@example.com"), "{event:?} became {all:?}");
        assert!(all.contains("****"), "{event:?} became {all:?}");
    }
}

#[test]
fn a_stream_that_opens_too_many_texts_ends() {
    let filter = build("patterns: [email]\non: [response]");
    let mut stream = filter.on_stream(&crate::Memo::default()).unwrap();
    let mut out = Vec::new();
    let mut ended = false;
    for index in 0..300 {
        let event = frame(&format!(
            r#"data: {{"choices":[{{"index":{index},"delta":{{"content":"jane"}},"finish_reason":null}}]}}"#
        ));
        if stream.on_event(event, &mut out).is_err() {
            ended = true;
            break;
        }
    }
    assert!(ended, "300 held texts were kept");
}
