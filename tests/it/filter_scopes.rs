//! Where operator filters attach and in what order they run, through the binary: a tenant's
//! filters for its keys and its token callers, a guardrail waited for where it stands in the
//! list, address filters before anything is answered locally; and redaction's modes,
//! patterns and restore of a whole answer.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::filters::guardrail;
use crate::support::{client, request, Sira, KEY_A, KEY_B};

const SECRET: &str = "a-test-hmac-secret-of-more-than-32-bytes";

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
}

fn sent_text(mock: &MockProvider, i: usize) -> Value {
    mock.requests()[i].json()["messages"][0]["content"].clone()
}

/// One OpenAI provider at `{mock}`, `gpt-4o` redacting emails into placeholders restored in
/// the answer, and `extra` sections (a cache) before the models.
pub(crate) fn redacting_config(extra: &str) -> String {
    format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
{extra}filters:
  pii: {{ kind: redact, patterns: [email], mode: placeholder, restore: true }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}], filters: [pii] }}
{}"#,
        crate::support::keys_section()
    )
}

/// A 400 whose error message is `message`.
async fn assert_refused(resp: reqwest::Response, message: &str) {
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], message, "{body}");
}

fn token(org: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": "https://auth.test", "aud": "sira", "sub": "carol",
        "exp": now + 600, "org": org});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_tenants_filters_run_for_its_keys_and_token_callers_after_a_keys_own() {
    let mock = MockProvider::start();
    let cfg = format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
filters:
  mask: {{ kind: redact, patterns: [email], mode: mask }}
  guard: {{ kind: deny, keywords: [project-x], message: not for acme }}
  cheaper: {{ kind: model-rewrite, rules: [{{ from: "gpt-4*", to: gpt-4o-mini }}] }}
  no-stars: {{ kind: deny, keywords: ["****************"], message: masked before the model's filter }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}] }}
  gpt-4o-mini: {{ targets: [{{ provider: oai }}] }}
  starless: {{ targets: [{{ provider: oai, model: gpt-4o }}], filters: [no-stars] }}
tenants:
  acme: {{ filters: [guard, cheaper] }}
  other: {{}}
auth:
  keys:
    - {{ name: team-a, hash: "{}", tenant: acme, filters: [mask] }}
    - {{ name: team-b, hash: "{}" }}
  jwt:
    issuer: https://auth.test
    audience: sira
    algorithms: [HS256]
    secret: "{SECRET}"
    claims: {{ subject: sub, tenant: org }}
"#,
        sira::auth::hash_key(KEY_A),
        sira::auth::hash_key(KEY_B)
    );
    let sira = Sira::start(&cfg, &mock.url());
    let call = |auth: String, text: &str| {
        client()
            .post(sira.url("/v1/chat/completions"))
            .bearer_auth(auth)
            .json(&chat(text))
            .send()
    };
    // A key of the tenant: the tenant's guard refuses, never sending.
    let resp = call(KEY_A.into(), "mail jane@example.com about project-x")
        .await
        .unwrap();
    assert_refused(resp, "not for acme").await;
    assert!(mock.requests().is_empty());
    // Its own mask runs, then the tenant's rewrite of the model.
    let resp = call(KEY_A.into(), "mail jane@example.com").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests()[0].json()["model"], "gpt-4o-mini");
    assert_eq!(sent_text(&mock, 0), format!("mail {}", "*".repeat(16)));
    // The model's filters run after the key's: its deny reads the masked address.
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "starless", "messages": [{"role": "user", "content": "mail jane@example.com"}]}))
        .send()
        .await
        .unwrap();
    assert_refused(resp, "masked before the model's filter").await;
    // A key outside the tenant: none of it.
    let resp = call(KEY_B.into(), "mail jane@example.com about project-x")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests()[1].json()["model"], "gpt-4o");
    assert_eq!(sent_text(&mock, 1), "mail jane@example.com about project-x");
    // A token of the tenant gets the tenant's filters (and no key's).
    let resp = call(token("acme"), "about project-x").await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = call(token("acme"), "mail jane@example.com").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests()[2].json()["model"], "gpt-4o-mini");
    assert_eq!(sent_text(&mock, 2), "mail jane@example.com");
    // A token of another tenant: none.
    let resp = call(token("other"), "about project-x").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests()[3].json()["model"], "gpt-4o");
    assert_eq!(
        sira.metric(r#"sira_filter_denied_total{key="team-a"}"#)
            .await,
        2.0
    );
}

