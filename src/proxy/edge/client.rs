//! The client's transport as the edge sees it: the bytes read ahead to tell HTTP/2 from
//! HTTP/1, and a [`Watch`] on every read that times the request header from its first byte,
//! stops it at its size limit and counts the request in flight for the shutdown drain.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::H2_PREFACE;
use crate::shutdown::Drain;

/// Fires `timeout` after the header's first byte (or after `started`); never before a
/// first byte on a kept-alive connection, whose idle wait is the keep-alive timeout's.
pub(super) struct HeaderDeadline<'a> {
    pub(super) watch: &'a Watch,
    pub(super) started: Option<Instant>,
    pub(super) timeout: Duration,
    pub(super) timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::future::Future for HeaderDeadline<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.is_none() {
            // Polled again whenever the header read is woken (bytes arrived): the first byte
            // is seen here without a waker of its own.
            let Some(start) = self.started.or_else(|| self.watch.first_byte()) else {
                return Poll::Pending;
            };
            let at = tokio::time::Instant::from_std(start + self.timeout);
            self.timer = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// What the connection's reads tell the header deadline, the size limit and the shutdown
/// drain.
pub(super) struct Watch {
    /// A request header is being read.
    reading: AtomicBool,
    /// When the current header's first byte arrived: nanoseconds after [`EPOCH`], 0 = not yet.
    first_byte: AtomicU64,
    /// Bytes read for the current header (and possibly the start of its body).
    read: AtomicUsize,
    max_header: usize,
    /// A request is under way on the connection: counted in the drain, so that a shutdown
    /// does not exit under a request whose header is still arriving.
    counted: AtomicBool,
    drain: Arc<Drain>,
}

/// A process-wide origin for the `Instant`s stored as integers in [`Watch`].
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Watch {
    pub(super) fn new(max_header: usize, drain: Arc<Drain>) -> Watch {
        Watch {
            reading: AtomicBool::new(false),
            first_byte: AtomicU64::new(0),
            read: AtomicUsize::new(0),
            max_header,
            counted: AtomicBool::new(false),
            drain,
        }
    }

    /// Counts the connection's request in flight (once).
    pub(super) fn count(&self) {
        if !self.counted.swap(true, Ordering::AcqRel) {
            self.drain.begin();
        }
    }

    /// The request is over: the idle wait for the next one holds no shutdown up.
    pub(super) fn uncount(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.drain.end();
        }
    }

    pub(super) fn begin(&self) {
        self.first_byte.store(0, Ordering::Relaxed);
        self.read.store(0, Ordering::Relaxed);
        self.reading.store(true, Ordering::Relaxed);
    }

    pub(super) fn end(&self) {
        self.reading.store(false, Ordering::Relaxed);
    }

    pub(super) fn first_byte(&self) -> Option<Instant> {
        match self.first_byte.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(*EPOCH + Duration::from_nanos(nanos)),
        }
    }

    /// Books `n` bytes read; `false` when the header has outgrown its limit.
    fn saw(&self, n: usize) -> bool {
        if n == 0 || !self.reading.load(Ordering::Relaxed) {
            return true;
        }
        if self.first_byte.load(Ordering::Relaxed) == 0 {
            let nanos = EPOCH.elapsed().as_nanos().max(1) as u64;
            self.first_byte.store(nanos, Ordering::Relaxed);
            self.count();
        }
        // Reading goes on only while the header is incomplete: past the limit, the header
        // itself is too large (one read may also carry the start of the body, which is
        // why the parsed header's size is checked again once it is complete).
        let before = self.read.fetch_add(n, Ordering::Relaxed);
        before <= self.max_header
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.uncount();
    }
}

/// The error a read returns once a header outgrew `server.max_header_size`.
#[derive(Debug, thiserror::Error)]
#[error("request header larger than the gateway's limit")]
pub(super) struct HeaderOverflow;

/// The client's transport, watched for the header's first byte and size, with the bytes
/// read to tell HTTP/2 from HTTP/1 given back to whoever reads next.
pub(super) struct ClientStream {
    pub(super) inner: Stream,
    /// Bytes read ahead to detect the protocol, served before the transport's.
    pub(super) ahead: Bytes,
    pub(super) watch: Arc<Watch>,
    /// Set on HTTP/2 connections (see `Edge::process_new`): the first `is_write_vectored`
    /// is answered `false`, the later ones by the transport. The h2 crate asks once, when it
    /// sets up its writer, to choose which DATA frames it copies into its buffer (under 1 KiB
    /// then, so that small answers leave together); its writes ask each time, and a large
    /// frame still leaves in one gathered write.
    pub(super) deny_gathering_once: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl ClientStream {
    /// Reads what the client sent first, until it is either the HTTP/2 preface or cannot
    /// be. `false` when the client closed first.
    pub(super) async fn read_ahead(&mut self) -> io::Result<bool> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::with_capacity(4096);
        loop {
            if self.inner.read_buf(&mut buf).await? == 0 {
                self.ahead = Bytes::from(buf);
                return Ok(false);
            }
            let seen = buf.len().min(H2_PREFACE.len());
            if buf.len() >= H2_PREFACE.len() || buf[..seen] != H2_PREFACE[..seen] {
                self.ahead = Bytes::from(buf);
                return Ok(true);
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead.split_to(n));
            if !this.watch.saw(n) {
                return Poll::Ready(Err(io::Error::other(HeaderOverflow)));
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if !this.watch.saw(buf.filled().len() - before) {
                return Poll::Ready(Err(io::Error::other(HeaderOverflow)));
            }
        }
        polled
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        use std::sync::atomic::Ordering;
        // Only the writer's first question is answered no (the field's comment says why).
        if self.deny_gathering_once.load(Ordering::Relaxed)
            && self.deny_gathering_once.swap(false, Ordering::Relaxed)
        {
            return false;
        }
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientStream {
    /// None: Pingora asks for the connection's timings at every request (a vector
    /// allocated and freed per request), for `ProxyHttp` loggers; sira reads none.
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for ClientStream {
    /// Served from the bytes read ahead when they suffice (Pingora peeks for the HTTP/2
    /// preface, which [`Edge`] has already read).
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.ahead.len() >= buf.len() {
            buf.copy_from_slice(&self.ahead[..buf.len()]);
            return Ok(true);
        }
        if self.ahead.is_empty() {
            return self.inner.try_peek(buf).await;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_stops_a_header_past_its_limit() {
        let drain = Arc::new(Drain::default());
        let watch = Watch::new(100, drain.clone());
        // Between requests, reads are not counted.
        assert!(watch.saw(1000));
        assert!(watch.first_byte().is_none());
        watch.begin();
        assert!(watch.saw(60));
        assert!(watch.first_byte().is_some());
        assert!(
            watch.saw(60),
            "the read that crosses the limit may end the header"
        );
        assert!(
            !watch.saw(1),
            "a read after the limit was crossed is refused"
        );
        watch.end();
        assert!(watch.saw(1));
        // The request was counted in flight from its first byte until it is over.
        assert_eq!(drain.in_flight(), 1);
        watch.uncount();
        assert_eq!(drain.in_flight(), 0);
        watch.begin();
        watch.saw(1);
        assert_eq!(drain.in_flight(), 1);
        drop(watch);
        assert_eq!(drain.in_flight(), 0, "a connection that ends uncounts");
    }
}
