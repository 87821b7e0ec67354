//! Hostile and broken upstreams: resets at every phase, half-closed connections, drips,
//! invalid SSE, lying lengths, content codings sira never asked for. For each the client
//! gets a protocol-correct ending (an error status, or its surface's error event on a body
//! that no client can take for complete) and the access log keeps the request's accounting,
//! exact or marked estimated, never lost. (Cut and short bodies, 1xx, silence, endless
//! events and `timeouts.total` are in `wire.rs` and `bounds.rs`.)

use std::net::Shutdown;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::raw::{chat_json, send, RawUpstream};
use crate::support::{keys_section, receive, request, send_receive, Received, Sira};

fn config() -> String {
    format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream, timeouts: {{ idle: 1s }} }}
models:
  gpt-4o:
    targets: [{{ provider: oai }}]
    pricing: {{ input: 2.5, output: 10.0 }}
  "anthropic-client":
    targets: [{{ provider: oai, model: gpt-4o }}]
    pricing: {{ input: 2.5, output: 10.0 }}
{}"#,
        keys_section()
    )
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

/// An OpenAI chat chunk carrying `text`, as one HTTP chunk.
fn event(text: &str) -> Vec<u8> {
    let data = format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    );
    chunk(data.as_bytes())
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

async fn stream_chat(sira: &Sira) -> Received {
    send_receive(request(sira, "/v1/chat/completions").json(
        &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Tell me a story."}]}),
    ))
    .await
}

async fn json_chat(sira: &Sira) -> (u16, String) {
    let resp = request(sira, "/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, receive(resp).await.text)
}

/// The one access log line of a test's only request.
fn logged(sira: &Sira) -> Value {
    sira.wait_access_log(1).pop().unwrap()
}

/// A stream cut after some events: settled to an estimate that counts what was delivered.
fn assert_estimated(line: &Value, delivered: u64) {
    assert_eq!(line["estimated"], true, "{line}");
    assert!(line["input_tokens"].as_u64().unwrap_or(0) > 0, "{line}");
    assert!(
        line["output_tokens"].as_u64().unwrap_or(0) >= delivered,
        "{line}"
    );
    assert!(line["cost_usd"].as_f64().unwrap_or(0.0) > 0.0, "{line}");
}

#[tokio::test]
async fn a_reset_before_or_inside_the_response_head_is_a_502_and_never_sent_again() {
    // The request body is left unread, so closing resets the connection.
    let before = RawUpstream::start_with(false, |_, _| false);
    let inside = RawUpstream::start_with(false, |stream, _| {
        send(stream, b"HTTP/1.1 200 OK\r\ncontent-type: applic");
        false
    });
    for upstream in [before, inside] {
        let sira = Sira::start(&config(), &upstream.url);
        let (status, text) = json_chat(&sira).await;
        assert_eq!(status, 502, "{text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["type"], "server_error", "{text}");
        // Written whole, then lost: the provider may have run it, so it is not repeated.
        assert_eq!(upstream.requests(), 1);
        let line = logged(&sira);
        assert_eq!(line["status"], 502, "{line}");
    }
}

#[tokio::test]
async fn a_reset_mid_event_ends_the_stream_with_an_error_and_an_estimate() {
    let upstream = RawUpstream::start_with(false, |stream, _| {
        send(stream, SSE_HEAD);
        for word in ["Once ", "upon ", "a "] {
            send(stream, &event(word));
        }
        // Half of the next event, then the reset.
        let next = event("time");
        send(stream, &next[..next.len() / 2]);
        std::thread::sleep(Duration::from_millis(50));
        false
    });
    let sira = Sira::start(&config(), &upstream.url);
    let received = stream_chat(&sira).await;
    assert!(!received.complete, "{}", received.text);
    assert!(received.text.contains("Once "), "{}", received.text);
    assert!(!received.text.contains("time"), "half an event was relayed");
    assert!(received.text.contains("\"error\""), "{}", received.text);
    assert_estimated(&logged(&sira), 3);
}

#[tokio::test]
async fn a_half_closed_upstream_is_noticed_at_once_not_after_a_timeout() {
    // The provider closes its side after reading the request and keeps reading: no answer
    // will come, and sira must not wait for its idle timeout to say so.
    let silent = RawUpstream::start(|stream, _| {
        let _ = stream.shutdown(Shutdown::Write);
        std::thread::sleep(Duration::from_secs(8));
        false
    });
    // An idle timeout and a provider that holds on far longer than the test allows: only
    // noticing the FIN passes.
    let patient = config().replace("idle: 1s", "idle: 10s");
    let sira = Sira::start(&patient, &silent.url);
    let started = Instant::now();
    let (status, text) = json_chat(&sira).await;
    assert_eq!(status, 502, "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Mid-stream: two events, then the provider's FIN before the last chunk.
    let midway = RawUpstream::start(|stream, _| {
        send(stream, SSE_HEAD);
        send(stream, &event("Once "));
        send(stream, &event("upon "));
        let _ = stream.shutdown(Shutdown::Write);
        std::thread::sleep(Duration::from_secs(8));
        false
    });
    let sira = Sira::start(&patient, &midway.url);
    let started = Instant::now();
    let received = stream_chat(&sira).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!received.complete, "{}", received.text);
    assert!(received.text.contains("\"error\""), "{}", received.text);
    assert_estimated(&logged(&sira), 2);
}

#[tokio::test]
async fn a_stream_dripped_a_byte_at_a_time_arrives_whole_and_exactly_accounted() {
    let upstream = RawUpstream::start(|stream, _| {
        let mut body = Vec::new();
        for word in ["Slow ", "and ", "steady."] {
            body.extend_from_slice(&event(word));
        }
        let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o", "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}});
        body.extend_from_slice(&chunk(format!("data: {usage}\n\n").as_bytes()));
        body.extend_from_slice(&chunk(b"data: [DONE]\n\n"));
        body.extend_from_slice(b"0\r\n\r\n");
        send(stream, SSE_HEAD);
        // Each byte alone, well within the idle timeout of 1 s, the whole far beyond it.
        for byte in body {
            if !send(stream, &[byte]) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    });
    let sira = Sira::start(&config(), &upstream.url);
    let received = stream_chat(&sira).await;
    assert!(received.complete, "{}", received.text);
    assert!(received.text.contains("[DONE]"));
    // Three words and [DONE] (the usage chunk, not asked for by the client, is taken out).
    assert_eq!(
        received.text.matches("data: ").count(),
        4,
        "{}",
        received.text
    );
    let line = logged(&sira);
    assert_ne!(line["estimated"], true, "{line}");
    assert_eq!(line["input_tokens"], 11, "{line}");
    assert_eq!(line["output_tokens"], 3, "{line}");
}

