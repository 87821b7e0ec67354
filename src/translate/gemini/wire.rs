//! Gemini `generateContent` wire types (Developer API and Vertex AI). The API accepts
//! snake_case field names too (fx:gemini/requests/stream_function_call_gemini3.json), hence
//! the aliases on request fields.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

type Str<'a> = Cow<'a, str>;

// ---------------------------------------------------------------- requests (client side)

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateRequest<'a> {
    #[serde(borrow, default)]
    pub contents: Vec<Content<'a>>,
    #[serde(borrow, alias = "system_instruction")]
    pub system_instruction: Option<Content<'a>>,
    #[serde(borrow, alias = "generation_config", default)]
    pub generation_config: GenerationConfig<'a>,
    #[serde(borrow, default)]
    pub tools: Vec<ToolIn<'a>>,
    #[serde(borrow, alias = "tool_config")]
    pub tool_config: Option<ToolConfig<'a>>,
    #[serde(borrow, alias = "safety_settings")]
    pub safety_settings: Option<&'a RawValue>,
    #[serde(borrow, alias = "cached_content")]
    pub cached_content: Option<Str<'a>>,
    #[serde(borrow)]
    pub labels: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationConfig<'a> {
    pub temperature: Option<f64>,
    #[serde(alias = "top_p")]
    pub top_p: Option<f64>,
    #[serde(alias = "top_k")]
    pub top_k: Option<f64>,
    #[serde(alias = "max_output_tokens")]
    pub max_output_tokens: Option<u64>,
    #[serde(borrow, alias = "stop_sequences", default)]
    pub stop_sequences: Vec<Str<'a>>,
    #[serde(alias = "candidate_count")]
    pub candidate_count: Option<u64>,
    pub seed: Option<i64>,
    #[serde(alias = "presence_penalty")]
    pub presence_penalty: Option<f64>,
    #[serde(alias = "frequency_penalty")]
    pub frequency_penalty: Option<f64>,
    #[serde(alias = "response_logprobs")]
    pub response_logprobs: Option<bool>,
    pub logprobs: Option<u64>,
    #[serde(borrow, alias = "response_mime_type")]
    pub response_mime_type: Option<Str<'a>>,
    #[serde(borrow, alias = "response_schema")]
    pub response_schema: Option<&'a RawValue>,
    #[serde(borrow, alias = "response_json_schema")]
    pub response_json_schema: Option<&'a RawValue>,
    #[serde(borrow, alias = "thinking_config")]
    pub thinking_config: Option<ThinkingConfigIn<'a>>,
    #[serde(borrow, alias = "response_modalities", default)]
    pub response_modalities: Vec<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ThinkingConfigIn<'a> {
    #[serde(alias = "thinking_budget")]
    pub thinking_budget: Option<i64>,
    #[serde(borrow, alias = "thinking_level")]
    pub thinking_level: Option<Str<'a>>,
    #[serde(alias = "include_thoughts")]
    pub include_thoughts: Option<bool>,
}

#[derive(Deserialize)]
pub(crate) struct Content<'a> {
    #[serde(borrow)]
    pub role: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub parts: Vec<PartIn<'a>>,
}

