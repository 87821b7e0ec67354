//! An HTTP/1 head's fields, from httparse's borrowed slices to an `http::HeaderMap` whose
//! values are slices of one copy of the head (no allocation per value).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// Where a field's name and value are in the head: offsets, as the parse borrows the buffer
/// that is copied or frozen afterwards.
pub struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// The spans of `fields`, which httparse parsed out of `head`.
pub fn spans(head: &[u8], fields: &[httparse::Header<'_>]) -> Vec<Span> {
    let base = head.as_ptr() as usize;
    // httparse's slices point into `head`, whose length (a head's limit plus one read) is
    // far below `u32::MAX`.
    let at = |s: &[u8]| {
        debug_assert!(
            s.as_ptr() as usize >= base && s.as_ptr() as usize + s.len() <= base + head.len()
        );
        let start = (s.as_ptr() as usize - base) as u32;
        (start, start + s.len() as u32)
    };
    fields
        .iter()
        .map(|field| Span {
            name: at(field.name.as_bytes()),
            value: at(field.value),
        })
        .collect()
}

/// The fields at `spans` of `head` (the same bytes the spans were taken from); `None` when
/// a name or value is not valid HTTP.
pub fn into_map(head: &Bytes, spans: &[Span]) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for span in spans {
        let name =
            HeaderName::from_bytes(&head[span.name.0 as usize..span.name.1 as usize]).ok()?;
        let value = HeaderValue::from_maybe_shared(
            head.slice(span.value.0 as usize..span.value.1 as usize),
        )
        .ok()?;
        headers.try_append(name, value).ok()?;
    }
    Some(headers)
}
