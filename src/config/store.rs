//! `responses_store:` → the store of `store: true` responses ([`crate::responses_store`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;
use sha2::{Digest, Sha256};

use super::build::Builder;
use super::section;
use super::units::{ByteSize, HumanDuration};
use crate::responses_store::ResponseStore;

/// Records kept in memory when the section is absent: enough for thousands of agent turns,
/// small beside an edge host's memory.
const DEFAULT_CAPACITY: u64 = 64 << 20;
/// A day: a conversation resumed the next morning still works.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_PREFIX: &str = "sira:response:";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreConfig {
    #[serde(default)]
    memory: Option<MemoryConfig>,
    #[serde(default)]
    redis: Option<RedisConfig>,
}

/// A store's `memory:` (the response store's and the response cache's).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MemoryConfig {
    #[serde(default)]
    pub capacity: Option<ByteSize>,
    #[serde(default)]
    pub ttl: Option<HumanDuration>,
}

/// A store's `redis:` (the response store's and the response cache's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedisConfig {
    pub url: String,
    #[serde(default)]
    pub ttl: Option<HumanDuration>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// Bound on each Redis operation (and on connecting).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

/// `Some(None)` for `responses_store: off`; `None` when the section has a problem.
pub(super) fn responses_store(
    b: &mut Builder,
    value: Option<Value>,
) -> Option<Option<Arc<ResponseStore>>> {
    let config = match value {
        None => StoreConfig {
            memory: None,
            redis: None,
        },
        Some(Value::Bool(false)) => return Some(None),
        Some(Value::String(s)) if s == "off" => return Some(None),
        Some(value) => section::<StoreConfig>(value, "responses_store", b.problems)?,
    };
    let ttl_of = |ttl: Option<HumanDuration>, path: &str, b: &mut Builder| {
        let ttl = ttl.map_or(DEFAULT_TTL, |t| t.0);
        if ttl.is_zero() {
            b.problem(path, "must be longer than 0s");
        }
        if ttl > crate::responses_store::MAX_TTL {
            b.problem(path, "must be at most 366 days");
        }
        ttl
    };
    match (config.memory, config.redis) {
        (Some(_), Some(_)) => {
            b.problem(
                "responses_store",
                "choose one of memory and redis (redis is shared by every sira host)",
            );
            None
        }
        (memory, None) => {
            let memory = memory.unwrap_or_default();
            let capacity = memory.capacity.map_or(DEFAULT_CAPACITY, |c| c.0);
            if capacity == 0 {
                b.problem(
                    "responses_store.memory.capacity",
                    "must be more than 0 bytes; write `responses_store: off` to store nothing",
                );
            }
            let ttl = ttl_of(memory.ttl, "responses_store.memory.ttl", b);
            let key = format!("memory\0{capacity}\0{}", ttl.as_millis());
            Some(Some(
                crate::runtime::registry()
                    .response_store(&key, || ResponseStore::memory(capacity, ttl)),
            ))
        }
        (None, Some(redis)) => {
            let ttl = ttl_of(redis.ttl, "responses_store.redis.ttl", b);
            let timeout = redis.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
            if timeout.is_zero() {
                b.problem("responses_store.redis.timeout", "must be longer than 0s");
            }
            let prefix = redis.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
            // The URL may hold a password: the message never repeats it.
            let Ok(client) = redis::Client::open(redis.url.as_str()) else {
                b.problem(
                    "responses_store.redis.url",
                    "not a valid Redis URL (redis://[user:password@]host[:port][/db] or unix:///path)",
                );
                return None;
            };
            let fingerprint = hex::encode(Sha256::digest(redis.url.as_bytes()));
            let key = format!(
                "redis\0{fingerprint}\0{prefix}\0{}\0{}",
                ttl.as_millis(),
                timeout.as_millis()
            );
            Some(Some(
                crate::runtime::registry()
                    .response_store(&key, || ResponseStore::redis(client, prefix, ttl, timeout)),
            ))
        }
    }
}
