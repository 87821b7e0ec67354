//! Relaying a provider's response to the client: JSON bodies and SSE streams pass through
//! as the provider's own `Bytes`, with accounting reading alongside.
//!
//! Streams are forwarded frame by frame as they arrive (each write is flushed: chunked
//! encoding flushes every chunk), never buffered whole. If the client goes away, the loop
//! stops at once and dropping the upstream session closes the provider connection, so the
//! provider stops generating (and billing) promptly.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue};
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;

use super::ctx::RequestCtx;
use super::upstream::Upstream;
use super::Gateway;
use crate::accounting::{usage_from_json, FrameVerdict, StreamUsage};
use crate::error::{render_error, Category, GatewayError};
use crate::format::Format;
use crate::metrics::StreamGuard;
use crate::sse::SseScanner;
use lua_free_filters::HeaderEdit;

/// Error bodies are read whole (to relay them with their status); beyond this they are cut.
const MAX_ERROR_BODY: usize = 1 << 20;
/// JSON bodies are kept (as shared `Bytes`, not copies) to read usage at the end; past this
/// size usage is not read and the request is logged without tokens.
const MAX_ACCOUNTED_BODY: usize = 64 << 20;

/// Response headers never relayed: hop-by-hop fields, framing sira sets itself, and
/// provider cookies (a provider's session cookie is not the client's business).
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
    "x-request-id",
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

    if status >= 400 {
        relay_error(gw, session, ctx, &mut upstream, out).await
    } else if is_sse {
        out.insert_header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))
            .map_err(header_error)?;
        set_streaming_framing(session, &mut out)?;
        relay_stream(gw, session, ctx, &mut upstream, out).await
    } else {
        match content_length {
            Some(length) => out
                .insert_header(header::CONTENT_LENGTH, length)
                .map_err(header_error)?,
            None => set_streaming_framing(session, &mut out)?,
        }
        relay_json(gw, session, ctx, &mut upstream, out).await
    }
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
        let name_str = name.as_str();
        if name_str == "x-request-id" {
            // The client's request id is sira's; keep the provider's under another name.
            out.append_header("x-upstream-request-id", value.clone())
                .map_err(header_error)?;
        } else if !SKIP_RESPONSE_HEADERS.contains(&name_str) {
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
    out.insert_header("x-request-id", ctx.id.clone())
        .map_err(header_error)?;
    let overhead = ctx.started.elapsed().saturating_sub(ctx.upstream_wait);
    out.insert_header("x-sira-overhead-us", overhead.as_micros() as u64)
        .map_err(header_error)?;
    if let Some(provider) = &ctx.provider {
        if let Ok(v) = HeaderValue::from_str(&provider.name) {
            out.insert_header("x-sira-provider", v)
                .map_err(header_error)?;
        }
    }
    if let Some(model) = &ctx.upstream_model {
        if let Ok(v) = HeaderValue::from_str(model) {
            out.insert_header("x-sira-model", v).map_err(header_error)?;
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
            out.insert_header("x-sira-attempts", v)
                .map_err(header_error)?;
        }
    }
    if !ctx.dropped_params.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&ctx.dropped_params.join(", ")) {
            out.insert_header("x-sira-dropped-params", v)
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
enum Read {
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
async fn next_chunk(
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
            if let Some(done) = upstream.client.take() {
                let idle = upstream.peer.options.idle_timeout;
                gw.connector
                    .release_http_session(done, &upstream.peer, idle)
                    .await;
            }
        }
        Read::Chunk(_) | Read::End | Read::Failed(_) => {}
    }
    read
}

async fn write(session: &mut ServerSession, ctx: &mut RequestCtx, data: Bytes, end: bool) -> bool {
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

async fn relay_stream(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    upstream: &mut Upstream,
    out: ResponseHeader,
) -> Result<(), GatewayError> {
    let _guard = StreamGuard::open();
    ctx.stream = true;
    if session.write_response_header(Box::new(out)).await.is_err() {
        ctx.client_gone = true;
        return Ok(());
    }
    let mut scanner = SseScanner::new();
    let mut tap = StreamUsage::new(upstream.format);
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        match next_chunk(gw, session, ctx, upstream).await {
            Read::Chunk(chunk) => {
                frames.clear();
                scanner.feed(chunk.clone(), &mut frames);
                let data = forwardable(&chunk, &frames, &mut tap, upstream.injected_usage);
                if !data.is_empty() && !write(session, ctx, data, false).await {
                    break;
                }
            }
            Read::End => {
                if let Some(tail) = scanner.finish() {
                    let tail_frames = [tail.clone()];
                    let data = forwardable(&tail, &tail_frames, &mut tap, upstream.injected_usage);
                    if !data.is_empty() && !write(session, ctx, data, false).await {
                        break;
                    }
                }
                write(session, ctx, Bytes::new(), true).await;
                break;
            }
            Read::ClientGone => break,
            Read::Failed(reason) => {
                // The status line is sent; end the stream with the surface's error event.
                let event = stream_error_event(ctx.format, &reason);
                ctx.error = Some(GatewayError::UpstreamBroken {
                    provider: upstream.provider.name.to_string(),
                    reason,
                });
                if write(session, ctx, event, false).await {
                    write(session, ctx, Bytes::new(), true).await;
                }
                break;
            }
        }
    }
    ctx.usage = tap.usage();
    ctx.usage_seen = tap.seen();
    Ok(())
}

