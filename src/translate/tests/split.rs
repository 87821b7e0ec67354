//! TCP may split or merge events anywhere: translation must not depend on it.
//!
//! * Every fixture fed in 1-byte chunks gives exactly the unsplit output.
//! * Every fixture up to [`LITERAL_LIMIT`] bytes, split in two at every byte offset, gives
//!   exactly the unsplit output.
//! * Every fixture, frame by frame: starting from the state before a frame, feeding that
//!   frame in two pieces gives the same output and the same translator state as feeding it
//!   whole — so the two-piece run at that offset matches the unsplit run from there on. Cuts
//!   at every line ending (where incremental framing can go wrong: CRLF split, piece ending
//!   in CR) and at the frame ends are always tried, other offsets at a stride.
//!
//! The literal two-piece run at every offset of every fixture is O(n²) translation work per
//! fixture (about a minute in a debug build on the 30 KB fixtures); `SIRA_SPLIT_EXHAUSTIVE=1`
//! runs exactly that.

use bytes::{Bytes, BytesMut};

use super::*;

const LITERAL_LIMIT: usize = 1_100;
/// Offsets away from line endings are tried every `STRIDE` bytes (unless exhaustive).
const STRIDE: usize = 7;

fn exhaustive() -> bool {
    std::env::var_os("SIRA_SPLIT_EXHAUSTIVE").is_some()
}

/// Whether a cut at `at` in `frame` touches a line ending (splits CRLF, or ends or starts
/// a piece with CR/LF): where incremental framing can go wrong.
fn near_eol(frame: &[u8], at: usize) -> bool {
    frame[at.saturating_sub(1)..(at + 1).min(frame.len())]
        .iter()
        .any(|c| matches!(c, b'\r' | b'\n'))
}

fn translator(from: Format, to: Format) -> StreamTranslator {
    StreamTranslator::new(from, to, opts())
}

fn feed(t: &mut StreamTranslator, bytes: &[u8], out: &mut BytesMut) {
    let _ = t.feed(Bytes::copy_from_slice(bytes), out);
}

/// Byte ranges of the frames of `body`, the last one possibly unterminated.
fn frame_ranges(body: &[u8]) -> Vec<(usize, usize)> {
    let frames = crate::sse::frames_of(body);
    let mut start = 0;
    frames
        .iter()
        .map(|f| {
            let range = (start, start + f.len());
            start += f.len();
            range
        })
        .collect()
}

#[test]
fn one_byte_chunks_and_small_fixtures_at_every_offset() {
    for from in FORMATS {
        for fx in fixtures(from, "", "sse") {
            let body = read(&fx.path);
            for to in FORMATS {
                let (whole, usage) = run_stream(from, to, [&body[..]]);
                let (bytes, u) = run_stream(from, to, body.chunks(1));
                assert!(
                    bytes == whole,
                    "{} {}: 1-byte chunks differ",
                    fx.name,
                    pair(from, to)
                );
                assert_eq!(u, usage);
                if body.len() > LITERAL_LIMIT && !exhaustive() {
                    continue;
                }
                for cut in 0..=body.len() {
                    let (out, u) = run_stream(from, to, [&body[..cut], &body[cut..]]);
                    assert!(
                        out == whole,
                        "{} {}: cut at {cut} differs",
                        fx.name,
                        pair(from, to)
                    );
                    assert_eq!(u, usage);
                }
            }
        }
    }
}

#[test]
fn every_offset_inside_every_frame() {
    for from in FORMATS {
        for fx in fixtures(from, "", "sse") {
            let body = read(&fx.path);
            let ranges = frame_ranges(&body);
            assert_eq!(ranges.last().map(|r| r.1), Some(body.len()));
            for to in FORMATS {
                let (whole, _) = run_stream(from, to, [&body[..]]);
                // Reference: frame by frame, remembering state and output before each one.
                let mut t = translator(from, to);
                let mut out = BytesMut::new();
                let mut before = Vec::with_capacity(ranges.len());
                for &(a, b) in &ranges {
                    before.push((t.fork(), out.len()));
                    feed(&mut t, &body[a..b], &mut out);
                }
                let after_last = t.state();
                t.finish(&mut out);
                assert!(
                    out == whole,
                    "{} {}: frame-by-frame differs from whole",
                    fx.name,
                    pair(from, to)
                );

                for (i, &(a, b)) in ranges.iter().enumerate() {
                    let (start, start_len) = &before[i];
                    let (next_state, end_len) = match before.get(i + 1) {
                        Some((next, len)) => (next.state(), *len),
                        None => (after_last.clone(), usize::MAX),
                    };
                    let expected = &whole[*start_len..end_len.min(whole.len())];
                    let stride = if exhaustive() { 1 } else { STRIDE };
                    for cut in (a + 1..b).filter(|&c| {
                        (c - a) % stride == 0
                            || near_eol(&body[a..b], c - a)
                            || c < a + 3
                            || c + 2 >= b
                    }) {
                        let mut t = start.fork();
                        let mut piece = BytesMut::new();
                        feed(&mut t, &body[a..cut], &mut piece);
                        feed(&mut t, &body[cut..b], &mut piece);
                        assert_eq!(
                            t.state(),
                            next_state,
                            "{} {}: state after cut at {cut}",
                            fx.name,
                            pair(from, to)
                        );
                        if end_len == usize::MAX {
                            // The unterminated last frame is only completed by finish().
                            t.finish(&mut piece);
                        }
                        assert!(
                            &piece[..] == expected,
                            "{} {}: output of cut at {cut}",
                            fx.name,
                            pair(from, to)
                        );
                    }
                }
            }
        }
    }
}
