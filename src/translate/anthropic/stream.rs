//! Anthropic event streams: upstream events → canonical events (§6.5, §11.11 "Anthropic event
//! adapter"), canonical events → client events (§6.3, §6.6, §6.8).

use std::borrow::Cow;

use bytes::BytesMut;

use super::wire::*;
use super::{usage_from, usage_to};
use crate::sse::Event;
use crate::translate::error::TranslateError;
use crate::translate::errors::{anthropic_kind, anthropic_shape};
use crate::translate::ir::*;
use crate::translate::openai_chat::stream::truncated;
use crate::translate::stream::Sink;
use crate::translate::util::{
    anthropic_tool_id, compact, is_object, prefixed, tag_of, write_sse, Framing,
};
use crate::translate::ResponseOptions;
use crate::usage::Usage;

// ------------------------------------------------------------------ upstream → canonical

/// The most of a web search's input held until its results arrive.
const MAX_SEARCH_INPUT: usize = 4096;
/// The most web searches awaiting their results at once.
const MAX_OPEN_SEARCHES: usize = 16;

#[derive(Clone, Debug, Default)]
pub(crate) struct Parser {
    /// Usage as last reported: `message_start` has the input side, `message_delta` the
    /// cumulative output (and, in the current API, repeated input counts). Fields are
    /// overwritten, never added (§5.2).
    usage: UsageIn,
    stop: Option<Stop<'static>>,
    done: bool,
    /// Anthropic's web searches in progress: block index, server tool id, the query's JSON
    /// as it streams. Reported whole when their results arrive.
    searches: Vec<(u32, String, String)>,
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
        // The event name equals `data.type` (§6.1); dispatching on it lets each payload be
        // parsed straight into its own borrowed struct.
        let name: Cow<'_, [u8]> = match ev.event {
            Some(name) => Cow::Borrowed(name),
            None => {
                let raw: &serde_json::value::RawValue = serde_json::from_slice(data)?;
                tag_of(raw, "type")?
                    .map(|t| Cow::Owned(t.into_owned().into_bytes()))
                    .unwrap_or_default()
            }
        };
        match &*name {
            b"message_start" => {
                let m: MessageStart<'_> = serde_json::from_slice(data)?;
                self.usage = m.message.usage;
                sink.event(Ev::Usage(usage_from(&self.usage)), out);
                sink.event(
                    Ev::Start {
                        id: m.message.id,
                        model: m.message.model,
                    },
                    out,
                );
            }
            b"content_block_start" => {
                let b: ContentBlockStart<'_> = serde_json::from_slice(data)?;
                match b.content_block {
                    Block::Text(t) if !t.text.is_empty() => sink.event(Ev::Text(t.text), out),
                    Block::Text(_) => {}
                    Block::Thinking(t) if !t.thinking.is_empty() => {
                        sink.event(Ev::Reasoning(t.thinking), out)
                    }
                    Block::Thinking(_) => {}
                    Block::RedactedThinking(r) => sink.event(Ev::RedactedReasoning(r.data), out),
                    Block::ServerToolUse(t) => {
                        let input = t
                            .input
                            .map(|i| compact(i.get()).into_owned())
                            .filter(|i| i != "{}")
                            .unwrap_or_default();
                        // Searches whose results never came are not held forever.
                        if self.searches.len() >= MAX_OPEN_SEARCHES {
                            self.searches.remove(0);
                        }
                        self.searches.push((b.index, t.id.into_owned(), input));
                    }
                    Block::SearchResult(r) => {
                        let query = self
                            .searches
                            .iter()
                            .position(|(_, id, _)| *id == r.tool_use_id)
                            .map(|at| self.searches.remove(at).2)
                            .and_then(|input| search_query(&input));
                        sink.event(
                            Ev::WebSearch(SearchCall {
                                sources: r.sources(),
                                queries: query.map(Cow::Owned).into_iter().collect(),
                                id: r.tool_use_id,
                            }),
                            out,
                        );
                    }
                    Block::ToolUse(t) => {
                        sink.event(
                            Ev::ToolStart {
                                key: b.index,
                                id: t.id,
                                name: t.name,
                            },
                            out,
                        );
                        // Input normally streams as input_json_delta from `{}`.
                        if let Some(input) =
                            t.input.filter(|i| is_object(i) && compact(i.get()) != "{}")
                        {
                            sink.event(
                                Ev::ToolArgs {
                                    key: b.index,
                                    delta: compact(input.get()),
                                },
                                out,
                            );
                        }
                    }
                    // Server-tool blocks and future block types: nothing to translate.
                    _ => {}
                }
            }
            b"content_block_delta" => {
                let d = super::delta::parse(data)?;
                let delta = d.delta;
                match &*delta.kind {
                    "text_delta" => {
                        if let Some(t) = delta.text.filter(|t| !t.is_empty()) {
                            sink.event(Ev::Text(t), out);
                        }
                    }
                    "input_json_delta" => {
                        // A web search's query: kept for the search's item, not a call.
                        if let Some((_, _, input)) = self
                            .searches
                            .iter_mut()
                            .find(|(index, ..)| *index == d.index)
                        {
                            // A query is short; a provider that streams more is not held.
                            let fragment = delta.partial_json.as_deref().unwrap_or_default();
                            if input.len() + fragment.len() <= MAX_SEARCH_INPUT {
                                input.push_str(fragment);
                            }
                            return Ok(());
                        }
                        // The first fragment is often "" (§6.3).
                        if let Some(j) = delta.partial_json.filter(|j| !j.is_empty()) {
                            sink.event(
                                Ev::ToolArgs {
                                    key: d.index,
                                    delta: j,
                                },
                                out,
                            );
                        }
                    }
                    "thinking_delta" => {
                        if let Some(t) = delta.thinking.filter(|t| !t.is_empty()) {
                            sink.event(Ev::Reasoning(t), out);
                        }
                    }
                    "signature_delta" => {
                        if let Some(s) = delta.signature {
                            sink.event(Ev::ReasoningSignature(s), out);
                        }
                    }
                    "citations_delta" => {
                        if let Some(cited) = delta.citation.and_then(CitationIn::cited) {
                            sink.event(Ev::Citation(cited), out);
                        }
                    }
                    _ => {}
                }
            }
            b"content_block_stop" => sink.event(Ev::BlockEnd, out),
            b"message_delta" => {
                let d: MessageDelta<'_> = serde_json::from_slice(data)?;
                self.usage.merge(&d.usage);
                sink.event(Ev::Usage(usage_from(&self.usage)), out);
                if let Some(reason) = d.delta.stop_reason {
                    self.stop =
                        Some(Stop::from_anthropic(&reason, d.delta.stop_sequence).into_owned());
                }
            }
            b"message_stop" => self.close(sink, out),
            b"error" => {
                // Mid-stream error after the 200 (§6.9), e.g. overloaded_error.
                let e: ErrorEnvelope<'_> = serde_json::from_slice(data)?;
                self.done = true;
                let message = e.error.message.unwrap_or(Cow::Borrowed("upstream error"));
                let kind = e
                    .error
                    .kind
                    .as_deref()
                    .and_then(|k| anthropic_kind(k, &message))
                    .unwrap_or(ErrorKind::Server);
                sink.event(
                    Ev::Error(ErrorInfo {
                        kind,
                        message,
                        code: None,
                        param: None,
                    }),
                    out,
                );
            }
            // `ping` and event types added later (§6.1: tolerate unknown ones).
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, sink: &mut dyn Sink, out: &mut BytesMut) {
        self.done = true;
        // A missing stop_reason at message_stop means end_turn ([ENVOY], §4.2).
        sink.event(Ev::Stop(self.stop.take().unwrap_or_default()), out);
        sink.event(Ev::Done, out);
    }

    pub fn end(&mut self, sink: &mut dyn Sink, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if self.stop.is_some() {
            // message_delta arrived, only message_stop is missing: the answer is complete.
            self.close(sink, out);
        } else {
            self.done = true;
            sink.event(Ev::Error(truncated()), out);
        }
    }
}

