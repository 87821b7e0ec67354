//! Upstream pools: which endpoint of a provider a try goes to.
//!
//! A pool is built per config snapshot on `pingora-load-balancing`: its `Backend`s (one per
//! endpoint), a `LoadBalancer` with Pingora's weighted round robin or Ketama ring, and the
//! readiness of each backend from the provider's [`health::HealthGroup`]. What must outlive
//! the snapshot (health, circuit, in-flight count, latency) lives in the runtime registry,
//! so a reload keeps it for every endpoint it keeps.
//!
//! A `Backend` is identified by an address; sira's endpoints are URLs whose host names
//! resolve in the background and may change. Each endpoint therefore gets a stable
//! identity address derived from its URL (an IPv6 address in the unique-local range, never
//! connected to): the Ketama ring and the health registry are keyed by the endpoint, not by
//! whatever its name resolves to today, so a DNS change remaps no session.
//!
//! Strategies (`balance`):
//! - `round-robin` (default) and `weighted`: Pingora's weighted round robin (weights all 1
//!   for `round-robin`);
//! - `least-latency`: the lowest peak-EWMA time to first byte times (in-flight + 1);
//! - `consistent-hash`: Pingora's Ketama ring keyed by `hash_key`, with bounded loads
//!   (Mirrokni et al.): an endpoint already holding more than `balance_load_factor` times
//!   its share of the pool's in-flight requests is passed over for the next one on the ring.
//!
//! Every strategy skips endpoints that are unhealthy, whose circuit is open, or that
//! already failed this request.

pub mod admin;
pub mod affinity;
pub mod circuit;
pub mod health;
mod report;
pub mod state;

pub use report::{Outcome, FAILURE_PENALTY};

use std::cell::Cell;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::consistent::KetamaHashing;
use pingora_load_balancing::selection::{BackendIter, BackendSelection, RoundRobin};
use pingora_load_balancing::{Backend, Backends, Extensions, LoadBalancer};
use prometheus::IntCounter;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use affinity::HashKey;
use circuit::{Admission, CircuitPolicy, CircuitState};
use health::{HealthGroup, HealthPolicy, Probe};
use state::{EndpointState, Inflight};

use crate::metrics::metrics;
use crate::provider::Endpoint;

/// `balance:`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    #[default]
    RoundRobin,
    Weighted,
    LeastLatency,
    ConsistentHash,
}

impl Balance {
    pub const fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::Weighted => "weighted",
            Balance::LeastLatency => "least-latency",
            Balance::ConsistentHash => "consistent-hash",
        }
    }
}

/// Default `balance_load_factor`: no endpoint takes more than 125 % of the mean load.
pub const DEFAULT_LOAD_FACTOR: f64 = 1.25;

/// A provider's pool settings, validated by `config::build`.
#[derive(Clone, Debug)]
pub struct PoolSpec {
    pub balance: Balance,
    pub hash_key: Option<HashKey>,
    pub load_factor: f64,
    pub circuit: Option<CircuitPolicy>,
    pub health: Option<HealthPolicy>,
}

impl Default for PoolSpec {
    fn default() -> Self {
        PoolSpec {
            balance: Balance::RoundRobin,
            hash_key: None,
            load_factor: DEFAULT_LOAD_FACTOR,
            circuit: None,
            health: None,
        }
    }
}

/// Why an endpoint was chosen, for `sira_upstream_selections_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The strategy's first choice (round robin, weights, latency).
    Balance,
    /// The key's place on the ring.
    Hash,
    /// The key's endpoint was over its bounded load: the next one on the ring took it.
    FallbackFromOverload,
    /// Another endpoint after one failed this request.
    Retry,
    /// A hedged second attempt.
    Hedge,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::Balance,
        Reason::Hash,
        Reason::FallbackFromOverload,
        Reason::Retry,
        Reason::Hedge,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Balance => "balance",
            Reason::Hash => "hash",
            Reason::FallbackFromOverload => "fallback_from_overload",
            Reason::Retry => "retry",
            Reason::Hedge => "hedge",
        }
    }
}

