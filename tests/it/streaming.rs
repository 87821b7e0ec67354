//! SSE relay: event by event as it arrives, split reads, client disconnects, upstream
//! failures mid-stream.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sira_mock::{MockProvider, StreamOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    chat_stream_body, client, receive, standard_config, start_standard, Received, Sira, KEY_A,
};

/// The `data:` payloads of an SSE body, in order.
pub fn data_events(body: &str) -> Vec<String> {
    // Gemini frames events with CRLF, as Google does.
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|frame| {
            frame
                .lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_owned)
        })
        .collect()
}

/// The `data:` payloads of an OpenAI stream, checked to end with sira's upstream error event
/// and then to break off: never a clean end the client could take for a complete answer.
fn ending_in_upstream_error(received: &Received) -> Vec<String> {
    let body = &received.text;
    assert!(!received.complete, "the stream ended cleanly: {body}");
    let events = data_events(body);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream"),
        "{body}"
    );
    events
}

#[tokio::test]
async fn events_reach_the_client_before_the_provider_sends_the_last() {
    let (mock, sira) = start_standard();
    let mut resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-mock-events", "4")
        // The last event leaves 1.5 s after the first: a loaded machine's scheduling delays
        // stay well inside that, a relay that buffers the stream does not.
        .header("x-mock-delay-ms", "500")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut first_event_at = None;
    let mut body = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
        if first_event_at.is_none() && body.contains("\n\n") {
            first_event_at = Some(Instant::now());
        }
    }
    let first_event_at = first_event_at.unwrap();
    let log = &mock.stream_log()[0];
    assert_eq!(log.outcome, StreamOutcome::Completed);
    let last_sent = *log.events.last().unwrap();
    assert!(
        first_event_at < last_sent,
        "the client held the first event only after the provider sent the last: relayed whole, not streamed"
    );
    // Every event of the provider arrived, in order, and the stream is properly closed.
    let events = data_events(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events
        .iter()
        .filter(|e| e.starts_with('{'))
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, sira_mock::answer_text(4));
}

#[tokio::test]
async fn anthropic_streams_are_relayed_event_by_event() {
    let (mock, sira) = start_standard();
    let mut resp = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_A)
        .header("x-mock-events", "3")
        .header("x-mock-delay-ms", "500")
        .json(&json!({"model": "claude", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let mut first = None;
    let mut body = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
        if first.is_none() && body.contains("\n\n") {
            first = Some(Instant::now());
        }
    }
    assert!(first.unwrap() < *mock.stream_log()[0].events.last().unwrap());
    assert!(body.starts_with("event: message_start\n"), "{body}");
    assert!(
        body.trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{body}"
    );
}

#[tokio::test]
async fn events_split_across_reads_arrive_intact() {
    let (_mock, sira) = start_standard();
    let request = |split: &'static str| {
        client()
            .post(sira.url("/v1/messages"))
            .header("x-api-key", KEY_A)
            .header("x-mock-events", "6")
            .header("x-mock-split", split)
            .json(&json!({"model": "claude", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
            .send()
    };
    let whole = request("whole").await.unwrap().text().await.unwrap();
    let split = request("bytes").await.unwrap().text().await.unwrap();
    // Message ids differ per request; everything else must be identical.
    let normalise = |body: &str| -> Vec<Value> {
        data_events(body)
            .iter()
            .map(|d| {
                let mut v: Value = serde_json::from_str(d).unwrap();
                if let Some(message) = v.get_mut("message") {
                    message["id"] = Value::Null;
                }
                v
            })
            .collect()
    };
    assert_eq!(normalise(&split), normalise(&whole));
    assert_eq!(normalise(&whole).len(), 6 + 6);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_closes_the_upstream_promptly() {
    let (mock, sira) = start_standard();
    let body =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]})
            .to_string();
    let mut conn = tokio::net::TcpStream::connect(sira.addr).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sira\r\nauthorization: Bearer {KEY_A}\r\ncontent-type: application/json\r\nx-mock-events: 200\r\nx-mock-delay-ms: 50\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("data: ") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(conn);
    let closed_at = Instant::now();
    assert!(
        mock.wait_aborted_async(1, Duration::from_secs(3)).await,
        "the provider kept streaming to sira after its client left"
    );
    let aborted = &mock.aborted_streams()[0];
    assert!(aborted.at.duration_since(closed_at) < Duration::from_secs(2));
    assert!(
        aborted.events_sent < 150,
        "sent {} events",
        aborted.events_sent
    );
    let log = sira.wait_access_log(1);
    assert_eq!(log[0]["client_gone"], true);
    // The stream gauge is back to zero.
    let deadline = Instant::now() + Duration::from_secs(2);
    while sira.metric("sira_active_streams").await != 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sira.metric("sira_active_streams").await, 0.0);
}

