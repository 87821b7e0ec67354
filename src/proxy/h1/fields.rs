//! An HTTP/1 head's fields, from httparse's borrowed slices to an `http::HeaderMap` whose
//! values are slices of one copy of the head (no allocation per value).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// The `fields` httparse parsed out of `head`, with values taken from `copy` (the same bytes,
/// copied); `None` when a name or value is not valid HTTP.
pub fn into_map(copy: &Bytes, head: &[u8], fields: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(copy.slice(span(head, field.value)?)).ok()?;
        headers.try_append(name, value).ok()?;
    }
    Some(headers)
}

/// Where `part`, a slice of `head`, lies in it.
pub fn span(head: &[u8], part: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(head.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= head.len()).then_some(start..end)
}
