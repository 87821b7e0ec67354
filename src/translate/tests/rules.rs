//! Unit tests of the tricky rules (index bookkeeping, signatures, role repair, usage, stop
//! reasons, errors, request refusals and dropped hints).

use serde_json::{json, Value};

use super::*;
use crate::translate::{
    estimate_input_tokens, translate_error, translate_request, translate_response,
    translate_response_with, RequestOptions, TranslateError,
};

fn req_opts(stream: bool) -> RequestOptions<'static> {
    RequestOptions {
        model: "m",
        stream,
        default_max_tokens: 4096,
        legacy_max_tokens: false,
        // Automatic cache breakpoints have their own tests (agents.rs); here they would
        // only clutter the expected bodies.
        prompt_cache: false,
        web_search: false,
        seal: crate::translate::Seal::fixed(),
    }
}

pub(super) fn request(
    from: Format,
    to: Format,
    body: Value,
) -> Result<(Value, Vec<&'static str>), TranslateError> {
    let t = translate_request(from, to, body.to_string().as_bytes(), &req_opts(false))?;
    Ok((serde_json::from_slice(&t.body).unwrap(), t.dropped))
}

pub(super) fn sse(events: &[(&str, Value)]) -> Vec<u8> {
    let mut out = String::new();
    for (name, data) in events {
        if !name.is_empty() {
            out.push_str(&format!("event: {name}\n"));
        }
        out.push_str(&format!("data: {data}\n\n"));
    }
    out.into_bytes()
}

pub(super) fn frames(out: &[u8]) -> Vec<(Option<String>, Value)> {
    sse_frames(out)
}

// ------------------------------------------------------------------ requests

