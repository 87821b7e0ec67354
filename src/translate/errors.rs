//! Upstream error bodies → the client's error shape and status (§7, §11.13). Never fails:
//! an unparseable body becomes a generic error carrying the upstream status.

use std::borrow::Cow;

use super::ir::{ErrorInfo, ErrorKind};
use super::util::to_body;
use super::{anthropic, gemini, openai_chat, TranslateError, TranslatedError};
use crate::format::Format;

/// An upstream error body (any status >= 400) from provider format `from`, turned into the
/// client format `to`'s error shape with the right status (e.g. Anthropic 529 overloaded →
/// 503 for OpenAI clients so SDKs retry).
pub fn translate_error(from: Format, to: Format, status: u16, body: &[u8]) -> TranslatedError {
    if from == to {
        return TranslatedError {
            status,
            body: body.to_vec(),
        };
    }
    let info = parse(from, status, body).unwrap_or_else(|| ErrorInfo {
        kind: ErrorKind::from_status(status),
        message: generic_message(status, body),
        code: None,
        param: None,
    });
    // Codes and params are kept only between the two OpenAI surfaces, which share the
    // envelope and vocabulary (§11.1); other formats map by status and class (§7.3).
    let same_vocabulary = matches!(from, Format::OpenAiChat | Format::OpenAiResponses)
        && matches!(to, Format::OpenAiChat | Format::OpenAiResponses);
    write(to, &info, same_vocabulary)
}

/// A request sira could not translate, as a 400 (or 500 for an upstream failure) in the
/// client's shape.
pub(crate) fn request_error(client: Format, err: &TranslateError) -> TranslatedError {
    let message = err.to_string();
    let kind = match err {
        TranslateError::UpstreamFailed(_) => ErrorKind::Server,
        _ => ErrorKind::InvalidRequest,
    };
    let info = ErrorInfo {
        kind,
        message: Cow::Owned(message),
        code: err.code().map(Cow::Borrowed),
        param: err.param().map(|p| Cow::Owned(p.to_owned())),
    };
    write(client, &info, true)
}

fn generic_message(status: u16, body: &[u8]) -> Cow<'static, str> {
    match std::str::from_utf8(body) {
        Ok(text) if !text.trim().is_empty() && text.len() <= 512 => {
            Cow::Owned(format!("upstream returned HTTP {status}: {}", text.trim()))
        }
        _ => Cow::Owned(format!("upstream returned HTTP {status}")),
    }
}

fn parse(from: Format, status: u16, body: &[u8]) -> Option<ErrorInfo<'_>> {
    match from {
        Format::OpenAiChat | Format::OpenAiResponses => {
            let e: openai_chat::wire_response::ErrorEnvelope<'_> =
                serde_json::from_slice(body).ok()?;
            // Azure auth errors put a numeric string in `code` (§7.1).
            let code = e
                .error
                .code
                .map(|c| Cow::Owned(c.get().trim_matches('"').to_owned()));
            Some(ErrorInfo {
                kind: openai_kind(Some(status), e.error.kind.as_deref(), code.as_deref()),
                message: e.error.message.unwrap_or(Cow::Borrowed("upstream error")),
                code,
                param: e.error.param,
            })
        }
        Format::Anthropic => {
            let e: anthropic::wire::ErrorEnvelope<'_> = serde_json::from_slice(body).ok()?;
            let message = e.error.message.unwrap_or(Cow::Borrowed("upstream error"));
            let kind = e
                .error
                .kind
                .as_deref()
                .and_then(|t| anthropic_kind(t, &message))
                .unwrap_or(ErrorKind::from_status(status));
            Some(ErrorInfo {
                kind,
                message,
                code: None,
                param: None,
            })
        }
        Format::Gemini => {
            // Gemini sometimes wraps the error object in an array.
            let e: gemini::wire::ErrorEnvelope<'_> = match body
                .iter()
                .find(|b| !b.is_ascii_whitespace())
            {
                Some(b'[') => serde_json::from_slice::<Vec<gemini::wire::ErrorEnvelope<'_>>>(body)
                    .ok()?
                    .into_iter()
                    .next()?,
                _ => serde_json::from_slice(body).ok()?,
            };
            Some(gemini_error(e.error, status))
        }
    }
}

