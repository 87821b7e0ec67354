//! Hedged tries (`models.<name>.hedge`): when the provider has not answered within
//! `after`, the same request goes to another endpoint (or another target spoken to in the
//! client's own format) while the first keeps running; the first useful answer wins and
//! the others are cancelled at once (their connections closed).
//!
//! Hedging sends a request that may already be running a second time: it is opt-in, per
//! model, for operators who would rather pay for a duplicate than wait on a stuck server.
//! A cancelled attempt reported no usage (it never answered, or its answer was dropped
//! unread): it is listed in `x-sira-attempts` and counted as
//! `sira_upstream_attempts_total{outcome="hedge_cancelled"}`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use super::client::Client;

use super::attempt::{send, TryError};
use super::ctx::RequestCtx;
use super::exchange::{Outgoing, UpstreamResponse};
use super::phases::RequestBody;
use super::Gateway;
use crate::models::{HedgePolicy, ModelRoute};
use crate::pool::state::Inflight;

/// One attempt of a hedged try.
pub struct Leg {
    /// Index into the route's targets.
    pub target: usize,
    /// Index into that target's provider's endpoints.
    pub endpoint: usize,
    pub model: String,
    pub probe: bool,
    pub started: Instant,
    pub inflight: Inflight,
}

/// How an attempt that did not win ended.
pub enum LegEnd {
    /// Still waiting for its answer when another won: dropped.
    Cancelled,
    /// Answered with this status (and `retry-after`), but another answer was used.
    Unused(u16, Option<std::time::Duration>),
    Failed(TryError),
}

impl LegEnd {
    /// The attempt's request may have been acted on (sent, then no answer).
    pub fn may_have_run(&self) -> bool {
        matches!(
            self,
            LegEnd::Failed(TryError::Failed {
                may_have_run: true,
                ..
            })
        )
    }
}

/// What a hedged try came to: the winning (or, when all failed, the first) attempt and its
/// outcome, and how every other attempt ended.
pub struct Raced {
    pub leg: Leg,
    pub outcome: Result<UpstreamResponse, TryError>,
    pub others: Vec<(Leg, LegEnd)>,
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<UpstreamResponse, TryError>> + Send + 'a>>;

/// Where the next hedge may go, and its request.
pub struct Spare<'a> {
    pub route: &'a ModelRoute,
    pub order: &'a [usize],
    pub requested: &'a str,
    pub capture: Option<&'a str>,
}

