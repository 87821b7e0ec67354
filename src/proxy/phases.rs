//! The phases of a request, and the one ordered chain of modules that acts on them.
//!
//! [`Phase`] is shaped like Pingora's `ProxyHttp` (`pingora-proxy/src/proxy_trait.rs`): one
//! method per point of the request's life, each with a no-op default, so a module implements
//! only the phases it acts on and keeps its per-request state in its own field of
//! [`RequestCtx`]. The driver ([`super::Gateway`]) does the I/O between the phases — reading
//! the request, the exchange with the provider, writing the response — and runs the chain at
//! each point; it decides nothing itself.
//!
//! # Order
//!
//! [`Chain::standard`] lists the modules once, from the client's side to the provider's.
//! Phases on the way **in** (request, request body, upstream peer, upstream request) run in
//! that order; phases on the way **out** (response header, response body, response error,
//! logging) run in the reverse order, as Envoy runs its encoder filters. A module therefore
//! sees the same side of the translation both ways: the operator filters near the client see
//! the client's format on requests and on responses, accounting near the provider reads the
//! provider's usage before translation rewrites it, and credentials, last on the way in, are
//! set after everything else could touch the upstream header.
//!
//! # Cost
//!
//! Every phase is a plain (synchronous) call through a `dyn Phase`: a module that does not
//! act on a phase costs one indirect call to an empty default. Body phases, the only ones
//! that run more than once per request, are called only on the modules that asked for the
//! body of this response ([`Phase::wants_response_body`]). A request phase that must wait on
//! I/O (a remote cache, an external guardrail) returns [`Flow::Wait`] with a future: nothing
//! is boxed unless a module actually waits.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::HeaderMap;
use pingora_http::{RequestHeader, ResponseHeader};

use super::body::Peek;
use super::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::format::Format;
use crate::models::Target;
use crate::pool::Pick;
use crate::provider::Endpoint;
use crate::routes::Operation;

/// What a request-side phase decided.
pub enum Flow {
    /// Go on with the next module, then the next phase.
    Continue,
    /// The request is answered here (a local answer such as the model list). The remaining
    /// request phases and the upstream are skipped; the response phases and logging run.
    Respond(LocalResponse),
    /// Wait for this before going on; its output is taken as this module's decision. The
    /// future owns what it needs (it cannot borrow the context), so nothing is boxed unless a
    /// module actually has to wait.
    Wait(Pending),
    /// The request is answered with a provider's answer sira already has (a cache hit) or
    /// is receiving for an identical request (coalescing). Like [`Flow::Respond`], the
    /// remaining request phases and the upstream are skipped; the response phases see the
    /// answer as the client's format has it (`ctx.response.replay`).
    Replay(crate::cache::Replay),
    /// What a wait found, applied to the request: the module's decision once its I/O has
    /// answered (a stored conversation put into the body, a caller known once the
    /// issuer's keys were fetched). In a request-header phase the body it is given is
    /// empty (it has not been read).
    Apply(Apply),
}

/// A waited decision that edits the request (see [`Flow::Apply`]).
pub type Apply =
    Box<dyn FnOnce(&mut RequestBody, &mut RequestCtx) -> Result<Flow, GatewayError> + Send>;

/// A request phase's wait (see [`Flow::Wait`]).
pub type Pending = Pin<Box<dyn Future<Output = Result<Flow, GatewayError>> + Send>>;

/// How the request phases ended before any provider: an answer of sira's own, or a replay.
pub enum Answer {
    Local(LocalResponse),
    Replay(crate::cache::Replay),
}

/// A JSON answer sira gives itself.
pub struct LocalResponse {
    pub status: u16,
    pub body: Bytes,
}

/// The client's request body, read whole (bounded by `server.max_request_body`) and parsed
/// once for the fields the gateway routes on.
#[derive(Clone)]
pub struct RequestBody {
    pub bytes: Bytes,
    pub peek: Peek,
}

/// One try's request to a provider, as the upstream phases build it.
pub struct UpstreamRequest<'a> {
    pub target: &'a Target,
    pub endpoint: &'a Endpoint,
    /// The model name sent upstream (the target's, or what the client asked for).
    pub model: &'a str,
    /// What the client sent, untouched.
    pub client: &'a RequestBody,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The format the provider is spoken to in.
    pub format: Format,
    /// The provider operation: the client's, or the one a translated request becomes.
    pub op: Operation,
    /// The origin-form target (path and query), which the provider module builds; the
    /// request is a `POST`.
    pub path: String,
    /// The fields. The driver fills them with the client's end-to-end headers (hop-by-hop
    /// fields, framing and client credentials already removed); modules add the provider's
    /// headers and the credentials. `Content-Length` is written from `body` on the wire.
    pub headers: HeaderMap,
    /// What goes upstream: the client's bytes until a module replaces them.
    pub body: Bytes,
}