/// The endpoint a try goes to.
#[derive(Debug)]
pub struct Pick {
    pub index: usize,
    pub reason: Reason,
    /// Counts the try in the endpoint's in-flight load until dropped.
    pub inflight: Inflight,
    /// This try is the half-open circuit's probe: its outcome must be reported
    /// ([`Pool::report`]) or the probe given back ([`Pool::release_probe`]).
    pub probe: bool,
}

/// No endpoint of the pool can take a request now.
#[derive(Debug, thiserror::Error)]
#[error("no healthy endpoint ({unhealthy} unhealthy, {open} with an open circuit, of {total})")]
pub struct NoEndpoint {
    pub total: usize,
    pub unhealthy: usize,
    pub open: usize,
}

/// The index of a backend's endpoint in this snapshot's list.
#[derive(Clone, Copy)]
struct Slot(usize);

struct Member {
    url: Arc<str>,
    backend: Backend,
    state: Arc<EndpointState>,
    /// `sira_upstream_selections_total` for this endpoint, one per [`Reason`].
    selections: [IntCounter; 5],
}

enum Balancer {
    Weighted(LoadBalancer<RoundRobin>),
    Ketama(LoadBalancer<KetamaHashing>),
}

impl Balancer {
    fn ready(&self, backend: &Backend) -> bool {
        match self {
            Balancer::Weighted(lb) => lb.backends().ready(backend),
            Balancer::Ketama(lb) => lb.backends().ready(backend),
        }
    }

    fn select_with(
        &self,
        key: &[u8],
        max_iterations: usize,
        accept: impl Fn(&Backend, bool) -> bool,
    ) -> Option<Backend> {
        match self {
            Balancer::Weighted(lb) => lb.select_with(key, max_iterations, accept),
            Balancer::Ketama(lb) => lb.select_with(key, max_iterations, accept),
        }
    }
}

/// One provider's endpoints as a pool, for one snapshot.
pub struct Pool {
    provider: Arc<str>,
    pub balance: Balance,
    pub hash_key: Option<HashKey>,
    load_factor: f64,
    pub circuit: Option<CircuitPolicy>,
    /// `None` = passive only (circuit breaker, failover).
    pub health: Option<Arc<HealthGroup>>,
    members: Vec<Member>,
    balancer: Balancer,
    /// Spreads keyless requests of a consistent-hash pool over the ring.
    keyless: AtomicU64,
    /// How far a selection walks the ring or the weighted list: enough to meet every
    /// endpoint, light ones among heavy ones included (a weight-1 endpoint beside a
    /// weight-100 one comes up about once in 101 steps).
    steps: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("provider", &self.provider)
            .field("balance", &self.balance)
            .field("endpoints", &self.members.len())
            .finish()
    }
}

/// What `/admin/upstreams` shows of one endpoint.
pub struct MemberView<'a> {
    pub url: &'a str,
    pub healthy: bool,
    pub circuit: CircuitState,
    pub state: &'a EndpointState,
}

