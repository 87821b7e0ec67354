//! JWT bearer tokens through the real binary: RS256/ES256/EdDSA public keys, HS256 secrets,
//! JWKS files and a JWKS URL served by the test (rotation, unknown `kid`), every refusal a
//! 401, claims mapping subject, tenant and models.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sira_mock::MockProvider;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{client, Sira};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

fn file(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{name}")).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": "https://auth.test", "aud": "sira", "sub": "alice",
        "exp": now() + 600, "org": "acme", "models": ["gpt-4o"]});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

fn rsa(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(file(name).as_bytes()).unwrap()
}

fn config(jwt: &str) -> String {
    format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream }}
models:
  gpt-4o: {{ targets: [{{ provider: oai }}] }}
  claude: {{ targets: [{{ provider: oai }}] }}
tenants:
  acme: {{ limits: {{ requests_per_minute: 2 }} }}
auth:
  jwt:
{jwt}"#
    )
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("        {l}\n")).collect()
}

async fn call(sira: &Sira, token: &str, model: &str) -> (u16, Value) {
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rs256_tokens_are_verified_and_every_forgery_refused() {
    let mock = MockProvider::start();
    let jwt = format!(
        "    issuer: https://auth.test\n    audience: sira\n    algorithms: [RS256]\n    claims: {{ subject: sub, tenant: org, models: models }}\n    public_key: |\n{}",
        indent(&file("rsa.pub"))
    );
    let sira = Sira::start(&config(&jwt), &mock.url());
    let key = rsa("rsa.key");
    let good = sign(Algorithm::RS256, None, &key, &claims(json!({})));
    assert_eq!(call(&sira, &good, "gpt-4o").await.0, 200);
    // The models claim: only gpt-4o.
    let (status, body) = call(&sira, &good, "claude").await;
    assert_eq!(status, 403, "{body}");

    let refused = [
        (
            "expired",
            sign(
                Algorithm::RS256,
                None,
                &key,
                &claims(json!({"exp": now() - 120})),
            ),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::RS256,
                None,
                &key,
                &claims(json!({"nbf": now() + 600})),
            ),
        ),
        (
            "another issuer",
            sign(
                Algorithm::RS256,
                None,
                &key,
                &claims(json!({"iss": "https://evil.test"})),
            ),
        ),
        (
            "another audience",
            sign(
                Algorithm::RS256,
                None,
                &key,
                &claims(json!({"aud": "other"})),
            ),
        ),
        (
            "no audience",
            sign(
                Algorithm::RS256,
                None,
                &key,
                &without(claims(json!({})), "aud"),
            ),
        ),
        (
            "no models claim",
            sign(
                Algorithm::RS256,
                None,
                &key,
                &without(claims(json!({})), "models"),
            ),
        ),
        (
            "an unknown tenant",
            sign(
                Algorithm::RS256,
                None,
                &key,
                &claims(json!({"org": "nobody"})),
            ),
        ),
        (
            "another key",
            sign(Algorithm::RS256, None, &rsa("rsa2.key"), &claims(json!({}))),
        ),
        // The public key used as an HMAC secret: the classic confusion.
        (
            "HS256 with the public key",
            sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(file("rsa.pub").as_bytes()),
                &claims(json!({})),
            ),
        ),
        ("alg none", {
            use base64::Engine;
            let b64 =
                |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims(json!({})))
            )
        }),
        ("tampered", {
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            parts[1] = sign(
                Algorithm::RS256,
                None,
                &key,
                &claims(json!({"sub": "mallory"})),
            )
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
            parts.join(".")
        }),
    ];
    for (what, token) in refused {
        let (status, body) = call(&sira, &token, "gpt-4o").await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(
            body["error"]["type"], "authentication_error",
            "{what}: {body}"
        );
    }
    // Within the leeway an expired token still passes.
    let late = sign(
        Algorithm::RS256,
        None,
        &key,
        &claims(json!({"exp": now() - 5})),
    );
    assert_eq!(call(&sira, &late, "gpt-4o").await.0, 200);
}

