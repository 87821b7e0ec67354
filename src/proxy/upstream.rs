//! Choosing a target and getting a response header from it, with retries and fallbacks.
//!
//! The request body is held by sira (not by Pingora's 64 KiB retry buffer), so every try,
//! on any target of any fallback model, can send the full body — rewritten for that
//! target — whatever its size. A try that fails before the response header (connect error,
//! timeout, 5xx, 429) moves on to the next candidate; the last candidate's answer, good or
//! bad, is what the client gets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue, Method};
use pingora_core::protocols::http::client::HttpSession as ClientSession;
use pingora_core::protocols::http::v1::client::{
    http_req_header_to_wire, HttpSession as Http1Session,
};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;

use super::body::{self, Peek, Rewrite};
use super::ctx::{Attempt, RequestCtx};
use super::pool::{is_stale_connection_error, PoolKey};
use super::Gateway;
use crate::error::GatewayError;
use crate::format::Format;
use crate::models::{ModelRoute, Target};
use crate::provider::{Endpoint, Provider, ProviderKind};
use crate::routes::Operation;
use crate::translate::{translate_request, RequestOptions, ResponseContext};
use lua_free_filters::HeaderEdit;

/// A response header received from a provider, with the connection to read the rest from.
pub struct Upstream {
    /// `None` once the response was read whole and the connection went back to the pool.
    pub client: Option<ClientSession>,
    /// Where the connection goes back to.
    pub pool_key: PoolKey,
    pub provider: Arc<Provider>,
    /// The format the provider answers in.
    pub format: Format,
    /// Whether sira added `stream_options.include_usage` for its own accounting, so the
    /// usage-only chunk must not reach the client.
    pub injected_usage: bool,
    /// Set when the provider speaks another format than the client: the response must be
    /// translated back.
    pub translation: Option<ResponseContext>,
    /// Hint-only parameters the request translation dropped.
    pub dropped: Vec<&'static str>,
}

impl Upstream {
    /// Hands the connection back to the pool once the response was read whole (or closes it
    /// when the provider asked to, or sent more than the response).
    ///
    /// Pingora's `reuse` future holds the whole H1 session. Boxed here, the per-event read
    /// futures that call this stay small, and a future is moved (copied) every time one is
    /// created: on a stream, once per event.
    pub async fn release(&mut self, gw: &Gateway) {
        // Only HTTP/1 sessions are ever opened (`exchange`); anything else is dropped, which
        // closes it.
        if let Some(ClientSession::H1(mut done)) = self.client.take() {
            done.respect_keepalive();
            if let Some(stream) = Box::pin(done.reuse()).await {
                gw.pool.put(self.pool_key.clone(), stream);
            }
        }
    }
}

/// What is being asked, independent of which target serves it.
pub struct Request<'a> {
    pub op: Operation,
    pub client_headers: &'a http::HeaderMap,
    pub body: &'a Bytes,
    pub peek: &'a Peek,
    /// The model name the client asked for.
    pub model: &'a str,
}

