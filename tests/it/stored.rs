//! Stored Responses through the real binary: `store: true` responses kept by sira (in memory,
//! or in a real `redis-server` shared by two sira processes), `previous_response_id`
//! replayed to providers that keep no state, and `GET` / `DELETE /v1/responses/{id}` and
//! `…/input_items` for the key that created the response only.

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::redis::Redis;
use crate::support::{client, receive, request, standard_config, Sira, KEY_A, KEY_B};

/// One turn, answered as JSON (or, with `"stream": true`, read from the terminal event).
async fn turn(sira: &Sira, body: Value) -> (u16, Value) {
    let stream = body["stream"] == true;
    let resp = request(sira, "/v1/responses")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let received = receive(resp).await;
    if !stream || status != 200 {
        return (status, serde_json::from_str(&received.text).unwrap());
    }
    let completed = received
        .text
        .split("\n\n")
        .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|event| event["type"] == "response.completed")
        .expect("a response.completed event");
    (status, completed["response"].clone())
}

/// The text of a Response object's message items.
fn answer_text(response: &Value) -> String {
    let mut text = String::new();
    for item in response["output"].as_array().unwrap() {
        if item["type"] == "message" {
            for part in item["content"].as_array().unwrap() {
                text.push_str(part["text"].as_str().unwrap_or_default());
            }
        }
    }
    assert!(!text.is_empty(), "no answer text in {response}");
    text
}

fn last_upstream_body(mock: &MockProvider) -> String {
    let sent = mock.requests();
    String::from_utf8_lossy(&sent.last().unwrap().body).into_owned()
}

async fn get(sira: &Sira, path: &str, key: &str) -> (u16, Value) {
    let resp = client()
        .get(sira.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_stored_conversation_continues_on_every_provider_kind() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    for (first, second, stream) in [
        ("claude", "claude", false),
        ("flash", "flash", true),
        ("local", "local", false),
        // One provider's answer continued on another: the conversation is sira's.
        ("claude", "flash", true),
        ("gpt-4o", "claude", false),
    ] {
        let question = format!("first question for {first} then {second}");
        let (status, one) = turn(
            &sira,
            json!({"model": first, "input": question, "stream": stream}),
        )
        .await;
        assert_eq!(status, 200, "{first}: {one}");
        assert_eq!(one["store"], true, "{first}: stored responses say so");
        let id = one["id"].as_str().unwrap().to_owned();
        let said = answer_text(&one);
        let (status, two) = turn(
            &sira,
            json!({"model": second, "previous_response_id": id, "stream": stream,
                   "input": [{"role": "user", "content": "and the second"}]}),
        )
        .await;
        assert_eq!(status, 200, "{first} → {second}: {two}");
        let upstream = last_upstream_body(&mock);
        for expected in [question.as_str(), said.as_str(), "and the second"] {
            assert!(
                upstream.contains(expected),
                "{first} → {second}: {expected:?} not replayed in {upstream}"
            );
        }
        assert!(!upstream.contains("previous_response_id"), "{upstream}");
    }
}

#[tokio::test]
async fn openai_continues_its_own_response_by_id() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let (_, one) = turn(&sira, json!({"model": "gpt-4o", "input": "remember me"})).await;
    let id = one["id"].as_str().unwrap();
    let (status, _) = turn(
        &sira,
        json!({"model": "gpt-4o", "previous_response_id": id, "input": "next"}),
    )
    .await;
    assert_eq!(status, 200);
    // The provider that stored it gets the request as the client wrote it.
    let upstream: Value = serde_json::from_str(&last_upstream_body(&mock)).unwrap();
    assert_eq!(upstream["previous_response_id"], id);
    assert_eq!(upstream["input"], "next");
}