#[tokio::test]
async fn the_tenant_claim_brings_the_tenants_limits() {
    let mock = MockProvider::start();
    let jwt = format!(
        "    issuer: https://auth.test\n    audience: sira\n    algorithms: [ES256]\n    claims: {{ tenant: org }}\n    public_key: |\n{}",
        indent(&file("ec.pub"))
    );
    let sira = Sira::start(&config(&jwt), &mock.url());
    let key = EncodingKey::from_ec_pem(file("ec.key").as_bytes()).unwrap();
    let alice = sign(Algorithm::ES256, None, &key, &claims(json!({})));
    let bob = sign(Algorithm::ES256, None, &key, &claims(json!({"sub": "bob"})));
    assert_eq!(call(&sira, &alice, "gpt-4o").await.0, 200);
    assert_eq!(call(&sira, &bob, "gpt-4o").await.0, 200);
    // Two subjects of one tenant share its 2 requests a minute.
    let (status, body) = call(&sira, &alice, "gpt-4o").await;
    assert_eq!(status, 429, "{body}");
}

#[tokio::test]
async fn each_subject_has_its_own_limits_from_the_issuer_or_its_token() {
    let mock = MockProvider::start();
    let jwt = format!(
        "    issuer: https://auth.test\n    audience: sira\n    algorithms: [ES256]\n    limits: {{ requests_per_minute: 2 }}\n    claims: {{ limits: sira_limits }}\n    public_key: |\n{}",
        indent(&file("ec.pub"))
    );
    let sira = Sira::start(&config(&jwt), &mock.url());
    let key = EncodingKey::from_ec_pem(file("ec.key").as_bytes()).unwrap();
    let token = |extra: Value| sign(Algorithm::ES256, None, &key, &claims(extra));
    let alice = token(json!({}));
    // A fresh token of the same subject shares the subject's limit.
    let alice_again = token(json!({"jti": "another"}));
    let bob = token(json!({"sub": "bob"}));
    assert_eq!(call(&sira, &alice, "gpt-4o").await.0, 200);
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(&alice_again)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "0");
    let (status, body) = call(&sira, &alice, "gpt-4o").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("jwt:https://auth.test:alice"),
        "{body}"
    );
    // Bob's own two.
    assert_eq!(call(&sira, &bob, "gpt-4o").await.0, 200);
    assert_eq!(call(&sira, &bob, "gpt-4o").await.0, 200);
    assert_eq!(call(&sira, &bob, "gpt-4o").await.0, 429);
    // Carol's token carries her limits: one request a minute.
    let carol = token(json!({"sub": "carol", "sira_limits": {"requests_per_minute": 1}}));
    assert_eq!(call(&sira, &carol, "gpt-4o").await.0, 200);
    assert_eq!(call(&sira, &carol, "gpt-4o").await.0, 429);
    // A limits claim that is not a limits object is refused, not let through unlimited.
    for bad in [
        json!("lots"),
        json!({"requests_per_minute": 0}),
        json!({"rpm": 5}),
    ] {
        let dave = token(json!({"sub": "dave", "sira_limits": bad}));
        let (status, body) = call(&sira, &dave, "gpt-4o").await;
        assert_eq!(status, 401, "{body}");
    }
}

#[tokio::test]
async fn eddsa_and_hs256_issuers_side_by_side() {
    let mock = MockProvider::start();
    let secret = "a-shared-secret-of-at-least-32-bytes!";
    let jwt = format!(
        "    - issuer: https://auth.test\n      audience: sira\n      algorithms: [EdDSA]\n      public_key: |\n{}    - issuer: https://hmac.test\n      audience: sira\n      algorithms: [HS256]\n      secret: \"{secret}\"\n",
        indent(&file("ed.pub")).replace("        ", "          ")
    );
    let sira = Sira::start(&config(&jwt), &mock.url());
    let ed = EncodingKey::from_ed_pem(file("ed.key").as_bytes()).unwrap();
    let token = sign(Algorithm::EdDSA, None, &ed, &claims(json!({})));
    assert_eq!(call(&sira, &token, "gpt-4o").await.0, 200);
    let hmac = EncodingKey::from_secret(secret.as_bytes());
    let token = sign(
        Algorithm::HS256,
        None,
        &hmac,
        &claims(json!({"iss": "https://hmac.test"})),
    );
    assert_eq!(call(&sira, &token, "gpt-4o").await.0, 200);
    // An HS256 token claiming the EdDSA issuer is refused: that issuer lists no HS256.
    let token = sign(Algorithm::HS256, None, &hmac, &claims(json!({})));
    assert_eq!(call(&sira, &token, "gpt-4o").await.0, 401);
}

