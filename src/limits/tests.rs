use super::*;

fn scope(name: &str, limits: Limits) -> (Arc<Counter>, Limits) {
    (Arc::new(Counter::new(name)), limits)
}

#[test]
fn requests_per_minute_admits_the_limit_then_refuses_with_a_wait() {
    let (counter, limits) = scope(
        "key a",
        Limits {
            requests_per_minute: Some(3),
            ..Limits::default()
        },
    );
    for _ in 0..3 {
        admit(vec![(counter.clone(), limits)], Demand::default())
            .unwrap()
            .settle(Demand::default());
    }
    let refused = admit(vec![(counter.clone(), limits)], Demand::default()).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Requests);
    // 3 per minute: one every 20 s.
    assert!((1..=20).contains(&refused.retry_after), "{refused:?}");
}

#[test]
fn tokens_are_reserved_then_settled_to_what_was_used() {
    let (counter, limits) = scope(
        "key a",
        Limits {
            tokens_per_minute: Some(1000),
            ..Limits::default()
        },
    );
    let big = Demand {
        tokens: 800,
        usd: 0.0,
    };
    let held = admit(vec![(counter.clone(), limits)], big).unwrap();
    // 800 reserved: another 800 does not fit while the first is in flight.
    assert_eq!(
        admit(vec![(counter.clone(), limits)], big)
            .unwrap_err()
            .kind,
        LimitKind::Tokens
    );
    // It used 100: the rest comes back.
    held.settle(Demand {
        tokens: 100,
        usd: 0.0,
    });
    admit(vec![(counter.clone(), limits)], big)
        .unwrap()
        .settle(big);
}

#[test]
fn concurrent_requests_cannot_overrun_a_budget() {
    let budget = Limits {
        budget: Some(Budget {
            cut: false,
            usd: 1.0,
            per: Period::Month,
        }),
        ..Limits::default()
    };
    let (counter, limits) = scope("tenant acme", budget);
    let each = Demand {
        tokens: 10,
        usd: 0.3,
    };
    // Three in flight reserve 0.9: a fourth would pass 1.0 and is refused before any ends.
    let held: Vec<_> = (0..3)
        .map(|_| admit(vec![(counter.clone(), limits)], each).unwrap())
        .collect();
    let refused = admit(vec![(counter.clone(), limits)], each).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Budget);
    // Held by reservations, not spent: worth trying again soon.
    assert_eq!(refused.retry_after, RESERVED_RETRY_SECS);
    // A request dearer than what is left even once they settle waits for the period.
    let dear = Demand {
        tokens: 10,
        usd: 2.0,
    };
    let refused = admit(vec![(counter.clone(), limits)], dear).unwrap_err();
    assert!(refused.retry_after > RESERVED_RETRY_SECS, "{refused:?}");
    for h in held {
        h.settle(Demand {
            tokens: 10,
            usd: 0.1,
        });
    }
    // Spent 0.3 of 1.0: room again.
    let usage = counter.snapshot(&limits, SystemTime::now());
    assert!((usage.budget.unwrap().1 - 0.3).abs() < 1e-9);
    admit(vec![(counter.clone(), limits)], each).unwrap();
}

#[test]
fn admission_is_all_or_nothing_and_an_unsettled_request_keeps_its_reservation() {
    let (key, key_limits) = scope(
        "key a",
        Limits {
            concurrent_requests: Some(5),
            ..Limits::default()
        },
    );
    let (model, model_limits) = scope(
        "model m",
        Limits {
            concurrent_requests: Some(1),
            ..Limits::default()
        },
    );
    let first = admit(
        vec![(key.clone(), key_limits), (model.clone(), model_limits)],
        Demand::default(),
    )
    .unwrap();
    let refused = admit(
        vec![(key.clone(), key_limits), (model.clone(), model_limits)],
        Demand::default(),
    )
    .unwrap_err();
    assert_eq!(
        (refused.kind, refused.scope.as_str()),
        (LimitKind::Concurrency, "model m")
    );
    // The refused request took nothing from the key.
    assert_eq!(key.snapshot(&key_limits, SystemTime::now()).inflight, 1);
    drop(first);
    assert_eq!(key.snapshot(&key_limits, SystemTime::now()).inflight, 0);
    // Dropped unsettled: its reservation counts as spent.
    let budget = Limits {
        budget: Some(Budget {
            cut: false,
            usd: 1.0,
            per: Period::Day,
        }),
        ..Limits::default()
    };
    let (spend, limits) = scope("key b", budget);
    drop(
        admit(
            vec![(spend.clone(), limits)],
            Demand {
                tokens: 1,
                usd: 0.25,
            },
        )
        .unwrap(),
    );
    let used = spend.snapshot(&limits, SystemTime::now()).budget.unwrap();
    assert!(
        (used.1 - 0.25).abs() < 1e-9 && used.2.abs() < 1e-9,
        "{used:?}"
    );
}

#[test]
fn reset_durations_are_written_as_openai_does() {
    assert_eq!(reset_header(1), "1s");
    assert_eq!(reset_header(360), "6m0s");
}
