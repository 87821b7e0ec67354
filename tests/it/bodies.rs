//! Request bodies: bounded, read once, forwarded byte for byte unless they must change,
//! large bodies and retries of large bodies.

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::support::{client, keys_section, Sira, KEY_A};

fn config() -> String {
    format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
  dead: {{ kind: openai, endpoints: ["http://127.0.0.1:1"], api_key: sk-dead }}
models:
  same-name:
    targets: [{{ provider: oai }}]
  renamed:
    targets: [{{ provider: oai, model: upstream-name }}]
  flaky:
    targets: [{{ provider: dead, weight: 1000 }}, {{ provider: oai, model: upstream-name }}]
    retry: {{ attempts: 2, backoff: 10ms }}
{}"#,
        keys_section()
    )
}

/// A chat request whose user message is `size` bytes long, with unusual spacing and key
/// order that a re-serialisation would not preserve.
fn big_body(model: &str, size: usize) -> String {
    format!(
        "{{ \"messages\" : [ {{\"content\": \"{}\", \"role\":\"user\"}} ],\n  \"model\":\"{model}\" , \"temperature\": 0.50 }}",
        "x".repeat(size)
    )
}

#[tokio::test]
async fn unchanged_bodies_are_forwarded_byte_for_byte() {
    let mock = MockProvider::start();
    let sira = Sira::start(&config(), &mock.url());
    let body = big_body("same-name", 100);
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests()[0].body, body.as_bytes());
}

#[tokio::test]
async fn renamed_model_changes_only_the_model() {
    let mock = MockProvider::start();
    let sira = Sira::start(&config(), &mock.url());
    let body = big_body("renamed", 100);
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = String::from_utf8(mock.requests()[0].body.to_vec()).unwrap();
    assert_eq!(
        sent,
        body.replace("\"model\":\"renamed\"", "\"model\":\"upstream-name\"")
    );
}

#[tokio::test]
async fn multi_megabyte_bodies_work() {
    let mock = MockProvider::start();
    let sira = Sira::start_with_server(&config(), &mock.url(), "  max_request_body: 16MiB\n");
    let body = big_body("renamed", 5 << 20);
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let up = &mock.requests()[0];
    assert_eq!(
        up.body.len(),
        body.len() + "upstream-name".len() - "renamed".len()
    );
    assert_eq!(
        up.header("content-length").unwrap(),
        up.body.len().to_string()
    );
}

#[tokio::test]
async fn bodies_over_64k_survive_a_retry_on_another_target() {
    let mock = MockProvider::start();
    let sira = Sira::start(&config(), &mock.url());
    let body = big_body("flaky", 300 << 10);
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let attempts = resp.headers()["x-sira-attempts"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(attempts.starts_with("2 (dead: "), "{attempts}");
    let up = &mock.requests()[0];
    let sent: Value = up.json();
    assert_eq!(
        sent["messages"][0]["content"].as_str().unwrap().len(),
        300 << 10
    );
    assert_eq!(sent["model"], "upstream-name");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_in_the_client_shape() {
    let mock = MockProvider::start();
    let sira = Sira::start_with_server(&config(), &mock.url(), "  max_request_body: 64KiB\n");
    // Declared length over the limit: refused before reading.
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .body(big_body("same-name", 100 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");

    // Chunked upload (no length): refused once the limit is passed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 8 << 10])).collect();
    let resp = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_A)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "request_too_large", "message": "request body is larger than the gateway's limit of 65536 bytes"}})
    );
    assert!(mock.requests().is_empty());
}
