//! The client's connection, before a request reaches the phases: which protocol, how long
//! a client may take to send its request header, how large the header may be, and what a
//! request with broken framing gets.
//!
//! HTTP/1 connections are served by sira's own session ([`H1Session`], in `h1/`); Pingora's
//! reader timed out each read on its own (a client dripping one byte a second was never cut
//! off) and accepted a header of up to 1 MiB. sira keeps nginx's rules:
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;

mod client;
mod h1;

use super::{Client, Gateway};
use crate::error::GatewayError;
use crate::format::Format;
use crate::metrics::{metrics, Buffer};
use client::{ClientStream, HeaderDeadline, Watch};
pub use h1::{parse_request, H1Session};

/// The main listeners' application: sorts connections by protocol and runs the HTTP/1
/// keep-alive loop.
pub struct Edge {
    pub gateway: Arc<Gateway>,
    /// The TLS listeners by address: their connections are accepted as plain TCP and the
    /// handshake is made here (see [`crate::tls::Endpoint`]).
    pub tls: Vec<(SocketAddr, Arc<crate::tls::Endpoint>)>,
    /// The plain listeners' addresses, to tell their connections from the TLS ones'.
    pub plain: Vec<SocketAddr>,
}

/// The listener a connection came through.
enum Accepted<'a> {
    Plain,
    Tls(&'a crate::tls::Endpoint),
    Unknown,
}

/// Whether a listener bound to `listen` accepts connections on the local address `local`:
/// the same address; or the unspecified address of its family on the same port (a socket
/// on `[::]` also takes IPv4 clients, as IPv4-mapped addresses); or, for a listener on port
/// 0, any port of its address.
fn listens_on(listen: SocketAddr, local: SocketAddr) -> bool {
    let ip_matches = listen.ip() == local.ip()
        || match listen.ip() {
            std::net::IpAddr::V4(ip) => ip.is_unspecified() && local.is_ipv4(),
            std::net::IpAddr::V6(ip) => ip.is_unspecified() && local.is_ipv6(),
        };
    ip_matches && (listen.port() == local.port() || listen.port() == 0)
}

/// How long a new HTTP/2 connection is given for its first requests before a shutdown may
/// close it (see `Edge::process_new`).
const H2_FIRST_REQUESTS: Duration = Duration::from_secs(1);

/// `shutdown`, `after` later (also when it has already fired); the task ends with the
/// connection it serves.
fn delayed(mut shutdown: ShutdownWatch, after: Duration) -> ShutdownWatch {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let fired = async {
            let already = *shutdown.borrow();
            if !already && shutdown.changed().await.is_err() {
                // The server is gone without a shutdown: nothing will ever fire.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(after).await;
        };
        tokio::select! {
            // The connection ended first: nothing to tell.
            _ = tx.closed() => {}
            _ = fired => {
                let _ = tx.send(true);
            }
        }
    });
    rx
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
        // The handshake is part of the first request's header time, as in nginx.
        let stream = match self.listener_of(&stream) {
            Accepted::Plain => stream,
            Accepted::Tls(tls) => match tls.accept(stream, server.header_timeout).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "client connection closed");
                    return None;
                }
            },
            Accepted::Unknown => {
                tracing::warn!("a connection on an address no listener is configured for: closed");
                return None;
            }
        };
        let mut stream = Box::new(ClientStream {
            inner: stream,
            ahead: Bytes::new(),
            watch: watch.clone(),
            deny_gathering_once: std::sync::atomic::AtomicBool::new(false),
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
            // The h2 crate writes a DATA frame of 256 bytes or more on its own (a send, and a
            // TLS record, per small answer) when the transport gathers writes; when it does
            // not, frames under 1 KiB are copied into its write buffer, so the answers one turn
            // of the connection's task finishes leave in one write. Measured with 100 streams
            // on one TLS connection: one send per answer before, a few per hundred after. It
            // asks once, at its handshake; later writes may gather (a large frame: one send).
            *stream.deny_gathering_once.get_mut() = true;
            // Its streams are counted one by one (`Gateway::serve`). Until its first has had
            // time to arrive, the connection itself holds a shutdown up, and the GOAWAY a
            // shutdown sends waits as long: a client that connected just before the
            // listeners closed (an upgrade's hand-over) still gets its request served.
            let held = watch.clone();
            let first_requests = tokio::spawn(async move {
                tokio::time::sleep(H2_FIRST_REQUESTS).await;
                held.uncount();
            });
            let shutdown = delayed(shutdown.clone(), H2_FIRST_REQUESTS);
            let gateway: &Arc<Gateway> = &self.gateway;
            let stream: Stream = stream;
            let reused = ServerApp::process_new(gateway, stream, &shutdown).await;
            first_requests.abort();
            watch.uncount();
            return reused;
        }
        self.serve_h1(stream, watch, accepted, shutdown).await;
        None
    }
}

