//! Incremental server-sent-events framing over `Bytes`.
//!
//! Providers end events with a blank line, using LF (OpenAI, Anthropic) or CRLF (Gemini)
//! line endings, and TCP splits or merges events at arbitrary byte offsets. The scanner
//! hands out each complete frame as soon as its terminating blank line arrives. A frame that
//! lies inside one received chunk is a zero-copy slice of it; only the unfinished tail of a
//! chunk is copied into the carry buffer, so memory per stream stays bounded by the largest
//! single event, and that is capped ([`SseScanner::with_limit`]): a provider that never ends
//! an event cannot make the gateway buffer without bound. An unfinished frame is not an
//! error, just "not yet" (mini-redis style).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// Splits a byte stream into SSE frames.
#[derive(Debug)]
pub struct SseScanner {
    /// Bytes of a frame whose end has not arrived yet.
    carry: BytesMut,
    /// Start of the last unfinished line in `carry`: everything before it is known to hold
    /// no frame end.
    scanned: usize,
    /// How far `carry` has been searched for a line end (at or past `scanned`), so that a
    /// long line trickling in is not searched again from its start at every chunk: that
    /// would make one event sent a byte at a time cost time quadratic in its length.
    searched: usize,
    /// The largest frame accepted, in bytes.
    limit: usize,
}

/// A frame grew past the scanner's limit without ending.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an event of the provider's stream is larger than the gateway's limit of {limit} bytes (server.max_sse_event)")]
pub struct EventTooLarge {
    pub limit: usize,
}

impl Default for SseScanner {
    fn default() -> Self {
        SseScanner::with_limit(usize::MAX)
    }
}

impl SseScanner {
    /// A scanner without a size limit (for input that is already bounded).
    pub fn new() -> Self {
        SseScanner::default()
    }

    /// A scanner that refuses a frame longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        SseScanner {
            carry: BytesMut::new(),
            scanned: 0,
            searched: 0,
            limit,
        }
    }

    /// Bytes held back waiting for the end of their frame.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Feeds one received chunk and pushes every frame it completes onto `frames`, each
    /// including its terminating blank line, so that concatenating them reproduces the input.
    ///
    /// Fails, without keeping the chunk, when a frame grows past the limit; the frames it
    /// completed before are pushed all the same.
    pub fn feed(&mut self, chunk: Bytes, frames: &mut Vec<Bytes>) -> Result<(), EventTooLarge> {
        let mut rest = chunk;
        if !self.carry.is_empty() {
            // Chunks are bounded by the reader's buffer, so this copy is too; the carry is
            // checked right after.
            self.carry.extend_from_slice(&rest);
            match frame_end(&self.carry, self.scanned, self.searched) {
                Ok(end) => {
                    if end > self.limit {
                        return Err(self.too_large());
                    }
                    let carried_len = self.carry.len() - rest.len();
                    frames.push(self.carry.split_to(end).freeze());
                    // What followed the frame end is still a zero-copy part of `rest`.
                    rest = rest.slice(end - carried_len..);
                    self.carry.clear();
                    self.scanned = 0;
                    self.searched = 0;
                }
                Err((line_start, searched)) => {
                    if self.carry.len() > self.limit {
                        return Err(self.too_large());
                    }
                    self.scanned = line_start;
                    self.searched = searched;
                    return Ok(());
                }
            }
        }
        let mut start = 0;
        loop {
            match frame_end(&rest[start..], 0, 0) {
                Ok(end) => {
                    if end > self.limit {
                        return Err(self.too_large());
                    }
                    frames.push(rest.slice(start..start + end));
                    start += end;
                }
                Err((line_start, searched)) => {
                    if start < rest.len() {
                        if rest.len() - start > self.limit {
                            return Err(self.too_large());
                        }
                        self.carry.extend_from_slice(&rest[start..]);
                        self.scanned = line_start;
                        self.searched = searched;
                    }
                    return Ok(());
                }
            }
        }
    }

    fn too_large(&mut self) -> EventTooLarge {
        self.carry = BytesMut::new();
        self.scanned = 0;
        self.searched = 0;
        EventTooLarge { limit: self.limit }
    }

    /// Ends the stream: returns a final frame that had no terminating blank line, if any.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        self.searched = 0;
        if self.carry.iter().all(|b| b.is_ascii_whitespace()) {
            self.carry.clear();
            return None;
        }
        Some(self.carry.split().freeze())
    }
}

