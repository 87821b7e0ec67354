//! Who may spend what: request, token and concurrency limits and USD budgets, per key, per
//! tenant and per model, the tightest winning.
//!
//! Admission is reserve-then-settle. A request reserves one request, its estimated tokens
//! (prompt estimate + its output cap) and their estimated price in every scope it belongs
//! to, all or nothing; when it ends, each reservation is settled to the provider's usage
//! (or, when the provider reported none, kept as the estimate). Concurrent requests
//! therefore see each other's reservations: a budget cannot be overrun by requests that
//! were all admitted before any of them finished.
//!
//! The state of each scope ([`Counter`]) is process state kept across reloads by name
//! ([`crate::runtime`]); the limits themselves come from the config snapshot the request
//! pinned, so a reload that changes a limit applies it at once without losing what was
//! already spent. With `limits.store: memory` that state is exact on one host; with
//! `limits.store: {redis: …}` each scope also holds quota leased from a fleet-wide store
//! ([`shared`]), and admits against that instead.

pub mod admin;
pub mod alerts;
mod period;
pub mod shared;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use period::Period;

/// The limits of one key, tenant or model (`limits:` in the config).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub concurrent_requests: Option<u64>,
    pub budget: Option<Budget>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Whether admission needs the request's token estimate.
    pub fn counts_tokens(&self) -> bool {
        self.tokens_per_minute.is_some() || self.budget.is_some()
    }
}

/// `retry-after` when a budget is held by reservations of requests still in flight.
const RESERVED_RETRY_SECS: u64 = 5;

/// A USD budget per calendar period (UTC).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub usd: f64,
    pub per: Period,
    /// `on_exceed: cut`: a stream that outgrows what is left is ended there, cleanly.
    pub cut: bool,
}

/// Which limit refused a request (the `limit` label of `sira_rate_limited_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Concurrency,
    Budget,
    /// The shared store did not answer and `on_unavailable: deny` refuses.
    Store,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests_per_minute",
            LimitKind::Tokens => "tokens_per_minute",
            LimitKind::Concurrency => "concurrent_requests",
            LimitKind::Budget => "budget",
            LimitKind::Store => "limits_store",
        }
    }
}

/// Why a request was refused, and when it may come back.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub kind: LimitKind,
    /// `key team-a`, `tenant acme`, `model gpt-4o`.
    pub scope: String,
    /// Whole seconds, at least 1.
    pub retry_after: u64,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            LimitKind::Store => write!(
                f,
                "the shared limits store is unavailable and refuses requests for {} (retry in {}s)",
                self.scope, self.retry_after
            ),
            kind => write!(
                f,
                "{} exceeded for {} (retry in {}s)",
                kind.as_str(),
                self.scope,
                self.retry_after
            ),
        }
    }
}

/// What one request asks of a scope.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Demand {
    pub tokens: u64,
    pub usd: f64,
}

/// A token bucket refilled continuously to `capacity` over a minute: exact rate limiting
/// without windows' edge bursts. Its level may go below zero when a request used more than
/// it reserved; later requests then wait for the debt to refill.
#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    /// The bucket in `slot` as of `now`: full when first used, refilled since.
    fn current(slot: &mut Option<Bucket>, capacity: u64, now: Instant) -> &mut Bucket {
        let bucket = slot.get_or_insert(Bucket {
            level: capacity as f64,
            at: now,
        });
        bucket.refill(capacity, now);
        bucket
    }

    fn refill(&mut self, capacity: u64, now: Instant) {
        let rate = capacity as f64 / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * rate).min(capacity as f64);
        self.at = now;
    }

    /// Seconds until `amount` is available.
    fn wait(&self, capacity: u64, amount: f64) -> u64 {
        let rate = capacity as f64 / 60.0;
        if rate <= 0.0 {
            return 60;
        }
        let missing = (amount.min(capacity as f64) - self.level).max(0.0);
        ((missing / rate).ceil() as u64).max(1)
    }
}

#[derive(Debug)]
struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    inflight: u64,
    /// Spend in the current budget period.
    period: i64,
    spent: f64,
    reserved: f64,
    /// The highest budget threshold alerted in `period`.
    alerted: u8,
    /// The window (minute, or budget period) of the last refusal alert, per limit kind.
    refusal_alerted: [i64; 5],
    /// Quota leased from the fleet's store, with `limits.store: {redis: …}`.
    shared: Option<Box<shared::Shared>>,
}

