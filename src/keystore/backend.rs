//! Reading and writing issued keys: a JSON file replaced atomically (written beside itself,
//! then renamed), or a Redis hash of records by name with a revision counter that every
//! change increments in the same script, so hosts notice a change by reading one number.

use std::path::Path;
use std::time::SystemTime;

use super::{KeyStoreError, Location};
use crate::config::keys::IssuedKey;
use crate::limits::shared::StoreRequest;

/// What was read last, to tell whether the store changed since: for a file its
/// modification time, length and inode (every write is a new file renamed into place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Version {
    File(Option<SystemTime>, u64, u64),
    Redis(i64),
}

/// The records as read for a change, with Redis' text of each (a change is made only if
/// the record is still what was read) or the file store's lock, held until the change is
/// written: two processes sharing the file (the old and new binary of an upgrade) never
/// write over each other's change.
pub struct Current(pub Vec<IssuedKey>, Vec<String>, Option<std::fs::File>);

type Read = (Vec<IssuedKey>, Option<Version>);

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    keys: Vec<IssuedKey>,
}

fn unavailable(e: impl std::fmt::Display) -> KeyStoreError {
    KeyStoreError::Unavailable(e.to_string())
}

fn file_version(path: &Path) -> std::io::Result<Option<Version>> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            Ok(Some(Version::File(meta.modified().ok(), meta.len(), inode)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The file's records; none when it does not exist yet.
pub fn read_file(path: &Path) -> Result<Read, String> {
    let version = file_version(path).map_err(|e| e.kind().to_string())?;
    if version.is_none() {
        return Ok((Vec::new(), None));
    }
    let text = std::fs::read(path).map_err(|e| e.kind().to_string())?;
    let file: KeyFile =
        serde_json::from_slice(&text).map_err(|e| format!("not a key store file: {e}"))?;
    Ok((file.keys, version))
}

fn write_file(path: &Path, keys: &[IssuedKey]) -> Result<Option<Version>, KeyStoreError> {
    use std::io::Write;
    let text = serde_json::to_vec_pretty(&KeyFile {
        keys: keys.to_vec(),
    })
    .map_err(unavailable)?;
    let name = path
        .file_name()
        .ok_or_else(|| unavailable("the key store path names no file"))?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename itself survives a crash only once the directory is on disk.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(unavailable(format!(
            "writing {}: {}",
            path.display(),
            e.kind()
        )));
    }
    file_version(path).map_err(|e| unavailable(e.kind()))
}

/// Every record, read afresh for a change (a file store is locked until it is written).
pub async fn read(location: &Location) -> Result<Current, KeyStoreError> {
    match location {
        Location::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let lock = lock_file(&path)?;
                let (keys, _) = read_file(&path).map_err(unavailable)?;
                Ok(Current(keys, Vec::new(), Some(lock)))
            })
            .await
            .map_err(unavailable)?
        }
        Location::Redis(store) => {
            let (_, keys, raw) = read_redis(store).await.map_err(unavailable)?;
            Ok(Current(keys, raw, None))
        }
    }
}

/// An exclusive lock on `<store>.lock` beside the store (the store itself is replaced by
/// renames, so it cannot carry the lock).
fn lock_file(path: &Path) -> Result<std::fs::File, KeyStoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&name)
        .map_err(|e| unavailable(format!("locking {}: {}", path.display(), e.kind())))?;
    file.lock()
        .map_err(|e| unavailable(format!("locking {}: {}", path.display(), e.kind())))?;
    Ok(file)
}

static READ_ALL: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new("return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}")
});

async fn read_redis(
    store: &crate::limits::shared::SharedStore,
) -> Result<(i64, Vec<IssuedKey>, Vec<String>), String> {
    let mut invocation = READ_ALL.prepare_invoke();
    invocation.key(store.key("keys")).key(store.key("keys:rev"));
    let (rev, pairs): (String, Vec<String>) = store.run(StoreRequest::Script(&invocation)).await?;
    let mut keys = Vec::with_capacity(pairs.len() / 2);
    let mut raw = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks_exact(2) {
        match serde_json::from_str::<IssuedKey>(&pair[1]) {
            Ok(key) => {
                keys.push(key);
                raw.push(pair[1].clone());
            }
            Err(e) => {
                tracing::warn!(name = %pair[0], error = %e, "an issued key in Redis is not readable; skipped")
            }
        }
    }
    // Records come in hash order: by name, for listings that stay put.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|a, b| keys[*a].name.cmp(&keys[*b].name));
    let keys = order.iter().map(|i| keys[*i].clone()).collect();
    let raw = order.iter().map(|i| raw[*i].clone()).collect();
    Ok((rev.parse().unwrap_or(0), keys, raw))
}

