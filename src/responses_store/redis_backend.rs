//! The Redis side of the response store: one string key per record, expiring with the TTL.

use std::sync::Mutex;
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::StoreError;

pub(super) struct RedisBackend {
    client: redis::Client,
    /// Made on first use, so that a Redis that is down at start or reload delays nothing
    /// but the requests that need it; a failed attempt is retried by the next request.
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    /// Records being written: read from here until Redis has them, so this host never
    /// misses its own last write. Each leaves when its write ends (bounded by `timeout`).
    writing: Mutex<AHashMap<String, Bytes>>,
}

impl RedisBackend {
    pub(super) fn new(
        client: redis::Client,
        prefix: String,
        ttl: Duration,
        timeout: Duration,
    ) -> RedisBackend {
        RedisBackend {
            client,
            conn: OnceCell::new(),
            prefix,
            ttl,
            timeout,
            writing: Mutex::default(),
        }
    }

    fn writing(&self) -> std::sync::MutexGuard<'_, AHashMap<String, Bytes>> {
        // A poisoned map of pending writes is still a consistent map.
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn hold(&self, slot: &str, record: Bytes) {
        self.writing().insert(slot.to_owned(), record);
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
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
            Err(_) => Err(StoreError("connecting to Redis timed out".into())),
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(failure(&e)),
            Err(_) => Err(StoreError("Redis did not answer in time".into())),
        }
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<Bytes>, StoreError> {
        if let Some(held) = self.writing().get(id) {
            return Ok(Some(held.clone()));
        }
        // Read and kept another `ttl`: a conversation in use does not expire under it.
        let mut cmd = redis::cmd("GETEX");
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        cmd.arg(self.key(id)).arg("PX").arg(ttl_ms);
        let value: Option<Vec<u8>> = self.run(cmd).await?;
        Ok(value.map(Bytes::from))
    }

    pub(super) async fn put(&self, id: &str, record: Bytes) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        cmd.arg(self.key(id))
            .arg(record.as_ref())
            .arg("PX")
            .arg(ttl_ms);
        let written = self.run::<()>(cmd).await;
        self.writing().remove(id);
        written
    }

    pub(super) async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.writing().remove(id);
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(id));
        let removed: i64 = self.run(cmd).await?;
        Ok(removed > 0)
    }
}

/// What went wrong, by kind only: a Redis error's text can quote the connection URL, and
/// with it a password.
fn failure(e: &redis::RedisError) -> StoreError {
    let what = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        "connection failed".to_owned()
    } else {
        format!("{:?}", e.kind())
    };
    StoreError(format!("Redis: {what}"))
}
