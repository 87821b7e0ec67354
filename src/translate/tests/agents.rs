//! What coding agents send: Codex's `namespace` and hosted tools through every provider, the
//! namespaced call coming back to Codex under the name and namespace it declared, in JSON
//! answers, in streams and in the history of the next turn.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::rules::frames;
use super::*;
use crate::translate::responses::request::flat_name;
use crate::translate::{translate_request, translate_response_with, RequestOptions};

fn codex_body() -> Vec<u8> {
    read(&Path::new(FIXTURES).join("openai_responses/requests/client_codex_0.169_turn.json"))
}

fn opts(stream: bool) -> RequestOptions<'static> {
    RequestOptions {
        model: "m",
        stream,
        default_max_tokens: 4096,
        legacy_max_tokens: false,
        prompt_cache: true,
        web_search: false,
        seal: crate::translate::Seal::fixed(),
    }
}

#[test]
fn codex_reaches_every_provider_with_its_namespace_and_without_hosted_tools() {
    let body = codex_body();
    for to in [Format::Anthropic, Format::Gemini, Format::OpenAiChat] {
        let t = translate_request(Format::OpenAiResponses, to, &body, &opts(true))
            .unwrap_or_else(|e| panic!("{to:?}: {e}"));
        assert!(t.dropped.contains(&"web_search"), "{to:?}: {:?}", t.dropped);
        let text = String::from_utf8(t.body.to_vec()).unwrap();
        assert!(text.contains("\"multi_agent_v1__spawn_agent\""), "{to:?}");
        assert!(
            !text.contains("\"namespace\""),
            "{to:?}: no provider knows the type"
        );
        assert_eq!(
            t.context.namespace_of("multi_agent_v1__close_agent"),
            Some(("multi_agent_v1", "close_agent"))
        );
    }
}

