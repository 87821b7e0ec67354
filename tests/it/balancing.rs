//! Upstream pools through the real binary: endpoints that die and come back, sessions that
//! stick, hot keys that spill within their bound, circuits, `retry-after`, health checks
//! across reloads, and what a client hears when nothing is left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use sira_mock::{MockConfig, MockProvider};

use crate::support::{client, free_port, keys_section, Sira, KEY_A};

/// A config with one pool `fleet` of `urls` (pool keys in `pool`, indented by 4) and one
/// model `m` on it.
pub(crate) fn fleet(urls: &[String], pool: &str, model_extra: &str) -> String {
    let endpoints = urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{keys}providers:\n  fleet:\n    kind: openai-compatible\n    endpoints: [{endpoints}]\n{pool}models:\n  m:\n    targets: [{{ provider: fleet, model: served }}]\n{model_extra}",
        keys = keys_section()
    )
}

pub(crate) fn chat(sira: &Sira, extra: &[(&str, &str)], body: Value) -> reqwest::RequestBuilder {
    let mut req = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&body);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req
}

pub(crate) fn hello() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
}

/// Completions a mock answered (health checks are GETs).
pub(crate) fn posts(mock: &MockProvider) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count()
}

pub(crate) async fn upstreams(sira: &Sira) -> Value {
    sira.admin_json("/admin/upstreams").await
}

