//! OpenAI Responses API wire types (§11). Incoming types borrow from the body.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::translate::util::{raw_tagged, StrOr, StrOrObj};

type Str<'a> = Cow<'a, str>;

// ---------------------------------------------------------------- requests (client side)

#[derive(Deserialize)]
pub(crate) struct ResponsesRequest<'a> {
    #[serde(borrow)]
    pub instructions: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub input: StrOr<'a, InputItem<'a>>,
    pub max_output_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_logprobs: Option<u64>,
    #[serde(borrow, default)]
    pub tools: Vec<ToolIn<'a>>,
    #[serde(borrow)]
    pub tool_choice: Option<StrOrObj<'a, ToolChoiceIn<'a>>>,
    pub parallel_tool_calls: Option<bool>,
    #[serde(borrow)]
    pub reasoning: Option<ReasoningIn<'a>>,
    #[serde(borrow)]
    pub text: Option<TextConfigIn<'a>>,
    #[serde(borrow, default)]
    pub include: Vec<Str<'a>>,
    pub store: Option<bool>,
    #[serde(borrow)]
    pub previous_response_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub conversation: Option<&'a RawValue>,
    pub background: Option<bool>,
    #[serde(borrow)]
    pub prompt: Option<&'a RawValue>,
    #[serde(borrow)]
    pub truncation: Option<Str<'a>>,
    #[serde(borrow)]
    pub prompt_cache_key: Option<Str<'a>>,
    #[serde(borrow)]
    pub safety_identifier: Option<Str<'a>>,
    #[serde(borrow)]
    pub user: Option<Str<'a>>,
    #[serde(borrow)]
    pub metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    pub service_tier: Option<Str<'a>>,
    pub max_tool_calls: Option<u64>,
    #[serde(borrow)]
    pub context_management: Option<&'a RawValue>,
    #[serde(borrow)]
    pub moderation: Option<&'a RawValue>,
}

