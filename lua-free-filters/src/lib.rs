//! Filters that other gateways make operators write in Lua, compiled into sira and configured
//! from YAML.
//!
//! A filter is declared once under `filters:` in sira's config, with a `kind` that selects its
//! implementation, and attached by name to models or API keys. The proxy runs every attached
//! filter as part of its chain of phases, at fixed points of a request: the headers it sends
//! upstream, the request body, the headers it returns to the client, a response body, each
//! event of a streamed response. A filter implements the hooks it needs ([`Filter`]); specs
//! are typed, so an unknown `kind` or a misspelt option is a config error with a path, never
//! something discovered at request time.
//!
//! Body hooks see JSON in one format: the client's (before a request is translated, after a
//! response is: [`Side::Client`], the default) or the provider's (`at: provider`).
//!
//! # Layout
//! - [`headers`]: set and remove request/response headers.
//! - [`fields`]: set, remove and clamp fields of JSON bodies (`set-field`, `remove-field`,
//!   `clamp`), with [`path`] for the field paths.
//! - [`deny`]: refuse requests whose text matches patterns or keywords (`deny`).
//! - [`ip`]: who may call, by address (`ip-allow`, `ip-deny`).
//! - [`prompt`]: refuse prompts estimated over a bound (`max-prompt-tokens`).
//! - [`redact`]: replace sensitive values in requests, answers and streams (`redact`).
//! - [`rewrite`]: send a key's requests for one model to another (`model-rewrite`).
//! - [`webhook`]: ask an external guardrail about each request (`webhook`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

pub mod deny;
mod event;
pub mod fields;
pub mod headers;
pub mod ip;
pub mod json_bytes;
pub mod path;
pub mod prompt;
pub mod redact;
pub mod rewrite;
pub mod webhook;

/// Mutable access to a header map, implemented by the proxy for its request and response
/// header types (which keep header-name case alongside the map and must stay in sync).
pub trait HeaderEdit {
    /// Replaces every value of `name` with `value`.
    fn set(&mut self, name: &HeaderName, value: &HeaderValue);
    /// Removes every value of `name`.
    fn remove(&mut self, name: &HeaderName);
}

/// Why a filter rejected a config, or a request or response at run time.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    #[error("invalid value for header {0:?}")]
    InvalidHeaderValue(String),
    #[error("header {0:?} is managed by sira and cannot be changed by a filter")]
    ProtectedHeader(String),
    /// A field path in the config is not valid where it is used.
    #[error("invalid field path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// An option is out of range or contradicts another.
    #[error("{0}")]
    InvalidOption(String),
    /// A body the filter must edit is not what it can edit (not a JSON object).
    #[error("the body cannot be filtered: {0}")]
    Body(String),
    /// The request is refused by policy (`deny`); the message is what the client is told.
    #[error("{0}")]
    Denied(String),
    /// The prompt is estimated over the filter's bound (`max-prompt-tokens`).
    #[error("{0}")]
    PromptTooLong(String),
    /// The client's address is not allowed (`ip-allow`, `ip-deny`).
    #[error("this client address may not use this gateway")]
    AddressDenied,
}

/// A body as JSON (a request, or an answer the response filters read), for the filters
/// that read its text.
pub(crate) fn json_body(body: &[u8]) -> Result<serde_json::Value, FilterError> {
    serde_json::from_slice(body).map_err(|_| FilterError::Body("the body is not JSON".into()))
}

/// Calls `f` on every string value of `value` (not on object keys: those are the format's,
/// not the text), in document order, until it returns `true`; whether it did.
pub(crate) fn any_string(value: &serde_json::Value, f: &mut dyn FnMut(&str) -> bool) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => f(text),
        Value::Array(items) => items.iter().any(|v| any_string(v, f)),
        Value::Object(fields) => fields.values().any(|v| any_string(v, f)),
        _ => false,
    }
}

/// What filters remember of one request between its request and its answer: the
/// placeholders `redact` put in the request, to restore them in the answer.
#[derive(Clone, Default)]
pub struct Memo {
    /// (placeholder, original value), in the order they were made.
    placeholders: Vec<(String, String)>,
    /// Indexes into `placeholders`, by value and by placeholder: built once there are more
    /// than [`SCANNED`] (a request has a handful; hashing them would cost more than
    /// comparing them, and every answer clones the memo).
    index: Option<Box<MemoIndex>>,
    /// Placeholder-like text the client sent itself: never given to a value.
    reserved: Vec<String>,
}

