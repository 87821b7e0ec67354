//! OpenAI Responses API (`/v1/responses`, what Codex CLI speaks; §11).

pub(crate) mod emitter;
mod emitter_items;
pub(crate) mod request;
pub(crate) mod request_out;
pub(crate) mod response;
pub(crate) mod stream;
pub(crate) mod wire;
pub(crate) mod wire_out;

use crate::usage::Usage;
use wire::{InputDetails, OutputDetails, UsageIo};

/// Responses usage has the canonical meaning: cached ⊂ input, reasoning ⊂ output (§11.9).
pub(crate) fn usage_from(u: &UsageIo) -> Usage {
    Usage {
        input: u.input_tokens,
        output: u.output_tokens,
        cached_input: u.input_tokens_details.cached_tokens,
        cache_creation_input: u.input_tokens_details.cache_write_tokens.unwrap_or(0),
        reasoning: u.output_tokens_details.reasoning_tokens,
    }
}

/// All five numbers always present as integers: Codex fails a turn otherwise (§11.9).
pub(crate) fn usage_to(u: &Usage) -> UsageIo {
    UsageIo {
        input_tokens: u.input,
        input_tokens_details: InputDetails {
            cached_tokens: u.cached_input,
            cache_write_tokens: (u.cache_creation_input > 0).then_some(u.cache_creation_input),
        },
        output_tokens: u.output,
        output_tokens_details: OutputDetails {
            reasoning_tokens: u.reasoning,
        },
        total_tokens: u.total(),
    }
}