#[tokio::test]
async fn stored_responses_are_read_listed_and_deleted_by_their_key_only() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let (_, one) = turn(&sira, json!({"model": "claude", "input": "turn one"})).await;
    let one_id = one["id"].as_str().unwrap().to_owned();
    let (_, two) = turn(
        &sira,
        json!({"model": "claude", "previous_response_id": one_id, "input": "turn two"}),
    )
    .await;
    let two_id = two["id"].as_str().unwrap().to_owned();

    let (status, got) = get(&sira, &format!("/v1/responses/{two_id}"), KEY_A).await;
    assert_eq!(status, 200);
    assert_eq!(
        got, two,
        "GET returns the response as the client received it"
    );
    let (status, other) = get(&sira, &format!("/v1/responses/{two_id}"), KEY_B).await;
    assert_eq!(
        status, 404,
        "another key's response does not exist: {other}"
    );
    assert_eq!(other["error"]["type"], "invalid_request_error");

    // The input the model saw, newest first: turn two, the answer to turn one, turn one.
    let path = format!("/v1/responses/{two_id}/input_items");
    let (status, items) = get(&sira, &path, KEY_A).await;
    assert_eq!(status, 200, "{items}");
    let data = items["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{items}");
    assert_eq!(data[0]["content"], "turn two");
    assert_eq!(data[2]["content"], "turn one");
    assert_eq!(items["has_more"], false);
    assert!(data.iter().all(|i| i["id"].is_string()), "{items}");
    let (_, page) = get(&sira, &format!("{path}?order=asc&limit=1"), KEY_A).await;
    assert_eq!(page["data"][0]["content"], "turn one");
    assert_eq!(page["has_more"], true);
    let after = page["last_id"].as_str().unwrap();
    let (_, next) = get(
        &sira,
        &format!("{path}?order=asc&limit=1&after={after}"),
        KEY_A,
    )
    .await;
    assert_eq!(next["data"][0], data[1]);
    assert_eq!(get(&sira, &format!("{path}?limit=0"), KEY_A).await.0, 400);
    assert_eq!(get(&sira, &path, KEY_B).await.0, 404);

    // Deleting the first turn breaks the conversation that continues it.
    let resp = client()
        .delete(sira.url(&format!("/v1/responses/{one_id}")))
        .bearer_auth(KEY_B)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "another key cannot delete it");
    let resp = client()
        .delete(sira.url(&format!("/v1/responses/{one_id}")))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deleted: Value = resp.json().await.unwrap();
    assert_eq!(
        deleted,
        json!({"id": one_id, "object": "response", "deleted": true})
    );
    assert_eq!(
        get(&sira, &format!("/v1/responses/{one_id}"), KEY_A)
            .await
            .0,
        404
    );
    let (status, err) = turn(
        &sira,
        json!({"model": "claude", "previous_response_id": two_id, "input": "turn three"}),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "previous_response_not_found");
    assert_eq!(err["error"]["param"], "previous_response_id");
}

