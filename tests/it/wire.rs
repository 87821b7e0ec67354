//! The HTTP rules an edge proxy keeps, on both sides: what a misbehaving provider and a
//! slow, oversized or ambiguous client get. Raw sockets on the side that misbehaves.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::raw::{chat_body, chat_head, chat_json, exchange, send, RawUpstream};
use crate::support::{keys_section, receive, request, send_receive, Sira, KEY_A};

const NOW: Duration = Duration::ZERO;

pub(crate) fn config() -> String {
    format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"{{mock}}\"], api_key: sk-upstream, timeouts: {{ idle: 1s }} }}\nmodels:\n  gpt-4o:\n    targets: [{{ provider: oai }}]\n{}",
        keys_section()
    )
}

pub(crate) async fn chat(sira: &Sira) -> reqwest::Response {
    request(sira, "/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
}

// === the provider's side ===

#[tokio::test]
async fn informational_responses_before_the_answer_are_skipped() {
    let upstream = RawUpstream::start(|stream, _| {
        let body = chat_json();
        let reply = format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        send(stream, reply.as_bytes())
    });
    let sira = Sira::start(&config(), &upstream.url);
    for _ in 0..2 {
        let resp = chat(&sira).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("link").is_none());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "hi");
    }
    // The connection carried both exchanges: the 1xx left it in step.
    assert_eq!(upstream.connections(), 1);
    let log = sira.wait_access_log(2);
    assert_eq!(log[1]["input_tokens"], 3);
}

#[tokio::test]
async fn a_body_short_of_its_content_length_never_reaches_the_client_as_complete() {
    let upstream = RawUpstream::start(|stream, _| {
        let body = chat_json();
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
            body.len() + 100,
            body
        );
        send(stream, reply.as_bytes());
        false
    });
    let sira = Sira::start(&config(), &upstream.url);
    let received = receive(chat(&sira).await).await;
    assert!(!received.complete, "{}", received.text);
    let log = sira.wait_access_log(1);
    assert!(
        log[0]["error"].as_str().unwrap().contains("cut short"),
        "{}",
        log[0]
    );
}

#[tokio::test]
async fn a_chunked_body_without_its_last_chunk_never_reaches_the_client_as_complete() {
    let upstream = RawUpstream::start(|stream, _| {
        send(
            stream,
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"id\"\r\n",
        );
        false
    });
    let sira = Sira::start(&config(), &upstream.url);
    let received = receive(chat(&sira).await).await;
    assert!(!received.complete, "{}", received.text);
    // Over a raw connection: no terminating chunk, and the connection is closed.
    let body = chat_body("gpt-4o");
    let head = chat_head("", body.len());
    let reply = exchange(
        sira.addr,
        &[(head.as_bytes(), NOW), (body.as_bytes(), NOW)],
        Duration::from_secs(5),
    );
    assert_eq!(reply.status(), 200);
    assert!(reply.closed, "{}", reply.text);
    assert!(!reply.text.ends_with("0\r\n\r\n"), "{}", reply.text);
}

