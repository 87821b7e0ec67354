//! OpenAI Chat response, chunk and error wire types.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::wire::{ChatToolCall, ThinkingBlock, ToolCallOut};
use crate::translate::util::first;

type Str<'a> = Cow<'a, str>;

// ---------------------------------------------------------------- responses (provider side)

#[derive(Deserialize)]
pub(crate) struct Completion<'a> {
    #[serde(borrow)]
    pub id: Option<Str<'a>>,
    pub created: Option<u64>,
    #[serde(borrow)]
    pub model: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub choices: Vec<Choice<'a>>,
    pub usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
pub(crate) struct Choice<'a> {
    #[serde(borrow)]
    pub message: Option<ResponseMessage<'a>>,
    #[serde(borrow)]
    pub finish_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ResponseMessage<'a> {
    #[serde(borrow)]
    pub content: Option<Str<'a>>,
    #[serde(borrow)]
    pub refusal: Option<Str<'a>>,
    #[serde(borrow)]
    pub reasoning_content: Option<Str<'a>>,
    #[serde(borrow)]
    pub tool_calls: Option<Vec<ChatToolCall<'a>>>,
    #[serde(borrow)]
    pub thinking_blocks: Option<Vec<ThinkingBlock<'a>>>,
}

#[derive(Deserialize, Serialize, Default, Clone, Copy)]
pub(crate) struct ChatUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Serialize, Default, Clone, Copy)]
pub(crate) struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
}

#[derive(Deserialize, Serialize, Default, Clone, Copy)]
pub(crate) struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

#[derive(Deserialize)]
pub(crate) struct Chunk<'a> {
    #[serde(borrow)]
    pub id: Option<Str<'a>>,
    #[serde(borrow)]
    pub model: Option<Str<'a>>,
    /// Only `choices[0]`: sira never asks for `n > 1` (§3.4).
    #[serde(borrow, default, rename = "choices", deserialize_with = "first")]
    pub choice: Option<ChunkChoice<'a>>,
    pub usage: Option<ChatUsage>,
    #[serde(borrow)]
    pub error: Option<ErrorBody<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ChunkChoice<'a> {
    #[serde(borrow)]
    pub delta: Option<DeltaIn<'a>>,
    #[serde(borrow)]
    pub finish_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct DeltaIn<'a> {
    #[serde(borrow)]
    pub content: Option<Str<'a>>,
    #[serde(borrow)]
    pub refusal: Option<Str<'a>>,
    #[serde(borrow)]
    pub reasoning_content: Option<Str<'a>>,
    #[serde(borrow)]
    pub tool_calls: Option<Vec<ToolCallDeltaIn<'a>>>,
}

#[derive(Deserialize)]
pub(crate) struct ToolCallDeltaIn<'a> {
    pub index: Option<u32>,
    #[serde(borrow)]
    pub id: Option<Str<'a>>,
    #[serde(borrow)]
    pub function: Option<FunctionDeltaIn<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionDeltaIn<'a> {
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub arguments: Option<Str<'a>>,
}

// ---------------------------------------------------------------- responses (client side)

#[derive(Serialize)]
pub(crate) struct CompletionOut<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: [ChoiceOut<'a>; 1],
    pub usage: ChatUsage,
}

#[derive(Serialize)]
pub(crate) struct ChoiceOut<'a> {
    pub index: u32,
    pub message: ResponseMessageOut<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Serialize)]
pub(crate) struct ResponseMessageOut<'a> {
    pub role: &'static str,
    pub content: Option<Cow<'a, str>>,
    pub refusal: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub thinking_blocks: Vec<ThinkingBlock<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
pub(crate) struct ChunkOut<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: &'a [ChunkChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<ChatUsage>,
}

#[derive(Serialize)]
pub(crate) struct ChunkChoiceOut<'a> {
    pub index: u32,
    pub delta: DeltaOut<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
pub(crate) struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<[ThinkingBlock<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<[ToolCallDeltaOut<'a>; 1]>,
}

#[derive(Serialize)]
pub(crate) struct ToolCallDeltaOut<'a> {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDeltaOut<'a>,
}

#[derive(Serialize)]
pub(crate) struct FunctionDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

// ---------------------------------------------------------------- errors

#[derive(Deserialize)]
pub(crate) struct ErrorEnvelope<'a> {
    #[serde(borrow)]
    pub error: ErrorBody<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ErrorBody<'a> {
    #[serde(borrow)]
    pub message: Option<Str<'a>>,
    #[serde(borrow, rename = "type")]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub param: Option<Str<'a>>,
    /// A string for OpenAI, sometimes a number on compat servers / Azure.
    #[serde(borrow)]
    pub code: Option<&'a RawValue>,
}

#[derive(Serialize)]
pub(crate) struct ErrorEnvelopeOut<'a> {
    pub error: ErrorOut<'a>,
}

#[derive(Serialize)]
pub(crate) struct ErrorOut<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}
