//! The cache key: what makes two requests the same request.
//!
//! A SHA-256 over the scope (who may share the answer), the class of the request (the
//! provider format its body is written in, and what of the answer its client leaves out),
//! the operation, whether it streams, the model entry it was routed to with the model asked
//! for (a wildcard entry serves many; a Gemini path names it outside the body), a chosen
//! target, the request headers that change an answer, and the body in a canonical form:
//! object keys sorted, no whitespace, so that key order and formatting do not matter. The
//! body is the request as the provider would get it, so that clients of different formats
//! asking the same thing share a key. Fields that do not change the answer (`stream`,
//! hashed on its own, `user`, `metadata`) are left out.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub type Key = [u8; 32];

/// Top-level fields that never change what the model answers.
const IGNORED: &[&str] = &["stream", "user", "metadata"];

/// What identifies a request besides its body.
pub struct KeyParts<'a> {
    pub scope: &'a str,
    /// Who may be answered alike: the provider format the body is in, and what the client
    /// leaves out of the answer (an OpenAI stream without its usage chunk).
    pub class: &'a str,
    pub operation: &'a str,
    pub stream: bool,
    pub entry: &'a str,
    /// The model asked for (after a key's rewrite).
    pub model: &'a str,
    /// `x-sira-route`'s target, or empty.
    pub target: &'a str,
    /// Request headers that change an answer (`anthropic-beta`, …), as sent.
    pub variant: &'a str,
}

/// The key of a request whose body has these fields.
pub fn key(parts: &KeyParts<'_>, fields: &serde_json::Map<String, Value>) -> Key {
    let mut hash = Sha256::new();
    let list = [
        parts.scope,
        parts.class,
        parts.operation,
        parts.entry,
        parts.model,
        parts.target,
        parts.variant,
    ];
    for part in list {
        // Length-prefixed, so that no two different lists of parts hash alike.
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.update([u8::from(parts.stream)]);
    let mut names: Vec<&String> = fields
        .keys()
        .filter(|k| !IGNORED.contains(&k.as_str()))
        .collect();
    names.sort();
    hash.update(b"{");
    for name in names {
        canonical(&Value::String(name.clone()), &mut hash);
        hash.update(b":");
        canonical(&fields[name.as_str()], &mut hash);
        hash.update(b",");
    }
    hash.update(b"}");
    hash.finalize().into()
}

/// The key of the request `key` names, answered in this client format: where the kept
/// answer of `key` cannot be given to that format, its clients share one of their own.
pub fn in_format(key: &Key, format: &str) -> Key {
    let mut hash = Sha256::new();
    hash.update(b"in-format\0");
    hash.update(key);
    hash.update(format.as_bytes());
    hash.finalize().into()
}

/// Feeds `value` to the hash with sorted object keys and no whitespace.
fn canonical(value: &Value, hash: &mut Sha256) {
    match value {
        Value::Object(fields) => {
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort();
            hash.update(b"{");
            for name in names {
                canonical(&Value::String(name.clone()), hash);
                hash.update(b":");
                canonical(&fields[name.as_str()], hash);
                hash.update(b",");
            }
            hash.update(b"}");
        }
        Value::Array(items) => {
            hash.update(b"[");
            for item in items {
                canonical(item, hash);
                hash.update(b",");
            }
            hash.update(b"]");
        }
        // Strings, numbers, booleans and null as serde_json writes them: one form each.
        other => {
            let text = other.to_string();
            hash.update(text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(scope: &str, stream: bool) -> KeyParts<'_> {
        KeyParts {
            scope,
            class: "openai",
            operation: "chat",
            stream,
            entry: "gpt-4o",
            model: "gpt-4o",
            target: "",
            variant: "",
        }
    }

    fn key(parts: &KeyParts<'_>, body: &[u8]) -> Option<Key> {
        match serde_json::from_slice(body) {
            Ok(Value::Object(fields)) => Some(super::key(parts, &fields)),
            _ => None,
        }
    }

    #[test]
    fn key_order_whitespace_and_ignored_fields_do_not_matter() {
        let a =
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0}"#;
        let b = br#"{ "temperature": 0, "user": "u1", "stream": true,
                      "messages": [ { "content": "hi", "role": "user" } ], "model": "gpt-4o" }"#;
        assert_eq!(key(&parts("k", false), a), key(&parts("k", false), b));
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let base = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let k = key(&parts("k", false), base).unwrap();
        for other in [
            &br#"{"model":"m","messages":[{"role":"user","content":"hi!"}]}"#[..],
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":1}"#,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
        ] {
            assert_ne!(key(&parts("k", false), other), Some(k));
        }
        assert_ne!(key(&parts("other", false), base), Some(k));
        assert_ne!(key(&parts("k", true), base), Some(k));
        let hidden = KeyParts {
            class: "openai/usage-hidden",
            ..parts("k", false)
        };
        assert_ne!(key(&hidden, base), Some(k));
    }
}
