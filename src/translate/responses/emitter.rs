//! Canonical events → the typed Responses events a client expects, with `sequence_number`s
//! (§11.10, §11.11 "emitter").

use bytes::BytesMut;

use super::response::{call_item, item_id};
use super::wire_out::*;
use crate::translate::errors::responses_code;
use crate::translate::ir::*;
use crate::translate::stream::Sink;
use crate::translate::util::{prefixed, write_sse, Framing};
use crate::translate::{ResponseContext, ResponseOptions};
use crate::usage::Usage;

#[derive(Clone, Debug)]
pub(super) enum OpenKind {
    Message {
        text: String,
    },
    Call {
        key: u32,
        call_id: String,
        name: String,
        args: String,
        kind: ToolKind,
    },
    Reasoning {
        text: String,
        signature: Option<String>,
        redacted: Option<String>,
        summary: bool,
    },
}

#[derive(Clone, Debug)]
pub(super) struct OpenItem {
    pub index: u32,
    pub id: String,
    pub kind: OpenKind,
}

#[derive(Clone, Debug)]
pub(crate) struct Emitter {
    pub(super) opts: ResponseOptions,
    pub(super) ctx: ResponseContext,
    pub(super) id: String,
    pub(super) model: String,
    pub(super) seq: u64,
    pub(super) started: bool,
    pub(super) closed: bool,
    /// Final copies of the closed items, for the terminal event's `output` (the protocol
    /// repeats the whole answer there, so it has to be kept).
    pub(super) items: Vec<ItemOut<'static>>,
    pub(super) open: Option<OpenItem>,
    pub(super) stop: Stop<'static>,
    pub(super) usage: Usage,
    /// Pages the current text cites, annotated on the message when it closes.
    pub(super) cites: Vec<Cited<'static>>,
}

pub(super) fn emit(out: &mut BytesMut, ev: &EventOut<'_>) {
    write_sse(out, Framing::Lf, Some(ev.name()), ev);
}

impl Emitter {
    pub fn new(opts: ResponseOptions, ctx: ResponseContext) -> Self {
        Emitter {
            id: ctx
                .response_id
                .clone()
                .unwrap_or_else(|| prefixed("resp_", &opts.request_id)),
            model: opts.model.clone(),
            opts,
            ctx,
            seq: 0,
            started: false,
            closed: false,
            items: Vec::new(),
            open: None,
            stop: Stop::EndTurn,
            usage: Usage::default(),
            cites: Vec::new(),
        }
    }

    pub(super) fn seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut BytesMut) {
        self.started = true;
        if let (Some(id), None) = (id, &self.ctx.response_id) {
            self.id = prefixed("resp_", id);
        }
        if let Some(model) = model {
            self.model = model.to_owned();
        }
        let response = ResponseOut::new(&self.id, self.opts.created, &self.model, &[]);
        emit(
            out,
            &EventOut::Created {
                sequence_number: self.seq,
                response: &response,
            },
        );
        emit(
            out,
            &EventOut::InProgress {
                sequence_number: self.seq + 1,
                response: &response,
            },
        );
        self.seq += 2;
    }
}

