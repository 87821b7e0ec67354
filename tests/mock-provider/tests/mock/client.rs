//! A minimal raw HTTP/1.1 client over `TcpStream`: it shows exactly what the mock wrote,
//! including chunk boundaries and a missing chunked terminator.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sizes of the chunks of a chunked body, in order.
    pub chunks: Vec<usize>,
    /// False when the connection closed before the chunked terminator.
    pub complete: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: mock\r\ncontent-length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            req.push_str("content-type: application/json\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.stream.write_all(req.as_bytes()).await.unwrap();
    }

    /// Reads more bytes; false on EOF or reset.
    async fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        match self.stream.read(&mut tmp).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Status line and headers; `None` if the connection closed first.
    pub async fn head(&mut self) -> Option<(u16, Vec<(String, String)>)> {
        let status_line = self.line().await?;
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Some((status, headers));
            }
            let (k, v) = line.split_once(':')?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }

    /// Next chunk of a chunked body: `Some(Some(bytes))`, `Some(None)` at the terminator, `None`
    /// if the connection ended first.
    pub async fn chunk(&mut self) -> Option<Option<Vec<u8>>> {
        let size_line = self.line().await?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            self.line().await?;
            return Some(None);
        }
        let data = self.exact(size).await?;
        self.line().await?;
        Some(Some(data))
    }

    pub async fn response(&mut self) -> Resp {
        let (status, headers) = self.head().await.expect("response head");
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut resp = Resp {
            status,
            headers: headers.clone(),
            body: Vec::new(),
            chunks: Vec::new(),
            complete: true,
        };
        if let Some(len) = find("content-length") {
            resp.body = self.exact(len.parse().unwrap()).await.expect("body");
        } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                match self.chunk().await {
                    Some(Some(data)) => {
                        resp.chunks.push(data.len());
                        resp.body.extend_from_slice(&data);
                    }
                    Some(None) => break,
                    None => {
                        resp.complete = false;
                        break;
                    }
                }
            }
        }
        resp
    }
}

/// One request on a fresh connection.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut conn = Conn::connect(addr).await;
    conn.send(method, path, headers, body).await;
    tokio::time::timeout(Duration::from_secs(10), conn.response())
        .await
        .expect("response within 10 s")
}

pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    call(addr, "POST", path, headers, body).await
}

/// Splits an SSE body into its events (each without its blank-line terminator).
pub fn sse_events(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The JSON payloads of `data:` lines (skipping `[DONE]`).
pub fn sse_data(body: &[u8]) -> Vec<serde_json::Value> {
    sse_events(body)
        .iter()
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_owned)
        })
        .filter(|d| d.trim() != "[DONE]")
        .map(|d| serde_json::from_str(&d).unwrap_or_else(|e| panic!("bad data line ({e}): {d}")))
        .collect()
}

/// The `event:` names of an SSE body.
pub fn sse_names(body: &[u8]) -> Vec<String> {
    sse_events(body)
        .iter()
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("event: "))
                .map(str::to_owned)
        })
        .collect()
}

/// Every key path of a JSON value (`a.b[].c`); empty objects/arrays and scalars are leaves.
pub fn paths(v: &serde_json::Value) -> BTreeSet<String> {
    fn walk(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(v, &p, out);
                }
            }
            serde_json::Value::Array(items) if !items.is_empty() => {
                for item in items {
                    walk(item, &format!("{prefix}[]"), out);
                }
            }
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// Union of the key paths of many values.
pub fn all_paths<'a>(values: impl IntoIterator<Item = &'a serde_json::Value>) -> BTreeSet<String> {
    values.into_iter().flat_map(paths).collect()
}

pub fn fixture(path: &str) -> &'static [u8] {
    sira_mock::fixture_bytes(path).unwrap_or_else(|| panic!("no fixture {path}"))
}

pub fn fixture_json(path: &str) -> serde_json::Value {
    serde_json::from_slice(fixture(path)).unwrap()
}

/// Milliseconds between two instants (saturating).
pub fn ms(from: Instant, to: Instant) -> u128 {
    to.saturating_duration_since(from).as_millis()
}
