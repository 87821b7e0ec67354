//! Keys issued through the admin API (`POST /admin/keys`), kept hashed in a store sira owns
//! so that they survive restarts and reloads: a JSON file (beside the config, or under
//! systemd's `StateDirectory=`), or the `limits.store` Redis so that every host of a fleet
//! sees an issue, a rotation or a revocation within about a second.
//!
//! The records are compiled into a [`KeyTable`] against the snapshot installed last, by
//! the same rules as `auth.keys` ([`crate::config::keys::issued_table`]), and swapped into
//! that snapshot's `issued` slot: the request path reads it with one atomic load and never
//! waits on the store. A reload compiles them again against the new snapshot; a key whose
//! tenant or filter the new config lacks is left out (and logged) until it is back.

mod backend;
mod http;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::keys::{format_time, issued_table, IssuedHash, IssuedKey, AUTH_OFF, LATEST};
use crate::config::Snapshot;
use crate::limits::shared::SharedStore;

pub use http::{handle, Reply};

/// Where issued keys are kept.
#[derive(Clone)]
pub enum Location {
    File(PathBuf),
    /// Under the store's prefix: `keys` (a hash of records by name) and `keys:rev`.
    Redis(Arc<SharedStore>),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "file {}", path.display()),
            // Never the URL: it may hold a password.
            Location::Redis(_) => f.write_str("redis"),
        }
    }
}

impl Location {
    fn same(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::File(a), Location::File(b)) => a == b,
            (Location::Redis(a), Location::Redis(b)) => a.place == b.place,
            _ => false,
        }
    }
}

/// Why a key could not be issued, rotated or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("no key store: run sira with a config file, or set auth.key_store")]
    NoStore,
    #[error("the key store is unavailable ({0})")]
    Unavailable(String),
    #[error("a key named {0:?} already exists")]
    Exists(String),
    #[error("no issued key is named {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0:?} is defined in the config file (auth.keys): change it there")]
    ConfigKey(String),
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// What the process knows of the store.
#[derive(Default)]
struct State {
    /// The records as last read or written, by name.
    keys: Vec<IssuedKey>,
    /// Where they came from (another location is read afresh).
    from: Option<Location>,
    /// What was last read: the file's modification time and length, or Redis' revision.
    seen: Option<backend::Version>,
    /// The snapshot installed last: issued keys are compiled against it.
    target: Option<Arc<Snapshot>>,
}

fn state() -> std::sync::MutexGuard<'static, State> {
    static STATE: std::sync::LazyLock<Mutex<State>> = std::sync::LazyLock::new(Mutex::default);
    // A poisoned state is still a list of records and a snapshot.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the Redis store installed last has been read once (or tried): until then an
/// unknown key may be an issued one this process has not seen yet.
static FIRST_READ_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
/// Counts installs of a new store, so that a read of an older one never ends the wait.
static STORE_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static FIRST_READ: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// How long a request with an unknown key waits for that first read.
const FIRST_READ_WAIT: Duration = Duration::from_secs(1);

pub fn first_read_pending(snap: &Snapshot) -> bool {
    matches!(snap.key_store, Some(Location::Redis(_)))
        && !FIRST_READ_DONE.load(std::sync::atomic::Ordering::Acquire)
}

