//! The response cache through the binary: hits and misses per scope, streams replayed in
//! the client's format, the client's cache-control, expiry, the memory bound, a Redis L2
//! shared by two sira processes, and identical requests in flight coalesced into one
//! upstream call.

use std::time::Duration;

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::redis::Redis;
use crate::streaming::data_events;
use crate::support::{client, keys_section, receive, request, Sira, KEY_B};

pub fn config(cache: &str, model_extra: &str) -> String {
    format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"{{mock}}\"], api_key: sk-upstream }}\ncache:\n{cache}models:\n  gpt-4o:\n    targets: [{{ provider: oai }}]\n{model_extra}  claude:\n    targets: [{{ provider: oai, model: gpt-4o }}]\n{}",
        keys_section()
    )
}

/// The memory tier and, behind it, `redis` as the shared one.
pub fn redis_cache(redis: &Redis) -> String {
    format!(
        "{MEMORY}  redis: {{ url: \"{}\", ttl: 1m, timeout: 500ms }}\n",
        redis.url()
    )
}

pub const MEMORY: &str = "  memory: { capacity: 1MiB, ttl: 1m }\n";

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "temperature": 0,
           "messages": [{"role": "user", "content": "What is sira?"}]})
}

async fn post(sira: &Sira, body: &Value) -> (String, String) {
    let resp = request(sira, "/v1/chat/completions")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cache = header(&resp, "x-sira-cache");
    let received = receive(resp).await;
    assert!(received.complete);
    (cache, received.text)
}

pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map_or("-".into(), |v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_same_request_is_answered_once_by_the_provider_then_from_the_cache() {
    let mock = MockProvider::start();
    let sira = Sira::start(&config(MEMORY, ""), &mock.url());
    let (first, answer) = post(&sira, &chat(false)).await;
    assert_eq!(first, "miss");
    // Key order, whitespace and `user` do not make another request.
    let reordered: Value = serde_json::from_str(
        r#"{"messages": [{"content": "What is sira?", "role": "user"}], "user": "u-9",
            "temperature": 0, "model": "gpt-4o", "stream": false}"#,
    )
    .unwrap();
    let (second, replayed) = post(&sira, &reordered).await;
    assert_eq!(second, "hit");
    assert_eq!(replayed, answer);
    assert_eq!(mock.requests().len(), 1);
    // Another key does not share it; another question is another answer.
    let resp = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_B)
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "x-sira-cache"), "miss");
    let mut other = chat(false);
    other["temperature"] = json!(1);
    assert_eq!(post(&sira, &other).await.0, "miss");
    assert_eq!(mock.requests().len(), 3);

    // An answer is stored after it went out (the logging phase): the last one may still be
    // on its way when its client has it.
    let stored = "sira_cache_requests_total{result=\"store\"}";
    let mut metrics = sira.metrics().await;
    for _ in 0..50 {
        if crate::support::metric_value(&metrics, stored) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        metrics = sira.metrics().await;
    }
    assert_eq!(
        crate::support::metric_value(&metrics, "sira_cache_requests_total{result=\"hit\"}"),
        1.0
    );
    assert_eq!(crate::support::metric_value(&metrics, stored), 3.0);
    assert!(
        crate::support::metric_value(
            &metrics,
            "sira_cache_saved_tokens_total{key=\"team-a\",kind=\"output\",model=\"gpt-4o\"}"
        ) > 0.0
    );
    assert!(crate::support::metric_value(&metrics, "sira_cache_bytes") > 0.0);
    let log = sira.wait_access_log(4);
    let hit = log
        .iter()
        .find(|l| l["cache"] == "hit")
        .expect("a hit in the access log");
    assert_eq!(hit["cost_usd"], 0.0);
    assert!(hit["cache_saved_tokens"].as_u64().unwrap() > 0, "{hit}");
}

