//! Hostile clients: bodies built to break parsers, heads built to smuggle a second request,
//! garbage on a kept-alive connection. Each gets a clear status in its surface's shape, none
//! reaches the provider, and the gateway serves the next honest request as if nothing
//! happened. (Oversized heads, CL+TE, duplicate lengths, obs-fold and slow clients are in
//! `wire.rs`; `alg: none` and forged JWTs in `jwt.rs`.)

use std::time::Duration;

use serde_json::Value;

use crate::raw::{chat_body, chat_head, exchange, RawReply};
use crate::support::{post_chat, start_standard, Sira, KEY_A};

const NOW: Duration = Duration::ZERO;
const WAIT: Duration = Duration::from_secs(5);

fn post(sira: &Sira, path: &str, body: &[u8]) -> RawReply {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: sira\r\nauthorization: Bearer {KEY_A}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    exchange(sira.addr, &[(&request, NOW)], WAIT)
}

/// The error's message in the shape of the surface the path belongs to, or a panic saying
/// why the body is not that shape.
fn error_message(path: &str, body: &str) -> String {
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let message = if path.starts_with("/v1/messages") {
        assert_eq!(json["type"], "error", "{body}");
        &json["error"]["message"]
    } else if path.starts_with("/v1beta") {
        assert_eq!(json["error"]["status"], "INVALID_ARGUMENT", "{body}");
        &json["error"]["message"]
    } else {
        assert_eq!(json["error"]["type"], "invalid_request_error", "{body}");
        &json["error"]["message"]
    };
    message.as_str().unwrap_or_default().to_owned()
}

/// A valid request still gets its answer: the process and its state are unharmed.
async fn still_serves(sira: &Sira) {
    let resp = post_chat(sira, "gpt-4o").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn bodies_built_to_break_parsers_get_400_in_the_surface_shape() {
    let (mock, sira) = start_standard();
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let chat = "/v1/chat/completions";
    let messages = "/v1/messages";
    let gemini = "/v1beta/models/flash:generateContent";
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        // Nesting: the passthrough path skips what it does not read, so only the explicit
        // limit stops 100,000 levels; the translated paths meet the same limit.
        (
            "deep passthrough",
            chat,
            format!(r#"{{"model":"gpt-4o","messages":[],"x":{}}}"#, deep(100_000)).into_bytes(),
            "deeper than 128",
        ),
        (
            "deep translated",
            chat,
            format!(r#"{{"model":"claude","messages":{}}}"#, deep(200)).into_bytes(),
            "deeper than 128",
        ),
        (
            "deep anthropic",
            messages,
            format!(
                r#"{{"model":"gpt-4o","max_tokens":5,"messages":[],"metadata":{}}}"#,
                deep(129)
            )
            .into_bytes(),
            "deeper than 128",
        ),
        (
            "deep gemini",
            gemini,
            format!(r#"{{"contents":{}}}"#, deep(5000)).into_bytes(),
            "deeper than 128",
        ),
        // Invalid UTF-8, in a path that would forward it unread and in one that translates.
        (
            "invalid utf-8 passthrough",
            chat,
            b"{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"a\xff\xfe\"}]}"
                .to_vec(),
            "UTF-8",
        ),
        (
            "invalid utf-8 translated",
            messages,
            b"{\"model\":\"claude\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}"
                .to_vec(),
            "UTF-8",
        ),
        // Duplicate keys: a second `model` must not route one way and bill another.
        (
            "duplicate model",
            chat,
            br#"{"model":"gpt-4o","model":"claude","messages":[]}"#.to_vec(),
            "duplicate field `model`",
        ),
        (
            "duplicate stream",
            chat,
            br#"{"model":"gpt-4o","stream":false,"stream":true,"messages":[]}"#.to_vec(),
            "duplicate field `stream`",
        ),
        // Numbers: out of every range sira reads them in.
        (
            "max_tokens past f64",
            messages,
            br#"{"model":"claude","max_tokens":1e400,"messages":[]}"#.to_vec(),
            "number out of range",
        ),
        (
            "max_tokens past u64",
            chat,
            br#"{"model":"claude","max_tokens":184467440737095516160000,"messages":[]}"#.to_vec(),
            "expected u64",
        ),
        (
            "negative max_tokens",
            messages,
            br#"{"model":"claude","max_tokens":-1,"messages":[]}"#.to_vec(),
            "-1",
        ),
        // Not JSON, or not an object.
        (
            "cut short",
            chat,
            br#"{"model":"gpt-4o","messages":[{"role":"us"#.to_vec(),
            "EOF",
        ),
        (
            "an array",
            messages,
            br#"[{"model":"claude"}]"#.to_vec(),
            "",
        ),
        ("a NUL byte", chat, b"{\"model\":\"gpt-4o\0\"}".to_vec(), ""),
    ];
    for (what, path, body, says) in &cases {
        let reply = post(&sira, path, body);
        assert_eq!(reply.status(), 400, "{what}: {}", reply.text);
        let message = error_message(path, reply.body());
        assert!(message.contains(says), "{what}: {message}");
    }
    assert!(
        mock.requests().is_empty(),
        "reached the provider: {:?}",
        mock.requests()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect::<Vec<_>>()
    );
    still_serves(&sira).await;
}

#[tokio::test]
async fn heads_that_could_smuggle_a_request_get_400_and_the_connection_closed() {
    let (mock, sira) = start_standard();
    let body = chat_body("gpt-4o");
    let len = body.len();
    let auth = format!("authorization: Bearer {KEY_A}\r\n");
    let cases = [
        // Bare LF line ends: a front proxy that needs CRLF reads other fields than sira.
        format!(
            "POST /v1/chat/completions HTTP/1.1\nhost: s\n{}content-length: {len}\n\n{body}",
            auth.replace("\r\n", "\n")
        ),
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}x-a: b\ncontent-length: {len}\r\n\r\n{body}"
        ),
        // Transfer codings sira cannot frame by.
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}transfer-encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}transfer-encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        // Lengths that are not plain digits.
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}content-length: +{len}\r\n\r\n{body}"),
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}content-length: {len}x\r\n\r\n{body}"),
        // Two Host fields, a field name with a space before its colon, a NUL in a value.
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\nhost: b\r\n{auth}content-length: {len}\r\n\r\n{body}"),
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}content-length : {len}\r\n\r\n{body}"),
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}x-a: a\0b\r\ncontent-length: {len}\r\n\r\n{body}"),
        // A chunk size that is not hex, and one past u64: the body's end is unknowable.
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}transfer-encoding: chunked\r\n\r\nzz\r\n{body}\r\n0\r\n\r\n"),
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n{auth}transfer-encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n{body}\r\n0\r\n\r\n"),
    ];
    for request in &cases {
        // What a smuggler puts behind the first request: it must never be answered.
        let smuggled = format!("{request}{}{body}", chat_head("", len));
        let reply = exchange(sira.addr, &[(smuggled.as_bytes(), NOW)], WAIT);
        assert_eq!(reply.status(), 400, "{request:?} -> {}", reply.text);
        assert!(reply.closed, "{request:?} left the connection open");
        assert_eq!(
            reply.text.matches("HTTP/1.1 ").count(),
            1,
            "{request:?}: the smuggled request was answered: {}",
            reply.text
        );
        assert!(!reply.text.contains(KEY_A));
    }
    assert!(mock.requests().is_empty());
    still_serves(&sira).await;
}

