//! Choosing among a model's targets (`route:`): ordered, lowest-cost, lowest-latency,
//! canaries pinned to a key, and a client's own choice with `x-sira-route`.

use std::time::Duration;

use serde_json::{json, Value};
use sira_mock::{Hang, MockConfig, MockProvider};

use crate::support::{client, free_port, Sira, KEY_A, KEY_B};

/// team-a may choose a target with `x-sira-route`; team-b may not.
fn keys() -> String {
    format!(
        "auth:\n  keys:\n    - {{ name: team-a, hash: \"{}\", route_header: true }}\n    - {{ name: team-b, hash: \"{}\" }}\n",
        sira::auth::hash_key(KEY_A),
        sira::auth::hash_key(KEY_B)
    )
}

/// Providers `p0`, `p1`, … on `urls` (pool keys in `pool`, indented by 4, on every one).
fn providers(urls: &[String], pool: &str) -> String {
    let mut text = String::from("providers:\n");
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!(
            "  p{i}:\n    kind: openai-compatible\n    endpoints: [\"{url}\"]\n{pool}"
        ));
    }
    text
}

async fn send(sira: &Sira, key: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn served_by(sira: &Sira, key: &str, headers: &[(&str, &str)]) -> String {
    let resp = send(sira, key, headers).await;
    assert_eq!(resp.status(), 200);
    let provider = resp.headers()["x-sira-provider"]
        .to_str()
        .unwrap()
        .to_owned();
    resp.bytes().await.unwrap();
    provider
}

#[tokio::test]
async fn ordered_skips_a_target_without_a_healthy_endpoint() {
    let backup = MockProvider::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let health = "    health: { interval: 2s, timeout: 2s, unhealthy_after: 1 }\n";
    let config = format!(
        "{}{}models:\n  m:\n    route: ordered\n    targets: [{{ provider: p0 }}, {{ provider: p1 }}]\n",
        keys(),
        providers(&[dead, backup.url()], health)
    );
    let sira = Sira::start(&config, "");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let up = sira.admin_json("/admin/upstreams").await;
        if up["providers"][0]["available"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "p0 never marked down: {up}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for _ in 0..5 {
        let resp = send(&sira, KEY_A, &[]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-sira-provider"], "p1");
        assert_eq!(
            resp.headers()["x-sira-attempts"],
            "1 (p1: ok)",
            "the unhealthy primary is not even tried"
        );
        resp.bytes().await.unwrap();
    }
}

#[tokio::test]
async fn lowest_cost_picks_the_cheapest_target_for_the_request() {
    let (a, b) = (MockProvider::start(), MockProvider::start());
    let config = format!(
        "{}{}models:\n  m:\n    route: lowest-cost\n    pricing: {{ input: 3, output: 15 }}\n    targets:\n      - {{ provider: p0 }}\n      - {{ provider: p1, pricing: {{ input: 0.5, output: 2 }} }}\n",
        keys(),
        providers(&[a.url(), b.url()], "")
    );
    let sira = Sira::start(&config, "");
    for _ in 0..6 {
        assert_eq!(served_by(&sira, KEY_A, &[]).await, "p1");
    }
    assert_eq!(a.requests().len(), 0);
    // Billed at the prices of the target that served, not the model's.
    let line = sira.wait_access_log(6).pop().unwrap();
    let (input, output) = (
        line["input_tokens"].as_f64().unwrap(),
        line["output_tokens"].as_f64().unwrap(),
    );
    let expected = (input * 0.5 + output * 2.0) / 1e6;
    let cost = line["cost_usd"].as_f64().unwrap();
    assert!((cost - expected).abs() < 1e-12 && cost > 0.0, "{line}");
}

#[tokio::test]
async fn lowest_latency_learns_which_target_answers_first() {
    let slow = MockProvider::start_with(MockConfig {
        hang: Some(Hang::For(Duration::from_millis(1500))),
        ..Default::default()
    });
    let fast = MockProvider::start();
    let config = format!(
        "{}{}models:\n  m:\n    route: lowest-latency\n    targets: [{{ provider: p0 }}, {{ provider: p1 }}]\n",
        keys(),
        providers(&[slow.url(), fast.url()], "")
    );
    let sira = Sira::start(&config, "");
    let mut fast_count = 0;
    for _ in 0..20 {
        if served_by(&sira, KEY_A, &[]).await == "p1" {
            fast_count += 1;
        }
    }
    assert!(fast_count >= 18, "the fast target took {fast_count} of 20");
}

#[tokio::test]
async fn a_canary_pinned_to_a_key_and_a_clients_own_choice() {
    let (main, canary) = (MockProvider::start(), MockProvider::start());
    let config = format!(
        "{}{}models:\n  m:\n    targets:\n      - {{ provider: p0, name: main, weight: 100 }}\n      - {{ provider: p1, name: canary, weight: 1, pinned_keys: [team-b] }}\n",
        keys(),
        providers(&[main.url(), canary.url()], "")
    );
    let sira = Sira::start(&config, "");
    for _ in 0..5 {
        assert_eq!(
            served_by(&sira, KEY_B, &[]).await,
            "p1",
            "team-b is pinned to the canary"
        );
    }
    let mut on_main = 0;
    for _ in 0..20 {
        if served_by(&sira, KEY_A, &[]).await == "p0" {
            on_main += 1;
        }
    }
    assert!(
        on_main >= 18,
        "team-a follows the weights: {on_main} of 20 on main"
    );

    // team-a may choose; the header never reaches the provider.
    canary.clear();
    for _ in 0..3 {
        assert_eq!(
            served_by(&sira, KEY_A, &[("x-sira-route", "canary")]).await,
            "p1"
        );
    }
    assert!(canary
        .requests()
        .iter()
        .all(|r| r.header("x-sira-route").is_none()));

    let refused = send(&sira, KEY_B, &[("x-sira-route", "main")]).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_allowed", "{body}");

    let unknown = send(&sira, KEY_A, &[("x-sira-route", "nowhere")]).await;
    assert_eq!(unknown.status(), 400);
    let body: Value = unknown.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no target named \"nowhere\""),
        "{body}"
    );
}
