//! The response cache: exact answers to exact requests, kept in memory (L1) and, when
//! configured, in Redis shared by a fleet (L2), with in-flight coalescing ([`flight`]).
//!
//! An entry is the answer as the client that asked first received it in its own format,
//! before the client-side filters (so that a filter such as `redact … restore: true` runs
//! again, with this request's placeholders, on the replay), together with what it cost: the
//! provider, the upstream model and the usage, which a hit reports as saved. The key is the
//! request as the provider would get it ([`key`]), so a client of another format may be
//! answered from it too: the replay translates it into that client's format.
//!
//! L1 is a `moka` cache bounded by bytes with TinyLFU admission (a one-off answer does not
//! push out answers asked for again and again) and a TTL per entry (the model's, capped by
//! the memory's). L2 is read when L1 misses, within the Redis timeout, and written in the
//! background; a Redis that is down costs a miss, never an error.

pub mod flight;
mod key;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ahash::AHashMap;
use bytes::{BufMut, Bytes, BytesMut};

pub use flight::{Flight, Following, Joined, Lead};
pub use key::{in_format, key, Key, KeyParts};

use crate::format::Format;
use crate::redis_kv::RedisKv;
use crate::usage::Usage;

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    /// The format the answer is in: that of the client that asked first.
    pub format: Format,
    /// An SSE stream (else a JSON body).
    pub sse: bool,
    pub body: Bytes,
    pub provider: String,
    pub upstream_model: String,
    /// What the provider reported for it: saved by every hit.
    pub usage: Usage,
    /// How long it is kept.
    pub ttl: Duration,
    /// A stream's timing, for a replay at the original pace (`cache.replay: original`);
    /// empty for a JSON answer.
    pub pace: Arc<[Mark]>,
}

/// Where a stream's body stood when a batch of it arrived, and when, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub offset: u32,
    pub after_ms: u32,
}

/// Batches closer together than this replay together: the pace of a stream is its pauses,
/// not the scheduling noise between two reads.
const MARK_RESOLUTION_MS: u32 = 2;
/// Marks per stream at most (8 bytes each): a longer stream's later batches replay
/// together with the last marked one.
pub const MAX_MARKS: usize = 4096;

/// The longest pause a replay makes between two batches: a provider that stalled once is
/// not a reason to hold a client (and its connection) as long again on every hit.
pub const MAX_PAUSE_MS: u32 = 10_000;

/// Notes a batch of `offset` bytes into the stream, `after_ms` from its start.
pub fn mark(marks: &mut Vec<Mark>, offset: usize, after_ms: u64) {
    let (Ok(offset), Ok(after_ms)) = (u32::try_from(offset), u32::try_from(after_ms)) else {
        return;
    };
    let close = marks
        .last()
        .is_some_and(|last| after_ms.saturating_sub(last.after_ms) < MARK_RESOLUTION_MS);
    if close || marks.len() >= MAX_MARKS {
        return;
    }
    let after_ms = marks.last().map_or(after_ms, |last| {
        after_ms.min(last.after_ms.saturating_add(MAX_PAUSE_MS))
    });
    marks.push(Mark { offset, after_ms });
}

/// Bytes an entry costs beyond its body (its struct, the key, moka's bookkeeping).
const ENTRY_OVERHEAD: usize = 256;

impl Entry {
    fn weight(&self) -> u32 {
        let pace = self.pace.len() * std::mem::size_of::<Mark>();
        u32::try_from(self.body.len() + self.provider.len() + self.upstream_model.len() + pace)
            .unwrap_or(u32::MAX)
            .saturating_add(ENTRY_OVERHEAD as u32)
    }

