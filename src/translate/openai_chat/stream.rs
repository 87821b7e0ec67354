//! OpenAI Chat chunk streams: upstream chunks → canonical events (§6.6, §11.11 "Chat chunk
//! adapter"), canonical events → client chunks (§6.2, §6.5).

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use super::usage_from;
use super::wire::*;
use super::wire_response::*;
use crate::sse::Event;
use crate::translate::error::TranslateError;
use crate::translate::errors::openai_kind;
use crate::translate::ir::*;
use crate::translate::stream::Sink;
use crate::translate::util::{mint_id, prefixed, write_sse, write_sse_raw, Framing};
use crate::translate::{ResponseContext, ResponseOptions};
use crate::usage::Usage;

// ------------------------------------------------------------------ upstream → canonical

/// A tool call held back because another call is streaming (§6.6 step 4).
#[derive(Clone, Debug)]
struct Held {
    index: u32,
    id: String,
    name: String,
    args: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Parser {
    request_id: String,
    started: bool,
    done: bool,
    stop: Option<Stop<'static>>,
    saw_tool: bool,
    saw_refusal: bool,
    /// The call whose arguments are streamed live: the first one of the answer. Calls that
    /// start while it is open are buffered and emitted whole at `finish_reason`, because
    /// compat servers may interleave argument fragments of parallel calls and clients
    /// (Anthropic blocks, Responses items) need them sequential (§6.6, §11.11).
    live: Option<u32>,
    held: Vec<Held>,
    /// Bytes of arguments in `held`, bounded by `held_limit`: a provider that streams
    /// arguments without end cannot make the translator hold them without bound.
    held_bytes: usize,
    pub(crate) held_limit: usize,
}

impl Parser {
    pub fn new(opts: &crate::translate::ResponseOptions) -> Self {
        Parser {
            request_id: opts.request_id.clone(),
            started: false,
            done: false,
            stop: None,
            saw_tool: false,
            saw_refusal: false,
            live: None,
            held: Vec::new(),
            held_bytes: 0,
            held_limit: usize::MAX,
        }
    }

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
        if data == b"[DONE]" {
            self.close(sink, out);
            return Ok(());
        }
        let chunk: Chunk<'_> = serde_json::from_slice(data)?;
        if let Some(err) = chunk.error {
            // `data: {"error":…}` mid-stream (§6.1).
            self.done = true;
            let code = err
                .code
                .map(|c| Cow::Owned(c.get().trim_matches('"').to_owned()));
            let kind = openai_kind(None, err.kind.as_deref(), code.as_deref());
            let message = err.message.unwrap_or(Cow::Borrowed("upstream error"));
            sink.event(
                Ev::Error(ErrorInfo {
                    kind,
                    message,
                    code,
                    param: err.param,
                }),
                out,
            );
            return Ok(());
        }
        let usage = chunk.usage.as_ref().map(usage_from);
        if !self.started {
            // Azure's first chunk has no choices, only prompt_filter_results (§8): skip it.
            if chunk.choice.is_none() && usage.is_none() {
                return Ok(());
            }
            self.started = true;
            sink.event(
                Ev::Start {
                    id: chunk.id.filter(|i| !i.is_empty()),
                    model: chunk.model.filter(|m| !m.is_empty()),
                },
                out,
            );
        }
        if let Some(choice) = chunk.choice {
            if let Some(delta) = choice.delta {
                self.delta(delta, sink, out);
                if self.held_bytes > self.held_limit {
                    return Err(TranslateError::TooLarge {
                        what: "held-back tool call arguments",
                        buffer: crate::metrics::Buffer::ToolArguments,
                        limit: self.held_limit,
                    });
                }
            }
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.flush_held(sink, out);
                let mut stop = Stop::from_openai(&reason);
                if stop == Stop::EndTurn && self.saw_tool {
                    stop = Stop::ToolUse;
                } else if stop == Stop::EndTurn && self.saw_refusal {
                    // A structured-output refusal ends with "stop" (§3.4).
                    stop = Stop::Refusal;
                }
                self.stop = Some(stop);
            }
        }
        // Usage rides on the last chunk (include_usage) or on the finish chunk (DeepSeek, §9).
        if let Some(u) = usage {
            sink.event(Ev::Usage(u), out);
        }
        Ok(())
    }

    fn delta(&mut self, d: DeltaIn<'_>, sink: &mut dyn Sink, out: &mut BytesMut) {
        if let Some(r) = d.reasoning_content.filter(|r| !r.is_empty()) {
            sink.event(Ev::Reasoning(r), out);
        }
        if let Some(t) = d.content.filter(|t| !t.is_empty()) {
            sink.event(Ev::Text(t), out);
        }
        if let Some(r) = d.refusal.filter(|r| !r.is_empty()) {
            self.saw_refusal = true;
            sink.event(Ev::Refusal(r), out);
        }
        for (pos, tc) in d.tool_calls.into_iter().flatten().enumerate() {
            let index = tc.index.unwrap_or(pos as u32);
            let (name, args) = match tc.function {
                Some(f) => (f.name, f.arguments),
                None => (None, None),
            };
            let args = args.unwrap_or_default();
            let starts = tc.id.as_deref().is_some_and(|i| !i.is_empty()) || name.is_some();
            if self.live == Some(index) {
                if !args.is_empty() {
                    sink.event(
                        Ev::ToolArgs {
                            key: index,
                            delta: args,
                        },
                        out,
                    );
                }
            } else if let Some(held) = self.held.iter_mut().find(|h| h.index == index) {
                self.held_bytes += args.len();
                if self.held_bytes > self.held_limit {
                    return;
                }
                held.args.push_str(&args);
                if let Some(name) = name.filter(|n| !n.is_empty()) {
                    held.name = name.into_owned();
                }
            } else if starts && self.live.is_none() && self.held.is_empty() {
                self.saw_tool = true;
                self.live = Some(index);
                let id = self.call_id(tc.id, index);
                sink.event(
                    Ev::ToolStart {
                        key: index,
                        id: Cow::Owned(id),
                        name: name.unwrap_or_default(),
                    },
                    out,
                );
                if !args.is_empty() {
                    sink.event(
                        Ev::ToolArgs {
                            key: index,
                            delta: args,
                        },
                        out,
                    );
                }
            } else {
                self.saw_tool = true;
                self.held_bytes += args.len();
                if self.held_bytes > self.held_limit {
                    return;
                }
                let id = self.call_id(tc.id, index);
                self.held.push(Held {
                    index,
                    id,
                    name: name.unwrap_or_default().into_owned(),
                    args: args.into_owned(),
                });
            }
        }
    }

    /// Compat servers may send `"id": ""` (§9): mint a stable id.
    fn call_id(&self, id: Option<Cow<'_, str>>, index: u32) -> String {
        match id {
            Some(id) if !id.is_empty() => id.into_owned(),
            _ => mint_id("call_", &self.request_id, index as usize),
        }
    }

    fn flush_held(&mut self, sink: &mut dyn Sink, out: &mut BytesMut) {
        self.held.sort_by_key(|h| h.index);
        self.held_bytes = 0;
        for h in self.held.drain(..) {
            sink.event(
                Ev::ToolStart {
                    key: h.index,
                    id: Cow::Owned(h.id),
                    name: Cow::Owned(h.name),
                },
                out,
            );
            sink.event(
                Ev::ToolArgs {
                    key: h.index,
                    delta: Cow::Owned(h.args),
                },
                out,
            );
            sink.event(Ev::BlockEnd, out);
        }
        self.live = None;
    }

    fn close(&mut self, sink: &mut dyn Sink, out: &mut BytesMut) {
        self.done = true;
        self.flush_held(sink, out);
        match self.stop.take() {
            Some(stop) => {
                sink.event(Ev::Stop(stop), out);
                sink.event(Ev::Done, out);
            }
            // `[DONE]` or EOF without a finish_reason: the answer is truncated (§11.11).
            None => sink.event(Ev::Error(truncated()), out),
        }
    }

    /// Upstream ended; compat servers may omit `[DONE]` (§9).
    pub fn end(&mut self, sink: &mut dyn Sink, out: &mut BytesMut) {
        if !self.done {
            self.close(sink, out);
        }
    }
}