/// A JWKS endpoint whose document the test can change, counting its fetches.
struct Jwks {
    url: String,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

async fn serve_jwks(initial: String) -> Jwks {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let body = Arc::new(Mutex::new(initial));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (b, f) = (body.clone(), fetches.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (b, f) = (b.clone(), f.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                f.fetch_add(1, Ordering::SeqCst);
                let body = b.lock().unwrap().clone();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Jwks { url, body, fetches }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_a_rotated_key_found_with_one_rate_limited_refetch() {
    let mock = MockProvider::start();
    let jwks = serve_jwks(file("jwks1.json")).await;
    let jwt = format!(
        "    issuer: https://auth.test\n    audience: sira\n    algorithms: [RS256]\n    jwks_url: \"{}\"\n",
        jwks.url
    );
    let sira = Sira::start(&config(&jwt), &mock.url());
    let k1 = sign(
        Algorithm::RS256,
        Some("k1"),
        &rsa("rsa.key"),
        &claims(json!({})),
    );
    // The first fetch happens in the background as the config is loaded.
    let mut status = 0;
    for _ in 0..200 {
        status = call(&sira, &k1, "gpt-4o").await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
    // The issuer rotates: k2 appears; a token signed with it makes sira fetch once.
    *jwks.body.lock().unwrap() = file("jwks2.json");
    let before = jwks.fetches.load(Ordering::SeqCst);
    let k2 = sign(
        Algorithm::RS256,
        Some("k2"),
        &rsa("rsa2.key"),
        &claims(json!({})),
    );
    assert_eq!(call(&sira, &k2, "gpt-4o").await.0, 200);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), before + 1);
    // Made-up kids: refused, and they do not make sira hammer the issuer.
    for kid in ["k3", "k4", "k5"] {
        let forged = sign(
            Algorithm::RS256,
            Some(kid),
            &rsa("rsa2.key"),
            &claims(json!({})),
        );
        assert_eq!(call(&sira, &forged, "gpt-4o").await.0, 401, "{kid}");
    }
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn sira_check_refuses_unsafe_jwt_configs() {
    let dir = tempfile::tempdir().unwrap();
    let check = |jwt: &str| {
        let path = dir.path().join("sira.yaml");
        std::fs::write(&path, config(jwt).replace("{mock}", "http://127.0.0.1:9")).unwrap();
        let (code, out, err) =
            crate::support::run_cli(&["check", "-c", path.to_str().unwrap()], "", dir.path());
        (code, format!("{out}{err}"))
    };
    let pem = indent(&file("rsa.pub"));
    for (jwt, expect) in [
        (
            format!("    issuer: x\n    audience: a\n    algorithms: [none]\n    public_key: |\n{pem}"),
            "auth.jwt.algorithms[0]",
        ),
        (
            format!("    issuer: x\n    audience: a\n    algorithms: [RS256, HS256]\n    public_key: |\n{pem}"),
            "auth.jwt.algorithms",
        ),
        (
            "    issuer: x\n    audience: a\n    algorithms: [HS256]\n    secret: short\n".to_owned(),
            "auth.jwt.secret",
        ),
        (
            format!("    issuer: x\n    audience: a\n    algorithms: [ES256]\n    public_key: |\n{pem}"),
            "does not fit",
        ),
        (
            "    issuer: x\n    audience: a\n    algorithms: [RS256]\n".to_owned(),
            "exactly one of",
        ),
        (
            format!("    issuer: x\n    algorithms: [RS256]\n    public_key: |\n{pem}"),
            "auth.jwt.audience",
        ),
        (
            "    issuer: x\n    audience: a\n    algorithms: [RS256]\n    jwks_url: http://idp.example/jwks\n".to_owned(),
            "auth.jwt.jwks_url",
        ),
    ] {
        let (code, out) = check(&jwt);
        assert_ne!(code, 0, "{jwt}");
        assert!(out.contains(expect), "{expect}: {out}");
    }
    let (code, out) = check(&format!(
        "    issuer: x\n    audience: a\n    algorithms: [RS256, PS256]\n    public_key: |\n{pem}"
    ));
    assert_eq!(code, 0, "{out}");
}
