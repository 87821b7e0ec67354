//! Anthropic non-streaming responses: upstream body → canonical, canonical → client body.

use std::borrow::Cow;

use super::wire::*;
use super::{usage_from, usage_to};
use crate::translate::error::TranslateError;
use crate::translate::ir::*;
use crate::translate::util::{anthropic_tool_id, prefixed, to_body};
use crate::translate::ResponseOptions;

// ------------------------------------------------------------------ upstream → canonical

pub(crate) fn parse(body: &[u8]) -> Result<Response<'_>, TranslateError> {
    let m: MessageResponse<'_> = serde_json::from_slice(body)?;
    let mut out = Response {
        id: m.id,
        model: m.model,
        created: None,
        usage: usage_from(&m.usage),
        ..Response::default()
    };
    // The query of each web search, until its results arrive.
    let mut searches: Vec<(Str<'_>, String)> = Vec::new();
    for block in m.content {
        match block {
            Block::Text(t) => {
                out.content.push(Out::Text(t.text));
                for cited in t.citations.into_iter().filter_map(CitationIn::cited) {
                    out.content.push(Out::Citation(cited));
                }
            }
            Block::ServerToolUse(t) => {
                let query = t.input.and_then(|i| search_query(i.get()));
                searches.push((t.id, query.unwrap_or_default()));
            }
            Block::SearchResult(r) => {
                let query = searches
                    .iter()
                    .find(|(id, _)| *id == r.tool_use_id)
                    .map(|(_, q)| Cow::Owned(q.clone()));
                out.content.push(Out::WebSearch(SearchCall {
                    sources: r.sources(),
                    queries: query.into_iter().collect(),
                    id: r.tool_use_id,
                }));
            }
            Block::Thinking(t) => out.content.push(Out::Thinking {
                text: t.thinking,
                signature: t.signature,
            }),
            Block::RedactedThinking(r) => out.content.push(Out::RedactedThinking(r.data)),
            Block::ToolUse(t) => out.content.push(Out::ToolCall {
                id: t.id,
                name: t.name,
                args: t.input.map_or(Args::Text(Cow::Borrowed("{}")), Args::Json),
            }),
            // Server-tool blocks and future types have no client equivalent.
            _ => {}
        }
    }
    out.stop = Stop::from_anthropic(
        m.stop_reason.as_deref().unwrap_or("end_turn"),
        m.stop_sequence,
    );
    Ok(out)
}

// ------------------------------------------------------------------ canonical → client

pub(crate) fn write(resp: &Response<'_>, opts: &ResponseOptions) -> Vec<u8> {
    let id = prefixed("msg_", resp.id.as_deref().unwrap_or(&opts.request_id));
    let mut content: Vec<ResponseBlockOut<'_>> = Vec::with_capacity(resp.content.len());
    for c in &resp.content {
        match c {
            Out::Text(t) | Out::Refusal(t) if t.is_empty() => {}
            Out::WebSearch(_) | Out::Citation(_) => {}
            // Adjacent text merges into one block (Gemini sends many text parts, §3.5); a
            // refusal is text with stop_reason "refusal" (§3.4).
            Out::Text(t) | Out::Refusal(t) => match content.last_mut() {
                Some(ResponseBlockOut::Text { text }) => text.to_mut().push_str(t),
                _ => content.push(ResponseBlockOut::Text {
                    text: Cow::Borrowed(t),
                }),
            },
            Out::Thinking { text, signature } => content.push(ResponseBlockOut::Thinking {
                thinking: text,
                signature: signature.as_deref().unwrap_or(""),
            }),
            Out::RedactedThinking(data) => {
                content.push(ResponseBlockOut::RedactedThinking { data })
            }
            Out::ToolCall { id, name, args } => content.push(ResponseBlockOut::ToolUse {
                id: anthropic_tool_id(id),
                name,
                input: args.to_object(),
            }),
        }
    }
    let out = MessageResponseOut {
        id: &id,
        kind: "message",
        role: "assistant",
        model: resp.model.as_deref().unwrap_or(&opts.model),
        content,
        stop_reason: Some(resp.stop.anthropic()),
        stop_sequence: match &resp.stop {
            Stop::Sequence(s) => s.as_deref(),
            _ => None,
        },
        usage: usage_to(&resp.usage),
    };
    to_body(&out)
}
