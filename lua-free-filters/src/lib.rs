//! Filters that other gateways make operators write in Lua, compiled into sira and configured
//! from YAML.
//!
//! A filter is declared once under `filters:` in sira's config, with a `kind` that selects its
//! implementation, and attached by name to models or API keys. The proxy calls every attached
//! filter at fixed points of a request: on the headers it sends upstream and on the headers it
//! returns to the client. Specs are typed: an unknown `kind` or a misspelt option is a config
//! error with a path, never something discovered at request time.
//!
//! # Layout
//! - [`headers`]: set and remove request/response headers.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

pub mod headers;

/// Mutable access to a header map, implemented by the proxy for its request and response
/// header types (which keep header-name case alongside the map and must stay in sync).
pub trait HeaderEdit {
    /// Replaces every value of `name` with `value`.
    fn set(&mut self, name: &HeaderName, value: &HeaderValue);
    /// Removes every value of `name`.
    fn remove(&mut self, name: &HeaderName);
}

/// Why a filter rejected or could not process a request.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    #[error("invalid value for header {0:?}")]
    InvalidHeaderValue(String),
    #[error("header {0:?} is managed by sira and cannot be changed by a filter")]
    ProtectedHeader(String),
}

/// A compiled filter. Every method has a no-op default so a filter implements only the
/// phases it acts on.
pub trait Filter: Send + Sync + fmt::Debug {
    /// Runs on the request headers about to be sent upstream, after sira has set the
    /// provider's own headers (so a filter can override them, but not the credentials).
    fn on_upstream_request(&self, _headers: &mut dyn HeaderEdit) {}

    /// Runs on the response headers about to be sent to the client.
    fn on_client_response(&self, _headers: &mut dyn HeaderEdit) {}
}

/// One entry of the `filters:` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FilterSpec {
    /// Set or remove headers on the upstream request and the client response.
    Headers(headers::HeadersSpec),
}

impl FilterSpec {
    /// Validates the spec and compiles it into a filter.
    pub fn build(&self) -> Result<Arc<dyn Filter>, FilterError> {
        match self {
            FilterSpec::Headers(spec) => Ok(Arc::new(spec.build()?)),
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
