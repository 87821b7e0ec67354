//! Injected HTTP errors and bad knob values.

use crate::client::*;
use sira_mock::MockProvider;

const CHAT: &str = r#"{"model":"m","messages":[]}"#;

#[tokio::test]
async fn status_knob_serves_the_recorded_error() {
    let mock = MockProvider::start();
    let cases = [
        ("/v1/messages", "529", "anthropic/error_529_overloaded.json"),
        ("/v1/messages", "429", "anthropic/error_429_rate_limit.json"),
        (
            "/v1/chat/completions",
            "429",
            "openai/error_429_rate_limit_exceeded.json",
        ),
        (
            "/v1/chat/completions",
            "500",
            "openai/error_500_server_error.json",
        ),
        (
            "/v1/responses",
            "401",
            "openai_responses/error_401_invalid_api_key.json",
        ),
        (
            "/v1/responses",
            "429",
            "openai/error_429_rate_limit_exceeded.json",
        ),
        (
            "/v1beta/models/g:generateContent",
            "429",
            "gemini/error_429_resource_exhausted.json",
        ),
        (
            "/v1beta/models/g:streamGenerateContent?alt=sse",
            "503",
            "gemini/error_503_unavailable.json",
        ),
        (
            "/openai/deployments/d/chat/completions?api-version=1",
            "400",
            "azure/error_400_content_filter.json",
        ),
        (
            "/openai/deployments/d/chat/completions?api-version=1",
            "429",
            "openai/error_429_rate_limit_exceeded.json",
        ),
    ];
    for (path, status, fixture_path) in cases {
        // Even a stream request gets a plain JSON error, as every provider does before a stream starts.
        let body = r#"{"model":"m","stream":true,"messages":[]}"#;
        let r = post(mock.addr(), path, &[("x-mock-status", status)], body).await;
        assert_eq!(r.status.to_string(), status, "{path}");
        assert_eq!(&r.body[..], fixture(fixture_path), "{path} {status}");
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
    }
}

#[tokio::test]
async fn synthesized_errors_have_the_provider_shape() {
    let mock = MockProvider::start();
    let r = post(
        mock.addr(),
        "/v1/messages",
        &[("x-mock-status", "503"), ("x-mock-retry-after", "7")],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("7"));
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));
    let v = post(
        mock.addr(),
        "/v1/chat/completions",
        &[("x-mock-status", "503")],
        CHAT,
    )
    .await
    .json();
    assert_eq!(v["error"]["type"], "service_unavailable_error");
    assert_eq!(v["error"]["code"], "server_is_overloaded");
    let v = post(
        mock.addr(),
        "/v1beta/models/g:generateContent",
        &[("x-mock-status", "504")],
        "{}",
    )
    .await
    .json();
    assert_eq!(
        (v["error"]["code"].as_u64(), v["error"]["status"].as_str()),
        (Some(504), Some("DEADLINE_EXCEEDED"))
    );
}

#[tokio::test]
async fn error_knob_picks_fixture_or_raw_json() {
    let mock = MockProvider::start();
    let r = post(
        mock.addr(),
        "/v1/chat/completions",
        &[("x-mock-error", "openai/error_429_insufficient_quota.json")],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 429, "status from the fixture name");
    assert_eq!(
        &r.body[..],
        fixture("openai/error_429_insufficient_quota.json")
    );
    let r = post(
        mock.addr(),
        "/v1/messages",
        &[("x-mock-error", "error_401_authentication_legacy")],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 401, "name relative to the provider's directory");
    let raw = r#"{"error":{"message":"custom","type":"x","param":null,"code":null}}"#;
    let r = post(
        mock.addr(),
        "/v1/chat/completions",
        &[("x-mock-error", raw), ("x-mock-status", "418")],
        CHAT,
    )
    .await;
    assert_eq!((r.status, r.text()), (418, raw.to_owned()));
    let r = post(
        mock.addr(),
        "/v1/chat/completions",
        &[("x-mock-error", raw)],
        CHAT,
    )
    .await;
    assert_eq!(r.status, 500, "raw JSON without a status is a 500");
}

#[tokio::test]
async fn bad_knobs_are_400_naming_the_knob() {
    let mock = MockProvider::start();
    let cases: [(&str, &str, &str); 8] = [
        ("x-mock-events", "-1", "x-mock-events"),
        ("x-mock-events", "1000000", "x-mock-events"),
        ("x-mock-delay-ms", "soon", "x-mock-delay-ms"),
        ("x-mock-hang-ms", "never", "x-mock-hang-ms"),
        ("x-mock-status", "42", "x-mock-status"),
        ("x-mock-split", "lines", "x-mock-split"),
        ("x-mock-fixture", "openai/nope.sse", "x-mock-fixture"),
        ("x-mock-tool-args", "[1]", "x-mock-tool-args"),
    ];
    for (name, value, needle) in cases {
        let r = post(mock.addr(), "/v1/chat/completions", &[(name, value)], CHAT).await;
        assert_eq!(r.status, 400, "{name}: {value}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(needle), "{msg}");
    }
    let r = post(mock.addr(), "/v1/messages", &[("x-mock-events", "x")], CHAT).await;
    assert_eq!(
        r.json()["error"]["type"],
        "invalid_request_error",
        "Anthropic shape"
    );
}
