//! The recorded fixtures, embedded at build time (see `build.rs`).

use crate::provider::Provider;
use bytes::Bytes;
use http::StatusCode;

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

/// An embedded fixture (index into the sorted table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fixture(usize);

impl Fixture {
    pub(crate) fn find(path: &str) -> Option<Fixture> {
        FIXTURES
            .binary_search_by(|(p, _)| (*p).cmp(path))
            .ok()
            .map(Fixture)
    }

    pub(crate) fn path(self) -> &'static str {
        FIXTURES[self.0].0
    }

    pub(crate) fn bytes(self) -> &'static [u8] {
        FIXTURES[self.0].1
    }

    fn file_name(self) -> &'static str {
        let p = self.path();
        p.rsplit('/').next().unwrap_or(p)
    }

    pub(crate) fn is_sse(self) -> bool {
        self.path().ends_with(".sse")
    }

    /// The status encoded in recorded error fixtures' names (`error_529_overloaded.json`).
    pub(crate) fn status(self) -> Option<StatusCode> {
        let rest = self.file_name().strip_prefix("error_")?;
        let code = rest.get(..3)?;
        code.parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
    }

    /// The dialect the recording belongs to (from its directory).
    pub(crate) fn provider(self) -> Provider {
        match self.path().split('/').next().unwrap_or("") {
            "anthropic" => Provider::Anthropic,
            "gemini" => Provider::Gemini,
            "azure" => Provider::Azure,
            "openai_responses" => Provider::Responses,
            _ => Provider::OpenAi,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        if self.is_sse() {
            self.provider().sse_type()
        } else {
            self.provider().json_type()
        }
    }

    /// The body cut into SSE events: each event ends after its blank line (`\n\n` or
    /// `\r\n\r\n`, whichever the recording uses). Bytes after the last blank line (Gemini's
    /// bare JSON error object) are one more event; trailing whitespace stays with the last
    /// event so that replay remains byte-exact without a whitespace-only "event".
    pub(crate) fn events(self) -> Vec<Bytes> {
        let all = Bytes::from_static(self.bytes());
        if !self.is_sse() {
            return vec![all];
        }
        let b = self.bytes();
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\n' {
                let end = if b.get(i + 1) == Some(&b'\n') {
                    Some(i + 2)
                } else if b.get(i + 1..i + 3) == Some(b"\r\n") {
                    Some(i + 3)
                } else {
                    None
                };
                if let Some(end) = end {
                    out.push(all.slice(start..end));
                    start = end;
                    i = end;
                    continue;
                }
            }
            i += 1;
        }
        if start < b.len() {
            let rest = all.slice(start..);
            match out.last_mut() {
                Some(last) if rest.iter().all(u8::is_ascii_whitespace) => {
                    *last = all.slice(b.len() - last.len() - rest.len()..)
                }
                _ => out.push(rest),
            }
        }
        out
    }
}

/// Looks a fixture up by full path (`anthropic/messages_stream_thinking.sse`) or by name inside
/// the provider's directory (`error_529_overloaded`, with or without `.json`/`.sse`).
pub(crate) fn resolve(name: &str, provider_dir: &str) -> Option<Fixture> {
    let name = name
        .trim_start_matches('/')
        .trim_start_matches("tests/fixtures/");
    Fixture::find(name)
        .or_else(|| Fixture::find(&format!("{provider_dir}/{name}")))
        .or_else(|| Fixture::find(&format!("{provider_dir}/{name}.json")))
        .or_else(|| Fixture::find(&format!("{provider_dir}/{name}.sse")))
}

