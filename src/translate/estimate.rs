//! Local input-token estimate for `/v1/messages/count_tokens` when the provider cannot
//! count. It is an ESTIMATE: about four characters per token over every piece of text the
//! model reads (system prompt, messages, tool calls and results, tool definitions), plus a
//! small per-message overhead and a flat cost per image or document.

use super::error::TranslateError;
use super::ir::{Args, Part, Request, Schema};
use super::{anthropic, gemini, openai_chat, responses};
use crate::format::Format;

/// Characters per token for English-like text and JSON.
const CHARS_PER_TOKEN: u64 = 4;
/// Role markers and separators per message.
const PER_MESSAGE: u64 = 4;
/// An image or document whose size is unknown here (a mid-sized image on Anthropic is
/// ~1,600 tokens).
const PER_MEDIA: u64 = 1_600;

pub fn estimate_input_tokens(format: Format, body: &[u8]) -> Result<u64, TranslateError> {
    let req = match format {
        Format::OpenAiChat => openai_chat::request::parse(body)?.0,
        Format::Anthropic => anthropic::request::parse(body)?,
        Format::Gemini => gemini::request::parse(body)?,
        Format::OpenAiResponses => responses::request::parse(body, &super::Seal::default())?.0,
    };
    Ok(estimate(&req))
}

fn estimate(req: &Request<'_>) -> u64 {
    let mut chars = 0u64;
    let mut fixed = 0u64;
    for m in &req.messages {
        fixed += PER_MESSAGE;
        for p in &m.parts {
            count_part(p, &mut chars, &mut fixed);
        }
    }
    for t in &req.tools {
        chars += t.name.len() as u64
            + t.description
                .as_deref()
                .map_or(0, |d| d.chars().count() as u64);
        chars += match &t.schema {
            Schema::None => 0,
            Schema::Json(raw) | Schema::Gemini(raw) => raw.get().len() as u64,
            Schema::Owned(raw) => raw.get().len() as u64,
        };
    }
    fixed + chars.div_ceil(CHARS_PER_TOKEN)
}

fn count_part(p: &Part<'_>, chars: &mut u64, fixed: &mut u64) {
    match p {
        Part::Text { text, .. } | Part::Thinking { text, .. } => {
            *chars += text.chars().count() as u64
        }
        Part::RedactedThinking { .. } => {}
        Part::Media { .. } => *fixed += PER_MEDIA,
        Part::ToolCall(call) => {
            *chars += call.name.len() as u64;
            *chars += match &call.args {
                Args::Json(raw) => raw.get().len() as u64,
                Args::Text(text) => text.len() as u64,
            };
        }
        Part::ToolResult(r) => {
            for c in &r.content {
                count_part(c, chars, fixed);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn counts_text_and_tools() {
        let body = br#"{"model":"m","max_tokens":10,"system":"12345678","messages":[{"role":"user","content":"abcdefgh"}],
            "tools":[{"name":"abcd","input_schema":{"type":"object"}}]}"#;
        // 2 messages (system + user) * 4 + ceil((8 + 8 + 4 + 17) / 4)
        assert_eq!(
            estimate_input_tokens(Format::Anthropic, body).unwrap(),
            8 + 10
        );
    }
}
