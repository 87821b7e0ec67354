//! Client API keys: every header placement, 401/403 in each surface's shape.

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::support::{client, start_standard, Sira, KEY_A, KEY_B};

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]})
}

#[tokio::test]
async fn keys_are_accepted_in_every_sdk_placement() {
    let (_mock, sira) = start_standard();
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
    let (mock, sira) = start_standard();
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
    let (mock, sira) = start_standard();
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

#[tokio::test]
async fn an_open_loopback_gateway_refuses_what_a_web_page_could_send() {
    let mock = MockProvider::start();
    let config = "providers:\n  oai: { kind: openai, endpoints: [\"{mock}\"], api_key: sk-up }\nmodels:\n  gpt-4o: { targets: [{ provider: oai }] }\n";
    let sira = Sira::start(config, &mock.url());
    let url = sira.url("/v1/chat/completions");
    // A local program: JSON to a loopback name.
    let resp = client().post(&url).json(&chat()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // A page's "simple" cross-site POST: no preflight, so not JSON.
    let resp = client()
        .post(&url)
        .header("content-type", "text/plain")
        .body(chat().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    let resp = client()
        .post(&url)
        .header("host", "attacker.example")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loopback"),
        "{body}"
    );
    assert_eq!(
        mock.requests().len(),
        1,
        "refused requests never reach the provider"
    );
}

#[tokio::test]
async fn a_gateway_reachable_beyond_loopback_must_authenticate_or_say_it_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let check = |yaml: &str| {
        let path = dir.path().join("sira.yaml");
        std::fs::write(&path, yaml).unwrap();
        let (code, out, err) =
            crate::support::run_cli(&["check", "-c", path.to_str().unwrap()], "", dir.path());
        (code, format!("{out}{err}"))
    };
    let base = "providers:\n  oai: { kind: openai, endpoints: [\"http://127.0.0.1:9\"], api_key: sk-up }\n";
    let (code, out) = check(&format!("server: {{ listen: [\"0.0.0.0:8080\"] }}\n{base}"));
    assert_ne!(code, 0);
    assert!(
        out.contains("auth: 0.0.0.0:8080 is reachable beyond loopback"),
        "{out}"
    );
    let (code, out) = check(&format!(
        "server: {{ listen: [\"0.0.0.0:8080\"] }}\nauth: {{ mode: open }}\n{base}"
    ));
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(&format!("server: {{ admin: \"0.0.0.0:9901\" }}\n{base}"));
    assert_ne!(code, 0);
    assert!(out.contains("server.admin_token"), "{out}");
}