/// Returns the offset just past the blank line that ends the first frame in `buf`, or,
/// when the frame is unfinished, where its last (incomplete) line starts and how far `buf`
/// has been searched.
///
/// `line_start` is where the current line starts and `from` where the search resumes:
/// nothing in `line_start..from` is a line end. A fresh search passes `0, 0` (`buf` must
/// then start at a line start). Leading blank lines before any content count as a frame of
/// their own (an empty event), which keeps the byte-for-byte concatenation property.
fn frame_end(buf: &[u8], mut line_start: usize, from: usize) -> Result<usize, (usize, usize)> {
    let mut pos = from;
    while let Some(off) = memchr::memchr2(b'\n', b'\r', &buf[pos..]) {
        let i = pos + off;
        let next = if buf[i] == b'\r' {
            match buf.get(i + 1) {
                Some(b'\n') => i + 2,
                Some(_) => i + 1,
                // A lone CR at the end may be the first half of CRLF: look at it again
                // when more bytes come.
                None => return Err((line_start, i)),
            }
        } else {
            i + 1
        };
        if i == line_start {
            return Ok(next);
        }
        line_start = next;
        pos = next;
    }
    Err((line_start, buf.len()))
}

/// The fields of one SSE frame that sira cares about.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, if present.
    pub event: Option<&'a [u8]>,
    /// The `data:` lines joined with `\n`; borrowed when the frame has a single data line.
    pub data: Option<Cow<'a, [u8]>>,
    /// Lines that are neither comments nor `field: value` pairs. Gemini appends a bare JSON
    /// error object to a failing stream instead of an SSE event.
    pub bare: Option<&'a [u8]>,
}

