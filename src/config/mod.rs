//! Configuration: YAML file → validated, compiled [`Snapshot`].
//!
//! `load` is the only entry point. It parses the YAML, expands `${…}` references, then
//! deserialises each section and each entry on its own so that one run reports every
//! problem with its path (`models.gpt-4o.targets[0].provider: unknown provider "opneai"`).
//! `build` then checks cross-references and compiles the runtime tables. Nothing fallible
//! is left for request time, and nothing here runs on the request path.

mod build;
pub mod cache;
mod defaults;
pub mod file;
mod interpolate;
mod jwt;
pub mod keys;
pub mod limits;
pub mod live;
mod pool;
mod secret;
mod server;
mod store;
pub mod tls;
pub mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use sha2::{Digest, Sha256};

pub use defaults::builtin_default;
pub use file::LogFormat;
pub use interpolate::{ProcessSource, Source};
pub use live::Live;
pub use secret::Secret;

use crate::auth::KeyTable;
use crate::models::ModelTable;
use crate::provider::Provider;

/// One problem found in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path to the offending value (`providers.openai.endpoints[0]`); empty for the
    /// document as a whole.
    pub path: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded: every problem found, in file order.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", ProblemList(.0))]
    Invalid(Vec<ConfigProblem>),
}

struct ProblemList<'a>(&'a [ConfigProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Where the access log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct LoggingSettings {
    /// A `tracing` filter directive (`info`, `sira=debug`, …).
    pub level: String,
    pub access_log: AccessLogTarget,
    pub format: LogFormat,
}

/// Listener and process settings. Listeners are bound once at startup; a reload that
/// changes them is applied to everything else and logged as needing a restart.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub admin_token: Option<Secret>,
    /// `server.reasoning_key`: the secret the reasoning seal is derived from.
    pub reasoning_key: Option<Secret>,
    pub threads: usize,
    pub max_request_body: u64,
    pub grace_period: Duration,
    /// A client must send its request header within this, from its first byte.
    pub header_timeout: Duration,
    /// ... and its whole request body within this.
    pub body_timeout: Duration,
    /// A response write the client does not accept within this ends the response.
    pub write_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request.
    pub keepalive: Duration,
    pub max_header_size: usize,
    pub max_headers: usize,
    /// One event of a provider's stream.
    pub max_sse_event: usize,
    /// A provider's response body read whole (translated JSON).
    pub max_response_body: usize,
    /// A tool call's arguments held back while a stream is translated.
    pub max_tool_arguments: usize,
    /// DNS servers for provider host names; empty = the system's configuration.
    pub resolver: Vec<SocketAddr>,
    /// `server.tls`: listeners that terminate TLS.
    pub tls: Vec<tls::TlsListener>,
}

/// Facts about where a snapshot came from, shown by `/admin/config`.
#[derive(Clone, Debug)]
pub struct ConfigMeta {
    /// `None` for the built-in default.
    pub path: Option<PathBuf>,
    /// SHA-256 of the file's bytes (of the empty string for the built-in default).
    pub sha256: String,
    pub loaded_at: SystemTime,
}

/// The compiled, validated configuration. Immutable: a reload builds a new one and swaps
/// it in whole (see [`live`]); each request pins the snapshot it started with.
#[derive(Debug)]
pub struct Snapshot {
    pub server: ServerSettings,
    pub providers: IndexMap<Arc<str>, Arc<Provider>>,
    pub models: ModelTable,
    /// Empty (and no issued keys, no `auth.mode: keys`) = clients are not authenticated.
    pub keys: KeyTable,
    /// Keys issued through `/admin/keys`, compiled against this snapshot and swapped
    /// whenever the key store changes ([`crate::keystore`]).
    pub issued: arc_swap::ArcSwap<KeyTable>,
    /// Where issued keys are kept; `None` with `auth.key_store: off` or no config file.
    pub key_store: Option<crate::keystore::Location>,
    /// `filters:` by name, for issued keys that name them.
    pub filters: ahash::AHashMap<String, Arc<dyn lua_free_filters::Filter>>,
    /// `auth.jwt`: the issuers whose tokens are accepted.
    pub jwt: Vec<crate::auth::jwt::Issuer>,
    /// Tokens this snapshot's issuers already verified.
    pub verified: crate::auth::jwt::Verified,
    /// `alerts:`: where budget and limit alerts go.
    pub alerts: Option<Arc<crate::limits::alerts::Alerts>>,
    /// Tenants by name: groups of keys with limits of their own.
    pub tenants: ahash::AHashMap<String, Arc<limits::Tenant>>,
    pub logging: LoggingSettings,
    /// Seals the reasoning carriers sira issues (see [`crate::translate::Seal`]).
    pub seal: crate::translate::Seal,
    /// Where `store: true` responses are kept; `None` with `responses_store: off`.
    pub responses_store: Option<Arc<crate::responses_store::ResponseStore>>,
    /// `cache:`: the response cache, and whether its answers are shared by every caller.
    pub cache: Option<cache::CacheSection>,
    /// `limits.store: {redis: …}`: the fleet's store of limits; `None` keeps them in memory.
    pub limits_store: Option<Arc<crate::limits::shared::SharedStore>>,
    pub meta: ConfigMeta,
    /// What the config leaves out that was likely meant (a provider without a key): shown
    /// by `sira check`, logged at start.
    pub notes: Vec<String>,
    /// `auth.mode: open`: serving without authentication beyond loopback was asked for.
    pub auth_open: bool,
}