/// What `sira check` says of `config`, which it must refuse.
fn refused(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sira.yaml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sira"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test]
async fn a_tenants_unknown_filter_fails_the_check_with_its_path() {
    let head = "providers:\n  oai: { kind: openai, endpoints: [\"http://127.0.0.1:9\"], api_key: sk-x }\nmodels:\n  gpt-4o: { targets: [{ provider: oai }] }\n";
    let text = refused(&format!("{head}filters:\n  bad: {{ kind: deny, patterns: ['(unclosed'] }}\ntenants:\n  acme: {{ filters: [nothing] }}\n"));
    assert!(text.contains("tenants.acme.filters[0]"), "{text}");
    assert!(text.contains("unknown filter \"nothing\""), "{text}");
    // A pattern that does not compile is named by its path, not passed over; on its own it
    // fails the check too, a custom redaction pattern as much as a guard's.
    assert!(text.contains("filters.bad"), "{text}");
    let text = refused(&format!("{head}filters:\n  pii: {{ kind: redact, patterns: [{{ name: emp, regex: \"EMP-[0-9\" }}] }}\n"));
    assert!(
        text.contains("filters.pii: pattern \"EMP-[0-9\" does not compile"),
        "{text}"
    );
}

#[tokio::test]
async fn a_guardrail_is_asked_where_it_stands_among_the_filters() {
    let mock = MockProvider::start();
    let (url, asked) = guardrail();
    let cfg = format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
filters:
  mask: {{ kind: redact, patterns: [email], mode: mask }}
  guard: {{ kind: webhook, url: "{url}", timeout: 2s }}
  after: {{ kind: deny, keywords: ["rewritten by the guardrail"], message: seen after the guardrail }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}], filters: [mask, guard, after] }}
  late-mask: {{ targets: [{{ provider: oai, model: gpt-4o }}], filters: [guard, mask] }}
{}"#,
        crate::support::keys_section()
    );
    let sira = Sira::start(&cfg, &mock.url());
    // The mask before the guardrail: it is asked about the masked text; the deny after it
    // reads the guardrail's rewrite and refuses it.
    let resp = request(&sira, "/v1/chat/completions")
        .json(&chat("rewrite me, jane@example.com"))
        .send()
        .await
        .unwrap();
    assert_refused(resp, "seen after the guardrail").await;
    let first = asked.lock().unwrap()[0]["request"]["messages"][0]["content"].clone();
    assert_eq!(first, format!("rewrite me, {}", "*".repeat(16)));
    assert!(mock.requests().is_empty());
    // The guardrail first: it sees the address, the provider never does.
    let mut late = chat("hello jane@example.com");
    late["model"] = json!("late-mask");
    let resp = request(&sira, "/v1/chat/completions")
        .json(&late)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let second = asked.lock().unwrap()[1]["request"]["messages"][0]["content"].clone();
    assert_eq!(second, "hello jane@example.com");
    assert_eq!(sent_text(&mock, 0), format!("hello {}", "*".repeat(16)));
}

#[tokio::test]
async fn an_address_filter_gates_what_sira_answers_itself() {
    let mock = MockProvider::start();
    let cfg = format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
  vllm: {{ kind: openai-compatible, endpoints: ["{{mock}}"] }}
filters:
  office: {{ kind: ip-allow, cidrs: [10.0.0.0/8] }}
  tiny: {{ kind: max-prompt-tokens, max: 1 }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}] }}
  local: {{ targets: [{{ provider: vllm, model: llama }}] }}
  local-bounded: {{ targets: [{{ provider: vllm, model: llama }}], filters: [tiny] }}
  office-model: {{ targets: [{{ provider: oai, model: gpt-4o }}], filters: [office] }}
auth:
  keys:
    - {{ name: team-a, hash: "{}", filters: [office] }}
    - {{ name: team-b, hash: "{}" }}
