//! `auth:` → the [`KeyTable`]: hashed API keys and keys a client certificate claims, each
//! with its models, filters, tenant, limits and end; `auth.jwt`, `auth.mode` and
//! `auth.key_store` are handed back for their own builders. Keys issued through the admin
//! API ([`crate::keystore`]) are compiled here too, by the same rules, against the snapshot
//! they serve under.

use std::sync::Arc;

use ahash::AHashMap;
use lua_free_filters::Filter;
use serde_yaml::Value;

use super::build::{resolve_filters, Builder};
use super::file::{AuthConfig, AuthMode, HashItem, HashSpec, KeyConfig, TimedHash};
use super::{section, ConfigProblem, Snapshot};
use crate::auth::{parse_hash, KeyEntry, KeyTable};
use crate::glob::Glob;
use crate::models::ModelTable;

/// What `auth:` says beyond its keys.
#[derive(Default)]
pub(super) struct AuthRest {
    pub jwt: Option<Value>,
    pub mode: Option<AuthMode>,
    pub key_store: Option<String>,
}

/// What a key's models, filters and tenant are resolved against.
pub(super) struct KeyScope<'a> {
    pub models: &'a ModelTable,
    pub filters: &'a AHashMap<String, Arc<dyn Filter>>,
    pub tenants: &'a AHashMap<String, Arc<super::limits::Tenant>>,
}

pub(super) fn build_keys(
    b: &mut Builder,
    value: Option<Value>,
    scope: &KeyScope,
    rest: &mut AuthRest,
) -> KeyTable {
    let mut table = KeyTable::default();
    let Some(auth) = value.and_then(|v| section::<AuthConfig>(v, "auth", b.problems)) else {
        return table;
    };
    rest.jwt = auth.jwt;
    rest.mode = auth.mode;
    rest.key_store = auth.key_store;
    table.require_key = auth.mode == Some(AuthMode::Keys);
    let Some(keys) = auth
        .keys
        .and_then(|v| section::<Vec<Value>>(v, "auth.keys", b.problems))
    else {
        return table;
    };
    let mut names = AHashMap::new();
    for (i, raw) in keys.into_iter().enumerate() {
        let path = format!("auth.keys[{i}]");
        let Some(key) = section::<KeyConfig>(raw, &path, b.problems) else {
            continue;
        };
        if let Some(previous) = names.insert(key.name.clone(), i) {
            b.problem(
                format!("{path}.name"),
                format!(
                    "duplicate key name {:?} (also auth.keys[{previous}])",
                    key.name
                ),
            );
        }
        add_key(b, &path, key, scope, &mut table, None, None);
    }
    table
}