/// Tries candidates in order until one answers with a response header that is not a
/// retryable failure, or none is left.
pub async fn connect(
    gw: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    primary: Arc<ModelRoute>,
    capture: Option<String>,
    request: &Request<'_>,
) -> Result<Upstream, GatewayError> {
    let mut routes: Vec<(Arc<ModelRoute>, Option<String>, String)> =
        vec![(primary.clone(), capture, request.model.to_owned())];
    for name in &primary.fallbacks {
        if let Some(found) = ctx.snap.models.resolve(name) {
            routes.push((
                found.route.clone(),
                found.capture.map(str::to_owned),
                name.to_string(),
            ));
        }
    }
    let total_tries: u32 = routes.iter().map(|(r, _, _)| r.retry.attempts.max(1)).sum();
    let mut tries_left = total_tries;
    let mut last_error: Option<GatewayError> = None;
    let mut unsupported: Option<GatewayError> = None;
    for (route, capture, requested) in routes {
        let order: Vec<usize> = route.target_order().collect();
        let mut skip_endpoint: Option<(usize, usize)> = None;
        for try_number in 0..route.retry.attempts.max(1) {
            let target_index = order[try_number as usize % order.len()];
            let target = &route.targets[target_index];
            tries_left -= 1;
            let upstream_model =
                ModelRoute::upstream_model(target, &requested, capture.as_deref()).to_owned();
            let provider_format = target.provider.kind.format_for(ctx.format);
            if let Err(e) = check_supported(request.op, target) {
                unsupported.get_or_insert(e);
                continue;
            }
            if try_number > 0 {
                tokio::time::sleep(route.retry.delay(try_number)).await;
            }
            ctx.route = Some(route.clone());
            ctx.provider = Some(target.provider.clone());
            ctx.upstream_model = Some(upstream_model.clone());
            let skip = skip_endpoint
                .filter(|(t, _)| *t == target_index)
                .map(|(_, e)| e);
            let (endpoint_index, endpoint) = target.provider.pick_endpoint(skip);
            let waited = AtomicU64::new(0);
            let call = Call {
                target,
                endpoint,
                format: provider_format,
                model: &upstream_model,
                default_max_tokens: route.default_max_tokens,
            };
            let outcome = tokio::select! {
                outcome = attempt(gw, ctx, &call, request, &waited) => outcome,
                _ = session.read_body_or_idle(true) => {
                    ctx.client_gone = true;
                    Err(AttemptError::ClientGone)
                }
            };
            ctx.upstream_wait += Duration::from_nanos(waited.load(Ordering::Relaxed));
            let provider_name = target.provider.name.clone();
            let label = |outcome: &str| {
                crate::metrics::metrics()
                    .upstream_attempts
                    .with_label_values(&[&provider_name, &endpoint.url, outcome])
                    .inc();
            };
            match outcome {
                Ok(mut upstream) => {
                    let status = upstream
                        .client
                        .as_ref()
                        .and_then(|c| c.response_header())
                        .map_or(0, |h| h.status.as_u16());
                    if retryable_status(status) && tries_left > 0 {
                        label("retried");
                        ctx.attempts.push(Attempt {
                            provider: provider_name,
                            outcome: format!("status_{status}"),
                        });
                        skip_endpoint = Some((target_index, endpoint_index));
                        continue;
                    }
                    label(if status < 500 { "ok" } else { "error" });
                    ctx.attempts.push(Attempt {
                        provider: provider_name,
                        outcome: "ok".into(),
                    });
                    ctx.dropped_params = std::mem::take(&mut upstream.dropped);
                    return Ok(upstream);
                }
                Err(AttemptError::Refused(error)) => {
                    // Nothing was sent: this target cannot take the request as written (a
                    // field its format cannot express); another target may.
                    unsupported.get_or_insert(error);
                }
                Err(AttemptError::ClientGone) => {
                    return Err(GatewayError::Internal(
                        "client closed the connection".into(),
                    ));
                }
                Err(AttemptError::Failed { error, kind }) => {
                    label(if tries_left > 0 { "retried" } else { kind });
                    ctx.attempts.push(Attempt {
                        provider: provider_name,
                        outcome: kind.to_owned(),
                    });
                    skip_endpoint = Some((target_index, endpoint_index));
                    last_error = Some(error);
                }
            }
        }
    }
    Err(last_error
        .or(unsupported)
        .unwrap_or_else(|| GatewayError::Internal("no upstream candidate".into())))
}

/// 5xx and 429 mean "this target cannot serve it now": another one may.
fn retryable_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

/// Whether `target` can serve `op` for a client speaking `client` at all.
fn check_supported(op: Operation, target: &Target) -> Result<(), GatewayError> {
    if op == Operation::Embeddings && !target.provider.kind.has_embeddings() {
        return Err(GatewayError::Unsupported(
            format!(
                "provider {:?} ({}) has no embeddings endpoint",
                target.provider.name,
                target.provider.kind.as_str()
            )
            .into(),
        ));
    }
    Ok(())
}

enum AttemptError {
    ClientGone,
    /// Refused before anything was sent.
    Refused(GatewayError),
    Failed {
        error: GatewayError,
        /// Metric outcome: `error` or `timeout`.
        kind: &'static str,
    },
}

/// Where one try goes.
struct Call<'a> {
    target: &'a Target,
    endpoint: &'a Endpoint,
    /// The format the provider is spoken to in.
    format: Format,
    /// The upstream model name.
    model: &'a str,
    default_max_tokens: u32,
}

/// The body for one try: the client's bytes (model renamed, usage requested) when formats
/// match, else the request translated into the provider's format.
struct Outgoing {
    body: Bytes,
    injected_usage: bool,
    translation: Option<ResponseContext>,
    dropped: Vec<&'static str>,
}

fn outgoing(
    ctx: &RequestCtx,
    call: &Call,
    request: &Request<'_>,
    stream: bool,
) -> Result<Outgoing, GatewayError> {
    if call.format != ctx.format {
        let translated = translate_request(
            ctx.format,
            call.format,
            request.body,
            &RequestOptions {
                model: call.model,
                stream,
                default_max_tokens: call.default_max_tokens,
                legacy_max_tokens: call.target.provider.kind == ProviderKind::OpenaiCompatible,
            },
        )?;
        return Ok(Outgoing {
            body: Bytes::from(translated.body),
            injected_usage: false,
            translation: Some(translated.context),
            dropped: translated.dropped,
        });
    }
    // Usage on OpenAI streams only comes when asked for (TRANSLATION.md §2.1).
    let injected_usage = stream && call.format == Format::OpenAiChat && !request.peek.include_usage;
    let model_in_body =
        call.format != Format::Gemini && call.target.provider.kind != ProviderKind::Azure;
    let body = body::rewrite(
        request.body,
        request.peek,
        &Rewrite {
            model: model_in_body.then_some(call.model),
            include_usage: injected_usage,
        },
    );
    Ok(Outgoing {
        body,
        injected_usage,
        translation: None,
        dropped: Vec::new(),
    })
}

