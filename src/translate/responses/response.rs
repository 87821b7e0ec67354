//! OpenAI Responses non-streaming bodies: upstream Response → canonical (§11.12 reverse),
//! canonical → client Response object (§11.7).

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::wire::*;
use super::wire_out::*;
use super::{usage_from, usage_to};
use crate::translate::error::TranslateError;
use crate::translate::ir::*;
use crate::translate::util::{
    encode_carrier, fnv1a, prefixed, to_body, to_raw, Carrier, OPENAI_REASONING_PREFIX,
};
use crate::translate::{ResponseContext, ResponseOptions};

// ------------------------------------------------------------------ upstream → canonical

pub(crate) fn parse(body: &[u8]) -> Result<Response<'_>, TranslateError> {
    let r: ResponseIn<'_> = serde_json::from_slice(body)?;
    let mut out = Response {
        id: r.id,
        model: r.model,
        created: r.created_at,
        usage: r.usage.as_ref().map(usage_from).unwrap_or_default(),
        ..Response::default()
    };
    for item in r.output {
        output_item(item, &mut out.content)?;
    }
    out.stop = match r.status.as_deref() {
        Some("failed") => {
            let message = r
                .error
                .and_then(|e| e.message)
                .unwrap_or(Cow::Borrowed("upstream response failed"));
            return Err(TranslateError::UpstreamFailed(message.into_owned()));
        }
        Some("incomplete") => match r.incomplete_details.and_then(|d| d.reason).as_deref() {
            Some("content_filter") => Stop::Refusal,
            _ => Stop::MaxTokens,
        },
        _ if out.has_tool_calls() => Stop::ToolUse,
        _ => Stop::EndTurn,
    };
    Ok(out)
}

/// One upstream output item as canonical content (§11.12).
pub(crate) fn output_item<'a>(
    item: OutputItemIn<'a>,
    out: &mut Vec<Out<'a>>,
) -> Result<(), TranslateError> {
    match &*item.kind {
        "message" => {
            for part in item.content {
                match part {
                    ContentPart::Text(t) => out.push(Out::Text(t.text)),
                    ContentPart::Refusal(r) => out.push(Out::Refusal(r.refusal)),
                    _ => {}
                }
            }
        }
        "function_call" => out.push(Out::ToolCall {
            id: item.call_id.unwrap_or_default(),
            name: item.name.unwrap_or_default(),
            args: Args::Text(item.arguments.unwrap_or_default()),
        }),
        // Custom tools reach other clients as functions taking `{"input": …}` (§11.12).
        "custom_tool_call" => out.push(Out::ToolCall {
            id: item.call_id.unwrap_or_default(),
            name: item.name.unwrap_or_default(),
            args: Args::Text(Cow::Owned(serde_json::to_string(
                &serde_json::json!({ "input": item.input.unwrap_or_default() }),
            )?)),
        }),
        "local_shell_call" => out.push(Out::ToolCall {
            id: item.call_id.unwrap_or_default(),
            name: Cow::Borrowed("local_shell"),
            args: item
                .action
                .map_or(Args::Text(Cow::Borrowed("{}")), Args::Json),
        }),
        "reasoning" => {
            let mut text = String::new();
            for part in item.summary.into_iter().chain(item.content) {
                if let ContentPart::Text(t) = part {
                    text.push_str(&t.text);
                }
            }
            // The summary is reasoning text for other clients (§11.12); the encrypted state
            // rides as its signature, so that the next turn can give it back to OpenAI.
            let signature = item
                .encrypted_content
                .filter(|e| !e.is_empty())
                .map(|e| Cow::Owned(format!("{OPENAI_REASONING_PREFIX}{e}")));
            if !text.is_empty() || signature.is_some() {
                out.push(Out::Thinking {
                    text: Cow::Owned(text),
                    signature,
                });
            }
        }
        // Hosted-tool items have no meaning for other clients.
        _ => {}
    }
    Ok(())
}

// ------------------------------------------------------------------ canonical → client

