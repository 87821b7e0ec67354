//! Translation throughput: 1,000-event streams both ways between OpenAI Chat and Anthropic,
//! and a 100 KB OpenAI Chat request translated to Anthropic. Inputs are built outside the
//! measured loop by repeating recorded fixture events.

// A benchmark aborts on bad input; these lints target production code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sira::format::Format;
use sira::translate::{translate_request, RequestOptions, ResponseOptions, StreamTranslator};

const EVENTS: usize = 1_000;
/// Bytes per simulated TCP read.
const READ: usize = 4_096;

fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Frames of a fixture (LF-separated SSE).
fn frames(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|f| format!("{f}\n\n"))
        .collect()
}

/// First frame, `EVENTS` copies of the first frame matching `delta`, and the tail frames.
fn repeat_deltas(body: &str, delta: &str, tail_from: &str) -> Vec<u8> {
    let frames = frames(body);
    let head: Vec<&String> = frames.iter().take_while(|f| !f.contains(delta)).collect();
    let one = frames
        .iter()
        .find(|f| f.contains(delta))
        .expect("a delta frame");
    let tail_at = frames
        .iter()
        .position(|f| f.contains(tail_from))
        .expect("a tail frame");
    let mut out = String::new();
    head.iter().for_each(|f| out.push_str(f));
    (0..EVENTS).for_each(|_| out.push_str(one));
    frames[tail_at..].iter().for_each(|f| out.push_str(f));
    out.into_bytes()
}

fn reads(input: &[u8]) -> Vec<Bytes> {
    input.chunks(READ).map(Bytes::copy_from_slice).collect()
}

fn opts() -> ResponseOptions {
    ResponseOptions {
        model: "bench".into(),
        request_id: "req_bench".into(),
        created: 1_700_000_000,
    }
}

fn bench_stream(c: &mut Criterion, name: &str, from: Format, to: Format, input: Vec<u8>) {
    let chunks = reads(&input);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("stream", |b| {
        let mut out = BytesMut::with_capacity(input.len() * 2);
        b.iter(|| {
            out.clear();
            let mut t = StreamTranslator::new(from, to, opts());
            for chunk in &chunks {
                t.feed(chunk.clone(), &mut out).expect("valid stream");
            }
            t.finish(&mut out);
            out.len()
        })
    });
    group.finish();
}

fn streams(c: &mut Criterion) {
    let openai = repeat_deltas(
        &fixture("openai/chat_stream_plain.sse"),
        "\"content\":\"Hi\"",
        "\"finish_reason\":\"stop\"",
    );
    bench_stream(
        c,
        "openai_to_anthropic_1000_events",
        Format::OpenAiChat,
        Format::Anthropic,
        openai,
    );
    let anthropic = repeat_deltas(
        &fixture("anthropic/messages_stream_plain.sse"),
        "text_delta",
        "content_block_stop",
    );
    bench_stream(
        c,
        "anthropic_to_openai_1000_events",
        Format::Anthropic,
        Format::OpenAiChat,
        anthropic,
    );
}

fn request(c: &mut Criterion) {
    // A long conversation: the fixture's turns repeated until the body passes 100 KB.
    let base: serde_json::Value =
        serde_json::from_str(&fixture("openai/requests/chat_multiturn_developer.json"))
            .expect("fixture JSON");
    let turns = base["messages"].as_array().expect("messages").clone();
    let mut messages = vec![turns[0].clone()];
    let mut body = Vec::new();
    while body.len() < 100 * 1024 {
        messages.extend(turns[1..].iter().cloned());
        let mut req = base.clone();
        req["messages"] = serde_json::Value::Array(messages.clone());
        body = serde_json::to_vec(&req).expect("serializable");
    }
    let opts = RequestOptions {
        model: "claude",
        stream: true,
        default_max_tokens: 4096,
        legacy_max_tokens: false,
        prompt_cache: true,
        web_search: false,
        seal: sira::translate::Seal::fixed(),
    };
    let mut group = c.benchmark_group("openai_to_anthropic_request_100kb");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("request", |b| {
        b.iter(|| {
            translate_request(Format::OpenAiChat, Format::Anthropic, &body, &opts)
                .expect("valid request")
                .body
                .len()
        })
    });
    group.finish();
}

criterion_group!(benches, streams, request);
criterion_main!(benches);
