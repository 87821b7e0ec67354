//! Synthesized streams: shapes against the recordings, framing, usage chunks.

use crate::client::*;
use serde_json::Value;
use sira_mock::MockProvider;

const STREAM: &str =
    r#"{"model":"gpt-5-nano","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const STREAM_USAGE: &str =
    r#"{"model":"gpt-5-nano","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
const ANTHROPIC: &str =
    r#"{"model":"claude-haiku-4-5","stream":true,"max_tokens":100,"messages":[]}"#;
const GEMINI_SSE: &str = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";

fn fixture_data(path: &str) -> Vec<Value> {
    sse_data(fixture(path))
}

#[tokio::test]
async fn openai_stream_with_and_without_usage() {
    let mock = MockProvider::start();
    let plain = post(mock.addr(), "/v1/chat/completions", &[], STREAM).await;
    assert_eq!(
        plain.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert!(plain.complete && !plain.body.contains(&b'\r'), "LF framing");
    assert!(plain.text().ends_with("data: [DONE]\n\n"));
    let chunks = sse_data(&plain.body);
    assert_eq!(chunks.len(), 1 + 7 + 1, "role, 7 words, finish");
    assert_eq!(
        all_paths(&chunks),
        all_paths(&fixture_data("openai/chat_stream_plain.sse"))
    );
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage without include_usage"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from the sira mock provider.");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    let with = post(mock.addr(), "/v1/chat/completions", &[], STREAM_USAGE).await;
    let chunks = sse_data(&with.body);
    assert_eq!(chunks.len(), 1 + 7 + 1 + 1);
    assert_eq!(
        all_paths(&chunks),
        all_paths(&fixture_data("openai/chat_stream_usage.sse"))
    );
    let (last, rest) = chunks.split_last().unwrap();
    assert!(
        rest.iter()
            .all(|c| c["usage"].is_null() && c.get("usage").is_some()),
        "usage:null on every chunk"
    );
    assert_eq!(last["choices"], Value::Array(vec![]));
    assert_eq!(
        last["usage"]["prompt_tokens"],
        (STREAM_USAGE.len() as u64).div_ceil(4)
    );
    assert_eq!(last["usage"]["completion_tokens"], 7);
}

