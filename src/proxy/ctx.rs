//! State of one request, shared by every phase and read by the access log.
//!
//! Fields are grouped by the module that writes them ([`UpstreamState`] by the retry policy,
//! [`ResponseState`] by the driver, [`TranslationState`] by translation, and so on); other
//! modules only read them. `RequestCtx::new` allocates nothing: every buffer starts empty.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;

use super::phases::BodyHooks;
use crate::accounting::StreamUsage;
use crate::auth::Principal;
use crate::config::Snapshot;
use crate::error::GatewayError;
use crate::format::Format;
use crate::models::ModelRoute;
use crate::provider::Provider;
use crate::routes::Operation;
use crate::sse::SseScanner;
use crate::translate::{CountApi, ResponseContext, StreamTranslator};
use crate::usage::Usage;

/// One upstream try, for `x-sira-attempts` and the access log.
#[derive(Debug)]
pub struct Attempt {
    pub provider: Arc<str>,
    /// `ok`, or why the next candidate was tried (`connect_error`, `timeout`, `status_503`).
    /// Borrowed when it is a fixed word: every successful request records one.
    pub outcome: std::borrow::Cow<'static, str>,
}

/// Built when the request header has been read; dropped after the access log line.
pub struct RequestCtx {
    /// Config pinned for the whole request: a reload mid-stream does not affect it.
    pub snap: Arc<Snapshot>,
    pub started: Instant,
    /// Echoed from the client's `x-request-id` when usable, else generated.
    pub id: HeaderValue,
    /// The client's surface; OpenAI's until the route is known (for 404 bodies).
    pub format: Format,
    /// Who the client's verified TLS certificate says it is (mTLS listeners).
    pub client_identity: Option<Arc<crate::tls::ClientIdentity>>,
    /// The connection's peer, and the request's `X-Forwarded-For` (for `ip-*` filters).
    pub client_ip: Option<std::net::IpAddr>,
    pub forwarded_for: Option<HeaderValue>,
    /// `None` until routed.
    pub op: Option<Operation>,
    /// The model named in a Gemini URL.
    pub path_model: Option<String>,
    /// The stored response a `/v1/responses/{id}` route names.
    pub response_id: Option<String>,
    /// `None` until authenticated (or when authentication failed).
    pub principal: Option<Principal>,
    /// The model name the client asked for.
    pub model: Option<String>,
    /// The `models:` entry the client's model resolved to: its filters apply, whichever
    /// entry serves the request.
    pub entry: Option<Arc<ModelRoute>>,
    /// The `models:` entry that serves the request (the one tried last: a fallback's when
    /// it came to that).
    pub route: Option<Arc<ModelRoute>>,
    /// What a wildcard entry's `*` matched in `model`.
    pub capture: Option<String>,
    /// The target the client chose with `x-sira-route` (checked by routing).
    pub route_choice: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    pub upstream: UpstreamState,
    pub response: ResponseState,
    pub translation: TranslationState,
    pub accounting: AccountingState,
    pub filters: FilterState,
    pub cache: CacheState,
    pub stored: StoredState,
    pub limits: LimitState,
    /// Tokens spent, from the provider's report.
    pub usage: Usage,
    /// Whether the provider reported usage at all.
    pub usage_seen: bool,
    /// USD, priced from the model entry's table once the request is over.
    pub cost: f64,
    /// Why the request failed, for the access log and metric labels.
    pub error: Option<GatewayError>,
}

/// Written by the retry policy.
#[derive(Default)]
pub struct UpstreamState {
    pub provider: Option<Arc<Provider>>,
    /// The model name sent upstream.
    pub model: Option<String>,
    pub attempts: Vec<Attempt>,
    /// `(provider, endpoint index)` of the tries that failed, for endpoint selection.
    pub failed: Vec<(Arc<str>, usize)>,
    /// Time spent waiting on providers (connect, header, body reads), excluded from
    /// `sira_overhead_seconds`.
    pub wait: Duration,
    /// When the current (last) try started: `timeouts.total` counts from here.
    pub try_started: Option<Instant>,
    /// Counts the current try in its endpoint's in-flight load until the request ends.
    pub inflight: Option<crate::pool::state::Inflight>,
    /// The endpoint (index into the provider's) of the try that answered, for reporting a
    /// body that breaks off to its pool.
    pub endpoint: Option<usize>,
    /// The prices of the target that answered, when it has its own (else the entry's).
    pub pricing: Option<crate::models::Pricing>,
}

