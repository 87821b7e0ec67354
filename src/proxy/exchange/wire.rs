//! The upstream request as it goes on the wire.

use bytes::BytesMut;
use pingora_core::protocols::http::v1::client::{http_req_header_to_wire, HttpSession};
use pingora_core::protocols::Stream;
use pingora_http::RequestHeader;

/// Bodies up to this size go out in the same write as the request header.
const ONE_WRITE_BODY_MAX: usize = 16 * 1024;

/// The request as it goes on the wire, built once per try: a try whose pooled connection
/// turns out closed sends the same bytes again.
///
/// Pingora's H1 client flushes the header on its own, then the body: two system calls and
/// two TCP segments, and the provider wakes up twice. For the usual chat request (a few KB)
/// sira writes header and body in one buffer instead — a copy of a few KB costs far less
/// than a system call and a wake-up — and hands the stream to a fresh session to read the
/// response (the session only needs the request to tell HEAD and upgrade requests apart,
/// which sira never sends). Large bodies are written after the header, without a copy.
pub struct RequestWire<'a> {
    /// The header, and the body when it is small.
    head: BytesMut,
    /// The body when it is large.
    tail: &'a [u8],
}

impl<'a> RequestWire<'a> {
    pub fn new(header: &RequestHeader, body: &'a [u8]) -> pingora_error::Result<RequestWire<'a>> {
        use pingora_error::{Error, ErrorType};
        let Some(mut head) = http_req_header_to_wire(header) else {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "request header cannot be written",
            );
        };
        let tail = if body.len() <= ONE_WRITE_BODY_MAX {
            head.extend_from_slice(body);
            &[][..]
        } else {
            body
        };
        Ok(RequestWire { head, tail })
    }

    /// Writes the whole request; the session to read the response from, or why the request
    /// could not be written whole. The session is boxed: it is handed through every layer of
    /// the attempt (timeouts, retries, the hedge's race) and each would copy its ~470 bytes.
    pub async fn send(&self, mut stream: Stream) -> std::io::Result<Box<HttpSession>> {
        use tokio::io::AsyncWriteExt;
        stream.write_all(&self.head).await?;
        if !self.tail.is_empty() {
            stream.write_all(self.tail).await?;
        }
        stream.flush().await?;
        Ok(Box::new(HttpSession::new(stream)))
    }
}
