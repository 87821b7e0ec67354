//! The response cache across client formats, through the binary: an OpenAI, an Anthropic
//! and a Gemini client asking the same thing share one answer (kept and in flight), each in
//! its own format, where the provider's format makes that exact; and are told apart where
//! it would not.

use std::time::Duration;

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::cache::{config, header, redis_cache, MEMORY};
use crate::redis::Redis;
use crate::streaming::data_events;
use crate::support::{keys_section, receive, request, Sira};
use crate::translation::{json_text, stream_text, Surface};

/// The same question from an OpenAI, an Anthropic and a Gemini client, as each SDK writes
/// it: one request to the provider once translated, and the path and body of each.
fn three_clients(question: &str, stream: bool) -> [(Surface, String, Value); 3] {
    let mut openai = json!({"model": "gpt-4o", "max_completion_tokens": 64, "stream": stream,
                            "messages": [{"role": "user", "content": question}]});
    if stream {
        openai["stream_options"] = json!({"include_usage": true});
    }
    let anthropic = json!({"model": "gpt-4o", "max_tokens": 64, "stream": stream,
                           "messages": [{"role": "user", "content": question}]});
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": question}]}],
                        "generationConfig": {"maxOutputTokens": 64}});
    let gemini_path = if stream {
        "/v1beta/models/gpt-4o:streamGenerateContent?alt=sse"
    } else {
        "/v1beta/models/gpt-4o:generateContent"
    };
    [
        (Surface::Chat, "/v1/chat/completions".into(), openai),
        (Surface::Anthropic, "/v1/messages".into(), anthropic),
        (Surface::Gemini, gemini_path.into(), gemini),
    ]
}

/// `x-sira-cache` and the answer's text in the client's own shape (which must parse as
/// that format's answer, and a stream end as that format ends one).
async fn ask(sira: &Sira, surface: Surface, path: &str, body: &Value) -> (String, String) {
    answer_of(surface, path, asking(sira, path, body, 0)).await
}

fn asking(sira: &Sira, path: &str, body: &Value, hang_ms: u32) -> reqwest::RequestBuilder {
    request(sira, path)
        .header("x-mock-hang-ms", hang_ms.to_string())
        .json(body)
}

async fn answer_of(surface: Surface, path: &str, req: reqwest::RequestBuilder) -> (String, String) {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{surface:?}");
    let cache = header(&resp, "x-sira-cache");
    let received = receive(resp).await;
    assert!(received.complete, "{surface:?}");
    let text = if path.contains("stream")
        || received.text.starts_with("data:")
        || received.text.starts_with("event:")
    {
        let (text, ended) = stream_text(surface, &received.text);
        assert!(ended, "{surface:?}: {}", received.text);
        // Usage reaches every format's stream: Chat's last chunk (asked for), Anthropic's
        // message_delta, Gemini's usageMetadata.
        let used = data_events(&received.text)
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|v| {
                let n = match surface {
                    Surface::Chat => &v["usage"]["completion_tokens"],
                    Surface::Anthropic => &v["usage"]["output_tokens"],
                    _ => &v["usageMetadata"]["candidatesTokenCount"],
                };
                n.as_u64()
            })
            .max()
            .unwrap_or(0);
        assert!(used > 0, "{surface:?} {cache}: {}", received.text);
        text
    } else {
        let answer: Value = serde_json::from_str(&received.text).unwrap();
        // How it ended and what it used, in this format's own fields.
        let (finish, used) = match surface {
            Surface::Chat => (
                &answer["choices"][0]["finish_reason"],
                &answer["usage"]["completion_tokens"],
            ),
            Surface::Anthropic => (&answer["stop_reason"], &answer["usage"]["output_tokens"]),
            _ => (
                &answer["candidates"][0]["finishReason"],
                &answer["usageMetadata"]["candidatesTokenCount"],
            ),
        };
        assert!(finish.is_string(), "{surface:?}: {answer}");
        assert!(used.as_u64().unwrap_or(0) > 0, "{surface:?}: {answer}");
        json_text(surface, &answer)
    };
    assert!(!text.is_empty(), "{surface:?}: {}", received.text);
    (cache, text)
}

