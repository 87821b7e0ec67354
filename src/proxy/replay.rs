//! Writing an answer sira already has: a cached one, or the one an identical request in
//! flight is receiving ([`crate::cache::Replay`]).
//!
//! The answer is in the client's format already (it was kept after translation), so it
//! goes through the response phases as a local answer: sira's headers, `x-sira-cache`,
//! and the client-side filters, which run on it again for this request (a `redact …
//! restore: true` puts this request's values back).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue};
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;

use super::ctx::RequestCtx;
use super::downstream::{self, join};
use super::modules::header_error;
use super::Gateway;
use crate::cache::{flight::End, Entry, Replay};
use crate::error::GatewayError;
use crate::proxy::modules::stream_error_event;

pub async fn replay(
    gateway: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    replay: Replay,
) -> Result<(), GatewayError> {
    let sse = match &replay {
        Replay::Stored(entry) => entry.sse,
        Replay::Follow(_) => true,
    };
    ctx.response.local = true;
    ctx.response.replay = true;
    ctx.response.sse = sse;
    ctx.response.status = 200;
    let mut header = ResponseHeader::build_no_case(200, Some(6)).map_err(header_error)?;
    let content_type = if sse {
        "text/event-stream; charset=utf-8"
    } else {
        "application/json"
    };
    header
        .insert_header(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
        .map_err(header_error)?;
    gateway.chain.response_filter(&mut header, ctx)?;
    match replay {
        Replay::Stored(entry) if !entry.sse => {
            let mut body = vec![entry.body.clone()];
            gateway.chain.response_body_filter(&mut body, true, ctx)?;
            let body = join(&mut body);
            header
                .insert_header(header::CONTENT_LENGTH, body.len())
                .map_err(header_error)?;
            if downstream::write_header(session, ctx, header).await {
                downstream::write(session, ctx, body, true).await;
            }
            Ok(())
        }
        Replay::Stored(entry) if ctx.cache.paced && entry.pace.len() > 1 => {
            downstream::set_streaming_framing(session, &mut header)?;
            if !downstream::write_header(session, ctx, header).await {
                return Ok(());
            }
            paced(gateway, session, ctx, &entry).await
        }
        Replay::Stored(entry) => {
            downstream::set_streaming_framing(session, &mut header)?;
            if !downstream::write_header(session, ctx, header).await {
                return Ok(());
            }
            let mut body = vec![entry.body.clone()];
            let filtered = gateway.chain.response_body_filter(&mut body, true, ctx);
            downstream::write_pieces(session, ctx, &mut body, filtered.is_ok()).await;
            filtered
        }
        Replay::Follow(following) => {
            let flight = following.flight();
            downstream::set_streaming_framing(session, &mut header)?;
            if !downstream::write_header(session, ctx, header).await {
                return Ok(());
            }
            let mut from = 0;
            loop {
                let (pieces, end): (Vec<Bytes>, Option<End>) = flight.next(from).await;
                from += pieces.len();
                let mut body = pieces;
                let done = match &end {
                    Some(End::Done(entry)) => {
                        ctx.cache.saved = Some(entry.usage);
                        true
                    }
                    _ => false,
                };
                let filtered = gateway.chain.response_body_filter(&mut body, done, ctx);
                let ended = done && filtered.is_ok();
                if !downstream::write_pieces(session, ctx, &mut body, ended).await {
                    return Ok(());
                }
                filtered?;
                match end {
                    Some(End::Done(_)) => return Ok(()),
                    Some(End::Failed) => {
                        // Ended as the client's format ends a broken stream: its error
                        // event, then no clean end.
                        let error = GatewayError::UpstreamBroken {
                            provider: ctx.provider_label().to_owned(),
                            reason: "the identical request this one followed broke off".into(),
                        };
                        let event = stream_error_event(
                            ctx.format,
                            &error,
                            ctx.id.to_str().unwrap_or("req"),
                        );
                        downstream::write(session, ctx, event, false).await;
                        return Err(error);
                    }
                    None => {}
                }
            }
        }
    }
}

/// A stored stream written with the pauses it came with: each batch at the time it arrived
/// after the first.
async fn paced(
    gateway: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    entry: &Entry,
) -> Result<(), GatewayError> {
    let start = tokio::time::Instant::now();
    let marks = &entry.pace;
    for (i, mark) in marks.iter().enumerate() {
        // Offsets were checked when the entry was made or read: in order and in the body.
        let from = if i == 0 { 0 } else { mark.offset as usize };
        let to = marks
            .get(i + 1)
            .map_or(entry.body.len(), |next| next.offset as usize);
        let last = i + 1 == marks.len();
        tokio::time::sleep_until(start + Duration::from_millis(u64::from(mark.after_ms))).await;
        let mut body = vec![entry.body.slice(from..to)];
        let filtered = gateway.chain.response_body_filter(&mut body, last, ctx);
        let ended = last && filtered.is_ok();
        if !downstream::write_pieces(session, ctx, &mut body, ended).await {
            return Ok(());
        }
        filtered?;
    }
    Ok(())
}
