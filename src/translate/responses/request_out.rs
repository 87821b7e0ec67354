//! Canonical requests → a Responses-only upstream (§11, reverse of §11.2–11.6).

use std::borrow::Cow;

use super::wire::*;
use crate::format::Format;
use crate::translate::error::TranslateError;
use crate::translate::ir::*;
use crate::translate::util::{to_body, OPENAI_REASONING_PREFIX};
use crate::translate::RequestOptions;

pub(crate) fn write(
    req: &Request<'_>,
    opts: &RequestOptions<'_>,
    dropped: &mut Vec<&'static str>,
) -> Result<Vec<u8>, TranslateError> {
    if req.web_search.is_some() {
        dropped.push("web_search");
    }
    if req.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::unsupported(
            "n",
            Format::OpenAiResponses,
            "the Responses API returns one answer",
        ));
    }
    if !req.stop.is_empty() {
        return Err(TranslateError::unsupported(
            "stop",
            Format::OpenAiResponses,
            "the Responses API has no stop sequences",
        ));
    }
    for (name, set) in [
        ("seed", req.seed.is_some()),
        ("presence_penalty", req.presence_penalty.is_some()),
        ("frequency_penalty", req.frequency_penalty.is_some()),
        ("top_k", req.top_k.is_some()),
    ] {
        if set {
            dropped.push(name);
        }
    }
    let mut instructions: Option<String> = None;
    let mut input = Vec::new();
    let mut started = false;
    for m in &req.messages {
        match m.role {
            Role::System if !started => {
                let text = instructions.get_or_insert_with(String::new);
                for p in &m.parts {
                    if let Part::Text { text: t, .. } = p {
                        if !text.is_empty() {
                            text.push_str("\n\n");
                        }
                        text.push_str(t);
                    }
                }
            }
            Role::System => input.push(message("developer", &m.parts, false)?),
            Role::User => {
                started = true;
                let mut rest = Vec::new();
                for p in &m.parts {
                    match p {
                        Part::ToolResult(r) => {
                            let mut output = String::new();
                            if r.is_error {
                                output.push_str("Error: ");
                            }
                            for c in &r.content {
                                if let Part::Text { text, .. } = c {
                                    output.push_str(text);
                                }
                            }
                            input.push(InputItemOut::FunctionCallOutput {
                                call_id: &r.id,
                                output,
                            });
                        }
                        other => rest.push(other),
                    }
                }
                if !rest.is_empty() {
                    input.push(message_refs("user", &rest, false)?);
                }
            }
            Role::Assistant => {
                started = true;
                // OpenAI's own reasoning, carried by a client of another format: given back
                // first, as OpenAI wants it before the turn's messages and calls.
                for p in &m.parts {
                    if let Part::Thinking {
                        text,
                        signature: Some(signature),
                    } = p
                    {
                        if let Some(encrypted) = signature.strip_prefix(OPENAI_REASONING_PREFIX) {
                            input.push(InputItemOut::Reasoning {
                                encrypted_content: encrypted,
                                summary: if text.is_empty() {
                                    Vec::new()
                                } else {
                                    vec![SummaryTextOut {
                                        kind: "summary_text",
                                        text,
                                    }]
                                },
                            });
                        }
                    }
                }
                let texts: Vec<&Part<'_>> = m
                    .parts
                    .iter()
                    .filter(|p| matches!(p, Part::Text { text, .. } if !text.is_empty()))
                    .collect();
                if !texts.is_empty() {
                    input.push(message_refs("assistant", &texts, true)?);
                }
                for p in &m.parts {
                    if let Part::ToolCall(c) = p {
                        input.push(InputItemOut::FunctionCall {
                            call_id: &c.id,
                            name: &c.name,
                            arguments: c.args.to_json_string(),
                        });
                    }
                }
            }
        }
    }
    let named = |name| ToolChoiceOut::Named {
        kind: "function",
        name,
    };
    let out = ResponsesRequestOut {
        model: opts.model,
        instructions,
        input,
        max_output_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        top_logprobs: req.top_logprobs,
        tools: req
            .tools
            .iter()
            .map(|t| FunctionToolOut {
                kind: "function",
                name: &t.name,
                description: t.description.as_deref(),
                parameters: t.schema.json_schema(),
                strict: t.strict,
            })
            .collect(),
        tool_choice: req.tool_choice.as_ref().map(|c| match c {
            ToolChoice::Auto => ToolChoiceOut::Mode("auto"),
            ToolChoice::None => ToolChoiceOut::Mode("none"),
            ToolChoice::Required => ToolChoiceOut::Mode("required"),
            ToolChoice::Named(name) => named(&**name),
            ToolChoice::Allowed { required, names } => ToolChoiceOut::Allowed {
                kind: "allowed_tools",
                mode: if *required { "required" } else { "auto" },
                tools: names.iter().map(|n| named(&**n)).collect(),
            },
        }),
        parallel_tool_calls: req.parallel_tool_calls,
        reasoning: match req.thinking {
            None | Some(Thinking::Disabled) => None,
            Some(t) => Some(ReasoningOut {
                effort: t.effort().as_str(),
                summary: req.include_thoughts.then_some("auto"),
            }),
        },
        text: match (&req.format, &req.openai.verbosity) {
            (None, None) => None,
            (format, verbosity) => Some(TextConfigOut {
                format: format.as_ref().map(|f| match f {
                    OutputFormat::JsonObject => TextFormatOut {
                        kind: "json_object",
                        name: None,
                        description: None,
                        schema: None,
                        strict: None,
                    },
                    OutputFormat::JsonSchema {
                        name,
                        description,
                        schema,
                        strict,
                    } => TextFormatOut {
                        kind: "json_schema",
                        name: Some(name.as_deref().unwrap_or("response")),
                        description: description.as_deref(),
                        schema: schema.json_schema_opt(),
                        strict: *strict,
                    },
                }),
                verbosity: verbosity.as_deref(),
            }),
        },
        store: req.openai.store.unwrap_or(false),
        stream: opts.stream,
        user: req.user.as_deref(),
        safety_identifier: req.openai.safety_identifier.as_deref(),
        prompt_cache_key: req.openai.prompt_cache_key.as_deref(),
        service_tier: req.openai.service_tier.as_deref(),
        metadata: req.openai.metadata,
    };
    Ok(to_body(&out))
}

