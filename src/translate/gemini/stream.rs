//! Gemini streams: upstream `GenerateContentResponse` chunks → canonical events (§6.4,
//! §6.7, §6.8), canonical events → client chunks (CRLF-framed like Google's).

use std::borrow::Cow;

use bytes::BytesMut;

use super::response::call_id;
use super::wire::*;
use super::{usage_from, usage_to};
use crate::sse::Event;
use crate::translate::error::TranslateError;
use crate::translate::errors::{gemini_error, gemini_shape};
use crate::translate::ir::*;
use crate::translate::openai_chat::stream::truncated;
use crate::translate::stream::Sink;
use crate::translate::util::mint_id;
use crate::translate::util::{compact, write_sse, Framing};
use crate::translate::ResponseOptions;
use crate::usage::Usage;

// ------------------------------------------------------------------ upstream → canonical

#[derive(Clone, Debug)]
pub(crate) struct Parser {
    opts: ResponseOptions,
    started: bool,
    done: bool,
    calls: usize,
    stop: Option<Stop<'static>>,
    /// The latest grounding (Gemini repeats it as it grows), reported with the finish.
    grounding: Option<(SearchCall<'static>, Vec<Cited<'static>>)>,
}

impl Parser {
    pub fn new(opts: &ResponseOptions) -> Self {
        Parser {
            opts: opts.clone(),
            started: false,
            done: false,
            calls: 0,
            stop: None,
            grounding: None,
        }
    }

    /// `frame` is the raw frame: a failing Gemini stream appends a bare, multi-line JSON
    /// error object instead of a `data:` event (§6.1, fx gemini/stream_error_mid_stream.sse).
    pub fn frame(
        &mut self,
        frame: &[u8],
        ev: &Event<'_>,
        sink: &mut dyn Sink,
        out: &mut BytesMut,
    ) -> Result<(), TranslateError> {
        if self.done {
            return Ok(());
        }
        let data: &[u8] = match (&ev.data, ev.bare) {
            (Some(data), _) => data,
            (None, Some(_)) => frame,
            (None, None) => return Ok(()),
        };
        let chunk: GenerateResponse<'_> = serde_json::from_slice(data)?;
        if let Some(err) = chunk.error {
            self.done = true;
            sink.event(Ev::Error(gemini_error(err, 500)), out);
            return Ok(());
        }
        // usageMetadata repeats on every chunk; the last one is final (§5.2). It goes first so
        // that an Anthropic `message_start` can report the prompt size (§6.8).
        if let Some(u) = &chunk.usage_metadata {
            sink.event(Ev::Usage(usage_from(u)), out);
        }
        if !self.started {
            self.started = true;
            sink.event(
                Ev::Start {
                    id: chunk.response_id,
                    model: chunk.model_version,
                },
                out,
            );
        }
        let Some(candidate) = chunk.candidate else {
            if chunk.prompt_feedback.and_then(|f| f.block_reason).is_some() {
                self.stop = Some(Stop::Refusal);
            }
            return Ok(());
        };
        for p in candidate.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(call) = p.function_call {
                // Calls arrive whole (§6.4): start, all arguments, end.
                let id = call_id(
                    call.id.as_deref(),
                    p.thought_signature.as_deref(),
                    &self.opts,
                    self.calls,
                );
                let key = self.calls as u32;
                self.calls += 1;
                let args = match call.args {
                    Some(raw) => compact(raw.get()),
                    None => Cow::Borrowed("{}"),
                };
                sink.event(
                    Ev::ToolStart {
                        key,
                        id: Cow::Owned(id),
                        name: call.name,
                    },
                    out,
                );
                sink.event(Ev::ToolArgs { key, delta: args }, out);
                sink.event(Ev::BlockEnd, out);
            } else if let Some(text) = p.text.filter(|t| !t.is_empty()) {
                sink.event(
                    if p.thought {
                        Ev::Reasoning(text)
                    } else {
                        Ev::Text(text)
                    },
                    out,
                );
            }
        }
        if let Some(grounding) = candidate.grounding_metadata {
            let id = mint_id("ws_", &self.opts.request_id, 0);
            if let Some((search, pages)) = grounding.into_search(id) {
                self.grounding = Some((
                    search.into_owned(),
                    pages.into_iter().map(Cited::into_owned).collect(),
                ));
            }
        }
        if let Some(reason) = candidate.finish_reason {
            // The pages cite the text so far; the search is reported after it.
            if let Some((search, pages)) = self.grounding.take() {
                for cited in pages {
                    sink.event(Ev::Citation(cited), out);
                }
                sink.event(Ev::BlockEnd, out);
                sink.event(Ev::WebSearch(search), out);
            }
            let mut stop = Stop::from_gemini(&reason);
            if stop == Stop::EndTurn && self.calls > 0 {
                // STOP with a functionCall means tool use (§4.4).
                stop = Stop::ToolUse;
            }
            self.stop = Some(stop);
        }
        Ok(())
    }

    /// Gemini has no terminator: the end of the body ends the stream (§6.1). Without a
    /// finishReason the answer was cut off (§6.7).
    pub fn end(&mut self, sink: &mut dyn Sink, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        match self.stop.take() {
            Some(stop) => {
                sink.event(Ev::Stop(stop), out);
                sink.event(Ev::Done, out);
            }
            None => sink.event(Ev::Error(truncated()), out),
        }
    }
}

