//! Prometheus metrics (CONTRACT.md, "Metrics"), served on the admin listener.
//!
//! Label values come from the config (model entry names, provider and key names) or from
//! small enums, never from raw request values, so cardinality is bounded by the config: a
//! wildcard entry such as `openai/*` is one `model` label however many names clients send
//! through it (the access log has the exact name).

use std::sync::LazyLock;

pub mod series;

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub time_to_first_byte: HistogramVec,
    pub upstream_attempts: IntCounterVec,
    pub tokens: IntCounterVec,
    pub cost_usd: prometheus::CounterVec,
    pub active_streams: IntGauge,
    pub config_reloads: IntCounterVec,
    pub config_info: GaugeVec,
    pub overhead: HistogramVec,
    pub access_log_dropped: IntCounter,
    pub buffer_limits: IntCounterVec,
    pub upstream_selections: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_inflight: IntGaugeVec,
    pub circuit_state: IntGaugeVec,
    pub rate_limited: IntCounterVec,
    pub filter_denied: IntCounterVec,
    pub cache_requests: IntCounterVec,
    pub cache_saved_tokens: IntCounterVec,
    pub cache_bytes: IntGauge,
    pub budget_remaining: GaugeVec,
    pub limits_store_up: IntGauge,
}

/// A bounded buffer, for `sira_buffer_limit_exceeded_total{buffer}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    /// One event of a provider's stream (`server.max_sse_event`).
    SseEvent,
    /// A response body read whole (`server.max_response_body`).
    ResponseBody,
    /// Tool call arguments held back while translating a stream
    /// (`server.max_tool_arguments`).
    ToolArguments,
    /// A client's request header (`server.max_header_size`, `server.max_headers`).
    RequestHeader,
}

impl Buffer {
    /// The config key that bounds this buffer.
    pub const fn setting(self) -> &'static str {
        match self {
            Buffer::SseEvent => "server.max_sse_event",
            Buffer::ResponseBody => "server.max_response_body",
            Buffer::ToolArguments => "server.max_tool_arguments",
            Buffer::RequestHeader => "server.max_header_size",
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Buffer::SseEvent => "sse_event",
            Buffer::ResponseBody => "response_body",
            Buffer::ToolArguments => "tool_arguments",
            Buffer::RequestHeader => "request_header",
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Registration only fails on a duplicate name or bad label set, which would be a bug in
/// this file caught by the first test run; falling back to an unregistered metric keeps the
/// gateway serving even then.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        tracing::error!("metric registration failed: {e}");
    }
    metric
}

macro_rules! counter_vec {
    ($registry:expr, $name:expr, $help:expr, $labels:expr) => {
        register(
            $registry,
            IntCounterVec::new(Opts::new($name, $help), $labels)
                .unwrap_or_else(|e| unreachable_metric(e)),
        )
    };
}

macro_rules! gauge_vec {
    ($registry:expr, $name:expr, $help:expr, $labels:expr) => {
        register(
            $registry,
            IntGaugeVec::new(Opts::new($name, $help), $labels)
                .unwrap_or_else(|e| unreachable_metric(e)),
        )
    };
}

macro_rules! histogram_vec {
    ($registry:expr, $name:expr, $help:expr, $labels:expr, $buckets:expr) => {
        register(
            $registry,
            HistogramVec::new(HistogramOpts::new($name, $help).buckets($buckets), $labels)
                .unwrap_or_else(|e| unreachable_metric(e)),
        )
    };
}

/// Metric constructors only fail on invalid names, which are constants here.
#[allow(clippy::panic)]
fn unreachable_metric(e: prometheus::Error) -> ! {
    panic!("invalid metric definition: {e}")
}

/// 100µs to ~100s: LLM requests span milliseconds (errors, cache hits) to minutes (streams).
fn duration_buckets() -> Vec<f64> {
    exponential_buckets(0.0001, 2.5, 16).unwrap_or_default()
}

