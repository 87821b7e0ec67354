//! What the mock remembers for tests: requests, stream timings and aborted streams.

use crate::knobs::MockConfig;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `POST`, `GET`, …
    pub method: String,
    /// Path plus `?query` exactly as sent (e.g. `/v1beta/models/m:streamGenerateContent?alt=sse`).
    pub path_and_query: String,
    /// Header names are lowercase (HTTP/2 style, as hyper normalizes them); values are decoded
    /// lossily as UTF-8. Repeated headers appear once per value, in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When the request head and body had been fully read.
    pub at: Instant,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; `Value::Null` when it is not JSON (tests then see a clear
    /// mismatch instead of a panic inside the mock).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A stream whose client went away before the mock finished sending it.
#[derive(Clone, Debug)]
pub struct AbortedStream {
    /// Request path without the query.
    pub path: String,
    /// Events completely handed to hyper before the client disappeared.
    pub events_sent: usize,
    /// When the mock noticed (hyper dropped the response body).
    pub at: Instant,
}

/// How a stream ended, as seen by the mock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamOutcome {
    /// Still sending (or waiting out a delay).
    InProgress,
    /// Every planned event (including any injected error event) was sent.
    Completed,
    /// The client (the gateway) went away first; also listed in `aborted_streams()`.
    ClientGone,
    /// `x-mock-fail-after` cut the connection on purpose.
    Cut,
}

/// Timing of one streamed response, for tests that assert when events left the mock.
#[derive(Clone, Debug)]
pub struct StreamLog {
    /// Index of the request in `MockProvider::requests()`.
    pub request_index: usize,
    /// Request path without the query.
    pub path: String,
    /// When the response head was handed to hyper (after any `x-mock-hang-ms`).
    pub started: Instant,
    /// When each event was handed to hyper, in order. With `x-mock-split: bytes` this is the
    /// moment its last piece was handed over. Hyper writes a frame to the socket as soon as it
    /// gets it, so this is the write time up to scheduling noise.
    pub events: Vec<Instant>,
    /// When the stream ended, whatever the outcome; `None` while in progress.
    pub ended: Option<Instant>,
    pub outcome: StreamOutcome,
}

/// A live stream's log, shared between the response body and the provider handle.
pub(crate) type StreamCell = Arc<Mutex<StreamLog>>;

/// State shared by the server tasks and the `MockProvider` handle.
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    requests: Mutex<Vec<RecordedRequest>>,
    streams: Mutex<Vec<StreamCell>>,
    aborted: Mutex<Vec<AbortedStream>>,
    pub(crate) connections: AtomicUsize,
    /// Request sequence number: seeds ids, and counts requests when recording is off.
    seq: AtomicU64,
}

/// Poisoning only means another thread panicked mid-push; the data is still usable and a test
/// helper must not turn that into a second panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        Shared {
            config,
            requests: Mutex::default(),
            streams: Mutex::default(),
            aborted: Mutex::default(),
            connections: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn recording(&self) -> bool {
        !self.config.disable_recording
    }

    /// Stores a request and returns its index (`None` when recording is disabled).
    pub(crate) fn record_request(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Option<usize> {
        if !self.recording() {
            return None;
        }
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let rec = RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path_and_query,
            headers,
            body: body.clone(),
            at: Instant::now(),
        };
        let mut requests = lock(&self.requests);
        requests.push(rec);
        Some(requests.len() - 1)
    }

    pub(crate) fn open_stream(&self, request_index: usize, path: &str) -> StreamCell {
        let cell = Arc::new(Mutex::new(StreamLog {
            request_index,
            path: path.to_owned(),
            started: Instant::now(),
            events: Vec::new(),
            ended: None,
            outcome: StreamOutcome::InProgress,
        }));
        lock(&self.streams).push(Arc::clone(&cell));
        cell
    }

    pub(crate) fn record_abort(&self, path: &str, events_sent: usize, at: Instant) {
        lock(&self.aborted).push(AbortedStream {
            path: path.to_owned(),
            events_sent,
            at,
        });
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    pub(crate) fn streams(&self) -> Vec<StreamLog> {
        lock(&self.streams)
            .iter()
            .map(|c| lock(c).clone())
            .collect()
    }

    pub(crate) fn aborted(&self) -> Vec<AbortedStream> {
        lock(&self.aborted).clone()
    }

    pub(crate) fn aborted_count(&self) -> usize {
        lock(&self.aborted).len()
    }

    pub(crate) fn clear(&self) {
        lock(&self.requests).clear();
        lock(&self.streams).clear();
        lock(&self.aborted).clear();
    }
}
