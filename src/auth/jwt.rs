//! JWT / OIDC bearer tokens (`auth.jwt`): verified against each configured issuer's key (a
//! PEM public key, an HMAC secret, a JWKS file, or a JWKS URL fetched in the background),
//! with `iss`, `aud`, `exp` and `nbf` checked, then mapped through the issuer's `claims` to
//! a caller: subject, tenant and allowed models.
//!
//! The algorithm is never taken on the token's word: it must be one the issuer lists, of
//! the family of the key that verifies it (jsonwebtoken checks the family too), so
//! `alg: none` and HS256-signed-with-the-public-key tokens are refused. Decoding keys are
//! built once per config snapshot (a JWKS URL's once per fetch).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::limits::Tenant;
use crate::glob::Glob;

/// The shortest time between two fetches of a JWKS URL caused by unknown `kid`s: a flood
/// of made-up `kid`s costs the issuer one request per this interval, not one per token.
const REFETCH_EVERY: Duration = Duration::from_secs(30);

/// A verified caller.
#[derive(Debug)]
pub struct JwtCaller {
    /// The token's subject, as the issuer's `claims.subject` names it.
    pub subject: String,
    /// The issuer's label: bounded, for metrics.
    pub label: Arc<str>,
    /// Unique per issuer and subject: owns stored responses.
    pub owner: String,
    pub tenant: Option<Arc<Tenant>>,
    /// `None` = every model.
    pub models: Option<Vec<Glob>>,
    /// When the token expires (seconds since the epoch): a verified token is remembered
    /// until then at most.
    pub expires: u64,
    /// This subject's own limits (the issuer's `limits`, or the token's limits claim).
    pub limits: crate::limits::Limits,
    /// Their running state, kept per issuer and subject across tokens and reloads.
    pub counter: Option<Arc<crate::limits::Counter>>,
}

impl JwtCaller {
    pub fn allows(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|globs| globs.iter().any(|g| g.matches(model)))
    }
}

/// Which claims say what.
#[derive(Clone, Debug)]
pub struct ClaimNames {
    pub subject: String,
    pub tenant: Option<String>,
    pub models: Option<String>,
    /// A claim holding this subject's limits (an object shaped like `limits:`).
    pub limits: Option<String>,
}

/// Where an issuer's keys come from.
pub enum Keys {
    /// Keys known when the config was built (PEM, secret, JWKS file), by `kid` when the
    /// JWKS gave one.
    Fixed(Vec<(Option<String>, DecodingKey)>),
    /// A JWKS URL's keys, refreshed in the background.
    Remote(Arc<RemoteJwks>),
}

/// One `auth.jwt` entry.
pub struct Issuer {
    pub label: Arc<str>,
    pub issuer: String,
    pub audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: Keys,
    pub leeway: u64,
    pub claims: ClaimNames,
    /// Each subject's own limits, unless its token carries a limits claim.
    pub limits: crate::limits::Limits,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys (an HMAC secret among them) are not printed.
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused (never echoed to the client in detail beyond this).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token's issuer is not accepted here")]
    UnknownIssuer,
    #[error("the token's algorithm is not accepted for its issuer")]
    Algorithm,
    #[error("the token was signed with a key the issuer does not list")]
    UnknownKey,
    #[error("the token is expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not for this audience")]
    Audience,
    #[error("the token's signature or claims are invalid")]
    Invalid,
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    #[error("the token's `{0}` claim is not a limits object")]
    BadClaim(String),
    #[error("the token's tenant is not configured here")]
    UnknownTenant,
}

/// A JWKS URL's keys, and when they were last fetched.
pub struct RemoteJwks {
    pub url: String,
    keys: ArcSwap<Vec<(Option<String>, DecodingKey)>>,
    /// When the last fetch started; `None` before the first.
    fetched: Mutex<Option<Instant>>,
    /// When an unknown `kid` last caused a fetch: at most one per [`REFETCH_EVERY`],
    /// whatever the background refreshes do.
    unknown: Mutex<Option<Instant>>,
    /// Fetches asked for before any key set was loaded.
    initial: Mutex<Option<Instant>>,
    /// A key set was loaded at least once.
    loaded: AtomicBool,
    client: reqwest::Client,
}

