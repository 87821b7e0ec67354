//! Anthropic Messages (`POST /v1/messages`, `POST /v1/messages/count_tokens`), modelled on
//! fixtures/anthropic/messages_tool_use.json (current usage shape with cache fields) and
//! messages_stream_plain.sse / messages_stream_tool_use.sse (event sequence, `ping` after the
//! first content_block_start, an empty first `input_json_delta`).

use crate::reply::{Ctx, Plan, Reject, Reply};
use crate::wire::{fragments, text, word, Alphabet, Events, Json, Out};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Deserialize)]
struct MessagesRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    tools: Option<Vec<IgnoredAny>>,
    max_tokens: Option<u64>,
}

pub(crate) fn messages(ctx: &Ctx<'_>) -> Result<Reply, Reject> {
    let req: MessagesRequest<'_> = serde_json::from_slice(ctx.body).map_err(Reject::json)?;
    let model = req
        .model
        .as_deref()
        .ok_or_else(|| Reject("model: Field required".to_owned()))?;
    let plan = ctx.plan(
        req.max_tokens,
        req.tools.as_ref().is_some_and(|t| !t.is_empty()),
    );
    if req.stream == Some(true) {
        Ok(ctx.stream(stream(ctx, model, &plan)))
    } else {
        Ok(Reply::Json {
            status: http::StatusCode::OK,
            body: json(ctx, model, &plan).0.into(),
        })
    }
}

/// `{"input_tokens": N}` with the same prompt formula as every answer.
pub(crate) fn count_tokens(ctx: &Ctx<'_>) -> Result<Reply, Reject> {
    serde_json::from_slice::<IgnoredAny>(ctx.body).map_err(Reject::json)?;
    let mut o = Out::with_capacity(32);
    write!(o, r#"{{"input_tokens":{}}}"#, ctx.tokens(0).prompt);
    Ok(Reply::Json {
        status: http::StatusCode::OK,
        body: o.0.into(),
    })
}

fn stop_reason(plan: &Plan<'_>) -> &'static str {
    match (plan.tool, plan.truncated) {
        (Some(_), _) => "tool_use",
        (None, true) => "max_tokens",
        (None, false) => "end_turn",
    }
}

/// The full usage object of a message (JSON answer and `message_start`).
fn write_usage(o: &mut Out, plan: &Plan<'_>, output_tokens: u64) {
    let t = plan.tokens;
    write!(
        o,
        r#""usage":{{"input_tokens":{},"cache_creation_input_tokens":{},"cache_read_input_tokens":{},"cache_creation":{{"ephemeral_5m_input_tokens":{},"ephemeral_1h_input_tokens":0}},"output_tokens":{output_tokens},"service_tier":"standard","inference_geo":"not_available"}}"#,
        t.uncached(),
        t.cache_write,
        t.cached,
        t.cache_write
    );
}

fn message_id(ctx: &Ctx<'_>) -> crate::wire::Id {
    ctx.id("msg_01", 0, Alphabet::Base62, 22)
}

fn tool_id(ctx: &Ctx<'_>) -> crate::wire::Id {
    ctx.id("toolu_01", 1, Alphabet::Base62, 22)
}

fn json(ctx: &Ctx<'_>, model: &str, plan: &Plan<'_>) -> Out {
    let mut o = Out::with_capacity(768);
    write!(
        o,
        r#"{{"model":{},"id":"{}","type":"message","role":"assistant","content":["#,
        Json(model),
        message_id(ctx)
    );
    match plan.tool {
        Some(tool) => write!(
            o,
            r#"{{"type":"tool_use","id":"{}","name":{},"input":{},"caller":{{"type":"direct"}}}}"#,
            tool_id(ctx),
            Json(tool.name),
            tool.args
        ),
        None => write!(o, r#"{{"type":"text","text":{}}}"#, Json(&text(plan.words))),
    }
    write!(
        o,
        r#"],"stop_reason":"{}","stop_sequence":null,"#,
        stop_reason(plan)
    );
    write_usage(&mut o, plan, plan.tokens.output);
    o.push(b"}");
    o
}

fn event(ev: &mut Events, name: &str, data: &dyn Fn(&mut Out)) {
    write!(ev.out, "event: {name}\ndata: ");
    data(&mut ev.out);
    ev.out.push(b"\n\n");
    ev.end();
}

/// message_start, content_block_start, ping, deltas, content_block_stop, message_delta,
/// message_stop. `message_start` reports 1 output token, `message_delta` the final count.
fn stream(ctx: &Ctx<'_>, model: &str, plan: &Plan<'_>) -> Events {
    let mut ev = Events::with_capacity(200 * (plan.words + 8), plan.words + 8);
    event(&mut ev, "message_start", &|o| {
        write!(
            o,
            r#"{{"type":"message_start","message":{{"model":{},"id":"{}","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"#,
            Json(model),
            message_id(ctx)
        );
        write_usage(o, plan, 1);
        o.push(b"}}");
    });
    event(&mut ev, "content_block_start", &|o| {
        match plan.tool {
        Some(tool) => write!(
            o,
            r#"{{"type":"content_block_start","index":0,"content_block":{{"type":"tool_use","id":"{}","name":{},"input":{{}},"caller":{{"type":"direct"}}}}}}"#,
            tool_id(ctx),
            Json(tool.name)
        ),
        None => o.push(br#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
    }
    });
    // Byte-exact with the recordings, including the spaces Anthropic puts in this one.
    ev.out.push(b"event: ping\ndata: {\"type\": \"ping\"}\n\n");
    ev.end();
    match plan.tool {
        Some(tool) => {
            for frag in std::iter::once("").chain(fragments(tool.args, plan.words)) {
                event(&mut ev, "content_block_delta", &|o| {
                    write!(
                        o,
                        r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"input_json_delta","partial_json":{}}}}}"#,
                        Json(frag)
                    )
                });
            }
        }
        None => {
            for i in 0..plan.words {
                event(&mut ev, "content_block_delta", &|o| {
                    write!(
                        o,
                        r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
                        Json(word(i))
                    )
                });
            }
        }
    }
    event(&mut ev, "content_block_stop", &|o| {
        o.push(br#"{"type":"content_block_stop","index":0}"#)
    });
    event(&mut ev, "message_delta", &|o| {
        let t = plan.tokens;
        write!(
            o,
            r#"{{"type":"message_delta","delta":{{"stop_reason":"{}","stop_sequence":null}},"usage":{{"input_tokens":{},"cache_creation_input_tokens":{},"cache_read_input_tokens":{},"output_tokens":{}}}}}"#,
            stop_reason(plan),
            t.uncached(),
            t.cache_write,
            t.cached,
            t.output
        )
    });
    event(&mut ev, "message_stop", &|o| {
        o.push(br#"{"type":"message_stop"}"#)
    });
    ev
}