/// Reads and compiles a config file, expanding references from the process environment.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, Some(path), &ProcessSource)
}

/// Compiles config text; `path` is recorded in the snapshot's metadata.
pub fn parse(
    text: &str,
    path: Option<&Path>,
    source: &dyn Source,
) -> Result<Snapshot, ConfigError> {
    let meta = ConfigMeta {
        path: path.map(Path::to_owned),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        loaded_at: SystemTime::now(),
    };
    let mut problems = Vec::new();
    let mut document: Value = match serde_yaml::from_str(text) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(value) => value,
        Err(e) => {
            return Err(ConfigError::Invalid(vec![ConfigProblem::new(
                "",
                yaml_syntax_message(&e, path),
            )]))
        }
    };
    interpolate::interpolate_tree(&mut document, source, &mut problems);
    let raw: file::RawFile = match section(document, "", &mut problems) {
        Some(raw) => raw,
        None => return Err(ConfigError::Invalid(problems)),
    };
    let snapshot = build::build(raw, meta, &mut problems);
    match snapshot {
        Some(snapshot) if problems.is_empty() => Ok(snapshot),
        _ => Err(ConfigError::Invalid(problems)),
    }
}

/// Deserialises one value, recording a problem with its full path on failure.
pub(crate) fn section<T: DeserializeOwned>(
    value: Value,
    path: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            let inner = e.path().to_string();
            let full = match (path.is_empty(), inner.as_str()) {
                (_, ".") => path.to_owned(),
                (true, inner) => inner.to_owned(),
                (false, inner) if inner.starts_with('[') => format!("{path}{inner}"),
                (false, inner) => format!("{path}.{inner}"),
            };
            problems.push(ConfigProblem::new(
                full,
                redact_values(&e.into_inner().to_string()),
            ));
            None
        }
    }
}

/// Serde quotes offending values in its messages (`invalid type: string "…"`); the value may
/// be an expanded secret, so the quoted parts are dropped. Field and variant names are in
/// backticks and stay.
fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quotes = false;
    for c in message.chars() {
        match (c, in_quotes) {
            ('"', false) => {
                in_quotes = true;
                out.push_str("\"…");
            }
            ('"', true) => {
                in_quotes = false;
                out.push('"');
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    // serde_yaml appends " at line L column C" for errors it can place; those refer to the
    // interpolated tree, not the file, so they would mislead.
    match out.find(" at line ") {
        Some(pos) => out[..pos].to_owned(),
        None => out,
    }
}

fn yaml_syntax_message(e: &serde_yaml::Error, path: Option<&Path>) -> String {
    // Syntax errors are positioned in the file itself (interpolation has not run yet), so
    // the file is named with its line and column, as an editor jumps to them.
    match (path, e.location()) {
        (Some(path), Some(at)) => {
            // The position leads the line; serde_yaml's own " at line L column C" goes.
            let text = e.to_string();
            let said = format!(" at line {} column {}", at.line(), at.column());
            format!(
                "{}:{}:{}: invalid YAML: {}",
                path.display(),
                at.line(),
                at.column(),
                text.replacen(&said, "", 1)
            )
        }
        (Some(path), None) => format!("{}: invalid YAML: {e}", path.display()),
        (None, _) => format!("invalid YAML: {e}"),
    }
}

#[cfg(test)]
mod tests;
