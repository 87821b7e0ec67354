//! Format translation between OpenAI Chat, OpenAI Responses, Anthropic Messages and Gemini
//! (TRANSLATION.md is the specification; sections are cited as §n).
//!
//! Everything goes through one canonical form ([`ir`]): a request is parsed from the client
//! format and written in the provider format; a response or stream is parsed from the
//! provider format and written in the client format. Streams are translated incrementally by
//! [`StreamTranslator`], which keeps only per-stream state, never the whole stream.

pub(crate) mod anthropic;
mod count;
mod error;
mod errors;
mod estimate;
pub(crate) mod gemini;
mod history;
mod ir;
pub(crate) mod openai_chat;
pub(crate) mod responses;
mod schema;
mod seal;
mod stream;
mod util;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

pub use count::{count_request, count_response, CountApi};
pub use error::TranslateError;
pub use errors::translate_error;
pub use estimate::estimate_input_tokens;
pub use seal::Seal;
pub use stream::{StreamLimits, StreamTranslator};

use crate::format::Format;
use crate::usage::Usage;

/// What the engine knows about the upstream request being built.
#[derive(Clone, Copy)]
pub struct RequestOptions<'a> {
    /// Upstream model name to write into the body. Ignored when `to == Format::Gemini` (model
    /// is in the URL).
    pub model: &'a str,
    /// Whether the client asked for a stream. For Gemini clients this comes from the URL
    /// method (`:streamGenerateContent`), so the engine passes it; for others it equals the
    /// body's `stream`.
    pub stream: bool,
    /// Anthropic requires `max_tokens`; used when the client sent none.
    pub default_max_tokens: u32,
    /// Chat upstreams: write the output limit as the legacy `max_tokens` rather than
    /// `max_completion_tokens`. OpenAI's reasoning models reject `max_tokens`
    /// (fx openai/error_400_unsupported_parameter), but many OpenAI-compatible servers only
    /// know `max_tokens` (TRANSLATION.md §9).
    pub legacy_max_tokens: bool,
    /// Anthropic upstreams: place cache breakpoints for clients whose format cannot
    /// (`models.<name>.prompt_cache: auto`, the default).
    pub prompt_cache: bool,
    /// A client's hosted web search runs as the provider's own (Anthropic's web search
    /// server tool, Gemini's Google Search grounding) rather than being dropped
    /// (`models.<name>.web_search: native`; off by default: both bill per search, and
    /// Anthropic's must be enabled for the organisation).
    pub web_search: bool,
    /// Seals the reasoning carriers sira issues and checks those a client sends back.
    pub seal: &'a Seal,
}

/// A request body in the provider's format.
pub struct TranslatedRequest {
    pub body: Vec<u8>,
    /// Hint-only parameters dropped because the target has no place for them (the engine
    /// lists them in an `x-sira-dropped-params` response header).
    pub dropped: Vec<&'static str>,
    /// What the response translation needs to know about this request (custom tool kinds,
    /// reasoning options). Pass it to [`translate_response_with`] /
    /// [`StreamTranslator::with_context`]; the default is right when it is not passed.
    pub context: ResponseContext,
}

/// Request facts that shape the translated response but are not in the provider's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseContext {
    /// Responses clients: tools declared as `custom` (freeform); calls to them are re-emitted
    /// as `custom_tool_call` items with the raw `input` text (§11.4).
    pub custom_tools: Vec<String>,
    /// Responses clients: `local_shell` was declared; calls to it become `local_shell_call`.
    pub local_shell: bool,
    /// Responses clients: tools declared inside a `namespace` tool, offered to the provider
    /// under one flat name each: `(provider name, namespace, name)`. Calls come back to the
    /// client under the namespace and name it declared.
    pub namespaced: Vec<(String, String, String)>,
    /// Responses clients: emit reasoning summaries (`reasoning.summary` was requested).
    pub reasoning_summary: bool,
    /// Responses clients: put sira carriers into `encrypted_content` so Anthropic thinking
    /// signatures survive stateless replay (§11.5).
    pub reasoning_carrier: bool,
    /// OpenAI Chat clients: send the final `choices:[]` usage chunk.
    pub include_usage: bool,
    /// Responses clients: the gateway stores this response (`store: true` echoed); its
    /// reasoning is carried in the stored output so a follow-up can replay it.
    pub stored: bool,
    /// Seals the carriers put into the response.
    pub seal: Seal,
    /// Responses clients: the response's id, when the gateway chose it (a stored response
    /// gets one of its own, not one derived from the provider's or the client's).
    pub response_id: Option<String>,
}

impl Default for ResponseContext {
    /// Without request knowledge: emit everything a client may need (usage chunk, summaries,
    /// carriers); no custom tools.
    fn default() -> Self {
        ResponseContext {
            custom_tools: Vec::new(),
            local_shell: false,
            namespaced: Vec::new(),
            reasoning_summary: true,
            reasoning_carrier: true,
            include_usage: true,
            stored: false,
            seal: Seal::default(),
            response_id: None,
        }
    }
}