#[derive(Clone, Default)]
struct MemoIndex {
    by_value: std::collections::HashMap<String, usize>,
    by_placeholder: std::collections::HashMap<String, usize>,
}

/// Placeholders looked up by comparison, before an index is built.
const SCANNED: usize = 16;

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the values: they are what redaction hides.
        write!(f, "Memo({} placeholders)", self.placeholders.len())
    }
}

impl Memo {
    fn placeholder_of(&self, value: &str) -> Option<&str> {
        let i = match &self.index {
            Some(index) => *index.by_value.get(value)?,
            None => self.placeholders.iter().position(|(_, v)| v == value)?,
        };
        self.placeholders.get(i).map(|(p, _)| p.as_str())
    }

    fn original(&self, placeholder: &str) -> Option<&str> {
        let i = match &self.index {
            Some(index) => *index.by_placeholder.get(placeholder)?,
            None => self
                .placeholders
                .iter()
                .position(|(p, _)| p == placeholder)?,
        };
        self.placeholders.get(i).map(|(_, v)| v.as_str())
    }

    fn remember(&mut self, placeholder: String, value: String) {
        self.placeholders.push((placeholder, value));
        if self.placeholders.len() <= SCANNED {
            return;
        }
        let index = self.index.get_or_insert_with(|| {
            let mut index = Box::<MemoIndex>::default();
            // The first SCANNED, indexed now; the one just pushed below.
            for (i, (p, v)) in self.placeholders[..SCANNED].iter().enumerate() {
                index.by_value.entry(v.clone()).or_insert(i);
                index.by_placeholder.entry(p.clone()).or_insert(i);
            }
            index
        });
        let i = self.placeholders.len() - 1;
        let (p, v) = &self.placeholders[i];
        index.by_value.entry(v.clone()).or_insert(i);
        index.by_placeholder.entry(p.clone()).or_insert(i);
    }
}

/// Which format a filter's body hooks see.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The client's: requests before translation, responses after.
    #[default]
    Client,
    /// The provider's: requests after translation.
    Provider,
}

/// A compiled filter. Every method has a no-op default so a filter implements only the
/// hooks it acts on; the `edits_*` answers let the proxy skip body work (a parse, a buffer)
/// for filters that would not use it.
pub trait Filter: Send + Sync + fmt::Debug {
    /// The format the body hooks see.
    fn side(&self) -> Side {
        Side::Client
    }

    /// Runs on the request headers about to be sent upstream, after sira has set the
    /// provider's own headers (so a filter can override them, but not the credentials).
    fn on_upstream_request(&self, _headers: &mut dyn HeaderEdit) {}

    /// Runs on the response headers about to be sent to the client.
    fn on_client_response(&self, _headers: &mut dyn HeaderEdit) {}

    /// Whether [`Filter::on_client`] does anything.
    fn checks_client(&self) -> bool {
        false
    }

    /// Runs first, on who is calling: the peer's address and the request's
    /// `X-Forwarded-For`. An error refuses the request with a 403.
    fn on_client(
        &self,
        _peer: std::net::IpAddr,
        _forwarded_for: Option<&str>,
    ) -> Result<(), FilterError> {
        Ok(())
    }

    /// Whether [`Filter::rewrite_model`] does anything.
    fn rewrites_model(&self) -> bool {
        false
    }

    /// Runs before the model is resolved, on the name the client asked for; `Some` routes
    /// the request to another name instead.
    fn rewrite_model(&self, _model: &str) -> Option<String> {
        None
    }

    /// An external guardrail to ask about the request (`webhook`): the proxy makes the
    /// call, after the filters' own request-body hooks.
    fn webhook(&self) -> Option<&webhook::Webhook> {
        None
    }

    /// Whether [`Filter::on_request_body`] does anything.
    fn edits_request_body(&self) -> bool {
        false
    }

    /// Whether [`Filter::on_request_body`] changes only the text inside string values of a
    /// JSON body (the gateway reads a request as JSON before any filter): never a key, a
    /// number, the nesting, or the format's own fields (`model`, ids). The gateway then keeps what it read of the body instead of reading
    /// it again.
    fn edits_only_texts(&self) -> bool {
        false
    }

    /// Runs on the request body (JSON, in the format of [`Filter::side`]); `Some` replaces
    /// it. An error refuses the request with a 400 naming the filter's reason. What the
    /// answer's hooks need to know of the request goes in `memo`.
    fn on_request_body(
        &self,
        _body: &[u8],
        _memo: &mut Memo,
    ) -> Result<Option<Vec<u8>>, FilterError> {
        Ok(None)
    }

