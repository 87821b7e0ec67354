//! State that outlives a config snapshot: what a reload must not reset.
//!
//! A snapshot is rebuilt whole on every reload, but some of what the gateway learns while
//! running belongs to the endpoint or the name, not to the config text: the addresses a
//! host name resolved to, the round-robin position of a model entry, and each endpoint's
//! health, circuit, in-flight count and latency. The snapshot holds `Arc`s to
//! these entries; the registry hands out the same entry for the same key as long as some
//! snapshot still holds it, so a reload that keeps an endpoint keeps its state, and one that
//! drops it lets it go.
//!
//! Host names are resolved by the DNS service ([`crate::dns`]) in the background, honouring
//! each answer's TTL: a request only ever reads the last answer, except for an endpoint that
//! has never been resolved (the first seconds after start, or after a reload added it),
//! which waits for its first answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use arc_swap::ArcSwapOption;
use tokio::sync::Notify;

use crate::pool::health::HealthGroup;
use crate::pool::state::{EndpointState, PeakEwma};

/// The process's registry: every snapshot built in this process draws from it.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);
    &REGISTRY
}

#[derive(Default)]
pub struct Registry {
    hosts: Mutex<AHashMap<(String, u16), Weak<HostState>>>,
    cursors: Interned<AtomicUsize>,
    endpoints: Interned<EndpointState>,
    health: Interned<HealthGroup>,
    latencies: Interned<PeakEwma>,
    response_stores: Interned<crate::responses_store::ResponseStore>,
    response_caches: Interned<crate::cache::ResponseCache>,
    limit_counters: Interned<crate::limits::Counter>,
    limit_stores: Interned<crate::limits::shared::SharedStore>,
    /// The store of the snapshot installed last: where scopes no snapshot names (JWT
    /// subjects) are kept, whichever snapshot their request pinned.
    pub(crate) current_limit_store: ArcSwapOption<crate::limits::shared::SharedStore>,
    subject_counters: SubjectCounters,
    /// Each TLS listener's live certificates and client verification, for the process's
    /// life (a listener's address only changes with a restart).
    tls: Mutex<AHashMap<SocketAddr, Arc<crate::tls::Handles>>>,
    /// Woken when a scope wants quota from its shared store sooner than the next pass.
    pub(crate) limits_wake: Notify,
    jwks: Interned<crate::auth::jwt::RemoteJwks>,
    /// Woken when a JWKS URL is registered, so its keys are fetched at once.
    pub(crate) jwks_added: Notify,
    /// Woken when a host that needs resolving is registered.
    pub(crate) added: Notify,
    /// Woken when a health-check group is created (a start or a reload).
    pub(crate) health_added: Notify,
}

/// Subjects' limit state: idle ones are forgotten after longer than a budget's month.
struct SubjectCounters(moka::sync::Cache<Box<str>, Arc<crate::limits::Counter>>);

impl Default for SubjectCounters {
    fn default() -> Self {
        SubjectCounters(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(32 * 86_400))
                .build(),
        )
    }
}

/// Values shared by name while some snapshot holds them, dropped with the last one.
struct Interned<T>(Mutex<AHashMap<String, Weak<T>>>);

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Interned(Mutex::default())
    }
}

impl<T> Interned<T> {
    /// The value named `key`, made by `make` (and reported by `created`) if none is alive.
    fn get_or(&self, key: &str, make: impl FnOnce() -> T) -> (Arc<T>, bool) {
        let mut map = lock(&self.0);
        map.retain(|_, value| value.strong_count() > 0);
        if let Some(value) = map.get(key).and_then(Weak::upgrade) {
            return (value, false);
        }
        let value = Arc::new(make());
        map.insert(key.to_owned(), Arc::downgrade(&value));
        (value, true)
    }

    fn alive(&self) -> Vec<Arc<T>> {
        let mut map = lock(&self.0);
        map.retain(|_, value| value.strong_count() > 0);
        map.values().filter_map(Weak::upgrade).collect()
    }
}

impl Registry {
    /// The state of `host:port`, shared with every snapshot that names it. An IP literal is
    /// resolved for good at once.
    pub fn host(&self, host: &str, port: u16) -> Arc<HostState> {
        let mut hosts = lock(&self.hosts);
        hosts.retain(|_, state| state.strong_count() > 0);
        let key = (host.to_owned(), port);
        if let Some(state) = hosts.get(&key).and_then(Weak::upgrade) {
            return state;
        }
        let state = Arc::new(HostState::new(host, port));
        hosts.insert(key, Arc::downgrade(&state));
        drop(hosts);
        if !state.is_literal() {
            self.added.notify_one();
        }
        state
    }

    /// A round-robin cursor kept across reloads, by name (`provider:openai`, `model:gpt-4o`).
    pub fn cursor(&self, name: &str) -> Arc<AtomicUsize> {
        self.cursors.get_or(name, || AtomicUsize::new(0)).0
    }

