//! Anthropic Messages wire types. Incoming types borrow from the body; outgoing types borrow
//! from the canonical form.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::translate::util::{raw_tagged, StrOr};

pub(crate) use super::search::{search_query, CitationIn, SearchResultBlock};

type Str<'a> = Cow<'a, str>;

// ---------------------------------------------------------------- requests (client side)

#[derive(Deserialize)]
pub(crate) struct MessagesRequest<'a> {
    #[serde(borrow)]
    pub messages: Vec<MessageIn<'a>>,
    #[serde(borrow, default)]
    pub system: StrOr<'a, Block<'a>>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    #[serde(borrow, default)]
    pub stop_sequences: Vec<Str<'a>>,
    #[serde(borrow, default)]
    pub tools: Vec<ToolIn<'a>>,
    #[serde(borrow)]
    pub tool_choice: Option<ToolChoiceIn<'a>>,
    #[serde(borrow)]
    pub thinking: Option<ThinkingIn<'a>>,
    #[serde(borrow)]
    pub metadata: Option<MetadataIn<'a>>,
    #[serde(borrow)]
    pub output_config: Option<OutputConfigIn<'a>>,
    #[serde(borrow)]
    pub service_tier: Option<Str<'a>>,
    #[serde(borrow)]
    pub container: Option<&'a RawValue>,
    #[serde(borrow)]
    pub mcp_servers: Option<&'a RawValue>,
    #[serde(borrow)]
    pub context_management: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct MessageIn<'a> {
    #[serde(borrow)]
    pub role: Str<'a>,
    #[serde(borrow)]
    pub content: StrOr<'a, Block<'a>>,
}

