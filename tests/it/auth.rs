//! Client API keys: every header placement, 401/403 in each surface's shape.

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::support::{client, standard_config, Sira, KEY_A, KEY_B};

fn start() -> (MockProvider, Sira) {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    (mock, sira)
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]})
}

#[tokio::test]
async fn keys_are_accepted_in_every_sdk_placement() {
    let (_mock, sira) = start();
    let c = client();
    let url = sira.url("/v1/chat/completions");
    let placements = [
        c.post(&url).bearer_auth(KEY_A),
        c.post(&url).header("x-api-key", KEY_A),
        c.post(&url).header("x-goog-api-key", KEY_A),
        c.post(format!("{url}?key={KEY_A}")),
    ];
    for request in placements {
        let resp = request.json(&chat()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let log = sira.wait_access_log(4);
    assert!(log.iter().all(|l| l["key"] == "team-a"));
}

#[tokio::test]
async fn missing_and_wrong_keys_get_401_in_the_surface_shape() {
    let (mock, sira) = start();
    let openai = client()
        .post(sira.url("/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 401);
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["code"], "missing_api_key");

    let anthropic = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", "sk-wrong")
        .json(&json!({"model": "claude", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic.status(), 401);
    let body: Value = anthropic.json().await.unwrap();
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid API key"}})
    );

    let gemini = client()
        .post(sira.url("/v1beta/models/flash:generateContent"))
        .header("x-goog-api-key", "sk-wrong")
        .json(&json!({"contents": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(gemini.status(), 401);
    let body: Value = gemini.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["code"], 401);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn keys_are_limited_to_their_models() {
    let (mock, sira) = start();
    let ok = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_B)
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let wildcard_ok = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_B)
        .json(&json!({"model": "anthropic/claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(wildcard_ok.status(), 200);
    let denied = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_B)
        .json(&json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn gateways_without_keys_are_open() {
    let mock = MockProvider::start();
    let config = "providers:\n  oai: { kind: openai, endpoints: [\"{mock}\"], api_key: sk-up }\nmodels:\n  m: { targets: [{ provider: oai }] }\n";
    let sira = Sira::start(config, &mock.url());
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sira.wait_access_log(1)[0]["key"], "anonymous");
}