    /// The in-flight count, latency and circuit of one endpoint of one provider, kept
    /// across reloads that keep the endpoint.
    pub fn endpoint(&self, provider: &str, url: &str) -> Arc<EndpointState> {
        let key = format!("{provider}\0{url}");
        self.endpoints.get_or(&key, EndpointState::default).0
    }

    /// A model target's time-to-first-byte estimate, kept across reloads.
    pub fn target_latency(&self, key: &str) -> Arc<PeakEwma> {
        self.latencies.get_or(key, PeakEwma::default).0
    }

    /// The store of `store: true` responses: a reload that keeps its settings keeps what
    /// it holds.
    pub fn response_store(
        &self,
        key: &str,
        make: impl FnOnce() -> crate::responses_store::ResponseStore,
    ) -> Arc<crate::responses_store::ResponseStore> {
        self.response_stores.get_or(key, make).0
    }

    /// The response cache: a reload that keeps its settings keeps what it holds.
    pub fn response_cache(
        &self,
        key: &str,
        make: impl FnOnce() -> crate::cache::ResponseCache,
    ) -> Arc<crate::cache::ResponseCache> {
        self.response_caches.get_or(key, make).0
    }

    /// The running limits of one scope (`key team-a`, `tenant acme`, `model gpt-4o`):
    /// what was spent survives a reload.
    pub fn limit_counter(&self, scope: &str) -> Arc<crate::limits::Counter> {
        self.limit_counters
            .get_or(scope, || crate::limits::Counter::new(scope))
            .0
    }

    /// The running limits of one JWT subject (`jwt:<issuer>:<subject>`): no snapshot names
    /// it, so it is kept here while the subject is active (and as long as a budget period)
    /// within a bounded count.
    pub fn subject_counter(&self, owner: &str) -> Arc<crate::limits::Counter> {
        self.subject_counters.0.get_with(owner.into(), || {
            Arc::new(crate::limits::Counter::new(owner))
        })
    }

    /// The live material of the TLS listener on `addr`, made from `listener` the first time.
    pub fn tls_handles(
        &self,
        listener: &crate::config::tls::TlsListener,
    ) -> Arc<crate::tls::Handles> {
        lock(&self.tls)
            .entry(listener.listen)
            .or_insert_with(|| {
                let verifier = crate::tls::Verifier::default();
                verifier.store(listener.client.clone());
                Arc::new(crate::tls::Handles {
                    resolver: Arc::new(crate::tls::Resolver::new(listener.certs.clone())),
                    verifier: Arc::new(verifier),
                })
            })
            .clone()
    }

    /// The TLS listener on `addr`, once the server has made it.
    pub fn tls_listener(&self, addr: SocketAddr) -> Option<Arc<crate::tls::Handles>> {
        lock(&self.tls).get(&addr).cloned()
    }

    /// A fleet's store of limits (`limits.store: {redis: …}`), kept across reloads.
    pub fn limit_store(
        &self,
        key: &str,
        make: impl FnOnce() -> crate::limits::shared::SharedStore,
    ) -> Arc<crate::limits::shared::SharedStore> {
        self.limit_stores.get_or(key, make).0
    }

    /// The shared limit stores some snapshot still uses.
    pub fn limit_stores(&self) -> Vec<Arc<crate::limits::shared::SharedStore>> {
        self.limit_stores.alive()
    }

    /// The keys of a JWKS URL, fetched in the background and kept across reloads.
    pub fn jwks(&self, url: &str) -> Arc<crate::auth::jwt::RemoteJwks> {
        let (jwks, created) = self
            .jwks
            .get_or(url, || crate::auth::jwt::RemoteJwks::new(url));
        if created {
            self.jwks_added.notify_one();
        }
        jwks
    }

    /// The JWKS URLs some snapshot still uses.
    pub fn jwks_sets(&self) -> Vec<Arc<crate::auth::jwt::RemoteJwks>> {
        self.jwks.alive()
    }

    /// A provider's health-check group (see [`crate::pool::health`]).
    pub fn health_group(&self, key: &str, make: impl FnOnce() -> HealthGroup) -> Arc<HealthGroup> {
        let (group, created) = self.health.get_or(key, make);
        if created {
            self.health_added.notify_one();
        }
        group
    }

    /// The health-check groups some snapshot still uses.
    pub fn health_groups(&self) -> Vec<Arc<HealthGroup>> {
        self.health.alive()
    }

    /// Host names some snapshot still uses (IP literals need no resolving).
    pub fn names(&self) -> Vec<Arc<HostState>> {
        let mut hosts = lock(&self.hosts);
        hosts.retain(|_, state| state.strong_count() > 0);
        hosts
            .values()
            .filter_map(Weak::upgrade)
            .filter(|s| !s.is_literal())
            .collect()
    }
}

