//! The gateway's request path, as a Pingora HTTP application.
//!
//! sira implements Pingora's `HttpServerApp` and drives upstream connections itself (made by
//! Pingora's `TransportConnector`, pooled by [`pool`]) rather than through `ProxyHttp`: an
//! LLM gateway must read the whole body before it can pick an upstream (the model is in the
//! body), and `ProxyHttp` can only replay a body it read itself through its 64 KiB retry
//! buffer, which agentic clients' requests routinely exceed. Owning the exchange keeps the
//! body as one `Bytes`, sent (and re-sent on retry) to any target whatever its size. The
//! phases mirror Pingora's:
//!
//! | phase | module |
//! |---|---|
//! | route, request id, authenticate | [`crate::routes`], [`crate::auth`] |
//! | read body (bounded), peek model | [`body`] |
//! | pick target, retries, fallbacks, upstream request | [`upstream`] |
//! | translate request (per target) | [`crate::translate`] |
//! | relay response, error, stream; usage tap or translation | [`relay`], [`stream`], [`crate::accounting`] |
//! | metrics, access log | [`log`] |
//!
//! Every step takes the request's [`RequestCtx`], which pins the config snapshot the
//! request started with.

mod body;
mod ctx;
mod local;
mod log;
mod pool;
mod relay;
mod stream;
mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderValue;
use lua_free_filters::Filter;
use pingora_core::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream,
};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;

pub use ctx::RequestCtx;

use crate::access_log::AccessLog;
use crate::auth::{authenticate, Principal};
use crate::config::Live;
use crate::error::GatewayError;
use crate::routes::{classify, Operation, RouteError};

/// Seconds an idle client connection is kept open between requests.
const KEEPALIVE_SECS: u64 = 60;

/// The main listeners' application.
pub struct Gateway {
    pub live: Arc<Live>,
    pub pool: Arc<pool::UpstreamPool>,
    pub access_log: Arc<AccessLog>,
    options: HttpServerOptions,
}

impl Gateway {
    pub fn new(live: Arc<Live>, access_log: Arc<AccessLog>) -> Gateway {
        let mut options = HttpServerOptions::default();
        // h2c on the plain listeners, as CONTRACT.md promises.
        options.h2c = true;
        Gateway {
            live,
            pool: pool::UpstreamPool::new(),
            access_log,
            options,
        }
    }
}

#[async_trait]
impl HttpServerApp for Gateway {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            // The client closed an idle keep-alive connection, or sent garbage: nothing to answer.
            Ok(false) | Err(_) => return None,
        }
        session.set_keepalive(if *shutdown.borrow() {
            None
        } else {
            Some(KEEPALIVE_SECS)
        });
        let mut ctx = RequestCtx::new(self.live.load_full(), request_id(&session));
        if let Err(error) = self.handle(&mut session, &mut ctx).await {
            local::fail(&mut session, &mut ctx, error).await;
        }
        log::finish(self, &session, &mut ctx);
        if ctx.client_gone {
            return None;
        }
        let persistent = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, persistent)),
            Ok(None) | Err(_) => None,
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}

impl Gateway {
    /// Everything from routing to the last response byte. An `Err` means nothing was sent
    /// yet and the error is rendered in the client's surface shape.
    async fn handle(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let (op, format, path_model) = {
            let header = session.req_header();
            let route = classify(&header.method, header.uri.path()).map_err(|e| match e {
                RouteError::NotFound => {
                    GatewayError::NotFound(format!("{} {}", header.method, header.uri.path()))
                }
                RouteError::MethodNotAllowed(allowed) => GatewayError::MethodNotAllowed(allowed),
            })?;
            ctx.format = route.format;
            ctx.op = Some(route.op);
            let principal = authenticate(&ctx.snap.keys, &header.headers, header.uri.query())?;
            ctx.principal = Some(principal);
            (route.op, route.format, route.path_model.map(str::to_owned))
        };
        if op == Operation::ListModels {
            return local::list_models(session, ctx).await;
        }

        let body = body::read_bounded(session, ctx.snap.server.max_request_body).await?;
        let peek = body::peek(&body)?;
        let model = match (path_model, &peek.model) {
            (Some(model), _) => model,
            (None, Some(model)) => model.clone(),
            (None, None) => {
                return Err(GatewayError::invalid_param(
                    "model",
                    "you must provide a model parameter",
                ))
            }
        };
        ctx.stream = peek.stream || matches!(op, Operation::GenerateContent { stream: true });
        ctx.model = Some(model.clone());
        let snap = ctx.snap.clone();
        let resolution = snap
            .models
            .resolve(&model)
            .ok_or_else(|| GatewayError::UnknownModel {
                model: model.clone(),
                surface: format,
            })?;
        if !ctx.principal.as_ref().is_some_and(|p| p.allows(&model)) {
            return Err(GatewayError::ModelNotAllowed(model));
        }
        ctx.route = Some(resolution.route.clone());
        if op == Operation::CountTokens && !counts_upstream(resolution.route) {
            return local::count_tokens(session, ctx, &body).await;
        }
        // The session stays borrowed by the exchange (to notice a client leaving), so the
        // few headers forwarded upstream are taken from a copy.
        let client_headers = session.req_header().headers.clone();
        let request = upstream::Request {
            op,
            client_headers: &client_headers,
            body: &body,
            peek: &peek,
            model: &model,
        };
        let capture = resolution.capture.map(str::to_owned);
        let upstream = upstream::connect(
            self,
            session,
            ctx,
            resolution.route.clone(),
            capture,
            &request,
        )
        .await?;
        relay::relay(self, session, ctx, upstream).await
    }
}

/// Anthropic counts tokens itself; for a model served elsewhere sira answers
/// `count_tokens` with a local estimate (CONTRACT.md: "answered locally when the provider
/// has none").
fn counts_upstream(route: &crate::models::ModelRoute) -> bool {
    route
        .targets
        .first()
        .is_some_and(|t| t.provider.kind == crate::provider::ProviderKind::Anthropic)
}

/// Filters attached to the caller's key, then to the model entry.
pub(crate) fn attached_filters(ctx: &RequestCtx) -> impl Iterator<Item = &Arc<dyn Filter>> {
    let key_filters = match &ctx.principal {
        Some(Principal::Key(entry)) => entry.filters.as_slice(),
        _ => &[],
    };
    let model_filters = ctx.route.as_ref().map_or(&[][..], |r| r.filters.as_slice());
    key_filters.iter().chain(model_filters)
}

/// The client's `x-request-id` when it is a sane token, else a new one.
fn request_id(session: &ServerSession) -> HeaderValue {
    if let Some(given) = session.req_header().headers.get(relay::X_REQUEST_ID) {
        let sane = (1..=128).contains(&given.len())
            && given.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if sane {
            return given.clone();
        }
    }
    new_request_id()
}

/// Unique within a process run and unpredictable across runs, without a syscall per
/// request: a random per-process prefix and a counter.
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
        let mut bytes = [0u8; 4];
        // If the OS generator fails the ids are still unique, just predictable.
        let _ = getrandom::fill(&mut bytes);
        u32::from_le_bytes(bytes)
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let text = format!("req_{:08x}{:012x}", *PREFIX, n);
    // Hex digits and underscore are always a valid header value.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("req_unknown"))
}
