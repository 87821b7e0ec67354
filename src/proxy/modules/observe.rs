//! After the last byte: the request metrics and the access-log line. Outermost in the
//! chain, so its logging runs last and sees what every other module settled (the status,
//! the usage and its price).

use std::cell::{OnceCell, RefCell};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Histogram, IntCounter};

use crate::access_log::{AccessLog, JsonLine};
use crate::key;
use crate::metrics::metrics;
use crate::metrics::series::Series;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::Phase;
use pingora_http::RequestHeader;

pub struct Observe {
    access_log: Arc<AccessLog>,
}

/// A request's series, by surface, model entry, provider and status.
struct RequestSeries {
    requests: IntCounter,
    duration: Histogram,
    /// Made on the first answer that has a first byte: a label set of errors alone keeps
    /// no empty series.
    ttfb: OnceCell<Histogram>,
    overhead: Histogram,
}

thread_local! {
    static SERIES: RefCell<Series<4, RequestSeries>> = RefCell::new(Series::default());
}

impl Observe {
    pub fn new(access_log: Arc<AccessLog>) -> Observe {
        Observe { access_log }
    }
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
        let ttfb = ctx
            .response
            .first_byte
            .map(|t| t.duration_since(ctx.started));
        let overhead = elapsed.saturating_sub(ctx.upstream.wait);
        SERIES.with_borrow_mut(|series| {
            let labels = [surface, model, provider, status_label(status)];
            let handles = series.get(labels, |l| RequestSeries {
                requests: m.requests.with_label_values(l),
                duration: m.request_duration.with_label_values(&l[..3]),
                ttfb: OnceCell::new(),
                overhead: m.overhead.with_label_values(&l[..1]),
            });
            handles.requests.inc();
            handles.duration.observe(elapsed.as_secs_f64());
            if let Some(ttfb) = ttfb {
                handles
                    .ttfb
                    .get_or_init(|| m.time_to_first_byte.with_label_values(&[model, provider]))
                    .observe(ttfb.as_secs_f64());
            }
            handles.overhead.observe(overhead.as_secs_f64());
        });
        let usage = ctx.usage;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut line = JsonLine::with_capacity(512);
        line.fixed(key!("ts"), ts, 6)
            .str(key!("request_id"), ctx.id.to_str().unwrap_or("-"))
            .str(key!("key"), ctx.key_name())
            .str(key!("surface"), surface)
            .str(key!("method"), req.method.as_str())
            .str(key!("path"), super::routing::clip(req.uri.path(), 1024))
            .opt_str(key!("model"), ctx.model.as_deref())
            .str(key!("route"), model)
            .str(key!("provider"), provider)
            .opt_str(key!("upstream_model"), ctx.upstream.model.as_deref())
            .u64(key!("status"), u64::from(status))
            .bool(key!("stream"), ctx.stream)
            .u64(key!("input_tokens"), usage.input)
            .u64(key!("output_tokens"), usage.output)
            .u64(key!("cached_input_tokens"), usage.cached_input)
            .f64(key!("cost_usd"), ctx.cost)
            .fixed(key!("duration_ms"), elapsed.as_micros() as u64, 3);
        match ttfb {
            Some(ttfb) => line.fixed(key!("ttfb_ms"), ttfb.as_micros() as u64, 3),
            None => line.opt_str(key!("ttfb_ms"), None),
        };
        line.u64(key!("overhead_us"), overhead.as_micros() as u64)
            .u64(key!("attempts"), ctx.upstream.attempts.len() as u64);
        if let Some(error) = &ctx.error {
            line.str(key!("error"), &error.to_string())
                .str(key!("error_class"), error.class());
        }
        line.bool(key!("client_gone"), ctx.response.client_gone);
        if let Some(result) = ctx.cache.result {
            line.str(key!("cache"), result);
            if let Some(saved) = ctx.cache.saved {
                // What the provider reported for the answer this one replayed: spent once,
                // saved here.
                line.u64(key!("cache_saved_tokens"), saved.input + saved.output);
            }
        }
        if let Some(crate::auth::Principal::Jwt(caller)) = &ctx.principal {
            line.str(key!("subject"), &caller.subject);
        }
        if ctx.limits.estimated || ctx.accounting.estimated {
            // The tokens and cost above are sira's estimate: the provider reported none.
            line.bool(key!("estimated"), true);
        }
        self.access_log.write(&line.finish());
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