#[tokio::test]
async fn an_upstream_that_dies_mid_stream_ends_with_the_surface_error_event() {
    let (_mock, sira) = start_standard();
    let openai = chat_stream_body(&sira, &[("x-mock-fail-after", "3")]).await;
    let events = ending_in_upstream_error(&openai);
    assert_eq!(events.len(), 4, "{}", openai.text);

    let anthropic = receive(
        client()
            .post(sira.url("/v1/messages"))
            .header("x-api-key", KEY_A)
            .header("x-mock-fail-after", "2")
            .json(&json!({"model": "claude", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!anthropic.complete);
    let anthropic = anthropic.text;
    assert!(
        anthropic
            .contains("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\""),
        "{anthropic}"
    );
}

#[tokio::test]
async fn a_provider_silent_past_its_idle_timeout_ends_the_stream_with_an_error() {
    let mock = MockProvider::start();
    let config = standard_config().replace(
        "oai: { kind: openai, endpoints: [\"{mock}\"], api_key: sk-upstream-openai }",
        "oai: { kind: openai, endpoints: [\"{mock}\"], api_key: sk-upstream-openai, timeouts: { idle: 400ms } }",
    );
    assert!(
        config.contains("idle: 400ms"),
        "the provider line changed: {config}"
    );
    let sira = Sira::start(&config, &mock.url());
    // Events 3 s apart: the first arrives, then the provider is silent for longer than its
    // idle timeout. Every read between events goes through the same paths as a burst (the
    // read that finds nothing ready yet, then the waiting read), so this also checks that the
    // timeout survives the non-waiting poll.
    let started = Instant::now();
    let body = chat_stream_body(
        &sira,
        &[("x-mock-events", "4"), ("x-mock-delay-ms", "3000")],
    )
    .await;
    let took = started.elapsed();
    ending_in_upstream_error(&body);
    assert!(
        body.text.contains("\"role\":\"assistant\""),
        "the events before the silence were relayed: {}",
        body.text
    );
    assert!(
        took < Duration::from_millis(2800),
        "ended after {took:?}: the idle timeout did not cut the silence short"
    );
    let log = sira.wait_access_log(1);
    assert_eq!(log[0]["stream"], true);
    assert!(
        log[0]["error"].as_str().unwrap().contains("upstream"),
        "{:?}",
        log[0]
    );
}

#[tokio::test]
async fn provider_error_events_mid_stream_are_relayed() {
    let (_mock, sira) = start_standard();
    let body = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_A)
        .header("x-mock-error-event-after", "3")
        .json(&json!({"model": "claude", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("event: error"), "{body}");
    assert!(body.contains("overloaded_error"), "{body}");
}

#[tokio::test]
async fn several_streams_in_turn_on_one_keep_alive_connection() {
    let (mock, sira) = start_standard();
    let c = client();
    for _ in 0..3 {
        let text = c
            .post(sira.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .header("x-mock-events", "3")
            .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
    assert_eq!(mock.stream_log().len(), 3);
    assert!(mock
        .stream_log()
        .iter()
        .all(|s| s.outcome == StreamOutcome::Completed));
}