#[tokio::test]
async fn store_false_and_unknown_ids_are_not_found() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    let (_, one) = turn(
        &sira,
        json!({"model": "claude", "input": "private", "store": false}),
    )
    .await;
    assert_eq!(one["store"], false);
    let id = one["id"].as_str().unwrap();
    assert_eq!(
        get(&sira, &format!("/v1/responses/{id}"), KEY_A).await.0,
        404
    );
    let (status, err) = turn(
        &sira,
        json!({"model": "claude", "previous_response_id": id, "input": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "previous_response_not_found");
    // Not a path sira looks anything up under.
    let resp = client()
        .get(sira.url("/v1/responses/a.b"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn with_the_store_off_nothing_is_kept() {
    let mock = MockProvider::start();
    let config = format!("{}responses_store: off\n", standard_config());
    let sira = Sira::start(&config, &mock.url());
    let (_, one) = turn(&sira, json!({"model": "claude", "input": "x"})).await;
    assert_eq!(one["store"], false);
    let id = one["id"].as_str().unwrap();
    assert_eq!(
        get(&sira, &format!("/v1/responses/{id}"), KEY_A).await.0,
        404
    );
}

#[tokio::test]
async fn sira_hosts_sharing_redis_continue_each_others_conversations() {
    let mock = MockProvider::start();
    let mut redis = Redis::start();
    let config = format!(
        "{}responses_store:\n  redis: {{ url: \"{}\", ttl: 1h, prefix: \"test:\", timeout: 300ms }}\n",
        standard_config(),
        redis.url()
    );
    let host_a = Sira::start(&config, &mock.url());
    let host_b = Sira::start(&config, &mock.url());
    let (_, one) = turn(
        &host_a,
        json!({"model": "claude", "input": "asked on host a", "stream": true}),
    )
    .await;
    let id = one["id"].as_str().unwrap().to_owned();
    // The write is in flight when the client has its answer; host b may ask a moment later.
    let mut found = 0;
    for _ in 0..50 {
        found = get(&host_b, &format!("/v1/responses/{id}"), KEY_A).await.0;
        if found == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(found, 200);
    let (status, _) = turn(
        &host_b,
        json!({"model": "flash", "previous_response_id": id, "input": "continued on host b"}),
    )
    .await;
    assert_eq!(status, 200);
    let upstream = last_upstream_body(&mock);
    assert!(upstream.contains("asked on host a"), "{upstream}");

    // Redis gone: a continuation cannot be honoured (503, retryable); a fresh turn still
    // works, its answer just is not stored.
    redis.stop();
    let (status, err) = turn(
        &host_b,
        json!({"model": "claude", "previous_response_id": id, "input": "x"}),
    )
    .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"]["code"], "store_unavailable");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(!message.contains("127.0.0.1"), "{message}");
    let (status, _) = turn(&host_b, json!({"model": "claude", "input": "fresh"})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_conversation_openai_keeps_goes_on_at_openai_even_when_sira_missed_part_of_it() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    // Begun before sira stored anything (or expired since): OpenAI still has it.
    let (status, one) = turn(
        &sira,
        json!({"model": "gpt-4o", "previous_response_id": "resp_from_before", "input": "next"}),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    let id = one["id"].as_str().unwrap();
    let (status, two) = turn(
        &sira,
        json!({"model": "gpt-4o", "previous_response_id": id, "input": "and then"}),
    )
    .await;
    assert_eq!(status, 200, "{two}");
    let upstream: Value = serde_json::from_str(&last_upstream_body(&mock)).unwrap();
    assert_eq!(
        upstream["previous_response_id"], id,
        "as the client wrote it"
    );
    // Another provider would get only part of it: refused, never a silently short history.
    let (status, err) = turn(
        &sira,
        json!({"model": "claude", "previous_response_id": id, "input": "elsewhere"}),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "previous_response_not_found");
}

#[tokio::test]
async fn an_answer_too_large_to_store_is_still_delivered_whole() {
    let mock = MockProvider::start();
    let sira = Sira::start_with_server(
        &standard_config(),
        &mock.url(),
        "  max_response_body: 4KiB\n",
    );
    let resp = request(&sira, "/v1/responses")
        .header("x-mock-events", "1500")
        .json(&json!({"model": "gpt-4o", "input": "a long answer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let received = receive(resp).await;
    assert!(received.complete && received.text.len() > 4096);
    let one: Value = serde_json::from_str(&received.text).unwrap();
    let id = one["id"].as_str().unwrap();
    assert_eq!(
        get(&sira, &format!("/v1/responses/{id}"), KEY_A).await.0,
        404
    );
}

#[tokio::test]
async fn stored_ids_are_per_key_and_chosen_by_sira() {
    let mock = MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    // The same x-request-id for two keys' turns: each key keeps its own response.
    let ask = |key: &'static str, text: &'static str| {
        client()
            .post(sira.url("/v1/responses"))
            .bearer_auth(key)
            .header("x-request-id", "same-id")
            .json(&json!({"model": "anthropic/claude-sonnet-4-5", "input": text}))
            .send()
    };
    let a = ask(KEY_A, "from a").await.unwrap();
    let b = ask(KEY_B, "from b").await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let a: Value = a.json().await.unwrap();
    let b: Value = b.json().await.unwrap();
    assert!(a["id"].is_string() && b["id"].is_string());
    assert_ne!(a["id"], b["id"]);
    assert!(!a["id"].as_str().unwrap().contains("same-id"), "{a}");
    let (_, got) = get(
        &sira,
        &format!("/v1/responses/{}", a["id"].as_str().unwrap()),
        KEY_A,
    )
    .await;
    assert_eq!(got, a);
}
