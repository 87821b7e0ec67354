//! OpenAI Chat Completions (`POST /v1/chat/completions`), modelled on fixtures/openai/:
//! JSON like chat_basic.json / chat_tool_calls.json (in OpenAI's wire order and 2-space
//! layout; the recorder had sorted the keys), streams like chat_stream_plain.sse,
//! chat_stream_usage.sse and chat_stream_tool_calls.sse.

use crate::reply::{Ctx, Plan, Reject, Reply};
use crate::wire::{fragments, pretty, text, word, Alphabet, Events, Json, Out};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::borrow::Cow;

/// The request fields the mock reacts to; everything else is ignored.
#[derive(Deserialize)]
pub(crate) struct ChatRequest<'a> {
    #[serde(borrow)]
    pub(crate) model: Option<Cow<'a, str>>,
    pub(crate) stream: Option<bool>,
    pub(crate) stream_options: Option<StreamOptions>,
    pub(crate) tools: Option<Vec<IgnoredAny>>,
    pub(crate) functions: Option<Vec<IgnoredAny>>,
    pub(crate) max_tokens: Option<u64>,
    pub(crate) max_completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct StreamOptions {
    pub(crate) include_usage: Option<bool>,
}

impl ChatRequest<'_> {
    pub(crate) fn parse(body: &[u8]) -> Result<ChatRequest<'_>, Reject> {
        serde_json::from_slice(body).map_err(Reject::json)
    }

    pub(crate) fn has_tools(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| !t.is_empty())
            || self.functions.as_ref().is_some_and(|f| !f.is_empty())
    }

    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    pub(crate) fn cap(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// OpenAI answers a request without `model` with 400 (so does the mock: it catches a
    /// gateway that forgot to set it).
    pub(crate) fn model(&self) -> Result<&str, Reject> {
        self.model
            .as_deref()
            .ok_or_else(|| Reject("you must provide a model parameter".to_owned()))
    }
}

/// Padding field every chunk carries since mid-2025 (chat_stream_plain.sse); the real value is
/// random filler, a constant is enough to exercise parsers.
const OBFUSCATION: &str = "sira";

pub(crate) fn chat(ctx: &Ctx<'_>) -> Result<Reply, Reject> {
    let req = ChatRequest::parse(ctx.body)?;
    let model = req.model()?;
    let plan = ctx.plan(req.cap(), req.has_tools());
    if req.stream == Some(true) {
        Ok(ctx.stream(chat_stream(ctx, model, &plan, req.include_usage())))
    } else {
        Ok(Reply::Json {
            status: http::StatusCode::OK,
            body: chat_json(ctx, model, &plan).into(),
        })
    }
}

fn finish_reason(plan: &Plan<'_>) -> &'static str {
    if plan.tool.is_some() {
        "tool_calls"
    } else if plan.truncated {
        "length"
    } else {
        "stop"
    }
}

fn chat_json(ctx: &Ctx<'_>, model: &str, plan: &Plan<'_>) -> Vec<u8> {
    let mut o = Out::with_capacity(1024);
    let id = ctx.id("chatcmpl-", 0, Alphabet::Base62, 29);
    write!(
        o,
        r#"{{"id":"{id}","object":"chat.completion","created":{},"model":{},"choices":[{{"index":0,"message":{{"role":"assistant","#,
        ctx.created,
        Json(model)
    );
    match plan.tool {
        Some(tool) => {
            let call = ctx.id("call_", 1, Alphabet::Base62, 24);
            write!(
                o,
                r#""content":null,"tool_calls":[{{"id":"{call}","type":"function","function":{{"name":{},"arguments":{}}}}}],"#,
                Json(tool.name),
                Json(tool.args)
            );
        }
        None => write!(o, r#""content":{},"#, Json(&text(plan.words))),
    }
    write!(
        o,
        r#""refusal":null,"annotations":[]}},"finish_reason":"{}"}}],"#,
        finish_reason(plan)
    );
    write_usage(&mut o, plan);
    o.push(br#","service_tier":"default","system_fingerprint":null}"#);
    pretty(&o.0)
}

/// `"usage":{…}` in the order of the recorded usage chunk.
fn write_usage(o: &mut Out, plan: &Plan<'_>) {
    let t = plan.tokens;
    write!(
        o,
        r#""usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{},"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#,
        t.prompt,
        t.output,
        t.total(),
        t.cached
    );
}

/// role chunk, N content (or argument) chunks, finish chunk, [usage chunk], `[DONE]`.
fn chat_stream(ctx: &Ctx<'_>, model: &str, plan: &Plan<'_>, include_usage: bool) -> Events {
    let mut ev = Events::with_capacity(400 * (plan.words + 4), plan.words + 4);
    let id = ctx.id("chatcmpl-", 0, Alphabet::Base62, 29).to_string();
    let head = |o: &mut Out| {
        write!(
            o,
            r#"data: {{"id":"{id}","object":"chat.completion.chunk","created":{},"model":{},"service_tier":"default","system_fingerprint":null,"choices":["#,
            ctx.created,
            Json(model)
        );
    };
    // OpenAI adds `"usage":null` to every chunk only when include_usage is on.
    let tail = |o: &mut Out| {
        let usage = if include_usage {
            r#","usage":null"#
        } else {
            ""
        };
        write!(o, "]{usage},\"obfuscation\":\"{OBFUSCATION}\"}}\n\n");
    };
    head(&mut ev.out);
    match plan.tool {
        Some(tool) => {
            let call = ctx.id("call_", 1, Alphabet::Base62, 24);
            write!(
                ev.out,
                r#"{{"index":0,"delta":{{"role":"assistant","content":null,"tool_calls":[{{"index":0,"id":"{call}","type":"function","function":{{"name":{},"arguments":""}}}}],"refusal":null}},"finish_reason":null}}"#,
                Json(tool.name)
            );
        }
        None => ev.out.push(br#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"finish_reason":null}"#),
    }
    tail(&mut ev.out);
    ev.end();
    match plan.tool {
        Some(tool) => {
            for frag in fragments(tool.args, plan.words) {
                head(&mut ev.out);
                write!(
                    ev.out,
                    r#"{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":{}}}}}]}},"finish_reason":null}}"#,
                    Json(frag)
                );
                tail(&mut ev.out);
                ev.end();
            }
        }
        None => {
            for i in 0..plan.words {
                head(&mut ev.out);
                write!(
                    ev.out,
                    r#"{{"index":0,"delta":{{"content":{}}},"finish_reason":null}}"#,
                    Json(word(i))
                );
                tail(&mut ev.out);
                ev.end();
            }
        }
    }
    head(&mut ev.out);
    write!(
        ev.out,
        r#"{{"index":0,"delta":{{}},"finish_reason":"{}"}}"#,
        finish_reason(plan)
    );
    tail(&mut ev.out);
    ev.end();
    if include_usage {
        head(&mut ev.out);
        ev.out.push(b"],");
        write_usage(&mut ev.out, plan);
        write!(ev.out, ",\"obfuscation\":\"{OBFUSCATION}\"}}\n\n");
        ev.end();
    }
    ev.out.push(b"data: [DONE]\n\n");
    ev.end();
    ev
}