// ------------------------------------------------------------------ canonical → client

/// A call whose arguments are still arriving; Gemini sends calls whole.
#[derive(Clone, Debug)]
struct PendingCall {
    id: String,
    name: String,
    args: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Emitter {
    response_id: String,
    model: String,
    closed: bool,
    pending: Option<PendingCall>,
    stop: Stop<'static>,
    usage: Usage,
}

impl Emitter {
    pub fn new(opts: ResponseOptions) -> Self {
        Emitter {
            response_id: opts.request_id.clone(),
            model: opts.model,
            closed: false,
            pending: None,
            stop: Stop::EndTurn,
            usage: Usage::default(),
        }
    }

    fn chunk(
        &self,
        out: &mut BytesMut,
        parts: &[PartOut<'_>],
        finish: Option<&'static str>,
        usage: bool,
    ) {
        let body = GenerateResponseOut {
            candidates: [CandidateOut {
                content: ContentRefOut {
                    role: "model",
                    parts,
                },
                finish_reason: finish,
                index: 0,
            }],
            usage_metadata: usage.then(|| usage_to(&self.usage)),
            model_version: &self.model,
            response_id: &self.response_id,
        };
        write_sse(out, Framing::Crlf, None, &body);
    }

    fn flush_call(&mut self, out: &mut BytesMut) {
        if let Some(call) = self.pending.take() {
            let args = Args::Text(Cow::Borrowed(&call.args));
            let part = PartOut {
                function_call: Some(FunctionCallOut {
                    id: Some(&call.id),
                    name: &call.name,
                    args: args.to_object(),
                }),
                ..PartOut::default()
            };
            self.chunk(out, &[part], None, false);
        }
    }
}

impl Sink for Emitter {
    fn event(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        if self.closed {
            return;
        }
        match ev {
            Ev::Start { id, model } => {
                if let Some(id) = id {
                    self.response_id = id.into_owned();
                }
                if let Some(model) = model {
                    self.model = model.into_owned();
                }
            }
            Ev::Text(t) | Ev::Refusal(t) => {
                self.flush_call(out);
                self.chunk(
                    out,
                    &[PartOut {
                        text: Some(t),
                        ..PartOut::default()
                    }],
                    None,
                    false,
                );
            }
            Ev::Reasoning(t) => {
                self.flush_call(out);
                self.chunk(
                    out,
                    &[PartOut {
                        text: Some(t),
                        thought: Some(true),
                        ..PartOut::default()
                    }],
                    None,
                    false,
                );
            }
            // The signature closes the thought: an empty thought part carries it, as Gemini's
            // own streams do; the client replays it and it goes back to the provider.
            Ev::ReasoningSignature(signature) => {
                self.flush_call(out);
                self.chunk(
                    out,
                    &[PartOut {
                        text: Some(Cow::Borrowed("")),
                        thought: Some(true),
                        thought_signature: Some(Cow::Owned(
                            crate::translate::util::foreign_thought_signature(&signature)
                                .into_owned(),
                        )),
                        ..PartOut::default()
                    }],
                    None,
                    false,
                );
            }
            Ev::RedactedReasoning(_) => {}
            Ev::ToolStart { id, name, .. } => {
                self.flush_call(out);
                self.pending = Some(PendingCall {
                    id: id.into_owned(),
                    name: name.into_owned(),
                    args: String::new(),
                });
            }
            Ev::ToolArgs { delta, .. } => {
                if let Some(call) = &mut self.pending {
                    call.args.push_str(&delta);
                }
            }
            Ev::BlockEnd => self.flush_call(out),
            // Gemini clients read grounding only from Gemini itself (passed through).
            Ev::WebSearch(_) | Ev::Citation(_) => {}
            Ev::Usage(u) => self.usage = u,
            Ev::Stop(s) => self.stop = s.into_owned(),
            Ev::Done => {
                self.flush_call(out);
                self.closed = true;
                // Like Google's last chunk: an empty text part, finishReason and usage.
                let parts = [PartOut {
                    text: Some(Cow::Borrowed("")),
                    ..PartOut::default()
                }];
                self.chunk(out, &parts, Some(self.stop.gemini()), true);
            }
            Ev::Error(e) => {
                self.closed = true;
                let (code, status) = gemini_shape(e.kind);
                let body = ErrorEnvelopeOut {
                    error: ErrorOut {
                        code,
                        message: &e.message,
                        status,
                    },
                };
                write_sse(out, Framing::Crlf, None, &body);
            }
        }
    }
}