impl Pool {
    /// Builds the pool of `endpoints`. `probe` gives the health-check request of an endpoint
    /// (the provider knows its credential and paths); it is only called with a `health:`.
    pub fn new(
        provider: &Arc<str>,
        endpoints: &[Arc<Endpoint>],
        spec: PoolSpec,
        probe: impl Fn(&Endpoint, &HealthPolicy) -> Option<pingora_http::RequestHeader>,
    ) -> Pool {
        let health = spec.health.as_ref().map(|policy| {
            // The credential and provider headers: the same on every endpoint's probe, so
            // the first one's stand for all (its `Host` aside), and adding an endpoint
            // keeps the group.
            let mut hasher = std::hash::DefaultHasher::new();
            let first = endpoints.first().and_then(|e| probe(e, policy));
            for (name, value) in first.iter().flat_map(|r| r.headers.iter()) {
                if name != http::header::HOST {
                    std::hash::Hash::hash(name.as_str(), &mut hasher);
                    std::hash::Hash::hash(value.as_bytes(), &mut hasher);
                }
            }
            HealthGroup::shared(provider, policy, std::hash::Hasher::finish(&hasher))
        });
        let mut members = Vec::with_capacity(endpoints.len());
        for (index, endpoint) in endpoints.iter().enumerate() {
            let state = crate::runtime::registry().endpoint(provider, &endpoint.url);
            let mut ext = Extensions::new();
            ext.insert(Slot(index));
            if let Some(request) = health.as_ref().and_then(|g| probe(endpoint, &g.policy)) {
                ext.insert(Arc::new(Probe {
                    provider: provider.clone(),
                    endpoint: endpoint.clone(),
                    state: state.clone(),
                    request,
                }));
            }
            let weight = match spec.balance {
                Balance::RoundRobin => 1,
                _ => endpoint.weight.max(1) as usize,
            };
            let selections = Reason::ALL.map(|reason| {
                metrics().upstream_selections.with_label_values(&[
                    provider,
                    &endpoint.url,
                    reason.as_str(),
                ])
            });
            members.push(Member {
                url: endpoint.url.clone(),
                backend: Backend {
                    addr: identity(&endpoint.url),
                    weight,
                    ext,
                },
                state,
                selections,
            });
        }
        let total_weight: usize = members.iter().map(|m| m.backend.weight).sum();
        let steps = 64 * members.len().max(1) + 4 * total_weight;
        let set: BTreeSet<Backend> = members.iter().map(|m| m.backend.clone()).collect();
        let backends = || match &health {
            Some(group) => {
                Backends::new_with_health_registry(Static::new(set.clone()), group.registry.clone())
            }
            None => Backends::new(Static::new(set.clone())),
        };
        let balancer = match spec.balance {
            Balance::ConsistentHash => Balancer::Ketama(load(backends())),
            _ => Balancer::Weighted(load(backends())),
        };
        if let Some(group) = health.as_ref().filter(|g| !g.is_new()) {
            group.recheck();
        }
        Pool {
            provider: provider.clone(),
            balance: spec.balance,
            hash_key: spec.hash_key,
            load_factor: spec.load_factor.max(1.0),
            circuit: spec.circuit,
            health,
            members,
            balancer,
            keyless: AtomicU64::new(0),
            steps,
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The runtime state of endpoint `index`.
    pub fn state(&self, index: usize) -> Option<&Arc<EndpointState>> {
        self.members.get(index).map(|m| &m.state)
    }

    /// Without active checks every endpoint is healthy: no need to ask Pingora (a hash of
    /// the backend and a map lookup per call).
    fn healthy(&self, member: &Member) -> bool {
        self.health.is_none() || self.balancer.ready(&member.backend)
    }

    fn circuit_open(&self, member: &Member) -> bool {
        self.circuit.is_some() && member.state.circuit.blocked()
    }

    /// Whether some endpoint could take a request now (for `/readyz`).
    pub fn available(&self) -> bool {
        self.members
            .iter()
            .any(|m| self.healthy(m) && !self.circuit_open(m))
    }

    pub fn views(&self) -> impl Iterator<Item = MemberView<'_>> {
        self.members.iter().map(|m| MemberView {
            url: &m.url,
            healthy: self.healthy(m),
            circuit: if self.circuit.is_some() {
                m.state.circuit.state()
            } else {
                CircuitState::Closed
            },
            state: &m.state,
        })
    }

    /// Chooses the endpoint for a try. `key` is the request's affinity value (for a
    /// consistent-hash pool); `avoid` the endpoints that already failed this request, which
    /// are only chosen again when nothing else can take it.
    pub fn select(&self, key: Option<&[u8]>, avoid: &[usize]) -> Result<Pick, NoEndpoint> {
        let retry = !avoid.is_empty();
        let probe = Cell::new(false);
        let picked = self.pick(key, avoid, &probe).or_else(|| {
            if retry {
                self.pick(key, &[], &probe)
            } else {
                None
            }
        });
        let Some((index, mut reason)) = picked else {
            return Err(self.unavailable());
        };
        if retry {
            reason = Reason::Retry;
        }
        let member = &self.members[index];
        member.selections[reason as usize].inc();
        Ok(Pick {
            index,
            reason,
            inflight: member.state.start(),
            probe: probe.get(),
        })
    }

    /// A second attempt of a hedged request: any endpoint but those in `avoid`, the
    /// affinity key aside (the key's endpoint is the one being slow).
    pub fn select_hedge(&self, avoid: &[usize]) -> Option<Pick> {
        let probe = Cell::new(false);
        let (index, _) = self.pick(None, avoid, &probe)?;
        let member = &self.members[index];
        member.selections[Reason::Hedge as usize].inc();
        Some(Pick {
            index,
            reason: Reason::Hedge,
            inflight: member.state.start(),
            probe: probe.get(),
        })
    }

    /// Gives back a half-open probe that was never sent.
    pub fn release_probe(&self, index: usize) {
        if let Some(member) = self.members.get(index) {
            member.state.circuit.release_probe();
        }
    }

    fn unavailable(&self) -> NoEndpoint {
        let unhealthy = self.members.iter().filter(|m| !self.healthy(m)).count();
        let open = self
            .members
            .iter()
            .filter(|m| self.healthy(m) && self.circuit_open(m))
            .count();
        NoEndpoint {
            total: self.members.len(),
            unhealthy,
            open,
        }
    }

    /// Lets a request through the endpoint's circuit, claiming a half-open probe (noted in
    /// `probe`) when one is due.
    fn admit(&self, member: &Member, probe: &Cell<bool>) -> bool {
        match &self.circuit {
            Some(policy) => match member.state.circuit.admit(policy) {
                Admission::Yes => {
                    probe.set(false);
                    true
                }
                Admission::Probe => {
                    probe.set(true);
                    true
                }
                Admission::No => false,
            },
            None => true,
        }
    }

    fn slot(backend: &Backend) -> Option<usize> {
        backend.ext.get::<Slot>().map(|s| s.0)
    }

    fn pick(
        &self,
        key: Option<&[u8]>,
        avoid: &[usize],
        probe: &Cell<bool>,
    ) -> Option<(usize, Reason)> {
        // One endpoint: nothing to choose, so Pingora's selector (an iterator with a hash
        // set of the backends seen) is not worth its cost.
        if let [only] = self.members.as_slice() {
            let usable = !avoid.contains(&0) && self.healthy(only) && self.admit(only, probe);
            let reason = if self.balance == Balance::ConsistentHash && key.is_some() {
                Reason::Hash
            } else {
                Reason::Balance
            };
            return usable.then_some((0, reason));
        }
        let usable = |index: usize, ready: bool| {
            ready && !avoid.contains(&index) && self.members.get(index).is_some()
        };
        let steps = self.steps;
        match self.balance {
            Balance::ConsistentHash => {
                let Some(key) = key else {
                    let tick = self.keyless.fetch_add(1, Ordering::Relaxed).to_le_bytes();
                    return self
                        .ring(&tick, avoid, steps, probe)
                        .map(|(i, _)| (i, Reason::Balance));
                };
                self.ring(key, avoid, steps, probe)
            }
            Balance::LeastLatency => self.least_latency(avoid, probe),
            Balance::RoundRobin | Balance::Weighted => {
                let chosen = self.balancer.select_with(b"", steps, |backend, ready| {
                    Self::slot(backend)
                        .is_some_and(|i| usable(i, ready) && self.admit(&self.members[i], probe))
                })?;
                Self::slot(&chosen).map(|i| (i, Reason::Balance))
            }
        }
    }

    /// Consistent hashing with bounded loads.
    fn ring(
        &self,
        key: &[u8],
        avoid: &[usize],
        steps: usize,
        probe: &Cell<bool>,
    ) -> Option<(usize, Reason)> {
        let live = self
            .members
            .iter()
            .filter(|m| self.healthy(m) && !self.circuit_open(m))
            .count()
            .max(1);
        let total: u64 = self
            .members
            .iter()
            .map(|m| u64::from(m.state.inflight()))
            .sum();
        let cap = (self.load_factor * (total + 1) as f64 / live as f64).ceil() as u64;
        let overloaded = std::cell::Cell::new(false);
        let chosen = self.balancer.select_with(key, steps, |backend, ready| {
            let Some(i) = Self::slot(backend) else {
                return false;
            };
            if !ready || avoid.contains(&i) {
                return false;
            }
            let member = &self.members[i];
            if u64::from(member.state.inflight()) + 1 > cap {
                overloaded.set(true);
                return false;
            }
            self.admit(member, probe)
        });
        if let Some(i) = chosen.as_ref().and_then(Self::slot) {
            let reason = if overloaded.get() {
                Reason::FallbackFromOverload
            } else {
                Reason::Hash
            };
            return Some((i, reason));
        }
        // Every endpoint is at its bound (it rounds up, so only under a race): the least
        // loaded one takes it.
        self.least_loaded(avoid, probe)
            .map(|i| (i, Reason::FallbackFromOverload))
    }

    fn least_loaded(&self, avoid: &[usize], probe: &Cell<bool>) -> Option<usize> {
        let mut order: Vec<usize> = (0..self.members.len())
            .filter(|i| !avoid.contains(i) && self.healthy(&self.members[*i]))
            .collect();
        order.sort_by_key(|i| self.members[*i].state.inflight());
        order
            .into_iter()
            .find(|i| self.admit(&self.members[*i], probe))
    }

    /// The lowest peak-EWMA time to first byte, weighted by in-flight requests. An endpoint
    /// never measured costs nothing, so each is tried early; ties go round robin.
    fn least_latency(&self, avoid: &[usize], probe: &Cell<bool>) -> Option<(usize, Reason)> {
        let n = self.members.len();
        let start = self.keyless.fetch_add(1, Ordering::Relaxed) as usize;
        let mut scored: Vec<(f64, usize)> = (0..n)
            .map(|step| (start + step) % n.max(1))
            .filter(|i| {
                let m = &self.members[*i];
                !avoid.contains(i) && self.healthy(m) && !self.circuit_open(m)
            })
            .map(|i| {
                let m = &self.members[i];
                let latency = m.state.latency.estimate().map_or(0.0, |d| d.as_secs_f64());
                (latency * f64::from(m.state.inflight() + 1), i)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        scored
            .into_iter()
            .find(|(_, i)| self.admit(&self.members[*i], probe))
            .map(|(_, i)| (i, Reason::Balance))
    }
}

/// Builds the balancer's selector from the static backend set. `Static` discovery never
/// waits, so the update completes on its first poll.
fn load<S>(backends: Backends) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let lb = LoadBalancer::from_backends(backends);
    {
        let mut update = std::pin::pin!(lb.update());
        let mut cx = Context::from_waker(Waker::noop());
        match update.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => tracing::error!("upstream pool update failed: {e}"),
            // `Static` never waits; if a Pingora change made it, the pool would have no
            // endpoints: say so rather than fail every request silently.
            Poll::Pending => tracing::error!("upstream pool update did not complete at once"),
        }
    }
    lb
}

/// The stable identity address of an endpoint: `fd00::/8` plus 120 bits of the URL's
/// SHA-256. Never connected to; only Pingora's ring and health registry see it.
fn identity(url: &str) -> PingoraAddr {
    let digest = Sha256::digest(url.as_bytes());
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&digest[..16]);
    octets[0] = 0xfd;
    let addr = SocketAddrV6::new(Ipv6Addr::from(octets), 1, 0, 0);
    PingoraAddr::Inet(std::net::SocketAddr::V6(addr))
}

#[cfg(test)]
mod tests;
