//! Which target to try, in what order, and whether to try again: the model's weighted
//! targets, its retries (with backoff), then its fallbacks, and what each failure means.
//!
//! The request body is held by sira (not by Pingora's 64 KiB retry buffer), so every try,
//! on any target of any fallback model, can send the full body — rewritten for that target —
//! whatever its size. A try that fails before the provider could act on the request (no
//! connection, the request not written whole) or that the provider answered with a failure
//! status (5xx, 429, 408) moves on to the next candidate. A try whose request was written
//! and then got no answer (reset, timeout, invalid header) may have started a generation:
//! it is never sent again, to this target or any other ([`ExchangeError::may_have_run`]).
//! The last candidate's answer, good or bad, is what the client gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;

use super::ctx::{Attempt, RequestCtx};
use super::exchange::{Destination, ExchangeError, RequestWire, UpstreamResponse};
use super::hop;
use super::phases::{RequestBody, UpstreamRequest};
use super::Gateway;
use crate::auth::Principal;
use crate::error::GatewayError;
use crate::metrics::metrics;
use crate::models::{estimate_tokens, ModelRoute, OrderHints, RouteStrategy};
use crate::pool::Outcome;
use crate::provider::Provider;

/// A model entry to try: the client's, then its fallbacks.
struct Candidate {
    route: Arc<ModelRoute>,
    /// What the entry's wildcard matched.
    capture: Option<String>,
    /// The name the entry was reached by.
    requested: String,
}

/// Why one try did not give the client its answer.
enum TryError {
    /// Nothing was sent: this target cannot take the request as written.
    Refused(GatewayError),
    Failed {
        error: GatewayError,
        /// Metric outcome: `error` or `timeout`.
        kind: &'static str,
        /// The request may have been acted on: it must not be sent again.
        may_have_run: bool,
    },
    ClientGone,
}