impl<'a> Event<'a> {
    /// Parses a frame produced by [`SseScanner`].
    pub fn parse(frame: &'a [u8]) -> Event<'a> {
        let mut event = None;
        let mut data: Option<Cow<'a, [u8]>> = None;
        let mut bare = None;
        // Lines found with memchr: a byte-at-a-time split was most of this function's cost.
        let mut rest = frame;
        while !rest.is_empty() {
            let line = match memchr::memchr(b'\n', rest) {
                Some(end) => {
                    let line = &rest[..end];
                    rest = &rest[end + 1..];
                    line
                }
                None => std::mem::take(&mut rest),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line[0] == b':' {
                continue;
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            match field {
                b"data" => {
                    data = Some(match data {
                        None => Cow::Borrowed(value),
                        Some(prev) => {
                            let mut joined = prev.into_owned();
                            joined.push(b'\n');
                            joined.extend_from_slice(value);
                            Cow::Owned(joined)
                        }
                    })
                }
                b"event" => event = Some(value),
                b"id" | b"retry" => {}
                _ if line.starts_with(b"{") || line.starts_with(b"[") => {
                    bare.get_or_insert(line);
                }
                _ => {}
            }
        }
        Event { event, data, bare }
    }

    /// The data payload, or an empty slice.
    pub fn data(&self) -> &[u8] {
        self.data.as_deref().unwrap_or_default()
    }
}

/// Every frame of `bytes`, the last one possibly without its blank line (for tests that
/// read a whole recorded stream).
#[cfg(test)]
pub fn frames_of(bytes: &[u8]) -> Vec<Bytes> {
    let mut scanner = SseScanner::new();
    let mut frames = Vec::new();
    // Without a limit the scanner takes every chunk.
    let _ = scanner.feed(Bytes::copy_from_slice(bytes), &mut frames);
    frames.extend(scanner.finish());
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> (Vec<Bytes>, Option<Bytes>) {
        let mut scanner = SseScanner::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            scanner
                .feed(Bytes::copy_from_slice(chunk), &mut frames)
                .unwrap();
        }
        let tail = scanner.finish();
        (frames, tail)
    }

    #[test]
    fn splits_lf_and_crlf_frames() {
        let (frames, tail) = scan_all(&[b"data: a\n\ndata: b\r\n\r\nevent: x\ndata: c\n\n"]);
        assert_eq!(
            frames,
            vec![
                Bytes::from_static(b"data: a\n\n"),
                Bytes::from_static(b"data: b\r\n\r\n"),
                Bytes::from_static(b"event: x\ndata: c\n\n"),
            ]
        );
        assert_eq!(tail, None);
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let input: &[u8] =
            b"event: message_start\ndata: {\"a\":1}\n\ndata: x\r\n\r\n: comment\n\ndata: [DONE]\n\n";
        let (whole, _) = scan_all(&[input]);
        for cut in 0..=input.len() {
            let (split, tail) = scan_all(&[&input[..cut], &input[cut..]]);
            assert_eq!(split, whole, "cut at {cut}");
            assert_eq!(tail, None);
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(scan_all(&bytes).0, whole);
    }

    #[test]
    fn every_pair_of_split_points_gives_the_same_frames() {
        let input: &[u8] = b"data: x\nda: y\n\ndata: z\r\n\r\n";
        let (whole, _) = scan_all(&[input]);
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let (split, _) = scan_all(&[&input[..a], &input[a..b], &input[b..]]);
                assert_eq!(split, whole, "cuts at {a} and {b}");
            }
        }
    }

    #[test]
    fn lone_cr_at_chunk_end_waits_for_lf() {
        let (frames, _) = scan_all(&[b"data: a\r\n\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(frames[0], Bytes::from_static(b"data: a\r\n\r\n"));
        assert_eq!(frames[1], Bytes::from_static(b"data: b\r\n\r\n"));
    }

    #[test]
    fn unterminated_tail_is_returned_by_finish() {
        let (frames, tail) = scan_all(&[b"data: a\n\n{\"error\": {\"code\": 500}}\n"]);
        assert_eq!(frames.len(), 1);
        assert_eq!(
            tail,
            Some(Bytes::from_static(b"{\"error\": {\"code\": 500}}\n"))
        );
    }

    #[test]
    fn a_frame_past_the_limit_is_refused_wherever_it_is_cut() {
        let input: &[u8] = b"data: short\n\ndata: 0123456789012345678901234567890123456789\n\n";
        for cut in 0..=input.len() {
            let mut scanner = SseScanner::with_limit(20);
            let mut frames = Vec::new();
            let first = scanner.feed(Bytes::copy_from_slice(&input[..cut]), &mut frames);
            let result = first
                .and_then(|()| scanner.feed(Bytes::copy_from_slice(&input[cut..]), &mut frames));
            assert_eq!(result, Err(EventTooLarge { limit: 20 }), "cut at {cut}");
            assert!(frames.len() <= 1, "cut at {cut}");
            assert!(scanner.pending() <= 20 + input.len() - cut, "cut at {cut}");
        }
        // Byte by byte, the carry never holds more than the limit and one byte.
        let mut scanner = SseScanner::with_limit(20);
        let mut frames = Vec::new();
        let mut refused = false;
        for byte in input {
            if scanner
                .feed(Bytes::copy_from_slice(&[*byte]), &mut frames)
                .is_err()
            {
                refused = true;
                break;
            }
            assert!(scanner.pending() <= 20);
        }
        assert!(refused);
        assert_eq!(frames, [Bytes::from_static(b"data: short\n\n")]);
    }

    #[test]
    fn a_long_line_trickling_in_is_searched_once() {
        let mut scanner = SseScanner::new();
        let mut frames = Vec::new();
        scanner
            .feed(Bytes::from_static(b"data: "), &mut frames)
            .unwrap();
        for _ in 0..1000 {
            scanner.feed(Bytes::from_static(b"x"), &mut frames).unwrap();
            // Everything received has been searched: the next byte resumes at the end.
            assert_eq!(scanner.searched, scanner.pending());
        }
        // A CR at the end is looked at again once its LF arrives.
        scanner
            .feed(Bytes::from_static(b"\r"), &mut frames)
            .unwrap();
        assert_eq!(scanner.searched, scanner.pending() - 1);
        scanner
            .feed(Bytes::from_static(b"\n\r\n"), &mut frames)
            .unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].len(), 6 + 1000 + 4);
        assert_eq!(scanner.pending(), 0);
    }

    #[test]
    fn frames_inside_one_chunk_are_not_copied() {
        let chunk = Bytes::from_static(b"data: a\n\ndata: b\n\n");
        let mut scanner = SseScanner::new();
        let mut frames = Vec::new();
        scanner.feed(chunk.clone(), &mut frames).unwrap();
        assert_eq!(frames[0].as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn parses_fields() {
        let ev = Event::parse(b"event: message_delta\ndata: {\"x\":1}\n\n");
        assert_eq!(ev.event, Some(&b"message_delta"[..]));
        assert_eq!(ev.data(), b"{\"x\":1}");
        let ev = Event::parse(b"data: line1\ndata: line2\n\n");
        assert_eq!(ev.data(), b"line1\nline2");
        let ev = Event::parse(b"data:no-space\r\n\r\n");
        assert_eq!(ev.data(), b"no-space");
        let ev = Event::parse(b"{\"error\": {}}\n");
        assert_eq!(ev.bare, Some(&b"{\"error\": {}}"[..]));
        assert_eq!(ev.data, None);
    }
}
