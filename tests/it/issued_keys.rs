//! Key lifecycle without editing YAML: keys issued, rotated and revoked through
//! `/admin/keys`, kept hashed in a file beside the config or in Redis (seen by every host),
//! surviving restarts and reloads; `expires_at` and several hashes per key in the config.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::redis::Redis;
use crate::support::{client, Sira, KEY_A};

const ADMIN: &str = "admin-token-for-keys";

fn config(auth_extra: &str, extra: &str) -> String {
    format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}] }}
  gpt-4o-mini: {{ targets: [{{ provider: oai }}] }}
tenants:
  acme: {{ limits: {{ requests_per_minute: 1000 }} }}
auth:
  keys:
    - {{ name: team-a, hash: "{}" }}
{auth_extra}
{extra}"#,
        sira::auth::hash_key(KEY_A)
    )
}

fn start(mock: &MockProvider, auth_extra: &str, extra: &str) -> Sira {
    Sira::start_with_server(
        &config(auth_extra, extra),
        &mock.url(),
        &format!("  admin_token: {ADMIN}\n"),
    )
}

async fn chat(sira: &Sira, key: &str, model: &str) -> (u16, Value) {
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn admin(
    sira: &Sira,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method, sira.admin_url(path))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn issue(sira: &Sira, body: Value) -> String {
    let (status, answer) = admin(sira, reqwest::Method::POST, "/admin/keys", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    answer["key"].as_str().expect("the secret, once").to_owned()
}

/// Waits until `key` gets `want` from `sira` (a change another host made arrives with the
/// next sync).
async fn until_status(sira: &Sira, key: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = chat(sira, key, "gpt-4o").await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {status}, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_key_issued_through_the_admin_api_is_kept_hashed_limited_rotated_and_revoked() {
    let mock = MockProvider::start();
    let sira = start(&mock, "", "");

    // The admin token is required, and only JSON is taken (a web page cannot post it).
    let anonymous = client()
        .post(sira.admin_url("/admin/keys"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let form = client()
        .post(sira.admin_url("/admin/keys"))
        .bearer_auth(ADMIN)
        .header("content-type", "text/plain")
        .body(r#"{"name": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);

    let (status, answer) = admin(
        &sira,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "ci-bot", "tenant": "acme", "models": ["gpt-4o"], "limits": {"requests_per_minute": 2}})),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let secret = answer["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-sira-"));
    assert_eq!(answer["tenant"], "acme");

    // It works at once, for its models only, with its own limits.
    assert_eq!(chat(&sira, &secret, "gpt-4o").await.0, 200);
    assert_eq!(chat(&sira, &secret, "gpt-4o-mini").await.0, 403);
    assert_eq!(chat(&sira, &secret, "gpt-4o").await.0, 200);
    let (status, body) = chat(&sira, &secret, "gpt-4o").await;
    assert_eq!(status, 429, "{body}");
    let log = sira.wait_access_log(4);
    assert!(log.iter().any(|l| l["key"] == "ci-bot"));

    // Names are unique across the config and the store; bad requests are named.
    for (body, want) in [
        (json!({"name": "ci-bot"}), 409),
        (json!({"name": "team-a"}), 409),
        (json!({"name": "has space"}), 400),
        (json!({"name": "t", "tenant": "nobody"}), 400),
        (json!({"name": "t", "models": ["nope"]}), 400),
        (
            json!({"name": "t", "limits": {"requests_per_minute": "lots"}}),
            400,
        ),
        (
            json!({"name": "t", "expires_at": "2001-01-01T00:00:00Z"}),
            400,
        ),
        (json!({"name": "t", "surprise": 1}), 400),
    ] {
        let (status, answer) = admin(
            &sira,
            reqwest::Method::POST,
            "/admin/keys",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert!(answer["error"].is_string());
    }

    // The store beside the config holds the hash, never the secret; so does the listing.
    let store = sira.dir.path().join("sira.keys.json");
    let text = std::fs::read_to_string(&store).unwrap();
    assert!(text.contains(&sira::auth::hash_key(&secret)));
    assert!(!text.contains(&secret));
    let (status, listing) = admin(&sira, reqwest::Method::GET, "/admin/keys", None).await;
    assert_eq!(status, 200);
    let listed = listing.to_string();
    assert!(
        !listed.contains(&secret) && !listed.contains("sha256:"),
        "{listed}"
    );
    let names: Vec<&str> = listing["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-a", "ci-bot"]);
    assert_eq!(listing["keys"][1]["active"], true);
    let logs = format!("{}{:?}", sira.stderr(), sira.access_log());
    assert!(!logs.contains(&secret) && !logs.contains(&secret[secret.len() - 8..]));

    // Rotation: the new secret works; the old one until its overlap ends (in whole
    // seconds: 4 to 5 s from now, room for a loaded machine's delays).
    let (status, rotated) = admin(
        &sira,
        reqwest::Method::POST,
        "/admin/keys/ci-bot/rotate",
        Some(json!({"overlap": "5s"})),
    )
    .await;
    let rotated_at = std::time::Instant::now();
    assert_eq!(status, 200, "{rotated}");
    let fresh = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(fresh, secret);
    assert_eq!(
        chat(&sira, &secret, "gpt-4o-mini").await.0,
        403,
        "old key still known"
    );
    assert_eq!(
        chat(&sira, &fresh, "gpt-4o-mini").await.0,
        403,
        "new key known"
    );
    tokio::time::sleep(
        (rotated_at + Duration::from_millis(5100))
            .saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    let (status, body) = chat(&sira, &secret, "gpt-4o").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "expired_api_key");

    // Revoked: refused at once; a config key cannot be revoked here.
    let (status, _) = admin(&sira, reqwest::Method::DELETE, "/admin/keys/ci-bot", None).await;
    assert_eq!(status, 200);
    let (status, body) = chat(&sira, &fresh, "gpt-4o-mini").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(
        admin(&sira, reqwest::Method::DELETE, "/admin/keys/ci-bot", None)
            .await
            .0,
        404
    );
    assert_eq!(
        admin(&sira, reqwest::Method::DELETE, "/admin/keys/team-a", None)
            .await
            .0,
        409
    );
    assert_eq!(chat(&sira, KEY_A, "gpt-4o").await.0, 200);

    // The name issued again is a new key: it does not inherit the old one's spent limit.
    let again = issue(
        &sira,
        json!({"name": "ci-bot", "models": ["gpt-4o"], "limits": {"requests_per_minute": 2}}),
    )
    .await;
    assert_eq!(chat(&sira, &again, "gpt-4o").await.0, 200);

    // Paths name one key, by the same rules as issuing.
    for path in [
        "/admin/keys/ci-bot/rotate/rotate",
        "/admin/keys/../rotate",
        "/admin/keys//ci-bot/rotate",
    ] {
        let (status, _) = admin(&sira, reqwest::Method::POST, path, Some(json!({}))).await;
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
    let (status, answer) = admin(
        &sira,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "far", "expires_in": "20000years"})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test]
async fn an_open_loopback_gateway_issues_no_keys_and_its_admin_answers_loopback_names_only() {
    let mock = MockProvider::start();
    let keys = format!(
        "auth:\n  keys:\n    - {{ name: team-a, hash: \"{}\" }}\n",
        sira::auth::hash_key(KEY_A)
    );
    let body = config("", "").replace(&keys, "");
    assert!(!body.contains("auth:"));
    let sira = Sira::start(&body, &mock.url());
    let resp = client()
        .post(sira.admin_url("/admin/keys"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let text = resp.text().await.unwrap();
    assert!(text.contains("mode: keys"), "{text}");
    // DNS rebinding: a page served from another name that resolves to 127.0.0.1.
    let rebound = client()
        .get(sira.admin_url("/admin/keys"))
        .header("host", format!("evil.example:{}", sira.admin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let local = client().get(sira.admin_url("/admin/keys")).send().await;
    assert_eq!(local.unwrap().status(), 200);
}

#[tokio::test]
async fn issued_keys_survive_reloads_and_restarts_and_expire() {
    let mock = MockProvider::start();
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("keys.json");
    let auth_extra = format!("  key_store: {}", store.display());
    let sira = start(&mock, &auth_extra, "");
    let kept = issue(&sira, json!({"name": "kept", "tenant": "acme"})).await;
    // Ends 4 to 5 s from now (whole seconds): used well before, checked after.
    let brief = issue(&sira, json!({"name": "brief", "expires_in": "5s"})).await;
    let issued_at = std::time::Instant::now();
    assert_eq!(chat(&sira, &kept, "gpt-4o").await.0, 200);
    assert_eq!(chat(&sira, &brief, "gpt-4o").await.0, 200);

    // A reload compiles them against the new config: without their tenant they are left
    // out, and back with it.
    let without_tenant = config(&auth_extra, "").replace(
        "tenants:\n  acme: { limits: { requests_per_minute: 1000 } }\n",
        "",
    );
    sira.rewrite_config(&without_tenant, &mock.url());
    sira.sighup();
    until_status(&sira, &kept, 401).await;
    let (_, listing) = admin(&sira, reqwest::Method::GET, "/admin/keys", None).await;
    assert_eq!(listing["keys"][1]["name"], "kept");
    assert_eq!(listing["keys"][1]["active"], false);
    sira.rewrite_config(&config(&auth_extra, ""), &mock.url());
    sira.sighup();
    until_status(&sira, &kept, 200).await;

    // A new process reads them from the store.
    drop(sira);
    let sira = start(&mock, &auth_extra, "");
    assert_eq!(chat(&sira, &kept, "gpt-4o").await.0, 200);

    // The short-lived one has ended.
    tokio::time::sleep(
        (issued_at + Duration::from_millis(5100))
            .saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    let (status, body) = chat(&sira, &brief, "gpt-4o").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("expired_api_key"))
    );
}

#[tokio::test]
async fn config_keys_carry_several_hashes_and_an_end() {
    let mock = MockProvider::start();
    let keys = format!(
        r#"    - {{ name: rotating, hash: ["{}", {{ hash: "{}", expires_at: "2001-01-01T00:00:00Z" }}, "{}"] }}
    - {{ name: ended, hash: "{}", expires_at: "2001-01-01T00:00:00Z" }}"#,
        sira::auth::hash_key("sk-new"),
        sira::auth::hash_key("sk-retired"),
        sira::auth::hash_key("sk-old"),
        sira::auth::hash_key("sk-ended"),
    );
    let sira = start(&mock, &keys, "");
    assert_eq!(chat(&sira, "sk-new", "gpt-4o").await.0, 200);
    assert_eq!(chat(&sira, "sk-old", "gpt-4o").await.0, 200);
    for ended in ["sk-retired", "sk-ended"] {
        let (status, body) = chat(&sira, ended, "gpt-4o").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("expired_api_key"))
        );
    }
    let log = sira.wait_access_log(4);
    let served: Vec<&Value> = log.iter().filter(|l| l["status"] == 200).collect();
    assert_eq!(served.len(), 2);
    assert!(served.iter().all(|l| l["key"] == "rotating"));
}

#[tokio::test]
async fn mode_keys_requires_a_key_before_any_is_issued() {
    let mock = MockProvider::start();
    let body = config("", "").replace(
        &format!(
            "  keys:\n    - {{ name: team-a, hash: \"{}\" }}\n",
            sira::auth::hash_key(KEY_A)
        ),
        "  mode: keys\n",
    );
    let sira = Sira::start_with_server(&body, &mock.url(), &format!("  admin_token: {ADMIN}\n"));
    assert_eq!(chat(&sira, "sk-anything", "gpt-4o").await.0, 401);
    let (status, body) = chat(&sira, "", "gpt-4o").await;
    assert_eq!(status, 401, "{body}");
    let key = issue(&sira, json!({"name": "first"})).await;
    assert_eq!(chat(&sira, &key, "gpt-4o").await.0, 200);
}

#[tokio::test]
async fn hosts_sharing_redis_see_an_issue_and_a_revocation() {
    let mock = MockProvider::start();
    let redis = Redis::start();
    let extra = format!(
        "limits:\n  store: {{ redis: \"{}\", sync: 100ms }}\n",
        redis.url()
    );
    let a = start(&mock, "", &extra);
    let b = start(&mock, "", &extra);
    let key = issue(
        &a,
        json!({"name": "fleet", "models": ["gpt-4o"], "limits": {"requests_per_minute": 1000}}),
    )
    .await;
    assert_eq!(chat(&a, &key, "gpt-4o").await.0, 200);
    until_status(&b, &key, 200).await;
    // Its limits are a scope of each host's usage, kept in the shared store.
    let (_, usage) = admin(&b, reqwest::Method::GET, "/admin/usage?key=fleet", None).await;
    assert_eq!(usage["scopes"].as_array().map(Vec::len), Some(1), "{usage}");
    assert!(usage["store"]["redis"].is_object(), "{usage}");
    let (_, listing) = admin(&b, reqwest::Method::GET, "/admin/keys", None).await;
    assert_eq!(listing["store"]["kind"], "redis");
    assert_eq!(listing["keys"][1]["name"], "fleet");
    // A host started now has read the store by its first request (a request that comes
    // sooner waits for that first read rather than calling the key unknown).
    let c = start(&mock, "", &extra);
    assert_eq!(chat(&c, &key, "gpt-4o").await.0, 200);
    drop(c);
    // Issued on B under a name A issued: refused by Redis itself.
    let (status, _) = admin(
        &b,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "fleet"})),
    )
    .await;
    assert_eq!(status, 409);

    let (status, rotated) = admin(
        &b,
        reqwest::Method::POST,
        "/admin/keys/fleet/rotate",
        Some(json!({"overlap": "0s"})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let fresh = rotated["key"].as_str().unwrap().to_owned();
    until_status(&a, &fresh, 200).await;
    until_status(&a, &key, 401).await;

    assert_eq!(
        admin(&a, reqwest::Method::DELETE, "/admin/keys/fleet", None)
            .await
            .0,
        200
    );
    assert_eq!(chat(&a, &fresh, "gpt-4o").await.0, 401);
    until_status(&b, &fresh, 401).await;
}

#[tokio::test]
async fn sira_check_names_key_store_and_hash_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sira.yaml");
    for (auth, needle) in [
        ("  key_store: redis\n", "auth.key_store"),
        ("  mode: open\n  key_store: off\n  keys: [{ name: a, hash: [] }]\n", "auth.keys[0].hash"),
        (
            "  keys: [{ name: a, hash: [\"sha256:00\"] }]\n",
            "auth.keys[0].hash",
        ),
        (
            "  keys: [{ name: a, hash: \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\", expires_at: tomorrow }]\n",
            "auth.keys[0].expires_at",
        ),
    ] {
        std::fs::write(
            &path,
            format!("providers:\n  oai: {{ kind: openai, endpoints: [\"http://127.0.0.1:9\"] }}\nmodels:\n  m: {{ targets: [{{ provider: oai }}] }}\nauth:\n{auth}"),
        )
        .unwrap();
        let (code, out, err) = crate::support::run_cli(
            &["check", "-c", path.to_str().unwrap()],
            "",
            dir.path(),
        );
        assert_ne!(code, 0, "{auth}");
        assert!(out.contains(needle) || err.contains(needle), "{auth}: {out}{err}");
    }
}
