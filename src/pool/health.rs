//! Active health checks, on Pingora's `HealthRegistry`, run by one supervisor.
//!
//! Each provider with a `health:` section has a [`HealthGroup`]: a `HealthRegistry` (the
//! consecutive-result counting and the shared health values are Pingora's) plus the policy.
//! Groups are kept by the runtime registry under the provider's name and policy, so a reload
//! that keeps both hands the new snapshot's pool the same group: the new snapshot's
//! `Backends` view registers with it, the old view leaves when the old snapshot is dropped,
//! and an endpoint in both keeps its health (the registry keys health by endpoint identity,
//! not by view). An endpoint a reload adds joins the next pass; a group a reload creates is
//! picked up by the supervisor at once.
//!
//! A check is a `GET` of a cheap path with the provider's credential: never a completion,
//! which would cost money. 2xx is healthy; anything else, or no answer within `timeout`, is
//! not.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::{Backend, HealthRegistry};

use super::state::EndpointState;
use crate::provider::{Endpoint, Timeouts};
use crate::proxy::exchange::{Destination, Exchange, RequestWire};
use crate::runtime::registry;

/// Largest health-check body read before the connection is dropped instead of drained.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// `health: { path, interval, timeout, healthy_after, unhealthy_after }`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthPolicy {
    /// Absolute path on the endpoint's host; `None` = the provider kind's model list.
    pub path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            path: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_after: 2,
            unhealthy_after: 3,
        }
    }
}

/// The active health state of one provider's endpoints, shared by every snapshot whose
/// pool has the same provider name and policy.
pub struct HealthGroup {
    pub provider: Arc<str>,
    pub policy: HealthPolicy,
    pub registry: Arc<HealthRegistry>,
    /// Runs a pass now rather than at the next interval: a reload may have added endpoints.
    recheck: Arc<tokio::sync::Notify>,
    /// No snapshot has used the group yet (its first pass runs anyway).
    fresh: std::sync::atomic::AtomicBool,
}

impl HealthGroup {
    /// The group for `provider` with `policy`, shared across reloads that keep both and the
    /// probe's credential and headers (`probe_fingerprint`): a reload that rotates the key
    /// gets a new group, so no probe goes out with a revoked key while an old snapshot
    /// lives on.
    pub fn shared(
        provider: &Arc<str>,
        policy: &HealthPolicy,
        probe_fingerprint: u64,
    ) -> Arc<HealthGroup> {
        let key = format!("{provider}\0{policy:?}\0{probe_fingerprint:016x}");
        registry().health_group(&key, || {
            // Health is keyed by the endpoint's identity (its URL, carried in the address),
            // not its weight: a reweighted endpoint keeps its health.
            let registry = HealthRegistry::with_equivalence(|backend: &Backend| {
                let mut hasher = DefaultHasher::new();
                backend.addr.hash(&mut hasher);
                hasher.finish()
            });
            registry.set_health_check(Box::new(Checker {
                exchange: Exchange::new(),
                policy: policy.clone(),
            }));
            HealthGroup {
                provider: provider.clone(),
                policy: policy.clone(),
                registry: Arc::new(registry),
                recheck: Arc::default(),
                fresh: std::sync::atomic::AtomicBool::new(true),
            }
        })
    }

    /// Runs a pass now: called once a new snapshot's endpoints are registered, so that they
    /// are checked at once rather than an interval later.
    pub fn recheck(&self) {
        self.recheck.notify_one();
    }

    /// Whether this is the first snapshot to use the group (whose first pass is due anyway:
    /// a recheck would run two passes back to back and halve `unhealthy_after`).
    pub fn is_new(&self) -> bool {
        self.fresh.swap(false, std::sync::atomic::Ordering::Relaxed)
    }
}

/// What checking one endpoint needs, carried in its `Backend`'s extensions.
pub struct Probe {
    pub provider: Arc<str>,
    pub endpoint: Arc<Endpoint>,
    pub state: Arc<EndpointState>,
    /// `GET` of the check path, with the provider's host, credential and headers.
    pub request: RequestHeader,
}

