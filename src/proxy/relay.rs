//! Relaying a provider's response to the client, through the response phases: the header,
//! then the body — streamed as it arrives (SSE events in batches, JSON as it comes), or
//! read whole first when a module must see all of it before the header goes out (a
//! translated answer, an error body).
//!
//! A stream is never buffered whole: events are written as soon as they are complete, each
//! write flushed. If the client goes away the loop stops at once, and dropping the upstream
//! response closes the provider connection, so the provider stops generating (and billing)
//! promptly. If the provider's body breaks after the header was sent, the client's response
//! ends as an error (the surface's error event first on a stream), never as a clean end.

use super::client::Client;
use bytes::Bytes;
use http::header;
use pingora_http::ResponseHeader;

use super::ctx::RequestCtx;
use super::downstream::{abort, set_streaming_framing, write_header, write_pieces, Gather};
use super::exchange::{BodyError, UpstreamResponse};
use super::header_edit;
use super::modules::{header_error, stream_error_event};
use super::{hop, policy, Gateway};
use crate::error::GatewayError;
use crate::metrics::{metrics, Buffer, StreamGuard};
use crate::pool::Outcome;

/// Upper bound of provider bytes gathered into one client write.
const MAX_BATCH: usize = 64 << 10;
/// Error bodies are read whole (to relay them with their status); beyond this they are
/// dropped and the status alone is relayed.
const MAX_ERROR_BODY: usize = 1 << 20;

/// What reading the provider's body gave.
enum Next {
    Chunk(Bytes),
    End,
    ClientGone,
    Failed(GatewayError),
}

/// The endpoint broke a response off (a reset, a cut, silence): as much a failure as a
/// refused connection, though too late to try elsewhere. The end of a shutdown's grace
/// period is not the endpoint's doing.
fn report_broken(ctx: &RequestCtx, e: &GatewayError) {
    if matches!(e, GatewayError::ShuttingDown) {
        return;
    }
    if let (Some(provider), Some(endpoint)) = (&ctx.upstream.provider, ctx.upstream.endpoint) {
        provider.pool.report(
            endpoint,
            false,
            true,
            Outcome::Failed {
                reason: &e.to_string(),
                slow: None,
            },
        );
    }
}

pub async fn relay(
    gw: &Gateway,
    session: &mut Client,
    ctx: &mut RequestCtx,
    mut upstream: UpstreamResponse,
) -> Result<(), GatewayError> {
    let (mut out, status, content_length) = {
        let up = upstream.header();
        let status = up.status.as_u16();
        ctx.response.sse =
            status < 400 && hop::is_event_stream(up.headers.get(header::CONTENT_TYPE));
        ctx.response.close_delimited = !matches!(status, 204 | 304)
            && !up.headers.contains_key(header::CONTENT_LENGTH)
            && !up.headers.contains_key(header::TRANSFER_ENCODING);
        (
            hop::client_response(up)?,
            status,
            up.headers.get(header::CONTENT_LENGTH).cloned(),
        )
    };
    ctx.response.status = status;
    // An error body is read whole: relayed with its status, translated when the formats
    // differ.
    ctx.response.whole = status >= 400;
    gw.chain.response_filter(&mut out, ctx)?;
    if ctx.response.whole {
        return relay_whole(gw, session, ctx, &mut upstream, out).await;
    }
    if ctx.response.sse {
        header_edit::edit_response(&mut out, |h| {
            header_edit::set(
                h,
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            )
        })?;
        set_streaming_framing(session, &mut out)?;
        return relay_stream(gw, session, ctx, &mut upstream, out).await;
    }
    match content_length {
        Some(length) if !ctx.response.rewrites_body => {
            header_edit::edit_response(&mut out, |h| {
                header_edit::set(h, header::CONTENT_LENGTH, length)
            })?;
        }
        _ => set_streaming_framing(session, &mut out)?,
    }
    relay_body(gw, session, ctx, &mut upstream, out).await
}

