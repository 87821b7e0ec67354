//! Redaction of a streamed answer split into events at arbitrary bytes: never a panic, and
//! the text the client reads is exactly the whole answer redacted at once (mask mode, every
//! built-in); with two short patterns alone, whose values meet the held tail's bound, at
//! least everything the whole reading masks is masked. What this found is replayed from
//! `fuzz/known/` by every run.
#![no_main]

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use lua_free_filters::{Filter, FilterSpec, Memo};

/// Compiled once: the patterns take longer to build than a thousand inputs to run. Every
/// built-in (the longest hold), and two short patterns alone (a short hold: values meet the
/// tail's bound).
static FILTERS: LazyLock<[Arc<dyn Filter>; 2]> = LazyLock::new(|| {
    let build = |spec: &str| {
        serde_json::from_str::<FilterSpec>(spec)
            .expect("a valid spec")
            .build()
            .expect("the built-ins compile")
    };
    [
        build(r#"{"kind":"redact","on":["response"]}"#),
        build(r#"{"kind":"redact","on":["response"],"patterns":["credit-card","phone"]}"#),
    ]
});

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // Bit 4 of the first byte (which `pieces` reads modulo 16 for the cuts) picks the filter.
    let short = data.first().is_some_and(|b| b & 0x10 != 0);
    let filter = &FILTERS[usize::from(short)];
    let mut stream = filter
        .on_stream(&Memo::default())
        .expect("redaction follows streams");
    let mut out = Vec::new();
    let mut sent = String::new();
    for piece in common::pieces(data) {
        let Ok(text) = std::str::from_utf8(piece) else {
            return;
        };
        sent.push_str(text);
        let event = serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        if stream
            .on_event(Bytes::from(format!("data: {event}\n\n")), &mut out)
            .is_err()
        {
            return;
        }
    }
    stream.on_end(&mut out);
    let mut read = String::new();
    for frame in &out {
        let text = std::str::from_utf8(frame).expect("events stay UTF-8");
        let Some(data) = text.strip_prefix("data: ") else {
            continue;
        };
        let doc: serde_json::Value = serde_json::from_str(data.trim()).expect("events stay JSON");
        if let Some(piece) = doc
            .pointer("/choices/0/delta/content")
            .and_then(|v| v.as_str())
        {
            read.push_str(piece);
        }
    }
    // The whole answer, redacted at once, is what the client must have read.
    let whole = serde_json::json!({"choices": [{"message": {"content": sent}}]}).to_string();
    let expected = filter
        .on_response_body(whole.as_bytes(), &Memo::default())
        .expect("a JSON answer")
        .map(|b| serde_json::from_slice::<serde_json::Value>(&b).expect("JSON"))
        .map(|v| {
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|| sent.clone());
    if !short {
        assert_eq!(read, expected);
        return;
    }
    // A short hold: a value the tail's bound reaches goes out as found then, which may
    // differ from the whole answer's reading. Masking keeps every character's place, so
    // what must hold is that nothing the whole reading masks reaches the client.
    let (read, expected, sent): (Vec<char>, Vec<char>, Vec<char>) = (
        read.chars().collect(),
        expected.chars().collect(),
        sent.chars().collect(),
    );
    assert_eq!(read.len(), sent.len());
    for (i, (&whole, &original)) in expected.iter().zip(&sent).enumerate() {
        if whole == '*' && original != '*' {
            assert_eq!(read[i], '*', "a masked character reached the client at {i}");
        }
    }
});
