//! Relaying a provider's response to the client: the response header, JSON bodies (passed
//! through as the provider's own `Bytes` with accounting reading alongside, or translated
//! whole) and error responses (relayed with their status, translated into the client's error
//! shape when formats differ). Streams are in [`super::stream`].

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue};
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;

use super::ctx::RequestCtx;
use super::stream::{relay_stream, response_options};
use super::upstream::Upstream;
use super::Gateway;
use crate::accounting::usage_from_json;
use crate::error::GatewayError;
use crate::translate::{translate_error, translate_response_with, ResponseContext};
use lua_free_filters::HeaderEdit;

/// Error bodies are read whole (to relay them with their status); beyond this they are cut.
const MAX_ERROR_BODY: usize = 1 << 20;
/// JSON bodies are kept (as shared `Bytes`, not copies) to read usage at the end; past this
/// size usage is not read and the request is logged without tokens.
const MAX_ACCOUNTED_BODY: usize = 64 << 20;

// Names as constants: a `&str` name is parsed into a `HeaderName` on every insert.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");
const X_SIRA_OVERHEAD_US: HeaderName = HeaderName::from_static("x-sira-overhead-us");
const X_SIRA_PROVIDER: HeaderName = HeaderName::from_static("x-sira-provider");
const X_SIRA_MODEL: HeaderName = HeaderName::from_static("x-sira-model");
const X_SIRA_ATTEMPTS: HeaderName = HeaderName::from_static("x-sira-attempts");
const X_SIRA_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-sira-dropped-params");

/// Response headers never relayed: hop-by-hop fields, framing sira sets itself, and
/// provider cookies (a provider's session cookie is not the client's business). The
/// provider's `x-request-id` is renamed, not dropped (`client_header`).
const SKIP_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "set-cookie",
    "alt-svc",
];

pub async fn relay(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    mut upstream: Upstream,
) -> Result<(), GatewayError> {
    let Some(upstream_header) = upstream.client.as_ref().and_then(|c| c.response_header()) else {
        return Err(GatewayError::Internal(
            "upstream response header missing".into(),
        ));
    };
    let status = upstream_header.status.as_u16();
    let is_sse = upstream_header
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let content_length = upstream_header.headers.get(header::CONTENT_LENGTH).cloned();
    let mut out = client_header(ctx, upstream_header)?;
    ctx.status = status;
    let translation = upstream.translation.take();

    if status >= 400 {
        return relay_error(gw, session, ctx, &mut upstream, out, translation.is_some()).await;
    }
    if is_sse {
        out.insert_header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))
            .map_err(header_error)?;
        if translation.is_some() {
            out.insert_header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            )
            .map_err(header_error)?;
        }
        set_streaming_framing(session, &mut out)?;
        return relay_stream(gw, session, ctx, &mut upstream, out, translation).await;
    }
    if let Some(context) = translation {
        return relay_translated_json(gw, session, ctx, &mut upstream, out, &context).await;
    }
    match content_length {
        Some(length) => out
            .insert_header(header::CONTENT_LENGTH, length)
            .map_err(header_error)?,
        None => set_streaming_framing(session, &mut out)?,
    }
    relay_json(gw, session, ctx, &mut upstream, out).await
}

fn header_error(e: Box<pingora_error::Error>) -> GatewayError {
    GatewayError::Internal(format!("cannot build response header: {e}").into())
}

/// Response headers for the client: the provider's, minus hop-by-hop and cookies, plus
/// sira's own, then the response filters.
fn client_header(
    ctx: &RequestCtx,
    upstream: &ResponseHeader,
) -> Result<ResponseHeader, GatewayError> {
    let mut out = ResponseHeader::build_no_case(upstream.status, Some(upstream.headers.len() + 6))
        .map_err(header_error)?;
    for (name, value) in &upstream.headers {
        if name == X_REQUEST_ID {
            // The client's request id is sira's; keep the provider's under another name.
            out.append_header(X_UPSTREAM_REQUEST_ID, value.clone())
                .map_err(header_error)?;
        } else if !SKIP_RESPONSE_HEADERS.contains(&name.as_str()) {
            out.append_header(name.clone(), value.clone())
                .map_err(header_error)?;
        }
    }
    sira_headers(ctx, &mut out)?;
    let mut edit = ResponseEdit(&mut out);
    for filter in super::attached_filters(ctx) {
        filter.on_client_response(&mut edit);
    }
    Ok(out)
}