impl ResponseContext {
    /// The namespace and name a client declared for the tool the provider knows as `name`.
    pub(crate) fn namespace_of(&self, name: &str) -> Option<(&str, &str)> {
        self.namespaced
            .iter()
            .find(|(flat, _, _)| flat == name)
            .map(|(_, ns, original)| (ns.as_str(), original.as_str()))
    }

    pub(crate) fn tool_kind(&self, name: &str) -> ir::ToolKind {
        if self.custom_tools.iter().any(|t| t == name) {
            ir::ToolKind::Custom
        } else if self.local_shell && name == "local_shell" {
            ir::ToolKind::LocalShell
        } else {
            ir::ToolKind::Function
        }
    }
}

/// Translates a client request body into the provider's format.
///
/// A request the target cannot honour without changing its meaning (`n > 1` to Anthropic,
/// `previous_response_id` to a non-Responses upstream, …) is an error naming the field.
pub fn translate_request(
    from: Format,
    to: Format,
    body: &[u8],
    opts: &RequestOptions,
) -> Result<TranslatedRequest, TranslateError> {
    if from == to {
        return identity_request(to, body, opts);
    }
    let (mut req, context) = match from {
        Format::OpenAiChat => openai_chat::request::parse(body)?,
        Format::Anthropic => (anthropic::request::parse(body)?, ResponseContext::default()),
        Format::Gemini => (gemini::request::parse(body)?, ResponseContext::default()),
        Format::OpenAiResponses => responses::request::parse(body, opts.seal)?,
    };
    // Clients of other formats cannot place Anthropic's breakpoints: sira does, unless the
    // operator turned it off for the model.
    req.auto_cache = from != Format::Anthropic && opts.prompt_cache;
    let mut dropped = std::mem::take(&mut req.dropped);
    let body = match to {
        Format::OpenAiChat => openai_chat::request::write(&req, opts, &mut dropped)?,
        Format::Anthropic => anthropic::request::write(&req, opts, &mut dropped)?,
        Format::Gemini => gemini::request::write(&req, opts, &mut dropped)?,
        Format::OpenAiResponses => responses::request_out::write(&req, opts, &mut dropped)?,
    };
    // Each name once, in first-seen order.
    let mut seen = Vec::with_capacity(dropped.len());
    dropped.retain(|name| {
        let new = !seen.contains(name);
        seen.push(*name);
        new
    });
    Ok(TranslatedRequest {
        body,
        dropped,
        context,
    })
}

/// OpenAI sends the usage chunk only with `stream_options.include_usage` (§5.2).
fn chat_wants_usage(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        stream_options: Option<StreamOptions>,
    }
    #[derive(serde::Deserialize)]
    struct StreamOptions {
        include_usage: Option<bool>,
    }
    serde_json::from_slice::<Probe>(body)
        .ok()
        .and_then(|p| p.stream_options)
        .and_then(|o| o.include_usage)
        .unwrap_or(false)
}

/// Same format: the body is kept as is, only the model is rewritten (and Chat streams get
/// `include_usage` so usage can be accounted).
fn identity_request(
    to: Format,
    body: &[u8],
    opts: &RequestOptions,
) -> Result<TranslatedRequest, TranslateError> {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)?;
    if to != Format::Gemini {
        map.insert("model".into(), opts.model.into());
    }
    let context = ResponseContext {
        include_usage: chat_wants_usage(body),
        ..ResponseContext::default()
    };
    if to == Format::OpenAiResponses {
        strip_carriers(&mut map);
    }
    if to == Format::OpenAiChat && opts.stream {
        map.insert(
            "stream_options".into(),
            serde_json::json!({ "include_usage": true }),
        );
    }
    Ok(TranslatedRequest {
        body: serde_json::to_vec(&map)?,
        dropped: Vec::new(),
        context,
    })
}

