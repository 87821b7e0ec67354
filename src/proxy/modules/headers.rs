//! Headers sira owns: its own response headers (`x-request-id`, `x-sira-*`), the provider's
//! request line and headers, and — last of all — the provider's credential.

use http::{header, HeaderName, HeaderValue};
use pingora_http::ResponseHeader;

use crate::error::GatewayError;
use crate::provider::ProviderKind;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::header_edit;
use crate::proxy::phases::{Phase, UpstreamRequest};

// Names as constants: a `&str` name is parsed into a `HeaderName` on every insert.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_SIRA_OVERHEAD_US: HeaderName = HeaderName::from_static("x-sira-overhead-us");
const X_SIRA_PROVIDER: HeaderName = HeaderName::from_static("x-sira-provider");
const X_SIRA_MODEL: HeaderName = HeaderName::from_static("x-sira-model");
const X_SIRA_ATTEMPTS: HeaderName = HeaderName::from_static("x-sira-attempts");
const X_SIRA_ESTIMATE: HeaderName = HeaderName::from_static("x-sira-estimate");
const X_SIRA_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-sira-dropped-params");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// `x-request-id`, `x-sira-provider`, `x-sira-model`, `x-sira-attempts`,
/// `x-sira-dropped-params` and `x-sira-overhead-us` on every response, sira's own included.
pub struct SiraHeaders;

impl Phase for SiraHeaders {
    fn name(&self) -> &'static str {
        "sira-headers"
    }

    /// Reads: `ctx.id`, `ctx.upstream`, `ctx.response.dropped_params`, the clock (the
    /// overhead is the time in sira until the header, provider waits excluded).
    fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let overhead = ctx.started.elapsed().saturating_sub(ctx.upstream.wait);
        let upstream = &ctx.upstream;
        let attempts = (!upstream.attempts.is_empty()).then(|| {
            // Sized first, and handed to the header value without a copy: one allocation.
            let size: usize = upstream
                .attempts
                .iter()
                .map(|a| a.provider.len() + a.outcome.len() + 4)
                .sum();
            let mut text = Vec::with_capacity(size + 8);
            text.extend_from_slice(
                itoa::Buffer::new()
                    .format(upstream.attempts.len())
                    .as_bytes(),
            );
            for (i, attempt) in upstream.attempts.iter().enumerate() {
                text.extend_from_slice(if i == 0 { b" (" } else { b", " });
                text.extend_from_slice(attempt.provider.as_bytes());
                text.extend_from_slice(b": ");
                text.extend_from_slice(attempt.outcome.as_bytes());
            }
            text.push(b')');
            text
        });
        let dropped = &ctx.response.dropped_params;
        header_edit::edit_response(resp, |headers| {
            let mut set = |name, value| header_edit::set(headers, name, value);
            set(X_REQUEST_ID, crate::proxy::hop::unique(ctx.id.clone()))?;
            if ctx.response.estimate {
                set(X_SIRA_ESTIMATE, HeaderValue::from_static("true"))?;
            }
            set(
                X_SIRA_OVERHEAD_US,
                crate::proxy::hop::unique(HeaderValue::from(overhead.as_micros() as u64)),
            )?;
            if let Some(value) = upstream
                .provider
                .as_ref()
                .and_then(|p| p.name_header.clone())
            {
                set(X_SIRA_PROVIDER, value)?;
            }
            if let Some(Ok(value)) = upstream.model.as_deref().map(HeaderValue::from_str) {
                set(X_SIRA_MODEL, value)?;
            }
            if let Some(Ok(value)) =
                attempts.map(|t| HeaderValue::from_maybe_shared(bytes::Bytes::from(t)))
            {
                set(X_SIRA_ATTEMPTS, value)?;
            }
            if !dropped.is_empty() {
                if let Ok(value) = HeaderValue::from_str(&dropped.join(", ")) {
                    set(X_SIRA_DROPPED_PARAMS, value)?;
                }
            }
            Ok(())
        })
    }
}

/// The request line and the provider's headers: path and query built for the provider's
/// kind (never spliced from the client's path), `Host`, the body's type, and the headers
/// the provider needs.
pub struct ProviderRequest;

impl Phase for ProviderRequest {
    fn name(&self) -> &'static str {
        "provider-request"
    }

    /// Reads: the target, endpoint, model and operation of the try (translation has set
    /// the operation). Writes: the upstream request's path and headers.
    fn upstream_request_filter(
        &self,
        upstream: &mut UpstreamRequest<'_>,
        _ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        let provider = &upstream.target.provider;
        let path = provider.upstream_path(
            upstream.endpoint,
            upstream.op,
            upstream.model,
            upstream.stream,
        )?;
        upstream.path = path;
        let headers = &mut upstream.headers;
        {
            let mut set = |name, value| header_edit::set(headers, name, value);
            set(header::HOST, upstream.endpoint.authority.clone())?;
            set(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )?;
            // Accounting must read the response: ask for it uncompressed.
            set(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            )?;
            // Anthropic's API-version headers belong to Anthropic: a client's never go to
            // another kind. (Account-choosing headers never cross at all:
            // `hop::skip_request_header`.)
            if provider.kind != ProviderKind::Anthropic {
                headers.remove(&ANTHROPIC_VERSION);
                headers.remove(&ANTHROPIC_BETA);
            } else if !headers.contains_key(&ANTHROPIC_VERSION) {
                header_edit::set(
                    headers,
                    ANTHROPIC_VERSION,
                    provider.anthropic_version.clone(),
                )?;
            }
            for (name, value) in &provider.headers {
                header_edit::set(headers, name.clone(), value.clone())?;
            }
        }
        Ok(())
    }
}

/// The provider's credential, set last on the way in so that neither client headers nor
/// filters can replace it (the client's own credentials were never copied).
pub struct Credentials;

impl Phase for Credentials {
    fn name(&self) -> &'static str {
        "credentials"
    }

    fn upstream_request_filter(
        &self,
        upstream: &mut UpstreamRequest<'_>,
        _ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        match upstream.target.provider.auth_header() {
            Some((name, value)) => header_edit::set(&mut upstream.headers, name, value),
            None => Ok(()),
        }
    }
}

pub(crate) fn header_error(e: Box<pingora_error::Error>) -> GatewayError {
    GatewayError::Internal(format!("cannot build response header: {e}").into())
}
