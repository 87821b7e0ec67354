//! `GET /admin/usage`: every limited scope's current windows, remaining quota, spend and
//! reservations, or one of them (`?key=`, `?tenant=`, `?model=`).

use std::time::SystemTime;

use serde_json::{json, Value};

use super::{Counter, Limits, Period};
use crate::config::Snapshot;

/// The scopes of `snap` with limits, filtered by the query (`key=`, `tenant=`, `model=`).
pub fn describe(snap: &Snapshot, query: Option<&str>) -> Value {
    let wanted: Vec<(&str, &str)> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let pick = |kind: &str, name: &str| {
        wanted.is_empty() || wanted.iter().any(|(k, v)| *k == kind && *v == name)
    };
    let mut scopes = Vec::new();
    for key in snap.keys.iter().chain(snap.issued.load().iter()) {
        if let (Some(counter), true) = (&key.counter, pick("key", &key.name)) {
            scopes.push(scope(counter, &key.limits));
        }
    }
    let mut tenants: Vec<_> = snap.tenants.values().collect();
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    for tenant in tenants {
        if let (Some(counter), true) = (&tenant.counter, pick("tenant", &tenant.name)) {
            scopes.push(scope(counter, &tenant.limits));
        }
    }
    for route in snap.models.all() {
        if let (Some(counter), true) = (&route.counter, pick("model", &route.name)) {
            scopes.push(scope(counter, &route.limits));
        }
    }
    let store = match &snap.limits_store {
        None => json!("memory"),
        Some(store) => {
            json!({"redis": {"up": store.is_up(), "on_unavailable": store.on_unavailable}})
        }
    };
    json!({ "store": store, "scopes": scopes })
}

fn scope(counter: &Counter, limits: &Limits) -> Value {
    let wall = SystemTime::now();
    let usage = counter.snapshot(limits, wall);
    let rate = |r: Option<(u64, u64, u64)>| {
        r.map(|(limit, remaining, reset)| {
            json!({"limit": limit, "remaining": remaining, "reset_seconds": reset})
        })
    };
    let budget = limits.budget.zip(usage.budget).map(|(budget, (usd, spent, reserved))| {
        json!({
            "usd": usd,
            "per": match budget.per { Period::Day => "day", Period::Week => "week", Period::Month => "month" },
            "spent_usd": spent,
            "reserved_usd": reserved,
            "remaining_usd": (usd - spent - reserved).max(0.0),
            "resets_in_seconds": budget.per.seconds_left(wall),
        })
    });
    json!({
        "scope": counter.scope,
        "requests_per_minute": rate(usage.requests),
        "tokens_per_minute": rate(usage.tokens),
        "concurrent_requests": limits.concurrent_requests.map(|limit| json!({"limit": limit, "in_flight": usage.inflight})),
        "in_flight": usage.inflight,
        "budget": budget,
    })
}

/// Publishes `sira_budget_remaining_usd{scope}` for every scope with a budget (at scrape
/// time, like the pool gauges).
pub fn publish_gauges(snap: &Snapshot) {
    let wall = SystemTime::now();
    // The memory store is this process: it answers whenever the scrape does. The shared
    // store's passes say whether Redis answers.
    let up = snap.limits_store.as_ref().is_none_or(|store| store.is_up());
    crate::metrics::metrics().limits_store_up.set(i64::from(up));
    let gauge = &crate::metrics::metrics().budget_remaining;
    gauge.reset();
    super::each_scope(snap, |counter, limits| {
        if let Some((usd, spent, reserved)) = counter.snapshot(limits, wall).budget {
            gauge
                .with_label_values(&[&counter.scope])
                .set((usd - spent - reserved).max(0.0));
        }
    });
}
