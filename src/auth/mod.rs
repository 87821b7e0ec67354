//! Who is calling: API keys from `Authorization: Bearer`, `x-api-key`, `x-goog-api-key` or
//! `?key=`, checked against the snapshot's key table, and JWTs sent as bearer tokens,
//! verified against `auth.jwt` ([`jwt`]).

pub mod jwt;
mod keys;

use std::sync::Arc;

use http::HeaderMap;

pub use keys::{
    digest, hash_key, new_key, now_secs, parse_hash, Found, KeyEntry, KeyTable, HASH_PREFIX,
};

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub enum Principal {
    /// No keys are configured: the gateway is open (the built-in default listens on loopback only).
    Anonymous,
    Key(Arc<KeyEntry>),
    /// A verified JWT's subject.
    Jwt(Arc<jwt::JwtCaller>),
}

impl Principal {
    /// The name used in logs and metrics: a key's name, or `jwt:<issuer>` (subjects are
    /// unbounded, so they are not metric labels).
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Key(entry) => &entry.name,
            Principal::Jwt(caller) => &caller.label,
        }
    }

    /// Who owns what this caller stores: unique per key, and per issuer and subject (a
    /// key cannot be named like a JWT owner: those start with `jwt:`, keys are `key:`).
    pub fn owner(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Principal::Anonymous => std::borrow::Cow::Borrowed("anonymous"),
            Principal::Key(entry) => std::borrow::Cow::Owned(format!("key:{}", entry.scope)),
            Principal::Jwt(caller) => std::borrow::Cow::Borrowed(&caller.owner),
        }
    }

    pub fn allows(&self, model: &str) -> bool {
        match self {
            Principal::Anonymous => true,
            Principal::Key(entry) => entry.allows(model),
            Principal::Jwt(caller) => caller.allows(model),
        }
    }

    /// The tenant whose limits the caller shares.
    pub fn tenant(&self) -> Option<&Arc<crate::config::limits::Tenant>> {
        match self {
            Principal::Anonymous => None,
            Principal::Key(entry) => entry.tenant.as_ref(),
            Principal::Jwt(caller) => caller.tenant.as_ref(),
        }
    }

    /// The filters attached to the caller: its key's own, then its tenant's (one named on
    /// both runs once, as the key's).
    pub fn filters(&self) -> impl Iterator<Item = &Arc<dyn lua_free_filters::Filter>> {
        let own = match self {
            Principal::Key(entry) => entry.filters.as_slice(),
            Principal::Anonymous | Principal::Jwt(_) => &[],
        };
        let tenant = self.tenant().map_or(&[][..], |t| t.filters.as_slice());
        own.iter().chain(
            tenant
                .iter()
                .filter(move |t| !own.iter().any(|o| Arc::ptr_eq(o, t))),
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    /// Said only to a caller who presented the key's secret: it learns nothing new.
    #[error("this API key has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Token(#[from] jwt::JwtError),
}

/// What authentication decided.
pub enum Authenticated {
    Caller(Principal),
    /// A JWT signed by a key its issuer's JWKS URL may have gained: fetch, then verify the
    /// token (kept here) again.
    Refetch(Arc<jwt::RemoteJwks>, String),
}

/// Authenticates a request: a JWT bearer token against `issuers`, anything else against
/// the key table. Neither configured: the gateway is open.
pub fn authenticate_any(
    snap: &crate::config::Snapshot,
    issued: &KeyTable,
    headers: &HeaderMap,
    query: Option<&str>,
    identity: Option<&crate::tls::ClientIdentity>,
) -> Result<Authenticated, AuthError> {
    let (table, issuers, tenants) = (&snap.keys, &snap.jwt, &snap.tenants);
    if !issuers.is_empty() {
        if let Some(token) = bearer(headers).filter(|t| jwt::looks_like_jwt(t)) {
            let token = std::str::from_utf8(token).map_err(|_| jwt::JwtError::Malformed)?;
            if let Some(caller) = snap.verified.get(token) {
                return Ok(Authenticated::Caller(Principal::Jwt(caller)));
            }
            return Ok(match jwt::verify(issuers, token, tenants, false)? {
                jwt::Verdict::Caller(caller) => {
                    let caller = Arc::new(caller);
                    snap.verified.insert(token, caller.clone());
                    Authenticated::Caller(Principal::Jwt(caller))
                }
                jwt::Verdict::Refetch(jwks) => Authenticated::Refetch(jwks, token.to_owned()),
            });
        }
        if table.is_empty() && !table.require_key && issued.is_empty() {
            return Err(AuthError::Missing);
        }
    }
    authenticate(table, issued, headers, query, identity).map(Authenticated::Caller)
}

/// Whether a `Host` header value names this machine: `localhost` or a loopback address,
/// with or without a port. What DNS rebinding cannot forge.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a request says its body is JSON: what a web page can only send cross-site after
/// a CORS preflight, which sira never grants (a form or text POST needs none).
pub fn says_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

/// The credential of `Authorization: Bearer <credential>`.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    value
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case(b"bearer "))
        .map(|_| value[7..].trim_ascii())
}