/// Compiles one key into `table`, recording its problems under `path`. `others` is a
/// table whose hashes the key must not share (the config's, for an issued key): an issued
/// key with a problem is left out, while a config key is kept so that the keys after it
/// are checked against it (the config is refused anyway).
fn add_key(
    b: &mut Builder,
    path: &str,
    key: KeyConfig,
    scope: &KeyScope,
    table: &mut KeyTable,
    others: Option<&KeyTable>,
    id: Option<&str>,
) -> bool {
    let KeyConfig {
        name,
        hash,
        expires_at,
        models: allowed,
        filters: filter_names,
        tenant,
        limits,
        route_header,
        mtls_subject,
    } = key;
    let before = b.problems.len();
    let tenant = tenant.and_then(|t| match scope.tenants.get(&t) {
        Some(tenant) => Some(tenant.clone()),
        None => {
            b.problem(
                format!("{path}.tenant"),
                format!("unknown tenant {t:?}: add it under tenants:"),
            );
            None
        }
    });
    let limits = super::limits::limits(b, limits, &format!("{path}.limits"));
    if name.is_empty() {
        b.problem(format!("{path}.name"), "must not be empty");
    }
    let expires_at = expires_at.and_then(|t| unix_time(b, &format!("{path}.expires_at"), &t));
    let hashes = match (hash, &mtls_subject) {
        (Some(spec), _) => hashes(b, &format!("{path}.hash"), spec),
        // A key only a client certificate can claim: a digest no secret hashes to.
        (None, Some(_)) => {
            let mut random = [0u8; 32];
            if getrandom::fill(&mut random).is_err() {
                b.problem(format!("{path}.hash"), "no randomness to seal the key with");
                return false;
            }
            vec![(random, None)]
        }
        (None, None) => {
            b.problem(
                path,
                "needs a hash (an API key) or an mtls_subject (a client certificate)",
            );
            return false;
        }
    };
    if let Some(subject) = mtls_subject.as_deref() {
        if subject.is_empty() {
            b.problem(format!("{path}.mtls_subject"), "must not be empty");
        } else if table.mtls_taken(subject) {
            b.problem(
                format!("{path}.mtls_subject"),
                "another key claims the same client certificate subject",
            );
        }
    }
    for (digest, _) in &hashes {
        if table.contains_digest(digest) || others.is_some_and(|t| t.contains_digest(digest)) {
            b.problem(
                format!("{path}.hash"),
                "the same key hash is configured twice",
            );
        }
    }
    let globs = allowed.map(|patterns| {
        for (j, pattern) in patterns.iter().enumerate() {
            let matches_something = Glob::is_wildcard(pattern) || scope.models.contains(pattern);
            if !matches_something {
                b.problem(
                    format!("{path}.models[{j}]"),
                    format!("unknown model {pattern:?}"),
                );
            }
        }
        patterns.iter().map(|p| Glob::new(p)).collect()
    });
    let attached = resolve_filters(b, &format!("{path}.filters"), &filter_names, scope.filters);
    let Some(&(first, _)) = hashes.first() else {
        return false;
    };
    let clean = b.problems.len() == before;
    if !clean && others.is_some() {
        return false;
    }
    let mut entry = KeyEntry::new(&name, first, globs, attached);
    // The first hash is already in place: this sets its end, and adds the others.
    for &(digest, end) in &hashes {
        entry.add_hash(digest, end);
    }
    entry.expires_at = expires_at;
    entry.route_header = route_header;
    if let Some(id) = id {
        entry.scope = format!("{name}#{id}").into();
    }
    entry.counter = super::limits::counter(&format!("key {}", entry.scope), &limits);
    entry.limits = limits;
    entry.tenant = tenant;
    let entry = table.insert(entry);
    if let Some(subject) = mtls_subject.filter(|s| !s.is_empty()) {
        table.claim_mtls(subject, entry);
    }
    clean
}

/// `hash:` as digests with their ends; a list must not be empty.
fn hashes(b: &mut Builder, path: &str, spec: HashSpec) -> Vec<([u8; 32], Option<u64>)> {
    let items = match spec {
        HashSpec::One(hash) => vec![HashItem::Plain(hash)],
        HashSpec::Many(items) => items,
    };
    if items.is_empty() {
        b.problem(path, "lists no hash");
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let (hash, end, at) = match item {
            HashItem::Plain(hash) => (hash, None, path.to_owned()),
            HashItem::Timed(TimedHash { hash, expires_at }) => {
                let at = format!("{path}[{i}]");
                let end = expires_at.and_then(|t| unix_time(b, &format!("{at}.expires_at"), &t));
                (hash, end, at)
            }
        };
        match parse_hash(&hash) {
            Ok(digest) if out.iter().any(|(d, _)| *d == digest) => {
                b.problem(at, "the same hash is listed twice");
            }
            Ok(digest) => out.push((digest, end)),
            Err(e) => b.problem(at, e),
        }
    }
    out
}

/// An RFC 3339 UTC time as Unix seconds.
pub(crate) fn parse_time(text: &str) -> Result<u64, String> {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .ok_or_else(|| format!("{text:?} is not an RFC 3339 UTC time such as 2027-01-31T00:00:00Z"))
}

fn unix_time(b: &mut Builder, path: &str, text: &str) -> Option<u64> {
    parse_time(text).map_err(|e| b.problem(path, e)).ok()
}

/// The last second an end may be set to: 9999-12-31T23:59:59Z, what RFC 3339 can write.
pub(crate) const LATEST: u64 = 253_402_300_799;

