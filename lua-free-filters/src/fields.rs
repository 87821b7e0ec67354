//! `set-field`, `remove-field` and `clamp`: edits of JSON bodies.
//!
//! ```yaml
//! filters:
//!   pin-sampling:
//!     kind: set-field
//!     fields: { temperature: 0.2, "metadata.team": platform }
//!     replace: true          # also over a value the client sent (default)
//!     at: client             # before translation, in the client's format (default)
//!   no-user-ids:
//!     kind: remove-field
//!     fields: [user, "metadata.user_id"]
//!   hide-fingerprints:
//!     kind: remove-field
//!     fields: [system_fingerprint]
//!     on: [response]         # whole answers and every stream event, as the client gets them
//!   cap-output:
//!     kind: clamp
//!     field: max_tokens
//!     max: 4096
//!     at: provider           # after translation, in the provider's format
//! ```
//!
//! A body that is not a JSON object is left alone by `remove-field` and `clamp` and refused
//! by `set-field`, which cannot honour its promise on it.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::event::Frame;
use crate::path::FieldPath;
use crate::{Filter, FilterError, Side, StreamFilter};

fn yes() -> bool {
    true
}

/// The YAML form of `set-field`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SetFieldSpec {
    /// Field path → JSON value.
    pub fields: BTreeMap<String, Value>,
    #[serde(default)]
    pub at: Side,
    /// Replace a value the client sent; `false` sets only absent fields (a default).
    #[serde(default = "yes")]
    pub replace: bool,
}

/// Where `remove-field` applies.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Request,
    Response,
}

fn request_only() -> Vec<Direction> {
    vec![Direction::Request]
}

/// The YAML form of `remove-field`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoveFieldSpec {
    pub fields: Vec<String>,
    #[serde(default)]
    pub at: Side,
    /// `request` (default), `response`, or both.
    #[serde(default = "request_only")]
    pub on: Vec<Direction>,
}

/// The YAML form of `clamp`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClampSpec {
    pub field: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub at: Side,
}

#[derive(Debug)]
pub struct SetField {
    fields: Vec<(FieldPath, Value)>,
    at: Side,
    replace: bool,
}

#[derive(Debug)]
pub struct RemoveField {
    fields: Vec<FieldPath>,
    at: Side,
    request: bool,
    response: bool,
}

#[derive(Debug)]
pub struct Clamp {
    field: FieldPath,
    min: Option<f64>,
    max: Option<f64>,
    at: Side,
}

impl SetFieldSpec {
    pub fn build(&self) -> Result<SetField, FilterError> {
        if self.fields.is_empty() {
            return Err(FilterError::InvalidOption(
                "fields: name at least one".into(),
            ));
        }
        let mut fields = Vec::new();
        for (text, value) in &self.fields {
            let path = FieldPath::parse(text)?;
            if !path.is_exact() {
                return Err(FilterError::InvalidPath {
                    path: text.clone(),
                    reason: "`*` cannot be set",
                });
            }
            fields.push((path, value.clone()));
        }
        Ok(SetField {
            fields,
            at: self.at,
            replace: self.replace,
        })
    }
}

impl RemoveFieldSpec {
    pub fn build(&self) -> Result<RemoveField, FilterError> {
        if self.fields.is_empty() {
            return Err(FilterError::InvalidOption(
                "fields: name at least one".into(),
            ));
        }
        let response = self.on.contains(&Direction::Response);
        if response && self.at == Side::Provider {
            return Err(FilterError::InvalidOption(
                "responses are filtered as the client gets them: `on: [response]` needs `at: client`"
                    .into(),
            ));
        }
        Ok(RemoveField {
            fields: self
                .fields
                .iter()
                .map(|f| FieldPath::parse(f))
                .collect::<Result<_, _>>()?,
            at: self.at,
            request: self.on.contains(&Direction::Request),
            response,
        })
    }
}

