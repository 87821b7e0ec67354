//! State of one request, shared by every step of the exchange and read by the access log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use crate::auth::Principal;
use crate::config::Snapshot;
use crate::error::GatewayError;
use crate::format::Format;
use crate::models::ModelRoute;
use crate::provider::Provider;
use crate::routes::Operation;
use crate::usage::Usage;

/// One upstream try, for `x-sira-attempts` and the access log.
#[derive(Debug)]
pub struct Attempt {
    pub provider: Arc<str>,
    /// `ok`, or why the next candidate was tried (`connect_error`, `timeout`, `status_503`).
    pub outcome: String,
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
    pub op: Option<Operation>,
    /// `None` until authenticated (or when authentication failed).
    pub principal: Option<Principal>,
    /// The model name the client asked for.
    pub model: Option<String>,
    /// The `models:` entry that served the request (the last one tried).
    pub route: Option<Arc<ModelRoute>>,
    pub provider: Option<Arc<Provider>>,
    pub upstream_model: Option<String>,
    pub stream: bool,
    /// Status sent to the client (0 = nothing sent).
    pub status: u16,
    pub usage: Usage,
    /// Whether the provider reported usage at all.
    pub usage_seen: bool,
    pub first_byte: Option<Instant>,
    /// Time spent waiting on providers (connect, header, body reads), excluded from
    /// `sira_overhead_seconds`.
    pub upstream_wait: Duration,
    pub attempts: Vec<Attempt>,
    /// Why the request failed, for the access log and metric labels.
    pub error: Option<GatewayError>,
    /// Hint-only parameters dropped in translation.
    pub dropped_params: Vec<&'static str>,
    /// The client went away before the response was complete.
    pub client_gone: bool,
}

impl RequestCtx {
    pub fn new(snap: Arc<Snapshot>, id: HeaderValue) -> RequestCtx {
        RequestCtx {
            snap,
            started: Instant::now(),
            id,
            format: Format::OpenAiChat,
            op: None,
            principal: None,
            model: None,
            route: None,
            provider: None,
            upstream_model: None,
            stream: false,
            status: 0,
            usage: Usage::default(),
            usage_seen: false,
            first_byte: None,
            upstream_wait: Duration::ZERO,
            attempts: Vec::new(),
            error: None,
            dropped_params: Vec::new(),
            client_gone: false,
        }
    }

    pub fn key_name(&self) -> &str {
        self.principal.as_ref().map_or("-", Principal::name)
    }

    /// The `model` metric label: the config entry's name, bounded by the config.
    pub fn model_label(&self) -> &str {
        self.route.as_ref().map_or("", |r| &r.name)
    }

    pub fn provider_label(&self) -> &str {
        self.provider.as_ref().map_or("", |p| &p.name)
    }
}
