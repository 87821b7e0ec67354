//! Unit tests of the stream rules: index bookkeeping, parallel calls, mid-stream errors and
//! truncation, signatures carried across turns.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::rules::{frames, request, sse};
use super::*;
use crate::translate::translate_response;

// ------------------------------------------------------------------ streams

#[test]
fn anthropic_block_indexes_map_to_openai_tool_indexes() {
    let tool = |i: u32, id: &str| {
        (
            "content_block_start",
            json!({"type":"content_block_start","index":i,"content_block":{"type":"tool_use","id":id,"name":"f","input":{}}}),
        )
    };
    let args = |i: u32, j: &str| {
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":i,"delta":{"type":"input_json_delta","partial_json":j}}),
        )
    };
    let input = sse(&[
        (
            "message_start",
            json!({"type":"message_start","message":{"id":"msg_1","model":"c","usage":{"input_tokens":5,"output_tokens":1}}}),
        ),
        (
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}),
        ),
        (
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        ),
        tool(1, "toolu_a"),
        args(1, "{\"x\":"),
        args(1, "1}"),
        (
            "content_block_stop",
            json!({"type":"content_block_stop","index":1}),
        ),
        tool(2, "toolu_b"),
        args(2, "{}"),
        (
            "content_block_stop",
            json!({"type":"content_block_stop","index":2}),
        ),
        (
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}),
        ),
        ("message_stop", json!({"type":"message_stop"})),
    ]);
    let (out, usage) = run_stream(Format::Anthropic, Format::OpenAiChat, [&input[..]]);
    let calls: Vec<Value> = frames(&out)
        .into_iter()
        .filter_map(|(_, v)| {
            v["choices"][0]["delta"]["tool_calls"][0]
                .as_object()
                .cloned()
                .map(Value::Object)
        })
        .collect();
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[0]["id"], "toolu_a");
    assert_eq!(calls[1]["index"], 0);
    assert_eq!(calls[1]["function"]["arguments"], "{\"x\":");
    assert_eq!(calls[3]["index"], 1);
    assert_eq!(calls[3]["id"], "toolu_b");
    assert_eq!(calls[4]["index"], 1);
    let finish: Vec<Value> = frames(&out)
        .into_iter()
        .map(|(_, v)| v["choices"][0]["finish_reason"].clone())
        .collect();
    assert!(finish.contains(&json!("tool_calls")));
    assert_eq!((usage.input, usage.output), (5, 9));
}

#[test]
fn held_back_arguments_of_a_parallel_call_are_bounded() {
    // The second call is held back while the first streams; its arguments grow without
    // end. The translator refuses once they pass the bound instead of holding them all.
    let chunk = |delta: Value| json!({"id":"c1","model":"m","choices":[{"index":0,"delta":delta,"finish_reason":null}]});
    let call = |i: u32, id: &str| json!({"tool_calls":[{"index":i,"id":id,"type":"function","function":{"name":"f","arguments":""}}]});
    let args = |i: u32, a: &str| json!({"tool_calls":[{"index":i,"function":{"arguments":a}}]});
    let piece = "x".repeat(100);
    let mut events = vec![
        ("", chunk(json!({"role":"assistant","content":null}))),
        ("", chunk(call(0, "call_a"))),
        ("", chunk(call(1, "call_b"))),
    ];
    for _ in 0..20 {
        events.push(("", chunk(args(1, &piece))));
    }
    let input = sse(&events);
    let mut t = StreamTranslator::new(Format::OpenAiChat, Format::Anthropic, opts());
    t.set_limits(crate::translate::StreamLimits {
        event: usize::MAX,
        tool_arguments: 1000,
        answer: usize::MAX,
    });
    let mut out = BytesMut::new();
    let refused = t.feed(Bytes::from(input.clone()), &mut out);
    assert!(
        matches!(
            refused,
            Err(crate::translate::TranslateError::TooLarge {
                buffer: crate::metrics::Buffer::ToolArguments,
                ..
            })
        ),
        "{refused:?}"
    );
    // Without a bound the same stream is accepted.
    let mut t = StreamTranslator::new(Format::OpenAiChat, Format::Anthropic, opts());
    let mut out = BytesMut::new();
    assert!(t.feed(Bytes::from(input), &mut out).is_ok());
}

