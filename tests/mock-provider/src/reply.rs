//! What every provider handler shares: the request context, the answer plan (how many words,
//! tool call or not, usage numbers) and the reply it produces.

use crate::errors;
use crate::knobs::Knobs;
use crate::provider::Provider;
use crate::wire::{Alphabet, Events, Id};
use bytes::Bytes;
use http::StatusCode;

/// Context of one request, handed to the provider modules.
pub(crate) struct Ctx<'a> {
    pub(crate) knobs: &'a Knobs<'a>,
    pub(crate) body: &'a [u8],
    /// Request sequence number: seeds every id of the response.
    pub(crate) seq: u64,
    /// Unix seconds, for `created` / `created_at`.
    pub(crate) created: u64,
    pub(crate) provider: Provider,
}

/// A provider handler's answer, before knobs about pacing are applied.
pub(crate) enum Reply {
    Json { status: StatusCode, body: Bytes },
    Stream(Vec<Bytes>),
}

/// The request was malformed for this provider (400 in the provider's error shape).
pub(crate) struct Reject(pub(crate) String);

impl Reject {
    pub(crate) fn json(e: serde_json::Error) -> Self {
        Reject(format!(
            "We could not parse the JSON body of your request: {e}"
        ))
    }
}

/// Usage numbers of one answer. `prompt` is the full prompt size; `cached` and `cache_write`
/// are parts of it (each provider reports them its own way, see `lib.rs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tokens {
    pub(crate) prompt: u64,
    pub(crate) cached: u64,
    pub(crate) cache_write: u64,
    pub(crate) output: u64,
}

impl Tokens {
    pub(crate) fn total(&self) -> u64 {
        self.prompt + self.output
    }

    /// Anthropic's `input_tokens` excludes cache reads and writes.
    pub(crate) fn uncached(&self) -> u64 {
        self.prompt - self.cached - self.cache_write
    }
}

/// A tool call the answer makes.
#[derive(Clone, Copy)]
pub(crate) struct ToolCall<'a> {
    pub(crate) name: &'a str,
    /// Compact JSON object text.
    pub(crate) args: &'a str,
}

/// What to answer: the text is `wire::text(words)`, or a tool call.
pub(crate) struct Plan<'a> {
    /// Content events (text words, or tool-argument fragments).
    pub(crate) words: usize,
    /// The request's max-tokens cap stopped the text early (finish reason "length" & co).
    pub(crate) truncated: bool,
    pub(crate) tool: Option<ToolCall<'a>>,
    pub(crate) tokens: Tokens,
}

impl<'a> Ctx<'a> {
    /// Decides the answer. `max_tokens` is the request's output cap (it only shortens text
    /// answers); a tool call needs both `x-mock-tool-call` and tools in the request.
    pub(crate) fn plan(&self, max_tokens: Option<u64>, has_tools: bool) -> Plan<'a> {
        let knobs = self.knobs;
        let tool = knobs.tool_call.filter(|_| has_tools).map(|name| ToolCall {
            name,
            args: &knobs.tool_args,
        });
        let events = knobs.events;
        let words = match (tool, max_tokens) {
            (None, Some(cap)) => usize::try_from(cap).map_or(events, |cap| cap.min(events)),
            _ => events,
        };
        Plan {
            words,
            truncated: words < events,
            tool,
            tokens: self.tokens(words as u64),
        }
    }

    /// prompt = `x-mock-input-tokens` or ceil(body bytes / 4); output = `x-mock-output-tokens`
    /// or `output`; cached and cache-write tokens are clamped so that they fit in the prompt.
    pub(crate) fn tokens(&self, output: u64) -> Tokens {
        let k = self.knobs;
        let prompt = k
            .input_tokens
            .unwrap_or_else(|| (self.body.len() as u64).div_ceil(4));
        let cached = k.cached_tokens.min(prompt);
        let cache_write = k.cache_write_tokens.min(prompt - cached);
        Tokens {
            prompt,
            cached,
            cache_write,
            output: k.output_tokens.unwrap_or(output),
        }
    }

    /// A provider-looking id, unique per (request, `salt`).
    pub(crate) fn id(&self, prefix: &'static str, salt: u64, alphabet: Alphabet, len: usize) -> Id {
        Id {
            prefix,
            seed: self.seq.wrapping_mul(0x1_0000).wrapping_add(salt),
            alphabet,
            len,
        }
    }

    /// Freezes a synthesized stream and applies `x-mock-error-event-after`: keep the first N
    /// events, then the provider's in-stream error. When the stream has N events or fewer it
    /// completes normally (there is no "after N" to inject into).
    pub(crate) fn stream(&self, events: Events) -> Reply {
        Reply::Stream(self.with_error_tail(events.freeze()))
    }

    pub(crate) fn with_error_tail(&self, mut events: Vec<Bytes>) -> Vec<Bytes> {
        if let Some(n) = self.knobs.error_event_after {
            if n < events.len() {
                events.truncate(n);
                events.extend(errors::stream_tail(self, n));
            }
        }
        events
    }
}
