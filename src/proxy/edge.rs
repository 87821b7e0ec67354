//! The client's connection, before a request reaches the phases: which protocol, how long
//! a client may take to send its request header, how large the header may be, and what a
//! request with broken framing gets.
//!
//! Pingora's HTTP/1 reader times out each read on its own (a client dripping one byte a
//! second is never cut off) and accepts a header of up to 1 MiB in up to 256 fields. sira
//! keeps nginx's rules instead:
//!
//! - the header must arrive within `server.timeouts.header` of its first byte (of the
//!   connection's start, for the first request); an idle keep-alive connection waits for its
//!   next request for `server.timeouts.keepalive`. Too slow: `408`, connection closed;
//! - a header larger than `server.max_header_size` or with more than `server.max_headers`
//!   fields: `431`, closed — and reading stops at the size limit, so a client cannot make
//!   the gateway buffer more;
//! - conflicting or invalid framing (`Content-Length` with `Transfer-Encoding`, differing
//!   `Content-Length` values, obs-fold, a malformed request line): `400`, closed, never
//!   guessed at (request smuggling lives in the guesses).
//!
//! HTTP/2 connections (ALPN, or the cleartext preface) go to Pingora's HTTP/2 server, whose
//! header limits are set from the same config ([`Gateway`]'s `h2_options`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora_core::apps::{HttpPersistentSettings, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Gateway;
use crate::error::GatewayError;
use crate::format::Format;
use crate::metrics::{metrics, Buffer};
use crate::shutdown::Drain;

/// The main listeners' application: sorts connections by protocol and runs the HTTP/1
/// keep-alive loop.
pub struct Edge {
    pub gateway: Arc<Gateway>,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4); no HTTP/1 request starts with `PRI`.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = Instant::now();
        let snap = self.gateway.live.load_full();
        let server = &snap.server;
        let watch = Arc::new(Watch::new(
            server.max_header_size,
            self.gateway.drain.clone(),
        ));
        // A connection accepted before a shutdown gets its first request served.
        watch.count();
        let mut stream = Box::new(ClientStream {
            inner: stream,
            ahead: Bytes::new(),
            watch: watch.clone(),
        });
        let h2 = if matches!(stream.inner.selected_alpn_proto(), Some(ALPN::H2)) {
            true
        } else if stream.inner.get_ssl_digest().is_some() {
            false
        } else {
            // The wait for the first bytes is part of the first request's header time.
            match tokio::time::timeout(server.header_timeout, stream.read_ahead()).await {
                Ok(Ok(true)) => stream.ahead.starts_with(H2_PREFACE),
                // Closed, failed or silent before sending anything: nothing to answer.
                Ok(Ok(false)) | Ok(Err(_)) | Err(_) => return None,
            }
        };
        if h2 {
            // Its streams are counted one by one (`Gateway::serve`).
            watch.uncount();
            let gateway: &Arc<Gateway> = &self.gateway;
            let stream: Stream = stream;
            return ServerApp::process_new(gateway, stream, shutdown).await;
        }
        self.serve_h1(stream, watch, accepted, shutdown).await;
        None
    }
}

impl Edge {
    /// HTTP/1: one request after the other on the connection, for as long as both sides
    /// keep it alive.
    async fn serve_h1(
        &self,
        stream: Box<ClientStream>,
        watch: Arc<Watch>,
        accepted: Instant,
        shutdown: &ShutdownWatch,
    ) {
        let mut stream: Stream = stream;
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let snap = self.gateway.live.load_full();
            let server = &snap.server;
            let mut session = ServerSession::new_http1(stream);
            match persistent.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    // The first request is bounded by the header deadline from the
                    // connection's start, not by a keep-alive wait.
                    session.set_keepalive(None);
                    // Bytes that arrive after a request's body (the next request, a stray
                    // CRLF) are kept for the next request (RFC 9112 §9.3.2), rather than
                    // taken for a client that went away; the setting carries over.
                    session.set_pipelining_enabled(true);
                }
            }
            watch.begin();
            let started = if first { Some(accepted) } else { None };
            let outcome = read_header(&mut session, &watch, started, server.header_timeout).await;
            watch.end();
            first = false;
            let refused = match outcome {
                Header::Read => check_header(&mut session, server),
                Header::Closed => return,
                Header::Refused(error) => {
                    refuse(session, error).await;
                    return;
                }
            };
            // Counted until here since its first byte (or the connection's start); `serve`
            // counts it from now on.
            let served = self.gateway.serve_checked(session, shutdown, refused);
            let reused = served.await;
            watch.uncount();
            let Some(reused) = reused else {
                return;
            };
            let (next, settings) = reused.consume();
            stream = next;
            persistent = settings;
        }
    }
}