/// Tries candidates in order until one answers with a response header that is not a
/// retryable failure, or none is left (or a failure may have run the request).
///
/// Each model entry gets `retry.attempts` counted tries, spread over its targets. A try
/// that sent nothing (no endpoint could take it, no connection, the target cannot express
/// the request) is not counted: the next endpoint or target is tried at once, at most once
/// per endpoint. A retryable answer (5xx, 429, 408) is held while the next tries run and is
/// what the client gets if none of them does better.
pub async fn proxy_upstream(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    body: &RequestBody,
) -> Result<UpstreamResponse, GatewayError> {
    let candidates = candidates(ctx)?;
    let mut last_error: Option<GatewayError> = None;
    let mut refused: Option<GatewayError> = None;
    let mut held: Option<UpstreamResponse> = None;
    let key = match &ctx.principal {
        Some(Principal::Key(entry)) => Some(entry.name.clone()),
        _ => None,
    };
    for (n, candidate) in candidates.into_iter().enumerate() {
        let route = candidate.route.clone();
        let hints = OrderHints {
            key: key.as_deref(),
            // The client chose among the targets of the model it named, not its fallbacks'.
            chosen: ctx.route_choice.as_deref().filter(|_| n == 0),
            tokens: if route.strategy == RouteStrategy::LowestCost {
                estimate_tokens(&body.bytes, route.default_max_tokens)
            } else {
                (0, 0)
            },
        };
        let order = route.target_order(&hints);
        let attempts = route.retry.attempts.max(1);
        // Every endpoint of every target once, plus each target once (a refusal).
        let free_limit: usize = route
            .targets
            .iter()
            .map(|t| t.provider.endpoints.len() + 1)
            .sum();
        let (mut counted, mut free, mut turn) = (0u32, 0usize, 0usize);
        while counted < attempts {
            let Some(target) = order
                .get(turn % order.len().max(1))
                .and_then(|i| route.targets.get(*i))
            else {
                break;
            };
            turn += 1;
            let model = ModelRoute::upstream_model(
                target,
                &candidate.requested,
                candidate.capture.as_deref(),
            )
            .to_owned();
            ctx.route = Some(route.clone());
            ctx.upstream.provider = Some(target.provider.clone());
            ctx.upstream.model = Some(model.clone());
            let provider = target.provider.clone();
            let pick = match gw
                .chain
                .upstream_peer(target, session.req_header(), body, ctx)
            {
                Ok(pick) => pick,
                Err(error) => {
                    record(ctx, &provider, "no_healthy_endpoint".into());
                    last_error = Some(error);
                    spend_unsent(
                        untried(ctx, &route),
                        &route,
                        &mut counted,
                        &mut free,
                        free_limit,
                    )
                    .await;
                    continue;
                }
            };
            let endpoint_index = pick.index;
            let Some(endpoint) = provider.endpoints.get(endpoint_index) else {
                break;
            };
            ctx.upstream.inflight = Some(pick.inflight);
            let format = provider.kind.format_for(ctx.format);
            ctx.response.upstream_format = Some(format);
            let started = Instant::now();
            ctx.upstream.try_started = Some(started);
            let built = hop::upstream_request(&session.req_header().headers)
                .and_then(|base| build(gw, ctx, body, base, target, endpoint, &model, format));
            let outcome = match built {
                Ok((header, bytes)) => {
                    try_once(gw, session, ctx, &provider, endpoint, &header, &bytes).await
                }
                Err(e) => Err(TryError::Refused(e)),
            };
            let label = |outcome: &str| {
                metrics()
                    .upstream_attempts
                    .with_label_values(&[&provider.name, &endpoint.url, outcome])
                    .inc();
            };
            match outcome {
                Ok(upstream) => {
                    let header = upstream.header();
                    let status = header.map_or(0, |h| h.status.as_u16());
                    if status < 500 && status != 429 {
                        target.latency.observe(started.elapsed());
                    }
                    provider.pool.report(
                        endpoint_index,
                        Outcome::Answered {
                            status,
                            first_byte: started.elapsed(),
                            retry_after: header.and_then(|h| retry_after(&h.headers)),
                        },
                    );
                    counted += 1;
                    if retryable_status(status) {
                        label("retried");
                        record(ctx, &provider, format!("status_{status}"));
                        ctx.upstream
                            .failed
                            .push((provider.name.clone(), endpoint_index));
                        held = Some(upstream);
                        if counted < attempts {
                            tokio::time::sleep(route.retry.delay(counted)).await;
                        }
                        continue;
                    }
                    label(if status < 500 { "ok" } else { "error" });
                    record(ctx, &provider, "ok".into());
                    return Ok(upstream);
                }
                Err(TryError::Refused(error)) => {
                    record(ctx, &provider, "refused".into());
                    refused.get_or_insert(error);
                    spend_unsent(
                        untried(ctx, &route),
                        &route,
                        &mut counted,
                        &mut free,
                        free_limit,
                    )
                    .await;
                }
                Err(TryError::ClientGone) => {
                    ctx.response.client_gone = true;
                    return Err(GatewayError::Internal(
                        "client closed the connection".into(),
                    ));
                }
                Err(TryError::Failed {
                    error,
                    kind,
                    may_have_run,
                }) => {
                    let slow = (kind == "timeout").then(|| started.elapsed());
                    provider.pool.report(
                        endpoint_index,
                        Outcome::Failed {
                            reason: &error.to_string(),
                            slow,
                        },
                    );
                    label(if may_have_run { kind } else { "retried" });
                    record(ctx, &provider, kind.to_owned());
                    ctx.upstream
                        .failed
                        .push((provider.name.clone(), endpoint_index));
                    if may_have_run {
                        return Err(error);
                    }
                    last_error = Some(error);
                    spend_unsent(
                        untried(ctx, &route),
                        &route,
                        &mut counted,
                        &mut free,
                        free_limit,
                    )
                    .await;
                }
            }
        }
    }
    if let Some(answer) = held {
        return Ok(answer);
    }
    Err(last_error
        .or(refused)
        .unwrap_or_else(|| GatewayError::Internal("no upstream candidate".into())))
}

/// After a try that reached no provider: moving on to an endpoint this request has not
/// tried yet costs nothing (at most `free_limit` times); otherwise it counts as a try, and
/// the next one waits for the backoff.
async fn spend_unsent(
    untried: bool,
    route: &ModelRoute,
    counted: &mut u32,
    free: &mut usize,
    free_limit: usize,
) {
    if untried && *free < free_limit {
        *free += 1;
        return;
    }
    *counted += 1;
    if *counted < route.retry.attempts.max(1) {
        tokio::time::sleep(route.retry.delay(*counted)).await;
    }
}

/// Whether some endpoint of the route's targets has not failed this request yet.
fn untried(ctx: &RequestCtx, route: &ModelRoute) -> bool {
    let failed = &ctx.upstream.failed;
    route.targets.iter().any(|t| {
        (0..t.provider.endpoints.len()).any(|i| {
            !failed
                .iter()
                .any(|(name, j)| *name == t.provider.name && *j == i)
        })
    })
}

/// A `retry-after` in seconds (the HTTP-date form is rare from model APIs and ignored),
/// capped at 10 minutes.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds.min(600.0)))
}

/// The client's model entry, then its fallbacks.
fn candidates(ctx: &RequestCtx) -> Result<Vec<Candidate>, GatewayError> {
    let (Some(primary), Some(requested)) = (ctx.route.clone(), ctx.model.clone()) else {
        return Err(GatewayError::Internal(
            "no model entry for the request".into(),
        ));
    };
    let mut candidates = vec![Candidate {
        route: primary.clone(),
        capture: ctx.capture.clone(),
        requested,
    }];
    for name in &primary.fallbacks {
        if let Some(found) = ctx.snap.models.resolve(name) {
            candidates.push(Candidate {
                route: found.route.clone(),
                capture: found.capture.map(str::to_owned),
                requested: name.to_string(),
            });
        }
    }
    Ok(candidates)
}

