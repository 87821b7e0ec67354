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
//! Records are filed per owner (the key that created them): an id another key's provider
//! happens to reuse, or a client picks, never reaches or replaces someone else's record.
//! They live in process memory by default (bounded by bytes, least recently used first out,
//! each kept `ttl` after its last use) or in Redis when `responses_store.redis` is set, so
//! that every sira host of a fleet can continue a conversation another host started. The
//! store is kept across reloads while its settings do not change ([`crate::runtime`]).

pub mod record;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::redis_kv::RedisKv;
pub use record::{expand, history, input_items, ChainError, Expanded, History, Record};

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
    Memory(moka::sync::Cache<String, Bytes>),
    Redis(Box<RedisKv>),
}

/// The store could not be read or written (Redis down or too slow).
#[derive(Debug, thiserror::Error)]
#[error("the response store is unavailable: {0}")]
pub struct StoreError(pub String);

impl From<crate::redis_kv::KvError> for StoreError {
    fn from(e: crate::redis_kv::KvError) -> StoreError {
        StoreError(e.0)
    }
}

/// The longest a record may be kept: moka refuses durations beyond ~1000 years, and no
/// conversation needs more than this.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Where `owner`'s record `id` is filed.
fn slot(owner: &str, id: &str) -> String {
    let digest = Sha256::digest(owner.as_bytes());
    format!("{}:{id}", hex::encode(&digest[..8]))
}

impl ResponseStore {
    /// In process memory: at most `capacity` bytes of records, each kept `ttl` after it was
    /// last read or written. Least recently used records go first, so a conversation in
    /// use is never the one pushed out by a new record.
    pub fn memory(capacity: u64, ttl: Duration) -> ResponseStore {
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|id: &String, record: &Bytes| {
                u32::try_from(id.len() + record.len()).unwrap_or(u32::MAX)
            })
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .time_to_idle(ttl.min(MAX_TTL))
            .build();
        ResponseStore {
            backend: Backend::Memory(cache),
            describe: format!("memory (capacity {capacity} bytes, ttl {}s)", ttl.as_secs()),
        }
    }

    /// In Redis, under `prefix` + owner + id, each kept `ttl` after its last use; every
    /// operation bounded by `timeout`.
    pub fn redis(
        client: redis::Client,
        prefix: String,
        ttl: Duration,
        timeout: Duration,
    ) -> ResponseStore {
        let describe = format!("redis (prefix {prefix:?}, ttl {}s)", ttl.as_secs());
        ResponseStore {
            backend: Backend::Redis(Box::new(RedisKv::new(client, prefix, ttl, timeout, true))),
            describe,
        }
    }

    /// `owner`'s record `id`, if any.
    pub async fn get(&self, owner: &str, id: &str) -> Result<Option<Bytes>, StoreError> {
        let slot = slot(owner, id);
        match &self.backend {
            Backend::Memory(cache) => Ok(cache.get(&slot)),
            Backend::Redis(redis) => Ok(redis.get(&slot).await?),
        }
    }

    /// Stores `record` as `owner`'s `id`. Memory is written before this returns; a Redis
    /// write runs in the background but this host reads it back at once (it is held until
    /// Redis has it), so a follow-up that arrives as soon as the client has the answer
    /// finds it.
    pub fn put(self: &Arc<Self>, owner: &str, id: &str, record: Bytes) {
        let slot = slot(owner, id);
        match &self.backend {
            Backend::Memory(cache) => cache.insert(slot, record),
            Backend::Redis(redis) => {
                redis.hold(&slot, record.clone());
                let store = self.clone();
                tokio::spawn(async move {
                    if let Backend::Redis(redis) = &store.backend {
                        if let Err(e) = redis.put(&slot, record).await {
                            tracing::warn!(error = %e, "a response was not stored");
                        }
                    }
                });
            }
        }
    }

    /// Removes `owner`'s `id`; whether it was there.
    pub async fn delete(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        let slot = slot(owner, id);
        match &self.backend {
            Backend::Memory(cache) => Ok(cache.remove(&slot).is_some()),
            Backend::Redis(redis) => Ok(redis.delete(&slot).await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_filed_per_owner() {
        let store = Arc::new(ResponseStore::memory(1 << 20, Duration::from_secs(60)));
        store.put("a", "resp_1", Bytes::from_static(b"of a"));
        store.put("b", "resp_1", Bytes::from_static(b"of b"));
        assert_eq!(store.get("a", "resp_1").await.unwrap().unwrap(), "of a");
        assert_eq!(store.get("b", "resp_1").await.unwrap().unwrap(), "of b");
        assert!(store.delete("b", "resp_1").await.unwrap());
        assert_eq!(store.get("a", "resp_1").await.unwrap().unwrap(), "of a");
    }
}
