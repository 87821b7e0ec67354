//! The pool's choices on real `pingora-load-balancing` selectors: affinity, remap fractions
//! of the Ketama ring, bounded loads, circuit ejection, latency.

use std::collections::HashMap;
use std::time::Duration;

use ahash::AHashMap;
use http::{HeaderName, HeaderValue};

use super::affinity::HashKey;
use super::circuit::CircuitPolicy;
use super::*;
use crate::provider::{Endpoint, Provider, ProviderKind, Timeouts};

/// A pool of `n` endpoints (10.0.0.1.. ; never connected to) under a name of its own, so
/// tests running at once do not share runtime state.
fn pool(name: &str, ports: impl IntoIterator<Item = u16>, spec: PoolSpec) -> Provider {
    let urls: Vec<String> = ports
        .into_iter()
        .map(|p| format!("http://10.0.0.1:{p}"))
        .collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    Provider::for_tests(name, ProviderKind::OpenaiCompatible, &urls).with_pool(spec)
}

fn hashing() -> PoolSpec {
    PoolSpec {
        balance: Balance::ConsistentHash,
        hash_key: Some(HashKey::Header(HeaderName::from_static("x-session-id"))),
        ..Default::default()
    }
}

/// Where each of `keys` lands (by endpoint URL), each pick released at once.
fn placement(p: &Provider, keys: usize) -> Vec<Arc<str>> {
    (0..keys)
        .map(|k| {
            let pick = p
                .pool
                .select(Some(format!("session-{k}").as_bytes()), &[])
                .unwrap();
            assert_eq!(pick.reason, Reason::Hash);
            p.endpoints[pick.index].url.clone()
        })
        .collect()
}

#[test]
fn a_key_always_lands_on_the_same_endpoint() {
    let p = pool("affinity", 8001..=8003, hashing());
    let first = placement(&p, 1000);
    for _ in 0..3 {
        assert_eq!(placement(&p, 1000), first);
    }
    let mut load: HashMap<&str, usize> = HashMap::new();
    for url in &first {
        *load.entry(url).or_default() += 1;
    }
    assert_eq!(load.len(), 3, "every endpoint gets keys");
    for (url, n) in load {
        assert!((200..=470).contains(&n), "{url}: {n} of 1000 keys");
    }
}

#[test]
fn removing_or_adding_an_endpoint_remaps_about_its_share() {
    const KEYS: usize = 2000;
    let five = placement(&pool("remap-5", 8001..=8005, hashing()), KEYS);
    let four = placement(&pool("remap-4", 8001..=8004, hashing()), KEYS);
    let six = placement(&pool("remap-6", 8001..=8006, hashing()), KEYS);
    let removed = "http://10.0.0.1:8005";
    let moved_out = five.iter().zip(&four).filter(|(a, b)| a != b).count();
    for (before, after) in five.iter().zip(&four) {
        if before != after {
            assert_eq!(&**before, removed, "only the removed endpoint's keys move");
        }
    }
    let share = moved_out as f64 / KEYS as f64;
    assert!(
        (0.12..=0.28).contains(&share),
        "removing 1 of 5 moved {share:.3} (ideal 0.20)"
    );
    let added = "http://10.0.0.1:8006";
    let moved_in = five.iter().zip(&six).filter(|(a, b)| a != b).count();
    for (before, after) in five.iter().zip(&six) {
        if before != after {
            assert_eq!(&**after, added, "keys only move to the new endpoint");
        }
    }
    let share = moved_in as f64 / KEYS as f64;
    assert!(
        (0.10..=0.24).contains(&share),
        "adding a 6th moved {share:.3} (ideal 0.167)"
    );
}

#[test]
fn a_hot_key_spills_over_within_the_load_bound() {
    let p = pool("hot-key", 8001..=8003, hashing());
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(p.pool.select(Some(b"the-hot-session"), &[]).unwrap());
        let total = held.len() as f64;
        let bound = (DEFAULT_LOAD_FACTOR * total / 3.0).ceil() as u32 + 1;
        for i in 0..3 {
            let inflight = p.pool.state(i).unwrap().inflight();
            assert!(
                inflight <= bound,
                "endpoint {i}: {inflight} in flight of {total} (bound {bound})"
            );
        }
    }
    let spilled = held
        .iter()
        .filter(|pick| pick.reason == Reason::FallbackFromOverload)
        .count();
    assert!(
        spilled >= 20,
        "most of a hot key's load spills: {spilled} of 60"
    );
    let home = held[0].index;
    drop(held);
    assert_eq!(
        p.pool.select(Some(b"the-hot-session"), &[]).unwrap().index,
        home,
        "once the load is gone the key goes home"
    );
}

#[test]
fn open_circuits_and_failed_endpoints_are_skipped() {
    let policy = CircuitPolicy {
        failures: 2,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(60),
    };
    let p = pool(
        "circuit",
        8001..=8003,
        PoolSpec {
            circuit: Some(policy),
            ..Default::default()
        },
    );
    for _ in 0..2 {
        p.pool.report(
            1,
            false,
            true,
            Outcome::Failed {
                reason: "refused",
                slow: None,
            },
        );
    }
    for _ in 0..30 {
        assert_ne!(p.pool.select(None, &[]).unwrap().index, 1);
    }
    assert_eq!(p.pool.select(None, &[0]).unwrap().index, 2);
    let pick = p.pool.select(None, &[0]).unwrap();
    assert_eq!(pick.reason, Reason::Retry);
    for i in [0, 2] {
        for _ in 0..2 {
            p.pool.report(
                i,
                false,
                true,
                Outcome::Answered {
                    status: 503,
                    first_byte: Duration::ZERO,
                    retry_after: None,
                },
            );
        }
    }
    let none = p.pool.select(None, &[]).unwrap_err();
    assert_eq!((none.total, none.open), (3, 3));
    assert!(!p.pool.available());
}

