//! sira's HTTP/1 server session: a client's requests, one after the other on its
//! connection, and the responses to them.
//!
//! Pingora's H1 server session kept a second map of every field name's original case,
//! normalised each value as it stored it and built its body reader and writer per request:
//! about 23,000 instructions of a plain request's 82,000 (callgrind, `bench/profile.sh a`).
//! This session parses the head with httparse straight into a `RequestHeader` ([`request`]),
//! frames the request body with the same code as a provider's answer
//! ([`crate::proxy::h1::framing`]), and writes a response's head and a small body in one write
//! ([`response`]).
//!
//! The rules it keeps: a head is bounded by `server.max_header_size` as it is read; a body
//! is read only as its framing says, and a connection is kept for another request only when
//! both the request's body and the response ended exactly where their framing said, and both
//! sides want it; bytes that arrive while a response is prepared are kept for the next
//! request (pipelining, RFC 9112 §9.3.2), up to a bound.

mod request;
mod response;

use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Version};
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{GetSocketDigest, Shutdown, Ssl};
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{ClientStream, HeaderOverflow};
use super::Header;
use crate::error::GatewayError;
use crate::metrics::{metrics, Buffer};
use crate::proxy::h1::framing::{Framing, Step};
use response::Writer;

/// What one read asks room for: a usual request arrives whole in one.
const READ_SIZE: usize = 8 * 1024;
/// Bytes of a next request kept while a response is prepared; past this the client is no
/// longer watched (its bytes wait in the socket).
const MAX_AHEAD: usize = 64 * 1024;
/// A response body up to this size is copied behind its head, so that both leave in one
/// write (and, over TLS, one record).
const JOIN_BELOW: usize = 16 * 1024;

/// One client connection's HTTP/1 exchange.
pub struct H1Session {
    stream: Box<ClientStream>,
    /// Read and not yet used: the rest of a head's read, the body, a next request.
    buf: BytesMut,
    /// The request whose head was read last (before the first: an empty GET, which is what
    /// a refusal of an unreadable head answers).
    header: RequestHeader,
    /// That head as it arrived.
    raw: Bytes,
    /// Where the request's body is.
    body: Framing,
    /// Both sides want the connection kept, and nothing so far forbids it.
    keep_alive: bool,
    write_timeout: Option<Duration>,
    /// Set once the response's head is written.
    writer: Option<Writer>,
    /// The response's head, when its body may still join it in one write.
    pending: Vec<u8>,
}

/// Why a request's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Io(io::Error),
    #[error("the client closed the connection before the body's end")]
    Closed,
    #[error("invalid chunked framing: {0}")]
    Framing(&'static str),
}

impl H1Session {
    pub(super) fn new(stream: Box<ClientStream>) -> H1Session {
        H1Session {
            stream,
            buf: BytesMut::new(),
            header: no_request(),
            raw: Bytes::new(),
            body: Framing::Done,
            keep_alive: false,
            write_timeout: None,
            writer: None,
            pending: Vec::new(),
        }
    }

    /// Reads the next request's head. `idle` bounds the wait for its first byte (a
    /// kept-alive connection's wait for its next request); the caller bounds the rest.
    /// Dropped while waiting, nothing read is lost.
    pub async fn read_request(&mut self, idle: Option<Duration>, max_size: usize) -> Header {
        self.writer = None;
        self.body = Framing::Done;
        self.keep_alive = false;
        self.header = no_request();
        self.raw = Bytes::new();
        let idle_until = idle.map(|idle| Instant::now() + idle);
        loop {
            if !self.buf.is_empty() {
                match request::parse(&mut self.buf) {
                    Ok(Some(head)) => {
                        self.body = head.body;
                        self.keep_alive = head.keep_alive;
                        self.header = head.header;
                        self.raw = head.raw;
                        return Header::Read;
                    }
                    Ok(None) => {}
                    Err(refused) => return Header::Refused(refused),
                }
                if self.buf.len() > max_size {
                    return Header::Refused(too_large());
                }
            }
            // Only a request not yet begun waits idle, and only as long as `idle` from the
            // start, however many blank lines arrive meanwhile.
            let begun = !self.buf.is_empty();
            reserve(&mut self.buf);
            let read = self.stream.read_buf(&mut self.buf);
            let read = match idle_until {
                Some(until) if !begun => {
                    let left = until.saturating_duration_since(Instant::now());
                    match pingora_timeout::timeout(left, read).await {
                        Ok(read) => read,
                        Err(_) => return Header::Closed,
                    }
                }
                _ => read.await,
            };
            match read {
                Ok(0) => return Header::Closed,
                Ok(_) if !begun && !self.begun() => {
                    // Blank lines only (RFC 9112 §2.2): still idle, and the header's time has
                    // not started.
                    self.stream.watch.begin();
                    self.stream.watch.uncount();
                }
                Ok(_) => {}
                Err(e) if e.get_ref().is_some_and(|e| e.is::<HeaderOverflow>()) => {
                    return Header::Refused(too_large())
                }
                Err(_) => return Header::Closed,
            }
        }
    }

