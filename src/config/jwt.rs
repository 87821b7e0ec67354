//! `auth.jwt` → [`crate::auth::jwt::Issuer`]s: one issuer or a list of them.

use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_yaml::Value;

use super::build::Builder;
use super::section;
use super::units::HumanDuration;
use crate::auth::jwt::{parse_jwks, ClaimNames, Issuer, Keys};

/// `exp`/`nbf` tolerance for clocks that differ a little.
const DEFAULT_LEEWAY: u64 = 30;

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    // First: a list is tried as a list before as one value (a YAML value is anything).
    Many(Vec<T>),
    One(T),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtConfig {
    issuer: String,
    /// The label in metrics and logs (default: the issuer's host).
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    audience: Option<OneOrMany<String>>,
    algorithms: Vec<String>,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    jwks_file: Option<String>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    leeway: Option<HumanDuration>,
    #[serde(default)]
    claims: Option<ClaimsConfig>,
    /// Each subject's own limits.
    #[serde(default)]
    limits: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimsConfig {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    models: Option<String>,
    #[serde(default)]
    limits: Option<String>,
}

pub(super) fn issuers(b: &mut Builder, value: Option<Value>) -> Vec<Issuer> {
    let Some(value) = value else {
        return Vec::new();
    };
    let configs = match section::<OneOrMany<Value>>(value, "auth.jwt", b.problems) {
        Some(OneOrMany::One(v)) => vec![("auth.jwt".to_owned(), v)],
        Some(OneOrMany::Many(vs)) => vs
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("auth.jwt[{i}]"), v))
            .collect(),
        None => return Vec::new(),
    };
    let mut out = Vec::new();
    for (path, value) in configs {
        let Some(config) = section::<JwtConfig>(value, &path, b.problems) else {
            continue;
        };
        if let Some(issuer) = issuer(b, &path, config) {
            if out.iter().any(|i: &Issuer| i.issuer == issuer.issuer) {
                b.problem(format!("{path}.issuer"), "configured twice");
                continue;
            }
            out.push(issuer);
        }
    }
    out
}

fn issuer(b: &mut Builder, path: &str, config: JwtConfig) -> Option<Issuer> {
    let mut algorithms = Vec::new();
    for (i, name) in config.algorithms.iter().enumerate() {
        // `none` is not an algorithm jsonwebtoken knows: refused here with the others.
        match Algorithm::from_str(name) {
            Ok(alg) => algorithms.push(alg),
            Err(_) => b.problem(
                format!("{path}.algorithms[{i}]"),
                format!("unknown algorithm {name:?}: use RS256/384/512, PS256/384/512, ES256/384, EdDSA or HS256/384/512"),
            ),
        }
    }
    if algorithms.is_empty() {
        b.problem(format!("{path}.algorithms"), "list at least one algorithm");
        return None;
    }
    let sources = [
        config.public_key.is_some(),
        config.secret.is_some(),
        config.jwks_file.is_some(),
        config.jwks_url.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        b.problem(
            path,
            "give exactly one of public_key, secret (HS* only), jwks_file or jwks_url",
        );
        return None;
    }
    let hmac = algorithms
        .iter()
        .any(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512));
    if hmac != config.secret.is_some()
        || (hmac
            && algorithms.len() > 1
            && algorithms
                .iter()
                .any(|a| a.family() != Algorithm::HS256.family()))
    {
        // An HMAC algorithm beside a public key is the classic confusion: the public key
        // would become the HMAC secret.
        b.problem(
            format!("{path}.algorithms"),
            "HS256/384/512 only with `secret`, and `secret` only with HS* algorithms",
        );
        return None;
    }
    let keys = if let Some(pem) = &config.public_key {
        let pem = pem.as_bytes();
        let key = DecodingKey::from_rsa_pem(pem)
            .or_else(|_| DecodingKey::from_ec_pem(pem))
            .or_else(|_| DecodingKey::from_ed_pem(pem));
        match key {
            Ok(key) => Keys::Fixed(vec![(None, key)]),
            Err(_) => {
                b.problem(
                    format!("{path}.public_key"),
                    "not a PEM RSA, EC or Ed25519 public key",
                );
                return None;
            }
        }
    } else if let Some(secret) = &config.secret {
        if secret.len() < 32 {
            b.problem(
                format!("{path}.secret"),
                "is shorter than 32 bytes (the referenced variable may be unset)",
            );
            return None;
        }
        Keys::Fixed(vec![(None, DecodingKey::from_secret(secret.as_bytes()))])
    } else if let Some(file) = &config.jwks_file {
        let keys = std::fs::read(file)
            .map_err(|e| format!("cannot read {file}: {e}"))
            .and_then(|body| parse_jwks(&body));
        match keys {
            Ok(keys) if !keys.is_empty() => Keys::Fixed(keys),
            Ok(_) => {
                b.problem(format!("{path}.jwks_file"), "holds no usable key");
                return None;
            }
            Err(e) => {
                b.problem(format!("{path}.jwks_file"), e);
                return None;
            }
        }
    } else {
        let url = config.jwks_url.unwrap_or_default();
        // Whoever serves the keys decides who is authenticated: plain HTTP only to this host.
        let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|l| url.starts_with(l));
        if !(url.starts_with("https://") || local) {
            b.problem(
                format!("{path}.jwks_url"),
                "must be an https URL (http only on loopback)",
            );
            return None;
        }
        Keys::Remote(crate::runtime::registry().jwks(&url))
    };
    // Every listed algorithm must fit the key: an RS256 issuer with an EC key verifies
    // nothing, and would hide a typo.
    if let Keys::Fixed(fixed) = &keys {
        for alg in &algorithms {
            if !fixed.iter().any(|(_, key)| key.family() == alg.family()) {
                b.problem(
                    format!("{path}.algorithms"),
                    format!("{alg:?} does not fit the configured key"),
                );
                return None;
            }
        }
    }
    let label = config.name.unwrap_or_else(|| {
        let host = config
            .issuer
            .split("://")
            .nth(1)
            .unwrap_or(&config.issuer)
            .split('/')
            .next()
            .unwrap_or_default();
        format!("jwt:{host}")
    });
    let claims = config.claims.unwrap_or(ClaimsConfig {
        subject: None,
        tenant: None,
        models: None,
        limits: None,
    });
    let limits = super::limits::limits(b, config.limits, &format!("{path}.limits"));
    let audience = match config.audience {
        None => {
            b.problem(
                format!("{path}.audience"),
                "is required: tokens the issuer made for other applications must not pass",
            );
            return None;
        }
        Some(OneOrMany::One(a)) => vec![a],
        Some(OneOrMany::Many(a)) => a,
    };
    let leeway = config.leeway.map_or(DEFAULT_LEEWAY, |d| d.0.as_secs());
    if leeway > 300 {
        b.problem(format!("{path}.leeway"), "must be at most 5m");
    }
    Some(Issuer {
        label: Arc::from(label.as_str()),
        issuer: config.issuer,
        audience,
        algorithms,
        keys,
        leeway,
        claims: ClaimNames {
            subject: claims.subject.unwrap_or_else(|| "sub".to_owned()),
            tenant: claims.tenant,
            models: claims.models,
            limits: claims.limits,
        },
        limits,
    })
}