"#,
        sira::auth::hash_key(KEY_A),
        sira::auth::hash_key(KEY_B)
    );
    let sira = Sira::start(&cfg, &mock.url());
    let models = |key: &'static str| client().get(sira.url("/v1/models")).bearer_auth(key).send();
    let resp = models(KEY_A).await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ip_not_allowed", "{body}");
    // A token count sira answers itself (the provider cannot count): refused too.
    let count = |key: &'static str, model: &str| {
        client()
            .post(sira.url("/v1/messages/count_tokens"))
            .header("x-api-key", key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi there"}]}))
            .send()
    };
    assert_eq!(count(KEY_A, "local").await.unwrap().status(), 403);
    assert!(mock.requests().is_empty());
    // Another key lists what it may use: not a model whose own filter refuses its address.
    let resp = models(KEY_B).await.unwrap();
    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"gpt-4o"), "{list}");
    assert!(!ids.contains(&"office-model"), "{list}");
    let resp = count(KEY_B, "local").await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["input_tokens"].as_u64().unwrap() > 0, "{body}");
    // The model's body filters run on it as on a request the provider counts.
    assert_eq!(count(KEY_B, "local-bounded").await.unwrap().status(), 400);
    assert!(mock.requests().is_empty());
}

/// Every built-in pattern and a custom one, masked one `*` a character; `hash` the same
/// for the same value.
#[tokio::test]
async fn redaction_masks_every_pattern_and_hashes_alike_values_alike() {
    let mock = MockProvider::start();
    let cfg = format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
filters:
  every:
    kind: redact
    mode: mask
    patterns: [email, phone, credit-card, iban, ip, api-key, jwt, {{ name: employee-id, regex: "EMP-[0-9]{{6}}" }}]
  hashed: {{ kind: redact, patterns: [email], mode: hash, salt: a-salt-for-the-test }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}], filters: [every] }}
  hashed: {{ targets: [{{ provider: oai, model: gpt-4o }}], filters: [hashed] }}
{}"#,
        crate::support::keys_section()
    );
    let sira = Sira::start(&cfg, &mock.url());
    let values = [
        "jane.doe@example.com",
        "+1 415 555 0100",
        "4111 1111 1111 1111",
        "GB82 WEST 1234 5698 7654 32",
        "192.168.10.20",
        "2001:db8::8a2e:370:7334",
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
        "EMP-123456",
    ];
    let text: String = values.iter().map(|v| format!("<{v}> ")).collect();
    let resp = request(&sira, "/v1/chat/completions")
        .json(&chat(&text))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let masked: String = values
        .iter()
        .map(|v| format!("<{}> ", "*".repeat(v.chars().count())))
        .collect();
    assert_eq!(sent_text(&mock, 0), masked);

    let mut body = chat("from jane@example.com to bob@example.org, cc jane@example.com");
    body["model"] = json!("hashed");
    let resp = request(&sira, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = sent_text(&mock, 1);
    let sent = sent.as_str().unwrap();
    let hashes: Vec<&str> = sent
        .match_indices("[EMAIL:")
        .map(|(i, _)| &sent[i..i + 24])
        .collect();
    assert_eq!(hashes.len(), 3, "{sent}");
    for hash in &hashes {
        assert!(hash.ends_with(']'), "{sent}");
        assert!(hash[7..23].bytes().all(|b| b.is_ascii_hexdigit()), "{sent}");
    }
    assert_eq!(hashes[0], hashes[2]);
    assert_ne!(hashes[0], hashes[1]);
    assert!(!sent.contains("example"), "{sent}");
}

/// A whole JSON answer: the request's placeholders become its values again for the client,
/// and a value the model wrote is hidden from it.
#[tokio::test]
async fn a_whole_answer_gets_its_values_back_and_loses_the_models_own() {
    let provider =
        crate::raw::answering_chat("I wrote to [EMAIL_1] about [CARD_1]; call +1 415 555 0199.");
    let cfg = format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
filters:
  pii: {{ kind: redact, patterns: [email, credit-card, phone], mode: placeholder, restore: true }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}], filters: [pii] }}
{}"#,
        crate::support::keys_section()
    );
    let sira = Sira::start(&cfg, &provider.url);
    let resp = request(&sira, "/v1/chat/completions")
        .json(&chat(
            "Mail jane@example.com about card 4111 1111 1111 1111.",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "I wrote to jane@example.com about 4111 1111 1111 1111; call [PHONE_1].",
        "{body}"
    );
    assert_eq!(body["usage"]["total_tokens"], 14);
}

