//! What the gateway learns about one endpoint while it runs: requests in flight, how fast
//! it answers, its circuit, its last error. Kept by the runtime registry under the provider
//! and URL, so a reload that keeps the endpoint keeps all of it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;

use super::circuit::Circuit;

/// How fast the latency estimate forgets: a sample's weight halves in about 7 s.
const LATENCY_DECAY: Duration = Duration::from_secs(10);

/// The runtime state of one endpoint of one provider.
#[derive(Debug, Default)]
pub struct EndpointState {
    inflight: AtomicU32,
    pub latency: PeakEwma,
    pub circuit: Circuit,
    last_error: ArcSwapOption<LastError>,
    /// Unix milliseconds of the last change of health or circuit state (0 = never).
    changed_at: AtomicU64,
}

/// The last failure seen on an endpoint, for `/admin/upstreams`.
#[derive(Debug)]
pub struct LastError {
    pub reason: String,
    /// Unix milliseconds.
    pub at: u64,
}

impl EndpointState {
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Counts one request on this endpoint until the returned guard drops (its response
    /// finished, streams included).
    pub fn start(self: &Arc<Self>) -> Inflight {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        Inflight(self.clone())
    }

    pub fn record_error(&self, reason: impl Into<String>) {
        self.last_error.store(Some(Arc::new(LastError {
            reason: reason.into(),
            at: unix_millis(),
        })));
    }

    pub fn last_error(&self) -> Option<Arc<LastError>> {
        self.last_error.load_full()
    }

    /// Notes a change of health or circuit state, for "since when".
    pub fn mark_changed(&self) {
        self.changed_at.store(unix_millis(), Ordering::Relaxed);
    }

    pub fn changed_at(&self) -> Option<u64> {
        Some(self.changed_at.load(Ordering::Relaxed)).filter(|at| *at > 0)
    }
}

/// One request in flight on an endpoint; the count drops with it.
#[derive(Debug)]
pub struct Inflight(Arc<EndpointState>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Peak EWMA of the time to first byte (Finagle's and Linkerd's load metric): a slower
/// sample than the estimate is taken at once, faster ones pull it down with a weight that
/// grows with the time since the last sample. An endpoint that turns slow is avoided at
/// once; one that recovers earns its traffic back over seconds.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// (estimate in nanoseconds, when it was last updated); `None` before the first sample.
    inner: Mutex<Option<(f64, Instant)>>,
}

impl PeakEwma {
    pub fn observe(&self, sample: Duration) {
        let sample = sample.as_nanos() as f64;
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let next = match *inner {
            Some((estimate, _)) if sample >= estimate => sample,
            Some((estimate, at)) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let keep = (-elapsed / LATENCY_DECAY.as_secs_f64()).exp();
                estimate * keep + sample * (1.0 - keep)
            }
            None => sample,
        };
        *inner = Some((next, now));
    }

    /// The estimate, `None` before the first sample.
    pub fn estimate(&self) -> Option<Duration> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.map(|(nanos, _)| Duration::from_nanos(nanos as u64))
    }
}

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the process started: a monotonic clock that fits in an atomic.
pub fn mono_millis() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_follow_the_guards() {
        let state = Arc::new(EndpointState::default());
        let a = state.start();
        let b = state.start();
        assert_eq!(state.inflight(), 2);
        drop(a);
        assert_eq!(state.inflight(), 1);
        drop(b);
        assert_eq!(state.inflight(), 0);
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let ewma = PeakEwma::default();
        assert_eq!(ewma.estimate(), None);
        ewma.observe(Duration::from_millis(10));
        ewma.observe(Duration::from_millis(500));
        assert_eq!(
            ewma.estimate(),
            Some(Duration::from_millis(500)),
            "a peak is taken at once"
        );
        ewma.observe(Duration::from_millis(10));
        let after = ewma.estimate().unwrap();
        assert!(
            after > Duration::from_millis(400),
            "a fast sample right after does not erase the peak: {after:?}"
        );
    }
}
