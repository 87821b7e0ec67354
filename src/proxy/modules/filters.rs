//! The operator's filters (`filters:` in the config, `lua-free-filters`), attached to the
//! caller's key and to the model entry, run in the chain like any other module.
//!
//! They sit twice in the chain: on the client's side of translation (request bodies in the
//! client's format, response headers, whole answers and stream events as the client gets
//! them) and on the provider's side (the upstream request's headers, and request bodies in
//! the provider's format for filters set `at: provider`), so that each hook sees the format
//! it is documented to see. Filters run after routing: they edit a request, they do not
//! choose where it goes.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use lua_free_filters::{Filter, FilterError, HeaderEdit, Side as FilterSide};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::auth::Principal;
use crate::error::GatewayError;
use crate::metrics::metrics;
use crate::proxy::body;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::downstream::join;
use crate::proxy::phases::{Flow, Phase, RequestBody, UpstreamRequest};
use crate::routes::Operation;
use crate::sse::SseScanner;

pub struct OperatorFilters {
    side: FilterSide,
}

impl OperatorFilters {
    pub fn client_side() -> OperatorFilters {
        OperatorFilters {
            side: FilterSide::Client,
        }
    }

    pub fn provider_side() -> OperatorFilters {
        OperatorFilters {
            side: FilterSide::Provider,
        }
    }
}

