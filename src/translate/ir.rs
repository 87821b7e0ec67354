//! The canonical representation every format is translated through.
//!
//! Requests go client → [`Request`] → provider, non-streaming responses provider →
//! [`Response`] → client, and streams provider → [`Ev`] events → client emitter. Everything
//! borrows from the input body where it can; only what a format has to rewrite is owned.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::usage::Usage;

pub(crate) type Str<'a> = Cow<'a, str>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    System,
    User,
    Assistant,
}

/// What targets with a single top-level system prompt (Anthropic, Gemini) do with a system
/// message that appears after the conversation started. §2.2/§10.2 (Chat clients) say
/// concatenate into the system prompt; §11.3 (Responses clients, Codex) says keep it in place as
/// user text so the cached prefix does not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LateSystem {
    Hoist,
    InlineUser,
}

#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub messages: Vec<Message<'a>>,
    pub late_system: LateSystem,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<Str<'a>>,
    pub n: Option<u64>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u64>,
    pub tools: Vec<Tool<'a>>,
    pub tool_choice: Option<ToolChoice<'a>>,
    pub parallel_tool_calls: Option<bool>,
    pub format: Option<OutputFormat<'a>>,
    pub thinking: Option<Thinking>,
    /// The client's name for the thinking setting, for `dropped` and errors.
    pub thinking_param: &'static str,
    /// The client wants reasoning text back (Anthropic thinking, Gemini `includeThoughts`,
    /// Responses `reasoning.summary`).
    pub include_thoughts: bool,
    /// Add prompt-cache breakpoints for Anthropic (agent clients resending long prefixes,
    /// §11.15).
    pub auto_cache: bool,
    pub user: Option<Str<'a>>,
    /// The client offered its provider's hosted web search (Responses `web_search`, Chat
    /// `web_search_options`): a provider with its own search runs it when the model entry
    /// allows (`RequestOptions::web_search`), otherwise it is dropped and listed.
    pub web_search: Option<WebSearch<'a>>,
    pub openai: OpenAiExtras<'a>,
    /// Hint parameters the client sent that no target can use (already decided at parse time).
    pub dropped: Vec<&'static str>,
}

impl Default for Request<'_> {
    fn default() -> Self {
        Request {
            messages: Vec::new(),
            late_system: LateSystem::Hoist,
            max_tokens: None,
            temperature: None,
            top_p: None,
            top_k: None,
            stop: Vec::new(),
            n: None,
            seed: None,
            presence_penalty: None,
            frequency_penalty: None,
            logprobs: None,
            top_logprobs: None,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            format: None,
            thinking: None,
            thinking_param: "reasoning_effort",
            include_thoughts: false,
            auto_cache: false,
            user: None,
            web_search: None,
            openai: OpenAiExtras::default(),
            dropped: Vec::new(),
        }
    }
}

/// A hosted web search as the client configured it.
#[derive(Debug, Default)]
pub(crate) struct WebSearch<'a> {
    /// Only these sites (Responses `filters.allowed_domains`).
    pub allowed_domains: Vec<Str<'a>>,
    pub user_location: Option<UserLocation<'a>>,
}

/// An approximate place, for local search results.
#[derive(Debug, Default)]
pub(crate) struct UserLocation<'a> {
    pub city: Option<Str<'a>>,
    pub region: Option<Str<'a>>,
    pub country: Option<Str<'a>>,
    pub timezone: Option<Str<'a>>,
}

/// A web search the provider ran itself (Anthropic's server tool, Gemini's grounding).
#[derive(Debug, Clone)]
pub(crate) struct SearchCall<'a> {
    pub id: Str<'a>,
    pub queries: Vec<Str<'a>>,
    pub sources: Vec<Cited<'a>>,
}

/// A web page the answer's text cites.
#[derive(Debug, Clone)]
pub(crate) struct Cited<'a> {
    pub url: Str<'a>,
    pub title: Option<Str<'a>>,
}

impl<'a> Cited<'a> {
    /// A cited page, if its URL is a web address: a provider's `javascript:` or `data:`
    /// "source" never reaches a client as a link.
    pub fn web(url: Str<'a>, title: Option<Str<'a>>) -> Option<Cited<'a>> {
        let lower = url.get(..8).unwrap_or(&url).to_ascii_lowercase();
        (lower.starts_with("https://") || lower.starts_with("http://"))
            .then_some(Cited { url, title })
    }

    pub fn into_owned(self) -> Cited<'static> {
        Cited {
            url: Cow::Owned(self.url.into_owned()),
            title: self.title.map(|t| Cow::Owned(t.into_owned())),
        }
    }
}

