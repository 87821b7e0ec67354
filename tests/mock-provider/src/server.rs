//! Accept loop: HTTP/1.1 (keep-alive) and HTTP/2 (prior knowledge) on one listener.

use crate::record::Shared;
use crate::routes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves `listener` until `shutdown` resolves. When it resolves to `true` (a graceful stop)
/// idle connections are closed and requests in progress finish first (for at most 5 s), as
/// a model server draining for a restart does; otherwise connections already open keep
/// running on the runtime (the library shuts its runtime down on drop; the binary exits).
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Timers back hyper's HTTP/1 header-read timeout and HTTP/2 keep-alive; half-close stays
    // off so that hyper notices a client that closed its side mid-response right away.
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    let drain = loop {
        let accepted = tokio::select! {
            drain = &mut shutdown => break drain,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            // Typically EMFILE under a load test: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        // Events are small writes that must leave immediately (latency and split-read tests);
        // a failure here only costs latency, so it is not fatal.
        let _ = stream.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = service_fn(move |req| routes::handle(Arc::clone(&shared), req));
            // Errors here are clients going away mid-request or mid-stream; streams record
            // that themselves (see body.rs).
            let _ = watcher
                .watch(builder.serve_connection(TokioIo::new(stream), service))
                .await;
        });
    };
    drop(listener);
    if drain {
        let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    }
}