/// `x-request-id`, `x-sira-provider`, `x-sira-model`, `x-sira-attempts`,
/// `x-sira-dropped-params` and `x-sira-overhead-us` (time spent in sira until the response
/// header, provider waits excluded).
pub fn sira_headers(ctx: &RequestCtx, out: &mut ResponseHeader) -> Result<(), GatewayError> {
    out.insert_header(X_REQUEST_ID, ctx.id.clone())
        .map_err(header_error)?;
    let overhead = ctx.started.elapsed().saturating_sub(ctx.upstream_wait);
    out.insert_header(X_SIRA_OVERHEAD_US, overhead.as_micros() as u64)
        .map_err(header_error)?;
    if let Some(value) = ctx.provider.as_ref().and_then(|p| p.name_header.clone()) {
        out.insert_header(X_SIRA_PROVIDER, value)
            .map_err(header_error)?;
    }
    if let Some(model) = &ctx.upstream_model {
        if let Ok(v) = HeaderValue::from_str(model) {
            out.insert_header(X_SIRA_MODEL, v).map_err(header_error)?;
        }
    }
    if !ctx.attempts.is_empty() {
        let mut text = ctx.attempts.len().to_string();
        for (i, attempt) in ctx.attempts.iter().enumerate() {
            text.push_str(if i == 0 { " (" } else { ", " });
            text.push_str(&attempt.provider);
            text.push_str(": ");
            text.push_str(&attempt.outcome);
        }
        text.push(')');
        if let Ok(v) = HeaderValue::from_str(&text) {
            out.insert_header(X_SIRA_ATTEMPTS, v)
                .map_err(header_error)?;
        }
    }
    if !ctx.dropped_params.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&ctx.dropped_params.join(", ")) {
            out.insert_header(X_SIRA_DROPPED_PARAMS, v)
                .map_err(header_error)?;
        }
    }
    Ok(())
}

/// HTTP/1.1 needs explicit chunked framing for a body of unknown length (Pingora would
/// otherwise close-delimit it and lose keep-alive); HTTP/2 frames it natively.
fn set_streaming_framing(
    session: &ServerSession,
    out: &mut ResponseHeader,
) -> Result<(), GatewayError> {
    if !session.is_http2() && session.req_header().version == http::Version::HTTP_11 {
        out.insert_header(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        )
        .map_err(header_error)?;
    }
    Ok(())
}

/// Why reading the provider's body stopped.
pub(super) enum Read {
    Chunk(Bytes),
    End,
    ClientGone,
    Failed(String),
}

/// Reads the next upstream body chunk while watching for the client going away.
///
/// As soon as the provider's response is complete the connection goes back to the pool,
/// before the last bytes are written to the client: a client that sends its next request
/// the moment it has this response then finds the connection ready for reuse.
pub(super) async fn next_chunk(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    upstream: &mut Upstream,
) -> Read {
    let Some(client) = upstream.client.as_mut() else {
        return Read::End;
    };
    let started = Instant::now();
    let read = tokio::select! {
        chunk = client.read_response_body() => match chunk {
            Ok(Some(bytes)) => Read::Chunk(bytes),
            Ok(None) => Read::End,
            Err(e) => Read::Failed(e.to_string()),
        },
        _ = session.read_body_or_idle(true) => Read::ClientGone,
    };
    ctx.upstream_wait += started.elapsed();
    match read {
        Read::ClientGone => ctx.client_gone = true,
        Read::Chunk(_) | Read::End if client.response_done() => {
            upstream.release(gw).await;
        }
        Read::Chunk(_) | Read::End | Read::Failed(_) => {}
    }
    read
}

