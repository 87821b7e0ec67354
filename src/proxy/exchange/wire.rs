//! The upstream request as it goes on the wire.

use bytes::BytesMut;
use pingora_core::protocols::http::v1::client::http_req_header_to_wire;
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
/// than a system call and a wake-up — and reads the response itself (`super::h1`: sira
/// never sends the HEAD or upgrade requests whose responses are framed otherwise). Large
/// bodies are written after the header, without a copy.
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

    /// Writes the whole request on `stream`, or says why it could not be written whole.
    pub async fn send(&self, mut stream: Stream) -> std::io::Result<Stream> {
        use tokio::io::AsyncWriteExt;
        stream.write_all(&self.head).await?;
        if !self.tail.is_empty() {
            stream.write_all(self.tail).await?;
        }
        stream.flush().await?;
        Ok(stream)
    }
}
