//! Stream knobs: pacing, replay, split writes, injected errors, cuts, hangs and aborts.

use crate::client::*;
use serde_json::Value;
use sira_mock::{MockConfig, MockProvider, StreamOutcome};
use std::time::{Duration, Instant};

const STREAM: &str =
    r#"{"model":"gpt-5-nano","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const ANTHROPIC: &str =
    r#"{"model":"claude-haiku-4-5","stream":true,"max_tokens":100,"messages":[]}"#;
const GEMINI_SSE: &str = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";

#[tokio::test]
async fn delay_spacing_and_stream_log() {
    let mock = MockProvider::start();
    let t0 = Instant::now();
    let r = post(
        mock.addr(),
        "/v1/messages",
        &[("x-mock-delay-ms", "40"), ("x-mock-events", "3")],
        ANTHROPIC,
    )
    .await;
    let elapsed = t0.elapsed();
    assert_eq!(sse_names(&r.body).len(), 9);
    assert!(elapsed >= Duration::from_millis(8 * 40), "{elapsed:?}");
    let log = &mock.stream_log()[0];
    assert_eq!(log.outcome, StreamOutcome::Completed);
    assert_eq!(log.events.len(), 9);
    assert_eq!(log.request_index, 0);
    assert!(
        ms(log.started, log.events[0]) < 30,
        "first event immediately"
    );
    for w in log.events.windows(2) {
        let gap = ms(w[0], w[1]);
        assert!((39..140).contains(&gap), "gap {gap} ms");
    }
    assert!(log.ended.unwrap() >= log.events[8]);
}

#[tokio::test]
async fn config_defaults_apply() {
    let mock = MockProvider::start_with(MockConfig {
        events: Some(2),
        delay: Some(Duration::from_millis(20)),
        ..MockConfig::default()
    });
    let r = post(mock.addr(), "/v1/chat/completions", &[], STREAM).await;
    assert_eq!(sse_data(&r.body).len(), 4);
    let log = &mock.stream_log()[0];
    assert!(ms(log.events[0], log.events[3]) >= 60);
    // A header still overrides the default.
    let r = post(
        mock.addr(),
        "/v1/chat/completions",
        &[("x-mock-events", "0"), ("x-mock-delay-ms", "0")],
        STREAM,
    )
    .await;
    assert_eq!(sse_data(&r.body).len(), 2);
}

#[tokio::test]
async fn fixture_replay_is_byte_exact() {
    let mock = MockProvider::start();
    for path in sira_mock::fixture_paths().filter(|p| p.ends_with(".sse")) {
        let r = post(
            mock.addr(),
            "/v1/chat/completions",
            &[("x-mock-fixture", path)],
            "{}",
        )
        .await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.complete);
        assert_eq!(&r.body[..], fixture(path), "{path}");
        let expected_type = if path.starts_with("gemini/") || path.starts_with("azure/") {
            "text/event-stream"
        } else {
            "text/event-stream; charset=utf-8"
        };
        assert_eq!(r.header("content-type"), Some(expected_type), "{path}");
    }
    let r = post(
        mock.addr(),
        "/v1/messages",
        &[("x-mock-fixture", "anthropic/messages_thinking.json")],
        "{}",
    )
    .await;
    assert_eq!(
        (r.status, &r.body[..]),
        (200, fixture("anthropic/messages_thinking.json"))
    );
    assert!(r.header("content-length").is_some());
    // An error recording keeps its status; a name inside the route's provider works too.
    let r = post(
        mock.addr(),
        "/v1/messages",
        &[("x-mock-fixture", "error_529_overloaded")],
        "{}",
    )
    .await;
    assert_eq!(
        (r.status, &r.body[..]),
        (529, fixture("anthropic/error_529_overloaded.json"))
    );
}

#[tokio::test]
async fn fixture_replay_with_delay_and_split() {
    let mock = MockProvider::start();
    let path = "gemini/stream_generate_content.sse";
    let h = [
        ("x-mock-fixture", path),
        ("x-mock-delay-ms", "30"),
        ("x-mock-split", "bytes"),
    ];
    let r = post(mock.addr(), GEMINI_SSE, &h, "{}").await;
    assert_eq!(&r.body[..], fixture(path));
    assert!(
        r.chunks.iter().all(|&c| c <= 7),
        "7-byte writes: {:?}",
        &r.chunks[..5]
    );
    assert_eq!(r.chunks.iter().sum::<usize>(), fixture(path).len());
    let log = &mock.stream_log()[0];
    assert_eq!(log.events.len(), 3, "split at the CRLF blank lines");
    assert!(log.events.windows(2).all(|w| ms(w[0], w[1]) >= 29));
}

#[tokio::test]
async fn split_bytes_synthesized() {
    let mock = MockProvider::start();
    let whole = post(mock.addr(), "/v1/messages", &[], ANTHROPIC).await;
    let split = post(
        mock.addr(),
        "/v1/messages",
        &[("x-mock-split", "bytes")],
        ANTHROPIC,
    )
    .await;
    assert_eq!(sse_names(&whole.body), sse_names(&split.body));
    assert!(split.chunks.len() > 100 && split.chunks.iter().all(|&c| c <= 7));
    assert_eq!(whole.chunks.len(), 13, "one write per event");
}