/// A change made through Redis: the script answers the new revision, or 0 when the record
/// was not as expected.
async fn change(
    store: &crate::limits::shared::SharedStore,
    script: &redis::Script,
    args: &[&str],
) -> Result<i64, KeyStoreError> {
    let mut invocation = script.prepare_invoke();
    invocation.key(store.key("keys")).key(store.key("keys:rev"));
    for arg in args {
        invocation.arg(*arg);
    }
    store
        .run::<i64>(StoreRequest::Script(&invocation))
        .await
        .map_err(unavailable)
}

static INSERT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then \
           return redis.call('INCR', KEYS[2]) end return 0",
    )
});
static UPDATE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then \
           redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) \
           return redis.call('INCR', KEYS[2]) end return 0",
    )
});
static REMOVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then \
           return redis.call('INCR', KEYS[2]) end return 0",
    )
});

/// After a write to Redis the records are re-read at the next sync (another host may have
/// changed others meanwhile): no version is claimed.
pub async fn insert(
    location: &Location,
    current: Current,
    record: IssuedKey,
) -> Result<Read, KeyStoreError> {
    let Current(mut keys, _, lock) = current;
    match location {
        Location::File(path) => {
            keys.push(record);
            write_locked(path, keys, lock).await
        }
        Location::Redis(store) => {
            let text = serde_json::to_string(&record).map_err(unavailable)?;
            if change(store, &INSERT, &[&record.name, &text]).await? == 0 {
                return Err(KeyStoreError::Exists(record.name));
            }
            keys.push(record);
            Ok((keys, None))
        }
    }
}

pub async fn update(
    location: &Location,
    current: Current,
    old: &IssuedKey,
    record: IssuedKey,
) -> Result<Read, KeyStoreError> {
    let Current(mut keys, raw, lock) = current;
    let at = keys
        .iter()
        .position(|k| k.name == old.name)
        .ok_or_else(|| KeyStoreError::NotFound(old.name.clone()))?;
    match location {
        Location::File(path) => {
            keys[at] = record;
            write_locked(path, keys, lock).await
        }
        Location::Redis(store) => {
            let text = serde_json::to_string(&record).map_err(unavailable)?;
            let was = raw.get(at).map(String::as_str).unwrap_or_default();
            if change(store, &UPDATE, &[&record.name, was, &text]).await? == 0 {
                return Err(KeyStoreError::Conflict(
                    "the key changed meanwhile; try again",
                ));
            }
            keys[at] = record;
            Ok((keys, None))
        }
    }
}

pub async fn remove(
    location: &Location,
    current: Current,
    name: &str,
) -> Result<Read, KeyStoreError> {
    let Current(mut keys, _, lock) = current;
    keys.retain(|k| k.name != name);
    match location {
        Location::File(path) => write_locked(path, keys, lock).await,
        Location::Redis(store) => {
            if change(store, &REMOVE, &[name]).await? == 0 {
                return Err(KeyStoreError::NotFound(name.to_owned()));
            }
            Ok((keys, None))
        }
    }
}

/// Writes `keys` to the file store while `lock` (taken by [`read`]) is held; the version
/// is read before the lock is let go, so it is this write's.
async fn write_locked(
    path: &Path,
    keys: Vec<IssuedKey>,
    lock: Option<std::fs::File>,
) -> Result<Read, KeyStoreError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let version = write_file(&path, &keys);
        drop(lock);
        version.map(|v| (keys, v))
    })
    .await
    .map_err(unavailable)?
}

/// The records when the store changed since `seen`; `None` when it did not.
pub async fn changed(location: &Location, seen: Option<&Version>) -> Result<Option<Read>, String> {
    match location {
        Location::File(path) => {
            let path = path.clone();
            let seen = seen.cloned();
            tokio::task::spawn_blocking(move || {
                let now = file_version(&path).map_err(|e| e.kind().to_string())?;
                if now == seen {
                    return Ok(None);
                }
                read_file(&path).map(Some)
            })
            .await
            .map_err(|e| e.to_string())?
        }
        Location::Redis(store) => {
            let rev: Option<i64> = store
                .run(StoreRequest::Cmd(
                    redis::cmd("GET").arg(store.key("keys:rev")),
                ))
                .await?;
            let rev = rev.unwrap_or(0);
            if seen == Some(&Version::Redis(rev)) {
                return Ok(None);
            }
            let (rev, keys, _) = read_redis(store).await?;
            Ok(Some((keys, Some(Version::Redis(rev)))))
        }
    }
}