#[test]
fn interleaved_parallel_calls_become_sequential_anthropic_blocks() {
    let chunk = |delta: Value, finish: Value| json!({"id":"c1","model":"m","choices":[{"index":0,"delta":delta,"finish_reason":finish}]});
    let call = |i: u32, id: &str, name: &str| json!({"tool_calls":[{"index":i,"id":id,"type":"function","function":{"name":name,"arguments":""}}]});
    let args = |i: u32, a: &str| json!({"tool_calls":[{"index":i,"function":{"arguments":a}}]});
    let input = sse(&[
        (
            "",
            chunk(json!({"role":"assistant","content":null}), Value::Null),
        ),
        ("", chunk(call(0, "call_a", "f"), Value::Null)),
        ("", chunk(call(1, "call_b", "g"), Value::Null)),
        ("", chunk(args(0, "{\"a\":"), Value::Null)),
        ("", chunk(args(1, "{\"b\":"), Value::Null)),
        ("", chunk(args(0, "1}"), Value::Null)),
        ("", chunk(args(1, "2}"), Value::Null)),
        ("", chunk(json!({}), json!("tool_calls"))),
        (
            "",
            json!({"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}),
        ),
    ]);
    let mut input = input;
    input.extend_from_slice(b"data: [DONE]\n\n");
    let (out, _) = run_stream(Format::OpenAiChat, Format::Anthropic, [&input[..]]);
    let events = frames(&out);
    // Blocks are strictly sequential: every delta targets the one open block (§6.3).
    let mut open: Option<u64> = None;
    let mut blocks: Vec<(u64, String, String)> = Vec::new();
    for (name, v) in &events {
        match name.as_deref() {
            Some("content_block_start") => {
                assert_eq!(open, None);
                open = v["index"].as_u64();
                blocks.push((
                    v["index"].as_u64().unwrap(),
                    v["content_block"]["id"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            Some("content_block_delta") => {
                assert_eq!(open, v["index"].as_u64());
                blocks
                    .last_mut()
                    .unwrap()
                    .2
                    .push_str(v["delta"]["partial_json"].as_str().unwrap());
            }
            Some("content_block_stop") => open = None,
            _ => {}
        }
    }
    assert_eq!(
        blocks,
        vec![
            (0, "call_a".into(), "{\"a\":1}".into()),
            (1, "call_b".into(), "{\"b\":2}".into())
        ]
    );
    assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"));
}

#[test]
fn gemini_functions_get_minted_ids_and_tool_use_stop() {
    let body =
        read(&Path::new(FIXTURES).join("gemini/generate_content_parallel_function_calls.json"));
    let t = translate_response(Format::Gemini, Format::Anthropic, &body, &opts()).unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    let ids: Vec<&str> = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id.starts_with("call_")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')));
    assert_ne!(ids[0], ids[1]);
    assert_eq!(v["stop_reason"], "tool_use");
}

#[test]
fn indented_arguments_stay_on_one_data_line_for_a_gemini_client() {
    // A model's arguments are a JSON text, indented or not: carried to Gemini as an object
    // kept as it came, their line breaks must not end the `data:` line (nor let arguments
    // frame events of their own).
    let args = "{\n  \"city\": \"Paris\",\r\n\n  \"x\": {\"candidates\": [{\"finishReason\": \"STOP\"}]}\n}";
    let input = sse(&[
        (
            "",
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":args}}]},"finish_reason":null}]}),
        ),
        (
            "",
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
        ),
    ]);
    let mut input = input;
    input.extend_from_slice(b"data: [DONE]\n\n");
    let (out, _) = run_stream(Format::OpenAiChat, Format::Gemini, [&input[..]]);
    let text = String::from_utf8(out.to_vec()).unwrap();
    let events: Vec<&str> = text.split("\r\n\r\n").filter(|e| !e.is_empty()).collect();
    let mut calls = 0;
    for event in &events {
        let data = event.strip_prefix("data: ").expect(event);
        assert!(!data.contains(['\n', '\r']), "{event:?}");
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(call) = v["candidates"][0]["content"]["parts"][0].get("functionCall") {
            assert_eq!(call["args"]["city"], "Paris");
            calls += 1;
        }
    }
    assert_eq!(calls, 1, "{text}");
}

#[test]
fn upstream_cut_is_an_error_not_a_stop() {
    let input = sse(&[
        (
            "message_start",
            json!({"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":7}}}),
        ),
        (
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"par"}}),
        ),
    ]);
    let (out, usage) = run_stream(Format::Anthropic, Format::OpenAiChat, [&input[..]]);
    let f = frames(&out);
    assert!(f.last().unwrap().1.get("error").is_some());
    assert!(!f
        .iter()
        .any(|(_, v)| v == "[DONE]" || v["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(usage.input, 7);
}

#[test]
fn anthropic_overload_mid_stream_keeps_usage() {
    let input = sse(&[
        (
            "message_start",
            json!({"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":1}}}),
        ),
        (
            "error",
            json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
        ),
    ]);
    for to in [Format::OpenAiChat, Format::OpenAiResponses, Format::Gemini] {
        let (out, usage) = run_stream(Format::Anthropic, to, [&input[..]]);
        assert_eq!((usage.input, usage.cached_input), (100, 90));
        let last = frames(&out).pop().unwrap();
        match to {
            Format::OpenAiChat => assert_eq!(last.1["error"]["type"], "service_unavailable_error"),
            Format::OpenAiResponses => {
                assert_eq!(last.0.as_deref(), Some("response.failed"));
                assert_eq!(last.1["response"]["error"]["code"], "server_error");
                assert_eq!(last.1["response"]["usage"]["input_tokens"], 100);
            }
            _ => assert_eq!(last.1["error"]["status"], "UNAVAILABLE"),
        }
    }
}

#[test]
fn gemini_bare_error_after_usage_keeps_usage() {
    let mut input = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":12,\"candidatesTokenCount\":1,\"totalTokenCount\":13}}\r\n\r\n".to_vec();
    input.extend_from_slice(b"{\n  \"error\": {\n    \"code\": 503,\n    \"message\": \"overloaded\",\n    \"status\": \"UNAVAILABLE\"\n  }\n}\n");
    let (out, usage) = run_stream(Format::Gemini, Format::Anthropic, [&input[..]]);
    assert_eq!(usage.input, 12);
    let last = frames(&out).pop().unwrap();
    assert_eq!(last.0.as_deref(), Some("error"));
    assert_eq!(last.1["error"]["type"], "overloaded_error");
}

#[test]
fn error_event_then_finish_emits_nothing_more() {
    let mut t = StreamTranslator::new(Format::Anthropic, Format::Anthropic, opts());
    let mut out = BytesMut::new();
    t.error_event("connection reset", &mut out);
    t.finish(&mut out);
    let f = frames(&out);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0.as_deref(), Some("error"));
    let mut t = StreamTranslator::new(Format::Gemini, Format::OpenAiChat, opts());
    let mut out = BytesMut::new();
    t.feed(
        Bytes::from_static(b"data: {\"candidates\":[]}\r\n\r\n"),
        &mut out,
    )
    .unwrap();
    t.error_event("boom", &mut out);
    t.finish(&mut out);
    assert_eq!(frames(&out).last().unwrap().1["error"]["message"], "boom");
}

// ------------------------------------------------------------------ signatures

#[test]
fn anthropic_thinking_signature_survives_a_responses_client() {
    // Stream to a Responses client: the reasoning item carries a sira carrier.
    let body = read(&Path::new(FIXTURES).join("anthropic/messages_stream_thinking.sse"));
    let (out, _) = run_stream(Format::Anthropic, Format::OpenAiResponses, [&body[..]]);
    let done = frames(&out)
        .into_iter()
        .find(|(n, v)| {
            n.as_deref() == Some("response.output_item.done") && v["item"]["type"] == "reasoning"
        })
        .unwrap();
    let item = done.1["item"].clone();
    // The client replays it (Codex drops `id`), followed by the assistant message.
    let replay = json!({
        "model": "x",
        "input": [
            {"role":"user","content":"q"},
            {"type":"reasoning","summary":item["summary"],"encrypted_content":item["encrypted_content"]},
            {"type":"function_call","call_id":"toolu_1","name":"f","arguments":"{}"},
            {"type":"function_call_output","call_id":"toolu_1","output":"ok"}
        ]
    });
    let (anthropic, _) = request(Format::OpenAiResponses, Format::Anthropic, replay).unwrap();
    let first = &anthropic["messages"][1]["content"][0];
    assert_eq!(first["type"], "thinking");
    let original = sse_frames(&body)
        .into_iter()
        .find(|(_, v)| v["delta"]["type"] == "signature_delta")
        .unwrap()
        .1;
    assert_eq!(first["signature"], original["delta"]["signature"]);
    assert!(first["thinking"]
        .as_str()
        .unwrap()
        .starts_with("This is a straightforward question"));
}

#[test]
fn anthropic_thinking_signature_survives_a_chat_client() {
    let body = read(&Path::new(FIXTURES).join("anthropic/messages_thinking.json"));
    let t = translate_response(Format::Anthropic, Format::OpenAiChat, &body, &opts()).unwrap();
    let message: Value =
        serde_json::from_slice::<Value>(&t.body).unwrap()["choices"][0]["message"].clone();
    let follow_up = json!({"model":"x","messages":[{"role":"user","content":"q"}, message, {"role":"user","content":"more"}]});
    let (anthropic, _) = request(Format::OpenAiChat, Format::Anthropic, follow_up).unwrap();
    let original: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        anthropic["messages"][1]["content"][0]["signature"],
        original["content"][0]["signature"]
    );
    assert_eq!(
        anthropic["messages"][1]["content"][0]["thinking"],
        original["content"][0]["thinking"]
    );
}

