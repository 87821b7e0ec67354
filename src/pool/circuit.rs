//! Passive ejection: a circuit breaker per endpoint.
//!
//! Closed, it counts failures (connect errors, 5xx, timeouts) in a sliding window; `failures`
//! of them within `window` open it. Open, the endpoint gets no requests for `open_for`; then
//! one request is let through as a probe (half-open): its answer closes the circuit, its
//! failure opens it again. Only the probe closes it: an answer to a request sent before the
//! circuit opened says nothing about the endpoint now. A 429 holds the endpoint off for its
//! `retry-after` without counting as a failure.
//!
//! The request path reads two atomics; the failure list is locked only when a failure is
//! recorded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::state::{mono_millis, unix_millis};

/// `circuit: { failures, window, open_for }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitPolicy {
    pub failures: u32,
    pub window: Duration,
    pub open_for: Duration,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        CircuitPolicy {
            failures: 5,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(20),
        }
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub const ALL: [CircuitState; 3] = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// Whether a request may go to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Yes,
    /// Yes, as the one probe of a half-open circuit.
    Probe,
    No,
}

#[derive(Debug, Default)]
pub struct Circuit {
    state: AtomicU8,
    /// Open: until when (process milliseconds). Half-open: when the probe counts as lost
    /// (it never reported back), so another may go.
    until: AtomicU64,
    /// Process milliseconds of the recent failures, oldest first, at most `failures` long.
    failures: Mutex<VecDeque<u64>>,
    /// Unix milliseconds of the last transition (0 = never).
    changed_at: AtomicU64,
}

impl Circuit {
    pub fn state(&self) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            OPEN if self.until.load(Ordering::Acquire) <= mono_millis() => CircuitState::HalfOpen,
            OPEN => CircuitState::Open,
            HALF_OPEN => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    pub fn changed_at(&self) -> Option<u64> {
        Some(self.changed_at.load(Ordering::Relaxed)).filter(|at| *at > 0)
    }

    /// Whether the endpoint takes no requests now: open and not yet due for a probe. A
    /// half-open circuit is not blocked: its probe may be on the way.
    pub fn blocked(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
            && self.until.load(Ordering::Acquire) > mono_millis()
    }

    /// Lets a request through, claiming the half-open probe when one is due.
    pub fn admit(&self, policy: &CircuitPolicy) -> Admission {
        let state = self.state.load(Ordering::Acquire);
        if state == CLOSED {
            return Admission::Yes;
        }
        let now = mono_millis();
        let until = self.until.load(Ordering::Acquire);
        if until > now {
            return Admission::No;
        }
        // Whoever moves `until` forward owns the probe; everyone else sees it in the future.
        let probe_deadline = now + policy.open_for.as_millis() as u64;
        if self
            .until
            .compare_exchange(until, probe_deadline, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Admission::No;
        }
        if state == OPEN {
            self.transition(HALF_OPEN);
        }
        Admission::Probe
    }

