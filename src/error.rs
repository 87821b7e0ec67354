//! Errors sira itself answers with, mapped once to a status and rendered in the shape of
//! the surface the client spoke (CONTRACT.md, "Errors"):
//! OpenAI `{"error":{"message","type","param","code"}}`,
//! Anthropic `{"type":"error","error":{"type","message"}}`,
//! Gemini `{"error":{"code","message","status"}}`.
//!
//! The match in [`GatewayError::category`] is exhaustive: a new variant does not compile
//! until someone decides its status, its type in each dialect and its metric class.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::auth::AuthError;
use crate::format::Format;
use crate::provider::InvalidModelName;
use crate::translate::TranslateError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("unknown route {0}: see the list of routes in sira's README")]
    NotFound(String),
    #[error("method not allowed on this route; use {0}")]
    MethodNotAllowed(&'static str),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("this API key is not allowed to use model `{0}`")]
    ModelNotAllowed(String),
    /// A gateway without authentication on loopback refuses what a web page could send it
    /// (another `Host`, a body that is not JSON).
    #[error("this gateway has no authentication and serves only local programs: {0}")]
    LocalOnly(&'static str),
    /// `x-sira-route` from a key not allowed to choose targets.
    #[error("this API key may not choose a route with x-sira-route")]
    RouteNotAllowed,
    #[error("request body is larger than the gateway's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The request header is larger, or has more fields, than the gateway accepts.
    #[error("request header too large: {0}")]
    HeaderTooLarge(String),
    /// The client did not send a part of its request in time.
    #[error("the client did not send {0} in time")]
    RequestTimeout(&'static str),
    /// The request's framing is ambiguous or invalid (conflicting lengths, bad chunking).
    #[error("bad request: {0}")]
    BadFraming(String),
    /// An operator's `ip-allow`/`ip-deny` filter refused the client's address.
    #[error("this client address may not use this gateway")]
    AddressDenied,
    /// An operator's `deny` filter refused the request; the message is the filter's.
    #[error("{0}")]
    ContentDenied(String),
    #[error("{message}")]
    InvalidRequest {
        message: Cow<'static, str>,
        param: Option<&'static str>,
    },
    #[error("The model `{model}` does not exist or you do not have access to it.")]
    UnknownModel { model: String, surface: Format },
    #[error("{0}")]
    Unsupported(Cow<'static, str>),
    /// The request cannot be expressed in the provider's format without changing its meaning.
    #[error(transparent)]
    Translate(#[from] TranslateError),
    #[error("upstream {provider} could not be reached: {reason}")]
    UpstreamUnreachable { provider: String, reason: String },
    #[error("upstream {provider} did not answer within {}ms", after.as_millis())]
    UpstreamTimeout { provider: String, after: Duration },
    #[error("upstream {provider} failed: {reason}")]
    UpstreamBroken { provider: String, reason: String },
    /// The provider refused the gateway's own credential (its 401/403): the client's request
    /// is fine, the operator's provider key is not. The provider's text is logged, never
    /// relayed (it can echo part of the key).
    #[error("upstream {provider} refused the gateway's credentials; the operator can find the details in the log under request id {request_id}")]
    UpstreamAuth {
        provider: String,
        request_id: String,
    },
    /// A WebSocket upgrade sira does not serve: clients fall back to plain HTTP on a 426.
    #[error("this endpoint is served over plain HTTP: send the request without an upgrade")]
    UpgradeRequired,
    /// Every endpoint of the provider is unhealthy or has its circuit open.
    #[error("upstream {provider} has no healthy endpoint: {reason}")]
    NoHealthyEndpoint { provider: String, reason: String },
    /// `GET` / `DELETE /v1/responses/{id}` for a response this caller has not stored.
    #[error("Response with id '{0}' not found.")]
    ResponseNotFound(String),
    /// `previous_response_id` names a conversation sira cannot replay.
    #[error("Previous response with id '{id}' not found: {reason}")]
    PreviousResponse { id: String, reason: String },
    /// A store sira depends on (Redis) could not be reached in time.
    #[error(transparent)]
    Store(#[from] crate::responses_store::StoreError),
    /// An operator's `webhook` guardrail failed (`on_error: deny`): the request is not sent
    /// unchecked. The reason names the kind of failure, never the guardrail's answer.
    #[error("the gateway's content guardrail is unavailable: {0}")]
    GuardrailUnavailable(String),
    /// A limit or budget of the caller's key, tenant or model refused the request.
    #[error("{0}")]
    RateLimited(crate::limits::Refusal),
    /// The grace period of a shutdown ended while the request was still running.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(Cow<'static, str>),
}

/// What kind of failure an error is, independent of dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    HeaderTooLarge,
    RequestTimeout,
    Unavailable,
    Upstream,
    Timeout,
    /// A store the gateway depends on (Redis) failed: 503, the request may be retried.
    Dependency,
    /// A limit or budget refused the request: 429 with `retry-after`.
    RateLimited,
    Internal,
}

impl From<InvalidModelName> for GatewayError {
    fn from(e: InvalidModelName) -> GatewayError {
        GatewayError::invalid_param("model", e.to_string())
    }
}

impl GatewayError {
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> GatewayError {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid_param(
        param: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> GatewayError {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: Some(param),
        }
    }

    pub fn no_endpoint(provider: &str, e: &crate::pool::NoEndpoint) -> GatewayError {
        GatewayError::NoHealthyEndpoint {
            provider: provider.to_owned(),
            reason: e.to_string(),
        }
    }

    pub fn category(&self) -> Category {
        match self {
            GatewayError::NotFound(_) => Category::NotFound,
            GatewayError::MethodNotAllowed(_) => Category::InvalidRequest,
            GatewayError::Auth(_) => Category::Authentication,
            GatewayError::ModelNotAllowed(_)
            | GatewayError::AddressDenied
            | GatewayError::RouteNotAllowed
            | GatewayError::LocalOnly(_) => Category::Permission,
            GatewayError::BodyTooLarge { .. } => Category::TooLarge,
            GatewayError::HeaderTooLarge(_) => Category::HeaderTooLarge,
            GatewayError::RequestTimeout(_) => Category::RequestTimeout,
            GatewayError::BadFraming(_) => Category::InvalidRequest,
            GatewayError::InvalidRequest { .. }
            | GatewayError::Unsupported(_)
            | GatewayError::ContentDenied(_) => Category::InvalidRequest,
            GatewayError::Translate(
                TranslateError::UpstreamFailed(_) | TranslateError::TooLarge { .. },
            ) => Category::Upstream,
            GatewayError::Translate(_) => Category::InvalidRequest,
            GatewayError::UnknownModel { .. } | GatewayError::ResponseNotFound(_) => {
                Category::NotFound
            }
            GatewayError::PreviousResponse { .. } => Category::InvalidRequest,
            GatewayError::Store(_) | GatewayError::GuardrailUnavailable(_) => Category::Dependency,
            GatewayError::RateLimited(r) if r.kind == crate::limits::LimitKind::Store => {
                Category::Dependency
            }
            GatewayError::RateLimited(_) => Category::RateLimited,
            GatewayError::UpstreamUnreachable { .. }
            | GatewayError::UpstreamBroken { .. }
            | GatewayError::UpstreamAuth { .. }
            | GatewayError::NoHealthyEndpoint { .. } => Category::Upstream,
            GatewayError::UpgradeRequired => Category::InvalidRequest,
            GatewayError::UpstreamTimeout { .. } => Category::Timeout,
            GatewayError::ShuttingDown => Category::Unavailable,
            GatewayError::Internal(_) => Category::Internal,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            GatewayError::MethodNotAllowed(_) => 405,
            GatewayError::UpgradeRequired => 426,
            // OpenAI answers an unknown model with 404; CONTRACT.md keeps 400 elsewhere.
            GatewayError::UnknownModel { surface, .. } => match surface {
                Format::OpenAiChat | Format::OpenAiResponses => 404,
                Format::Anthropic | Format::Gemini => 400,
            },
            _ => match self.category() {
                Category::InvalidRequest => 400,
                Category::Authentication => 401,
                Category::Permission => 403,
                Category::NotFound => 404,
                Category::TooLarge => 413,
                Category::HeaderTooLarge => 431,
                Category::RequestTimeout => 408,
                Category::Unavailable | Category::Dependency => 503,
                Category::RateLimited => 429,
                Category::Upstream => 502,
                Category::Timeout => 504,
                Category::Internal => 500,
            },
        }
    }

    /// Low-cardinality label for metrics and the access log.
    pub fn class(&self) -> &'static str {
        match self.category() {
            Category::InvalidRequest => "invalid_request",
            Category::Authentication => "authentication",
            Category::Permission => "permission",
            Category::NotFound => "not_found",
            Category::TooLarge => "too_large",
            Category::HeaderTooLarge => "header_too_large",
            Category::RequestTimeout => "client_timeout",
            Category::Unavailable => "shutting_down",
            Category::Upstream => "upstream",
            Category::Timeout => "timeout",
            Category::Dependency => "dependency",
            Category::RateLimited => "rate_limited",
            Category::Internal => "internal",
        }
    }

    fn openai_code(&self) -> Option<&'static str> {
        match self {
            GatewayError::Auth(AuthError::Invalid) => Some("invalid_api_key"),
            GatewayError::Auth(AuthError::Missing) => Some("missing_api_key"),
            GatewayError::Auth(AuthError::Expired) => Some("expired_api_key"),
            GatewayError::ContentDenied(_) => Some("content_policy_violation"),
            GatewayError::AddressDenied => Some("ip_not_allowed"),
            GatewayError::UnknownModel { .. } => Some("model_not_found"),
            GatewayError::BodyTooLarge { .. } => Some("request_too_large"),
            GatewayError::HeaderTooLarge(_) => Some("request_header_too_large"),
            GatewayError::RequestTimeout(_) => Some("request_timeout"),
            GatewayError::ModelNotAllowed(_) => Some("model_not_allowed"),
            GatewayError::RouteNotAllowed => Some("route_not_allowed"),
            GatewayError::UpstreamTimeout { .. } => Some("upstream_timeout"),
            GatewayError::NoHealthyEndpoint { .. } => Some("no_healthy_upstream"),
            GatewayError::UpstreamAuth { .. } => Some("upstream_auth_failed"),
            GatewayError::UpgradeRequired => Some("upgrade_required"),
            GatewayError::PreviousResponse { .. } => Some("previous_response_not_found"),
            GatewayError::Store(_) => Some("store_unavailable"),
            GatewayError::GuardrailUnavailable(_) => Some("guardrail_unavailable"),
            GatewayError::RateLimited(r) if r.kind == crate::limits::LimitKind::Store => {
                Some("store_unavailable")
            }
            GatewayError::RateLimited(r) if r.kind == crate::limits::LimitKind::Budget => {
                Some("insufficient_quota")
            }
            GatewayError::RateLimited(_) => Some("rate_limit_exceeded"),
            GatewayError::UpstreamUnreachable { .. } | GatewayError::UpstreamBroken { .. } => {
                Some("upstream_error")
            }
            GatewayError::Translate(e) => e.code(),
            _ => None,
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => *param,
            GatewayError::UnknownModel { .. } | GatewayError::ModelNotAllowed(_) => Some("model"),
            GatewayError::PreviousResponse { .. } => Some("previous_response_id"),
            GatewayError::Translate(e) => e.param(),
            _ => None,
        }
    }

    /// The JSON body in the client's dialect.
    pub fn render(&self, format: Format) -> Bytes {
        render_error(
            format,
            self.status(),
            self.category(),
            &self.to_string(),
            self.param(),
            self.openai_code(),
        )
    }
}

/// Renders an error body; shared with in-stream error events.
pub fn render_error(
    format: Format,
    status: u16,
    category: Category,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Bytes {
    #[derive(Serialize)]
    struct OpenAiBody<'a> {
        error: OpenAiError<'a>,
    }
    #[derive(Serialize)]
    struct OpenAiError<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        param: Option<&'a str>,
        code: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct AnthropicBody<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        error: AnthropicError<'a>,
    }
    #[derive(Serialize)]
    struct AnthropicError<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct GeminiBody<'a> {
        error: GeminiError<'a>,
    }
    #[derive(Serialize)]
    struct GeminiError<'a> {
        code: u16,
        message: &'a str,
        status: &'a str,
    }
    let body = match format {
        Format::OpenAiChat | Format::OpenAiResponses => serde_json::to_vec(&OpenAiBody {
            error: OpenAiError {
                message,
                kind: openai_type(category),
                param,
                code,
            },
        }),
        Format::Anthropic => serde_json::to_vec(&AnthropicBody {
            kind: "error",
            error: AnthropicError {
                kind: anthropic_type(category, status),
                message,
            },
        }),
        Format::Gemini => serde_json::to_vec(&GeminiBody {
            error: GeminiError {
                code: status,
                message,
                status: gemini_status(category, status),
            },
        }),
    };
    // Serialising plain strings and numbers cannot fail; an empty body is still a valid
    // error response if it somehow did.
    Bytes::from(body.unwrap_or_default())
}

