//! The seal on the reasoning sira hands a client to carry (a Responses `reasoning` item's
//! `encrypted_content`): an HMAC-SHA256 tag over what sira wrote, so a carrier a client made
//! up or edited is not taken for one sira issued. A carrier that fails the check is treated
//! like any reasoning sira did not issue: it does not reach the provider.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of the tag kept: 128 bits, as many as a forger would have to guess.
const TAG: usize = 16;

/// A sealing key. Every sira host that should accept another's carriers needs the same one
/// (`server.reasoning_key`, or the same provider credentials, from which the default is
/// derived).
#[derive(Clone, PartialEq, Eq)]
pub struct Seal([u8; 32]);

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret.
        f.write_str("Seal(*****)")
    }
}

impl Default for Seal {
    /// A fixed key, for tests and library use without a config: it seals nothing an
    /// attacker could not also seal.
    fn default() -> Seal {
        Seal::derive([&b"sira test seal"[..]])
    }
}

impl Seal {
    /// The fixed key of [`Seal::default`], borrowed for as long as needed (tests, benches).
    pub fn fixed() -> &'static Seal {
        static FIXED: std::sync::LazyLock<Seal> = std::sync::LazyLock::new(Seal::default);
        &FIXED
    }

    /// A key derived from secret material (an operator's `reasoning_key`, or the provider
    /// credentials), domain-separated so it is never the raw secret.
    pub fn derive<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Seal {
        let mut hash = Sha256::new();
        hash.update(b"sira reasoning seal v1\0");
        for part in parts {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        Seal(hash.finalize().into())
    }

    fn mac(&self, data: &[u8]) -> [u8; TAG] {
        // HMAC takes a key of any length; 32 bytes cannot be refused.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return [0; TAG],
        };
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; TAG];
        tag.copy_from_slice(&full[..TAG]);
        tag
    }

    /// The tag of `data`.
    pub fn tag(&self, data: &[u8]) -> [u8; TAG] {
        self.mac(data)
    }

    /// Whether `tag` is `data`'s, compared in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        tag.len() == TAG && bool::from(self.mac(data).ct_eq(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_verifies_only_its_data_under_its_key() {
        let seal = Seal::derive([&b"k1"[..]]);
        let tag = seal.tag(b"thinking");
        assert!(seal.verify(b"thinking", &tag));
        assert!(!seal.verify(b"thinkinG", &tag));
        assert!(!seal.verify(b"thinking", &tag[..8]));
        assert!(!Seal::derive([&b"k2"[..]]).verify(b"thinking", &tag));
        // Parts are length-prefixed: ("ab","c") is not ("a","bc").
        assert_ne!(
            Seal::derive([&b"ab"[..], b"c"]),
            Seal::derive([&b"a"[..], b"bc"])
        );
    }

    #[test]
    fn only_a_carrier_sira_sealed_reaches_the_provider() {
        use crate::format::Format;
        use crate::translate::util::{encode_carrier, Carrier};
        use crate::translate::{translate_request, RequestOptions};
        use std::borrow::Cow;
        let carrier = Carrier {
            thinking: Some(Cow::Borrowed("the user wants the time")),
            signature: Some(Cow::Borrowed("EqQBCgIYAhIM")),
            redacted: None,
        };
        let sealed = encode_carrier(&carrier, Seal::fixed());
        let (body_b64, _) = sealed.rsplit_once('.').unwrap();
        let forged = format!("{body_b64}.AAAAAAAAAAAAAAAAAAAAAA");
        let unsealed = body_b64.to_owned();
        let elsewhere = encode_carrier(&carrier, &Seal::derive([&b"another fleet"[..]]));
        let thinking_sent = |encrypted: &str| {
            let body = serde_json::json!({"model": "m", "input": [
                {"role": "user", "content": "time?"},
                {"type": "reasoning", "summary": [], "encrypted_content": encrypted},
                {"type": "function_call", "call_id": "c1", "name": "clock", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "12:00"}],
                "tools": [{"type": "function", "name": "clock", "parameters": {"type": "object"}}]});
            let opts = RequestOptions {
                model: "m",
                stream: false,
                default_max_tokens: 4096,
                legacy_max_tokens: false,
                prompt_cache: false,
                web_search: false,
                seal: Seal::fixed(),
            };
            let body = serde_json::to_vec(&body).unwrap();
            let t = translate_request(Format::OpenAiResponses, Format::Anthropic, &body, &opts)
                .unwrap();
            String::from_utf8(t.body).unwrap().contains("EqQBCgIYAhIM")
        };
        assert!(thinking_sent(&sealed));
        assert!(!thinking_sent(&forged), "a tag a client made up");
        assert!(!thinking_sent(&unsealed), "no tag at all");
        assert!(!thinking_sent(&elsewhere), "sealed under another key");
    }
}
