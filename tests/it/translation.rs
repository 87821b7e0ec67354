//! Every client surface against every provider kind, through the real binary, JSON and
//! streams, with tool calls and errors: the translation layer end to end.

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::streaming::data_events;
use crate::support::{client, standard_config, Sira, KEY_A};

#[derive(Clone, Copy, Debug)]
pub enum Surface {
    Chat,
    Responses,
    Anthropic,
    Gemini,
}

const SURFACES: [Surface; 4] = [
    Surface::Chat,
    Surface::Responses,
    Surface::Anthropic,
    Surface::Gemini,
];

/// (model name in the standard config, provider kind, expected upstream path prefix for a
/// Chat-shaped request)
const MODELS: [(&str, &str); 5] = [
    ("gpt-4o", "openai"),
    ("azure-gpt", "azure"),
    ("local", "openai-compatible"),
    ("claude", "anthropic"),
    ("flash", "gemini"),
];

fn request(surface: Surface, model: &str, stream: bool, extra: Value) -> (String, Value) {
    let mut body = match surface {
        Surface::Chat => {
            json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Hello"}]})
        }
        Surface::Responses => json!({"model": model, "stream": stream, "input": "Hello"}),
        Surface::Anthropic => {
            json!({"model": model, "stream": stream, "max_tokens": 256, "messages": [{"role": "user", "content": "Hello"}]})
        }
        Surface::Gemini => json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}),
    };
    if let (Some(map), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        map.extend(extra.clone());
    }
    let path = match surface {
        Surface::Chat => "/v1/chat/completions".to_owned(),
        Surface::Responses => "/v1/responses".to_owned(),
        Surface::Anthropic => "/v1/messages".to_owned(),
        Surface::Gemini if stream => {
            format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
        }
        Surface::Gemini => format!("/v1beta/models/{model}:generateContent"),
    };
    (path, body)
}