impl Probe {
    async fn run(&self, exchange: &Exchange, timeout: Duration) -> Result<(), String> {
        let addr = self
            .endpoint
            .addr(timeout)
            .await
            .map_err(|e| e.to_string())?;
        let dest = Destination {
            addr,
            endpoint: &self.endpoint,
            timeouts: Timeouts {
                connect: timeout,
                first_byte: timeout,
                idle: timeout,
                total: Some(timeout),
            },
        };
        let wire = RequestWire::from_header(&self.request, &[]).map_err(|e| e.to_string())?;
        let mut response = exchange
            .send(&dest, &wire)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.header().status.as_u16();
        // Read to the end so the connection can serve the next check; a large body is not
        // worth it.
        let mut read = 0;
        while let Ok(Some(chunk)) = response.read().await {
            read += Bytes::len(&chunk);
            if read > MAX_CHECK_BODY {
                break;
            }
        }
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("health check answered {status}"))
        }
    }
}

struct Checker {
    exchange: Exchange,
    policy: HealthPolicy,
}

fn probe_of(target: &Backend) -> Option<&Arc<Probe>> {
    target.ext.get::<Arc<Probe>>()
}

#[async_trait]
impl HealthCheck for Checker {
    async fn check(&self, target: &Backend) -> pingora_error::Result<()> {
        let Some(probe) = probe_of(target) else {
            return Error::e_explain(ErrorType::InternalError, "backend without a probe");
        };
        let timeout = self.policy.timeout;
        let outcome = tokio::time::timeout(timeout, probe.run(&self.exchange, timeout))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}ms", timeout.as_millis())));
        match outcome {
            Ok(()) => Ok(()),
            Err(reason) => {
                probe.state.record_error(format!("health check: {reason}"));
                Error::e_explain(ErrorType::Custom("health check failed"), reason)
            }
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(probe) = probe_of(target) {
            probe.state.mark_changed();
            if healthy {
                tracing::info!(provider = %probe.provider, endpoint = %probe.endpoint.url, "endpoint healthy again");
            } else {
                tracing::warn!(provider = %probe.provider, endpoint = %probe.endpoint.url, "endpoint unhealthy: taken out of rotation");
            }
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        probe_of(target).map_or_else(
            || format!("{:?}", target.addr),
            |p| p.endpoint.url.to_string(),
        )
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.policy.healthy_after.max(1) as usize
        } else {
            self.policy.unhealthy_after.max(1) as usize
        }
    }
}

/// The one background service that runs every group's checks, each at its own interval.
/// It follows reloads: a group that appears gets its loop, a group no snapshot holds any
/// more ends its loop.
pub struct HealthSupervisor;

impl HealthSupervisor {
    /// Checks a group's endpoints every `interval` until the group is dropped.
    async fn run_group(group: Weak<HealthGroup>) {
        let Some(recheck) = group.upgrade().map(|g| g.recheck.clone()) else {
            return;
        };
        loop {
            let Some(live) = group.upgrade() else {
                return;
            };
            live.registry.run_health_check(true).await;
            let interval = live.policy.interval;
            // Not held while waiting: the group may be dropped by a reload meanwhile.
            drop(live);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = recheck.notified() => {}
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthSupervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut running: Vec<(Weak<HealthGroup>, tokio::task::JoinHandle<()>)> = Vec::new();
        loop {
            let added = registry().health_added.notified();
            running.retain(|(group, task)| group.strong_count() > 0 && !task.is_finished());
            for group in registry().health_groups() {
                if !running
                    .iter()
                    .any(|(g, _)| Weak::ptr_eq(g, &Arc::downgrade(&group)))
                {
                    let weak = Arc::downgrade(&group);
                    running.push((weak.clone(), tokio::spawn(Self::run_group(weak))));
                }
            }
            tokio::select! {
                _ = added => {}
                _ = shutdown.changed() => break,
            }
        }
        for (_, task) in running {
            task.abort();
        }
    }
}
