//! Graceful shutdown: stop accepting, finish what is in flight, exit as soon as nothing is.
//!
//! Pingora's graceful terminate (SIGTERM, and the old process after a `--upgrade`
//! hand-over) stops the listeners, then sleeps the whole grace period before it stops the
//! runtimes, so an idle gateway would take `grace_period` to exit. sira counts its requests
//! in flight ([`Drain`]) — from the connection's start for a first request, from the first
//! byte of its header for a later one on a kept-alive connection — and, once Pingora has
//! stopped accepting, exits the moment the count is zero. At the end of
//! `server.grace_period` it ends what is still streaming (with the surface's error event),
//! waits a moment for those endings to be written, and exits; a request still waiting for
//! its answer then is closed with the process. Pingora's own grace period is set longer, so
//! this decides.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_core::server::ExecutionPhase;
use tokio::sync::broadcast;
use tokio::sync::Notify;

use crate::access_log::AccessLog;

/// How long requests ended at the grace period's end get to write their ending.
const ENDING_WAIT: Duration = Duration::from_secs(1);
/// How often the count in flight is looked at while draining.
const POLL: Duration = Duration::from_millis(10);
/// How long a draining process waits before it first looks whether anything is in flight.
const ACCEPTED_LINGER: Duration = Duration::from_millis(250);

/// Requests in flight, and the signal that ends them.
#[derive(Default)]
pub struct Drain {
    in_flight: AtomicUsize,
    expired: AtomicBool,
    notify: Notify,
}

/// Counts one request in flight for as long as it lives.
pub struct InFlight<'a>(&'a Drain);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl Drain {
    pub fn enter(&self) -> InFlight<'_> {
        self.begin();
        InFlight(self)
    }

    /// Counts one more in flight, for a holder that cannot keep an [`InFlight`] (the
    /// client connection's watch); every `begin` needs its [`Drain::end`].
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Ends everything still waiting: the grace period is over.
    pub fn expire(&self) {
        self.expired.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether the grace period is over: one atomic load, for loops that look every turn.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// Resolves when the grace period is over. Costs nothing until polled, and is only
    /// polled while a stream waits for its next event.
    pub fn expiry(&self) -> impl Future<Output = ()> + '_ {
        // Created before the flag is read: an `expire` in between still wakes it.
        let notified = self.notify.notified();
        async move {
            if !self.expired.load(Ordering::Acquire) {
                notified.await;
            }
        }
    }
}

/// Watches Pingora's shutdown phases on a thread of its own and exits the process once
/// the drain is over.
pub fn watch(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    drain: Arc<Drain>,
    grace: Duration,
    access_log: Arc<AccessLog>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sira-shutdown".into())
        .spawn(move || {
            // After a hand-over the unit goes on in the new process: telling systemd
            // STOPPING=1 from here would have it stop the whole unit.
            let mut handed_over = false;
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => handed_over = true,
                    Ok(ExecutionPhase::ShutdownStarted) if !handed_over => {
                        crate::notify::notify("STOPPING=1");
                    }
                    // Listeners are closed; requests in flight go on.
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            let started = Instant::now();
            let deadline = started + grace;
            // Connections accepted as the listeners closed may still be in their TLS
            // handshake, not yet counted: they get a moment to be.
            std::thread::sleep(ACCEPTED_LINGER);
            while drain.in_flight() > 0 && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            let left = drain.in_flight();
            if left > 0 {
                tracing::warn!(
                    in_flight = left,
                    "grace period over: ending what is still running"
                );
                drain.expire();
                let ending = Instant::now() + ENDING_WAIT;
                while drain.in_flight() > 0 && Instant::now() < ending {
                    std::thread::sleep(POLL);
                }
            }
            tracing::info!(
                drained_in_ms = started.elapsed().as_millis() as u64,
                "drained; exiting"
            );
            access_log.flush(Duration::from_secs(1));
            std::process::exit(0);
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expiry_wakes_waiters_and_later_callers() {
        let drain = Arc::new(Drain::default());
        let guard = drain.enter();
        assert_eq!(drain.in_flight(), 1);
        let waiting = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.expiry().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drain.expire();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        // After the end, asking again resolves at once.
        tokio::time::timeout(Duration::from_millis(100), drain.expiry())
            .await
            .unwrap();
        drop(guard);
        assert_eq!(drain.in_flight(), 0);
    }
}