impl RemoteJwks {
    pub fn new(url: &str) -> RemoteJwks {
        RemoteJwks {
            url: url.to_owned(),
            keys: ArcSwap::from_pointee(Vec::new()),
            fetched: Mutex::new(None),
            unknown: Mutex::new(None),
            initial: Mutex::new(None),
            loaded: AtomicBool::new(false),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Whether `slot` allows a fetch now (none yet, or the last at least `every` ago);
    /// claims it when it does.
    fn claim(slot: &Mutex<Option<Instant>>, every: Duration) -> bool {
        let mut last = slot.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(at) if at.elapsed() < every => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    /// Fetches the key set if the last fetch is at least `every` old, keeping the old keys
    /// on failure.
    pub async fn refresh(&self, every: Duration) {
        if Self::claim(&self.fetched, every) {
            self.fetch().await;
        }
    }

    async fn fetch(&self) {
        let fetched = async {
            let body = self
                .client
                .get(&self.url)
                .send()
                .await
                .ok()?
                .error_for_status()
                .ok()?
                .bytes()
                .await
                .ok()?;
            parse_jwks(&body).ok()
        }
        .await;
        match fetched {
            Some(keys) => {
                self.keys.store(Arc::new(keys));
                self.loaded.store(true, Ordering::Release);
            }
            None => {
                tracing::warn!(url = %self.url, "could not fetch the JWKS; keeping the keys already known")
            }
        }
    }

    /// Fetches after an unknown `kid`, at most once per [`REFETCH_EVERY`].
    pub async fn refetch_for_unknown_kid(&self) {
        // Until a key set was loaded every kid is unknown: such fetches (at most one a
        // second) leave the unknown-kid allowance for a rotation.
        let allowed = if self.loaded.load(Ordering::Acquire) {
            Self::claim(&self.unknown, REFETCH_EVERY)
        } else {
            Self::claim(&self.initial, Duration::from_secs(1))
        };
        if allowed {
            self.fetch().await;
        }
    }
}

/// The keys of a JWKS document, by `kid`.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        // Keys of kinds jsonwebtoken cannot use (encryption keys, unknown curves) are
        // skipped: they verify nothing.
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.push((jwk.common.key_id.clone(), key));
        }
    }
    Ok(keys)
}

/// Whether `token` looks like a JWT (three base64url parts, a JSON header), so a bearer
/// credential is tried as one rather than as an API key.
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.starts_with(b"eyJ") && token.iter().filter(|b| **b == b'.').count() == 2
}

/// The unverified `iss`, only to choose which issuer verifies the token.
fn claimed_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    serde_json::from_slice::<Iss>(&json).ok()?.iss
}

/// What verification needs from the caller: a fetch, when the token's key is unknown.
pub enum Verdict {
    Caller(JwtCaller),
    /// The token names a key the issuer's JWKS URL may have gained since the last fetch.
    Refetch(Arc<RemoteJwks>),
}

/// Verifies `token` against the issuer it names.
pub fn verify(
    issuers: &[Issuer],
    token: &str,
    tenants: &ahash::AHashMap<String, Arc<Tenant>>,
    refetched: bool,
) -> Result<Verdict, JwtError> {
    let header = decode_header(token).map_err(|_| JwtError::Malformed)?;
    let iss = claimed_issuer(token).ok_or(JwtError::UnknownIssuer)?;
    let issuer = issuers
        .iter()
        .find(|i| i.issuer == iss)
        .ok_or(JwtError::UnknownIssuer)?;
    if !issuer.algorithms.contains(&header.alg) {
        return Err(JwtError::Algorithm);
    }
    let remote;
    let keys: &[(Option<String>, DecodingKey)] = match &issuer.keys {
        Keys::Fixed(keys) => keys,
        Keys::Remote(jwks) => {
            remote = jwks.keys.load_full();
            &remote
        }
    };
    // A single key the config gave without a kid (a PEM key, a secret) verifies every
    // token of its issuer, kid or not; otherwise the kid must name one.
    let unnamed = match keys {
        [(None, _)] => keys.first(),
        _ => None,
    };
    let key = match &header.kid {
        Some(kid) => keys
            .iter()
            .find(|(id, _)| id.as_deref() == Some(kid))
            .or(unnamed),
        None if keys.len() == 1 => keys.first(),
        None => None,
    };
    let Some((_, key)) = key else {
        return match (&issuer.keys, refetched) {
            (Keys::Remote(jwks), false) => Ok(Verdict::Refetch(jwks.clone())),
            _ => Err(JwtError::UnknownKey),
        };
    };
    if key.family() != header.alg.family() {
        return Err(JwtError::Algorithm);
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&issuer.issuer]);
    // `aud` is required and checked: a provider shared by many applications issues tokens
    // for all of them, and only this audience's may pass.
    validation.set_audience(&issuer.audience);
    validation.leeway = issuer.leeway;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data = decode::<Map<String, Value>>(token, key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::ExpiredSignature => JwtError::Expired,
            K::ImmatureSignature => JwtError::NotYetValid,
            K::InvalidAudience => JwtError::Audience,
            K::InvalidIssuer => JwtError::UnknownIssuer,
            K::InvalidAlgorithm | K::InvalidAlgorithmName => JwtError::Algorithm,
            _ => JwtError::Invalid,
        }
    })?;
    let claims = data.claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let subject = text(&issuer.claims.subject)
        .ok_or_else(|| JwtError::MissingClaim(issuer.claims.subject.clone()))?;
    // A claim the issuer is configured to map must be there and make sense: a token
    // without its tenant or its models would otherwise escape the tenant's budget or reach
    // every model.
    let tenant = match issuer.claims.tenant.as_deref() {
        None => None,
        Some(name) => {
            let tenant = text(name).ok_or_else(|| JwtError::MissingClaim(name.to_owned()))?;
            Some(
                tenants
                    .get(&tenant)
                    .cloned()
                    .ok_or(JwtError::UnknownTenant)?,
            )
        }
    };
    let models = match issuer.claims.models.as_deref() {
        None => None,
        Some(name) => {
            let patterns: Vec<String> = match claims.get(name) {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
                _ => return Err(JwtError::MissingClaim(name.to_owned())),
            };
            Some(patterns.iter().map(|p| Glob::new(p)).collect())
        }
    };
    // A token without the limits claim gets the issuer's; one with a claim that is not a
    // limits object is refused rather than let through unlimited.
    let limits = match issuer
        .claims
        .limits
        .as_deref()
        .and_then(|name| claims.get(name))
    {
        None => issuer.limits,
        Some(value) => claimed_limits(value)
            .ok_or_else(|| JwtError::BadClaim(issuer.claims.limits.clone().unwrap_or_default()))?,
    };
    let expires = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    // The whole issuer: two realms of one host are two owners.
    let owner = format!("jwt:{}:{subject}", issuer.issuer);
    let counter = (!limits.is_empty()).then(|| crate::runtime::registry().subject_counter(&owner));
    Ok(Verdict::Caller(JwtCaller {
        expires,
        owner,
        subject,
        label: issuer.label.clone(),
        tenant,
        models,
        limits,
        counter,
    }))
}