/// How reading a request header ended.
enum Header {
    Read,
    /// The client closed the connection, or it idled past the keep-alive timeout: nothing
    /// to answer.
    Closed,
    /// Answered with this error, then the connection is closed.
    Refused(GatewayError),
}

/// Reads the request header within the header deadline: `timeout` from its first byte, or
/// from `started` (the connection's start) for the first request.
async fn read_header(
    session: &mut ServerSession,
    watch: &Watch,
    started: Option<Instant>,
    timeout: Duration,
) -> Header {
    let deadline = HeaderDeadline {
        watch,
        started,
        timeout,
        timer: None,
    };
    let result = tokio::select! {
        biased;
        result = session.read_request() => result,
        () = deadline => {
            return Header::Refused(GatewayError::RequestTimeout("the request header"));
        }
    };
    match result {
        Ok(true) => Header::Read,
        Ok(false) => Header::Closed,
        Err(e) => classify(&e).map_or(Header::Closed, Header::Refused),
    }
}

/// What a failed header read means for the client; `None` when the connection simply broke.
fn classify(e: &pingora_error::Error) -> Option<GatewayError> {
    use pingora_error::ErrorType;
    let cause = e.root_cause();
    let oversized = cause
        .downcast_ref::<io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<HeaderOverflow>())
        .is_some();
    if oversized {
        metrics().buffer_limit(Buffer::RequestHeader);
        return Some(GatewayError::HeaderTooLarge(
            "larger than server.max_header_size".into(),
        ));
    }
    match e.etype() {
        ErrorType::InvalidHTTPHeader => {
            let too_many = cause
                .downcast_ref::<httparse::Error>()
                .is_some_and(|p| *p == httparse::Error::TooManyHeaders);
            if too_many {
                metrics().buffer_limit(Buffer::RequestHeader);
                return Some(GatewayError::HeaderTooLarge(
                    "more fields than server.max_headers".into(),
                ));
            }
            // Pingora's message quotes the whole header (the client's key included): only
            // what kind of fault it is goes back, and to the log.
            let reason = match cause.downcast_ref::<httparse::Error>() {
                Some(parse) => format!("malformed request header ({parse})"),
                None => "ambiguous or invalid framing (Content-Length, Transfer-Encoding)".into(),
            };
            Some(GatewayError::BadFraming(reason))
        }
        ErrorType::ReadTimedout => Some(GatewayError::RequestTimeout("the request header")),
        _ => None,
    }
}

/// Limits and framing rules that Pingora's parser leaves to the application; `Some` when
/// the request must be refused (and the connection closed).
fn check_header(
    session: &mut ServerSession,
    server: &crate::config::ServerSettings,
) -> Option<GatewayError> {
    let raw = session.to_h1_raw();
    if raw.len() > server.max_header_size {
        metrics().buffer_limit(Buffer::RequestHeader);
        return Some(GatewayError::HeaderTooLarge(format!(
            "{} bytes, more than server.max_header_size ({})",
            raw.len(),
            server.max_header_size
        )));
    }
    let req = session.req_header();
    if req.headers.len() > server.max_headers {
        metrics().buffer_limit(Buffer::RequestHeader);
        return Some(GatewayError::HeaderTooLarge(format!(
            "{} fields, more than server.max_headers ({})",
            req.headers.len(),
            server.max_headers
        )));
    }
    // Pingora drops `Content-Length` when `Transfer-Encoding` is present (RFC 9112 §6.3
    // allows either); a proxy that forwards such a request lets two parsers disagree on
    // where it ends. Refused instead.
    if req.headers.contains_key(header::TRANSFER_ENCODING) && names_content_length(&raw) {
        return Some(GatewayError::BadFraming(
            "both Content-Length and Transfer-Encoding are present".into(),
        ));
    }
    None
}

