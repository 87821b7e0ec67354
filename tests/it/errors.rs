//! CONTRACT.md's error table, in each surface's shape; retries and fallbacks.

use serde_json::{json, Value};
use sira_mock::{MockConfig, MockProvider};

use crate::support::{client, keys_section, start_standard, Sira, KEY_A};

async fn post(sira: &Sira, path: &str, body: &str) -> (u16, Value) {
    let resp = client()
        .post(sira.url(path))
        .bearer_auth(KEY_A)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn malformed_requests_get_400_in_the_surface_shape() {
    let (mock, sira) = start_standard();
    let (status, body) = post(&sira, "/v1/chat/completions", "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = post(&sira, "/v1/messages", "[]").await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = post(&sira, "/v1/chat/completions", r#"{"messages":[]}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "model");
    let (status, body) = post(&sira, "/v1beta/models/flash:generateContent", "").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn unknown_models_are_404_on_openai_and_400_on_anthropic() {
    let (_mock, sira) = start_standard();
    let (status, body) = post(
        &sira,
        "/v1/chat/completions",
        r#"{"model":"nope","messages":[]}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(
        body["error"]["message"],
        "The model `nope` does not exist or you do not have access to it."
    );
    let (status, body) = post(
        &sira,
        "/v1/messages",
        r#"{"model":"nope","max_tokens":1,"messages":[]}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let (_mock, sira) = start_standard();
    let (status, body) = post(&sira, "/v1/completions", "{}").await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/completions"));
    let resp = client()
        .get(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
}

#[tokio::test]
async fn upstream_error_responses_are_relayed_with_their_status() {
    let (_mock, sira) = start_standard();
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-mock-status", "429")
        .header("x-mock-retry-after", "7")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    let recorded: Value = serde_json::from_slice(
        sira_mock::fixture_bytes("openai/error_429_rate_limit_exceeded.json").unwrap(),
    )
    .unwrap();
    assert_eq!(body, recorded);

    let resp = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_A)
        .header("x-mock-status", "529")
        .json(&json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 529);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
}

fn failing_config() -> String {
    format!(
        r#"providers:
  dead: {{ kind: openai, endpoints: ["http://127.0.0.1:1"], api_key: sk-a, timeouts: {{ connect: 500ms }} }}
  slow: {{ kind: anthropic, endpoints: ["{{mock}}"], api_key: sk-b, timeouts: {{ first_byte: 300ms }} }}
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-c }}
models:
  gone: {{ targets: [{{ provider: dead }}] }}
  hangs: {{ targets: [{{ provider: slow }}] }}
  with-fallback:
    targets: [{{ provider: dead }}]
    fallbacks: [backup]
  backup: {{ targets: [{{ provider: oai, model: backup-model }}] }}
{}"#,
        keys_section()
    )
}

#[tokio::test]
async fn unreachable_upstreams_are_502_and_slow_ones_504() {
    let mock = MockProvider::start();
    let sira = Sira::start(&failing_config(), &mock.url());
    let (status, body) = post(
        &sira,
        "/v1/chat/completions",
        r#"{"model":"gone","messages":[]}"#,
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "upstream_error");
    let resp = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_A)
        .header("x-mock-hang-ms", "3000")
        .json(&json!({"model": "hangs", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "timeout_error");
    let log = sira.wait_access_log(2);
    assert_eq!(log[0]["error_class"], "upstream");
    assert_eq!(log[1]["error_class"], "timeout");
}

#[tokio::test]
async fn fallbacks_serve_when_every_target_failed_before_the_first_byte() {
    let mock = MockProvider::start();
    let sira = Sira::start(&failing_config(), &mock.url());
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "with-fallback", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sira-provider"], "oai");
    assert_eq!(resp.headers()["x-sira-model"], "backup-model");
    assert_eq!(
        resp.headers()["x-sira-attempts"],
        "2 (dead: error, oai: ok)"
    );
    assert_eq!(mock.requests()[0].json()["model"], "backup-model");
}

#[tokio::test]
async fn provider_5xx_moves_on_to_the_next_target() {
    let broken = MockProvider::start_with(MockConfig {
        status: Some(503),
        ..MockConfig::default()
    });
    let healthy = MockProvider::start();
    let config = format!(
        "providers:\n  a: {{ kind: openai, endpoints: [\"{}\"], api_key: sk-a }}\n  b: {{ kind: openai, endpoints: [\"{}\"], api_key: sk-b }}\nmodels:\n  m:\n    targets: [{{ provider: a, weight: 100 }}, {{ provider: b }}]\n    retry: {{ attempts: 2, backoff: 10ms }}\n{}",
        broken.url(),
        healthy.url(),
        keys_section()
    );
    let sira = Sira::start(&config, "");
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-sira-attempts"],
        "2 (a: status_503, b: ok)"
    );
    assert_eq!((broken.requests().len(), healthy.requests().len()), (1, 1));
    let retried = sira
        .metric(&format!(
            "sira_upstream_attempts_total{{endpoint=\"{}\",outcome=\"retried\",provider=\"a\"}}",
            broken.url()
        ))
        .await;
    assert_eq!(retried, 1.0);
}