/// Reasoning sira handed a client on behalf of another provider, replayed to a provider of
/// the client's own format (a conversation that moved from one model to another): OpenAI
/// cannot read sira's carriers, Anthropic and Gemini reject OpenAI's encrypted reasoning as a
/// signature. `None` when the body holds none — a scan for the markers, no parse.
pub fn strip_foreign_reasoning(format: Format, body: &[u8]) -> Option<Vec<u8>> {
    scan_markers(format)
        .iter()
        .find(|m| memchr::memmem::find(body, m).is_some())?;
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    let foreign = |v: Option<&serde_json::Value>| {
        v.and_then(|s| s.as_str()).is_some_and(|s| {
            s.starts_with(util::OPENAI_REASONING_PREFIX)
                || (format == Format::Gemini && s.starts_with(util::ANTHROPIC_SIGNATURE_PREFIX))
        })
    };
    // What the marker scan found may be a user's own text: only a removal rewrites the
    // body (re-serialising it reorders its object keys).
    let mut removed = 0;
    match format {
        Format::OpenAiResponses => {
            let before = map
                .get("input")
                .and_then(|i| i.as_array())
                .map_or(0, Vec::len);
            strip_carriers(&mut map);
            removed = before
                - map
                    .get("input")
                    .and_then(|i| i.as_array())
                    .map_or(0, Vec::len);
        }
        Format::Anthropic => {
            let messages = map.get_mut("messages")?.as_array_mut()?;
            for message in messages.iter_mut() {
                if let Some(blocks) = message.get_mut("content").and_then(|c| c.as_array_mut()) {
                    let before = blocks.len();
                    blocks.retain(|b| !(b["type"] == "thinking" && foreign(b.get("signature"))));
                    removed += before - blocks.len();
                }
            }
            // A turn that held only foreign thinking is gone: providers refuse empty ones.
            messages.retain(|m| m["content"].as_array().is_none_or(|c| !c.is_empty()));
        }
        _ => {
            let contents = map.get_mut("contents")?.as_array_mut()?;
            for content in contents.iter_mut() {
                if let Some(parts) = content.get_mut("parts").and_then(|p| p.as_array_mut()) {
                    let before = parts.len();
                    parts.retain(|p| {
                        !(p["thought"] == true
                            && (foreign(p.get("thoughtSignature"))
                                || foreign(p.get("thought_signature"))))
                    });
                    removed += before - parts.len();
                }
            }
            contents.retain(|c| c["parts"].as_array().is_none_or(|p| !p.is_empty()));
        }
    }
    if removed == 0 {
        return None;
    }
    serde_json::to_vec(&map).ok()
}

/// The prefixes of the reasoning foreign to `format`, each as it opens a JSON string, so the
/// scan allocates nothing.
pub(crate) fn scan_markers(format: Format) -> &'static [&'static [u8]] {
    match format {
        Format::OpenAiResponses => &[b"\"sira1."],
        Format::Anthropic => &[b"\"oai1."],
        Format::Gemini => &[b"\"oai1.", b"\"ant1."],
        Format::OpenAiChat => &[],
    }
}

/// Removes the reasoning items that carry sira's own `encrypted_content`: OpenAI cannot
/// decrypt them and rejects the request (§11.5 "pass-through").
fn strip_carriers(map: &mut serde_json::Map<String, serde_json::Value>) {
    if let Some(serde_json::Value::Array(items)) = map.get_mut("input") {
        items.retain(|item| {
            let carrier = item
                .get("encrypted_content")
                .and_then(|e| e.as_str())
                .is_some_and(|e| e.starts_with(util::CARRIER_PREFIX));
            !(carrier && item.get("type").and_then(|t| t.as_str()) == Some("reasoning"))
        });
    }
}

/// What the response translators need from the engine.
#[derive(Clone, Debug)]
pub struct ResponseOptions {
    /// The model name to report to the client when the provider's body has none (Gemini
    /// reports `modelVersion`).
    pub model: String,
    /// A request id usable to build response ids when the provider's has none (e.g. Gemini
    /// `responseId` missing).
    pub request_id: String,
    /// Unix seconds, for OpenAI's `created`.
    pub created: u64,
}

/// A response body in the client's format, and the usage it reported.
pub struct TranslatedResponse {
    pub body: Vec<u8>,
    pub usage: Usage,
}

/// Translates a complete (non-streaming) provider response into the client's format.
pub fn translate_response(
    from: Format,
    to: Format,
    body: &[u8],
    opts: &ResponseOptions,
) -> Result<TranslatedResponse, TranslateError> {
    translate_response_with(from, to, body, opts, &ResponseContext::default())
}

/// [`translate_response`] with the request context from [`TranslatedRequest::context`].
pub fn translate_response_with(
    from: Format,
    to: Format,
    body: &[u8],
    opts: &ResponseOptions,
    ctx: &ResponseContext,
) -> Result<TranslatedResponse, TranslateError> {
    let resp = match from {
        Format::OpenAiChat => openai_chat::response::parse(body, opts)?,
        Format::Anthropic => anthropic::response::parse(body)?,
        Format::Gemini => gemini::response::parse(body, opts)?,
        Format::OpenAiResponses => responses::response::parse(body)?,
    };
    let usage = resp.usage;
    if from == to {
        return Ok(TranslatedResponse {
            body: body.to_vec(),
            usage,
        });
    }
    let body = match to {
        Format::OpenAiChat => openai_chat::response::write(&resp, opts),
        Format::Anthropic => anthropic::response::write(&resp, opts),
        Format::Gemini => gemini::response::write(&resp, opts),
        Format::OpenAiResponses => responses::response::write(&resp, opts, ctx),
    };
    Ok(TranslatedResponse { body, usage })
}

/// An upstream error turned into the client's error shape and status.
pub struct TranslatedError {
    pub status: u16,
    pub body: Vec<u8>,
}

impl TranslateError {
    /// This request error as a 400 in the client's error shape (a convenience for the
    /// engine; Display is the message and [`TranslateError::param`] the field).
    pub fn to_client_error(&self, client: Format) -> TranslatedError {
        errors::request_error(client, self)
    }
}
