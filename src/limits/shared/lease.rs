//! A scope's side of the shared store: the quota it holds, owes and last saw, and what each
//! pass exchanges for it.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::{OnUnavailable, SharedStore, MIN_SLICE, OVERDRAFT};
use crate::limits::{Demand, LimitKind, Limits, Usage, RESERVED_RETRY_SECS};

/// The three leased quantities of a scope.
const REQUESTS: usize = 0;
const TOKENS: usize = 1;
const USD: usize = 2;

/// How much of a scope's peak demand is remembered from one pass to the next (at 100 ms
/// passes, half is forgotten in about 3 s).
const PEAK_DECAY: f64 = 0.98;

/// How long quota fetched for a refused request is kept for its retry (`retry-after: 1`).
const WANTED_FOR: std::time::Duration = std::time::Duration::from_secs(3);

/// Passes in a row without a request after which a rate gives its standing slice back.
const IDLE_PASSES: u32 = 50;

/// A scope with nothing to exchange still says so this often (its keys and concurrency
/// entry stay alive, and it learns the fleet's numbers).
const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What one pass sends for one quantity of a scope, kept to apply (or undo) its answer.
#[derive(Debug)]
pub(super) enum Exchange {
    Level {
        slot: usize,
        key: String,
        cap: f64,
        rate: f64,
        want: f64,
        /// Unused lease given back (taken out of the lease when sent).
        back: f64,
        /// Owed quota, sent as negative `back`.
        owed: f64,
        spent: f64,
        /// The fleet's total as this host knows it, for a level Redis lost.
        seen: f64,
        /// The budget period it was planned in: an answer for another is not this one's.
        period: i64,
        ttl_ms: u64,
    },
    Concurrency {
        key: String,
        inflight: u64,
        ttl_ms: u64,
    },
}

impl Exchange {
    pub(super) fn add_to(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        match self {
            Exchange::Level {
                key,
                cap,
                rate,
                want,
                back,
                owed,
                spent,
                seen,
                ttl_ms,
                ..
            } => {
                invocation
                    .key(key)
                    .arg("b")
                    .arg(cap.to_string())
                    .arg(rate.to_string())
                    .arg(want.to_string())
                    .arg((back - owed).to_string())
                    .arg(spent.to_string())
                    .arg(seen.to_string())
                    .arg(*ttl_ms);
            }
            Exchange::Concurrency {
                key,
                inflight,
                ttl_ms,
            } => {
                invocation.key(key).arg("c").arg(*inflight).arg(*ttl_ms);
            }
        }
    }
}

/// A scope's side of the shared store: what it holds, owes and last saw.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<SharedStore>,
    limits: Limits,
    /// Quota held (may be below zero by the overdraft or by usage beyond a reservation).
    lease: [f64; 3],
    /// Taken since the last pass: sizes the next lease.
    used: [f64; 3],
    /// The largest single demand lately (decaying each pass): a lease holds at least two.
    peak: [f64; 3],
    /// The largest demand refused for want of lease since the last pass.
    wanted: [f64; 3],
    /// Until when the refused demand is kept in hand for the client's retry.
    wanted_until: [Option<Instant>; 3],
    /// Admitted while Redis was away: taken from Redis when it is back.
    owed: [f64; 3],
    /// USD settled since the last pass.
    spent: f64,
    /// Redis' level at the last pass.
    level: [f64; 3],
    /// The fleet's spend in `period` at the last pass.
    spent_seen: f64,
    others_inflight: u64,
    /// The budget period the USD lease belongs to.
    period: i64,
    /// The last local allowance while Redis is away.
    local_at: Option<Instant>,
    /// Passes in a row with nothing taken: an idle scope gives its standing lease back.
    idle_passes: u32,
    /// When each quantity was last exchanged.
    last_sent: [Option<Instant>; 3],
}