pub(crate) fn truncated() -> ErrorInfo<'static> {
    ErrorInfo {
        kind: ErrorKind::Server,
        message: Cow::Borrowed("upstream stream ended before the response was complete"),
        code: None,
        param: None,
    }
}

// ------------------------------------------------------------------ canonical → client

#[derive(Clone, Debug)]
pub(crate) struct Emitter {
    opts: ResponseOptions,
    include_usage: bool,
    id: String,
    model: String,
    started: bool,
    closed: bool,
    /// Provider tool key → OpenAI `tool_calls[].index` (which counts only calls, §6.5).
    tools: Vec<(u32, u32)>,
    stop: Stop<'static>,
    usage: Usage,
    /// A text chunk around its content, split where the content goes; rendered on the
    /// first text event after `start` (empty until then). Text deltas are nearly every
    /// event of a stream, and serializing the whole chunk for each was most of the cost of
    /// a translated stream.
    text_frame: TextFrame,
}

#[derive(Clone, Debug, Default)]
struct TextFrame {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Emitter {
    pub fn new(opts: ResponseOptions, ctx: &ResponseContext) -> Self {
        Emitter {
            text_frame: TextFrame::default(),
            id: prefixed("chatcmpl-", &opts.request_id),
            model: opts.model.clone(),
            opts,
            include_usage: ctx.include_usage,
            started: false,
            closed: false,
            tools: Vec::new(),
            stop: Stop::EndTurn,
            usage: Usage::default(),
        }
    }

