//! Google Gemini `generateContent` / `streamGenerateContent?alt=sse` (Developer API and
//! Vertex AI).

pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod stream;
pub(crate) mod wire;

use crate::usage::Usage;
use wire::UsageMetadata;

/// `promptTokenCount` already includes cached tokens; thoughts are NOT part of
/// `candidatesTokenCount` and are added to the output (§5.2 "Gemini → OpenAI").
pub(crate) fn usage_from(u: &UsageMetadata) -> Usage {
    Usage {
        input: u.prompt_token_count + u.tool_use_prompt_token_count,
        output: u.candidates_token_count + u.thoughts_token_count,
        cached_input: u.cached_content_token_count,
        cache_creation_input: 0,
        reasoning: u.thoughts_token_count,
    }
}

pub(crate) fn usage_to(u: &Usage) -> UsageMetadata {
    UsageMetadata {
        prompt_token_count: u.input,
        candidates_token_count: u.output.saturating_sub(u.reasoning),
        total_token_count: u.total(),
        cached_content_token_count: u.cached_input,
        thoughts_token_count: u.reasoning,
        tool_use_prompt_token_count: 0,
    }
}