fn message<'r>(
    role: &'static str,
    parts: &'r [Part<'_>],
    assistant: bool,
) -> Result<InputItemOut<'r>, TranslateError> {
    let refs: Vec<&Part<'_>> = parts.iter().collect();
    message_refs(role, &refs, assistant)
}

fn message_refs<'r>(
    role: &'static str,
    parts: &[&'r Part<'_>],
    assistant: bool,
) -> Result<InputItemOut<'r>, TranslateError> {
    let mut content = Vec::with_capacity(parts.len());
    for p in parts {
        match p {
            Part::Text { text, .. } if assistant => content.push(ContentPartOut::OutputText {
                text: Cow::Borrowed(text),
            }),
            Part::Text { text, .. } => content.push(ContentPartOut::InputText {
                text: Cow::Borrowed(text),
            }),
            Part::Media {
                kind: MediaKind::Image,
                source,
                ..
            } => content.push(match source {
                Source::Base64 { mime, data } => ContentPartOut::InputImage {
                    image_url: Cow::Owned(format!("data:{mime};base64,{data}")),
                },
                Source::Url { url, .. } => ContentPartOut::InputImage {
                    image_url: Cow::Borrowed(url),
                },
                Source::FileId(id) => ContentPartOut::InputFile {
                    file_data: None,
                    file_url: None,
                    file_id: Some(id),
                },
            }),
            Part::Media { source, .. } => content.push(match source {
                Source::Base64 { mime, data } => ContentPartOut::InputFile {
                    file_data: Some(format!("data:{mime};base64,{data}")),
                    file_url: None,
                    file_id: None,
                },
                Source::Url { url, .. } => ContentPartOut::InputFile {
                    file_data: None,
                    file_url: Some(url),
                    file_id: None,
                },
                Source::FileId(id) => ContentPartOut::InputFile {
                    file_data: None,
                    file_url: None,
                    file_id: Some(id),
                },
            }),
            // Reasoning from other providers cannot be replayed to OpenAI (§11.5).
            _ => {}
        }
    }
    Ok(InputItemOut::Message { role, content })
}
