//! Response bodies: a whole buffer, or a paced sequence of SSE events.
//!
//! The stream is a hand-written `Body` driven by hyper's polling rather than a task feeding a
//! channel. Hyper pulls a frame only when it is ready to write it, so the instant recorded in
//! `poll_frame` is the write time, and hyper dropping the body is the exact signal that the
//! client went away (HTTP/1: hyper notices EOF or a failed write on the busy connection;
//! HTTP/2: RST_STREAM). No task or channel per stream also keeps the benchmark path lean.

use crate::knobs::Split;
use crate::record::{lock, Shared, StreamCell, StreamOutcome};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Size of each write with `x-mock-split: bytes`: small and odd, so that pieces cut through
/// `data:` prefixes, JSON tokens and multi-byte UTF-8 sequences.
pub(crate) const PIECE: usize = 7;

/// Pause between the last event and a deliberate cut: hyper discards buffered but unflushed
/// bytes when a body fails, so the events before the cut must be on the socket first.
const CUT_GRACE: Duration = Duration::from_millis(10);

pub(crate) enum MockBody {
    Full(Option<Bytes>),
    Events(Box<EventBody>),
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        MockBody::Full(Some(bytes.into()))
    }
}

/// What happens after the last planned event.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// End the body normally (chunked terminator / END_STREAM).
    Clean,
    /// Fail the body: hyper closes the HTTP/1 connection without the terminating chunk
    /// (HTTP/2: resets the stream), which is what a provider dying mid-stream looks like.
    Cut,
}

pub(crate) struct EventBody {
    events: Vec<Bytes>,
    /// Index of the event being sent.
    next: usize,
    /// Bytes of `events[next]` already sent (split mode only).
    offset: usize,
    end: End,
    delay: Duration,
    split: Split,
    sleep: Option<Pin<Box<Sleep>>>,
    last_sent: Instant,
    frames: usize,
    yielded: bool,
    done: bool,
    /// When a deliberate cut may happen (set once the cut is reached).
    cut_at: Option<Instant>,
    track: Tracker,
}

/// Bookkeeping for the test API; `log` is `None` when recording is disabled.
pub(crate) struct Tracker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) uri: http::Uri,
    pub(crate) log: Option<StreamCell>,
}

impl EventBody {
    pub(crate) fn new(
        events: Vec<Bytes>,
        end: End,
        delay: Duration,
        split: Split,
        track: Tracker,
    ) -> Self {
        EventBody {
            events,
            next: 0,
            offset: 0,
            end,
            delay,
            split,
            sleep: None,
            last_sent: Instant::now(),
            frames: 0,
            yielded: false,
            done: false,
            cut_at: None,
            track,
        }
    }

    fn finish(&mut self, outcome: StreamOutcome) {
        self.done = true;
        if let Some(log) = &self.track.log {
            let mut log = lock(log);
            log.ended = Some(std::time::Instant::now());
            log.outcome = outcome;
        }
    }

    /// Ready once `deadline` has passed; one timer is reused for the whole stream.
    fn wait_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.next >= self.events.len() {
            // Only reached with no events at all, or for `End::Cut`: clean ends are closed
            // together with their last event so that `is_end_stream` is accurate.
            return match self.end {
                End::Clean => {
                    self.finish(StreamOutcome::Completed);
                    Poll::Ready(None)
                }
                End::Cut => {
                    let at = *self
                        .cut_at
                        .get_or_insert_with(|| Instant::now() + CUT_GRACE);
                    if self.wait_until(at, cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.finish(StreamOutcome::Cut);
                    Poll::Ready(Some(Err(std::io::Error::other(
                        "x-mock-fail-after: stream cut on purpose",
                    ))))
                }
            };
        }
        // The delay goes before every event but the first, never between pieces of one event.
        let paced = self.offset == 0 && self.next > 0 && !self.delay.is_zero();
        if paced
            && self
                .wait_until(self.last_sent + self.delay, cx)
                .is_pending()
        {
            return Poll::Pending;
        }
        if self.split == Split::Bytes && self.frames > 0 && !self.yielded {
            // Returning Pending (after waking ourselves) makes hyper flush what it has before it
            // polls again, so every piece becomes its own write on the socket.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let event = &self.events[self.next];
        let (chunk, event_done) = match self.split {
            Split::Whole => (event.clone(), true),
            Split::Bytes => {
                let end = (self.offset + PIECE).min(event.len());
                (event.slice(self.offset..end), end == event.len())
            }
        };
        self.frames += 1;
        self.yielded = false;
        if event_done {
            let now = Instant::now();
            self.next += 1;
            self.offset = 0;
            self.last_sent = now;
            if let Some(log) = &self.track.log {
                lock(log).events.push(now.into_std());
            }
            if self.next == self.events.len() && self.end == End::Clean {
                self.finish(StreamOutcome::Completed);
            }
        } else {
            self.offset += chunk.len();
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

impl Drop for EventBody {
    /// Hyper drops an unfinished body only when the peer is gone (or the server shuts down).
    fn drop(&mut self) {
        if !self.done {
            self.finish(StreamOutcome::ClientGone);
            self.track.shared.record_abort(
                self.track.uri.path(),
                self.next,
                std::time::Instant::now(),
            );
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            MockBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Events(ev) => ev.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Events(ev) => ev.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            // An exact hint makes hyper send `content-length` instead of chunked encoding.
            MockBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            MockBody::Events(_) => SizeHint::default(),
        }
    }
}