#[tokio::test]
async fn streams_are_kept_whole_and_replayed_as_the_client_speaks() {
    let mock = MockProvider::start();
    let sira = Sira::start(&config(MEMORY, ""), &mock.url());
    let (first, stream) = post(&sira, &chat(true)).await;
    assert_eq!(first, "miss");
    let (second, replayed) = post(&sira, &chat(true)).await;
    assert_eq!(second, "hit");
    assert_eq!(data_events(&replayed), data_events(&stream));
    assert_eq!(data_events(&replayed).last().unwrap(), "[DONE]");
    // The JSON form of the same question is another entry.
    assert_eq!(post(&sira, &chat(false)).await.0, "miss");

    // An Anthropic client, translated, gets its own events back from the cache.
    let body = json!({"model": "claude", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "What is sira?"}]});
    let mut seen = Vec::new();
    for _ in 0..2 {
        let resp = request(&sira, "/v1/messages")
            .json(&body)
            .send()
            .await
            .unwrap();
        seen.push(header(&resp, "x-sira-cache"));
        let received = receive(resp).await;
        received.expect("event: message_stop");
        received.expect("content_block_delta");
    }
    assert_eq!(seen, ["miss", "hit"]);
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn cache_control_bypasses_and_errors_are_never_kept() {
    let mock = MockProvider::start();
    let sira = Sira::start(&config(MEMORY, ""), &mock.url());
    let send = |control: Option<&'static str>| {
        let mut req = request(&sira, "/v1/chat/completions").json(&chat(false));
        if let Some(control) = control {
            req = req.header("cache-control", control);
        }
        req.send()
    };
    // no-store: not looked up, not kept.
    let resp = send(Some("no-store")).await.unwrap();
    assert_eq!(header(&resp, "x-sira-cache"), "bypass");
    assert_eq!(header(&send(None).await.unwrap(), "x-sira-cache"), "miss");
    // no-cache: not looked up, but the fresh answer is kept.
    assert_eq!(
        header(&send(Some("no-cache")).await.unwrap(), "x-sira-cache"),
        "bypass"
    );
    assert_eq!(header(&send(None).await.unwrap(), "x-sira-cache"), "hit");
    assert_eq!(mock.requests().len(), 3);

    // A provider error is not an answer to keep.
    let mut failing = chat(false);
    failing["temperature"] = json!(0.5);
    for _ in 0..2 {
        let resp = request(&sira, "/v1/chat/completions")
            .header("x-mock-status", "400")
            .json(&failing)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(header(&resp, "x-sira-cache"), "miss");
    }
}

#[tokio::test]
async fn entries_expire_with_their_models_ttl_and_memory_stays_bounded() {
    let mock = MockProvider::start();
    let cache = "  memory: { capacity: 64KiB, ttl: 1m }\n  max_entry: 8KiB\n";
    let sira = Sira::start(&config(cache, "    cache: { ttl: 1s }\n"), &mock.url());
    let ttl = Duration::from_secs(1);
    // The entry is made once the first answer was sent, so a second request that came
    // back within the TTL of the first one's return was looked up within the TTL of the
    // entry: it must hit. On a machine so loaded that it took longer, its miss proves
    // nothing, and the pair is tried again with another question.
    let mut hit = None;
    for attempt in 0..5 {
        let mut body = chat(false);
        body["messages"][0]["content"] = json!(format!("What is sira? ({attempt})"));
        assert_eq!(post(&sira, &body).await.0, "miss");
        let first_back = std::time::Instant::now();
        let second = post(&sira, &body).await.0;
        if first_back.elapsed() < ttl {
            assert_eq!(second, "hit");
            hit = Some(body);
            break;
        }
    }
    let body = hit.expect("no second request came back within the TTL in five tries");
    // Found by the hit, so made before it: gone a TTL after.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    assert_eq!(post(&sira, &body).await.0, "miss");

    // Far more answers than the memory holds: it stays within its capacity.
    for i in 0..120 {
        let mut body = chat(false);
        body["messages"][0]["content"] = json!(format!("question {i} {}", "x".repeat(400)));
        post(&sira, &body).await;
    }
    let bytes = sira.metric("sira_cache_bytes").await;
    assert!(bytes > 0.0 && bytes <= 64.0 * 1024.0, "{bytes}");
}

