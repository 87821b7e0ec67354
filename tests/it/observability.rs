//! Admin listener, metrics, access log, response headers.

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::support::{client, standard_config, Sira, KEY_A};

#[tokio::test]
async fn admin_endpoints() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let c = client();
    assert_eq!(
        c.get(sira.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(sira.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let config: Value = c
        .get(sira.admin_url("/admin/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let on_disk = std::fs::read(&sira.config_path).unwrap();
    assert_eq!(
        config["sha256"],
        sira::auth::hash_key(std::str::from_utf8(&on_disk).unwrap()).trim_start_matches("sha256:")
    );
    assert_eq!(config["keys"], json!(["team-a", "team-b"]));
    let text = config.to_string();
    for secret in [
        "sk-upstream-openai",
        "sk-upstream-anthropic",
        KEY_A,
        &sira::auth::hash_key(KEY_A),
    ] {
        assert!(!text.contains(secret), "/admin/config leaks {secret}");
    }
    assert_eq!(
        c.get(sira.admin_url("/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn admin_token_protects_admin_routes_only() {
    let mock = MockProvider::start();
    let sira = Sira::start_with_server(
        &standard_config(),
        &mock.url(),
        "  admin_token: s3cret-admin\n",
    );
    let c = client();
    assert_eq!(
        c.get(sira.admin_url("/admin/config"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.post(sira.admin_url("/admin/reload"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let ok = c
        .get(sira.admin_url("/admin/config"))
        .bearer_auth("s3cret-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        c.get(sira.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn metrics_and_access_log_describe_each_request() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-request-id", "client-chosen-id-1")
        .header("x-mock-input-tokens", "5")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-chosen-id-1");
    let overhead_us: u64 = resp.headers()["x-sira-overhead-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead_us < 5_000_000, "{overhead_us}");
    resp.text().await.unwrap();
    let generated = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_A)
        .json(&json!({"model": "nope", "max_tokens": 1, "messages": []}))
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("req_") && id.len() > 10, "{id}");

    let log = sira.wait_access_log(2);
    let first = &log[0];
    assert_eq!(first["request_id"], "client-chosen-id-1");
    assert_eq!(first["key"], "team-a");
    assert_eq!(first["surface"], "openai");
    assert_eq!(first["model"], "gpt-4o");
    assert_eq!(first["provider"], "oai");
    assert_eq!(first["upstream_model"], "gpt-4o-2024-08-06");
    assert_eq!(first["status"], 200);
    assert_eq!(first["stream"], true);
    assert_eq!(first["input_tokens"], 5);
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(first["ttfb_ms"].as_f64().unwrap() <= first["duration_ms"].as_f64().unwrap());
    assert_eq!(log[1]["request_id"], id.as_str());
    assert_eq!(log[1]["status"], 400);
    assert_eq!(log[1]["surface"], "anthropic");

    let metrics = sira.metrics().await;
    for name in [
        "sira_requests_total{model=\"gpt-4o\",provider=\"oai\",status=\"200\",surface=\"openai\"} 1",
        "sira_requests_total{model=\"\",provider=\"\",status=\"400\",surface=\"anthropic\"} 1",
        "sira_request_duration_seconds_count{model=\"gpt-4o\",provider=\"oai\",surface=\"openai\"} 1",
        "sira_time_to_first_byte_seconds_count{model=\"gpt-4o\",provider=\"oai\"} 1",
        "sira_active_streams 0",
        "sira_overhead_seconds_count{surface=\"openai\"} 1",
    ] {
        assert!(metrics.contains(name), "missing `{name}` in\n{metrics}");
    }
    let attempts = format!(
        "sira_upstream_attempts_total{{endpoint=\"{}\",outcome=\"ok\",provider=\"oai\"}} 1",
        mock.url()
    );
    assert!(metrics.contains(&attempts), "{metrics}");
    assert!(metrics.contains("sira_config_info{sha256=\""));
}

#[tokio::test]
async fn header_filters_edit_upstream_requests_and_client_responses() {
    let mock = MockProvider::start();
    let config = format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-up }}
filters:
  tag: {{ kind: headers, request: {{ set: {{ x-team: platform }}, remove: [x-debug] }}, response: {{ set: {{ cache-control: no-store }} }} }}
  key-tag: {{ kind: headers, request: {{ set: {{ x-key-filter: yes }} }} }}
models:
  m: {{ targets: [{{ provider: oai }}], filters: [tag] }}
auth:
  keys:
    - {{ name: team-a, hash: "{}", filters: [key-tag] }}
"#,
        sira::auth::hash_key(KEY_A)
    );
    let sira = Sira::start(&config, &mock.url());
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-debug", "1")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let up = &mock.requests()[0];
    assert_eq!(up.header("x-team"), Some("platform"));
    assert_eq!(up.header("x-key-filter"), Some("yes"));
    assert_eq!(up.header("x-debug"), None);
}