impl Shared {
    pub(crate) fn new(store: Arc<SharedStore>, limits: Limits) -> Shared {
        let mut shared = Shared {
            store,
            limits,
            lease: [0.0; 3],
            used: [0.0; 3],
            peak: [0.0; 3],
            wanted: [0.0; 3],
            wanted_until: [None; 3],
            owed: [0.0; 3],
            spent: 0.0,
            level: [0.0; 3],
            spent_seen: 0.0,
            others_inflight: 0,
            period: i64::MIN,
            local_at: None,
            idle_passes: 0,
            last_sent: [None; 3],
        };
        for slot in [REQUESTS, TOKENS, USD] {
            shared.level[slot] = shared.cap(slot).unwrap_or(0.0);
        }
        shared
    }

    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    fn cap(&self, slot: usize) -> Option<f64> {
        match slot {
            REQUESTS => self.limits.requests_per_minute.map(|c| c as f64),
            TOKENS => self.limits.tokens_per_minute.map(|c| c as f64),
            _ => self.limits.budget.map(|b| b.usd),
        }
    }

    fn overdraft(&self, slot: usize) -> f64 {
        match (slot, self.cap(slot)) {
            (USD, _) | (_, None) => 0.0,
            (_, Some(cap)) => (cap * OVERDRAFT).floor(),
        }
    }

    /// Starts a new budget period: the old period's lease and spend belong to its key.
    /// Requests still in flight (`reserved`) will settle their reservations into the new
    /// period's lease: it starts that far below zero, so they are paid for from a grant.
    fn roll(&mut self, wall: SystemTime, reserved: f64) {
        if let Some(budget) = self.limits.budget {
            let period = budget.per.index(wall);
            if period != self.period {
                self.period = period;
                self.lease[USD] = -reserved;
                self.owed[USD] = 0.0;
                self.spent = 0.0;
                self.spent_seen = 0.0;
                self.level[USD] = budget.usd;
            }
        }
    }