#[tokio::test]
async fn a_body_that_ends_with_its_connection_is_complete_only_if_it_is_whole() {
    // No length, no chunks: the body ends when the provider closes the connection. Only the
    // body itself tells a cut from an end: whole JSON, or the stream's last event.
    let upstream = RawUpstream::start(|stream, index| {
        let head = |kind: &str| {
            format!("HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\nconnection: close\r\n\r\n")
        };
        let chunk = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
        let reply = match index {
            0 => head("application/json") + &chat_json()[..40],
            1 => head("application/json") + &chat_json(),
            2 => head("text/event-stream") + chunk,
            _ => head("text/event-stream") + chunk + "data: [DONE]\n\n",
        };
        send(stream, reply.as_bytes());
        false
    });
    let sira = Sira::start(&config(), &upstream.url);
    let cut = receive(chat(&sira).await).await;
    assert!(!cut.complete, "{}", cut.text);
    let whole = receive(chat(&sira).await).await;
    assert!(whole.complete, "{}", whole.text);
    let stream = |sira: &Sira| {
        request(sira, "/v1/chat/completions")
            .json(&json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    let cut = receive(stream(&sira).await.unwrap()).await;
    assert!(!cut.complete, "{}", cut.text);
    assert!(cut.text.contains("before its last event"), "{}", cut.text);
    let whole = receive(stream(&sira).await.unwrap()).await;
    assert!(whole.complete, "{}", whole.text);
    assert!(whole.text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn a_reset_mid_body_never_reaches_the_client_as_complete() {
    // The provider does not read the request body, answers in part and closes: the unread
    // body makes the kernel reset the connection.
    let upstream = RawUpstream::start_with(false, |stream, _| {
        std::thread::sleep(Duration::from_millis(50));
        send(
            stream,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        send(stream, b"1c\r\ndata: {\"choices\":[],\"x\":1}\n\n\r\n");
        false
    });
    let sira = Sira::start(&config(), &upstream.url);
    let received = send_receive(request(&sira, "/v1/chat/completions").json(
        &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    ))
    .await;
    assert!(!received.complete, "{}", received.text);
    assert!(
        received.text.contains("\"error\""),
        "the stream ends with the surface's error event: {}",
        received.text
    );
}

#[tokio::test]
async fn an_invalid_response_header_is_a_502_that_quotes_none_of_it() {
    // A broken provider that echoes the request (the provider key with it) into a header
    // that is not valid HTTP.
    let upstream = RawUpstream::start(|stream, _| {
        send(
            stream,
            b"HTTP/1.1 200 OK\r\nset-cookie: session=internal-cookie\r\nx-echo: Bearer sk-upstream\r\nbad header line\r\n\r\n",
        );
        false
    });
    let sira = Sira::start(&config(), &upstream.url);
    let resp = chat(&sira).await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    for secret in ["internal-cookie", "sk-upstream", "bad header"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let log = sira.wait_access_log(1);
    let line = log[0].to_string();
    assert!(
        !line.contains("sk-upstream") && !line.contains("internal-cookie"),
        "{line}"
    );
    assert!(!sira.stderr().contains("sk-upstream"));
}

#[tokio::test]
async fn a_provider_silent_mid_body_is_cut_and_its_connection_never_reused() {
    // The first answer stops halfway and the provider keeps the connection open: after the
    // idle timeout the client's response is broken off, and the half-read connection is
    // not pooled (the next request opens a new one).
    let upstream = RawUpstream::start(|stream, index| {
        let body = chat_json();
        if index == 0 {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            send(stream, head.as_bytes());
            send(stream, &body.as_bytes()[..10]);
            // Far past the idle timeout, so that a loaded machine's delays cannot make the
            // rest arrive in time.
            std::thread::sleep(Duration::from_secs(6));
            send(stream, &body.as_bytes()[10..]);
            return true;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        send(stream, reply.as_bytes())
    });
    let sira = Sira::start(&config(), &upstream.url);
    let started = Instant::now();
    let received = receive(chat(&sira).await).await;
    assert!(!received.complete);
    assert!(started.elapsed() < Duration::from_millis(4000));
    let resp = chat(&sira).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn over_http2_a_broken_stream_is_reset_after_its_error_event() {
    let mock = sira_mock::MockProvider::start();
    let sira = Sira::start(&config(), &mock.url());
    let h2 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-mock-fail-after", "2")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let received = receive(resp).await;
    assert!(!received.complete, "{}", received.text);
    assert!(received.text.contains("upstream"), "{}", received.text);
    // The connection itself lives on: another request on it is served.
    let resp = h2
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn timeouts_total_bounds_a_stream_and_the_wait_for_an_answer() {
    let mock = sira_mock::MockProvider::start();
    let config = config().replace("timeouts: { idle: 1s }", "timeouts: { total: 1s }");
    let sira = Sira::start(&config, &mock.url());
    let started = Instant::now();
    let received = send_receive(
        request(&sira, "/v1/chat/completions")
            .header("x-mock-events", "40")
            .header("x-mock-delay-ms", "200")
            .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    let took = started.elapsed();
    assert!(!received.complete);
    assert!(received.text.contains("\"error\""), "{}", received.text);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(4000),
        "{took:?}"
    );
    let started = Instant::now();
    let resp = request(&sira, "/v1/chat/completions")
        .header("x-mock-hang-ms", "9000")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(4000));
}

// === the client's side ===

#[tokio::test]
async fn bytes_after_a_body_wait_for_their_turn_instead_of_ending_the_request() {
    let mock = sira_mock::MockProvider::start();
    let sira = Sira::start(&config(), &mock.url());
    let body = chat_body("gpt-4o");
    let slow = chat_head("x-mock-hang-ms: 400\r\n", body.len());
    let next = chat_head("", body.len());
    // The first request is still waiting for its answer when a stray CRLF and the next
    // request arrive on the same connection.
    let reply = exchange(
        sira.addr,
        &[
            (slow.as_bytes(), NOW),
            (body.as_bytes(), NOW),
            (b"\r\n", Duration::from_millis(100)),
            (next.as_bytes(), Duration::from_millis(50)),
            (body.as_bytes(), NOW),
        ],
        Duration::from_secs(3),
    );
    assert_eq!(
        reply.text.matches("HTTP/1.1 200 OK").count(),
        2,
        "{}",
        reply.text
    );
    let log = sira.wait_access_log(2);
    assert_eq!(log[0]["client_gone"], false, "{}", log[0]);
    assert_eq!(log[0]["status"], 200);
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn a_client_that_expects_100_continue_keeps_its_connection() {
    let mock = sira_mock::MockProvider::start();
    let sira = Sira::start(&config(), &mock.url());
    let body = chat_body("gpt-4o");
    let waiting = chat_head("expect: 100-continue\r\n", body.len());
    let next = chat_head("", body.len());
    // The body follows the interim answer, then a second request on the same connection.
    let reply = exchange(
        sira.addr,
        &[
            (waiting.as_bytes(), NOW),
            (body.as_bytes(), Duration::from_millis(200)),
            (next.as_bytes(), Duration::from_millis(300)),
            (body.as_bytes(), NOW),
        ],
        Duration::from_secs(2),
    );
    assert!(
        reply.text.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{}",
        reply.text
    );
    assert_eq!(
        reply.text.matches("HTTP/1.1 200 OK").count(),
        2,
        "{}",
        reply.text
    );
    assert!(!reply
        .text
        .to_ascii_lowercase()
        .contains("connection: close"));
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn a_client_that_asks_to_close_gets_its_connection_closed() {
    let mock = sira_mock::MockProvider::start();
    let sira = Sira::start(&config(), &mock.url());
    let body = chat_body("gpt-4o");
    let closing = chat_head("connection: close\r\n", body.len());
    let old = chat_head("", body.len()).replace("HTTP/1.1", "HTTP/1.0");
    for head in [closing, old] {
        let reply = exchange(
            sira.addr,
            &[(head.as_bytes(), NOW), (body.as_bytes(), NOW)],
            Duration::from_secs(3),
        );
        assert_eq!(reply.status(), 200, "{}", reply.text);
        assert!(reply.closed, "{}", reply.text);
        assert!(
            reply.elapsed < Duration::from_secs(2),
            "{:?}",
            reply.elapsed
        );
    }
}

fn edge_config() -> &'static str {
    "  timeouts: { header: 1s, body: 1s, write: 1s }\n"
}

#[tokio::test]
async fn a_header_dripping_in_is_cut_off_with_408() {
    let upstream = RawUpstream::start(|_, _| false);
    let sira = Sira::start_with_server(&config(), &upstream.url, edge_config());
    let head = chat_head("", 10);
    let parts: Vec<(&[u8], Duration)> = head
        .as_bytes()
        .chunks(1)
        .map(|b| (b, Duration::from_millis(200)))
        .collect();
    let started = Instant::now();
    let reply = exchange(sira.addr, &parts[..20], Duration::from_secs(6));
    assert_eq!(reply.status(), 408, "{}", reply.text);
    assert!(reply.closed);
    // From the first byte, not from each byte.
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        reply.elapsed
    );
    assert!(reply.body().contains("request_timeout"), "{}", reply.text);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let upstream = RawUpstream::start(|_, _| false);
    let sira = Sira::start_with_server(&config(), &upstream.url, edge_config());
    let reply = exchange(sira.addr, &[], Duration::from_secs(6));
    assert!(reply.closed);
    assert!(
        reply.elapsed < Duration::from_secs(3),
        "{:?}",
        reply.elapsed
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_like_an_http1_one() {
    let upstream = RawUpstream::start(|_, _| false);
    let sira = Sira::start_with_server(
        &config(),
        &upstream.url,
        "  timeouts: { header: 1s, keepalive: 1s }\n",
    );
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let reply = exchange(sira.addr, &[(&hello, NOW)], Duration::from_secs(6));
    assert!(reply.closed, "still open after {:?}", reply.elapsed);
    assert!(
        reply.elapsed < Duration::from_secs(4),
        "{:?}",
        reply.elapsed
    );
}

#[tokio::test]
async fn http2_requests_with_too_many_fields_get_431() {
    let mock = sira_mock::MockProvider::start();
    let sira = Sira::start(&config(), &mock.url());
    let h2 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut request = h2.post(sira.url("/v1/chat/completions")).bearer_auth(KEY_A);
    for i in 0..150 {
        request = request.header(format!("x-h{i}"), "v");
    }
    let resp = request
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let upstream = RawUpstream::start(|_, _| false);
    let sira = Sira::start_with_server(&config(), &upstream.url, edge_config());
    let body = chat_body("gpt-4o");
    let head = chat_head("", body.len());
    let reply = exchange(
        sira.addr,
        &[(head.as_bytes(), NOW), (&body.as_bytes()[..10], NOW)],
        Duration::from_secs(6),
    );
    assert_eq!(reply.status(), 408, "{}", reply.text);
    assert!(reply.closed);
    assert!(reply.elapsed < Duration::from_secs(3));
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_connection_closed() {
    let upstream = RawUpstream::start(|_, _| false);
    let sira = Sira::start(&config(), &upstream.url);
    let body = chat_body("gpt-4o");
    // One 100 KB field, over the default 64 KiB.
    let big = format!("x-big: {}\r\n", "a".repeat(100_000));
    // 3,000 small fields: more than the parser takes at all.
    let many: String = (0..3000).map(|i| format!("x-h{i}: v\r\n")).collect();
    // 150 fields: parsed, but more than the default 100.
    let some: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    for extra in [big, many, some] {
        let head = chat_head(&extra, body.len());
        let reply = exchange(
            sira.addr,
            &[(head.as_bytes(), NOW), (body.as_bytes(), NOW)],
            Duration::from_secs(5),
        );
        assert_eq!(
            reply.status(),
            431,
            "{}",
            &reply.text[..reply.text.len().min(300)]
        );
        assert!(reply.closed);
        let error: Value = serde_json::from_str(reply.body()).unwrap();
        assert_eq!(error["error"]["code"], "request_header_too_large");
    }
    assert_eq!(upstream.requests(), 0);
    let limits = sira
        .metric("sira_buffer_limit_exceeded_total{buffer=\"request_header\"}")
        .await;
    assert_eq!(limits, 3.0);
}

#[tokio::test]
async fn ambiguous_framing_gets_400_and_the_connection_closed() {
    let upstream = RawUpstream::start(|stream, _| {
        let body = chat_json();
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        send(stream, reply.as_bytes())
    });
    let sira = Sira::start(&config(), &upstream.url);
    let body = chat_body("gpt-4o");
    let auth = format!("authorization: Bearer {KEY_A}\r\n");
    let cases = [
        // Content-Length with Transfer-Encoding.
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}content-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len(),
            body.len()
        ),
        // Two different lengths.
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}content-length: {}\r\ncontent-length: 5\r\n\r\n{body}",
            body.len()
        ),
        // A header folded onto two lines (obs-fold).
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}x-folded: a\r\n b\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
        // A request line that is not HTTP.
        "POST /v1/chat/completions HTTP/9 x\r\nhost: s\r\n\r\n".to_owned(),
    ];
    for request in &cases {
        let reply = exchange(
            sira.addr,
            &[(request.as_bytes(), NOW)],
            Duration::from_secs(5),
        );
        assert_eq!(reply.status(), 400, "{request:?} -> {}", reply.text);
        assert!(reply.closed, "{request:?}");
        // The answer says what is wrong without quoting the request (and its key) back.
        assert!(!reply.body().contains(KEY_A), "{}", reply.body());
    }
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn a_request_refused_before_its_body_closes_instead_of_draining_it() {
    let upstream = RawUpstream::start(|_, _| false);
    let sira = Sira::start(&config(), &upstream.url);
    // A wrong key, announcing a 1 GB body of which only a little is sent.
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\nauthorization: Bearer sk-wrong\r\ncontent-length: 1000000000\r\n\r\n";
    let reply = exchange(
        sira.addr,
        &[(head.as_bytes(), NOW), (&[b'x'; 4096], NOW)],
        Duration::from_secs(8),
    );
    assert_eq!(reply.status(), 401, "{}", reply.text);
    assert!(reply
        .text
        .to_ascii_lowercase()
        .contains("connection: close"));
    assert!(reply.closed);
    assert!(
        reply.elapsed < Duration::from_secs(4),
        "{:?}",
        reply.elapsed
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_pin_the_provider_stream() {
    let mock = sira_mock::MockProvider::start();
    let sira = Sira::start_with_server(&config(), &mock.url(), edge_config());
    // A long stream (100,000 events, far more than the socket buffers on the way hold),
    // never read: once the buffers are full sira's writes stall, and after the write
    // timeout the stream is given up and the provider connection closed.
    let body =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]})
            .to_string();
    let head = chat_head("x-mock-events: 100000\r\n", body.len());
    let mut stream = std::net::TcpStream::connect(sira.addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    assert!(
        mock.wait_aborted_async(1, Duration::from_secs(15)).await,
        "the provider stream was never closed"
    );
    let log = sira.wait_access_log(1);
    assert_eq!(log[0]["client_gone"], true, "{}", log[0]);
    drop(stream);
}