/// One module of the request path.
///
/// Every method has a no-op default. Each says when it runs, what an early return means,
/// and which fields of [`RequestCtx`] the standard modules read and write there.
pub trait Phase: Send + Sync {
    /// The module's name, for logs.
    fn name(&self) -> &'static str;

    /// The request header has been read (and passed the edge checks: size, count, framing,
    /// header timeout).
    ///
    /// Runs once per request, in chain order. Route, request id and authentication happen
    /// here (`ctx.format`, `ctx.op`, `ctx.principal`); a limiter would admit here.
    ///
    /// `Err` answers the client with the error in its surface's shape and skips everything
    /// up to the response phases; [`Flow::Respond`] answers with a local response. Either
    /// way the request body is not read: the connection is closed after the answer rather
    /// than drained.
    fn request_filter(
        &self,
        _req: &RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        Ok(Flow::Continue)
    }

    /// The whole request body has been read (bounded by `server.max_request_body`, within
    /// the body timeout) and peeked once ([`RequestBody::peek`]).
    ///
    /// Runs once, in chain order. The model is resolved and checked against the key here
    /// (`ctx.model`, `ctx.route`, `ctx.stream`); operator filters may rewrite the body in the
    /// client's format. `Err` and [`Flow::Respond`] answer as in [`Phase::request_filter`].
    fn request_body_filter(
        &self,
        _body: &mut RequestBody,
        _ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        Ok(Flow::Continue)
    }

    /// Which endpoint of `target`'s provider this try goes to.
    ///
    /// Runs once per try, in chain order, after the retry policy chose the target; the first
    /// module that returns `Some` decides: a [`Pick`] (an index into
    /// `target.provider.endpoints`, counted in its in-flight load while the pick lives), or
    /// the error that no endpoint can take the request, which moves the policy to the next
    /// target. Endpoints that already failed this request are in `ctx.upstream.failed`.
    /// `None` from every module means the pool's own choice without a key.
    fn upstream_peer(
        &self,
        _target: &Target,
        _req: &RequestHeader,
        _body: &RequestBody,
        _ctx: &RequestCtx,
    ) -> Option<Result<Pick, GatewayError>> {
        None
    }

    /// The request for this try is being built.
    ///
    /// Runs once per try, in chain order: translation sets the body and operation
    /// (`ctx.translation`), the provider module the path, host and provider headers,
    /// operator filters edit, credentials go in last. `Err` means this target cannot take
    /// the request (nothing was sent): the retry policy moves on to the next target, and the
    /// error is what the client gets if none can.
    fn upstream_request_filter(
        &self,
        _upstream: &mut UpstreamRequest<'_>,
        _ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        Ok(())
    }

    /// The response header is about to be sent: the provider's (hop-by-hop fields and
    /// framing removed, its `x-request-id` renamed) or one sira answers with itself
    /// (`ctx.response.local`).
    ///
    /// Runs once, in reverse chain order. Modules set their headers and decide how they
    /// will handle the body (`ctx.response.whole` when they must see all of it before the
    /// header goes out). `Err` replaces the response with the error before anything was
    /// sent.
    fn response_filter(
        &self,
        _resp: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        Ok(())
    }

    /// Whether this module must see this response's body. Asked once, after
    /// [`Phase::response_filter`]; only modules that answer `true` get
    /// [`Phase::response_body_filter`] calls.
    fn wants_response_body(&self, _ctx: &RequestCtx) -> bool {
        false
    }

    /// A piece of the response body is on its way to the client.
    ///
    /// Runs for every batch of upstream reads that arrived together (a stream: all events
    /// that TCP delivered at once), in reverse chain order, on the modules that asked. The
    /// batch is a list of buffers the module may keep, replace or empty (translation
    /// replaces provider events with client events); nothing is written until every module
    /// has seen it. `end_of_stream` is set on a last call, with an empty or final batch, when
    /// the provider's body ended cleanly. When the response is buffered whole
    /// (`ctx.response.whole`) there is exactly one call, with the whole body and
    /// `end_of_stream` set, before the header is sent.
    ///
    /// `Err` ends the response: before the header, as an error response; after it, as a
    /// broken response ([`Phase::response_error_filter`]). What the module leaves in `body`
    /// still goes on (through the modules after it) before the end.
    fn response_body_filter(
        &self,
        _body: &mut Vec<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        Ok(())
    }