impl Sink for Emitter {
    fn event(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        if self.closed {
            return;
        }
        if !self.started && !matches!(ev, Ev::Usage(_) | Ev::Stop(_)) {
            match &ev {
                Ev::Start { id, model } => return self.start(id.as_deref(), model.as_deref(), out),
                _ => self.start(None, None, out),
            }
        }
        match ev {
            Ev::Start { .. } => {}
            Ev::Text(t) | Ev::Refusal(t) => {
                if !matches!(
                    self.open,
                    Some(OpenItem {
                        kind: OpenKind::Message { .. },
                        ..
                    })
                ) {
                    self.close("completed", out);
                    self.open_message(out);
                }
                let seq = self.seq();
                if let Some(OpenItem {
                    index,
                    id,
                    kind: OpenKind::Message { text },
                }) = &mut self.open
                {
                    text.push_str(&t);
                    emit(
                        out,
                        &EventOut::TextDelta {
                            sequence_number: seq,
                            item_id: id,
                            output_index: *index,
                            content_index: 0,
                            delta: &t,
                            logprobs: [],
                        },
                    );
                }
            }
            Ev::Reasoning(t) => {
                if !matches!(
                    self.open,
                    Some(OpenItem {
                        kind: OpenKind::Reasoning { redacted: None, .. },
                        ..
                    })
                ) {
                    self.close("completed", out);
                    self.open_reasoning(out, None);
                }
                let summary_on = matches!(
                    self.open,
                    Some(OpenItem {
                        kind: OpenKind::Reasoning { summary: true, .. },
                        ..
                    })
                );
                let seq = if summary_on { self.seq() } else { 0 };
                if let Some(OpenItem {
                    index,
                    id,
                    kind: OpenKind::Reasoning { text, .. },
                }) = &mut self.open
                {
                    text.push_str(&t);
                    if summary_on {
                        emit(
                            out,
                            &EventOut::SummaryDelta {
                                sequence_number: seq,
                                item_id: id,
                                output_index: *index,
                                summary_index: 0,
                                delta: &t,
                            },
                        );
                    }
                }
            }
            Ev::ReasoningSignature(s) => {
                if !matches!(
                    self.open,
                    Some(OpenItem {
                        kind: OpenKind::Reasoning { redacted: None, .. },
                        ..
                    })
                ) {
                    self.close("completed", out);
                    self.open_reasoning(out, None);
                }
                if let Some(OpenItem {
                    kind: OpenKind::Reasoning { signature, .. },
                    ..
                }) = &mut self.open
                {
                    signature.get_or_insert_with(String::new).push_str(&s);
                }
            }
            Ev::RedactedReasoning(data) => {
                self.close("completed", out);
                self.open_reasoning(out, Some(data.into_owned()));
                self.close("completed", out);
            }
            Ev::ToolStart { key, id, name } => {
                self.close("completed", out);
                let index = self.next_index();
                let kind = self.ctx.tool_kind(&name);
                let prefix = match kind {
                    ToolKind::Function => "fc_",
                    ToolKind::Custom => "ctc_",
                    ToolKind::LocalShell => "lsh_",
                };
                let item_id = item_id(prefix, &self.id, index as usize);
                let item = call_item(item_id.clone(), "in_progress", &id, &name, "", &self.ctx);
                let seq = self.seq();
                emit(
                    out,
                    &EventOut::ItemAdded {
                        sequence_number: seq,
                        output_index: index,
                        item: &item,
                    },
                );
                self.open = Some(OpenItem {
                    index,
                    id: item_id,
                    kind: OpenKind::Call {
                        key,
                        call_id: id.into_owned(),
                        name: name.into_owned(),
                        args: String::new(),
                        kind,
                    },
                });
            }
            Ev::ToolArgs { key, delta } => {
                let function = matches!(
                    self.open,
                    Some(OpenItem {
                        kind: OpenKind::Call {
                            kind: ToolKind::Function,
                            ..
                        },
                        ..
                    })
                );
                let open_key = match &self.open {
                    Some(OpenItem {
                        kind: OpenKind::Call { key, .. },
                        ..
                    }) => Some(*key),
                    _ => None,
                };
                // Never a delta for an item already closed (§11.11).
                if open_key != Some(key) || delta.is_empty() {
                    return;
                }
                let seq = if function { self.seq() } else { 0 };
                if let Some(OpenItem {
                    index,
                    id,
                    kind: OpenKind::Call { args, .. },
                }) = &mut self.open
                {
                    args.push_str(&delta);
                    if function {
                        emit(
                            out,
                            &EventOut::ArgsDelta {
                                sequence_number: seq,
                                item_id: id,
                                output_index: *index,
                                delta: &delta,
                            },
                        );
                    }
                }
            }
            Ev::BlockEnd => self.close("completed", out),
            Ev::Citation(cited) => self.cites.push(cited.into_owned()),
            Ev::WebSearch(call) => {
                self.close("completed", out);
                self.search(&call, out);
            }
            Ev::Usage(u) => self.usage = u,
            Ev::Stop(s) => self.stop = s.into_owned(),
            Ev::Done => {
                self.closed = true;
                let status = if self.stop.responses_incomplete().is_some() {
                    "incomplete"
                } else {
                    "completed"
                };
                self.close(status, out);
                self.terminal(out, None);
            }
            Ev::Error(e) => {
                // `error` then `response.failed` (§11.11 `fail`).
                self.closed = true;
                let code = responses_code(e.kind);
                let seq = self.seq();
                emit(
                    out,
                    &EventOut::Error {
                        sequence_number: seq,
                        code,
                        message: &e.message,
                        param: None,
                    },
                );
                self.terminal(out, Some((code, &e.message)));
            }
        }
    }
}