/// A stream whose events cut a placeholder and a new value at every byte, one request per
/// cut: the client gets the value back and the new one hidden, whatever the cut.
#[tokio::test]
async fn a_value_and_a_placeholder_split_between_events_at_any_byte_are_followed() {
    use crate::raw::{send, RawUpstream};
    const VALUE: &str = "bob@example.org";
    const PLACEHOLDER: &str = "[EMAIL_1]";
    let upstream = RawUpstream::start(|stream, index| {
        let cut = index % (VALUE.len() + 1);
        let held = cut % (PLACEHOLDER.len() + 1);
        let pieces = [
            format!("to {}", &PLACEHOLDER[..held]),
            format!("{} cc {}", &PLACEHOLDER[held..], &VALUE[..cut]),
            format!("{} today", &VALUE[cut..]),
        ];
        if !send(
            stream,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        ) {
            return false;
        }
        let chunk = |data: String| format!("{:x}\r\n{data}\r\n", data.len());
        for piece in pieces {
            let delta = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": piece},
                "finish_reason": null}]});
            if !send(stream, chunk(format!("data: {delta}\n\n")).as_bytes()) {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        let end = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":5,\"total_tokens\":14}}\n\ndata: [DONE]\n\n";
        send(stream, chunk(end.to_owned()).as_bytes()) && send(stream, b"0\r\n\r\n")
    });
    let sira = Sira::start(&redacting_config(""), &upstream.url);
    for cut in 0..=VALUE.len() {
        let body = json!({"model": "gpt-4o", "stream": true,
            "messages": [{"role": "user", "content": "write to jane@example.com"}]});
        let received =
            crate::support::send_receive(request(&sira, "/v1/chat/completions").json(&body)).await;
        assert!(received.complete, "cut {cut}: {}", received.text);
        let (text, done) =
            crate::translation::stream_text(crate::translation::Surface::Chat, &received.text);
        assert_eq!(
            text, "to jane@example.com cc [EMAIL_2] today",
            "cut {cut}: {}",
            received.text
        );
        assert!(!received.text.contains("bob@"), "cut {cut}");
        assert!(done, "cut {cut}");
    }
}

/// Filters that read the body as a tree share one parse between them, and a filter of
/// another kind between two of them still sees (and leaves) the body in list order.
#[tokio::test]
async fn tree_and_text_filters_run_in_list_order() {
    let mock = MockProvider::start();
    let cfg = format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
filters:
  pin: {{ kind: set-field, fields: {{ temperature: 0.2 }} }}
  mask: {{ kind: redact, patterns: [email], mode: mask }}
  strip: {{ kind: remove-field, fields: [user] }}
  no-jane: {{ kind: deny, keywords: ["jane@example.com"], message: no jane }}
  no-stars: {{ kind: deny, keywords: ["****************"], message: no stars }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}], filters: [pin, mask, strip, no-jane] }}
  strict: {{ targets: [{{ provider: oai, model: gpt-4o }}], filters: [pin, no-jane, mask] }}
  starless: {{ targets: [{{ provider: oai, model: gpt-4o }}], filters: [mask, pin, no-stars] }}
{}"#,
        crate::support::keys_section()
    );
    let sira = Sira::start(&cfg, &mock.url());
    let send = |model: &str| {
        let mut body = chat("mail jane@example.com");
        body["model"] = json!(model);
        body["user"] = json!("u-1");
        body["temperature"] = json!(1.5);
        request(&sira, "/v1/chat/completions").json(&body).send()
    };
    // The deny after the mask reads the masked text: allowed, edited by all three.
    let resp = send("gpt-4o").await.unwrap();
    assert_eq!(resp.status(), 200);
    let sent = mock.requests()[0].json();
    assert_eq!(sent["temperature"], 0.2, "{sent}");
    assert!(sent.get("user").is_none(), "{sent}");
    assert_eq!(
        sent["messages"][0]["content"],
        format!("mail {}", "*".repeat(16))
    );
    // Before the mask it reads the address.
    let resp = send("strict").await.unwrap();
    assert_refused(resp, "no jane").await;
    // A tree filter after the mask reads the masked body.
    let resp = send("starless").await.unwrap();
    assert_refused(resp, "no stars").await;
    assert_eq!(mock.requests().len(), 1);
}
