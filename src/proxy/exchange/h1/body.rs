//! The body of a provider's answer, as its framing says (RFC 9112 §6.3): a length,
//! chunks, or everything until the connection closes; and whether the connection may carry
//! another request afterwards.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::Version;
use pingora_core::protocols::Stream;
use tokio::io::AsyncReadExt;

use super::head::{Head, HeadError};
use super::reserve;
use crate::proxy::h1::framing::{
    chunked_only, content_length, has_token, Framing, LengthError, Step,
};

/// Why a body could not be read to its end (the caller adds its timeouts).
#[derive(Debug)]
pub enum BodyFault {
    Io(std::io::Error),
    /// The provider closed the connection before the framing's end.
    Closed,
    /// Bytes that are not a valid chunked body.
    Framing(&'static str),
}

impl std::fmt::Display for BodyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyFault::Io(e) => write!(f, "{e}"),
            BodyFault::Closed => f.write_str("the provider closed the connection before its end"),
            BodyFault::Framing(what) => write!(f, "invalid chunked framing: {what}"),
        }
    }
}

/// A response's body, read from its connection.
pub struct Body {
    stream: Stream,
    buf: BytesMut,
    framing: Framing,
    /// Whether the connection may carry another request once the body has ended.
    keep_alive: bool,
}

impl Body {
    /// The body of the response whose `head` was just read from `stream`; `buf` holds what
    /// followed the head. A framing sira cannot read is refused before any of it is.
    pub fn new(stream: Stream, buf: BytesMut, head: &mut Head) -> Result<Body, HeadError> {
        let (framing, keep_alive) = framing(head)?;
        Ok(Body {
            stream,
            buf,
            framing,
            keep_alive,
        })
    }

    /// Whether the body has been read to its end.
    pub fn done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The connection, for the next request: only when the body ended exactly where its
    /// framing said and the provider did not ask to close (bytes beyond the body mean the
    /// two sides disagree about where this response ended).
    pub fn into_reusable(self) -> Option<Stream> {
        (self.done() && self.keep_alive && self.buf.is_empty()).then_some(self.stream)
    }

    /// The next piece of the body, `None` at its end. `idle` bounds each wait for bytes;
    /// without it a read waits as long as it takes (the caller polls once and drops it).
    /// Dropped while waiting, nothing is lost: state changes only after bytes arrived.
    pub async fn next(&mut self, idle: Option<Duration>) -> Result<Option<Bytes>, ReadFault> {
        loop {
            match self
                .framing
                .step(&mut self.buf)
                .map_err(|what| ReadFault::Body(BodyFault::Framing(what)))?
            {
                Step::Piece(bytes) => return Ok(Some(bytes)),
                Step::End => return Ok(None),
                Step::NeedMore => {}
            }
            reserve(&mut self.buf);
            let read = self.stream.read_buf(&mut self.buf);
            let read = match idle {
                Some(idle) => pingora_timeout::timeout(idle, read)
                    .await
                    .map_err(|_| ReadFault::Idle)?,
                None => read.await,
            };
            match read {
                Ok(0) if self.framing == Framing::UntilClose => {
                    self.framing = Framing::Done;
                    self.keep_alive = false;
                    return Ok(None);
                }
                Ok(0) => return Err(ReadFault::Body(BodyFault::Closed)),
                Ok(_) => {}
                Err(e) => return Err(ReadFault::Body(BodyFault::Io(e))),
            }
        }
    }
}

/// Why `Body::next` returned no piece.
#[derive(Debug)]
pub enum ReadFault {
    /// Nothing arrived within the idle timeout.
    Idle,
    Body(BodyFault),
}