/// The recorded error body a provider sends for `status`, when we have one. Where several
/// recordings share a status, the most generic one is the default (the others remain
/// reachable with `x-mock-error`).
pub(crate) fn default_error(provider: Provider, status: u16) -> Option<Fixture> {
    const TABLE: &[(Provider, u16, &str)] = &[
        (
            Provider::OpenAi,
            400,
            "openai/error_400_unsupported_parameter.json",
        ),
        (
            Provider::OpenAi,
            401,
            "openai/error_401_invalid_api_key.json",
        ),
        (
            Provider::OpenAi,
            404,
            "openai/error_404_model_not_found.json",
        ),
        (
            Provider::OpenAi,
            429,
            "openai/error_429_rate_limit_exceeded.json",
        ),
        (Provider::OpenAi, 500, "openai/error_500_server_error.json"),
        (Provider::Azure, 400, "azure/error_400_content_filter.json"),
        (Provider::Azure, 401, "azure/error_401_access_denied.json"),
        (
            Provider::Azure,
            404,
            "azure/error_404_deployment_not_found.json",
        ),
        (
            Provider::Responses,
            400,
            "openai_responses/error_400_unsupported_temperature.json",
        ),
        (
            Provider::Responses,
            401,
            "openai_responses/error_401_invalid_api_key.json",
        ),
        (
            Provider::Anthropic,
            400,
            "anthropic/error_400_invalid_request.json",
        ),
        (
            Provider::Anthropic,
            401,
            "anthropic/error_401_authentication.json",
        ),
        (
            Provider::Anthropic,
            404,
            "anthropic/error_404_not_found.json",
        ),
        (
            Provider::Anthropic,
            429,
            "anthropic/error_429_rate_limit.json",
        ),
        (
            Provider::Anthropic,
            500,
            "anthropic/error_500_api_error.json",
        ),
        (
            Provider::Anthropic,
            529,
            "anthropic/error_529_overloaded.json",
        ),
        (
            Provider::Gemini,
            400,
            "gemini/error_400_function_response_count.json",
        ),
        (
            Provider::Gemini,
            403,
            "gemini/error_403_permission_denied_vertex.json",
        ),
        (
            Provider::Gemini,
            404,
            "gemini/error_404_model_not_found.json",
        ),
        (
            Provider::Gemini,
            429,
            "gemini/error_429_resource_exhausted.json",
        ),
        (Provider::Gemini, 500, "gemini/error_500_internal.json"),
        (Provider::Gemini, 503, "gemini/error_503_unavailable.json"),
    ];
    let lookup = |p: Provider| {
        TABLE
            .iter()
            .find(|(tp, ts, _)| *tp == p && *ts == status)
            .and_then(|(_, _, path)| Fixture::find(path))
    };
    lookup(provider).or_else(|| match provider {
        // Azure and the Responses API use the Chat Completions error envelope for these.
        Provider::Azure | Provider::Responses => lookup(Provider::OpenAi),
        _ => None,
    })
}

/// Every embedded fixture path (relative to `tests/fixtures`), sorted.
pub fn fixture_paths() -> impl Iterator<Item = &'static str> {
    FIXTURES.iter().map(|(p, _)| *p)
}

/// The bytes of an embedded fixture, e.g. to compare a replay byte for byte.
pub fn fixture_bytes(path: &str) -> Option<&'static [u8]> {
    Fixture::find(path).map(Fixture::bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn table_is_sorted_and_complete() {
        assert!(FIXTURES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(Fixture::find("anthropic/messages_stream_plain.sse").is_some());
        assert!(FIXTURES
            .iter()
            .all(|(p, _)| !p.contains("/requests/") && !p.ends_with(".source.txt")));
    }

    #[test]
    fn every_default_error_exists() {
        for p in [
            Provider::OpenAi,
            Provider::Azure,
            Provider::Responses,
            Provider::Anthropic,
            Provider::Gemini,
        ] {
            for s in [400, 401, 403, 404, 429, 500, 503, 529] {
                if let Some(f) = default_error(p, s) {
                    assert_eq!(f.status().map(|c| c.as_u16()), Some(s), "{}", f.path());
                }
            }
        }
        assert_eq!(
            default_error(Provider::Anthropic, 529).unwrap().path(),
            "anthropic/error_529_overloaded.json"
        );
    }

    #[test]
    fn events_reassemble_byte_exact() {
        for (path, bytes) in FIXTURES {
            let f = Fixture::find(path).unwrap();
            let joined: Vec<u8> = f.events().iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(&joined[..], *bytes, "{path}");
        }
        let gemini = Fixture::find("gemini/stream_generate_content.sse")
            .unwrap()
            .events();
        assert_eq!(gemini.len(), 3);
        assert!(gemini.iter().all(|e| e.ends_with(b"\r\n\r\n")));
        let mid = Fixture::find("gemini/stream_error_mid_stream.sse")
            .unwrap()
            .events();
        assert_eq!(mid.len(), 3);
        assert!(mid[2].starts_with(b"{"));
    }
}