impl SearchCall<'_> {
    pub fn into_owned(self) -> SearchCall<'static> {
        SearchCall {
            id: Cow::Owned(self.id.into_owned()),
            queries: self
                .queries
                .into_iter()
                .map(|q| Cow::Owned(q.into_owned()))
                .collect(),
            sources: self.sources.into_iter().map(Cited::into_owned).collect(),
        }
    }
}

/// Parameters only OpenAI-family targets (Chat, Responses) understand (§2.1, §11.2).
#[derive(Debug, Default)]
pub(crate) struct OpenAiExtras<'a> {
    pub store: Option<bool>,
    pub metadata: Option<&'a RawValue>,
    pub service_tier: Option<Str<'a>>,
    pub prompt_cache_key: Option<Str<'a>>,
    pub safety_identifier: Option<Str<'a>>,
    pub verbosity: Option<Str<'a>>,
}

impl OpenAiExtras<'_> {
    /// Names of the fields that are set, for `dropped` when the target is not OpenAI.
    pub fn set_fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("store", self.store.is_some()),
            ("metadata", self.metadata.is_some()),
            ("service_tier", self.service_tier.is_some()),
            ("prompt_cache_key", self.prompt_cache_key.is_some()),
            ("safety_identifier", self.safety_identifier.is_some()),
            ("verbosity", self.verbosity.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
    }
}

#[derive(Debug)]
pub(crate) struct Message<'a> {
    pub role: Role,
    pub parts: Vec<Part<'a>>,
}

