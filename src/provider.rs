//! Providers at runtime: endpoints, credentials, and how each kind wants to be called.
//!
//! URL shapes and auth headers per kind follow TRANSLATION.md §1: OpenAI and compatible
//! servers take `Authorization: Bearer`, Azure puts the deployment in the path with an
//! `api-version` query and an `api-key` header, Anthropic wants `x-api-key` plus
//! `anthropic-version`, Gemini puts the model and method in the path with `x-goog-api-key`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::config::Secret;
use crate::format::Format;
use crate::pool::health::HealthPolicy;
use crate::pool::{Pool, PoolSpec};
use crate::routes::Operation;
use crate::runtime::HostState;
use pingora_http::RequestHeader;

/// The API family a provider belongs to.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    Azure,
    OpenaiCompatible,
}

impl ProviderKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Azure => "azure",
            ProviderKind::OpenaiCompatible => "openai-compatible",
        }
    }

    /// The public endpoint used when the config names none.
    pub const fn default_endpoint(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Azure | ProviderKind::OpenaiCompatible => None,
        }
    }

    /// The format this provider is spoken to in, for a client speaking `client`.
    ///
    /// OpenAI and Azure serve the Responses API natively, so a Responses client passes
    /// through to them; OpenAI-compatible servers are only assumed to speak Chat Completions.
    pub fn format_for(self, client: Format) -> Format {
        match self {
            ProviderKind::Openai | ProviderKind::Azure if client == Format::OpenAiResponses => {
                Format::OpenAiResponses
            }
            ProviderKind::Openai | ProviderKind::Azure | ProviderKind::OpenaiCompatible => {
                Format::OpenAiChat
            }
            ProviderKind::Anthropic => Format::Anthropic,
            ProviderKind::Gemini => Format::Gemini,
        }
    }

    /// The provider's own token-counting endpoint, other than Anthropic's (which takes the
    /// client's request as it is). `None` for kinds without one.
    pub fn count_api(self) -> Option<crate::translate::CountApi> {
        match self {
            ProviderKind::Gemini => Some(crate::translate::CountApi::Gemini),
            ProviderKind::Openai => Some(crate::translate::CountApi::OpenAi),
            ProviderKind::Anthropic | ProviderKind::Azure | ProviderKind::OpenaiCompatible => None,
        }
    }

    /// Whether the provider counts tokens itself.
    pub fn counts_tokens(self) -> bool {
        self == ProviderKind::Anthropic || self.count_api().is_some()
    }

    /// Whether the provider serves OpenAI's embeddings endpoint.
    pub fn has_embeddings(self) -> bool {
        matches!(
            self,
            ProviderKind::Openai | ProviderKind::Azure | ProviderKind::OpenaiCompatible
        )
    }
}

/// Time limits on one upstream exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until the response headers arrive.
    pub first_byte: Duration,
    /// Between two reads of the response body.
    pub idle: Duration,
    /// The whole exchange; `None` = unbounded (long streams are normal).
    pub total: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            // Non-streaming answers of reasoning models can take minutes before a byte.
            first_byte: Duration::from_secs(300),
            idle: Duration::from_secs(120),
            total: None,
        }
    }
}

