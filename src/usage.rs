//! Token usage, normalised across providers.
//!
//! Providers disagree on what "input tokens" means: OpenAI's `prompt_tokens` and Gemini's
//! `promptTokenCount` include cached tokens, Anthropic's `input_tokens` excludes both cache
//! reads and cache writes. sira always stores the OpenAI meaning so prices and limits add up
//! the same way whatever the provider.

use std::ops::AddAssign;

/// Tokens spent by one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token, cached or not (OpenAI `prompt_tokens`).
    pub input: u64,
    /// Completion tokens, reasoning included (OpenAI `completion_tokens`).
    pub output: u64,
    /// The part of `input` served from the provider's prompt cache.
    pub cached_input: u64,
    /// The part of `input` written to the provider's prompt cache (Anthropic
    /// `cache_creation_input_tokens`), billed at a premium by Anthropic.
    pub cache_creation_input: u64,
    /// The part of `output` spent on reasoning/thinking, when the provider reports it.
    pub reasoning: u64,
}

impl Usage {
    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }

    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, rhs: Usage) {
        self.input += rhs.input;
        self.output += rhs.output;
        self.cached_input += rhs.cached_input;
        self.cache_creation_input += rhs.cache_creation_input;
        self.reasoning += rhs.reasoning;
    }
}