/// A part is a union discriminated by which field is present (text, inlineData, …).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartIn<'a> {
    #[serde(borrow)]
    pub text: Option<Str<'a>>,
    #[serde(default)]
    pub thought: bool,
    #[serde(borrow, alias = "thought_signature")]
    pub thought_signature: Option<Str<'a>>,
    #[serde(borrow, alias = "inline_data")]
    pub inline_data: Option<BlobIn<'a>>,
    #[serde(borrow, alias = "file_data")]
    pub file_data: Option<FileDataIn<'a>>,
    #[serde(borrow, alias = "function_call")]
    pub function_call: Option<FunctionCallIn<'a>>,
    #[serde(borrow, alias = "function_response")]
    pub function_response: Option<FunctionResponseIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlobIn<'a> {
    #[serde(borrow, alias = "mime_type")]
    pub mime_type: Str<'a>,
    #[serde(borrow)]
    pub data: Str<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileDataIn<'a> {
    #[serde(borrow, alias = "mime_type")]
    pub mime_type: Option<Str<'a>>,
    #[serde(borrow, alias = "file_uri")]
    pub file_uri: Str<'a>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionCallIn<'a> {
    #[serde(borrow)]
    pub id: Option<Str<'a>>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionResponseIn<'a> {
    #[serde(borrow)]
    pub id: Option<Str<'a>>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolIn<'a> {
    #[serde(borrow, alias = "function_declarations", default)]
    pub function_declarations: Vec<FunctionDeclIn<'a>>,
    /// Built-in Gemini tools (`googleSearch`, `codeExecution`, …) have no equivalent elsewhere.
    #[serde(borrow, alias = "google_search")]
    pub google_search: Option<&'a RawValue>,
    #[serde(borrow, alias = "google_search_retrieval")]
    pub google_search_retrieval: Option<&'a RawValue>,
    #[serde(borrow, alias = "code_execution")]
    pub code_execution: Option<&'a RawValue>,
    #[serde(borrow, alias = "url_context")]
    pub url_context: Option<&'a RawValue>,
    #[serde(borrow)]
    pub retrieval: Option<&'a RawValue>,
}

impl ToolIn<'_> {
    pub fn has_builtin(&self) -> bool {
        self.google_search.is_some()
            || self.google_search_retrieval.is_some()
            || self.code_execution.is_some()
            || self.url_context.is_some()
            || self.retrieval.is_some()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionDeclIn<'a> {
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub description: Option<Str<'a>>,
    #[serde(borrow)]
    pub parameters: Option<&'a RawValue>,
    #[serde(borrow, alias = "parameters_json_schema")]
    pub parameters_json_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolConfig<'a> {
    #[serde(borrow, alias = "function_calling_config")]
    pub function_calling_config: Option<FunctionCallingConfig<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionCallingConfig<'a> {
    #[serde(borrow)]
    pub mode: Option<Str<'a>>,
    #[serde(borrow, alias = "allowed_function_names", default)]
    pub allowed_function_names: Vec<Str<'a>>,
}

// ---------------------------------------------------------------- requests (provider side)

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateRequestOut<'a> {
    pub contents: Vec<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<SystemOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfigOut<'a>>,
    pub generation_config: GenerationConfigOut<'a>,
}

#[derive(Serialize)]
pub(crate) struct SystemOut<'a> {
    pub parts: Vec<PartOut<'a>>,
}

#[derive(Serialize)]
pub(crate) struct ContentOut<'a> {
    pub role: &'static str,
    pub parts: Vec<PartOut<'a>>,
}

/// Content of a response candidate; borrowing the parts lets a stream chunk use a stack array.
#[derive(Serialize)]
pub(crate) struct ContentRefOut<'a> {
    pub role: &'static str,
    pub parts: &'a [PartOut<'a>],
}

/// One part: exactly one of the data fields is set.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<BlobOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileDataOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponseOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlobOut<'a> {
    pub mime_type: &'a str,
    pub data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileDataOut<'a> {
    pub mime_type: &'a str,
    pub file_uri: &'a str,
}

#[derive(Serialize)]
pub(crate) struct FunctionCallOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub name: &'a str,
    pub args: Cow<'a, RawValue>,
}

#[derive(Serialize)]
pub(crate) struct FunctionResponseOut<'a> {
    pub name: &'a str,
    pub response: Cow<'a, RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolOut<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub function_declarations: Vec<FunctionDeclOut<'a>>,
    /// Grounding with Google Search (a tool entry of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub google_search: Option<EmptyOut>,
}

