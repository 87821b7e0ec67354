//! The per-stream state machine: SSE framing in, provider adapter → canonical [`Ev`]s →
//! client emitter, SSE frames out (§6, §11.10–11.12).

use bytes::{Bytes, BytesMut};

use super::error::TranslateError;
use super::ir::Ev;
use super::{anthropic, gemini, openai_chat, responses, ResponseContext, ResponseOptions};
use crate::format::Format;
use crate::sse::{Event, SseScanner};
use crate::usage::Usage;

/// Receives canonical stream events and writes the client's frames.
pub(crate) trait Sink {
    fn event(&mut self, ev: Ev<'_>, out: &mut BytesMut);
}

/// The provider side: turns upstream frames into canonical events.
#[derive(Clone, Debug)]
enum Parser {
    Chat(openai_chat::stream::Parser),
    Anthropic(anthropic::stream::Parser),
    Gemini(gemini::stream::Parser),
    Responses(responses::stream::Parser),
}

/// The client side: turns canonical events into the client's frames.
#[derive(Clone, Debug)]
enum Emitter {
    Chat(openai_chat::stream::Emitter),
    Anthropic(anthropic::stream::Emitter),
    Gemini(gemini::stream::Emitter),
    Responses(Box<responses::emitter::Emitter>),
}

impl Sink for Emitter {
    fn event(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        match self {
            Emitter::Chat(e) => e.event(ev, out),
            Emitter::Anthropic(e) => e.event(ev, out),
            Emitter::Gemini(e) => e.event(ev, out),
            Emitter::Responses(e) => e.event(ev, out),
        }
    }
}

/// Wraps the emitter to keep the usage total current and to count the tool arguments it is
/// given (emitters for clients that need a call's arguments whole hold them until the call
/// ends). With the same format on both sides (`passthrough`) frames are forwarded verbatim
/// and events only feed the usage.
struct Tracking<'e> {
    emitter: &'e mut Emitter,
    usage: &'e mut Usage,
    tool_arguments: &'e mut usize,
    /// Content bytes the emitter keeps for the answer's closing event (Responses clients
    /// get the whole answer again in `response.completed`).
    answer: &'e mut usize,
    passthrough: bool,
}

impl Sink for Tracking<'_> {
    fn event(&mut self, ev: Ev<'_>, out: &mut BytesMut) {
        let content = match &ev {
            Ev::Usage(u) => {
                *self.usage = *u;
                0
            }
            Ev::ToolArgs { delta, .. } => {
                *self.tool_arguments += delta.len();
                delta.len()
            }
            Ev::BlockEnd => {
                *self.tool_arguments = 0;
                0
            }
            Ev::Text(t) | Ev::Refusal(t) | Ev::Reasoning(t) | Ev::ReasoningSignature(t) => t.len(),
            _ => 0,
        };
        if !self.passthrough && matches!(self.emitter, Emitter::Responses(_)) {
            *self.answer += content;
        }
        if !self.passthrough {
            self.emitter.event(ev, out);
        }
    }
}

/// Bounds on what one stream's translation may hold (`server.max_sse_event`,
/// `server.max_tool_arguments`).
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// One provider event, while its end has not arrived.
    pub event: usize,
    /// The arguments of a tool call, while the call has not ended.
    pub tool_arguments: usize,
    /// The whole answer, for clients whose stream repeats it at the end (Responses).
    pub answer: usize,
}

/// One per streamed response. `from` = provider format, `to` = client format.
pub struct StreamTranslator {
    scanner: SseScanner,
    /// Reused between `feed` calls so framing does not allocate per chunk.
    frames: Vec<Bytes>,
    parser: Parser,
    emitter: Emitter,
    passthrough: bool,
    usage: Usage,
    /// Argument bytes of the open tool call(s), and their bound.
    tool_arguments: usize,
    tool_arguments_limit: usize,
    /// Content bytes the emitter holds for the answer's end, and their bound.
    answer: usize,
    answer_limit: usize,
    finished: bool,
    /// Provider events translated: what a cut stream's estimate counts as delivered.
    translated: u64,
}

