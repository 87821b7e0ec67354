//! OpenAI Responses output types: the Response object (§11.7) and the typed stream events
//! (§11.10) sira generates for Responses clients.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

use super::wire::UsageIo;

/// The Response object skeleton of §11.7. Request echo fields sira does not know are
/// reported with their defaults.
#[derive(Serialize)]
pub(crate) struct ResponseOut<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created_at: u64,
    pub status: &'static str,
    pub background: bool,
    pub error: Option<ResponseErrorOut<'a>>,
    pub incomplete_details: Option<IncompleteOut>,
    pub instructions: Option<()>,
    pub max_output_tokens: Option<()>,
    pub model: &'a str,
    pub output: &'a [ItemOut<'a>],
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<()>,
    pub reasoning: ReasoningEchoOut,
    /// Whether the gateway stored the response (§11.14 rule 3 when it does not).
    pub store: bool,
    pub temperature: f64,
    pub text: TextEchoOut,
    pub tool_choice: &'static str,
    pub tools: [(); 0],
    pub top_p: f64,
    pub truncation: &'static str,
    pub usage: Option<UsageIo>,
    pub user: Option<()>,
    pub metadata: Empty,
}

impl<'a> ResponseOut<'a> {
    pub fn new(id: &'a str, created_at: u64, model: &'a str, output: &'a [ItemOut<'a>]) -> Self {
        ResponseOut {
            id,
            object: "response",
            created_at,
            status: "in_progress",
            background: false,
            error: None,
            incomplete_details: None,
            instructions: None,
            max_output_tokens: None,
            model,
            output,
            parallel_tool_calls: true,
            previous_response_id: None,
            reasoning: ReasoningEchoOut {
                effort: None,
                summary: None,
            },
            store: false,
            temperature: 1.0,
            text: TextEchoOut {
                format: FormatEchoOut { kind: "text" },
            },
            tool_choice: "auto",
            tools: [],
            top_p: 1.0,
            truncation: "disabled",
            usage: None,
            user: None,
            metadata: Empty {},
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Empty {}

#[derive(Serialize)]
pub(crate) struct ReasoningEchoOut {
    pub effort: Option<()>,
    pub summary: Option<()>,
}

#[derive(Serialize)]
pub(crate) struct TextEchoOut {
    pub format: FormatEchoOut,
}

#[derive(Serialize)]
pub(crate) struct FormatEchoOut {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Serialize)]
pub(crate) struct ResponseErrorOut<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

#[derive(Serialize)]
pub(crate) struct IncompleteOut {
    pub reason: &'static str,
}

/// An output item. Owned (`'static`) copies are kept by the stream emitter for the terminal
/// event; `content`/`summary` hold at most one part.
#[derive(Serialize, Clone, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ItemOut<'a> {
    Message {
        id: Cow<'a, str>,
        status: &'static str,
        role: &'static str,
        content: Vec<TextPartOut<'a>>,
    },
    FunctionCall {
        id: Cow<'a, str>,
        status: &'static str,
        arguments: Cow<'a, str>,
        call_id: Cow<'a, str>,
        name: Cow<'a, str>,
        /// The `namespace` tool the function was declared in.
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<Cow<'a, str>>,
    },
    CustomToolCall {
        id: Cow<'a, str>,
        status: &'static str,
        call_id: Cow<'a, str>,
        name: Cow<'a, str>,
        input: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<Cow<'a, str>>,
    },
    LocalShellCall {
        id: Cow<'a, str>,
        status: &'static str,
        call_id: Cow<'a, str>,
        action: Cow<'a, RawValue>,
    },
    /// A search the provider ran (Anthropic's web search tool, Gemini's grounding).
    WebSearchCall {
        id: Cow<'a, str>,
        status: &'static str,
        action: SearchActionOut<'a>,
    },
    Reasoning {
        id: Cow<'a, str>,
        summary: Vec<SummaryPartOut<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<Cow<'a, str>>,
    },
}

/// Message content part. Refusals are sent as `output_text` too: Codex cannot parse a
/// `refusal` part and drops the whole message (§11.15).
#[derive(Serialize, Clone, Debug)]
#[serde(tag = "type", rename = "output_text")]
pub(crate) struct TextPartOut<'a> {
    pub annotations: Vec<AnnotationOut<'a>>,
    pub logprobs: [(); 0],
    pub text: Cow<'a, str>,
}

/// A page the text cites, over `[start_index, end_index)` in characters of the text.
#[derive(Serialize, Clone, Debug)]
#[serde(tag = "type", rename = "url_citation")]
pub(crate) struct AnnotationOut<'a> {
    pub start_index: usize,
    pub end_index: usize,
    pub url: Cow<'a, str>,
    pub title: Cow<'a, str>,
}

#[derive(Serialize, Clone, Debug)]
#[serde(tag = "type", rename = "search")]
pub(crate) struct SearchActionOut<'a> {
    pub query: Cow<'a, str>,
    pub sources: Vec<SearchSourceOut<'a>>,
}

#[derive(Serialize, Clone, Debug)]
#[serde(tag = "type", rename = "url")]
pub(crate) struct SearchSourceOut<'a> {
    pub url: Cow<'a, str>,
}