#[tokio::test]
async fn a_redis_cache_is_shared_by_two_sira_processes() {
    let redis = Redis::start();
    let mock = MockProvider::start();
    let cache = redis_cache(&redis);
    let a = Sira::start(&config(&cache, ""), &mock.url());
    let b = Sira::start(&config(&cache, ""), &mock.url());
    let mut conn = ::redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    for stream in [false, true] {
        let keys = |conn: &mut ::redis::Connection| {
            ::redis::cmd("KEYS")
                .arg("*")
                .query::<Vec<String>>(conn)
                .unwrap()
                .len()
        };
        let before = keys(&mut conn);
        let (first, answer) = post(&a, &chat(stream)).await;
        assert_eq!(first, "miss");
        // Written to Redis in the background, a moment after the answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while keys(&mut conn) == before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (second, replayed) = post(&b, &chat(stream)).await;
        assert_eq!(second, "hit", "stream: {stream}");
        assert_eq!(replayed, answer, "stream: {stream}");
    }
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn fifty_identical_requests_in_flight_make_one_upstream_call() {
    let mock = MockProvider::start();
    let sira = Sira::start(&config(MEMORY, ""), &mock.url());
    for stream in [false, true] {
        let before = mock.requests().len();
        let mut body = chat(stream);
        body["messages"][0]["content"] = json!(format!("coalesce {stream}"));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let req = request(&sira, "/v1/chat/completions")
                    // Long enough that all fifty are in before the first is answered.
                    .header("x-mock-hang-ms", "2000")
                    .header("x-mock-delay-ms", "20")
                    .json(&body);
                tokio::spawn(async move {
                    let resp = req.send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    let cache = header(&resp, "x-sira-cache");
                    let received = receive(resp).await;
                    assert!(received.complete);
                    (cache, received.text)
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        assert_eq!(mock.requests().len() - before, 1, "stream: {stream}");
        let misses = answers.iter().filter(|(c, _)| c == "miss").count();
        assert_eq!(misses, 1, "stream: {stream}");
        let first = if stream {
            data_events(&answers[0].1)
        } else {
            vec![answers[0].1.clone()]
        };
        for (_, text) in &answers {
            let got = if stream {
                data_events(text)
            } else {
                vec![text.clone()]
            };
            assert_eq!(got, first, "stream: {stream}");
        }
    }
    let coalesced = sira
        .metric("sira_cache_requests_total{result=\"coalesced\"}")
        .await;
    assert_eq!(coalesced, 98.0);
}

#[tokio::test]
async fn followers_get_the_whole_stream_when_the_leaders_client_leaves() {
    let mock = MockProvider::start();
    let sira = Sira::start(&config(MEMORY, ""), &mock.url());
    let body = chat(true);
    let send = || {
        request(&sira, "/v1/chat/completions")
            .header("x-mock-delay-ms", "60")
            .header("x-mock-events", "12")
            .json(&body)
            .send()
    };
    let mut leader = send().await.unwrap();
    assert_eq!(header(&leader, "x-sira-cache"), "miss");
    let follower = tokio::spawn(send());
    // The leader's client reads a little, then hangs up.
    leader.chunk().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(leader);
    let follower = follower.await.unwrap().unwrap();
    assert_eq!(header(&follower, "x-sira-cache"), "hit");
    let received = receive(follower).await;
    assert!(
        received.complete,
        "{}\n{:?}",
        received.text,
        sira.wait_access_log(2)
    );
    assert_eq!(data_events(&received.text).last().unwrap(), "[DONE]");
    assert_eq!(mock.requests().len(), 1);
    // And the whole answer was kept, read to its end for the follower.
    let (result, _) = post(&sira, &body).await;
    assert_eq!(result, "hit");
}

#[tokio::test]
async fn a_stream_that_ends_in_an_error_is_not_kept() {
    let mock = MockProvider::start();
    let sira = Sira::start(&config(MEMORY, ""), &mock.url());
    for _ in 0..2 {
        let resp = request(&sira, "/v1/chat/completions")
            .header("x-mock-error-event-after", "2")
            .json(&chat(true))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&resp, "x-sira-cache"), "miss");
        receive(resp).await;
    }
    assert_eq!(mock.requests().len(), 2);
}

/// A provider that answers every request with the chat stream `events`, whole.
fn provider_streaming(events: String) -> crate::raw::RawUpstream {
    crate::raw::RawUpstream::start(move |stream, _| {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
            events.len()
        );
        crate::raw::send(stream, format!("{head}{events}").as_bytes())
    })
}

