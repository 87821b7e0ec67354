//! The client's side of the HTTP/1 wire, as sira's own server session keeps it: requests
//! pipelined on one connection answered in order, chunked request bodies, HEAD, HTTP/1.0
//! keep-alive, a body cut short, and a next request that arrives while the previous one
//! still waits for its provider. (Hostile heads are in `adversarial.rs` and `wire.rs`.)

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use sira_mock::MockProvider;

use crate::raw::{chat_body, chat_head, exchange, RawReply};
use crate::support::{post_chat, standard_config, start_standard, Sira, KEY_A};

const NOW: Duration = Duration::ZERO;
const WAIT: Duration = Duration::from_secs(5);

/// The responses in `reply`, each from its status line on.
fn answers(reply: &RawReply) -> Vec<&str> {
    let starts: Vec<usize> = reply
        .text
        .match_indices("HTTP/1.")
        .map(|(at, _)| at)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, at)| &reply.text[*at..starts.get(i + 1).copied().unwrap_or(reply.text.len())])
        .collect()
}

/// `body` as chunks of `size` bytes, each size line with an extension, then trailers.
fn chunked(body: &str, size: usize) -> String {
    let mut out = String::new();
    for piece in body.as_bytes().chunks(size) {
        out.push_str(&format!("{:x};ext=1\r\n", piece.len()));
        out.push_str(std::str::from_utf8(piece).unwrap());
        out.push_str("\r\n");
    }
    out.push_str("0\r\nx-trailer: dropped\r\n\r\n");
    out
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (mock, sira) = start_standard();
    let first = chat_body("gpt-4o");
    let second = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"sent in chunks"}]}"#;
    let mut bytes = format!("{}{first}", chat_head("", first.len())).into_bytes();
    // A chunked body, with extensions and trailers, between two length-framed ones.
    bytes.extend_from_slice(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: sira\r\nauthorization: Bearer {KEY_A}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{}",
            chunked(second, 7)
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(
        format!("HEAD /v1/models HTTP/1.1\r\nhost: sira\r\nauthorization: Bearer {KEY_A}\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    let reply = exchange(sira.addr, &[(&bytes, NOW)], WAIT);
    let answers = answers(&reply);
    assert_eq!(answers.len(), 3, "{}", reply.text);
    assert!(answers[0].starts_with("HTTP/1.1 200 "), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 200 "), "{}", answers[1]);
    // Whatever its status, a HEAD answer has no body, though its length says how long a
    // GET's would be.
    assert!(answers[2].starts_with("HTTP/1.1 "), "{}", answers[2]);
    assert!(
        answers[2].ends_with("\r\n\r\n"),
        "HEAD is answered without a body: {}",
        answers[2]
    );
    assert!(
        answers[2].contains("connection: close\r\n"),
        "{}",
        answers[2]
    );
    for answer in &answers {
        assert!(answer.contains("\r\ndate: "), "{answer}");
    }
    assert!(reply.closed, "closed after the request that asked for it");
    let asked = mock.requests();
    assert_eq!(asked.len(), 2);
    assert_eq!(
        asked[1].json()["messages"][0]["content"],
        "sent in chunks",
        "the chunked body reached the provider whole"
    );
}

#[tokio::test]
async fn an_http_1_0_client_keeps_its_connection_only_when_it_asks() {
    let (_mock, sira) = start_standard();
    let body = chat_body("gpt-4o");
    let request = |connection: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nauthorization: Bearer {KEY_A}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{connection}\r\n{body}",
            body.len()
        )
    };
    let kept = request("connection: keep-alive\r\n");
    let mut both = kept.clone().into_bytes();
    both.extend_from_slice(request("").as_bytes());
    let reply = exchange(sira.addr, &[(&both, NOW)], WAIT);
    let answers = answers(&reply);
    assert_eq!(answers.len(), 2, "{}", reply.text);
    assert!(
        answers[0].contains("connection: keep-alive\r\n"),
        "{}",
        answers[0]
    );
    assert!(answers[0].contains("content-length: "), "{}", answers[0]);
    assert!(
        answers[1].contains("connection: close\r\n"),
        "{}",
        answers[1]
    );
    assert!(reply.closed);
}

#[tokio::test]
async fn a_body_cut_short_never_reaches_the_provider() {
    let (mock, sira) = start_standard();
    let body = chat_body("gpt-4o");
    let mut stream = TcpStream::connect(sira.addr).unwrap();
    let head = chat_head("", body.len() + 100);
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.set_read_timeout(Some(WAIT)).expect("a read timeout");
    let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(mock.requests().is_empty());
    let resp = post_chat(&sira, "gpt-4o").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_request_sent_while_the_previous_one_waits_is_answered_next() {
    let (mock, sira) = start_standard();
    let body = chat_body("gpt-4o");
    let slow = format!("{}{body}", chat_head("x-mock-hang-ms: 300\r\n", body.len()));
    let next = format!("{}{body}", chat_head("connection: close\r\n", body.len()));
    // The second request arrives while sira waits for the provider's answer to the first:
    // it is kept, not taken for a client that went away.
    let reply = exchange(
        sira.addr,
        &[
            (slow.as_bytes(), NOW),
            (next.as_bytes(), Duration::from_millis(100)),
        ],
        WAIT,
    );
    let answers = answers(&reply);
    assert_eq!(answers.len(), 2, "{}", reply.text);
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 200 ")),
        "{}",
        reply.text
    );
    assert!(reply.closed);
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn a_next_head_begun_in_the_same_packet_has_the_header_deadline() {
    let mock = MockProvider::start();
    let sira = Sira::start_with_server(
        &standard_config(),
        &mock.url(),
        "  timeouts: { header: 1s, keepalive: 30s }\n",
    );
    let body = chat_body("gpt-4o");
    // A whole request, then the first byte of the next one, then silence: the second head's
    // time runs from the packet it began in, not from a read that never comes.
    let bytes = format!("{}{body}G", chat_head("", body.len()));
    let reply = exchange(sira.addr, &[(bytes.as_bytes(), NOW)], WAIT);
    let answers = answers(&reply);
    assert_eq!(answers.len(), 2, "{}", reply.text);
    assert!(answers[0].starts_with("HTTP/1.1 200 "), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 408 "), "{}", answers[1]);
    assert!(reply.closed);
    assert!(
        reply.elapsed < Duration::from_secs(3),
        "{:?}",
        reply.elapsed
    );

    // A stray CRLF after a body is no request: the connection waits idle, as any other.
    let sira = Sira::start_with_server(
        &standard_config(),
        &mock.url(),
        "  timeouts: { header: 30s, keepalive: 1s }\n",
    );
    let bytes = format!("{}{body}\r\n", chat_head("", body.len()));
    let reply = exchange(sira.addr, &[(bytes.as_bytes(), NOW)], WAIT);
    assert_eq!(reply.text.matches("HTTP/1.1 ").count(), 1, "{}", reply.text);
    assert!(reply.closed, "idle past the keep-alive timeout");
    assert!(
        reply.elapsed < Duration::from_secs(3),
        "{:?}",
        reply.elapsed
    );
}