    /// For Redis: a JSON header line, then the body as it is.
    fn encode(&self) -> Bytes {
        let header = serde_json::json!({
            "v": ENTRY_VERSION,
            "format": self.format.as_str(),
            "sse": self.sse,
            "provider": self.provider,
            "model": self.upstream_model,
            "input": self.usage.input,
            "output": self.usage.output,
            "cached_input": self.usage.cached_input,
            // When it expires, as wall time: a host that reads it later keeps it only
            // for what is left.
            "expires_ms": now_ms().saturating_add(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)),
            "pace": self.pace.iter().flat_map(|m| [m.offset, m.after_ms]).collect::<Vec<u32>>(),
        })
        .to_string();
        let mut out = BytesMut::with_capacity(header.len() + 1 + self.body.len());
        out.put_slice(header.as_bytes());
        out.put_u8(b'\n');
        out.put_slice(&self.body);
        out.freeze()
    }

    fn decode(bytes: Bytes) -> Option<Entry> {
        let newline = bytes.iter().position(|&b| b == b'\n')?;
        let header: serde_json::Value = serde_json::from_slice(&bytes[..newline]).ok()?;
        if header["v"] != ENTRY_VERSION {
            return None;
        }
        let format = Format::parse(header["format"].as_str()?)?;
        let number = |name: &str| header[name].as_u64().unwrap_or(0);
        let body = bytes.slice(newline + 1..);
        Some(Entry {
            format,
            sse: header["sse"].as_bool()?,
            pace: decode_pace(&header["pace"], body.len())?,
            body,
            provider: header["provider"].as_str()?.to_owned(),
            upstream_model: header["model"].as_str()?.to_owned(),
            usage: Usage {
                input: number("input"),
                output: number("output"),
                cached_input: number("cached_input"),
                ..Usage::default()
            },
            ttl: Duration::from_millis(
                number("expires_ms")
                    .checked_sub(now_ms())
                    .filter(|left| *left > 0)?,
            ),
        })
    }
}

/// The form of entries in Redis. 2: entries carry their format, and keys are the
/// provider's request (an entry of form 1 is a miss, and its key is never asked for again).
const ENTRY_VERSION: u64 = 2;