/// The running state of one scope, shared by every snapshot that names it.
#[derive(Debug)]
pub struct Counter {
    pub scope: String,
    state: Mutex<State>,
}

impl Counter {
    pub fn new(scope: &str) -> Counter {
        Counter {
            scope: scope.to_owned(),
            state: Mutex::new(State {
                requests: None,
                tokens: None,
                inflight: 0,
                period: i64::MIN,
                spent: 0.0,
                reserved: 0.0,
                alerted: 0,
                refusal_alerted: [i64::MIN; 5],
                shared: None,
            }),
        }
    }

    /// Keeps this scope's state in `store` (the fleet's), or in this process alone.
    pub fn bind(self: &Arc<Self>, store: Option<&Arc<shared::SharedStore>>, limits: Limits) {
        let mut s = self.lock();
        match (store, s.shared.as_mut()) {
            (Some(store), Some(sh)) if Arc::ptr_eq(&sh.store, store) => sh.set_limits(limits),
            // A reload that changed the store's settings: what the scope holds, owes and
            // has spent goes with it.
            (Some(store), Some(sh)) => {
                sh.store = store.clone();
                sh.set_limits(limits);
                drop(s);
                store.adopt(self);
            }
            (Some(store), None) => {
                s.shared = Some(Box::new(shared::Shared::new(store.clone(), limits)));
                drop(s);
                store.adopt(self);
            }
            (None, _) => s.shared = None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is numbers updated whole under the lock: still consistent after a
        // panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `demand` fits `limits` now, in the locked state `s`; nothing is taken.
    fn check(
        &self,
        s: &mut State,
        limits: &Limits,
        demand: Demand,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), Refusal> {
        let refuse = |kind, retry_after| {
            Err(Refusal {
                kind,
                scope: self.scope.clone(),
                retry_after,
            })
        };
        let (inflight, reserved) = (s.inflight, s.reserved);
        if let Some(sh) = s.shared.as_mut() {
            return match sh.check(limits, demand, inflight, reserved, wall) {
                Ok(()) => Ok(()),
                Err((kind, retry_after)) => refuse(kind, retry_after),
            };
        }
        if let Some(cap) = limits.concurrent_requests {
            if s.inflight >= cap {
                return refuse(LimitKind::Concurrency, 1);
            }
        }
        if let Some(cap) = limits.requests_per_minute {
            let bucket = Bucket::current(&mut s.requests, cap, now);
            if bucket.level < 1.0 {
                return refuse(LimitKind::Requests, bucket.wait(cap, 1.0));
            }
        }
        if let Some(cap) = limits.tokens_per_minute {
            let bucket = Bucket::current(&mut s.tokens, cap, now);
            // A request larger than the whole minute's allowance waits for a full bucket
            // rather than forever.
            let need = (demand.tokens as f64).min(cap as f64).max(1.0);
            if bucket.level < need {
                return refuse(LimitKind::Tokens, bucket.wait(cap, need));
            }
        }
        if let Some(budget) = limits.budget {
            let period = budget.per.index(wall);
            if period != s.period {
                // Reservations belong to requests in flight, not to a period: only the
                // spend starts again.
                s.period = period;
                s.spent = 0.0;
                s.alerted = 0;
            }
            if s.spent >= budget.usd {
                // Spent: nothing frees up before the next period.
                return refuse(LimitKind::Budget, budget.per.seconds_left(wall).max(1));
            }
            if s.spent + s.reserved + demand.usd > budget.usd {
                // Held by requests in flight, which settle to what they used (usually far
                // less): worth trying again soon, unless this request alone is too dear.
                let wait = if s.spent + demand.usd > budget.usd {
                    budget.per.seconds_left(wall).max(1)
                } else {
                    RESERVED_RETRY_SECS
                };
                return refuse(LimitKind::Budget, wait);
            }
        }
        Ok(())
    }

    /// Takes what [`Counter::check`] found to fit, in the same locked state.
    fn take(s: &mut State, limits: &Limits, demand: Demand) {
        s.inflight += 1;
        if let Some(sh) = s.shared.as_mut() {
            sh.take(demand);
            if limits.budget.is_some() {
                s.reserved += demand.usd;
            }
            return;
        }
        if let (Some(_), Some(bucket)) = (limits.requests_per_minute, s.requests.as_mut()) {
            bucket.level -= 1.0;
        }
        if let (Some(cap), Some(bucket)) = (limits.tokens_per_minute, s.tokens.as_mut()) {
            bucket.level -= taken_tokens(demand, cap);
        }
        if limits.budget.is_some() {
            s.reserved += demand.usd;
        }
    }

    fn settle(&self, limits: &Limits, reserved: Demand, actual: Demand) {
        let mut s = self.lock();
        s.inflight = s.inflight.saturating_sub(1);
        if let Some(sh) = s.shared.as_mut() {
            sh.settle(reserved, actual);
            s.reserved = (s.reserved - reserved.usd).max(0.0);
            return;
        }
        if let (Some(cap), Some(bucket)) = (limits.tokens_per_minute, s.tokens.as_mut()) {
            bucket.level += taken_tokens(reserved, cap) - actual.tokens as f64;
        }
        s.reserved = (s.reserved - reserved.usd).max(0.0);
        s.spent += actual.usd;
    }

    /// The highest of `thresholds` (percent, ascending) the spend has reached in this
    /// period and not yet alerted, marked as alerted: each fires once per period.
    pub fn crossed(&self, limits: &Limits, thresholds: &[u8]) -> Option<(u8, f64, f64)> {
        let budget = limits.budget?;
        let mut s = self.lock();
        let (period, spent) = match &s.shared {
            Some(sh) => sh.spent(),
            None => (s.period, s.spent),
        };
        let current = budget.per.index(SystemTime::now());
        if period != current {
            return None;
        }
        if s.period != current {
            // The fleet's period started here without this host's memory state noticing.
            s.period = current;
            s.alerted = 0;
        }
        let percent = spent / budget.usd * 100.0;
        let reached = thresholds
            .iter()
            .copied()
            .filter(|t| percent >= f64::from(*t) && *t > s.alerted)
            .max()?;
        s.alerted = reached;
        Some((reached, spent, budget.usd))
    }

    /// Whether a refusal by `kind` is the first of its window (which it returns), marking
    /// it.
    pub fn first_refusal(&self, limits: &Limits, kind: LimitKind) -> Option<i64> {
        let wall = SystemTime::now();
        let window = match (kind, limits.budget) {
            (LimitKind::Budget, Some(budget)) => budget.per.index(wall),
            _ => wall
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| (d.as_secs() / 60) as i64),
        };
        let slot = kind as usize;
        let mut s = self.lock();
        if s.refusal_alerted[slot] == window {
            return None;
        }
        s.refusal_alerted[slot] = window;
        Some(window)
    }

    /// The numbers behind the `x-ratelimit-*` headers and `/admin/usage`.
    pub fn snapshot(&self, limits: &Limits, wall: SystemTime) -> Usage {
        let now = Instant::now();
        let mut s = self.lock();
        if let Some(sh) = &s.shared {
            return sh.usage(limits, wall, s.inflight, s.reserved);
        }
        let mut usage = Usage::default();
        if let Some(cap) = limits.requests_per_minute {
            let bucket = Bucket::current(&mut s.requests, cap, now);
            usage.requests = Some((cap, bucket.level.max(0.0) as u64, reset_secs(bucket, cap)));
        }
        if let Some(cap) = limits.tokens_per_minute {
            let bucket = Bucket::current(&mut s.tokens, cap, now);
            usage.tokens = Some((cap, bucket.level.max(0.0) as u64, reset_secs(bucket, cap)));
        }
        if let Some(budget) = limits.budget {
            let current = budget.per.index(wall) == s.period;
            let (spent, reserved) = if current {
                (s.spent, s.reserved)
            } else {
                (0.0, 0.0)
            };
            usage.budget = Some((budget.usd, spent, reserved));
        }
        usage.inflight = s.inflight;
        usage
    }
}

/// What a request takes from a token bucket of `cap`: at most the whole minute's allowance,
/// so one huge `max_tokens` cannot sink a shared bucket far below zero.
fn taken_tokens(demand: Demand, cap: u64) -> f64 {
    (demand.tokens as f64).min(cap as f64)
}

/// Seconds until the bucket is full again.
fn reset_secs(bucket: &Bucket, cap: u64) -> u64 {
    let rate = cap as f64 / 60.0;
    if rate <= 0.0 {
        return 0;
    }
    ((cap as f64 - bucket.level).max(0.0) / rate).ceil() as u64
}

/// A scope's current numbers: (limit, remaining, seconds to reset) per rate, and (budget,
/// spent, reserved) in USD.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub requests: Option<(u64, u64, u64)>,
    pub tokens: Option<(u64, u64, u64)>,
    pub budget: Option<(f64, f64, f64)>,
    pub inflight: u64,
}