/// The `/admin/upstreams` entry of endpoint `url` of provider `fleet`.
pub(crate) async fn endpoint(sira: &Sira, url: &str) -> Value {
    let all = upstreams(sira).await;
    all["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "fleet")
        .and_then(|p| {
            p["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["url"] == url)
        })
        .cloned()
        .unwrap_or_else(|| panic!("{url} not in {all}"))
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_reload(sira: &Sira, n: f64) {
    wait_for("the reload", Duration::from_secs(5), async || {
        sira.metric("sira_config_reloads_total{result=\"ok\"}")
            .await
            >= n
    })
    .await;
}

/// A URL nothing listens on.
pub(crate) fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn an_endpoint_that_dies_and_returns_costs_clients_nothing() {
    let a = MockProvider::start();
    let b = MockProvider::start();
    let c = MockProvider::start();
    let b_port = b.addr().port();
    let urls = [a.url(), b.url(), c.url()];
    let pool = "    health: { interval: 200ms, timeout: 150ms, healthy_after: 1, unhealthy_after: 1 }\n    circuit: { failures: 1, window: 10s, open_for: 300ms }\n";
    let sira = Sira::start(&fleet(&urls, pool, ""), "");
    let sira = Arc::new(sira);

    let stop = Arc::new(AtomicBool::new(false));
    let (done, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (sira, stop, done, failures) =
            (sira.clone(), stop.clone(), done.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let resp = chat(&sira, &[], hello()).send().await.unwrap();
                let status = resp.status().as_u16();
                if status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    errors.push(format!(
                        "{status}: {}",
                        resp.text().await.unwrap_or_default()
                    ));
                } else {
                    resp.bytes().await.unwrap();
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    b.stop_gracefully();
    let killed_at = done.load(Ordering::Relaxed);
    wait_for(
        "the dead endpoint out of rotation",
        Duration::from_secs(3),
        async || {
            let e = endpoint(&sira, &urls[1]).await;
            e["healthy"] == false || e["circuit"] == "open"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let b = MockProvider::try_start_on(b_port, MockConfig::default()).expect("the port again");
    wait_for(
        "the endpoint back in rotation",
        Duration::from_secs(5),
        async || posts(&b) >= 5,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.unwrap());
    }
    let total = done.load(Ordering::Relaxed);
    // The one failure a proxy may not hide: a request written on a kept-alive connection in
    // the instant the draining server closed it. The request may have been read, so it is
    // not sent again (Pingora's and nginx's rule for POST too); at most one per pooled
    // connection to the stopped endpoint. Everything else failed over.
    let (races, others): (Vec<_>, Vec<_>) = errors
        .iter()
        .partition(|e| e.contains("the connection failed before a response"));
    assert!(
        others.is_empty(),
        "{} client errors of {total}: {others:?}",
        others.len()
    );
    // Six clients in flight: sira can hold at most six pooled connections to the endpoint
    // (two is typical; three was seen under a parallel test run).
    assert!(races.len() <= 6, "keep-alive races: {races:?}");
    assert!(
        total > killed_at + 50,
        "load went on while the endpoint was gone: {killed_at} → {total}"
    );
    assert!(posts(&a) > 0 && posts(&c) > 0);
    assert_eq!(failures.load(Ordering::Relaxed), races.len());
    let healthy_b = format!(
        "sira_upstream_healthy{{endpoint=\"{}\",provider=\"fleet\"}}",
        urls[1]
    );
    wait_for("the gauge to follow", Duration::from_secs(2), async || {
        sira.metric(&healthy_b).await == 1.0
    })
    .await;
}

/// Where each session id of `keys` was served, by mock index, one request at a time (no
/// concurrency, so the load bound never moves a key).
async fn placements(
    sira: &Sira,
    mocks: &[&MockProvider],
    keys: impl Iterator<Item = usize>,
) -> HashMap<usize, usize> {
    for m in mocks {
        m.clear();
    }
    let mut sent = Vec::new();
    for k in keys {
        let session = format!("session-{k}");
        let resp = chat(sira, &[("x-session-id", &session)], hello())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        sent.push(k);
    }
    let mut placed = HashMap::new();
    for (i, m) in mocks.iter().enumerate() {
        for r in m.requests().iter().filter(|r| r.method == "POST") {
            let k: usize = r
                .header("x-session-id")
                .unwrap()
                .trim_start_matches("session-")
                .parse()
                .unwrap();
            assert!(placed.insert(k, i).is_none(), "session {k} served twice");
        }
    }
    assert_eq!(placed.len(), sent.len());
    placed
}

#[tokio::test]
async fn sessions_stick_and_a_removed_endpoint_moves_only_its_share() {
    let mocks: Vec<MockProvider> = (0..4).map(|_| MockProvider::start()).collect();
    let all: Vec<&MockProvider> = mocks.iter().collect();
    let urls: Vec<String> = mocks.iter().map(MockProvider::url).collect();
    let pool = "    balance: consistent-hash\n    hash_key: header:x-session-id\n";
    let sira = Sira::start(&fleet(&urls, pool, ""), "");
    const KEYS: usize = 1000;
    let first = placements(&sira, &all, 0..KEYS).await;
    let again = placements(&sira, &all, (0..KEYS).step_by(5)).await;
    for (k, i) in &again {
        assert_eq!(first[k], *i, "session {k} moved without a change");
    }
    let mut load = [0usize; 4];
    for i in first.values() {
        load[*i] += 1;
    }
    assert!(
        load.iter().all(|n| (150..=380).contains(n)),
        "keys per endpoint: {load:?}"
    );
    assert!(
        sira.metric(&format!(
            "sira_upstream_selections_total{{endpoint=\"{}\",provider=\"fleet\",reason=\"hash\"}}",
            urls[0]
        ))
        .await
            > 0.0
    );

    // Without the last endpoint only its keys move, about 1/4 of them.
    sira.rewrite_config(&fleet(&urls[..3], pool, ""), "");
    sira.sighup();
    wait_reload(&sira, 1.0).await;
    let after = placements(&sira, &all[..3], 0..KEYS).await;
    let moved = (0..KEYS).filter(|k| first[k] != after[k]).count();
    for k in 0..KEYS {
        if first[&k] != after[&k] {
            assert_eq!(first[&k], 3, "session {k} moved off a kept endpoint");
        }
    }
    let share = moved as f64 / KEYS as f64;
    assert!(
        (0.15..=0.35).contains(&share),
        "removing 1 of 4 moved {share:.3} of the keys"
    );
}

#[tokio::test]
async fn conversations_sharing_a_prompt_prefix_land_together() {
    let mocks: Vec<MockProvider> = (0..3).map(|_| MockProvider::start()).collect();
    let urls: Vec<String> = mocks.iter().map(MockProvider::url).collect();
    let pool = "    balance: consistent-hash\n    hash_key: prompt-prefix:256\n";
    let sira = Sira::start(&fleet(&urls, pool, ""), "");
    let mut homes = Vec::new();
    for conversation in 0..30 {
        let system = format!(
            "You are agent {conversation}. {}",
            "Follow the repository rules. ".repeat(10)
        );
        let mut messages = vec![json!({"role": "system", "content": system})];
        let mut served = Vec::new();
        for turn in 0..3 {
            messages.push(json!({"role": "user", "content": format!("turn {turn}")}));
            for m in &mocks {
                m.clear();
            }
            let resp = chat(&sira, &[], json!({"model": "m", "messages": messages}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
            messages.push(json!({"role": "assistant", "content": "ok"}));
            served.push(mocks.iter().position(|m| posts(m) == 1).unwrap());
        }
        assert!(
            served.iter().all(|i| *i == served[0]),
            "conversation {conversation} went to {served:?}"
        );
        homes.push(served[0]);
    }
    let used: std::collections::HashSet<_> = homes.iter().collect();
    assert!(
        used.len() >= 2,
        "different prefixes spread over the pool: {homes:?}"
    );
}

#[tokio::test]
async fn a_hot_key_spills_over_within_the_load_bound() {
    let mocks: Vec<MockProvider> = (0..3).map(|_| MockProvider::start()).collect();
    let urls: Vec<String> = mocks.iter().map(MockProvider::url).collect();
    let pool = "    balance: consistent-hash\n    hash_key: header:x-session-id\n    balance_load_factor: 1.25\n";
    let sira = Sira::start(&fleet(&urls, pool, ""), "");
    const HOT: usize = 12;
    let streams = futures_util::stream::iter(0..HOT).map(|_| async {
        let resp = chat(
            &sira,
            &[("x-session-id", "the-hot-one"), ("x-mock-delay-ms", "100")],
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    });
    streams.buffer_unordered(HOT).collect::<Vec<_>>().await;
    let load: Vec<usize> = mocks.iter().map(posts).collect();
    assert_eq!(load.iter().sum::<usize>(), HOT);
    // ceil(1.25 × 12 / 3) = 5, plus one for the request that measures the bound.
    assert!(
        load.iter().all(|n| *n <= 6),
        "in-flight per endpoint bounded: {load:?}"
    );
    assert!(
        load.iter().filter(|n| **n > 0).count() >= 2,
        "the hot key spilled: {load:?}"
    );
    let spilled: f64 = {
        let mut sum = 0.0;
        for u in &urls {
            sum += sira.metric(&format!("sira_upstream_selections_total{{endpoint=\"{u}\",provider=\"fleet\",reason=\"fallback_from_overload\"}}")).await;
        }
        sum
    };
    assert!(spilled >= 1.0, "spills are counted");
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_elsewhere_and_its_circuit_opens() {
    let bad = MockProvider::start_with(MockConfig {
        status: Some(500),
        ..Default::default()
    });
    let good = MockProvider::start();
    let urls = [bad.url(), good.url()];
    let pool = "    circuit: { failures: 2, window: 10s, open_for: 30s }\n";
    let retry = "    retry: { attempts: 2, backoff: 10ms, max_backoff: 20ms }\n";
    let sira = Sira::start(&fleet(&urls, pool, retry), "");
    let mut retried = 0;
    for _ in 0..20 {
        let resp = chat(&sira, &[], hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200, "a 500 then a 200 is a 200");
        let attempts = resp.headers()["x-sira-attempts"]
            .to_str()
            .unwrap()
            .to_owned();
        if attempts.starts_with('2') {
            assert!(attempts.contains("status_500"), "{attempts}");
            retried += 1;
        }
        resp.bytes().await.unwrap();
    }
    assert_eq!(
        posts(&bad),
        2,
        "two failures opened the circuit; no more requests went there"
    );
    assert_eq!(retried, 2);
    let e = endpoint(&sira, &urls[0]).await;
    assert_eq!(e["circuit"], "open", "{e}");
    assert_eq!(e["last_error"]["reason"], "answered 500");
    let open = format!(
        "sira_circuit_state{{endpoint=\"{}\",provider=\"fleet\",state=\"open\"}}",
        urls[0]
    );
    assert_eq!(sira.metric(&open).await, 1.0);
}

#[tokio::test]
async fn a_429_holds_its_endpoint_off_for_its_retry_after() {
    let limited = MockProvider::start_with(MockConfig {
        status: Some(429),
        retry_after: Some(1),
        ..Default::default()
    });
    let good = MockProvider::start();
    let urls = [limited.url(), good.url()];
    let retry = "    retry: { attempts: 2, backoff: 10ms, max_backoff: 20ms }\n";
    let solo = "  solo:\n    targets: [{ provider: alone, model: served }]\n    retry: { attempts: 2, backoff: 10ms, max_backoff: 20ms }\n";
    let config = fleet(&urls, "", &format!("{retry}{solo}")).replace(
        "models:\n",
        &format!("  alone:\n    kind: openai-compatible\n    endpoints: [\"{}\"]\n    circuit: {{ failures: 5 }}\nmodels:\n", limited.url()),
    );
    let sira = Sira::start(&config, "");
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let resp = chat(&sira, &[], hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    // Once within the second it is held off; a loaded machine that took longer over the
    // ten may have seen the hold end (once a second at most).
    let seconds = usize::try_from(started.elapsed().as_secs()).unwrap_or(usize::MAX);
    let tried = posts(&limited);
    assert!(
        (1..=1 + seconds).contains(&tried),
        "held off after its 429 for the retry-after: tried {tried} times in {seconds} s"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..4 {
        chat(&sira, &[], hello())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    assert!(
        posts(&limited) >= 2,
        "tried again once the retry-after passed"
    );

    // With nowhere else to go, the client gets the provider's own 429 and its retry-after.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = chat(
        &sira,
        &[],
        json!({"model": "solo", "messages": [{"role": "user", "content": "x"}]}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
}

#[tokio::test]
async fn no_healthy_endpoint_is_a_502_that_says_so_and_readyz_follows() {
    let urls = [dead_url(), dead_url()];
    let pool = "    health: { interval: 2s, timeout: 2s, unhealthy_after: 1 }\n";
    let sira = Sira::start(&fleet(&urls, pool, ""), "");
    wait_for(
        "both endpoints unhealthy",
        Duration::from_secs(3),
        async || {
            endpoint(&sira, &urls[0]).await["healthy"] == false
                && endpoint(&sira, &urls[1]).await["healthy"] == false
        },
    )
    .await;
    let resp = chat(&sira, &[], hello()).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_healthy_upstream", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no healthy endpoint (2 unhealthy"),
        "{message}"
    );
    let ready = client()
        .get(sira.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready
        .text()
        .await
        .unwrap()
        .contains("no healthy endpoint for: m"));
    let last = endpoint(&sira, &urls[0]).await;
    assert!(
        last["last_error"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("health check:"),
        "{last}"
    );
}

#[tokio::test]
async fn health_state_survives_a_reload_and_added_endpoints_are_checked_at_once() {
    let alive = MockProvider::start();
    let (b, c) = (dead_url(), dead_url());
    // A long interval: anything checked within the test was checked because of a start or
    // a reload, not because the interval came round.
    let pool = "    health: { interval: 60s, timeout: 2s, unhealthy_after: 1 }\n";
    let sira = Sira::start(&fleet(&[alive.url(), b.clone()], pool, ""), "");
    wait_for(
        "the dead endpoint found",
        Duration::from_secs(3),
        async || endpoint(&sira, &b).await["healthy"] == false,
    )
    .await;
    let since = endpoint(&sira, &b).await["health_since_unix_ms"].clone();
    assert!(since.is_u64());

    sira.rewrite_config(&fleet(&[alive.url(), b.clone(), c.clone()], pool, ""), "");
    sira.sighup();
    wait_reload(&sira, 1.0).await;
    wait_for(
        "the added endpoint checked",
        Duration::from_secs(3),
        async || endpoint(&sira, &c).await["healthy"] == false,
    )
    .await;
    let kept = endpoint(&sira, &b).await;
    assert_eq!(
        kept["healthy"], false,
        "a kept endpoint keeps its health: {kept}"
    );
    assert_eq!(
        kept["health_since_unix_ms"], since,
        "no new transition: the state was kept"
    );
    assert_eq!(endpoint(&sira, &alive.url()).await["healthy"], true);
    for _ in 0..10 {
        let resp = chat(&sira, &[], hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(posts(&alive), 10);
}

#[tokio::test]
async fn a_hanging_endpoint_is_taken_out_by_its_health_check() {
    let hanging = MockProvider::start_with(MockConfig {
        hang: Some(sira_mock::Hang::Forever),
        ..Default::default()
    });
    let good = MockProvider::start();
    let urls = [hanging.url(), good.url()];
    let pool = "    health: { interval: 1s, timeout: 1s, unhealthy_after: 1 }\n";
    let sira = Sira::start(&fleet(&urls, pool, ""), "");
    wait_for(
        "the hanging endpoint out",
        Duration::from_secs(6),
        async || endpoint(&sira, &urls[0]).await["healthy"] == false,
    )
    .await;
    for _ in 0..10 {
        let resp = chat(&sira, &[], hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(posts(&hanging), 0);
}

#[tokio::test]
async fn least_latency_sends_the_load_to_the_fast_endpoint() {
    let slow = MockProvider::start_with(MockConfig {
        hang: Some(sira_mock::Hang::For(Duration::from_millis(1500))),
        ..Default::default()
    });
    let fast = MockProvider::start();
    let sira = Sira::start(
        &fleet(
            &[slow.url(), fast.url()],
            "    balance: least-latency\n",
            "",
        ),
        "",
    );
    for _ in 0..30 {
        let resp = chat(&sira, &[], hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert!(
        posts(&fast) >= 27,
        "fast {} / slow {}",
        posts(&fast),
        posts(&slow)
    );
}
