//! The per-request and per-event work sira adds to a proxied call, in isolation:
//! usage extraction per stream event and per JSON body, key lookup, model routing.
//!
//! Run: `cargo bench --bench hot_paths` (criterion; HTML report in target/criterion/).
// The scanner here has no size limit, so `feed` cannot fail.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use sira::accounting::{usage_from_json, StreamUsage};
use sira::auth::{authenticate, hash_key, parse_hash, KeyEntry, KeyTable};
use sira::format::Format;
use sira::glob::Glob;
use sira::models::{ModelRoute, ModelTable, Target};
use sira::provider::{Endpoint, Provider, ProviderKind, Timeouts};
use sira::sse::SseScanner;

const OPENAI_HEAD: &str = r#"data: {"id":"chatcmpl-C4Hq5a6K3RaPMymUv70btQNYv6SvY","object":"chat.completion.chunk","created":1755137921,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":null,"choices":["#;

fn frame(s: String) -> Bytes {
    Bytes::from(s)
}

/// One stream event of each kind sira's tap sees.
fn events() -> Vec<(&'static str, Format, Bytes)> {
    vec![
        // What OpenAI sends on every chunk once `include_usage` is on, which sira always
        // asks for on streams: the tap must not pay a JSON parse for `"usage":null`.
        (
            "openai_content_usage_null",
            Format::OpenAiChat,
            frame(format!(
                r#"{OPENAI_HEAD}{{"index":0,"delta":{{"content":" word"}},"finish_reason":null}}],"usage":null,"obfuscation":"IPio8"}}

"#
            )),
        ),
        (
            "openai_content_no_usage_key",
            Format::OpenAiChat,
            frame(format!(
                r#"{OPENAI_HEAD}{{"index":0,"delta":{{"content":" word"}},"finish_reason":null}}],"obfuscation":"IPio8"}}

"#
            )),
        ),
        (
            "openai_usage_chunk",
            Format::OpenAiChat,
            frame(format!(
                r#"{OPENAI_HEAD}],"usage":{{"prompt_tokens":12,"completion_tokens":100,"total_tokens":112,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"obfuscation":"t9"}}

"#
            )),
        ),
        (
            "anthropic_delta",
            Format::Anthropic,
            frame("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" word\"}}\n\n".into()),
        ),
        (
            "anthropic_message_delta",
            Format::Anthropic,
            frame("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":100}}\n\n".into()),
        ),
    ]
}

fn usage_per_event(c: &mut Criterion) {
    let mut group = c.benchmark_group("usage_per_event");
    for (name, format, frame) in events() {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(name, |b| {
            let mut tap = StreamUsage::new(format);
            b.iter(|| black_box(tap.observe(black_box(&frame))))
        });
    }
    group.finish();

    // A whole 100-event OpenAI stream through framing + tap, as relay_stream does it.
    let mut stream = String::new();
    for _ in 0..99 {
        stream.push_str(&format!(
            r#"{OPENAI_HEAD}{{"index":0,"delta":{{"content":" word"}},"finish_reason":null}}],"usage":null,"obfuscation":"IPio8"}}

"#
        ));
    }
    stream.push_str("data: [DONE]\n\n");
    let stream = Bytes::from(stream);
    let mut group = c.benchmark_group("stream_tap");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("openai_100_events_scan_and_observe", |b| {
        let mut frames = Vec::with_capacity(128);
        b.iter(|| {
            let mut scanner = SseScanner::new();
            let mut tap = StreamUsage::new(Format::OpenAiChat);
            frames.clear();
            scanner
                .feed(stream.clone(), &mut frames)
                .expect("unbounded scanner");
            for f in &frames {
                black_box(tap.observe(f));
            }
            black_box(tap.usage())
        })
    });
    group.finish();
}

fn usage_per_body(c: &mut Criterion) {
    let bodies: [(&str, Format, &[u8]); 2] = [
        (
            "openai_chat_basic",
            Format::OpenAiChat,
            include_bytes!("../tests/fixtures/openai/chat_basic.json"),
        ),
        (
            "anthropic_messages_basic",
            Format::Anthropic,
            include_bytes!("../tests/fixtures/anthropic/messages_basic.json"),
        ),
    ];
    let mut group = c.benchmark_group("usage_from_json");
    for (name, format, body) in bodies {
        assert!(
            usage_from_json(format, body).is_some(),
            "{name}: no usage found"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(usage_from_json(format, black_box(body))))
        });
    }
    group.finish();
}

