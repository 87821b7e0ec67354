//! `kind: headers`: set and remove headers on the upstream request and the client response.
//!
//! ```yaml
//! filters:
//!   tag-upstream:
//!     kind: headers
//!     request:  { set: { x-team: platform }, remove: [x-debug] }
//!     response: { set: { cache-control: no-store }, remove: [openai-organization] }
//! ```

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::{Filter, FilterError, HeaderEdit};

/// The YAML form.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadersSpec {
    #[serde(default)]
    pub request: HeaderOpsSpec,
    #[serde(default)]
    pub response: HeaderOpsSpec,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsSpec {
    /// Headers to set, replacing any value already there.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Headers that carry framing or credentials. A filter changing them could desynchronise the
/// body length or leak/replace the provider key, so they are refused at config time.
const PROTECTED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
];

/// The compiled filter: header names and values parsed once.
#[derive(Debug)]
pub struct HeadersFilter {
    request: HeaderOps,
    response: HeaderOps,
}

#[derive(Debug, Default)]
struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeadersSpec {
    pub fn build(&self) -> Result<HeadersFilter, FilterError> {
        Ok(HeadersFilter {
            request: self.request.build()?,
            response: self.response.build()?,
        })
    }
}

impl HeaderOpsSpec {
    fn build(&self) -> Result<HeaderOps, FilterError> {
        let name = |raw: &str| -> Result<HeaderName, FilterError> {
            let name = HeaderName::from_bytes(raw.as_bytes())
                .map_err(|_| FilterError::InvalidHeaderName(raw.to_owned()))?;
            if PROTECTED.contains(&name.as_str()) {
                return Err(FilterError::ProtectedHeader(raw.to_owned()));
            }
            Ok(name)
        };
        let mut ops = HeaderOps::default();
        for (raw_name, raw_value) in &self.set {
            let value = HeaderValue::from_str(raw_value)
                .map_err(|_| FilterError::InvalidHeaderValue(raw_name.clone()))?;
            ops.set.push((name(raw_name)?, value));
        }
        for raw_name in &self.remove {
            ops.remove.push(name(raw_name)?);
        }
        Ok(ops)
    }
}

impl HeaderOps {
    fn apply(&self, headers: &mut dyn HeaderEdit) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.set(name, value);
        }
    }
}

impl Filter for HeadersFilter {
    fn on_upstream_request(&self, headers: &mut dyn HeaderEdit) {
        self.request.apply(headers);
    }

    fn on_client_response(&self, headers: &mut dyn HeaderEdit) {
        self.response.apply(headers);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::FilterSpec;

    struct Map(HeaderMap);

    impl HeaderEdit for Map {
        fn set(&mut self, name: &HeaderName, value: &HeaderValue) {
            self.0.insert(name.clone(), value.clone());
        }
        fn remove(&mut self, name: &HeaderName) {
            self.0.remove(name);
        }
    }

    fn filter(yaml: &str) -> std::sync::Arc<dyn Filter> {
        serde_yaml::from_str::<FilterSpec>(yaml)
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn sets_and_removes() {
        let f = filter(
            "kind: headers\nrequest: { set: { x-team: platform }, remove: [x-debug] }\nresponse: { set: { Cache-Control: no-store } }",
        );
        let mut req = Map(HeaderMap::new());
        req.0.insert("x-debug", HeaderValue::from_static("1"));
        req.0.insert("x-team", HeaderValue::from_static("old"));
        f.on_upstream_request(&mut req);
        assert_eq!(req.0.get("x-team").unwrap(), "platform");
        assert!(req.0.get("x-debug").is_none());

        let mut resp = Map(HeaderMap::new());
        f.on_client_response(&mut resp);
        assert_eq!(resp.0.get("cache-control").unwrap(), "no-store");
    }

    #[test]
    fn refuses_protected_and_invalid_headers() {
        let spec: FilterSpec =
            serde_yaml::from_str("kind: headers\nrequest: { set: { Authorization: x } }").unwrap();
        assert!(matches!(spec.build(), Err(FilterError::ProtectedHeader(_))));
        let spec: FilterSpec =
            serde_yaml::from_str("kind: headers\nrequest: { remove: [\"bad name\"] }").unwrap();
        assert!(matches!(
            spec.build(),
            Err(FilterError::InvalidHeaderName(_))
        ));
        let spec: FilterSpec =
            serde_yaml::from_str("kind: headers\nresponse: { set: { x-a: \"line\\nbreak\" } }")
                .unwrap();
        assert!(matches!(
            spec.build(),
            Err(FilterError::InvalidHeaderValue(_))
        ));
    }
}
