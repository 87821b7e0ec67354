//! The HTTP client side of one try: connect (or take a pooled connection), write the
//! request, read the response header and then the body, give the connection back.
//!
//! Pingora's `TransportConnector` makes the connections (TCP options, TLS); sira keeps the
//! pool ([`pool`]), writes the requests ([`wire`]), reads the responses ([`h1`]) and runs
//! the loop. Owning the loop means keeping by hand the rules Pingora's `ProxyHttp` keeps:
//!
//! - informational (1xx) responses are skipped, never taken for the answer;
//! - a body that ends before its framing says it is complete (a short `Content-Length`, a
//!   chunked body without its last chunk, a reset, the idle timeout) is an error, never an
//!   end, and its connection is never pooled again;
//! - a request is sent again, once, on a new connection only when sending it on a pooled
//!   connection failed. A request that could not be written whole cannot have been acted on
//!   (an HTTP server starts on a request once its body is complete), so sending it again
//!   cannot repeat a generation; any failure after the request was written whole goes to the
//!   retry policy as "may have run" ([`ExchangeError::may_have_run`]).
//!
//! What to try next, and whether, is the policy's business (`super::policy`).

mod h1;
pub mod pool;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;

pub use wire::{Outgoing, RequestWire};

use pool::{PoolKey, UpstreamPool};

use crate::provider::{Endpoint, Timeouts};

/// More informational responses than this before the final one is a broken upstream.
const MAX_INFORMATIONAL: usize = 16;

/// Why a try got no usable response header.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no connection within {}ms", .0.as_millis())]
    ConnectTimeout(Duration),
    /// The request could not be written whole on a new connection.
    #[error("cannot send the request: {0}")]
    Unsent(String),
    #[error("no response within {}ms", .0.as_millis())]
    FirstByteTimeout(Duration),
    /// The request was written, then the connection failed before a response header.
    #[error("the connection failed before a response: {0}")]
    NoResponse(String),
    /// The response header could not be read as HTTP.
    #[error("invalid response: {0}")]
    BadResponse(String),
}

impl ExchangeError {
    /// Whether the provider may have received the whole request and acted on it: then
    /// sending it again, anywhere, may run (and bill) the generation twice.
    pub fn may_have_run(&self) -> bool {
        match self {
            ExchangeError::Connect(_)
            | ExchangeError::ConnectTimeout(_)
            | ExchangeError::Unsent(_) => false,
            ExchangeError::FirstByteTimeout(_)
            | ExchangeError::NoResponse(_)
            | ExchangeError::BadResponse(_) => true,
        }
    }

    pub fn timed_out(&self) -> bool {
        matches!(
            self,
            ExchangeError::ConnectTimeout(_) | ExchangeError::FirstByteTimeout(_)
        )
    }
}

/// Why a response body could not be read to its end.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BodyError {
    #[error("nothing received for {}ms", .0.as_millis())]
    Idle(Duration),
    /// Cut short, reset, or not valid HTTP framing.
    #[error("the response body was cut short: {0}")]
    Broken(String),
}

/// A Pingora error as sira tells it (to clients, in the access log): its type and, for an
/// I/O failure, the system's reason. Never its context text, which can hold raw bytes of
/// the exchange (Pingora puts a bad header's whole buffer there, and a provider that echoes
/// requests would echo its own credential into it).
pub fn describe(e: &pingora_error::Error) -> String {
    let kind = e.etype().as_str();
    match e.root_cause().downcast_ref::<std::io::Error>() {
        Some(io) => format!("{kind}: {io}"),
        None => kind.to_owned(),
    }
}

/// Where one try goes.
pub struct Destination<'a> {
    pub addr: SocketAddr,
    pub endpoint: &'a Endpoint,
    pub timeouts: Timeouts,
}