/// Reads the next piece of the provider's body while watching for the client going away,
/// for `timeouts.total` and for the end of a shutdown's grace period.
async fn next(
    gw: &Gateway,
    session: &mut Client,
    ctx: &mut RequestCtx,
    upstream: &mut UpstreamResponse,
    watch_client: bool,
) -> Next {
    let provider = ctx.provider_label();
    let broken = |reason: String| GatewayError::UpstreamBroken {
        provider: provider.to_owned(),
        reason,
    };
    let read_to_next = |read: Result<Option<Bytes>, BodyError>| match read {
        Ok(Some(bytes)) => Next::Chunk(bytes),
        Ok(None) => Next::End,
        Err(BodyError::Idle(after)) => Next::Failed(broken(format!(
            "nothing received for {}ms",
            after.as_millis()
        ))),
        Err(e) => Next::Failed(broken(e.to_string())),
    };
    // The grace period's end is checked first as a flag (a provider that never pauses
    // would keep a branch after the read from ever being looked at), then waited for last.
    // The body comes before the client's hang-up: when the provider's last bytes (or its
    // end) are in at the moment the client hangs up, a client that had its whole answer and
    // closed at once is not taken for one that left early (its usage was then lost and the
    // request billed at its prompt's estimate).
    let next = if gw.drain.expired() {
        Next::Failed(GatewayError::ShuttingDown)
    } else if let Some(read) = upstream.ready() {
        // Already here (a JSON answer usually arrives with its header, and its end is
        // known from its framing): nothing waited for, so no timer, no clock and no wait
        // to book.
        read_to_next(read)
    } else {
        let started = std::time::Instant::now();
        let deadline = policy::total_deadline(ctx);
        let read = async {
            match deadline {
                None => Some(upstream.read().await),
                Some((at, _)) => tokio::time::timeout_at(at, upstream.read()).await.ok(),
            }
        };
        let next = tokio::select! {
            biased;
            read = read => match read {
                Some(read) => read_to_next(read),
                None => Next::Failed(GatewayError::UpstreamTimeout {
                    provider: provider.to_owned(),
                    after: deadline.map(|(_, total)| total).unwrap_or_default(),
                }),
            },
            _ = session.gone(), if watch_client => Next::ClientGone,
            () = gw.drain.expiry() => Next::Failed(GatewayError::ShuttingDown),
        };
        ctx.upstream.wait += started.elapsed();
        next
    };
    if let Next::Failed(e) = &next {
        report_broken(ctx, e);
    }
    match next {
        Next::ClientGone => ctx.response.client_gone = true,
        // The endpoint is done with this request before the client has the last bytes: a
        // client's next request must not find this one still counted in its load.
        Next::End | Next::Failed(_) => ctx.upstream.inflight = None,
        Next::Chunk(_) if upstream.finished() => ctx.upstream.inflight = None,
        Next::Chunk(_) => {}
    }
    next
}

/// Whether identical requests follow this one's stream, so that it must be read to its end
/// even when its own client is gone.
fn followed(ctx: &RequestCtx) -> bool {
    ctx.cache
        .lead
        .as_ref()
        .is_some_and(|lead| lead.flight.followed())
}

/// A stream: events relayed in batches of what has arrived, through the body phases.
async fn relay_stream(
    gw: &Gateway,
    session: &mut Client,
    ctx: &mut RequestCtx,
    upstream: &mut UpstreamResponse,
    out: ResponseHeader,
) -> Result<(), GatewayError> {
    let _guard = StreamGuard::open();
    ctx.stream = true;
    if !write_header(session, ctx, out).await {
        return Ok(());
    }
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut pending: Option<Next> = None;
    // The client left, but identical requests follow this stream (`crate::cache`): it is
    // read to its end for them, written nowhere.
    let mut detached = false;
    // Whether what the client was last sent ends with the event that finishes its
    // format's stream: a hang-up after it leaves nothing unsent.
    let mut sent_the_end = false;
    loop {
        let read = match pending.take() {
            Some(read) => read,
            None => next(gw, session, ctx, upstream, !detached).await,
        };
        let failure = match read {
            Next::Chunk(chunk) => {
                let mut batched = chunk.len();
                pieces.push(chunk);
                // Everything that has already arrived goes out in this write; what has not
                // arrived is never waited for.
                while batched < MAX_BATCH {
                    match upstream.ready() {
                        None => break,
                        Some(Ok(Some(chunk))) => {
                            batched += chunk.len();
                            pieces.push(chunk);
                            if upstream.finished() {
                                ctx.upstream.inflight = None;
                            }
                        }
                        Some(Ok(None)) => {
                            ctx.upstream.inflight = None;
                            pending = Some(Next::End);
                            break;
                        }
                        Some(Err(e)) => {
                            let broken = GatewayError::UpstreamBroken {
                                provider: ctx.provider_label().to_owned(),
                                reason: e.to_string(),
                            };
                            report_broken(ctx, &broken);
                            pending = Some(Next::Failed(broken));
                            break;
                        }
                    }
                }
                match gw.chain.response_body_filter(&mut pieces, false, ctx) {
                    // A module ended the stream with its own finish: what it left goes out
                    // as the end; the provider's rest is never read.
                    Ok(()) if ctx.response.finish_now => {
                        if !detached {
                            write_pieces(session, ctx, &mut pieces, true).await;
                        }
                        return Ok(());
                    }
                    Ok(()) if detached => {
                        pieces.clear();
                        continue;
                    }
                    Ok(()) => {
                        // A batch with nothing in it leaves what was last sent as it was.
                        if let Some(last) = pieces.iter().rev().find(|p| !p.is_empty()) {
                            sent_the_end = crate::stream_end::ends_done(ctx.format, last);
                        }
                        if write_pieces(session, ctx, &mut pieces, false).await {
                            continue;
                        }
                        if !followed(ctx) {
                            return Ok(());
                        }
                        detached = true;
                        pieces.clear();
                        continue;
                    }
                    Err(e) => e,
                }
            }
            Next::End => {
                pieces.clear();
                ctx.response.answer_complete = true;
                match gw.chain.response_body_filter(&mut pieces, true, ctx) {
                    Ok(()) => {
                        if !detached {
                            write_pieces(session, ctx, &mut pieces, true).await;
                        }
                        return Ok(());
                    }
                    Err(e) => e,
                }
            }
            Next::ClientGone if followed(ctx) => {
                detached = true;
                continue;
            }
            // The client had the event that finishes its stream and closed before the
            // provider's framing ended (its last chunk, or its close): the answer is
            // whole, and the body phases see its end (the usage the provider sent before
            // its end is settled, the answer kept for the cache) though nothing more is
            // written. Read by structure (`crate::stream_end`): a model's text or a
            // client's tool names cannot fake it. An error event does not count.
            Next::ClientGone if sent_the_end => {
                pieces.clear();
                match gw.chain.response_body_filter(&mut pieces, true, ctx) {
                    Ok(()) => ctx.response.answer_complete = true,
                    Err(e) => ctx.error = Some(e),
                }
                return Ok(());
            }
            Next::ClientGone => return Ok(()),
            Next::Failed(e) => {
                pieces.clear();
                e
            }
        };
        // The status line is sent: what the body phases let through, then the surface's
        // error event, then the end of a broken response.
        let event = gw
            .chain
            .response_error_filter(&failure, ctx)
            .unwrap_or_else(|| {
                stream_error_event(ctx.format, &failure, ctx.id.to_str().unwrap_or("req"))
            });
        ctx.error = Some(failure);
        pieces.push(event);
        if write_pieces(session, ctx, &mut pieces, false).await {
            abort(session, ctx).await;
        }
        return Ok(());
    }
}