/// Written by the driver while it answers.
#[derive(Default)]
pub struct ResponseState {
    /// Status sent to the client (0 = nothing sent).
    pub status: u16,
    pub first_byte: Option<Instant>,
    /// The client went away before the response was complete.
    pub client_gone: bool,
    /// sira answered itself (a local answer or an error), not a provider.
    pub local: bool,
    /// The local answer is a provider's answer replayed (a cache hit, a coalesced
    /// request): the modules on the client's side of translation treat it as an answer.
    pub replay: bool,
    /// The provider's response is an SSE stream.
    pub sse: bool,
    /// A module must see the whole body before the header is sent (a translated JSON
    /// answer, an error body): the driver buffers it, bounded by
    /// `server.max_response_body`, and sets its length.
    pub whole: bool,
    /// A module changes the length of a body it lets stream through: the provider's
    /// `Content-Length` must not be relayed.
    pub rewrites_body: bool,
    /// A module ended the stream with its own finish (a budget cut): the driver writes
    /// what the body phases left and ends the response cleanly, reading no more upstream.
    pub finish_now: bool,
    /// The response was ended as broken (connection closed or stream reset): the
    /// connection is not reused.
    pub aborted: bool,
    /// The answer is whole even if the client left: the provider's body was read to its
    /// clean end (a stream identical requests were following is read on without its
    /// client), or the client closed once it had its format's last event, before the
    /// provider's framing ended.
    pub answer_complete: bool,
    /// The provider's body has neither a length nor chunked framing: it ends when the
    /// connection does, so a cut is only seen in the body itself.
    pub close_delimited: bool,
    /// The format the provider answers in (the client's when there is no upstream).
    pub upstream_format: Option<Format>,
    /// Hint-only parameters dropped in translation.
    pub dropped_params: Vec<&'static str>,
    /// sira answered with an estimate (a local token count), not a provider's figure.
    pub estimate: bool,
    /// The modules that asked for this response's body.
    pub body_hooks: BodyHooks,
}

/// Written by translation.
#[derive(Default)]
pub struct TranslationState {
    /// Set when the provider speaks another format than the client: the response must be
    /// translated back.
    pub context: Option<ResponseContext>,
    /// Whether the passthrough body asks for `stream_options.include_usage` on the client's
    /// behalf, so the usage-only chunk must not reach the client.
    pub injected_usage: bool,
    /// The per-stream state machine of a translated stream.
    pub stream: Option<Box<StreamTranslator>>,
    /// Translated client bytes of the current batch.
    pub out: BytesMut,
    /// A token count sent to the provider's own counting endpoint: its answer becomes
    /// Anthropic's.
    pub count: Option<CountApi>,
    /// The local estimate of that count, answered instead when the provider turns out not
    /// to have the endpoint (an `openai` provider pointed at another service).
    pub count_estimate: Option<u64>,
}

/// Written by accounting.
#[derive(Default)]
pub struct AccountingState {
    /// Usage read from the frames of a passthrough stream.
    pub tap: Option<StreamTap>,
    /// The response is passthrough JSON: its body is kept to read usage at the end.
    pub json: bool,
    /// A passthrough JSON body, kept to read its usage at the end.
    pub kept: super::downstream::Gather,
    /// The last bytes of a passthrough JSON body too large to keep whole: usage sits at the
    /// end of every provider's answer.
    pub tail: BytesMut,
    /// The request body as sent (a shared reference), for the prompt estimate of an
    /// answer whose usage never came.
    pub request: Option<Bytes>,
    /// Events of a passthrough stream that went past the tap.
    pub frames: u64,
    /// The usage is sira's estimate, not the provider's report.
    pub estimated: bool,
    /// The frames of the last batch of a passthrough stream, for a module that would
    /// otherwise frame the same bytes again (the client-side filters).
    pub shared: SharedFrames,
}

