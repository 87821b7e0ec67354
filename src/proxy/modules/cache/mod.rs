//! The response cache on the request path ([`crate::cache`]): a request whose exact twin
//! was answered is answered again without a provider (`x-sira-cache: hit`); one whose twin
//! is being answered right now waits for that answer or follows its stream; any other is a
//! miss, which keeps its answer once it is complete. Twins are told by the request the
//! provider would get ([`view`]), so they may be of different client formats: an answer
//! kept in the provider's own format is translated for each ([`prepare`]); one kept in
//! another client's format serves only that format ([`pass_over`]).
//!
//! What is cacheable: Chat Completions, Messages, Gemini `generateContent` (streamed or
//! not), embeddings, and Responses requests that keep no state (`store: false`, no
//! `previous_response_id`). A client's `cache-control: no-cache` skips the lookup and
//! `no-store` skips the cache altogether (`x-sira-cache: bypass`).

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::cache::{key, Entry, Joined, KeyParts, ResponseCache, Role};
use crate::config::cache::Pace;
use crate::error::GatewayError;
use crate::format::Format;
use crate::metrics::metrics;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::downstream::join;
use crate::proxy::phases::{Flow, Phase, RequestBody};
use crate::routes::Operation;
use crate::translate::{translate_request, translate_response_with, RequestOptions};

mod view;

pub const X_SIRA_CACHE: &str = "x-sira-cache";

/// Request headers passed to providers that change what they answer.
// Names made once: a lookup by `&str` parses the name on every request.
static VARIANT_HEADERS: [http::HeaderName; 3] = [
    http::HeaderName::from_static("anthropic-beta"),
    http::HeaderName::from_static("anthropic-version"),
    http::HeaderName::from_static("openai-beta"),
];

pub struct ResponseCacheModule;

