//! `cache:` → the response cache ([`crate::cache`]), and `models.<name>.cache` → whether and
//! how long an entry's answers are kept.
//!
//! ```yaml
//! cache:
//!   memory: { capacity: 256MiB, ttl: 10m }
//!   redis: { url: "redis://127.0.0.1:6379/1", ttl: 1h, prefix: "sira:cache:", timeout: 50ms }
//!   shared: false        # true: one answer for every caller; else per tenant, or per key
//!   max_entry: 8MiB      # larger answers are not kept
//!   replay: instant      # or `original`: a stored stream is replayed at the pace it came
//! models:
//!   gpt-4o:
//!     cache: { ttl: 1h }            # or `cache: off`, or { enabled: false }, { replay: … }
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;
use sha2::{Digest, Sha256};

use super::build::Builder;
use super::section;
use super::store::{MemoryConfig, RedisConfig};
use super::units::{ByteSize, HumanDuration};
use crate::cache::{ResponseCache, Settings, MAX_TTL};

const DEFAULT_CAPACITY: u64 = 256 << 20;
const DEFAULT_MEMORY_TTL: Duration = Duration::from_secs(600);
const DEFAULT_REDIS_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_PREFIX: &str = "sira:cache:";
/// A lookup waits this long for Redis at most: a miss costs less than a slow hit.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_MAX_ENTRY: u64 = 8 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheConfig {
    #[serde(default)]
    memory: Option<MemoryConfig>,
    #[serde(default)]
    redis: Option<RedisConfig>,
    #[serde(default)]
    shared: bool,
    #[serde(default)]
    max_entry: Option<ByteSize>,
    #[serde(default)]
    replay: Option<Pace>,
}

/// How a stored stream is replayed.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// All at once: the client gets the whole answer as fast as it reads.
    #[default]
    Instant,
    /// With the pauses the provider made, for clients (and demos) that expect a stream to
    /// look like one.
    Original,
}

/// The snapshot's cache and whether its answers are shared by every caller.
#[derive(Debug)]
pub struct CacheSection {
    pub cache: Arc<ResponseCache>,
    pub shared: bool,
    pub replay: Pace,
}

fn ttl(b: &mut Builder, ttl: Option<HumanDuration>, default: Duration, path: &str) -> Duration {
    let ttl = ttl.map_or(default, |t| t.0);
    if ttl.is_zero() {
        b.problem(path, "must be longer than 0s");
    }
    if ttl > MAX_TTL {
        b.problem(path, "must be at most 366 days");
    }
    ttl
}

/// `None` without a `cache:` section (or with a problem, recorded).
pub(super) fn cache(b: &mut Builder, value: Option<Value>) -> Option<CacheSection> {
    let config = section::<CacheConfig>(value?, "cache", b.problems)?;
    let memory = config.memory.unwrap_or_default();
    let capacity = memory.capacity.map_or(DEFAULT_CAPACITY, |c| c.0);
    if capacity == 0 {
        b.problem("cache.memory.capacity", "must be more than 0 bytes");
    }
    let memory_ttl = ttl(b, memory.ttl, DEFAULT_MEMORY_TTL, "cache.memory.ttl");
    let max_entry = config
        .max_entry
        .map_or(DEFAULT_MAX_ENTRY.min(capacity.max(1)), |m| m.0);
    if max_entry == 0 || max_entry > capacity {
        b.problem(
            "cache.max_entry",
            "must be more than 0 bytes and at most the memory's capacity",
        );
    }
    let mut key = format!("{capacity}\0{}\0{max_entry}", memory_ttl.as_millis());
    let redis = match config.redis {
        None => None,
        Some(redis) => {
            let redis_ttl = ttl(b, redis.ttl, DEFAULT_REDIS_TTL, "cache.redis.ttl");
            let timeout = redis.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
            if timeout.is_zero() {
                b.problem("cache.redis.timeout", "must be longer than 0s");
            }
            let prefix = redis.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
            // The URL may hold a password: the message never repeats it.
            let Ok(client) = redis::Client::open(redis.url.as_str()) else {
                b.problem(
                    "cache.redis.url",
                    "not a valid Redis URL (redis://[user:password@]host[:port][/db] or unix:///path)",
                );
                return None;
            };
            let fingerprint = hex::encode(Sha256::digest(redis.url.as_bytes()));
            key.push_str(&format!(
                "\0{fingerprint}\0{prefix}\0{}\0{}",
                redis_ttl.as_millis(),
                timeout.as_millis()
            ));
            Some((client, prefix, redis_ttl, timeout))
        }
    };
    let cache = crate::runtime::registry().response_cache(&key, || {
        ResponseCache::new(Settings {
            capacity: capacity.max(1),
            memory_ttl: memory_ttl.max(Duration::from_millis(1)),
            redis,
            max_entry: usize::try_from(max_entry).unwrap_or(usize::MAX),
        })
    });
    Some(CacheSection {
        cache,
        shared: config.shared,
        replay: config.replay.unwrap_or_default(),
    })
}

/// `models.<name>.cache`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelCache {
    /// The entry's answers are never cached (`cache: off`).
    pub off: bool,
    /// How long its answers are kept, instead of the cache's TTLs.
    pub ttl: Option<Duration>,
    /// Overrides `cache.shared` for this entry.
    pub shared: Option<bool>,
    /// Overrides `cache.replay` for this entry.
    pub replay: Option<Pace>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelCacheConfig {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    ttl: Option<HumanDuration>,
    #[serde(default)]
    shared: Option<bool>,
    #[serde(default)]
    replay: Option<Pace>,
}

pub(super) fn model_cache(b: &mut Builder, value: Option<Value>, path: &str) -> ModelCache {
    match value {
        None => ModelCache::default(),
        Some(Value::Bool(on)) => ModelCache {
            off: !on,
            ..ModelCache::default()
        },
        Some(Value::String(s)) if s == "off" => ModelCache {
            off: true,
            ..ModelCache::default()
        },
        Some(value) => {
            let Some(config) = section::<ModelCacheConfig>(value, path, b.problems) else {
                return ModelCache::default();
            };
            let ttl = config
                .ttl
                .map(|t| ttl(b, Some(t), DEFAULT_MEMORY_TTL, &format!("{path}.ttl")));
            ModelCache {
                off: config.enabled == Some(false),
                ttl,
                shared: config.shared,
                replay: config.replay,
            }
        }
    }
}