#[test]
fn a_namespaced_call_comes_back_under_its_namespace() {
    let body = codex_body();
    let t = translate_request(
        Format::OpenAiResponses,
        Format::Anthropic,
        &body,
        &opts(false),
    )
    .unwrap();
    let upstream = json!({"id":"msg_1","model":"c","content":[{"type":"tool_use","id":"toolu_1",
        "name":"multi_agent_v1__close_agent","input":{"target":"a1"}}],
        "stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}});
    let out = translate_response_with(
        Format::Anthropic,
        Format::OpenAiResponses,
        upstream.to_string().as_bytes(),
        &super::opts(),
        &t.context,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    let call = &v["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "close_agent");
    assert_eq!(call["namespace"], "multi_agent_v1");
    assert_eq!(call["call_id"], "toolu_1");

    // The same through a stream, from Gemini.
    let t = translate_request(Format::OpenAiResponses, Format::Gemini, &body, &opts(true)).unwrap();
    let mut s = StreamTranslator::with_context(
        Format::Gemini,
        Format::OpenAiResponses,
        super::opts(),
        t.context.clone(),
    );
    let chunk = json!({"candidates":[{"content":{"role":"model","parts":[{"functionCall":
        {"name":"multi_agent_v1__wait_agent","args":{"targets":["a1"]}}}]},"finishReason":"STOP"}],
        "usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4}});
    let mut out = BytesMut::new();
    s.feed(Bytes::from(format!("data: {chunk}\r\n\r\n")), &mut out)
        .unwrap();
    s.finish(&mut out);
    let done = frames(&out)
        .into_iter()
        .find(|(event, _)| event.as_deref() == Some("response.output_item.done"))
        .map(|(_, data)| data)
        .expect("the call item is done");
    assert_eq!(done["item"]["name"], "wait_agent");
    assert_eq!(done["item"]["namespace"], "multi_agent_v1");
}

#[test]
fn the_next_turn_sends_the_namespaced_call_back_under_its_flat_name() {
    let turn = json!({
        "model": "m",
        "input": [
            {"type":"message","role":"user","content":[{"type":"input_text","text":"go"}]},
            {"type":"function_call","call_id":"c1","name":"close_agent","namespace":"multi_agent_v1","arguments":"{}"},
            {"type":"function_call_output","call_id":"c1","output":"closed"}
        ],
        "tools": [{"type":"namespace","name":"multi_agent_v1","description":"agents","tools":[
            {"type":"function","name":"close_agent","parameters":{"type":"object","properties":{}}}]}]
    });
    let t = translate_request(
        Format::OpenAiResponses,
        Format::Anthropic,
        turn.to_string().as_bytes(),
        &opts(false),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(v["tools"][0]["name"], "multi_agent_v1__close_agent");
    assert!(v["tools"][0]["description"]
        .as_str()
        .unwrap()
        .starts_with("[multi_agent_v1] agents"));
    let call = &v["messages"][1]["content"][0];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["name"], "multi_agent_v1__close_agent", "{v}");
}

#[test]
fn flat_names_fit_every_provider_and_stay_apart() {
    assert_eq!(flat_name("crm", "lookup"), "crm__lookup");
    let long = flat_name(&"n".repeat(40), &"f".repeat(40));
    let dotted = flat_name("mcp.server/v2", "do thing");
    for name in [&long, &dotted] {
        assert!(name.len() <= 64, "{name}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{name}"
        );
    }
    assert_eq!(
        long,
        flat_name(&"n".repeat(40), &"f".repeat(40)),
        "stable across turns"
    );
    assert_eq!(
        flat_name("mcp__github", "search"),
        "mcp__github__search",
        "MCP groups stay readable"
    );
    assert_ne!(
        flat_name(&"n".repeat(40), &"f".repeat(40)),
        flat_name(&"n".repeat(41), &"f".repeat(40)),
        "a digest tells long names apart"
    );
}

#[test]
fn every_hosted_tool_is_dropped_not_refused() {
    let body = json!({
        "model": "m",
        "input": "hi",
        "tools": [
            {"type":"web_search_preview"}, {"type":"file_search","vector_store_ids":["v"]},
            {"type":"code_interpreter","container":{"type":"auto"}}, {"type":"image_generation"},
            {"type":"computer_use_preview","display_width":1,"display_height":1,"environment":"linux"},
            {"type":"mcp","server_label":"s","server_url":"https://x"},
            {"type":"function","name":"f","parameters":{"type":"object","properties":{}}}
        ],
        "tool_choice": {"type":"file_search"}
    });
    for to in [Format::Anthropic, Format::Gemini, Format::OpenAiChat] {
        let t = translate_request(
            Format::OpenAiResponses,
            to,
            body.to_string().as_bytes(),
            &opts(false),
        )
        .unwrap_or_else(|e| panic!("{to:?}: {e}"));
        for hosted in [
            "web_search",
            "file_search",
            "code_interpreter",
            "image_generation",
            "computer_use",
            "mcp",
        ] {
            assert!(
                t.dropped.contains(&hosted),
                "{to:?} {hosted}: {:?}",
                t.dropped
            );
        }
    }
}

#[test]
fn claude_codes_mid_conversation_system_message_reaches_every_provider() {
    let body = json!({
        "model": "m", "max_tokens": 100,
        "system": [{"type": "text", "text": "base rules"}],
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "system", "content": "the model changed: be brief"},
            {"role": "user", "content": "second"}
        ],
        "tools": [{"name": "Read", "input_schema": {"type": "object"}, "defer_loading": true}]
    });
    for to in [Format::OpenAiChat, Format::OpenAiResponses, Format::Gemini] {
        let t = translate_request(
            Format::Anthropic,
            to,
            body.to_string().as_bytes(),
            &opts(false),
        )
        .unwrap_or_else(|e| panic!("{to:?}: {e}"));
        let text = String::from_utf8(t.body.to_vec()).unwrap();
        assert!(
            text.contains("the model changed: be brief"),
            "{to:?}: {text}"
        );
        assert!(
            t.dropped.contains(&"defer_loading"),
            "{to:?}: {:?}",
            t.dropped
        );
    }
}

#[test]
fn clients_that_cannot_place_cache_breakpoints_get_them_at_anthropic() {
    let chat = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "long stable instructions"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}}
        ]
    });
    let write = |prompt_cache: bool| {
        let mut o = opts(false);
        o.prompt_cache = prompt_cache;
        let t = translate_request(
            Format::OpenAiChat,
            Format::Anthropic,
            chat.to_string().as_bytes(),
            &o,
        )
        .unwrap();
        serde_json::from_slice::<Value>(&t.body).unwrap()
    };
    let v = write(true);
    let ephemeral = json!({"type": "ephemeral"});
    assert_eq!(
        v["tools"][1]["cache_control"], ephemeral,
        "after the last tool"
    );
    assert!(v["tools"][0].get("cache_control").is_none());
    assert_eq!(
        v["system"][0]["cache_control"], ephemeral,
        "after the system prompt"
    );
    let last_user = v["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(
        last_user["content"][0]["cache_control"], ephemeral,
        "after the last turn"
    );
    let marks = v.to_string().matches("ephemeral").count();
    assert!(marks <= 4, "Anthropic allows four breakpoints: {marks}");
    // `prompt_cache: off` for the model: none.
    assert!(!write(false).to_string().contains("ephemeral"));
    // A client that placed its own keeps exactly those.
    let own = json!({"model":"m","max_tokens":10,"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}],
        "messages":[{"role":"user","content":"x"}]});
    let t = translate_request(
        Format::Anthropic,
        Format::Anthropic,
        own.to_string().as_bytes(),
        &opts(false),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(t.body.to_vec())
            .unwrap()
            .matches("ephemeral")
            .count(),
        1
    );
}

