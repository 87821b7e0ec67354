//! Every route answers in the recorded shape, with the documented usage numbers.

use crate::client::*;
use serde_json::{json, Value};
use sira_mock::MockProvider;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const TOOLS: &str = r#""tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]"#;

fn prompt_tokens(body: &str) -> u64 {
    (body.len() as u64).div_ceil(4)
}

#[tokio::test]
async fn openai_chat_json_matches_fixture_fields() {
    let mock = MockProvider::start();
    let r = post(mock.addr(), "/v1/chat/completions", &[], CHAT).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(paths(&v), paths(&fixture_json("openai/chat_basic.json")));
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the sira mock provider."
    );
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens(CHAT));
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens(CHAT) + 7);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
}

#[tokio::test]
async fn openai_chat_tool_call_and_max_tokens() {
    let mock = MockProvider::start();
    let body = format!(r#"{{"model":"m","messages":[],{TOOLS}}}"#);
    let r = post(
        mock.addr(),
        "/v1/chat/completions",
        &[("x-mock-tool-call", "get_weather")],
        &body,
    )
    .await;
    let v = r.json();
    assert_eq!(
        paths(&v),
        paths(&fixture_json("openai/chat_tool_calls.json"))
    );
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], sira_mock::DEFAULT_TOOL_ARGS);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    // Without tools in the request the knob is ignored.
    let v = post(
        mock.addr(),
        "/v1/chat/completions",
        &[("x-mock-tool-call", "get_weather")],
        CHAT,
    )
    .await
    .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // A max-tokens cap below N stops early with "length".
    let v = post(
        mock.addr(),
        "/v1/chat/completions",
        &[],
        r#"{"model":"m","max_tokens":3}"#,
    )
    .await
    .json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn usage_knobs() {
    let mock = MockProvider::start();
    let h = [
        ("x-mock-input-tokens", "100"),
        ("x-mock-output-tokens", "5"),
        ("x-mock-cached-tokens", "30"),
        ("x-mock-cache-write-tokens", "20"),
        ("x-mock-events", "2"),
    ];
    let v = post(mock.addr(), "/v1/chat/completions", &h, CHAT)
        .await
        .json();
    assert_eq!(v["usage"]["prompt_tokens"], 100);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from");
    let v = post(
        mock.addr(),
        "/v1/messages",
        &h,
        r#"{"model":"c","max_tokens":9,"messages":[]}"#,
    )
    .await
    .json();
    assert_eq!(
        v["usage"]["input_tokens"], 50,
        "Anthropic input excludes cache reads and writes"
    );
    assert_eq!(v["usage"]["cache_read_input_tokens"], 30);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 20);
    assert_eq!(v["usage"]["output_tokens"], 5);
    let v = post(mock.addr(), "/v1beta/models/g:generateContent", &h, "{}")
        .await
        .json();
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 100);
    assert_eq!(v["usageMetadata"]["cachedContentTokenCount"], 30);
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 105);
}

#[tokio::test]
async fn azure_chat_json() {
    let mock = MockProvider::start();
    let path = "/openai/deployments/gpt-5-nano/chat/completions?api-version=2024-12-01-preview";
    let r = post(mock.addr(), path, &[("api-key", "secret")], CHAT).await;
    let v = r.json();
    assert_eq!(paths(&v), paths(&fixture_json("azure/chat_basic.json")));
    assert_eq!(v["model"], "gpt-5-nano", "Azure reports the deployment");
    let rec = &mock.requests()[0];
    assert_eq!(rec.header("API-Key"), Some("secret"));
    assert_eq!(rec.path_and_query, path);
    // Like Azure, no api-version is a routing 404.
    let r = post(
        mock.addr(),
        "/openai/deployments/gpt-5-nano/chat/completions",
        &[],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "404");
}