/// A limits claim: `{"requests_per_minute": 60, "budget": {"usd": 5, "per": "day"}}`, each
/// number at least 1 (a budget above zero); `None` when it is anything else.
fn claimed_limits(value: &Value) -> Option<crate::limits::Limits> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Claimed {
        requests_per_minute: Option<u64>,
        tokens_per_minute: Option<u64>,
        concurrent_requests: Option<u64>,
        budget: Option<ClaimedBudget>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ClaimedBudget {
        usd: f64,
        per: crate::limits::Period,
    }
    let claimed = <Claimed as serde::Deserialize>::deserialize(value).ok()?;
    let rates = [
        claimed.requests_per_minute,
        claimed.tokens_per_minute,
        claimed.concurrent_requests,
    ];
    if rates.contains(&Some(0)) {
        return None;
    }
    let budget = match claimed.budget {
        Some(b) if b.usd.is_finite() && b.usd > 0.0 => Some(crate::limits::Budget {
            usd: b.usd,
            per: b.per,
            cut: false,
        }),
        Some(_) => return None,
        None => None,
    };
    Some(crate::limits::Limits {
        requests_per_minute: claimed.requests_per_minute,
        tokens_per_minute: claimed.tokens_per_minute,
        concurrent_requests: claimed.concurrent_requests,
        budget,
    })
}

/// Keeps every JWKS URL's keys fresh: fetched as soon as a config names the URL, then every
/// [`REFRESH_EVERY`]; a failed fetch keeps the keys already known.
pub struct JwksService;

/// How often a JWKS URL is fetched again without an unknown `kid` asking for it.
const REFRESH_EVERY: Duration = Duration::from_secs(300);

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for JwksService {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let registry = crate::runtime::registry();
        loop {
            let added = registry.jwks_added.notified();
            for jwks in registry.jwks_sets() {
                jwks.refresh(REFRESH_EVERY).await;
            }
            tokio::select! {
                _ = added => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// Tokens already verified, by their exact text: an agent sends the same token with every
/// request, and an RS256 or ES256 signature check costs tens of microseconds. Kept until the
/// token expires (at most [`REMEMBER_FOR`]), bounded in count; a reload starts afresh.
pub struct Verified {
    cache: moka::sync::Cache<Box<str>, Arc<JwtCaller>>,
}

/// The longest a verified token is trusted without checking it again.
const REMEMBER_FOR: Duration = Duration::from_secs(300);

impl Default for Verified {
    fn default() -> Self {
        Verified {
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(REMEMBER_FOR)
                .build(),
        }
    }
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are credentials.
        write!(f, "Verified({} tokens)", self.cache.entry_count())
    }
}

impl Verified {
    /// The caller of a token verified before and not yet expired.
    pub fn get(&self, token: &str) -> Option<Arc<JwtCaller>> {
        let caller = self.cache.get(token)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(u64::MAX, |d| d.as_secs());
        (caller.expires > now).then_some(caller)
    }

    pub fn insert(&self, token: &str, caller: Arc<JwtCaller>) {
        self.cache.insert(token.into(), caller);
    }
}