/// The upstream HTTP client: connections and their pool.
pub struct Exchange {
    pool: Arc<UpstreamPool>,
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange {
            pool: UpstreamPool::new(),
        }
    }

    /// Sends `wire` to `dest` and waits for the final response header. One deadline
    /// (`first_byte`) covers the whole try, whether or not a stale pooled connection costs a
    /// second send.
    pub async fn send(
        &self,
        dest: &Destination<'_>,
        wire: &RequestWire<'_>,
    ) -> Result<UpstreamResponse, ExchangeError> {
        let endpoint = dest.endpoint;
        let timeouts = dest.timeouts;
        let key = PoolKey {
            addr: dest.addr,
            tls: endpoint.tls,
            endpoint: endpoint.url.clone(),
            tls_options: endpoint.upstream_tls.as_ref().map_or(0, |t| t.id),
        };
        // One clock read for the deadline and the pool's idle check.
        let now = std::time::Instant::now();
        let deadline = tokio::time::Instant::from_std(now) + timeouts.first_byte;
        let timed_out = || ExchangeError::FirstByteTimeout(timeouts.first_byte);
        if let Some(pooled) = self.pool.take(&key, now) {
            match tokio::time::timeout_at(deadline, exchange(pooled, wire)).await {
                Ok(Ok(answer)) => return Ok(self.response(answer, key, timeouts)),
                // Closed under the request (the provider's idle timeout firing as it was
                // written): it never arrived whole, so it goes again on a new connection.
                Ok(Err(Failure::Unsent(_))) => {}
                Ok(Err(failure)) => return Err(failure.into()),
                Err(_) => return Err(timed_out()),
            }
        }
        let mut peer = HttpPeer::new(dest.addr, endpoint.tls, endpoint.host.clone());
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.total_connection_timeout = Some(timeouts.connect);
        if let (true, Some(tls)) = (endpoint.tls, &endpoint.upstream_tls) {
            peer.options.ca = tls.ca.clone();
            peer.client_cert_key = tls.client.clone();
        }
        let fresh = self.pool.connect(&peer).await.map_err(|e| {
            use pingora_error::ErrorType;
            match e.etype() {
                ErrorType::ConnectTimedout => ExchangeError::ConnectTimeout(timeouts.connect),
                _ => ExchangeError::Connect(describe(&e)),
            }
        })?;
        match tokio::time::timeout_at(deadline, exchange(fresh, wire)).await {
            Ok(Ok(answer)) => Ok(self.response(answer, key, timeouts)),
            Ok(Err(failure)) => Err(failure.into()),
            Err(_) => Err(timed_out()),
        }
    }

    fn response(&self, answer: Box<Answer>, key: PoolKey, t: Timeouts) -> UpstreamResponse {
        UpstreamResponse {
            answer,
            key,
            pool: self.pool.clone(),
            idle: t.idle,
        }
    }
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

enum Failure {
    /// The request could not be written whole.
    Unsent(std::io::Error),
    NoResponse(String),
    BadResponse(String),
}

impl From<h1::HeadError> for Failure {
    fn from(e: h1::HeadError) -> Failure {
        match e {
            h1::HeadError::Io(reason) => Failure::NoResponse(reason),
            h1::HeadError::Invalid(reason) => Failure::BadResponse(reason),
        }
    }
}

impl From<Failure> for ExchangeError {
    fn from(failure: Failure) -> ExchangeError {
        match failure {
            Failure::Unsent(e) => ExchangeError::Unsent(e.to_string()),
            Failure::NoResponse(reason) => ExchangeError::NoResponse(reason),
            Failure::BadResponse(reason) => ExchangeError::BadResponse(reason),
        }
    }
}

/// Writes the request on `stream` and reads the final response header, skipping
/// informational ones (`103 Early Hints`, a stray `100 Continue`).
async fn exchange(stream: Stream, wire: &RequestWire<'_>) -> Result<Box<Answer>, Failure> {
    let mut stream = wire.send(stream).await.map_err(Failure::Unsent)?;
    let mut buf = BytesMut::new();
    for _ in 0..=MAX_INFORMATIONAL {
        let mut head = h1::read_head(&mut stream, &mut buf).await?;
        match head.status.as_u16() {
            // sira never asks for an upgrade: a 101 is not an answer it can relay.
            101 => {
                return Err(Failure::BadResponse(
                    "unexpected 101 Switching Protocols".into(),
                ))
            }
            100..=199 => continue,
            _ => {
                if let Some(refused) = encoded(&head.headers) {
                    return Err(Failure::BadResponse(refused));
                }
                let body = h1::Body::new(stream, buf, &mut head)?;
                return Ok(Box::new(Answer {
                    header: head.into_header(),
                    body: Some(body),
                    failed: None,
                }));
            }
        }
    }
    Err(Failure::BadResponse(format!(
        "more than {MAX_INFORMATIONAL} informational responses"
    )))
}

