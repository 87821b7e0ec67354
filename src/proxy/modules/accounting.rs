//! Token accounting (`crate::accounting`): usage read from the provider's own bytes as they
//! pass — every JSON answer, every stream, aborted ones included — then priced and counted
//! when the request is over.
//!
//! It sits on the provider's side of translation: a passthrough response is read in the
//! provider's format before anything rewrites it, and a translated one reports its usage
//! through the translator, which parses the provider's events anyway.

use std::cell::{OnceCell, RefCell};

use bytes::{Bytes, BytesMut};
use pingora_http::{RequestHeader, ResponseHeader};
use prometheus::{Counter, IntCounter};

use crate::accounting::{usage_from_json, FrameVerdict, StreamUsage};
use crate::error::GatewayError;
use crate::metrics::metrics;
use crate::metrics::series::Series;
use crate::proxy::ctx::{RequestCtx, StreamTap};
use crate::proxy::phases::Phase;
use crate::sse::SseScanner;
use crate::stream_end::is_event;

/// A passthrough JSON body is kept whole (in the usual one piece, shared with what is
/// written, not copied) up to this size; past it only its last [`JSON_TAIL`] bytes are,
/// where every provider puts usage.
const JSON_KEPT: usize = 1 << 20;
const JSON_TAIL: usize = 64 << 10;

/// A request's token and cost series, by model entry, provider, key and whether the usage
/// was estimated.
struct TokenSeries {
    input: IntCounter,
    output: IntCounter,
    cached_input: IntCounter,
    /// Made on the first priced request: an unpriced model keeps no cost series.
    cost: OnceCell<Counter>,
}

thread_local! {
    static SERIES: RefCell<Series<4, TokenSeries>> = RefCell::new(Series::default());
}

pub struct Accounting;