    /// Whether the next request has begun in the bytes already read (pipelined, or sent
    /// while the previous one was answered): its header time runs from now, not from a first
    /// read that will never come. Empty lines before it are dropped (RFC 9112 §2.2), so that
    /// a stray CRLF after a body leaves the connection idle, as it is.
    pub fn begun(&mut self) -> bool {
        // As httparse skips them: CRLF or a lone LF. A lone CR is left for it to refuse.
        loop {
            if self.buf.starts_with(b"\r\n") {
                self.buf.advance(2);
            } else if self.buf.starts_with(b"\n") {
                self.buf.advance(1);
            } else {
                return !self.buf.is_empty();
            }
        }
    }

    /// The request whose head was read.
    pub fn req_header(&self) -> &RequestHeader {
        &self.header
    }

    /// The head as it arrived.
    pub fn raw_head(&self) -> &[u8] {
        &self.raw
    }

    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        let digest = self.stream.get_socket_digest()?;
        digest.peer_addr()?.as_inet().map(|addr| addr.ip())
    }

    /// The TLS session's facts, on a TLS connection.
    pub fn tls(&self) -> Option<std::sync::Arc<SslDigest>> {
        self.stream.get_ssl_digest()
    }

    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the connection may carry another request; it never becomes kept once the
    /// client or the framing ruled it out.
    pub fn set_keep_alive(&mut self, keep: bool) {
        self.keep_alive &= keep;
    }

    pub fn set_write_timeout(&mut self, timeout: Duration) {
        self.write_timeout = Some(timeout);
    }

    pub fn is_body_done(&self) -> bool {
        self.body == Framing::Done
    }

    /// The next piece of the request's body, `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            match self.body.step(&mut self.buf) {
                Ok(Step::Piece(piece)) => return Ok(Some(piece)),
                Ok(Step::End) => return Ok(None),
                Ok(Step::NeedMore) => {}
                Err(what) => {
                    self.keep_alive = false;
                    return Err(BodyError::Framing(what));
                }
            }
            reserve(&mut self.buf);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => {
                    self.keep_alive = false;
                    return Err(BodyError::Closed);
                }
                Ok(_) => {}
                Err(e) => {
                    self.keep_alive = false;
                    return Err(BodyError::Io(e));
                }
            }
        }
    }

    /// Returns once the client is gone (closed, reset) while its response is prepared. Bytes
    /// it sends meanwhile are kept for its next request. Dropped at any point, nothing is
    /// lost.
    pub async fn gone(&mut self) {
        loop {
            if self.buf.len() >= MAX_AHEAD {
                return std::future::pending().await;
            }
            reserve(&mut self.buf);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => {
                    self.keep_alive = false;
                    return;
                }
                Ok(_) => {}
            }
        }
    }

    /// Answers `Expect: 100-continue` before the body is read.
    pub async fn write_continue(&mut self) -> io::Result<()> {
        if self.writer.is_some() || self.is_body_done() {
            return Ok(());
        }
        if self.req_header().version != Version::HTTP_11 {
            return Ok(());
        }
        self.send(&[b"HTTP/1.1 100 Continue\r\n\r\n"]).await
    }

    pub fn response_written(&self) -> bool {
        self.writer.is_some()
    }

    /// Writes the response's head; it leaves at once unless a body of known length follows,
    /// which it then leaves with. A second head is ignored.
    pub async fn write_response_header(&mut self, header: &ResponseHeader) -> io::Result<()> {
        // Interim answers are not this session's to send (the exchange skips a provider's;
        // `100 Continue` has its own call): the final head must still follow.
        if self.writer.is_some() || header.status.is_informational() {
            return Ok(());
        }
        let head_request = self.header.method == Method::HEAD;
        let version = self.header.version;
        let writer = Writer::for_response(header, head_request);
        if writer == Writer::UntilClose {
            self.keep_alive = false;
        }
        // A response before the request's body was read whole: the connection cannot be
        // trusted to find the next request's start.
        if !self.is_body_done() {
            self.keep_alive = false;
        }
        let mut head = std::mem::take(&mut self.pending);
        head.clear();
        response::write_head(header, version, self.keep_alive, &mut head);
        self.writer = Some(writer);
        self.pending = head;
        if !matches!(writer, Writer::Length(_)) {
            return self.send_pending(&[]).await;
        }
        Ok(())
    }

    /// Writes a piece of the response's body (`end`: its last), framed as its head said;
    /// bytes beyond a declared length are not written.
    pub async fn write_response_body(&mut self, data: Bytes, end: bool) -> io::Result<()> {
        let Some(writer) = self.writer else {
            return Err(io::Error::other("a response body before its head"));
        };
        match writer {
            Writer::Done => self.send_pending(&[]).await,
            Writer::Length(left) => {
                let n = usize::try_from(left).map_or(data.len(), |left| left.min(data.len()));
                let left = left - n as u64;
                self.writer = Some(if left == 0 {
                    Writer::Done
                } else {
                    Writer::Length(left)
                });
                if end && left > 0 {
                    // Short of its length: the client must see a cut, not a next response.
                    self.keep_alive = false;
                }
                self.send_pending(&data[..n]).await
            }
            Writer::UntilClose => self.send_pending(&data).await,
            Writer::Chunked => {
                let mut framing = std::mem::take(&mut self.pending);
                let joined = data.len() < JOIN_BELOW;
                if !data.is_empty() {
                    response::chunk_size_line(data.len(), &mut framing);
                    if joined {
                        framing.extend_from_slice(&data);
                        framing.extend_from_slice(b"\r\n");
                    }
                }
                let mut tail: &[u8] = if data.is_empty() || joined {
                    b""
                } else {
                    b"\r\n"
                };
                if end {
                    self.writer = Some(Writer::Done);
                    if joined {
                        framing.extend_from_slice(b"0\r\n\r\n");
                    } else {
                        tail = b"\r\n0\r\n\r\n";
                    }
                }
                let body: &[u8] = if joined { b"" } else { &data };
                let result = self.send(&[&framing, body, tail]).await;
                framing.clear();
                self.pending = framing;
                result
            }
        }
    }

    /// Writes the pending head with `body` behind it (copied into one write when small).
    async fn send_pending(&mut self, body: &[u8]) -> io::Result<()> {
        let mut head = std::mem::take(&mut self.pending);
        let result = if body.len() < JOIN_BELOW {
            head.extend_from_slice(body);
            self.send(&[&head]).await
        } else {
            self.send(&[&head, body]).await
        };
        head.clear();
        self.pending = head;
        result
    }

    /// Writes `parts` and flushes them, within the write timeout.
    async fn send(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let stream = &mut self.stream;
        let write = async {
            for part in parts.iter().filter(|part| !part.is_empty()) {
                stream.write_all(part).await?;
            }
            stream.flush().await
        };
        let result = match self.write_timeout {
            Some(timeout) => pingora_timeout::timeout(timeout, write)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
            None => write.await,
        };
        if result.is_err() {
            self.keep_alive = false;
        }
        result
    }

    /// Closes the connection, abruptly for a response that broke: no last chunk is sent. A
    /// head still held for its body leaves first, so that the client sees a cut answer.
    pub async fn shutdown(&mut self) {
        self.keep_alive = false;
        if !self.pending.is_empty() {
            let _ = self.send_pending(&[]).await;
        }
        Shutdown::shutdown(&mut *self.stream).await;
    }

    /// The session again, for the connection's next request, when the exchange ended
    /// exactly as framed and both sides keep the connection; else the connection is closed.
    pub async fn finish(mut self: Box<Self>) -> Option<Box<Self>> {
        let complete = self.is_body_done() && self.writer == Some(Writer::Done);
        if complete && self.keep_alive {
            return Some(self);
        }
        if self.writer == Some(Writer::UntilClose) || !self.pending.is_empty() {
            let _ = self.send_pending(&[]).await;
        }
        self.shutdown().await;
        None
    }
}