impl ClampSpec {
    pub fn build(&self) -> Result<Clamp, FilterError> {
        if self.min.is_none() && self.max.is_none() {
            return Err(FilterError::InvalidOption(
                "set `min`, `max` or both".into(),
            ));
        }
        if let (Some(min), Some(max)) = (self.min, self.max) {
            if min > max {
                return Err(FilterError::InvalidOption(format!(
                    "min ({min}) is larger than max ({max})"
                )));
            }
        }
        if [self.min, self.max]
            .iter()
            .flatten()
            .any(|v| !v.is_finite())
        {
            return Err(FilterError::InvalidOption("bounds must be numbers".into()));
        }
        Ok(Clamp {
            field: FieldPath::parse(&self.field)?,
            min: self.min,
            max: self.max,
            at: self.at,
        })
    }
}

/// Parses `body`, lets `edit` change it, and returns the new bytes if it did.
fn edit_json(
    body: &[u8],
    require_object: bool,
    edit: impl FnOnce(&mut Value) -> bool,
) -> Result<Option<Vec<u8>>, FilterError> {
    let mut doc: Value = match serde_json::from_slice(body) {
        Ok(doc) => doc,
        Err(_) if !require_object => return Ok(None),
        Err(e) => return Err(FilterError::Body(format!("not JSON: {e}"))),
    };
    if !doc.is_object() {
        if require_object {
            return Err(FilterError::Body("not a JSON object".into()));
        }
        return Ok(None);
    }
    if !edit(&mut doc) {
        return Ok(None);
    }
    serde_json::to_vec(&doc)
        .map(Some)
        .map_err(|e| FilterError::Body(e.to_string()))
}

impl Filter for SetField {
    fn side(&self) -> Side {
        self.at
    }

    fn edits_request_body(&self) -> bool {
        true
    }

    fn on_request_body(
        &self,
        body: &[u8],
        _memo: &mut crate::Memo,
    ) -> Result<Option<Vec<u8>>, FilterError> {
        let mut failed = None;
        let edited = edit_json(body, true, |doc| {
            failed = self.set_all(doc);
            true
        })?;
        match failed {
            Some(path) => Err(cannot_set(&path)),
            None => Ok(edited),
        }
    }

    fn edits_request_tree(&self) -> bool {
        true
    }

    fn on_request_tree(&self, doc: &mut Value) -> Result<bool, FilterError> {
        if !doc.is_object() {
            return Err(FilterError::Body("not a JSON object".into()));
        }
        match self.set_all(doc) {
            Some(path) => Err(cannot_set(&path)),
            None => Ok(true),
        }
    }
}

impl SetField {
    /// Sets every field; the last path that could not be set.
    fn set_all(&self, doc: &mut Value) -> Option<String> {
        let mut failed = None;
        for (path, value) in &self.fields {
            if !path.set(doc, value.clone(), self.replace) {
                failed = Some(path.as_str().to_owned());
            }
        }
        failed
    }
}

fn cannot_set(path: &str) -> FilterError {
    FilterError::Body(format!(
        "`{path}` cannot be set: a field on its way is not an object"
    ))
}

impl RemoveField {
    fn remove(&self, doc: &mut Value) -> bool {
        let mut removed = false;
        for path in &self.fields {
            removed |= path.remove(doc);
        }
        removed
    }
}

impl Filter for RemoveField {
    fn side(&self) -> Side {
        self.at
    }

    fn edits_request_body(&self) -> bool {
        self.request
    }

    fn on_request_body(
        &self,
        body: &[u8],
        _memo: &mut crate::Memo,
    ) -> Result<Option<Vec<u8>>, FilterError> {
        edit_json(body, false, |doc| self.remove(doc))
    }

    fn edits_request_tree(&self) -> bool {
        true
    }

    fn on_request_tree(&self, doc: &mut Value) -> Result<bool, FilterError> {
        Ok(doc.is_object() && self.remove(doc))
    }

    fn edits_response_body(&self) -> bool {
        self.response
    }