/// One try: connect, send header and body, wait for the response header.
/// `waited` receives the time spent on the network (resolving, connecting, sending, waiting
/// for the response header), which `sira_overhead_seconds` excludes.
async fn attempt(
    gw: &Gateway,
    ctx: &RequestCtx,
    call: &Call<'_>,
    request: &Request<'_>,
    waited: &AtomicU64,
) -> Result<Upstream, AttemptError> {
    let provider = &call.target.provider;
    let endpoint = call.endpoint;
    let stream =
        matches!(request.op, Operation::GenerateContent { stream: true }) || request.peek.stream;
    let Outgoing {
        body,
        injected_usage,
        translation,
        dropped,
    } = outgoing(ctx, call, request, stream).map_err(AttemptError::Refused)?;
    let unreachable = |reason: String| AttemptError::Failed {
        error: GatewayError::UpstreamUnreachable {
            provider: provider.name.to_string(),
            reason,
        },
        kind: "error",
    };
    let timeouts = provider.timeouts;
    let op = if translation.is_some() {
        translated_op(call.format, stream)
    } else {
        request.op
    };
    let path = provider.upstream_path(endpoint, op, call.model, stream);
    let header = upstream_request(
        ctx,
        provider,
        endpoint,
        &path,
        request.client_headers,
        body.len(),
    )
    .map_err(|e| unreachable(format!("cannot build request: {e}")))?;

    let wire = RequestWire::new(&header, &body)
        .map_err(|e| unreachable(format!("cannot build request: {e}")))?;
    drop(header);

    // From here on sira mostly waits on the network.
    let network = Instant::now();
    let timed_out = || AttemptError::Failed {
        error: GatewayError::UpstreamTimeout {
            provider: provider.name.to_string(),
            after: timeouts.first_byte,
        },
        kind: "timeout",
    };
    let timed = async {
        let addr = endpoint
            .addr()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let key = PoolKey {
            addr,
            tls: endpoint.tls,
            endpoint: endpoint.url.clone(),
        };
        // One deadline for the try, whether or not a stale pooled connection costs a resend.
        let deadline = tokio::time::Instant::now() + timeouts.first_byte;
        if let Some(pooled) = gw.pool.take(&key) {
            match tokio::time::timeout_at(deadline, exchange(pooled, &wire)).await {
                Ok(Ok(client)) => return Ok((client, key)),
                // Closed under the request by the provider's idle timeout: the request did
                // not reach it, so it goes again on a new connection.
                Ok(Err(e)) if is_stale_connection_error(&e) => {}
                Ok(Err(e)) => return Err(classify(provider, e, timeouts.first_byte)),
                Err(_) => return Err(timed_out()),
            }
        }
        let mut peer = HttpPeer::new(addr, endpoint.tls, endpoint.host.clone());
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.total_connection_timeout = Some(timeouts.connect);
        let fresh = gw
            .pool
            .connect(&peer)
            .await
            .map_err(|e| classify(provider, e, timeouts.connect))?;
        match tokio::time::timeout_at(deadline, exchange(fresh, &wire)).await {
            Ok(Ok(client)) => Ok((client, key)),
            Ok(Err(e)) => Err(classify(provider, e, timeouts.first_byte)),
            Err(_) => Err(timed_out()),
        }
    };
    let result = timed.await;
    waited.store(network.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let (mut client, pool_key) = result?;
    client.set_read_timeout(Some(timeouts.idle));
    Ok(Upstream {
        client: Some(client),
        pool_key,
        provider: provider.clone(),
        format: call.format,
        injected_usage,
        translation,
        dropped,
    })
}

/// Sends the request on `stream` and reads the response header.
async fn exchange(stream: Stream, wire: &RequestWire<'_>) -> pingora_error::Result<ClientSession> {
    let mut client = ClientSession::H1(wire.send(stream).await?);
    client.read_response_header().await?;
    Ok(client)
}

/// The provider operation a translated request becomes.
fn translated_op(provider: Format, stream: bool) -> Operation {
    match provider {
        Format::OpenAiChat => Operation::ChatCompletions,
        Format::OpenAiResponses => Operation::Responses,
        Format::Anthropic => Operation::Messages,
        Format::Gemini => Operation::GenerateContent { stream },
    }
}

fn classify(provider: &Provider, e: Box<pingora_error::Error>, after: Duration) -> AttemptError {
    use pingora_error::ErrorType;
    let timed_out = matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    if timed_out {
        AttemptError::Failed {
            error: GatewayError::UpstreamTimeout {
                provider: provider.name.to_string(),
                after,
            },
            kind: "timeout",
        }
    } else {
        AttemptError::Failed {
            error: GatewayError::UpstreamUnreachable {
                provider: provider.name.to_string(),
                reason: e.to_string(),
            },
            kind: "error",
        }
    }
}

/// Client headers never forwarded: hop-by-hop fields, framing sira recomputes, and the
/// client's credentials (the provider gets the provider key from the config, never the
/// client's).
const SKIP_REQUEST_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "accept-encoding",
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
];

