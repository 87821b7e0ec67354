//! Tool and output schemas across formats (§2.4, §2.5, §11.4).

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::ir::{Schema, ToolKind};
use super::util::to_raw;

/// `{"type":"object","properties":{}}`: OpenAI allows a function without `parameters`,
/// Anthropic requires an object schema (§2.4).
const EMPTY_OBJECT_SCHEMA: &str = r#"{"type":"object","properties":{}}"#;

/// A custom (freeform) Responses tool exposed as a function taking its raw text in `input`
/// (§11.4).
const CUSTOM_TOOL_SCHEMA: &str =
    r#"{"type":"object","properties":{"input":{"type":"string"}},"required":["input"]}"#;

/// Responses `local_shell` exposed as a function (§11.4).
const LOCAL_SHELL_SCHEMA: &str = r#"{"type":"object","properties":{"command":{"type":"array","items":{"type":"string"}},"workdir":{"type":"string"},"timeout_ms":{"type":"integer"}},"required":["command"]}"#;

fn fixed(json: &'static str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap_or_else(|_| super::util::empty_object())
}

pub(crate) fn for_kind(kind: ToolKind) -> Schema<'static> {
    match kind {
        ToolKind::Function => Schema::None,
        ToolKind::Custom => Schema::Owned(fixed(CUSTOM_TOOL_SCHEMA)),
        ToolKind::LocalShell => Schema::Owned(fixed(LOCAL_SHELL_SCHEMA)),
    }
}

impl Schema<'_> {
    /// The schema as JSON Schema (OpenAI `parameters`, Anthropic `input_schema`, Gemini
    /// `parametersJsonSchema`/`responseJsonSchema`).
    pub fn json_schema(&self) -> Cow<'_, RawValue> {
        match self {
            Schema::None => Cow::Owned(fixed(EMPTY_OBJECT_SCHEMA)),
            Schema::Json(raw) => Cow::Borrowed(*raw),
            Schema::Owned(raw) => Cow::Borrowed(&**raw),
            Schema::Gemini(raw) => Cow::Owned(gemini_to_json_schema(raw)),
        }
    }

    /// Like [`Schema::json_schema`], but `None` stays absent (for `response_format`).
    pub fn json_schema_opt(&self) -> Option<Cow<'_, RawValue>> {
        match self {
            Schema::None => None,
            other => Some(other.json_schema()),
        }
    }
}

/// Gemini's OpenAPI-subset schema → JSON Schema: lower-case `type`, `nullable` → a `null`
/// type, Gemini-only keywords dropped (§2.4). Anthropic requires `type: "object"` literally.
pub(crate) fn gemini_to_json_schema(raw: &RawValue) -> Box<RawValue> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(mut value) => {
            normalise(&mut value);
            to_raw(&value)
        }
        Err(_) => fixed(EMPTY_OBJECT_SCHEMA),
    }
}

fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => normalise_object(map),
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

fn normalise_object(map: &mut Map<String, Value>) {
    map.remove("propertyOrdering");
    let nullable = matches!(map.remove("nullable"), Some(Value::Bool(true)));
    if let Some(Value::String(t)) = map.get_mut("type") {
        t.make_ascii_lowercase();
        if nullable {
            let t = std::mem::take(t);
            map.insert(
                "type".into(),
                Value::Array(vec![Value::String(t), "null".into()]),
            );
        }
    }
    for (key, child) in map.iter_mut() {
        match (key.as_str(), child) {
            // Maps from names to schemas.
            ("properties" | "$defs" | "definitions", Value::Object(named)) => {
                named.values_mut().for_each(normalise)
            }
            // A schema or a list of schemas.
            (
                "items"
                | "anyOf"
                | "oneOf"
                | "allOf"
                | "not"
                | "additionalProperties"
                | "prefixItems",
                child,
            ) => normalise(child),
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn gemini_schema_is_lowercased_and_nullable_expanded() {
        let raw: &RawValue = serde_json::from_str(
            r#"{"type":"OBJECT","properties":{"city":{"type":"STRING","nullable":true}},"propertyOrdering":["city"]}"#,
        )
        .unwrap();
        let out = gemini_to_json_schema(raw);
        let v: Value = serde_json::from_str(out.get()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"object","properties":{"city":{"type":["string","null"]}}})
        );
    }
}
