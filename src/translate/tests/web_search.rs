//! Hosted web search across formats: a client's `web_search` becomes the provider's own
//! search where the model entry allows it (Anthropic's server tool, Gemini's Google Search
//! grounding) and is dropped and listed otherwise; the provider's searches and citations come
//! back to Responses clients as `web_search_call` items and `url_citation` annotations.

use serde_json::{json, Value};

use super::*;
use crate::translate::{translate_request, RequestOptions};

fn opts(web_search: bool) -> RequestOptions<'static> {
    RequestOptions {
        model: "m",
        stream: false,
        default_max_tokens: 4096,
        legacy_max_tokens: false,
        prompt_cache: false,
        web_search,
        seal: crate::translate::Seal::fixed(),
    }
}

fn responses_turn(search: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": "m", "input": "what is new in rust?",
        "tools": [search, {"type": "function", "name": "shell", "parameters": {"type": "object"}}]
    }))
    .unwrap()
}

fn translated(
    from: Format,
    to: Format,
    body: &[u8],
    web_search: bool,
) -> (Value, Vec<&'static str>) {
    let t = translate_request(from, to, body, &opts(web_search)).unwrap();
    (serde_json::from_slice(&t.body).unwrap(), t.dropped)
}

#[test]
fn a_live_search_runs_as_anthropics_own_when_the_model_allows_it() {
    let body = responses_turn(json!({"type": "web_search",
        "filters": {"allowed_domains": ["docs.rs"]},
        "user_location": {"type": "approximate", "country": "FR", "city": "Lyon"}}));
    let (sent, dropped) = translated(Format::OpenAiResponses, Format::Anthropic, &body, true);
    let tools = sent["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 2, "{sent}");
    assert_eq!(
        tools[1],
        json!({"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["docs.rs"],
               "user_location": {"type": "approximate", "city": "Lyon", "country": "FR"}})
    );
    assert!(!dropped.contains(&"web_search"), "{dropped:?}");
    // Off for the model (the default): dropped and listed, never a failed turn.
    let (sent, dropped) = translated(Format::OpenAiResponses, Format::Anthropic, &body, false);
    assert_eq!(sent["tools"].as_array().unwrap().len(), 1);
    assert!(dropped.contains(&"web_search"));
}

#[test]
fn gemini_grounds_with_google_search_when_nothing_forbids_it() {
    let search_only = |search: Value| {
        serde_json::to_vec(&json!({"model": "m", "input": "news?", "tools": [search]})).unwrap()
    };
    let open = search_only(json!({"type": "web_search"}));
    let (sent, dropped) = translated(Format::OpenAiResponses, Format::Gemini, &open, true);
    assert_eq!(sent["tools"], json!([{"googleSearch": {}}]), "{sent}");
    assert!(!dropped.contains(&"web_search"));
    // Limited to some sites: Google Search has no such filter.
    let limited =
        search_only(json!({"type": "web_search", "filters": {"allowed_domains": ["docs.rs"]}}));
    let (sent, dropped) = translated(Format::OpenAiResponses, Format::Gemini, &limited, true);
    assert!(sent.get("tools").is_none(), "{sent}");
    assert!(dropped.contains(&"web_search"));
    // Beside function tools (every agent turn): Gemini 2.x refuses the mix.
    let agent = responses_turn(json!({"type": "web_search"}));
    let (sent, dropped) = translated(Format::OpenAiResponses, Format::Gemini, &agent, true);
    assert!(!sent.to_string().contains("googleSearch"), "{sent}");
    assert!(dropped.contains(&"web_search"));
}

#[test]
fn codex_cached_only_search_and_chat_targets_are_dropped() {
    // Codex's default asks for OpenAI's cached results only: nobody else has them.
    let cached = responses_turn(json!({"type": "web_search", "external_web_access": false}));
    for to in [Format::Anthropic, Format::Gemini, Format::OpenAiChat] {
        let (sent, dropped) = translated(Format::OpenAiResponses, to, &cached, true);
        assert!(dropped.contains(&"web_search"), "{to:?}");
        assert!(!sent.to_string().contains("googleSearch"), "{to:?}");
        assert!(!sent.to_string().contains("web_search_2025"), "{to:?}");
    }
    let live = responses_turn(json!({"type": "web_search_preview"}));
    let (_, dropped) = translated(Format::OpenAiResponses, Format::OpenAiChat, &live, true);
    assert!(dropped.contains(&"web_search"));
}

#[test]
fn chat_web_search_options_map_with_their_location() {
    let body = serde_json::to_vec(&json!({"model": "m",
        "messages": [{"role": "user", "content": "news?"}],
        "web_search_options": {"search_context_size": "low",
            "user_location": {"type": "approximate", "approximate": {"country": "DE", "timezone": "Europe/Berlin"}}}}))
    .unwrap();
    let (sent, _) = translated(Format::OpenAiChat, Format::Anthropic, &body, true);
    assert_eq!(
        sent["tools"][0],
        json!({"type": "web_search_20250305", "name": "web_search",
               "user_location": {"type": "approximate", "country": "DE", "timezone": "Europe/Berlin"}})
    );
}

#[test]
fn anthropics_search_in_a_history_reaches_another_provider_as_text() {
    let body = serde_json::to_vec(&json!({"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": "rust release?"},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "rust release"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                {"type": "web_search_result", "url": "https://blog.rust-lang.org/", "title": "Rust Blog", "encrypted_content": "Eq"}]},
            {"type": "text", "text": "1.90.", "citations": [{"type": "web_search_result_location",
                "url": "https://blog.rust-lang.org/", "title": "Rust Blog", "cited_text": "x", "encrypted_index": "E"}]}]},
        {"role": "user", "content": "thanks"}]}))
    .unwrap();
    let (sent, _) = translated(Format::Anthropic, Format::Gemini, &body, false);
    let text = sent["contents"][1].to_string();
    assert!(text.contains("[web search: rust release]"), "{text}");
    assert!(
        text.contains("Rust Blog <https://blog.rust-lang.org/>"),
        "{text}"
    );
    assert!(!text.contains("encrypted"), "{text}");
}

