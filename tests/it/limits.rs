//! Limits and budgets through the real binary: per key, per tenant and per model, reserved
//! when a request is admitted and settled when it ends, refused with a 429 in the client's
//! shape, `retry-after` and OpenAI's `x-ratelimit-*` headers.

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::support::{client, Sira, KEY_A, KEY_B};

/// Two keys of one tenant, with the limits given (YAML flow mappings, or empty).
fn config(key_a: &str, key_b: &str, tenant: &str, model: &str) -> String {
    format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
models:
  gpt-4o:
    targets: [{{ provider: oai }}]
    pricing: {{ input: 1000.0, output: 1000.0 }}
    {model}
tenants:
  acme: {{ {tenant} }}
auth:
  keys:
    - {{ name: team-a, hash: "{}", tenant: acme, {key_a} }}
    - {{ name: team-b, hash: "{}", tenant: acme, {key_b} }}
"#,
        sira::auth::hash_key(KEY_A),
        sira::auth::hash_key(KEY_B)
    )
}

async fn chat(sira: &Sira, key: &str, knobs: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}));
    for (name, value) in knobs {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_keys_request_rate_is_limited_with_a_429_it_can_wait_out() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("limits: { requests_per_minute: 2 }", "", "", ""),
        &mock.url(),
    );
    for remaining in ["1", "0"] {
        let resp = chat(&sira, KEY_A, &[]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "2");
        assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], remaining);
        assert!(resp.headers().contains_key("x-ratelimit-reset-requests"));
    }
    let refused = chat(&sira, KEY_A, &[]).await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key team-a"),
        "{body}"
    );
    // Anthropic's shape on its surface; the other key is not limited by team-a's limit.
    let refused = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_A)
        .json(&json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(chat(&sira, KEY_B, &[]).await.status(), 200);
    assert_eq!(
        sira.metric("sira_rate_limited_total{key=\"team-a\",limit=\"requests_per_minute\"}")
            .await,
        2.0
    );
    assert_eq!(
        mock.requests().len(),
        3,
        "refused requests never reach the provider"
    );
}

#[tokio::test]
async fn a_tenant_limit_is_shared_by_its_keys() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("", "", "limits: { requests_per_minute: 3 }", ""),
        &mock.url(),
    );
    for key in [KEY_A, KEY_B, KEY_A] {
        assert_eq!(chat(&sira, key, &[]).await.status(), 200);
    }
    let refused = chat(&sira, KEY_B, &[]).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant acme"),
        "{body}"
    );
}

#[tokio::test]
async fn concurrent_requests_cannot_overrun_a_budget() {
    let mock = MockProvider::start();
    // $1000 per million tokens: a request reserves its prompt estimate plus max_tokens 10,
    // a little over 1.5 cents; a 5-cent budget admits three while all are in flight.
    let sira = Sira::start(
        &config("limits: { budget: { usd: 0.05, per: month } }", "", "", ""),
        &mock.url(),
    );
    // Long enough that all six are in flight together, however loaded the machine.
    let slow = [("x-mock-hang-ms", "2000")];
    let requests = (0..6).map(|_| chat(&sira, KEY_A, &slow));
    let statuses: Vec<u16> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, refused), (3, 3), "{statuses:?}");
    let body: Value = chat(&sira, KEY_A, &[]).await.json().await.unwrap();
    // Settled to what was used (the mock's usage is small): room again, or the quota code.
    assert!(
        body["choices"].is_array() || body["error"]["code"] == "insufficient_quota",
        "{body}"
    );
}

#[tokio::test]
async fn a_models_concurrency_limit_holds_whoever_calls() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("", "", "", "limits: { concurrent_requests: 1 }"),
        &mock.url(),
    );
    // Held long enough that the second surely comes while it runs, on a loaded machine too.
    let slow = chat(&sira, KEY_A, &[("x-mock-hang-ms", "3000")]);
    let second = async {
        // Once the slow one holds its place: the provider has it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while mock.requests().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        chat(&sira, KEY_B, &[]).await
    };
    let (first, second) = tokio::join!(slow, second);
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 429);
    let body: Value = second.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model gpt-4o"),
        "{body}"
    );
    // Once the first is over, the next gets through.
    assert_eq!(chat(&sira, KEY_B, &[]).await.status(), 200);
}

