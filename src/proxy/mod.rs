//! The gateway's request path: a chain of modules over Pingora's server, listeners and
//! connectors.
//!
//! # Layout
//!
//! | module | concern |
//! |---|---|
//! | [`phases`] | the [`phases::Phase`] trait (one method per phase, documented like Pingora's `ProxyHttp`) and [`phases::Chain::standard`], the ordered list of modules: the whole request path in one place |
//! | [`modules`] | one module per concern: routing, authentication, local answers, operator filters, sira's headers, translation, accounting, endpoint selection, the provider's request, credentials, metrics and the access log |
//! | [`edge`] | the client's connection: sira's HTTP/1 session, header limits and timeouts, bad framing, keep-alive |
//! | [`client`] | one request's client side, HTTP/1 (sira's session) or HTTP/2 (Pingora's), behind one type |
//! | [`h1`] | what both HTTP/1 sides share: body framing, fields into a `HeaderMap` |
//! | [`downstream`] | reading the request body (bounded), writing and ending the response |
//! | [`policy`] | target order, retries, fallbacks and what each failure means |
//! | [`exchange`] | the upstream HTTP client: connect, write the request, read and frame the answer (HTTP/1, RFC 9112), pool |
//! | [`relay`] | the response phases and the body loop (JSON, SSE, whole) |
//! | [`hop`] | which headers cross the proxy |
//!
//! [`Gateway::handle`] runs the phases and does the I/O between them; it decides nothing.
//!
//! # Why not `ProxyHttp`
//!
//! sira implements Pingora's `HttpServerApp` and drives upstream connections itself rather
//! than through `ProxyHttp`. An LLM gateway must read the whole body before it can pick an
//! upstream (the model is in the body), and `ProxyHttp` can only replay a body it read
//! itself through its 64 KiB retry buffer, which agentic clients' requests routinely exceed:
//! owning the exchange keeps the body as one `Bytes`, sent (and re-sent to a fallback) to any
//! target whatever its size. It is also cheaper: measured side by side (`bench/RESULTS.md`,
//! `bench/pingora-floor` is Pingora's own `ProxyHttp` with nothing added), bare `ProxyHttp`
//! costs as much CPU per small JSON request as sira does with auth, accounting and access log
//! (30.7 µs against 30.0 µs in the 2026-12-05 run, 48.7 against 39.8 in the run before) and
//! 2.4× sira's per 100-event stream (245 µs against 102 µs; 2.2× before). The price
//! is keeping Pingora's wire rules by hand, each with a test: skip 1xx, frame a provider's
//! answer as RFC 9112 says and reuse its connection only when it ended exactly, never pass a
//! truncated body on as complete, send again only what was never written, time out slow
//! clients, bound every buffer ([`edge`], [`exchange`], [`relay`]).
//!
//! Every phase takes the request's [`RequestCtx`], which pins the config snapshot the
//! request started with.

mod attempt;
pub(crate) mod body;
pub mod client;
mod ctx;
pub mod downstream;
pub mod edge;
pub mod exchange;
pub(crate) mod h1;
mod header_edit;
mod hedge;
pub mod hop;
pub mod modules;
pub mod phases;
mod policy;
mod relay;
mod replay;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue};
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;

pub use client::Client;
pub use ctx::RequestCtx;

use crate::access_log::AccessLog;
use crate::config::Live;
use crate::error::GatewayError;
use crate::shutdown::Drain;
use edge::H1Session;
use phases::{Answer, Chain, LocalResponse, RequestBody};

static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The main listeners' application.
pub struct Gateway {
    pub live: Arc<Live>,
    pub chain: Chain,
    pub exchange: exchange::Exchange,
    /// Requests in flight, for a shutdown that exits as soon as they are done.
    pub drain: Arc<Drain>,
    options: HttpServerOptions,
}

impl Gateway {
    pub fn new(live: Arc<Live>, access_log: Arc<AccessLog>, drain: Arc<Drain>) -> Gateway {
        let mut options = HttpServerOptions::default();
        // h2c on the plain listeners, as CONTRACT.md promises.
        options.h2c = true;
        // An HTTP/2 connection with no stream in flight is closed like an idle HTTP/1 one
        // (from the start: a client that sends the preface and nothing else included).
        options.h2_idle_timeout = Some(live.load_full().server.keepalive);
        Gateway {
            live,
            chain: Chain::standard(access_log),
            exchange: exchange::Exchange::new(),
            drain,
            options,
        }
    }
}