#[tokio::test]
async fn openai_tool_call_stream() {
    let mock = MockProvider::start();
    let body = r#"{"model":"m","stream":true,"tools":[{"type":"function","function":{"name":"GetWeatherArgs"}}]}"#;
    let r = post(
        mock.addr(),
        "/v1/chat/completions",
        &[
            ("x-mock-tool-call", "GetWeatherArgs"),
            ("x-mock-events", "5"),
        ],
        body,
    )
    .await;
    let chunks = sse_data(&r.body);
    let tool_paths = |v: &[Value]| {
        all_paths(v)
            .into_iter()
            .filter(|p| p.contains("tool_calls"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tool_paths(&chunks),
        tool_paths(&fixture_data("openai/chat_stream_tool_calls.sse"))
    );
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, sira_mock::DEFAULT_TOOL_ARGS);
    assert_eq!(
        chunks.len(),
        1 + 5 + 1,
        "header chunk, 5 argument fragments, finish"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn azure_stream() {
    let mock = MockProvider::start();
    let path = "/openai/deployments/gpt-5-nano/chat/completions?api-version=2024-12-01-preview";
    let r = post(mock.addr(), path, &[], STREAM_USAGE).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let chunks = sse_data(&r.body);
    assert_eq!(
        chunks[0]["choices"],
        Value::Array(vec![]),
        "prompt-filter chunk first"
    );
    assert_eq!(chunks[0]["id"], "");
    assert_eq!(
        all_paths(&chunks),
        all_paths(&fixture_data("azure/chat_stream_content_filter.sse"))
    );
    assert!(r.text().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn anthropic_streams() {
    let mock = MockProvider::start();
    let r = post(
        mock.addr(),
        "/v1/messages",
        &[("x-mock-cached-tokens", "3")],
        ANTHROPIC,
    )
    .await;
    assert!(!r.body.contains(&b'\r'));
    let names = sse_names(&r.body);
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 7]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let data = sse_data(&r.body);
    assert_eq!(
        all_paths(&data),
        all_paths(&fixture_data("anthropic/messages_stream_plain.sse"))
    );
    let p = (ANTHROPIC.len() as u64).div_ceil(4);
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], p - 3);
    assert_eq!(data[0]["message"]["usage"]["cache_read_input_tokens"], 3);
    assert_eq!(data[0]["message"]["model"], "claude-haiku-4-5");
    assert_eq!(data[data.len() - 2]["usage"]["output_tokens"], 7);
    assert_eq!(data[data.len() - 2]["delta"]["stop_reason"], "end_turn");

    let body = r#"{"model":"c","stream":true,"max_tokens":100,"tools":[{"name":"get_weather"}],"messages":[]}"#;
    let r = post(
        mock.addr(),
        "/v1/messages",
        &[("x-mock-tool-call", "get_weather"), ("x-mock-events", "10")],
        body,
    )
    .await;
    let data = sse_data(&r.body);
    assert_eq!(
        all_paths(&data),
        all_paths(&fixture_data("anthropic/messages_stream_tool_use.sse"))
    );
    let json: String = data
        .iter()
        .filter_map(|d| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(json, sira_mock::DEFAULT_TOOL_ARGS);
    assert_eq!(
        data[3]["delta"]["partial_json"], "",
        "first input_json_delta is empty, as recorded"
    );
    assert_eq!(
        sse_names(&r.body)
            .iter()
            .filter(|n| *n == "content_block_delta")
            .count(),
        11
    );
}

#[tokio::test]
async fn gemini_stream_crlf() {
    let mock = MockProvider::start();
    let r = post(
        mock.addr(),
        GEMINI_SSE,
        &[("x-mock-events", "3")],
        r#"{"contents":[]}"#,
    )
    .await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = r.text();
    assert_eq!(text.matches("\r\n\r\n").count(), 3);
    assert_eq!(
        text.matches('\n').count(),
        text.matches("\r\n").count(),
        "every newline is CRLF"
    );
    let data = sse_data(&r.body);
    assert_eq!(
        all_paths(&data),
        all_paths(&fixture_data("gemini/stream_generate_content.sse"))
    );
    assert!(
        data.iter()
            .all(|d| d["usageMetadata"]["promptTokenCount"].is_u64()),
        "usage on every chunk"
    );
    assert_eq!(data[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(data[2]["usageMetadata"]["candidatesTokenCount"], 3);

    let body = r#"{"contents":[],"tools":[{"function_declarations":[{"name":"get_capital"}]}]}"#;
    let h = [
        ("x-mock-tool-call", "get_capital"),
        ("x-mock-tool-args", r#"{"country": "France"}"#),
    ];
    let data = sse_data(&post(mock.addr(), GEMINI_SSE, &h, body).await.body);
    assert_eq!(data.len(), 1, "the function call arrives whole");
    assert_eq!(
        all_paths(&data),
        all_paths(&fixture_data("gemini/stream_function_call.sse"))
    );
}

#[tokio::test]
async fn responses_streams() {
    let mock = MockProvider::start();
    let r = post(
        mock.addr(),
        "/v1/responses",
        &[],
        r#"{"model":"gpt-4o","input":"hi","stream":true}"#,
    )
    .await;
    let fixture_bytes = fixture("openai_responses/stream_cached_tokens.sse");
    assert_eq!(
        sse_names(&r.body),
        sse_names(fixture_bytes),
        "same event sequence as the 7-delta recording"
    );
    let data = sse_data(&r.body);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["sequence_number"], i as u64);
        assert_eq!(d["type"].as_str(), Some(sse_names(&r.body)[i].as_str()));
    }
    let recorded = sse_data(fixture_bytes);
    for i in 2..data.len() - 1 {
        assert_eq!(paths(&data[i]), paths(&recorded[i]), "event {i}");
    }
    let done = paths(&data[data.len() - 1]);
    assert!(paths(&recorded[recorded.len() - 1]).is_subset(&done));
    assert!(!r.text().contains("[DONE]"));

    let body = r#"{"model":"m","input":"x","stream":true,"tools":[{"type":"function","name":"get_current_weather"}]}"#;
    let r = post(
        mock.addr(),
        "/v1/responses",
        &[
            ("x-mock-tool-call", "get_current_weather"),
            ("x-mock-events", "12"),
        ],
        body,
    )
    .await;
    assert_eq!(
        sse_names(&r.body),
        sse_names(fixture("openai_responses/stream_function_call.sse"))
    );
}
