//! Secrets never leave: sira started with known secrets of every kind (provider keys, client
//! keys, the admin token, a JWT secret, Redis passwords, a guardrail's token, a redaction
//! salt), every class of error provoked, and then neither a secret nor its last 8
//! characters may appear in the logs, the access log, the metrics, the admin API, `sira
//! check`'s output or any response.

use std::time::Duration;

use serde_json::json;
use sira_mock::MockProvider;

use crate::support::{client, run_cli_with_env, Sira, KEY_A};

const PROVIDER_KEY: &str = "sk-upstream-SECRET-0a1b2c3d4e5f";
const BACKUP_KEY: &str = "sk-backup-SECRET-9z8y7x6w5v4u";
const ADMIN_TOKEN: &str = "admin-SECRET-token-q1w2e3r4t5";
const JWT_SECRET: &str = "jwt-SECRET-hs256-key-of-32-bytes-m9n8b7";
const REDIS_PASSWORD: &str = "redis-SECRET-pw-k5j4h3g2";
const GUARD_TOKEN: &str = "guard-SECRET-token-p0o9i8u7";
const SALT: &str = "salt-SECRET-l1k2j3h4g5";

fn secrets() -> Vec<&'static str> {
    vec![
        PROVIDER_KEY,
        BACKUP_KEY,
        ADMIN_TOKEN,
        JWT_SECRET,
        REDIS_PASSWORD,
        GUARD_TOKEN,
        SALT,
        KEY_A,
    ]
}

/// Fails the test naming where, if `text` holds a secret or its last 8 characters.
#[track_caller]
fn clean(place: &str, text: &str) {
    for secret in secrets() {
        let tail = &secret[secret.len() - 8..];
        assert!(
            !text.contains(secret) && !text.contains(tail),
            "{place} holds {secret:?} (or its last 8 characters): {text}"
        );
    }
}

fn config(mock: &str) -> String {
    // A Redis nobody listens on: its errors are logged, with a password in the URL.
    let dead_redis = format!(
        "redis://:{REDIS_PASSWORD}@127.0.0.1:{}/0",
        crate::support::free_port()
    );
    let dead = format!("http://127.0.0.1:{}", crate::support::free_port());
    format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{mock}"], api_key: "${{OPENAI_KEY}}" }}
  gone: {{ kind: openai, endpoints: ["{dead}"], api_key: "${{BACKUP_KEY}}" }}
filters:
  pii: {{ kind: redact, patterns: [email], mode: hash, salt: "${{REDACT_SALT}}" }}
  guard: {{ kind: webhook, url: "{dead}/check", timeout: 200ms, on_error: allow, headers: {{ authorization: "Bearer ${{GUARD_TOKEN}}" }} }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}], filters: [pii, guard], pricing: {{ input: 1, output: 1 }} }}
  unreachable: {{ targets: [{{ provider: gone }}] }}
auth:
  keys:
    - {{ name: team-a, hash: "{hash}", limits: {{ requests_per_minute: 1000, budget: {{ usd: 100, per: month }} }} }}
  jwt:
    issuer: https://issuer.example
    audience: sira
    algorithms: [HS256]
    secret: "${{JWT_SECRET}}"
limits:
  store: {{ redis: "{dead_redis}", sync: 100ms, on_unavailable: local, timeout: 100ms }}
cache:
  memory: {{ capacity: 1MiB }}
  redis: {{ url: "{dead_redis}", timeout: 50ms }}
responses_store:
  redis: {{ url: "{dead_redis}", timeout: 100ms }}
"#,
        hash = sira::auth::hash_key(KEY_A)
    )
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("OPENAI_KEY", PROVIDER_KEY),
        ("BACKUP_KEY", BACKUP_KEY),
        ("JWT_SECRET", JWT_SECRET),
        ("GUARD_TOKEN", GUARD_TOKEN),
        ("REDACT_SALT", SALT),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
    ]
}

/// A response as text: status, headers and body.
async fn seen(resp: reqwest::Response) -> String {
    let mut text = format!("{}\n", resp.status());
    for (name, value) in resp.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text.push_str(&resp.text().await.unwrap_or_default());
    text
}

