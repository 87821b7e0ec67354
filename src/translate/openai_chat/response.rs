//! OpenAI Chat non-streaming responses: upstream body → canonical, canonical → client body.

use std::borrow::Cow;

use super::wire::*;
use super::wire_response::*;
use super::{usage_from, usage_to};
use crate::translate::error::TranslateError;
use crate::translate::ir::*;
use crate::translate::util::{mint_id, prefixed, to_body};
use crate::translate::ResponseOptions;

// ------------------------------------------------------------------ upstream → canonical

pub(crate) fn parse<'a>(
    body: &'a [u8],
    opts: &ResponseOptions,
) -> Result<Response<'a>, TranslateError> {
    let c: Completion<'a> = serde_json::from_slice(body)?;
    let mut out = Response {
        id: c.id.filter(|id| !id.is_empty()),
        model: c.model.filter(|m| !m.is_empty()),
        created: c.created,
        usage: c.usage.as_ref().map(usage_from).unwrap_or_default(),
        ..Response::default()
    };
    // n > 1 is never requested by sira (§3.4), so the first choice is the answer.
    let Some(choice) = c.choices.into_iter().next() else {
        return Ok(out);
    };
    if let Some(m) = choice.message {
        match m.thinking_blocks {
            Some(blocks) if !blocks.is_empty() => {
                for b in blocks {
                    match (&*b.kind, b.data) {
                        ("redacted_thinking", Some(data)) => {
                            out.content.push(Out::RedactedThinking(data))
                        }
                        _ => out.content.push(Out::Thinking {
                            text: b.thinking.unwrap_or_default(),
                            signature: b.signature,
                        }),
                    }
                }
            }
            _ => {
                if let Some(reasoning) = m.reasoning_content.filter(|r| !r.is_empty()) {
                    out.content.push(Out::Thinking {
                        text: reasoning,
                        signature: None,
                    });
                }
            }
        }
        if let Some(text) = m.content.filter(|t| !t.is_empty()) {
            out.content.push(Out::Text(text));
        }
        if let Some(refusal) = m.refusal.filter(|r| !r.is_empty()) {
            out.content.push(Out::Refusal(refusal));
        }
        for (i, call) in m.tool_calls.into_iter().flatten().enumerate() {
            out.content.push(Out::ToolCall {
                // Compat servers send `"id": ""` (§9): mint a stable one.
                id: match call.id {
                    Some(id) if !id.is_empty() => id,
                    _ => Cow::Owned(mint_id("call_", &opts.request_id, i)),
                },
                name: call.function.name,
                args: Args::Text(call.function.arguments.unwrap_or_default()),
            });
        }
    }
    out.stop = Stop::from_openai(choice.finish_reason.as_deref().unwrap_or("stop"));
    if out.stop == Stop::EndTurn {
        if out.has_tool_calls() {
            // Some compat servers say "stop" while returning calls; clients need tool_use.
            out.stop = Stop::ToolUse;
        } else if out.content.iter().any(|c| matches!(c, Out::Refusal(_))) {
            // A structured-output refusal ends with "stop"; it is a refusal (§3.4).
            out.stop = Stop::Refusal;
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ canonical → client

pub(crate) fn write(resp: &Response<'_>, opts: &ResponseOptions) -> Vec<u8> {
    let id = prefixed("chatcmpl-", resp.id.as_deref().unwrap_or(&opts.request_id));
    let mut text = String::new();
    let mut refusal: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    for c in &resp.content {
        match c {
            Out::Text(t) => text.push_str(t),
            Out::WebSearch(_) | Out::Citation(_) => {}
            Out::Refusal(r) => refusal.get_or_insert_with(String::new).push_str(r),
            // Reasoning never goes into `content` (§10.11): non-standard `reasoning_content`,
            // plus LiteLLM-style `thinking_blocks` so signatures can come back (§2.6).
            Out::Thinking { text: t, signature } => {
                reasoning.get_or_insert_with(String::new).push_str(t);
                if let Some(sig) = signature.as_deref().filter(|s| !s.is_empty()) {
                    thinking_blocks.push(ThinkingBlock {
                        kind: Cow::Borrowed("thinking"),
                        thinking: Some(Cow::Borrowed(t)),
                        signature: Some(Cow::Borrowed(sig)),
                        data: None,
                    });
                }
            }
            Out::RedactedThinking(data) => thinking_blocks.push(ThinkingBlock {
                kind: Cow::Borrowed("redacted_thinking"),
                thinking: None,
                signature: None,
                data: Some(Cow::Borrowed(data)),
            }),
            Out::ToolCall { id, name, args } => tool_calls.push(ToolCallOut {
                id: Cow::Borrowed(id),
                kind: "function",
                function: FunctionCallOut {
                    name,
                    arguments: args.to_json_string(),
                },
            }),
        }
    }
    // §3.2: no text → null when there are tool calls, "" otherwise.
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(Cow::Owned(text))
    };
    let out = CompletionOut {
        id: &id,
        object: "chat.completion",
        created: resp.created.unwrap_or(opts.created),
        model: resp.model.as_deref().unwrap_or(&opts.model),
        choices: [ChoiceOut {
            index: 0,
            message: ResponseMessageOut {
                role: "assistant",
                content,
                refusal: refusal.map(Cow::Owned),
                reasoning_content: reasoning.map(Cow::Owned),
                thinking_blocks,
                tool_calls,
            },
            logprobs: None,
            finish_reason: resp.stop.openai(),
        }],
        usage: usage_to(&resp.usage),
    };
    to_body(&out)
}