/// The part of `chunk` to send on: its complete frames, minus the usage-only chunk sira
/// asked for on the client's behalf. Frames that lie contiguously in `chunk` go out as one
/// zero-copy slice of it; only frames completed from an earlier read's tail are new bytes.
fn forwardable(
    chunk: &Bytes,
    frames: &[Bytes],
    tap: &mut StreamUsage,
    drop_usage_only: bool,
) -> Bytes {
    let mut keep: Vec<&Bytes> = Vec::with_capacity(frames.len());
    for frame in frames {
        let verdict = tap.observe(frame);
        if !(drop_usage_only && verdict == FrameVerdict::UsageOnly) {
            keep.push(frame);
        }
    }
    match keep.as_slice() {
        [] => Bytes::new(),
        [one] => (*one).clone(),
        [first, .., last] => {
            let base = chunk.as_ptr() as usize;
            let start = first.as_ptr() as usize;
            let end = last.as_ptr() as usize + last.len();
            let inside = start >= base && end <= base + chunk.len();
            let contiguous = keep
                .windows(2)
                .all(|w| w[0].as_ptr() as usize + w[0].len() == w[1].as_ptr() as usize);
            if inside && contiguous {
                chunk.slice(start - base..end - base)
            } else {
                let mut joined = BytesMut::with_capacity(keep.iter().map(|f| f.len()).sum());
                for frame in keep {
                    joined.extend_from_slice(frame);
                }
                joined.freeze()
            }
        }
    }
}

/// The in-stream error event of each surface (CONTRACT.md, errors after streaming began).
pub fn stream_error_event(format: Format, message: &str) -> Bytes {
    let message = format!("upstream stream failed: {message}");
    let payload = render_error(
        format,
        502,
        Category::Upstream,
        &message,
        None,
        Some("upstream_error"),
    );
    let mut event = BytesMut::with_capacity(payload.len() + 32);
    match format {
        Format::Anthropic | Format::OpenAiResponses => {
            event.extend_from_slice(b"event: error\ndata: ")
        }
        Format::OpenAiChat | Format::Gemini => event.extend_from_slice(b"data: "),
    }
    event.extend_from_slice(&payload);
    event.extend_from_slice(b"\n\n");
    event.freeze()
}

/// Relays an upstream error response with its status.
async fn relay_error(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    upstream: &mut Upstream,
    mut out: ResponseHeader,
) -> Result<(), GatewayError> {
    let mut body = BytesMut::new();
    loop {
        match next_chunk(gw, session, ctx, upstream).await {
            Read::Chunk(bytes) => {
                let room = MAX_ERROR_BODY.saturating_sub(body.len());
                body.extend_from_slice(&bytes[..bytes.len().min(room)]);
                if room < bytes.len() {
                    break;
                }
            }
            Read::End | Read::Failed(_) => break,
            Read::ClientGone => return Ok(()),
        }
    }
    let body = body.freeze();
    out.insert_header(header::CONTENT_LENGTH, body.len())
        .map_err(header_error)?;
    if session.write_response_header(Box::new(out)).await.is_err()
        || !write(session, ctx, body, true).await
    {
        ctx.client_gone = true;
        return Ok(());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_whole_chunks_without_copying() {
        let chunk = Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n");
        let mut scanner = SseScanner::new();
        let mut frames = Vec::new();
        scanner.feed(chunk.clone(), &mut frames);
        let mut tap = StreamUsage::new(Format::OpenAiChat);
        let out = forwardable(&chunk, &frames, &mut tap, true);
        assert_eq!(out, chunk);
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn drops_the_injected_usage_chunk_only() {
        let usage =
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n";
        let mut input = b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\n".to_vec();
        input.extend_from_slice(usage);
        input.extend_from_slice(b"data: [DONE]\n\n");
        let chunk = Bytes::from(input);
        let mut scanner = SseScanner::new();
        let mut frames = Vec::new();
        scanner.feed(chunk.clone(), &mut frames);
        let mut tap = StreamUsage::new(Format::OpenAiChat);
        let out = forwardable(&chunk, &frames, &mut tap, true);
        assert_eq!(
            &out[..],
            &b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\ndata: [DONE]\n\n"[..]
        );
        assert_eq!((tap.usage().input, tap.usage().output), (3, 4));
        // When the client asked for usage itself, the chunk stays.
        let mut tap = StreamUsage::new(Format::OpenAiChat);
        assert_eq!(forwardable(&chunk, &frames, &mut tap, false), chunk);
    }

    #[test]
    fn error_events_per_surface() {
        let anthropic = stream_error_event(Format::Anthropic, "reset");
        assert!(anthropic.starts_with(b"event: error\ndata: {\"type\":\"error\""));
        let openai = stream_error_event(Format::OpenAiChat, "reset");
        assert!(openai.starts_with(b"data: {\"error\":"));
        assert!(openai.ends_with(b"\n\n"));
    }
}
