//! A provider's HTTP/1 response as sira reads it: the head, then the body as its framing
//! says (RFC 9112 §6.3), then the connection kept only when the body ended exactly where
//! its framing said it would.
//!
//! Pingora's H1 client session keeps a second map of every field name's original case and
//! normalises each value as it stores it: about 2,500 instructions for a provider's four
//! fields, plus its body reader's set-up, in a request that costs sira ~96,000. sira never
//! writes a provider's field names back (the client's header is built anew, see
//! `hop::client_response`), so this reader parses the head with `httparse` straight into an
//! `http::HeaderMap` whose values are slices of one copy of the head ([`head`]), and frames
//! the body itself ([`body`]).
//!
//! Every buffer is bounded: the head ([`head::MAX_HEAD`]), a chunk-size line, the trailers;
//! a body is handed on a read at a time.

mod body;
mod head;

pub use body::{Body, ReadFault};
pub use head::{read_head, HeadError};

use bytes::BytesMut;

/// What one read asks for: the head and a usual JSON answer arrive in one.
const READ_SIZE: usize = 16 * 1024;

/// Room for the next read, without growing a buffer that still has plenty.
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
}