    /// Whether `demand` fits what this host holds; `Err((kind, retry_after))` if not.
    pub(crate) fn check(
        &mut self,
        limits: &Limits,
        demand: Demand,
        inflight: u64,
        reserved: f64,
        wall: SystemTime,
    ) -> Result<(), (LimitKind, u64)> {
        let up = self.store.is_up();
        if !up && self.store.on_unavailable == OnUnavailable::Deny {
            return Err((LimitKind::Store, 1));
        }
        if let Some(cap) = limits.concurrent_requests {
            let allowed = if up {
                cap.saturating_sub(self.others_inflight)
            } else {
                share(cap as f64, self.store.hosts()).ceil() as u64
            };
            if inflight >= allowed {
                return Err((LimitKind::Concurrency, 1));
            }
        }
        self.roll(wall, reserved);
        if let Some(budget) = limits.budget {
            // Spent, or this request alone is dearer than what is left: nothing frees up
            // before the next period (and no quota is fetched for it).
            if self.spent_seen + self.spent + demand.usd.max(f64::MIN_POSITIVE) > budget.usd {
                return Err((LimitKind::Budget, budget.per.seconds_left(wall).max(1)));
            }
        }
        for (slot, kind) in [
            (REQUESTS, LimitKind::Requests),
            (TOKENS, LimitKind::Tokens),
            (USD, LimitKind::Budget),
        ] {
            let Some(cap) = self.cap(slot) else { continue };
            let need = need(slot, demand, cap);
            if self.lease[slot] - need >= -self.overdraft(slot) {
                continue;
            }
            // Credit for one request while a slice is on its way (a cold start, a burst,
            // sparse traffic whose lease went back): only owing nothing, and only while
            // what Redis had left at the last pass covers every host doing the same twice.
            let hosts = self.store.hosts();
            if up && self.lease[slot] >= 0.0 && self.level[slot] >= 2.0 * hosts * need {
                continue;
            }
            self.wanted[slot] = self.wanted[slot].max(need);
            self.wanted_until[slot] = Some(Instant::now() + WANTED_FOR);
            crate::runtime::registry().limits_wake.notify_one();
            let available = self.level[slot] + self.lease[slot];
            let retry = match (slot, limits.budget) {
                _ if available >= need && up => 1,
                (USD, Some(budget)) => {
                    if self.spent_seen + self.spent + need > budget.usd {
                        budget.per.seconds_left(wall).max(1)
                    } else {
                        RESERVED_RETRY_SECS
                    }
                }
                _ => (((need - available) / (cap / 60.0)).ceil() as u64).clamp(1, 60),
            };
            return Err((kind, retry));
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, demand: Demand) {
        for slot in [REQUESTS, TOKENS, USD] {
            if let Some(cap) = self.cap(slot) {
                let need = need(slot, demand, cap);
                self.lease[slot] -= need;
                self.used[slot] += need;
                self.peak[slot] = self.peak[slot].max(need);
                // The retry that was waited for came.
                self.wanted[slot] = 0.0;
                self.wanted_until[slot] = None;
            }
        }
    }

    pub(crate) fn settle(&mut self, reserved: Demand, actual: Demand) {
        if let Some(cap) = self.cap(TOKENS) {
            self.lease[TOKENS] += need(TOKENS, reserved, cap) - actual.tokens as f64;
        }
        if self.cap(USD).is_some() {
            self.lease[USD] += reserved.usd - actual.usd;
            self.spent += actual.usd;
        }
    }

    /// What this pass sends for this scope, empty when there is nothing to say (refreshed
    /// every [`REFRESH_EVERY`] all the same). What it gives back, owes or spent leaves the
    /// scope's state now: it is in flight until Redis answers.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan(
        &mut self,
        scope: &str,
        inflight: u64,
        reserved: f64,
        hosts: f64,
        wall: SystemTime,
        release: bool,
        prefix: &str,
    ) -> Vec<Exchange> {
        self.roll(wall, reserved);
        let idle = self.used.iter().all(|u| *u == 0.0);
        self.idle_passes = if idle {
            self.idle_passes.saturating_add(1)
        } else {
            0
        };
        let mut plan = Vec::new();
        for slot in [REQUESTS, TOKENS, USD] {
            let Some(cap) = self.cap(slot) else { continue };
            let (key, rate, ttl_ms) = match (slot, self.limits.budget) {
                (REQUESTS, _) => (format!("{prefix}{scope}:rpm"), cap / 60.0, 120_000),
                (TOKENS, _) => (format!("{prefix}{scope}:tpm"), cap / 60.0, 120_000),
                (_, Some(budget)) => (
                    format!("{prefix}{scope}:usd:{}", self.period),
                    0.0,
                    (budget.per.seconds_left(wall) + 86_400) * 1000,
                ),
                _ => continue,
            };
            if self.wanted_until[slot].is_none_or(|until| until <= Instant::now()) {
                self.wanted[slot] = 0.0;
            }
            // A budget keeps no standing slice: money an idle host holds is money the busy
            // ones cannot spend at the end of a period. A rate's standing slice goes back
            // once the scope has been idle a while.
            let standing = slot != USD && self.idle_passes < IDLE_PASSES;
            let target = if release {
                0.0
            } else if standing {
                let floor = 1.0;
                (2.0 * self.used[slot])
                    .max(2.0 * self.peak[slot])
                    .max(cap * MIN_SLICE)
                    .max(floor)
                    .min(share(cap, hosts).max(floor))
                    .max(self.wanted[slot])
            } else {
                (2.0 * self.used[slot]).max(self.wanted[slot])
            };
            let want = (target - self.lease[slot]).max(0.0);
            let back = if release || self.lease[slot] > 2.0 * target {
                (self.lease[slot] - target).max(0.0)
            } else {
                0.0
            };
            let spent = if slot == USD { self.spent } else { 0.0 };
            // A quiet rate need not be said every pass; a budget is, so that every host
            // knows within a pass what the fleet has spent.
            let quiet =
                slot != USD && want == 0.0 && back == 0.0 && self.owed[slot] == 0.0 && spent == 0.0;
            self.used[slot] = 0.0;
            self.peak[slot] *= PEAK_DECAY;
            if quiet
                && !release
                && self.last_sent[slot].is_some_and(|at| at.elapsed() < REFRESH_EVERY)
            {
                continue;
            }
            self.last_sent[slot] = Some(Instant::now());
            self.lease[slot] -= back;
            let owed = std::mem::take(&mut self.owed[slot]);
            if slot == USD {
                self.spent = 0.0;
            }
            plan.push(Exchange::Level {
                slot,
                key,
                cap,
                rate,
                want,
                back,
                owed,
                spent,
                seen: if slot == USD { self.spent_seen } else { 0.0 },
                period: self.period,
                ttl_ms,
            });
        }
        // Concurrency is exchanged every pass: the others' counts are only worth anything
        // fresh.
        if self.limits.concurrent_requests.is_some() {
            plan.push(Exchange::Concurrency {
                key: format!("{prefix}{scope}:inflight"),
                inflight: if release { 0 } else { inflight },
                ttl_ms: 120_000,
            });
        }
        plan
    }