/// The next upstream chunk if it has already arrived, without waiting: lets a burst of
/// events that TCP delivered together go out in one write. `None` = nothing ready yet.
pub(super) async fn ready_chunk(gw: &Gateway, upstream: &mut Upstream) -> Option<Read> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let idle_timeout = upstream.provider.timeouts.idle;
    let Some(client) = upstream.client.as_mut() else {
        return Some(Read::End);
    };
    // One poll, no waiting: a read timeout here would only cost a boxed timer, registered
    // and cancelled on every `Pending`, i.e. once per event of a slow stream. `next_chunk`
    // reads with the provider's idle timeout, set back right after.
    client.set_read_timeout(None);
    let polled = {
        let mut read = std::pin::pin!(client.read_response_body());
        // A no-op waker is enough: on `Pending` the caller goes back to `next_chunk`, whose
        // poll registers the task's real waker again.
        read.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    };
    client.set_read_timeout(Some(idle_timeout));
    let polled = match polled {
        Poll::Ready(result) => result,
        Poll::Pending => return None,
    };
    let read = match polled {
        Ok(Some(bytes)) => Read::Chunk(bytes),
        Ok(None) => Read::End,
        Err(e) => Read::Failed(e.to_string()),
    };
    if !matches!(read, Read::Failed(_)) && client.response_done() {
        upstream.release(gw).await;
    }
    Some(read)
}

/// Writes several pieces in one go: one buffer, one HTTP chunk, one flush, instead of one
/// write system call per event.
pub(super) async fn write_all(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    pieces: &mut Vec<Bytes>,
) -> bool {
    let data = match pieces.len() {
        0 => return true,
        1 => pieces.pop().unwrap_or_default(),
        _ => {
            // Joined here into a buffer of the exact size. Pingora's own path for several
            // pieces (`response_duplex_vec`) appends them to a buffer that starts empty on
            // every call and grows by doubling, copying at each step: ~10 % of a 100-event
            // passthrough stream's instructions (callgrind, bench/profile.sh c).
            let mut joined = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
            for piece in pieces.drain(..) {
                joined.extend_from_slice(&piece);
            }
            joined.freeze()
        }
    };
    write(session, ctx, data, false).await
}

/// Writes to the client; `false` (and `ctx.client_gone`) when the client is gone.
pub(super) async fn write(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    data: Bytes,
    end: bool,
) -> bool {
    if !data.is_empty() && ctx.first_byte.is_none() {
        ctx.first_byte = Some(Instant::now());
    }
    match session.write_response_body(data, end).await {
        Ok(()) => true,
        Err(_) => {
            ctx.client_gone = true;
            false
        }
    }
}

async fn relay_json(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    upstream: &mut Upstream,
    out: ResponseHeader,
) -> Result<(), GatewayError> {
    if session.write_response_header(Box::new(out)).await.is_err() {
        ctx.client_gone = true;
        return Ok(());
    }
    let mut kept: Vec<Bytes> = Vec::new();
    let mut kept_len = 0usize;
    loop {
        match next_chunk(gw, session, ctx, upstream).await {
            Read::Chunk(bytes) => {
                kept_len += bytes.len();
                if kept_len <= MAX_ACCOUNTED_BODY {
                    kept.push(bytes.clone());
                }
                if !write(session, ctx, bytes, false).await {
                    return Ok(());
                }
            }
            Read::End => break,
            Read::ClientGone => return Ok(()),
            Read::Failed(reason) => {
                // Headers are out: all that can be done is cut the response short.
                ctx.error = Some(GatewayError::UpstreamBroken {
                    provider: upstream.provider.name.to_string(),
                    reason,
                });
                return Ok(());
            }
        }
    }
    if !write(session, ctx, Bytes::new(), true).await {
        return Ok(());
    }
    if kept_len <= MAX_ACCOUNTED_BODY {
        let usage = match kept.as_slice() {
            [one] => usage_from_json(upstream.format, one),
            many => usage_from_json(upstream.format, &many.concat()),
        };
        if let Some(usage) = usage {
            ctx.usage = usage;
            ctx.usage_seen = true;
        }
    }
    Ok(())
}

