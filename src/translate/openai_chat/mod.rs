//! OpenAI Chat Completions (also Azure OpenAI and OpenAI-compatible servers, §8–9).

pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod stream;
pub(crate) mod wire;
pub(crate) mod wire_response;

use crate::usage::Usage;
use wire_response::{ChatUsage, CompletionDetails, PromptDetails};

/// OpenAI usage is already the canonical meaning: cached tokens ⊂ `prompt_tokens`, reasoning
/// ⊂ `completion_tokens` (§5.1).
pub(crate) fn usage_from(u: &ChatUsage) -> Usage {
    let details = u.prompt_tokens_details.unwrap_or_default();
    Usage {
        input: u.prompt_tokens,
        output: u.completion_tokens,
        cached_input: details.cached_tokens,
        cache_creation_input: details.cache_write_tokens.unwrap_or(0),
        reasoning: u
            .completion_tokens_details
            .map_or(0, |d| d.reasoning_tokens),
    }
}

pub(crate) fn usage_to(u: &Usage) -> ChatUsage {
    ChatUsage {
        prompt_tokens: u.input,
        completion_tokens: u.output,
        total_tokens: u.total(),
        prompt_tokens_details: Some(PromptDetails {
            cached_tokens: u.cached_input,
            cache_write_tokens: (u.cache_creation_input > 0).then_some(u.cache_creation_input),
        }),
        completion_tokens_details: Some(CompletionDetails {
            reasoning_tokens: u.reasoning,
        }),
    }
}