impl Phase for Accounting {
    fn name(&self) -> &'static str {
        "accounting"
    }

    /// Reads: the response kind, `ctx.translation` (a translated response reports usage
    /// itself). Writes: `ctx.accounting` (the stream tap, or the JSON body keeper).
    fn response_filter(
        &self,
        _resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        // A token count is free: nothing in its answer is usage.
        let count = ctx.op == Some(crate::routes::Operation::CountTokens);
        let passthrough = !ctx.response.local
            && !count
            && ctx.response.status < 400
            && ctx.translation.context.is_none();
        if !passthrough {
            return Ok(());
        }
        if ctx.response.sse {
            ctx.accounting.tap = Some(StreamTap {
                scanner: SseScanner::with_limit(ctx.snap.server.max_sse_event),
                usage: StreamUsage::new(ctx.upstream_format()),
                drop_usage_only: ctx.translation.injected_usage,
                frames: Vec::new(),
                last: None,
            });
        } else {
            ctx.accounting.json = true;
        }
        Ok(())
    }

    fn wants_response_body(&self, ctx: &RequestCtx) -> bool {
        ctx.accounting.tap.is_some() || ctx.accounting.json
    }

    /// A stream: every frame goes past the usage tap; frames pass on as zero-copy slices of
    /// what the provider sent, minus the usage-only chunk sira asked for on the client's
    /// behalf. A JSON body: kept to read its usage once complete.
    fn response_body_filter(
        &self,
        body: &mut Vec<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let format = ctx.upstream_format();
        let state = &mut ctx.accounting;
        if let Some(tap) = state.tap.as_mut() {
            let mut failure = None;
            // Most batches are one chunk, passed on as one slice of itself: only a chunk with
            // something dropped is rebuilt.
            let mut kept = body.len();
            let close_delimited = ctx.response.close_delimited;
            let shared = &mut state.shared;
            shared.clear();
            for (i, piece) in body.iter_mut().enumerate() {
                tap.frames.clear();
                let fed = tap.scanner.feed(piece.clone(), &mut tap.frames);
                state.frames += tap.frames.len() as u64;
                if close_delimited {
                    // Comments (a keep-alive after the last event) are not the last event.
                    let last = tap.frames.iter().rev().find(|f| is_event(f));
                    if let Some(frame) = last {
                        tap.last = Some(frame.clone());
                    }
                }
                // The frames completed before a failure still go on.
                *piece = forwardable(piece, &tap.frames, &mut tap.usage, tap.drop_usage_only);
                if shared.wanted {
                    shared.push(&mut tap.frames);
                }
                if let Err(e) = fed {
                    failure = Some(e);
                    kept = i + 1;
                    break;
                }
            }
            body.truncate(kept);
            if end_of_stream && failure.is_none() {
                if let Some(tail) = tap.scanner.finish() {
                    let frames = [tail.clone()];
                    if close_delimited && is_event(&tail) {
                        tap.last = Some(tail.clone());
                    }
                    // Not shared: an unterminated tail is no frame to the filters, which
                    // keep it back, as their own scanner would, when the stream ends cut.
                    let last = forwardable(&tail, &frames, &mut tap.usage, tap.drop_usage_only);
                    body.push(last);
                }
            }
            // With nothing but the connection's end to go by, only the format's last event
            // says the stream is complete.
            let cut = end_of_stream
                && close_delimited
                && tap
                    .last
                    .as_ref()
                    .is_none_or(|frame| crate::stream_end::stream_end(format, frame).is_none());
            body.retain(|piece| !piece.is_empty());
            ctx.usage = tap.usage.usage();
            ctx.usage_seen = tap.usage.seen();
            if let Some(e) = failure {
                metrics().buffer_limit(crate::metrics::Buffer::SseEvent);
                return Err(GatewayError::UpstreamBroken {
                    provider: ctx.provider_label().to_owned(),
                    reason: e.to_string(),
                });
            }
            if cut {
                return Err(GatewayError::UpstreamBroken {
                    provider: ctx.provider_label().to_owned(),
                    reason: "the stream ended before its last event".into(),
                });
            }
            return Ok(());
        }
        if state.json {
            for piece in body.iter() {
                keep(state, piece);
            }
            if end_of_stream {
                let usage = if state.tail.is_empty() {
                    usage_from_json(format, state.kept.bytes())
                } else {
                    usage_from_json(format, &state.tail)
                };
                if let Some(usage) = usage {
                    ctx.usage = usage;
                    ctx.usage_seen = true;
                }
                // A close-delimited body ends with the connection: it is whole only if it
                // parses (checked when it was kept whole, as every usual answer is).
                let whole = state.tail.is_empty();
                if ctx.response.close_delimited
                    && whole
                    && serde_json::from_slice::<serde::de::IgnoredAny>(state.kept.bytes()).is_err()
                {
                    return Err(GatewayError::UpstreamBroken {
                        provider: ctx.provider_label().to_owned(),
                        reason: "the response ended before its JSON did".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Prices the usage (`ctx.cost`) and counts tokens and spend. An answer that began but
    /// whose usage never came whole (the client left, the provider cut the stream) is
    /// settled to an estimate: the prompt's tokens (the provider's figure when it gave one)
    /// and at least one token per event delivered, marked `estimated`.
    fn logging(&self, _req: &RequestHeader, ctx: &mut RequestCtx) {
        let began = ctx.response.status != 0 && ctx.response.status < 400 && !ctx.response.local;
        let cut = (ctx.response.client_gone && !ctx.response.answer_complete)
            || ctx.response.aborted
            || ctx.error.is_some()
            || ctx.response.finish_now;
        if began && cut && ctx.response.sse {
            estimate(ctx);
        }
        if !ctx.usage_seen {
            return;
        }
        let m = metrics();
        let (model, provider, key) = (ctx.model_label(), ctx.provider_label(), ctx.key_name());
        let usage = ctx.usage;
        let estimated = if ctx.accounting.estimated {
            "true"
        } else {
            "false"
        };
        let target_pricing = ctx.upstream.pricing;
        let pricing = target_pricing.or(ctx.route.as_ref().and_then(|r| r.pricing));
        let cost = pricing.map(|p| p.cost(&usage));
        SERIES.with_borrow_mut(|series| {
            let handles = series.get([model, provider, key, estimated], |l| {
                let tokens = |kind| m.tokens.with_label_values(&[l[0], l[1], l[2], kind, l[3]]);
                TokenSeries {
                    input: tokens("input"),
                    output: tokens("output"),
                    cached_input: tokens("cached_input"),
                    cost: OnceCell::new(),
                }
            });
            handles.input.inc_by(usage.input);
            handles.output.inc_by(usage.output);
            handles.cached_input.inc_by(usage.cached_input);
            if let Some(cost) = cost {
                handles
                    .cost
                    .get_or_init(|| m.cost_usd.with_label_values(&[model, key]))
                    .inc_by(cost);
            }
        });
        if let Some(cost) = cost {
            ctx.cost = cost;
        }
    }
}

/// What a cut answer is settled to when its provider's usage never came.
fn estimate(ctx: &mut RequestCtx) {
    let input = match ctx.usage.input {
        0 => ctx.accounting.request.as_ref().map_or(0, |body| {
            crate::translate::estimate_input_tokens(ctx.format, body)
                .unwrap_or(body.len() as u64 / 4)
        }),
        given => given,
    };
    ctx.usage.input = input;
    // The provider's count so far (Anthropic reports 1 at the start) or one per event
    // delivered, whichever is more.
    // A budget cut counted the client's events (a translated stream has no provider tap).
    let watched = ctx.limits.cut.as_ref().map_or(0, |cut| cut.events());
    let delivered = ctx.accounting.frames.max(watched);
    if delivered > ctx.usage.output || !ctx.usage_seen {
        ctx.usage.output = ctx.usage.output.max(delivered);
        ctx.accounting.estimated = true;
    }
    ctx.usage_seen = true;
}

/// Keeps a passthrough JSON body for its usage: whole while small, else its tail.
fn keep(state: &mut crate::proxy::ctx::AccountingState, piece: &Bytes) {
    if state.tail.is_empty() && state.kept.len() + piece.len() <= JSON_KEPT {
        state.kept.push(piece.clone());
        return;
    }
    if state.tail.is_empty() {
        let kept = std::mem::take(&mut state.kept);
        state.tail.extend_from_slice(kept.bytes());
    }
    // A piece longer than the window replaces it: only its end is copied.
    let from = piece.len().saturating_sub(JSON_TAIL);
    if from > 0 {
        state.tail.clear();
    }
    state.tail.extend_from_slice(&piece[from..]);
    if state.tail.len() > 2 * JSON_TAIL {
        let excess = state.tail.len() - JSON_TAIL;
        let _ = state.tail.split_to(excess);
    }
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
    // Dropping is rare (one chunk per stream at most), so nothing is collected unless a
    // frame is dropped: from then on the kept frames are copied into a new buffer.
    let mut rebuilt: Option<BytesMut> = None;
    for (i, frame) in frames.iter().enumerate() {
        let verdict = tap.observe(frame);
        let dropped = drop_usage_only && verdict == FrameVerdict::UsageOnly;
        match (&mut rebuilt, dropped) {
            (None, false) | (Some(_), true) => {}
            (None, true) => {
                let mut kept = BytesMut::with_capacity(chunk.len());
                for earlier in &frames[..i] {
                    kept.extend_from_slice(earlier);
                }
                rebuilt = Some(kept);
            }
            (Some(kept), false) => kept.extend_from_slice(frame),
        }
    }
    match rebuilt {
        Some(kept) => kept.freeze(),
        None => joined(chunk, frames),
    }
}

/// `frames` as one buffer: a zero-copy slice of `chunk` when they lie contiguously in it;
/// only frames completed from an earlier read's tail make new bytes.
fn joined(chunk: &Bytes, frames: &[Bytes]) -> Bytes {
    match frames {
        [] => Bytes::new(),
        [one] => one.clone(),
        [first, .., last] => {
            let base = chunk.as_ptr() as usize;
            let start = first.as_ptr() as usize;
            let end = last.as_ptr() as usize + last.len();
            let inside = start >= base && end <= base + chunk.len();
            let contiguous = frames
                .windows(2)
                .all(|w| w[0].as_ptr() as usize + w[0].len() == w[1].as_ptr() as usize);
            if inside && contiguous {
                chunk.slice(start - base..end - base)
            } else {
                let mut joined = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
                for frame in frames {
                    joined.extend_from_slice(frame);
                }
                joined.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;

    fn frames_of(chunk: &Bytes) -> Vec<Bytes> {
        let mut scanner = SseScanner::new();
        let mut frames = Vec::new();
        scanner.feed(chunk.clone(), &mut frames).unwrap();
        frames
    }

    #[test]
    fn forwards_whole_chunks_without_copying() {
        let chunk = Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n");
        let frames = frames_of(&chunk);
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
        let frames = frames_of(&chunk);
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
    fn a_large_json_body_keeps_only_its_tail() {
        let mut state = crate::proxy::ctx::AccountingState::default();
        let filler = Bytes::from(vec![b' '; 256 << 10]);
        for _ in 0..8 {
            keep(&mut state, &filler);
        }
        keep(
            &mut state,
            &Bytes::from_static(br#"{"usage":{"prompt_tokens":5,"completion_tokens":6}}"#),
        );
        assert!(state.kept.is_empty());
        assert!(!state.tail.is_empty());
        assert!(state.tail.len() <= 2 * JSON_TAIL, "{}", state.tail.len());
        let usage = usage_from_json(Format::OpenAiChat, &state.tail).unwrap();
        assert_eq!((usage.input, usage.output), (5, 6));
    }
}