pub(crate) fn gemini_error(e: gemini::wire::ErrorIn<'_>, status: u16) -> ErrorInfo<'_> {
    let message = e.message.unwrap_or(Cow::Borrowed("upstream error"));
    let key_invalid = e
        .details
        .iter()
        .any(|d| d.reason.as_deref() == Some("API_KEY_INVALID"));
    let kind = gemini_kind(
        e.status.as_deref(),
        e.code.unwrap_or(status),
        key_invalid,
        &message,
    );
    ErrorInfo {
        kind,
        message,
        code: None,
        param: None,
    }
}

/// OpenAI error class: code first (it disambiguates the two 429s, §7.2), then the HTTP status
/// (unknown for errors inside a stream), then the type.
pub(crate) fn openai_kind(
    status: Option<u16>,
    kind: Option<&str>,
    code: Option<&str>,
) -> ErrorKind {
    match (code, kind, status) {
        (Some("insufficient_quota"), _, _) | (_, Some("insufficient_quota"), _) => ErrorKind::Quota,
        (Some("context_length_exceeded"), _, _) => ErrorKind::ContextLength,
        (Some("invalid_api_key"), _, _) => ErrorKind::Authentication,
        (Some("server_is_overloaded" | "slow_down"), _, _)
        | (_, Some("service_unavailable_error"), _) => ErrorKind::Overloaded,
        (Some("rate_limit_exceeded"), _, _) => ErrorKind::RateLimit,
        (_, _, Some(status)) if status >= 400 => ErrorKind::from_status(status),
        (_, Some("invalid_request_error"), _) => ErrorKind::InvalidRequest,
        (_, Some("requests" | "tokens" | "rate_limit_error"), _) => ErrorKind::RateLimit,
        _ => ErrorKind::Server,
    }
}

pub(crate) fn anthropic_kind(kind: &str, message: &str) -> Option<ErrorKind> {
    Some(match kind {
        "invalid_request_error" if message.contains("prompt is too long") => {
            ErrorKind::ContextLength
        }
        "invalid_request_error" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "billing_error" => ErrorKind::Billing,
        "permission_error" => ErrorKind::Permission,
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::RequestTooLarge,
        "rate_limit_error" => ErrorKind::RateLimit,
        "api_error" => ErrorKind::Server,
        "overloaded_error" => ErrorKind::Overloaded,
        "timeout_error" => ErrorKind::Timeout,
        _ => return None,
    })
}

fn gemini_kind(status: Option<&str>, code: u16, key_invalid: bool, message: &str) -> ErrorKind {
    if key_invalid {
        // A bad Gemini key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID (§7.2).
        return ErrorKind::Authentication;
    }
    match status {
        Some("INVALID_ARGUMENT")
            if message.contains("token count") && message.contains("exceeds") =>
        {
            ErrorKind::ContextLength
        }
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => {
            ErrorKind::InvalidRequest
        }
        Some("UNAUTHENTICATED") => ErrorKind::Authentication,
        Some("PERMISSION_DENIED") => ErrorKind::Permission,
        Some("NOT_FOUND") => ErrorKind::NotFound,
        Some("RESOURCE_EXHAUSTED") => ErrorKind::RateLimit,
        Some("INTERNAL" | "UNKNOWN" | "DATA_LOSS" | "CANCELLED" | "ABORTED") => ErrorKind::Server,
        Some("UNAVAILABLE") => ErrorKind::Overloaded,
        Some("DEADLINE_EXCEEDED") => ErrorKind::Timeout,
        _ => ErrorKind::from_status(code),
    }
}

/// HTTP status, `type` and `code` for an OpenAI client (§7.3 "To an OpenAI client").
pub(crate) fn openai_shape(kind: ErrorKind) -> (u16, &'static str, Option<&'static str>) {
    match kind {
        ErrorKind::InvalidRequest => (400, "invalid_request_error", None),
        ErrorKind::ContextLength => (
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
        ErrorKind::Authentication => (401, "invalid_request_error", Some("invalid_api_key")),
        ErrorKind::Billing | ErrorKind::Quota => {
            (429, "insufficient_quota", Some("insufficient_quota"))
        }
        ErrorKind::Permission => (403, "invalid_request_error", None),
        ErrorKind::NotFound => (404, "invalid_request_error", None),
        ErrorKind::RequestTooLarge => (413, "invalid_request_error", None),
        ErrorKind::RateLimit => (429, "requests", Some("rate_limit_exceeded")),
        ErrorKind::Server => (500, "server_error", None),
        // 529 is unknown to OpenAI clients; 503 is what OpenAI uses for overload (§7.3).
        ErrorKind::Overloaded => (
            503,
            "service_unavailable_error",
            Some("server_is_overloaded"),
        ),
        ErrorKind::Timeout => (504, "server_error", None),
    }
}

/// HTTP status and `error.type` for an Anthropic client (§7.3 "To an Anthropic client").
pub(crate) fn anthropic_shape(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::ContextLength => (400, "invalid_request_error"),
        ErrorKind::Authentication => (401, "authentication_error"),
        ErrorKind::Billing => (402, "billing_error"),
        ErrorKind::Permission => (403, "permission_error"),
        ErrorKind::NotFound => (404, "not_found_error"),
        ErrorKind::RequestTooLarge => (413, "request_too_large"),
        ErrorKind::RateLimit | ErrorKind::Quota => (429, "rate_limit_error"),
        ErrorKind::Server => (500, "api_error"),
        // Anthropic clients retry 529 (§7.3).
        ErrorKind::Overloaded => (529, "overloaded_error"),
        ErrorKind::Timeout => (504, "timeout_error"),
    }
}

/// HTTP status and gRPC status name for a Gemini client (§7.2).
pub(crate) fn gemini_shape(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::ContextLength | ErrorKind::RequestTooLarge => {
            (400, "INVALID_ARGUMENT")
        }
        ErrorKind::Billing => (400, "FAILED_PRECONDITION"),
        ErrorKind::Authentication => (401, "UNAUTHENTICATED"),
        ErrorKind::Permission => (403, "PERMISSION_DENIED"),
        ErrorKind::NotFound => (404, "NOT_FOUND"),
        ErrorKind::RateLimit | ErrorKind::Quota => (429, "RESOURCE_EXHAUSTED"),
        ErrorKind::Server => (500, "INTERNAL"),
        ErrorKind::Overloaded => (503, "UNAVAILABLE"),
        ErrorKind::Timeout => (504, "DEADLINE_EXCEEDED"),
    }
}