#[tokio::test]
async fn no_secret_reaches_logs_metrics_the_admin_api_check_or_any_response() {
    let mock = MockProvider::start();
    let sira = Sira::start_with_env(
        &config("{mock}"),
        &mock.url(),
        &format!("  admin_token: {ADMIN_TOKEN}\n"),
        &env(),
    );
    let chat = |key: &str, model: &str| {
        client()
            .post(sira.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(
                &json!({"model": model, "messages": [{"role": "user", "content": "mail a@b.co"}]}),
            )
    };
    let mut answers = Vec::new();
    // Served; a near-miss and a far-miss key; no key; an unknown model; bad JSON; the
    // provider refusing sira's key, failing, unreachable; a forged JWT; a stream.
    answers.push(seen(chat(KEY_A, "gpt-4o").send().await.unwrap()).await);
    let near = format!("{}x", &KEY_A[..KEY_A.len() - 1]);
    answers.push(seen(chat(&near, "gpt-4o").send().await.unwrap()).await);
    answers.push(seen(chat("nothing-like-it", "gpt-4o").send().await.unwrap()).await);
    answers.push(
        seen(
            client()
                .post(sira.url("/v1/chat/completions"))
                .body("{}")
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    answers.push(seen(chat(KEY_A, "no-such-model").send().await.unwrap()).await);
    answers.push(
        seen(
            client()
                .post(sira.url("/v1/chat/completions"))
                .bearer_auth(KEY_A)
                .body("{not json")
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    for status in ["401", "403", "500", "429"] {
        answers.push(
            seen(
                chat(KEY_A, "gpt-4o")
                    .header("x-mock-status", status)
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        );
    }
    answers.push(seen(chat(KEY_A, "unreachable").send().await.unwrap()).await);
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwiYXVkIjoic2lyYSIsInN1YiI6Im1hbGxvcnkiLCJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJlLW9mLW5vYm9keQ";
    answers.push(seen(chat(forged, "gpt-4o").send().await.unwrap()).await);
    let stream = chat(KEY_A, "gpt-4o").header("x-mock-fail-after", "2").json(
        &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    );
    answers.push(seen(stream.send().await.unwrap()).await);
    // The admin API: without the token, with a wrong one, with it.
    for path in [
        "/admin/config",
        "/admin/upstreams",
        "/admin/usage?key=team-a",
        "/metrics",
    ] {
        for token in [None, Some("wrong-token"), Some(ADMIN_TOKEN)] {
            let mut get = client().get(sira.admin_url(path));
            if let Some(token) = token {
                get = get.bearer_auth(token);
            }
            answers.push(seen(get.send().await.unwrap()).await);
        }
    }
    answers.push(
        seen(
            client()
                .post(sira.admin_url("/admin/reload"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    // Long enough for the limit store's and the cache's Redis to fail and be logged.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for (i, answer) in answers.iter().enumerate() {
        clean(&format!("response {i}"), answer);
    }
    // The provider did get its key: the test would prove nothing if no secret was in use.
    assert!(mock
        .requests()
        .iter()
        .any(|r| r.header("authorization") == Some(&format!("Bearer {PROVIDER_KEY}"))));
    let stderr = sira.stderr();
    assert!(!stderr.is_empty());
    clean("the log", &stderr);
    clean(
        "the access log",
        &std::fs::read_to_string(sira.dir.path().join("access.log")).unwrap(),
    );

    // `sira check`, on the config and on a broken copy of it.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&sira.config_path).unwrap();
    std::fs::write(dir.path().join("ok.yaml"), &text).unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        text.replace("kind: openai", "kind: opneai")
            .replace("timeout: 200ms", "timeout: never"),
    )
    .unwrap();
    for file in ["ok.yaml", "bad.yaml"] {
        let (_, out, err) = run_cli_with_env(&["check", "-c", file], "", dir.path(), &env());
        clean(&format!("sira check {file}"), &format!("{out}{err}"));
    }
}