fn key_table(n: usize) -> KeyTable {
    let mut table = KeyTable::default();
    for i in 0..n {
        let secret = format!("sk-sira-bench-{i:06}");
        let Ok(digest) = parse_hash(&hash_key(&secret)) else {
            continue;
        };
        table.insert(KeyEntry::new(
            &format!("key-{i}"),
            digest,
            Some(vec![Glob::new("gpt-*"), Glob::new("claude-*")]),
            Vec::new(),
        ));
    }
    table
}

fn key_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_lookup");
    for n in [1usize, 1_000, 100_000] {
        let table = key_table(n);
        let present = format!("sk-sira-bench-{:06}", n / 2);
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {present}")) {
            headers.insert(http::header::AUTHORIZATION, value);
        }
        group.bench_with_input(BenchmarkId::new("find_hit", n), &table, |b, t| {
            b.iter(|| black_box(t.find(black_box(present.as_bytes())).is_some()))
        });
        group.bench_with_input(BenchmarkId::new("find_miss", n), &table, |b, t| {
            b.iter(|| black_box(t.find(black_box(b"sk-sira-not-a-key")).is_some()))
        });
        // Header parsing + SHA-256 + lookup + model allow-list, as the request path does it.
        group.bench_with_input(
            BenchmarkId::new("authenticate_and_allow", n),
            &table,
            |b, t| {
                b.iter(|| {
                    let p = authenticate(t, &KeyTable::default(), black_box(&headers), None, None);
                    black_box(p.map(|p| p.allows("gpt-4o")))
                })
            },
        );
    }
    group.bench_function("hash_key", |b| {
        b.iter(|| black_box(hash_key(black_box("sk-sira-bench"))))
    });
    group.finish();
}

fn provider() -> Arc<Provider> {
    Arc::new(Provider::new(
        "openai",
        ProviderKind::Openai,
        // A Result iterates over its Ok value: one endpoint (the URL is valid).
        Endpoint::parse("http://127.0.0.1:9000", 1)
            .into_iter()
            .collect(),
        None,
        None,
        Default::default(),
        Vec::new(),
        Timeouts::default(),
        HeaderValue::from_static("2023-06-01"),
    ))
}

fn model_table(exact: usize) -> ModelTable {
    let p = provider();
    let mut table = ModelTable::default();
    let target = |model: Option<&str>| Target::new(p.clone(), model.map(Into::into), 1);
    for i in 0..exact {
        table.insert(ModelRoute::new(
            &format!("model-{i}"),
            vec![target(Some("gpt-4o-2024-08-06")), target(None)],
        ));
    }
    for pattern in [
        "openai/*",
        "anthropic/*",
        "gemini/*",
        "openai/gpt-*",
        "*-mini",
    ] {
        table.insert(ModelRoute::new(pattern, vec![target(None)]));
    }
    table
}

fn model_routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("model_routing");
    for n in [10usize, 1_000] {
        let table = model_table(n);
        let exact = format!("model-{}", n / 2);
        for (label, name) in [
            ("exact", exact.as_str()),
            ("wildcard", "openai/gpt-4.1"),
            ("miss", "no-such-model"),
        ] {
            group.bench_with_input(BenchmarkId::new(label, n), &table, |b, t| {
                b.iter(|| {
                    let found = t.resolve(black_box(name));
                    // What the request path does next: pick a target and its upstream name.
                    black_box(found.map(|r| {
                        let i = r
                            .route
                            .target_order(&sira::models::OrderHints::default())
                            .first()
                            .copied()
                            .unwrap_or(0);
                        ModelRoute::upstream_model(&r.route.targets[i], name, r.capture).len()
                    }))
                })
            });
        }
    }
    group.finish();
}

/// The bench's (m) request: a prompt with an email, a phone number and a card number.
const PII_REQUEST: &str = r#"{"model":"gpt-4o-redact","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello! Write to jane.doe@example.com or call +1 415 555 0100 about card 4111 1111 1111 1111. What is the capital of France?"}],"max_tokens":256}"#;