/// Authenticates a request from its headers and query string, against the config's keys
/// and then the keys issued through the admin API. Whether keys are required at all is the
/// config's decision: issued keys are only served under a config that authenticates
/// (`auth.keys`, `auth.jwt` or `mode: keys`), so they never turn an open gateway half-closed.
pub fn authenticate(
    table: &KeyTable,
    issued: &KeyTable,
    headers: &HeaderMap,
    query: Option<&str>,
    identity: Option<&crate::tls::ClientIdentity>,
) -> Result<Principal, AuthError> {
    if table.is_empty() && !table.require_key && issued.is_empty() {
        return Ok(Principal::Anonymous);
    }
    // A key presented wins; without one, a verified client certificate may claim a key.
    let Some(secret) = presented_key(headers, query) else {
        return match identity.and_then(|identity| table.find_mtls(identity)) {
            Some(Found::Key(entry)) => Ok(Principal::Key(entry.clone())),
            Some(Found::Expired) => Err(AuthError::Expired),
            None => Err(AuthError::Missing),
        };
    };
    let digest = digest(secret);
    let found = table
        .find_digest(&digest, now_secs)
        .or_else(|| issued.find_digest(&digest, now_secs));
    match found {
        Some(Found::Key(entry)) => Ok(Principal::Key(entry.clone())),
        Some(Found::Expired) => Err(AuthError::Expired),
        None => Err(AuthError::Invalid),
    }
}

/// The key the client presented, in the first place any SDK puts it.
fn presented_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a [u8]> {
    // An Authorization header that is not a bearer credential is not looked past.
    if headers.contains_key(http::header::AUTHORIZATION) {
        return bearer(headers);
    }
    for name in ["x-api-key", "x-goog-api-key", "api-key"] {
        if let Some(value) = headers.get(name) {
            return Some(value.as_bytes().trim_ascii());
        }
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .map(str::as_bytes)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn table() -> KeyTable {
        let mut t = KeyTable::default();
        t.insert(KeyEntry::new(
            "team-a",
            parse_hash(&hash_key("sk-good")).unwrap(),
            None,
            Vec::new(),
        ));
        t
    }

    fn none() -> KeyTable {
        KeyTable::default()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn accepts_every_sdk_placement() {
        let t = table();
        for h in [
            headers(&[("authorization", "Bearer sk-good")]),
            headers(&[("authorization", "bearer  sk-good ")]),
            headers(&[("x-api-key", "sk-good")]),
            headers(&[("x-goog-api-key", "sk-good")]),
        ] {
            assert_eq!(
                authenticate(&t, &none(), &h, None, None).unwrap().name(),
                "team-a"
            );
        }
        let q = authenticate(
            &t,
            &none(),
            &HeaderMap::new(),
            Some("alt=sse&key=sk-good"),
            None,
        )
        .unwrap();
        assert_eq!(q.name(), "team-a");
    }

    #[test]
    fn rejects_missing_and_bad_keys() {
        let t = table();
        assert_eq!(
            authenticate(&t, &none(), &HeaderMap::new(), None, None).unwrap_err(),
            AuthError::Missing
        );
        let bad = headers(&[("authorization", "Bearer sk-bad")]);
        assert_eq!(
            authenticate(&t, &none(), &bad, None, None).unwrap_err(),
            AuthError::Invalid
        );
        let basic = headers(&[("authorization", "Basic Zm9vOmJhcg==")]);
        assert_eq!(
            authenticate(&t, &none(), &basic, None, None).unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn empty_table_means_open() {
        let open = authenticate(&none(), &none(), &HeaderMap::new(), None, None).unwrap();
        assert_eq!(open.name(), "anonymous");
    }

    #[test]
    fn issued_keys_authenticate_where_the_config_requires_keys() {
        let bearer = headers(&[("authorization", "Bearer sk-good")]);
        let mut required = KeyTable::default();
        required.require_key = true;
        let found = authenticate(&required, &table(), &bearer, None, None).unwrap();
        assert_eq!(found.name(), "team-a");
        assert_eq!(
            authenticate(&required, &table(), &HeaderMap::new(), None, None).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            authenticate(&required, &none(), &bearer, None, None).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn an_expired_key_is_refused_through_a_client_certificate_too() {
        let mut entry = KeyEntry::new("cert", [7; 32], None, Vec::new());
        entry.expires_at = Some(1);
        let mut t = KeyTable::default();
        let entry = t.insert(entry);
        t.claim_mtls("dns:client.example".into(), entry);
        let identity = crate::tls::ClientIdentity {
            names: vec!["dns:client.example".into()],
        };
        assert_eq!(
            authenticate(&t, &none(), &HeaderMap::new(), None, Some(&identity)).unwrap_err(),
            AuthError::Expired
        );
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.2:9",
            "[::1]:80",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "127.0.0.1.evil.example",
            "[::2]",
            "10.0.0.1:80",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn an_expired_key_is_told_so() {
        let mut entry = KeyEntry::new(
            "old",
            parse_hash(&hash_key("sk-old")).unwrap(),
            None,
            Vec::new(),
        );
        entry.expires_at = Some(1);
        let mut t = KeyTable::default();
        t.insert(entry);
        let h = headers(&[("x-api-key", "sk-old")]);
        assert_eq!(
            authenticate(&t, &none(), &h, None, None).unwrap_err(),
            AuthError::Expired
        );
    }
}