#[tokio::test]
async fn garbage_pipelined_behind_a_good_request_is_refused_after_its_answer() {
    let (mock, sira) = start_standard();
    let body = chat_body("gpt-4o");
    let mut bytes = format!("{}{body}", chat_head("", body.len())).into_bytes();
    bytes
        .extend_from_slice(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n");
    let reply = exchange(sira.addr, &[(&bytes, NOW)], WAIT);
    assert!(reply.text.starts_with("HTTP/1.1 200 "), "{}", reply.text);
    let second = reply
        .text
        .match_indices("HTTP/1.1 ")
        .nth(1)
        .map(|(at, _)| at);
    let second = &reply.text[second.expect("no answer to the garbage")..];
    assert!(second.starts_with("HTTP/1.1 400 "), "{second}");
    assert!(reply.closed);
    assert_eq!(mock.requests().len(), 1);
    still_serves(&sira).await;
}

#[tokio::test]
async fn unknown_methods_and_targets_are_refused_without_reaching_a_provider() {
    let (mock, sira) = start_standard();
    let cases: [(&str, u16); 6] = [
        // A method no route has: 405 with the methods the route takes.
        (
            "BREW /v1/chat/completions HTTP/1.1\r\nhost: s\r\ncontent-length: 0\r\n\r\n",
            405,
        ),
        // A method that is not a token at all.
        (
            "PO(ST /v1/chat/completions HTTP/1.1\r\nhost: s\r\n\r\n",
            400,
        ),
        // Dot segments are not resolved into another route.
        (
            "POST /v1/../admin/config HTTP/1.1\r\nhost: s\r\ncontent-length: 2\r\n\r\n{}",
            404,
        ),
        // An absolute target naming another host.
        (
            "POST http://169.254.169.254/v1/chat/completions HTTP/1.1\r\nhost: s\r\ncontent-length: 2\r\n\r\n{}",
            400,
        ),
        // An asterisk-form OPTIONS and a CONNECT tunnel request: no route has such a target.
        ("OPTIONS * HTTP/1.1\r\nhost: s\r\n\r\n", 404),
        ("CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n", 404),
    ];
    for (request, status) in cases {
        // Each closes after its answer: the read ends there rather than at a timer.
        let request = request.replacen("\r\n", "\r\nconnection: close\r\n", 1);
        let reply = exchange(sira.addr, &[(request.as_bytes(), NOW)], WAIT);
        assert_eq!(reply.status(), status, "{request:?} -> {}", reply.text);
        let json: Value = serde_json::from_str(reply.body())
            .unwrap_or_else(|e| panic!("{request:?}: {e}: {}", reply.text));
        assert!(json["error"]["message"].is_string(), "{json}");
    }
    assert!(mock.requests().is_empty());
    still_serves(&sira).await;
}
