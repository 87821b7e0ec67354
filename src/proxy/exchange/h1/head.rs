//! The head of a provider's answer: read, parsed straight into a `HeaderMap`, bounded.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, StatusCode, Version};
use pingora_core::protocols::Stream;
use pingora_http::ResponseHeader;
use tokio::io::AsyncReadExt;

use super::reserve;
use crate::proxy::h1::fields;

/// A response head larger than this is refused (nginx reads 4 or 8 KiB by default).
pub const MAX_HEAD: usize = 64 * 1024;
/// Fields of one response head, at most.
const MAX_FIELDS: usize = 256;

/// Why no usable response head was read.
#[derive(Debug)]
pub enum HeadError {
    /// The connection failed or closed before a whole head.
    Io(String),
    /// What arrived is not an HTTP/1 response head sira can use.
    Invalid(String),
}

/// The parser httparse is asked to be: lenient where providers' servers are known to be
/// sloppy without ambiguity (several spaces around the status code, spaces before a
/// field's colon, which httparse leaves out of the name), as Pingora's client was. A field
/// folded over several lines (obsolete since RFC 7230) is refused: its value would hold a
/// line break.
fn parser() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config.allow_multiple_spaces_in_response_status_delimiters(true);
    config.allow_spaces_after_header_name_in_responses(true);
    config
}

/// Reads the next response head from `stream`, after the bytes already in `buf`. On return
/// `buf` holds what followed the head (the start of the body, or of the next head after an
/// informational response).
pub async fn read_head(stream: &mut Stream, buf: &mut BytesMut) -> Result<Head, HeadError> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_head(buf)? {
                return Ok(head);
            }
            if buf.len() > MAX_HEAD {
                return Err(HeadError::Invalid(format!(
                    "the response header is larger than {} KiB",
                    MAX_HEAD / 1024
                )));
            }
        }
        reserve(buf);
        match stream.read_buf(buf).await {
            Ok(0) if buf.is_empty() => {
                return Err(HeadError::Io("closed before a response".into()))
            }
            Ok(0) => return Err(HeadError::Io("closed within the response header".into())),
            Ok(_) => {}
            Err(e) => return Err(HeadError::Io(e.to_string())),
        }
    }
}

/// A response head: its status, version and fields.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
}

impl Head {
    pub fn into_header(self) -> ResponseHeader {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status;
        parts.version = self.version;
        parts.headers = self.headers;
        ResponseHeader::from(parts)
    }
}

/// The head at the start of `buf`, taken out of it; `None` while it is incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, HeadError> {
    let invalid = || HeadError::Invalid("the response header is not valid HTTP".into());
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    let len = match parser().parse_response_with_uninit_headers(&mut response, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Invalid(format!(
                "the response header has more than {MAX_FIELDS} fields"
            )))
        }
        Err(_) => return Err(invalid()),
    };
    let code = response.code.ok_or_else(invalid)?;
    let minor = response.version.ok_or_else(invalid)?;
    // The head gets an allocation of its own (a copy of a few hundred bytes): its values are
    // slices of it, and live as long as the response header, which must not keep the
    // read buffer behind the body alive.
    let head = Bytes::copy_from_slice(&buf[..len]);
    let headers = fields::into_map(&head, &buf[..len], response.headers).ok_or_else(invalid)?;
    buf.advance(len);
    Ok(Some(Head {
        status: StatusCode::from_u16(code).map_err(|_| invalid())?,
        version: if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        },
        headers,
    }))
}

/// The head at the start of `bytes` and what follows it: for tests.
#[cfg(test)]
pub(super) fn head_of(bytes: &[u8]) -> (Head, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let head = parse_head(&mut buf).ok().flatten().expect("a whole head");
    (head, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_parsed_into_a_header_map() {
        let (head, rest) = head_of(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: req_1\r\nContent-Length: 2\r\n\r\n{}",
        );
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["content-type"], "application/json");
        assert_eq!(head.headers["x-request-id"], "req_1");
        assert_eq!(&rest[..], b"{}");
    }

    #[test]
    fn partial_and_invalid_heads() {
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(matches!(parse_head(&mut partial), Ok(None)));
        assert_eq!(partial.len(), 27, "an incomplete head stays in the buffer");
        for bad in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_head(&mut BytesMut::from(bad)),
                    Err(HeadError::Invalid(_))
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_head(&mut BytesMut::from(&many[..])),
            Err(HeadError::Invalid(e)) if e.contains("fields")
        ));
    }
}
