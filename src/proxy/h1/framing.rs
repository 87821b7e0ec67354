//! The body framing of HTTP/1 (RFC 9112 §6 and §7), the same for a client's request and a
//! provider's response: a length, chunks (extensions and trailers read and dropped), or
//! everything until the connection closes. Every buffer it reads is bounded.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, CONTENT_LENGTH};
use http::HeaderMap;

/// A chunk-size line (size and extensions) longer than this is refused.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Trailer fields of a chunked body, at most this many bytes (read and dropped).
pub const MAX_TRAILERS: usize = 16 * 1024;
/// A body piece smaller than this is copied out of the read buffer rather than sliced.
pub const COPY_BELOW: usize = 8 * 1024;

/// How a body ends, and how far it has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the peer closes the connection (responses only).
    UntilClose,
    Done,
}

/// Where a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes still to come.
    Data(u64),
    /// At the CRLF that ends a chunk's data.
    DataEnd,
    /// In the trailer section, this many bytes of it read so far.
    Trailers(usize),
}

/// What the bytes already read give.
pub enum Step {
    Piece(Bytes),
    End,
    NeedMore,
}

impl Framing {
    pub const CHUNKED: Framing = Framing::Chunked(Chunk::Size);

    /// The next piece of the body from the bytes in `buf` (taken out of it), if there is
    /// one. An `Err` names what is wrong with a chunked body.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, &'static str> {
        loop {
            match *self {
                Framing::Done => return Ok(Step::End),
                Framing::Length(0) => *self = Framing::Done,
                Framing::Length(left) => {
                    let Some(piece) = take(buf, left) else {
                        return Ok(Step::NeedMore);
                    };
                    let left = left - piece.len() as u64;
                    *self = if left == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(left)
                    };
                    return Ok(Step::Piece(piece));
                }
                Framing::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = buf.len();
                    return Ok(Step::Piece(piece(buf, n)));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let Some(piece) = take(buf, left) else {
                        return Ok(Step::NeedMore);
                    };
                    let left = left - piece.len() as u64;
                    *self = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Step::Piece(piece));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data longer than its size");
                    }
                    buf.advance(2);
                    *self = Framing::CHUNKED;
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(end) = memchr::memchr(b'\n', buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err("chunk-size line too long");
                        }
                        return Ok(Step::NeedMore);
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err("chunk-size line too long");
                    }
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 1);
                    *self = Framing::Chunked(if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Trailers(seen)) => {
                    let Some(end) = memchr::memchr(b'\n', buf) else {
                        if seen + buf.len() > MAX_TRAILERS {
                            return Err("trailers too long");
                        }
                        return Ok(Step::NeedMore);
                    };
                    if end == 0 || buf[end - 1] != b'\r' {
                        return Err("a trailer line without CRLF");
                    }
                    let last = end == 1;
                    buf.advance(end + 1);
                    *self = if last {
                        Framing::Done
                    } else if seen + end + 1 > MAX_TRAILERS {
                        return Err("trailers too long");
                    } else {
                        Framing::Chunked(Chunk::Trailers(seen + end + 1))
                    };
                }
            }
        }
    }
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
/// answer, a stored response), and a peer sending tiny chunks could make each counted byte
/// hold a buffer.
fn piece(buf: &mut BytesMut, n: usize) -> Bytes {
    if n < COPY_BELOW {
        let copy = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        copy
    } else {
        buf.split_to(n).freeze()
    }
}

/// The size on a chunk-size line (`line` without its `\n`): hex digits, then optional
/// extensions after `;`, which sira does not use.
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err("a chunk-size line without CRLF");
    };
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 {
        return Err("a chunk size that is not a number");
    }
    if digits > 15 {
        return Err("a chunk size too large");
    }
    // Only spaces and tabs may stand before the extensions (RFC 9112 §7.1.1).
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count()..];
    if !(rest.is_empty() || rest[0] == b';') {
        return Err("a chunk size that is not a number");
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

/// Why a message's `Content-Length` cannot be trusted.
#[derive(Debug, PartialEq, Eq)]
pub enum LengthError {
    Invalid,
    Conflicting,
}

/// The Content-Length, if any: repeated fields and comma-joined lists must agree
/// (RFC 9110 §8.6); anything else is a framing sira cannot trust.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, LengthError> {
    let mut found = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|b| *b == b',') {
            let item = item.trim_ascii();
            let length = std::str::from_utf8(item)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(LengthError::Invalid)?;
            if found.is_some_and(|seen| seen != length) {
                return Err(LengthError::Conflicting);
            }
            found = Some(length);
        }
    }
    Ok(found)
}

/// Whether a comma-separated field `name` lists `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &[u8]) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// Whether the `Transfer-Encoding` fields name `chunked` and nothing else: the only coding
/// sira reads (it never offers another with `TE`, and a coded body could not be accounted).
pub fn chunked_only(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    codings
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn small_pieces_are_copies_and_large_ones_slices() {
        let size = COPY_BELOW * 2;
        let mut buf = BytesMut::with_capacity(size * 2);
        buf.extend_from_slice(&vec![b'x'; size]);
        let small = take(&mut buf, 100).unwrap();
        assert!(
            small.is_unique(),
            "a small piece must not hold the read buffer"
        );
        let large = take(&mut buf, size as u64).unwrap();
        assert_eq!(large.len(), size - 100);
        assert!(
            !large.is_unique(),
            "a large piece is a slice of the read buffer"
        );
    }

    #[test]
    fn a_chunked_body_in_any_split() {
        let wire = b"5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: t\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let mut framing = Framing::CHUNKED;
            let mut buf = BytesMut::from(&wire[..split]);
            let mut body = Vec::new();
            let mut fed = split;
            loop {
                match framing.step(&mut buf).unwrap() {
                    Step::Piece(piece) => body.extend_from_slice(&piece),
                    Step::End => break,
                    Step::NeedMore => {
                        buf.extend_from_slice(&wire[fed..fed + 1]);
                        fed += 1;
                    }
                }
            }
            assert_eq!(body, b"hello!", "split at {split}");
            // What follows the body stays in the buffer, untouched.
            assert_eq!(&buf[..], &wire[wire.len() - 4..fed], "split at {split}");
        }
    }
}