    /// The probe got an answer: the endpoint works again.
    pub fn probe_succeeded(&self) {
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.locked_failures().clear();
            self.transition(CLOSED);
        }
    }

    /// The probe was never sent (the request was refused, or its client left first): the
    /// next request may probe at once instead of waiting out `open_for`.
    pub fn release_probe(&self) {
        if self.state.load(Ordering::Acquire) == HALF_OPEN {
            self.until.store(mono_millis(), Ordering::Release);
        }
    }

    /// A failure that counts (connect error, 5xx, timeout). Returns whether it opened the
    /// circuit.
    pub fn failure(&self, policy: &CircuitPolicy) -> bool {
        let now = mono_millis();
        match self.state.load(Ordering::Acquire) {
            HALF_OPEN => {
                self.open_until(now + policy.open_for.as_millis() as u64);
                true
            }
            OPEN => false,
            _ => {
                let mut failures = self.locked_failures();
                let window = policy.window.as_millis() as u64;
                while failures
                    .front()
                    .is_some_and(|at| now.saturating_sub(*at) > window)
                {
                    failures.pop_front();
                }
                failures.push_back(now);
                while failures.len() > policy.failures.max(1) as usize {
                    failures.pop_front();
                }
                if failures.len() >= policy.failures.max(1) as usize {
                    failures.clear();
                    drop(failures);
                    self.open_until(now + policy.open_for.as_millis() as u64);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// A 429: no new requests for `wait` (its `retry-after`), not counted as a failure.
    pub fn hold_off(&self, wait: Duration) {
        let until = mono_millis() + wait.as_millis() as u64;
        if self.until.load(Ordering::Acquire) < until
            || self.state.load(Ordering::Acquire) == CLOSED
        {
            self.open_until(until);
        }
    }

    fn open_until(&self, until: u64) {
        self.until.store(until, Ordering::Release);
        self.transition(OPEN);
    }

    fn transition(&self, to: u8) {
        if self.state.swap(to, Ordering::AcqRel) != to {
            self.changed_at.store(unix_millis(), Ordering::Relaxed);
        }
    }

    fn locked_failures(&self) -> std::sync::MutexGuard<'_, VecDeque<u64>> {
        // A poisoned list of timestamps is still a list of timestamps.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(open_for_ms: u64) -> CircuitPolicy {
        CircuitPolicy {
            failures: 3,
            window: Duration::from_secs(10),
            open_for: Duration::from_millis(open_for_ms),
        }
    }

    #[test]
    fn opens_after_failures_in_window_then_probes_once() {
        let c = Circuit::default();
        let p = policy(30);
        assert!(!c.failure(&p));
        assert!(!c.failure(&p));
        assert_eq!(c.admit(&p), Admission::Yes);
        assert!(c.failure(&p), "the third failure opens it");
        assert_eq!(c.state(), CircuitState::Open);
        assert_eq!(c.admit(&p), Admission::No);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert_eq!(c.admit(&p), Admission::Probe);
        assert_eq!(c.admit(&p), Admission::No, "one probe at a time");
        assert!(c.failure(&p), "a failed probe opens it again");
        assert_eq!(c.state(), CircuitState::Open);
        assert!(c.blocked());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!c.blocked(), "due for a probe");
        assert_eq!(c.admit(&p), Admission::Probe);
        c.release_probe();
        assert_eq!(
            c.admit(&p),
            Admission::Probe,
            "an unsent probe is given back"
        );
        c.probe_succeeded();
        assert_eq!(c.state(), CircuitState::Closed);
        assert_eq!(c.admit(&p), Admission::Yes);
        assert!(!c.failure(&p), "closing forgot the old failures");
    }

    #[test]
    fn a_lost_probe_is_replaced_after_open_for() {
        let c = Circuit::default();
        let p = policy(20);
        for _ in 0..3 {
            c.failure(&p);
        }
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(c.admit(&p), Admission::Probe);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(
            c.admit(&p),
            Admission::Probe,
            "the first probe never reported"
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let c = Circuit::default();
        let p = CircuitPolicy {
            failures: 2,
            window: Duration::from_millis(20),
            open_for: Duration::from_secs(1),
        };
        assert!(!c.failure(&p));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!c.failure(&p));
        assert_eq!(c.state(), CircuitState::Closed);
    }

    #[test]
    fn rate_limits_hold_off_for_their_retry_after_without_counting() {
        let c = Circuit::default();
        let p = policy(1000);
        assert!(!c.failure(&p) && !c.failure(&p), "two of three failures");
        c.hold_off(Duration::from_millis(20));
        assert!(c.blocked());
        assert_eq!(c.admit(&p), Admission::No);
        std::thread::sleep(Duration::from_millis(25));
        // Counted as the third failure, it would hold for `open_for` (1 s), not 20 ms.
        assert!(!c.blocked(), "held only for the retry-after");
        assert_eq!(c.admit(&p), Admission::Probe);
        c.probe_succeeded();
        assert_eq!(c.state(), CircuitState::Closed);
    }
}
