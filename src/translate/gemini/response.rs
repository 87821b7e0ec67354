//! Gemini non-streaming responses: upstream body → canonical, canonical → client body.

use std::borrow::Cow;

use super::wire::*;
use super::{usage_from, usage_to};
use crate::translate::error::TranslateError;
use crate::translate::ir::*;
use crate::translate::util::{id_with_signature, mint_id, to_body};
use crate::translate::ResponseOptions;

// ------------------------------------------------------------------ upstream → canonical

/// The id sira issues for the `n`-th Gemini function call of a response: Gemini 2.x sends
/// none (§2.4), and a Gemini 3 `thoughtSignature` rides inside it so it comes back (§2.2).
pub(crate) fn call_id(
    given: Option<&str>,
    signature: Option<&str>,
    opts: &ResponseOptions,
    n: usize,
) -> String {
    let base = match given {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => mint_id("call_", &opts.request_id, n),
    };
    match signature {
        Some(sig) if !sig.is_empty() => id_with_signature(&base, sig),
        _ => base,
    }
}

pub(crate) fn parse<'a>(
    body: &'a [u8],
    opts: &ResponseOptions,
) -> Result<Response<'a>, TranslateError> {
    let r: GenerateResponse<'a> = serde_json::from_slice(body)?;
    let mut out = Response {
        id: r.response_id,
        model: r.model_version,
        created: None,
        usage: r
            .usage_metadata
            .as_ref()
            .map(usage_from)
            .unwrap_or_default(),
        ..Response::default()
    };
    let Some(candidate) = r.candidate else {
        // HTTP 200 without candidates: the prompt was blocked (§3.3). sira answers with an
        // empty, content-filtered completion rather than an error.
        out.stop = if r.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            Stop::Refusal
        } else {
            Stop::EndTurn
        };
        return Ok(out);
    };
    let mut calls = 0;
    // Missing `parts` (MAX_TOKENS spent on thoughts) is an empty answer (§3.3).
    for p in candidate.content.map(|c| c.parts).unwrap_or_default() {
        if let Some(call) = p.function_call {
            let id = call_id(
                call.id.as_deref(),
                p.thought_signature.as_deref(),
                opts,
                calls,
            );
            calls += 1;
            out.content.push(Out::ToolCall {
                id: Cow::Owned(id),
                name: call.name,
                args: call
                    .args
                    .map_or(Args::Text(Cow::Borrowed("{}")), Args::Json),
            });
        } else if let Some(text) = p.text {
            if p.thought {
                // A thought part's own signature is Gemini's, and Gemini takes thoughts back
                // from no one (its signatures that matter ride on the calls): another
                // provider must never be handed it as its own.
                out.content.push(Out::Thinking {
                    text,
                    signature: None,
                });
            } else if !text.is_empty() {
                out.content.push(Out::Text(text));
            }
        }
    }
    // Grounding: the pages cite the answer's text, then the search is reported.
    if let Some((search, pages)) = candidate
        .grounding_metadata
        .and_then(|g| g.into_search(mint_id("ws_", &opts.request_id, 0)))
    {
        out.content.extend(pages.into_iter().map(Out::Citation));
        out.content.push(Out::WebSearch(search));
    }
    out.stop = Stop::from_gemini(candidate.finish_reason.as_deref().unwrap_or("STOP"));
    if calls > 0 && out.stop == Stop::EndTurn {
        // Gemini says STOP even when it called a function (§4.4).
        out.stop = Stop::ToolUse;
    }
    Ok(out)
}

// ------------------------------------------------------------------ canonical → client

pub(crate) fn write(resp: &Response<'_>, opts: &ResponseOptions) -> Vec<u8> {
    let mut parts = Vec::with_capacity(resp.content.len());
    for c in &resp.content {
        match c {
            Out::WebSearch(_) | Out::Citation(_) => {}
            Out::Text(t) | Out::Refusal(t) => parts.push(PartOut {
                text: Some(Cow::Borrowed(t)),
                ..PartOut::default()
            }),
            // Another provider's signature rides where Gemini clients keep Gemini's own, and
            // comes back with the part on the next turn.
            Out::Thinking { text, signature } => parts.push(PartOut {
                text: Some(Cow::Borrowed(text)),
                thought: Some(true),
                thought_signature: signature
                    .as_deref()
                    .map(crate::translate::util::foreign_thought_signature),
                ..PartOut::default()
            }),
            Out::RedactedThinking(_) => {}
            Out::ToolCall { id, name, args } => parts.push(PartOut {
                function_call: Some(FunctionCallOut {
                    id: Some(id),
                    name,
                    args: args.to_object(),
                }),
                ..PartOut::default()
            }),
        }
    }
    let out = GenerateResponseOut {
        candidates: [CandidateOut {
            content: ContentRefOut {
                role: "model",
                parts: &parts,
            },
            finish_reason: Some(resp.stop.gemini()),
            index: 0,
        }],
        usage_metadata: Some(usage_to(&resp.usage)),
        model_version: resp.model.as_deref().unwrap_or(&opts.model),
        response_id: resp.id.as_deref().unwrap_or(&opts.request_id),
    };
    to_body(&out)
}
