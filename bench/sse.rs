//! SSE framing throughput: `SseScanner` over realistic provider streams, cut the ways TCP
//! delivers them (one read, MSS-sized reads, tiny reads), and `Event::parse` per frame.
//!
//! Run: `cargo bench --bench sse` (criterion; HTML report in target/criterion/).
// The scanners here have no size limit, so `feed` cannot fail.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sira::sse::{Event, SseScanner};

/// An OpenAI chat stream as the API sends it with `include_usage` (what sira asks for):
/// role chunk, `n` content chunks, finish chunk, usage chunk, `[DONE]`; `"usage":null` on
/// every chunk but the usage one (tests/fixtures/openai/chat_stream_usage.sse).
pub fn openai_stream(n: usize) -> Vec<u8> {
    let head = r#"data: {"id":"chatcmpl-C4Hq5a6K3RaPMymUv70btQNYv6SvY","object":"chat.completion.chunk","created":1755137921,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":null,"choices":["#;
    let mut s = String::new();
    s.push_str(head);
    s.push_str(r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"finish_reason":null}],"usage":null,"obfuscation":"WuQNX"}"#);
    s.push_str("\n\n");
    for i in 0..n {
        s.push_str(head);
        s.push_str(&format!(
            r#"{{"index":0,"delta":{{"content":" word{i}"}},"finish_reason":null}}],"usage":null,"obfuscation":"IPio8"}}"#
        ));
        s.push_str("\n\n");
    }
    s.push_str(head);
    s.push_str(
        r#"{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null,"obfuscation":"t9"}"#,
    );
    s.push_str("\n\n");
    s.push_str(head);
    s.push_str(r#"],"usage":{"prompt_tokens":12,"completion_tokens":100,"total_tokens":112,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"t9"}"#);
    s.push_str("\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

/// An Anthropic stream (`event:` + `data:` lines): message_start, content_block_start, ping,
/// `n` deltas, content_block_stop, message_delta, message_stop.
pub fn anthropic_stream(n: usize) -> Vec<u8> {
    let mut s = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01PgicqXb8hKdXEPHm3LLTGF\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":27,\"output_tokens\":1}}}\n\n\
         event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
         event: ping\ndata: {\"type\": \"ping\"}\n\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" word{i}\"}}}}\n\n"
        ));
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
         event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":100}}\n\n\
         event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    s.into_bytes()
}

/// Gemini frames its events with CRLF.
fn crlf(lf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lf.len() * 11 / 10);
    for &b in lf {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn chunks(stream: &Bytes, size: usize) -> Vec<Bytes> {
    (0..stream.len())
        .step_by(size)
        .map(|start| stream.slice(start..(start + size).min(stream.len())))
        .collect()
}

fn framing(c: &mut Criterion) {
    let streams = [
        ("openai_100", Bytes::from(openai_stream(96))),
        ("anthropic_100", Bytes::from(anthropic_stream(94))),
        ("crlf_100", Bytes::from(crlf(&openai_stream(96)))),
    ];
    let mut group = c.benchmark_group("sse_framing");
    for (name, stream) in &streams {
        group.throughput(Throughput::Bytes(stream.len() as u64));
        // One read holding the whole stream (a burst); loopback-MSS-sized reads; 1460-byte
        // (Ethernet MSS) reads; 7-byte reads (the mock's `x-mock-split: bytes`), the worst
        // case for the carry buffer.
        for (label, size) in [
            ("whole", stream.len()),
            ("16k", 16 * 1024),
            ("1460", 1460),
            ("7", 7),
        ] {
            let parts = chunks(stream, size);
            group.bench_with_input(BenchmarkId::new(*name, label), &parts, |b, parts| {
                let mut frames = Vec::with_capacity(128);
                b.iter(|| {
                    let mut scanner = SseScanner::new();
                    let mut n = 0;
                    for part in parts {
                        frames.clear();
                        scanner
                            .feed(part.clone(), &mut frames)
                            .expect("unbounded scanner");
                        n += frames.len();
                    }
                    black_box(scanner.finish());
                    black_box(n)
                })
            });
        }
    }
    group.finish();
}

fn event_parse(c: &mut Criterion) {
    let stream = Bytes::from(anthropic_stream(1));
    let mut frames = Vec::new();
    SseScanner::new()
        .feed(stream, &mut frames)
        .expect("unbounded scanner");
    let delta = frames[3].clone();
    let openai = Bytes::from(openai_stream(1));
    let mut oframes = Vec::new();
    SseScanner::new()
        .feed(openai, &mut oframes)
        .expect("unbounded scanner");
    let content = oframes[1].clone();
    let mut group = c.benchmark_group("sse_event_parse");
    for (name, frame) in [("anthropic_delta", delta), ("openai_chunk", content)] {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(Event::parse(black_box(&frame))))
        });
    }
    group.finish();
}

criterion_group!(benches, framing, event_parse);
criterion_main!(benches);
