//! The wire dialects the mock speaks, and what differs between them outside the bodies.

/// A provider dialect. Azure is separate from OpenAI because its bodies differ
/// (`prompt_filter_results`, a first stream chunk with `choices: []`, other error envelopes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    OpenAi,
    Azure,
    Responses,
    Anthropic,
    Gemini,
}

impl Provider {
    /// Directory of its recordings under `tests/fixtures/`.
    pub(crate) fn fixture_dir(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
            Provider::Responses => "openai_responses",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
        }
    }

    /// `content-type` of a JSON body, as each provider sends it.
    pub(crate) fn json_type(self) -> &'static str {
        match self {
            Provider::Gemini => "application/json; charset=UTF-8",
            _ => "application/json",
        }
    }

    /// `content-type` of an SSE body (TRANSLATION.md §1: Azure and Gemini omit the charset).
    pub(crate) fn sse_type(self) -> &'static str {
        match self {
            Provider::Azure | Provider::Gemini => "text/event-stream",
            _ => "text/event-stream; charset=utf-8",
        }
    }

    /// Response header carrying the provider's request id, if it sends one (Gemini puts
    /// `responseId` in the body instead).
    pub(crate) fn request_id_header(self) -> Option<&'static str> {
        match self {
            Provider::OpenAi | Provider::Azure | Provider::Responses => Some("x-request-id"),
            Provider::Anthropic => Some("request-id"),
            Provider::Gemini => None,
        }
    }

    /// Guesses the dialect of an unknown path, so that even a 404 has a plausible shape.
    pub(crate) fn guess(path: &str) -> Provider {
        if path.starts_with("/v1beta/")
            || path.contains(":generateContent")
            || path.contains(":streamGenerateContent")
        {
            Provider::Gemini
        } else if path.starts_with("/v1/messages") || path.starts_with("/v1/complete") {
            Provider::Anthropic
        } else if path.starts_with("/openai/") {
            Provider::Azure
        } else {
            Provider::OpenAi
        }
    }
}