raw_tagged! {
    /// An input item; an item with a `role` and no `type` is a message (§11.3).
    pub(crate) enum InputItem<'a> by "type" {
        None | Some("message") => Message(MessageItem<'a>),
        Some("function_call") => FunctionCall(FunctionCallItem<'a>),
        Some("function_call_output" | "custom_tool_call_output" | "local_shell_call_output") => CallOutput(CallOutputItem<'a>),
        Some("custom_tool_call") => CustomToolCall(CustomToolCallItem<'a>),
        Some("local_shell_call") => LocalShellCall(LocalShellCallItem<'a>),
        Some("reasoning") => Reasoning(ReasoningItem<'a>),
        Some("item_reference") => ItemReference(ItemReference<'a>),
        Some(
            "web_search_call" | "file_search_call" | "code_interpreter_call" | "image_generation_call"
            | "mcp_call" | "mcp_list_tools" | "mcp_approval_request" | "mcp_approval_response"
            | "computer_call" | "computer_call_output" | "compaction"
            | "tool_search_call" | "tool_search_output"
        ) => Hosted(serde::de::IgnoredAny),
    }
}

#[derive(Deserialize)]
pub(crate) struct MessageItem<'a> {
    #[serde(borrow)]
    pub role: Str<'a>,
    #[serde(borrow, default)]
    pub content: StrOr<'a, ContentPart<'a>>,
}

raw_tagged! {
    pub(crate) enum ContentPart<'a> by "type" {
        Some("input_text" | "output_text" | "summary_text" | "reasoning_text") => Text(TextPart<'a>),
        Some("refusal") => Refusal(RefusalPart<'a>),
        Some("input_image") => Image(ImagePart<'a>),
        Some("input_file") => File(FilePart<'a>),
    }
}

#[derive(Deserialize)]
pub(crate) struct TextPart<'a> {
    #[serde(borrow)]
    pub text: Str<'a>,
}

#[derive(Deserialize)]
pub(crate) struct RefusalPart<'a> {
    #[serde(borrow)]
    pub refusal: Str<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ImagePart<'a> {
    #[serde(borrow)]
    pub image_url: Option<Str<'a>>,
    #[serde(borrow)]
    pub file_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct FilePart<'a> {
    #[serde(borrow)]
    pub file_data: Option<Str<'a>>,
    #[serde(borrow)]
    pub file_url: Option<Str<'a>>,
    #[serde(borrow)]
    pub file_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionCallItem<'a> {
    #[serde(borrow)]
    pub call_id: Str<'a>,
    #[serde(borrow)]
    pub name: Str<'a>,
    /// The `namespace` tool the function belongs to.
    #[serde(borrow)]
    pub namespace: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub arguments: Str<'a>,
}

#[derive(Deserialize)]
pub(crate) struct CallOutputItem<'a> {
    #[serde(borrow)]
    pub call_id: Option<Str<'a>>,
    /// `local_shell_call_output` names its call in `id`; other outputs may carry their own
    /// item id there, which means nothing here (§11.3 rule 4).
    #[serde(borrow)]
    pub id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub output: StrOr<'a, ContentPart<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct CustomToolCallItem<'a> {
    #[serde(borrow)]
    pub call_id: Str<'a>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub namespace: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub input: Str<'a>,
}

#[derive(Deserialize)]
pub(crate) struct LocalShellCallItem<'a> {
    #[serde(borrow)]
    pub call_id: Str<'a>,
    #[serde(borrow)]
    pub action: &'a RawValue,
}

#[derive(Deserialize)]
pub(crate) struct ReasoningItem<'a> {
    #[serde(borrow)]
    pub encrypted_content: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ItemReference<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ToolIn<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub description: Option<Str<'a>>,
    #[serde(borrow)]
    pub parameters: Option<&'a RawValue>,
    pub strict: Option<bool>,
    #[serde(borrow)]
    pub format: Option<CustomFormat<'a>>,
    /// A `namespace` tool's own tools (functions and custom tools).
    #[serde(borrow, default)]
    pub tools: Vec<ToolIn<'a>>,
    /// `web_search`: `false` asks for OpenAI's cached results only (Codex's default).
    pub external_web_access: Option<bool>,
    #[serde(borrow)]
    pub filters: Option<SearchFiltersIn<'a>>,
    #[serde(borrow)]
    pub user_location: Option<LocationIn<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct SearchFiltersIn<'a> {
    #[serde(borrow, default)]
    pub allowed_domains: Vec<Str<'a>>,
}

/// An approximate user location (Responses `web_search.user_location`, Chat
/// `web_search_options.user_location.approximate`).
#[derive(Deserialize)]
pub(crate) struct LocationIn<'a> {
    #[serde(borrow)]
    pub city: Option<Str<'a>>,
    #[serde(borrow)]
    pub region: Option<Str<'a>>,
    #[serde(borrow)]
    pub country: Option<Str<'a>>,
    #[serde(borrow)]
    pub timezone: Option<Str<'a>>,
}

impl<'a> LocationIn<'a> {
    pub fn into_ir(self) -> crate::translate::ir::UserLocation<'a> {
        crate::translate::ir::UserLocation {
            city: self.city,
            region: self.region,
            country: self.country,
            timezone: self.timezone,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CustomFormat<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub syntax: Option<Str<'a>>,
    #[serde(borrow)]
    pub definition: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ToolChoiceIn<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub namespace: Option<Str<'a>>,
    #[serde(borrow)]
    pub mode: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub tools: Vec<NamedTool<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct NamedTool<'a> {
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ReasoningIn<'a> {
    #[serde(borrow)]
    pub effort: Option<Str<'a>>,
    #[serde(borrow)]
    pub summary: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct TextConfigIn<'a> {
    #[serde(borrow)]
    pub format: Option<TextFormatIn<'a>>,
    #[serde(borrow)]
    pub verbosity: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct TextFormatIn<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub description: Option<Str<'a>>,
    #[serde(borrow)]
    pub schema: Option<&'a RawValue>,
    pub strict: Option<bool>,
}

// ---------------------------------------------------------------- requests (provider side)

#[derive(Serialize)]
pub(crate) struct ResponsesRequestOut<'a> {
    pub model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    pub input: Vec<InputItemOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<FunctionToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfigOut<'a>>,
    /// The translator is stateless: never ask OpenAI to store unless the client did.
    pub store: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum InputItemOut<'a> {
    Message {
        role: &'static str,
        content: Vec<ContentPartOut<'a>>,
    },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: Cow<'a, str>,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: String,
    },
    /// OpenAI's own reasoning, carried through another client and given back.
    Reasoning {
        encrypted_content: &'a str,
        summary: Vec<SummaryTextOut<'a>>,
    },
}

#[derive(Serialize)]
pub(crate) struct SummaryTextOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ContentPartOut<'a> {
    InputText {
        text: Cow<'a, str>,
    },
    OutputText {
        text: Cow<'a, str>,
    },
    InputImage {
        image_url: Cow<'a, str>,
    },
    InputFile {
        #[serde(skip_serializing_if = "Option::is_none")]
        file_data: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        file_url: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        file_id: Option<&'a str>,
    },
}

#[derive(Serialize)]
pub(crate) struct FunctionToolOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub parameters: Cow<'a, RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum ToolChoiceOut<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        name: &'a str,
    },
    Allowed {
        #[serde(rename = "type")]
        kind: &'static str,
        mode: &'static str,
        tools: Vec<ToolChoiceOut<'a>>,
    },
}

