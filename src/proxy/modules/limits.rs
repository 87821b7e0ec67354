//! Admission against the limits and budgets of the caller's key, its tenant and the model
//! entry (`crate::limits`): reserved when the request body is known, settled when the
//! request ends, with OpenAI's `x-ratelimit-*` headers on every answer to a limited key and
//! `retry-after` on a refusal.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use serde::Deserialize;

use crate::auth::Principal;
use crate::error::GatewayError;
use crate::limits::{admit, alerts, reset_header, Demand, Reservation, Scopes};
use crate::metrics::metrics;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::phases::{Flow, Phase, RequestBody};
use crate::routes::Operation;
use crate::usage::Usage;

use super::budget_cut::BudgetCut;
use super::headers::header_error;

pub struct Admission;

impl Phase for Admission {
    fn name(&self) -> &'static str {
        "limits"
    }

    /// Reads: `ctx.principal`, `ctx.entry`, the body (for the token estimate, only when a
    /// scope limits tokens or spend). Writes: `ctx.limits`. A refusal is a 429.
    fn request_body_filter(
        &self,
        body: &mut RequestBody,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        // Only generations spend; a token count or a listing does not.
        let generates = matches!(
            ctx.op,
            Some(
                Operation::ChatCompletions
                    | Operation::Responses
                    | Operation::Messages
                    | Operation::GenerateContent { .. }
                    | Operation::Embeddings
            )
        );
        // Kept (shared, not copied) for the estimate of an answer whose usage never comes.
        ctx.accounting.request = Some(body.bytes.clone());
        let scopes = scopes(ctx);
        let fallback_limited = ctx.entry.as_ref().is_some_and(|entry| {
            entry.fallbacks.iter().any(|name| {
                ctx.snap
                    .models
                    .resolve(name)
                    .is_some_and(|found| found.route.counter.is_some())
            })
        });
        if !generates || (scopes.is_empty() && !fallback_limited) {
            return Ok(Flow::Continue);
        }
        let mut demand = Demand::default();
        let (mut input_usd, mut output_usd) = (0.0, 0.0);
        if fallback_limited || scopes.iter().any(|(_, limits)| limits.counts_tokens()) {
            let input = crate::translate::estimate_input_tokens(ctx.format, &body.bytes)
                .unwrap_or(body.bytes.len() as u64 / 4);
            let route = ctx.entry.as_deref();
            // Embeddings write no tokens; a generation reserves its output cap.
            let output = if ctx.op == Some(Operation::Embeddings) {
                0
            } else {
                output_cap(&body.bytes).unwrap_or_else(|| {
                    route
                        .map_or(crate::models::DEFAULT_MAX_TOKENS, |r| r.default_max_tokens)
                        .into()
                })
            };
            // A model priced per target reserves at its dearest target's prices.
            let pricing = route.and_then(|r| {
                r.pricing.or_else(|| {
                    r.targets
                        .iter()
                        .filter_map(|t| t.pricing)
                        .max_by(|a, b| (a.input + a.output).total_cmp(&(b.input + b.output)))
                })
            });
            let priced = |usage: &Usage| pricing.map_or(0.0, |p| p.cost(usage));
            input_usd = priced(&Usage {
                input,
                ..Usage::default()
            });
            output_usd = pricing.map_or(0.0, |p| p.output / 1e6);
            demand = Demand {
                tokens: input.saturating_add(output),
                usd: priced(&Usage {
                    input,
                    output,
                    ..Usage::default()
                }),
            };
            ctx.limits.input_estimate = input;
        }
        if fallback_limited {
            ctx.limits.demand = Some(demand);
        }
        if scopes.is_empty() {
            return Ok(Flow::Continue);
        }
        // Kept only to know which scope refused, when someone is told.
        let watched = ctx.snap.alerts.as_ref().map(|_| scopes.clone());
        match admit(scopes, demand) {
            Ok(reservation) => {
                if let Some(allowance) = reservation.allowance {
                    ctx.limits.cut = Some(BudgetCut::new(
                        ctx.format,
                        allowance,
                        input_usd,
                        output_usd,
                        ctx.snap.server.max_sse_event,
                    ));
                }
                ctx.limits.reservation = Some(reservation);
                Ok(Flow::Continue)
            }
            Err(refusal) => {
                metrics()
                    .rate_limited
                    .with_label_values(&[ctx.key_name(), refusal.kind.as_str()])
                    .inc();
                ctx.limits.retry_after = Some(refusal.retry_after);
                if let (Some(alerts), Some(watched)) = (&ctx.snap.alerts, watched) {
                    let refusing = watched.iter().find(|(c, _)| c.scope == refusal.scope);
                    if let Some((counter, limits)) = refusing {
                        if let Some(window) = counter.first_refusal(limits, refusal.kind) {
                            alerts::send(
                                alerts,
                                ctx.snap.limits_store.as_ref(),
                                window,
                                alerts::Alert {
                                    kind: "limit_refusing",
                                    scope: refusal.scope.clone(),
                                    limit: refusal.kind.as_str(),
                                    threshold_percent: None,
                                    spent_usd: None,
                                    budget_usd: None,
                                    at: alerts::now(),
                                },
                            );
                        }
                    }
                }
                Err(GatewayError::RateLimited(refusal))
            }
        }
    }

    /// A stream of a budget with `on_exceed: cut`, as the client receives it.
    fn wants_response_body(&self, ctx: &RequestCtx) -> bool {
        ctx.limits.cut.is_some()
            && ctx.response.sse
            && ctx.response.status < 400
            && !ctx.response.local
    }

    fn response_body_filter(
        &self,
        body: &mut Vec<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if let Some(cut) = ctx.limits.cut.as_mut() {
            if cut.filter(body, end_of_stream) {
                ctx.response.finish_now = true;
                metrics()
                    .rate_limited
                    .with_label_values(&[ctx.key_name(), "budget_cut"])
                    .inc();
            }
        }
        Ok(())
    }

    /// `retry-after` on a refusal; the key's (or its tenant's) current numbers as OpenAI's
    /// `x-ratelimit-*` headers on every answer.
    fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        if let Some(secs) = ctx.limits.retry_after {
            resp.insert_header(http::header::RETRY_AFTER, secs)
                .map_err(header_error)?;
        }
        let Some(principal) = &ctx.principal else {
            return Ok(());
        };
        let own = match principal {
            Principal::Key(key) => key.counter.as_ref().map(|c| (c, &key.limits)),
            Principal::Jwt(caller) => caller.counter.as_ref().map(|c| (c, &caller.limits)),
            Principal::Anonymous => None,
        };
        let tenant = principal
            .tenant()
            .and_then(|t| t.counter.as_ref().map(|c| (c, &t.limits)));
        let Some((counter, limits)) = own.or(tenant) else {
            return Ok(());
        };
        let usage = counter.snapshot(limits, std::time::SystemTime::now());
        // Numbers go in as header values directly; only the reset durations are formatted.
        let mut set = |name: &'static str, value: HeaderValue| -> Result<(), GatewayError> {
            resp.insert_header(HeaderName::from_static(name), value)
                .map_err(header_error)
        };
        let duration = |secs: u64| {
            HeaderValue::from_str(&reset_header(secs))
                .map_err(|e| GatewayError::Internal(format!("rate-limit header: {e}").into()))
        };
        if let Some((limit, remaining, reset)) = usage.requests {
            set("x-ratelimit-limit-requests", limit.into())?;
            set("x-ratelimit-remaining-requests", remaining.into())?;
            set("x-ratelimit-reset-requests", duration(reset)?)?;
        }
        if let Some((limit, remaining, reset)) = usage.tokens {
            set("x-ratelimit-limit-tokens", limit.into())?;
            set("x-ratelimit-remaining-tokens", remaining.into())?;
            set("x-ratelimit-reset-tokens", duration(reset)?)?;
        }
        Ok(())
    }

    /// Settles the reservation to what the provider reported, priced (`ctx.cost`, set by
    /// accounting, which logs first). An answer whose usage never came (a stream cut or
    /// left early) is settled to its prompt estimate: never billed as zero.
    fn logging(&self, _req: &RequestHeader, ctx: &mut RequestCtx) {
        let fallbacks = std::mem::take(&mut ctx.limits.fallbacks);
        if ctx.limits.reservation.is_none() && fallbacks.is_empty() {
            return;
        }
        ctx.limits.estimated |= ctx.accounting.estimated;
        let actual = if ctx.usage_seen {
            Demand {
                tokens: ctx.usage.input + ctx.usage.output,
                usd: ctx.cost,
            }
        } else if ctx.response.status < 400 && ctx.response.status != 0 && !ctx.response.local {
            let input = ctx.limits.input_estimate;
            let pricing = ctx
                .upstream
                .pricing
                .or(ctx.route.as_ref().and_then(|r| r.pricing));
            let usage = Usage {
                input,
                ..Usage::default()
            };
            let usd = pricing.map_or(0.0, |p| p.cost(&usage));
            // The access line says what was settled, marked as an estimate.
            ctx.limits.estimated = true;
            ctx.usage.input = input;
            ctx.cost = usd;
            Demand { tokens: input, usd }
        } else {
            // Refused or failed before a provider answered: nothing was generated.
            Demand::default()
        };
        // A fallback entry is charged when it served (the entry tried last), else released.
        let mut settled: Vec<Reservation> = Vec::with_capacity(fallbacks.len() + 1);
        for (route, reservation) in fallbacks {
            if ctx.route.as_ref().is_some_and(|r| Arc::ptr_eq(r, &route)) {
                settled.push(reservation);
            } else {
                reservation.settle(Demand::default());
            }
        }
        settled.extend(ctx.limits.reservation.take());
        let scopes = ctx.snap.alerts.as_ref().map(|_| {
            settled
                .iter()
                .flat_map(|r| r.scopes().iter().cloned())
                .collect::<Vec<_>>()
        });
        for reservation in settled {
            reservation.settle(actual);
        }
        if let (Some(alerts), Some(scopes)) = (&ctx.snap.alerts, scopes) {
            for (counter, limits) in &scopes {
                if let Some((threshold, spent, usd)) = counter.crossed(limits, &alerts.thresholds) {
                    let period = limits.budget.map_or(0, |b| b.per.index(SystemTime::now()));
                    alerts::send(
                        alerts,
                        ctx.snap.limits_store.as_ref(),
                        period,
                        alerts::Alert {
                            kind: "budget_threshold",
                            scope: counter.scope.clone(),
                            limit: "budget",
                            threshold_percent: Some(threshold),
                            spent_usd: Some(spent),
                            budget_usd: Some(usd),
                            at: alerts::now(),
                        },
                    );
                }
            }
        }
    }
}

