//! The response to a client's HTTP/1 request on the wire: its head, and its body framed as
//! the head says.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderName, StatusCode, Version};
use pingora_http::ResponseHeader;

use crate::proxy::h1::framing::{chunked_only, content_length};

/// How the rest of a response's body is to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// This many bytes are still to be written.
    Length(u64),
    Chunked,
    /// Until the connection closes (no length known, no chunked coding).
    UntilClose,
    Done,
}

impl Writer {
    /// How the body of `header` is framed, answering a request with `method` HEAD or not.
    pub fn for_response(header: &ResponseHeader, head_request: bool) -> Writer {
        let status = header.status;
        if head_request
            || status.is_informational()
            || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        {
            return Writer::Done;
        }
        if header.headers.contains_key(TRANSFER_ENCODING) && chunked_only(&header.headers) {
            return Writer::Chunked;
        }
        match content_length(&header.headers) {
            Ok(Some(0)) => Writer::Done,
            Ok(Some(length)) => Writer::Length(length),
            _ => Writer::UntilClose,
        }
    }
}

/// Appends the head of `header` to `out`: the status line, its fields but the connection's
/// own and a provider's `date`, sira's `date` and `connection` (`keep_alive`: whether the connection stays open; said
/// explicitly only where it is not the version's default).
pub fn write_head(header: &ResponseHeader, version: Version, keep_alive: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(header.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        header
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    // No body may follow these, and none is announced (RFC 9110 §8.6, RFC 9112 §6.1).
    let bodiless = matches!(
        header.status,
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    );
    for (name, value) in &header.headers {
        if is_connection_field(name)
            || name == DATE
            || (bodiless
                && (name == TRANSFER_ENCODING || header.status == 204 && name == CONTENT_LENGTH))
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    with_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n");
    match (keep_alive, version) {
        (false, _) => out.extend_from_slice(b"connection: close\r\n"),
        (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (true, _) => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Fields that describe this connection, not the response: sira writes its own.
fn is_connection_field(name: &HeaderName) -> bool {
    name == CONNECTION || name.as_str() == "keep-alive"
}

/// Appends a chunk's size line for `len` bytes of data.
pub fn chunk_size_line(len: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// Calls `f` with the `date` field's value for the current second (RFC 9110 §5.6.7),
/// formatted once a second per thread.
fn with_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut date = cell.borrow_mut();
        if date.0 != second {
            *date = (second, httpdate::fmt_http_date(now).into_bytes());
        }
        f(&date.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(status: u16, fields: &[(&'static str, &'static str)]) -> ResponseHeader {
        let mut header = ResponseHeader::build_no_case(status, None).unwrap();
        for (name, value) in fields {
            header.append_header(*name, *value).unwrap();
        }
        header
    }

    #[test]
    fn bodies_are_framed_as_the_head_says() {
        let json = header(200, &[("content-length", "12")]);
        assert_eq!(Writer::for_response(&json, false), Writer::Length(12));
        assert_eq!(Writer::for_response(&json, true), Writer::Done, "HEAD");
        let stream = header(200, &[("transfer-encoding", "chunked")]);
        assert_eq!(Writer::for_response(&stream, false), Writer::Chunked);
        assert_eq!(
            Writer::for_response(&header(200, &[]), false),
            Writer::UntilClose
        );
        assert_eq!(
            Writer::for_response(&header(204, &[("content-length", "3")]), false),
            Writer::Done
        );
    }

    #[test]
    fn the_head_carries_date_and_the_connection_s_fate() {
        let mut out = Vec::new();
        let h = header(
            429,
            &[
                ("content-type", "application/json"),
                ("connection", "upgrade"),
                ("date", "Thu, 01 Jan 1970 00:00:00 GMT"),
                ("content-length", "2"),
            ],
        );
        write_head(&h, Version::HTTP_11, false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: "),
            "{text}"
        );
        assert!(
            text.ends_with(" GMT\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
        assert!(
            !text.contains("upgrade"),
            "the given connection field is not passed on"
        );

        let mut kept = Vec::new();
        write_head(&h, Version::HTTP_10, true, &mut kept);
        assert!(String::from_utf8(kept)
            .unwrap()
            .contains("connection: keep-alive\r\n"));
        let mut default = Vec::new();
        write_head(&h, Version::HTTP_11, true, &mut default);
        assert!(!String::from_utf8(default).unwrap().contains("connection:"));
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for (len, line) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (255, "ff\r\n"),
        ] {
            let mut out = Vec::new();
            chunk_size_line(len, &mut out);
            assert_eq!(out, line.as_bytes());
        }
    }
}