/// The scopes a request is admitted in, with the limits of each.
pub type Scopes = Vec<(Arc<Counter>, Limits)>;

/// What a request holds until it is settled: its demand in each scope.
#[derive(Debug)]
pub struct Reservation {
    scopes: Scopes,
    demand: Demand,
    settled: bool,
    /// With `on_exceed: cut`: the most this request may cost, what its budgets had left
    /// when it was admitted (its own reservation included), the smallest of them.
    pub allowance: Option<f64>,
}

impl Reservation {
    /// Settles every scope to `actual` (the provider's usage, priced).
    pub fn settle(mut self, actual: Demand) {
        for (counter, limits) in &self.scopes {
            counter.settle(limits, self.demand, actual);
        }
        self.settled = true;
    }

    pub fn demand(&self) -> Demand {
        self.demand
    }

    /// The scopes it holds.
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }
}

impl Drop for Reservation {
    /// A request that ends without being settled (a panic, a dropped task) keeps what it
    /// reserved as spent: never billed as zero.
    fn drop(&mut self) {
        if !self.settled {
            for (counter, limits) in &self.scopes {
                counter.settle(limits, self.demand, self.demand);
            }
        }
    }
}

/// Admits `demand` in every scope, or none: the first scope that refuses decides. Every
/// scope is locked (in one global order, so two requests cannot deadlock) while all are
/// checked and taken: requests arriving together cannot all pass a check that only one of
/// them fits.
pub fn admit(scopes: Scopes, demand: Demand) -> Result<Reservation, Refusal> {
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut order: Vec<usize> = (0..scopes.len()).collect();
    order.sort_by_key(|i| Arc::as_ptr(&scopes[*i].0) as usize);
    order.dedup_by_key(|i| Arc::as_ptr(&scopes[*i].0) as usize);
    let mut locked: Vec<(usize, std::sync::MutexGuard<'_, State>)> =
        order.iter().map(|i| (*i, scopes[*i].0.lock())).collect();
    // Checked in the caller's order (key, tenant, model), so the refusal names the first.
    locked.sort_by_key(|(i, _)| *i);
    for (i, state) in locked.iter_mut() {
        let (counter, limits) = &scopes[*i];
        counter.check(state, limits, demand, now, wall)?;
    }
    let mut allowance: Option<f64> = None;
    for (i, state) in locked.iter_mut() {
        let limits = &scopes[*i].1;
        if let Some(budget) = limits.budget.filter(|b| b.cut) {
            // Before this request's own reservation is taken: it is part of the allowance.
            let left = match &state.shared {
                // What this host holds and what Redis had not leased to any host: the rest
                // is other hosts' to spend.
                Some(sh) => sh.headroom(),
                None => budget.usd - state.spent - state.reserved,
            };
            allowance = Some(allowance.map_or(left, |a| a.min(left)));
        }
        Counter::take(state, limits, demand);
    }
    drop(locked);
    Ok(Reservation {
        scopes,
        demand,
        settled: false,
        allowance,
    })
}

/// Calls `f` with every limited scope of `snap`: its keys, tenants and model entries.
pub fn each_scope(snap: &crate::config::Snapshot, mut f: impl FnMut(&Arc<Counter>, &Limits)) {
    for key in snap.keys.iter().chain(snap.issued.load().iter()) {
        if let Some(counter) = &key.counter {
            f(counter, &key.limits);
        }
    }
    for tenant in snap.tenants.values() {
        if let Some(counter) = &tenant.counter {
            f(counter, &tenant.limits);
        }
    }
    for route in snap.models.all() {
        if let Some(counter) = &route.counter {
            f(counter, &route.limits);
        }
    }
}

/// The `x-ratelimit-reset-*` value: OpenAI writes durations like `1s`, `6m0s`.
pub fn reset_header(secs: u64) -> String {
    let d = Duration::from_secs(secs);
    if d.as_secs() >= 60 {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests;
