//! Error bodies in each provider's real shape (TRANSLATION.md §7), over HTTP and inside streams.

use crate::fixtures;
use crate::knobs::ErrorBody;
use crate::provider::Provider;
use crate::reply::Ctx;
use crate::wire::{compact, pretty, Alphabet, Events, Id, Json, Out};
use bytes::Bytes;
use http::StatusCode;

/// Status and body of an injected HTTP error: `x-mock-status`, else the status in the name of
/// an `x-mock-error` fixture, else 500. The body is `x-mock-error`, else the provider's recorded
/// error for that status, else one synthesized in the provider's shape.
pub(crate) fn injected(
    provider: Provider,
    status: Option<StatusCode>,
    error: Option<ErrorBody<'_>>,
    seq: u64,
) -> (StatusCode, Bytes) {
    let status = status
        .or(match error {
            Some(ErrorBody::Fixture(f)) => f.status(),
            _ => None,
        })
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match error {
        Some(ErrorBody::Fixture(f)) => Bytes::from_static(f.bytes()),
        Some(ErrorBody::Raw(raw)) => Bytes::copy_from_slice(raw.as_bytes()),
        None => match fixtures::default_error(provider, status.as_u16()) {
            Some(f) => Bytes::from_static(f.bytes()),
            None => synthesize(
                provider,
                status,
                &format!("sira-mock: injected error (HTTP {})", status.as_u16()),
                seq,
            )
            .into(),
        },
    };
    (status, body)
}

/// An error body in `provider`'s shape with our own message (bad knobs, bad request bodies,
/// unknown routes, statuses without a recording).
pub(crate) fn synthesize(
    provider: Provider,
    status: StatusCode,
    message: &str,
    seq: u64,
) -> Vec<u8> {
    let code = status.as_u16();
    let mut o = Out::with_capacity(256);
    match provider {
        Provider::OpenAi | Provider::Azure | Provider::Responses => {
            let (kind, err_code) = match code {
                401 => ("invalid_request_error", Some("invalid_api_key")),
                429 => ("requests", Some("rate_limit_exceeded")),
                503 => ("service_unavailable_error", Some("server_is_overloaded")),
                500..=599 => ("server_error", None),
                _ => ("invalid_request_error", None),
            };
            write!(
                o,
                r#"{{"error":{{"message":{},"type":"{kind}","param":null,"code":"#,
                Json(message)
            );
            match err_code {
                Some(c) => write!(o, r#""{c}"}}}}"#),
                None => o.push(b"null}}"),
            }
            pretty(&o.0)
        }
        Provider::Anthropic => {
            let kind = match code {
                400 | 422 => "invalid_request_error",
                401 => "authentication_error",
                402 => "billing_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                504 => "timeout_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            let request_id = Id {
                prefix: "req_011C",
                seed: seq.wrapping_add(0xE1),
                alphabet: Alphabet::Base62,
                len: 20,
            };
            write!(
                o,
                r#"{{"type":"error","error":{{"type":"{kind}","message":{}}},"request_id":"{request_id}"}}"#,
                Json(message)
            );
            o.0
        }
        Provider::Gemini => {
            let grpc = match code {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                409 => "ABORTED",
                429 => "RESOURCE_EXHAUSTED",
                499 => "CANCELLED",
                500 => "INTERNAL",
                503 => "UNAVAILABLE",
                504 => "DEADLINE_EXCEEDED",
                _ => "UNKNOWN",
            };
            write!(
                o,
                r#"{{"error":{{"code":{code},"message":{},"status":"{grpc}"}}}}"#,
                Json(message)
            );
            pretty(&o.0)
        }
    }
}

/// Chat Completions' in-stream error (the SDKs raise on a chunk with `error`); the message is
/// the recorded 500 text.
const OPENAI_STREAM_ERROR: &str = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;

/// Byte-exact from anthropic/messages_stream_error_overloaded.sse.
const ANTHROPIC_STREAM_ERROR: &[u8] =
    b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";

/// The bare JSON object (no `data:`) Google appends, as in gemini/stream_error_mid_stream.sse.
const GEMINI_STREAM_ERROR: &[u8] = b"{\n  \"error\": {\n    \"code\": 499,\n    \"message\": \"The operation was cancelled.\",\n    \"status\": \"CANCELLED\",\n    \"details\": [\n      {\n        \"@type\": \"type.googleapis.com/google.rpc.DebugInfo\",\n        \"detail\": \"[ORIGINAL ERROR] generic::cancelled: \"\n      }\n    ]\n  }\n}\n";

const RESPONSES_ERROR_MESSAGE: &str =
    "The server had an error processing your request. Sorry about that!";

/// The events that end a stream with an in-stream error after `sent` events. `x-mock-error`
/// (if given) replaces the error payload; it is made single-line for `data:` framing.
pub(crate) fn stream_tail(ctx: &Ctx<'_>, sent: usize) -> Vec<Bytes> {
    let custom: Option<String> = match ctx.knobs.error {
        Some(ErrorBody::Fixture(f)) => Some(String::from_utf8_lossy(f.bytes()).into_owned()),
        Some(ErrorBody::Raw(raw)) => Some(raw.to_owned()),
        None => None,
    };
    let mut ev = Events::with_capacity(512, 2);
    match ctx.provider {
        Provider::OpenAi | Provider::Azure => {
            write!(
                ev.out,
                "data: {}\n\n",
                custom
                    .as_deref()
                    .map_or(OPENAI_STREAM_ERROR.to_owned(), compact)
            );
            ev.end();
        }
        Provider::Anthropic => {
            match custom {
                Some(c) => write!(ev.out, "event: error\ndata: {}\n\n", compact(&c)),
                None => ev.out.push(ANTHROPIC_STREAM_ERROR),
            }
            ev.end();
        }
        Provider::Gemini => {
            match custom {
                Some(c) => ev.out.push(c.as_bytes()),
                None => ev.out.push(GEMINI_STREAM_ERROR),
            }
            ev.end();
        }
        Provider::Responses => {
            // As in stream_error_insufficient_quota.sse: an `error` event, then
            // `response.failed` (shaped like stream_failed_rate_limit.sse).
            match custom {
                Some(c) => write!(ev.out, "event: error\ndata: {}\n\n", compact(&c)),
                None => write!(
                    ev.out,
                    "event: error\ndata: {{\"type\":\"error\",\"sequence_number\":{sent},\"error\":{{\"type\":\"server_error\",\"code\":\"server_error\",\"message\":{},\"param\":null}}}}\n\n",
                    Json(RESPONSES_ERROR_MESSAGE)
                ),
            }
            ev.end();
            write!(
                ev.out,
                "event: response.failed\ndata: {{\"type\":\"response.failed\",\"sequence_number\":{},\"response\":{{\"id\":\"{}\",\"object\":\"response\",\"created_at\":{},\"status\":\"failed\",\"background\":false,\"error\":{{\"code\":\"server_error\",\"message\":{}}},\"usage\":null,\"user\":null,\"metadata\":{{}}}}}}\n\n",
                sent + 1,
                ctx.id("resp_", 0, Alphabet::Hex, 48),
                ctx.created,
                Json(RESPONSES_ERROR_MESSAGE)
            );
            ev.end();
        }
    }
    ev.freeze()
}