impl Phase for ResponseCacheModule {
    fn name(&self) -> &'static str {
        "cache"
    }

    /// Reads the client's `cache-control` (and HTTP/1.0 `pragma`).
    fn request_filter(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        if ctx.snap.cache.is_none() {
            return Ok(Flow::Continue);
        }
        // One pass over the fields says whether any variant header is there: looking each
        // up hashes its name, on every request, and most requests have none.
        let varies = req
            .headers
            .keys()
            .any(|name| VARIANT_HEADERS.contains(name));
        for name in VARIANT_HEADERS.iter().filter(|_| varies) {
            for value in req.headers.get_all(name) {
                ctx.cache.variant.push_str(name.as_str());
                ctx.cache.variant.push(':');
                ctx.cache
                    .variant
                    .push_str(&String::from_utf8_lossy(value.as_bytes()));
                ctx.cache.variant.push('\n');
            }
        }
        for value in req
            .headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .chain(req.headers.get_all(http::header::PRAGMA))
        {
            let Ok(text) = value.to_str() else { continue };
            for directive in text.split(',').map(str::trim) {
                if directive.eq_ignore_ascii_case("no-store") {
                    ctx.cache.no_store = true;
                    ctx.cache.no_lookup = true;
                } else if directive.eq_ignore_ascii_case("no-cache") {
                    ctx.cache.no_lookup = true;
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Reads: `ctx.entry`, `ctx.op`, `ctx.stream`, the caller, the body as the provider's
    /// side will get it. Writes: `ctx.cache`.
    fn request_body_filter(
        &self,
        body: &mut RequestBody,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        if ctx.snap.cache.is_none() {
            return Ok(Flow::Continue);
        }
        let snap = ctx.snap.clone();
        let Some(section) = &snap.cache else {
            return Ok(Flow::Continue);
        };
        let Some(entry) = ctx.entry.clone() else {
            return Ok(Flow::Continue);
        };
        if entry.cache.off {
            return Ok(Flow::Continue);
        }
        let Some(operation) = cacheable(ctx.op, body) else {
            return Ok(Flow::Continue);
        };
        if ctx.cache.no_store {
            ctx.cache.result = Some("bypass");
            return Ok(Flow::Continue);
        }
        let scope = scope(ctx, entry.cache.shared.unwrap_or(section.shared));
        let Some(view) = view::key_view(ctx, &entry, operation, body) else {
            return Ok(Flow::Continue);
        };
        ctx.cache.shared_format = view.provider;
        let parts = KeyParts {
            scope: &scope,
            class: &view.class,
            operation: view.operation,
            stream: ctx.stream,
            entry: &entry.name,
            model: ctx.model.as_deref().unwrap_or_default(),
            target: ctx.route_choice.as_deref().unwrap_or_default(),
            variant: &view.variant,
        };
        let key = key(&parts, &view.fields);
        ctx.cache.key = Some(key);
        ctx.cache.ttl = entry.cache.ttl;
        ctx.cache.paced = entry.cache.replay.unwrap_or(section.replay) == Pace::Original;
        if ctx.cache.no_lookup {
            ctx.cache.result = Some("bypass");
            return Ok(Flow::Continue);
        }
        Ok(look_up(section.cache.clone(), key, ctx, body))
    }

    /// `x-sira-cache`; and, for an answer to keep, the gathering of its body.
    fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let Some(result) = ctx.cache.result else {
            return Ok(());
        };
        let shown = if result == "coalesced" { "hit" } else { result };
        resp.insert_header(X_SIRA_CACHE, HeaderValue::from_static(shown))
            .map_err(super::header_error)?;
        let keep = ctx.cache.key.is_some()
            && !ctx.cache.no_store
            && !ctx.response.local
            && ctx.response.status == 200;
        if keep {
            ctx.cache.collect = true;
            if let Some(lead) = &ctx.cache.lead {
                let model = ctx.upstream.model.clone().unwrap_or_default();
                lead.flight
                    .start(ctx.response.sse, ctx.provider_label().into(), model);
            }
        } else if !ctx.response.replay {
            // Nothing to publish: whoever waits on this request goes to the provider.
            ctx.cache.lead = None;
        }
        Ok(())
    }

    fn wants_response_body(&self, ctx: &RequestCtx) -> bool {
        ctx.cache.collect
    }

    /// Gathers the answer (shared pieces, no copy), and publishes it to the requests that
    /// follow this one; past `cache.max_entry` it is neither kept nor followed.
    fn response_body_filter(
        &self,
        body: &mut Vec<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if !ctx.cache.collect {
            return Ok(());
        }
        // A stream a budget cut short ends with sira's finish, not the provider's: neither
        // kept nor shared.
        if ctx.response.finish_now {
            ctx.cache.collect = false;
            ctx.cache.pieces = Vec::new();
            ctx.cache.lead = None;
            return Ok(());
        }
        let max = ctx.snap.cache.as_ref().map_or(0, |s| s.cache.max_entry);
        ctx.cache.size += body.iter().map(bytes::Bytes::len).sum::<usize>();
        if ctx.cache.size > max {
            ctx.cache.collect = false;
            ctx.cache.pieces = Vec::new();
            ctx.cache.lead = None;
            return Ok(());
        }
        if ctx.response.sse && !body.is_empty() {
            let first = *ctx
                .cache
                .first_piece
                .get_or_insert_with(std::time::Instant::now);
            let after_ms = u64::try_from(first.elapsed().as_millis()).unwrap_or(u64::MAX);
            let offset = ctx.cache.size - body.iter().map(bytes::Bytes::len).sum::<usize>();
            crate::cache::mark(&mut ctx.cache.marks, offset, after_ms);
        }
        ctx.cache.pieces.extend(body.iter().cloned());
        if let Some(lead) = &ctx.cache.lead {
            lead.flight.push(body, max);
        }
        if end_of_stream {
            ctx.cache.complete = true;
        }
        Ok(())
    }

    /// Keeps a complete answer (with its usage, settled by now), finishes the flight, and
    /// counts what a replay saved.
    fn logging(&self, _req: &RequestHeader, ctx: &mut RequestCtx) {
        let Some(result) = ctx.cache.result else {
            return;
        };
        let m = metrics();
        m.cache_requests.with_label_values(&[result]).inc();
        if let Some(saved) = ctx.cache.saved {
            let labels = |kind| [ctx.model_label(), ctx.key_name(), kind];
            m.cache_saved_tokens
                .with_label_values(&labels("input"))
                .inc_by(saved.input);
            m.cache_saved_tokens
                .with_label_values(&labels("output"))
                .inc_by(saved.output);
        }
        let lead = ctx.cache.lead.take();
        // Ended by the provider's own successful end: a stream that carried an error
        // event or ended without its format's last event is not an answer to replay.
        let keep = ctx.cache.complete
            && ctx.error.is_none()
            && !ctx.response.aborted
            && !ctx.limits.estimated
            && !ctx.accounting.estimated
            && (!ctx.response.sse || stream_succeeded(ctx.format, &ctx.cache.pieces));
        let (Some(key), Some(section)) = (ctx.cache.key, ctx.snap.cache.as_ref()) else {
            return;
        };
        if !keep {
            return;
        }
        let entry = Entry {
            format: ctx.format,
            sse: ctx.response.sse,
            body: join(&mut std::mem::take(&mut ctx.cache.pieces)),
            provider: ctx.provider_label().to_owned(),
            upstream_model: ctx.upstream.model.clone().unwrap_or_default(),
            usage: ctx.usage,
            ttl: std::time::Duration::ZERO,
            pace: std::mem::take(&mut ctx.cache.marks).into(),
        };
        let entry = section.cache.put(key, entry, ctx.cache.ttl);
        m.cache_requests.with_label_values(&["store"]).inc();
        if let Some(lead) = lead {
            lead.finish(entry);
        }
    }
}

/// The operation's name in the key, when its answers may be cached.
fn cacheable(op: Option<Operation>, body: &RequestBody) -> Option<&'static str> {
    match op? {
        Operation::ChatCompletions => Some("chat"),
        Operation::Messages => Some("messages"),
        Operation::GenerateContent { .. } => Some("generate"),
        Operation::Embeddings => Some("embeddings"),
        // A stored response has an id of its own, and a continued one depends on the
        // store: only stateless requests are the same request twice (a background
        // response is always stored).
        Operation::Responses => {
            let stateless =
                body.peek.store == Some(false) && body.peek.previous_response_id.is_none();
            stateless.then_some("responses")
        }
        _ => None,
    }
}

/// Who shares an answer: everyone (`shared`), the caller's tenant, or the caller alone. A
/// caller whose key or tenant has filters never shares beyond them, `shared` or not: its
/// requests are edited in ways the others' are not, some after the cache key is taken (on
/// the provider's side), so its answers are not theirs.
fn scope(ctx: &RequestCtx, shared: bool) -> String {
    let Some(principal) = &ctx.principal else {
        return if shared { "*".into() } else { "-".into() };
    };
    let tenant = principal.tenant();
    if let crate::auth::Principal::Key(key) = principal {
        if !key.filters.is_empty() {
            return key.cache_scope();
        }
    }
    match tenant {
        Some(tenant) if !tenant.filters.is_empty() => format!("tenant:{}", tenant.name),
        _ if shared => "*".into(),
        Some(tenant) => format!("tenant:{}", tenant.name),
        None => match principal {
            crate::auth::Principal::Key(key) => key.cache_scope(),
            other => other.owner().into_owned(),
        },
    }
}

/// Whether a stream, as the client got it, ended with its format's successful last event
/// and carried no error event. Every frame is read by structure (`crate::stream_end`): an
/// error event anywhere (a compatible server's error chunk before its `[DONE]`) keeps the
/// stream out, and a model's text naming an end or an error neither makes a cut stream an
/// answer to keep nor keeps a whole one out. (The stream is already bounded by what the
/// cache keeps, so its frames are too.)
fn stream_succeeded(format: crate::format::Format, pieces: &[bytes::Bytes]) -> bool {
    use crate::stream_end::{is_event, stream_end, StreamEnd};
    let mut scanner = crate::sse::SseScanner::new();
    // Read piece by piece: a stream of blank lines is as many frames, never all held.
    let mut frames = Vec::new();
    let mut last = None;
    for piece in pieces {
        // Without a limit the scanner takes every chunk.
        let _ = scanner.feed(piece.clone(), &mut frames);
        for frame in frames.drain(..).filter(|f| is_event(f)) {
            if stream_end(format, &frame) == Some(StreamEnd::Failed) {
                return false;
            }
            last = Some(frame);
        }
    }
    // What follows the last blank line: an event without its end (cut, or Gemini's bare
    // error object) is no answer to keep.
    if scanner.finish().is_some_and(|tail| is_event(&tail)) {
        return false;
    }
    last.is_some_and(|frame| crate::stream_end::whole_answer(format, &frame))
}

/// The answer kept for `key` (memory, then Redis), or a flight to lead or follow.
fn look_up(
    cache: Arc<ResponseCache>,
    key: crate::cache::Key,
    ctx: &mut RequestCtx,
    body: &RequestBody,
) -> Flow {
    if let Some(hit) = cache.get_local(&key) {
        return replay(cache, key, ctx, body, hit, "hit");
    }
    if !cache.has_remote() {
        return fly(cache, key, ctx);
    }
    Flow::Wait(Box::pin(async move {
        let found = cache.get_remote(&key).await;
        Ok(Flow::Apply(Box::new(move |body, ctx| {
            Ok(match found {
                Some(hit) => replay(cache, key, ctx, body, hit, "hit"),
                None => fly(cache, key, ctx),
            })
        })))
    }))
}

/// Answers with `entry`, reported as the provider and model that made it, in this
/// client's format ([`prepare`]). An entry this client cannot be answered from is passed
/// over ([`pass_over`]).
fn replay(
    cache: Arc<ResponseCache>,
    key: crate::cache::Key,
    ctx: &mut RequestCtx,
    body: &RequestBody,
    entry: Arc<Entry>,
    result: &'static str,
) -> Flow {
    match prepare(ctx, body, entry) {
        Some(entry) => {
            ctx.cache.result = Some(result);
            ctx.cache.saved = Some(entry.usage);
            Flow::Replay(crate::cache::Replay::Stored(entry))
        }
        None => pass_over(cache, key, ctx, body),
    }
}

/// `entry` as this client's answer: as it is when kept in this client's format; translated
/// when kept in the provider's (a JSON body at once, here, so that a body that does not
/// translate is known before anything is sent; a stream as it is written). `None` when it
/// was kept in another client's format (translated once already: a second translation
/// would lose what the first did not carry) or does not translate.
fn prepare(ctx: &mut RequestCtx, body: &RequestBody, entry: Arc<Entry>) -> Option<Arc<Entry>> {
    ctx.upstream.model = Some(entry.upstream_model.clone());
    ctx.upstream.provider = ctx.snap.providers.get(entry.provider.as_str()).cloned();
    if !convert_from(ctx, body, entry.format) {
        return None;
    }
    if entry.sse {
        return Some(entry);
    }
    let Some((from, context)) = ctx.cache.convert.take() else {
        return Some(entry);
    };
    let options = crate::proxy::modules::response_options(ctx);
    let translated =
        translate_response_with(from, ctx.format, &entry.body, &options, &context).ok()?;
    Some(Arc::new(Entry {
        format: ctx.format,
        sse: false,
        body: Bytes::from(translated.body),
        provider: entry.provider.clone(),
        upstream_model: entry.upstream_model.clone(),
        usage: entry.usage,
        ttl: entry.ttl,
        pace: entry.pace.clone(),
    }))
}

/// An answer (kept or under way) this client cannot be given. A client of the provider's
/// own format leads a new flight, whose answer replaces the entry. A client of another
/// format is looked up again under a key of its own format (the same request, answered in
/// that format), so that its identical requests still share one answer among themselves.
/// Past that, it goes to the provider alone.
fn pass_over(
    cache: Arc<ResponseCache>,
    key: crate::cache::Key,
    ctx: &mut RequestCtx,
    body: &RequestBody,
) -> Flow {
    forget_source(ctx);
    match ctx.cache.shared_format {
        Some(provider) if provider == ctx.format => fly(cache, key, ctx),
        Some(_) => {
            ctx.cache.shared_format = None;
            let own = crate::cache::in_format(&key, ctx.format.as_str());
            ctx.cache.key = Some(own);
            look_up(cache, own, ctx, body)
        }
        None => alone(ctx),
    }
}

/// To the provider, with nothing shared or kept.
fn alone(ctx: &mut RequestCtx) -> Flow {
    forget_source(ctx);
    ctx.cache.result = Some("miss");
    ctx.cache.key = None;
    Flow::Continue
}

/// What a passed-over answer said of itself, which must not name this request's provider.
fn forget_source(ctx: &mut RequestCtx) {
    ctx.upstream.model = None;
    ctx.upstream.provider = None;
    ctx.cache.convert = None;
}

/// A miss: lead the identical requests that come while this one is answered, or follow
/// the one already under way.
fn fly(cache: Arc<ResponseCache>, key: crate::cache::Key, ctx: &mut RequestCtx) -> Flow {
    match cache.fly(key, ctx.format) {
        Role::Lead(lead) => {
            ctx.cache.result = Some("miss");
            ctx.cache.lead = Some(lead);
            Flow::Continue
        }
        Role::Follow(flight) => Flow::Wait(Box::pin(async move {
            let following = flight.follow();
            let joined = flight.join().await;
            Ok(Flow::Apply(Box::new(move |body, ctx| {
                Ok(match joined {
                    Joined::Done(entry) => replay(cache, key, ctx, body, entry, "coalesced"),
                    Joined::Stream => {
                        if let Some((provider, model)) = flight.made_by() {
                            ctx.upstream.provider = ctx.snap.providers.get(&*provider).cloned();
                            ctx.upstream.model = Some(model);
                        }
                        if convert_from(ctx, body, flight.format) {
                            ctx.cache.result = Some("coalesced");
                            Flow::Replay(crate::cache::Replay::Follow(following))
                        } else {
                            drop(following);
                            pass_over(cache, key, ctx, body)
                        }
                    }
                    // Its answer will not be shared: one of those waiting leads the next try.
                    Joined::Failed => fly(cache, key, ctx),
                })
            })))
        })),
    }
}

/// Prepares the replay of an answer kept in `from`'s format: `false` when this client
/// cannot be answered from it. An answer in this client's format is replayed as it is;
/// one in the provider's format (the key's view) is translated as a provider's answer
/// is, told by this client's request how to write it (usage chunk, tool names).
fn convert_from(ctx: &mut RequestCtx, body: &RequestBody, from: Format) -> bool {
    ctx.cache.convert = None;
    if from == ctx.format {
        return true;
    }
    if ctx.cache.shared_format != Some(from) {
        return false;
    }
    let route = ctx.entry.clone();
    let model = ctx.upstream.model.clone().unwrap_or_default();
    let translated = translate_request(
        ctx.format,
        from,
        &body.bytes,
        &RequestOptions {
            model: &model,
            stream: ctx.stream,
            default_max_tokens: route
                .as_ref()
                .map_or(crate::models::DEFAULT_MAX_TOKENS, |r| r.default_max_tokens),
            legacy_max_tokens: false,
            prompt_cache: false,
            web_search: false,
            seal: &ctx.snap.seal,
        },
    );
    match translated {
        Ok(translated) => {
            ctx.cache.convert = Some((from, translated.context));
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::stream_succeeded;
    use crate::format::Format;
    use bytes::Bytes;

    fn pieces(stream: &[u8], size: usize) -> Vec<Bytes> {
        stream.chunks(size).map(Bytes::copy_from_slice).collect()
    }

    fn kept(format: Format, stream: &str) -> bool {
        let whole = stream_succeeded(format, &pieces(stream.as_bytes(), stream.len().max(1)));
        for size in [1, 7, 100] {
            assert_eq!(
                stream_succeeded(format, &pieces(stream.as_bytes(), size)),
                whole
            );
        }
        whole
    }

    #[test]
    fn every_recorded_answer_is_kept_and_no_recorded_failure() {
        let recorded = crate::format::recorded("sse");
        for (name, format, stream) in &recorded {
            let answer =
                !(name.contains("error") || name.contains("failed") || name.contains("incomplete"));
            let stream = std::str::from_utf8(stream).unwrap();
            assert_eq!(kept(*format, stream), answer, "{name}");
        }
        assert!(recorded.len() >= 30, "{}", recorded.len());
    }

    #[test]
    fn an_error_chunk_before_the_end_keeps_a_stream_out_and_text_naming_one_does_not() {
        let vllm = "data: {\"object\":\"error\",\"message\":\"x\"}\n\ndata: [DONE]\n\n";
        assert!(!kept(Format::OpenAiChat, vllm));
        let text =
            "data: {\"choices\":[{\"delta\":{\"content\":\"event: error response.failed\"}}]}\n\n\
                    data: [DONE]\n\n";
        assert!(kept(Format::OpenAiChat, text));
        assert!(!kept(Format::OpenAiChat, "data: {\"choices\":[]}\n\n"));
        // A last event without its blank line may have been cut.
        assert!(!kept(Format::OpenAiChat, "data: {}\n\ndata: [DONE]"));
        // Chat-compatible servers' other spellings of an error event.
        for error in [
            "event: error\ndata: {\"message\":\"x\"}",
            "data: {\"type\":\"error\"}",
        ] {
            let stream = format!("data: {{}}\n\n{error}\n\ndata: [DONE]\n\n");
            assert!(!kept(Format::OpenAiChat, &stream), "{stream}");
        }
    }

    #[test]
    fn a_last_event_of_any_size_is_read() {
        let grounded = format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{}\"}}]}},\"finishReason\":\"STOP\"}}]}}\n\n",
            "x".repeat(20 << 10)
        );
        assert!(kept(Format::Gemini, &grounded));
    }
}
