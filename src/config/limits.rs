//! `limits:` (the store), `tenants:`, and the `limits` of keys, tenants and models →
//! [`crate::limits::Limits`], each scope with its running [`Counter`] from the registry.

use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use lua_free_filters::Filter;
use serde::Deserialize;
use serde_yaml::Value;

use super::build::Builder;
use super::section;
use super::units::{opt_number_or_string, HumanDuration};
use crate::limits::shared::{Backend, OnUnavailable, SharedStore, URL_FORMS};
use crate::limits::{Budget, Counter, Limits, Period};
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsConfig {
    #[serde(default, deserialize_with = "opt_number_or_string")]
    requests_per_minute: Option<u64>,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    tokens_per_minute: Option<u64>,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    concurrent_requests: Option<u64>,
    #[serde(default)]
    budget: Option<BudgetConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetConfig {
    usd: f64,
    per: Period,
    #[serde(default)]
    on_exceed: Option<OnExceed>,
}

/// What happens to a stream that outgrows its budget.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum OnExceed {
    /// It runs to its end; the budget refuses the next request (the default).
    Finish,
    /// It is ended there with the format's own finish (`length` / `max_tokens`).
    Cut,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantConfig {
    #[serde(default)]
    limits: Option<Value>,
    #[serde(default)]
    filters: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    #[serde(default)]
    store: Option<Value>,
}

/// One tenant: its limits and their running state.
#[derive(Debug)]
pub struct Tenant {
    pub name: Arc<str>,
    pub limits: Limits,
    pub counter: Option<Arc<Counter>>,
    /// Run on every request of the tenant's callers (keys and JWT subjects), after a key's
    /// own.
    pub filters: Vec<Arc<dyn Filter>>,
}

/// The limits at `path`, checked; empty when absent.
pub(super) fn limits(b: &mut Builder, value: Option<Value>, path: &str) -> Limits {
    let Some(config) = value.and_then(|v| section::<LimitsConfig>(v, path, b.problems)) else {
        return Limits::default();
    };
    for (name, value) in [
        ("requests_per_minute", config.requests_per_minute),
        ("tokens_per_minute", config.tokens_per_minute),
        ("concurrent_requests", config.concurrent_requests),
    ] {
        if value == Some(0) {
            b.problem(
                format!("{path}.{name}"),
                "must be at least 1 (omit it for no limit)",
            );
        }
    }
    let budget = config.budget.map(|budget| {
        if !(budget.usd.is_finite() && budget.usd > 0.0) {
            b.problem(
                format!("{path}.budget.usd"),
                "must be a positive amount of USD",
            );
        }
        Budget {
            usd: budget.usd,
            per: budget.per,
            cut: budget.on_exceed == Some(OnExceed::Cut),
        }
    });
    Limits {
        requests_per_minute: config.requests_per_minute,
        tokens_per_minute: config.tokens_per_minute,
        concurrent_requests: config.concurrent_requests,
        budget,
    }
}

/// The running state of `scope` (`key team-a`), when it has limits: kept across reloads.
pub(super) fn counter(scope: &str, limits: &Limits) -> Option<Arc<Counter>> {
    (!limits.is_empty()).then(|| crate::runtime::registry().limit_counter(scope))
}

/// `tenants:`.
pub(super) fn tenants(
    b: &mut Builder,
    value: Option<Value>,
    filters: &AHashMap<String, Arc<dyn Filter>>,
) -> AHashMap<String, Arc<Tenant>> {
    let mut out = AHashMap::new();
    let Some(entries) =
        value.and_then(|v| section::<indexmap::IndexMap<String, Value>>(v, "tenants", b.problems))
    else {
        return out;
    };
    for (name, raw) in entries {
        let path = format!("tenants.{name}");
        let Some(tenant) = section::<TenantConfig>(raw, &path, b.problems) else {
            continue;
        };
        let limits = limits(b, tenant.limits, &format!("{path}.limits"));
        let counter = counter(&format!("tenant {name}"), &limits);
        let filters =
            super::build::resolve_filters(b, &format!("{path}.filters"), &tenant.filters, filters);
        out.insert(
            name.clone(),
            Arc::new(Tenant {
                name: name.as_str().into(),
                limits,
                counter,
                filters,
            }),
        );
    }
    out
}

/// How often a host exchanges with the shared store when `sync` is not set.
const DEFAULT_SYNC: Duration = Duration::from_millis(100);
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
const DEFAULT_PREFIX: &str = "sira:limits:";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedStoreConfig {
    redis: String,
    #[serde(default)]
    sync: Option<HumanDuration>,
    #[serde(default)]
    on_unavailable: Option<OnUnavailable>,
    #[serde(default)]
    prefix: Option<String>,
    /// Bound on each exchange with Redis (and on connecting).
    #[serde(default)]
    timeout: Option<HumanDuration>,
}

/// `limits: { store: memory | {redis: URL, sync, on_unavailable, prefix, timeout} }`:
/// `Some(None)` keeps limits in this process; `None` when the section has a problem.
pub(super) fn store(b: &mut Builder, value: Option<Value>) -> Option<Option<Arc<SharedStore>>> {
    let Some(limits) = value.and_then(|v| section::<StoreSection>(v, "limits", b.problems)) else {
        return Some(None);
    };
    let config = match limits.store {
        None => return Some(None),
        Some(Value::String(s)) if s == "memory" => return Some(None),
        Some(value) => section::<SharedStoreConfig>(value, "limits.store", b.problems)?,
    };
    let Some(backend) = Backend::parse(&config.redis) else {
        // Never the parser's message: it may quote the URL, password included.
        b.problem("limits.store.redis", URL_FORMS);
        return None;
    };
    let sync = config.sync.map_or(DEFAULT_SYNC, |d| d.0);
    if sync < Duration::from_millis(10) || sync > Duration::from_secs(10) {
        b.problem("limits.store.sync", "must be from 10ms to 10s");
        return None;
    }
    let timeout = config.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        b.problem("limits.store.timeout", "must be above zero");
        return None;
    }
    let prefix = config.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    if prefix.contains(['{', '}']) {
        b.problem(
            "limits.store.prefix",
            "must not contain braces (sira makes it a hash tag itself)",
        );
        return None;
    }
    let on_unavailable = config.on_unavailable.unwrap_or(OnUnavailable::Local);
    // One store per Redis and settings, kept across reloads with what its scopes hold.
    let place = format!(
        "{}|{prefix}",
        hex::encode(Sha256::digest(config.redis.as_bytes()))
    );
    let id = format!(
        "{place}|{}|{}|{on_unavailable:?}",
        sync.as_millis(),
        timeout.as_millis()
    );
    Some(Some(crate::runtime::registry().limit_store(&id, || {
        SharedStore::new(backend, prefix, sync, timeout, on_unavailable, place)
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsConfig {
    #[serde(default)]
    webhooks: Vec<HookConfig>,
    /// Percent of a budget; default 80 and 100.
    #[serde(default)]
    budget_thresholds: Option<Vec<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookConfig {
    url: String,
    #[serde(default)]
    secret: Option<String>,
}

/// `alerts:`.
pub(super) fn alerts(
    b: &mut Builder,
    value: Option<Value>,
) -> Option<Arc<crate::limits::alerts::Alerts>> {
    use crate::limits::alerts::{Alerts, Hook};
    let config = section::<AlertsConfig>(value?, "alerts", b.problems)?;
    let mut hooks = Vec::new();
    for (i, hook) in config.webhooks.into_iter().enumerate() {
        if !(hook.url.starts_with("https://") || hook.url.starts_with("http://")) {
            b.problem(
                format!("alerts.webhooks[{i}].url"),
                "must be an http(s) URL",
            );
            continue;
        }
        if hook.secret.as_deref().is_none_or(str::is_empty) {
            b.notes.push(format!(
                "alerts.webhooks[{i}]: no secret, so its alerts are sent unsigned"
            ));
        }
        hooks.push(Arc::new(Hook {
            url: hook.url,
            // `${VAR:-}` with VAR unset: sent unsigned.
            secret: hook
                .secret
                .filter(|s| !s.is_empty())
                .map(super::Secret::new),
        }));
    }
    let mut thresholds = config.budget_thresholds.unwrap_or_else(|| vec![80, 100]);
    if thresholds.iter().any(|t| *t == 0 || *t > 100) {
        b.problem("alerts.budget_thresholds", "percentages from 1 to 100");
    }
    thresholds.sort_unstable();
    thresholds.dedup();
    Some(Arc::new(Alerts { hooks, thresholds }))
}
