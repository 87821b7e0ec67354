//! Idle upstream connections, kept by sira rather than by Pingora's connector pool.
//!
//! Pingora's pool hands every released connection to a task of its own that watches it
//! while idle (an `Arc<Mutex>`, a spawn, a timer, two channels, an LRU keyed by a hash of
//! the whole peer), and checks the socket's peer address on reuse: ~8k instructions and a
//! `getpeername` per request, 7 % of a small request's total (callgrind, bench/profile.sh
//! a). An idle HTTP/1 connection needs none of that to be reused safely:
//!
//! - on reuse, one non-blocking read tells whether the provider closed it or sent something
//!   unasked (either way it is dropped), and connections idle longer than the idle timeout
//!   are never reused;
//! - a sweep every few seconds closes connections the provider closed while they sat idle,
//!   so they do not linger in CLOSE_WAIT;
//! - a request that still meets a connection closed under it (the provider's idle timeout
//!   firing as the request is written) is sent again once on a new connection, by the
//!   exchange (`super`), when it could not be written whole.
//!
//! The newest connection is reused first: its TCP state and the provider's are the warmest.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;
use tokio::io::{AsyncRead, ReadBuf};

/// How long an idle upstream connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often idle connections are checked for having been closed by the provider.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Idle connections kept per destination; beyond that the oldest is closed.
const MAX_IDLE_PER_KEY: usize = 512;

/// Where a connection goes: the resolved address, whether it speaks TLS, and the endpoint
/// URL as configured (which names the TLS server name; an `Arc` shared with the config, so
/// a key costs no allocation).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub tls: bool,
    pub endpoint: Arc<str>,
    /// Which `tls:` options made the connection (0: none): two providers on one URL with
    /// different client certificates never share a connection.
    pub tls_options: u64,
}

struct Idle {
    stream: Stream,
    since: Instant,
}

impl Idle {
    /// Young enough, and still open (checked only for the young: it may cost a system call).
    fn reusable(&mut self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) < IDLE_TIMEOUT && still_open(&mut self.stream)
    }
}

/// The upstream connection pool and the connector that fills it.
pub struct UpstreamPool {
    idle: Mutex<AHashMap<PoolKey, Vec<Idle>>>,
    connector: TransportConnector,
    sweeper: std::sync::Once,
}

impl UpstreamPool {
    pub fn new() -> Arc<UpstreamPool> {
        Arc::new(UpstreamPool {
            idle: Mutex::new(AHashMap::new()),
            // Pingora's connector still makes the connections (TCP options, TLS); its own pool
            // stays empty because nothing is ever released into it.
            connector: TransportConnector::new(None),
            sweeper: std::sync::Once::new(),
        })
    }

    /// An idle connection to `key` that is still open, if there is one (`now`: the time
    /// of asking).
    pub fn take(&self, key: &PoolKey, now: Instant) -> Option<Stream> {
        let mut dead = Vec::new();
        let found = {
            let mut idle = self.lock();
            let list = idle.get_mut(key)?;
            loop {
                let mut entry = list.pop()?;
                if entry.reusable(now) {
                    break Some(entry.stream);
                }
                dead.push(entry.stream);
            }
        };
        // Closing sockets is a system call each: not under the lock.
        drop(dead);
        found
    }

    /// Keeps `stream` for the next request to `key`.
    pub fn put(self: &Arc<Self>, key: PoolKey, stream: Stream) {
        self.start_sweeper();
        let evicted = {
            let mut idle = self.lock();
            let list = idle.entry(key).or_default();
            list.push(Idle {
                stream,
                since: Instant::now(),
            });
            (list.len() > MAX_IDLE_PER_KEY).then(|| list.remove(0))
        };
        drop(evicted);
    }

    /// A new connection to `peer` (TCP, and TLS when the peer asks for it).
    pub async fn connect(&self, peer: &HttpPeer) -> pingora_error::Result<Stream> {
        // Pingora's connect future is ~8 KB: boxed, so that the request future that awaits
        // it (and is copied whenever it is created) stays small on the usual pooled path.
        Box::pin(self.connector.new_stream(peer)).await
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AHashMap<PoolKey, Vec<Idle>>> {
        // A panic while holding this lock leaves only a list of sockets behind, which is
        // still consistent: keep using it.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the sweep on the runtime of the first request that released a connection:
    /// the connections are registered with that runtime's reactor.
    fn start_sweeper(self: &Arc<Self>) {
        self.sweeper.call_once(|| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let pool = Arc::downgrade(self);
            runtime.spawn(sweep(pool));
        });
    }

    /// Closes connections that the provider closed, or that idled too long.
    fn sweep_once(&self) {
        let now = Instant::now();
        let mut dead = Vec::new();
        {
            let mut idle = self.lock();
            idle.retain(|_, list| {
                let mut kept = Vec::with_capacity(list.len());
                for mut entry in list.drain(..) {
                    if entry.reusable(now) {
                        kept.push(entry);
                    } else {
                        dead.push(entry.stream);
                    }
                }
                *list = kept;
                !list.is_empty()
            });
        }
        drop(dead);
    }
}

async fn sweep(pool: Weak<UpstreamPool>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        match pool.upgrade() {
            Some(pool) => pool.sweep_once(),
            None => return,
        }
    }
}

/// Whether an idle connection can carry a request: nothing to read yet. End of stream means
/// the provider closed it; bytes nobody asked for mean it is out of step; either way it must
/// not be used.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    // A no-op waker: nothing waits on this read. The next real read registers its own.
    let mut cx = Context::from_waker(Waker::noop());
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::protocols::l4::stream::Stream as L4Stream;
    use std::io::Write;

    fn key(addr: SocketAddr) -> PoolKey {
        PoolKey {
            addr,
            tls: false,
            endpoint: "http://localhost".into(),
            tls_options: 0,
        }
    }

    async fn connected_pair() -> (Stream, std::net::TcpStream, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().unwrap();
        (Box::new(L4Stream::from(client)), server, addr)
    }

    #[tokio::test]
    async fn reuses_an_open_connection_newest_first() {
        let pool = UpstreamPool::new();
        let (a, _server_a, addr) = connected_pair().await;
        let (b, _server_b, _) = connected_pair().await;
        let b_id = b.id();
        pool.put(key(addr), a);
        pool.put(key(addr), b);
        assert_eq!(pool.idle_count(), 2);
        let taken = pool
            .take(&key(addr), Instant::now())
            .expect("an open connection");
        assert_eq!(taken.id(), b_id, "the newest first");
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn drops_connections_the_provider_closed_or_wrote_to() {
        let pool = UpstreamPool::new();
        let (closed, server_closed, addr) = connected_pair().await;
        let (chatty, mut server_chatty, _) = connected_pair().await;
        pool.put(key(addr), closed);
        pool.put(key(addr), chatty);
        drop(server_closed);
        server_chatty.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        // Let the FIN and the bytes arrive, and the reactor see them.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(&key(addr), Instant::now()).is_none());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn the_sweep_closes_what_the_provider_closed() {
        let pool = UpstreamPool::new();
        let (open, _server_open, addr) = connected_pair().await;
        let (closed, server_closed, _) = connected_pair().await;
        pool.put(key(addr), open);
        pool.put(key(addr), closed);
        drop(server_closed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.sweep_once();
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn destinations_do_not_mix() {
        let pool = UpstreamPool::new();
        let (a, _server, addr) = connected_pair().await;
        pool.put(key(addr), a);
        let mut tls = key(addr);
        tls.tls = true;
        assert!(pool.take(&tls, Instant::now()).is_none());
        assert!(pool.take(&key(addr), Instant::now()).is_some());
    }
}