impl Phase for OperatorFilters {
    fn name(&self) -> &'static str {
        match self.side {
            FilterSide::Client => "filters-client",
            FilterSide::Provider => "filters-provider",
        }
    }

    /// Client side: the caller's address, against its key's and tenant's address filters
    /// (a model's are known with the body), before anything is answered (`GET /v1/models`
    /// included).
    fn request_filter(
        &self,
        _req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        if self.side == FilterSide::Client {
            check_client(ctx)?;
        }
        Ok(Flow::Continue)
    }

    /// Client side: the request body in the client's format. Reads: `ctx.principal`,
    /// `ctx.entry` (set by routing). An edited body is peeked again, and `ctx.stream`
    /// follows it.
    fn request_body_filter(
        &self,
        body: &mut RequestBody,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        if self.side != FilterSide::Client {
            return Ok(Flow::Continue);
        }
        check_client(ctx)?;
        if !attached(ctx).any(|f| f.webhook().is_some()) {
            let mut memo = std::mem::take(&mut ctx.filters.memo);
            let edited = edit_request(attached(ctx), self.side, &body.bytes, &mut memo);
            ctx.filters.memo = memo;
            apply_edit(edited, body, ctx)?;
            return Ok(Flow::Continue);
        }
        // A guardrail is waited for where it stands in the list: the filters before it edit
        // what it is asked about, the ones after it edit what it answered.
        let filters: Arc<[Arc<dyn Filter>]> = attached(ctx).cloned().collect();
        run_from(filters, 0, body, ctx)
    }

    /// Provider side: the upstream request's headers after the provider's own were set, and
    /// its body in the provider's format.
    fn upstream_request_filter(
        &self,
        upstream: &mut UpstreamRequest<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if self.side != FilterSide::Provider {
            return Ok(());
        }
        let mut edit = RequestEdit(&mut upstream.headers);
        for filter in attached(ctx) {
            filter.on_upstream_request(&mut edit);
        }
        let mut memo = std::mem::take(&mut ctx.filters.memo);
        let edited = edit_request(attached(ctx), self.side, &upstream.body, &mut memo);
        ctx.filters.memo = memo;
        if let Some(edited) = counted(edited, ctx)? {
            upstream.body = edited.bytes;
        }
        Ok(())
    }

    /// Client side: the response header as the client will receive it; and, for filters
    /// that edit responses, their per-stream states (`ctx.filters.streams`) or the request
    /// for the whole answer (`ctx.response.whole`).
    fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if self.side != FilterSide::Client {
            return Ok(());
        }
        let mut edit = ResponseEdit(resp);
        for filter in attached(ctx) {
            filter.on_client_response(&mut edit);
        }
        let editing = (!ctx.response.local || ctx.response.replay)
            && ctx.response.status < 400
            && attached(ctx).any(|f| f.edits_response_body());
        if !editing {
            return Ok(());
        }
        if ctx.response.sse {
            let memo = &ctx.filters.memo;
            let streams: Vec<_> = attached(ctx).filter_map(|f| f.on_stream(memo)).collect();
            if !streams.is_empty() {
                // The events are the client's: a translated Responses stream ends with one
                // that repeats the whole answer, bounded by max_response_body instead.
                let server = &ctx.snap.server;
                let limit = server.max_sse_event.max(server.max_response_body);
                ctx.filters.scanner = Some(SseScanner::with_limit(limit));
                ctx.filters.streams = streams;
                // Untranslated, the client's events are the provider's frames.
                ctx.accounting.shared.wanted = ctx.upstream_format() == ctx.format;
            }
        } else {
            ctx.filters.json = true;
            ctx.response.whole = true;
        }
        Ok(())
    }

    fn wants_response_body(&self, ctx: &RequestCtx) -> bool {
        self.side == FilterSide::Client && (ctx.filters.json || !ctx.filters.streams.is_empty())
    }

    /// A whole answer through each filter's `on_response_body`; a stream, event by event,
    /// through each filter's stream state in turn.
    fn response_body_filter(
        &self,
        body: &mut Vec<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if ctx.filters.json {
            if !end_of_stream {
                return Ok(());
            }
            let mut whole = join(body);
            for filter in attached(ctx).filter(|f| f.edits_response_body()) {
                let edited = filter
                    .on_response_body(&whole, &ctx.filters.memo)
                    .map_err(response_error)?;
                if let Some(edited) = edited {
                    whole = Bytes::from(edited);
                }
            }
            body.push(whole);
            return Ok(());
        }
        let state = &mut ctx.filters;
        let Some(scanner) = state.scanner.as_mut() else {
            return Ok(());
        };
        // A failure ends the stream, but what was scanned and filtered before it still
        // reaches the client, ahead of the error event.
        let mut too_large = None;
        let mut failure = None;
        let mut events = Vec::new();
        // With nothing of an earlier batch pending, the frames accounting cut these very
        // bytes into are the events the scanner would find.
        if scanner.pending() == 0 {
            if let Some(frames) = ctx.accounting.shared.take_for(body) {
                events = frames;
                body.clear();
            }
        }
        for piece in body.drain(..) {
            if let Err(e) = scanner.feed(piece, &mut events) {
                too_large = Some(e);
                break;
            }
        }
        if end_of_stream && too_large.is_none() {
            events.extend(scanner.finish());
        }
        for stream in state.streams.iter_mut() {
            let mut out = Vec::with_capacity(events.len());
            for event in events.drain(..) {
                if let Err(e) = stream.on_event(event, &mut out) {
                    failure = Some(response_error(e));
                    break;
                }
            }
            if end_of_stream && too_large.is_none() && failure.is_none() {
                stream.on_end(&mut out);
            }
            events = out;
        }
        *body = events;
        if let Some(e) = too_large {
            metrics().buffer_limit(crate::metrics::Buffer::SseEvent);
            return Err(GatewayError::UpstreamBroken {
                provider: ctx.provider_label().to_owned(),
                reason: e.to_string(),
            });
        }
        failure.map_or(Ok(()), Err)
    }
}

/// Puts an edited body in place of the client's, peeked again (or, when only texts
/// changed, its peek carried over: reading the whole body again costs more than most
/// edits).
fn replace_body(
    body: &mut RequestBody,
    ctx: &mut RequestCtx,
    edited: Bytes,
    texts_only: bool,
) -> Result<(), GatewayError> {
    if !(texts_only && body.peek.follow_text_edit(&body.bytes, &edited)) {
        body.peek = body::peek(&edited)?;
    }
    body.bytes = edited;
    ctx.stream =
        body.peek.stream || matches!(ctx.op, Some(Operation::GenerateContent { stream: true }));
    Ok(())
}