/// Before a fallback model entry with limits of its own is tried, the request must fit
/// them too: reserved there (settled at the end), or refused, and the entry is passed over.
/// The request is priced and capped as for the entry the client named (its estimate is
/// made once); a fallback's `on_exceed: cut` does not apply to it.
pub fn admit_fallback(
    ctx: &mut RequestCtx,
    route: &Arc<crate::models::ModelRoute>,
) -> Result<(), crate::limits::Refusal> {
    let (Some(counter), Some(demand)) = (&route.counter, ctx.limits.demand) else {
        return Ok(());
    };
    if ctx
        .limits
        .fallbacks
        .iter()
        .any(|(r, _)| Arc::ptr_eq(r, route))
    {
        return Ok(());
    }
    // The entry tried before this one failed without an answer: what it held goes back now,
    // not when this request ends.
    for (_, tried) in ctx.limits.fallbacks.drain(..) {
        tried.settle(Demand::default());
    }
    match admit(vec![(counter.clone(), route.limits)], demand) {
        Ok(reservation) => {
            ctx.limits.fallbacks.push((route.clone(), reservation));
            Ok(())
        }
        Err(refusal) => {
            metrics()
                .rate_limited
                .with_label_values(&[ctx.key_name(), refusal.kind.as_str()])
                .inc();
            ctx.limits.retry_after.get_or_insert(refusal.retry_after);
            Err(refusal)
        }
    }
}

