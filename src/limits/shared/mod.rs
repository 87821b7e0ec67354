//! `limits.store: {redis: …}`: the limits of a fleet of hosts kept through Redis, without
//! the request path ever waiting on it.
//!
//! Each host admits against quota it holds locally, leased from Redis in slices by a
//! background pass every `sync`. A slice is taken from the shared bucket atomically (one
//! Lua script per pass), so what all hosts admit together stays within what one host
//! holding the whole bucket would admit, but for the credit that keeps a host from refusing
//! while its next slice is on its way: an overdraft of 0.25 % of a rate limit (none for a
//! budget), and one request when the host owes nothing and Redis' remainder at the last
//! pass covers twice that request on every host. Debts are settled from Redis at the next
//! pass; they become overshoot only if the other hosts drained that remainder meanwhile,
//! so the fleet overshoots by at most one request per host plus the overdrafts. Quota a
//! host holds and does not use goes back at the next pass; a lease is sized to twice what
//! the host used in the last pass or twice its largest recent request (at least 1 % of the
//! limit, at most the host's share of it), so little is ever stranded.
//!
//! Rates are token buckets refilled by Redis' clock; a budget is a level per calendar
//! period. Concurrency is each host's requests in flight, published every pass: a host
//! admits against the others' last published count, so concurrency can exceed its cap by
//! what other hosts admitted within one pass.
//!
//! When Redis does not answer, `on_unavailable: local` admits against each host's share
//! of every limit (the limit divided by the hosts last seen), recorded as owed and taken
//! from the shared buckets when Redis is back; `deny` refuses with 503.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::Counter;

mod conn;
mod lease;
pub use conn::{Backend, URL_FORMS};
use lease::Exchange;
pub(crate) use lease::Shared;

/// What a host does while Redis does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    Local,
    Deny,
}

/// A host's overdraft of a rate limit, as a fraction of the limit.
const OVERDRAFT: f64 = 1.0 / 400.0;
/// The smallest slice worth leasing, as a fraction of the limit.
const MIN_SLICE: f64 = 1.0 / 100.0;
/// Passes are at least this far apart, however often requests ask for more quota.
const MIN_GAP: Duration = Duration::from_millis(10);

/// A Redis shared by every host of a fleet (one per `limits.store` config).
pub struct SharedStore {
    backend: Backend,
    conn: tokio::sync::Mutex<Option<conn::Conn>>,
    /// The key prefix as a hash tag (`{sira:limits:}`): a pass's keys all live in one
    /// slot, so one script may touch them on a Redis Cluster.
    prefix: String,
    pub sync: Duration,
    timeout: Duration,
    pub on_unavailable: OnUnavailable,
    /// This process, among the hosts sharing the store.
    host: String,
    /// Which Redis and prefix (a digest of the URL, never the URL): stores that differ only
    /// in their timing settings share what they keep.
    pub(crate) place: String,
    up: AtomicBool,
    /// Hosts that passed within the last few syncs (this one included), at least 1.
    hosts: AtomicU64,
    /// The scopes bound to this store.
    counters: Mutex<Vec<Weak<Counter>>>,
    last_pass: Mutex<Option<Instant>>,
    /// The exchange in flight (see [`SharedStore::pass`]).
    pending: tokio::sync::Mutex<Option<Pending>>,
    /// Numbers this host's exchanges.
    seq: AtomicU64,
    /// Where the next exchange starts among the scopes.
    cursor: std::sync::atomic::AtomicUsize,
    /// Since when Redis has not answered.
    down_since: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        write!(f, "SharedStore({})", self.prefix)
    }
}

impl SharedStore {
    pub fn new(
        backend: Backend,
        prefix: String,
        sync: Duration,
        timeout: Duration,
        on_unavailable: OnUnavailable,
        place: String,
    ) -> SharedStore {
        let mut random = [0u8; 8];
        // A host id that collides (no randomness at all) only merges two hosts' published
        // concurrency; admission stays lease-bound.
        let _ = getrandom::fill(&mut random);
        SharedStore {
            backend,
            conn: tokio::sync::Mutex::new(None),
            prefix: format!("{{{prefix}}}"),
            sync,
            timeout,
            on_unavailable,
            host: hex::encode(random),
            place,
            up: AtomicBool::new(true),
            hosts: AtomicU64::new(1),
            counters: Mutex::default(),
            last_pass: Mutex::default(),
            pending: tokio::sync::Mutex::new(None),
            // Numbers start from the clock so a restarted host never repeats its last one.
            seq: AtomicU64::new(
                SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
            ),
            cursor: std::sync::atomic::AtomicUsize::new(0),
            down_since: Mutex::default(),
        }
    }

