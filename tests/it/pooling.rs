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
    /// Read the request and close without answering: the idle timeout fired as it arrived.
    CloseUnanswered,
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
        let mut body = vec![0u8; body_len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let step = script(connection, index);
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
async fn a_request_that_meets_a_connection_closing_under_it_goes_again_on_a_new_one() {
    // The first connection answers once, then drops the next request unanswered, as a
    // provider does when its idle timeout fires just as the request arrives.
    let provider = ScriptedProvider::start(|connection, request| {
        if connection == 0 && request == 1 {
            Step::CloseUnanswered
        } else {
            Step::Answer
        }
    });
    let sira = start_sira(&provider);
    let (status, _) = chat(&sira).await;
    assert_eq!(status, 200);
    let (status, body) = chat(&sira).await;
    assert_eq!(
        status, 200,
        "the stale connection cost the client its request: {body}"
    );
    assert_eq!(body["usage"]["total_tokens"], 4);
    assert_eq!(provider.connections(), 2);
    // The dropped request, then the same request on the new connection.
    assert_eq!(provider.requests(), 3);
    // Later requests reuse the new connection.
    let (status, _) = chat(&sira).await;
    assert_eq!(status, 200);
    assert_eq!(provider.connections(), 2);
    let log = sira.wait_access_log(3);
    assert_eq!(log[1]["input_tokens"], 3, "accounted once: {}", log[1]);
    assert_eq!(
        log[1]["attempts"], 1,
        "a resend is not another attempt: {}",
        log[1]
    );
}