/// The caller's key, its tenant and the model entry, those with limits.
fn scopes(ctx: &RequestCtx) -> Scopes {
    let mut scopes = Scopes::new();
    match &ctx.principal {
        Some(Principal::Key(key)) => {
            if let Some(counter) = &key.counter {
                scopes.push((counter.clone(), key.limits));
            }
        }
        Some(Principal::Jwt(caller)) => {
            if let Some(counter) = &caller.counter {
                // No snapshot names a subject: bound here to the store installed last (a
                // no-op but the first time, or after a reload changed the store), never
                // back to an older snapshot's.
                let store = crate::runtime::registry().current_limit_store.load_full();
                counter.bind(store.as_ref(), caller.limits);
                scopes.push((counter.clone(), caller.limits));
            }
        }
        _ => {}
    }
    if let Some(tenant) = ctx.principal.as_ref().and_then(Principal::tenant) {
        if let Some(counter) = &tenant.counter {
            scopes.push((counter.clone(), tenant.limits));
        }
    }
    if let Some(entry) = &ctx.entry {
        if let Some(counter) = &entry.counter {
            scopes.push((counter.clone(), entry.limits));
        }
    }
    scopes
}

/// The output cap the client set, in whichever format's field.
fn output_cap(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Generation {
        max_output_tokens: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Caps {
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
        max_output_tokens: Option<u64>,
        #[serde(rename = "generationConfig", alias = "generation_config")]
        generation: Option<Generation>,
    }
    let caps: Caps = serde_json::from_slice(body).ok()?;
    caps.max_completion_tokens
        .or(caps.max_tokens)
        .or(caps.max_output_tokens)
        .or(caps.generation.and_then(|g| g.max_output_tokens))
}
