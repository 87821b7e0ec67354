//! Output items of the Responses emitter: opening, closing (with their `.done` events) and the
//! terminal event (§11.10, §11.11).

use std::borrow::Cow;

use bytes::BytesMut;

use super::emitter::{emit, Emitter, OpenItem, OpenKind};
use super::response::{annotation, call_item, carrier, item_id, search_item};
use super::wire_out::*;
use crate::translate::ir::{SearchCall, ToolKind};

impl Emitter {
    pub(super) fn next_index(&self) -> u32 {
        self.items.len() as u32
    }

    pub(super) fn open_message(&mut self, out: &mut BytesMut) {
        let index = self.next_index();
        let id = item_id("msg_", &self.id, index as usize);
        let item = ItemOut::Message {
            id: Cow::Borrowed(&id),
            status: "in_progress",
            role: "assistant",
            content: Vec::new(),
        };
        let seq = self.seq();
        emit(
            out,
            &EventOut::ItemAdded {
                sequence_number: seq,
                output_index: index,
                item: &item,
            },
        );
        let part = TextPartOut {
            annotations: Vec::new(),
            logprobs: [],
            text: Cow::Borrowed(""),
        };
        let seq = self.seq();
        emit(
            out,
            &EventOut::PartAdded {
                sequence_number: seq,
                item_id: &id,
                output_index: index,
                content_index: 0,
                part,
            },
        );
        self.open = Some(OpenItem {
            index,
            id,
            kind: OpenKind::Message {
                text: String::new(),
            },
        });
    }

    pub(super) fn open_reasoning(&mut self, out: &mut BytesMut, redacted: Option<String>) {
        let index = self.next_index();
        let id = item_id("rs_", &self.id, index as usize);
        let item = ItemOut::Reasoning {
            id: Cow::Borrowed(&id),
            summary: Vec::new(),
            encrypted_content: None,
        };
        let seq = self.seq();
        emit(
            out,
            &EventOut::ItemAdded {
                sequence_number: seq,
                output_index: index,
                item: &item,
            },
        );
        // Codex needs the summary part before its deltas (§11.15).
        let summary = self.ctx.reasoning_summary && redacted.is_none();
        if summary {
            let seq = self.seq();
            let part = SummaryPartOut {
                text: Cow::Borrowed(""),
            };
            emit(
                out,
                &EventOut::SummaryPartAdded {
                    sequence_number: seq,
                    item_id: &id,
                    output_index: index,
                    summary_index: 0,
                    part,
                },
            );
        }
        self.open = Some(OpenItem {
            index,
            id,
            kind: OpenKind::Reasoning {
                text: String::new(),
                signature: None,
                redacted,
                summary,
            },
        });
    }

    /// A search the provider ran: its item and events at once (the provider reports it
    /// complete).
    pub(super) fn search(&mut self, call: &SearchCall<'_>, out: &mut BytesMut) {
        let index = self.next_index();
        let id = item_id("ws_", &self.id, index as usize);
        let mut item = search_item(id.clone(), call);
        if let ItemOut::WebSearchCall { status, .. } = &mut item {
            *status = "in_progress";
        }
        let seq = self.seq();
        emit(
            out,
            &EventOut::ItemAdded {
                sequence_number: seq,
                output_index: index,
                item: &item,
            },
        );
        for step in 0..3 {
            let sequence_number = self.seq();
            let (item_id, output_index) = (id.as_str(), index);
            let ev = match step {
                0 => EventOut::SearchInProgress {
                    sequence_number,
                    item_id,
                    output_index,
                },
                1 => EventOut::SearchSearching {
                    sequence_number,
                    item_id,
                    output_index,
                },
                _ => EventOut::SearchCompleted {
                    sequence_number,
                    item_id,
                    output_index,
                },
            };
            emit(out, &ev);
        }
        if let ItemOut::WebSearchCall { status, .. } = &mut item {
            *status = "completed";
        }
        let seq = self.seq();
        emit(
            out,
            &EventOut::ItemDone {
                sequence_number: seq,
                output_index: index,
                item: &item,
            },
        );
        self.items.push(item);
    }

