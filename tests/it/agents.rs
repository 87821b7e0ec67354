//! Coding agents through the real binary: the first request Codex CLI really sends (recorded,
//! `tests/fixtures/openai_responses/requests/client_codex_0.169_turn.json`) reaches every
//! provider kind, and a call of a tool from its `namespace` group comes back to Codex under
//! the namespace and name it declared.

use serde_json::Value;
use sira_mock::MockProvider;

use crate::support::{receive, request, standard_config, Sira};

const CODEX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/openai_responses/requests/client_codex_0.169_turn.json"
);

fn codex_turn(model: &str) -> Value {
    let mut body: Value = serde_json::from_slice(&std::fs::read(CODEX).unwrap()).unwrap();
    body["model"] = model.into();
    body
}

fn sira(mock: &MockProvider) -> Sira {
    Sira::start(&standard_config(), &mock.url())
}

#[tokio::test]
async fn a_codex_turn_reaches_every_provider_kind() {
    let mock = MockProvider::start();
    let sira = sira(&mock);
    // model → what the provider's request must carry
    for (model, provider_path) in [
        ("claude", "/v1/messages"),
        (
            "flash",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        ),
        ("local", "/v1/chat/completions"),
        ("gpt-4o", "/v1/responses"),
    ] {
        mock.clear();
        let resp = request(&sira, "/v1/responses")
            .json(&codex_turn(model))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        let dropped = resp
            .headers()
            .get("x-sira-dropped-params")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let received = receive(resp).await;
        assert!(received.complete, "{model}: {}", received.text);
        assert!(received.text.contains("response.completed"), "{model}");
        let sent = mock.requests();
        let upstream = sent.last().unwrap();
        assert_eq!(upstream.path_and_query, provider_path, "{model}");
        let body = String::from_utf8_lossy(&upstream.body);
        if model == "gpt-4o" {
            // OpenAI runs the namespace and the hosted search itself: passed through as sent.
            assert!(body.contains("\"type\":\"namespace\""), "{model}");
            assert!(dropped.is_empty(), "{model}: {dropped}");
        } else {
            assert!(
                body.contains("multi_agent_v1__spawn_agent"),
                "{model}: {body:.300}"
            );
            assert!(!body.contains("\"namespace\""), "{model}");
            assert!(dropped.contains("web_search"), "{model}: {dropped:?}");
        }
    }
}

#[tokio::test]
async fn a_namespaced_call_goes_back_to_codex_under_its_namespace() {
    let mock = MockProvider::start();
    let sira = sira(&mock);
    for model in ["claude", "flash", "local"] {
        let resp = request(&sira, "/v1/responses")
            .header("x-mock-tool-call", "multi_agent_v1__close_agent")
            .header("x-mock-tool-args", r#"{"target":"agent-1"}"#)
            .json(&codex_turn(model))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        let received = receive(resp).await;
        let done = received
            .text
            .split("\n\n")
            .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter_map(|data| serde_json::from_str::<Value>(data).ok())
            .find(|event| {
                event["type"] == "response.output_item.done"
                    && event["item"]["type"] == "function_call"
            })
            .unwrap_or_else(|| panic!("{model}: no call in {}", received.text));
        assert_eq!(done["item"]["name"], "close_agent", "{model}");
        assert_eq!(done["item"]["namespace"], "multi_agent_v1", "{model}");
        assert_eq!(
            done["item"]["arguments"], r#"{"target":"agent-1"}"#,
            "{model}"
        );
    }
}

const CLAUDE_CODE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/anthropic/requests/client_claude_code_2.1.330_turn.json"
);
const GEMINI_CLI: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/gemini/requests/stream_client_gemini_cli_0.61_turn.json"
);