#[tokio::test]
async fn a_token_limit_reserves_the_output_cap() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("limits: { tokens_per_minute: 1000 }", "", "", ""),
        &mock.url(),
    );
    let ask = |max_tokens: u64| {
        client()
            .post(sira.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .json(&json!({"model": "gpt-4o", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let first = ask(900).await.unwrap();
    assert_eq!(first.status(), 200);
    // While in flight it held its prompt plus the 900 it may write: the header says so.
    let remaining: u64 = first.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining < 100, "{remaining}");
    // It used a few dozen tokens, not 900: settled, the rest came back, so another
    // request of the same size fits (it would not if the reservation had been kept).
    let resp = ask(900).await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    // A request larger than what is left waits.
    let refused = ask(990).await.unwrap();
    assert_eq!(refused.status(), 429);
}

#[tokio::test]
async fn sira_check_validates_limits_and_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let check = |yaml: &str| {
        let path = dir.path().join("sira.yaml");
        std::fs::write(&path, yaml).unwrap();
        crate::support::run_cli(&["check", "-c", path.to_str().unwrap()], "", dir.path())
    };
    let (code, out, err) = check(
        &config(
            "limits: { requests_per_minute: 2 }",
            "",
            "limits: { budget: { usd: 10, per: week } }",
            "limits: { concurrent_requests: 4 }",
        )
        .replace("{mock}", "http://127.0.0.1:9"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = check(
        &config("", "", "", "")
            .replacen("tenant: acme", "tenant: nobody", 1)
            .replace("{mock}", "http://127.0.0.1:9"),
    );
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("auth.keys[0].tenant"),
        "{out}{err}"
    );
    let (code, out, err) = check(
        &config(
            "limits: { requests_per_minute: 0 }",
            "",
            "limits: { budget: { usd: 5, per: year } }",
            "",
        )
        .replace("{mock}", "http://127.0.0.1:9"),
    );
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(
        all.contains("auth.keys[0].limits.requests_per_minute"),
        "{all}"
    );
    assert!(all.contains("tenants.acme.limits.budget.per"), "{all}");
}

#[tokio::test]
async fn admin_usage_shows_windows_spend_and_reservations() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config(
            "limits: { requests_per_minute: 10, budget: { usd: 5, per: day } }",
            "",
            "limits: { tokens_per_minute: 100000 }",
            "",
        ),
        &mock.url(),
    );
    assert_eq!(chat(&sira, KEY_A, &[]).await.status(), 200);
    let all = sira.admin_json("/admin/usage").await;
    let scopes: Vec<&str> = all["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["key team-a", "tenant acme"], "{all}");
    // The request settles in its last phase, just after its answer went out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let key = loop {
        let key = sira.admin_json("/admin/usage?key=team-a").await;
        if key["scopes"][0]["budget"]["reserved_usd"] == 0.0 || std::time::Instant::now() > deadline
        {
            break key;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let scope = &key["scopes"][0];
    assert_eq!(scope["requests_per_minute"]["limit"], 10);
    assert_eq!(scope["requests_per_minute"]["remaining"], 9, "{scope}");
    let budget = &scope["budget"];
    assert_eq!(budget["per"], "day");
    let spent = budget["spent_usd"].as_f64().unwrap();
    assert!(spent > 0.0, "the answer was priced and settled: {budget}");
    assert_eq!(budget["reserved_usd"], 0.0, "nothing in flight: {budget}");
    let tenant = sira.admin_json("/admin/usage?tenant=acme").await;
    assert_eq!(tenant["scopes"][0]["tokens_per_minute"]["limit"], 100000);
    let remaining = sira
        .metric("sira_budget_remaining_usd{scope=\"key team-a\"}")
        .await;
    assert!((remaining - (5.0 - spent)).abs() < 1e-6, "{remaining}");
}

/// A webhook receiver: every request's headers and body.
pub(crate) async fn receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then the body by its length.
                loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = text[..end].to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap_or(0));
                        if buf.len() >= end + 4 + length {
                            let body = buf[end + 4..end + 4 + length].to_vec();
                            store.lock().unwrap().push((head, body));
                            let _ = conn
                                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, got)
}

#[tokio::test]
async fn budget_alerts_are_signed_webhooks_fired_once() {
    use hmac::Mac;
    let mock = MockProvider::start();
    let (url, got) = receiver().await;
    let secret = "alert-signing-secret";
    let yaml = format!(
        "{}alerts:\n  webhooks: [{{ url: \"{url}\", secret: {secret} }}]\n  budget_thresholds: [50, 100]\n",
        config("limits: { budget: { usd: 0.04, per: day } }", "", "", "")
    );
    let sira = Sira::start(&yaml, &mock.url());
    // The first answer spends over half the budget; the next is refused; so is the third,
    // which alerts no more.
    assert_eq!(chat(&sira, KEY_A, &[]).await.status(), 200);
    assert_eq!(chat(&sira, KEY_A, &[]).await.status(), 429);
    assert_eq!(chat(&sira, KEY_A, &[]).await.status(), 429);
    let mut alerts = Vec::new();
    for _ in 0..500 {
        alerts = got.lock().unwrap().clone();
        if alerts.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(alerts);
    let alerts = got.lock().unwrap().clone();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let bodies: Vec<Value> = alerts
        .iter()
        .map(|(_, body)| serde_json::from_slice(body).unwrap())
        .collect();
    let threshold = bodies
        .iter()
        .find(|b| b["kind"] == "budget_threshold")
        .unwrap();
    assert_eq!(threshold["scope"], "key team-a");
    assert_eq!(threshold["threshold_percent"], 50);
    let refusing = bodies
        .iter()
        .find(|b| b["kind"] == "limit_refusing")
        .unwrap();
    assert_eq!(refusing["limit"], "budget");
    for (head, body) in &alerts {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let expected = format!(
            "x-sira-signature: sha256={}",
            hex::encode(mac.finalize().into_bytes())
        );
        assert!(head.contains(&expected), "{head}");
    }
}

/// `budget.on_exceed: cut`: a stream that outgrows what its budget had left ends there,
/// with the client format's own finish, and is settled to what was delivered. The
/// requests set no output cap, so admission reserved the model's `default_max_tokens` (10)
/// while the provider writes 200 events.
#[tokio::test]
async fn a_stream_past_its_budget_is_cut_with_a_proper_finish() {
    let mock = MockProvider::start();
    // $0.001 a token; each key has $0.05 a day.
    let budget = "limits: { budget: { usd: 0.05, per: day, on_exceed: cut } }";
    let sira = Sira::start(
        &config(budget, budget, "", "default_max_tokens: 10"),
        &mock.url(),
    );
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-mock-events", "200")
        .json(&json!({"model": "gpt-4o", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let received = crate::support::receive(resp).await;
    assert!(received.complete, "a cut is a clean end, not a broken one");
    let text = received.text;
    let chunks = text.matches("\"delta\":{\"content\"").count();
    assert!(
        (5..100).contains(&chunks),
        "{chunks} content chunks: {text}"
    );
    assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(text.matches("[DONE]").count(), 1, "{text}");
    // Settled to the provider's usage when it came in the same read as the events cut
    // off, else to the delivered events: never to nothing.
    let line = sira.wait_access_log(1).pop().unwrap();
    let cost = line["cost_usd"].as_f64().unwrap();
    assert!(cost >= 0.04, "{line}");
    let metrics = sira.metrics().await;
    assert!(
        metrics.contains(r#"sira_rate_limited_total{key="team-a",limit="budget_cut"} 1"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("rate_limited"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(chat(&sira, KEY_A, &[]).await.status(), 429);

    // The other key on Gemini's surface (translated to OpenAI): Gemini's own finish.
    let resp = client()
        .post(sira.url("/v1beta/models/gpt-4o:streamGenerateContent?alt=sse"))
        .header("x-goog-api-key", KEY_B)
        .header("x-mock-events", "200")
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let received = crate::support::receive(resp).await;
    assert!(received.complete);
    let text = received.text;
    let parts = text.matches("\"text\"").count();
    assert!((5..100).contains(&parts), "{parts}: {text}");
    let last = text.trim_end().rsplit("data: ").next().unwrap();
    assert!(last.contains("\"finishReason\":\"MAX_TOKENS\""), "{text}");
}

/// A fallback entry's own limits hold for requests that reach it as a fallback: it serves
/// while they admit the request, and is passed over (a 429 when nothing else is left) once
/// they refuse; its spend is settled like any entry's.
#[tokio::test]
async fn a_fallback_model_is_tried_only_within_its_own_limits() {
    let mock = MockProvider::start();
    let body = format!(
        r#"providers:
  dead: {{ kind: openai, endpoints: ["http://127.0.0.1:1"], api_key: sk-a, timeouts: {{ connect: 500ms }} }}
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
models:
  cheap:
    targets: [{{ provider: dead }}]
    fallbacks: [dear]
  dear:
    targets: [{{ provider: oai, model: gpt-4o }}]
    limits: {{ requests_per_minute: 2 }}
auth:
  keys:
    - {{ name: team-a, hash: "{}" }}
"#,
        sira::auth::hash_key(KEY_A)
    );
    let sira = Sira::start(&body, &mock.url());
    let ask = || async {
        client()
            .post(sira.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .json(&json!({"model": "cheap", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    };
    for _ in 0..2 {
        assert_eq!(ask().await.status(), 200);
    }
    let refused = ask().await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(
        mock.requests().len(),
        2,
        "the third never reached the fallback"
    );
    let usage = sira.admin_json("/admin/usage?model=dear").await;
    assert_eq!(
        usage["scopes"][0]["requests_per_minute"]["remaining"], 0,
        "{usage}"
    );
}