pub async fn first_read() {
    let _ = tokio::time::timeout(FIRST_READ_WAIT, async {
        loop {
            let notified = FIRST_READ.notified();
            if FIRST_READ_DONE.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    })
    .await;
}

fn first_read_done(generation: u64) {
    if STORE_GENERATION.load(std::sync::atomic::Ordering::Acquire) != generation {
        return;
    }
    FIRST_READ_DONE.store(true, std::sync::atomic::Ordering::Release);
    FIRST_READ.notify_waiters();
}

/// Serialises changes (issue, rotate, revoke) made by this process.
static CHANGING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Wakes the sync service when a new store is installed.
static KEYS_WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Makes `snap` the snapshot issued keys are compiled against. A file store is read now
/// (it is small and local); a Redis store is read by the next sync, within a second.
pub fn install(snap: &Arc<Snapshot>) {
    let mut state = state();
    let same_store = match (&state.from, &snap.key_store) {
        (Some(a), Some(b)) => a.same(b),
        _ => false,
    };
    if !same_store {
        state.keys.clear();
        state.seen = None;
        state.from = snap.key_store.clone();
        STORE_GENERATION.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if matches!(snap.key_store, Some(Location::Redis(_))) {
            FIRST_READ_DONE.store(false, std::sync::atomic::Ordering::Release);
            KEYS_WAKE.notify_one();
        }
    }
    if let Some(Location::File(path)) = &snap.key_store {
        match backend::read_file(path) {
            Ok((keys, version)) => {
                state.keys = keys;
                state.seen = version;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the key store; issued keys keep their last known state")
            }
        }
    }
    state.target = Some(snap.clone());
    compile(&state);
}

/// Compiles the records into the target snapshot's `issued` slot.
fn compile(state: &State) {
    let Some(snap) = &state.target else {
        return;
    };
    let (table, problems) = issued_table(snap, &state.keys);
    for problem in problems {
        tracing::warn!(%problem, "an issued key is not served under this config");
    }
    // Limited issued keys share their limits through the snapshot's store, as config keys.
    for key in table.iter() {
        if let Some(counter) = &key.counter {
            counter.bind(snap.limits_store.as_ref(), key.limits);
        }
    }
    snap.issued.store(Arc::new(table));
}

/// Puts `keys` (read from `from` at `version`) in place when `from` is still the store.
fn replace(from: &Location, keys: Vec<IssuedKey>, version: Option<backend::Version>) {
    let mut state = state();
    if !state.from.as_ref().is_some_and(|l| l.same(from)) {
        return;
    }
    state.keys = keys;
    state.seen = version;
    compile(&state);
}

fn now_secs() -> u64 {
    crate::auth::now_secs()
}

/// What a client asks `POST /admin/keys` for.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub name: String,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub filters: Vec<String>,
    #[serde(default)]
    pub limits: Option<serde_json::Value>,
    /// RFC 3339 UTC.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// A duration from now (`30d`, `12h`), instead of `expires_at`.
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// A key and its secret, shown once.
pub struct Issued {
    pub record: IssuedKey,
    pub secret: String,
}

/// Names appear in metrics, logs and admin URLs: a short, plain alphabet, starting with a
/// letter or digit (so never `.` or `..`, which clients normalise out of paths).
pub fn check_name(name: &str) -> Result<(), KeyStoreError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let starts_plain = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !starts_plain || name.len() > 64 || !name.chars().all(plain) {
        return Err(KeyStoreError::Invalid(vec![
            "name: 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
                .into(),
        ]));
    }
    Ok(())
}

/// At most this many issued keys: each is compiled on every change and reload.
const MAX_ISSUED: usize = 10_000;

fn end_time(request: &IssueRequest, now: u64) -> Result<Option<String>, KeyStoreError> {
    let invalid = |m: String| KeyStoreError::Invalid(vec![m]);
    match (&request.expires_at, &request.expires_in) {
        (Some(_), Some(_)) => Err(invalid("expires_at or expires_in, not both".into())),
        (Some(at), None) => {
            let secs = crate::config::keys::parse_time(at)
                .map_err(|e| invalid(format!("expires_at: {e}")))?;
            if secs <= now {
                return Err(invalid("expires_at: is in the past".into()));
            }
            Ok(Some(format_time(secs)))
        }
        (None, Some(within)) => {
            let d = humantime::parse_duration(within).map_err(|_| {
                invalid(format!(
                    "expires_in: {within:?} is not a duration such as 30d"
                ))
            })?;
            if d.is_zero() {
                return Err(invalid("expires_in: must be above zero".into()));
            }
            let end = now.saturating_add(d.as_secs().max(1));
            if end > LATEST {
                return Err(invalid(
                    "expires_in: ends after 9999-12-31T23:59:59Z".into(),
                ));
            }
            Ok(Some(format_time(end)))
        }
        (None, None) => Ok(None),
    }
}

/// Checks that `record` compiles against `snap` beside the keys already issued.
fn validate(
    snap: &Snapshot,
    others: &[IssuedKey],
    record: &IssuedKey,
) -> Result<(), KeyStoreError> {
    let mut all: Vec<IssuedKey> = others
        .iter()
        .filter(|k| k.name != record.name)
        .cloned()
        .collect();
    all.push(record.clone());
    let (_, problems) = issued_table(snap, &all);
    let tag = format!("issued key {:?}", record.name);
    let mine: Vec<String> = problems
        .into_iter()
        .filter(|p| p.path.starts_with(&tag))
        .map(|p| {
            let field = p.path[tag.len()..].trim_start_matches('.');
            if field.is_empty() {
                p.message
            } else {
                format!("{field}: {}", p.message)
            }
        })
        .collect();
    if mine.is_empty() {
        Ok(())
    } else {
        Err(KeyStoreError::Invalid(mine))
    }
}

fn store_of(snap: &Snapshot) -> Result<&Location, KeyStoreError> {
    snap.key_store.as_ref().ok_or(KeyStoreError::NoStore)
}