impl StreamTranslator {
    pub fn new(from: Format, to: Format, opts: ResponseOptions) -> Self {
        Self::with_context(from, to, opts, ResponseContext::default())
    }

    /// Like [`StreamTranslator::new`], with the request context from
    /// [`super::TranslatedRequest::context`] (custom tools, usage chunk, reasoning options).
    pub fn with_context(
        from: Format,
        to: Format,
        opts: ResponseOptions,
        ctx: ResponseContext,
    ) -> Self {
        let parser = match from {
            Format::OpenAiChat => Parser::Chat(openai_chat::stream::Parser::new(&opts)),
            Format::Anthropic => Parser::Anthropic(anthropic::stream::Parser::default()),
            Format::Gemini => Parser::Gemini(gemini::stream::Parser::new(&opts)),
            Format::OpenAiResponses => Parser::Responses(responses::stream::Parser::default()),
        };
        let emitter = match to {
            Format::OpenAiChat => Emitter::Chat(openai_chat::stream::Emitter::new(opts, &ctx)),
            Format::Anthropic => Emitter::Anthropic(anthropic::stream::Emitter::new(opts)),
            Format::Gemini => Emitter::Gemini(gemini::stream::Emitter::new(opts)),
            Format::OpenAiResponses => {
                Emitter::Responses(Box::new(responses::emitter::Emitter::new(opts, ctx)))
            }
        };
        StreamTranslator {
            scanner: SseScanner::new(),
            frames: Vec::new(),
            parser,
            emitter,
            passthrough: from == to,
            usage: Usage::default(),
            tool_arguments: 0,
            tool_arguments_limit: usize::MAX,
            answer: 0,
            answer_limit: usize::MAX,
            finished: false,
            translated: 0,
        }
    }

    /// Bounds what this stream may make the translator hold; beyond them `feed` fails.
    /// Set before the first `feed`.
    pub fn set_limits(&mut self, limits: StreamLimits) {
        self.scanner = SseScanner::with_limit(limits.event);
        self.tool_arguments_limit = limits.tool_arguments;
        self.answer_limit = limits.answer;
        if let Parser::Chat(p) = &mut self.parser {
            p.held_limit = limits.tool_arguments;
        }
    }

    /// The first bounded state the stream has made grow past its limit.
    fn outgrown(&self) -> Option<TranslateError> {
        let (what, buffer, limit) = if self.tool_arguments > self.tool_arguments_limit {
            (
                "a tool call's arguments",
                crate::metrics::Buffer::ToolArguments,
                self.tool_arguments_limit,
            )
        } else if self.answer > self.answer_limit {
            (
                "the answer held for the stream's last event",
                crate::metrics::Buffer::ResponseBody,
                self.answer_limit,
            )
        } else {
            return None;
        };
        Some(TranslateError::TooLarge {
            what,
            buffer,
            limit,
        })
    }

    /// One batch of provider pieces in, replaced in `body` by one piece of client events
    /// (`out` is the buffer they are written to, reused once the previous batch was sent);
    /// `end` closes the stream. Every piece is fed even after one fails: the first failure
    /// is returned.
    pub fn translate_batch(
        &mut self,
        body: &mut Vec<Bytes>,
        out: &mut BytesMut,
        end: bool,
    ) -> Result<(), TranslateError> {
        let mut failure = None;
        for piece in body.drain(..) {
            // Client events are about twice the size of the provider's (ids and model
            // names repeated in every OpenAI chunk): one reservation per piece rather than
            // growth event by event.
            out.reserve(2 * piece.len() + 256);
            if let Err(e) = self.feed(piece, out) {
                failure.get_or_insert(e);
            }
        }
        if end {
            self.finish(out);
        }
        if !out.is_empty() {
            body.push(out.split().freeze());
        }
        failure.map_or(Ok(()), Err)
    }

