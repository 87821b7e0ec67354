//! The client's side of the wire: reading the request body (bounded in size and time),
//! writing the response, and ending it — cleanly, or as an error that no client can take
//! for a complete response.

use std::time::Duration;

use super::client::Client;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue};
use pingora_http::ResponseHeader;

use super::ctx::RequestCtx;
use crate::error::GatewayError;

/// Reads the whole request body, refusing more than `limit` bytes, within `within`. A
/// declared `Content-Length` over the limit is refused before anything is read.
pub async fn read_body(
    session: &mut Client,
    limit: u64,
    within: Duration,
) -> Result<Bytes, GatewayError> {
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .write_continue()
            .await
            .map_err(|_| GatewayError::invalid("cannot read request body: the client is gone"))?;
    }
    // Only a body that does not arrive at once costs a timer (see `Lazy`).
    match super::lazy_timeout(within, read_all(session, limit, declared)).await {
        Some(result) => result,
        None => Err(GatewayError::RequestTimeout("the request body")),
    }
}

async fn read_all(
    session: &mut Client,
    limit: u64,
    declared: Option<u64>,
) -> Result<Bytes, GatewayError> {
    // Most bodies arrive in one piece: keep that `Bytes` as is and only copy when the body
    // comes in several reads.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total: u64 = 0;
    loop {
        let chunk = match session.read_request_body().await {
            Ok(chunk) => chunk,
            Err(e) => {
                // A body whose framing broke (a bad chunk size, a cut) leaves no way to tell
                // where the next request would start: the connection closes after the answer.
                session.set_keep_alive(false);
                return Err(GatewayError::BadFraming(format!(
                    "cannot read the request body ({e})"
                )));
            }
        };
        let Some(chunk) = chunk else { break };
        total += chunk.len() as u64;
        if total > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        match (&mut joined, first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(previous)) => {
                let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).max(total) as usize);
                buf.extend_from_slice(&previous);
                buf.extend_from_slice(&chunk);
                joined = Some(buf);
            }
        }
    }
    Ok(match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// Sends the response header; `false` (and `ctx.response.client_gone`) when the client is
/// gone.
pub async fn write_header(
    session: &mut Client,
    ctx: &mut RequestCtx,
    header: ResponseHeader,
) -> bool {
    ctx.response.status = header.status.as_u16();
    if session.write_response_header(header).await.is_err() {
        ctx.response.client_gone = true;
        return false;
    }
    true
}

/// Writes to the client; `false` (and `ctx.response.client_gone`) when the client is gone
/// or stopped reading for longer than the write timeout.
pub async fn write(session: &mut Client, ctx: &mut RequestCtx, data: Bytes, end: bool) -> bool {
    if !data.is_empty() && ctx.response.first_byte.is_none() {
        ctx.response.first_byte = Some(std::time::Instant::now());
    }
    match session.write_response_body(data, end).await {
        Ok(()) => true,
        Err(_) => {
            ctx.response.client_gone = true;
            false
        }
    }
}

/// Writes several pieces in one go: one buffer, one HTTP chunk, one flush, instead of one
/// write system call per event.
pub async fn write_pieces(
    session: &mut Client,
    ctx: &mut RequestCtx,
    pieces: &mut Vec<Bytes>,
    end: bool,
) -> bool {
    // Joined into one buffer of the exact size. Pingora's own path for several pieces
    // (`response_duplex_vec`) appends them to a buffer that starts empty on every call and
    // grows by doubling, copying at each step: ~10 % of a 100-event passthrough stream's
    // instructions (callgrind, bench/profile.sh c).
    let data = join(pieces);
    if data.is_empty() && !end {
        return true;
    }
    write(session, ctx, data, end).await
}

/// How long a broken HTTP/2 stream waits for its last frames to leave before the reset.
const H2_FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// A body gathered whole from the pieces it arrives in: the first piece kept as it is (no
/// copy for the usual one-piece body), the others copied into one buffer, so that what is
/// held is the body's size however small the pieces (a `Bytes` per piece costs tens of
/// bytes of its own: a provider sending one byte at a time would multiply it).
#[derive(Default)]
pub struct Gather {
    first: Option<Bytes>,
    rest: BytesMut,
}

impl Gather {
    pub fn push(&mut self, piece: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(piece);
            return;
        }
        if let Some(first) = self.first.take() {
            self.rest.reserve(first.len() + piece.len());
            self.rest.extend_from_slice(&first);
        }
        self.rest.extend_from_slice(&piece);
    }

    pub fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body so far, without taking it.
    pub fn bytes(&self) -> &[u8] {
        match &self.first {
            Some(first) => first,
            None => &self.rest,
        }
    }

    pub fn finish(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => self.rest.freeze(),
        }
    }
}

/// `pieces` as one buffer (emptying the list): the one piece itself when there is one,
/// else one copy into a buffer of the exact size.
pub fn join(pieces: &mut Vec<Bytes>) -> Bytes {
    match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.pop().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            for piece in pieces.drain(..) {
                joined.extend_from_slice(&piece);
            }
            joined.freeze()
        }
    }
}

/// Ends a response that broke after its header was sent, so that the client cannot take
/// it for complete: HTTP/1.1 closes the connection without the last chunk (a body with a
/// `Content-Length` stays short of it), HTTP/2 resets the stream.
pub async fn abort(session: &mut Client, ctx: &mut RequestCtx) {
    ctx.response.aborted = true;
    if session.is_http2() {
        // A reset drops the stream's frames still queued in the connection (h2 clears the
        // queue), and the error event written just before may be among them. h2 does not
        // tell when a stream's queue is empty; the connection task writes it out as soon as
        // it runs, so a short pause, on this failure path only, lets it go first. A client
        // whose window is exhausted would not have read it anyway.
        tokio::time::sleep(H2_FLUSH_PAUSE).await;
    }
    session.shutdown().await;
}

/// HTTP/1.1 needs explicit chunked framing for a body of unknown length (the session would
/// otherwise delimit it by closing, and lose keep-alive); HTTP/2 frames it natively.
pub fn set_streaming_framing(
    session: &Client,
    out: &mut ResponseHeader,
) -> Result<(), GatewayError> {
    if !session.is_http2() && session.req_header().version == http::Version::HTTP_11 {
        super::header_edit::edit_response(out, |h| {
            super::header_edit::set(
                h,
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            )
        })?;
    }
    Ok(())
}

/// Keeps reading (and discarding) a refused upload for a moment after answering, as
/// nginx's lingering close does: closing at once would make the client's next write fail
/// with a reset before it reads the answer, so it would report a broken pipe instead of the
/// error. Bounded in bytes and time; the connection is closed afterwards.
pub async fn linger(session: &mut Client) {
    const MAX_BYTES: usize = 16 << 20;
    const MAX_TIME: Duration = Duration::from_secs(2);
    let drain = async {
        let mut drained = 0;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            drained += chunk.len();
            if drained > MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(MAX_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gathered_body_is_one_buffer_whatever_its_pieces() {
        let one = Bytes::from_static(b"{\"whole\":true}");
        let mut gather = Gather::default();
        gather.push(one.clone());
        let body = gather.finish();
        assert_eq!(body.as_ptr(), one.as_ptr(), "one piece is kept, not copied");

        let mut gather = Gather::default();
        for byte in b"0123456789".repeat(100) {
            gather.push(Bytes::copy_from_slice(&[byte]));
        }
        assert_eq!(gather.len(), 1000);
        assert_eq!(gather.bytes(), &b"0123456789".repeat(100)[..]);
        assert_eq!(gather.finish().len(), 1000);
    }
}
