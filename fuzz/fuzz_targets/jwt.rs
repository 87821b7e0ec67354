//! JWT verification on any token against HS256 and `none`-refusing issuers: refused or
//! accepted, never a panic; nothing unsigned is ever accepted.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sira::config::{ProcessSource, Snapshot};

static SNAPSHOT: LazyLock<Snapshot> = LazyLock::new(|| {
    let yaml = "providers: { o: { kind: openai, api_key: k } }\nmodels: { m: { targets: [{ provider: o }] } }\nauth:\n  jwt:\n    issuer: https://issuer.example\n    audience: sira\n    algorithms: [HS256]\n    secret: \"fuzz-secret-of-at-least-thirty-two-bytes\"\n    claims: { subject: sub, tenant: org, models: models, limits: limits }\n";
    sira::config::parse(yaml, None, &ProcessSource).expect("the fuzz config is valid")
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let snap = &*SNAPSHOT;
    if sira::auth::jwt::verify(&snap.jwt, token, &snap.tenants, false).is_ok() {
        // Only a token signed with the secret may pass: the fuzzer cannot forge one.
        panic!("an unsigned or forged token was accepted: {token:?}");
    }
});
