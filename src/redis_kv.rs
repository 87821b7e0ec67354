//! A Redis key-value store with a TTL, bounded in time on every operation: where stored
//! responses ([`crate::responses_store`]) and cached answers ([`crate::cache`]) go when
//! they are shared by a fleet.

use std::sync::Mutex;
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

/// Redis could not be read or written (down or too slow). The message names the kind of
/// failure only: a Redis error's text can quote the URL, and with it a password.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KvError(pub String);

pub struct RedisKv {
    client: redis::Client,
    /// Made on first use, so that a Redis that is down at start or reload delays nothing
    /// but the requests that need it; a failed attempt is retried by the next request.
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    /// A read keeps the record another `ttl` (`GETEX`) instead of leaving its expiry as
    /// it was.
    refresh: bool,
    /// Records being written: read from here until Redis has them, so this host never
    /// misses its own last write. Each leaves when its write ends (bounded by `timeout`).
    writing: Mutex<AHashMap<String, Bytes>>,
}

impl RedisKv {
    pub fn new(
        client: redis::Client,
        prefix: String,
        ttl: Duration,
        timeout: Duration,
        refresh: bool,
    ) -> RedisKv {
        RedisKv {
            client,
            conn: OnceCell::new(),
            prefix,
            ttl,
            timeout,
            refresh,
            writing: Mutex::default(),
        }
    }

    fn writing(&self) -> std::sync::MutexGuard<'_, AHashMap<String, Bytes>> {
        // A poisoned map of pending writes is still a consistent map.
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn hold(&self, slot: &str, record: Bytes) {
        self.writing().insert(slot.to_owned(), record);
    }

    async fn conn(&self) -> Result<ConnectionManager, KvError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let made = self
            .conn
            .get_or_try_init(|| self.client.get_connection_manager_with_config(config));
        match tokio::time::timeout(self.timeout, made).await {
            Ok(Ok(conn)) => Ok(conn.clone()),
            Ok(Err(e)) => Err(failure(&e)),
            Err(_) => Err(KvError("connecting to Redis timed out".into())),
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, KvError> {
        let mut conn = self.conn().await?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(failure(&e)),
            Err(_) => Err(KvError("Redis did not answer in time".into())),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Bytes>, KvError> {
        if let Some(held) = self.writing().get(id) {
            return Ok(Some(held.clone()));
        }
        let cmd = if self.refresh {
            // Read and kept another `ttl`: a conversation in use does not expire under it.
            let mut cmd = redis::cmd("GETEX");
            let ttl_ms = u64::try_from(self.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            cmd.arg(self.key(id)).arg("PX").arg(ttl_ms);
            cmd
        } else {
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.key(id));
            cmd
        };
        let value: Option<Vec<u8>> = self.run(cmd).await?;
        Ok(value.map(Bytes::from))
    }

    pub async fn put(&self, id: &str, record: Bytes) -> Result<(), KvError> {
        self.put_for(id, record, self.ttl).await
    }

    /// Like [`RedisKv::put`], kept `ttl` instead of the store's.
    pub async fn put_for(&self, id: &str, record: Bytes, ttl: Duration) -> Result<(), KvError> {
        let mut cmd = redis::cmd("SET");
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        cmd.arg(self.key(id))
            .arg(record.as_ref())
            .arg("PX")
            .arg(ttl_ms);
        let written = self.run::<()>(cmd).await;
        self.writing().remove(id);
        written
    }

    pub async fn delete(&self, id: &str) -> Result<bool, KvError> {
        self.writing().remove(id);
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(id));
        let removed: i64 = self.run(cmd).await?;
        Ok(removed > 0)
    }
}

/// What went wrong, by kind only: a Redis error's text can quote the connection URL, and
/// with it a password.
fn failure(e: &redis::RedisError) -> KvError {
    let what = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        "connection failed".to_owned()
    } else {
        format!("{:?}", e.kind())
    };
    KvError(format!("Redis: {what}"))
}
