//! A client's HTTP/1 request head: parsed with httparse straight into Pingora's
//! `RequestHeader` (an `http::HeaderMap` whose values are slices of one copy of the head),
//! with the framing rules a proxy must keep to never read a request differently from the
//! proxy in front of it.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, HOST, TRANSFER_ENCODING};
use http::{Method, Uri, Version};
use pingora_http::RequestHeader;

use crate::error::GatewayError;
use crate::metrics::{metrics, Buffer};
use crate::proxy::h1::fields;
use crate::proxy::h1::framing::{chunked_only, content_length, has_token, Framing};

/// Fields httparse is given room for; `server.max_headers` is at most this (config).
pub const MAX_FIELDS: usize = 256;

/// A request head, read whole.
pub struct Head {
    pub header: RequestHeader,
    /// The head as it arrived, for the checks on raw bytes (`edge::ambiguous_head`).
    pub raw: Bytes,
    /// How the request's body ends.
    pub body: Framing,
    /// The client allows the connection to carry another request (RFC 9112 §9.3).
    pub keep_alive: bool,
}

/// The head at the start of `buf`, taken out of it; `None` while it is incomplete. An `Err`
/// is answered and the connection closed: no framing can be trusted after it.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Head>, GatewayError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            metrics().buffer_limit(Buffer::RequestHeader);
            return Err(GatewayError::HeaderTooLarge(
                "more fields than server.max_headers".into(),
            ));
        }
        // Only the kind of fault goes back and to the log: the head holds the client's key.
        Err(e) => {
            return Err(GatewayError::BadFraming(format!(
                "malformed request header ({e})"
            )))
        }
    };
    let method = request.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| invalid("its method"))?;
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let head = &buf[..len];
    let path = fields::span(head, request.path.unwrap_or_default().as_bytes())
        .ok_or_else(|| invalid("its target"))?;
    // A copy of its own (a few hundred bytes): the fields' values are slices of it and live
    // as long as the request, which must not hold the connection's read buffer.
    let raw = Bytes::copy_from_slice(head);
    let headers =
        fields::into_map(&raw, head, request.headers).ok_or_else(|| invalid("a field"))?;
    buf.advance(len);
    let uri = Uri::from_maybe_shared(raw.slice(path)).map_err(|_| invalid("its target"))?;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    let header = RequestHeader::from(parts);
    check_authority(&header)?;
    let (body, keep_alive) = framing(&header)?;
    Ok(Some(Head {
        header,
        raw,
        body,
        keep_alive,
    }))
}

fn invalid(what: &str) -> GatewayError {
    GatewayError::BadFraming(format!("malformed request header ({what})"))
}

/// One `Host`, without userinfo, and the same as an absolute target's authority: a request
/// routed on one name must not reach a filter that reads another.
fn check_authority(header: &RequestHeader) -> Result<(), GatewayError> {
    let mut hosts = header.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(invalid("several Host fields"));
    }
    if host.is_some_and(|h| h.as_bytes().contains(&b'@')) {
        return Err(invalid("userinfo in Host"));
    }
    if let Some(authority) = header.uri.authority() {
        if authority.as_str().contains('@') {
            return Err(invalid("userinfo in the target"));
        }
        if host.is_some_and(|h| h.as_bytes() != authority.as_str().as_bytes()) {
            return Err(invalid("a Host that differs from the target's authority"));
        }
    }
    Ok(())
}

/// How the request's body ends and whether the client keeps the connection (RFC 9112 §6.3,
/// §9.3). Requests are never delimited by a close: no length and no coding is no body.
fn framing(header: &RequestHeader) -> Result<(Framing, bool), GatewayError> {
    let headers = &header.headers;
    let keep_alive = match header.version {
        Version::HTTP_11 => !has_token(headers, CONNECTION, b"close"),
        _ => {
            has_token(headers, CONNECTION, b"keep-alive")
                && !has_token(headers, CONNECTION, b"close")
        }
    };
    if headers.contains_key(TRANSFER_ENCODING) {
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; a coding other than chunked
        // alone leaves the body's end unknown.
        if header.version == Version::HTTP_10 || !chunked_only(headers) {
            return Err(GatewayError::BadFraming(
                "a Transfer-Encoding other than chunked".into(),
            ));
        }
        return Ok((Framing::CHUNKED, keep_alive));
    }
    match content_length(headers) {
        Ok(Some(0) | None) => Ok((Framing::Done, keep_alive)),
        Ok(Some(length)) => Ok((Framing::Length(length), keep_alive)),
        Err(_) => Err(GatewayError::BadFraming(
            "an invalid or conflicting Content-Length".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, GatewayError> {
        parse(&mut BytesMut::from(raw.as_bytes()))
    }

    #[test]
    fn a_request_head_is_parsed_into_a_request_header() {
        let mut buf = BytesMut::from(
            &b"\r\nPOST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\n{}GET"[..],
        );
        let head = parse(&mut buf).unwrap().unwrap();
        assert_eq!(head.header.method, Method::POST);
        assert_eq!(head.header.uri.path(), "/v1/chat/completions");
        assert_eq!(head.header.uri.query(), Some("x=1"));
        assert_eq!(head.header.raw_path(), b"/v1/chat/completions?x=1");
        assert_eq!(head.header.version, Version::HTTP_11);
        assert_eq!(head.header.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(head.body, Framing::Length(2));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"{}GET", "what follows the head stays");
    }

    #[test]
    fn incomplete_heads_wait() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: g"[..]);
        assert!(matches!(parse(&mut buf), Ok(None)));
        assert_eq!(buf.len(), 23);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let kept = |raw: &str| head(raw).unwrap().unwrap().keep_alive;
        assert!(kept("GET / HTTP/1.1\r\n\r\n"));
        assert!(!kept("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!kept("GET / HTTP/1.0\r\n\r\n"));
        assert!(kept("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!kept(
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunks_and_nothing_else() {
        let body = |raw: &str| head(raw).map(|h| h.unwrap().body);
        assert_eq!(body("GET / HTTP/1.1\r\n\r\n").unwrap(), Framing::Done);
        assert_eq!(
            body("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap(),
            Framing::Done,
            "an empty body is read whole at once"
        );
        assert_eq!(
            body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
            Framing::CHUNKED
        );
        assert_eq!(
            body("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n").unwrap(),
            Framing::Length(3)
        );
        for refused in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n",
            "GET http://u@a/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
        ] {
            assert!(
                matches!(head(refused), Err(GatewayError::BadFraming(_))),
                "{refused:?}"
            );
        }
        assert!(head("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
    }

    #[test]
    fn more_fields_than_room_is_431() {
        let mut raw = "GET / HTTP/1.1\r\n".to_string();
        for i in 0..=MAX_FIELDS {
            raw.push_str(&format!("x-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert!(matches!(head(&raw), Err(GatewayError::HeaderTooLarge(_))));
    }
}