#[derive(Debug)]
pub(crate) enum Part<'a> {
    Text {
        text: Str<'a>,
        cache_control: Option<&'a RawValue>,
    },
    Media {
        kind: MediaKind,
        source: Source<'a>,
        cache_control: Option<&'a RawValue>,
    },
    ToolCall(ToolCall<'a>),
    ToolResult(ToolResult<'a>),
    Thinking {
        text: Str<'a>,
        signature: Option<Str<'a>>,
    },
    RedactedThinking {
        data: Str<'a>,
    },
}

impl<'a> Part<'a> {
    pub fn text(text: impl Into<Str<'a>>) -> Self {
        Part::Text {
            text: text.into(),
            cache_control: None,
        }
    }

    pub fn is_empty_text(&self) -> bool {
        matches!(self, Part::Text { text, .. } if text.is_empty())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MediaKind {
    Image,
    Document,
    Audio,
}

#[derive(Debug)]
pub(crate) enum Source<'a> {
    Base64 {
        mime: Str<'a>,
        data: Str<'a>,
    },
    Url {
        url: Str<'a>,
        mime: Option<Str<'a>>,
    },
    /// An OpenAI Files API id: only an OpenAI upstream can resolve it.
    FileId(Str<'a>),
}

#[derive(Debug)]
pub(crate) struct ToolCall<'a> {
    pub id: Str<'a>,
    pub name: Str<'a>,
    pub args: Args<'a>,
}

#[derive(Debug)]
pub(crate) struct ToolResult<'a> {
    pub id: Str<'a>,
    /// Gemini answers by name; other formats only carry the id (§2.4).
    pub name: Option<Str<'a>>,
    pub content: Vec<Part<'a>>,
    pub is_error: bool,
}

/// Tool-call arguments: a JSON string for OpenAI, an object everywhere else (§2.4).
#[derive(Debug)]
pub(crate) enum Args<'a> {
    Json(&'a RawValue),
    Text(Str<'a>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum ToolKind {
    #[default]
    Function,
    /// Responses freeform tool (Codex `apply_patch`), exposed as a function with one string
    /// argument `input` (§11.4).
    Custom,
    /// Responses built-in `local_shell` (§11.4).
    LocalShell,
}

#[derive(Debug)]
pub(crate) struct Tool<'a> {
    pub name: Str<'a>,
    pub description: Option<Str<'a>>,
    pub schema: Schema<'a>,
    pub strict: Option<bool>,
    pub cache_control: Option<&'a RawValue>,
}

/// A parameter or output schema.
#[derive(Debug)]
pub(crate) enum Schema<'a> {
    None,
    /// JSON Schema, as OpenAI and Anthropic take it.
    Json(&'a RawValue),
    /// Gemini's OpenAPI subset (`parameters`, `responseSchema`): upper-case types (§2.4).
    Gemini(&'a RawValue),
    /// A schema sira had to build (custom tools, normalised Gemini schemas).
    Owned(Box<RawValue>),
}

#[derive(Debug)]
pub(crate) enum ToolChoice<'a> {
    Auto,
    None,
    Required,
    Named(Str<'a>),
    Allowed { required: bool, names: Vec<Str<'a>> },
}

#[derive(Debug)]
pub(crate) enum OutputFormat<'a> {
    JsonObject,
    JsonSchema {
        name: Option<Str<'a>>,
        description: Option<Str<'a>>,
        schema: Schema<'a>,
        strict: Option<bool>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Thinking {
    Disabled,
    Effort(Effort),
    Budget(u32),
    Adaptive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effort {
    None,
    Minimal,
    Low,
    Medium,
    High,
    XHigh,
    Max,
}

impl Effort {
    pub fn parse(s: &str) -> Option<Effort> {
        Some(match s.to_ascii_lowercase().as_str() {
            "none" => Effort::None,
            "minimal" => Effort::Minimal,
            "low" => Effort::Low,
            "medium" => Effort::Medium,
            "high" => Effort::High,
            "xhigh" => Effort::XHigh,
            "max" => Effort::Max,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Effort::None => "none",
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
            Effort::XHigh => "xhigh",
            Effort::Max => "max",
        }
    }

    /// Heuristic token budget for an effort level (§2.6: low 1024, medium 4096–8192, high
    /// 16384–24576). `0` means "thinking off".
    pub fn budget(self) -> u32 {
        match self {
            Effort::None | Effort::Minimal => 0,
            Effort::Low => 1024,
            Effort::Medium => 8192,
            Effort::High => 16384,
            Effort::XHigh => 24576,
            Effort::Max => 32768,
        }
    }

    /// Inverse of [`Effort::budget`], rounding to the nearest band.
    pub fn from_budget(budget: u32) -> Effort {
        match budget {
            0 => Effort::None,
            1..=2047 => Effort::Low,
            2048..=12287 => Effort::Medium,
            _ => Effort::High,
        }
    }
}

impl Thinking {
    /// The effort this setting corresponds to (for OpenAI-family targets).
    pub fn effort(self) -> Effort {
        match self {
            Thinking::Disabled => Effort::None,
            Thinking::Effort(e) => e,
            Thinking::Budget(b) => Effort::from_budget(b),
            Thinking::Adaptive => Effort::Medium,
        }
    }

    /// The token budget this setting corresponds to (for Anthropic/Gemini targets).
    pub fn budget(self) -> u32 {
        match self {
            Thinking::Disabled => 0,
            Thinking::Effort(e) => e.budget(),
            Thinking::Budget(b) => b,
            Thinking::Adaptive => Effort::Medium.budget(),
        }
    }
}

/// Why generation stopped, in a vocabulary every format maps from and to (§4, §11.8).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) enum Stop<'a> {
    #[default]
    EndTurn,
    Sequence(Option<Str<'a>>),
    MaxTokens,
    ContextWindow,
    ToolUse,
    /// Refusal or content filter (OpenAI `content_filter`, Anthropic `refusal`, Gemini safety).
    Refusal,
    PauseTurn,
}

impl Stop<'_> {
    pub fn into_owned(self) -> Stop<'static> {
        match self {
            Stop::EndTurn => Stop::EndTurn,
            Stop::Sequence(s) => Stop::Sequence(s.map(|s| Cow::Owned(s.into_owned()))),
            Stop::MaxTokens => Stop::MaxTokens,
            Stop::ContextWindow => Stop::ContextWindow,
            Stop::ToolUse => Stop::ToolUse,
            Stop::Refusal => Stop::Refusal,
            Stop::PauseTurn => Stop::PauseTurn,
        }
    }

    /// OpenAI `finish_reason` (§4.2): only the five standard values.
    pub fn openai(&self) -> &'static str {
        match self {
            Stop::EndTurn | Stop::Sequence(_) | Stop::PauseTurn => "stop",
            Stop::MaxTokens | Stop::ContextWindow => "length",
            Stop::ToolUse => "tool_calls",
            Stop::Refusal => "content_filter",
        }
    }

    /// Anthropic `stop_reason` (§4.3).
    pub fn anthropic(&self) -> &'static str {
        match self {
            Stop::EndTurn => "end_turn",
            Stop::Sequence(_) => "stop_sequence",
            Stop::MaxTokens => "max_tokens",
            Stop::ContextWindow => "model_context_window_exceeded",
            Stop::ToolUse => "tool_use",
            Stop::Refusal => "refusal",
            Stop::PauseTurn => "pause_turn",
        }
    }

    /// Gemini `finishReason`: Gemini has no tool-call reason, calls end with `STOP` (§4.4).
    pub fn gemini(&self) -> &'static str {
        match self {
            Stop::EndTurn | Stop::Sequence(_) | Stop::ToolUse | Stop::PauseTurn => "STOP",
            Stop::MaxTokens | Stop::ContextWindow => "MAX_TOKENS",
            Stop::Refusal => "SAFETY",
        }
    }

    /// Responses `incomplete_details.reason`, or `None` for `status:"completed"` (§11.8).
    pub fn responses_incomplete(&self) -> Option<&'static str> {
        match self {
            Stop::MaxTokens | Stop::ContextWindow => Some("max_output_tokens"),
            Stop::Refusal => Some("content_filter"),
            _ => None,
        }
    }

    pub fn from_openai(reason: &str) -> Stop<'static> {
        match reason {
            "length" => Stop::MaxTokens,
            "tool_calls" | "function_call" => Stop::ToolUse,
            "content_filter" => Stop::Refusal,
            _ => Stop::EndTurn,
        }
    }

    pub fn from_anthropic<'a>(reason: &str, sequence: Option<Str<'a>>) -> Stop<'a> {
        match reason {
            "stop_sequence" => Stop::Sequence(sequence),
            "max_tokens" => Stop::MaxTokens,
            "model_context_window_exceeded" => Stop::ContextWindow,
            "tool_use" => Stop::ToolUse,
            "refusal" => Stop::Refusal,
            "pause_turn" => Stop::PauseTurn,
            _ => Stop::EndTurn,
        }
    }

    /// §4.4; the caller applies the "functionCall present → tool use" override.
    pub fn from_gemini(reason: &str) -> Stop<'static> {
        match reason {
            "MAX_TOKENS" => Stop::MaxTokens,
            "SAFETY"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "RECITATION"
            | "IMAGE_RECITATION" => Stop::Refusal,
            _ => Stop::EndTurn,
        }
    }
}