    /// Whether [`Filter::on_request_tree`] stands for [`Filter::on_request_body`]: a filter
    /// that reads the body as a tree anyway. The gateway parses a body once for a run of
    /// such filters and writes it once after them, where each would parse (and write) it
    /// again.
    fn edits_request_tree(&self) -> bool {
        false
    }

    /// [`Filter::on_request_body`] on the parsed body (any JSON value: a filter that needs
    /// an object says so); whether it changed it. A body that is not JSON never gets here:
    /// it goes to [`Filter::on_request_body`], which judges it as it always does.
    fn on_request_tree(&self, _doc: &mut serde_json::Value) -> Result<bool, FilterError> {
        Ok(false)
    }

    /// Whether [`Filter::on_response_body`] and [`Filter::on_stream`] do anything.
    fn edits_response_body(&self) -> bool {
        false
    }

    /// Runs on a whole JSON response in the client's format, before it is sent; `Some`
    /// replaces it.
    fn on_response_body(&self, _body: &[u8], _memo: &Memo) -> Result<Option<Vec<u8>>, FilterError> {
        Ok(None)
    }

    /// A state for one streamed response, which then sees each of its events in the
    /// client's format. `None`: the filter leaves streams alone.
    fn on_stream(&self, _memo: &Memo) -> Option<Box<dyn StreamFilter>> {
        None
    }
}

/// A filter's state for one streamed response.
pub trait StreamFilter: Send {
    /// One SSE frame (its blank line included): push what goes on instead — the frame
    /// itself, another, several, or nothing to drop it.
    fn on_event(&mut self, frame: Bytes, out: &mut Vec<Bytes>) -> Result<(), FilterError>;

    /// The stream ended cleanly: push anything held back.
    fn on_end(&mut self, _out: &mut Vec<Bytes>) {}
}

/// One entry of the `filters:` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FilterSpec {
    /// Set or remove headers on the upstream request and the client response.
    Headers(headers::HeadersSpec),
    /// Set fields of the request body.
    SetField(fields::SetFieldSpec),
    /// Remove fields of the request body, the response, or each stream event.
    RemoveField(fields::RemoveFieldSpec),
    /// Keep numeric fields of the request body within bounds.
    Clamp(fields::ClampSpec),
    /// Refuse requests whose text matches patterns or keywords.
    Deny(deny::DenySpec),
    /// Only clients from these addresses.
    IpAllow(ip::IpSpec),
    /// No clients from these addresses.
    IpDeny(ip::IpSpec),
    /// Refuse prompts estimated over a number of tokens.
    MaxPromptTokens(prompt::MaxPromptSpec),
    /// Replace sensitive values in requests and answers.
    Redact(redact::RedactSpec),
    /// Route a key's requests for one model to another.
    ModelRewrite(rewrite::ModelRewriteSpec),
    /// Ask an external guardrail.
    Webhook(webhook::WebhookSpec),
}

impl FilterSpec {
    /// Validates the spec and compiles it into a filter.
    pub fn build(&self) -> Result<Arc<dyn Filter>, FilterError> {
        match self {
            FilterSpec::Headers(spec) => Ok(Arc::new(spec.build()?)),
            FilterSpec::SetField(spec) => Ok(Arc::new(spec.build()?)),
            FilterSpec::RemoveField(spec) => Ok(Arc::new(spec.build()?)),
            FilterSpec::Clamp(spec) => Ok(Arc::new(spec.build()?)),
            FilterSpec::Deny(spec) => Ok(Arc::new(spec.build()?)),
            FilterSpec::IpAllow(spec) => Ok(Arc::new(spec.build(true)?)),
            FilterSpec::IpDeny(spec) => Ok(Arc::new(spec.build(false)?)),
            FilterSpec::MaxPromptTokens(spec) => Ok(Arc::new(spec.build()?)),
            FilterSpec::Redact(spec) => Ok(Arc::new(spec.build()?)),
            FilterSpec::ModelRewrite(spec) => Ok(Arc::new(spec.build()?)),
            FilterSpec::Webhook(spec) => Ok(Arc::new(spec.build()?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kind_is_rejected() {
        let err = serde_yaml::from_str::<FilterSpec>("kind: lua\nscript: x").unwrap_err();
        assert!(err.to_string().contains("unknown variant `lua`"), "{err}");
    }

    #[test]
    fn misspelt_option_is_rejected() {
        let err = serde_yaml::from_str::<FilterSpec>("kind: headers\nrequets: {}").unwrap_err();
        assert!(err.to_string().contains("unknown field `requets`"), "{err}");
    }
}