/// Deterministic item ids (`msg_…`, `fc_…`, `rs_…`) from the response id and output index.
/// The `web_search_call` item of a search the provider ran.
pub(crate) fn search_item(id: String, call: &SearchCall<'_>) -> ItemOut<'static> {
    ItemOut::WebSearchCall {
        id: Cow::Owned(id),
        status: "completed",
        action: SearchActionOut {
            query: Cow::Owned(call.queries.join("; ")),
            sources: call
                .sources
                .iter()
                .map(|s| SearchSourceOut {
                    url: Cow::Owned(s.url.to_string()),
                })
                .collect(),
        },
    }
}

/// A `url_citation` over `text[from..]` (a byte offset), in characters as OpenAI counts.
pub(crate) fn annotation(text: &str, from: usize, cited: &Cited<'_>) -> AnnotationOut<'static> {
    let from = from.min(text.len());
    let start_index = text.get(..from).map_or(0, |t| t.chars().count());
    let end_index = start_index + text.get(from..).map_or(0, |t| t.chars().count());
    AnnotationOut {
        start_index,
        end_index,
        url: Cow::Owned(cited.url.to_string()),
        title: Cow::Owned(cited.title.as_deref().unwrap_or_default().to_owned()),
    }
}

pub(crate) fn item_id(prefix: &str, response_id: &str, index: usize) -> String {
    format!("{prefix}{:016x}{index:04}", fnv1a(response_id.as_bytes()))
}

/// The raw text of a custom tool call: the `input` string of its `{"input": …}` arguments
/// (§11.4); arguments of another shape are passed as they are.
pub(crate) fn custom_input(args: &str) -> Cow<'_, str> {
    #[derive(serde::Deserialize)]
    struct Wrapped<'a> {
        #[serde(borrow)]
        input: Cow<'a, str>,
    }
    match serde_json::from_str::<Wrapped<'_>>(args) {
        Ok(w) => w.input,
        Err(_) => Cow::Borrowed(args),
    }
}

/// A `local_shell` function call's arguments as a `local_shell_call` action (§11.4).
pub(crate) fn local_shell_action(args: &str) -> Box<RawValue> {
    #[derive(serde::Deserialize)]
    struct ArgsIn<'a> {
        #[serde(borrow, default)]
        command: Vec<Cow<'a, str>>,
        #[serde(borrow)]
        workdir: Option<Cow<'a, str>>,
        timeout_ms: Option<u64>,
    }
    #[derive(serde::Serialize)]
    struct Action<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        command: &'a [Cow<'a, str>],
        working_directory: Option<&'a str>,
        timeout_ms: Option<u64>,
        env: super::wire_out::Empty,
    }
    let parsed: ArgsIn<'_> = serde_json::from_str(args).unwrap_or(ArgsIn {
        command: Vec::new(),
        workdir: None,
        timeout_ms: None,
    });
    to_raw(&Action {
        kind: "exec",
        command: &parsed.command,
        working_directory: parsed.workdir.as_deref(),
        timeout_ms: parsed.timeout_ms,
        env: super::wire_out::Empty {},
    })
}

/// The call item for a tool call, of the kind the client declared (§11.4).
pub(crate) fn call_item(
    id: String,
    status: &'static str,
    call_id: &str,
    name: &str,
    arguments: &str,
    ctx: &ResponseContext,
) -> ItemOut<'static> {
    let call_id = Cow::Owned(call_id.to_owned());
    let kind = ctx.tool_kind(name);
    // A namespaced tool goes back under the name and namespace the client declared.
    let (namespace, name) = match ctx.namespace_of(name) {
        Some((ns, original)) => (Some(Cow::Owned(ns.to_owned())), original),
        None => (None, name),
    };
    match kind {
        ToolKind::Function => ItemOut::FunctionCall {
            id: Cow::Owned(id),
            status,
            arguments: Cow::Owned(arguments.to_owned()),
            call_id,
            name: Cow::Owned(name.to_owned()),
            namespace,
        },
        ToolKind::Custom => ItemOut::CustomToolCall {
            id: Cow::Owned(id),
            status,
            call_id,
            name: Cow::Owned(name.to_owned()),
            input: Cow::Owned(custom_input(arguments).into_owned()),
            namespace,
        },
        ToolKind::LocalShell => ItemOut::LocalShellCall {
            id: Cow::Owned(id),
            status,
            call_id,
            action: Cow::Owned(local_shell_action(arguments)),
        },
    }
}