/// The whole frames accounting cut a batch into: a later module whose body is still
/// exactly their bytes may take them instead of framing the same bytes again (about a
/// tenth of a redacted stream's cost).
#[derive(Default)]
pub struct SharedFrames {
    /// Set by the module that will take them; otherwise nothing is kept.
    pub wanted: bool,
    frames: Vec<Bytes>,
}

/// Whether `pieces` cover exactly the memory of `frames`, in order.
fn same_memory(pieces: &[Bytes], frames: &[Bytes]) -> bool {
    let mut frames = frames.iter();
    for piece in pieces {
        let (mut at, end) = (
            piece.as_ptr() as usize,
            piece.as_ptr() as usize + piece.len(),
        );
        while at < end {
            match frames.next() {
                Some(frame) if frame.as_ptr() as usize == at => at += frame.len(),
                _ => return false,
            }
        }
        if at != end {
            return false;
        }
    }
    frames.next().is_none()
}

impl SharedFrames {
    /// Starts a batch.
    pub fn clear(&mut self) {
        self.frames.clear();
    }

    /// The frames (moved out) of the piece just passed on.
    pub fn push(&mut self, frames: &mut Vec<Bytes>) {
        self.frames.append(frames);
    }

    /// The frames of `body`, when its pieces are the frames' own memory, run after run;
    /// `None` after any change. Held here, that memory is alive: no other buffer can be
    /// at those addresses, and `Bytes` never change, so the same addresses are the same
    /// bytes. A piece copied (joined from a frame completed across reads, or rebuilt
    /// without one) is somewhere else, and the body is framed again.
    pub fn take_for(&mut self, body: &[Bytes]) -> Option<Vec<Bytes>> {
        let taken = same_memory(body, &self.frames).then(|| std::mem::take(&mut self.frames));
        self.clear();
        taken
    }
}

/// Written by the operator filters.
#[derive(Default)]
pub struct FilterState {
    /// The attached filters' states for a streamed response, in order.
    pub streams: Vec<Box<dyn lua_free_filters::StreamFilter>>,
    /// Splits the client's stream into events for them.
    pub scanner: Option<SseScanner>,
    /// A filter edits the whole JSON response.
    pub json: bool,
    /// What the request's filters left for the answer's (redaction's placeholders).
    pub memo: lua_free_filters::Memo,
}

/// Written by the response cache.
#[derive(Default)]
pub struct CacheState {
    /// The client said `cache-control: no-cache`: no lookup (the answer is still kept).
    pub no_lookup: bool,
    /// The client said `cache-control: no-store`: no lookup, and the answer is not kept.
    pub no_store: bool,
    /// The request headers that change an answer, for the key.
    pub variant: String,
    /// The request's key, when it is cacheable.
    pub key: Option<crate::cache::Key>,
    /// `x-sira-cache`, and the metric's result.
    pub result: Option<&'static str>,
    /// How long the entry keeps its answers (`models.<name>.cache.ttl`).
    pub ttl: Option<std::time::Duration>,
    /// This request makes the answer identical requests in flight wait for.
    pub lead: Option<crate::cache::Lead>,
    /// The answer is being gathered to be kept.
    pub collect: bool,
    pub pieces: Vec<bytes::Bytes>,
    pub size: usize,
    /// The whole answer was gathered (the provider's body ended cleanly).
    pub complete: bool,
    /// A replayed answer's usage: what the hit saved.
    pub saved: Option<crate::usage::Usage>,
    /// The provider format the key sees the request in, when it does: answers kept in it
    /// may be translated for clients of other formats.
    pub shared_format: Option<crate::format::Format>,
    /// A replayed answer kept in the provider's format: that format, and how this client's
    /// answer is written (from its request).
    pub convert: Option<(crate::format::Format, crate::translate::ResponseContext)>,
    /// A stored stream is replayed at its original pace.
    pub paced: bool,
    /// When the gathered stream's first piece came, and its timing since.
    pub first_piece: Option<std::time::Instant>,
    pub marks: Vec<crate::cache::Mark>,
}