/// The assistant text of a JSON answer in the client's format.
pub fn json_text(surface: Surface, v: &Value) -> String {
    match surface {
        Surface::Chat => v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        Surface::Responses => v["output"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
            .filter(|part| part["type"] == "output_text")
            .filter_map(|part| part["text"].as_str().map(str::to_owned))
            .collect(),
        Surface::Anthropic => v["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str().map(str::to_owned))
            .collect(),
        Surface::Gemini => gemini_text(v),
    }
}

fn gemini_text(v: &Value) -> String {
    v["candidates"][0]["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["thought"] != true)
        .filter_map(|p| p["text"].as_str().map(str::to_owned))
        .collect()
}

/// The assistant text of a stream in the client's format, and whether it ended properly.
pub fn stream_text(surface: Surface, body: &str) -> (String, bool) {
    let events: Vec<String> = data_events(body);
    let parsed: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    match surface {
        Surface::Chat => (
            parsed
                .iter()
                .filter_map(|v| {
                    v["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect(),
            events.last().is_some_and(|e| e == "[DONE]"),
        ),
        Surface::Responses => (
            parsed
                .iter()
                .filter(|v| v["type"] == "response.output_text.delta")
                .filter_map(|v| v["delta"].as_str().map(str::to_owned))
                .collect(),
            parsed
                .last()
                .is_some_and(|v| v["type"] == "response.completed"),
        ),
        Surface::Anthropic => (
            parsed
                .iter()
                .filter(|v| {
                    v["type"] == "content_block_delta" && v["delta"]["type"] == "text_delta"
                })
                .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
                .collect(),
            parsed.last().is_some_and(|v| v["type"] == "message_stop"),
        ),
        Surface::Gemini => (
            parsed.iter().map(gemini_text).collect(),
            parsed
                .last()
                .is_some_and(|v| v["candidates"][0]["finishReason"].is_string()),
        ),
    }
}

/// The path a provider of `kind` must have been called on.
fn expected_upstream_path(kind: &str, surface: Surface, stream: bool) -> String {
    match kind {
        "openai" if matches!(surface, Surface::Responses) => "/v1/responses".into(),
        "openai" | "openai-compatible" => "/v1/chat/completions".into(),
        "azure" if matches!(surface, Surface::Responses) => {
            "/openai/v1/responses?api-version=2024-10-21".into()
        }
        "azure" => {
            "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21".into()
        }
        "anthropic" => "/v1/messages".into(),
        "gemini" if stream => {
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse".into()
        }
        _ => "/v1beta/models/gemini-2.5-flash:generateContent".into(),
    }
}

#[tokio::test]
async fn every_surface_reaches_every_provider_json_and_stream() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let c = client();
    let expected = sira_mock::answer_text(5);
    let mut served = 0;
    for surface in SURFACES {
        for (model, kind) in MODELS {
            for stream in [false, true] {
                let case = format!("{surface:?} client -> {kind} provider, stream={stream}");
                let (path, body) = request(surface, model, stream, json!({}));
                mock.clear();
                let resp = c
                    .post(sira.url(&path))
                    .bearer_auth(KEY_A)
                    .header("x-mock-events", "5")
                    .header("x-mock-input-tokens", "21")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let text = resp.text().await.unwrap();
                assert_eq!(status, 200, "{case}: {text}");
                let (answer, closed) = if stream {
                    stream_text(surface, &text)
                } else {
                    (
                        json_text(surface, &serde_json::from_str(&text).unwrap()),
                        true,
                    )
                };
                assert_eq!(answer, expected, "{case}: {text}");
                assert!(closed, "{case}: stream not closed properly: {text}");
                let upstream = mock.requests();
                assert_eq!(upstream.len(), 1, "{case}");
                assert_eq!(
                    upstream[0].path_and_query,
                    expected_upstream_path(kind, surface, stream),
                    "{case}"
                );
                served += 1;
            }
        }
    }
    assert_eq!(served, 40);
    let log = sira.wait_access_log(40);
    for line in &log {
        assert_eq!(line["input_tokens"], 21, "usage lost: {line}");
        assert_eq!(line["output_tokens"], 5, "usage lost: {line}");
    }
}

#[tokio::test]
async fn openai_tool_calls_round_trip_through_anthropic() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let tools = json!({"tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]});
    for stream in [false, true] {
        let (path, body) = request(Surface::Chat, "claude", stream, tools.clone());
        let text = client()
            .post(sira.url(&path))
            .bearer_auth(KEY_A)
            .header("x-mock-tool-call", "get_weather")
            .json(&body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let (name, arguments, finish) = if stream {
            let mut name = String::new();
            let mut args = String::new();
            let mut finish = String::new();
            for event in data_events(&text)
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            {
                let choice = &event["choices"][0];
                if let Some(call) = choice["delta"]["tool_calls"].get(0) {
                    assert_eq!(call["index"], 0);
                    name.push_str(call["function"]["name"].as_str().unwrap_or_default());
                    args.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
                }
                if let Some(reason) = choice["finish_reason"].as_str() {
                    finish = reason.to_owned();
                }
            }
            (name, args, finish)
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            let call = &v["choices"][0]["message"]["tool_calls"][0];
            (
                call["function"]["name"].as_str().unwrap().to_owned(),
                call["function"]["arguments"].as_str().unwrap().to_owned(),
                v["choices"][0]["finish_reason"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        };
        assert_eq!(name, "get_weather", "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&arguments).unwrap(),
            serde_json::from_str::<Value>(sira_mock::DEFAULT_TOOL_ARGS).unwrap()
        );
        assert_eq!(finish, "tool_calls");
    }
    // The provider got Anthropic tool definitions.
    let sent = mock.requests()[0].json();
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["location"])
    );
}

#[tokio::test]
async fn anthropic_tool_use_round_trips_through_openai() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let tools = json!({"tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]});
    let (path, body) = request(Surface::Anthropic, "gpt-4o", true, tools);
    let text = client()
        .post(sira.url(&path))
        .header("x-api-key", KEY_A)
        .header("x-mock-tool-call", "get_weather")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = data_events(&text)
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    let start = events
        .iter()
        .find(|e| e["type"] == "content_block_start" && e["content_block"]["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use block: {text}"));
    assert_eq!(start["content_block"]["name"], "get_weather");
    let index = start["index"].clone();
    let json_args: String = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta" && e["index"] == index)
        .filter_map(|e| e["delta"]["partial_json"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_args).unwrap(),
        serde_json::from_str::<Value>(sira_mock::DEFAULT_TOOL_ARGS).unwrap()
    );
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(mock.requests()[0].json()["tools"][0]["type"], "function");
}

#[tokio::test]
async fn provider_errors_become_the_client_error_shape_and_status() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let (path, body) = request(Surface::Chat, "claude", false, json!({}));
    let resp = client()
        .post(sira.url(&path))
        .bearer_auth(KEY_A)
        .header("x-mock-status", "529")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        503,
        "Anthropic's 529 must become a status OpenAI SDKs retry"
    );
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");

    let (path, body) = request(Surface::Anthropic, "gpt-4o", false, json!({}));
    let resp = client()
        .post(sira.url(&path))
        .header("x-api-key", KEY_A)
        .header("x-mock-status", "429")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn requests_the_target_cannot_honour_get_400_naming_the_field() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let (path, body) = request(Surface::Chat, "claude", false, json!({"n": 3}));
    let resp = client()
        .post(sira.url(&path))
        .bearer_auth(KEY_A)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["param"], "n", "{v}");
    assert!(mock.requests().is_empty());

    // Hints with no Anthropic counterpart are dropped and listed.
    let (path, body) = request(
        Surface::Chat,
        "claude",
        false,
        json!({"presence_penalty": 0.5, "seed": 7}),
    );
    let resp = client()
        .post(sira.url(&path))
        .bearer_auth(KEY_A)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let dropped = resp.headers()["x-sira-dropped-params"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        dropped.contains("presence_penalty") && dropped.contains("seed"),
        "{dropped}"
    );
}

/// A JSON POST authenticated the way Anthropic clients do (`x-api-key`).
async fn post_with_anthropic_key(sira: &Sira, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(sira.url(path))
        .header("x-api-key", KEY_A)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn count_tokens_is_answered_locally_for_other_providers() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let body = json!({"model": "local", "messages": [{"role": "user", "content": "Hello there, how are you today?"}]});
    let resp = post_with_anthropic_key(&sira, "/v1/messages/count_tokens", &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert!(mock.requests().is_empty());
    // Anthropic counts its own.
    let body = json!({"model": "claude", "messages": [{"role": "user", "content": "Hello"}]});
    let resp = post_with_anthropic_key(&sira, "/v1/messages/count_tokens", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mock.requests()[0].path_and_query,
        "/v1/messages/count_tokens"
    );
}

#[tokio::test]
async fn openai_compatible_servers_get_the_legacy_max_tokens_field() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    for model in ["local", "gpt-4o"] {
        let (path, body) = request(Surface::Anthropic, model, false, json!({}));
        let resp = post_with_anthropic_key(&sira, &path, &body).await;
        assert_eq!(resp.status(), 200);
    }
    let sent: Vec<Value> = mock.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent[0]["max_tokens"], 256, "compat: {}", sent[0]);
    assert!(sent[0].get("max_completion_tokens").is_none());
    assert_eq!(sent[1]["max_completion_tokens"], 256, "openai: {}", sent[1]);
    assert!(sent[1].get("max_tokens").is_none());
}