#[tokio::test]
async fn invalid_sse_from_the_provider_ends_a_translated_stream_with_an_error() {
    // Events that are not JSON, then bytes that are not text: relayed as they are to an
    // OpenAI client (a passthrough), an error event for an Anthropic client (nothing to
    // translate them into). Either way the request is accounted.
    let upstream = RawUpstream::start(|stream, _| {
        send(stream, SSE_HEAD);
        send(stream, &event("Hello"));
        send(stream, &chunk(b"data: {\"choices\": [{\"delta\": \n\n"));
        send(stream, &chunk(b"data: \xff\xfe\x00garbage\n\n"));
        send(stream, &chunk(b"data: [DONE]\n\n"));
        send(stream, b"0\r\n\r\n");
        true
    });
    let sira = Sira::start(&config(), &upstream.url);
    let received = send_receive(
        request(&sira, "/v1/messages")
            .header("anthropic-version", "2023-06-01")
            .json(
                &json!({"model": "anthropic-client", "max_tokens": 50, "stream": true,
                          "messages": [{"role": "user", "content": "Hi"}]}),
            ),
    )
    .await;
    assert!(received.text.contains("event: error"), "{}", received.text);
    assert!(!received.text.contains("garbage"), "{}", received.text);
    let line = logged(&sira);
    assert_estimated(&line, 1);
    // The process is unharmed: the same bytes to an OpenAI client are relayed.
    let received = stream_chat(&sira).await;
    assert!(received.text.contains("Hello"), "{}", received.text);
}

#[tokio::test]
async fn a_length_shorter_than_the_body_never_leaks_the_rest_into_the_next_answer() {
    // The provider declares fewer bytes than it sends: the rest sits on the connection,
    // where the next request would read it as its answer if the connection were reused.
    let upstream = RawUpstream::start(|stream, index| {
        let body = chat_json();
        if index == 0 {
            let lie = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{{}}",
                body.len() - 10
            );
            send(stream, lie.as_bytes());
            std::thread::sleep(Duration::from_millis(300));
            return true;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        send(stream, reply.as_bytes())
    });
    let sira = Sira::start(&config(), &upstream.url);
    let (status, first) = json_chat(&sira).await;
    assert_eq!(status, 200);
    assert_eq!(first.len(), chat_json().len() - 10);
    std::thread::sleep(Duration::from_millis(100));
    let (status, second) = json_chat(&sira).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second, chat_json(), "the rest of the lie became an answer");
}

#[tokio::test]
async fn a_content_coding_sira_did_not_ask_for_is_refused_before_its_body() {
    let mock = sira_mock::MockProvider::start();
    let sira = Sira::start(&config(), &mock.url());
    let resp = request(&sira, "/v1/chat/completions")
        .header("accept-encoding", "gzip, br")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = &mock.requests()[0];
    let codings: Vec<&String> = sent
        .headers
        .iter()
        .filter(|(n, _)| n == "accept-encoding")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(codings, ["identity"], "the client's codings went upstream");

    // A provider that compresses anyway, with a broken gzip stream or a brotli one.
    for coding in ["gzip", "br", "identity, gzip"] {
        let upstream = RawUpstream::start(move |stream, _| {
            let body = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03not really gzip";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: {coding}\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            send(stream, head.as_bytes()) && send(stream, body)
        });
        let sira = Sira::start(&config(), &upstream.url);
        let (status, text) = json_chat(&sira).await;
        assert_eq!(status, 502, "{coding}: {text}");
        assert!(text.contains("content-coded"), "{text}");
        assert!(!text.contains("not really"), "{text}");
        assert_eq!(upstream.requests(), 1, "{coding}: sent again");
    }
}

#[tokio::test]
async fn a_provider_that_accepts_and_never_answers_is_bounded_by_first_byte() {
    let upstream = RawUpstream::start(|stream, _| {
        let mut probe = [0u8; 1];
        // Holds the connection open, silent, until sira gives up on it.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = std::io::Read::read(stream, &mut probe);
        false
    });
    let text = config().replace("timeouts: { idle: 1s }", "timeouts: { first_byte: 500ms }");
    let sira = Sira::start(&text, &upstream.url);
    let started = Instant::now();
    let (status, body) = json_chat(&sira).await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(logged(&sira)["status"], 504);
    assert_eq!(upstream.requests(), 1);
}