#[test]
fn tool_choice_and_duplicates_follow_the_flat_names() {
    let body = json!({
        "model": "m",
        "input": [
            {"type":"message","role":"user","content":[{"type":"input_text","text":"go"}]},
            {"type":"tool_search_call","id":"ts1","status":"completed"},
            {"type":"tool_search_output","id":"ts2","tools":[]}
        ],
        "tools": [
            {"type":"namespace","name":"mcp__github","tools":[
                {"type":"function","name":"search","description":"code","parameters":{"type":"object"}}]},
            {"type":"namespace","name":"mcp__jira","description":"tickets","tools":[
                {"type":"function","name":"search","parameters":{"type":"object"}},
                {"type":"function","name":"open","parameters":{"type":"object"}}]},
            {"type":"function","name":"shell","parameters":{"type":"object"}},
            {"type":"function","name":"shell","parameters":{"type":"object"}}
        ],
        "tool_choice": {"type":"function","name":"search","namespace":"mcp__jira"}
    });
    let t = translate_request(
        Format::OpenAiResponses,
        Format::Anthropic,
        body.to_string().as_bytes(),
        &opts(false),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    let names: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "mcp__github__search",
            "mcp__jira__search",
            "mcp__jira__open",
            "shell"
        ],
        "one shell"
    );
    assert_eq!(
        v["tool_choice"],
        json!({"type":"tool","name":"mcp__jira__search"})
    );
    let descriptions: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["description"].as_str().unwrap_or(""))
        .collect();
    assert!(descriptions[0].starts_with("[mcp__github] code"));
    assert!(descriptions[1].starts_with("[mcp__jira] tickets"));
    assert!(
        descriptions[2].starts_with("[mcp__jira] "),
        "every tool names its group"
    );
    // A name only one group declares needs no namespace.
    let mut unique = body.clone();
    unique["tool_choice"] = json!({"type":"function","name":"open"});
    let t = translate_request(
        Format::OpenAiResponses,
        Format::Anthropic,
        unique.to_string().as_bytes(),
        &opts(false),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(v["tool_choice"]["name"], "mcp__jira__open");
}

#[test]
fn gemini_clis_router_call_asks_every_provider_for_its_json() {
    // gemini-cli with model `auto` first asks for a routing decision as JSON.
    let schema = json!({"type":"object","properties":{"model_choice":{"type":"string","enum":["flash","pro"]}},"required":["model_choice"]});
    let body = json!({
        "contents": [{"role":"user","parts":[{"text":"route this"}]}],
        "generationConfig": {"responseMimeType":"application/json","responseJsonSchema": schema}
    });
    let raw = body.to_string();
    let to = |format| {
        let t = translate_request(Format::Gemini, format, raw.as_bytes(), &opts(false))
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        serde_json::from_slice::<Value>(&t.body).unwrap()
    };
    let chat = to(Format::OpenAiChat);
    assert_eq!(chat["response_format"]["type"], "json_schema", "{chat}");
    assert_eq!(
        chat["response_format"]["json_schema"]["schema"]["required"][0],
        "model_choice"
    );
    let responses = to(Format::OpenAiResponses);
    assert_eq!(
        responses["text"]["format"]["type"], "json_schema",
        "{responses}"
    );
    let anthropic = to(Format::Anthropic);
    let text = anthropic.to_string();
    assert!(
        text.contains("model_choice"),
        "Anthropic is asked for the schema too: {text}"
    );
}

