//! Token accounting from every JSON response and every stream.

use serde_json::{json, Value};

use crate::streaming::data_events;
use crate::support::{chat_stream_body, client, standard_config, start_standard, Sira, KEY_A};

fn tokens(model: &str, provider: &str, kind: &str) -> String {
    format!("sira_tokens_total{{estimated=\"false\",key=\"team-a\",kind=\"{kind}\",model=\"{model}\",provider=\"{provider}\"}}")
}

#[tokio::test]
async fn openai_streams_get_usage_injected_and_the_usage_chunk_removed() {
    let (mock, sira) = start_standard();
    let received = chat_stream_body(
        &sira,
        &[("x-mock-events", "5"), ("x-mock-input-tokens", "42")],
    )
    .await;
    assert!(received.complete);
    let body = received.text;
    // sira asked the provider for usage...
    assert_eq!(
        mock.requests()[0].json()["stream_options"],
        json!({"include_usage": true})
    );
    // ...and the client, who did not, never sees the usage-only chunk.
    let events = data_events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    for event in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(event).unwrap();
        assert!(
            !v["choices"].as_array().unwrap().is_empty(),
            "usage-only chunk leaked: {event}"
        );
    }
    let log = sira.wait_access_log(1);
    assert_eq!(
        (
            log[0]["input_tokens"].as_u64(),
            log[0]["output_tokens"].as_u64()
        ),
        (Some(42), Some(5))
    );
    assert_eq!(sira.metric(&tokens("gpt-4o", "oai", "input")).await, 42.0);
    assert_eq!(sira.metric(&tokens("gpt-4o", "oai", "output")).await, 5.0);
    let cost = sira
        .metric("sira_cost_usd_total{key=\"team-a\",model=\"gpt-4o\"}")
        .await;
    assert!(
        (cost - (42.0 * 2.5 + 5.0 * 10.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
}

#[tokio::test]
async fn openai_streams_keep_the_usage_chunk_when_the_client_asked_for_it() {
    let (_mock, sira) = start_standard();
    let body = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-mock-events", "2")
        .header("x-mock-input-tokens", "9")
        .json(&json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = data_events(&body);
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 9);
    let log = sira.wait_access_log(1);
    assert_eq!(log[0]["input_tokens"], 9);
}

#[tokio::test]
async fn anthropic_streams_count_message_start_and_message_delta() {
    let (_mock, sira) = start_standard();
    let body = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_A)
        .header("x-mock-events", "4")
        .header("x-mock-input-tokens", "100")
        .header("x-mock-cached-tokens", "60")
        .json(&json!({"model": "claude", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("message_delta"));
    let log = sira.wait_access_log(1);
    assert_eq!(
        log[0]["input_tokens"], 100,
        "input includes cache reads: {}",
        log[0]
    );
    assert_eq!(log[0]["cached_input_tokens"], 60);
    assert_eq!(log[0]["output_tokens"], 4);
    assert_eq!(
        sira.metric(&tokens("claude", "ant", "cached_input")).await,
        60.0
    );
}

#[tokio::test]
async fn json_responses_are_counted() {
    let (_mock, sira) = start_standard();
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}),
        ),
    ] {
        let resp = client()
            .post(sira.url(path))
            .bearer_auth(KEY_A)
            .header("x-mock-events", "3")
            .header("x-mock-input-tokens", "11")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let log = sira.wait_access_log(2);
    for line in &log {
        assert_eq!(
            (
                line["input_tokens"].as_u64(),
                line["output_tokens"].as_u64()
            ),
            (Some(11), Some(3)),
            "{line}"
        );
    }
    assert_eq!(sira.metric(&tokens("gpt-4o", "oai", "input")).await, 11.0);
    assert_eq!(sira.metric(&tokens("claude", "ant", "output")).await, 3.0);
}