/// Whether a raw HTTP/1 header has a `Content-Length` field.
fn names_content_length(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'\n').any(|line| {
        line.len() > b"content-length:".len()
            && line[..b"content-length:".len()].eq_ignore_ascii_case(b"content-length:")
    })
}

/// Answers a request whose header could not be read, in OpenAI's error shape (the route,
/// and so the surface, is unknown), and closes the connection.
async fn refuse(mut session: ServerSession, error: GatewayError) {
    let status = error.status();
    metrics()
        .requests
        .with_label_values(&["", "", "", status_label(status)])
        .inc();
    tracing::debug!(
        status,
        "request refused before its header was read: {error}"
    );
    let body = error.render(Format::OpenAiChat);
    let mut resp = ServerSession::generate_error(status);
    let framed = resp.set_content_length(body.len()).is_ok()
        && resp
            .insert_header(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            )
            .is_ok();
    let body = if framed { body } else { Bytes::new() };
    // Pingora marks the connection closed for error responses.
    let _ = session.write_error_response(resp, body).await;
    session.shutdown().await;
}

fn status_label(status: u16) -> &'static str {
    match status {
        400 => "400",
        408 => "408",
        431 => "431",
        _ => "4xx",
    }
}

/// Fires `timeout` after the header's first byte (or after `started`); never before a
/// first byte on a kept-alive connection, whose idle wait is the keep-alive timeout's.
struct HeaderDeadline<'a> {
    watch: &'a Watch,
    started: Option<Instant>,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::future::Future for HeaderDeadline<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.is_none() {
            // Polled again whenever the header read is woken (bytes arrived): the first byte
            // is seen here without a waker of its own.
            let Some(start) = self.started.or_else(|| self.watch.first_byte()) else {
                return Poll::Pending;
            };
            let at = tokio::time::Instant::from_std(start + self.timeout);
            self.timer = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// What the connection's reads tell the header deadline, the size limit and the shutdown
/// drain.
struct Watch {
    /// A request header is being read.
    reading: AtomicBool,
    /// When the current header's first byte arrived: nanoseconds after [`EPOCH`], 0 = not yet.
    first_byte: AtomicU64,
    /// Bytes read for the current header (and possibly the start of its body).
    read: AtomicUsize,
    max_header: usize,
    /// A request is under way on the connection: counted in the drain, so that a shutdown
    /// does not exit under a request whose header is still arriving.
    counted: AtomicBool,
    drain: Arc<Drain>,
}

/// A process-wide origin for the `Instant`s stored as integers in [`Watch`].
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Watch {
    fn new(max_header: usize, drain: Arc<Drain>) -> Watch {
        Watch {
            reading: AtomicBool::new(false),
            first_byte: AtomicU64::new(0),
            read: AtomicUsize::new(0),
            max_header,
            counted: AtomicBool::new(false),
            drain,
        }
    }

    /// Counts the connection's request in flight (once).
    fn count(&self) {
        if !self.counted.swap(true, Ordering::AcqRel) {
            self.drain.begin();
        }
    }

    /// The request is over: the idle wait for the next one holds no shutdown up.
    fn uncount(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.drain.end();
        }
    }

    fn begin(&self) {
        self.first_byte.store(0, Ordering::Relaxed);
        self.read.store(0, Ordering::Relaxed);
        self.reading.store(true, Ordering::Relaxed);
    }

    fn end(&self) {
        self.reading.store(false, Ordering::Relaxed);
    }

    fn first_byte(&self) -> Option<Instant> {
        match self.first_byte.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(*EPOCH + Duration::from_nanos(nanos)),
        }
    }

    /// Books `n` bytes read; `false` when the header has outgrown its limit.
    fn saw(&self, n: usize) -> bool {
        if n == 0 || !self.reading.load(Ordering::Relaxed) {
            return true;
        }
        if self.first_byte.load(Ordering::Relaxed) == 0 {
            let nanos = EPOCH.elapsed().as_nanos().max(1) as u64;
            self.first_byte.store(nanos, Ordering::Relaxed);
            self.count();
        }
        // Reading goes on only while the header is incomplete: past the limit, the header
        // itself is too large (one read may also carry the start of the body, which is
        // why the parsed header's size is checked again once it is complete).
        let before = self.read.fetch_add(n, Ordering::Relaxed);
        before <= self.max_header
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.uncount();
    }
}