/// A poisoned lock only means a panic elsewhere while holding a map of weak references,
/// which stays consistent: keep using it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What one name resolved to, and until when that answer holds.
#[derive(Debug)]
pub struct Resolution {
    pub addrs: Vec<SocketAddr>,
    /// When to ask again (the answer's TTL); `None` for an IP literal.
    pub expires: Option<Instant>,
}

/// The resolution state of one `host:port`.
#[derive(Debug)]
pub struct HostState {
    pub host: String,
    pub port: u16,
    current: ArcSwapOption<Resolution>,
    /// Why the last attempt failed, for the error a request gets while none succeeded.
    last_error: ArcSwapOption<String>,
    /// Woken when an answer arrives.
    resolved: Notify,
}

impl HostState {
    fn new(host: &str, port: u16) -> HostState {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let literal = bare.parse::<IpAddr>().ok().map(|ip| {
            Arc::new(Resolution {
                addrs: vec![SocketAddr::new(ip, port)],
                expires: None,
            })
        });
        HostState {
            host: bare.to_owned(),
            port,
            current: ArcSwapOption::new(literal),
            last_error: ArcSwapOption::empty(),
            resolved: Notify::new(),
        }
    }

    pub fn is_literal(&self) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|r| r.expires.is_none())
    }

    /// The last answer, even past its TTL while the refresh is under way.
    pub fn current(&self) -> Option<Arc<Resolution>> {
        self.current.load_full()
    }

    /// When this name should be resolved again: `None` when it never was (now, then), else
    /// when its answer expires.
    pub fn due(&self) -> Option<Instant> {
        self.current.load().as_ref().and_then(|r| r.expires)
    }

    /// Stores a fresh answer and wakes the requests waiting for a first one.
    pub fn set(&self, addrs: Vec<SocketAddr>, ttl: Duration) {
        self.current.store(Some(Arc::new(Resolution {
            addrs,
            expires: Some(Instant::now() + ttl),
        })));
        self.last_error.store(None);
        self.resolved.notify_waiters();
    }

    /// Records a failed attempt; the previous answer, if any, stays in use. Requests
    /// waiting for a first answer are woken to fail now rather than at their timeout.
    pub fn fail(&self, reason: String) {
        self.last_error.store(Some(Arc::new(reason)));
        self.resolved.notify_waiters();
    }

    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    /// An address to connect to: the current answer's first, or — for a name never resolved
    /// yet — the first answer, waiting at most `wait` for it (a failed first lookup ends the
    /// wait at once).
    pub async fn addr(&self, wait: Duration) -> Option<SocketAddr> {
        let first = |r: &Resolution| r.addrs.first().copied();
        if let Some(current) = self.current.load().as_ref() {
            return first(current);
        }
        if self.last_error.load().is_some() {
            // The last lookup failed: no use waiting for the next.
            return None;
        }
        let resolved = self.resolved.notified();
        // Checked again after registering, so an answer stored in between is not missed.
        if let Some(current) = self.current.load().as_ref() {
            return first(current);
        }
        let _ = tokio::time::timeout(wait, resolved).await;
        self.current.load().as_ref().and_then(|r| first(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_gets_the_same_state_while_a_snapshot_holds_it() {
        let registry = Registry::default();
        let a = registry.host("api.example.com", 443);
        a.set(
            vec!["10.0.0.1:443".parse().unwrap()],
            Duration::from_secs(60),
        );
        let b = registry.host("api.example.com", 443);
        assert!(Arc::ptr_eq(&a, &b), "a reload keeps the resolved state");
        assert_eq!(registry.names().len(), 1);
        drop((a, b));
        assert!(
            registry.names().is_empty(),
            "dropped with the last snapshot"
        );
        let fresh = registry.host("api.example.com", 443);
        assert!(fresh.current().is_none());
    }

    #[test]
    fn cursors_survive_while_held() {
        let registry = Registry::default();
        let a = registry.cursor("provider:p");
        a.fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let b = registry.cursor("provider:p");
        assert_eq!(b.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn literals_need_no_resolver_and_names_wait_for_their_first_answer() {
        let registry = Registry::default();
        let literal = registry.host("127.0.0.1", 9);
        assert!(literal.is_literal());
        assert_eq!(
            literal.addr(Duration::ZERO).await,
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert!(registry.names().is_empty());
        let name = registry.host("provider.internal", 8000);
        assert_eq!(name.addr(Duration::from_millis(10)).await, None);
        let waiting = {
            let name = name.clone();
            tokio::spawn(async move { name.addr(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        name.set(
            vec!["10.1.2.3:8000".parse().unwrap()],
            Duration::from_secs(1),
        );
        assert_eq!(
            waiting.await.unwrap(),
            Some("10.1.2.3:8000".parse().unwrap())
        );
    }
}