    fn on_response_body(
        &self,
        body: &[u8],
        _memo: &crate::Memo,
    ) -> Result<Option<Vec<u8>>, FilterError> {
        edit_json(body, false, |doc| self.remove(doc))
    }

    fn on_stream(&self, _memo: &crate::Memo) -> Option<Box<dyn StreamFilter>> {
        self.response.then(|| {
            Box::new(RemoveFromEvents {
                fields: self.fields.clone(),
            }) as Box<dyn StreamFilter>
        })
    }
}

/// `remove-field` on each event of a stream: the JSON of its `data:` line, edited; events
/// with nothing to remove pass as they came (no copy).
struct RemoveFromEvents {
    fields: Vec<FieldPath>,
}

impl StreamFilter for RemoveFromEvents {
    fn on_event(&mut self, frame: Bytes, out: &mut Vec<Bytes>) -> Result<(), FilterError> {
        out.push(
            edit_event(&frame, |doc| {
                let mut removed = false;
                for path in &self.fields {
                    removed |= path.remove(doc);
                }
                removed
            })
            .unwrap_or(frame),
        );
        Ok(())
    }
}

/// The frame with the JSON of its `data:` line edited; `None` when there is nothing to
/// edit (no JSON object, or `edit` changed nothing).
fn edit_event(frame: &Bytes, edit: impl FnOnce(&mut Value) -> bool) -> Option<Bytes> {
    let parsed = Frame::parse(frame)?;
    let mut doc = parsed.json()?;
    if !edit(&mut doc) {
        return None;
    }
    parsed.with_json(&doc)
}

impl Clamp {
    /// Brings the field within its bounds; whether it moved.
    fn clamp(&self, doc: &mut Value) -> bool {
        let mut changed = false;
        self.field.for_each(doc, &mut |value| {
            let Some(number) = value.as_f64() else {
                return;
            };
            let clamped = match (self.min, self.max) {
                (Some(min), _) if number < min => min,
                (_, Some(max)) if number > max => max,
                _ => return,
            };
            // Integers stay integers (`max_tokens: 4096`, not `4096.0`).
            *value = if value.is_f64() || clamped.fract() != 0.0 {
                serde_json::Number::from_f64(clamped).map_or(Value::Null, Value::Number)
            } else {
                Value::from(clamped as i64)
            };
            changed = true;
        });
        changed
    }
}

impl Filter for Clamp {
    fn side(&self) -> Side {
        self.at
    }

    fn edits_request_body(&self) -> bool {
        true
    }

    fn on_request_body(
        &self,
        body: &[u8],
        _memo: &mut crate::Memo,
    ) -> Result<Option<Vec<u8>>, FilterError> {
        edit_json(body, false, |doc| self.clamp(doc))
    }

    fn edits_request_tree(&self) -> bool {
        true
    }

