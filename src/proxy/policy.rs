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

use super::client::Client;

use super::attempt::{try_once, TryError};
use super::ctx::{Attempt, RequestCtx, TryState};
use super::exchange::{Outgoing, UpstreamResponse};
use super::hedge::{self, Leg, LegEnd, Raced, Spare};
use super::hop;
use super::phases::{RequestBody, UpstreamRequest};
use super::Gateway;
use crate::auth::Principal;
use crate::error::GatewayError;
use crate::metrics::metrics;
use crate::models::{estimate_tokens, ModelRoute, OrderHints, RouteStrategy};
use crate::pool::{Outcome, FAILURE_PENALTY};
use crate::provider::Provider;

/// A model entry to try: the client's, then its fallbacks.
struct Candidate {
    route: Arc<ModelRoute>,
    /// What the entry's wildcard matched.
    capture: Option<String>,
    /// The name the entry was reached by.
    requested: String,
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
    session: &mut Client,
    ctx: &mut RequestCtx,
    body: &RequestBody,
) -> Result<UpstreamResponse, GatewayError> {
    let candidates = candidates(ctx)?;
    let mut last_error: Option<GatewayError> = None;
    let mut refused: Option<GatewayError> = None;
    let mut held: Option<(UpstreamResponse, TryState)> = None;
    let key = match &ctx.principal {
        Some(Principal::Key(entry)) => Some(entry.name.clone()),
        _ => None,
    };
    for (n, candidate) in candidates.into_iter().enumerate() {
        let route = candidate.route.clone();
        // A fallback entry's own limits must admit the request before it is tried.
        if n > 0 {
            if let Err(refusal) = crate::proxy::modules::limits::admit_fallback(ctx, &route) {
                // The client is told to come back (429, retry-after) rather than of the
                // failure before: a request the fallback would take later is worth retrying.
                last_error = Some(GatewayError::RateLimited(refusal));
                continue;
            }
        }
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
        // Every endpoint of every target once.
        let free_limit: usize = route
            .targets
            .iter()
            .map(|t| t.provider.endpoints.len())
            .sum();
        // Targets that cannot take this request at all (no endpoint can, or its request
        // cannot be built): skipped for the rest of this entry, at no cost.
        let mut exhausted: Vec<usize> = Vec::new();
        let (mut counted, mut free, mut turn) = (0u32, 0usize, 0usize);
        while counted < attempts {
            let Some(target_index) = next_target(&order, &exhausted, &mut turn) else {
                break;
            };
            let target = &route.targets[target_index];
            let model = ModelRoute::upstream_model(
                target,
                &candidate.requested,
                candidate.capture.as_deref(),
            )
            .to_owned();
            ctx.route = Some(route.clone());
            ctx.upstream.provider = Some(target.provider.clone());
            ctx.upstream.model = Some(model.clone());
            let pick = match gw
                .chain
                .upstream_peer(target, session.req_header(), body, ctx)
            {
                Ok(pick) => pick,
                Err(error) => {
                    record(ctx, &target.provider, "no_healthy_endpoint");
                    last_error = Some(error);
                    exhausted.push(target_index);
                    continue;
                }
            };
            let format = target.provider.kind.format_for(ctx.format);
            ctx.response.upstream_format = Some(format);
            let started = Instant::now();
            ctx.upstream.try_started = Some(started);
            let built = target
                .provider
                .endpoints
                .get(pick.index)
                .ok_or_else(|| GatewayError::Internal("no such endpoint".into()))
                .and_then(|endpoint| {
                    hop::upstream_request(&session.req_header().headers).and_then(|base| {
                        build(gw, ctx, body, base, target, endpoint, &model, format)
                    })
                });
            let request = match built {
                Ok(request) => request,
                Err(error) => {
                    if pick.probe {
                        target.provider.pool.release_probe(pick.index);
                    }
                    record(ctx, &target.provider, "refused");
                    refused.get_or_insert(error);
                    exhausted.push(target_index);
                    continue;
                }
            };
            let primary = Leg {
                target: target_index,
                endpoint: pick.index,
                model,
                probe: pick.probe,
                started,
                inflight: pick.inflight,
            };
            let Raced {
                leg,
                outcome,
                others,
            } = match route.hedge {
                Some(policy) => {
                    let spare = Spare {
                        route: &route,
                        order: &order,
                        requested: &candidate.requested,
                        capture: candidate.capture.as_deref(),
                    };
                    hedge::race(gw, session, ctx, body, &spare, policy, primary, request).await
                }
                None => {
                    let provider = target.provider.clone();
                    let endpoint = provider.endpoints[primary.endpoint].clone();
                    let outcome =
                        try_once(&gw.exchange, session, ctx, provider, endpoint, request).await;
                    Raced {
                        leg: primary,
                        outcome,
                        others: Vec::new(),
                    }
                }
            };
            // Computed before the other attempts' failures are booked.
            let first_failure = ctx.upstream.failed.is_empty();
            // An attempt of the race may have run the request: nothing more may be sent.
            let no_more = others.iter().any(|(_, end)| end.may_have_run());
            for (other, end) in others {
                settle_other(ctx, &route, other, end);
            }
            // The attempt whose outcome counts (a hedge may have won).
            let target = &route.targets[leg.target];
            let provider = target.provider.clone();
            let endpoint_index = leg.endpoint;
            let endpoint_url = provider.endpoints[endpoint_index].url.clone();
            ctx.upstream.provider = Some(provider.clone());
            ctx.upstream.model = Some(leg.model);
            ctx.upstream.try_started = Some(leg.started);
            ctx.upstream.inflight = Some(leg.inflight);
            ctx.upstream.endpoint = Some(endpoint_index);
            ctx.upstream.pricing = target.pricing;
            let label = |outcome: &str| {
                metrics()
                    .upstream_attempts
                    .with_label_values(&[&provider.name, &endpoint_url, outcome])
                    .inc();
            };
            let lowest_latency = route.strategy == RouteStrategy::LowestLatency;
            match outcome {
                Ok(mut upstream) => {
                    let status = upstream.header().status.as_u16();
                    if status == 401 {
                        // The gateway's own credential was refused: not the client's doing,
                        // and no other endpoint of this provider would take it either. (A 403
                        // is relayed: it is as often about what the request asked for.)
                        let text = read_some(&mut upstream, 512).await;
                        tracing::warn!(
                            provider = %provider.name,
                            status,
                            request_id = ctx.id.to_str().unwrap_or("-"),
                            answer = ?text,
                            "the provider refused the gateway's credentials"
                        );
                        provider.pool.report(
                            endpoint_index,
                            leg.probe,
                            first_failure,
                            Outcome::Failed {
                                reason: "the provider refused the gateway's credentials",
                                slow: None,
                            },
                        );
                        if lowest_latency {
                            target.latency.observe(FAILURE_PENALTY);
                        }
                        label("auth_failed");
                        record(ctx, &provider, format!("status_{status}"));
                        let error = GatewayError::UpstreamAuth {
                            provider: provider.name.to_string(),
                            request_id: ctx.id.to_str().unwrap_or("-").to_owned(),
                        };
                        if no_more {
                            return Err(error);
                        }
                        last_error = Some(error);
                        exhausted.push(leg.target);
                        continue;
                    }
                    let header = upstream.header();
                    // Read only by `route: lowest-latency`: not worth a lock elsewhere. A
                    // failure answer costs the target as a slow one would.
                    if lowest_latency {
                        let elapsed = leg.started.elapsed();
                        target.latency.observe(if status < 500 && status != 429 {
                            elapsed
                        } else {
                            elapsed.max(FAILURE_PENALTY)
                        });
                    }
                    provider.pool.report(
                        endpoint_index,
                        leg.probe,
                        first_failure,
                        Outcome::Answered {
                            status,
                            first_byte: leg.started.elapsed(),
                            retry_after: retry_after(&header.headers),
                        },
                    );
                    counted += 1;
                    if retryable_status(status) && !no_more {
                        record(ctx, &provider, format!("status_{status}"));
                        ctx.upstream
                            .failed
                            .push((provider.name.clone(), endpoint_index));
                        label("retried");
                        held = Some((upstream, ctx.take_try()));
                        if counted < attempts {
                            tokio::time::sleep(route.retry.delay(counted)).await;
                        }
                        continue;
                    }
                    label(if status < 500 { "ok" } else { "error" });
                    record(ctx, &provider, "ok");
                    return Ok(upstream);
                }
                Err(TryError::ClientGone) => {
                    if leg.probe {
                        provider.pool.release_probe(endpoint_index);
                    }
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
                    let slow = (kind == "timeout").then(|| leg.started.elapsed());
                    if lowest_latency {
                        target
                            .latency
                            .observe(leg.started.elapsed().max(FAILURE_PENALTY));
                    }
                    provider.pool.report(
                        endpoint_index,
                        leg.probe,
                        first_failure,
                        Outcome::Failed {
                            reason: &error.to_string(),
                            slow,
                        },
                    );
                    record(ctx, &provider, kind);
                    ctx.upstream
                        .failed
                        .push((provider.name.clone(), endpoint_index));
                    if may_have_run || no_more {
                        label(kind);
                        return Err(error);
                    }
                    label("retried");
                    last_error = Some(error);
                    let untried = untried(ctx, &route, &exhausted);
                    spend_unsent(untried, &route, &mut counted, &mut free, free_limit).await;
                }
            }
        }
    }
    if let Some((answer, state)) = held {
        // The answer the client gets is described as the try that got it.
        ctx.restore_try(state);
        return Ok(answer);
    }
    Err(last_error
        .or(refused)
        .unwrap_or_else(|| GatewayError::Internal("no upstream candidate".into())))
}