    /// The response broke after its header was sent (the provider's body was cut short,
    /// timed out, or failed to translate). The response will be ended as an error, never as
    /// a clean end; for a stream, `event` is written first.
    ///
    /// Runs in reverse chain order. The module that renders the client's stream (translation)
    /// sets `event` to the client format's error event; when nobody does, the driver writes
    /// the surface's generic error event.
    fn response_error_filter(
        &self,
        _error: &GatewayError,
        _event: &mut Option<Bytes>,
        _ctx: &mut RequestCtx,
    ) {
    }

    /// The request is over, however it ended (answered, failed, client gone).
    ///
    /// Runs once, in reverse chain order, so that the modules near the provider settle
    /// first (accounting prices the usage, `ctx.cost`) and the outermost (metrics and the
    /// access log) sees the final state. Must not wait on I/O: hand work to a background
    /// task.
    fn logging(&self, _req: &RequestHeader, _ctx: &mut RequestCtx) {}
}

/// The modules of the request path, in order from the client's side to the provider's.
pub struct Chain {
    modules: Vec<Box<dyn Phase>>,
}

impl Chain {
    /// sira's request path. This list is the whole of it: a new concern is a new module
    /// here.
    pub fn standard(access_log: std::sync::Arc<crate::access_log::AccessLog>) -> Chain {
        use super::modules::*;
        Chain::new(vec![
            // Metrics and the access line: outermost, so its logging sees the final state.
            Box::new(Observe::new(access_log)),
            // Which route, surface and (from the body) model; the model's access check.
            Box::new(Routing),
            Box::new(Authenticate),
            // Operator filters attached to the key, its tenant and the model, in the client's
            // format.
            Box::new(OperatorFilters::client_side()),
            // `GET /v1/models` and local token counts, answered without a provider: after the
            // filters, so that an address filter gates them too.
            Box::new(LocalAnswers),
            // x-request-id and x-sira-*: before the client-side filters on the way out, so
            // those may still edit them.
            Box::new(SiraHeaders),
            // Exact answers to exact requests, and identical requests in flight coalesced:
            // after the filters (the key is the request the provider would see, the entry
            // the answer before the client-side filters run on it again), before limits (a
            // hit spends nothing).
            Box::new(ResponseCacheModule),
            // `store: true` and `previous_response_id`: the conversation as the client
            // speaks it, kept when answered and replayed before translation.
            Box::new(StoredResponses),
            // Limits and budgets of the key, its tenant and the model: reserved on the whole
            // conversation, settled when the request ends.
            Box::new(Admission),
            // Client format <-> provider format: request, response, stream, errors.
            Box::new(Translation),
            // Usage from the provider's own bytes, before translation rewrites them.
            Box::new(Accounting),
            // Which endpoint of the provider.
            Box::new(Selection),
            // Path, host and the provider's headers.
            Box::new(ProviderRequest),
            // Operator filters on the provider's side (upstream request headers).
            Box::new(OperatorFilters::provider_side()),
            // The provider's credential: last, so nothing can replace or leak it.
            Box::new(Credentials),
        ])
    }

    pub fn new(modules: Vec<Box<dyn Phase>>) -> Chain {
        Chain { modules }
    }