#[test]
fn roles_are_repaired_for_anthropic_and_gemini() {
    let body = json!({"model":"x","messages":[
        {"role":"system","content":"s1"},
        {"role":"user","content":"a"},
        {"role":"user","content":"b"},
        {"role":"assistant","content":null,"tool_calls":[
            {"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"q\":1}"}},
            {"id":"call_2","type":"function","function":{"name":"g","arguments":""}}]},
        {"role":"tool","tool_call_id":"call_1","content":"r1"},
        {"role":"tool","tool_call_id":"call_2","content":"r2"},
        {"role":"user","content":"thanks"},
        {"role":"assistant","content":""},
        {"role":"developer","content":"s2"}
    ]});
    let (a, _) = request(Format::OpenAiChat, Format::Anthropic, body.clone()).unwrap();
    let roles: Vec<&str> = a["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(a["messages"][0]["content"].as_array().unwrap().len(), 2);
    let results = a["messages"][2]["content"].as_array().unwrap();
    assert_eq!(results[0]["type"], "tool_result");
    assert_eq!(results[1]["tool_use_id"], "call_2");
    assert_eq!(results[2]["text"], "thanks");
    assert_eq!(a["messages"][1]["content"][1]["input"], json!({}));
    // Late system messages are concatenated into `system` for Chat clients (§2.2).
    assert_eq!(
        a["system"],
        json!([{"type":"text","text":"s1"},{"type":"text","text":"s2"}])
    );

    let (g, _) = request(Format::OpenAiChat, Format::Gemini, body).unwrap();
    let contents = g["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3);
    let responses = contents[2]["parts"].as_array().unwrap();
    assert_eq!(
        responses[0]["functionResponse"],
        json!({"name":"f","response":{"output":"r1"}})
    );
    assert_eq!(responses[1]["functionResponse"]["name"], "g");
}

#[test]
fn n_greater_than_one_is_refused_by_anthropic() {
    let err = request(
        Format::OpenAiChat,
        Format::Anthropic,
        json!({"model":"x","n":2,"messages":[{"role":"user","content":"a"}]}),
    )
    .unwrap_err();
    assert_eq!(err.param(), Some("n"));
    assert!(err.to_string().contains("`n`"));
    let client = err.to_client_error(Format::OpenAiChat);
    assert_eq!(client.status, 400);
    let body: Value = serde_json::from_slice(&client.body).unwrap();
    assert_eq!(body["error"]["param"], "n");
    // n = 1 is fine, Gemini can fan out.
    assert!(request(
        Format::OpenAiChat,
        Format::Anthropic,
        json!({"model":"x","n":1,"messages":[{"role":"user","content":"a"}]})
    )
    .is_ok());
    let (g, _) = request(
        Format::OpenAiChat,
        Format::Gemini,
        json!({"model":"x","n":2,"messages":[{"role":"user","content":"a"}]}),
    )
    .unwrap();
    assert_eq!(g["generationConfig"]["candidateCount"], 2);
}

#[test]
fn hint_parameters_are_dropped_and_listed() {
    let body = json!({"model":"x","seed":1,"presence_penalty":0.5,"frequency_penalty":0.1,"store":true,"temperature":1.7,
        "messages":[{"role":"user","content":"a"}]});
    let (a, dropped) = request(Format::OpenAiChat, Format::Anthropic, body.clone()).unwrap();
    assert_eq!(
        dropped,
        ["seed", "presence_penalty", "frequency_penalty", "store"]
    );
    // Temperature is clamped to Anthropic's 0..1 (§2.1).
    assert_eq!(a["temperature"], 1.0);
    assert!(a.get("seed").is_none());
    let (g, dropped) = request(Format::OpenAiChat, Format::Gemini, body).unwrap();
    assert_eq!(dropped, ["store"]);
    assert_eq!(g["generationConfig"]["seed"], 1);
    let (_, dropped) = request(
        Format::Anthropic,
        Format::OpenAiChat,
        json!({"model":"x","max_tokens":5,"top_k":3,"messages":[{"role":"user","content":"a"}]}),
    )
    .unwrap();
    assert_eq!(dropped, ["top_k"]);
}

#[test]
fn stateful_responses_requests_are_refused() {
    let err = request(
        Format::OpenAiResponses,
        Format::Anthropic,
        json!({"model":"x","previous_response_id":"resp_1","input":[{"type":"function_call_output","call_id":"c","output":"x"}]}),
    )
    .unwrap_err();
    assert_eq!(err.param(), Some("previous_response_id"));
    assert_eq!(err.code(), Some("previous_response_not_found"));
    let orphan = request(
        Format::OpenAiResponses,
        Format::OpenAiChat,
        json!({"model":"x","input":[{"type":"function_call_output","call_id":"c","output":"x"}]}),
    )
    .unwrap_err();
    assert_eq!(orphan.param(), Some("input"));
}

#[test]
fn chat_streams_ask_for_usage() {
    let t = translate_request(
        Format::Anthropic,
        Format::OpenAiChat,
        br#"{"model":"x","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"a"}]}"#,
        &req_opts(true),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(v["stream_options"], json!({"include_usage": true}));
    assert_eq!(v["stream"], true);
}

#[test]
fn thinking_with_forced_tool_is_dropped_for_anthropic() {
    let body = json!({"model":"x","reasoning_effort":"high","tool_choice":"required","max_completion_tokens":20000,
        "tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"a"}]});
    let (a, dropped) = request(Format::OpenAiChat, Format::Anthropic, body).unwrap();
    assert!(a.get("thinking").is_none());
    assert_eq!(a["tool_choice"], json!({"type":"any"}));
    assert_eq!(dropped, ["reasoning_effort"]);
    let body = json!({"model":"x","reasoning_effort":"high","max_completion_tokens":20000,"messages":[{"role":"user","content":"a"}]});
    let (a, _) = request(Format::OpenAiChat, Format::Anthropic, body).unwrap();
    assert_eq!(
        a["thinking"],
        json!({"type":"enabled","budget_tokens":10000})
    );
}

#[test]
fn custom_tools_round_trip_for_responses_clients() {
    let body = read(&Path::new(FIXTURES).join("openai_responses/requests/codex_turn.json"));
    let t = translate_request(
        Format::OpenAiResponses,
        Format::Anthropic,
        &body,
        &req_opts(true),
    )
    .unwrap();
    assert_eq!(t.context.custom_tools, ["apply_patch"]);
    let upstream = json!({"id":"msg_1","model":"c","content":[{"type":"tool_use","id":"toolu_9","name":"apply_patch",
        "input":{"input":"*** Begin Patch\n*** End Patch\n"}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}});
    let out = translate_response_with(
        Format::Anthropic,
        Format::OpenAiResponses,
        upstream.to_string().as_bytes(),
        &opts(),
        &t.context,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["output"][0]["type"], "custom_tool_call");
    assert_eq!(v["output"][0]["input"], "*** Begin Patch\n*** End Patch\n");
    assert_eq!(v["output"][0]["call_id"], "toolu_9");
    assert_eq!(v["status"], "completed");
}

// ------------------------------------------------------------------ usage and stops

#[test]
fn usage_conversions() {
    let anthropic = read(&Path::new(FIXTURES).join("anthropic/messages_cache_read.json"));
    let t = translate_response(Format::Anthropic, Format::OpenAiChat, &anthropic, &opts()).unwrap();
    // Anthropic input_tokens excludes the cache read: 11 + 2055 (§5.2).
    assert_eq!((t.usage.input, t.usage.cached_input), (11 + 2055, 2055));
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 2066);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2055);

    let gemini = read(&Path::new(FIXTURES).join("gemini/generate_content_cached_tokens.json"));
    let t = translate_response(Format::Gemini, Format::Anthropic, &gemini, &opts()).unwrap();
    assert_eq!(t.usage.input, 17713);
    assert_eq!(t.usage.cached_input, 17379);
    assert_eq!(t.usage.output, 68 + 821);
    assert_eq!(t.usage.reasoning, 821);
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    // Back to Anthropic's exclusive meaning (§5.2 "Gemini → Anthropic").
    assert_eq!(v["usage"]["input_tokens"], 17713 - 17379);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 17379);
    assert_eq!(v["usage"]["output_tokens"], 889);

    let openai = read(&Path::new(FIXTURES).join("openai/chat_cached_tokens.json"));
    let t = translate_response(
        Format::OpenAiChat,
        Format::OpenAiResponses,
        &openai,
        &opts(),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(v["usage"]["input_tokens"], 1220);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 1152);
    assert_eq!(
        v["usage"]["total_tokens"],
        v["usage"]["input_tokens"].as_u64().unwrap()
            + v["usage"]["output_tokens"].as_u64().unwrap()
    );
}

#[test]
fn stop_reason_mapping() {
    use crate::translate::ir::Stop;
    for (anthropic, openai) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        assert_eq!(
            Stop::from_anthropic(anthropic, None).openai(),
            openai,
            "{anthropic}"
        );
    }
    for (openai, anthropic) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        ("", "end_turn"),
    ] {
        assert_eq!(Stop::from_openai(openai).anthropic(), anthropic, "{openai}");
    }
    for (gemini, openai) in [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("SOMETHING_NEW", "stop"),
    ] {
        assert_eq!(Stop::from_gemini(gemini).openai(), openai, "{gemini}");
    }
    assert_eq!(
        Stop::MaxTokens.responses_incomplete(),
        Some("max_output_tokens")
    );
    assert_eq!(Stop::Refusal.responses_incomplete(), Some("content_filter"));
    assert_eq!(Stop::ToolUse.responses_incomplete(), None);
    assert_eq!(Stop::ToolUse.gemini(), "STOP");
}