#[tokio::test]
async fn responses_json() {
    let mock = MockProvider::start();
    let body = r#"{"model":"gpt-4o-mini","input":"hi"}"#;
    let v = post(mock.addr(), "/v1/responses", &[], body).await.json();
    assert_eq!(
        paths(&v),
        paths(&fixture_json("openai_responses/basic_input_string.json"))
    );
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "Hello from the sira mock provider."
    );
    assert_eq!(v["usage"]["input_tokens"], prompt_tokens(body));
    let body =
        r#"{"model":"m","input":"hi","tools":[{"type":"function","name":"get_current_weather"}]}"#;
    let v = post(
        mock.addr(),
        "/v1/responses",
        &[("x-mock-tool-call", "get_current_weather")],
        body,
    )
    .await
    .json();
    let item = &v["output"][0];
    assert_eq!(
        paths(item),
        paths(&fixture_json("openai_responses/function_call.json")["output"][0])
    );
    assert_eq!(v["tools"][0]["name"], "get_current_weather");
    let v = post(
        mock.addr(),
        "/v1/responses",
        &[],
        r#"{"model":"m","input":"x","max_output_tokens":2}"#,
    )
    .await
    .json();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
}

#[tokio::test]
async fn anthropic_json_and_count_tokens() {
    let mock = MockProvider::start();
    let body = format!(
        r#"{{"model":"claude-haiku-4-5","max_tokens":100,"messages":[],{}}}"#,
        TOOLS.replace(r#""type":"function","function":"#, r#""x":"#)
    );
    let h = [
        ("x-mock-tool-call", "get_weather"),
        (
            "x-mock-tool-args",
            r#"{"location": "San Francisco, CA", "units": "c"}"#,
        ),
    ];
    let v = post(mock.addr(), "/v1/messages", &h, &body).await.json();
    assert_eq!(
        paths(&v),
        paths(&fixture_json("anthropic/messages_tool_use.json"))
    );
    assert_eq!(
        v["content"][0]["input"],
        json!({"location": "San Francisco, CA", "units": "c"})
    );
    assert_eq!(v["stop_reason"], "tool_use");
    assert!(v["content"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("toolu_01"));

    let v = post(
        mock.addr(),
        "/v1/messages",
        &[],
        r#"{"model":"claude-x","max_tokens":100,"messages":[]}"#,
    )
    .await
    .json();
    let mut expected = paths(&fixture_json("anthropic/messages_tool_use.json"));
    expected.retain(|p| !p.starts_with("content[]"));
    expected.extend(["content[].type".to_owned(), "content[].text".to_owned()]);
    assert_eq!(paths(&v), expected);
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["stop_reason"], "end_turn");

    let body = r#"{"model":"claude-x","messages":[{"role":"user","content":"hello"}]}"#;
    let v = post(mock.addr(), "/v1/messages/count_tokens", &[], body)
        .await
        .json();
    assert_eq!(v, json!({"input_tokens": prompt_tokens(body)}));
}

#[tokio::test]
async fn gemini_json() {
    let mock = MockProvider::start();
    let r = post(
        mock.addr(),
        "/v1beta/models/gemini-2.0-flash:generateContent",
        &[],
        r#"{"contents":[]}"#,
    )
    .await;
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=UTF-8")
    );
    let v = r.json();
    assert_eq!(
        paths(&v),
        paths(&fixture_json("gemini/generate_content_basic.json"))
    );
    assert_eq!(v["modelVersion"], "gemini-2.0-flash");
    let body =
        r#"{"contents":[],"tools":[{"functionDeclarations":[{"name":"get_user_country"}]}]}"#;
    let h = [
        ("x-mock-tool-call", "get_user_country"),
        ("x-mock-tool-args", "{}"),
    ];
    let v = post(
        mock.addr(),
        "/v1/models/gemini-2.0-flash:generateContent",
        &h,
        body,
    )
    .await
    .json();
    assert_eq!(
        paths(&v),
        paths(&fixture_json("gemini/generate_content_function_call.json"))
    );
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_user_country"
    );
    let v = post(
        mock.addr(),
        "/v1beta/models/g:generateContent",
        &[],
        r#"{"generationConfig":{"maxOutputTokens":1}}"#,
    )
    .await
    .json();
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
}