    fn chunk(&self, out: &mut BytesMut, delta: DeltaOut<'_>, finish_reason: Option<&'static str>) {
        let choices = [ChunkChoiceOut {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }];
        let chunk = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.opts.created,
            model: &self.model,
            choices: &choices,
            usage: None,
        };
        write_sse(out, Framing::Lf, None, &chunk);
    }

    /// The same bytes as `chunk` with a `content` delta, from the pre-rendered frame.
    fn text_chunk(&mut self, out: &mut BytesMut, text: &str) {
        if self.text_frame.head.is_empty() {
            let mut frame = BytesMut::new();
            self.chunk(
                &mut frame,
                DeltaOut {
                    content: Some(""),
                    ..DeltaOut::default()
                },
                None,
            );
            // The empty content is the last `""` before the delta closes: ids and model
            // names come earlier, and a quote inside them would be escaped anyway.
            const EMPTY: &[u8] = b"{\"content\":\"\"}";
            let Some(at) = memchr::memmem::rfind(&frame, EMPTY) else {
                // Unreachable with the struct above; the slow path stays correct.
                return self.chunk(
                    out,
                    DeltaOut {
                        content: Some(text),
                        ..DeltaOut::default()
                    },
                    None,
                );
            };
            // `head` ends before the value's opening quote, `tail` starts after its closing one.
            let value = at + b"{\"content\":".len();
            self.text_frame = TextFrame {
                head: frame[..value].to_vec(),
                tail: frame[value + 2..].to_vec(),
            };
        }
        let frame = &self.text_frame;
        out.reserve(frame.head.len() + text.len() + 2 + frame.tail.len());
        out.extend_from_slice(&frame.head);
        // Writing a string into memory cannot fail.
        let _ = serde_json::to_writer((&mut *out).writer(), text);
        out.extend_from_slice(&frame.tail);
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut BytesMut) {
        self.started = true;
        self.text_frame = TextFrame::default();
        if let Some(id) = id {
            self.id = prefixed("chatcmpl-", id);
        }
        if let Some(model) = model {
            self.model = model.to_owned();
        }
        self.chunk(
            out,
            DeltaOut {
                role: Some("assistant"),
                content: Some(""),
                ..DeltaOut::default()
            },
            None,
        );
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
            // Chat has no search item; its citations are left to OpenAI's own search models.
            Ev::Start { .. } | Ev::BlockEnd | Ev::WebSearch(_) | Ev::Citation(_) => {}
            Ev::Text(t) => self.text_chunk(out, &t),
            Ev::Refusal(r) => self.chunk(
                out,
                DeltaOut {
                    refusal: Some(&r),
                    ..DeltaOut::default()
                },
                None,
            ),
            // Reasoning never goes into `content` (§6.5): non-standard `reasoning_content`.
            Ev::Reasoning(r) => self.chunk(
                out,
                DeltaOut {
                    reasoning_content: Some(&r),
                    ..DeltaOut::default()
                },
                None,
            ),
            // LiteLLM-style `thinking_blocks` carry Anthropic signatures to Chat clients (§2.6).
            Ev::ReasoningSignature(sig) => {
                let block = ThinkingBlock {
                    kind: Cow::Borrowed("thinking"),
                    thinking: None,
                    signature: Some(sig),
                    data: None,
                };
                self.chunk(
                    out,
                    DeltaOut {
                        thinking_blocks: Some([block]),
                        ..DeltaOut::default()
                    },
                    None,
                )
            }
            Ev::RedactedReasoning(data) => {
                let block = ThinkingBlock {
                    kind: Cow::Borrowed("redacted_thinking"),
                    thinking: None,
                    signature: None,
                    data: Some(data),
                };
                self.chunk(
                    out,
                    DeltaOut {
                        thinking_blocks: Some([block]),
                        ..DeltaOut::default()
                    },
                    None,
                )
            }
            Ev::ToolStart { key, id, name } => {
                let index = self.tools.len() as u32;
                self.tools.push((key, index));
                let call = ToolCallDeltaOut {
                    index,
                    id: Some(&id),
                    kind: Some("function"),
                    function: FunctionDeltaOut {
                        name: Some(&name),
                        arguments: "",
                    },
                };
                self.chunk(
                    out,
                    DeltaOut {
                        tool_calls: Some([call]),
                        ..DeltaOut::default()
                    },
                    None,
                );
            }
            Ev::ToolArgs { key, delta } => {
                let Some(&(_, index)) = self.tools.iter().rev().find(|(k, _)| *k == key) else {
                    return;
                };
                if delta.is_empty() {
                    return;
                }
                let call = ToolCallDeltaOut {
                    index,
                    id: None,
                    kind: None,
                    function: FunctionDeltaOut {
                        name: None,
                        arguments: &delta,
                    },
                };
                self.chunk(
                    out,
                    DeltaOut {
                        tool_calls: Some([call]),
                        ..DeltaOut::default()
                    },
                    None,
                );
            }
            Ev::Usage(u) => self.usage = u,
            Ev::Stop(s) => self.stop = s.into_owned(),
            Ev::Done => {
                self.closed = true;
                self.chunk(out, DeltaOut::default(), Some(self.stop.openai()));
                if self.include_usage {
                    let chunk = ChunkOut {
                        id: &self.id,
                        object: "chat.completion.chunk",
                        created: self.opts.created,
                        model: &self.model,
                        choices: &[],
                        usage: Some(super::usage_to(&self.usage)),
                    };
                    write_sse(out, Framing::Lf, None, &chunk);
                }
                write_sse_raw(out, Framing::Lf, b"[DONE]");
            }
            Ev::Error(e) => {
                // `data: {"error":…}` then close, no `[DONE]` (§6.9).
                self.closed = true;
                let (_, kind, code) = crate::translate::errors::openai_shape(e.kind);
                let body = ErrorEnvelopeOut {
                    error: ErrorOut {
                        message: &e.message,
                        kind,
                        param: e.param.as_deref(),
                        code: e.code.as_deref().or(code),
                    },
                };
                write_sse(out, Framing::Lf, None, &body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitter() -> Emitter {
        let opts = ResponseOptions {
            model: "fallback".into(),
            request_id: "req_1".into(),
            created: 1_700_000_000,
        };
        Emitter::new(opts, &ResponseContext::default())
    }

    /// The pre-rendered text frame must give exactly the bytes of the general path, also
    /// when ids and model names hold characters JSON escapes or the marker it splits at.
    #[test]
    fn text_chunks_match_the_serialized_chunk() {
        let ids = ["msg_01", r#"msg_"{\"content\":\"\"}"#];
        let models = ["claude-sonnet-4-5", "mödel \"q\" {\"content\":\"\"}"];
        let texts = [
            "",
            "Hello",
            "a \"quoted\" \\ line\nnext\ttab \u{1} é 日本 🦀",
        ];
        for id in ids {
            for model in models {
                let mut fast = emitter();
                let mut slow = emitter();
                let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
                fast.start(Some(id), Some(model), &mut a);
                slow.start(Some(id), Some(model), &mut b);
                for text in texts {
                    fast.text_chunk(&mut a, text);
                    slow.chunk(
                        &mut b,
                        DeltaOut {
                            content: Some(text),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                }
                assert_eq!(
                    std::str::from_utf8(&a).unwrap(),
                    std::str::from_utf8(&b).unwrap()
                );
            }
        }
    }

    #[test]
    fn a_new_start_renders_the_text_frame_again() {
        let mut e = emitter();
        let mut out = BytesMut::new();
        e.event(Ev::Text("one".into()), &mut out);
        e.start(Some("second"), Some("other-model"), &mut out);
        out.clear();
        e.event(Ev::Text("two".into()), &mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains(r#""id":"chatcmpl-second""#), "{text}");
        assert!(text.contains(r#""model":"other-model""#), "{text}");
    }
}