#[async_trait]
impl HttpServerApp for Gateway {
    /// HTTP/2 streams arrive here (HTTP/1 connections are served by [`edge::Edge`]).
    /// `timeouts.keepalive` closes an idle HTTP/2 connection; it is read at startup.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            // The stream was reset, or its header was refused by the HTTP/2 layer.
            Ok(false) | Err(_) => return None,
        }
        // HTTP/2 bounds the header list's size (`h2_options`); its field count is checked
        // here, as the edge does for HTTP/1.
        let max_headers = self.live.load_full().server.max_headers;
        let fields = session.req_header().headers.len();
        let refused = (fields > max_headers).then(|| {
            crate::metrics::metrics().buffer_limit(crate::metrics::Buffer::RequestHeader);
            GatewayError::HeaderTooLarge(format!(
                "{fields} fields, more than server.max_headers ({max_headers})"
            ))
        });
        // `async_trait` boxes this method's future, and Pingora moves it into the stream's
        // task: kept small, as the request's own state (~11 KB) lives in a box of its own.
        in_box(|| self.serve_checked(Client::H2(session), shutdown, refused)).await;
        // An HTTP/2 stream's end is not its connection's: Pingora's loop goes on reading.
        None
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    /// HTTP/2 header lists are bounded like HTTP/1 headers (`server.max_header_size`).
    fn h2_options(&self) -> Option<pingora_core::protocols::http::v2::server::H2Options> {
        let mut options = pingora_core::protocols::http::v2::server::default_h2_options();
        let limit = self.live.load_full().server.max_header_size;
        options.max_header_list_size(u32::try_from(limit).unwrap_or(u32::MAX));
        Some(options)
    }
}

/// The future `make` returns, in a box allocated before it is made, so that it can be written
/// there directly rather than made elsewhere and copied in (as `Box::pin(make())` would).
fn in_box<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let slot = Box::<F>::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

impl Gateway {
    /// Serves one request whose header was read; the HTTP/1 session back when its
    /// connection can carry another request.
    pub async fn serve(&self, session: Client, shutdown: &ShutdownWatch) -> Option<Box<H1Session>> {
        self.serve_checked(session, shutdown, None).await
    }

    /// Like [`Gateway::serve`], for a request the edge already refused (`refused`): it is
    /// answered with that error, logged like any other, and its connection closed.
    pub async fn serve_checked(
        &self,
        mut session: Client,
        shutdown: &ShutdownWatch,
        refused: Option<GatewayError>,
    ) -> Option<Box<H1Session>> {
        let _in_flight = self.drain.enter();
        let snap = self.live.load_full();
        // The client's wish (`Connection: close`, HTTP/1.0 without keep-alive) was read with
        // its head; the gateway's own only adds reasons to close.
        let keep = !*shutdown.borrow() && refused.is_none();
        session.set_keep_alive(keep);
        session.set_write_timeout(snap.server.write_timeout);
        let mut ctx = RequestCtx::new(snap, request_id(&session));
        ctx.client_ip = session.client_ip();
        // A shared buffer, not a copy.
        ctx.forwarded_for = session.req_header().headers.get(&X_FORWARDED_FOR).cloned();
        ctx.client_identity = session
            .tls()
            .as_ref()
            .and_then(|tls| tls.extension.get::<crate::tls::VerifiedPeer>())
            .and_then(crate::tls::VerifiedPeer::identity)
            .map(|identity| Arc::new(identity.clone()));
        let result = match refused {
            Some(error) => Err(error),
            None => self.handle(&mut session, &mut ctx).await,
        };
        if let Err(error) = result {
            self.fail(&mut session, &mut ctx, error).await;
        }
        self.chain.logging(session.req_header(), &mut ctx);
        if ctx.response.client_gone || ctx.response.aborted {
            return None;
        }
        session.finish().await
    }

    /// The phases, in order, with the I/O between them. An `Err` means nothing was sent yet
    /// and the error is rendered in the client's surface shape.
    async fn handle(&self, session: &mut Client, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        if let Some(answer) = self.chain.request_filter(session.req_header(), ctx).await? {
            return self.answer(session, ctx, answer).await;
        }
        let server = &ctx.snap.server;
        let bytes =
            downstream::read_body(session, server.max_request_body, server.body_timeout).await?;
        body::check_untrusted(&bytes)?;
        let peek = body::peek(&bytes)?;
        let mut body = RequestBody { bytes, peek };
        match self.chain.request_body_filter(&mut body, ctx).await? {
            Some(Answer::Local(answer)) => return self.answer(session, ctx, answer).await,
            Some(Answer::Replay(replay)) => {
                return replay::replay(self, session, ctx, replay).await
            }
            None => {}
        }
        let upstream = policy::proxy_upstream(self, session, ctx, &body).await?;
        relay::relay(self, session, ctx, upstream).await
    }