/// Why a response whose body is content-coded cannot be relayed: sira asks for `identity`
/// and reads each answer as it arrives, so a provider that compresses anyway (a misconfigured
/// server in front of a model) is broken, and its bytes would reach the client unaccounted
/// and untranslated. Refused before a byte of the body is read. The coding is not named:
/// the field is the provider's text, and one that echoes requests could put a credential
/// there.
fn encoded(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|c| c.trim_ascii())
        .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
        .then(|| "the response is content-coded, which sira did not ask for".to_owned())
}

/// A final response header and the body still to read. Boxed: it is handed through every
/// layer of the attempt (timeouts, retries, the hedge's race), and each would copy it.
struct Answer {
    header: ResponseHeader,
    /// `None` once the body was read whole and the connection went back to the pool, or
    /// after a failure closed it.
    body: Option<h1::Body>,
    /// Why the body failed, if it did: a read after that is the same failure, never an end.
    failed: Option<BodyError>,
}

/// A response header from a provider, with the connection its body is read from.
pub struct UpstreamResponse {
    answer: Box<Answer>,
    key: PoolKey,
    pool: Arc<UpstreamPool>,
    idle: Duration,
}

impl UpstreamResponse {
    /// The final response header (1xx skipped).
    pub fn header(&self) -> &ResponseHeader {
        &self.answer.header
    }

    /// Whether the body has been read whole (or the connection failed): nothing more will
    /// come from the provider.
    pub fn finished(&self) -> bool {
        self.answer.body.is_none()
    }

    /// The next piece of the body, waiting at most the idle timeout. `Ok(None)`: the body
    /// is complete. As soon as it is, the connection goes back to the pool, before the last
    /// bytes are written to the client: a client that sends its next request the moment it
    /// has this response finds the connection ready.
    pub async fn read(&mut self) -> Result<Option<Bytes>, BodyError> {
        let Some(body) = self.answer.body.as_mut() else {
            return self.after_end();
        };
        let read = body.next(Some(self.idle)).await;
        self.after_read(read)
    }

    /// The next piece of the body if it has already arrived, without waiting: lets a burst
    /// of events that TCP delivered together go out in one write. `None`: nothing ready yet.
    pub fn ready(&mut self) -> Option<Result<Option<Bytes>, BodyError>> {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let Some(body) = self.answer.body.as_mut() else {
            return Some(self.after_end());
        };
        // One poll, no waiting and no timer: `read` waits, with the idle timeout.
        let polled = {
            let mut read = std::pin::pin!(body.next(None));
            // A no-op waker is enough: on `Pending` the caller goes back to `read`, whose
            // poll registers the task's real waker again.
            read.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        };
        match polled {
            Poll::Ready(read) => Some(self.after_read(read)),
            Poll::Pending => None,
        }
    }

    /// What a read past the body's end gets: the end again, or the failure again.
    fn after_end(&self) -> Result<Option<Bytes>, BodyError> {
        match &self.answer.failed {
            None => Ok(None),
            Some(error) => Err(error.clone()),
        }
    }

    fn after_read(
        &mut self,
        read: Result<Option<Bytes>, h1::ReadFault>,
    ) -> Result<Option<Bytes>, BodyError> {
        match read {
            Ok(Some(bytes)) => {
                if self.answer.body.as_ref().is_some_and(h1::Body::done) {
                    self.release();
                }
                Ok(Some(bytes))
            }
            Ok(None) => {
                self.release();
                Ok(None)
            }
            Err(fault) => {
                // Dropping the body closes the connection: it is never reused.
                self.answer.body = None;
                let error = match fault {
                    h1::ReadFault::Idle => BodyError::Idle(self.idle),
                    h1::ReadFault::Body(fault) => BodyError::Broken(fault.to_string()),
                };
                self.answer.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Hands the connection back to the pool once the response was read whole (or closes it
    /// when the provider asked to, or sent more than the response).
    fn release(&mut self) {
        if let Some(stream) = self.answer.body.take().and_then(h1::Body::into_reusable) {
            self.pool.put(self.key.clone(), stream);
        }
    }
}