/// 5xx, 429 and 408 mean "this target cannot serve it now": another one may.
fn retryable_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

fn record(ctx: &mut RequestCtx, provider: &Provider, outcome: String) {
    ctx.upstream.attempts.push(Attempt {
        provider: provider.name.clone(),
        outcome,
    });
}

/// The request for one try, as the upstream phases build it from `base` (the client's
/// end-to-end headers).
#[allow(clippy::too_many_arguments)]
fn build(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    body: &RequestBody,
    base: pingora_http::RequestHeader,
    target: &crate::models::Target,
    endpoint: &crate::provider::Endpoint,
    model: &str,
    format: crate::format::Format,
) -> Result<(pingora_http::RequestHeader, Bytes), GatewayError> {
    let Some(op) = ctx.op else {
        return Err(GatewayError::Internal("no route for the request".into()));
    };
    let mut upstream = UpstreamRequest {
        target,
        endpoint,
        model,
        client: body,
        stream: ctx.stream,
        format,
        op,
        header: base,
        body: body.bytes.clone(),
    };
    gw.chain.upstream_request_filter(&mut upstream, ctx)?;
    let UpstreamRequest {
        mut header, body, ..
    } = upstream;
    header
        .insert_header(http::header::CONTENT_LENGTH, body.len())
        .map_err(|e| GatewayError::Internal(format!("cannot frame the request: {e}").into()))?;
    Ok((header, body))
}

/// One try: resolve, connect, send, wait for the response header, while watching for the
/// client going away. The time spent on the network is booked to `ctx.upstream.wait`, which
/// `sira_overhead_seconds` excludes.
async fn try_once(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    provider: &Provider,
    endpoint: &crate::provider::Endpoint,
    header: &pingora_http::RequestHeader,
    body: &Bytes,
) -> Result<UpstreamResponse, TryError> {
    let unreachable = |reason: String| TryError::Failed {
        error: GatewayError::UpstreamUnreachable {
            provider: provider.name.to_string(),
            reason,
        },
        kind: "error",
        may_have_run: false,
    };
    let wire = RequestWire::new(header, body)
        .map_err(|e| unreachable(format!("cannot build request: {e}")))?;
    let network = Instant::now();
    let exchange = async {
        let addr = endpoint
            .addr(provider.timeouts.connect)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut timeouts = provider.timeouts;
        // `total` bounds the whole exchange, the wait for the header included.
        if let Some(total) = timeouts.total {
            timeouts.first_byte = timeouts.first_byte.min(total);
        }
        let dest = Destination {
            addr,
            endpoint,
            timeouts,
        };
        gw.exchange
            .send(&dest, &wire)
            .await
            .map_err(|e| failed(provider, e))
    };
    // The end of a shutdown's grace period is not watched here: a request still waiting for
    // its answer then is ended with the process (its connection closed). Watching costs a
    // waiter registration on every request, since every request waits here; streams, which
    // are what outlasts a grace period, watch it between events (`relay`).
    let outcome = tokio::select! {
        outcome = exchange => outcome,
        _ = session.read_body_or_idle(true) => Err(TryError::ClientGone),
    };
    ctx.upstream.wait += network.elapsed();
    outcome
}

fn failed(provider: &Provider, e: ExchangeError) -> TryError {
    let name = provider.name.to_string();
    let may_have_run = e.may_have_run();
    let (error, kind) = match e {
        ExchangeError::ConnectTimeout(after) | ExchangeError::FirstByteTimeout(after) => (
            GatewayError::UpstreamTimeout {
                provider: name,
                after,
            },
            "timeout",
        ),
        ExchangeError::BadResponse(_) => (
            GatewayError::UpstreamBroken {
                provider: name,
                reason: e.to_string(),
            },
            "error",
        ),
        ExchangeError::Connect(_) | ExchangeError::Unsent(_) | ExchangeError::NoResponse(_) => (
            GatewayError::UpstreamUnreachable {
                provider: name,
                reason: e.to_string(),
            },
            "error",
        ),
    };
    TryError::Failed {
        error,
        kind,
        may_have_run,
    }
}

/// When the exchange with the provider that answered must be over (`timeouts.total`,
/// counted from the start of its try), streams included.
pub fn total_deadline(ctx: &RequestCtx) -> Option<(tokio::time::Instant, Duration)> {
    let total: Duration = ctx.upstream.provider.as_ref()?.timeouts.total?;
    let started = ctx.upstream.try_started?;
    Some((tokio::time::Instant::from_std(started) + total, total))
}