/// Written by the limits module.
#[derive(Default)]
pub struct LimitState {
    /// What this request holds in each limited scope until it ends.
    pub reservation: Option<crate::limits::Reservation>,
    /// What the request would reserve: kept when a fallback model entry has limits of its
    /// own, which the request must fit before that entry is tried.
    pub demand: Option<crate::limits::Demand>,
    /// Reservations in fallback model entries tried, by entry (settled at the end: the
    /// entry that served to the usage, the others to nothing).
    pub fallbacks: Vec<(Arc<crate::models::ModelRoute>, crate::limits::Reservation)>,
    /// The prompt's estimated tokens, settled when the provider reports no usage.
    pub input_estimate: u64,
    /// A refusal's wait, for `retry-after`.
    pub retry_after: Option<u64>,
    /// The settlement was an estimate (no usage came from the provider).
    pub estimated: bool,
    /// `budget.on_exceed: cut`: the stream's watch against what its budgets had left.
    pub cut: Option<crate::proxy::modules::budget_cut::BudgetCut>,
}

/// Written by the response store module (`store: true`, `previous_response_id`).
#[derive(Default)]
pub struct StoredState {
    /// This response is to be stored when it completes.
    pub store: bool,
    /// The client's own body, before a stored conversation was put in front of its input:
    /// its input is what the record keeps.
    pub original: Option<Bytes>,
    /// The stored response this request continues.
    pub previous: Option<String>,
    /// The provider that answered `previous` itself in Responses, and the client's own
    /// body: a try to that provider sends it as the client wrote it (the provider
    /// remembers the conversation).
    pub native: Option<(String, super::phases::RequestBody)>,
    /// The conversation before this request is not all in the store.
    pub partial: bool,
    /// The response is captured: whole (JSON) or by its terminal event (a stream).
    pub capturing: bool,
    /// Splits the client's stream into events, to find the terminal one.
    pub scanner: Option<SseScanner>,
    /// A JSON answer's pieces as they pass (shared, not copied), up to
    /// `server.max_response_body`.
    pub kept: Vec<Bytes>,
    pub kept_len: usize,
}

/// Frames of a passthrough stream, for the usage tap.
pub struct StreamTap {
    pub scanner: SseScanner,
    pub usage: StreamUsage,
    /// Drop the usage-only chunk sira asked for on the client's behalf.
    pub drop_usage_only: bool,
    /// The last frame seen, kept when the body is close-delimited: the stream is complete
    /// only if it is the format's last event.
    pub last: Option<Bytes>,
    /// Reused between batches so framing does not allocate per chunk.
    pub frames: Vec<Bytes>,
}

impl RequestCtx {
    pub fn new(snap: Arc<Snapshot>, id: HeaderValue) -> RequestCtx {
        RequestCtx {
            snap,
            started: Instant::now(),
            id,
            format: Format::OpenAiChat,
            client_identity: None,
            client_ip: None,
            forwarded_for: None,
            op: None,
            path_model: None,
            response_id: None,
            principal: None,
            model: None,
            entry: None,
            route: None,
            capture: None,
            route_choice: None,
            stream: false,
            upstream: UpstreamState::default(),
            response: ResponseState::default(),
            translation: TranslationState::default(),
            accounting: AccountingState::default(),
            filters: FilterState::default(),
            cache: CacheState::default(),
            stored: StoredState::default(),
            limits: LimitState::default(),
            usage: Usage::default(),
            usage_seen: false,
            cost: 0.0,
            error: None,
        }
    }

    pub fn key_name(&self) -> &str {
        self.principal.as_ref().map_or("-", Principal::name)
    }

    /// Who owns what this request stores (a key, or a JWT issuer and subject).
    pub fn owner(&self) -> std::borrow::Cow<'_, str> {
        self.principal
            .as_ref()
            .map_or(std::borrow::Cow::Borrowed("-"), Principal::owner)
    }

    /// The `model` metric label: the config entry's name, bounded by the config.
    pub fn model_label(&self) -> &str {
        self.route.as_ref().map_or("", |r| &r.name)
    }

    pub fn provider_label(&self) -> &str {
        self.upstream.provider.as_ref().map_or("", |p| &p.name)
    }

    /// The format the response body arrives in.
    pub fn upstream_format(&self) -> Format {
        self.response.upstream_format.unwrap_or(self.format)
    }
}