#[tokio::test]
async fn error_event_after() {
    let mock = MockProvider::start();
    let h = [("x-mock-error-event-after", "4")];
    let r = post(mock.addr(), "/v1/messages", &h, ANTHROPIC).await;
    assert!(r.complete, "the HTTP body ends cleanly");
    let names = sse_names(&r.body);
    assert_eq!(names.len(), 5);
    assert_eq!(names[4], "error");
    assert_eq!(sse_data(&r.body)[4]["error"]["type"], "overloaded_error");

    let r = post(mock.addr(), "/v1/chat/completions", &h, STREAM).await;
    let data = sse_data(&r.body);
    assert_eq!(data.len(), 5);
    assert_eq!(data[4]["error"]["type"], "server_error");
    assert!(!r.text().contains("[DONE]"));

    let r = post(
        mock.addr(),
        GEMINI_SSE,
        &[("x-mock-error-event-after", "2")],
        "{}",
    )
    .await;
    let text = r.text();
    let tail = text.rsplit("\r\n\r\n").next().unwrap();
    let err: Value = serde_json::from_str(tail).unwrap();
    assert_eq!(
        err["error"]["status"], "CANCELLED",
        "bare JSON object, as recorded"
    );

    let r = post(
        mock.addr(),
        "/v1/responses",
        &h,
        r#"{"model":"m","input":"x","stream":true}"#,
    )
    .await;
    let names = sse_names(&r.body);
    assert_eq!(&names[4..], ["error", "response.failed"]);
    assert_eq!(sse_data(&r.body)[5]["sequence_number"], 5);

    // A custom payload from x-mock-error.
    let h = [
        ("x-mock-error-event-after", "1"),
        (
            "x-mock-error",
            r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#,
        ),
    ];
    let r = post(mock.addr(), "/v1/messages", &h, ANTHROPIC).await;
    assert_eq!(r.status, 200);
    assert_eq!(sse_data(&r.body)[1]["error"]["message"], "boom");
}

#[tokio::test]
async fn fail_after_cuts_the_connection() {
    let mock = MockProvider::start();
    let r = post(
        mock.addr(),
        "/v1/messages",
        &[("x-mock-fail-after", "4")],
        ANTHROPIC,
    )
    .await;
    assert!(!r.complete, "no chunked terminator");
    assert_eq!(sse_names(&r.body).len(), 4);
    let log = &mock.stream_log()[0];
    assert_eq!(log.outcome, StreamOutcome::Cut);
    assert!(
        mock.aborted_streams().is_empty(),
        "a deliberate cut is not a client abort"
    );
}

#[tokio::test]
async fn client_disconnect_is_recorded() {
    let mock = MockProvider::start();
    let mut conn = Conn::connect(mock.addr()).await;
    conn.send(
        "POST",
        "/v1/messages",
        &[("x-mock-delay-ms", "50"), ("x-mock-events", "50")],
        ANTHROPIC,
    )
    .await;
    assert_eq!(conn.head().await.unwrap().0, 200);
    conn.chunk().await.unwrap().unwrap();
    let closed = Instant::now();
    drop(conn);
    assert!(mock.wait_aborted_async(1, Duration::from_secs(3)).await);
    let aborted = mock.aborted_streams();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].path, "/v1/messages");
    assert!(aborted[0].events_sent < 10, "{}", aborted[0].events_sent);
    assert!(ms(closed, aborted[0].at) < 500, "noticed promptly");
    assert_eq!(mock.stream_log()[0].outcome, StreamOutcome::ClientGone);
    assert!(mock.wait_aborted(1, Duration::from_millis(1)));
}

#[tokio::test]
async fn hang_delays_the_head() {
    let mock = MockProvider::start();
    let t0 = Instant::now();
    let r = post(
        mock.addr(),
        "/v1/chat/completions",
        &[("x-mock-hang-ms", "150")],
        STREAM,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(150));
    let log = &mock.stream_log()[0];
    assert!(ms(mock.requests()[0].at, log.started) >= 140);

    let mut conn = Conn::connect(mock.addr()).await;
    conn.send(
        "POST",
        "/v1/chat/completions",
        &[("x-mock-hang-ms", "forever")],
        STREAM,
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), conn.head())
            .await
            .is_err(),
        "never answers"
    );
}

#[tokio::test]
async fn keep_alive_requests_are_not_delayed() {
    // Guards against Nagle/delayed-ACK stalls (~40 ms per request) on reused connections.
    let mock = MockProvider::start();
    let mut conn = Conn::connect(mock.addr()).await;
    let t0 = Instant::now();
    for _ in 0..50 {
        conn.send("POST", "/v1/chat/completions", &[], STREAM).await;
        assert!(conn.response().await.complete);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?} for 50 streams",
        t0.elapsed()
    );
    assert_eq!(mock.connections(), 1);
}