/// A provider's answer with signed reasoning and a tool call, and the signature in it.
fn signed_answer(provider: Format) -> (Value, &'static str) {
    match provider {
        Format::Anthropic => (
            json!({"id":"msg_1","type":"message","role":"assistant","model":"c","content":[
                {"type":"thinking","thinking":"let me think","signature":"RXFBQ1NpZ0FudGhyb3BpYw=="},
                {"type":"tool_use","id":"toolu_1","name":"get_time","input":{}}],
                "stop_reason":"tool_use","usage":{"input_tokens":5,"output_tokens":6}}),
            "RXFBQ1NpZ0FudGhyb3BpYw==",
        ),
        Format::Gemini => (
            json!({"candidates":[{"content":{"role":"model","parts":[
                {"text":"let me think","thought":true},
                {"functionCall":{"name":"get_time","args":{}},"thoughtSignature":"c2lnbmF0dXJlLWdlbWluaQ=="}]},
                "finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":6}}),
            "c2lnbmF0dXJlLWdlbWluaQ==",
        ),
        _ => (
            json!({"id":"resp_1","object":"response","status":"completed","model":"o","output":[
                {"type":"reasoning","id":"rs_1","encrypted_content":"gAAAAABoZW5jcnlwdGVk",
                 "summary":[{"type":"summary_text","text":"let me think"}]},
                {"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_time","arguments":"{}","status":"completed"}],
                "usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}}),
            "gAAAAABoZW5jcnlwdGVk",
        ),
    }
}

/// The client's next turn: its history with the translated answer and the tool's result.
fn next_turn(client: Format, answer: &Value) -> Value {
    let tool = json!({"name":"get_time","description":"now","parameters":{"type":"object","properties":{}}});
    match client {
        Format::OpenAiChat => {
            let message = answer["choices"][0]["message"].clone();
            let id = message["tool_calls"][0]["id"].clone();
            json!({"model":"m","messages":[{"role":"user","content":"time?"}, message,
                {"role":"tool","tool_call_id":id,"content":"12:00"}],
                "tools":[{"type":"function","function":tool}]})
        }
        Format::Anthropic => {
            let content = answer["content"].clone();
            let id = content
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["type"] == "tool_use")
                .unwrap()["id"]
                .clone();
            json!({"model":"m","max_tokens":100,"messages":[{"role":"user","content":"time?"},
                {"role":"assistant","content":content},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":id,"content":"12:00"}]}],
                "tools":[{"name":"get_time","description":"now","input_schema":{"type":"object","properties":{}}}]})
        }
        Format::OpenAiResponses => {
            let mut input = vec![json!({"role":"user","content":"time?"})];
            let output = answer["output"].as_array().unwrap();
            input.extend(output.iter().cloned());
            let call = output
                .iter()
                .find(|i| i["type"] == "function_call")
                .unwrap();
            input.push(
                json!({"type":"function_call_output","call_id":call["call_id"],"output":"12:00"}),
            );
            json!({"model":"m","input":input,"store":false,"include":["reasoning.encrypted_content"],
                "tools":[{"type":"function","name":"get_time","description":"now","parameters":{"type":"object","properties":{}}}]})
        }
        Format::Gemini => {
            let parts = answer["candidates"][0]["content"]["parts"].clone();
            json!({"contents":[{"role":"user","parts":[{"text":"time?"}]},
                {"role":"model","parts":parts},
                {"role":"user","parts":[{"functionResponse":{"name":"get_time","response":{"result":"12:00"}}}]}],
                "tools":[{"functionDeclarations":[tool]}]})
        }
    }
}

#[test]
fn signed_reasoning_survives_a_two_turn_tool_conversation_through_any_client() {
    let mut lost = Vec::new();
    for provider in [Format::Anthropic, Format::Gemini, Format::OpenAiResponses] {
        let (answer, signature) = signed_answer(provider);
        for client in FORMATS.into_iter().filter(|c| *c != provider) {
            let translated = translate_response_with(
                provider,
                client,
                answer.to_string().as_bytes(),
                &super::opts(),
                &crate::translate::ResponseContext::default(),
            )
            .unwrap_or_else(|e| panic!("{provider:?} → {client:?}: {e}"));
            let answer: Value = serde_json::from_slice(&translated.body).unwrap();
            let next = next_turn(client, &answer);
            let request =
                translate_request(client, provider, next.to_string().as_bytes(), &opts(false))
                    .unwrap_or_else(|e| panic!("{client:?} → {provider:?}: {e}"));
            let body = String::from_utf8(request.body.to_vec()).unwrap();
            if !body.contains(signature) {
                if std::env::var_os("SIRA_DEBUG_REASONING").is_some() {
                    eprintln!("== {provider:?} via {client:?}\nanswer: {answer}\nnext: {body}");
                }
                lost.push(format!("{provider:?} via a {client:?} client"));
            }
        }
    }
    assert!(lost.is_empty(), "reasoning lost: {lost:?}");
}

#[test]
fn the_scan_markers_are_the_carrier_prefixes() {
    use crate::translate::{scan_markers, util};
    let quoted = |p: &str| format!("\"{p}").into_bytes();
    assert_eq!(
        scan_markers(Format::OpenAiResponses),
        [quoted(util::CARRIER_PREFIX)]
    );
    assert_eq!(
        scan_markers(Format::Anthropic),
        [quoted(util::OPENAI_REASONING_PREFIX)]
    );
    assert_eq!(
        scan_markers(Format::Gemini),
        [
            quoted(util::OPENAI_REASONING_PREFIX),
            quoted(util::ANTHROPIC_SIGNATURE_PREFIX)
        ]
    );
    assert!(scan_markers(Format::OpenAiChat).is_empty());
}

#[test]
fn foreign_reasoning_is_removed_only_when_present_and_leaves_no_empty_turn() {
    use crate::translate::strip_foreign_reasoning;
    // The marker in a user's own words: nothing removed, the body left byte for byte.
    let own_words = json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"see \"ant1.log\" and \"oai1.txt\""}]});
    assert!(strip_foreign_reasoning(Format::Anthropic, own_words.to_string().as_bytes()).is_none());
    // A turn that held only foreign thinking goes with it.
    let only_thinking = json!({"model":"m","max_tokens":5,"messages":[
        {"role":"user","content":"q"},
        {"role":"assistant","content":[{"type":"thinking","thinking":"","signature":"oai1.gAAAA"}]},
        {"role":"user","content":"again"}]});
    let cleaned =
        strip_foreign_reasoning(Format::Anthropic, only_thinking.to_string().as_bytes()).unwrap();
    let v: Value = serde_json::from_slice(&cleaned).unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 2, "{v}");
    let gemini = json!({"contents":[
        {"role":"user","parts":[{"text":"q"}]},
        {"role":"model","parts":[{"thought":true,"thoughtSignature":"ant1.c2ln"}]},
        {"role":"user","parts":[{"text":"again"}]}]});
    let cleaned = strip_foreign_reasoning(Format::Gemini, gemini.to_string().as_bytes()).unwrap();
    let v: Value = serde_json::from_slice(&cleaned).unwrap();
    assert_eq!(v["contents"].as_array().unwrap().len(), 2, "{v}");
}

#[test]
fn a_signed_thought_without_text_is_read_not_refused() {
    // Protobuf-JSON clients leave the empty `text` of sira's signature part out.
    let body = json!({"contents":[
        {"role":"user","parts":[{"text":"q"}]},
        {"role":"model","parts":[{"text":"thinking","thought":true},{"thought":true,"thoughtSignature":"ant1.c2ln"},{"text":"answer"}]},
        {"role":"user","parts":[{"text":"again"}]}]});
    let t = translate_request(
        Format::Gemini,
        Format::Anthropic,
        body.to_string().as_bytes(),
        &opts(false),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    let block = &v["messages"][1]["content"][0];
    assert_eq!(block["type"], "thinking", "{v}");
    assert_eq!(block["thinking"], "thinking");
    assert_eq!(block["signature"], "c2ln");
}
