//! The calls to operators' `webhook` guardrails (`lua_free_filters::webhook`), made where
//! each stands among the client-side filters: it is asked about the body the filters before
//! it left, and the filters after it edit what it answered.
//! A guardrail may allow, deny (a 400 in the client's shape) or rewrite the request; one
//! that fails is skipped or refuses the request, as its `on_error` says.

use std::sync::{Arc, LazyLock};

use bytes::{BufMut, Bytes, BytesMut};
use lua_free_filters::webhook::{OnError, Verdict, Webhook, MAX_VERDICT};
use lua_free_filters::Filter;

use crate::error::GatewayError;

/// Who asks, for the guardrail's payload.
pub struct Asked {
    pub model: String,
    pub key: String,
    pub surface: &'static str,
}

/// One client for every guardrail: connections are pooled across requests.
static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
});

/// Asks each guardrail in turn about `request`; the body to send instead when one
/// rewrote it.
pub async fn ask_all(
    hooks: &[Arc<dyn Filter>],
    asked: &Asked,
    mut request: Bytes,
) -> Result<Option<Bytes>, GatewayError> {
    let mut rewritten = false;
    for hook in hooks {
        let Some(webhook) = hook.webhook() else {
            continue;
        };
        match ask(webhook, asked, &request).await {
            Ok(Verdict::Allow) => {}
            Ok(Verdict::Deny(message)) => {
                crate::metrics::metrics()
                    .filter_denied
                    .with_label_values(&[asked.key.as_str()])
                    .inc();
                return Err(GatewayError::ContentDenied(message));
            }
            Ok(Verdict::Rewrite(body)) => {
                request = Bytes::from(body);
                rewritten = true;
            }
            Err(reason) => match webhook.on_error {
                OnError::Allow => {
                    tracing::warn!(guardrail = host(webhook), %reason, "a guardrail failed; the request goes on unchecked (on_error: allow)");
                }
                OnError::Deny => {
                    tracing::warn!(guardrail = host(webhook), %reason, "a guardrail failed; the request is refused (on_error: deny)");
                    return Err(GatewayError::GuardrailUnavailable(reason));
                }
            },
        }
    }
    Ok(rewritten.then_some(request))
}

async fn ask(webhook: &Webhook, asked: &Asked, request: &Bytes) -> Result<Verdict, String> {
    let call = async {
        let mut post = CLIENT
            .post(&webhook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(payload(asked, request));
        for (name, value) in &webhook.headers {
            post = post.header(name, value);
        }
        let mut response = post
            .send()
            .await
            .map_err(|e| kind_of(&e, "the guardrail could not be reached"))?;
        let status = response.status().as_u16();
        let mut body = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| kind_of(&e, "the guardrail's answer broke off"))?
        {
            if body.len() + chunk.len() > MAX_VERDICT {
                return Err("the guardrail's answer is too large".to_owned());
            }
            body.put_slice(&chunk);
        }
        webhook.verdict(status, &body)
    };
    match tokio::time::timeout(webhook.timeout, call).await {
        Ok(verdict) => verdict,
        Err(_) => Err(format!(
            "the guardrail did not answer within {}ms",
            webhook.timeout.as_millis()
        )),
    }
}

/// `{"model", "key", "surface", "request"}`, the request spliced in as the client sent it.
fn payload(asked: &Asked, request: &Bytes) -> Vec<u8> {
    let head = serde_json::json!({
        "model": asked.model,
        "key": asked.key,
        "surface": asked.surface,
    })
    .to_string();
    let mut out = Vec::with_capacity(head.len() + request.len() + 16);
    // `head` is a JSON object: its closing brace gives way to the request field.
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"request\":");
    out.extend_from_slice(request);
    out.push(b'}');
    out
}

/// The guardrail's host, for logs: its URL may carry a credential.
fn host(webhook: &Webhook) -> String {
    reqwest::Url::parse(&webhook.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What went wrong, by kind: a reqwest error's text can quote the URL.
fn kind_of(e: &reqwest::Error, what: &str) -> String {
    if e.is_timeout() {
        format!("{what} (timed out)")
    } else if e.is_connect() {
        format!("{what} (connection failed)")
    } else {
        what.to_owned()
    }
}