    /// Whether the last pass reached Redis (true until one fails).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn hosts(&self) -> f64 {
        self.hosts.load(Ordering::Relaxed).max(1) as f64
    }

    /// Adds `counter` to the scopes this store syncs.
    pub(super) fn adopt(&self, counter: &Arc<Counter>) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.retain(|c| c.strong_count() > 0);
        if !counters
            .iter()
            .any(|c| std::ptr::eq(c.as_ptr(), Arc::as_ptr(counter)))
        {
            counters.push(Arc::downgrade(counter));
        }
    }

    fn bound(&self) -> Vec<Arc<Counter>> {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.iter().filter_map(Weak::upgrade).collect()
    }

    async fn connection(&self) -> Result<conn::Conn, String> {
        let mut conn = self.conn.lock().await;
        if let Some(conn) = conn.as_ref() {
            return Ok(conn.clone());
        }
        let made = self.backend.connect(self.timeout);
        let made = tokio::time::timeout(self.timeout, made)
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|e| describe(&e))?;
        *conn = Some(made.clone());
        Ok(made)
    }

    /// Builds the next exchange: for the scopes bound here (at most [`MAX_EXCHANGES`]
    /// quantities, the rest next time, in turn), leases topped up or given back, spend and
    /// owed quota pushed, concurrency published. What it sends leaves the scopes' state
    /// now: it is in flight until Redis answers.
    fn prepare(&self, release: bool) -> Pending {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let all = self.bound();
        let wall = SystemTime::now();
        let hosts = self.hosts();
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(format!("{}hosts", self.prefix))
            .key(format!("{}replay:{}", self.prefix, self.host))
            .arg(&self.host)
            .arg(self.host_ttl_ms())
            .arg(seq);
        let start = self.cursor.load(Ordering::Relaxed) % all.len().max(1);
        let mut counters = Vec::new();
        let mut plans: Vec<Vec<Exchange>> = Vec::new();
        let mut exchanges = 0;
        let mut visited = 0;
        for counter in all.iter().cycle().skip(start).take(all.len()) {
            if exchanges >= MAX_EXCHANGES {
                break;
            }
            visited += 1;
            let mut s = counter.lock();
            let (inflight, reserved) = (s.inflight, s.reserved);
            let Some(sh) = s
                .shared
                .as_mut()
                .filter(|sh| std::ptr::eq(Arc::as_ptr(&sh.store), self))
            else {
                continue;
            };
            let plan = sh.plan(
                &counter.scope,
                inflight,
                reserved,
                hosts,
                wall,
                release,
                &self.prefix,
            );
            if plan.is_empty() {
                continue;
            }
            for exchange in &plan {
                exchange.add_to(&mut invocation);
            }
            exchanges += plan.len();
            counters.push(counter.clone());
            plans.push(plan);
        }
        // The next exchange starts where this one stopped: every scope gets its turn.
        self.cursor
            .store((start + visited) % all.len().max(1), Ordering::Relaxed);
        Pending {
            counters,
            plans,
            invocation,
        }
    }

    /// Whether this host is the first to send the alert `key` (fleet-wide, for `ttl_ms`);
    /// a Redis that does not answer lets every host send it rather than none.
    pub async fn claim_alert(&self, key: &str, ttl_ms: u64) -> bool {
        if !self.is_up() {
            return true;
        }
        let Ok(mut conn) = self.connection().await else {
            return true;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}alert:{key}", self.prefix))
            .arg(&self.host)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms);
        match tokio::time::timeout(self.timeout, cmd.query_async::<Option<String>>(&mut conn)).await
        {
            Ok(Ok(set)) => set.is_some(),
            _ => true,
        }
    }

    /// `suffix` under this store's prefix (its hash tag included).
    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// One command or script for another part of sira sharing this Redis (issued keys),
    /// bounded by the store's timeout; the error names the kind of failure only.
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        request: StoreRequest<'_>,
    ) -> Result<T, String> {
        let mut conn = self.connection().await?;
        let answer = match request {
            StoreRequest::Cmd(cmd) => {
                tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await
            }
            StoreRequest::Script(invocation) => {
                tokio::time::timeout(self.timeout, invocation.invoke_async::<T>(&mut conn)).await
            }
        };
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err("timed out".to_owned()),
        }
    }

    fn host_ttl_ms(&self) -> u64 {
        (self.sync.as_millis() as u64).saturating_mul(5).max(2000)
    }

    /// One exchange with Redis. An exchange whose answer did not come is sent again,
    /// unchanged and under the same number, before anything new: if Redis did run it, the
    /// script answers with what it answered then, so nothing is counted twice. `release`
    /// gives every lease back (a host shutting down).
    pub async fn pass(&self, release: bool) {
        {
            let mut last = self.last_pass.lock().unwrap_or_else(|p| p.into_inner());
            if !release && last.is_some_and(|at| at.elapsed() < MIN_GAP) {
                return;
            }
            *last = Some(Instant::now());
        }
        // Only this store's passes take it, one at a time.
        let mut pending = self.pending.lock().await;
        let exchange = pending.get_or_insert_with(|| self.prepare(release));
        let expected: usize = exchange.plans.iter().map(Vec::len).sum();
        // `Err((reason, refused))`: `refused` when Redis answered with an error, so the
        // script ran nothing (or failed and would fail again); else the exchange may have
        // run and is sent again as it is.
        let answer: Result<Vec<String>, (String, bool)> = match self.connection().await {
            Ok(mut conn) => {
                match tokio::time::timeout(
                    self.timeout,
                    exchange.invocation.invoke_async::<Vec<String>>(&mut conn),
                )
                .await
                {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => Err((describe(&e), !transient(&e))),
                    Err(_) => Err(("no answer in time".to_owned(), false)),
                }
            }
            Err(e) => Err((e, false)),
        };
        let answer = answer.and_then(|answer| parse(&answer, expected).map_err(|e| (e, true)));
        if let Err((_, true)) = &answer {
            // Sending it again would fail the same way: what it carried goes back to the
            // scopes, to go out in the next exchange.
            if let Some(refused) = pending.take() {
                refused.restore();
            }
        }
        let exchange = match &*pending {
            Some(exchange) => exchange,
            None => &Pending::default(),
        };
        match answer.map_err(|(reason, _)| reason) {
            Ok((hosts, mut results)) => {
                self.hosts.store(hosts.max(1), Ordering::Relaxed);
                for (counter, plan) in exchange.counters.iter().zip(&exchange.plans) {
                    let taken: Vec<_> = results.by_ref().take(plan.len()).collect();
                    // Applied to the scope whichever store it is bound to now: a reload
                    // that changed the store carried its lease over.
                    if let Some(sh) = counter.lock().shared.as_mut() {
                        sh.apply(plan, &taken);
                    }
                }
                *pending = None;
                *self.down_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("the limits store (Redis) answers again; owed quota reconciled");
                }
                crate::metrics::metrics().limits_store_up.set(1);
            }
            Err(reason) => {
                let down_for = {
                    let mut since = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
                    since.get_or_insert_with(Instant::now).elapsed()
                };
                // A single slow answer is not an outage: hosts go local after a second.
                if down_for >= LOCAL_AFTER && self.on_unavailable == OnUnavailable::Local {
                    let (wall, hosts) = (SystemTime::now(), self.hosts());
                    for counter in self.bound() {
                        let mut s = counter.lock();
                        let reserved = s.reserved;
                        if let Some(sh) = s.shared.as_mut() {
                            sh.local_allowance(hosts, wall, reserved);
                        }
                    }
                }
                if down_for >= LOCAL_AFTER && self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        %reason,
                        on_unavailable = ?self.on_unavailable,
                        "the limits store (Redis) does not answer"
                    );
                    crate::metrics::metrics().limits_store_up.set(0);
                }
                // Reconnect from scratch next time: a manager whose server went away may
                // hold a connection that only fails slowly.
                *self.conn.lock().await = None;
            }
        }
    }
}