/// The `encrypted_content` carrier for Anthropic thinking (§11.5), when the client replays it.
pub(crate) fn carrier(
    text: &str,
    signature: Option<&str>,
    redacted: Option<&str>,
    ctx: &ResponseContext,
) -> Option<Cow<'static, str>> {
    if !ctx.reasoning_carrier || (signature.is_none_or(str::is_empty) && redacted.is_none()) {
        return None;
    }
    let c = Carrier {
        thinking: redacted.is_none().then_some(Cow::Borrowed(text)),
        signature: signature.map(Cow::Borrowed),
        redacted: redacted.map(Cow::Borrowed),
    };
    Some(Cow::Owned(encode_carrier(&c, &ctx.seal)))
}

pub(crate) fn write(resp: &Response<'_>, opts: &ResponseOptions, ctx: &ResponseContext) -> Vec<u8> {
    let id = match &ctx.response_id {
        Some(id) => id.clone(),
        None => prefixed("resp_", resp.id.as_deref().unwrap_or(&opts.request_id)),
    };
    let incomplete = resp.stop.responses_incomplete();
    let item_status = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    };
    let mut items: Vec<ItemOut<'_>> = Vec::with_capacity(resp.content.len());
    // Where the last text run began in the open message (bytes): a citation covers it.
    let mut run_start = 0;
    for c in &resp.content {
        let n = items.len();
        match c {
            Out::WebSearch(call) => items.push(search_item(item_id("ws_", &id, n), call)),
            Out::Citation(cited) => {
                if let Some(ItemOut::Message { content, .. }) = items.last_mut() {
                    if let Some(part) = content.first_mut() {
                        let annotation = annotation(&part.text, run_start, cited);
                        part.annotations.push(annotation);
                    }
                }
            }
            Out::Text(t) | Out::Refusal(t) => match items.last_mut() {
                // Text continues the open message; a new message starts after a call or
                // reasoning item (§11.7).
                Some(ItemOut::Message { content, .. }) => {
                    if let Some(part) = content.first_mut() {
                        run_start = part.text.len();
                        part.text.to_mut().push_str(t);
                    }
                }
                _ => items.push({
                    run_start = 0;
                    ItemOut::Message {
                        id: Cow::Owned(item_id("msg_", &id, n)),
                        status: item_status,
                        role: "assistant",
                        content: vec![TextPartOut {
                            annotations: Vec::new(),
                            logprobs: [],
                            text: Cow::Borrowed(t),
                        }],
                    }
                }),
            },
            Out::Thinking { text, signature } => items.push(ItemOut::Reasoning {
                id: Cow::Owned(item_id("rs_", &id, n)),
                summary: if ctx.reasoning_summary && !text.is_empty() {
                    vec![SummaryPartOut {
                        text: Cow::Borrowed(text),
                    }]
                } else {
                    Vec::new()
                },
                encrypted_content: carrier(text, signature.as_deref(), None, ctx),
            }),
            Out::RedactedThinking(data) => items.push(ItemOut::Reasoning {
                id: Cow::Owned(item_id("rs_", &id, n)),
                summary: Vec::new(),
                encrypted_content: carrier("", None, Some(data), ctx),
            }),
            Out::ToolCall {
                id: call_id,
                name,
                args,
            } => items.push(call_item(
                item_id("fc_", &id, n),
                "completed",
                call_id,
                name,
                &args.to_json_string(),
                ctx,
            )),
        }
    }
    let mut out = ResponseOut::new(
        &id,
        resp.created.unwrap_or(opts.created),
        resp.model.as_deref().unwrap_or(&opts.model),
        &items,
    );
    out.status = if incomplete.is_some() {
        "incomplete"
    } else {
        "completed"
    };
    out.incomplete_details = incomplete.map(|reason| IncompleteOut { reason });
    out.usage = Some(usage_to(&resp.usage));
    out.store = ctx.stored;
    to_body(&out)
}
