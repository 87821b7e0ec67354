//! Responses typed event streams from an upstream → canonical events (§11.12).

use std::borrow::Cow;

use bytes::BytesMut;

use super::usage_from;
use super::wire::*;
use crate::sse::Event;
use crate::translate::error::TranslateError;
use crate::translate::errors::responses_kind;
use crate::translate::ir::*;
use crate::translate::openai_chat::stream::truncated;
use crate::translate::stream::Sink;
use crate::translate::util::{compact, tag_of, OPENAI_REASONING_PREFIX};

#[derive(Clone, Debug, Default)]
pub(crate) struct Parser {
    started: bool,
    done: bool,
    saw_tool: bool,
    /// The open custom tool call, its arguments being wrapped as `{"input": "…"}` JSON, and
    /// whether any input delta arrived (§11.12).
    custom: Option<(u32, bool)>,
}

impl Parser {
    pub fn frame(
        &mut self,
        ev: &Event<'_>,
        sink: &mut dyn Sink,
        out: &mut BytesMut,
    ) -> Result<(), TranslateError> {
        let data = ev.data();
        if self.done || data.is_empty() {
            return Ok(());
        }
        let name: Cow<'_, str> = match ev.event {
            Some(name) => String::from_utf8_lossy(name),
            None => {
                let raw: &serde_json::value::RawValue = serde_json::from_slice(data)?;
                tag_of(raw, "type")?
                    .map(|t| Cow::Owned(t.into_owned()))
                    .unwrap_or_default()
            }
        };
        let e: StreamEventIn<'_> = serde_json::from_slice(data)?;
        let index = e.output_index.unwrap_or(0);
        match &*name {
            "response.created" => {
                self.started = true;
                let (id, model) = e.response.map_or((None, None), |r| (r.id, r.model));
                sink.event(Ev::Start { id, model }, out);
            }
            "response.output_item.added" => match e.item {
                Some(item) if item.kind == "function_call" => {
                    self.saw_tool = true;
                    sink.event(
                        Ev::ToolStart {
                            key: index,
                            id: item.call_id.unwrap_or_default(),
                            name: item.name.unwrap_or_default(),
                        },
                        out,
                    );
                    if let Some(args) = item.arguments.filter(|a| !a.is_empty()) {
                        sink.event(
                            Ev::ToolArgs {
                                key: index,
                                delta: args,
                            },
                            out,
                        );
                    }
                }
                Some(item) if item.kind == "custom_tool_call" => {
                    self.saw_tool = true;
                    self.custom = Some((index, false));
                    sink.event(
                        Ev::ToolStart {
                            key: index,
                            id: item.call_id.unwrap_or_default(),
                            name: item.name.unwrap_or_default(),
                        },
                        out,
                    );
                    sink.event(
                        Ev::ToolArgs {
                            key: index,
                            delta: Cow::Borrowed("{\"input\":\""),
                        },
                        out,
                    );
                }
                _ => {}
            },
            "response.output_text.delta" => {
                if let Some(d) = e.delta.filter(|d| !d.is_empty()) {
                    sink.event(Ev::Text(d), out);
                }
            }
            "response.refusal.delta" => {
                if let Some(d) = e.delta.filter(|d| !d.is_empty()) {
                    sink.event(Ev::Refusal(d), out);
                }
            }
            "response.function_call_arguments.delta" => {
                if let Some(d) = e.delta.filter(|d| !d.is_empty()) {
                    sink.event(
                        Ev::ToolArgs {
                            key: index,
                            delta: d,
                        },
                        out,
                    );
                }
            }
            "response.custom_tool_call_input.delta" => {
                if let (Some(d), Some((key, seen))) = (e.delta, self.custom.as_mut()) {
                    *seen = true;
                    sink.event(
                        Ev::ToolArgs {
                            key: *key,
                            delta: Cow::Owned(json_escape(&d)),
                        },
                        out,
                    );
                }
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                if let Some(d) = e.delta.filter(|d| !d.is_empty()) {
                    sink.event(Ev::Reasoning(d), out);
                }
            }
            "response.output_item.done" => {
                match e.item {
                    Some(item) if item.kind == "custom_tool_call" => {
                        if let Some((key, seen)) = self.custom.take() {
                            if !seen {
                                if let Some(input) = item.input {
                                    sink.event(
                                        Ev::ToolArgs {
                                            key,
                                            delta: Cow::Owned(json_escape(&input)),
                                        },
                                        out,
                                    );
                                }
                            }
                            sink.event(
                                Ev::ToolArgs {
                                    key,
                                    delta: Cow::Borrowed("\"}"),
                                },
                                out,
                            );
                        }
                    }
                    // local_shell_call has no deltas: the action arrives whole here (§11.10).
                    Some(item) if item.kind == "local_shell_call" => {
                        self.saw_tool = true;
                        sink.event(
                            Ev::ToolStart {
                                key: index,
                                id: item.call_id.unwrap_or_default(),
                                name: Cow::Borrowed("local_shell"),
                            },
                            out,
                        );
                        let action = item
                            .action
                            .map_or(Cow::Borrowed("{}"), |a| compact(a.get()));
                        sink.event(
                            Ev::ToolArgs {
                                key: index,
                                delta: action,
                            },
                            out,
                        );
                    }
                    // OpenAI's encrypted reasoning: its signature for another client to carry
                    // back (the summary streamed as reasoning text before it).
                    Some(item) if item.kind == "reasoning" => {
                        if let Some(encrypted) = item.encrypted_content.filter(|e| !e.is_empty()) {
                            sink.event(
                                Ev::ReasoningSignature(Cow::Owned(format!(
                                    "{OPENAI_REASONING_PREFIX}{encrypted}"
                                ))),
                                out,
                            );
                        }
                    }
                    _ => {}
                }
                sink.event(Ev::BlockEnd, out);
            }
            "response.completed" | "response.incomplete" => {
                self.done = true;
                let response = e.response;
                if let Some(u) = response.as_ref().and_then(|r| r.usage.as_ref()) {
                    sink.event(Ev::Usage(usage_from(u)), out);
                }
                let reason = response
                    .and_then(|r| r.incomplete_details)
                    .and_then(|d| d.reason);
                let stop = match (&*name, reason.as_deref()) {
                    ("response.incomplete", Some("content_filter")) => Stop::Refusal,
                    ("response.incomplete", _) => Stop::MaxTokens,
                    _ if self.saw_tool => Stop::ToolUse,
                    _ => Stop::EndTurn,
                };
                sink.event(Ev::Stop(stop), out);
                sink.event(Ev::Done, out);
            }
            "response.failed" | "error" => {
                self.done = true;
                if let Some(u) = e.response.as_ref().and_then(|r| r.usage.as_ref()) {
                    sink.event(Ev::Usage(usage_from(u)), out);
                }
                // Top-level code/message per [OAI-R], nested as observed (§11.13).
                let nested = e.error.or_else(|| e.response.and_then(|r| r.error));
                let (code, message) = match nested {
                    Some(n) => (e.code.or(n.code), e.message.or(n.message)),
                    None => (e.code, e.message),
                };
                let kind = responses_kind(code.as_deref());
                let message = message.unwrap_or(Cow::Borrowed("upstream response failed"));
                sink.event(
                    Ev::Error(ErrorInfo {
                        kind,
                        message,
                        code,
                        param: None,
                    }),
                    out,
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// A Responses stream must end with a terminal event (§11.15).
    pub fn end(&mut self, sink: &mut dyn Sink, out: &mut BytesMut) {
        if !self.done {
            self.done = true;
            sink.event(Ev::Error(truncated()), out);
        }
    }
}

/// The JSON string-literal body of `s` (escaped, without the quotes).
fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default()
        .to_owned()
}