#[tokio::test]
async fn clients_of_different_formats_share_answers_and_flights() {
    let mock = MockProvider::start();
    let sira = Sira::start(&config(MEMORY, ""), &mock.url());
    for stream in [false, true] {
        // Kept: asked first as OpenAI, then answered from the cache in each client's shape.
        let before = mock.requests().len();
        let clients = three_clients(&format!("kept, stream {stream}"), stream);
        let mut answers = Vec::new();
        for (surface, path, body) in &clients {
            answers.push(ask(&sira, *surface, path, body).await);
        }
        let results: Vec<&str> = answers.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(results, ["miss", "hit", "hit"], "stream: {stream}");
        assert!(
            answers.iter().all(|(_, text)| *text == answers[0].1),
            "{answers:?}"
        );
        assert_eq!(mock.requests().len() - before, 1, "stream: {stream}");

        // In flight: an OpenAI client first (its answer is the provider's own), then ten
        // of each format while it is answered.
        let before = mock.requests().len();
        let clients = three_clients(&format!("in flight, stream {stream}"), stream);
        let (surface, path, body) = clients[0].clone();
        let first = asking(&sira, &path, &body, 400);
        let mut tasks = vec![tokio::spawn(async move {
            answer_of(surface, &path, first).await
        })];
        // The others once the first leads (the provider has it).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while mock.requests().len() == before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tasks.extend((0..29).map(|i| {
            let (surface, path, body) = clients[i % 3].clone();
            let req = asking(&sira, &path, &body, 400);
            tokio::spawn(async move { answer_of(surface, &path, req).await })
        }));
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        assert_eq!(mock.requests().len() - before, 1, "stream: {stream}");
        let results: Vec<&str> = answers.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(results[0], "miss");
        assert!(results[1..].iter().all(|c| *c == "hit"), "{results:?}");
        assert!(
            answers.iter().all(|(_, text)| *text == answers[0].1),
            "{answers:?}"
        );
    }
    // Told apart still: an OpenAI stream without the usage chunk is another request (its
    // kept answer would lack the usage the others need).
    let mut hidden = three_clients("kept, stream true", true)[0].2.clone();
    hidden.as_object_mut().unwrap().remove("stream_options");
    let resp = asking(&sira, "/v1/chat/completions", &hidden, 0)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "x-sira-cache"), "miss");
    let received = receive(resp).await;
    assert!(
        !received.text.contains("\"completion_tokens\""),
        "{}",
        received.text
    );
}

/// `gpt-4o` served by an Anthropic provider (`ant`; an OpenAI one, `oai`, is there for
/// `more` models to use), with the memory cache.
fn anthropic_config(more: &str) -> String {
    format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"{{mock}}\"], api_key: sk-upstream }}\n  ant: {{ kind: anthropic, endpoints: [\"{{mock}}\"], api_key: sk-ant }}\ncache:\n{MEMORY}models:\n  gpt-4o:\n    targets: [{{ provider: ant, model: claude-sonnet-4-5 }}]\n{more}{}",
        keys_section()
    )
}

/// Where the answer is kept in a client's format other than the provider's, it is given
/// only to that format (a second translation would lose what the first did not carry); the
/// provider's own format then asks again, and its answer serves everyone. An entry whose
/// targets speak different formats is keyed on each client's own request.
#[tokio::test]
async fn answers_cross_formats_only_from_the_providers_own_format() {
    let mock = MockProvider::start();
    let mixed = "  mixed:\n    targets: [{ provider: ant, model: claude-sonnet-4-5 }, { provider: oai, model: gpt-4o }]\n";
    let sira = Sira::start(&anthropic_config(mixed), &mock.url());
    for stream in [false, true] {
        let before = mock.requests().len();
        let [chat, anthropic, gemini] = three_clients(&format!("order, stream {stream}"), stream);
        let mut results = Vec::new();
        for (surface, path, body) in [&chat, &anthropic, &chat, &gemini, &anthropic] {
            results.push(ask(&sira, *surface, path, body).await.0);
        }
        assert_eq!(
            results,
            ["miss", "miss", "hit", "hit", "hit"],
            "stream: {stream}"
        );
        assert_eq!(mock.requests().len() - before, 2, "stream: {stream}");
    }
    // Targets of two formats: a request is what its client sent, so the formats do not
    // share, and fields one target would drop still tell requests apart.
    let before = mock.requests().len();
    let [mut chat, mut anthropic, _] = three_clients("mixed", false);
    chat.1 = "/v1/chat/completions".into();
    chat.2["model"] = json!("mixed");
    anthropic.2["model"] = json!("mixed");
    assert_eq!(ask(&sira, chat.0, &chat.1, &chat.2).await.0, "miss");
    assert_eq!(
        ask(&sira, anthropic.0, &anthropic.1, &anthropic.2).await.0,
        "miss"
    );
    chat.2["seed"] = json!(7);
    assert_eq!(ask(&sira, chat.0, &chat.1, &chat.2).await.0, "miss");
    assert_eq!(mock.requests().len() - before, 3);
}

