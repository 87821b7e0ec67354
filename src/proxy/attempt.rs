//! One try on one endpoint: resolve, connect, send, wait for the response header, and what
//! a failure there means for the retry policy (`super::policy`).

use std::sync::Arc;
use std::time::Instant;

use super::client::Client;
use http::Method;

use super::ctx::RequestCtx;
use super::exchange::{
    Destination, Exchange, ExchangeError, Outgoing, RequestWire, UpstreamResponse,
};
use crate::error::GatewayError;
use crate::provider::{Endpoint, Provider};

/// Why one try did not give the client its answer.
pub enum TryError {
    Failed {
        error: GatewayError,
        /// Metric outcome: `error` or `timeout`.
        kind: &'static str,
        /// The request may have been acted on: it must not be sent again.
        may_have_run: bool,
    },
    ClientGone,
}

/// Sends one request to one endpoint and waits for its response header. Owns what it
/// sends, so that several can run at once (hedging).
pub async fn send(
    exchange: &Exchange,
    provider: Arc<Provider>,
    endpoint: Arc<Endpoint>,
    request: Outgoing,
) -> Result<UpstreamResponse, TryError> {
    let unreachable = |reason: String| TryError::Failed {
        error: GatewayError::UpstreamUnreachable {
            provider: provider.name.to_string(),
            reason,
        },
        kind: "error",
        may_have_run: false,
    };
    let wire = RequestWire::new(
        &Method::POST,
        &request.path,
        &request.headers,
        &request.body,
    )
    .map_err(|e| unreachable(format!("cannot build request: {e}")))?;
    let addr = endpoint
        .addr(provider.timeouts.connect)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut timeouts = provider.timeouts;
    // `total` bounds the whole exchange, the wait for the header included.
    if let Some(total) = timeouts.total {
        timeouts.first_byte = timeouts.first_byte.min(total);
    }
    let dest = Destination {
        addr,
        endpoint: &endpoint,
        timeouts,
    };
    exchange
        .send(&dest, &wire)
        .await
        .map_err(|e| failed(&provider, e))
}

/// One try while watching for the client going away. The time spent on the network is
/// booked to `ctx.upstream.wait`, which `sira_overhead_seconds` excludes.
pub async fn try_once(
    exchange: &Exchange,
    session: &mut Client,
    ctx: &mut RequestCtx,
    provider: Arc<Provider>,
    endpoint: Arc<Endpoint>,
    request: Outgoing,
) -> Result<UpstreamResponse, TryError> {
    let network = Instant::now();
    // The end of a shutdown's grace period is not watched here: a request still waiting for
    // its answer then is ended with the process (its connection closed). Watching costs a
    // waiter registration on every request, since every request waits here; streams, which
    // are what outlasts a grace period, watch it between events (`relay`).
    let outcome = tokio::select! {
        outcome = send(exchange, provider, endpoint, request) => outcome,
        _ = session.gone() => Err(TryError::ClientGone),
    };
    ctx.upstream.wait += network.elapsed();
    outcome
}

pub fn failed(provider: &Provider, e: ExchangeError) -> TryError {
    let name = provider.name.to_string();
    let may_have_run = e.may_have_run();
    let (error, kind) = match e {
        ExchangeError::ConnectTimeout(after) | ExchangeError::FirstByteTimeout(after) => (
            GatewayError::UpstreamTimeout {
                provider: name,
                after,
            },
            "timeout",
        ),
        ExchangeError::BadResponse(_) => (
            GatewayError::UpstreamBroken {
                provider: name,
                reason: e.to_string(),
            },
            "error",
        ),
        ExchangeError::Connect(_) | ExchangeError::Unsent(_) | ExchangeError::NoResponse(_) => (
            GatewayError::UpstreamUnreachable {
                provider: name,
                reason: e.to_string(),
            },
            "error",
        ),
    };
    TryError::Failed {
        error,
        kind,
        may_have_run,
    }
}