/// The start of a response body, for a log line: at most `max` bytes, lossy UTF-8.
async fn read_some(upstream: &mut UpstreamResponse, max: usize) -> String {
    let mut text = Vec::new();
    while text.len() < max {
        match tokio::time::timeout(Duration::from_secs(2), upstream.read()).await {
            Ok(Ok(Some(chunk))) => {
                text.extend_from_slice(&chunk[..chunk.len().min(max - text.len())])
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The next target in `order` (round robin from `turn`) that is not exhausted.
fn next_target(order: &[usize], exhausted: &[usize], turn: &mut usize) -> Option<usize> {
    for _ in 0..order.len() {
        let candidate = order[*turn % order.len()];
        *turn += 1;
        if !exhausted.contains(&candidate) {
            return Some(candidate);
        }
    }
    None
}

/// Books an attempt of a hedged try that did not win.
fn settle_other(ctx: &mut RequestCtx, route: &ModelRoute, leg: Leg, end: LegEnd) {
    let Some(target) = route.targets.get(leg.target) else {
        return;
    };
    let provider = &target.provider;
    let url = provider.endpoints.get(leg.endpoint).map_or("", |e| &*e.url);
    let counter = |outcome: &str| {
        metrics()
            .upstream_attempts
            .with_label_values(&[&provider.name, url, outcome])
            .inc();
    };
    match end {
        LegEnd::Cancelled => {
            if leg.probe {
                provider.pool.release_probe(leg.endpoint);
            }
            counter("hedge_cancelled");
            record(ctx, provider, "hedge_cancelled");
        }
        LegEnd::Unused(status, retry_after) => {
            provider.pool.report(
                leg.endpoint,
                leg.probe,
                false,
                Outcome::Answered {
                    status,
                    first_byte: leg.started.elapsed(),
                    retry_after,
                },
            );
            counter("hedge_lost");
            record(ctx, provider, format!("status_{status}"));
            if retryable_status(status) {
                ctx.upstream
                    .failed
                    .push((provider.name.clone(), leg.endpoint));
            }
        }
        LegEnd::Failed(TryError::Failed { error, kind, .. }) => {
            provider.pool.report(
                leg.endpoint,
                leg.probe,
                ctx.upstream.failed.is_empty(),
                Outcome::Failed {
                    reason: &error.to_string(),
                    slow: None,
                },
            );
            counter(kind);
            record(ctx, provider, kind);
            ctx.upstream
                .failed
                .push((provider.name.clone(), leg.endpoint));
        }
        LegEnd::Failed(_) => {
            if leg.probe {
                provider.pool.release_probe(leg.endpoint);
            }
        }
    }
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

/// Whether some endpoint of the route's usable targets has not failed this request yet.
fn untried(ctx: &RequestCtx, route: &ModelRoute, exhausted: &[usize]) -> bool {
    let failed = &ctx.upstream.failed;
    route
        .targets
        .iter()
        .enumerate()
        .filter(|(i, _)| !exhausted.contains(i))
        .any(|(_, t)| {
            (0..t.provider.endpoints.len()).any(|i| {
                !failed
                    .iter()
                    .any(|(name, j)| *name == t.provider.name && *j == i)
            })
        })
}

/// A `retry-after` in seconds (the HTTP-date form is rare from model APIs and ignored),
/// capped at 10 minutes.
pub(super) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
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
pub(super) fn retryable_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

fn record(
    ctx: &mut RequestCtx,
    provider: &Provider,
    outcome: impl Into<std::borrow::Cow<'static, str>>,
) {
    ctx.upstream.attempts.push(Attempt {
        provider: provider.name.clone(),
        outcome: outcome.into(),
    });
}

/// The request for one try, as the upstream phases build it from `base` (the client's
/// end-to-end headers).
#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    body: &RequestBody,
    base: http::HeaderMap,
    target: &crate::models::Target,
    endpoint: &crate::provider::Endpoint,
    model: &str,
    format: crate::format::Format,
) -> Result<Outgoing, GatewayError> {
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
        path: String::new(),
        headers: base,
        body: body.bytes.clone(),
    };
    gw.chain.upstream_request_filter(&mut upstream, ctx)?;
    let UpstreamRequest {
        path,
        headers,
        body,
        ..
    } = upstream;
    Ok(Outgoing {
        path,
        headers,
        body,
    })
}

/// When the exchange with the provider that answered must be over (`timeouts.total`,
/// counted from the start of its try), streams included.
pub fn total_deadline(ctx: &RequestCtx) -> Option<(tokio::time::Instant, Duration)> {
    let total: Duration = ctx.upstream.provider.as_ref()?.timeouts.total?;
    let started = ctx.upstream.try_started?;
    Some((tokio::time::Instant::from_std(started) + total, total))
}