#[derive(Serialize)]
pub(crate) struct EmptyOut {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionDeclOut<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Cow<'a, RawValue>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolConfigOut<'a> {
    pub function_calling_config: FunctionCallingConfigOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionCallingConfigOut<'a> {
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_function_names: Vec<&'a str>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationConfigOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub stop_sequences: &'a [Str<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Cow<'a, RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfigOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ThinkingConfigOut {
    pub thinking_budget: i64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub include_thoughts: bool,
}

// ---------------------------------------------------------------- responses

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateResponse<'a> {
    /// Only `candidates[0]`: sira never asks for several candidates of a chat turn.
    #[serde(
        borrow,
        default,
        rename = "candidates",
        deserialize_with = "crate::translate::util::first"
    )]
    pub candidate: Option<Candidate<'a>>,
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(borrow)]
    pub model_version: Option<Str<'a>>,
    #[serde(borrow)]
    pub response_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub prompt_feedback: Option<PromptFeedback<'a>>,
    /// A bare error object appended to a failing stream (§6.1).
    #[serde(borrow)]
    pub error: Option<ErrorIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate<'a> {
    #[serde(borrow)]
    pub content: Option<Content<'a>>,
    #[serde(borrow)]
    pub finish_reason: Option<Str<'a>>,
    /// Grounding with Google Search: what was searched and the pages the answer rests on.
    #[serde(borrow)]
    pub grounding_metadata: Option<GroundingIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroundingIn<'a> {
    #[serde(borrow, default)]
    pub web_search_queries: Vec<Str<'a>>,
    #[serde(borrow, default)]
    pub grounding_chunks: Vec<ChunkIn<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ChunkIn<'a> {
    #[serde(borrow)]
    pub web: Option<WebChunkIn<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct WebChunkIn<'a> {
    #[serde(borrow)]
    pub uri: Option<Str<'a>>,
    #[serde(borrow)]
    pub title: Option<Str<'a>>,
}

impl<'a> GroundingIn<'a> {
    /// The pages grounding the answer, and the search that found them (`None` when Gemini
    /// searched nothing).
    pub fn into_search(
        self,
        id: String,
    ) -> Option<(
        crate::translate::ir::SearchCall<'a>,
        Vec<crate::translate::ir::Cited<'a>>,
    )> {
        use crate::translate::ir::{Cited, SearchCall};
        let pages: Vec<Cited<'a>> = self
            .grounding_chunks
            .into_iter()
            .filter_map(|c| {
                let web = c.web?;
                Cited::web(web.uri?, web.title)
            })
            .collect();
        if self.web_search_queries.is_empty() && pages.is_empty() {
            return None;
        }
        let search = SearchCall {
            id: std::borrow::Cow::Owned(id),
            queries: self.web_search_queries,
            sources: pages.clone(),
        };
        Some((search, pages))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback<'a> {
    #[serde(borrow)]
    pub block_reason: Option<Str<'a>>,
}

/// `promptTokenCount` INCLUDES cached tokens; thoughts are NOT in `candidatesTokenCount` (§5.1).
#[derive(Deserialize, Serialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub total_token_count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_content_token_count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub thoughts_token_count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_use_prompt_token_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateResponseOut<'a> {
    pub candidates: [CandidateOut<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    pub model_version: &'a str,
    pub response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CandidateOut<'a> {
    pub content: ContentRefOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'static str>,
    pub index: u32,
}

// ---------------------------------------------------------------- errors

#[derive(Deserialize)]
pub(crate) struct ErrorEnvelope<'a> {
    #[serde(borrow)]
    pub error: ErrorIn<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ErrorIn<'a> {
    pub code: Option<u16>,
    #[serde(borrow)]
    pub message: Option<Str<'a>>,
    #[serde(borrow)]
    pub status: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub details: Vec<ErrorDetail<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ErrorDetail<'a> {
    #[serde(borrow)]
    pub reason: Option<Str<'a>>,
}

#[derive(Serialize)]
pub(crate) struct ErrorEnvelopeOut<'a> {
    pub error: ErrorOut<'a>,
}

#[derive(Serialize)]
pub(crate) struct ErrorOut<'a> {
    pub code: u16,
    pub message: &'a str,
    pub status: &'static str,
}