/// What [`SharedStore::run`] sends.
pub(crate) enum StoreRequest<'a> {
    Cmd(&'a redis::Cmd),
    Script(&'a redis::ScriptInvocation<'a>),
}

/// An exchange sent and not yet answered: resent as it is until it is.
struct Pending {
    counters: Vec<Arc<Counter>>,
    plans: Vec<Vec<Exchange>>,
    invocation: redis::ScriptInvocation<'static>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            counters: Vec::new(),
            plans: Vec::new(),
            invocation: SCRIPT.prepare_invoke(),
        }
    }
}

impl Pending {
    /// Puts what the exchange carried back into its scopes (it never reached Redis).
    fn restore(self) {
        for (counter, plan) in self.counters.iter().zip(&self.plans) {
            if let Some(sh) = counter.lock().shared.as_mut() {
                sh.restore(plan);
            }
        }
    }
}

impl Drop for SharedStore {
    /// A store a reload replaced, with an exchange still unanswered: what it carried goes
    /// back to the scopes, which the new store serves now.
    fn drop(&mut self) {
        if let Some(pending) = self.pending.get_mut().take() {
            pending.restore();
        }
    }
}

/// A failure after which the exchange may or may not have run.
fn transient(e: &redis::RedisError) -> bool {
    e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error()
}

