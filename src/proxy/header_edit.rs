//! Edits of the response headers sira builds, at the cost of a `HeaderMap` operation (the
//! requests to providers are `HeaderMap`s until they are written: `exchange::RequestWire`).
//!
//! `pingora_http`'s `insert_header` and `append_header` keep an optional map of the names'
//! original case, and to feed it they turn every `HeaderName` into bytes and parse it back:
//! some 500 instructions per header, and a small JSON request made 33 such edits (a tenth
//! of sira's instructions per request in callgrind). The headers sira builds keep no case
//! (HTTP/1 names are case-insensitive, and the standard ones go out titled), so their maps
//! are built and edited as `http` parts: taken out of the header, edited, put back, which
//! moves a few hundred bytes and parses nothing.

use http::header::{HeaderName, HeaderValue, MaxSizeReached};
use http::{HeaderMap, StatusCode};
use pingora_http::ResponseHeader;

use crate::error::GatewayError;

/// A `HeaderMap` holds at most 32,768 entries. sira's maps are built from bounded ones
/// (`server.max_headers`, Pingora's limit on a provider's header), so this is never seen;
/// it is an error rather than `HeaderMap::insert`'s panic all the same.
fn too_many(_: MaxSizeReached) -> GatewayError {
    GatewayError::Internal("a header has too many fields".into())
}

/// Sets `name` to `value` in `headers`, replacing what it held.
pub fn set(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: HeaderValue,
) -> Result<(), GatewayError> {
    headers.try_insert(name, value).map(drop).map_err(too_many)
}

/// Adds `value` to the values of `name` in `headers`.
pub fn append(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: HeaderValue,
) -> Result<(), GatewayError> {
    headers.try_append(name, value).map(drop).map_err(too_many)
}

/// A response header of `status` with `headers`, keeping no case.
pub fn response(status: StatusCode, headers: HeaderMap) -> ResponseHeader {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers;
    ResponseHeader::from(parts)
}

/// Runs `edit` on the fields of `resp`. A case map, if `resp` had one, is dropped (its names
/// then go out as the standard spelling, lower case otherwise); sira sets no reason phrase.
pub fn edit_response<R>(resp: &mut ResponseHeader, edit: impl FnOnce(&mut HeaderMap) -> R) -> R {
    let placeholder = response(StatusCode::OK, HeaderMap::new());
    let mut parts = http::response::Parts::from(std::mem::replace(resp, placeholder));
    let out = edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn wire(resp: &ResponseHeader) -> Vec<u8> {
        let mut out = Vec::new();
        resp.header_to_h1_wire(&mut out);
        out
    }

    #[test]
    fn an_edited_header_goes_out_as_one_built_by_pingora() {
        let x_sira = HeaderName::from_static("x-sira-model");
        let mut pingora = ResponseHeader::build_no_case(200, None).unwrap();
        pingora
            .append_header(header::CONTENT_TYPE, "application/json")
            .unwrap();
        pingora.insert_header(x_sira.clone(), "gpt-4o").unwrap();
        pingora.insert_header(header::CONTENT_LENGTH, 12).unwrap();

        let mut headers = HeaderMap::new();
        headers.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut ours = response(StatusCode::OK, headers);
        edit_response(&mut ours, |h| {
            h.try_insert(x_sira, HeaderValue::from_static("gpt-4o"))?;
            h.try_insert(header::CONTENT_LENGTH, HeaderValue::from(12))
        })
        .unwrap();
        assert_eq!(ours.status, 200);
        assert_eq!(wire(&ours), wire(&pingora));
        assert_eq!(
            String::from_utf8(wire(&ours)).unwrap(),
            "Content-Type: application/json\r\nx-sira-model: gpt-4o\r\nContent-Length: 12\r\n"
        );
    }

    #[test]
    fn a_header_that_kept_case_loses_only_the_case() {
        let mut resp = ResponseHeader::build(404, None).unwrap();
        resp.append_header("X-Custom", "1").unwrap();
        edit_response(&mut resp, |h| {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0))
        });
        assert_eq!(resp.status, 404);
        assert_eq!(
            String::from_utf8(wire(&resp)).unwrap(),
            "x-custom: 1\r\nContent-Length: 0\r\n"
        );
    }
}