/// A JSON body relayed as it arrives (passthrough: the provider's own bytes).
async fn relay_body(
    gw: &Gateway,
    session: &mut Client,
    ctx: &mut RequestCtx,
    upstream: &mut UpstreamResponse,
    out: ResponseHeader,
) -> Result<(), GatewayError> {
    if !write_header(session, ctx, out).await {
        return Ok(());
    }
    let mut pieces: Vec<Bytes> = Vec::new();
    loop {
        let (end, failure) = match next(gw, session, ctx, upstream, true).await {
            Next::Chunk(chunk) => {
                pieces.push(chunk);
                (false, None)
            }
            Next::End => (true, None),
            Next::ClientGone => return Ok(()),
            Next::Failed(e) => (false, Some(e)),
        };
        let failure = match failure {
            Some(e) => e,
            None => match gw.chain.response_body_filter(&mut pieces, end, ctx) {
                Ok(()) => {
                    if !write_pieces(session, ctx, &mut pieces, end).await || end {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => e,
            },
        };
        // The header is out: all that can be done is end the response as broken.
        gw.chain.response_error_filter(&failure, ctx);
        ctx.error = Some(failure);
        abort(session, ctx).await;
        return Ok(());
    }
}

/// A body read whole before the header goes out: the body phases see all of it at once,
/// and may change it and the status (a translated answer, a translated error). Nothing is
/// sent before that succeeded, so a provider body sira cannot use still becomes a proper
/// error response in the client's shape.
async fn relay_whole(
    gw: &Gateway,
    session: &mut Client,
    ctx: &mut RequestCtx,
    upstream: &mut UpstreamResponse,
    mut out: ResponseHeader,
) -> Result<(), GatewayError> {
    let error_status = ctx.response.status >= 400;
    let limit = if error_status {
        MAX_ERROR_BODY
    } else {
        ctx.snap.server.max_response_body
    };
    let mut whole = Gather::default();
    loop {
        match next(gw, session, ctx, upstream, true).await {
            Next::Chunk(chunk) => {
                if whole.len() + chunk.len() > limit {
                    if error_status {
                        // The status says what happened; an error body this large is noise.
                        whole = Gather::default();
                        break;
                    }
                    metrics().buffer_limit(Buffer::ResponseBody);
                    return Err(GatewayError::UpstreamBroken {
                        provider: ctx.provider_label().to_owned(),
                        reason: format!(
                            "the response is larger than the gateway's limit of {limit} bytes (server.max_response_body)"
                        ),
                    });
                }
                whole.push(chunk);
            }
            Next::End => break,
            Next::ClientGone => return Ok(()),
            Next::Failed(_) if error_status => {
                whole = Gather::default();
                break;
            }
            Next::Failed(e) => return Err(e),
        }
    }
    let mut pieces = vec![whole.finish()];
    gw.chain.response_body_filter(&mut pieces, true, ctx)?;
    let length: usize = pieces.iter().map(Bytes::len).sum();
    out.set_status(ctx.response.status).map_err(header_error)?;
    header_edit::edit_response(&mut out, |h| {
        header_edit::set(h, header::CONTENT_LENGTH, http::HeaderValue::from(length))
    })?;
    if write_header(session, ctx, out).await {
        write_pieces(session, ctx, &mut pieces, true).await;
    }
    Ok(())
}
