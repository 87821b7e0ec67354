//! `webhook`: an external guardrail asked about every request before a provider sees it.
//!
//! ```yaml
//! filters:
//!   guardrail:
//!     kind: webhook
//!     url: https://guard.internal/v1/check
//!     timeout: 500ms            # default 1s
//!     on_error: deny            # deny (default): 503 guardrail_unavailable | allow
//!     headers: { authorization: "Bearer ${GUARD_TOKEN}" }
//! ```
//!
//! The proxy POSTs `{"model", "key", "surface", "request"}` (the request body in the
//! client's format as the filters listed before this one left it — a `redact` filter
//! before it keeps values from the guardrail too; those after it edit what it answers) and
//! reads the verdict: `{"action": "allow"}`, `{"action":
//! "deny", "message": "…"}` (a 400 `content_policy_violation` in the client's shape), or
//! `{"action": "rewrite", "request": {…}}` (the body the provider gets instead). An
//! answer that is not one of those, a status other than 2xx, or no answer within
//! `timeout` is an error, handled per `on_error`.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use crate::{Filter, FilterError};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// A verdict is a few bytes; a rewrite is a request. Anything larger is not an answer.
pub const MAX_VERDICT: usize = 16 << 20;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    Allow,
    #[default]
    Deny,
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: String,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values are credentials.
        f.debug_struct("WebhookSpec")
            .field("url", &self.url)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

/// A compiled guardrail.
pub struct Webhook {
    pub url: String,
    pub timeout: Duration,
    pub on_error: OnError,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl WebhookSpec {
    pub fn build(&self) -> Result<Webhook, FilterError> {
        let invalid = |m: String| Err(FilterError::InvalidOption(m));
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return invalid("url: not an http:// or https:// URL".into());
        };
        if !matches!(scheme, "http" | "https") || rest.is_empty() {
            return invalid("url: not an http:// or https:// URL".into());
        }
        let timeout = match &self.timeout {
            None => DEFAULT_TIMEOUT,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() && d <= Duration::from_secs(60) => d,
                _ => {
                    return invalid(format!(
                        "timeout: {text:?} is not a duration from 1ms to 60s"
                    ))
                }
            },
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| FilterError::InvalidHeaderName(name.clone()))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| FilterError::InvalidHeaderValue(name.to_string()))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(Webhook {
            url: self.url.clone(),
            timeout,
            on_error: self.on_error,
            headers,
        })
    }
}

/// What the guardrail decided.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Allow,
    Deny(String),
    /// The request body to send instead (a JSON object).
    Rewrite(Vec<u8>),
}

const DEFAULT_DENIAL: &str = "the request was refused by the gateway's content policy";

impl Webhook {
    /// The guardrail's answer read; `Err` names what is wrong with it (never its content:
    /// it may quote the prompt).
    pub fn verdict(&self, status: u16, body: &[u8]) -> Result<Verdict, String> {
        if !(200..300).contains(&status) {
            return Err(format!("the guardrail answered {status}"));
        }
        let doc: Value =
            serde_json::from_slice(body).map_err(|_| "the guardrail's answer is not JSON")?;
        match doc.get("action").and_then(Value::as_str) {
            Some("allow") => Ok(Verdict::Allow),
            Some("deny") => Ok(Verdict::Deny(
                doc.get("message")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .unwrap_or(DEFAULT_DENIAL)
                    .chars()
                    .take(1000)
                    .collect(),
            )),
            Some("rewrite") => match doc.get("request") {
                Some(request @ Value::Object(_)) => serde_json::to_vec(request)
                    .map(Verdict::Rewrite)
                    .map_err(|_| "the guardrail's rewrite cannot be written".into()),
                _ => Err("the guardrail's rewrite has no `request` object".into()),
            },
            _ => Err("the guardrail's answer has no known `action`".into()),
        }
    }
}

impl Filter for Webhook {
    fn webhook(&self) -> Option<&Webhook> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> Webhook {
        serde_yaml::from_str::<WebhookSpec>("url: http://127.0.0.1:9/check\ntimeout: 200ms")
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn verdicts_are_read_strictly() {
        let h = hook();
        assert_eq!(h.timeout, Duration::from_millis(200));
        assert_eq!(h.verdict(200, br#"{"action":"allow"}"#), Ok(Verdict::Allow));
        assert_eq!(
            h.verdict(200, br#"{"action":"deny","message":"no"}"#),
            Ok(Verdict::Deny("no".into()))
        );
        assert_eq!(
            h.verdict(200, br#"{"action":"rewrite","request":{"model":"m"}}"#),
            Ok(Verdict::Rewrite(br#"{"model":"m"}"#.to_vec()))
        );
        assert!(h.verdict(500, br#"{"action":"allow"}"#).is_err());
        assert!(h.verdict(200, b"yes").is_err());
        assert!(h
            .verdict(200, br#"{"action":"rewrite","request":"x"}"#)
            .is_err());
        assert!(h.verdict(200, br#"{"action":"maybe"}"#).is_err());
    }

    #[test]
    fn bad_specs_are_refused() {
        for yaml in [
            "url: ftp://x",
            "url: http://x\ntimeout: 0s",
            "url: http://x\ntimeout: soon",
            "url: http://x\nheaders: { \"bad name\": v }",
        ] {
            assert!(
                serde_yaml::from_str::<WebhookSpec>(yaml)
                    .unwrap()
                    .build()
                    .is_err(),
                "{yaml}"
            );
        }
    }

    #[test]
    fn credentials_never_print() {
        let spec: WebhookSpec =
            serde_yaml::from_str("url: http://x\nheaders: { authorization: Bearer s3cret }")
                .unwrap();
        assert!(!format!("{spec:?} {:?}", spec.build().unwrap()).contains("s3cret"));
    }
}