/// Issues a key: a fresh secret, returned once and stored only as its hash.
pub async fn issue(snap: &Arc<Snapshot>, request: IssueRequest) -> Result<Issued, KeyStoreError> {
    let location = store_of(snap)?;
    check_name(&request.name)?;
    if snap.keys.is_empty() && !snap.keys.require_key && snap.jwt.is_empty() {
        return Err(KeyStoreError::Conflict(AUTH_OFF));
    }
    if snap.keys.named(&request.name).is_some() {
        return Err(KeyStoreError::ConfigKey(request.name));
    }
    let mut id = [0u8; 8];
    getrandom::fill(&mut id)
        .map_err(|_| KeyStoreError::Unavailable("no randomness for a key".into()))?;
    let now = now_secs();
    let expires_at = end_time(&request, now)?;
    let secret = crate::auth::new_key()
        .map_err(|_| KeyStoreError::Unavailable("no randomness for a key".into()))?;
    let record = IssuedKey {
        name: request.name,
        id: hex::encode(id),
        hashes: vec![IssuedHash {
            hash: crate::auth::hash_key(&secret),
            expires_at: None,
        }],
        tenant: request.tenant,
        models: request.models,
        filters: request.filters,
        limits: request.limits,
        expires_at,
        created_at: format_time(now),
    };
    let _changing = CHANGING.lock().await;
    let current = backend::read(location).await?;
    if current.0.iter().any(|k| k.name == record.name) {
        return Err(KeyStoreError::Exists(record.name));
    }
    if current.0.len() >= MAX_ISSUED {
        return Err(KeyStoreError::Conflict(
            "the key store holds 10,000 issued keys: revoke some first",
        ));
    }
    validate(snap, &current.0, &record)?;
    let (keys, version) = backend::insert(location, current, record.clone()).await?;
    replace(location, keys, version);
    Ok(Issued { record, secret })
}

/// Gives an issued key a new secret; the old ones keep working for `overlap`.
pub async fn rotate(
    snap: &Arc<Snapshot>,
    name: &str,
    overlap: Duration,
) -> Result<Issued, KeyStoreError> {
    let location = store_of(snap)?;
    check_name(name)?;
    let secret = crate::auth::new_key()
        .map_err(|_| KeyStoreError::Unavailable("no randomness for a key".into()))?;
    let now = now_secs();
    let _changing = CHANGING.lock().await;
    let current = backend::read(location).await?;
    let Some(old) = current.0.iter().find(|k| k.name == name).cloned() else {
        return Err(not_found(snap, name));
    };
    let mut record = old.clone();
    let old_end = now.saturating_add(overlap.as_secs()).min(LATEST);
    record.hashes.retain_mut(|h| {
        let end = h
            .expires_at
            .as_deref()
            .and_then(|t| crate::config::keys::parse_time(t).ok())
            .map_or(old_end, |end| end.min(old_end));
        h.expires_at = Some(format_time(end));
        end > now
    });
    record.hashes.insert(
        0,
        IssuedHash {
            hash: crate::auth::hash_key(&secret),
            expires_at: None,
        },
    );
    let (keys, version) = backend::update(location, current, &old, record.clone()).await?;
    replace(location, keys, version);
    Ok(Issued { record, secret })
}

/// Revokes an issued key at once.
pub async fn revoke(snap: &Arc<Snapshot>, name: &str) -> Result<(), KeyStoreError> {
    let location = store_of(snap)?;
    check_name(name)?;
    let _changing = CHANGING.lock().await;
    let current = backend::read(location).await?;
    if !current.0.iter().any(|k| k.name == name) {
        return Err(not_found(snap, name));
    }
    let (keys, version) = backend::remove(location, current, name).await?;
    replace(location, keys, version);
    Ok(())
}

fn not_found(snap: &Snapshot, name: &str) -> KeyStoreError {
    if snap.keys.named(name).is_some() {
        KeyStoreError::ConfigKey(name.to_owned())
    } else {
        KeyStoreError::NotFound(name.to_owned())
    }
}

/// The issued keys as this process last read them.
fn known() -> Vec<IssuedKey> {
    state().keys.clone()
}

/// Follows the store: a Redis store is asked for its revision every second (every `sync`
/// when shorter); a file store is checked for a change by another process (the old or new
/// binary during an upgrade, an operator restoring a backup).
pub struct KeySyncService;

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for KeySyncService {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let mut failing = false;
        loop {
            let (location, seen, generation) = {
                let state = state();
                let generation = STORE_GENERATION.load(std::sync::atomic::Ordering::Acquire);
                (state.from.clone(), state.seen.clone(), generation)
            };
            let mut every = Duration::from_secs(1);
            if let Some(location) = location {
                if let Location::Redis(store) = &location {
                    every = every.min(store.sync);
                }
                match backend::changed(&location, seen.as_ref()).await {
                    Ok(changed) => {
                        if failing {
                            tracing::info!(store = ?location, "the key store is read again");
                            failing = false;
                        }
                        if let Some((keys, version)) = changed {
                            replace(&location, keys, version);
                        }
                    }
                    Err(e) => {
                        // Once per outage: issued keys stay as last read meanwhile, so a
                        // revocation made elsewhere is not seen here until it ends.
                        if !failing {
                            tracing::warn!(store = ?location, error = %e, "the key store cannot be read; issued keys stay as last read");
                            failing = true;
                        }
                    }
                }
                // Tried once: requests stop waiting for it, whatever it found.
                first_read_done(generation);
            }
            tokio::select! {
                _ = KEYS_WAKE.notified() => {}
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
