//! OpenAI Responses API (`POST /v1/responses`), modelled on fixtures/openai_responses/:
//! basic_input_string.json and function_call.json (JSON), stream_cached_tokens.sse,
//! stream_function_call.sse and stream_incomplete.sse (typed events with `sequence_number`,
//! terminal `response.completed` / `response.incomplete`, no `[DONE]`). The response object
//! uses the field set of the newest recordings (stream_error_insufficient_quota.sse).

use crate::reply::{Ctx, Plan, Reject, Reply};
use crate::wire::{fragments, pretty, text, word, Alphabet, Events, Json, Out};
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Deserialize)]
struct ResponsesRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    /// Echoed back like the real API does (serde_json re-serializes it with sorted keys).
    tools: Option<Vec<serde_json::Value>>,
    #[serde(borrow)]
    instructions: Option<Cow<'a, str>>,
    max_output_tokens: Option<u64>,
    #[serde(borrow)]
    previous_response_id: Option<Cow<'a, str>>,
    store: Option<bool>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
}

pub(crate) fn create(ctx: &Ctx<'_>) -> Result<Reply, Reject> {
    let req: ResponsesRequest<'_> = serde_json::from_slice(ctx.body).map_err(Reject::json)?;
    let model = req
        .model
        .as_deref()
        .ok_or_else(|| Reject("Missing required parameter: 'model'.".to_owned()))?;
    let plan = ctx.plan(
        req.max_output_tokens,
        req.tools.as_ref().is_some_and(|t| !t.is_empty()),
    );
    let r = Resp {
        ctx,
        req: &req,
        model,
        plan: &plan,
    };
    if req.stream == Some(true) {
        Ok(ctx.stream(r.stream()))
    } else {
        let mut o = Out::with_capacity(2048);
        r.object(&mut o, Phase::Json);
        Ok(Reply::Json {
            status: http::StatusCode::OK,
            body: pretty(&o.0).into(),
        })
    }
}

/// Which state of the response object to write. The recordings differ slightly between the
/// JSON body (basic_input_string.json: `usage.input_tokens_details.cache_write_tokens`) and
/// the newest stream (no `cache_write_tokens`, but `prompt_cache_retention`); each follows its
/// own recording.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `response.created` / `response.in_progress`: no output, no usage.
    InProgress,
    /// The finished object in the terminal stream event.
    Final,
    /// The finished object as a JSON body.
    Json,
}

struct Resp<'a> {
    ctx: &'a Ctx<'a>,
    req: &'a ResponsesRequest<'a>,
    model: &'a str,
    plan: &'a Plan<'a>,
}