/// The request before a head was read: a GET for `/` over HTTP/1.1 with no fields (no
/// allocation).
fn no_request() -> RequestHeader {
    RequestHeader::from(http::Request::new(()).into_parts().0)
}

fn too_large() -> GatewayError {
    metrics().buffer_limit(Buffer::RequestHeader);
    GatewayError::HeaderTooLarge("larger than server.max_header_size".into())
}

/// Room for the next read, without growing a buffer that still has plenty.
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
}

/// A request's header, and its body as far as it could be read (`Err`: why its framing
/// broke).
pub type ParsedRequest = (RequestHeader, Result<Vec<u8>, &'static str>);

/// A request as sira reads it from `bytes`: its header, then as much of its body as
/// `bytes` holds, framed as the header says (`Err`: the framing broke). `None` while the
/// head is incomplete. Public for the `http_head` fuzz target, which must exercise the very
/// code that reads clients.
pub fn parse_request(bytes: &[u8]) -> Result<Option<ParsedRequest>, GatewayError> {
    let mut buf = BytesMut::from(bytes);
    let Some(head) = request::parse(&mut buf)? else {
        return Ok(None);
    };
    let mut framing = head.body;
    let mut body = Vec::new();
    let read = loop {
        match framing.step(&mut buf) {
            Ok(Step::Piece(piece)) => body.extend_from_slice(&piece),
            Ok(Step::End | Step::NeedMore) => break Ok(body),
            Err(what) => break Err(what),
        }
    };
    Ok(Some((head.header, read)))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use super::super::client::Watch;
    use super::*;

    /// A session over a loopback connection, the watch on its reads, and the client's end.
    async fn session() -> (H1Session, Arc<Watch>, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        let server = tokio::net::TcpStream::from_std(server).expect("tokio stream");
        let watch = Arc::new(Watch::new(
            16 * 1024,
            Arc::new(crate::shutdown::Drain::default()),
        ));
        let stream = Box::new(ClientStream {
            inner: Box::new(pingora_core::protocols::l4::stream::Stream::from(server)),
            ahead: Bytes::new(),
            watch: watch.clone(),
            deny_gathering_once: std::sync::atomic::AtomicBool::new(false),
        });
        (H1Session::new(stream), watch, client)
    }

    fn header(status: u16, fields: &[(&'static str, &'static str)]) -> ResponseHeader {
        let mut header = ResponseHeader::build_no_case(status, None).expect("a status");
        for (name, value) in fields {
            header.append_header(*name, *value).expect("a field");
        }
        header
    }

    #[tokio::test]
    async fn blank_lines_while_idle_neither_start_a_header_nor_extend_the_wait() {
        let (mut session, watch, mut client) = session().await;
        let idle = Duration::from_millis(400);
        let writer = std::thread::spawn(move || {
            for _ in 0..4 {
                std::thread::sleep(Duration::from_millis(150));
                let _ = client.write_all(b"\r\n");
            }
            client
        });
        let started = Instant::now();
        watch.begin();
        let outcome = session.read_request(Some(idle), 16 * 1024).await;
        assert!(matches!(outcome, Header::Closed));
        let waited = started.elapsed();
        assert!(
            waited >= idle && waited < idle + Duration::from_millis(300),
            "{waited:?}"
        );
        assert!(
            watch.first_byte().is_none(),
            "blank lines are not a header's first byte"
        );
        drop(writer.join());
    }

    #[tokio::test]
    async fn only_what_httparse_skips_is_dropped_before_a_head() {
        let (mut session, _watch, _client) = session().await;
        session.buf.extend_from_slice(b"\r\n\n\r\n");
        assert!(!session.begun());
        session.buf.extend_from_slice(b"\rGET / HTTP/1.1\r\n\r\n");
        assert!(session.begun(), "a lone CR is left for the parser");
        assert!(matches!(
            session.read_request(None, 1024).await,
            Header::Refused(GatewayError::BadFraming(_))
        ));
    }

    #[tokio::test]
    async fn interim_heads_are_not_the_response_and_a_held_head_leaves_before_a_close() {
        let (mut session, _watch, mut client) = session().await;
        client
            .write_all(b"GET /v1/models HTTP/1.1\r\n\r\n")
            .expect("write");
        assert!(matches!(
            session.read_request(None, 1024).await,
            Header::Read
        ));
        session
            .write_response_header(&header(103, &[("link", "</a>")]))
            .await
            .expect("ignored");
        assert!(!session.response_written());
        session
            .write_response_header(&header(200, &[("content-length", "10")]))
            .await
            .expect("held for its body");
        assert!(session.response_written());
        session.shutdown().await;
        let mut got = String::new();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        client.read_to_string(&mut got).expect("read to the close");
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\n"), "the head, then the close: {got}");
        assert!(!got.contains("103"), "{got}");
    }
}