// ------------------------------------------------------------------ canonical → client

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool,
}

#[derive(Clone, Debug)]
pub(crate) struct Emitter {
    opts: ResponseOptions,
    started: bool,
    closed: bool,
    next_block: u32,
    open: Option<(Open, u32)>,
    /// Provider tool key → Anthropic block index (blocks count text and tools, §6.5).
    tools: Vec<(u32, u32)>,
    stop: Stop<'static>,
    usage: Usage,
}

impl Emitter {
    pub fn new(opts: ResponseOptions) -> Self {
        Emitter {
            opts,
            started: false,
            closed: false,
            next_block: 0,
            open: None,
            tools: Vec::new(),
            stop: Stop::EndTurn,
            usage: Usage::default(),
        }
    }

    fn emit(out: &mut BytesMut, ev: &EventOut<'_>) {
        write_sse(out, Framing::Lf, Some(ev.name()), ev);
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut BytesMut) {
        self.started = true;
        let id = prefixed("msg_", id.unwrap_or(&self.opts.request_id));
        let mut usage = usage_to(&self.usage);
        // Output is reported cumulatively in message_delta.
        usage.output_tokens = 0;
        let message = MessageStartOut {
            id: &id,
            kind: "message",
            role: "assistant",
            model: model.unwrap_or(&self.opts.model),
            content: [],
            stop_reason: None,
            stop_sequence: None,
            usage,
        };
        Self::emit(out, &EventOut::MessageStart { message });
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some((_, index)) = self.open.take() {
            Self::emit(out, &EventOut::ContentBlockStop { index });
        }
    }