#[derive(Serialize, Clone, Debug)]
#[serde(tag = "type", rename = "summary_text")]
pub(crate) struct SummaryPartOut<'a> {
    pub text: Cow<'a, str>,
}

/// One stream event; `type` is the SSE event name too (§11.1).
#[derive(Serialize)]
#[serde(tag = "type")]
pub(crate) enum EventOut<'a> {
    #[serde(rename = "response.created")]
    Created {
        sequence_number: u64,
        response: &'a ResponseOut<'a>,
    },
    #[serde(rename = "response.in_progress")]
    InProgress {
        sequence_number: u64,
        response: &'a ResponseOut<'a>,
    },
    #[serde(rename = "response.completed")]
    Completed {
        sequence_number: u64,
        response: &'a ResponseOut<'a>,
    },
    #[serde(rename = "response.incomplete")]
    Incomplete {
        sequence_number: u64,
        response: &'a ResponseOut<'a>,
    },
    #[serde(rename = "response.failed")]
    Failed {
        sequence_number: u64,
        response: &'a ResponseOut<'a>,
    },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        sequence_number: u64,
        output_index: u32,
        item: &'a ItemOut<'a>,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        sequence_number: u64,
        output_index: u32,
        item: &'a ItemOut<'a>,
    },
    #[serde(rename = "response.content_part.added")]
    PartAdded {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        part: TextPartOut<'a>,
    },
    #[serde(rename = "response.content_part.done")]
    PartDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        part: TextPartOut<'a>,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        delta: &'a str,
        logprobs: [(); 0],
    },
    #[serde(rename = "response.output_text.done")]
    TextDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        text: &'a str,
        logprobs: [(); 0],
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgsDelta {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        delta: &'a str,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    ArgsDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        arguments: &'a str,
    },
    #[serde(rename = "response.custom_tool_call_input.delta")]
    CustomDelta {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        delta: &'a str,
    },
    #[serde(rename = "response.custom_tool_call_input.done")]
    CustomDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        input: &'a str,
    },
    #[serde(rename = "response.reasoning_summary_part.added")]
    SummaryPartAdded {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        summary_index: u32,
        part: SummaryPartOut<'a>,
    },
    #[serde(rename = "response.reasoning_summary_part.done")]
    SummaryPartDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        summary_index: u32,
        part: SummaryPartOut<'a>,
    },
    #[serde(rename = "response.reasoning_summary_text.delta")]
    SummaryDelta {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        summary_index: u32,
        delta: &'a str,
    },
    #[serde(rename = "response.reasoning_summary_text.done")]
    SummaryDone {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        summary_index: u32,
        text: &'a str,
    },
    #[serde(rename = "response.output_text.annotation.added")]
    AnnotationAdded {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        annotation_index: usize,
        annotation: &'a AnnotationOut<'a>,
    },
    #[serde(rename = "response.web_search_call.in_progress")]
    SearchInProgress {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
    },
    #[serde(rename = "response.web_search_call.searching")]
    SearchSearching {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
    },
    #[serde(rename = "response.web_search_call.completed")]
    SearchCompleted {
        sequence_number: u64,
        item_id: &'a str,
        output_index: u32,
    },
    /// Top-level `code`/`message`/`param` per [OAI-R] `ResponseErrorEvent` (§11.13).
    #[serde(rename = "error")]
    Error {
        sequence_number: u64,
        code: &'a str,
        message: &'a str,
        param: Option<()>,
    },
}

impl EventOut<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            EventOut::Created { .. } => "response.created",
            EventOut::InProgress { .. } => "response.in_progress",
            EventOut::Completed { .. } => "response.completed",
            EventOut::Incomplete { .. } => "response.incomplete",
            EventOut::Failed { .. } => "response.failed",
            EventOut::ItemAdded { .. } => "response.output_item.added",
            EventOut::ItemDone { .. } => "response.output_item.done",
            EventOut::PartAdded { .. } => "response.content_part.added",
            EventOut::PartDone { .. } => "response.content_part.done",
            EventOut::TextDelta { .. } => "response.output_text.delta",
            EventOut::TextDone { .. } => "response.output_text.done",
            EventOut::ArgsDelta { .. } => "response.function_call_arguments.delta",
            EventOut::ArgsDone { .. } => "response.function_call_arguments.done",
            EventOut::CustomDelta { .. } => "response.custom_tool_call_input.delta",
            EventOut::CustomDone { .. } => "response.custom_tool_call_input.done",
            EventOut::SummaryPartAdded { .. } => "response.reasoning_summary_part.added",
            EventOut::SummaryPartDone { .. } => "response.reasoning_summary_part.done",
            EventOut::SummaryDelta { .. } => "response.reasoning_summary_text.delta",
            EventOut::SummaryDone { .. } => "response.reasoning_summary_text.done",
            EventOut::AnnotationAdded { .. } => "response.output_text.annotation.added",
            EventOut::SearchInProgress { .. } => "response.web_search_call.in_progress",
            EventOut::SearchSearching { .. } => "response.web_search_call.searching",
            EventOut::SearchCompleted { .. } => "response.web_search_call.completed",
            EventOut::Error { .. } => "error",
        }
    }
}
