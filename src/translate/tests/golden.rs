//! Golden tests over the recorded fixtures: every request fixture to every other format, every
//! response and stream fixture to every client format, every error body.

use serde_json::{json, Value};

use super::*;
use crate::translate::{translate_error, translate_request, translate_response, RequestOptions};

#[test]
fn requests() {
    let mut golden = Golden::default();
    for from in FORMATS {
        for fx in fixtures(from, "requests", "json") {
            let body = read(&fx.path);
            let stream = match from {
                // Gemini streams by URL method; the fixtures say so in their names.
                Format::Gemini => fx.name.starts_with("stream"),
                _ => serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["stream"].as_bool())
                    .unwrap_or(false),
            };
            let opts = RequestOptions {
                model: "upstream-model",
                stream,
                default_max_tokens: 4096,
                legacy_max_tokens: false,
                prompt_cache: true,
                web_search: false,
                seal: crate::translate::Seal::fixed(),
            };
            for to in FORMATS.into_iter().filter(|t| *t != from) {
                let actual = match translate_request(from, to, &body, &opts) {
                    Ok(t) => json!({
                        "dropped": t.dropped,
                        "body": serde_json::from_slice::<Value>(&t.body).unwrap(),
                    }),
                    Err(e) => json!({ "error": e.to_string(), "param": e.param() }),
                };
                golden.json(
                    &format!("requests/{}/{}.json", pair(from, to), fx.name),
                    &actual,
                );
            }
        }
    }
    golden.finish();
}

#[test]
fn responses() {
    let mut golden = Golden::default();
    for from in FORMATS {
        let mut usage = UsageMap::new();
        for fx in fixtures(from, "", "json")
            .into_iter()
            .filter(|f| !f.name.contains("error_"))
        {
            let body = read(&fx.path);
            for to in FORMATS.into_iter().filter(|t| *t != from) {
                let actual = match translate_response(from, to, &body, &opts()) {
                    Ok(t) => {
                        usage.insert(fx.name.clone(), usage_json(&t.usage));
                        serde_json::from_slice::<Value>(&t.body).unwrap()
                    }
                    Err(e) => json!({ "error": e.to_string() }),
                };
                golden.json(&format!("{}/{}.json", pair(from, to), fx.name), &actual);
            }
        }
        golden.json(
            &format!("usage/{}.json", from.as_str()),
            &serde_json::to_value(&usage).unwrap(),
        );
    }
    golden.finish();
}

#[test]
fn streams() {
    let mut golden = Golden::default();
    for from in FORMATS {
        let mut usage = UsageMap::new();
        for fx in fixtures(from, "", "sse") {
            let body = read(&fx.path);
            for to in FORMATS.into_iter().filter(|t| *t != from) {
                let (out, u) = run_stream(from, to, [&body[..]]);
                usage.insert(fx.name.clone(), usage_json(&u));
                golden.sse(&format!("{}/{}.sse", pair(from, to), fx.name), &out);
            }
        }
        golden.json(
            &format!("usage/{}_stream.json", from.as_str()),
            &serde_json::to_value(&usage).unwrap(),
        );
    }
    golden.finish();
}

#[test]
fn errors() {
    let mut golden = Golden::default();
    for from in FORMATS {
        for fx in fixtures(from, "", "json")
            .into_iter()
            .filter(|f| f.name.contains("error_"))
        {
            let body = read(&fx.path);
            // error_<status>_… in every fixture name.
            let status: u16 = fx
                .name
                .rsplit("error_")
                .next()
                .and_then(|s| s.split('_').next())
                .and_then(|s| s.parse().ok())
                .unwrap();
            for to in FORMATS.into_iter().filter(|t| *t != from) {
                let t = translate_error(from, to, status, &body);
                let actual = json!({ "status": t.status, "body": serde_json::from_slice::<Value>(&t.body).unwrap() });
                golden.json(
                    &format!("errors/{}/{}.json", pair(from, to), fx.name),
                    &actual,
                );
            }
        }
    }
    golden.finish();
}

#[test]
fn same_format_is_identity() {
    for from in FORMATS {
        for fx in fixtures(from, "", "sse") {
            let body = read(&fx.path);
            let (out, _) = run_stream(from, from, [&body[..]]);
            assert_eq!(&out[..], &body[..], "{}", fx.name);
        }
        for fx in fixtures(from, "", "json")
            .into_iter()
            .filter(|f| !f.name.contains("error_"))
        {
            let body = read(&fx.path);
            let t = translate_response(from, from, &body, &opts()).unwrap();
            assert_eq!(t.body, body, "{}", fx.name);
        }
    }
}