    fn on_request_tree(&self, doc: &mut Value) -> Result<bool, FilterError> {
        Ok(doc.is_object() && self.clamp(doc))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::FilterSpec;

    fn filter(yaml: &str) -> std::sync::Arc<dyn Filter> {
        serde_yaml::from_str::<FilterSpec>(yaml)
            .unwrap()
            .build()
            .unwrap()
    }

    fn apply(f: &dyn Filter, body: Value) -> Value {
        let bytes = serde_json::to_vec(&body).unwrap();
        match f
            .on_request_body(&bytes, &mut crate::Memo::default())
            .unwrap()
        {
            Some(new) => serde_json::from_slice(&new).unwrap(),
            None => body,
        }
    }

    #[test]
    fn set_field_replaces_or_defaults() {
        let f = filter("kind: set-field\nfields: { temperature: 0.2, \"metadata.team\": a }");
        assert_eq!(
            apply(&*f, json!({"temperature": 1.0, "model": "m"})),
            json!({"temperature": 0.2, "model": "m", "metadata": {"team": "a"}})
        );
        let f = filter("kind: set-field\nreplace: false\nfields: { temperature: 0.2 }");
        assert_eq!(apply(&*f, json!({"temperature": 1.0}))["temperature"], 1.0);
        assert_eq!(apply(&*f, json!({}))["temperature"], 0.2);
        assert!(f
            .on_request_body(b"[1]", &mut crate::Memo::default())
            .is_err());
        assert!(
            serde_yaml::from_str::<FilterSpec>("kind: set-field\nfields: { \"a.*\": 1 }")
                .unwrap()
                .build()
                .is_err()
        );
    }

    #[test]
    fn remove_field_on_requests_responses_and_events() {
        let f = filter("kind: remove-field\nfields: [user, \"metadata.user_id\"]");
        assert_eq!(
            apply(
                &*f,
                json!({"user": "u", "metadata": {"user_id": "x", "k": 1}})
            ),
            json!({"metadata": {"k": 1}})
        );
        assert!(f.on_stream(&crate::Memo::default()).is_none());
        assert_eq!(
            f.on_request_body(b"not json", &mut crate::Memo::default())
                .unwrap(),
            None
        );

        let f = filter("kind: remove-field\nfields: [system_fingerprint]\non: [response]");
        assert!(!f.edits_request_body());
        let mut stream = f.on_stream(&crate::Memo::default()).unwrap();
        let mut out = Vec::new();
        let event = Bytes::from_static(b"data: {\"id\":\"c\",\"system_fingerprint\":\"fp\"}\n\n");
        stream.on_event(event, &mut out).unwrap();
        let untouched = Bytes::from_static(b"event: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\n");
        stream.on_event(untouched.clone(), &mut out).unwrap();
        let done = Bytes::from_static(b"data: [DONE]\n\n");
        stream.on_event(done.clone(), &mut out).unwrap();
        assert_eq!(out[0], Bytes::from_static(b"data: {\"id\":\"c\"}\n\n"));
        assert_eq!(
            out[1].as_ptr(),
            untouched.as_ptr(),
            "passed on without a copy"
        );
        assert_eq!(out[2], done);
        let crlf =
            Bytes::from_static(b"event: x\r\ndata: {\"system_fingerprint\":1,\"a\":2}\r\n\r\n");
        out.clear();
        stream.on_event(crlf, &mut out).unwrap();
        assert_eq!(
            out[0],
            Bytes::from_static(b"event: x\r\ndata: {\"a\":2}\r\n\r\n")
        );
        assert!(serde_yaml::from_str::<FilterSpec>(
            "kind: remove-field\nfields: [x]\non: [response]\nat: provider"
        )
        .unwrap()
        .build()
        .is_err());
    }

    #[test]
    fn clamp_keeps_numbers_in_bounds() {
        let f = filter("kind: clamp\nfield: max_tokens\nmax: 4096\nmin: 1");
        assert_eq!(
            apply(&*f, json!({"max_tokens": 100000}))["max_tokens"],
            json!(4096)
        );
        assert_eq!(apply(&*f, json!({"max_tokens": 0}))["max_tokens"], json!(1));
        assert_eq!(
            apply(&*f, json!({"max_tokens": 50}))["max_tokens"],
            json!(50)
        );
        assert_eq!(
            f.on_request_body(br#"{"model":"m"}"#, &mut crate::Memo::default())
                .unwrap(),
            None
        );
        let f = filter("kind: clamp\nfield: temperature\nmax: 1.0");
        assert_eq!(
            apply(&*f, json!({"temperature": 1.7}))["temperature"],
            json!(1.0)
        );
        assert!(serde_yaml::from_str::<FilterSpec>("kind: clamp\nfield: x")
            .unwrap()
            .build()
            .is_err());
        assert!(
            serde_yaml::from_str::<FilterSpec>("kind: clamp\nfield: x\nmin: 2\nmax: 1")
                .unwrap()
                .build()
                .is_err()
        );
    }
}