/// The Responses in-stream error code for an error class (§11.13): chosen for how Codex
/// reacts (compaction, waiting, stopping, retrying).
pub(crate) fn responses_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ContextLength => "context_length_exceeded",
        ErrorKind::RateLimit => "rate_limit_exceeded",
        ErrorKind::Quota | ErrorKind::Billing => "insufficient_quota",
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "invalid_prompt",
        _ => "server_error",
    }
}

fn write(to: Format, info: &ErrorInfo<'_>, keep_code: bool) -> TranslatedError {
    match to {
        Format::OpenAiChat | Format::OpenAiResponses => {
            let (status, kind, code) = openai_shape(info.kind);
            let code = if keep_code {
                info.code.as_deref().or(code)
            } else {
                code
            };
            let code = match (info.kind, code) {
                // `model_not_found` only when the error is about the model (§7.3).
                (ErrorKind::NotFound, None) if info.message.contains("model") => {
                    Some("model_not_found")
                }
                (_, code) => code,
            };
            let body = openai_chat::wire_response::ErrorEnvelopeOut {
                error: openai_chat::wire_response::ErrorOut {
                    message: &info.message,
                    kind,
                    param: if keep_code {
                        info.param.as_deref()
                    } else {
                        None
                    },
                    code,
                },
            };
            TranslatedError {
                status,
                body: to_body(&body),
            }
        }
        Format::Anthropic => {
            let (status, kind) = anthropic_shape(info.kind);
            let body = anthropic::wire::ErrorEnvelopeOut {
                kind: "error",
                error: anthropic::wire::ErrorOut {
                    kind,
                    message: &info.message,
                },
            };
            TranslatedError {
                status,
                body: to_body(&body),
            }
        }
        Format::Gemini => {
            let (status, grpc) = gemini_shape(info.kind);
            let body = gemini::wire::ErrorEnvelopeOut {
                error: gemini::wire::ErrorOut {
                    code: status,
                    message: &info.message,
                    status: grpc,
                },
            };
            TranslatedError {
                status,
                body: to_body(&body),
            }
        }
    }
}

/// Error class of a Responses error code (`response.failed`, `error` events, §11.13).
pub(crate) fn responses_kind(code: Option<&str>) -> ErrorKind {
    match code {
        Some("rate_limit_exceeded") => ErrorKind::RateLimit,
        Some("insufficient_quota") => ErrorKind::Quota,
        Some("context_length_exceeded") => ErrorKind::ContextLength,
        Some("invalid_prompt" | "invalid_request_error") => ErrorKind::InvalidRequest,
        _ => ErrorKind::Server,
    }
}
