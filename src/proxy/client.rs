//! The client's side of one request, whichever protocol carries it: sira's own HTTP/1
//! session ([`super::edge::H1Session`]) or a stream of Pingora's HTTP/2 server. The request
//! path reads and writes through this and never asks which.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::tls::SslDigest;
use pingora_http::{RequestHeader, ResponseHeader};

use super::edge::H1Session;

// The HTTP/2 variant is Pingora's session itself, the HTTP/1 one a box reused across the
// connection's requests: boxing the other would cost an allocation per stream, and a
// `Client` lives in its request's future, which is boxed already.
#[allow(clippy::large_enum_variant)]
pub enum Client {
    H1(Box<H1Session>),
    H2(ServerSession),
}

/// The client is gone, or stopped reading for longer than the write timeout.
#[derive(Debug)]
pub struct Gone;

impl Client {
    pub fn req_header(&self) -> &RequestHeader {
        match self {
            Client::H1(session) => session.req_header(),
            Client::H2(session) => session.req_header(),
        }
    }

    pub fn is_http2(&self) -> bool {
        matches!(self, Client::H2(_))
    }

    /// Whether the client lets the connection carry another request.
    pub fn client_keeps_alive(&self) -> bool {
        match self {
            Client::H1(session) => session.keep_alive(),
            Client::H2(_) => true,
        }
    }

    /// Whether the connection is to carry another request after this one (HTTP/1 only: an
    /// HTTP/2 stream's end is not its connection's).
    pub fn set_keep_alive(&mut self, keep: bool) {
        if let Client::H1(session) = self {
            session.set_keep_alive(keep);
        }
    }

    pub fn set_write_timeout(&mut self, timeout: Duration) {
        match self {
            Client::H1(session) => session.set_write_timeout(timeout),
            Client::H2(session) => session.set_write_timeout(Some(timeout)),
        }
    }

    pub fn client_ip(&self) -> Option<IpAddr> {
        match self {
            Client::H1(session) => session.client_ip(),
            Client::H2(session) => session
                .client_addr()
                .and_then(|addr| addr.as_inet())
                .map(|addr| addr.ip()),
        }
    }

    /// The TLS session's facts, on a TLS connection.
    pub fn tls(&self) -> Option<Arc<SslDigest>> {
        match self {
            Client::H1(session) => session.tls(),
            Client::H2(session) => session.digest().and_then(|d| d.ssl_digest.clone()),
        }
    }

    /// The next piece of the request's body, `None` at its end; an `Err` says why it broke.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Client::H1(session) => session.read_body().await.map_err(|e| e.to_string()),
            Client::H2(session) => session
                .read_request_body()
                .await
                .map_err(|e| super::exchange::describe(&e)),
        }
    }

    pub fn is_body_done(&mut self) -> bool {
        match self {
            Client::H1(session) => session.is_body_done(),
            Client::H2(session) => session.is_body_done(),
        }
    }

    /// Answers `Expect: 100-continue`.
    pub async fn write_continue(&mut self) -> Result<(), Gone> {
        match self {
            Client::H1(session) => session.write_continue().await.map_err(|_| Gone),
            Client::H2(session) => session.write_continue_response().await.map_err(|_| Gone),
        }
    }

    /// Returns once the client is gone (closed the connection, reset the stream) while its
    /// response is prepared.
    pub async fn gone(&mut self) {
        match self {
            Client::H1(session) => session.gone().await,
            Client::H2(session) => {
                let _ = session.read_body_or_idle(true).await;
            }
        }
    }

    pub fn response_written(&self) -> bool {
        match self {
            Client::H1(session) => session.response_written(),
            Client::H2(session) => session.response_written().is_some(),
        }
    }

    pub async fn write_response_header(&mut self, header: ResponseHeader) -> Result<(), Gone> {
        match self {
            Client::H1(session) => session
                .write_response_header(&header)
                .await
                .map_err(|_| Gone),
            Client::H2(session) => session
                .write_response_header(Box::new(header))
                .await
                .map_err(|_| Gone),
        }
    }

    pub async fn write_response_body(&mut self, data: Bytes, end: bool) -> Result<(), Gone> {
        match self {
            Client::H1(session) => session
                .write_response_body(data, end)
                .await
                .map_err(|_| Gone),
            Client::H2(session) => session
                .write_response_body(data, end)
                .await
                .map_err(|_| Gone),
        }
    }

    /// Ends a response that broke: HTTP/1 closes the connection (no last chunk), HTTP/2
    /// resets the stream.
    pub async fn shutdown(&mut self) {
        match self {
            Client::H1(session) => session.shutdown().await,
            Client::H2(session) => session.shutdown().await,
        }
    }

    /// Ends the exchange: the HTTP/1 session back when its connection carries on.
    pub async fn finish(self) -> Option<Box<H1Session>> {
        match self {
            Client::H1(session) => session.finish().await,
            Client::H2(session) => {
                let _ = session.finish().await;
                None
            }
        }
    }
}