/// A stored stream's marks, checked: offsets and times never go back, offsets stay in the
/// body, no pause is longer than [`MAX_PAUSE_MS`]. Missing (an entry written before marks were kept): none.
fn decode_pace(value: &serde_json::Value, body_len: usize) -> Option<Arc<[Mark]>> {
    let Some(flat) = value.as_array() else {
        return Some(Arc::from([]));
    };
    if flat.len() % 2 != 0 || flat.len() / 2 > MAX_MARKS {
        return None;
    }
    let mut marks: Vec<Mark> = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks_exact(2) {
        let number = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        let mark = Mark {
            offset: number(&pair[0])?,
            after_ms: number(&pair[1])?,
        };
        let ordered = marks.last().is_none_or(|last| {
            mark.offset >= last.offset
                && mark.after_ms >= last.after_ms
                && mark.after_ms - last.after_ms <= MAX_PAUSE_MS
        });
        if !ordered || mark.offset as usize > body_len {
            return None;
        }
        marks.push(mark);
    }
    Some(marks.into())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Each entry lives its own TTL.
struct PerEntry;

impl moka::Expiry<Key, Arc<Entry>> for PerEntry {
    fn expire_after_create(
        &self,
        _key: &Key,
        entry: &Arc<Entry>,
        _created: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The settings a cache is made with (a reload that keeps them keeps the cache).
pub struct Settings {
    pub capacity: u64,
    pub memory_ttl: Duration,
    /// `(client, prefix, ttl, timeout)`.
    pub redis: Option<(redis::Client, String, Duration, Duration)>,
    /// The largest answer kept.
    pub max_entry: usize,
}

pub struct ResponseCache {
    memory: moka::sync::Cache<Key, Arc<Entry>>,
    memory_ttl: Duration,
    redis: Option<(RedisKv, Duration)>,
    pub max_entry: usize,
    flights: Mutex<AHashMap<Key, Arc<Flight>>>,
    /// What `sira check` says of it (never the Redis URL: it may hold a password).
    pub describe: String,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// The longest an entry may be kept (moka refuses durations of centuries).
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// What a request is answered with instead of a provider's answer.
pub enum Replay {
    /// A whole answer: from the cache, or from an identical request that just finished.
    Stored(Arc<Entry>),
    /// An identical request's stream, still arriving.
    Follow(flight::Following),
}

/// Whether this request leads its flight or follows another's.
pub enum Role {
    Lead(Lead),
    Follow(Arc<Flight>),
}

impl ResponseCache {
    pub fn new(settings: Settings) -> ResponseCache {
        let memory = moka::sync::Cache::builder()
            .max_capacity(settings.capacity)
            .weigher(|_key: &Key, entry: &Arc<Entry>| entry.weight())
            .expire_after(PerEntry)
            .build();
        let mut describe = format!(
            "memory (capacity {} bytes, ttl {}s)",
            settings.capacity,
            settings.memory_ttl.as_secs()
        );
        let redis = settings.redis.map(|(client, prefix, ttl, timeout)| {
            describe.push_str(&format!(
                ", redis (prefix {prefix:?}, ttl {}s)",
                ttl.as_secs()
            ));
            (RedisKv::new(client, prefix, ttl, timeout, false), ttl)
        });
        ResponseCache {
            memory,
            memory_ttl: settings.memory_ttl,
            redis,
            max_entry: settings.max_entry,
            flights: Mutex::default(),
            describe,
        }
    }

    /// The answer in memory, if any.
    pub fn get_local(&self, key: &Key) -> Option<Arc<Entry>> {
        self.memory.get(key)
    }

    pub fn has_remote(&self) -> bool {
        self.redis.is_some()
    }

    /// The answer in Redis, if any (kept in memory too from then on). A Redis that is
    /// down or slow is a miss.
    pub async fn get_remote(&self, key: &Key) -> Option<Arc<Entry>> {
        let (redis, _) = self.redis.as_ref()?;
        let bytes = match redis.get(&hex::encode(key)).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::debug!(error = %e, "the cache's Redis was not read");
                return None;
            }
        };
        let mut entry = Entry::decode(bytes)?;
        entry.ttl = entry.ttl.min(self.memory_ttl);
        let entry = Arc::new(entry);
        self.memory.insert(*key, entry.clone());
        self.gauge();
        Some(entry)
    }

    /// Keeps an answer: in memory at once, in Redis in the background. `ttl` is the model
    /// entry's, else each tier keeps it its own TTL (memory never longer than its own).
    pub fn put(self: &Arc<Self>, key: Key, mut entry: Entry, ttl: Option<Duration>) -> Arc<Entry> {
        if let Some((_, redis_ttl)) = &self.redis {
            entry.ttl = ttl.unwrap_or(*redis_ttl);
            let encoded = entry.encode();
            let remote_ttl = entry.ttl;
            let cache = self.clone();
            tokio::spawn(async move {
                if let Some((redis, _)) = &cache.redis {
                    let written = redis.put_for(&hex::encode(key), encoded, remote_ttl).await;
                    if let Err(e) = written {
                        tracing::debug!(error = %e, "an answer was not cached in Redis");
                    }
                }
            });
        }
        entry.ttl = ttl.unwrap_or(self.memory_ttl).min(self.memory_ttl);
        let entry = Arc::new(entry);
        self.memory.insert(key, entry.clone());
        self.gauge();
        entry
    }

    fn gauge(&self) {
        // moka applies writes (and evictions) in batches: its size is right once they ran.
        // A put is once per miss, beside a provider's round trip.
        self.memory.run_pending_tasks();
        crate::metrics::metrics()
            .cache_bytes
            .set(i64::try_from(self.memory.weighted_size()).unwrap_or(i64::MAX));
    }

    /// Leads the flight for `key`, whose answer will be in `format`, or follows the one
    /// under way.
    pub fn fly(self: &Arc<Self>, key: Key, format: Format) -> Role {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        // One that ended is as good as gone: its leader removes it in a moment, and a
        // request that could not use its answer must not find it again.
        if let Some(flight) = flights.get(&key).filter(|f| !f.ended()) {
            return Role::Follow(flight.clone());
        }
        let flight = Arc::new(Flight::new(format));
        flights.insert(key, flight.clone());
        Role::Lead(Lead::new(flight, self.clone(), key))
    }

    /// The flight for `key` is over: later requests look the cache up again.
    fn land(&self, key: &Key, flight: &Arc<Flight>) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(key);
        }
    }

    /// Entries in memory, after pending evictions ran (for tests and the admin API).
    pub fn entries(&self) -> u64 {
        self.memory.run_pending_tasks();
        self.memory.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &'static str, ttl: Duration) -> Arc<Entry> {
        Arc::new(Entry {
            format: Format::OpenAiChat,
            sse: false,
            body: Bytes::from_static(body.as_bytes()),
            provider: "oai".into(),
            upstream_model: "gpt-4o".into(),
            usage: Usage {
                input: 3,
                output: 4,
                ..Usage::default()
            },
            ttl,
            pace: Arc::from([Mark {
                offset: 0,
                after_ms: 0,
            }]),
        })
    }

    #[test]
    fn marks_merge_close_batches_and_stop_at_the_bound() {
        let mut marks = Vec::new();
        mark(&mut marks, 0, 0);
        mark(&mut marks, 10, 1);
        mark(&mut marks, 20, 50);
        assert_eq!(
            marks,
            [
                Mark {
                    offset: 0,
                    after_ms: 0
                },
                Mark {
                    offset: 20,
                    after_ms: 50
                }
            ]
        );
        for i in 0..10_000u64 {
            mark(&mut marks, 30 + i as usize, 100 + i * 10);
        }
        assert_eq!(marks.len(), MAX_MARKS);
        // A stall is kept as the longest pause a replay makes, not as long as it was.
        let mut stalled = Vec::new();
        mark(&mut stalled, 0, 0);
        mark(&mut stalled, 5, 3_600_000);
        assert_eq!(stalled[1].after_ms, MAX_PAUSE_MS);
    }

    #[test]
    fn entries_round_trip_through_their_redis_form() {
        let mut e = Arc::into_inner(entry("{\"a\":\n1}", Duration::from_secs(9))).unwrap();
        e.format = Format::Anthropic;
        let back = Entry::decode(e.encode()).unwrap();
        assert_eq!(back.format, Format::Anthropic);
        assert_eq!(back.body, e.body);
        assert_eq!(back.usage, e.usage);
        assert_eq!(back.provider.as_str(), "oai");
        // What is left of its life, not a new one.
        assert!(back.ttl <= e.ttl && back.ttl > e.ttl - Duration::from_secs(2));
        assert_eq!(back.pace, e.pace);
        assert!(Entry::decode(Bytes::from_static(b"garbage")).is_none());
        // Marks that point past the body or go back in time are a broken entry.
        let broken = |pace: &str| {
            let text = format!(
                "{{\"v\":2,\"format\":\"openai\",\"sse\":true,\"provider\":\"p\",\"model\":\"m\",\"expires_ms\":{},\"pace\":{pace}}}\nabc",
                now_ms() + 60_000
            );
            Entry::decode(Bytes::from(text))
        };
        assert!(broken("[0,0,3,5]").is_some());
        assert!(broken("[0,0,4,5]").is_none());
        assert!(broken("[0,9,1,5]").is_none());
        assert!(broken("[0]").is_none());
        assert!(broken("[0,0,1,10000]").is_some());
        assert!(broken("[0,0,1,10001]").is_none());
        // An entry of the first form (no format, keyed on the client's request) is a miss.
        let first_form = format!(
            "{{\"v\":1,\"sse\":false,\"provider\":\"p\",\"model\":\"m\",\"expires_ms\":{},\"pace\":[]}}\n{{}}",
            now_ms() + 60_000
        );
        assert!(Entry::decode(Bytes::from(first_form)).is_none());
    }

    #[tokio::test]
    async fn a_flight_is_led_once_and_its_followers_get_the_answer() {
        let cache = Arc::new(ResponseCache::new(Settings {
            capacity: 1 << 20,
            memory_ttl: Duration::from_secs(60),
            redis: None,
            max_entry: 1 << 20,
        }));
        let k = [7u8; 32];
        let Role::Lead(lead) = cache.fly(k, Format::OpenAiChat) else {
            panic!("the first request leads")
        };
        let Role::Follow(flight) = cache.fly(k, Format::OpenAiChat) else {
            panic!("the second follows")
        };
        let waiting = tokio::spawn(async move { matches!(flight.join().await, Joined::Done(_)) });
        let e = Arc::try_unwrap(entry("{}", Duration::from_secs(60))).unwrap();
        let e = cache.put(k, e, None);
        lead.finish(e);
        assert!(waiting.await.unwrap());
        // Landed: the next request leads a new flight (and would find the entry first).
        assert!(matches!(cache.fly(k, Format::OpenAiChat), Role::Lead(_)));
        assert!(cache.get_local(&k).is_some());
    }

    #[tokio::test]
    async fn a_failed_flight_sends_its_followers_upstream() {
        let cache = Arc::new(ResponseCache::new(Settings {
            capacity: 1 << 20,
            memory_ttl: Duration::from_secs(60),
            redis: None,
            max_entry: 1 << 20,
        }));
        let k = [1u8; 32];
        let lead = cache.fly(k, Format::OpenAiChat);
        let Role::Follow(flight) = cache.fly(k, Format::OpenAiChat) else {
            panic!("the second follows")
        };
        drop(lead);
        assert!(matches!(flight.join().await, Joined::Failed));
    }
}