/// Unix seconds as RFC 3339 UTC (clamped to [`LATEST`]).
pub(crate) fn format_time(secs: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.min(LATEST));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A key issued through the admin API, as its store keeps it. Unknown fields are ignored:
/// an older binary running beside a newer one (an upgrade) still reads what it wrote.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct IssuedKey {
    pub name: String,
    /// Drawn at issue: what the key's spend and stored responses are kept under, so that a
    /// name issued again after a revocation starts afresh.
    #[serde(default)]
    pub id: String,
    /// `sha256:` digests; more than one while a rotation overlaps.
    pub hashes: Vec<IssuedHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// The shape of `auth.keys[].limits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub created_at: String,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct IssuedHash {
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl IssuedKey {
    fn config(&self) -> Result<KeyConfig, String> {
        let limits = match &self.limits {
            None => None,
            Some(json) => Some(serde_yaml::to_value(json).map_err(|e| e.to_string())?),
        };
        Ok(KeyConfig {
            name: self.name.clone(),
            hash: Some(HashSpec::Many(
                self.hashes
                    .iter()
                    .map(|h| {
                        HashItem::Timed(TimedHash {
                            hash: h.hash.clone(),
                            expires_at: h.expires_at.clone(),
                        })
                    })
                    .collect(),
            )),
            expires_at: self.expires_at.clone(),
            models: self.models.clone(),
            filters: self.filters.clone(),
            tenant: self.tenant.clone(),
            limits,
            route_header: false,
            mtls_subject: None,
        })
    }
}

/// Why a config serves no issued key.
pub const AUTH_OFF: &str = "the config does not authenticate clients: issued keys need auth.keys, auth.jwt or auth.mode: keys";

/// The issued keys as `snap` serves them. A key the snapshot cannot take (its tenant or
/// a filter gone from the config, a name the config now uses) is left out and reported
/// with its problems; it comes back once the config has what it needs.
pub fn issued_table(snap: &Snapshot, keys: &[IssuedKey]) -> (KeyTable, Vec<ConfigProblem>) {
    let mut problems = Vec::new();
    let mut table = KeyTable::default();
    let scope = KeyScope {
        models: &snap.models,
        filters: &snap.filters,
        tenants: &snap.tenants,
    };
    let mut b = Builder {
        problems: &mut problems,
        broken_providers: Vec::new(),
        notes: Vec::new(),
    };
    let authenticates = !snap.keys.is_empty() || snap.keys.require_key || !snap.jwt.is_empty();
    for key in keys {
        let path = format!("issued key {:?}", key.name);
        if !authenticates {
            b.problem(path, AUTH_OFF);
            continue;
        }
        if let Err(e) = crate::keystore::check_name(&key.name) {
            b.problem(path, e.to_string());
            continue;
        }
        if snap.keys.named(&key.name).is_some() {
            b.problem(path, "auth.keys has a key of the same name, which wins");
            continue;
        }
        match key.config() {
            Ok(config) => {
                let others = Some(&snap.keys);
                add_key(
                    &mut b,
                    &path,
                    config,
                    &scope,
                    &mut table,
                    others,
                    Some(&key.id),
                );
            }
            Err(e) => b.problem(format!("{path}.limits"), e),
        }
    }
    (table, problems)
}

/// `auth.key_store`: where issued keys live (see [`AuthConfig::key_store`]).
pub(super) fn key_store(
    b: &mut Builder,
    setting: Option<&str>,
    config_path: Option<&std::path::Path>,
    redis: Option<&Arc<crate::limits::shared::SharedStore>>,
) -> Option<crate::keystore::Location> {
    use crate::keystore::Location;
    let beside_config = |name: &str| {
        config_path.map(|path| {
            let stem = path
                .file_stem()
                .map_or("sira".into(), |s| s.to_string_lossy());
            path.with_file_name(format!("{stem}.{name}"))
        })
    };
    match setting {
        Some("off") => None,
        Some("redis") => match redis {
            Some(store) => Some(Location::Redis(store.clone())),
            None => {
                b.problem(
                    "auth.key_store",
                    "redis keeps issued keys in the limits.store Redis, and limits.store is not Redis",
                );
                None
            }
        },
        Some("") => {
            b.problem("auth.key_store", "a file path, redis or off");
            None
        }
        Some(path) => {
            let path = std::path::Path::new(path);
            let path = match (path.is_relative(), config_path.and_then(|p| p.parent())) {
                (true, Some(dir)) => dir.join(path),
                _ => path.to_owned(),
            };
            Some(Location::File(path))
        }
        None => {
            if let Some(store) = redis {
                return Some(Location::Redis(store.clone()));
            }
            // systemd's StateDirectory= (the unit sets it): the one place it may write.
            if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
                let first = dir
                    .to_string_lossy()
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let stem = config_path
                    .and_then(|p| p.file_stem())
                    .map_or("sira".into(), |s| s.to_string_lossy());
                return Some(Location::File(
                    std::path::Path::new(&first).join(format!("{stem}.keys.json")),
                ));
            }
            beside_config("keys.json").map(Location::File)
        }
    }
}