fn chat_chunk(content: &str) -> String {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    format!("data: {chunk}\n\n")
}

#[tokio::test]
async fn every_event_of_a_stream_is_read_by_its_structure_before_it_is_kept() {
    // A compatible server's error chunk (vLLM's `"object": "error"`), then its `[DONE]`:
    // the stream ends, but it carried an error, and is not kept.
    let vllm_error = r#"data: {"object":"error","message":"out of memory","type":"InternalServerError","code":500}"#;
    let failing = provider_streaming(format!(
        "{}{vllm_error}\n\ndata: [DONE]\n\n",
        chat_chunk("Partial")
    ));
    let sira = Sira::start(&config(MEMORY, ""), &failing.url);
    for _ in 0..2 {
        let (cache, text) = post(&sira, &chat(true)).await;
        assert_eq!(cache, "miss", "{text}");
    }
    assert_eq!(failing.requests(), 2);
    // A model whose text names an error event is a whole answer all the same.
    let naming = provider_streaming(format!(
        "{}{}data: [DONE]\n\n",
        chat_chunk("event: error"),
        chat_chunk(" or response.failed, and \"type\":\"error\"")
    ));
    let sira = Sira::start(&config(MEMORY, ""), &naming.url);
    let (first, _) = post(&sira, &chat(true)).await;
    let (second, text) = post(&sira, &chat(true)).await;
    assert_eq!((first.as_str(), second.as_str()), ("miss", "hit"), "{text}");
    assert!(text.contains("response.failed"), "{text}");
    assert_eq!(naming.requests(), 1);
}

/// A streamed chat request for `model` whose provider pauses `delay_ms` between events:
/// `x-sira-cache`, the whole body, and when its first and last bytes came.
async fn timed_stream(
    sira: &Sira,
    model: &str,
    delay_ms: u64,
) -> (String, String, Duration, Duration) {
    let mut body = chat(true);
    body["model"] = json!(model);
    let started = std::time::Instant::now();
    let mut resp = request(sira, "/v1/chat/completions")
        .header("x-mock-events", "6")
        .header("x-mock-delay-ms", delay_ms.to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cache = header(&resp, "x-sira-cache");
    let (mut text, mut first) = (Vec::new(), None);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        first.get_or_insert_with(|| started.elapsed());
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(text).unwrap();
    (cache, text, first.unwrap(), started.elapsed())
}

#[tokio::test]
async fn a_stored_stream_replays_at_its_original_pace_where_asked() {
    let mock = MockProvider::start();
    // gpt-4o replays with the provider's pauses; claude (the same model upstream) at once.
    let sira = Sira::start(
        &config(MEMORY, "    cache: { replay: original }\n"),
        &mock.url(),
    );
    // Pauses long enough that a loaded machine's delays do not blur paced from at once.
    let pause = 400;
    let (miss, original, _, took) = timed_stream(&sira, "gpt-4o", pause).await;
    assert_eq!(miss, "miss");
    assert!(took >= Duration::from_millis(5 * pause), "{took:?}");
    let (hit, replayed, first, took) = timed_stream(&sira, "gpt-4o", pause).await;
    assert_eq!(hit, "hit");
    assert_eq!(data_events(&replayed), data_events(&original));
    // The first event at once, the last as long after it as the provider took.
    assert!(first < Duration::from_millis(pause), "{first:?}");
    assert!(
        took - first >= Duration::from_millis(4 * pause),
        "{:?}",
        took - first
    );

    let (miss, _, _, _) = timed_stream(&sira, "claude", pause).await;
    assert_eq!(miss, "miss");
    let (hit, _, _, took) = timed_stream(&sira, "claude", pause).await;
    assert_eq!(hit, "hit");
    assert!(took < Duration::from_millis(4 * pause), "{took:?}");
    assert_eq!(mock.requests().len(), 2);
}
