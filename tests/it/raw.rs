//! Raw sockets on both sides of sira: an upstream that misbehaves exactly as a test says
//! (informational responses, bodies cut short, resets, silence), and a client that sends
//! exactly the bytes a test writes (slow, oversized or ambiguous requests). No HTTP library
//! lets a test decide those.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a raw upstream does with one request, given the connection and the request's index
/// (counting from 0 over all connections). Returns whether to keep the connection for
/// another request.
pub type Handler = dyn Fn(&mut TcpStream, usize) -> bool + Send + Sync;

/// An HTTP/1.1 upstream on a raw socket.
pub struct RawUpstream {
    pub url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl RawUpstream {
    /// Reads each request (head and body) and hands the connection to `handler`.
    pub fn start(handler: impl Fn(&mut TcpStream, usize) -> bool + Send + Sync + 'static) -> Self {
        Self::start_with(true, handler)
    }

    /// Like [`RawUpstream::start`]; with `read_body` false only the head is read, so that
    /// closing the connection afterwards resets it (unread data).
    pub fn start_with(
        read_body: bool,
        handler: impl Fn(&mut TcpStream, usize) -> bool + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (conns, reqs) = (connections.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                conns.fetch_add(1, Ordering::SeqCst);
                let (reqs, handler) = (reqs.clone(), handler.clone());
                std::thread::spawn(move || serve(stream, read_body, &reqs, &*handler));
            }
        });
        RawUpstream {
            url,
            connections,
            requests,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: TcpStream, read_body: bool, requests: &AtomicUsize, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        if read_body {
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        let index = requests.fetch_add(1, Ordering::SeqCst);
        if !handler(&mut stream, index) {
            return;
        }
    }
}

/// A JSON chat completion as OpenAI sends it.
pub fn chat_json() -> String {
    serde_json::json!({
        "id": "chatcmpl-raw", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    })
    .to_string()
}

/// An OpenAI provider whose every answer is a JSON chat completion of `content`.
pub fn answering_chat(content: &'static str) -> RawUpstream {
    RawUpstream::start(move |stream, _| {
        let answer = serde_json::json!({"id": "chatcmpl-r", "object": "chat.completion",
            "created": 1, "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}})
        .to_string();
        send(
            stream,
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            )
            .as_bytes(),
        )
    })
}

/// Writes `bytes`; a failed write is the peer's doing and ends the handler quietly.
pub fn send(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    stream
        .write_all(bytes)
        .and_then(|()| stream.flush())
        .is_ok()
}

/// What a raw client got back.
pub struct RawReply {
    pub text: String,
    /// The server closed the connection (as opposed to the read timing out).
    pub closed: bool,
    pub elapsed: Duration,
}

impl RawReply {
    pub fn status(&self) -> u16 {
        self.text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// Connects to `addr`, writes each part after its pause, then reads until the server closes
/// the connection or `wait` passes without it doing so.
pub fn exchange(addr: SocketAddr, parts: &[(&[u8], Duration)], wait: Duration) -> RawReply {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    for (bytes, pause) in parts {
        std::thread::sleep(*pause);
        // The server may have answered and closed already: what it sent is still readable.
        if stream.write_all(bytes).is_err() {
            break;
        }
    }
    read_all(stream, started, wait)
}

fn read_all(mut stream: TcpStream, started: Instant, wait: Duration) -> RawReply {
    let deadline = Instant::now() + wait;
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    RawReply {
        text: String::from_utf8_lossy(&received).into_owned(),
        closed,
        elapsed: started.elapsed(),
    }
}

/// A chat request head for `model` with the team-a key and these extra header lines.
pub fn chat_head(extra: &str, body_len: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sira\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n{extra}\r\n",
        crate::support::KEY_A
    )
}

/// A small chat request body for `model`.
pub fn chat_body(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"x"}}]}}"#)
}
