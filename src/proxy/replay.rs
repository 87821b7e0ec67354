//! Writing an answer sira already has: a cached one, or the one an identical request in
//! flight is receiving ([`crate::cache::Replay`]).
//!
//! The answer is in the format of the client that asked first (it was kept after
//! translation); one kept in the provider's own format is translated for a client of
//! another format as a provider's answer is (a JSON body before it was chosen, a stream as
//! it is written). It goes through the response phases as a local answer:
//! sira's headers, `x-sira-cache`, and the client-side filters, which run on it again for
//! this request (a `redact … restore: true` puts this request's values back).

use std::time::Duration;

use super::client::Client;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue};
use pingora_http::ResponseHeader;

use super::ctx::RequestCtx;
use super::downstream::{self, join};
use super::modules::header_error;
use super::Gateway;
use crate::cache::{flight::End, Entry, Replay};
use crate::error::GatewayError;
use crate::proxy::modules::response_options;
use crate::proxy::modules::stream_error_event;
use crate::translate::{StreamLimits, StreamTranslator};

pub async fn replay(
    gateway: &Gateway,
    session: &mut Client,
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
    let mut convert = Conversion::new(ctx, sse);
    match replay {
        Replay::Stored(entry) if !entry.sse => {
            // A JSON answer was put into this client's format before it was chosen.
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
            paced(gateway, session, ctx, &entry, &mut convert).await
        }
        Replay::Stored(entry) => {
            downstream::set_streaming_framing(session, &mut header)?;
            if !downstream::write_header(session, ctx, header).await {
                return Ok(());
            }
            let mut body = vec![entry.body.clone()];
            let filtered = convert.run(gateway, ctx, &mut body, true);
            if !downstream::write_pieces(session, ctx, &mut body, filtered.is_ok()).await {
                return Ok(());
            }
            match filtered {
                Ok(()) => Ok(()),
                Err(error) => break_off(session, ctx, error).await,
            }
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
                let filtered = convert.run(gateway, ctx, &mut body, done);
                let ended = done && filtered.is_ok();
                if !downstream::write_pieces(session, ctx, &mut body, ended).await {
                    return Ok(());
                }
                if let Err(error) = filtered {
                    return break_off(session, ctx, error).await;
                }
                match end {
                    Some(End::Done(_)) => return Ok(()),
                    Some(End::Failed) => {
                        let error = GatewayError::UpstreamBroken {
                            provider: ctx.provider_label().to_owned(),
                            reason: "the identical request this one followed broke off".into(),
                        };
                        return break_off(session, ctx, error).await;
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
    session: &mut Client,
    ctx: &mut RequestCtx,
    entry: &Entry,
    convert: &mut Conversion,
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
        let filtered = convert.run(gateway, ctx, &mut body, last);
        let ended = last && filtered.is_ok();
        if !downstream::write_pieces(session, ctx, &mut body, ended).await {
            return Ok(());
        }
        if let Err(error) = filtered {
            return break_off(session, ctx, error).await;
        }
    }
    Ok(())
}

/// Ends a stream under way as the client's format ends a broken one: its error event, then
/// no clean end.
async fn break_off(
    session: &mut Client,
    ctx: &mut RequestCtx,
    error: GatewayError,
) -> Result<(), GatewayError> {
    let event = stream_error_event(ctx.format, &error, ctx.id.to_str().unwrap_or("req"));
    downstream::write(session, ctx, event, false).await;
    // An answer that did not reach the client whole saved nothing.
    ctx.cache.saved = None;
    Err(error)
}

/// A stream kept in the provider's format, translated into this client's piece by piece,
/// as a provider's stream is.
enum Conversion {
    None,
    Stream(Box<StreamTranslator>, BytesMut),
}

impl Conversion {
    fn new(ctx: &mut RequestCtx, sse: bool) -> Conversion {
        let Some((from, context)) = ctx.cache.convert.take().filter(|_| sse) else {
            return Conversion::None;
        };
        let mut translator =
            StreamTranslator::with_context(from, ctx.format, response_options(ctx), context);
        // The kept stream passed the provider-side limits once already; what bounds it here
        // is the size of an entry, which the whole answer is within.
        let server = &ctx.snap.server;
        let entry = ctx.snap.cache.as_ref().map_or(0, |c| c.cache.max_entry);
        translator.set_limits(StreamLimits {
            event: server.max_sse_event.max(entry),
            tool_arguments: server.max_tool_arguments,
            answer: server.max_response_body,
        });
        Conversion::Stream(Box::new(translator), BytesMut::new())
    }

    /// A batch of the kept answer as this client gets it: translated, then through the
    /// response phases.
    fn run(
        &mut self,
        gateway: &Gateway,
        ctx: &mut RequestCtx,
        body: &mut Vec<Bytes>,
        end: bool,
    ) -> Result<(), GatewayError> {
        self.apply(ctx, body, end)?;
        gateway.chain.response_body_filter(body, end, ctx)
    }

    fn apply(
        &mut self,
        ctx: &RequestCtx,
        body: &mut Vec<Bytes>,
        end: bool,
    ) -> Result<(), GatewayError> {
        let Conversion::Stream(translator, out) = self else {
            return Ok(());
        };
        translator
            .translate_batch(body, out, end)
            .map_err(|e| GatewayError::UpstreamBroken {
                provider: ctx.provider_label().to_owned(),
                reason: format!("cannot translate the kept stream: {e}"),
            })
    }
}
