//! What a hostile provider or client cannot make the gateway hold, and what it cannot make
//! the gateway ask a provider for.

use std::time::Duration;

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::raw::{send, RawUpstream};
use crate::support::{client, keys_section, request, send_receive, Sira, KEY_A};

/// An OpenAI provider at `{mock}`, reached by `gpt-4o` (passthrough from OpenAI clients,
/// translated for the others).
fn config() -> String {
    format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"{{mock}}\"], api_key: sk-upstream }}\nmodels:\n  gpt-4o:\n    targets: [{{ provider: oai }}]\n{}",
        keys_section()
    )
}

const SMALL_BUFFERS: &str =
    "  max_sse_event: 64KiB\n  max_response_body: 64KiB\n  max_tool_arguments: 1KiB\n";

/// A provider that starts an OpenAI stream, then sends an event that never ends (200 KB
/// and counting), keeping the connection open.
fn endless_event() -> RawUpstream {
    RawUpstream::start(|stream, _| {
        send(
            stream,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        let first = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
        send(
            stream,
            format!("{:x}\r\n{first}\r\n", first.len()).as_bytes(),
        );
        let piece = "a".repeat(16 << 10);
        let mut open = send(stream, "6\r\ndata: \r\n".to_owned().as_bytes());
        for _ in 0..13 {
            open = open
                && send(
                    stream,
                    format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes(),
                );
        }
        std::thread::sleep(Duration::from_secs(5));
        false
    })
}

async fn buffer_metric(sira: &Sira, buffer: &str) -> f64 {
    sira.metric(&format!(
        "sira_buffer_limit_exceeded_total{{buffer=\"{buffer}\"}}"
    ))
    .await
}

#[tokio::test]
async fn an_endless_stream_event_ends_the_stream_at_the_event_limit() {
    let upstream = endless_event();
    let sira = Sira::start_with_server(&config(), &upstream.url, SMALL_BUFFERS);
    // Passed through to an OpenAI client.
    let received = send_receive(request(&sira, "/v1/chat/completions").json(
        &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    ))
    .await;
    assert!(!received.complete);
    received.expect("\"role\":\"assistant\"");
    received.expect("server.max_sse_event");
    // Translated for an Anthropic client.
    let received = send_receive(
        request(&sira, "/v1/messages")
            .json(&json!({"model": "gpt-4o", "max_tokens": 16, "stream": true, "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert!(!received.complete);
    assert!(received.text.contains("event: error"), "{}", received.text);
    assert_eq!(buffer_metric(&sira, "sse_event").await, 2.0);
}

#[tokio::test]
async fn a_translated_answer_past_the_response_limit_is_a_502_in_the_clients_shape() {
    let upstream = RawUpstream::start(|stream, _| {
        let content = "a".repeat(200 << 10);
        let body = json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        })
        .to_string();
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        send(stream, reply.as_bytes())
    });
    let sira = Sira::start_with_server(&config(), &upstream.url, SMALL_BUFFERS);
    let resp = request(&sira, "/v1/messages")
        .json(&json!({"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.max_response_body"),
        "{body}"
    );
    assert_eq!(buffer_metric(&sira, "response_body").await, 1.0);
    // Passthrough JSON is not buffered: the same answer reaches an OpenAI client whole.
    let resp = request(&sira, "/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().len() > 200 << 10);
    let log = sira.wait_access_log(2);
    assert_eq!(
        log[1]["input_tokens"], 1,
        "usage read from the tail: {}",
        log[1]
    );
}

#[tokio::test]
async fn tool_arguments_past_their_limit_end_a_translated_stream() {
    let mock = MockProvider::start();
    // An OpenAI-compatible server speaks Chat only: a Responses client is translated.
    let config = config().replace(
        "kind: openai, endpoints: [\"{mock}\"]",
        "kind: openai-compatible, endpoints: [\"{mock}/v1\"]",
    );
    assert!(config.contains("openai-compatible"));
    let sira = Sira::start_with_server(&config, &mock.url(), SMALL_BUFFERS);
    let args = json!({"text": "w".repeat(4096)}).to_string();
    let tools = json!([{"type": "function", "name": "echo", "description": "Echo", "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}]);
    // A Responses client on a Chat provider: the client's `function_call` item must carry
    // the whole arguments when it is done, so the translator holds them until then.
    let received = send_receive(
        request(&sira, "/v1/responses")
            .header("x-mock-tool-call", "echo")
            .header("x-mock-tool-args", &args)
            .header("x-mock-events", "40")
            .json(&json!({"model": "gpt-4o", "stream": true, "input": "x", "tools": tools})),
    )
    .await;
    assert!(!received.complete);
    received.expect("server.max_tool_arguments");
    assert_eq!(buffer_metric(&sira, "tool_arguments").await, 1.0);
    // Within the limit, the same call goes through.
    let small = json!({"text": "short"}).to_string();
    let received = send_receive(
        request(&sira, "/v1/responses")
            .header("x-mock-tool-call", "echo")
            .header("x-mock-tool-args", &small)
            .json(&json!({"model": "gpt-4o", "stream": true, "input": "x", "tools": tools})),
    )
    .await;
    assert!(received.complete, "{}", received.text);
    assert!(received.text.contains("response.completed"));
}

#[tokio::test]
async fn a_responses_stream_ends_when_the_answer_it_repeats_passes_the_response_limit() {
    let mock = MockProvider::start();
    let config = config().replace(
        "kind: openai, endpoints: [\"{mock}\"]",
        "kind: openai-compatible, endpoints: [\"{mock}/v1\"]",
    );
    let sira = Sira::start_with_server(&config, &mock.url(), SMALL_BUFFERS);
    // `response.completed` repeats the whole answer, so the translator keeps it: 20,000
    // words (~100 KB) pass the 64 KiB bound and end the stream with an error event.
    let received = send_receive(
        request(&sira, "/v1/responses")
            .header("x-mock-events", "20000")
            .json(&json!({"model": "gpt-4o", "stream": true, "input": "x"})),
    )
    .await;
    assert!(!received.complete);
    assert!(
        received.text.contains("server.max_response_body"),
        "{}",
        &received.text[received.text.len().saturating_sub(600)..]
    );
    assert!(!received.text.contains("response.completed"));
    assert_eq!(buffer_metric(&sira, "response_body").await, 1.0);
    // A Chat client on the same stream holds nothing and gets it whole.
    let received = send_receive(
        request(&sira, "/v1/chat/completions")
            .header("x-mock-events", "20000")
            .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert!(received.complete);
    assert!(received.text.len() > 64 << 10);
}

#[tokio::test]
async fn client_model_names_cannot_change_the_upstream_url() {
    let mock = MockProvider::start();
    let config = format!(
        "providers:\n  gem: {{ kind: gemini, endpoints: [\"{{mock}}\"], api_key: sk-upstream }}\n  az: {{ kind: azure, endpoints: [\"{{mock}}\"], api_key: sk-upstream }}\nmodels:\n  \"gemini/*\":\n    targets: [{{ provider: gem }}]\n  \"azure/*\":\n    targets: [{{ provider: az }}]\n  \"*\":\n    targets: [{{ provider: gem }}]\n{}",
        keys_section()
    );
    let sira = Sira::start(&config, &mock.url());
    for model in [
        "gemini/../../v1beta/cachedContents?x=",
        "gemini/x?key=stolen",
        "gemini/a#b",
        "azure/../../x",
        "azure/dep?api-version=1",
    ] {
        let resp = request(&sira, "/v1/chat/completions")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["param"], "model", "{model}: {body}");
    }
    // A Gemini client's path cannot smuggle one in either, escaped or not.
    for path in [
        "/v1beta/models/gemini%2F..%2F..%2Fx:generateContent",
        "/v1beta/models/..:generateContent",
    ] {
        let resp = client()
            .post(sira.url(path))
            .header("x-goog-api-key", KEY_A)
            .json(&json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
    }
    assert!(
        mock.requests().is_empty(),
        "a request reached the provider: {:?}",
        mock.requests()
            .iter()
            .map(|r| &r.path_and_query)
            .collect::<Vec<_>>()
    );
    // A plain name still goes through.
    let resp = request(&sira, "/v1/chat/completions")
        .json(&json!({"model": "gemini/gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mock.requests()[0].path_and_query,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
}