    pub(super) fn close(&mut self, status: &'static str, out: &mut BytesMut) {
        let Some(OpenItem { index, id, kind }) = self.open.take() else {
            return;
        };
        let item = match kind {
            OpenKind::Message { text } => {
                // The pages this text cites: OpenAI announces each before the text is done.
                let annotations: Vec<AnnotationOut<'static>> = self
                    .cites
                    .drain(..)
                    .map(|cited| annotation(&text, 0, &cited))
                    .collect();
                for (annotation_index, annotation) in annotations.iter().enumerate() {
                    let seq = self.seq();
                    emit(
                        out,
                        &EventOut::AnnotationAdded {
                            sequence_number: seq,
                            item_id: &id,
                            output_index: index,
                            content_index: 0,
                            annotation_index,
                            annotation,
                        },
                    );
                }
                let seq = self.seq();
                emit(
                    out,
                    &EventOut::TextDone {
                        sequence_number: seq,
                        item_id: &id,
                        output_index: index,
                        content_index: 0,
                        text: &text,
                        logprobs: [],
                    },
                );
                let part = TextPartOut {
                    annotations: annotations.clone(),
                    logprobs: [],
                    text: Cow::Borrowed(&text),
                };
                let seq = self.seq();
                emit(
                    out,
                    &EventOut::PartDone {
                        sequence_number: seq,
                        item_id: &id,
                        output_index: index,
                        content_index: 0,
                        part,
                    },
                );
                let part = TextPartOut {
                    annotations,
                    logprobs: [],
                    text: Cow::Owned(text),
                };
                ItemOut::Message {
                    id: Cow::Owned(id),
                    status,
                    role: "assistant",
                    content: vec![part],
                }
            }
            OpenKind::Call {
                call_id,
                name,
                args,
                kind,
                ..
            } => {
                let item = call_item(id, "completed", &call_id, &name, &args, &self.ctx);
                match (&item, kind) {
                    (_, ToolKind::Function) => {
                        let seq = self.seq();
                        emit(
                            out,
                            &EventOut::ArgsDone {
                                sequence_number: seq,
                                item_id: item_id_of(&item),
                                output_index: index,
                                arguments: &args,
                            },
                        );
                    }
                    // Custom input is emitted decoded, once complete (§11.11 `args`).
                    (ItemOut::CustomToolCall { id, input, .. }, ToolKind::Custom) => {
                        let seq = self.seq();
                        emit(
                            out,
                            &EventOut::CustomDelta {
                                sequence_number: seq,
                                item_id: id,
                                output_index: index,
                                delta: input,
                            },
                        );
                        let seq = self.seq();
                        emit(
                            out,
                            &EventOut::CustomDone {
                                sequence_number: seq,
                                item_id: id,
                                output_index: index,
                                input,
                            },
                        );
                    }
                    _ => {}
                }
                item
            }
            OpenKind::Reasoning {
                text,
                signature,
                redacted,
                summary,
            } => {
                if summary {
                    let seq = self.seq();
                    emit(
                        out,
                        &EventOut::SummaryDone {
                            sequence_number: seq,
                            item_id: &id,
                            output_index: index,
                            summary_index: 0,
                            text: &text,
                        },
                    );
                    let seq = self.seq();
                    let part = SummaryPartOut {
                        text: Cow::Borrowed(&text),
                    };
                    emit(
                        out,
                        &EventOut::SummaryPartDone {
                            sequence_number: seq,
                            item_id: &id,
                            output_index: index,
                            summary_index: 0,
                            part,
                        },
                    );
                }
                let encrypted_content =
                    carrier(&text, signature.as_deref(), redacted.as_deref(), &self.ctx);
                let summary = if summary {
                    vec![SummaryPartOut {
                        text: Cow::Owned(text),
                    }]
                } else {
                    Vec::new()
                };
                ItemOut::Reasoning {
                    id: Cow::Owned(id),
                    summary,
                    encrypted_content,
                }
            }
        };
        let seq = self.seq();
        emit(
            out,
            &EventOut::ItemDone {
                sequence_number: seq,
                output_index: index,
                item: &item,
            },
        );
        self.items.push(item);
    }

    pub(super) fn terminal(&mut self, out: &mut BytesMut, error: Option<(&str, &str)>) {
        let incomplete = self.stop.responses_incomplete();
        let seq = self.seq();
        let mut response = ResponseOut::new(&self.id, self.opts.created, &self.model, &self.items);
        response.usage = Some(super::usage_to(&self.usage));
        response.store = self.ctx.stored;
        let ev = match error {
            Some((code, message)) => {
                response.status = "failed";
                response.error = Some(ResponseErrorOut { code, message });
                EventOut::Failed {
                    sequence_number: seq,
                    response: &response,
                }
            }
            None if incomplete.is_some() => {
                response.status = "incomplete";
                response.incomplete_details = incomplete.map(|reason| IncompleteOut { reason });
                EventOut::Incomplete {
                    sequence_number: seq,
                    response: &response,
                }
            }
            None => {
                response.status = "completed";
                EventOut::Completed {
                    sequence_number: seq,
                    response: &response,
                }
            }
        };
        emit(out, &ev);
    }
}

fn item_id_of<'r>(item: &'r ItemOut<'_>) -> &'r str {
    match item {
        ItemOut::Message { id, .. }
        | ItemOut::FunctionCall { id, .. }
        | ItemOut::CustomToolCall { id, .. }
        | ItemOut::LocalShellCall { id, .. }
        | ItemOut::WebSearchCall { id, .. }
        | ItemOut::Reasoning { id, .. } => id,
    }
}
