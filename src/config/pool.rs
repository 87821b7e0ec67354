//! `providers.<name>`'s pool keys → [`PoolSpec`]: `balance`, `hash_key`,
//! `balance_load_factor`, `health`, `circuit`.

use super::build::Builder;
use super::file::{CircuitConfig, HealthConfig};
use crate::pool::affinity::HashKey;
use crate::pool::circuit::CircuitPolicy;
use crate::pool::health::HealthPolicy;
use crate::pool::{Balance, PoolSpec, DEFAULT_LOAD_FACTOR};

pub(super) struct PoolConfig {
    pub balance: Option<Balance>,
    pub hash_key: Option<String>,
    pub balance_load_factor: Option<f64>,
    pub health: Option<HealthConfig>,
    pub circuit: Option<CircuitConfig>,
}

/// Checks the pool keys of the provider at `path` with `endpoints` endpoints.
pub(super) fn pool_spec(
    b: &mut Builder,
    path: &str,
    endpoints: usize,
    config: PoolConfig,
) -> PoolSpec {
    let balance = config.balance.unwrap_or_default();
    let hash_key = match (config.hash_key, balance) {
        (Some(text), Balance::ConsistentHash) => match HashKey::parse(&text) {
            Ok(key) => Some(key),
            Err(e) => {
                b.problem(format!("{path}.hash_key"), e);
                None
            }
        },
        (Some(_), _) => {
            b.problem(
                format!("{path}.hash_key"),
                "only applies to balance: consistent-hash",
            );
            None
        }
        (None, Balance::ConsistentHash) => {
            b.problem(
                format!("{path}.hash_key"),
                "required for balance: consistent-hash (header:NAME, client-key, user or prompt-prefix:BYTES)",
            );
            None
        }
        (None, _) => None,
    };
    let load_factor = match config.balance_load_factor {
        Some(f) if !(1.0..=100.0).contains(&f) => {
            b.problem(
                format!("{path}.balance_load_factor"),
                "must be between 1.0 (perfectly even) and 100",
            );
            DEFAULT_LOAD_FACTOR
        }
        Some(f) => f,
        None => DEFAULT_LOAD_FACTOR,
    };
    PoolSpec {
        balance,
        hash_key,
        load_factor,
        circuit: circuit_policy(b, path, endpoints, config.circuit),
        health: config.health.and_then(|h| health_policy(b, path, h)),
    }
}

/// On by default for a pool (an endpoint that keeps failing leaves the rotation); off by
/// default for a single endpoint, where opening the circuit would only turn the provider's
/// own errors into sira's.
fn circuit_policy(
    b: &mut Builder,
    path: &str,
    endpoints: usize,
    config: Option<CircuitConfig>,
) -> Option<CircuitPolicy> {
    let defaults = CircuitPolicy::default();
    let Some(config) = config else {
        return (endpoints > 1).then_some(defaults);
    };
    if config.failures == Some(0) {
        return None;
    }
    let policy = CircuitPolicy {
        failures: config.failures.unwrap_or(defaults.failures),
        window: config.window.map_or(defaults.window, |d| d.0),
        open_for: config.open_for.map_or(defaults.open_for, |d| d.0),
    };
    if policy.window.is_zero() {
        b.problem(format!("{path}.circuit.window"), "must be longer than 0s");
    }
    if policy.open_for.is_zero() {
        b.problem(format!("{path}.circuit.open_for"), "must be longer than 0s");
    }
    Some(policy)
}

fn health_policy(b: &mut Builder, path: &str, config: HealthConfig) -> Option<HealthPolicy> {
    let defaults = HealthPolicy::default();
    let policy = HealthPolicy {
        path: config.path,
        interval: config.interval.map_or(defaults.interval, |d| d.0),
        timeout: config.timeout.map_or(defaults.timeout, |d| d.0),
        healthy_after: config.healthy_after.unwrap_or(defaults.healthy_after),
        unhealthy_after: config.unhealthy_after.unwrap_or(defaults.unhealthy_after),
    };
    let before = b.problems.len();
    if let Some(p) = &policy.path {
        let plain = p.starts_with('/')
            && !p.contains(['#', ' '])
            && http::uri::PathAndQuery::try_from(p.as_str()).is_ok();
        if !plain {
            b.problem(
                format!("{path}.health.path"),
                "must be an absolute path such as /health",
            );
        }
    }
    if policy.interval < std::time::Duration::from_millis(100) {
        b.problem(format!("{path}.health.interval"), "must be at least 100ms");
    }
    if policy.timeout.is_zero() || policy.timeout > policy.interval {
        b.problem(
            format!("{path}.health.timeout"),
            "must be longer than 0s and no longer than the interval",
        );
    }
    for (key, value) in [
        ("healthy_after", policy.healthy_after),
        ("unhealthy_after", policy.unhealthy_after),
    ] {
        if value == 0 {
            b.problem(format!("{path}.health.{key}"), "must be at least 1");
        }
    }
    (b.problems.len() == before).then_some(policy)
}