    /// The module names in chain order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.modules.iter().map(|m| m.name())
    }

    /// Runs [`Phase::request_filter`]; `Some` when a module answered.
    pub async fn request_filter(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<Option<LocalResponse>, GatewayError> {
        for module in &self.modules {
            let mut flow = module.request_filter(req, ctx)?;
            loop {
                flow = match flow {
                    Flow::Continue => break,
                    Flow::Respond(answer) => return Ok(Some(answer)),
                    // The answer depends on the body, which is not read yet.
                    Flow::Replay(_) => break,
                    Flow::Wait(pending) => pending.await?,
                    Flow::Apply(apply) => {
                        let mut unread = RequestBody {
                            bytes: Bytes::new(),
                            peek: Peek::default(),
                        };
                        apply(&mut unread, ctx)?
                    }
                };
            }
        }
        Ok(None)
    }

    /// Runs [`Phase::request_body_filter`]; `Some` when a module answered.
    pub async fn request_body_filter(
        &self,
        body: &mut RequestBody,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Answer>, GatewayError> {
        for module in &self.modules {
            let mut flow = module.request_body_filter(body, ctx)?;
            loop {
                flow = match flow {
                    Flow::Continue => break,
                    Flow::Respond(answer) => return Ok(Some(Answer::Local(answer))),
                    Flow::Replay(replay) => return Ok(Some(Answer::Replay(replay))),
                    Flow::Wait(pending) => pending.await?,
                    Flow::Apply(apply) => apply(body, ctx)?,
                };
            }
        }
        Ok(None)
    }

    /// Runs [`Phase::upstream_peer`]: the first module's choice.
    pub fn upstream_peer(
        &self,
        target: &Target,
        req: &RequestHeader,
        body: &RequestBody,
        ctx: &RequestCtx,
    ) -> Result<Pick, GatewayError> {
        self.modules
            .iter()
            .find_map(|m| m.upstream_peer(target, req, body, ctx))
            .unwrap_or_else(|| {
                let provider = &target.provider;
                provider
                    .pool
                    .select(None, &[])
                    .map_err(|e| GatewayError::no_endpoint(&provider.name, &e))
            })
    }

    /// Runs [`Phase::upstream_request_filter`].
    pub fn upstream_request_filter(
        &self,
        upstream: &mut UpstreamRequest<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        for module in &self.modules {
            module.upstream_request_filter(upstream, ctx)?;
        }
        Ok(())
    }

    /// Runs [`Phase::response_filter`], then records which modules want the body.
    pub fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        for module in self.modules.iter().rev() {
            module.response_filter(resp, ctx)?;
        }
        let mut hooks = BodyHooks::default();
        for (index, module) in self.modules.iter().enumerate().rev() {
            if module.wants_response_body(ctx) {
                hooks.push(index);
            }
        }
        ctx.response.body_hooks = hooks;
        Ok(())
    }

    /// Runs [`Phase::response_body_filter`] on the modules that asked for the body.
    ///
    /// A module that fails leaves in `body` what it could still pass on (the events before
    /// the one it could not take); the modules after it see that, without `end_of_stream`,
    /// and the first failure is returned: the driver writes what is left, then ends the
    /// response as broken. A module that ends the stream itself (`ctx.response.finish_now`,
    /// a budget cut) makes this the last call for the modules after it.
    pub fn response_body_filter(
        &self,
        body: &mut Vec<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let hooks = ctx.response.body_hooks;
        let mut failure = None;
        for index in hooks.iter() {
            if let Some(module) = self.modules.get(index) {
                let end = (end_of_stream || ctx.response.finish_now) && failure.is_none();
                if let Err(e) = module.response_body_filter(body, end, ctx) {
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Runs [`Phase::response_error_filter`]; the client's error event, if a module rendered
    /// one.
    pub fn response_error_filter(
        &self,
        error: &GatewayError,
        ctx: &mut RequestCtx,
    ) -> Option<Bytes> {
        let mut event = None;
        for module in self.modules.iter().rev() {
            module.response_error_filter(error, &mut event, ctx);
        }
        event
    }

    /// Runs [`Phase::logging`].
    pub fn logging(&self, req: &RequestHeader, ctx: &mut RequestCtx) {
        for module in self.modules.iter().rev() {
            module.logging(req, ctx);
        }
    }
}

/// The modules that asked for one response's body, in the order they run: a fixed array,
/// so that recording them allocates nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct BodyHooks {
    len: u8,
    indexes: [u8; 16],
}

impl BodyHooks {
    fn push(&mut self, index: usize) {
        // The chain has fewer than 16 modules (checked by a test); a module past that would
        // silently miss its body calls, so it is recorded as long as there is room.
        if let (Some(slot), Ok(index)) = (
            self.indexes.get_mut(usize::from(self.len)),
            u8::try_from(index),
        ) {
            *slot = index;
            self.len += 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.indexes[..usize::from(self.len)]
            .iter()
            .map(|i| usize::from(*i))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::Snapshot;

    /// Records every call it gets, to check the order phases run in.
    struct Probe {
        name: &'static str,
        calls: Arc<Mutex<Vec<String>>>,
        wants_body: bool,
        answer_body: bool,
    }

    impl Probe {
        fn log(&self, phase: &str) {
            self.calls
                .lock()
                .unwrap()
                .push(format!("{}:{phase}", self.name));
        }
    }

    impl Phase for Probe {
        fn name(&self) -> &'static str {
            self.name
        }
        fn request_filter(
            &self,
            _req: &RequestHeader,
            _ctx: &mut RequestCtx,
        ) -> Result<Flow, GatewayError> {
            self.log("request");
            Ok(Flow::Continue)
        }
        fn request_body_filter(
            &self,
            _body: &mut RequestBody,
            _ctx: &mut RequestCtx,
        ) -> Result<Flow, GatewayError> {
            self.log("body");
            if self.answer_body {
                let answer = Box::pin(async {
                    Ok(Flow::Respond(LocalResponse {
                        status: 200,
                        body: Bytes::from_static(b"{}"),
                    }))
                });
                return Ok(Flow::Wait(answer));
            }
            Ok(Flow::Continue)
        }
        fn response_filter(
            &self,
            _resp: &mut ResponseHeader,
            _ctx: &mut RequestCtx,
        ) -> Result<(), GatewayError> {
            self.log("response");
            Ok(())
        }
        fn wants_response_body(&self, _ctx: &RequestCtx) -> bool {
            self.wants_body
        }
        fn response_body_filter(
            &self,
            body: &mut Vec<Bytes>,
            _end: bool,
            _ctx: &mut RequestCtx,
        ) -> Result<(), GatewayError> {
            self.log("response_body");
            body.push(Bytes::from(self.name));
            Ok(())
        }
        fn logging(&self, _req: &RequestHeader, _ctx: &mut RequestCtx) {
            self.log("logging");
        }
    }

    fn ctx() -> RequestCtx {
        let snap: Snapshot = crate::config::parse("", None, &crate::config::ProcessSource).unwrap();
        RequestCtx::new(Arc::new(snap), http::HeaderValue::from_static("req_test"))
    }

    fn chain(calls: &Arc<Mutex<Vec<String>>>, answer_in: Option<&'static str>) -> Chain {
        let probe = |name: &'static str, wants_body: bool| -> Box<dyn Phase> {
            Box::new(Probe {
                name,
                calls: calls.clone(),
                wants_body,
                answer_body: answer_in == Some(name),
            })
        };
        Chain::new(vec![probe("a", true), probe("b", false), probe("c", true)])
    }

    #[tokio::test]
    async fn requests_go_in_chain_order_and_responses_come_back_reversed() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let chain = chain(&calls, None);
        let mut ctx = ctx();
        let req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        assert!(chain
            .request_filter(&req, &mut ctx)
            .await
            .unwrap()
            .is_none());
        let mut resp = ResponseHeader::build(200, None).unwrap();
        chain.response_filter(&mut resp, &mut ctx).unwrap();
        let mut body = Vec::new();
        chain
            .response_body_filter(&mut body, true, &mut ctx)
            .unwrap();
        chain.logging(&req, &mut ctx);
        assert_eq!(
            *calls.lock().unwrap(),
            [
                "a:request",
                "b:request",
                "c:request",
                "c:response",
                "b:response",
                "a:response",
                "c:response_body",
                "a:response_body",
                "c:logging",
                "b:logging",
                "a:logging",
            ]
        );
        assert_eq!(body, [Bytes::from("c"), Bytes::from("a")]);
    }

    #[tokio::test]
    async fn a_waited_answer_stops_the_request_phases() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let chain = chain(&calls, Some("b"));
        let mut ctx = ctx();
        let mut body = RequestBody {
            bytes: Bytes::new(),
            peek: Peek::default(),
        };
        let answer = chain
            .request_body_filter(&mut body, &mut ctx)
            .await
            .unwrap();
        assert!(matches!(answer, Some(Answer::Local(a)) if a.status == 200));
        assert_eq!(*calls.lock().unwrap(), ["a:body", "b:body"]);
    }

    #[test]
    fn the_standard_chain_fits_the_body_hook_table() {
        let log = Arc::new(
            crate::access_log::AccessLog::start(crate::config::AccessLogTarget::Off).unwrap(),
        );
        let chain = Chain::standard(log);
        let names: Vec<_> = chain.names().collect();
        assert!(names.len() <= 16, "{names:?}");
        assert_eq!(names.first(), Some(&"observe"));
        assert_eq!(names.last(), Some(&"credentials"));
    }
}