impl Resp<'_> {
    fn response_id(&self) -> crate::wire::Id {
        self.ctx.id("resp_", 0, Alphabet::Hex, 48)
    }

    fn item_id(&self) -> crate::wire::Id {
        match self.plan.tool {
            Some(_) => self.ctx.id("fc_", 1, Alphabet::Hex, 48),
            None => self.ctx.id("msg_", 1, Alphabet::Hex, 48),
        }
    }

    fn status(&self) -> &'static str {
        if self.plan.truncated {
            "incomplete"
        } else {
            "completed"
        }
    }

    /// The single output item, in its final (`done`) or initial (`added`) state.
    fn item(&self, o: &mut Out, done: bool) {
        let id = self.item_id();
        let status = if done { self.status() } else { "in_progress" };
        match self.plan.tool {
            Some(tool) => {
                let args = if done { tool.args } else { "" };
                write!(
                    o,
                    r#"{{"id":"{id}","type":"function_call","status":"{status}","arguments":{},"call_id":"{}","name":{}}}"#,
                    Json(args),
                    self.ctx.id("call_", 2, Alphabet::Base62, 24),
                    Json(tool.name)
                );
            }
            None if done => write!(
                o,
                r#"{{"id":"{id}","type":"message","status":"{status}","content":[{{"type":"output_text","annotations":[],"logprobs":[],"text":{}}}],"role":"assistant"}}"#,
                Json(&text(self.plan.words))
            ),
            None => write!(
                o,
                r#"{{"id":"{id}","type":"message","status":"{status}","content":[],"role":"assistant"}}"#
            ),
        }
    }

    fn object(&self, o: &mut Out, phase: Phase) {
        let req = self.req;
        let fin = phase != Phase::InProgress;
        let json = phase == Phase::Json;
        let status = if fin { self.status() } else { "in_progress" };
        write!(
            o,
            r#"{{"id":"{}","object":"response","created_at":{},"status":"{status}","background":false,"error":null,"#,
            self.response_id(),
            self.ctx.created
        );
        if fin && self.plan.truncated {
            o.push(br#""incomplete_details":{"reason":"max_output_tokens"},"#);
        } else {
            o.push(br#""incomplete_details":null,"#);
        }
        opt_str(o, "instructions", req.instructions.as_deref());
        match req.max_output_tokens {
            Some(n) => write!(o, r#""max_output_tokens":{n},"#),
            None => o.push(br#""max_output_tokens":null,"#),
        }
        write!(
            o,
            r#""max_tool_calls":null,"model":{},"output":["#,
            Json(self.model)
        );
        if fin {
            self.item(o, true);
        }
        o.push(br#"],"parallel_tool_calls":true,"#);
        opt_str(
            o,
            "previous_response_id",
            req.previous_response_id.as_deref(),
        );
        write!(
            o,
            r#""prompt_cache_key":null,{}"reasoning":{{"effort":null,"summary":null}},"safety_identifier":null,"service_tier":"{}","store":{},"temperature":{:?},"text":{{"format":{{"type":"text"}},"verbosity":"medium"}},"tool_choice":"auto","tools":"#,
            if json {
                ""
            } else {
                r#""prompt_cache_retention":null,"#
            },
            if fin { "default" } else { "auto" },
            req.store.unwrap_or(true),
            req.temperature.unwrap_or(1.0)
        );
        match &req.tools {
            Some(tools) => o.push(
                serde_json::Value::Array(tools.clone())
                    .to_string()
                    .as_bytes(),
            ),
            None => o.push(b"[]"),
        }
        write!(
            o,
            r#","top_logprobs":0,"top_p":{:?},"truncation":"disabled","usage":"#,
            req.top_p.unwrap_or(1.0)
        );
        if fin {
            let t = self.plan.tokens;
            write!(
                o,
                r#"{{"input_tokens":{},"input_tokens_details":{{"cached_tokens":{}"#,
                t.prompt, t.cached
            );
            if json {
                write!(o, r#","cache_write_tokens":{}"#, t.cache_write);
            }
            write!(
                o,
                r#"}},"output_tokens":{},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}}"#,
                t.output,
                t.total()
            );
        } else {
            o.push(b"null");
        }
        o.push(b",");
        opt_str(o, "user", req.user.as_deref());
        o.push(br#""metadata":{}}"#);
    }

    /// created, in_progress, output_item.added, [content_part.added], deltas, *.done,
    /// [content_part.done], output_item.done, completed|incomplete.
    fn stream(&self) -> Events {
        let n = self.plan.words;
        let mut ev = Events::with_capacity(300 * (n + 10) + 4096, n + 10);
        let mut seq = 0usize;
        let item_id = self.item_id().to_string();
        let mut event = |ev: &mut Events, kind: &str, body: &dyn Fn(&mut Out)| {
            write!(
                ev.out,
                "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{seq},"
            );
            body(&mut ev.out);
            ev.out.push(b"}\n\n");
            ev.end();
            seq += 1;
        };
        let head = |o: &mut Out| write!(o, r#""item_id":"{item_id}","output_index":0,"#);
        event(&mut ev, "response.created", &|o| {
            o.push(br#""response":"#);
            self.object(o, Phase::InProgress);
        });
        event(&mut ev, "response.in_progress", &|o| {
            o.push(br#""response":"#);
            self.object(o, Phase::InProgress);
        });
        event(&mut ev, "response.output_item.added", &|o| {
            o.push(br#""output_index":0,"item":"#);
            self.item(o, false);
        });
        match self.plan.tool {
            Some(tool) => {
                for frag in fragments(tool.args, n) {
                    event(&mut ev, "response.function_call_arguments.delta", &|o| {
                        head(o);
                        write!(o, r#""delta":{}"#, Json(frag));
                    });
                }
                event(&mut ev, "response.function_call_arguments.done", &|o| {
                    head(o);
                    write!(o, r#""arguments":{}"#, Json(tool.args));
                });
            }
            None => {
                let full = text(n);
                let part = |o: &mut Out, t: &str| {
                    write!(
                        o,
                        r#""part":{{"type":"output_text","annotations":[],"logprobs":[],"text":{}}}"#,
                        Json(t)
                    );
                };
                event(&mut ev, "response.content_part.added", &|o| {
                    head(o);
                    o.push(br#""content_index":0,"#);
                    part(o, "");
                });
                for i in 0..n {
                    event(&mut ev, "response.output_text.delta", &|o| {
                        head(o);
                        write!(
                            o,
                            r#""content_index":0,"delta":{},"logprobs":[]"#,
                            Json(word(i))
                        );
                    });
                }
                event(&mut ev, "response.output_text.done", &|o| {
                    head(o);
                    write!(
                        o,
                        r#""content_index":0,"text":{},"logprobs":[]"#,
                        Json(&full)
                    );
                });
                event(&mut ev, "response.content_part.done", &|o| {
                    head(o);
                    o.push(br#""content_index":0,"#);
                    part(o, &full);
                });
            }
        }
        event(&mut ev, "response.output_item.done", &|o| {
            o.push(br#""output_index":0,"item":"#);
            self.item(o, true);
        });
        let terminal = if self.plan.truncated {
            "response.incomplete"
        } else {
            "response.completed"
        };
        event(&mut ev, terminal, &|o| {
            o.push(br#""response":"#);
            self.object(o, Phase::Final);
        });
        ev
    }
}

/// `"name":"value",` or `"name":null,`.
fn opt_str(o: &mut Out, name: &str, v: Option<&str>) {
    match v {
        Some(v) => write!(o, r#""{name}":{},"#, Json(v)),
        None => write!(o, r#""{name}":null,"#),
    }
}

/// `POST /v1/responses/input_tokens`: `{"object":"response.input_tokens","input_tokens":P}`.
/// Only the fields OpenAI's counting endpoint takes are accepted (a generation's own, such
/// as `stream` or `max_output_tokens`, are refused), and `model` is required.
pub(crate) fn input_tokens(ctx: &Ctx<'_>) -> Result<Reply, Reject> {
    const ALLOWED: [&str; 11] = [
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "reasoning",
        "text",
        "parallel_tool_calls",
        "truncation",
        "previous_response_id",
        "conversation",
    ];
    let body: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(ctx.body).map_err(Reject::json)?;
    if let Some(unknown) = body.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return Err(Reject(format!("Unknown parameter: '{unknown}'.")));
    }
    if !body.contains_key("model") {
        return Err(Reject("Missing required parameter: 'model'.".to_owned()));
    }
    let mut o = Out::with_capacity(64);
    write!(
        o,
        r#"{{"object":"response.input_tokens","input_tokens":{}}}"#,
        ctx.tokens(0).prompt
    );
    Ok(Reply::Json {
        status: http::StatusCode::OK,
        body: o.0.into(),
    })
}