#[tokio::test]
async fn claude_code_and_gemini_cli_turns_reach_every_provider_kind() {
    let mock = MockProvider::start();
    let sira = sira(&mock);
    let mut claude: Value = serde_json::from_slice(&std::fs::read(CLAUDE_CODE).unwrap()).unwrap();
    for model in ["claude", "flash", "local", "gpt-4o"] {
        claude["model"] = model.into();
        let resp = request(&sira, "/v1/messages?beta=true")
            .header("anthropic-version", "2023-06-01")
            .json(&claude)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "claude code → {model}");
        let received = receive(resp).await;
        assert!(
            received.complete && received.text.contains("message_stop"),
            "claude code → {model}"
        );
    }
    let gemini: Value = serde_json::from_slice(&std::fs::read(GEMINI_CLI).unwrap()).unwrap();
    for model in ["flash", "claude", "local", "gpt-4o"] {
        let resp = request(
            &sira,
            &format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
        )
        .json(&gemini)
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 200, "gemini-cli → {model}");
        let received = receive(resp).await;
        assert!(
            received.complete && received.text.contains("finishReason"),
            "gemini-cli → {model}"
        );
    }
}

#[tokio::test]
async fn a_websocket_upgrade_on_responses_gets_426_so_codex_falls_back_to_http() {
    let mock = MockProvider::start();
    let sira = sira(&mock);
    let resp = crate::support::client()
        .get(sira.url("/v1/responses"))
        .bearer_auth(crate::support::KEY_A)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 426);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upgrade_required", "{body}");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn headers_that_choose_an_account_or_another_providers_api_stay_behind() {
    let mock = MockProvider::start();
    let sira = sira(&mock);
    for model in ["gpt-4o", "claude"] {
        mock.clear();
        let resp = request(&sira, "/v1/chat/completions")
            .header("openai-organization", "org-someone-else")
            .header("openai-project", "proj-x")
            .header("x-goog-user-project", "billing-elsewhere")
            .header("anthropic-beta", "context-management-2025-06-27")
            .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let sent = mock.requests();
        let upstream = sent.last().unwrap();
        for never in [
            "openai-organization",
            "openai-project",
            "x-goog-user-project",
        ] {
            assert!(
                upstream.header(never).is_none(),
                "{model}: {never} went upstream"
            );
        }
        assert_eq!(
            upstream.header("anthropic-beta").is_some(),
            model == "claude",
            "anthropic-beta goes to Anthropic only"
        );
    }
}

