//! What a consistent-hash pool hashes (`hash_key`): the same value lands on the same
//! endpoint, so that endpoint's KV/prompt cache is warm for it.
//!
//! Every key is derived from the request alone, never from process state, so several sira
//! hosts in front of one fleet send a session to the same server.

use std::borrow::Cow;

use http::HeaderName;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// `hash_key: header:NAME | client-key | user | prompt-prefix:BYTES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's value (a session id).
    Header(HeaderName),
    /// The authenticated key's name.
    ClientKey,
    /// The body's end-user id: `user`, `metadata.user_id` or `safety_identifier`.
    User,
    /// The system prompt, the tools and the first BYTES of the conversation.
    PromptPrefix(usize),
}

impl HashKey {
    pub fn parse(text: &str) -> Result<HashKey, String> {
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().as_bytes())
                .map(HashKey::Header)
                .map_err(|_| format!("{name:?} is not a header name"));
        }
        if let Some(bytes) = text.strip_prefix("prompt-prefix:") {
            return match super::super::config::units::parse_size(bytes.trim()) {
                Ok(n) if n > 0 => Ok(HashKey::PromptPrefix(n as usize)),
                _ => Err(format!(
                    "{bytes:?} is not a positive size (e.g. 2048 or 4KiB)"
                )),
            };
        }
        match text {
            "client-key" => Ok(HashKey::ClientKey),
            "user" => Ok(HashKey::User),
            _ => Err(format!(
                "{text:?}: expected header:NAME, client-key, user or prompt-prefix:BYTES"
            )),
        }
    }

    /// The bytes to hash for this request; `None` when the request has no such value (the
    /// pool then balances it like round robin).
    pub fn extract<'a>(
        &self,
        req: &'a RequestHeader,
        body: &[u8],
        client_key: Option<&'a str>,
    ) -> Option<Cow<'a, [u8]>> {
        match self {
            HashKey::Header(name) => req
                .headers
                .get(name)
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty())
                .map(Cow::Borrowed),
            HashKey::ClientKey => client_key.map(|k| Cow::Borrowed(k.as_bytes())),
            HashKey::User => end_user(body).map(|u| Cow::Owned(u.into_bytes())),
            HashKey::PromptPrefix(n) => prompt_prefix(body, *n).map(|d| Cow::Owned(d.to_vec())),
        }
    }
}

#[derive(Deserialize)]
struct UserFields<'a> {
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    safety_identifier: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<UserMetadata<'a>>,
}

#[derive(Deserialize)]
struct UserMetadata<'a> {
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
}

/// OpenAI's `user` / `safety_identifier`, Anthropic's `metadata.user_id`.
fn end_user(body: &[u8]) -> Option<String> {
    let fields: UserFields = serde_json::from_slice(body).ok()?;
    fields
        .user
        .or(fields.safety_identifier)
        .or(fields.metadata.and_then(|m| m.user_id))
        .filter(|u| !u.is_empty())
        .map(Cow::into_owned)
}

/// The parts of a request that make up its cacheable prefix, in every surface's spelling.
#[derive(Deserialize)]
struct PrefixFields<'a> {
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow, default, alias = "system_instruction")]
    #[serde(rename = "systemInstruction")]
    system_instruction: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    contents: Option<&'a RawValue>,
}

/// A digest of the system prompt, the tools and the first `n` bytes of the conversation as
/// the client wrote them: requests that share that prefix share the digest.
fn prompt_prefix(body: &[u8], n: usize) -> Option<[u8; 32]> {
    let fields: PrefixFields = serde_json::from_slice(body).ok()?;
    let conversation = fields.messages.or(fields.input).or(fields.contents);
    let mut digest = Sha256::new();
    let mut any = false;
    for (tag, part) in [
        (b's', fields.system),
        (b'i', fields.instructions),
        (b'g', fields.system_instruction),
        (b't', fields.tools),
    ] {
        if let Some(raw) = part {
            digest.update([tag]);
            digest.update(raw.get().as_bytes());
            any = true;
        }
    }
    if let Some(raw) = conversation {
        let text = raw.get().as_bytes();
        digest.update([b'c']);
        digest.update(&text[..text.len().min(n)]);
        any = true;
    }
    any.then(|| digest.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn parses_every_spelling() {
        assert_eq!(
            HashKey::parse("header:X-Session-Id").unwrap(),
            HashKey::Header(HeaderName::from_static("x-session-id"))
        );
        assert_eq!(HashKey::parse("client-key").unwrap(), HashKey::ClientKey);
        assert_eq!(HashKey::parse("user").unwrap(), HashKey::User);
        assert_eq!(
            HashKey::parse("prompt-prefix:4KiB").unwrap(),
            HashKey::PromptPrefix(4096)
        );
        assert!(HashKey::parse("prompt-prefix:0").is_err());
        assert!(HashKey::parse("header:bad name").is_err());
        assert!(HashKey::parse("cookie").is_err());
    }

    #[test]
    fn users_in_each_surface() {
        let r = req(&[]);
        let key = |body: &str| {
            HashKey::User
                .extract(&r, body.as_bytes(), None)
                .map(|k| k.into_owned())
        };
        assert_eq!(key(r#"{"user":"u1","messages":[]}"#), Some(b"u1".to_vec()));
        assert_eq!(
            key(r#"{"safety_identifier":"s\u0031"}"#),
            Some(b"s1".to_vec())
        );
        assert_eq!(key(r#"{"metadata":{"user_id":"a"}}"#), Some(b"a".to_vec()));
        assert_eq!(key(r#"{"messages":[]}"#), None);
        assert_eq!(
            key(r#"{"user":5}"#),
            None,
            "a mistyped field is no key, not an error"
        );
    }

    #[test]
    fn prompt_prefix_groups_requests_that_share_it() {
        let r = req(&[]);
        let key = |body: &str| {
            HashKey::PromptPrefix(40)
                .extract(&r, body.as_bytes(), None)
                .map(|k| k.into_owned())
        };
        let long = "x".repeat(100);
        let a = key(&format!(
            r#"{{"system":"be brief","messages":[{{"role":"user","content":"{long} turn one"}}]}}"#
        ));
        let b = key(&format!(
            r#"{{"system":"be brief","messages":[{{"role":"user","content":"{long} turn two"}}],"max_tokens":9}}"#
        ));
        let c = key(&format!(
            r#"{{"system":"be long","messages":[{{"role":"user","content":"{long} turn one"}}]}}"#
        ));
        assert!(a.is_some());
        assert_eq!(a, b, "same system prompt and first 40 bytes");
        assert_ne!(a, c, "another system prompt");
        assert_eq!(key("not json"), None);
    }

    #[test]
    fn header_and_client_key() {
        let r = req(&[("x-session-id", "abc")]);
        let h = HashKey::Header(HeaderName::from_static("x-session-id"));
        assert_eq!(h.extract(&r, b"", None).as_deref(), Some(&b"abc"[..]));
        assert_eq!(
            HashKey::ClientKey
                .extract(&r, b"", Some("team-a"))
                .as_deref(),
            Some(&b"team-a"[..])
        );
        assert_eq!(HashKey::ClientKey.extract(&r, b"", None), None);
    }
}
