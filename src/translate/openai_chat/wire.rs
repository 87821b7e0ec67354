//! OpenAI Chat Completions wire types (also Azure OpenAI and OpenAI-compatible servers).
//! Incoming types borrow from the body; outgoing types borrow from the canonical form.
//! Request types are here, response, chunk and error types in [`super::wire_response`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::translate::util::{raw_tagged, StrOr, StrOrObj};

type Str<'a> = Cow<'a, str>;

// ---------------------------------------------------------------- requests (client side)

#[derive(Deserialize)]
pub(crate) struct ChatRequest<'a> {
    #[serde(borrow)]
    pub messages: Vec<ChatMessage<'a>>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Not OpenAI, but accepted by many compat servers; mapped to Anthropic/Gemini `top_k`.
    pub top_k: Option<u64>,
    pub n: Option<u64>,
    #[serde(borrow, default)]
    pub stop: StrOr<'a, Str<'a>>,
    pub stream_options: Option<StreamOptionsIn>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u64>,
    #[serde(borrow)]
    pub logit_bias: Option<&'a RawValue>,
    #[serde(borrow)]
    pub tools: Option<Vec<ChatTool<'a>>>,
    #[serde(borrow)]
    pub tool_choice: Option<StrOrObj<'a, ChatToolChoiceObj<'a>>>,
    /// Legacy `functions` / `function_call`, treated like `tools` / `tool_choice`.
    #[serde(borrow)]
    pub functions: Option<Vec<FunctionDef<'a>>>,
    #[serde(borrow)]
    pub function_call: Option<StrOrObj<'a, NamedFunction<'a>>>,
    pub parallel_tool_calls: Option<bool>,
    #[serde(borrow)]
    pub response_format: Option<ResponseFormat<'a>>,
    #[serde(borrow)]
    pub reasoning_effort: Option<Str<'a>>,
    #[serde(borrow)]
    pub user: Option<Str<'a>>,
    #[serde(borrow)]
    pub safety_identifier: Option<Str<'a>>,
    #[serde(borrow)]
    pub service_tier: Option<Str<'a>>,
    #[serde(borrow)]
    pub prompt_cache_key: Option<Str<'a>>,
    #[serde(borrow)]
    pub verbosity: Option<Str<'a>>,
    pub store: Option<bool>,
    #[serde(borrow)]
    pub metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    pub prediction: Option<&'a RawValue>,
    #[serde(borrow)]
    pub web_search_options: Option<&'a RawValue>,
    #[serde(borrow)]
    pub audio: Option<&'a RawValue>,
    #[serde(borrow)]
    pub modalities: Option<Vec<Str<'a>>>,
}

#[derive(Deserialize)]
pub(crate) struct StreamOptionsIn {
    pub include_usage: Option<bool>,
}

#[derive(Deserialize)]
pub(crate) struct ChatMessage<'a> {
    #[serde(borrow)]
    pub role: Str<'a>,
    #[serde(borrow, default)]
    pub content: StrOr<'a, ChatPart<'a>>,
    #[serde(borrow)]
    pub tool_calls: Option<Vec<ChatToolCall<'a>>>,
    #[serde(borrow)]
    pub function_call: Option<FunctionCall<'a>>,
    #[serde(borrow)]
    pub tool_call_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub refusal: Option<Str<'a>>,
    /// Compat servers (DeepSeek, vLLM) echo reasoning here (§9).
    #[serde(borrow)]
    pub reasoning_content: Option<Str<'a>>,
    /// LiteLLM's convention for Anthropic thinking blocks with signatures on OpenAI-shaped
    /// messages; sira emits and accepts it so signatures survive a Chat client (§2.6).
    #[serde(borrow)]
    pub thinking_blocks: Option<Vec<ThinkingBlock<'a>>>,
}

#[derive(Deserialize, Serialize)]
pub(crate) struct ThinkingBlock<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Str<'a>>,
}

