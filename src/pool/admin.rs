//! What the admin listener shows of the pools: `/admin/upstreams`, the pool gauges of
//! `/metrics` (read from the live state at scrape time, so the request path never touches a
//! gauge), and which models `/readyz` finds without a usable endpoint.

use serde_json::{json, Value};

use super::circuit::CircuitState;
use crate::config::Snapshot;
use crate::metrics::metrics;
use crate::models::ModelRoute;

/// Every provider's pool and endpoint: health, circuit, in-flight, latency, last error.
pub fn describe(snap: &Snapshot) -> Value {
    let providers: Vec<Value> = snap
        .providers
        .values()
        .map(|provider| {
            let pool = &provider.pool;
            let endpoints: Vec<Value> = pool
                .views()
                .map(|view| {
                    let state = view.state;
                    let last_error = state.last_error().map(|e| {
                        json!({"reason": e.reason, "at_unix_ms": e.at})
                    });
                    json!({
                        "url": view.url,
                        "healthy": view.healthy,
                        "circuit": view.circuit.as_str(),
                        "circuit_since_unix_ms": state.circuit.changed_at(),
                        "health_since_unix_ms": state.changed_at(),
                        "inflight": state.inflight(),
                        "latency_ewma_ms": state.latency.estimate().map(|d| d.as_secs_f64() * 1000.0),
                        "last_error": last_error,
                    })
                })
                .collect();
            json!({
                "provider": &*provider.name,
                "kind": provider.kind.as_str(),
                "balance": pool.balance.as_str(),
                "health_checks": pool.health.as_ref().map(|g| json!({
                    "interval_ms": g.policy.interval.as_millis() as u64,
                    "timeout_ms": g.policy.timeout.as_millis() as u64,
                    "healthy_after": g.policy.healthy_after,
                    "unhealthy_after": g.policy.unhealthy_after,
                })),
                "circuit": pool.circuit.map(|c| json!({
                    "failures": c.failures,
                    "window_ms": c.window.as_millis() as u64,
                    "open_for_ms": c.open_for.as_millis() as u64,
                })),
                "available": pool.available(),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "providers": providers })
}

/// Sets `sira_upstream_healthy`, `sira_upstream_inflight` and `sira_circuit_state` from
/// the live snapshot; series of endpoints a reload removed disappear.
pub fn publish_gauges(snap: &Snapshot) {
    let m = metrics();
    m.upstream_healthy.reset();
    m.upstream_inflight.reset();
    m.circuit_state.reset();
    for provider in snap.providers.values() {
        for view in provider.pool.views() {
            let labels = [&*provider.name, view.url];
            m.upstream_healthy
                .with_label_values(&labels)
                .set(i64::from(view.healthy));
            m.upstream_inflight
                .with_label_values(&labels)
                .set(i64::from(view.state.inflight()));
            for state in CircuitState::ALL {
                m.circuit_state
                    .with_label_values(&[&*provider.name, view.url, state.as_str()])
                    .set(i64::from(view.circuit == state));
            }
        }
    }
}

/// Model entries that could serve no request now: none of their targets, nor any of their
/// fallbacks' targets, has an endpoint that could take one.
pub fn stranded_models(snap: &Snapshot) -> Vec<String> {
    let servable = |route: &ModelRoute| route.targets.iter().any(|t| t.provider.pool.available());
    snap.models
        .all()
        .filter(|route| {
            !servable(route)
                && !route
                    .fallbacks
                    .iter()
                    .filter_map(|name| snap.models.resolve(name))
                    .any(|fallback| servable(fallback.route))
        })
        .map(|route| route.name.to_string())
        .collect()
}