/// Runs `primary` (with its request), starting another attempt every `policy.after` until
/// one answers usefully or `policy.max` more are running.
#[allow(clippy::too_many_arguments)]
pub async fn race(
    gw: &Gateway,
    session: &mut Client,
    ctx: &mut RequestCtx,
    body: &RequestBody,
    spare: &Spare<'_>,
    policy: HedgePolicy,
    primary: Leg,
    request: Outgoing,
) -> Raced {
    let network = Instant::now();
    let route = spare.route;
    let start = |leg: &Leg, request: Outgoing| -> Option<Pending<'_>> {
        let provider = route.targets.get(leg.target)?.provider.clone();
        let endpoint = provider.endpoints.get(leg.endpoint)?.clone();
        Some(Box::pin(send(&gw.exchange, provider, endpoint, request)))
    };
    let mut legs: Vec<Leg> = Vec::with_capacity(1 + policy.max as usize);
    let mut running: Vec<Option<Pending<'_>>> = Vec::with_capacity(legs.capacity());
    let mut ends: Vec<Option<Result<UpstreamResponse, TryError>>> = Vec::new();
    running.push(start(&primary, request));
    legs.push(primary);
    ends.push(None);
    let mut next_hedge = tokio::time::Instant::now() + policy.after;
    let mut hedges = 0;
    let winner = loop {
        let first = std::future::poll_fn(|cx| {
            for (i, slot) in running.iter_mut().enumerate() {
                if let Some(pending) = slot {
                    if let Poll::Ready(outcome) = pending.as_mut().poll(cx) {
                        *slot = None;
                        return Poll::Ready((i, outcome));
                    }
                }
            }
            Poll::Pending
        });
        let hedge_due = async {
            if hedges < policy.max {
                tokio::time::sleep_until(next_hedge).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            (i, outcome) = first => {
                // A refused credential is no answer either: the other attempt may be fine.
                let useful = matches!(&outcome, Ok(r) if {
                    let s = status(r);
                    !super::policy::retryable_status(s) && s != 401
                });
                ends[i] = Some(outcome);
                if useful {
                    break Some(i);
                }
                // Every attempt ended without a useful answer: hedging is for slowness, not
                // failures; the retry policy takes it from here, by its own rules.
                if running.iter().all(Option::is_none) {
                    break None;
                }
            }
            () = hedge_due => {
                hedges += 1;
                next_hedge += policy.after;
                let client = session.req_header().headers.clone();
                if let Some((leg, request)) = next_leg(gw, ctx, body, spare, &legs, &client) {
                    running.push(start(&leg, request));
                    legs.push(leg);
                    ends.push(None);
                } else if running.iter().all(Option::is_none) {
                    break None;
                }
            }
            _ = session.gone() => {
                // Told as the outcome of an attempt still running (there is one: the loop
                // ends as soon as none is); the ones that ended are settled as they ended.
                let i = ends.iter().position(Option::is_none).unwrap_or(0);
                ends[i] = Some(Err(TryError::ClientGone));
                break Some(i);
            }
        }
    };
    // Dropping the futures still running cancels them (closes their connections).
    drop(running);
    ctx.upstream.wait += network.elapsed();
    // No useful answer: a held answer beats an error; the primary's error otherwise.
    let winner = winner.unwrap_or_else(|| {
        ends.iter()
            .position(|e| matches!(e, Some(Ok(_))))
            .unwrap_or(0)
    });
    let mut settled: Vec<(Leg, Option<Result<UpstreamResponse, TryError>>)> =
        legs.into_iter().zip(ends).collect();
    // In bounds: `winner` is an index into `ends`, pushed in lockstep with `legs`, and
    // both hold at least the primary.
    let (leg, end) = settled.remove(winner.min(settled.len().saturating_sub(1)));
    let others = settled
        .into_iter()
        .map(|(leg, end)| {
            let end = match end {
                Some(Ok(response)) => LegEnd::Unused(
                    status(&response),
                    super::policy::retry_after(&response.header().headers),
                ),
                Some(Err(error)) => LegEnd::Failed(error),
                None => LegEnd::Cancelled,
            };
            (leg, end)
        })
        .collect();
    Raced {
        leg,
        outcome: end.unwrap_or(Err(TryError::ClientGone)),
        others,
    }
}

fn status(response: &UpstreamResponse) -> u16 {
    response.header().status.as_u16()
}

/// The next hedge: another endpoint of a target already tried, else the next target in
/// order that is spoken to in the client's own format (so the request state the first
/// attempt built holds for it too).
fn next_leg(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    body: &RequestBody,
    spare: &Spare<'_>,
    legs: &[Leg],
    client: &http::HeaderMap,
) -> Option<(Leg, Outgoing)> {
    let route = spare.route;
    let first_target = legs.first()?.target;
    let (client_format, first_format) = (ctx.format, ctx.response.upstream_format);
    let same_format = |i: usize| {
        route.targets.get(i).is_some_and(|t| {
            let format = t.provider.kind.format_for(client_format);
            format == client_format && Some(format) == first_format
        })
    };
    let candidates = std::iter::once(first_target).chain(
        spare
            .order
            .iter()
            .copied()
            .filter(|i| *i != first_target && same_format(*i)),
    );
    for target_index in candidates {
        let target = route.targets.get(target_index)?;
        let provider = &target.provider;
        let avoid: Vec<usize> = legs
            .iter()
            .filter(|l| {
                l.target == target_index || Arc::ptr_eq(&route.targets[l.target].provider, provider)
            })
            .map(|l| l.endpoint)
            .chain(
                ctx.upstream
                    .failed
                    .iter()
                    .filter(|(name, _)| *name == provider.name)
                    .map(|(_, i)| *i),
            )
            .collect();
        let Some(pick) = provider.pool.select_hedge(&avoid) else {
            continue;
        };
        let Some(endpoint) = provider.endpoints.get(pick.index) else {
            continue;
        };
        let model = ModelRoute::upstream_model(target, spare.requested, spare.capture).to_owned();
        let format = provider.kind.format_for(ctx.format);
        let built = super::hop::upstream_request(client).and_then(|base| {
            super::policy::build(gw, ctx, body, base, target, endpoint, &model, format)
        });
        match built {
            Ok(request) => {
                return Some((
                    Leg {
                        target: target_index,
                        endpoint: pick.index,
                        model,
                        probe: pick.probe,
                        started: Instant::now(),
                        inflight: pick.inflight,
                    },
                    request,
                ))
            }
            Err(_) => {
                if pick.probe {
                    provider.pool.release_probe(pick.index);
                }
            }
        }
    }
    None
}
