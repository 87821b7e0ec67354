//! Failover that cannot be undone: hedged tries, answers held while later tries run, and
//! streams that break after their first byte. What may have run is never sent again.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sira_mock::{MockConfig, MockProvider};

use crate::balancing::{chat, dead_url, endpoint, fleet, hello, posts};
use crate::support::{keys_section, Sira};

#[tokio::test]
async fn a_slow_first_byte_is_hedged_on_another_endpoint() {
    let slow = MockProvider::start_with(MockConfig {
        hang: Some(sira_mock::Hang::For(Duration::from_secs(10))),
        ..Default::default()
    });
    let fast = MockProvider::start();
    let urls = [slow.url(), fast.url()];
    // A hedge delay well above a loaded machine's stalls: the fast endpoint is never
    // hedged by mistake.
    let hedge = "    hedge: { after: 1s, max: 1 }\n";
    let sira = Sira::start(&fleet(&urls, "", hedge), "");
    let mut hedged = 0;
    for _ in 0..6 {
        let started = Instant::now();
        let resp = chat(&sira, &[], hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let attempts = resp.headers()["x-sira-attempts"]
            .to_str()
            .unwrap()
            .to_owned();
        resp.bytes().await.unwrap();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(6),
            "answered by the hedge, not the slow one: {took:?}"
        );
        if attempts.contains("hedge_cancelled") {
            assert!(
                took >= Duration::from_secs(1),
                "the hedge waited its turn: {took:?}"
            );
            assert_eq!(attempts, "2 (fleet: hedge_cancelled, fleet: ok)");
            hedged += 1;
        }
    }
    assert!(
        hedged >= 2,
        "round robin sent some to the slow endpoint: {hedged}"
    );
    assert!(
        slow.wait_aborted_async(hedged, Duration::from_secs(2))
            .await
            || posts(&slow) >= hedged,
        "the slow attempts were sent"
    );
    let cancelled = format!("sira_upstream_attempts_total{{endpoint=\"{}\",outcome=\"hedge_cancelled\",provider=\"fleet\"}}", urls[0]);
    assert_eq!(sira.metric(&cancelled).await, hedged as f64);
    let by_hedge = format!(
        "sira_upstream_selections_total{{endpoint=\"{}\",provider=\"fleet\",reason=\"hedge\"}}",
        urls[1]
    );
    assert_eq!(sira.metric(&by_hedge).await, hedged as f64);
}

#[tokio::test]
async fn a_held_answer_is_told_as_the_try_that_got_it() {
    let overloaded = MockProvider::start_with(MockConfig {
        status: Some(529),
        ..Default::default()
    });
    let config = format!(
        "{}providers:\n  claude:\n    kind: anthropic\n    endpoints: [\"{}\"]\n    api_key: sk-ant\n  local:\n    kind: openai-compatible\n    endpoints: [\"{}\"]\nmodels:\n  m:\n    route: ordered\n    targets: [{{ provider: claude, model: claude-x }}, {{ provider: local, model: served }}]\n    retry: {{ attempts: 2, backoff: 10ms, max_backoff: 20ms }}\n",
        keys_section(),
        overloaded.url(),
        dead_url()
    );
    let sira = Sira::start(&config, "");
    let resp = chat(&sira, &[], hello()).send().await.unwrap();
    assert_eq!(
        resp.headers()["x-sira-provider"],
        "claude",
        "the answer is Anthropic's"
    );
    assert_eq!(resp.headers()["x-sira-model"], "claude-x");
    assert_eq!(
        resp.headers()["x-sira-attempts"],
        "2 (claude: status_529, local: error)"
    );
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert!(status == 529 || status == 503, "{status}");
    // Translated from Anthropic's error shape into the OpenAI client's.
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(
        body.get("type") != Some(&json!("error")),
        "not Anthropic's envelope: {body}"
    );
}

#[tokio::test]
async fn an_endpoint_that_cuts_its_streams_is_ejected() {
    let cutter = MockProvider::start_with(MockConfig {
        fail_after: Some(2),
        ..Default::default()
    });
    let good = MockProvider::start();
    let urls = [cutter.url(), good.url()];
    let pool = "    circuit: { failures: 2, window: 10s, open_for: 30s }\n";
    let sira = Sira::start(&fleet(&urls, pool, ""), "");
    let mut cut = 0;
    for _ in 0..12 {
        let resp = chat(
            &sira,
            &[],
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        let received = crate::support::receive(resp).await;
        if !received.complete {
            // Too late to try elsewhere: the client gets a stream that says it broke.
            assert!(received.text.contains("error"), "{}", received.text);
            cut += 1;
        }
    }
    assert_eq!(cut, 2, "two broken streams opened the cutter's circuit");
    assert_eq!(posts(&cutter), 2);
    let e = endpoint(&sira, &urls[0]).await;
    assert_eq!(e["circuit"], "open", "{e}");
}

#[tokio::test]
async fn a_hedged_request_that_may_have_run_is_never_sent_a_third_time() {
    let stuck = MockProvider::start_with(MockConfig {
        hang: Some(sira_mock::Hang::Forever),
        ..Default::default()
    });
    let failing = MockProvider::start_with(MockConfig {
        status: Some(503),
        ..Default::default()
    });
    let urls = [stuck.url(), failing.url()];
    let pool = "    timeouts: { first_byte: 400ms }\n    circuit: { failures: 0 }\n";
    let model = "    hedge: { after: 100ms, max: 1 }\n    retry: { attempts: 3, backoff: 10ms, max_backoff: 20ms }\n";
    let sira = Sira::start(&fleet(&urls, pool, model), "");
    for n in 1..=4 {
        let resp = chat(&sira, &[], hello()).send().await.unwrap();
        let status = resp.status().as_u16();
        let attempts = resp.headers()["x-sira-attempts"]
            .to_str()
            .unwrap()
            .to_owned();
        resp.bytes().await.unwrap();
        assert!(status == 503 || status == 504, "{status} ({attempts})");
        // The stuck attempt may be generating: after it, nothing more is sent anywhere.
        assert_eq!(
            posts(&stuck) + posts(&failing),
            2 * n,
            "request {n}: {attempts}"
        );
    }
}
