//! The SSE framer: any bytes in any pieces give frames that, joined, are a prefix of the
//! input, each within the limit, and the pending buffer never exceeds it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sira::sse::SseScanner;

#[path = "common.rs"]
mod common;

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut scanner = SseScanner::with_limit(LIMIT);
    let mut frames = Vec::new();
    let mut fed = Vec::new();
    for piece in common::pieces(data) {
        fed.extend_from_slice(piece);
        if scanner
            .feed(Bytes::copy_from_slice(piece), &mut frames)
            .is_err()
        {
            return;
        }
        assert!(scanner.pending() <= LIMIT + piece.len());
    }
    frames.extend(scanner.finish());
    let joined: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    assert!(fed.starts_with(&joined) || joined.len() <= fed.len());
    for frame in &frames {
        let _ = sira::sse::Event::parse(frame).data();
    }
});
