//! Anthropic Messages.

mod delta;
pub(crate) mod request;
pub(crate) mod response;
mod search;
pub(crate) mod stream;
pub(crate) mod wire;

use crate::usage::Usage;
use wire::{UsageIn, UsageOut};

/// Anthropic's `input_tokens` EXCLUDES cache reads and writes; the canonical input includes
/// both (§5.2 "Anthropic → OpenAI"). Thinking is part of `output_tokens`.
pub(crate) fn usage_from(u: &UsageIn) -> Usage {
    let cached = u.cache_read_input_tokens.unwrap_or(0);
    let created = u.cache_creation_input_tokens.unwrap_or(0);
    Usage {
        input: u.input_tokens.unwrap_or(0) + cached + created,
        output: u.output_tokens.unwrap_or(0),
        cached_input: cached,
        cache_creation_input: created,
        reasoning: u
            .output_tokens_details
            .and_then(|d| d.thinking_tokens)
            .unwrap_or(0),
    }
}

/// Inverse of [`usage_from`] (§5.2 "OpenAI → Anthropic").
pub(crate) fn usage_to(u: &Usage) -> UsageOut {
    UsageOut {
        input_tokens: u
            .input
            .saturating_sub(u.cached_input)
            .saturating_sub(u.cache_creation_input),
        cache_creation_input_tokens: u.cache_creation_input,
        cache_read_input_tokens: u.cached_input,
        output_tokens: u.output,
    }
}
