//! Upstream connection reuse when the provider closes idle connections: sira must neither
//! hand a client an error for a connection the provider closed, nor open a new connection
//! for every request.
//!
//! The provider here is a scripted HTTP/1.1 server on a raw socket, because what matters is
//! exactly when it closes a connection, which no HTTP server library lets a test decide.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{keys_section, post_chat, Sira};

/// What the provider does with the n-th request (counting from 0) on one connection.
#[derive(Clone, Copy)]
enum Step {
    /// Answer, keep the connection open.
    Answer,
    /// Answer, then close the connection (an idle timeout of ~0).
    AnswerThenClose,
    /// Read the request and close without answering: the provider may have acted on it.
    CloseUnanswered,
    /// Read the head only and close with the body unread (the kernel resets the connection):
    /// the request never arrived whole.
    ResetUnread,
}

struct ScriptedProvider {
    url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl ScriptedProvider {
    /// `script(connection index, request index on it)` decides each step.
    fn start(script: fn(usize, usize) -> Step) -> ScriptedProvider {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (conns, reqs) = (connections.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let index = conns.fetch_add(1, Ordering::SeqCst);
                let reqs = reqs.clone();
                std::thread::spawn(move || serve(stream, index, script, &reqs));
            }
        });
        ScriptedProvider {
            url,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(
    stream: TcpStream,
    connection: usize,
    script: fn(usize, usize) -> Step,
    requests: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for index in 0.. {
        let Some(body_len) = read_request_head(&mut reader) else {
            return;
        };
        let step = script(connection, index);
        if matches!(step, Step::ResetUnread) {
            return;
        }
        let mut body = vec![0u8; body_len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        if matches!(step, Step::CloseUnanswered) {
            return;
        }
        let answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        })
        .to_string();
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
        if matches!(step, Step::AnswerThenClose) {
            return;
        }
    }
}

/// Reads a request head; returns its content length, `None` at end of stream.
fn read_request_head(reader: &mut BufReader<TcpStream>) -> Option<usize> {
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(length);
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
}

fn start_sira(provider: &ScriptedProvider) -> Sira {
    let config = format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"{{mock}}\"], api_key: sk-upstream }}\nmodels:\n  gpt-4o:\n    targets: [{{ provider: oai }}]\n{}",
        keys_section()
    );
    Sira::start(&config, &provider.url)
}

async fn chat(sira: &Sira) -> (u16, Value) {
    let resp = post_chat(sira, "gpt-4o").await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_connection_the_provider_closed_while_idle_is_not_reused() {
    let provider = ScriptedProvider::start(|_, _| Step::AnswerThenClose);
    let sira = start_sira(&provider);
    for round in 0..3 {
        let (status, body) = chat(&sira).await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert_eq!(body["choices"][0]["message"]["content"], "hi");
        // Time for the provider's FIN to arrive before the next request.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(provider.requests(), 3);
    assert_eq!(provider.connections(), 3);
}

#[tokio::test]
async fn a_request_the_provider_read_then_dropped_is_not_sent_again() {
    // The first connection answers once, then reads the next request whole and closes
    // without answering. The provider may have started the generation: even with retries
    // configured, sira must not send it again, here or anywhere.
    let provider = ScriptedProvider::start(|connection, request| {
        if connection == 0 && request == 1 {
            Step::CloseUnanswered
        } else {
            Step::Answer
        }
    });
    let config = format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"{{mock}}\"], api_key: sk-upstream }}\nmodels:\n  gpt-4o:\n    targets: [{{ provider: oai }}]\n    retry: {{ attempts: 3, backoff: 10ms }}\n{}",
        keys_section()
    );
    let sira = Sira::start(&config, &provider.url);
    let (status, _) = chat(&sira).await;
    assert_eq!(status, 200);
    let (status, body) = chat(&sira).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error");
    assert_eq!(provider.requests(), 2, "the dropped request was sent again");
    // The next request opens a new connection.
    let (status, _) = chat(&sira).await;
    assert_eq!(status, 200);
    assert_eq!(provider.connections(), 2);
    let log = sira.wait_access_log(3);
    assert_eq!(log[1]["attempts"], 1, "{}", log[1]);
}

#[tokio::test]
async fn a_request_that_could_not_be_written_on_a_stale_connection_goes_again_on_a_new_one() {
    // The first connection answers once, then takes the head of the next request and resets
    // with its body unread, as a provider whose idle timeout fires as the request arrives:
    // writing the body fails, so the provider never had the request whole, and sira sends it
    // again on a new connection. The body is larger than every socket buffer on the way, so
    // the write is still going on when the reset arrives.
    let provider = ScriptedProvider::start(|connection, request| {
        if connection == 0 && request == 1 {
            Step::ResetUnread
        } else {
            Step::Answer
        }
    });
    let config = format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"{{mock}}\"], api_key: sk-upstream }}\nmodels:\n  gpt-4o:\n    targets: [{{ provider: oai }}]\n{}",
        keys_section()
    );
    let sira = Sira::start_with_server(&config, &provider.url, "  max_request_body: 64MiB\n");
    let (status, _) = chat(&sira).await;
    assert_eq!(status, 200);
    let big = "x".repeat(40 << 20);
    let resp = crate::support::client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(crate::support::KEY_A)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": big}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(
        status, 200,
        "the stale connection cost the client its request: {body}"
    );
    assert_eq!(body["usage"]["total_tokens"], 4);
    assert_eq!(provider.connections(), 2);
    // Only whole requests count: the first, then the big one on the new connection.
    assert_eq!(provider.requests(), 2);
    let log = sira.wait_access_log(2);
    assert_eq!(
        log[1]["attempts"], 1,
        "a resend is not another attempt: {}",
        log[1]
    );
}