impl Edge {
    /// Which listener accepted `stream`: a TLS one (its endpoint), a plain one, or none
    /// that sira knows of (closed: a TLS port never falls back to plain HTTP).
    fn listener_of(&self, stream: &Stream) -> Accepted<'_> {
        if self.tls.is_empty() {
            return Accepted::Plain;
        }
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        let Some(local) = local else {
            return Accepted::Unknown;
        };
        if let Some((_, endpoint)) = self.tls.iter().find(|(addr, _)| listens_on(*addr, local)) {
            return Accepted::Tls(endpoint);
        }
        if self.plain.iter().any(|addr| listens_on(*addr, local)) {
            return Accepted::Plain;
        }
        Accepted::Unknown
    }

    /// HTTP/1: one request after the other on the connection, for as long as both sides
    /// keep it alive.
    async fn serve_h1(
        &self,
        stream: Box<ClientStream>,
        watch: Arc<Watch>,
        accepted: Instant,
        shutdown: &ShutdownWatch,
    ) {
        let mut session = Box::new(H1Session::new(stream));
        let mut first = true;
        loop {
            let snap = self.gateway.live.load_full();
            let server = &snap.server;
            // The first request is bounded by the header deadline from the connection's
            // start; a kept-alive connection waits idle for its next one, unless that one has
            // begun in what was read already: its deadline runs from now.
            let (started, idle) = if first {
                (Some(accepted), None)
            } else if session.begun() {
                watch.count();
                (Some(Instant::now()), None)
            } else {
                (None, Some(server.keepalive))
            };
            watch.begin();
            let outcome = read_header(&mut session, &watch, started, idle, server).await;
            watch.end();
            first = false;
            let refused = match outcome {
                Header::Read => check_header(&session, server),
                Header::Closed => return,
                Header::Refused(error) => {
                    refuse(session, error, server.write_timeout).await;
                    return;
                }
            };
            // Counted until here since its first byte (or the connection's start); `serve`
            // counts it from now on.
            let served = self
                .gateway
                .serve_checked(Client::H1(session), shutdown, refused);
            let reused = served.await;
            watch.uncount();
            match reused {
                Some(next) => session = next,
                None => return,
            }
        }
    }
}

/// How reading a request header ended.
pub enum Header {
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
    session: &mut H1Session,
    watch: &Watch,
    started: Option<Instant>,
    idle: Option<Duration>,
    server: &crate::config::ServerSettings,
) -> Header {
    let deadline = HeaderDeadline {
        watch,
        started,
        timeout: server.header_timeout,
        timer: None,
    };
    tokio::select! {
        biased;
        outcome = session.read_request(idle, server.max_header_size) => outcome,
        () = deadline => Header::Refused(GatewayError::RequestTimeout("the request header")),
    }
}

/// Limits and framing rules checked on the whole head; `Some` when the request must be
/// refused (answered through the phases, so that it is logged, and the connection closed).
fn check_header(
    session: &H1Session,
    server: &crate::config::ServerSettings,
) -> Option<GatewayError> {
    let raw = session.raw_head();
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
    ambiguous_head(raw, req.headers.contains_key(header::TRANSFER_ENCODING))
}

/// The framing rules a raw HTTP/1 head must keep beyond what httparse checks; `Some` when
/// it is refused. Public for the `http_head` fuzz target.
pub fn ambiguous_head(raw: &[u8], transfer_encoding: bool) -> Option<GatewayError> {
    // httparse takes a bare LF for a line end, as RFC 9112 §2.2 allows; a proxy in front
    // of sira that does not would read other fields than sira does (a field it sees as part
    // of a value is one sira obeys). Refused, as Node's parser does.
    if has_bare_lf(raw) {
        return Some(GatewayError::BadFraming(
            "a line of the request head ends in LF without CR".into(),
        ));
    }
    // RFC 9112 §6.3 lets a server frame by `Transfer-Encoding` and ignore the length; a
    // proxy that forwards such a request lets two parsers disagree on where it ends.
    // Refused instead.
    if transfer_encoding && names_content_length(raw) {
        return Some(GatewayError::BadFraming(
            "both Content-Length and Transfer-Encoding are present".into(),
        ));
    }
    None
}

/// Whether a raw HTTP/1 head has a line ended by LF alone.
fn has_bare_lf(raw: &[u8]) -> bool {
    // Empty lines before the request line are skipped by the parser (RFC 9112 §2.2 asks a
    // server to ignore them), whatever their ends: a stray LF after a body is no head line.
    let start = raw
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(raw.len());
    let raw = &raw[start..];
    memchr::memchr_iter(b'\n', raw).any(|i| i == 0 || raw[i - 1] != b'\r')
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
async fn refuse(mut session: Box<H1Session>, error: GatewayError, write_timeout: Duration) {
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
    let Ok(mut resp) = pingora_http::ResponseHeader::build_no_case(status, Some(2)) else {
        return;
    };
    let framed = resp
        .insert_header(header::CONTENT_LENGTH, body.len())
        .is_ok()
        && resp
            .insert_header(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            )
            .is_ok();
    let body = if framed { body } else { Bytes::new() };
    session.set_keep_alive(false);
    session.set_write_timeout(write_timeout);
    if session.write_response_header(&resp).await.is_ok() {
        let _ = session.write_response_body(body, true).await;
    }
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
    fn a_connection_belongs_to_the_listener_bound_to_its_address() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listens_on(addr("127.0.0.1:8443"), addr("127.0.0.1:8443")));
        assert!(!listens_on(addr("127.0.0.1:8443"), addr("127.0.0.2:8443")));
        assert!(!listens_on(addr("127.0.0.1:8443"), addr("127.0.0.1:8080")));
        assert!(listens_on(addr("0.0.0.0:8443"), addr("10.1.2.3:8443")));
        // IPv6-only sockets: `0.0.0.0` and `[::]` on one port are two listeners.
        assert!(!listens_on(
            addr("0.0.0.0:8443"),
            addr("[2001:db8::1]:8443")
        ));
        assert!(!listens_on(addr("[::]:8443"), addr("10.1.2.3:8443")));
        // A dual-stack `[::]` sees IPv4 clients as mapped addresses.
        assert!(listens_on(
            addr("[::]:8443"),
            addr("[::ffff:10.1.2.3]:8443")
        ));
        // A plain listener on port 0 (tests) took whatever port it was given.
        assert!(listens_on(addr("127.0.0.1:0"), addr("127.0.0.1:40123")));
    }
}