/// How the body of the response `head` ends, and whether its connection can be kept
/// (RFC 9112 §6.3 and §9.3). A transfer coding other than `chunked` is refused: sira never
/// offers one (`TE`), and its bytes could not be accounted or translated.
fn framing(head: &mut Head) -> Result<(Framing, bool), HeadError> {
    let headers = &mut head.headers;
    let mut keep_alive = match head.version {
        Version::HTTP_11 => !has_token(headers, CONNECTION, b"close"),
        _ => has_token(headers, CONNECTION, b"keep-alive"),
    };
    if matches!(head.status.as_u16(), 204 | 304) {
        return Ok((Framing::Length(0), keep_alive));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        if !chunked_only(headers) {
            return Err(HeadError::Invalid(
                "the response is transfer-coded other than chunked, which sira did not ask for"
                    .into(),
            ));
        }
        // With a Content-Length too, or from an HTTP/1.0 server, the framing is what
        // chunked says, but the connection is not trusted with another request. The
        // length is dropped (RFC 9112 §6.3): passed on, it would frame the client's copy.
        if headers.remove(CONTENT_LENGTH).is_some() || head.version == Version::HTTP_10 {
            keep_alive = false;
        }
        return Ok((Framing::CHUNKED, keep_alive));
    }
    let length = content_length(headers).map_err(|e| {
        HeadError::Invalid(match e {
            LengthError::Invalid => "the response's Content-Length is invalid".into(),
            LengthError::Conflicting => "the response has conflicting Content-Lengths".into(),
        })
    })?;
    match length {
        Some(length) => Ok((Framing::Length(length), keep_alive)),
        None => Ok((Framing::UntilClose, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::head::head_of;
    use super::*;
    use crate::proxy::h1::framing::MAX_CHUNK_LINE;

    /// The pieces `bytes` (a whole response) yields, framed by its head, and whether the
    /// connection is kept afterwards.
    async fn body_of(bytes: &[u8]) -> (Result<Vec<u8>, String>, bool) {
        let (mut head, buf) = head_of(bytes);
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(
            tokio::net::TcpStream::from_std(loopback_pair()).expect("tokio stream"),
        ));
        let mut body = match Body::new(stream, buf, &mut head) {
            Ok(body) => body,
            Err(e) => return (Err(format!("{e:?}")), false),
        };
        let mut out = Vec::new();
        loop {
            match body.next(None).await {
                Ok(Some(piece)) => out.extend_from_slice(&piece),
                Ok(None) => break,
                Err(e) => return (Err(format!("{e:?}")), false),
            }
        }
        (Ok(out), body.into_reusable().is_some())
    }

    /// A connected loopback socket whose peer has closed: reads see the end at once.
    fn loopback_pair() -> std::net::TcpStream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        drop(listener.accept().expect("accept"));
        client.set_nonblocking(true).expect("nonblocking");
        client
    }

    #[test]
    fn content_lengths_must_agree() {
        let frame = |extra: &str| {
            let raw = format!("HTTP/1.1 200 OK\r\n{extra}\r\n");
            framing(&mut head_of(raw.as_bytes()).0).map_err(|e| format!("{e:?}"))
        };
        assert_eq!(
            frame("Content-Length: 5\r\n").unwrap(),
            (Framing::Length(5), true)
        );
        assert_eq!(
            frame("Content-Length: 5, 5\r\nContent-Length: 5\r\n").unwrap(),
            (Framing::Length(5), true)
        );
        for bad in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 0x5\r\n",
            "Content-Length:\r\n",
            "Content-Length: 99999999999999999999999\r\n",
        ] {
            assert!(frame(bad).is_err(), "{bad:?}");
        }
        assert_eq!(frame("").unwrap(), (Framing::UntilClose, false));
        assert_eq!(
            frame("Connection: close\r\nContent-Length: 1\r\n").unwrap(),
            (Framing::Length(1), false)
        );
    }

    #[test]
    fn transfer_codings() {
        let frame = |extra: &str| {
            let raw = format!("HTTP/1.1 200 OK\r\n{extra}\r\n");
            framing(&mut head_of(raw.as_bytes()).0).map_err(|e| format!("{e:?}"))
        };
        let chunked = Framing::CHUNKED;
        assert_eq!(
            frame("Transfer-Encoding: chunked\r\n").unwrap(),
            (chunked, true)
        );
        assert_eq!(
            frame("Transfer-Encoding: Chunked\r\n").unwrap(),
            (chunked, true)
        );
        assert_eq!(
            frame("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n").unwrap(),
            (chunked, false),
            "chunked wins over a Content-Length, and the connection is not kept"
        );
        for refused in [
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "chunked, gzip",
        ] {
            assert!(
                frame(&format!("Transfer-Encoding: {refused}\r\n")).is_err(),
                "{refused}"
            );
        }
        let mut old = head_of(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").0;
        assert_eq!(framing(&mut old).unwrap(), (Framing::Length(1), false));
        let mut old =
            head_of(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n").0;
        assert_eq!(framing(&mut old).unwrap(), (Framing::Length(1), true));
        let mut old = head_of(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .0;
        assert_eq!(
            framing(&mut old).unwrap(),
            (Framing::CHUNKED, false),
            "chunked from an HTTP/1.0 server: the connection is not kept"
        );
        let mut both =
            head_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
                .0;
        framing(&mut both).unwrap();
        assert!(
            both.headers.get("content-length").is_none(),
            "a length beside chunked is dropped, not passed on"
        );
        let mut none = head_of(b"HTTP/1.1 204 No Content\r\n\r\n").0;
        assert_eq!(framing(&mut none).unwrap(), (Framing::Length(0), true));
    }

    #[tokio::test]
    async fn bodies_by_framing() {
        let (body, kept) = body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        assert_eq!((body.unwrap(), kept), (b"hello".to_vec(), true));

        let (body, kept) = body_of(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: t\r\n\r\n",
        )
        .await;
        assert_eq!((body.unwrap(), kept), (b"hello!".to_vec(), true));

        let (body, kept) = body_of(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
        assert_eq!((body.unwrap(), kept), (b"until the end".to_vec(), false));

        // Bytes beyond the framing's end: the body is whole, the connection not kept.
        let (body, kept) = body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA").await;
        assert_eq!((body.unwrap(), kept), (b"ok".to_vec(), false));
    }

    #[tokio::test]
    async fn bodies_cut_short_are_errors() {
        for cut in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
        ] {
            let (body, kept) = body_of(cut).await;
            assert!(
                body.as_ref().is_err_and(|e| e.contains("Closed")),
                "{:?}: {body:?} (kept: {kept})",
                String::from_utf8_lossy(cut)
            );
        }
        for broken in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        ] {
            let (body, _) = body_of(broken).await;
            assert!(
                body.as_ref().is_err_and(|e| e.contains("Framing")),
                "{:?}: {body:?}",
                String::from_utf8_lossy(broken)
            );
        }
    }

    #[tokio::test]
    async fn long_chunk_lines_and_trailers_are_bounded() {
        let mut line = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1".to_vec();
        line.extend(std::iter::repeat_n(b'0', MAX_CHUNK_LINE + 10));
        let (body, _) = body_of(&line).await;
        assert!(body.is_err_and(|e| e.contains("too long") || e.contains("too large")));

        let mut trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        for i in 0..2000 {
            trailers.extend_from_slice(format!("x-{i}: {}\r\n", "v".repeat(8)).as_bytes());
        }
        trailers.extend_from_slice(b"\r\n");
        let (body, _) = body_of(&trailers).await;
        assert!(body.is_err_and(|e| e.contains("trailers too long")));
    }
}