/// A request body the filters changed.
struct Edited {
    bytes: Bytes,
    /// Every change was to the text of string values: keys, nesting, numbers and the
    /// format's own fields are as they were.
    texts_only: bool,
}

/// What the client-side body hooks made of `body`, put in its place.
fn apply_edit(
    edited: Result<Option<Edited>, GatewayError>,
    body: &mut RequestBody,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    if let Some(edited) = counted(edited, ctx)? {
        replace_body(body, ctx, edited.bytes, edited.texts_only)?;
    }
    Ok(())
}

/// The client-side filters from `from` on: those that edit the body in place up to the next
/// guardrail, then a wait for the guardrail's verdict, and the rest after it.
fn run_from(
    filters: Arc<[Arc<dyn Filter>]>,
    from: usize,
    body: &mut RequestBody,
    ctx: &mut RequestCtx,
) -> Result<Flow, GatewayError> {
    let rest = filters.get(from..).unwrap_or_default();
    let hook = rest.iter().position(|f| f.webhook().is_some());
    let before = &rest[..hook.unwrap_or(rest.len())];
    let mut memo = std::mem::take(&mut ctx.filters.memo);
    let edited = edit_request(before.iter(), FilterSide::Client, &body.bytes, &mut memo);
    ctx.filters.memo = memo;
    apply_edit(edited, body, ctx)?;
    let Some(hook) = hook.map(|i| from + i) else {
        return Ok(Flow::Continue);
    };
    let asked = super::guard::Asked {
        model: ctx.model.clone().unwrap_or_default(),
        key: ctx.key_name().to_owned(),
        surface: ctx.format.as_str(),
    };
    let request = body.bytes.clone();
    Ok(Flow::Wait(Box::pin(async move {
        let guardrail = std::slice::from_ref(&filters[hook]);
        let edited = super::guard::ask_all(guardrail, &asked, request).await?;
        Ok(Flow::Apply(Box::new(move |body, ctx| {
            if let Some(edited) = edited {
                replace_body(body, ctx, edited, false)?;
            }
            run_from(filters, hook + 1, body, ctx)
        })))
    })))
}

/// Runs the request-body hooks of the filters on `side`; the new body if one changed it.
/// A run of filters that read the body as a tree shares one parse, and one write after it.
fn edit_request<'a>(
    filters: impl Iterator<Item = &'a Arc<dyn Filter>>,
    side: FilterSide,
    original: &Bytes,
    memo: &mut lua_free_filters::Memo,
) -> Result<Option<Edited>, GatewayError> {
    let mut edited: Option<Edited> = None;
    // The body parsed for the current run of tree filters, and whether one changed it.
    let mut tree: Option<(serde_json::Value, bool)> = None;
    for filter in filters.filter(|f| f.side() == side && f.edits_request_body()) {
        if filter.edits_request_tree() {
            if tree.is_none() {
                let current = edited.as_ref().map_or(original, |e| &e.bytes);
                // Not JSON: the filter's own reading of the bytes judges it, below.
                tree = serde_json::from_slice(current).ok().map(|doc| (doc, false));
            }
            if let Some((doc, changed)) = &mut tree {
                *changed |= filter.on_request_tree(doc).map_err(refusal)?;
                continue;
            }
        }
        write_tree(tree.take(), &mut edited)?;
        let current = edited.as_ref().map_or(original, |e| &e.bytes);
        let changed = filter.on_request_body(current, memo).map_err(refusal)?;
        if let Some(new) = changed {
            let texts_only =
                filter.edits_only_texts() && edited.as_ref().is_none_or(|e| e.texts_only);
            edited = Some(Edited {
                bytes: Bytes::from(new),
                texts_only,
            });
        }
    }
    write_tree(tree, &mut edited)?;
    Ok(edited)
}

