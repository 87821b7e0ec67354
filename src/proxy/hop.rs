//! Which headers cross the proxy (RFC 9110 §7.6.1): hop-by-hop fields, those named in
//! `Connection`, and framing stay on their side; client credentials never go upstream and
//! provider cookies never reach the client.

use http::{header, HeaderMap, HeaderName, HeaderValue};
use pingora_http::ResponseHeader;

use super::header_edit;
use super::modules::X_REQUEST_ID;
use crate::error::GatewayError;

/// Fields about one connection and how a message is framed on it (RFC 9110 §7.6.1, RFC
/// 9112 §6): each side's are its own, never relayed; sira writes the framing it sends. A
/// `match` on the name compiles to a length switch and a compare: cheaper than scanning a
/// list for every header of every request.
pub fn is_connection_level(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

/// Client headers never forwarded: the connection's, and the client's credentials and
/// wishes sira answers itself (the provider gets the provider key from the config, never
/// the client's).
fn skip_request_header(name: &HeaderName) -> bool {
    is_connection_level(name)
        || matches!(
            name.as_str(),
            "proxy-authorization"
                | "host"
                | "expect"
                | "accept-encoding"
                | "authorization"
                | "x-api-key"
                | "api-key"
                | "x-goog-api-key"
                | "cookie"
                | "x-sira-route"
                // They choose the account or project a request is billed to: the client's
                // never go upstream (a provider's `headers:` may set them).
                | "openai-organization"
                | "openai-project"
                | "x-goog-user-project"
        )
}

/// Response headers never relayed: the connection's, and provider cookies (a provider's
/// session cookie is not the client's business). The provider's `x-request-id` is renamed,
/// not dropped.
fn skip_response_header(name: &HeaderName) -> bool {
    is_connection_level(name) || matches!(name.as_str(), "set-cookie" | "alt-svc")
}

const X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// The fields an upstream request starts from: the client's end-to-end headers.
pub fn upstream_request(client: &HeaderMap) -> Result<HeaderMap, GatewayError> {
    let mut headers = HeaderMap::with_capacity(client.len() + 6);
    let mut connection = false;
    for (name, value) in client {
        if *name == header::CONNECTION {
            connection = true;
        } else if !skip_request_header(name) {
            header_edit::append(&mut headers, name.clone(), value.clone())?;
        }
    }
    if connection {
        drop_connection_listed(&mut headers, client);
    }
    Ok(headers)
}

/// `value`, marked as one no later response repeats (a request id, a duration): HTTP/2 sends
/// it as a literal never indexed, where HPACK would otherwise add each to the connection's
/// table only to evict it unused (HTTP/1 ignores the mark).
pub fn unique(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// The client's response header from the provider's: its end-to-end headers, with the
/// provider's request id kept under another name (the client's `x-request-id` is sira's).
pub fn client_response(upstream: &ResponseHeader) -> Result<ResponseHeader, GatewayError> {
    let mut headers = HeaderMap::with_capacity(upstream.headers.len() + 6);
    let mut connection = false;
    for (name, value) in &upstream.headers {
        if *name == header::CONNECTION {
            connection = true;
        } else if *name == X_REQUEST_ID {
            header_edit::append(&mut headers, X_UPSTREAM_REQUEST_ID, unique(value.clone()))?;
        } else if !skip_response_header(name) {
            header_edit::append(&mut headers, name.clone(), value.clone())?;
        }
    }
    if connection {
        drop_connection_listed(&mut headers, &upstream.headers);
    }
    Ok(header_edit::response(upstream.status, headers))
}

/// Removes from `headers` the fields that `from`'s `Connection` lists: hop-by-hop too.
fn drop_connection_listed(headers: &mut HeaderMap, from: &HeaderMap) {
    for named in from
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(connection_tokens)
    {
        headers.remove(&named);
    }
}

/// Header names a `Connection` value lists besides `close` and `keep-alive`: hop-by-hop
/// too. Usually none, and then nothing is allocated.
fn connection_tokens(value: &HeaderValue) -> Vec<HeaderName> {
    let mut named = Vec::new();
    for token in value.as_bytes().split(|b| *b == b',') {
        let token = token.trim_ascii();
        if token.is_empty()
            || token.eq_ignore_ascii_case(b"close")
            || token.eq_ignore_ascii_case(b"keep-alive")
        {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token) {
            named.push(name);
        }
    }
    named
}

/// Whether a response header says the body is an SSE stream.
pub fn is_event_stream(value: Option<&HeaderValue>) -> bool {
    value.is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_credentials_stay_behind() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer sk-client"),
            ("x-api-key", "sk-client"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("anthropic-beta", "tools"),
            ("user-agent", "sdk"),
            ("accept-encoding", "gzip, br"),
        ] {
            client.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let headers = upstream_request(&client).unwrap();
        let mut names: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        // The client's codings stay behind (the provider module asks for identity).
        assert_eq!(names, ["anthropic-beta", "user-agent"]);
    }

    #[test]
    fn the_providers_request_id_is_renamed() {
        let mut up = ResponseHeader::build(200, None).unwrap();
        up.append_header("x-request-id", "req_provider").unwrap();
        up.append_header("set-cookie", "session=1").unwrap();
        up.append_header("openai-processing-ms", "12").unwrap();
        let out = client_response(&up).unwrap();
        assert_eq!(out.headers["x-upstream-request-id"], "req_provider");
        assert!(out.headers.get("x-request-id").is_none());
        assert!(out.headers.get("set-cookie").is_none());
        assert_eq!(out.headers["openai-processing-ms"], "12");
    }
}
