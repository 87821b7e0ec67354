//! Relaying SSE streams: passthrough (the provider's frames, zero-copy, with a usage tap)
//! or translated (a per-stream state machine emitting the client's events).
//!
//! Events are written as soon as they are complete, each write flushed (chunked encoding
//! flushes every chunk); a stream is never buffered whole. If the client goes away the loop
//! stops at once, and dropping the upstream session closes the provider connection, so the
//! provider stops generating (and billing) promptly.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;

use super::ctx::RequestCtx;
use super::relay::{next_chunk, ready_chunk, write, write_all, Read};
use super::upstream::Upstream;
use super::Gateway;
use crate::accounting::{FrameVerdict, StreamUsage};
use crate::error::{render_error, Category, GatewayError};
use crate::format::Format;
use crate::metrics::StreamGuard;
use crate::sse::SseScanner;
use crate::translate::{ResponseContext, ResponseOptions, StreamTranslator};
use crate::usage::Usage;

/// Upper bound of provider bytes gathered into one client write.
const MAX_BATCH: usize = 64 << 10;

/// Turns provider bytes into client bytes for one stream.
enum Pipe {
    Passthrough {
        scanner: SseScanner,
        tap: StreamUsage,
        frames: Vec<Bytes>,
        drop_usage_only: bool,
    },
    Translate {
        translator: Box<StreamTranslator>,
        out: BytesMut,
    },
}

impl Pipe {
    fn new(ctx: &RequestCtx, upstream: &Upstream, translation: Option<ResponseContext>) -> Pipe {
        match translation {
            None => Pipe::Passthrough {
                scanner: SseScanner::new(),
                tap: StreamUsage::new(upstream.format),
                frames: Vec::new(),
                drop_usage_only: upstream.injected_usage,
            },
            Some(context) => Pipe::Translate {
                translator: Box::new(StreamTranslator::with_context(
                    upstream.format,
                    ctx.format,
                    response_options(ctx),
                    context,
                )),
                out: BytesMut::new(),
            },
        }
    }

    /// Turns one provider chunk into client bytes. Passthrough frames go to `pieces` at once
    /// (zero-copy slices of the chunk); translated events accumulate in one buffer until
    /// [`Pipe::seal`], so a batch goes to Pingora as one piece (each piece costs a task in
    /// its write path: one buffer per chunk measured 6 % more instructions per stream).
    fn push(&mut self, chunk: Bytes, pieces: &mut Vec<Bytes>) -> Result<(), String> {
        match self {
            Pipe::Passthrough {
                scanner,
                tap,
                frames,
                drop_usage_only,
            } => {
                frames.clear();
                scanner.feed(chunk.clone(), frames);
                let data = forwardable(&chunk, frames, tap, *drop_usage_only);
                if !data.is_empty() {
                    pieces.push(data);
                }
                Ok(())
            }
            Pipe::Translate { translator, out } => {
                // Client events are about twice the size of the provider's (ids and model
                // names repeated in every OpenAI chunk): one reservation per chunk rather than
                // growth event by event. Once the previous batch has been written its buffer
                // is ours alone again and is reused.
                out.reserve(2 * chunk.len() + 256);
                translator
                    .feed(chunk, out)
                    .map_err(|e| format!("cannot translate the provider's stream: {e}"))
            }
        }
    }

    /// Moves what [`Pipe::push`] translated so far into `pieces`.
    fn seal(&mut self, pieces: &mut Vec<Bytes>) {
        if let Pipe::Translate { out, .. } = self {
            if !out.is_empty() {
                pieces.push(out.split().freeze());
            }
        }
    }

    /// The client bytes that close the stream once the provider ended it.
    fn end(&mut self) -> Bytes {
        match self {
            Pipe::Passthrough {
                scanner,
                tap,
                drop_usage_only,
                ..
            } => match scanner.finish() {
                Some(tail) => {
                    let tail_frames = [tail.clone()];
                    forwardable(&tail, &tail_frames, tap, *drop_usage_only)
                }
                None => Bytes::new(),
            },
            Pipe::Translate { translator, out } => {
                translator.finish(out);
                out.split().freeze()
            }
        }
    }

    /// The client's error event, when the provider stream broke.
    fn fail(&mut self, client: Format, reason: &str) -> Bytes {
        match self {
            Pipe::Passthrough { .. } => stream_error_event(client, reason),
            Pipe::Translate { translator, out } => {
                translator.error_event(&format!("upstream stream failed: {reason}"), out);
                out.split().freeze()
            }
        }
    }

    /// Usage so far, and whether the provider reported any.
    fn usage(&self) -> (Usage, bool) {
        match self {
            Pipe::Passthrough { tap, .. } => (tap.usage(), tap.seen()),
            Pipe::Translate { translator, .. } => {
                let usage = translator.usage();
                (usage, !usage.is_zero())
            }
        }
    }
}

/// What response translators need to fill in fields the provider may not send.
pub fn response_options(ctx: &RequestCtx) -> ResponseOptions {
    ResponseOptions {
        model: ctx.upstream_model.clone().unwrap_or_default(),
        request_id: ctx.id.to_str().unwrap_or("req").to_owned(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Relays a stream to its end, the client's departure or the provider's failure.
pub async fn relay_stream(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    upstream: &mut Upstream,
    out: ResponseHeader,
    translation: Option<ResponseContext>,
) -> Result<(), GatewayError> {
    let _guard = StreamGuard::open();
    ctx.stream = true;
    if session.write_response_header(Box::new(out)).await.is_err() {
        ctx.client_gone = true;
        return Ok(());
    }
    let mut pipe = Pipe::new(ctx, upstream, translation);
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut pending: Option<Read> = None;
    loop {
        let read = match pending.take() {
            Some(read) => read,
            None => next_chunk(gw, session, ctx, upstream).await,
        };
        let failure = match read {
            Read::Chunk(chunk) => {
                let mut failure = None;
                let mut batched = 0;
                let mut next = Some(Read::Chunk(chunk));
                // Everything that has already arrived goes out in this write; what has not
                // arrived is never waited for.
                loop {
                    let chunk = match next.take() {
                        Some(Read::Chunk(chunk)) => chunk,
                        other => {
                            pending = other;
                            break;
                        }
                    };
                    batched += chunk.len();
                    if let Err(reason) = pipe.push(chunk, &mut pieces) {
                        failure = Some(reason);
                        break;
                    }
                    if batched >= MAX_BATCH {
                        break;
                    }
                    next = ready_chunk(gw, upstream).await;
                }
                pipe.seal(&mut pieces);
                if !write_all(session, ctx, &mut pieces).await {
                    break;
                }
                match failure {
                    Some(reason) => reason,
                    None => continue,
                }
            }
            Read::End => {
                let data = pipe.end();
                if data.is_empty() || write(session, ctx, data, false).await {
                    write(session, ctx, Bytes::new(), true).await;
                }
                break;
            }
            Read::ClientGone => break,
            Read::Failed(reason) => reason,
        };
        // The status line is sent: end the stream with the surface's error event.
        let event = pipe.fail(ctx.format, &failure);
        ctx.error = Some(GatewayError::UpstreamBroken {
            provider: upstream.provider.name.to_string(),
            reason: failure,
        });
        if write(session, ctx, event, false).await {
            write(session, ctx, Bytes::new(), true).await;
        }
        break;
    }
    (ctx.usage, ctx.usage_seen) = pipe.usage();
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