/// The mock provider's answer to it, indented as OpenAI indents its answers.
const MOCK_ANSWER: &str = r#"{
  "id": "chatcmpl-luX4ZOFYzcnOJ7zpteiErBIA1fOeo",
  "object": "chat.completion",
  "created": 1796508297,
  "model": "gpt-4o-redact",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello from the sira mock provider.",
        "refusal": null,
        "annotations": []
      },
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 67,
    "completion_tokens": 7,
    "total_tokens": 74,
    "prompt_tokens_details": {
      "cached_tokens": 0,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": null
}"#;

/// `redact` as bench/sira.yaml configures it for (m), on the request and on the answer: the
/// time (m) adds to (a), without the sockets.
fn redaction(c: &mut Criterion) {
    let spec: lua_free_filters::FilterSpec = serde_yaml::from_str(
        "{kind: redact, patterns: [email, phone, credit-card], mode: placeholder, restore: true}",
    )
    .expect("the bench's filter");
    let filter = spec.build().expect("the bench's filter compiles");
    let mut group = c.benchmark_group("redaction");
    group.bench_function("request_json", |b| {
        b.iter(|| {
            let mut memo = lua_free_filters::Memo::default();
            black_box(filter.on_request_body(black_box(PII_REQUEST.as_bytes()), &mut memo))
        })
    });
    let mut memo = lua_free_filters::Memo::default();
    let _ = filter.on_request_body(PII_REQUEST.as_bytes(), &mut memo);
    group.bench_function("answer_json", |b| {
        b.iter(|| black_box(filter.on_response_body(black_box(MOCK_ANSWER.as_bytes()), &memo)))
    });
    group.bench_function("stream_96_events", |b| {
        let events = mock_stream(96);
        b.iter(|| {
            let mut stream = filter.on_stream(&memo).expect("redact follows streams");
            let mut out = Vec::with_capacity(4);
            for event in &events {
                out.clear();
                stream
                    .on_event(event.clone(), &mut out)
                    .expect("a clean event");
                black_box(&out);
            }
            stream.on_end(&mut out);
            black_box(out)
        })
    });
    group.finish();
}

/// The mock provider's Chat stream of `n` words, as (n) relays it: the role event, one
/// event per word, the finish, the usage, `[DONE]`.
fn mock_stream(n: usize) -> Vec<Bytes> {
    const WORDS: [&str; 7] = ["Hello", " from", " the", " sira", " mock", " provider", "."];
    let head = r#"data: {"id":"chatcmpl-luX4ZOFYzcnOJ7zpteiErBIA1fOeo","object":"chat.completion.chunk","created":1796518525,"model":"gpt-4o","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":"#;
    let tail = r#","finish_reason":null}],"usage":null,"obfuscation":"sira"}"#;
    let mut events = vec![format!(
        r#"{head}{{"role":"assistant","content":"","refusal":null}}{tail}"#
    )];
    for i in 0..n {
        let word = if i > 0 && i % WORDS.len() == 0 {
            " Hello"
        } else {
            WORDS[i % WORDS.len()]
        };
        events.push(format!(r#"{head}{{"content":"{word}"}}{tail}"#));
    }
    events.push(format!(
        "{head}{{}}{}",
        tail.replace("null}]", r#""stop"}]"#)
    ));
    events.push(r#"data: {"id":"chatcmpl-luX4ZOFYzcnOJ7zpteiErBIA1fOeo","object":"chat.completion.chunk","created":1796518525,"model":"gpt-4o","service_tier":"default","system_fingerprint":null,"choices":[],"usage":{"prompt_tokens":29,"completion_tokens":96,"total_tokens":125},"obfuscation":"sira"}"#.to_owned());
    events.push("data: [DONE]".to_owned());
    events
        .into_iter()
        .map(|e| Bytes::from(format!("{e}\n\n")))
        .collect()
}

criterion_group!(
    benches,
    usage_per_event,
    usage_per_body,
    key_lookup,
    model_routing,
    redaction
);
criterion_main!(benches);
