//! In-flight coalescing: identical cacheable requests that arrive while the first is still
//! being answered make no upstream call of their own. The first (the leader) goes to the
//! provider and publishes its answer here as it arrives; the others (followers) wait for a
//! whole JSON answer, or replay a stream from its first byte and then follow it live.
//!
//! A flight that fails (an error status, a cut stream, an answer too large to keep) tells
//! its followers so: those still waiting go to the provider themselves, and a stream that
//! was being followed ends as broken, as the leader's did.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use super::{Entry, Key, ResponseCache};
use crate::format::Format;

/// One answer being made.
pub struct Flight {
    /// The leader's format, which its answer is in.
    pub format: Format,
    state: Mutex<State>,
    changed: Notify,
    /// Requests waiting on or following this flight.
    followers: std::sync::atomic::AtomicUsize,
}

/// A follower's presence, for as long as it waits or follows.
pub struct Following(Arc<Flight>);

impl Following {
    pub fn flight(&self) -> &Flight {
        &self.0
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.0
            .followers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Default)]
struct State {
    /// Known once the leader's response header came: whether it is a stream.
    sse: Option<bool>,
    /// And the provider and upstream model that answer it.
    made_by: Option<(Box<str>, String)>,
    /// The answer so far (the leader's format, before the client-side filters).
    pieces: Vec<Bytes>,
    size: usize,
    end: Option<End>,
}

#[derive(Clone)]
pub enum End {
    Done(Arc<Entry>),
    Failed,
}

/// What a follower found.
pub enum Joined {
    /// The whole answer.
    Done(Arc<Entry>),
    /// A stream under way: replay it from the start, then follow.
    Stream,
    /// The leader failed: go to the provider.
    Failed,
}

impl Flight {
    pub fn new(format: Format) -> Flight {
        Flight {
            format,
            state: Mutex::default(),
            changed: Notify::new(),
            followers: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Counts a follower until the result is dropped.
    pub fn follow(self: &Arc<Self>) -> Following {
        self.followers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Following(self.clone())
    }

    /// Whether its answer is complete or failed.
    pub fn ended(&self) -> bool {
        self.state().end.is_some()
    }

    /// Whether anyone waits on or follows this flight.
    pub fn followed(&self) -> bool {
        self.followers.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a list and flags: still consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the flight is worth joining: done, failed, or a stream that started.
    pub async fn join(&self) -> Joined {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state();
                match &state.end {
                    Some(End::Done(entry)) => return Joined::Done(entry.clone()),
                    Some(End::Failed) => return Joined::Failed,
                    None if state.sse == Some(true) => return Joined::Stream,
                    None => {}
                }
            }
            notified.await;
        }
    }

    /// The pieces from `from` on, and the end if it came; waits while there is neither.
    pub async fn next(&self, from: usize) -> (Vec<Bytes>, Option<End>) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state();
                let pieces: Vec<Bytes> = state.pieces.get(from..).unwrap_or_default().to_vec();
                if !pieces.is_empty() || state.end.is_some() {
                    return (pieces, state.end.clone());
                }
            }
            notified.await;
        }
    }

    pub fn start(&self, sse: bool, provider: Box<str>, model: String) {
        let mut state = self.state();
        state.sse = Some(sse);
        state.made_by = Some((provider, model));
        drop(state);
        self.changed.notify_waiters();
    }

    /// The provider and upstream model answering, once the answer started.
    pub fn made_by(&self) -> Option<(Box<str>, String)> {
        self.state().made_by.clone()
    }

    /// Adds pieces of the answer; `false` (and the flight failed) past `max` bytes.
    pub fn push(&self, pieces: &[Bytes], max: usize) -> bool {
        let mut state = self.state();
        if state.end.is_some() {
            return false;
        }
        state.size += pieces.iter().map(Bytes::len).sum::<usize>();
        if state.size > max {
            state.end = Some(End::Failed);
            state.pieces = Vec::new();
            drop(state);
            self.changed.notify_waiters();
            return false;
        }
        state.pieces.extend(pieces.iter().cloned());
        drop(state);
        self.changed.notify_waiters();
        true
    }

    fn end(&self, end: End) {
        let mut state = self.state();
        if state.end.is_none() {
            state.end = Some(end);
        }
        drop(state);
        self.changed.notify_waiters();
    }
}

/// The leader's hold on its flight: finished with the entry, or failed when dropped
/// without one (an error, a cut, a client that left), and removed from the cache's list
/// either way.
pub struct Lead {
    pub flight: Arc<Flight>,
    cache: Arc<ResponseCache>,
    key: Key,
}

impl Lead {
    pub(super) fn new(flight: Arc<Flight>, cache: Arc<ResponseCache>, key: Key) -> Lead {
        Lead { flight, cache, key }
    }

    pub fn finish(self, entry: Arc<Entry>) {
        self.flight.end(End::Done(entry));
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.flight.end(End::Failed);
        self.cache.land(&self.key, &self.flight);
    }
}
