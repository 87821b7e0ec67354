//! Stored Responses: what makes `store: true` and `previous_response_id` work through any
//! provider, and what `GET` / `DELETE /v1/responses/{id}` and `…/input_items` read.
//!
//! Each stored response is one [`Record`]: the request's own input items, the Response
//! object the client received (its `output` included), the id of the response it continued,
//! and who may read it. A follow-up that names a stored response gets the whole
//! conversation replayed ([`record::expand`]): every earlier record's input and output, in
//! order, then its own input — so Anthropic, Gemini and Chat providers, which keep no
//! state, see what OpenAI would have remembered. Records link to their predecessor instead
//! of copying it, so an agent session of N turns costs N records, not N².
//!
//! Records live in process memory by default (bounded by bytes, with a TTL; `moka`'s
//! TinyLFU admission) or in Redis when `responses_store.redis` is set, so that every sira
//! host of a fleet can continue a conversation another host started. The store is kept
//! across reloads while its settings do not change ([`crate::runtime`]).

pub mod record;
mod redis_backend;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use record::{expand, history, input_items, ChainError, Expanded, History, Record};
use redis_backend::RedisBackend;

/// Where stored responses live.
pub struct ResponseStore {
    backend: Backend,
    /// What `sira check` and the admin API say about it (never the Redis URL: it may hold
    /// a password).
    pub describe: String,
}

impl std::fmt::Debug for ResponseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

enum Backend {
    Memory(moka::sync::Cache<Arc<str>, Bytes>),
    Redis(Box<RedisBackend>),
}

/// The store could not be read or written (Redis down or too slow).
#[derive(Debug, thiserror::Error)]
#[error("the response store is unavailable: {0}")]
pub struct StoreError(pub String);

impl ResponseStore {
    /// In process memory: at most `capacity` bytes of records, each kept `ttl`.
    pub fn memory(capacity: u64, ttl: Duration) -> ResponseStore {
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|id: &Arc<str>, record: &Bytes| {
                u32::try_from(id.len() + record.len()).unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .build();
        ResponseStore {
            backend: Backend::Memory(cache),
            describe: format!("memory (capacity {capacity} bytes, ttl {}s)", ttl.as_secs()),
        }
    }

    /// In Redis, under `prefix` + id, each kept `ttl`; every operation bounded by `timeout`.
    pub fn redis(
        client: redis::Client,
        prefix: String,
        ttl: Duration,
        timeout: Duration,
    ) -> ResponseStore {
        let describe = format!("redis (prefix {prefix:?}, ttl {}s)", ttl.as_secs());
        ResponseStore {
            backend: Backend::Redis(Box::new(RedisBackend::new(client, prefix, ttl, timeout))),
            describe,
        }
    }

    /// The record stored under `id`, if any.
    pub async fn get(&self, id: &str) -> Result<Option<Bytes>, StoreError> {
        match &self.backend {
            Backend::Memory(cache) => Ok(cache.get(id)),
            Backend::Redis(redis) => redis.get(id).await,
        }
    }

    /// Stores `record` under `id`. Memory is written before this returns, so a follow-up
    /// that arrives as soon as the client has the answer finds it; Redis is written by a
    /// background task started now, ahead of the answer's last bytes.
    pub fn put(self: &Arc<Self>, id: &str, record: Bytes) {
        match &self.backend {
            Backend::Memory(cache) => cache.insert(Arc::from(id), record),
            Backend::Redis(_) => {
                let store = self.clone();
                let id = id.to_owned();
                tokio::spawn(async move {
                    if let Backend::Redis(redis) = &store.backend {
                        if let Err(e) = redis.put(&id, record).await {
                            tracing::warn!(response_id = %id, error = %e, "a response was not stored");
                        }
                    }
                });
            }
        }
    }

    /// Removes `id`; whether it was there.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Memory(cache) => Ok(cache.remove(id).is_some()),
            Backend::Redis(redis) => redis.delete(id).await,
        }
    }
}
