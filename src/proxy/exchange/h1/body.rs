//! The body of a provider's answer, as its framing says (RFC 9112 §6.3): a length,
//! chunks, or everything until the connection closes; and whether the connection may carry
//! another request afterwards.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Version};
use pingora_core::protocols::Stream;
use tokio::io::AsyncReadExt;

use super::head::{Head, HeadError};
use super::{reserve, READ_SIZE};

/// A chunk-size line (size and extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Trailer fields of a chunked body, at most this many bytes (read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// How a response's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the provider closes the connection.
    UntilClose,
    Done,
}

/// Where a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes still to come.
    Data(u64),
    /// At the CRLF that ends a chunk's data.
    DataEnd,
    /// In the trailer section, this many bytes of it read so far.
    Trailers(usize),
}

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

enum Step {
    Piece(Bytes),
    End,
    NeedMore,
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
            match self.step().map_err(ReadFault::Body)? {
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

    /// The next piece from the bytes already read, if there is one.
    fn step(&mut self) -> Result<Step, BodyFault> {
        loop {
            match self.framing {
                Framing::Done => return Ok(Step::End),
                Framing::Length(0) => self.framing = Framing::Done,
                Framing::Length(left) => {
                    let Some(piece) = take(&mut self.buf, left) else {
                        return Ok(Step::NeedMore);
                    };
                    self.framing = Framing::Length(left - piece.len() as u64);
                    if self.framing == Framing::Length(0) {
                        self.framing = Framing::Done;
                    }
                    return Ok(Step::Piece(piece));
                }
                Framing::UntilClose => {
                    if self.buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = self.buf.len();
                    return Ok(Step::Piece(piece(&mut self.buf, n)));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let Some(piece) = take(&mut self.buf, left) else {
                        return Ok(Step::NeedMore);
                    };
                    let left = left - piece.len() as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Step::Piece(piece));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(BodyFault::Framing("chunk data longer than its size"));
                    }
                    self.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(end) = memchr::memchr(b'\n', &self.buf) else {
                        if self.buf.len() > MAX_CHUNK_LINE {
                            return Err(BodyFault::Framing("chunk-size line too long"));
                        }
                        return Ok(Step::NeedMore);
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err(BodyFault::Framing("chunk-size line too long"));
                    }
                    let size = chunk_size(&self.buf[..end])?;
                    self.buf.advance(end + 1);
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Trailers(seen)) => {
                    let Some(end) = memchr::memchr(b'\n', &self.buf) else {
                        if seen + self.buf.len() > MAX_TRAILERS {
                            return Err(BodyFault::Framing("trailers too long"));
                        }
                        return Ok(Step::NeedMore);
                    };
                    if end == 0 || self.buf[end - 1] != b'\r' {
                        return Err(BodyFault::Framing("a trailer line without CRLF"));
                    }
                    let last = end == 1;
                    self.buf.advance(end + 1);
                    self.framing = if last {
                        Framing::Done
                    } else if seen + end + 1 > MAX_TRAILERS {
                        return Err(BodyFault::Framing("trailers too long"));
                    } else {
                        Framing::Chunked(Chunk::Trailers(seen + end + 1))
                    };
                }
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

/// Up to `left` bytes from the front of `buf`, if it has any.
fn take(buf: &mut BytesMut, left: u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
    Some(piece(buf, n))
}

/// The first `n` bytes of `buf`, taken out. A piece much smaller than a read is copied:
/// as a slice it would keep the whole read buffer alive for as long as it is held (a cached
/// answer, a stored response), and a provider sending tiny chunks could make each counted
/// byte hold a buffer.
fn piece(buf: &mut BytesMut, n: usize) -> Bytes {
    if n < READ_SIZE / 2 {
        let copy = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        copy
    } else {
        buf.split_to(n).freeze()
    }
}

/// The size on a chunk-size line (`line` without its `\n`): hex digits, then optional
/// extensions after `;`, which sira does not use.
fn chunk_size(line: &[u8]) -> Result<u64, BodyFault> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err(BodyFault::Framing("a chunk-size line without CRLF"));
    };
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 {
        return Err(BodyFault::Framing("a chunk size that is not a number"));
    }
    if digits > 15 {
        return Err(BodyFault::Framing("a chunk size too large"));
    }
    // Only spaces and tabs may stand before the extensions (RFC 9112 §7.1.1).
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count()..];
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(BodyFault::Framing("a chunk size that is not a number"));
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        // Fifteen hex digits at most: no overflow.
        size = size * 16 + u64::from(hex_value(b));
    }
    Ok(size)
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
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
        let mut codings = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty());
        let chunked_only = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if !chunked_only {
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
        return Ok((Framing::Chunked(Chunk::Size), keep_alive));
    }
    match content_length(headers)? {
        Some(length) => Ok((Framing::Length(length), keep_alive)),
        None => Ok((Framing::UntilClose, false)),
    }
}

/// The Content-Length, if any: repeated fields and comma-joined lists must agree
/// (RFC 9110 §8.6); anything else is a framing sira cannot trust.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, HeadError> {
    let mut found = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|b| *b == b',') {
            let item = item.trim_ascii();
            let length = std::str::from_utf8(item)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    HeadError::Invalid("the response's Content-Length is invalid".into())
                })?;
            if found.is_some_and(|seen| seen != length) {
                return Err(HeadError::Invalid(
                    "the response has conflicting Content-Lengths".into(),
                ));
            }
            found = Some(length);
        }
    }
    Ok(found)
}

/// Whether a comma-separated field `name` lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &[u8]) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    })
}

#[cfg(test)]
mod tests {
    use super::super::head::head_of;
    use super::*;

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
        let chunked = Framing::Chunked(Chunk::Size);
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
            (Framing::Chunked(Chunk::Size), false),
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

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a\r").unwrap(), 26);
        assert_eq!(chunk_size(b"1A;name=value\r").unwrap(), 26);
        assert_eq!(chunk_size(b"0\r").unwrap(), 0);
        assert_eq!(chunk_size(b"ff ;ext\r").unwrap(), 255);
        for bad in [
            &b"1a"[..],
            b"\r",
            b"x\r",
            b"1x\r",
            b"-1\r",
            b"1000000000000000\r",
            b"5\r\r",
            b"5\x0c;x\r",
        ] {
            assert!(
                chunk_size(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
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

    #[test]
    fn small_pieces_are_copies_and_large_ones_slices() {
        let mut buf = BytesMut::with_capacity(READ_SIZE * 2);
        buf.extend_from_slice(&[b'x'; READ_SIZE]);
        let small = take(&mut buf, 100).unwrap();
        assert!(
            small.is_unique(),
            "a small piece must not hold the read buffer"
        );
        let large = take(&mut buf, READ_SIZE as u64).unwrap();
        assert_eq!(large.len(), READ_SIZE - 100);
        assert!(
            !large.is_unique(),
            "a large piece is a slice of the read buffer"
        );
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