/// Reads a whole provider body, up to `limit` bytes; `None` if the client left or the
/// provider failed or sent more than the limit.
async fn read_whole(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    upstream: &mut Upstream,
    limit: usize,
) -> Option<Bytes> {
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    loop {
        match next_chunk(gw, session, ctx, upstream).await {
            Read::Chunk(bytes) => {
                if joined.len() + first.as_ref().map_or(0, Bytes::len) + bytes.len() > limit {
                    return None;
                }
                match first.take() {
                    None if joined.is_empty() => first = Some(bytes),
                    previous => {
                        if let Some(previous) = previous {
                            joined.extend_from_slice(&previous);
                        }
                        joined.extend_from_slice(&bytes);
                    }
                }
            }
            Read::End => return Some(first.unwrap_or_else(|| joined.freeze())),
            Read::ClientGone | Read::Failed(_) => return None,
        }
    }
}

/// Relays an upstream error response with its status, translated into the client's error
/// shape (and the status its SDK expects) when the provider speaks another format.
async fn relay_error(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    upstream: &mut Upstream,
    mut out: ResponseHeader,
    translate: bool,
) -> Result<(), GatewayError> {
    let body = read_whole(gw, session, ctx, upstream, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    if ctx.client_gone {
        return Ok(());
    }
    let body = if translate {
        let translated = translate_error(upstream.format, ctx.format, ctx.status, &body);
        ctx.status = translated.status;
        out.set_status(translated.status).map_err(header_error)?;
        out.insert_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .map_err(header_error)?;
        Bytes::from(translated.body)
    } else {
        body
    };
    out.insert_header(header::CONTENT_LENGTH, body.len())
        .map_err(header_error)?;
    if session.write_response_header(Box::new(out)).await.is_err() {
        ctx.client_gone = true;
        return Ok(());
    }
    write(session, ctx, body, true).await;
    Ok(())
}

/// A JSON answer from a provider of another format: read whole, translated, then sent with
/// its length. Nothing is sent before the translation succeeded, so a provider body sira
/// cannot read still becomes a proper 502 in the client's shape.
async fn relay_translated_json(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    upstream: &mut Upstream,
    mut out: ResponseHeader,
    context: &ResponseContext,
) -> Result<(), GatewayError> {
    let provider = upstream.provider.clone();
    let broken = |reason: String| GatewayError::UpstreamBroken {
        provider: provider.name.to_string(),
        reason,
    };
    let Some(body) = read_whole(gw, session, ctx, upstream, MAX_ACCOUNTED_BODY).await else {
        if ctx.client_gone {
            return Ok(());
        }
        return Err(broken(
            "the response body was cut short or too large".into(),
        ));
    };
    let translated = translate_response_with(
        upstream.format,
        ctx.format,
        &body,
        &response_options(ctx),
        context,
    )
    .map_err(|e| broken(format!("cannot translate the provider's response: {e}")))?;
    ctx.usage = translated.usage;
    ctx.usage_seen = !translated.usage.is_zero();
    out.insert_header(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )
    .map_err(header_error)?;
    out.insert_header(header::CONTENT_LENGTH, translated.body.len())
        .map_err(header_error)?;
    if session.write_response_header(Box::new(out)).await.is_err() {
        ctx.client_gone = true;
        return Ok(());
    }
    write(session, ctx, Bytes::from(translated.body), true).await;
    Ok(())
}

/// Lets filters edit a Pingora response header.
pub struct ResponseEdit<'a>(pub &'a mut ResponseHeader);

impl HeaderEdit for ResponseEdit<'_> {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
        // Names and values were validated when the filter was built.
        let _ = self.0.insert_header(name.clone(), value.clone());
    }

    fn remove(&mut self, name: &HeaderName) {
        self.0.remove_header(name);
    }
}