/// One base URL of a provider.
#[derive(Debug)]
pub struct Endpoint {
    /// As written in the config; used as the `endpoint` metric label.
    pub url: Arc<str>,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix from the URL (e.g. `/openai` for Groq), without a trailing `/v1`.
    pub base_path: String,
    /// Value of the upstream `Host` header.
    pub authority: HeaderValue,
    pub weight: u32,
    /// The host's addresses, kept by the runtime registry across reloads and refreshed in
    /// the background (`crate::dns`).
    pub resolution: Arc<HostState>,
    /// The provider's `tls:` (a private CA, a client certificate), for https endpoints.
    pub upstream_tls: Option<Arc<crate::tls::UpstreamTls>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{0}: expected http://host[:port][/path] or https://…")]
    BadUrl(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

impl Endpoint {
    pub fn parse(url: &str, weight: u32) -> Result<Endpoint, EndpointError> {
        let bad = || EndpointError::BadUrl(url.to_owned());
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
            return Err(bad());
        }
        let (host, port) =
            split_host_port(authority, if tls { 443 } else { 80 }).ok_or_else(bad)?;
        let base_path = path.trim_end_matches('/');
        // SDK base URLs conventionally end in /v1; sira appends the full route itself.
        let base_path = base_path
            .strip_suffix("/v1")
            .unwrap_or(base_path)
            .to_owned();
        let default_port = if tls { 443 } else { 80 };
        let authority_text = if port == default_port {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let authority = HeaderValue::from_str(&authority_text).map_err(|_| bad())?;
        let resolution = crate::runtime::registry().host(&host, port);
        Ok(Endpoint {
            url: url.into(),
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            base_path,
            authority,
            weight,
            resolution,
            upstream_tls: None,
        })
    }

    /// The socket address to connect to: the last answer for the host, read without a
    /// lookup. Only a name never resolved yet (just after start, or just added by a
    /// reload) waits, at most `wait`, for the DNS service's first answer.
    pub async fn addr(&self, wait: Duration) -> Result<SocketAddr, EndpointError> {
        self.resolution
            .addr(wait)
            .await
            .ok_or_else(|| EndpointError::Resolve {
                host: self.host.clone(),
                reason: self
                    .resolution
                    .last_error()
                    .map_or_else(|| "no answer yet".to_owned(), |e| e.to_string()),
            })
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(v6_end) = authority.strip_prefix('[').and_then(|a| a.find(']')) {
        let host = &authority[..v6_end + 2];
        let port = match &authority[v6_end + 2..] {
            "" => default_port,
            rest => rest.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
}

/// A configured provider.
#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// How a try picks one of `endpoints`, and what is known of their health.
    pub pool: Pool,
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
    /// Azure: model name → deployment name.
    pub deployments: AHashMap<String, String>,
    /// Added to every upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeouts: Timeouts,
    pub anthropic_version: HeaderValue,
    /// Built once per config: the credential header and the `x-sira-provider` value are
    /// the same on every request.
    auth: Option<(HeaderName, HeaderValue)>,
    pub name_header: Option<HeaderValue>,
}

/// Anthropic API version sent when neither the client nor the config names one.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// Azure OpenAI API version used when the config names none.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

impl Provider {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        kind: ProviderKind,
        endpoints: Vec<Endpoint>,
        api_key: Option<Secret>,
        api_version: Option<String>,
        deployments: AHashMap<String, String>,
        headers: Vec<(HeaderName, HeaderValue)>,
        timeouts: Timeouts,
        anthropic_version: HeaderValue,
    ) -> Provider {
        let auth = api_key
            .as_ref()
            .and_then(|key| auth_header(kind, key.expose()));
        let name: Arc<str> = name.into();
        let endpoints: Vec<Arc<Endpoint>> = endpoints.into_iter().map(Arc::new).collect();
        let pool = Pool::new(&name, &endpoints, PoolSpec::default(), |_, _| None);
        Provider {
            name_header: HeaderValue::from_str(&name).ok(),
            name,
            kind,
            endpoints,
            pool,
            api_key,
            api_version,
            deployments,
            headers,
            timeouts,
            anthropic_version,
            auth,
        }
    }

    /// A provider of `kind` on `urls` with no key and default settings, for tests.
    #[cfg(test)]
    pub fn for_tests(name: &str, kind: ProviderKind, urls: &[&str]) -> Provider {
        let endpoints = urls
            .iter()
            .filter_map(|url| Endpoint::parse(url, 1).ok())
            .collect();
        Provider::new(
            name,
            kind,
            endpoints,
            None,
            None,
            AHashMap::new(),
            Vec::new(),
            Timeouts::default(),
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        )
    }

    /// Replaces the default pool (round robin, passive only) with the configured one.
    pub fn with_pool(mut self, spec: PoolSpec) -> Provider {
        self.pool = Pool::new(&self.name, &self.endpoints, spec, |endpoint, policy| {
            self.health_request(endpoint, policy)
        });
        self
    }

    /// The active health check's request: the configured path, or the kind's model list,
    /// which every provider serves for free. Never a completion.
    fn health_request(&self, endpoint: &Endpoint, policy: &HealthPolicy) -> Option<RequestHeader> {
        let path = match &policy.path {
            Some(path) => path.clone(),
            None => self.models_path(endpoint, false),
        };
        self.get_request(endpoint, &path, "sira-health-check")
    }

    /// The provider's model list (`GET /v1/models` of [`crate::models::catalog`]), asked
    /// for in one page.
    pub fn models_request(&self, endpoint: &Endpoint) -> Option<RequestHeader> {
        self.get_request(endpoint, &self.models_path(endpoint, true), "sira")
    }

    fn models_path(&self, endpoint: &Endpoint, whole: bool) -> String {
        let base = &endpoint.base_path;
        match (self.kind, whole) {
            (ProviderKind::Anthropic, true) => format!("{base}/v1/models?limit=1000"),
            (
                ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Anthropic,
                _,
            ) => {
                format!("{base}/v1/models")
            }
            (ProviderKind::Gemini, true) => format!("{base}/v1beta/models?pageSize=1000"),
            (ProviderKind::Gemini, false) => format!("{base}/v1beta/models"),
            (ProviderKind::Azure, _) => format!(
                "{base}/openai/models?api-version={}",
                self.api_version
                    .as_deref()
                    .unwrap_or(DEFAULT_AZURE_API_VERSION)
            ),
        }
    }

    /// A GET to this provider with its credentials and fixed headers.
    fn get_request(
        &self,
        endpoint: &Endpoint,
        path: &str,
        agent: &'static str,
    ) -> Option<RequestHeader> {
        let mut request = RequestHeader::build("GET", path.as_bytes(), None).ok()?;
        request
            .insert_header(http::header::HOST, endpoint.authority.clone())
            .ok()?;
        request
            .insert_header(http::header::USER_AGENT, agent)
            .ok()?;
        // Without the field any coding is acceptable, and the exchange refuses coded answers.
        request
            .insert_header(http::header::ACCEPT_ENCODING, "identity")
            .ok()?;
        for (name, value) in &self.headers {
            request.insert_header(name.clone(), value.clone()).ok()?;
        }
        if self.kind == ProviderKind::Anthropic {
            request
                .insert_header("anthropic-version", self.anthropic_version.clone())
                .ok()?;
        }
        if let Some((name, value)) = &self.auth {
            request.insert_header(name.clone(), value.clone()).ok()?;
        }
        Some(request)
    }

    /// Path and query of the upstream request for `op` on this provider, built from
    /// known parts: the endpoint's base path (from the config), fixed route text, and — for
    /// Gemini and Azure, whose model or deployment is a path segment — a model name that
    /// must be one plain segment ([`check_path_segment`]). Nothing from the client is ever
    /// spliced in unchecked: `..`, `/`, `%2F`, `?` or `#` in a model name cannot change the
    /// upstream path or query.
    pub fn upstream_path(
        &self,
        endpoint: &Endpoint,
        op: Operation,
        model: &str,
        stream: bool,
    ) -> Result<String, InvalidModelName> {
        let base = &endpoint.base_path;
        let segment = |value: &str| -> Result<(), InvalidModelName> {
            check_path_segment(value).map_err(|reason| InvalidModelName {
                provider: self.name.clone(),
                kind: self.kind,
                name: value.to_owned(),
                reason,
            })
        };
        Ok(match (self.kind, op) {
            (ProviderKind::Azure, _) => {
                let deployment = self.deployments.get(model).map_or(model, String::as_str);
                let version = self
                    .api_version
                    .as_deref()
                    .unwrap_or(DEFAULT_AZURE_API_VERSION);
                match op {
                    Operation::Responses => {
                        format!("{base}/openai/v1/responses?api-version={version}")
                    }
                    Operation::Embeddings => {
                        segment(deployment)?;
                        format!("{base}/openai/deployments/{deployment}/embeddings?api-version={version}")
                    }
                    _ => {
                        segment(deployment)?;
                        format!("{base}/openai/deployments/{deployment}/chat/completions?api-version={version}")
                    }
                }
            }
            (ProviderKind::Gemini, op) => {
                segment(model)?;
                match op {
                    Operation::CountTokens => format!("{base}/v1beta/models/{model}:countTokens"),
                    _ if stream => {
                        format!("{base}/v1beta/models/{model}:streamGenerateContent?alt=sse")
                    }
                    _ => format!("{base}/v1beta/models/{model}:generateContent"),
                }
            }
            (ProviderKind::Anthropic, Operation::CountTokens) => {
                format!("{base}/v1/messages/count_tokens")
            }
            (ProviderKind::Anthropic, _) => format!("{base}/v1/messages"),
            (ProviderKind::Openai, Operation::CountTokens) => {
                format!("{base}/v1/responses/input_tokens")
            }
            (_, Operation::Embeddings) => format!("{base}/v1/embeddings"),
            (_, Operation::Responses)
                if self.kind.format_for(Format::OpenAiResponses) == Format::OpenAiResponses =>
            {
                format!("{base}/v1/responses")
            }
            (_, _) => format!("{base}/v1/chat/completions"),
        })
    }

    /// Whether this provider puts the model name in the URL path (and so only accepts
    /// names that are one plain path segment).
    pub fn model_in_path(&self) -> bool {
        matches!(self.kind, ProviderKind::Gemini | ProviderKind::Azure)
    }

    /// The credential header this provider expects, if it has a key.
    pub fn auth_header(&self) -> Option<(HeaderName, HeaderValue)> {
        self.auth.clone()
    }
}

/// A model (or Azure deployment) name that cannot be one segment of the provider's URL.
#[derive(Debug, thiserror::Error)]
#[error("model `{name}` cannot be sent to provider {provider:?} ({}): {reason}", kind.as_str())]
pub struct InvalidModelName {
    pub provider: Arc<str>,
    pub kind: ProviderKind,
    pub name: String,
    pub reason: &'static str,
}

/// The grammar of a model or deployment name that goes into a URL path: Gemini's
/// (`gemini-2.5-flash`, `gemini-2.0-flash-exp`) and Azure's deployment names are letters,
/// digits, `.`, `_` and `-`. Anything else — `/`, `%`, `?`, `#`, `:` (Gemini's method
/// separator), a leading `.` (`..`) — could change the path or query and is refused.
pub fn check_path_segment(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("it is empty");
    }
    if value.len() > 256 {
        return Err("it is longer than 256 characters");
    }
    if value.starts_with('.') {
        return Err("it starts with `.`");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only letters, digits, `.`, `_` and `-` can go into the provider's URL");
    }
    Ok(())
}

fn auth_header(kind: ProviderKind, key: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, mut value) = match kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => (
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).ok()?,
        ),
        ProviderKind::Azure => (
            HeaderName::from_static("api-key"),
            HeaderValue::from_str(key).ok()?,
        ),
        ProviderKind::Anthropic => (
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(key).ok()?,
        ),
        ProviderKind::Gemini => (
            HeaderName::from_static("x-goog-api-key"),
            HeaderValue::from_str(key).ok()?,
        ),
    };
    value.set_sensitive(true);
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("https://api.openai.com", 1).unwrap();
        assert!(e.tls);
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("api.openai.com", 443, "")
        );
        assert_eq!(e.authority, "api.openai.com");

        let e = Endpoint::parse("http://10.0.0.5:8000/v1/", 2).unwrap();
        assert_eq!((e.port, e.base_path.as_str(), e.weight), (8000, "", 2));
        assert_eq!(e.authority, "10.0.0.5:8000");

        let e = Endpoint::parse("https://api.groq.com/openai/v1", 1).unwrap();
        assert_eq!(e.base_path, "/openai");

        let e = Endpoint::parse("http://[::1]:9000", 1).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));

        for bad in [
            "api.openai.com",
            "ftp://x",
            "http://",
            "http://h:port",
            "http://u@h",
            "http://h/p?q=1",
        ] {
            assert!(Endpoint::parse(bad, 1).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn ip_literals_need_no_dns() {
        let e = Endpoint::parse("http://127.0.0.1:9", 1).unwrap();
        assert_eq!(
            e.addr(Duration::ZERO).await.unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
    }

    fn provider(kind: ProviderKind, urls: &[(&str, u32)]) -> Provider {
        let endpoints = urls
            .iter()
            .map(|(u, w)| Endpoint::parse(u, *w).unwrap())
            .collect();
        Provider::new(
            "p",
            kind,
            endpoints,
            Some(Secret::new("k".into())),
            None,
            AHashMap::from_iter([("gpt-4o".to_owned(), "my-dep".to_owned())]),
            Vec::new(),
            Timeouts::default(),
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        )
    }

    #[test]
    fn builds_paths_per_kind() {
        let p = provider(ProviderKind::Azure, &[("https://r.openai.azure.com", 1)]);
        let e = &p.endpoints[0];
        assert_eq!(
            p.upstream_path(e, Operation::ChatCompletions, "gpt-4o", false)
                .unwrap(),
            "/openai/deployments/my-dep/chat/completions?api-version=2024-10-21"
        );
        let p = provider(ProviderKind::Gemini, &[("https://g", 1)]);
        assert_eq!(
            p.upstream_path(
                &p.endpoints[0],
                Operation::ChatCompletions,
                "gemini-2.5-flash",
                true
            )
            .unwrap(),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let p = provider(ProviderKind::OpenaiCompatible, &[("http://h/prefix/v1", 1)]);
        assert_eq!(
            p.upstream_path(&p.endpoints[0], Operation::Responses, "m", false)
                .unwrap(),
            "/prefix/v1/chat/completions"
        );
        let p = provider(ProviderKind::Openai, &[("https://api.openai.com", 1)]);
        assert_eq!(
            p.upstream_path(&p.endpoints[0], Operation::Responses, "m", true)
                .unwrap(),
            "/v1/responses"
        );
    }

    #[test]
    fn client_model_names_cannot_change_the_upstream_path() {
        let gemini = provider(ProviderKind::Gemini, &[("https://g", 1)]);
        let azure = provider(ProviderKind::Azure, &[("https://r.openai.azure.com", 1)]);
        for hostile in [
            "../../v1beta/cachedContents?x=",
            "gemini/../x",
            "gemini%2F..%2Fx",
            "a?key=1",
            "a#frag",
            "..",
            ".hidden",
            "gemini-pro:countTokens",
            "a b",
            "",
        ] {
            for p in [&gemini, &azure] {
                let e = p
                    .upstream_path(&p.endpoints[0], Operation::ChatCompletions, hostile, false)
                    .unwrap_err();
                assert_eq!(e.name, hostile);
            }
        }
        // Names in the body need no such care: any string is JSON-escaped.
        let openai = provider(ProviderKind::Openai, &[("https://api.openai.com", 1)]);
        let path = openai
            .upstream_path(
                &openai.endpoints[0],
                Operation::ChatCompletions,
                "../x?y",
                false,
            )
            .unwrap();
        assert_eq!(path, "/v1/chat/completions");
    }

    #[test]
    fn weighted_round_robin_and_skip() {
        let p = provider(ProviderKind::Openai, &[("http://a", 2), ("http://b", 1)]).with_pool(
            crate::pool::PoolSpec {
                balance: crate::pool::Balance::Weighted,
                ..Default::default()
            },
        );
        let picks: Vec<usize> = (0..300)
            .map(|_| p.pool.select(None, &[]).unwrap().index)
            .collect();
        let first = picks.iter().filter(|i| **i == 0).count();
        assert!((180..=220).contains(&first), "weight 2 of 3: {first}/300");
        for _ in 0..6 {
            assert_eq!(p.pool.select(None, &[0]).unwrap().index, 1);
        }
        // Every endpoint failed: one is chosen again rather than none.
        assert!(p.pool.select(None, &[0, 1]).unwrap().index < 2);
    }

    #[test]
    fn auth_headers_are_marked_sensitive() {
        let (name, value) = provider(ProviderKind::Anthropic, &[("https://a", 1)])
            .auth_header()
            .unwrap();
        assert_eq!(name, "x-api-key");
        assert!(value.is_sensitive());
    }
}