fn openai_type(category: Category) -> &'static str {
    match category {
        Category::InvalidRequest
        | Category::NotFound
        | Category::TooLarge
        | Category::HeaderTooLarge
        | Category::RequestTimeout => "invalid_request_error",
        Category::Authentication => "authentication_error",
        Category::Permission => "permission_error",
        Category::RateLimited => "rate_limit_error",
        Category::Upstream
        | Category::Timeout
        | Category::Unavailable
        | Category::Dependency
        | Category::Internal => "server_error",
    }
}

fn anthropic_type(category: Category, status: u16) -> &'static str {
    match category {
        Category::InvalidRequest => "invalid_request_error",
        Category::Authentication => "authentication_error",
        Category::Permission => "permission_error",
        Category::NotFound if status == 404 => "not_found_error",
        Category::NotFound => "invalid_request_error",
        Category::TooLarge => "request_too_large",
        Category::HeaderTooLarge => "invalid_request_error",
        Category::Timeout | Category::RequestTimeout => "timeout_error",
        Category::Unavailable => "overloaded_error",
        Category::Upstream | Category::Dependency | Category::Internal => "api_error",
        Category::RateLimited => "rate_limit_error",
    }
}

fn gemini_status(category: Category, status: u16) -> &'static str {
    match category {
        Category::InvalidRequest | Category::TooLarge | Category::HeaderTooLarge => {
            "INVALID_ARGUMENT"
        }
        Category::RequestTimeout => "DEADLINE_EXCEEDED",
        Category::Authentication => "UNAUTHENTICATED",
        Category::Permission => "PERMISSION_DENIED",
        Category::NotFound if status == 404 => "NOT_FOUND",
        Category::NotFound => "INVALID_ARGUMENT",
        Category::Timeout => "DEADLINE_EXCEEDED",
        Category::Upstream | Category::Unavailable | Category::Dependency => "UNAVAILABLE",
        Category::RateLimited => "RESOURCE_EXHAUSTED",
        Category::Internal => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn body(e: &GatewayError, f: Format) -> Value {
        serde_json::from_slice(&e.render(f)).unwrap()
    }

    #[test]
    fn shapes_per_surface() {
        let e = GatewayError::Auth(AuthError::Invalid);
        assert_eq!(e.status(), 401);
        assert_eq!(
            body(&e, Format::OpenAiChat),
            json!({"error": {"message": "invalid API key", "type": "authentication_error", "param": null, "code": "invalid_api_key"}})
        );
        assert_eq!(
            body(&e, Format::Anthropic),
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid API key"}})
        );
        assert_eq!(
            body(&e, Format::Gemini),
            json!({"error": {"code": 401, "message": "invalid API key", "status": "UNAUTHENTICATED"}})
        );
    }

    #[test]
    fn unknown_model_is_404_only_where_openai_says_so() {
        let openai = GatewayError::UnknownModel {
            model: "x".into(),
            surface: Format::OpenAiChat,
        };
        assert_eq!(openai.status(), 404);
        assert_eq!(
            body(&openai, Format::OpenAiChat)["error"]["code"],
            "model_not_found"
        );
        let anthropic = GatewayError::UnknownModel {
            model: "x".into(),
            surface: Format::Anthropic,
        };
        assert_eq!(anthropic.status(), 400);
        assert_eq!(
            body(&anthropic, Format::Anthropic)["error"]["type"],
            "invalid_request_error"
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(GatewayError::BodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(GatewayError::ModelNotAllowed("m".into()).status(), 403);
        let timeout = GatewayError::UpstreamTimeout {
            provider: "p".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(timeout.status(), 504);
        assert_eq!(
            body(&timeout, Format::Anthropic)["error"]["type"],
            "timeout_error"
        );
        let down = GatewayError::UpstreamUnreachable {
            provider: "p".into(),
            reason: "refused".into(),
        };
        assert_eq!(down.status(), 502);
        let n = body(
            &GatewayError::invalid_param("n", "n must be 1"),
            Format::OpenAiChat,
        );
        assert_eq!(n["error"]["param"], "n");
    }
}