    pub(super) fn apply(&mut self, plan: &[Exchange], answers: &[[f64; 3]]) {
        self.local_at = None;
        for (exchange, [granted, level, total]) in plan.iter().zip(answers) {
            match exchange {
                // Planned before the budget period rolled over: the old period's numbers
                // are not the new one's (its grant stays with the old key).
                Exchange::Level { slot, period, .. } if *slot == USD && *period != self.period => {}
                Exchange::Level { slot, .. } => {
                    self.lease[*slot] += granted;
                    self.level[*slot] = *level;
                    if *slot == USD {
                        self.spent_seen = *total;
                    }
                }
                Exchange::Concurrency { .. } => self.others_inflight = *level as u64,
            }
        }
    }

    /// An exchange Redis refused outright (it ran nothing): what it took out is put back.
    pub(super) fn restore(&mut self, plan: &[Exchange]) {
        for exchange in plan {
            if let Exchange::Level {
                slot,
                back,
                owed,
                spent,
                period,
                ..
            } = exchange
            {
                if *slot == USD && *period != self.period {
                    continue;
                }
                self.lease[*slot] += back;
                self.owed[*slot] += owed;
                if *slot == USD {
                    self.spent += spent;
                }
            }
        }
    }

    /// While Redis is away: this host's share of each rate refills its lease as a local
    /// bucket would, and its share of the budget's remainder is granted once; all of it
    /// owed to Redis, a rate's debt at most one bucket (the bucket refills meanwhile).
    pub(super) fn local_allowance(&mut self, hosts: f64, wall: SystemTime, reserved: f64) {
        self.roll(wall, reserved);
        let now = Instant::now();
        let first = self.local_at.is_none();
        let elapsed = self
            .local_at
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.local_at = Some(now);
        for slot in [REQUESTS, TOKENS] {
            let Some(cap) = self.cap(slot) else { continue };
            let portion = share(cap, hosts);
            let grant = (portion * elapsed / 60.0).min((portion - self.lease[slot]).max(0.0));
            self.lease[slot] += grant;
            self.owed[slot] = (self.owed[slot] + grant).min(portion);
        }
        if first && self.cap(USD).is_some() {
            let grant = share(self.level[USD].max(0.0), hosts);
            self.lease[USD] += grant;
            self.owed[USD] += grant;
        }
    }

    /// The fleet's numbers as this host last saw them.
    pub(crate) fn usage(
        &self,
        limits: &Limits,
        wall: SystemTime,
        inflight: u64,
        reserved: f64,
    ) -> Usage {
        let rate = |slot: usize, cap: u64| {
            let remaining = (self.level[slot] + self.lease[slot]).clamp(0.0, cap as f64);
            let reset = ((cap as f64 - remaining) / (cap as f64 / 60.0)).ceil() as u64;
            (cap, remaining as u64, reset)
        };
        let current = limits
            .budget
            .is_some_and(|b| b.per.index(wall) == self.period);
        Usage {
            requests: limits.requests_per_minute.map(|cap| rate(REQUESTS, cap)),
            tokens: limits.tokens_per_minute.map(|cap| rate(TOKENS, cap)),
            budget: limits.budget.map(|b| {
                if current {
                    (b.usd, self.spent_seen + self.spent, reserved)
                } else {
                    (b.usd, 0.0, 0.0)
                }
            }),
            inflight: inflight + self.others_inflight,
        }
    }

    /// What of the budget this host may still spend: its lease and what Redis had left
    /// unleased at the last pass.
    pub(crate) fn headroom(&self) -> f64 {
        self.lease[USD] + self.level[USD].max(0.0)
    }

    /// The fleet's spend in the current period, as this host knows it.
    pub(crate) fn spent(&self) -> (i64, f64) {
        (self.period, self.spent_seen + self.spent)
    }
}

/// What a demand takes of one quantity: a request, its tokens (at most a minute's
/// allowance, as on one host), its price.
fn need(slot: usize, demand: Demand, cap: f64) -> f64 {
    match slot {
        REQUESTS => 1.0,
        TOKENS => (demand.tokens as f64).min(cap).max(1.0),
        _ => demand.usd,
    }
}

fn share(cap: f64, hosts: f64) -> f64 {
    cap / hosts.max(1.0)
}