#[tokio::test]
async fn embeddings_are_counted() {
    let (_mock, sira) = start_standard();
    let resp = client()
        .post(sira.url("/v1/embeddings"))
        .bearer_auth(KEY_A)
        .header("x-mock-input-tokens", "17")
        .json(&json!({"model": "openai/text-embedding-3-small", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let log = sira.wait_access_log(1);
    assert_eq!(log[0]["input_tokens"], 17, "{}", log[0]);
}

#[tokio::test]
async fn a_stream_cut_before_its_usage_is_settled_to_an_estimate_never_zero() {
    let (_mock, sira) = start_standard();
    // OpenAI reports usage only in the last chunk; the provider's stream breaks before it
    // (a client leaving is settled the same way).
    let received = crate::support::send_receive(
        crate::support::client()
            .post(sira.url("/v1/chat/completions"))
            .bearer_auth(crate::support::KEY_A)
            .header("x-mock-events", "50")
            .header("x-mock-fail-after", "20")
            .json(&serde_json::json!({"model": "gpt-4o", "stream": true,
                "messages": [{"role": "user", "content": "Tell me a long story about estimates."}]})),
    )
    .await;
    assert!(
        !received.complete,
        "a cut stream is not passed on as complete"
    );
    let lines = sira.wait_access_log(1);
    let line = lines.last().unwrap();
    assert_eq!(line["estimated"], true, "{line}");
    assert!(line["input_tokens"].as_u64().unwrap() > 0, "{line}");
    // At least one token per event that reached the client.
    assert!(line["output_tokens"].as_u64().unwrap() >= 19, "{line}");
    assert!(
        line["cost_usd"].as_f64().unwrap() > 0.0,
        "priced like any answer: {line}"
    );
    let series = "sira_tokens_total{estimated=\"true\",key=\"team-a\",kind=\"input\",model=\"gpt-4o\",provider=\"oai\"}";
    assert!(sira.metric(series).await > 0.0);
}

/// Sends `body` to `path` on a connection of its own, with key A and the raw header
/// lines `extra` (each ending in CRLF).
async fn send_alone(sira: &Sira, path: &str, extra: &str, body: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: sira\r\nauthorization: Bearer {KEY_A}\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = tokio::net::TcpStream::connect(sira.addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    conn
}

/// One request on a connection of its own, read to the last byte of its `Content-Length`
/// and the connection closed at once, as a client that has what it asked for does.
async fn read_whole_then_close(sira: &Sira) {
    use tokio::io::AsyncReadExt;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#;
    let mut conn = send_alone(
        sira,
        "/v1/chat/completions",
        "x-mock-events: 3\r\nx-mock-input-tokens: 11\r\n",
        body,
    )
    .await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let length: usize = text[..end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("a content-length");
        if got.len() >= end + 4 + length {
            return;
        }
    }
}

#[tokio::test]
async fn a_client_that_closes_once_it_has_the_whole_answer_is_billed_its_usage() {
    // The close reaches sira about when the provider's end of body does: whichever sira
    // looked at first decided whether the usage was read or the request settled as cut.
    let (_mock, sira) = start_standard();
    let rounds = 300;
    for _ in 0..rounds {
        read_whole_then_close(&sira).await;
    }
    let log = sira.wait_access_log(rounds);
    assert_eq!(log.len(), rounds);
    let cut: Vec<_> = log
        .iter()
        .filter(|line| line["estimated"] == true || line["client_gone"] == true)
        .collect();
    assert!(
        cut.is_empty(),
        "{} of {rounds} taken for cut: {:?}",
        cut.len(),
        cut.first()
    );
    assert!(
        log.iter().all(|line| line["output_tokens"] == 3),
        "{:?}",
        log[0]
    );
}

/// An OpenAI stream: `now` (events) sent at once, then `later` and the end of its chunked
/// framing only `hold` later.
fn provider_sending_in_two_parts(
    now: String,
    later: String,
    hold: std::time::Duration,
) -> crate::raw::RawUpstream {
    provider_sending_in_parts(vec![(std::time::Duration::ZERO, now), (hold, later)])
}

/// A stream sent in parts, each after its pause, as one chunk of the HTTP framing each; the
/// framing ends with the last.
fn provider_sending_in_parts(parts: Vec<(std::time::Duration, String)>) -> crate::raw::RawUpstream {
    use crate::raw::send;
    crate::raw::RawUpstream::start(move |stream, _| {
        let chunk = |data: &str| {
            if data.is_empty() {
                String::new()
            } else {
                format!("{:x}\r\n{data}\r\n", data.len())
            }
        };
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        if !send(stream, head.as_bytes()) {
            return false;
        }
        let last = parts.len() - 1;
        parts.iter().enumerate().all(|(i, (pause, data))| {
            std::thread::sleep(*pause);
            let end = if i == last { "0\r\n\r\n" } else { "" };
            send(stream, format!("{}{end}", chunk(data)).as_bytes())
        })
    })
}

fn chat_chunk(delta: Value, finish: Option<&str>) -> String {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {chunk}\n\n")
}

/// The answer "Done." with its finish, its usage (1 token out) and `[DONE]`, split after
/// the first `split` of those four events.
fn answer_in_two_parts(split: usize) -> (String, String) {
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}});
    let events = [
        chat_chunk(json!({"content": "Done."}), None),
        chat_chunk(json!({}), Some("stop")),
        format!("data: {usage}\n\n"),
        "data: [DONE]\n\n".to_owned(),
    ];
    (events[..split].concat(), events[split..].concat())
}

fn slow_to_end(split: usize) -> crate::raw::RawUpstream {
    let (now, later) = answer_in_two_parts(split);
    provider_sending_in_two_parts(now, later, std::time::Duration::from_secs(3))
}

/// Sends a chat stream request on a connection of its own, reads until `until` and closes
/// at once, as SDKs do once they have `[DONE]`; returns what it read.
async fn read_stream_then_close(sira: &Sira, until: &str) -> String {
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    read_then_close(sira, "/v1/chat/completions", body, until).await
}

/// Sends `body` to `path` on a connection of its own, reads until `until` and closes at
/// once; returns what it read.
async fn read_then_close(sira: &Sira, path: &str, body: &str, until: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut conn = send_alone(sira, path, "", body).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(until) {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("the event in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn config_with_cache() -> String {
    format!(
        "{}cache:\n  memory: {{ capacity: 1MiB, ttl: 1m }}\n",
        standard_config()
    )
}

/// The first request's access line: its client left, and it was billed the provider's
/// usage of [`answer_in_two_parts`] (a cut stream is settled to one token per event).
fn assert_billed_the_providers_usage(sira: &Sira) {
    assert_billed(sira, 9, 1);
}

/// The first request's access line: its client left, and it was billed the provider's
/// usage, `input` and `output` tokens.
fn assert_billed(sira: &Sira, input: u64, output: u64) {
    let log = sira.wait_access_log(1);
    let line = &log[0];
    assert_eq!(line["client_gone"], true, "{line}");
    assert_ne!(line["estimated"], true, "{line}");
    assert_eq!(line["input_tokens"], input, "{line}");
    assert_eq!(line["output_tokens"], output, "{line}");
}

/// The first request's client left before its answer was whole: settled to an estimate,
/// and the same request then goes to the provider again (nothing was cached).
async fn assert_settled_as_cut_and_not_kept(sira: &Sira) {
    let log = sira.wait_access_log(1);
    let line = &log[0];
    assert_eq!(line["client_gone"], true, "{line}");
    assert_eq!(line["estimated"], true, "{line}");
    let second = read_stream_then_close(sira, DONE).await;
    assert!(second.contains("x-sira-cache: miss"), "{second}");
}

const DONE: &str = "data: [DONE]";
const STOPPED: &str = "\"finish_reason\":\"stop\"";

#[tokio::test]
async fn a_stream_client_that_closes_after_its_last_event_is_billed_its_usage_and_cached() {
    // The provider has sent everything but the end of its framing, and takes its time over
    // that: the client, which has its `[DONE]`, closes first. Its answer is whole.
    let provider = slow_to_end(4);
    let sira = Sira::start(&config_with_cache(), &provider.url);
    let first = read_stream_then_close(&sira, DONE).await;
    assert!(first.contains("x-sira-cache: miss"), "{first}");
    assert_billed_the_providers_usage(&sira);
    // Kept for the cache: the same request is answered without the provider.
    let second = read_stream_then_close(&sira, DONE).await;
    assert!(second.contains("x-sira-cache: hit"), "{second}");
    assert!(second.contains("Done."), "{second}");
    assert_eq!(provider.requests(), 1);
}

#[tokio::test]
async fn a_stream_client_that_closes_before_its_last_event_is_settled_as_cut() {
    // The usage is in, but `[DONE]` is not: a client that leaves then did not have the
    // whole answer, and nothing of it is kept.
    let provider = slow_to_end(3);
    let sira = Sira::start(&config_with_cache(), &provider.url);
    let first = read_stream_then_close(&sira, STOPPED).await;
    assert!(!first.contains(DONE), "{first}");
    assert_settled_as_cut_and_not_kept(&sira).await;
    assert_eq!(provider.requests(), 2);
}

#[tokio::test]
async fn a_delta_that_names_an_end_does_not_end_a_stream_for_a_client_that_leaves() {
    // A model whose text is exactly `error` puts `"error"`, quotes and all, in a chunk: a
    // client that leaves there did not have its answer, and is settled as cut.
    let now = chat_chunk(json!({"content": "error"}), None);
    let (_, later) = answer_in_two_parts(0);
    let provider = provider_sending_in_two_parts(now, later, std::time::Duration::from_secs(3));
    let sira = Sira::start(&config_with_cache(), &provider.url);
    read_stream_then_close(&sira, "\"content\":\"error\"").await;
    assert_settled_as_cut_and_not_kept(&sira).await;
}

#[tokio::test]
async fn an_anthropic_client_that_closes_after_message_stop_from_an_openai_provider_is_billed_its_usage(
) {
    // Translated: sira writes `message_stop` once the provider's `[DONE]` is in, and the
    // client closes before the provider's framing ends.
    let provider = slow_to_end(4);
    let sira = Sira::start(&config_with_cache(), &provider.url);
    let body = r#"{"model":"gpt-4o","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let first = read_then_close(&sira, "/v1/messages", body, "event: message_stop").await;
    assert!(first.contains("Done."), "{first}");
    assert_billed_the_providers_usage(&sira);
    let second = read_then_close(&sira, "/v1/messages", body, "event: message_stop").await;
    assert!(second.contains("x-sira-cache: hit"), "{second}");
    assert_eq!(provider.requests(), 1);
}

#[tokio::test]
async fn a_responses_client_that_closes_once_it_has_a_last_event_read_in_parts_is_billed_its_usage()
{
    // Codex's `response.completed` repeats its request's instructions and tools, tens of KB
    // that reach sira in several reads: a client that closes once it has all of that event
    // had its whole answer, though no read held the event alone. (Accounting's tap passes a
    // passthrough stream on in whole frames, so the relay sees the event whole.)
    let stream = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openai_responses/stream_text.sse"
    ))
    .unwrap();
    let (events, completed) = stream.split_at(stream.rfind("event: response.completed").unwrap());
    // Codex's instructions, as long as they are.
    let instructions = format!("\"instructions\":\"{}\"", "Be brief. ".repeat(2400));
    let completed = completed.replace("\"instructions\":null", &instructions);
    let (head, tail) = completed.split_at(completed.len() / 2);
    let provider = provider_sending_in_parts(vec![
        (std::time::Duration::ZERO, format!("{events}{head}")),
        (std::time::Duration::from_millis(300), tail.to_owned()),
        (std::time::Duration::from_secs(3), String::new()),
    ]);
    let sira = Sira::start(&config_with_cache(), &provider.url);
    let body = r#"{"model":"gpt-4o","stream":true,"store":false,"input":"Hi"}"#;
    let first = read_then_close(
        &sira,
        "/v1/responses",
        body,
        "\"total_tokens\":21},\"user\":null,\"metadata\":{}}}\n\n",
    )
    .await;
    assert!(first.contains("x-sira-cache: miss"), "{first}");
    assert_billed(&sira, 9, 12);
    let second = read_then_close(&sira, "/v1/responses", body, "event: response.completed").await;
    assert!(second.contains("x-sira-cache: hit"), "{second}");
    assert_eq!(provider.requests(), 1);
}