#[test]
fn gemini_thought_signature_round_trips_through_the_call_id() {
    let body =
        read(&Path::new(FIXTURES).join("gemini/generate_content_thinking_function_call.json"));
    let original: Value = serde_json::from_slice(&body).unwrap();
    let signature = original["candidates"][0]["content"]["parts"][1]["thoughtSignature"].clone();
    for client in [
        Format::OpenAiChat,
        Format::Anthropic,
        Format::OpenAiResponses,
    ] {
        let t = translate_response(Format::Gemini, client, &body, &opts()).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        let next = match client {
            Format::OpenAiChat => {
                let msg = v["choices"][0]["message"].clone();
                let id = msg["tool_calls"][0]["id"].clone();
                json!({"model":"x","messages":[{"role":"user","content":"q"}, msg, {"role":"tool","tool_call_id":id,"content":"2025-01-01"}]})
            }
            Format::Anthropic => {
                let id = v["content"][1]["id"].clone();
                json!({"model":"x","max_tokens":10,"messages":[{"role":"user","content":"q"},{"role":"assistant","content":v["content"]},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":id,"content":"2025-01-01"}]}]})
            }
            _ => {
                let call = v["output"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|i| i["type"] == "function_call")
                    .unwrap()
                    .clone();
                json!({"model":"x","input":[{"role":"user","content":"q"}, call,
                    {"type":"function_call_output","call_id":call["call_id"],"output":"2025-01-01"}]})
            }
        };
        let (gemini, _) = request(client, Format::Gemini, next).unwrap();
        let model_turn = &gemini["contents"][1];
        assert_eq!(model_turn["role"], "model");
        let call = model_turn["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p.get("functionCall").is_some())
            .unwrap();
        assert_eq!(call["thoughtSignature"], signature, "{client:?}");
        assert_eq!(
            gemini["contents"][2]["parts"][0]["functionResponse"]["name"],
            "now"
        );
    }
}
