//! Who shares a cached answer (a key, its tenant, everyone with `shared: true`), the models
//! whose answers are never kept (`cache: off`, `enabled: false`), and what eviction does to
//! a look-up: an answer evicted is asked of the provider again.

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::cache::header;
use crate::support::{client, Sira, KEY_A, KEY_B};

const KEY_C: &str = "sk-sira-test-c-0123456789abcdef";
const KEY_D: &str = "sk-sira-test-d-0123456789abcdef";

fn config(cache: &str) -> String {
    format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
cache:
{cache}filters:
  tag: {{ kind: headers, request: {{ set: {{ x-team: d }} }} }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}] }}
  everyone: {{ targets: [{{ provider: oai, model: gpt-4o }}], cache: {{ shared: true }} }}
  never: {{ targets: [{{ provider: oai, model: gpt-4o }}], cache: off }}
  disabled: {{ targets: [{{ provider: oai, model: gpt-4o }}], cache: {{ enabled: false }} }}
tenants:
  acme: {{}}
auth:
  keys:
    - {{ name: team-a, hash: "{}", tenant: acme }}
    - {{ name: team-b, hash: "{}" }}
    - {{ name: team-c, hash: "{}", tenant: acme }}
    - {{ name: team-d, hash: "{}", filters: [tag] }}
"#,
        sira::auth::hash_key(KEY_A),
        sira::auth::hash_key(KEY_B),
        sira::auth::hash_key(KEY_C),
        sira::auth::hash_key(KEY_D)
    )
}

/// The `x-sira-cache` header of one question, and its answer's text.
async fn ask(sira: &Sira, key: &str, model: &str, question: &str) -> (String, Value) {
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": question}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cache = header(&resp, "x-sira-cache");
    let body: Value = resp.json().await.unwrap();
    (cache, body["choices"][0]["message"]["content"].clone())
}

/// An answer is stored once it went out: waits until `n` are.
async fn stored(sira: &Sira, n: f64) {
    for _ in 0..100 {
        if sira
            .metric("sira_cache_requests_total{result=\"store\"}")
            .await
            >= n
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{n} answers were never stored");
}

#[tokio::test]
async fn answers_are_shared_within_a_tenant_or_by_everyone_and_never_kept_when_off() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("  memory: { capacity: 1MiB, ttl: 1m }\n"),
        &mock.url(),
    );
    assert_eq!(ask(&sira, KEY_A, "gpt-4o", "q1").await.0, "miss");
    stored(&sira, 1.0).await;
    // Another key of the tenant shares it; a key outside does not.
    assert_eq!(ask(&sira, KEY_C, "gpt-4o", "q1").await.0, "hit");
    assert_eq!(ask(&sira, KEY_B, "gpt-4o", "q1").await.0, "miss");
    assert_eq!(mock.requests().len(), 2);
    // `shared: true`: one answer for every caller.
    assert_eq!(ask(&sira, KEY_B, "everyone", "q2").await.0, "miss");
    stored(&sira, 3.0).await;
    assert_eq!(ask(&sira, KEY_A, "everyone", "q2").await.0, "hit");
    assert_eq!(mock.requests().len(), 3);
    // Not with a caller whose key has filters: its requests are not the others'.
    assert_eq!(ask(&sira, KEY_D, "everyone", "q2").await.0, "miss");
    assert_eq!(mock.requests()[3].header("x-team"), Some("d"));
    stored(&sira, 4.0).await;
    assert_eq!(ask(&sira, KEY_D, "everyone", "q2").await.0, "hit");
    assert_eq!(mock.requests().len(), 4);
    // Off either way: no look-up, every request goes to the provider.
    for model in ["never", "disabled"] {
        for _ in 0..2 {
            assert_eq!(ask(&sira, KEY_A, model, "q3").await.0, "-", "{model}");
        }
    }
    assert_eq!(mock.requests().len(), 8);
}

#[tokio::test]
async fn an_evicted_answer_is_asked_of_the_provider_again() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("  memory: { capacity: 32KiB, ttl: 1m }\n  max_entry: 8KiB\n"),
        &mock.url(),
    );
    let question = |i: usize| format!("question {i} {}", "x".repeat(600));
    let mut answers = Vec::new();
    for i in 0..80 {
        answers.push(ask(&sira, KEY_A, "gpt-4o", &question(i)).await.1);
    }
    stored(&sira, 80.0).await;
    assert_eq!(mock.requests().len(), 80);
    // More answers than 32 KiB holds: not all of them were kept, and each one that was
    // not is asked of the provider again.
    let mut misses = 0;
    for (i, answer) in answers.iter().enumerate() {
        let (cache, again) = ask(&sira, KEY_A, "gpt-4o", &question(i)).await;
        match cache.as_str() {
            "hit" => assert_eq!(&again, answer),
            "miss" => misses += 1,
            other => panic!("{other}"),
        }
    }
    assert!(misses > 0, "all 80 answers stayed in 32 KiB");
    assert_eq!(mock.requests().len(), 80 + misses);
    let bytes = sira.metric("sira_cache_bytes").await;
    assert!(bytes > 0.0 && bytes <= 32.0 * 1024.0, "{bytes}");
}

/// A kept answer is the provider's, before the client-side filters: a replay restores the
/// values of the request it answers, not of the one that filled it. Two prompts that differ
/// only in a redacted value are one request to the provider, and one entry.
#[tokio::test]
async fn a_replayed_answer_gets_the_values_of_the_request_it_answers() {
    let provider = crate::raw::answering_chat("Sent to [EMAIL_1].");
    let cfg =
        crate::filter_scopes::redacting_config("cache:\n  memory: { capacity: 1MiB, ttl: 1m }\n");
    let sira = Sira::start(&cfg, &provider.url);
    let (cache, text) = ask(&sira, KEY_A, "gpt-4o", "Mail jane@example.com").await;
    assert_eq!(
        (cache.as_str(), text),
        ("miss", json!("Sent to jane@example.com."))
    );
    stored(&sira, 1.0).await;
    let (cache, text) = ask(&sira, KEY_A, "gpt-4o", "Mail bob@example.org").await;
    assert_eq!(
        (cache.as_str(), text),
        ("hit", json!("Sent to bob@example.org."))
    );
    assert_eq!(provider.requests(), 1);
}

/// The same for a stream: it is kept as the provider sent it, placeholders and all, and a
/// replay restores the values of the request it answers, event by event.
#[tokio::test]
async fn a_replayed_stream_gets_the_values_of_the_request_it_answers() {
    use crate::translation::{stream_text, Surface};
    let provider = crate::filters::streaming_provider(&["Sent to [EMA", "IL_1] today."]);
    let cfg =
        crate::filter_scopes::redacting_config("cache:\n  memory: { capacity: 1MiB, ttl: 1m }\n");
    let sira = Sira::start(&cfg, &provider.url);
    for (address, expected) in [("jane@example.com", "miss"), ("bob@example.org", "hit")] {
        let resp = crate::support::request(&sira, "/v1/chat/completions")
            .json(&json!({"model": "gpt-4o", "stream": true,
                "messages": [{"role": "user", "content": format!("Mail {address}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-sira-cache"), expected, "{address}");
        let received = crate::support::receive(resp).await;
        assert!(received.complete, "{address}");
        let (text, done) = stream_text(Surface::Chat, &received.text);
        assert_eq!(text, format!("Sent to {address} today."));
        assert!(done, "{address}");
        stored(&sira, 1.0).await;
    }
    assert_eq!(provider.requests(), 1);
}