    /// Feeds whatever bytes arrived; appends every translated event that became complete.
    /// A frame that cannot be parsed is reported after the rest of the chunk was processed.
    pub fn feed(&mut self, input: Bytes, out: &mut BytesMut) -> Result<(), TranslateError> {
        if self.finished {
            return Ok(());
        }
        let framing = self.scanner.feed(input, &mut self.frames);
        let mut first_error = None;
        let mut frames = std::mem::take(&mut self.frames);
        for frame in frames.drain(..) {
            match self.frame(&frame, out) {
                Ok(()) => self.translated += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = self.outgrown() {
                first_error.get_or_insert(e);
                self.finished = true;
                break;
            }
        }
        self.frames = frames;
        if let Err(e) = framing {
            first_error.get_or_insert(TranslateError::TooLarge {
                what: "an event of the provider's stream",
                buffer: crate::metrics::Buffer::SseEvent,
                limit: e.limit,
            });
            self.finished = true;
        }
        first_error.map_or(Ok(()), Err)
    }

    fn frame(&mut self, frame: &Bytes, out: &mut BytesMut) -> Result<(), TranslateError> {
        if self.passthrough {
            out.extend_from_slice(frame);
        }
        let event = Event::parse(frame);
        let mut sink = Tracking {
            emitter: &mut self.emitter,
            usage: &mut self.usage,
            tool_arguments: &mut self.tool_arguments,
            answer: &mut self.answer,
            passthrough: self.passthrough,
        };
        match &mut self.parser {
            Parser::Chat(p) => p.frame(&event, &mut sink, out),
            Parser::Anthropic(p) => p.frame(&event, &mut sink, out),
            Parser::Gemini(p) => p.frame(frame, &event, &mut sink, out),
            Parser::Responses(p) => p.frame(&event, &mut sink, out),
        }
    }

    /// Upstream ended (cleanly or not): closes the client's stream properly if that has not
    /// happened yet — the terminal event after a clean end, an error event after a truncated
    /// one (§6.9: never a fake `finish_reason:"stop"`). Idempotent.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        if let Some(tail) = self.scanner.finish() {
            // A last frame without its blank line, e.g. Gemini's bare JSON error (§6.1).
            // Parse errors in it are moot now: the stream is being closed either way.
            let _ = self.frame(&tail, out);
        }
        self.finished = true;
        let mut sink = Tracking {
            emitter: &mut self.emitter,
            usage: &mut self.usage,
            tool_arguments: &mut self.tool_arguments,
            answer: &mut self.answer,
            passthrough: self.passthrough,
        };
        match &mut self.parser {
            Parser::Chat(p) => p.end(&mut sink, out),
            Parser::Anthropic(p) => p.end(&mut sink, out),
            Parser::Gemini(p) => p.end(&mut sink, out),
            Parser::Responses(p) => p.end(&mut sink, out),
        }
    }

    /// How many provider events were translated so far.
    pub fn translated_events(&self) -> u64 {
        self.translated
    }

    /// Usage seen so far (final totals once the stream has ended).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Appends the client format's in-stream error event, used when the upstream dies
    /// mid-stream. Nothing more is emitted afterwards.
    pub fn error_event(&mut self, message: &str, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.finished = true;
        let ev = Ev::Error(super::ir::ErrorInfo {
            kind: super::ir::ErrorKind::Server,
            message: message.into(),
            code: None,
            param: None,
        });
        self.emitter.event(ev, out);
    }
}

#[cfg(test)]
impl StreamTranslator {
    /// A copy taken at a frame boundary (nothing carried), for the split tests.
    pub(crate) fn fork(&self) -> Self {
        assert_eq!(self.scanner.pending(), 0, "fork only between frames");
        StreamTranslator {
            scanner: SseScanner::new(),
            frames: Vec::new(),
            parser: self.parser.clone(),
            emitter: self.emitter.clone(),
            passthrough: self.passthrough,
            usage: self.usage,
            tool_arguments: self.tool_arguments,
            tool_arguments_limit: self.tool_arguments_limit,
            answer: self.answer,
            answer_limit: self.answer_limit,
            finished: self.finished,
            translated: self.translated,
        }
    }

    /// Everything that decides future output.
    pub(crate) fn state(&self) -> String {
        format!(
            "{:?} {:?} {:?} {} {}",
            self.parser,
            self.emitter,
            self.usage,
            self.finished,
            self.scanner.pending()
        )
    }
}
