//! Token usage read from provider responses that pass through unchanged.
//!
//! Only the fields accounting needs are parsed (everything else is skipped by serde without
//! allocating), and stream events are parsed only when a cheap byte search says they carry
//! usage. Field meanings follow TRANSLATION.md §5: OpenAI `prompt_tokens` and Gemini
//! `promptTokenCount` include cached tokens; Anthropic `input_tokens` excludes cache reads
//! and writes, which sira adds back (see [`Usage`]).

use memchr::memmem;
use serde::Deserialize;

use crate::format::Format;
use crate::sse::Event;
use crate::usage::Usage;

// === wire types (only what accounting reads) ===

#[derive(Debug, Default, Deserialize)]
pub struct OpenAiUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<OpenAiPromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<OpenAiCompletionDetails>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OpenAiPromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OpenAiCompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl From<&OpenAiUsage> for Usage {
    fn from(u: &OpenAiUsage) -> Usage {
        Usage {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            cached_input: u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation_input: 0,
            reasoning: u
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ResponsesUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub input_tokens_details: Option<OpenAiPromptDetails>,
    #[serde(default)]
    pub output_tokens_details: Option<OpenAiCompletionDetails>,
}

impl From<&ResponsesUsage> for Usage {
    fn from(u: &ResponsesUsage) -> Usage {
        Usage {
            input: u.input_tokens,
            output: u.output_tokens,
            cached_input: u
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation_input: 0,
            reasoning: u
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// Anthropic's usage object; every field optional because `message_delta` events carry
/// only the counters that changed.
#[derive(Debug, Default, Deserialize)]
pub struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
}

/// Accumulates Anthropic counters in Anthropic's own terms, since a later event may
/// update one counter without repeating the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnthropicCounters {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

impl AnthropicCounters {
    /// Applies the counters present in `u` (Anthropic's stream values are cumulative).
    pub fn update(&mut self, u: &AnthropicUsage) {
        self.input = u.input_tokens.unwrap_or(self.input);
        self.output = u.output_tokens.unwrap_or(self.output);
        self.cache_read = u.cache_read_input_tokens.unwrap_or(self.cache_read);
        self.cache_creation = u.cache_creation_input_tokens.unwrap_or(self.cache_creation);
    }

    pub fn usage(&self) -> Usage {
        Usage {
            input: self.input + self.cache_read + self.cache_creation,
            output: self.output,
            cached_input: self.cache_read,
            cache_creation_input: self.cache_creation,
            reasoning: 0,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeminiUsage {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
}

impl From<&GeminiUsage> for Usage {
    fn from(u: &GeminiUsage) -> Usage {
        Usage {
            // Tool-use prompt tokens are billed as input (TRANSLATION.md §5.2).
            input: u.prompt_token_count + u.tool_use_prompt_token_count,
            // Thoughts are billed as output, but reported apart from candidates.
            output: u.candidates_token_count + u.thoughts_token_count,
            cached_input: u.cached_content_token_count,
            cache_creation_input: 0,
            reasoning: u.thoughts_token_count,
        }
    }
}

#[derive(Deserialize)]
struct WithUsage<U> {
    #[serde(default = "Option::default")]
    usage: Option<U>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WithUsageMetadata {
    #[serde(default)]
    usage_metadata: Option<GeminiUsage>,
}

// === JSON responses ===

/// Usage from a complete JSON response body of `format` (embeddings responses included,
/// which carry OpenAI's `usage.prompt_tokens`).
pub fn usage_from_json(format: Format, body: &[u8]) -> Option<Usage> {
    match format {
        Format::OpenAiChat => serde_json::from_slice::<WithUsage<OpenAiUsage>>(body)
            .ok()?
            .usage
            .map(|u| Usage::from(&u)),
        Format::OpenAiResponses => serde_json::from_slice::<WithUsage<ResponsesUsage>>(body)
            .ok()?
            .usage
            .map(|u| Usage::from(&u)),
        Format::Anthropic => {
            let usage = serde_json::from_slice::<WithUsage<AnthropicUsage>>(body)
                .ok()?
                .usage?;
            let mut counters = AnthropicCounters::default();
            counters.update(&usage);
            Some(counters.usage())
        }
        Format::Gemini => serde_json::from_slice::<WithUsageMetadata>(body)
            .ok()?
            .usage_metadata
            .map(|u| Usage::from(&u)),
    }
}

// === streams ===

/// What to do with a stream frame after accounting looked at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameVerdict {
    Forward,
    /// An OpenAI chunk with `choices: []` that only carries usage, which sira asked for on
    /// the client's behalf: the client did not ask for it, so it must not see it.
    UsageOnly,
}

/// Reads usage from the frames of one passthrough stream.
#[derive(Debug)]
pub struct StreamUsage {
    format: Format,
    usage: Usage,
    anthropic: AnthropicCounters,
    seen: bool,
}

#[derive(Deserialize)]
struct OpenAiChunk {
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum AnthropicEvent {
    #[serde(rename = "message_start")]
    MessageStart { message: WithUsage<AnthropicUsage> },
    #[serde(rename = "message_delta")]
    MessageDelta {
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ResponsesEvent {
    #[serde(default)]
    response: Option<WithUsage<ResponsesUsage>>,
}

static USAGE_KEY: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\"usage"));

impl StreamUsage {
    pub fn new(format: Format) -> StreamUsage {
        StreamUsage {
            format,
            usage: Usage::default(),
            anthropic: AnthropicCounters::default(),
            seen: false,
        }
    }

    /// Usage seen so far: final once the stream has ended.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether any event carried usage.
    pub fn seen(&self) -> bool {
        self.seen
    }

    /// Looks at one complete SSE frame.
    pub fn observe(&mut self, frame: &[u8]) -> FrameVerdict {
        // Most events carry no usage object: skip them without parsing.
        if USAGE_KEY.find(frame).is_none() {
            return FrameVerdict::Forward;
        }
        let event = Event::parse(frame);
        let data = event.data();
        match self.format {
            Format::OpenAiChat => {
                let Ok(chunk) = serde_json::from_slice::<OpenAiChunk>(data) else {
                    return FrameVerdict::Forward;
                };
                let Some(usage) = chunk.usage else {
                    return FrameVerdict::Forward;
                };
                self.usage = Usage::from(&usage);
                self.seen = true;
                if chunk.choices.is_some_and(|c| c.is_empty()) {
                    return FrameVerdict::UsageOnly;
                }
            }
            Format::Anthropic => match serde_json::from_slice::<AnthropicEvent>(data) {
                Ok(AnthropicEvent::MessageStart { message }) => {
                    if let Some(u) = message.usage {
                        self.anthropic.update(&u);
                        self.usage = self.anthropic.usage();
                        self.seen = true;
                    }
                }
                Ok(AnthropicEvent::MessageDelta { usage: Some(u) }) => {
                    self.anthropic.update(&u);
                    self.usage = self.anthropic.usage();
                    self.seen = true;
                }
                Ok(_) | Err(_) => {}
            },
            Format::OpenAiResponses => {
                if let Ok(ResponsesEvent {
                    response: Some(WithUsage { usage: Some(u) }),
                }) = serde_json::from_slice::<ResponsesEvent>(data)
                {
                    self.usage = Usage::from(&u);
                    self.seen = true;
                }
            }
            Format::Gemini => {
                // Every chunk repeats the running totals; the last one is final.
                if let Ok(WithUsageMetadata {
                    usage_metadata: Some(u),
                }) = serde_json::from_slice::<WithUsageMetadata>(data)
                {
                    self.usage = Usage::from(&u);
                    self.seen = true;
                }
            }
        }
        FrameVerdict::Forward
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::sse::SseScanner;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn stream_usage(format: Format, path: &str) -> (Usage, Vec<FrameVerdict>) {
        let mut scanner = SseScanner::new();
        let mut frames = Vec::new();
        scanner.feed(Bytes::from(fixture(path)), &mut frames);
        frames.extend(scanner.finish());
        let mut tap = StreamUsage::new(format);
        let verdicts = frames.iter().map(|f| tap.observe(f)).collect();
        (tap.usage(), verdicts)
    }

    #[test]
    fn openai_json_and_stream() {
        let u = usage_from_json(Format::OpenAiChat, &fixture("openai/chat_basic.json")).unwrap();
        assert_eq!((u.input, u.output, u.reasoning), (8, 377, 320));
        let (u, verdicts) = stream_usage(Format::OpenAiChat, "openai/chat_stream_usage.sse");
        assert_eq!((u.input, u.output, u.cached_input), (12, 100, 0));
        // Exactly one frame is the usage-only chunk, the one before [DONE].
        let usage_only: Vec<usize> = verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| **v == FrameVerdict::UsageOnly)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(usage_only, [verdicts.len() - 2]);
        let (u, verdicts) = stream_usage(Format::OpenAiChat, "openai/chat_stream_plain.sse");
        assert!(u.is_zero());
        assert!(verdicts.iter().all(|v| *v == FrameVerdict::Forward));
    }

    #[test]
    fn anthropic_json_adds_cache_tokens_back() {
        let u = usage_from_json(
            Format::Anthropic,
            &fixture("anthropic/messages_cache_read.json"),
        )
        .unwrap();
        assert_eq!(u.cached_input, 2055);
        assert_eq!(u.input, 11 + 2055 + u.cache_creation_input);
    }

    #[test]
    fn anthropic_stream_combines_start_and_delta() {
        let (u, _) = stream_usage(Format::Anthropic, "anthropic/messages_stream_plain.sse");
        assert_eq!(u.input, 770);
        assert!(u.output > 8, "output comes from message_delta: {u:?}");
        let (u, _) = stream_usage(
            Format::Anthropic,
            "anthropic/messages_stream_cache_read.sse",
        );
        assert!(u.cached_input > 0, "{u:?}");
    }

    #[test]
    fn gemini_and_responses() {
        let u = usage_from_json(
            Format::Gemini,
            &fixture("gemini/generate_content_cached_tokens.json"),
        )
        .unwrap();
        assert!(u.cached_input > 0 && u.input >= u.cached_input, "{u:?}");
        let (u, _) = stream_usage(Format::Gemini, "gemini/stream_generate_content.sse");
        assert!(u.input > 0 && u.output > 0, "{u:?}");
        let u = usage_from_json(
            Format::OpenAiResponses,
            &fixture("openai_responses/cached_tokens.json"),
        )
        .unwrap();
        assert!(u.cached_input > 0, "{u:?}");
        let (u, _) = stream_usage(Format::OpenAiResponses, "openai_responses/stream_text.sse");
        assert!(u.input > 0 && u.output > 0, "{u:?}");
    }

    #[test]
    fn garbage_is_not_usage() {
        assert_eq!(usage_from_json(Format::OpenAiChat, b"not json"), None);
        let mut tap = StreamUsage::new(Format::OpenAiChat);
        assert_eq!(
            tap.observe(b"data: {\"usage\": broken\n\n"),
            FrameVerdict::Forward
        );
        assert!(!tap.seen());
    }
}