#[tokio::test]
async fn a_refused_provider_key_is_the_gateways_502_not_the_clients_401() {
    let mock = MockProvider::start();
    let sira = sira(&mock);
    let echoed = r#"{"error":{"message":"Incorrect API key provided: sk-upst****anth. You can find your API key at ...","type":"invalid_request_error","code":"invalid_api_key"}}"#;
    let resp = request(&sira, "/v1/chat/completions")
        .header("x-mock-status", "401")
        .header("x-mock-error", echoed)
        .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "upstream_auth_failed", "{body}");
    assert!(
        !text.contains("sk-upst"),
        "the provider's text is not relayed: {text}"
    );
    assert!(
        text.contains(&id),
        "the request id leads the operator to the log line: {text}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !sira.stderr().contains("refused the gateway's credentials") {
        assert!(
            std::time::Instant::now() < deadline,
            "not logged: {}",
            sira.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn count_tokens_never_becomes_a_generation() {
    let mock = MockProvider::start();
    let config = standard_config().replace(
        "models:\n",
        "models:\n  mixed:\n    targets: [{ provider: ant, model: claude-sonnet-4-5, weight: 1 }, { provider: oai, model: gpt-4o, weight: 100 }]\n  \
         mostly-local:\n    targets: [{ provider: compat, model: llama-3, weight: 100 }, { provider: gem, model: gemini-2.5-flash, weight: 1 }]\n  \
         elsewhere:\n    targets: [{ provider: oai-elsewhere, model: gpt-4o }]\n",
    ).replace(
        "providers:\n",
        "providers:\n  oai-elsewhere: { kind: openai, endpoints: [\"{mock}/elsewhere\"], api_key: sk-x }\n",
    );
    let sira = Sira::start(&config, &mock.url());
    let count = |model: &str| {
        request(&sira, "/v1/messages/count_tokens")
            .header("anthropic-version", "2023-06-01")
            .header("x-mock-input-tokens", "42")
            .json(&serde_json::json!({"model": model, "system": "be brief",
                "tools": [{"name": "t", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": "How many tokens is this?"}]}))
            .send()
    };
    // Each provider's own counting endpoint, its figure in Anthropic's answer; a target that
    // cannot count (the OpenAI-compatible one) is passed over, whatever the weights say.
    for (model, path) in [
        ("claude", "/v1/messages/count_tokens"),
        ("flash", "/v1beta/models/gemini-2.5-flash:countTokens"),
        (
            "mostly-local",
            "/v1beta/models/gemini-2.5-flash:countTokens",
        ),
        ("gpt-4o", "/v1/responses/input_tokens"),
    ] {
        mock.clear();
        let resp = count(model).await.unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        assert!(resp.headers().get("x-sira-estimate").is_none(), "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"input_tokens": 42}), "{model}");
        let sent = mock.requests();
        assert_eq!(sent.len(), 1, "{model}");
        assert_eq!(sent[0].path_and_query, path, "{model}");
    }
    for _ in 0..5 {
        mock.clear();
        let resp = count("mixed").await.unwrap();
        assert_eq!(resp.status(), 200);
        let paths: Vec<String> = mock
            .requests()
            .into_iter()
            .map(|r| r.path_and_query)
            .collect();
        assert!(
            paths == ["/v1/responses/input_tokens"] || paths == ["/v1/messages/count_tokens"],
            "{paths:?}"
        );
    }
    // An `openai` provider in front of a service without OpenAI's counting endpoint: its 404
    // becomes the local estimate, marked as one.
    let resp = count("elsewhere").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sira-estimate"], "true");
    let body: Value = resp.json().await.unwrap();
    assert!(body["input_tokens"].as_u64().unwrap() > 0, "{body}");
    // No provider of the model can count: a local estimate, and no provider is asked.
    mock.clear();
    let resp = count("local").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sira-estimate"], "true");
    let body: Value = resp.json().await.unwrap();
    assert!(body["input_tokens"].as_u64().unwrap() > 0);
    assert!(mock.requests().is_empty(), "no provider was asked");
    // A count costs nothing: none of these is billed or counted as tokens.
    let metrics = sira.metrics().await;
    assert!(
        !metrics.lines().any(|l| l.starts_with("sira_tokens_total{")),
        "{metrics}"
    );
}

#[tokio::test]
async fn reasoning_carried_for_another_provider_never_reaches_the_wrong_one() {
    // A Claude Code session that talked to an OpenAI-served model (its thinking signed with
    // OpenAI's encrypted reasoning) switches to an Anthropic model: passthrough, yet the
    // foreign signature must not reach Anthropic, which would refuse the turn.
    let mock = MockProvider::start();
    let sira = sira(&mock);
    let turn = serde_json::json!({
        "model": "claude", "max_tokens": 50,
        "messages": [
            {"role": "user", "content": "time?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "", "signature": "oai1.gAAAAABoZW5jcnlwdGVk"},
                {"type": "text", "text": "12:00"}]},
            {"role": "user", "content": "thanks"}
        ]
    });
    let resp = request(&sira, "/v1/messages")
        .header("anthropic-version", "2023-06-01")
        .json(&turn)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = mock.requests();
    let body = String::from_utf8_lossy(&sent.last().unwrap().body).into_owned();
    assert!(!body.contains("oai1."), "{body}");
    assert!(
        body.contains("12:00"),
        "the rest of the turn is kept: {body}"
    );

    // Back on the OpenAI model the turn goes on (sira speaks Chat to OpenAI for Anthropic
    // clients, which takes no reasoning back; the Responses path gives it back, tested in
    // `translate::tests::agents`).
    let mut back = turn.clone();
    back["model"] = "gpt-4o".into();
    let resp = request(&sira, "/v1/messages")
        .header("anthropic-version", "2023-06-01")
        .json(&back)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = mock.requests();
    let upstream = sent.last().unwrap();
    assert_eq!(upstream.path_and_query, "/v1/chat/completions");
    assert!(!String::from_utf8_lossy(&upstream.body).contains("oai1."));
}

#[tokio::test]
async fn a_gemini_client_moving_back_to_gemini_drops_anthropics_signatures() {
    let mock = MockProvider::start();
    let sira = sira(&mock);
    let turn = serde_json::json!({
        "contents": [
            {"role": "user", "parts": [{"text": "time?"}]},
            {"role": "model", "parts": [
                {"text": "thinking it over", "thought": true, "thoughtSignature": "ant1.RXFBQ1NpZw=="},
                {"text": "12:00"}]},
            {"role": "user", "parts": [{"text": "thanks"}]}
        ]
    });
    let resp = request(&sira, "/v1beta/models/flash:generateContent")
        .json(&turn)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = String::from_utf8_lossy(&mock.requests().last().unwrap().body).into_owned();
    assert!(!body.contains("ant1."), "{body}");
    assert!(body.contains("12:00"), "{body}");
    // To Anthropic the signature goes back as Anthropic's own.
    let resp = request(&sira, "/v1beta/models/claude:generateContent")
        .json(&turn)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = String::from_utf8_lossy(&mock.requests().last().unwrap().body).into_owned();
    assert!(body.contains("\"signature\":\"RXFBQ1NpZw==\""), "{body}");
}

#[tokio::test]
async fn a_broken_stream_ends_the_same_way_for_a_responses_client_translated_or_not() {
    let mock = MockProvider::start();
    let sira = sira(&mock);
    // gpt-4o: passed through to OpenAI's Responses API; claude: translated.
    for model in ["gpt-4o", "claude"] {
        let resp = request(&sira, "/v1/responses")
            .header("x-mock-fail-after", "2")
            .json(&serde_json::json!({"model": model, "stream": true, "input": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let received = receive(resp).await;
        assert!(
            !received.complete,
            "{model}: a cut stream is not passed on as whole"
        );
        assert!(
            received.text.contains("event: response.failed"),
            "{model}: {}",
            received.text
        );
    }
}

#[tokio::test]
async fn a_live_web_search_runs_at_anthropic_and_comes_back_to_codex_as_its_items() {
    let mock = MockProvider::start();
    let config = standard_config().replace(
        "models:\n",
        "models:\n  claude-search:\n    targets: [{ provider: ant, model: claude-sonnet-4-5 }]\n    web_search: native\n",
    );
    let sira = Sira::start(&config, &mock.url());
    let mut turn = codex_turn("claude-search");
    // Codex with `web_search = "live"` allows external access.
    for tool in turn["tools"].as_array_mut().unwrap() {
        if tool["type"] == "web_search" {
            tool["external_web_access"] = true.into();
        }
    }
    let resp = request(&sira, "/v1/responses")
        .header("x-mock-fixture", "anthropic/messages_stream_web_search.sse")
        .json(&turn)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let dropped = resp
        .headers()
        .get("x-sira-dropped-params")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(!dropped.contains("web_search"), "{dropped}");
    let received = receive(resp).await;
    assert!(received.complete);
    for event in [
        "response.web_search_call.completed",
        "\"type\":\"web_search_call\"",
        "\"query\":\"rust 1.90 release date\"",
        "response.output_text.annotation.added",
        "\"type\":\"url_citation\"",
    ] {
        received.expect(event);
    }
    let sent: Value = serde_json::from_slice(&mock.requests().last().unwrap().body).unwrap();
    let tools = sent["tools"].as_array().unwrap();
    assert!(
        tools.iter().any(|t| t["type"] == "web_search_20250305"),
        "{}",
        sent["tools"]
    );
    // The same turn to a model that keeps the default: dropped and listed.
    let resp = request(&sira, "/v1/responses")
        .json(&{
            let mut t = turn.clone();
            t["model"] = "claude".into();
            t
        })
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["x-sira-dropped-params"]
        .to_str()
        .unwrap()
        .contains("web_search"));
}