// ------------------------------------------------------------------ errors

#[test]
fn error_status_mapping() {
    let fx = |p: &str| read(&Path::new(FIXTURES).join(p));
    let e = translate_error(
        Format::Anthropic,
        Format::OpenAiChat,
        529,
        &fx("anthropic/error_529_overloaded.json"),
    );
    assert_eq!(e.status, 503);
    let v: Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(v["error"]["type"], "service_unavailable_error");
    assert_eq!(v["error"]["code"], "server_is_overloaded");

    let e = translate_error(
        Format::Gemini,
        Format::OpenAiChat,
        400,
        &fx("gemini/error_400_api_key_invalid.json"),
    );
    assert_eq!(e.status, 401);
    assert_eq!(
        serde_json::from_slice::<Value>(&e.body).unwrap()["error"]["code"],
        "invalid_api_key"
    );

    let e = translate_error(
        Format::Gemini,
        Format::Anthropic,
        503,
        &fx("gemini/error_503_unavailable.json"),
    );
    assert_eq!(e.status, 529);
    assert_eq!(
        serde_json::from_slice::<Value>(&e.body).unwrap()["error"]["type"],
        "overloaded_error"
    );

    let e = translate_error(
        Format::OpenAiChat,
        Format::Anthropic,
        429,
        &fx("openai/error_429_insufficient_quota.json"),
    );
    assert_eq!(e.status, 429);
    assert_eq!(
        serde_json::from_slice::<Value>(&e.body).unwrap()["error"]["type"],
        "rate_limit_error"
    );

    let e = translate_error(
        Format::Anthropic,
        Format::Gemini,
        429,
        &fx("anthropic/error_429_rate_limit.json"),
    );
    assert_eq!(e.status, 429);
    assert_eq!(
        serde_json::from_slice::<Value>(&e.body).unwrap()["error"]["status"],
        "RESOURCE_EXHAUSTED"
    );

    // Never fails: garbage becomes a generic error with the upstream status class.
    let e = translate_error(
        Format::Anthropic,
        Format::OpenAiChat,
        502,
        b"<html>bad gateway</html>",
    );
    assert_eq!(e.status, 500);
    let v: Value = serde_json::from_slice(&e.body).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("502"));
}

#[test]
fn estimate_counts_tools_and_messages() {
    let body = br#"{"model":"x","messages":[{"role":"user","content":"abcdefgh"}],"tools":[{"type":"function","function":{"name":"abcd","description":"abcd"}}]}"#;
    // One message (4) + ceil((8 + 4 + 4) / 4).
    assert_eq!(
        estimate_input_tokens(Format::OpenAiChat, body).unwrap(),
        4 + 4
    );
}

#[test]
fn responses_identity_strips_sira_carriers() {
    let body = json!({"model":"x","input":[
        {"role":"user","content":"q"},
        {"type":"reasoning","summary":[],"encrypted_content":"sira1.eyJ9"},
        {"type":"reasoning","summary":[],"encrypted_content":"gAAAA-openai"},
        {"type":"function_call","call_id":"c","name":"f","arguments":"{}"}
    ]});
    let (v, _) = request(Format::OpenAiResponses, Format::OpenAiResponses, body).unwrap();
    let kinds: Vec<&str> = v["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap_or("message"))
        .collect();
    assert_eq!(kinds, ["message", "reasoning", "function_call"]);
    assert_eq!(v["input"][1]["encrypted_content"], "gAAAA-openai");
    assert_eq!(v["model"], "m");
}

#[test]
fn item_references_name_the_input() {
    let err = request(
        Format::OpenAiResponses,
        Format::Gemini,
        json!({"model":"x","input":[{"type":"item_reference","id":"msg_1"}]}),
    )
    .unwrap_err();
    assert_eq!(err.param(), Some("input"));
    assert!(err.to_string().contains("msg_1"), "{err}");
}