#[tokio::test]
async fn embeddings_models_health_and_404() {
    let mock = MockProvider::start();
    let v = post(
        mock.addr(),
        "/v1/embeddings",
        &[],
        r#"{"model":"text-embedding-3-small","input":["hello","hello world!"]}"#,
    )
    .await
    .json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    let e0: Vec<f64> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(e0.len(), sira_mock::DEFAULT_DIMENSIONS);
    assert!(
        (e0.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-3,
        "unit length"
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 2 + 3, "total_tokens": 5})
    );
    let again = post(
        mock.addr(),
        "/v1/embeddings",
        &[],
        r#"{"model":"m","input":"hello"}"#,
    )
    .await
    .json();
    assert_eq!(
        again["data"][0]["embedding"], v["data"][0]["embedding"],
        "deterministic"
    );
    let b = post(
        mock.addr(),
        "/v1/embeddings",
        &[],
        r#"{"model":"m","input":"x","encoding_format":"base64","dimensions":4}"#,
    )
    .await
    .json();
    assert_eq!(
        b["data"][0]["embedding"].as_str().unwrap().len(),
        24,
        "16 bytes of f32 in base64"
    );

    let r = call(mock.addr(), "GET", "/v1/models", &[], "").await;
    assert!(r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "gpt-4o-mini"));
    let r = call(mock.addr(), "GET", "/health", &[], "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));

    let r = post(mock.addr(), "/v1/nope", &[], "{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], "Invalid URL (POST /v1/nope)");
    let r = post(mock.addr(), "/v1/messages/nope", &[], "{}").await;
    assert_eq!(r.json()["type"], "error");
    let r = post(
        mock.addr(),
        "/v1beta/models/g:batchEmbedContents",
        &[],
        "{}",
    )
    .await;
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND");
    // The counting endpoints answer with the prompt formula; a generation's fields are
    // refused by OpenAI's, and Gemini's takes contents or a whole request, not both.
    let r = post(
        mock.addr(),
        "/v1beta/models/g:countTokens",
        &[("x-mock-input-tokens", "9")],
        r#"{"generateContentRequest":{"model":"models/g","contents":[]}}"#,
    )
    .await;
    assert_eq!(r.json()["totalTokens"], 9);
    let r = post(
        mock.addr(),
        "/v1beta/models/g:countTokens",
        &[],
        r#"{"contents":[],"generateContentRequest":{"model":"models/g","contents":[]}}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = post(
        mock.addr(),
        "/v1/responses/input_tokens",
        &[("x-mock-input-tokens", "7")],
        r#"{"model":"m","input":"hi"}"#,
    )
    .await;
    assert_eq!(
        r.json(),
        serde_json::json!({"object":"response.input_tokens","input_tokens":7})
    );
    let r = post(
        mock.addr(),
        "/v1/responses/input_tokens",
        &[],
        r#"{"model":"m","input":"hi","stream":true}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        mock.requests().len(),
        12,
        "every request is recorded, 404s included"
    );
}

#[tokio::test]
async fn bad_bodies_are_400_in_provider_shape() {
    let mock = MockProvider::start();
    let r = post(mock.addr(), "/v1/chat/completions", &[], "{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = post(mock.addr(), "/v1/messages", &[], r#"{"messages":[]}"#).await;
    assert_eq!(
        (r.status, r.json()["error"]["type"].clone()),
        (400, Value::from("invalid_request_error"))
    );
    let r = post(
        mock.addr(),
        "/v1beta/models/g:streamGenerateContent",
        &[],
        "{}",
    )
    .await;
    assert_eq!(r.status, 400, "only alt=sse streaming is implemented");
}

#[tokio::test]
async fn keep_alive_and_recording() {
    let mock = MockProvider::start();
    let mut conn = Conn::connect(mock.addr()).await;
    for _ in 0..3 {
        conn.send(
            "POST",
            "/v1/chat/completions",
            &[("authorization", "Bearer k")],
            CHAT,
        )
        .await;
        assert_eq!(conn.response().await.status, 200);
    }
    assert_eq!(mock.connections(), 1);
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].header("Authorization"), Some("Bearer k"));
    assert_eq!(reqs[0].json()["model"], "gpt-4o-mini");
    mock.clear();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn http2_prior_knowledge() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mock = MockProvider::start();
    let tcp = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("{}/v1/chat/completions", mock.url()))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(CHAT.as_bytes())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
}