/// The error a read returns once a header outgrew `server.max_header_size`.
#[derive(Debug, thiserror::Error)]
#[error("request header larger than the gateway's limit")]
struct HeaderOverflow;

/// The client's transport, watched for the header's first byte and size, with the bytes
/// read to tell HTTP/2 from HTTP/1 given back to whoever reads next.
struct ClientStream {
    inner: Stream,
    /// Bytes read ahead to detect the protocol, served before the transport's.
    ahead: Bytes,
    watch: Arc<Watch>,
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl ClientStream {
    /// Reads what the client sent first, until it is either the HTTP/2 preface or cannot
    /// be. `false` when the client closed first.
    async fn read_ahead(&mut self) -> io::Result<bool> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::with_capacity(4096);
        loop {
            if self.inner.read_buf(&mut buf).await? == 0 {
                self.ahead = Bytes::from(buf);
                return Ok(false);
            }
            let seen = buf.len().min(H2_PREFACE.len());
            if buf.len() >= H2_PREFACE.len() || buf[..seen] != H2_PREFACE[..seen] {
                self.ahead = Bytes::from(buf);
                return Ok(true);
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead.split_to(n));
            if !this.watch.saw(n) {
                return Poll::Ready(Err(io::Error::other(HeaderOverflow)));
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if !this.watch.saw(buf.filled().len() - before) {
                return Poll::Ready(Err(io::Error::other(HeaderOverflow)));
            }
        }
        polled
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for ClientStream {
    /// Served from the bytes read ahead when they suffice (Pingora peeks for the HTTP/2
    /// preface, which [`Edge`] has already read).
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.ahead.len() >= buf.len() {
            buf.copy_from_slice(&self.ahead[..buf.len()]);
            return Ok(true);
        }
        if self.ahead.is_empty() {
            return self.inner.try_peek(buf).await;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_content_length_in_a_raw_header() {
        let raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n";
        assert!(names_content_length(raw));
        let raw = b"POST / HTTP/1.1\r\nx-content-length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(!names_content_length(raw));
    }

    #[test]
    fn the_watch_stops_a_header_past_its_limit() {
        let drain = Arc::new(Drain::default());
        let watch = Watch::new(100, drain.clone());
        // Between requests, reads are not counted.
        assert!(watch.saw(1000));
        assert!(watch.first_byte().is_none());
        watch.begin();
        assert!(watch.saw(60));
        assert!(watch.first_byte().is_some());
        assert!(
            watch.saw(60),
            "the read that crosses the limit may end the header"
        );
        assert!(
            !watch.saw(1),
            "a read after the limit was crossed is refused"
        );
        watch.end();
        assert!(watch.saw(1));
        // The request was counted in flight from its first byte until it is over.
        assert_eq!(drain.in_flight(), 1);
        watch.uncount();
        assert_eq!(drain.in_flight(), 0);
        watch.begin();
        watch.saw(1);
        assert_eq!(drain.in_flight(), 1);
        drop(watch);
        assert_eq!(drain.in_flight(), 0, "a connection that ends uncounts");
    }
}