raw_tagged! {
    /// A content block of a request message, a tool result or a response.
    pub(crate) enum Block<'a> by "type" {
        Some("text") => Text(TextBlock<'a>),
        Some("image") => Image(MediaBlock<'a>),
        Some("document") => Document(MediaBlock<'a>),
        Some("tool_use") => ToolUse(ToolUseBlock<'a>),
        Some("tool_result") => ToolResult(ToolResultBlock<'a>),
        Some("thinking") => Thinking(ThinkingBlock<'a>),
        Some("redacted_thinking") => RedactedThinking(RedactedBlock<'a>),
        Some("server_tool_use") => ServerToolUse(ToolUseBlock<'a>),
        Some("web_search_tool_result") => SearchResult(SearchResultBlock<'a>),
    }
}

#[derive(Deserialize)]
pub(crate) struct TextBlock<'a> {
    #[serde(borrow)]
    pub text: Str<'a>,
    #[serde(borrow)]
    pub cache_control: Option<&'a RawValue>,
    /// Pages the text cites (web search results; document citations have no URL).
    #[serde(borrow, default)]
    pub citations: Vec<CitationIn<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct MediaBlock<'a> {
    #[serde(borrow)]
    pub source: SourceIn<'a>,
    #[serde(borrow)]
    pub cache_control: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct SourceIn<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub media_type: Option<Str<'a>>,
    #[serde(borrow)]
    pub data: Option<Str<'a>>,
    #[serde(borrow)]
    pub url: Option<Str<'a>>,
    #[serde(borrow)]
    pub file_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ToolUseBlock<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct ToolResultBlock<'a> {
    #[serde(borrow)]
    pub tool_use_id: Str<'a>,
    #[serde(borrow, default)]
    pub content: StrOr<'a, Block<'a>>,
    #[serde(default)]
    pub is_error: bool,
}

#[derive(Deserialize)]
pub(crate) struct ThinkingBlock<'a> {
    #[serde(borrow)]
    pub thinking: Str<'a>,
    #[serde(borrow)]
    pub signature: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct RedactedBlock<'a> {
    #[serde(borrow)]
    pub data: Str<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ToolIn<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub description: Option<Str<'a>>,
    #[serde(borrow)]
    pub input_schema: Option<&'a RawValue>,
    #[serde(borrow)]
    pub cache_control: Option<&'a RawValue>,
    /// Loaded on demand by Anthropic's tool search; no other provider has the notion.
    pub defer_loading: Option<bool>,
}

#[derive(Deserialize)]
pub(crate) struct ToolChoiceIn<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    pub disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
pub(crate) struct ThinkingIn<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    pub budget_tokens: Option<u32>,
}

#[derive(Deserialize)]
pub(crate) struct MetadataIn<'a> {
    #[serde(borrow)]
    pub user_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct OutputConfigIn<'a> {
    #[serde(borrow)]
    pub format: Option<OutputFormatIn<'a>>,
    #[serde(borrow)]
    pub effort: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct OutputFormatIn<'a> {
    #[serde(borrow)]
    pub schema: Option<&'a RawValue>,
}

// ---------------------------------------------------------------- requests (provider side)

#[derive(Serialize)]
pub(crate) struct MessagesRequestOut<'a> {
    pub model: &'a str,
    pub max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemOut<'a>>,
    pub messages: Vec<MessageOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub stop_sequences: &'a [Str<'a>],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<AnyToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfigOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataOut<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum SystemOut<'a> {
    Text(&'a str),
    Blocks(Vec<BlockOut<'a>>),
}

#[derive(Serialize)]
pub(crate) struct MessageOut<'a> {
    pub role: &'static str,
    pub content: Vec<BlockOut<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockOut<'a> {
    Text {
        text: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    Image {
        source: SourceOut<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    Document {
        source: SourceOut<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: Cow<'a, RawValue>,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        content: ToolResultContentOut<'a>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum ToolResultContentOut<'a> {
    Text(&'a str),
    Blocks(Vec<BlockOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum SourceOut<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// A client tool, or Anthropic's web search server tool.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum AnyToolOut<'a> {
    Function(ToolOut<'a>),
    WebSearch(WebSearchToolOut<'a>),
}

#[derive(Serialize)]
pub(crate) struct WebSearchToolOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: &'static str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub allowed_domains: &'a [Str<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_location: Option<LocationOut<'a>>,
}

/// `user_location` of Anthropic's web search tool (and of OpenAI's, whose shape it shares).
#[derive(Serialize)]
pub(crate) struct LocationOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct ToolOut<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub input_schema: Cow<'a, RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<&'a RawValue>,
}

#[derive(Serialize)]
pub(crate) struct ToolChoiceOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_parallel_tool_use: Option<bool>,
}

#[derive(Serialize)]
pub(crate) struct ThinkingOut {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u32>,
}

#[derive(Serialize)]
pub(crate) struct OutputConfigOut<'a> {
    pub format: OutputFormatOut<'a>,
}

#[derive(Serialize)]
pub(crate) struct OutputFormatOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema: Cow<'a, RawValue>,
}

#[derive(Serialize)]
pub(crate) struct MetadataOut<'a> {
    pub user_id: &'a str,
}

// ---------------------------------------------------------------- responses

#[derive(Deserialize)]
pub(crate) struct MessageResponse<'a> {
    #[serde(borrow)]
    pub id: Option<Str<'a>>,
    #[serde(borrow)]
    pub model: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub content: Vec<Block<'a>>,
    #[serde(borrow)]
    pub stop_reason: Option<Str<'a>>,
    #[serde(borrow)]
    pub stop_sequence: Option<Str<'a>>,
    #[serde(default)]
    pub usage: UsageIn,
}

/// Anthropic usage; `input_tokens` EXCLUDES cache reads and writes (§5.1). In
/// `message_delta` every field is optional and cumulative.
#[derive(Deserialize, Default, Clone, Copy, Debug)]
pub(crate) struct UsageIn {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub output_tokens_details: Option<OutputDetails>,
}

impl UsageIn {
    /// Takes the counters `newer` reports: `message_delta` repeats only the ones that
    /// changed, cumulatively (TRANSLATION.md §6.3).
    pub(crate) fn merge(&mut self, newer: &UsageIn) {
        let take = |old: &mut Option<u64>, new: Option<u64>| {
            if new.is_some() {
                *old = new;
            }
        };
        take(&mut self.input_tokens, newer.input_tokens);
        take(&mut self.output_tokens, newer.output_tokens);
        take(
            &mut self.cache_read_input_tokens,
            newer.cache_read_input_tokens,
        );
        take(
            &mut self.cache_creation_input_tokens,
            newer.cache_creation_input_tokens,
        );
        if newer.output_tokens_details.is_some() {
            self.output_tokens_details = newer.output_tokens_details;
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy, Debug)]
pub(crate) struct OutputDetails {
    pub thinking_tokens: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct MessageResponseOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: Vec<ResponseBlockOut<'a>>,
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<&'a str>,
    pub usage: UsageOut,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ResponseBlockOut<'a> {
    Text {
        text: Cow<'a, str>,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: Cow<'a, RawValue>,
    },
}

#[derive(Serialize, Default, Clone, Copy)]
pub(crate) struct UsageOut {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

// ---------------------------------------------------------------- stream events

#[derive(Deserialize)]
pub(crate) struct MessageStart<'a> {
    #[serde(borrow)]
    pub message: MessageResponse<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ContentBlockStart<'a> {
    pub index: u32,
    #[serde(borrow)]
    pub content_block: Block<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ContentBlockDelta<'a> {
    pub index: u32,
    #[serde(borrow)]
    pub delta: DeltaIn<'a>,
}

/// The union of the delta kinds, read in one pass (text_delta, input_json_delta,
/// thinking_delta, signature_delta; others are ignored).
#[derive(Deserialize)]
pub(crate) struct DeltaIn<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub text: Option<Str<'a>>,
    #[serde(borrow)]
    pub partial_json: Option<Str<'a>>,
    #[serde(borrow)]
    pub thinking: Option<Str<'a>>,
    #[serde(borrow)]
    pub signature: Option<Str<'a>>,
    /// `citations_delta`: a page the current text block cites.
    #[serde(borrow, default)]
    pub citation: Option<CitationIn<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct MessageDelta<'a> {
    #[serde(borrow)]
    pub delta: StopDelta<'a>,
    #[serde(default)]
    pub usage: UsageIn,
}

#[derive(Deserialize)]
pub(crate) struct StopDelta<'a> {
    #[serde(borrow)]
    pub stop_reason: Option<Str<'a>>,
    #[serde(borrow)]
    pub stop_sequence: Option<Str<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum EventOut<'a> {
    MessageStart {
        message: MessageStartOut<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: BlockStartOut<'a>,
    },
    /// Written by `delta::write` without serde; the variant remains as the reference its
    /// test compares with.
    #[cfg(test)]
    ContentBlockDelta {
        index: u32,
        delta: DeltaOut<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: StopOut<'a>,
        usage: UsageOut,
    },
    MessageStop,
    Error {
        error: ErrorOut<'a>,
    },
}

impl EventOut<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            EventOut::MessageStart { .. } => "message_start",
            EventOut::ContentBlockStart { .. } => "content_block_start",
            #[cfg(test)]
            EventOut::ContentBlockDelta { .. } => "content_block_delta",
            EventOut::ContentBlockStop { .. } => "content_block_stop",
            EventOut::MessageDelta { .. } => "message_delta",
            EventOut::MessageStop => "message_stop",
            EventOut::Error { .. } => "error",
        }
    }
}

#[derive(Serialize)]
pub(crate) struct MessageStartOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: [(); 0],
    pub stop_reason: Option<()>,
    pub stop_sequence: Option<()>,
    pub usage: UsageOut,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockStartOut<'a> {
    Text {
        text: &'static str,
    },
    Thinking {
        thinking: &'static str,
        signature: &'static str,
    },
    RedactedThinking {
        data: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

#[derive(Serialize)]
pub(crate) struct Empty {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum DeltaOut<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
}

#[derive(Serialize)]
pub(crate) struct StopOut<'a> {
    pub stop_reason: &'static str,
    pub stop_sequence: Option<&'a str>,
}

// ---------------------------------------------------------------- errors

#[derive(Deserialize)]
pub(crate) struct ErrorEnvelope<'a> {
    #[serde(borrow)]
    pub error: ErrorIn<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ErrorIn<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub message: Option<Str<'a>>,
}

#[derive(Serialize)]
pub(crate) struct ErrorEnvelopeOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub error: ErrorOut<'a>,
}

#[derive(Serialize)]
pub(crate) struct ErrorOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: &'a str,
}