#[test]
fn searches_and_citations_reach_responses_clients_in_every_split() {
    // The streamed fixtures through the stream translator at every byte boundary give the
    // same items as the whole stream (the golden files hold the whole stream's events).
    for (from, name) in [
        (
            Format::Anthropic,
            "anthropic/messages_stream_web_search.sse",
        ),
        (Format::Gemini, "gemini/stream_grounded.sse"),
    ] {
        let body = read(&Path::new(FIXTURES).join(name));
        let whole = stream_items(from, &[&body[..]]);
        assert!(whole.contains("\"web_search_call\""), "{name}: {whole}");
        assert!(whole.contains("\"url_citation\""), "{name}: {whole}");
        assert!(whole.contains("rust 1.90 release date"), "{name}: {whole}");
        for cut in 1..body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(stream_items(from, &[a, b]), whole, "{name} cut at {cut}");
        }
    }
}

/// The `output` of the terminal event a Responses client gets for `chunks`.
fn stream_items(from: Format, chunks: &[&[u8]]) -> String {
    let mut t =
        crate::translate::StreamTranslator::new(from, Format::OpenAiResponses, opts_for_stream());
    let mut out = bytes::BytesMut::new();
    for chunk in chunks {
        t.feed(bytes::Bytes::copy_from_slice(chunk), &mut out)
            .unwrap();
    }
    t.finish(&mut out);
    let completed = frames(&out)
        .into_iter()
        .find(|(_, v)| v["type"] == "response.completed")
        .expect("response.completed");
    completed.1["response"]["output"].to_string()
}

fn opts_for_stream() -> crate::translate::ResponseOptions {
    super::opts()
}

fn frames(out: &[u8]) -> Vec<(Option<String>, Value)> {
    super::rules::frames(out)
}