raw_tagged! {
    pub(crate) enum ChatPart<'a> by "type" {
        Some("text") => Text(TextPart<'a>),
        Some("image_url") => Image(ImagePart<'a>),
        Some("input_audio") => Audio(AudioPart<'a>),
        Some("file") => File(FilePart<'a>),
        Some("refusal") => Refusal(RefusalPart<'a>),
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
    pub image_url: ImageUrl<'a>,
}

#[derive(Deserialize)]
pub(crate) struct ImageUrl<'a> {
    #[serde(borrow)]
    pub url: Str<'a>,
}

#[derive(Deserialize)]
pub(crate) struct AudioPart<'a> {
    #[serde(borrow)]
    pub input_audio: InputAudio<'a>,
}

#[derive(Deserialize)]
pub(crate) struct InputAudio<'a> {
    #[serde(borrow)]
    pub data: Str<'a>,
    #[serde(borrow)]
    pub format: Str<'a>,
}

#[derive(Deserialize)]
pub(crate) struct FilePart<'a> {
    #[serde(borrow)]
    pub file: FileRef<'a>,
}

#[derive(Deserialize)]
pub(crate) struct FileRef<'a> {
    #[serde(borrow)]
    pub file_data: Option<Str<'a>>,
    #[serde(borrow)]
    pub file_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ChatToolCall<'a> {
    #[serde(borrow)]
    pub id: Option<Str<'a>>,
    #[serde(borrow)]
    pub function: FunctionCall<'a>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionCall<'a> {
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow, default)]
    pub arguments: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ChatTool<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub function: Option<FunctionDef<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionDef<'a> {
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub description: Option<Str<'a>>,
    #[serde(borrow)]
    pub parameters: Option<&'a RawValue>,
    pub strict: Option<bool>,
}

#[derive(Deserialize)]
pub(crate) struct ChatToolChoiceObj<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub function: Option<NamedFunction<'a>>,
    #[serde(borrow)]
    pub allowed_tools: Option<AllowedTools<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct NamedFunction<'a> {
    #[serde(borrow)]
    pub name: Str<'a>,
}

#[derive(Deserialize)]
pub(crate) struct AllowedTools<'a> {
    #[serde(borrow)]
    pub mode: Str<'a>,
    #[serde(borrow)]
    pub tools: Vec<AllowedTool<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct AllowedTool<'a> {
    #[serde(borrow)]
    pub function: Option<NamedFunction<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ResponseFormat<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub json_schema: Option<JsonSchemaFormat<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct JsonSchemaFormat<'a> {
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub description: Option<Str<'a>>,
    #[serde(borrow)]
    pub schema: Option<&'a RawValue>,
    pub strict: Option<bool>,
}

#[derive(Serialize)]
pub(crate) struct JsonSchemaOut<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Cow<'a, RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

// ---------------------------------------------------------------- requests (provider side)

#[derive(Serialize)]
pub(crate) struct ChatRequestOut<'a> {
    pub model: &'a str,
    pub messages: Vec<MessageOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// The legacy field, for servers that do not know `max_completion_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub stop: &'a [Str<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormatOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a RawValue>,
}

#[derive(Serialize)]
pub(crate) struct StreamOptions {
    pub include_usage: bool,
}

#[derive(Serialize)]
pub(crate) struct MessageOut<'a> {
    pub role: &'static str,
    /// `None` serializes as `null` (assistant messages that only call tools).
    pub content: ContentOut<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum ContentOut<'a> {
    Null,
    Text(Cow<'a, str>),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum PartOut<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrlOut<'a> },
    InputAudio { input_audio: InputAudioOut<'a> },
    File { file: FileOut<'a> },
}

#[derive(Serialize)]
pub(crate) struct ImageUrlOut<'a> {
    pub url: Cow<'a, str>,
}

#[derive(Serialize)]
pub(crate) struct InputAudioOut<'a> {
    pub data: &'a str,
    pub format: &'a str,
}

#[derive(Serialize)]
pub(crate) struct FileOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct ToolCallOut<'a> {
    pub id: Cow<'a, str>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCallOut<'a>,
}

#[derive(Serialize)]
pub(crate) struct FunctionCallOut<'a> {
    pub name: &'a str,
    pub arguments: Cow<'a, str>,
}

#[derive(Serialize)]
pub(crate) struct ToolOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionDefOut<'a>,
}

#[derive(Serialize)]
pub(crate) struct FunctionDefOut<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
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
        function: NamedFunctionOut<'a>,
    },
    Allowed {
        #[serde(rename = "type")]
        kind: &'static str,
        allowed_tools: AllowedToolsOut<'a>,
    },
}

#[derive(Serialize)]
pub(crate) struct NamedFunctionOut<'a> {
    pub name: &'a str,
}

#[derive(Serialize)]
pub(crate) struct AllowedToolsOut<'a> {
    pub mode: &'static str,
    pub tools: Vec<ToolChoiceOut<'a>>,
}

#[derive(Serialize)]
pub(crate) struct ResponseFormatOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaOut<'a>>,
}