#[derive(Serialize)]
pub(crate) struct ReasoningOut {
    pub effort: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<&'static str>,
}

#[derive(Serialize)]
pub(crate) struct TextConfigOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormatOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct TextFormatOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Cow<'a, RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

// ---------------------------------------------------------------- responses (provider side)

#[derive(Deserialize)]
pub(crate) struct ResponseIn<'a> {
    #[serde(borrow)]
    pub id: Option<Str<'a>>,
    pub created_at: Option<u64>,
    #[serde(borrow)]
    pub model: Option<Str<'a>>,
    #[serde(borrow)]
    pub status: Option<Str<'a>>,
    #[serde(borrow)]
    pub incomplete_details: Option<IncompleteIn<'a>>,
    #[serde(borrow)]
    pub error: Option<ResponseErrorIn<'a>>,
    #[serde(borrow, default)]
    pub output: Vec<OutputItemIn<'a>>,
    pub usage: Option<UsageIo>,
}

#[derive(Deserialize)]
pub(crate) struct IncompleteIn<'a> {
    #[serde(borrow)]
    pub reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ResponseErrorIn<'a> {
    #[serde(borrow)]
    pub code: Option<Str<'a>>,
    #[serde(borrow)]
    pub message: Option<Str<'a>>,
}

/// An output item; one flat union read in one pass (`type` decides which fields matter).
#[derive(Deserialize)]
pub(crate) struct OutputItemIn<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow, default)]
    pub content: Vec<ContentPart<'a>>,
    #[serde(borrow, default)]
    pub summary: Vec<ContentPart<'a>>,
    #[serde(borrow)]
    pub call_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub arguments: Option<Str<'a>>,
    #[serde(borrow)]
    pub input: Option<Str<'a>>,
    #[serde(borrow)]
    pub action: Option<&'a RawValue>,
    /// A reasoning item's opaque state, which OpenAI wants back on the next turn.
    #[serde(borrow)]
    pub encrypted_content: Option<Str<'a>>,
}

/// Responses usage; cached tokens ⊂ input, reasoning ⊂ output (§11.9).
#[derive(Deserialize, Serialize, Default, Clone, Copy)]
pub(crate) struct UsageIo {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub input_tokens_details: InputDetails,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub output_tokens_details: OutputDetails,
    #[serde(default)]
    pub total_tokens: u64,
}

#[derive(Deserialize, Serialize, Default, Clone, Copy)]
pub(crate) struct InputDetails {
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
}

#[derive(Deserialize, Serialize, Default, Clone, Copy)]
pub(crate) struct OutputDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

// ---------------------------------------------------------------- stream events (provider side)

#[derive(Deserialize)]
pub(crate) struct StreamEventIn<'a> {
    pub output_index: Option<u32>,
    #[serde(borrow)]
    pub delta: Option<Str<'a>>,
    #[serde(borrow)]
    pub item: Option<OutputItemIn<'a>>,
    #[serde(borrow)]
    pub response: Option<ResponseIn<'a>>,
    /// `error` events: fields at top level per [OAI-R], nested under `error` as observed
    /// (§11.13) — accept both.
    #[serde(borrow)]
    pub code: Option<Str<'a>>,
    #[serde(borrow)]
    pub message: Option<Str<'a>>,
    #[serde(borrow)]
    pub error: Option<ResponseErrorIn<'a>>,
}
