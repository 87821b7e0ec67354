//! Azure OpenAI chat (`POST /openai/deployments/{deployment}/chat/completions?api-version=…`),
//! modelled on fixtures/azure/chat_basic.json and chat_stream_content_filter.sse: the OpenAI
//! shape plus `prompt_filter_results` / `content_filter_results`, a first stream chunk with
//! `choices: []` and empty id/model, keys in the (alphabetical) order of the recordings.
//!
//! Azure routes on the deployment in the URL and ignores the body's `model`, so the mock
//! reports the deployment name as `model`.

use crate::openai::ChatRequest;
use crate::reply::{Ctx, Plan, Reject, Reply};
use crate::wire::{fragments, text, word, Alphabet, Events, Json, Out};

/// The prompt filter verdict exactly as in the recorded first chunk.
const FIRST_CHUNK: &[u8] = br#"data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}

"#;

/// Per-chunk completion filter verdict of content chunks (role and finish chunks carry `{}`).
const CONTENT_FILTER: &str = r#"{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}"#;

pub(crate) fn chat(ctx: &Ctx<'_>, deployment: &str) -> Result<Reply, Reject> {
    let req = ChatRequest::parse(ctx.body)?;
    let plan = ctx.plan(req.cap(), req.has_tools());
    if req.stream == Some(true) {
        Ok(ctx.stream(stream(ctx, deployment, &plan, req.include_usage())))
    } else {
        Ok(Reply::Json {
            status: http::StatusCode::OK,
            body: json(ctx, deployment, &plan).0.into(),
        })
    }
}

fn finish_reason(plan: &Plan<'_>) -> &'static str {
    match (plan.tool, plan.truncated) {
        (Some(_), _) => "tool_calls",
        (None, true) => "length",
        (None, false) => "stop",
    }
}

fn write_usage(o: &mut Out, plan: &Plan<'_>) {
    let t = plan.tokens;
    write!(
        o,
        r#""usage":{{"completion_tokens":{},"completion_tokens_details":{{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0}},"prompt_tokens":{},"prompt_tokens_details":{{"audio_tokens":0,"cached_tokens":{}}},"total_tokens":{}}}"#,
        t.output,
        t.prompt,
        t.cached,
        t.total()
    );
}

fn json(ctx: &Ctx<'_>, model: &str, plan: &Plan<'_>) -> Out {
    let mut o = Out::with_capacity(1024);
    write!(
        o,
        r#"{{"choices":[{{"content_filter_results":{{}},"finish_reason":"{}","index":0,"logprobs":null,"message":{{"annotations":[],"#,
        finish_reason(plan)
    );
    match plan.tool {
        Some(tool) => {
            let call = ctx.id("call_", 1, Alphabet::Base62, 24);
            write!(
                o,
                r#""content":null,"refusal":null,"role":"assistant","tool_calls":[{{"function":{{"arguments":{},"name":{}}},"id":"{call}","type":"function"}}]}}}}],"#,
                Json(tool.args),
                Json(tool.name)
            );
        }
        None => write!(
            o,
            r#""content":{},"refusal":null,"role":"assistant"}}}}],"#,
            Json(&text(plan.words))
        ),
    }
    write!(
        o,
        r#""created":{},"id":"{}","model":{},"object":"chat.completion","prompt_filter_results":[{{"content_filter_results":{{}},"prompt_index":0}}],"system_fingerprint":null,"#,
        ctx.created,
        ctx.id("chatcmpl-", 0, Alphabet::Base62, 29),
        Json(model)
    );
    write_usage(&mut o, plan);
    o.push(b"}");
    o
}

fn stream(ctx: &Ctx<'_>, model: &str, plan: &Plan<'_>, include_usage: bool) -> Events {
    let mut ev = Events::with_capacity(600 * (plan.words + 5), plan.words + 5);
    let id = ctx.id("chatcmpl-", 0, Alphabet::Base62, 29).to_string();
    // `choice` is the inside of `"choices":[…]`; `usage` the usage member or nothing.
    let chunk = |ev: &mut Events, choice: &dyn Fn(&mut Out), usage: Option<&Plan<'_>>| {
        ev.out.push(br#"data: {"choices":["#);
        choice(&mut ev.out);
        write!(
            ev.out,
            r#"],"created":{},"id":"{id}","model":{},"obfuscation":"sira","object":"chat.completion.chunk","system_fingerprint":null"#,
            ctx.created,
            Json(model)
        );
        match usage {
            Some(plan) => {
                ev.out.push(b",");
                write_usage(&mut ev.out, plan);
            }
            None if include_usage => ev.out.push(br#","usage":null"#),
            None => {}
        }
        ev.out.push(b"}\n\n");
        ev.end();
    };
    ev.out.push(FIRST_CHUNK);
    ev.end();
    match plan.tool {
        Some(tool) => {
            let call = ctx.id("call_", 1, Alphabet::Base62, 24);
            chunk(
                &mut ev,
                &|o| {
                    write!(
                        o,
                        r#"{{"content_filter_results":{{}},"delta":{{"content":null,"refusal":null,"role":"assistant","tool_calls":[{{"function":{{"arguments":"","name":{}}},"id":"{call}","index":0,"type":"function"}}]}},"finish_reason":null,"index":0,"logprobs":null}}"#,
                        Json(tool.name)
                    )
                },
                None,
            );
            for frag in fragments(tool.args, plan.words) {
                chunk(
                    &mut ev,
                    &|o| {
                        write!(
                            o,
                            r#"{{"content_filter_results":{CONTENT_FILTER},"delta":{{"tool_calls":[{{"function":{{"arguments":{}}},"index":0}}]}},"finish_reason":null,"index":0,"logprobs":null}}"#,
                            Json(frag)
                        )
                    },
                    None,
                );
            }
        }
        None => {
            chunk(
                &mut ev,
                &|o| {
                    o.push(br#"{"content_filter_results":{},"delta":{"content":"","refusal":null,"role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}"#)
                },
                None,
            );
            for i in 0..plan.words {
                chunk(
                    &mut ev,
                    &|o| {
                        write!(
                            o,
                            r#"{{"content_filter_results":{CONTENT_FILTER},"delta":{{"content":{}}},"finish_reason":null,"index":0,"logprobs":null}}"#,
                            Json(word(i))
                        )
                    },
                    None,
                );
            }
        }
    }
    let reason = finish_reason(plan);
    chunk(
        &mut ev,
        &|o| {
            write!(
                o,
                r#"{{"content_filter_results":{{}},"delta":{{}},"finish_reason":"{reason}","index":0,"logprobs":null}}"#
            )
        },
        None,
    );
    if include_usage {
        chunk(&mut ev, &|_| {}, Some(plan));
    }
    ev.out.push(b"data: [DONE]\n\n");
    ev.end();
    ev
}