    /// Makes a block of `kind` the open one, closing another kind first; blocks are strictly
    /// sequential (§6.3).
    fn ensure(&mut self, kind: Open, out: &mut BytesMut) -> u32 {
        match self.open {
            Some((k, index)) if k == kind => index,
            _ => {
                self.close_block(out);
                let index = self.next_block;
                self.next_block += 1;
                let content_block = match kind {
                    Open::Thinking => BlockStartOut::Thinking {
                        thinking: "",
                        signature: "",
                    },
                    _ => BlockStartOut::Text { text: "" },
                };
                Self::emit(
                    out,
                    &EventOut::ContentBlockStart {
                        index,
                        content_block,
                    },
                );
                self.open = Some((kind, index));
                index
            }
        }
    }

    fn delta(out: &mut BytesMut, index: u32, delta: DeltaOut<'_>) {
        super::delta::write(out, index, &delta);
    }
}

impl Sink for Emitter {
    fn event(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        if self.closed {
            return;
        }
        if !self.started && !matches!(ev, Ev::Usage(_) | Ev::Stop(_) | Ev::Error(_)) {
            match &ev {
                Ev::Start { id, model } => return self.start(id.as_deref(), model.as_deref(), out),
                _ => self.start(None, None, out),
            }
        }
        match ev {
            Ev::Start { .. } => {}
            // A refusal is text; the stop reason says `refusal` (§3.4).
            Ev::Text(t) | Ev::Refusal(t) => {
                let index = self.ensure(Open::Text, out);
                Self::delta(out, index, DeltaOut::Text { text: &t });
            }
            Ev::Reasoning(t) => {
                let index = self.ensure(Open::Thinking, out);
                Self::delta(out, index, DeltaOut::Thinking { thinking: &t });
            }
            Ev::ReasoningSignature(s) => {
                let index = self.ensure(Open::Thinking, out);
                Self::delta(out, index, DeltaOut::Signature { signature: &s });
            }
            Ev::RedactedReasoning(data) => {
                self.close_block(out);
                let index = self.next_block;
                self.next_block += 1;
                Self::emit(
                    out,
                    &EventOut::ContentBlockStart {
                        index,
                        content_block: BlockStartOut::RedactedThinking { data: &data },
                    },
                );
                Self::emit(out, &EventOut::ContentBlockStop { index });
            }
            Ev::ToolStart { key, id, name } => {
                self.close_block(out);
                let index = self.next_block;
                self.next_block += 1;
                self.tools.push((key, index));
                let id = anthropic_tool_id(&id);
                let content_block = BlockStartOut::ToolUse {
                    id: &id,
                    name: &name,
                    input: Empty {},
                };
                Self::emit(
                    out,
                    &EventOut::ContentBlockStart {
                        index,
                        content_block,
                    },
                );
                self.open = Some((Open::Tool, index));
            }
            Ev::ToolArgs { key, delta } => {
                if let Some(&(_, index)) = self.tools.iter().rev().find(|(k, _)| *k == key) {
                    if !delta.is_empty() {
                        Self::delta(
                            out,
                            index,
                            DeltaOut::InputJson {
                                partial_json: &delta,
                            },
                        );
                    }
                }
            }
            Ev::BlockEnd => self.close_block(out),
            // Another provider's search and citations have no block an Anthropic client
            // could verify (Anthropic's own pass through untranslated).
            Ev::WebSearch(_) | Ev::Citation(_) => {}
            Ev::Usage(u) => self.usage = u,
            Ev::Stop(s) => self.stop = s.into_owned(),
            Ev::Done => {
                self.closed = true;
                self.close_block(out);
                let stop_sequence = match &self.stop {
                    Stop::Sequence(s) => s.as_deref(),
                    _ => None,
                };
                let delta = StopOut {
                    stop_reason: self.stop.anthropic(),
                    stop_sequence,
                };
                Self::emit(
                    out,
                    &EventOut::MessageDelta {
                        delta,
                        usage: usage_to(&self.usage),
                    },
                );
                Self::emit(out, &EventOut::MessageStop);
            }
            Ev::Error(e) => {
                self.closed = true;
                let (_, kind) = anthropic_shape(e.kind);
                Self::emit(
                    out,
                    &EventOut::Error {
                        error: ErrorOut {
                            kind,
                            message: &e.message,
                        },
                    },
                );
            }
        }
    }
}