/// 5µs to ~80ms: time spent inside sira itself.
fn overhead_buckets() -> Vec<f64> {
    exponential_buckets(0.000005, 2.0, 15).unwrap_or_default()
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        Metrics {
            requests: counter_vec!(r, "sira_requests_total", "Requests answered, by client surface, model entry, provider and HTTP status.", &["surface", "model", "provider", "status"]),
            request_duration: histogram_vec!(r, "sira_request_duration_seconds", "Time from request start to the last response byte.", &["surface", "model", "provider"], duration_buckets()),
            time_to_first_byte: histogram_vec!(r, "sira_time_to_first_byte_seconds", "Time from request start to the first response body byte (for streams, the first event).", &["model", "provider"], duration_buckets()),
            upstream_attempts: counter_vec!(r, "sira_upstream_attempts_total", "Upstream attempts by outcome (ok, error, timeout, retried).", &["provider", "endpoint", "outcome"]),
            tokens: counter_vec!(r, "sira_tokens_total", "Tokens reported by providers, by kind (input, output, cached_input); estimated=\"true\" for answers cut before their usage came, settled to sira's estimate.", &["model", "provider", "key", "kind", "estimated"]),
            cost_usd: register(
                r,
                prometheus::CounterVec::new(Opts::new("sira_cost_usd_total", "Spend in USD from the models' price tables."), &["model", "key"])
                    .unwrap_or_else(|e| unreachable_metric(e)),
            ),
            active_streams: register(
                r,
                IntGauge::new("sira_active_streams", "Streaming responses currently open.").unwrap_or_else(|e| unreachable_metric(e)),
            ),
            config_reloads: counter_vec!(r, "sira_config_reloads_total", "Config reloads by result (ok, error).", &["result"]),
            config_info: register(
                r,
                GaugeVec::new(Opts::new("sira_config_info", "1 for the SHA-256 of the config file in use."), &["sha256"])
                    .unwrap_or_else(|e| unreachable_metric(e)),
            ),
            overhead: histogram_vec!(r, "sira_overhead_seconds", "Time spent inside sira per request, upstream time excluded.", &["surface"], overhead_buckets()),
            access_log_dropped: register(
                r,
                IntCounter::new("sira_access_log_dropped_total", "Access-log lines dropped because the writer fell behind.")
                    .unwrap_or_else(|e| unreachable_metric(e)),
            ),
            buffer_limits: counter_vec!(r, "sira_buffer_limit_exceeded_total", "Requests ended because a bounded buffer would have grown past its limit (sse_event, response_body, tool_arguments, request_header).", &["buffer"]),
            upstream_selections: counter_vec!(r, "sira_upstream_selections_total", "Endpoint choices by reason (balance, hash, fallback_from_overload, retry, hedge).", &["provider", "endpoint", "reason"]),
            upstream_healthy: gauge_vec!(r, "sira_upstream_healthy", "1 when the endpoint passes its health checks (always 1 without active checks).", &["provider", "endpoint"]),
            upstream_inflight: gauge_vec!(r, "sira_upstream_inflight", "Requests in flight on the endpoint, streams until their end.", &["provider", "endpoint"]),
            budget_remaining: register(
                r,
                GaugeVec::new(Opts::new("sira_budget_remaining_usd", "USD left in each budget's current period (spend and reservations taken), by scope (key, tenant or model)."), &["scope"])
                    .unwrap_or_else(|e| unreachable_metric(e)),
            ),
            limits_store_up: register(
                r,
                IntGauge::new("sira_limits_store_up", "1 while the limits store answers (memory: always).").unwrap_or_else(|e| unreachable_metric(e)),
            ),
            filter_denied: counter_vec!(r, "sira_filter_denied_total", "Requests a deny filter refused, by key.", &["key"]),
            cache_requests: counter_vec!(r, "sira_cache_requests_total", "Cacheable requests by result: hit, miss, bypass (the client's cache-control), coalesced (answered by an identical request in flight), store (an answer kept).", &["result"]),
            cache_saved_tokens: counter_vec!(r, "sira_cache_saved_tokens_total", "Tokens a cached or coalesced answer saved (what its provider reported for it), by model, key and kind (input, output).", &["model", "key", "kind"]),
            cache_bytes: register(
                r,
                IntGauge::new("sira_cache_bytes", "Bytes of answers in the response cache's memory.").unwrap_or_else(|e| unreachable_metric(e)),
            ),
            rate_limited: counter_vec!(r, "sira_rate_limited_total", "Requests refused by a limit or budget, by key and limit (requests_per_minute, tokens_per_minute, concurrent_requests, budget).", &["key", "limit"]),
            circuit_state: gauge_vec!(r, "sira_circuit_state", "1 for the endpoint's circuit state (closed, open, half_open).", &["provider", "endpoint", "state"]),
            // Last: the fields above borrow the registry to register themselves.
            registry,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("metrics encoding failed: {e}");
        }
        out
    }

    /// Counts a request ended by the bound of `buffer`.
    pub fn buffer_limit(&self, buffer: Buffer) {
        self.buffer_limits
            .with_label_values(&[buffer.label()])
            .inc();
    }

    /// Marks `sha256` as the config in use.
    pub fn set_config(&self, sha256: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[sha256]).set(1.0);
    }
}

/// Keeps `sira_active_streams` right however a stream ends (drop runs on every path).
pub struct StreamGuard(());

impl StreamGuard {
    pub fn open() -> StreamGuard {
        metrics().active_streams.inc();
        StreamGuard(())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics().active_streams.dec();
    }
}