/// The most quantities one exchange carries: a bound on the script's size and run time.
const MAX_EXCHANGES: usize = 2000;
/// How long Redis must fail before a host admits on its own (or `deny` refuses).
const LOCAL_AFTER: Duration = Duration::from_secs(1);

fn describe(e: &redis::RedisError) -> String {
    // Never the error's text: it may quote the URL, password included.
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        "connection failed".to_owned()
    } else {
        format!("{:?}", e.kind())
    }
}

/// (hosts, then per exchange: granted, Redis' level after, total spent).
fn parse(
    answer: &[String],
    exchanges: usize,
) -> Result<(u64, std::vec::IntoIter<[f64; 3]>), String> {
    let bad = || "an unexpected answer from the limits script".to_owned();
    let (hosts, rest) = answer.split_first().ok_or_else(bad)?;
    if rest.len() != exchanges * 3 {
        return Err(bad());
    }
    let hosts = hosts.parse::<u64>().map_err(|_| bad())?;
    let mut out = Vec::with_capacity(exchanges);
    for triple in rest.chunks_exact(3) {
        let mut values = [0.0; 3];
        for (value, text) in values.iter_mut().zip(triple) {
            *value = text.parse::<f64>().map_err(|_| bad())?;
        }
        out.push(values);
    }
    Ok((hosts, out.into_iter()))
}

/// One atomic exchange for every scope of a pass. Rates and budgets (`b`) are levels
/// refilled by Redis' clock at `rate` per second up to `cap`; quota given back (`back`,
/// negative for quota a host admitted on its own while Redis was away) is added, then up to
/// `want` is granted. Concurrency (`c`) is each live host's published count.
static SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("script.lua")));

/// Binds every limited scope of `snap` to its store (or to none, the memory store), and
/// asks for a pass at once so that leases are in hand before the first requests.
pub fn install(snap: &crate::config::Snapshot) {
    crate::runtime::registry()
        .current_limit_store
        .store(snap.limits_store.clone());
    super::each_scope(snap, |counter, limits| {
        counter.bind(snap.limits_store.as_ref(), *limits);
    });
    if snap.limits_store.is_some() {
        crate::runtime::registry().limits_wake.notify_one();
    }
}

/// Runs the passes of every store some snapshot uses: every `sync`, and soon after a
/// request finds its lease short; gives every lease back on shutdown.
pub struct LimitSyncService;

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for LimitSyncService {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let registry = crate::runtime::registry();
        // Once shutting down, every pass gives leases back and pushes what requests still
        // in flight settle, until the process ends.
        let mut releasing = false;
        loop {
            let wake = registry.limits_wake.notified();
            let stores = registry.limit_stores();
            let mut every = Duration::from_secs(1);
            for store in &stores {
                store.pass(releasing).await;
                every = every.min(store.sync);
            }
            if releasing {
                tokio::time::sleep(every).await;
                continue;
            }
            tokio::select! {
                _ = wake => tokio::time::sleep(MIN_GAP).await,
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => releasing = true,
            }
        }
    }
}