#[test]
fn least_latency_prefers_the_fast_endpoint() {
    let p = pool(
        "latency",
        8001..=8003,
        PoolSpec {
            balance: Balance::LeastLatency,
            ..Default::default()
        },
    );
    for (i, ms) in [(0, 400), (1, 20), (2, 900)] {
        p.pool.report(
            i,
            false,
            true,
            Outcome::Answered {
                status: 200,
                first_byte: Duration::from_millis(ms),
                retry_after: None,
            },
        );
    }
    let picks: Vec<usize> = (0..20)
        .map(|_| p.pool.select(None, &[]).unwrap().index)
        .collect();
    assert!(picks.iter().all(|i| *i == 1), "{picks:?}");
    // Load counts too: with enough in flight on the fast one, the next best takes a turn.
    let held: Vec<_> = (0..30).map(|_| p.pool.select(None, &[]).unwrap()).collect();
    assert!(
        held.iter().any(|pick| pick.index == 0),
        "in-flight load weighs in"
    );
}

#[test]
fn a_rate_limited_endpoint_waits_its_retry_after() {
    let p = pool(
        "retry-after",
        8001..=8002,
        PoolSpec {
            circuit: Some(CircuitPolicy::default()),
            ..Default::default()
        },
    );
    p.pool.report(
        0,
        false,
        true,
        Outcome::Answered {
            status: 429,
            first_byte: Duration::ZERO,
            retry_after: Some(Duration::from_millis(50)),
        },
    );
    for _ in 0..10 {
        assert_eq!(p.pool.select(None, &[]).unwrap().index, 1);
    }
    std::thread::sleep(Duration::from_millis(60));
    let back = (0..10).any(|_| p.pool.select(None, &[]).unwrap().index == 0);
    assert!(back, "after its retry-after the endpoint is tried again");
}

#[test]
fn only_the_probe_closes_an_open_circuit_and_repeat_failures_do_not_count() {
    let policy = CircuitPolicy {
        failures: 2,
        window: Duration::from_secs(10),
        open_for: Duration::from_millis(30),
    };
    let p = pool(
        "probe",
        8001..=8002,
        PoolSpec {
            circuit: Some(policy),
            ..Default::default()
        },
    );
    let fail = |counts: bool| {
        p.pool.report(
            0,
            false,
            counts,
            Outcome::Failed {
                reason: "reset",
                slow: None,
            },
        );
    };
    // A request that already failed elsewhere does not count against this endpoint.
    fail(false);
    fail(false);
    fail(false);
    assert!(p.pool.available() && (0..10).any(|_| p.pool.select(None, &[]).unwrap().index == 0));
    fail(true);
    fail(true);
    for _ in 0..10 {
        assert_eq!(p.pool.select(None, &[]).unwrap().index, 1, "open");
    }
    // A straggler's answer (no probe) leaves it open.
    let ok = Outcome::Answered {
        status: 200,
        first_byte: Duration::from_millis(5),
        retry_after: None,
    };
    p.pool.report(0, false, true, ok);
    assert_eq!(p.pool.select(None, &[]).unwrap().index, 1);
    std::thread::sleep(Duration::from_millis(40));
    let probe = loop {
        let pick = p.pool.select(None, &[]).unwrap();
        if pick.index == 0 {
            break pick;
        }
    };
    assert!(probe.probe, "the first request after open_for is the probe");
    p.pool.report(
        0,
        true,
        true,
        Outcome::Answered {
            status: 200,
            first_byte: Duration::from_millis(5),
            retry_after: None,
        },
    );
    assert!(
        (0..10).any(|_| p.pool.select(None, &[]).unwrap().index == 0),
        "closed by its probe"
    );
}

#[test]
fn a_rotated_key_gets_fresh_health_checks() {
    let build = |key: &str| {
        Provider::new(
            "rotating",
            ProviderKind::Openai,
            vec![Endpoint::parse("http://10.0.0.1:8001", 1).unwrap()],
            Some(crate::config::Secret::new(key.into())),
            None,
            AHashMap::new(),
            Vec::new(),
            Timeouts::default(),
            HeaderValue::from_static("2023-06-01"),
        )
        .with_pool(PoolSpec {
            health: Some(health::HealthPolicy::default()),
            ..Default::default()
        })
    };
    let (old, same, rotated) = (build("sk-old"), build("sk-old"), build("sk-new"));
    let group = |p: &Provider| p.pool.health.clone().unwrap();
    assert!(
        Arc::ptr_eq(&group(&old), &group(&same)),
        "a reload that keeps the key keeps the group"
    );
    assert!(
        !Arc::ptr_eq(&group(&old), &group(&rotated)),
        "no probe goes out with the old key from a group the new snapshot shares"
    );
}
