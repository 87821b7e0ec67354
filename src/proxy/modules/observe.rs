//! After the last byte: the request metrics and the access-log line. Outermost in the
//! chain, so its logging runs last and sees what every other module settled (the status,
//! the usage and its price).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora_http::RequestHeader;
use serde::Serialize;

use crate::access_log::AccessLog;
use crate::metrics::metrics;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::Phase;

pub struct Observe {
    access_log: Arc<AccessLog>,
}

impl Observe {
    pub fn new(access_log: Arc<AccessLog>) -> Observe {
        Observe { access_log }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    ts: f64,
    request_id: &'a str,
    key: &'a str,
    surface: &'a str,
    method: &'a str,
    path: &'a str,
    model: Option<&'a str>,
    route: &'a str,
    provider: &'a str,
    upstream_model: Option<&'a str>,
    status: u16,
    stream: bool,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cost_usd: f64,
    duration_ms: f64,
    ttfb_ms: Option<f64>,
    overhead_us: u64,
    attempts: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_class: Option<&'static str>,
    client_gone: bool,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

impl Phase for Observe {
    fn name(&self) -> &'static str {
        "observe"
    }

    /// Reads everything; writes nothing back. The line goes to the access log's writer
    /// thread, never to a file from here.
    fn logging(&self, req: &RequestHeader, ctx: &mut RequestCtx) {
        let elapsed = ctx.started.elapsed();
        let m = metrics();
        let surface = ctx.format.as_str();
        let model = ctx.model_label();
        let provider = ctx.provider_label();
        let status = match ctx.response.status {
            0 => 499,
            s => s,
        };
        m.requests
            .with_label_values(&[surface, model, provider, status_label(status)])
            .inc();
        m.request_duration
            .with_label_values(&[surface, model, provider])
            .observe(elapsed.as_secs_f64());
        let ttfb = ctx
            .response
            .first_byte
            .map(|t| t.duration_since(ctx.started));
        if let Some(ttfb) = ttfb {
            m.time_to_first_byte
                .with_label_values(&[model, provider])
                .observe(ttfb.as_secs_f64());
        }
        let overhead = elapsed.saturating_sub(ctx.upstream.wait);
        m.overhead
            .with_label_values(&[surface])
            .observe(overhead.as_secs_f64());
        let usage = ctx.usage;
        let line = Line {
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            request_id: ctx.id.to_str().unwrap_or("-"),
            key: ctx.key_name(),
            surface,
            method: req.method.as_str(),
            path: req.uri.path(),
            model: ctx.model.as_deref(),
            route: model,
            provider,
            upstream_model: ctx.upstream.model.as_deref(),
            status,
            stream: ctx.stream,
            input_tokens: usage.input,
            output_tokens: usage.output,
            cached_input_tokens: usage.cached_input,
            cost_usd: ctx.cost,
            duration_ms: ms(elapsed),
            ttfb_ms: ttfb.map(ms),
            overhead_us: overhead.as_micros() as u64,
            attempts: ctx.upstream.attempts.len(),
            error: ctx.error.as_ref().map(ToString::to_string),
            error_class: ctx.error.as_ref().map(|e| e.class()),
            client_gone: ctx.response.client_gone,
        };
        match serde_json::to_vec(&line) {
            Ok(bytes) => self.access_log.write(bytes),
            Err(e) => tracing::warn!("cannot encode access log line: {e}"),
        }
    }
}

/// Status label without formatting a string per request.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        429 => "429",
        431 => "431",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        529 => "529",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