    async fn answer(
        &self,
        session: &mut Client,
        ctx: &mut RequestCtx,
        answer: LocalResponse,
    ) -> Result<(), GatewayError> {
        self.respond(session, ctx, answer.status, answer.body, None)
            .await;
        Ok(())
    }

    /// Answers with `error` rendered for the client's surface, unless the client is gone. A
    /// response already started cannot change its mind: it is ended as broken.
    async fn fail(&self, session: &mut Client, ctx: &mut RequestCtx, error: GatewayError) {
        let status = error.status();
        let body = error.render(ctx.format);
        let allow = match &error {
            GatewayError::MethodNotAllowed(allowed) => Some(*allowed),
            _ => None,
        };
        ctx.error = Some(error);
        if ctx.response.client_gone {
            return;
        }
        if session.response_written() {
            downstream::abort(session, ctx).await;
            return;
        }
        self.respond(session, ctx, status, body, allow).await;
    }

    /// A JSON response sira writes itself, through the response phases (sira's headers,
    /// the operator's header filters).
    async fn respond(
        &self,
        session: &mut Client,
        ctx: &mut RequestCtx,
        status: u16,
        body: Bytes,
        allow: Option<&'static str>,
    ) {
        ctx.response.local = true;
        ctx.response.status = status;
        let Ok(mut header) = local_header(status, body.len(), allow) else {
            return;
        };
        if let Err(e) = self.chain.response_filter(&mut header, ctx) {
            tracing::warn!(request_id = ?ctx.id, "response filter failed on a local answer: {e}");
        }
        if !downstream::write_header(session, ctx, header).await {
            return;
        }
        if !downstream::write(session, ctx, body, true).await {
            return;
        }
        // Refused before its body was read: the connection closes after this answer (the
        // session does not reuse it) rather than drain an upload of any size; a short, bounded linger
        // lets the client read the answer instead of a reset — unless the client was refused
        // for being too slow to send.
        let slow = matches!(ctx.error, Some(GatewayError::RequestTimeout(_)));
        if !session.is_http2() && !slow && !session.is_body_done() {
            downstream::linger(session).await;
        }
    }
}

fn local_header(
    status: u16,
    length: usize,
    allow: Option<&'static str>,
) -> pingora_error::Result<ResponseHeader> {
    let mut header = ResponseHeader::build_no_case(status, Some(6))?;
    header.insert_header(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )?;
    header.insert_header(header::CONTENT_LENGTH, length)?;
    if let Some(allowed) = allow {
        header.insert_header(header::ALLOW, allowed)?;
    }
    Ok(header)
}

/// The client's `x-request-id` when it is a sane token, else a new one.
fn request_id(session: &Client) -> HeaderValue {
    if let Some(given) = session.req_header().headers.get(modules::X_REQUEST_ID) {
        let sane = (1..=128).contains(&given.len())
            && given.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if sane {
            return given.clone();
        }
    }
    new_request_id()
}

/// Unique within a process run and unpredictable across runs, without a syscall per
/// request: a random per-process prefix and a counter.
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
        let mut bytes = [0u8; 4];
        // If the OS generator fails the ids are still unique, just predictable.
        let _ = getrandom::fill(&mut bytes);
        u32::from_le_bytes(bytes)
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `req_`, the prefix in 8 hex digits, the counter's low 48 bits in 12, written by hand:
    // `format!` cost 1.5k instructions per request.
    let mut text = *b"req_00000000000000000000";
    let digits = (u128::from(*PREFIX) << 48) | u128::from(n & ((1 << 48) - 1));
    for (i, byte) in text[4..].iter_mut().rev().enumerate() {
        *byte = b"0123456789abcdef"[((digits >> (4 * i)) & 0xf) as usize];
    }
    // Hex digits and underscore are always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("req_unknown"))
}

/// `fut`, or `None` when it is still not done `after` it first had to wait. The timer is
/// only created when `fut` has to wait at all, so the common case (the bytes are already
/// there) costs no timer registration.
pub async fn lazy_timeout<F: Future>(after: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_the_prefix_and_the_counter_in_hex() {
        let first = super::new_request_id();
        let second = super::new_request_id();
        let (first, second) = (first.to_str().unwrap(), second.to_str().unwrap());
        for id in [first, second] {
            assert_eq!(id.len(), 24, "{id}");
            assert!(id.starts_with("req_"), "{id}");
            assert!(id[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        // One process prefix; counters that differ (other tests may take ids in between).
        assert_eq!(first[..12], second[..12]);
        let count = |id: &str| u64::from_str_radix(&id[12..], 16).unwrap();
        assert!(count(second) > count(first), "{first} {second}");
    }
}
