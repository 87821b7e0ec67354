//! The on-disk YAML schema, exactly as operators write it.
//!
//! Every struct denies unknown keys so a typo fails `sira check` instead of silently doing
//! nothing. These types are only ever read by `config::build`, which validates them and
//! compiles the runtime [`Snapshot`](super::Snapshot); the request path never sees them.
//! Sections of CONTRACT.md that this build does not implement yet are accepted as raw YAML
//! here and refused by `build` with a message saying so, rather than as "unknown field".

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml::Value;

use super::units::{opt_number_or_string, ByteSize, HumanDuration};
use crate::provider::ProviderKind;

/// The top level. Each section is kept as raw YAML and deserialised on its own by
/// `config::load`, so that one bad provider does not hide the problems of the others.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub server: Option<Value>,
    #[serde(default)]
    pub providers: Option<Value>,
    #[serde(default)]
    pub models: Option<Value>,
    #[serde(default)]
    pub auth: Option<Value>,
    #[serde(default)]
    pub filters: Option<Value>,
    #[serde(default)]
    pub logging: Option<Value>,
    #[serde(default)]
    pub tenants: Option<Value>,
    #[serde(default)]
    pub limits: Option<Value>,
    #[serde(default)]
    pub cache: Option<Value>,
    #[serde(default)]
    pub responses_store: Option<Value>,
    #[serde(default)]
    pub alerts: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Plain HTTP/1.1 (and h2c) listeners.
    #[serde(default)]
    pub listen: Option<Vec<String>>,
    /// TLS listeners (one or a list), built by `config::tls`.
    #[serde(default)]
    pub tls: Option<Value>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/admin/*`).
    #[serde(default)]
    pub admin: Option<String>,
    /// Bearer token required on `/admin/*` when set.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Seals the reasoning sira hands clients to carry; every host of a fleet needs the same.
    #[serde(default)]
    pub reasoning_key: Option<String>,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub threads: Option<usize>,
    #[serde(default)]
    pub max_request_body: Option<ByteSize>,
    #[serde(default)]
    pub grace_period: Option<HumanDuration>,
    /// Time limits on clients.
    #[serde(default)]
    pub timeouts: ClientTimeoutsConfig,
    /// A request header larger than this is answered with 431.
    #[serde(default)]
    pub max_header_size: Option<ByteSize>,
    /// A request header with more fields than this is answered with 431.
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub max_headers: Option<usize>,
    /// Bounds on what a provider's response may make the gateway hold.
    #[serde(default)]
    pub max_sse_event: Option<ByteSize>,
    #[serde(default)]
    pub max_response_body: Option<ByteSize>,
    #[serde(default)]
    pub max_tool_arguments: Option<ByteSize>,
    /// DNS servers for provider host names (`ip` or `ip:port`); default: the system's.
    #[serde(default)]
    pub resolver: Option<Vec<String>>,
}

/// `server.timeouts`: how long a client may take.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTimeoutsConfig {
    /// To send a request header, from its first byte (from the connection's start for the
    /// first request).
    #[serde(default)]
    pub header: Option<HumanDuration>,
    /// To send the whole request body.
    #[serde(default)]
    pub body: Option<HumanDuration>,
    /// To accept each write of the response (a client that stops reading).
    #[serde(default)]
    pub write: Option<HumanDuration>,
    /// An idle keep-alive connection waits this long for its next request.
    #[serde(default)]
    pub keepalive: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Base URLs; optional for kinds with a well-known public endpoint.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default)]
    pub api_key: Option<String>,
    /// Azure's `api-version` query parameter.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Azure: client model name → deployment name.
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
    /// Extra headers added to every upstream request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Anthropic's `anthropic-version` header when the client sends none.
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// How a try picks an endpoint: `round-robin` (default), `weighted`, `least-latency`,
    /// `consistent-hash`.
    #[serde(default)]
    pub balance: Option<crate::pool::Balance>,
    /// What `consistent-hash` hashes: `header:NAME`, `client-key`, `user`,
    /// `prompt-prefix:BYTES`.
    #[serde(default)]
    pub hash_key: Option<String>,
    /// Bounded loads: no endpoint takes more than this times the mean in-flight load.
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub balance_load_factor: Option<f64>,
    /// Active health checks; omitted = passive only.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// Passive ejection per endpoint.
    #[serde(default)]
    pub circuit: Option<CircuitConfig>,
    /// TLS to the provider: a private CA, a client certificate.
    #[serde(default)]
    pub tls: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Absolute path on the endpoint; omitted = the kind's model list.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub interval: Option<HumanDuration>,
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub healthy_after: Option<u32>,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub unhealthy_after: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Failures within `window` that open the circuit; 0 turns it off.
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub failures: Option<u32>,
    #[serde(default)]
    pub window: Option<HumanDuration>,
    #[serde(default)]
    pub open_for: Option<HumanDuration>,
}

/// `"https://host"` or `{ url: "https://host", weight: 2 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EndpointConfig {
    Url(String),
    Weighted(WeightedEndpoint),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedEndpoint {
    pub url: String,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(default)]
    pub connect: Option<HumanDuration>,
    /// Until the response headers arrive.
    #[serde(default)]
    pub first_byte: Option<HumanDuration>,
    /// Between two reads of the response body.
    #[serde(default)]
    pub idle: Option<HumanDuration>,
    /// The whole exchange, streams included.
    #[serde(default)]
    pub total: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub pricing: Option<PricingConfig>,
    /// Other model names tried in order when every target failed before the first byte.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Names of `filters:` entries applied to requests for this model.
    #[serde(default)]
    pub filters: Vec<String>,
    /// `max_tokens` sent to Anthropic when the client gave none (Anthropic requires it).
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub default_max_tokens: Option<u32>,
    /// How targets are ordered: `weighted` (default), `ordered`, `lowest-cost`,
    /// `lowest-latency`.
    #[serde(default)]
    pub route: Option<crate::models::RouteStrategy>,
    /// A second attempt when the first byte is slow (opt-in: it may cost a generation).
    #[serde(default)]
    pub hedge: Option<HedgeConfig>,
    /// `auto` (default): Anthropic cache breakpoints for clients of other formats; `off`.
    #[serde(default)]
    pub prompt_cache: Option<PromptCache>,
    /// `drop` (default): a client's hosted web search is dropped and listed; `native`: the
    /// provider's own search runs it (Anthropic's web search tool, Gemini's Google Search).
    #[serde(default)]
    pub web_search: Option<WebSearchMode>,
    /// Limits on the model entry, whoever calls it.
    #[serde(default)]
    pub limits: Option<Value>,
    /// Whether and how long the response cache keeps this entry's answers.
    #[serde(default)]
    pub cache: Option<Value>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PromptCache {
    Auto,
    Off,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebSearchMode {
    Native,
    Drop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    pub after: HumanDuration,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub max: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub provider: String,
    /// The upstream model name; omitted = the client's name (for a wildcard entry, the part
    /// the `*` matched).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub weight: Option<u32>,
    /// The target's name for `x-sira-route` and `pinned_keys`; default: the provider's.
    #[serde(default)]
    pub name: Option<String>,
    /// This target's prices, when they differ from the entry's (`route: lowest-cost`).
    #[serde(default)]
    pub pricing: Option<PricingConfig>,
    /// Keys whose requests try this target first (a canary for one team).
    #[serde(default)]
    pub pinned_keys: Vec<String>,
}

/// USD per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub input: Option<f64>,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub output: Option<f64>,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub cached_input: Option<f64>,
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub cache_write: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default, deserialize_with = "opt_number_or_string")]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub backoff: Option<HumanDuration>,
    #[serde(default)]
    pub max_backoff: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `open`: serve without authentication even beyond loopback (refused otherwise).
    #[serde(default)]
    pub mode: Option<AuthMode>,
    #[serde(default)]
    pub keys: Option<Value>,
    /// `auth.jwt`: one issuer or a list.
    #[serde(default)]
    pub jwt: Option<Value>,
    /// Where keys issued through `POST /admin/keys` live: a file path, `redis` (the
    /// `limits.store` Redis), or `off`. Default: Redis when `limits.store` is Redis, else
    /// `$STATE_DIRECTORY/keys.json` under systemd, else `keys.json` beside the config.
    #[serde(default)]
    pub key_store: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Serve without authentication, even beyond loopback.
    Open,
    /// Require a key even when the config lists none (keys issued through the admin API).
    Keys,
}

/// `hash:` one `sha256:` digest, or several while a rotation overlaps, each optionally
/// with its own end.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HashSpec {
    One(String),
    Many(Vec<HashItem>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HashItem {
    Plain(String),
    Timed(TimedHash),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedHash {
    pub hash: String,
    /// RFC 3339 UTC (`2027-01-31T00:00:00Z`): the hash stops working then.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    /// `sha256:<64 hex digits>` of the secret key, or a list of them (rotation).
    #[serde(default)]
    pub hash: Option<HashSpec>,
    /// RFC 3339 UTC: the key stops working then (401 `expired_api_key`).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// A verified client certificate whose subject common name or an alternative name is
    /// this authenticates as this key (on a `server.tls` listener with `client_ca`).
    #[serde(default)]
    pub mtls_subject: Option<String>,
    /// Model names or globs this key may use; omitted = all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Names of `filters:` entries applied to this key's requests.
    #[serde(default)]
    pub filters: Vec<String>,
    /// The tenant (`tenants:`) whose limits this key shares.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub limits: Option<Value>,
    /// May choose a model's target with the `x-sira-route` header.
    #[serde(default)]
    pub route_header: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`, or a tracing filter directive.
    #[serde(default)]
    pub level: Option<String>,
    /// `stdout`, `off`, or a file path (reopened on SIGHUP).
    #[serde(default)]
    pub access_log: Option<String>,
    #[serde(default)]
    pub format: Option<LogFormat>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// Sections whose entries are deserialised one by one, in file order.
pub type Entries = IndexMap<String, Value>;
