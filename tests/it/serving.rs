//! Routes, model resolution, upstream requests (target model, provider credentials).

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::support::{client, header_values, standard_config, start_standard, Sira, KEY_A, KEY_B};

#[tokio::test]
async fn openai_chat_passes_through_with_target_model_and_provider_key() {
    let (mock, sira) = start_standard();
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sira-provider"], "oai");
    assert_eq!(resp.headers()["x-sira-model"], "gpt-4o-2024-08-06");
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["model"], "gpt-4o-2024-08-06",
        "the mock echoes the model it was asked for"
    );

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    let up = &recorded[0];
    assert_eq!(up.path_and_query, "/v1/chat/completions");
    assert_eq!(
        up.header("authorization"),
        Some("Bearer sk-upstream-openai")
    );
    assert_eq!(up.json()["model"], "gpt-4o-2024-08-06");
    assert!(
        !header_values(up).iter().any(|v| v.contains(KEY_A)),
        "the client's key must never reach the provider: {:?}",
        up.headers
    );
}

#[tokio::test]
async fn anthropic_messages_pass_through_with_provider_headers() {
    let (mock, sira) = start_standard();
    let resp = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_A)
        .json(&json!({"model": "claude", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message");
    let up = &mock.requests()[0];
    assert_eq!(up.path_and_query, "/v1/messages");
    assert_eq!(up.header("x-api-key"), Some("sk-upstream-anthropic"));
    assert_eq!(up.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(up.json()["model"], "claude-sonnet-4-5");
    assert!(!header_values(up).iter().any(|v| v.contains(KEY_A)));
}

#[tokio::test]
async fn client_anthropic_version_and_beta_are_forwarded() {
    let (mock, sira) = start_standard();
    let resp = client()
        .post(sira.url("/v1/messages"))
        .header("x-api-key", KEY_A)
        .header("anthropic-version", "2023-01-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .json(&json!({"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let up = &mock.requests()[0];
    assert_eq!(up.header("anthropic-version"), Some("2023-01-01"));
    assert_eq!(
        up.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
}

#[tokio::test]
async fn wildcard_models_send_the_matched_part_upstream() {
    let (mock, sira) = start_standard();
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "openai/gpt-4.1-mini", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sira-model"], "gpt-4.1-mini");
    assert_eq!(mock.requests()[0].json()["model"], "gpt-4.1-mini");
}

#[tokio::test]
async fn azure_gets_deployment_url_and_api_key_header() {
    let (mock, sira) = start_standard();
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "azure-gpt", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let up = &mock.requests()[0];
    assert_eq!(
        up.path_and_query,
        "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(up.header("api-key"), Some("sk-upstream-azure"));
    assert_eq!(up.header("authorization"), None);
}

#[tokio::test]
async fn openai_compatible_base_url_with_v1_is_not_doubled() {
    let (mock, sira) = start_standard();
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "local", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let up = &mock.requests()[0];
    assert_eq!(up.path_and_query, "/v1/chat/completions");
    assert_eq!(
        up.header("authorization"),
        Some("Bearer sk-upstream-compat")
    );
    assert_eq!(up.json()["model"], "llama-3");
}

#[tokio::test]
async fn embeddings_route_to_openai_providers() {
    let (mock, sira) = start_standard();
    let resp = client()
        .post(sira.url("/v1/embeddings"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "openai/text-embedding-3-small", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(mock.requests()[0].path_and_query, "/v1/embeddings");
}

#[tokio::test]
async fn models_lists_what_the_key_may_use() {
    let (mock, sira) = start_standard();
    let list = |key: &'static str| {
        let url = sira.url("/v1/models");
        async move {
            let all: Value = client()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(all["object"], "list");
            all["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<String>>()
        }
    };
    // The exact entries first, then what the providers behind `openai/*` and
    // `anthropic/*` listed (the mock lists four models for both), asked for on this first
    // listing.
    let ids = list(KEY_A).await;
    assert_eq!(
        ids[..5],
        ["gpt-4o", "claude", "local", "azure-gpt", "flash"]
    );
    for name in [
        "openai/gpt-4o",
        "openai/gpt-5-nano",
        "anthropic/gpt-4o-mini",
    ] {
        assert!(ids.iter().any(|id| id == name), "{name} in {ids:?}");
    }
    assert_eq!(ids.len(), 5 + 8, "{ids:?}");
    let asked: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.path_and_query.clone())
        .collect();
    assert!(asked.contains(&"/v1/models".to_owned()), "{asked:?}");
    assert!(
        asked.contains(&"/v1/models?limit=1000".to_owned()),
        "{asked:?}"
    );
    // team-b may use `gpt-4o*` and `anthropic/*` only.
    let ids = list(KEY_B).await;
    assert_eq!(ids[0], "gpt-4o");
    assert_eq!(ids.len(), 1 + 4, "{ids:?}");
    assert!(
        ids[1..].iter().all(|id| id.starts_with("anthropic/")),
        "{ids:?}"
    );
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let (_mock, sira) = start_standard();
    let h2 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
}

#[tokio::test]
async fn keep_alive_connections_serve_many_requests() {
    let (mock, sira) = start_standard();
    let c = client();
    for _ in 0..5 {
        let resp = c
            .post(sira.url("/v1/chat/completions"))
            .bearer_auth(KEY_A)
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(mock.requests().len(), 5);
    assert_eq!(mock.connections(), 1, "sira reuses its upstream connection");
}

/// `server.threads: 1` runs one single-threaded event loop (the others keep the
/// work-stealing scheduler): everything at once on it, HTTP/1 and HTTP/2, answers and
/// streams, a reload in the middle, every request served and accounted.
#[tokio::test]
async fn one_worker_thread_serves_answers_streams_and_http2_at_once() {
    let mock = MockProvider::start();
    let sira = Sira::start_with_server(&standard_config(), &mock.url(), "  threads: 1\n");
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let answer = |http: reqwest::Client| {
        let url = sira.url("/v1/chat/completions");
        async move {
            let resp = http
                .post(url)
                .bearer_auth(KEY_A)
                .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["object"], "chat.completion", "{body}");
        }
    };
    let stream = || async {
        let received = crate::support::chat_stream_body(&sira, &[("x-mock-delay-ms", "20")]).await;
        assert!(received.complete, "{}", received.text);
        received.expect("[DONE]");
    };
    let mut jobs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>> = Vec::new();
    for _ in 0..20 {
        jobs.push(Box::pin(answer(client())));
        jobs.push(Box::pin(answer(h2.clone())));
    }
    for _ in 0..10 {
        jobs.push(Box::pin(stream()));
    }
    jobs.push(Box::pin(async {
        sira.sighup();
    }));
    futures_util::future::join_all(jobs).await;
    assert_eq!(sira.wait_access_log(50).len(), 50);
    assert_eq!(mock.requests().len(), 50);
}