/// A third format, finding the answer kept in another client's format, still shares one
/// answer among its own identical requests: ten at once make one upstream call, and the
/// next is a hit.
#[tokio::test]
async fn a_third_format_shares_among_its_own_when_the_kept_answer_is_not_for_it() {
    let mock = MockProvider::start();
    let sira = Sira::start(&anthropic_config(""), &mock.url());
    let [chat, _, gemini] = three_clients("a third format", false);
    assert_eq!(ask(&sira, chat.0, &chat.1, &chat.2).await.0, "miss");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (surface, path, body) = gemini.clone();
            let req = asking(&sira, &path, &body, 300);
            tokio::spawn(async move { answer_of(surface, &path, req).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().0);
    }
    assert_eq!(
        results.iter().filter(|r| *r == "miss").count(),
        1,
        "{results:?}"
    );
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(ask(&sira, gemini.0, &gemini.1, &gemini.2).await.0, "hit");
    // The Chat client still has its own answer.
    assert_eq!(ask(&sira, chat.0, &chat.1, &chat.2).await.0, "hit");
    assert_eq!(mock.requests().len(), 2);
    // And a request that went to the provider names the provider that answered it.
    let log = sira.wait_access_log(13);
    assert!(log.iter().all(|l| l["provider"] == "ant"), "{log:?}");
}

/// An answer read back from Redis that does not translate into this client's format is
/// never given out as one: a JSON body is passed over (this client asks the provider), a
/// stream ends with the client format's error event, never its clean end.
#[tokio::test]
async fn a_kept_answer_that_does_not_translate_is_passed_over_or_broken_off() {
    let redis = Redis::start();
    let mock = MockProvider::start();
    let cache = redis_cache(&redis);
    let writer = Sira::start(&config(&cache, ""), &mock.url());
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    for stream in [false, true] {
        let [chat, anthropic, _] = three_clients(&format!("broken, stream {stream}"), stream);
        let before: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        assert_eq!(ask(&writer, chat.0, &chat.1, &chat.2).await.0, "miss");
        // Written to Redis in the background, a moment after the answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (after, kept) = loop {
            let after: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
            let kept: Vec<String> = after
                .iter()
                .filter(|k| !before.contains(k))
                .cloned()
                .collect();
            if !kept.is_empty() || std::time::Instant::now() > deadline {
                break (after, kept);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(kept.len(), 1, "{after:?}");
        // The entry's header kept, its body replaced by one no translation reads.
        let value: Vec<u8> = redis::cmd("GET").arg(&kept[0]).query(&mut conn).unwrap();
        let newline = value.iter().position(|&b| b == b'\n').unwrap();
        let mut broken = value[..=newline].to_vec();
        broken.extend_from_slice(if stream {
            b"data: {\"choices\": [oops\n\n".as_slice()
        } else {
            b"{\"choices\": [".as_slice()
        });
        let ttl: i64 = redis::cmd("PTTL").arg(&kept[0]).query(&mut conn).unwrap();
        let _: () = redis::cmd("SET")
            .arg(&kept[0])
            .arg(broken)
            .arg("PX")
            .arg(ttl)
            .query(&mut conn)
            .unwrap();

        // A host with nothing in memory reads it for an Anthropic client.
        let reader = Sira::start(&config(&cache, ""), &mock.url());
        let calls = mock.requests().len();
        let resp = asking(&reader, &anthropic.1, &anthropic.2, 0)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let result = header(&resp, "x-sira-cache");
        let text = receive(resp).await.text;
        if stream {
            assert_eq!(result, "hit");
            assert!(text.contains("event: error"), "{text}");
            assert!(!text.contains("message_stop"), "{text}");
            assert_eq!(mock.requests().len(), calls);
        } else {
            assert_eq!(result, "miss");
            let answer: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(answer["type"], "message", "{text}");
            assert_eq!(mock.requests().len(), calls + 1);
        }
    }
}