/// Bodies up to this size go out in the same write as the request header.
const ONE_WRITE_BODY_MAX: usize = 16 * 1024;

/// The request as it goes on the wire, built once per try: a try whose pooled connection
/// turns out closed sends the same bytes again.
///
/// Pingora's H1 client flushes the header on its own, then the body: two system calls and
/// two TCP segments, and the provider wakes up twice. For the usual chat request (a few KB)
/// sira writes header and body in one buffer instead — a copy of a few KB costs far less
/// than a system call and a wake-up — and hands the stream to a fresh session to read the
/// response (the session only needs the request to tell HEAD and upgrade requests apart,
/// which sira never sends). Large bodies are written after the header, without a copy.
struct RequestWire<'a> {
    /// The header, and the body when it is small.
    head: BytesMut,
    /// The body when it is large.
    tail: &'a [u8],
}

impl<'a> RequestWire<'a> {
    fn new(header: &RequestHeader, body: &'a [u8]) -> pingora_error::Result<RequestWire<'a>> {
        use pingora_error::{Error, ErrorType};
        let Some(mut head) = http_req_header_to_wire(header) else {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "request header cannot be written",
            );
        };
        let tail = if body.len() <= ONE_WRITE_BODY_MAX {
            head.extend_from_slice(body);
            &[][..]
        } else {
            body
        };
        Ok(RequestWire { head, tail })
    }

    async fn send(&self, mut stream: Stream) -> pingora_error::Result<Http1Session> {
        use pingora_error::{ErrorType, OrErr};
        use tokio::io::AsyncWriteExt;
        stream
            .write_all(&self.head)
            .await
            .or_err(ErrorType::WriteError, "while writing the request")?;
        if !self.tail.is_empty() {
            stream
                .write_all(self.tail)
                .await
                .or_err(ErrorType::WriteError, "while writing the request body")?;
        }
        stream
            .flush()
            .await
            .or_err(ErrorType::WriteError, "while flushing the request")?;
        Ok(Http1Session::new(stream))
    }
}

const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// Builds the upstream request header for one try.
fn upstream_request(
    ctx: &RequestCtx,
    provider: &Provider,
    endpoint: &Endpoint,
    path: &str,
    client_headers: &http::HeaderMap,
    body_len: usize,
) -> pingora_error::Result<RequestHeader> {
    let mut req = RequestHeader::build_no_case(
        Method::POST,
        path.as_bytes(),
        Some(client_headers.len() + 6),
    )?;
    for (name, value) in client_headers {
        if !SKIP_REQUEST_HEADERS.contains(&name.as_str()) {
            req.append_header(name.clone(), value.clone())?;
        }
    }
    req.insert_header(header::HOST, endpoint.authority.clone())?;
    req.insert_header(header::CONTENT_LENGTH, body_len)?;
    req.insert_header(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )?;
    // Accounting must read the response: ask for it uncompressed.
    req.insert_header(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    )?;
    if provider.kind == ProviderKind::Anthropic && !client_headers.contains_key(&ANTHROPIC_VERSION)
    {
        req.insert_header(ANTHROPIC_VERSION, provider.anthropic_version.clone())?;
    }
    for (name, value) in &provider.headers {
        req.insert_header(name.clone(), value.clone())?;
    }
    let mut edit = RequestEdit(&mut req);
    for filter in super::attached_filters(ctx) {
        filter.on_upstream_request(&mut edit);
    }
    // Last, so that neither client headers nor filters can replace the credentials.
    if let Some((name, value)) = provider.auth_header() {
        req.insert_header(name, value)?;
    }
    Ok(req)
}

/// Lets filters edit a Pingora request header.
pub struct RequestEdit<'a>(pub &'a mut RequestHeader);

impl HeaderEdit for RequestEdit<'_> {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
        // Names and values were validated when the filter was built.
        let _ = self.0.insert_header(name.clone(), value.clone());
    }

    fn remove(&mut self, name: &HeaderName) {
        self.0.remove_header(name);
    }
}
