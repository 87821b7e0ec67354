//! What each try teaches a pool about the endpoint it went to: its circuit, its latency
//! estimate, its last error.

use super::Pool;

/// What a try on an endpoint came to, for its circuit, latency and last error.
pub enum Outcome<'a> {
    /// The endpoint answered with a response header after `first_byte`.
    Answered {
        status: u16,
        first_byte: std::time::Duration,
        retry_after: Option<std::time::Duration>,
    },
    /// No usable answer; `slow` is how long it took when it timed out.
    Failed {
        reason: &'a str,
        slow: Option<std::time::Duration>,
    },
}

/// What a failure costs an endpoint's latency estimate: a fast failure (connection refused,
/// an instant 500) must not make a broken endpoint look like the quickest.
pub const FAILURE_PENALTY: std::time::Duration = std::time::Duration::from_secs(1);

impl Pool {
    /// Learns from a try on endpoint `index`. 5xx, connect errors and timeouts count
    /// against its circuit when `counts` (the request's first failure: a request that keeps
    /// failing wherever it goes is more likely its own fault than every endpoint's); a 429
    /// holds it off for its `retry-after`. Only the probe (`probe`) closes an open circuit,
    /// with any answer but a 5xx or 429.
    pub fn report(&self, index: usize, probe: bool, counts: bool, outcome: Outcome<'_>) {
        let Some(member) = self.members.get(index) else {
            return;
        };
        let state = &member.state;
        let failure = |reason: &str| {
            state.record_error(reason);
            state.latency.observe(FAILURE_PENALTY);
            if let Some(policy) = self.circuit.as_ref().filter(|_| counts || probe) {
                if state.circuit.failure(policy) {
                    tracing::warn!(provider = %self.provider, endpoint = %member.url, "circuit opened: {reason}");
                }
            }
        };
        match outcome {
            Outcome::Answered {
                status: 429,
                retry_after,
                ..
            } => {
                state.record_error("answered 429");
                match (&self.circuit, retry_after) {
                    (Some(_), Some(wait)) => state.circuit.hold_off(wait),
                    (Some(policy), None) if probe => {
                        state.circuit.failure(policy);
                    }
                    _ => {}
                }
            }
            Outcome::Answered { status, .. } if status >= 500 => {
                failure(&format!("answered {status}"));
            }
            Outcome::Answered { first_byte, .. } => {
                state.latency.observe(first_byte);
                if probe {
                    state.circuit.probe_succeeded();
                    tracing::info!(provider = %self.provider, endpoint = %member.url, "circuit closed: the probe was answered");
                }
            }
            Outcome::Failed { reason, slow } => {
                failure(reason);
                if let Some(elapsed) = slow {
                    state.latency.observe(elapsed);
                }
            }
        }
    }
}