/// A complete (non-streaming) answer.
#[derive(Debug, Default)]
pub(crate) struct Response<'a> {
    pub id: Option<Str<'a>>,
    pub model: Option<Str<'a>>,
    pub created: Option<u64>,
    pub content: Vec<Out<'a>>,
    pub stop: Stop<'a>,
    pub usage: Usage,
}

#[derive(Debug)]
pub(crate) enum Out<'a> {
    Text(Str<'a>),
    Refusal(Str<'a>),
    Thinking {
        text: Str<'a>,
        signature: Option<Str<'a>>,
    },
    RedactedThinking(Str<'a>),
    ToolCall {
        id: Str<'a>,
        name: Str<'a>,
        args: Args<'a>,
    },
    /// A search the provider ran (only Responses clients have an item for it).
    WebSearch(SearchCall<'a>),
    /// The text before it (since the previous citation or search) cites this page.
    Citation(Cited<'a>),
}

impl Response<'_> {
    pub fn has_tool_calls(&self) -> bool {
        self.content
            .iter()
            .any(|c| matches!(c, Out::ToolCall { .. }))
    }
}

/// Canonical error classes (§7.2), mapped to each format's status and type (§7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    InvalidRequest,
    ContextLength,
    Authentication,
    Billing,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Quota,
    Server,
    Overloaded,
    Timeout,
}

impl ErrorKind {
    /// Class of an HTTP status when nothing more specific is known.
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            401 => ErrorKind::Authentication,
            402 => ErrorKind::Billing,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimit,
            503 | 529 => ErrorKind::Overloaded,
            504 => ErrorKind::Timeout,
            s if s >= 500 => ErrorKind::Server,
            _ => ErrorKind::InvalidRequest,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ErrorInfo<'a> {
    pub kind: ErrorKind,
    pub message: Str<'a>,
    /// The upstream's code, kept when the client format has the same vocabulary.
    pub code: Option<Str<'a>>,
    pub param: Option<Str<'a>>,
}

/// One step of a streamed answer, produced by a provider adapter and consumed by a client
/// emitter. Text borrows from the frame being parsed.
#[derive(Debug)]
pub(crate) enum Ev<'a> {
    Start {
        id: Option<Str<'a>>,
        model: Option<Str<'a>>,
    },
    Text(Str<'a>),
    Refusal(Str<'a>),
    Reasoning(Str<'a>),
    ReasoningSignature(Str<'a>),
    RedactedReasoning(Str<'a>),
    /// A tool call begins; `key` is the provider's handle for it (OpenAI tool index, Anthropic
    /// block index, Gemini part counter, Responses output index).
    ToolStart {
        key: u32,
        id: Str<'a>,
        name: Str<'a>,
    },
    ToolArgs {
        key: u32,
        delta: Str<'a>,
    },
    /// The provider ran a web search (complete: query and sources).
    WebSearch(SearchCall<'a>),
    /// The current text block cites this page (Anthropic sends it before the text; Gemini
    /// after the whole answer).
    Citation(Cited<'a>),
    /// The provider closed the current content block.
    BlockEnd,
    /// Cumulative usage so far (replaces earlier values).
    Usage(Usage),
    Stop(Stop<'a>),
    /// The provider's stream ended cleanly.
    Done,
    Error(ErrorInfo<'a>),
}