/// The tree a run of filters changed, written as the body the next filter reads.
fn write_tree(
    tree: Option<(serde_json::Value, bool)>,
    edited: &mut Option<Edited>,
) -> Result<(), GatewayError> {
    if let Some((doc, true)) = tree {
        let bytes = serde_json::to_vec(&doc)
            .map_err(|e| GatewayError::invalid(format!("refused by a filter: {e}")))?;
        *edited = Some(Edited {
            bytes: Bytes::from(bytes),
            texts_only: false,
        });
    }
    Ok(())
}

/// A request-body filter's refusal, as the client is answered.
fn refusal(e: FilterError) -> GatewayError {
    match e {
        FilterError::Denied(message) => GatewayError::ContentDenied(message),
        FilterError::PromptTooLong(message) => GatewayError::invalid_param("messages", message),
        e => GatewayError::invalid(format!("refused by a filter: {e}")),
    }
}

/// `ip-allow`/`ip-deny`: the client's address, before anything is done for it.
fn check_client(ctx: &RequestCtx) -> Result<(), GatewayError> {
    if address_passes(attached(ctx), ctx) {
        return Ok(());
    }
    crate::metrics::metrics()
        .filter_denied
        .with_label_values(&[ctx.key_name()])
        .inc();
    Err(GatewayError::AddressDenied)
}

/// Whether the caller's address passes every address filter among `filters` (with none,
/// any caller does; with one, a caller without an address, on a Unix socket, does not).
pub(super) fn address_passes<'a>(
    filters: impl Iterator<Item = &'a Arc<dyn Filter>>,
    ctx: &RequestCtx,
) -> bool {
    let forwarded = ctx.forwarded_for.as_ref().and_then(|v| v.to_str().ok());
    filters.filter(|f| f.checks_client()).all(|f| {
        ctx.client_ip
            .is_some_and(|peer| f.on_client(peer, forwarded).is_ok())
    })
}

/// Counts a request a deny filter refused (`sira_filter_denied_total{key}`).
fn counted<T>(
    result: Result<Option<T>, GatewayError>,
    ctx: &RequestCtx,
) -> Result<Option<T>, GatewayError> {
    if let Err(GatewayError::ContentDenied(_)) = &result {
        crate::metrics::metrics()
            .filter_denied
            .with_label_values(&[ctx.key_name()])
            .inc();
    }
    result
}

fn response_error(e: FilterError) -> GatewayError {
    GatewayError::Internal(format!("a response filter failed: {e}").into())
}

/// Filters attached to the caller's key, then to its tenant, then to the model entry the
/// client asked for (a fallback that serves the request does not change them).
fn attached(ctx: &RequestCtx) -> impl Iterator<Item = &Arc<dyn Filter>> {
    let model_filters = ctx.entry.as_ref().map_or(&[][..], |r| r.filters.as_slice());
    ctx.principal
        .iter()
        .flat_map(Principal::filters)
        .chain(model_filters)
}

/// Lets filters edit the fields of a request to a provider.
struct RequestEdit<'a>(&'a mut http::HeaderMap);

impl HeaderEdit for RequestEdit<'_> {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
        // Names and values were validated when the filter was built; a map already at
        // `http`'s size limit keeps what it has.
        let _ = self.0.try_insert(name.clone(), value.clone());
    }

    fn remove(&mut self, name: &HeaderName) {
        self.0.remove(name);
    }
}

/// Lets filters edit a Pingora response header.
struct ResponseEdit<'a>(&'a mut ResponseHeader);

impl HeaderEdit for ResponseEdit<'_> {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
        // Names and values were validated when the filter was built.
        let _ = self.0.insert_header(name.clone(), value.clone());
    }

    fn remove(&mut self, name: &HeaderName) {
        self.0.remove_header(name);
    }
}