/// What one try writes into the request state: the entry, provider and model it went to,
/// the format and translation of its request, its start and its endpoint load. Kept aside
/// with an answer held while later tries run, and put back if that answer is the one the
/// client gets.
pub struct TryState {
    route: Option<Arc<ModelRoute>>,
    provider: Option<Arc<Provider>>,
    model: Option<String>,
    try_started: Option<Instant>,
    inflight: Option<crate::pool::state::Inflight>,
    endpoint: Option<usize>,
    pricing: Option<crate::models::Pricing>,
    upstream_format: Option<Format>,
    dropped_params: Vec<&'static str>,
    translation: Option<ResponseContext>,
    injected_usage: bool,
    count: Option<CountApi>,
}

impl RequestCtx {
    /// Takes the current try's state out (see [`TryState`]).
    pub fn take_try(&mut self) -> TryState {
        TryState {
            route: self.route.clone(),
            provider: self.upstream.provider.clone(),
            model: self.upstream.model.clone(),
            try_started: self.upstream.try_started,
            inflight: self.upstream.inflight.take(),
            endpoint: self.upstream.endpoint,
            pricing: self.upstream.pricing,
            upstream_format: self.response.upstream_format,
            dropped_params: std::mem::take(&mut self.response.dropped_params),
            translation: self.translation.context.take(),
            injected_usage: std::mem::take(&mut self.translation.injected_usage),
            count: self.translation.count.take(),
        }
    }

    /// Puts a try's state back.
    pub fn restore_try(&mut self, state: TryState) {
        self.route = state.route;
        self.upstream.provider = state.provider;
        self.upstream.model = state.model;
        self.upstream.try_started = state.try_started;
        self.upstream.inflight = state.inflight;
        self.upstream.endpoint = state.endpoint;
        self.upstream.pricing = state.pricing;
        self.response.upstream_format = state.upstream_format;
        self.response.dropped_params = state.dropped_params;
        self.translation.context = state.translation;
        self.translation.injected_usage = state.injected_usage;
        self.translation.count = state.count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> (Bytes, Vec<Bytes>) {
        let chunk = Bytes::from_static(b"data: 1\n\ndata: 2\n\n");
        let frames = vec![chunk.slice(..9), chunk.slice(9..)];
        (chunk, frames)
    }

    #[test]
    fn frames_are_shared_only_for_the_very_pieces_passed_on() {
        let (chunk, frames) = batch();
        let mut shared = SharedFrames::default();
        shared.push(&mut frames.clone());
        assert_eq!(
            shared.take_for(std::slice::from_ref(&chunk)),
            Some(frames.clone())
        );
        // Taken once: the next batch starts empty.
        assert_eq!(shared.take_for(std::slice::from_ref(&chunk)), None);

        // The same bytes elsewhere in memory are not the pieces passed on.
        shared.push(&mut frames.clone());
        let copy = Bytes::copy_from_slice(&chunk);
        assert_eq!(shared.take_for(&[copy]), None);

        // A piece cut short, or one more piece, is a change.
        shared.push(&mut frames.clone());
        assert_eq!(shared.take_for(&[chunk.slice(..9)]), None);
        shared.push(&mut frames.clone());
        assert_eq!(shared.take_for(&[chunk.clone(), chunk.clone()]), None);
    }

    #[test]
    fn frames_that_are_not_the_pieces_bytes_are_never_shared() {
        let (chunk, frames) = batch();
        let mut shared = SharedFrames::default();
        // A frame dropped from what was passed on (the usage chunk sira asked for): the
        // rest is rebuilt in a buffer of its own.
        shared.push(&mut frames.clone());
        assert_eq!(
            shared.take_for(&[Bytes::copy_from_slice(&chunk[..9])]),
            None
        );
        // Passed on as two pieces, or as one: either way the same frames.
        shared.push(&mut frames.clone());
        assert_eq!(shared.take_for(&frames), Some(frames.clone()));
        // A frame more than the body holds.
        shared.push(&mut frames.clone());
        assert_eq!(shared.take_for(&frames[..1]), None);
    }
}
