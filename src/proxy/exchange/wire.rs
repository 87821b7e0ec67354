//! The upstream request as it goes on the wire.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method};
use pingora_core::protocols::Stream;

/// Bodies up to this size go out in the same write as the request header.
const ONE_WRITE_BODY_MAX: usize = 16 * 1024;

/// A request to a provider as the upstream phases leave it: a `POST` (every call sira
/// makes for a client is one) to an origin-form target the provider module built, with
/// the fields to send; `Content-Length` is written from the body.
pub struct Outgoing {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A request target that is not a path of visible ASCII characters (a space, a CR or LF
/// would change the meaning of the request line; a `#` starts what no server is sent), so
/// it is never written.
#[derive(Debug, thiserror::Error)]
#[error("the request target is not an origin-form path")]
pub struct InvalidTarget;

/// The request as it goes on the wire, built once per try: a try whose pooled connection
/// turns out closed sends the same bytes again.
///
/// sira writes the request line and fields itself, straight from the `HeaderMap` the phases
/// edited (no `RequestHeader` is built, converted and taken apart again per edit). Pingora's
/// H1 client also flushes the header on its own, then the body: two system calls and two
/// TCP segments, and the provider wakes up twice. For the usual chat request (a few KB) the
/// header and body go in one buffer instead — a copy of a few KB costs far less than a
/// system call and a wake-up. Large bodies are written after the header, without a copy.
/// Field names go out in lower case, as HTTP/2 sends them (HTTP/1 names are
/// case-insensitive).
pub struct RequestWire<'a> {
    /// The header, and the body when it is small.
    head: BytesMut,
    /// The body when it is large.
    tail: &'a [u8],
}

impl<'a> RequestWire<'a> {
    /// `method target HTTP/1.1`, the fields (framing ones skipped: sira writes its own),
    /// `Content-Length` when there is a body or the method is `POST`, then the body.
    pub fn new(
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &'a [u8],
    ) -> Result<RequestWire<'a>, InvalidTarget> {
        if !target.starts_with('/')
            || !target
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'#')
        {
            return Err(InvalidTarget);
        }
        // Framing and the connection are sira's to say: a provider's `headers:` or a filter
        // asking to close would otherwise close a connection the pool then hands out.
        let fields: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        let inline = body.len() <= ONE_WRITE_BODY_MAX;
        let mut head = BytesMut::with_capacity(
            method.as_str().len()
                + target.len()
                + fields
                + 48
                + if inline { body.len() } else { 0 },
        );
        head.put_slice(method.as_str().as_bytes());
        head.put_u8(b' ');
        head.put_slice(target.as_bytes());
        head.put_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            if crate::proxy::hop::is_connection_level(name) {
                continue;
            }
            head.put_slice(name.as_str().as_bytes());
            head.put_slice(b": ");
            head.put_slice(value.as_bytes());
            head.put_slice(b"\r\n");
        }
        if !body.is_empty() || method == Method::POST {
            head.put_slice(b"content-length: ");
            head.put_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            head.put_slice(b"\r\n");
        }
        head.put_slice(b"\r\n");
        let tail = if inline {
            head.put_slice(body);
            &[][..]
        } else {
            body
        };
        Ok(RequestWire { head, tail })
    }

    /// The request `header` (a health check's, a model list's) and `body`.
    pub fn from_header(
        header: &pingora_http::RequestHeader,
        body: &'a [u8],
    ) -> Result<RequestWire<'a>, InvalidTarget> {
        let target = std::str::from_utf8(header.raw_path()).map_err(|_| InvalidTarget)?;
        RequestWire::new(&header.method, target, &header.headers, body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn text(wire: &RequestWire<'_>) -> String {
        let mut all = wire.head.to_vec();
        all.extend_from_slice(wire.tail);
        String::from_utf8(all).unwrap()
    }

    #[test]
    fn a_post_with_its_fields_and_length() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("api.example"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("connection", HeaderValue::from_static("close"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=1"));
        headers.append("x-two", HeaderValue::from_static("a"));
        headers.append("x-two", HeaderValue::from_static("b"));
        let wire = RequestWire::new(&Method::POST, "/v1/chat?x=1", &headers, b"{}").unwrap();
        assert_eq!(
            text(&wire),
            "POST /v1/chat?x=1 HTTP/1.1\r\nhost: api.example\r\nx-two: a\r\nx-two: b\r\ncontent-length: 2\r\n\r\n{}"
        );
        let big = vec![b'x'; ONE_WRITE_BODY_MAX + 1];
        let wire = RequestWire::new(&Method::POST, "/", &HeaderMap::new(), &big).unwrap();
        assert_eq!(wire.tail.len(), big.len(), "a large body is not copied");
    }

    #[test]
    fn a_get_without_a_body_has_no_length() {
        let wire = RequestWire::new(&Method::GET, "/v1/models", &HeaderMap::new(), b"").unwrap();
        assert_eq!(text(&wire), "GET /v1/models HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn targets_that_would_change_the_request_line_are_refused() {
        for bad in [
            "",
            "v1/chat",
            "/a b",
            "/a\r\nx: y",
            "/a\u{7f}",
            "/é",
            "/a#b",
        ] {
            assert!(
                RequestWire::new(&Method::POST, bad, &HeaderMap::new(), b"").is_err(),
                "{bad:?}"
            );
        }
    }
}
