//! Small helpers shared by every format: borrowed tagged/untagged JSON, compact JSON, data
//! URLs, deterministic ids, SSE output.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::{BufMut, BytesMut};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::ir::{Args, Str};

/// Declares an enum discriminated by a string field, deserialized through `&RawValue` so that
/// variants may hold `&RawValue` fields (serde's internally tagged enums buffer their input and
/// cannot). Tags that match no arm land in `Unknown`, which keeps the raw value.
macro_rules! raw_tagged {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident<$lt:lifetime> by $field:literal {
            $($pat:pat => $variant:ident($inner:ty)),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name<$lt> {
            $($variant($inner),)*
            Unknown(&$lt ::serde_json::value::RawValue),
        }

        impl<'de: $lt, $lt> ::serde::Deserialize<'de> for $name<$lt> {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use ::serde::de::Error as _;
                let raw: &'de ::serde_json::value::RawValue = ::serde::Deserialize::deserialize(d)?;
                let tag = $crate::translate::util::tag_of(raw, $field).map_err(D::Error::custom)?;
                match tag.as_deref() {
                    $($pat => ::serde_json::from_str(raw.get())
                        .map($name::$variant)
                        .map_err(D::Error::custom),)*
                    _ => Ok($name::Unknown(raw)),
                }
            }
        }
    };
}
pub(crate) use raw_tagged;

/// Reads the string field `field` of a JSON object without materialising the rest.
pub(crate) fn tag_of<'a>(raw: &'a RawValue, field: &str) -> serde_json::Result<Option<Str<'a>>> {
    struct TagSeed<'f>(&'f str);
    impl<'de, 'f> serde::de::DeserializeSeed<'de> for TagSeed<'f> {
        type Value = Option<Cow<'de, str>>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(TagVisitor(self.0))
        }
    }
    struct TagVisitor<'f>(&'f str);
    impl<'de, 'f> serde::de::Visitor<'de> for TagVisitor<'f> {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == self.0 && found.is_none() {
                    found = map.next_value::<Option<Cow<'de, str>>>()?;
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde::de::DeserializeSeed::deserialize(TagSeed(field), &mut de)
}

/// A field that is either a string or an array (OpenAI/Anthropic message `content`, `stop`,
/// `system`, Responses `input`). `null` is accepted as `Null`.
#[derive(Debug, Default)]
pub(crate) enum StrOr<'a, T> {
    Str(Str<'a>),
    Many(Vec<T>),
    #[default]
    Null,
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for StrOr<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        let text = raw.get().trim_start();
        match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str(text)
                .map(StrOr::Str)
                .map_err(D::Error::custom),
            Some(b'[') => serde_json::from_str(text)
                .map(StrOr::Many)
                .map_err(D::Error::custom),
            Some(b'n') => Ok(StrOr::Null),
            _ => Err(D::Error::custom("expected a string or an array")),
        }
    }
}

/// Deserializes only the first element of an array (`null` or `[]` → `None`), skipping the
/// rest without allocating: streams read `choices[0]` / `candidates[0]` of every chunk.
pub(crate) fn first<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct First<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for First<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array or null")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<T>()?;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }
    d.deserialize_any(First(std::marker::PhantomData))
}

/// Parses a value that is either a string or an object (`tool_choice`).
pub(crate) enum StrOrObj<'a, T> {
    Str(Str<'a>),
    Obj(T),
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for StrOrObj<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        let text = raw.get().trim_start();
        if text.starts_with('"') {
            serde_json::from_str(text)
                .map(StrOrObj::Str)
                .map_err(D::Error::custom)
        } else {
            serde_json::from_str(text)
                .map(StrOrObj::Obj)
                .map_err(D::Error::custom)
        }
    }
}

/// `true` when the raw JSON value is an object.
pub(crate) fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

/// Removes insignificant whitespace from JSON text (`JSON.stringify` without pretty printing,
/// §2.4), borrowing when there is none.
pub(crate) fn compact(json: &str) -> Cow<'_, str> {
    let bytes = json.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        return Cow::Borrowed(json);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    // Only ASCII whitespace outside strings was removed, so the bytes are still UTF-8.
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// Builds an owned raw JSON value from a serializable value.
pub(crate) fn to_raw<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| empty_object())
}

pub(crate) fn empty_object() -> Box<RawValue> {
    // "{}" is valid JSON; `from_string` only fails on invalid JSON.
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| Box::<RawValue>::default())
}

impl<'a> Args<'a> {
    /// The OpenAI `arguments` string.
    pub fn to_json_string(&self) -> Cow<'_, str> {
        match self {
            Args::Json(raw) => compact(raw.get()),
            Args::Text(text) => Cow::Borrowed(text),
        }
    }

    /// The object Anthropic `input` / Gemini `args` need. Invalid or non-object arguments (a
    /// model cut off by `max_tokens`) are wrapped as `{"_raw": …}` rather than failing (§2.4).
    pub fn to_object(&self) -> Cow<'_, RawValue> {
        #[derive(Serialize)]
        struct Wrapped<'b, T: Serialize + ?Sized> {
            _raw: &'b T,
        }
        match self {
            Args::Json(raw) if is_object(raw) => Cow::Borrowed(*raw),
            Args::Json(raw) if raw.get().trim() == "null" => Cow::Owned(empty_object()),
            Args::Json(raw) => Cow::Owned(to_raw(&Wrapped { _raw: *raw })),
            Args::Text(text) if text.trim().is_empty() => Cow::Owned(empty_object()),
            Args::Text(text) => match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) if is_object(raw) => Cow::Borrowed(raw),
                _ => Cow::Owned(to_raw(&Wrapped { _raw: &**text })),
            },
        }
    }
}

/// Splits a `data:<mime>;base64,<data>` URL (§2.3: parse strictly).
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    if mime.is_empty() || mime.contains(';') {
        return None;
    }
    Some((mime, data))
}

/// 64-bit FNV-1a: a stable, dependency-free hash for deterministic ids.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A deterministic id unique per (seed, n): `<prefix><16 hex>_<n>` — only `[A-Za-z0-9_]`, so
/// valid for Anthropic's `^[a-zA-Z0-9_-]+$` (§2.2).
pub(crate) fn mint_id(prefix: &str, seed: &str, n: usize) -> String {
    format!("{prefix}{:016x}_{n}", fnv1a(seed.as_bytes()))
}

/// Marker between a tool-call id and the Gemini `thoughtSignature` encoded into it (§2.2:
/// Gemini 3 requires the signature back; clients only echo the id, so the stateless gateway
/// carries the signature inside the id it issues).
const SIG_MARK: &str = "_sig_";

/// `id` + marker + the signature in base64url without padding (keeps the id within
/// `[A-Za-z0-9_-]`).
pub(crate) fn id_with_signature(id: &str, signature: &str) -> String {
    let mut out = String::with_capacity(id.len() + SIG_MARK.len() + signature.len());
    out.push_str(id);
    out.push_str(SIG_MARK);
    out.extend(signature.chars().filter(|c| *c != '=').map(|c| match c {
        '+' => '-',
        '/' => '_',
        c => c,
    }));
    out
}

/// Reverse of [`id_with_signature`]: the bare id and the standard-base64 signature, if any.
pub(crate) fn split_signature(id: &str) -> (&str, Option<String>) {
    match id.find(SIG_MARK) {
        Some(pos) if pos > 0 => {
            let encoded = &id[pos + SIG_MARK.len()..];
            let mut sig: String = encoded
                .chars()
                .map(|c| match c {
                    '-' => '+',
                    '_' => '/',
                    c => c,
                })
                .collect();
            while !sig.len().is_multiple_of(4) {
                sig.push('=');
            }
            (&id[..pos], Some(sig))
        }
        _ => (id, None),
    }
}

/// Anthropic `tool_use.id` must match `^[a-zA-Z0-9_-]+$` (§2.2): rewrite deterministically so
/// a call and its result stay paired. Ids sira issues (with a Gemini signature inside) are
/// already valid and pass unchanged.
pub(crate) fn anthropic_tool_id(id: &str) -> Cow<'_, str> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.chars().all(valid) {
        return Cow::Borrowed(id);
    }
    let mut out: String = id.chars().map(|c| if valid(c) { c } else { '_' }).collect();
    out.push_str(&format!("_{:08x}", fnv1a(id.as_bytes()) as u32));
    Cow::Owned(out)
}

/// OpenAI Chat `tool_calls[].id` may be at most 40 characters (§2.2).
pub(crate) fn openai_tool_id(id: &str) -> Cow<'_, str> {
    if !id.is_empty() && id.len() <= 40 {
        return Cow::Borrowed(id);
    }
    let head: String = split_signature(id).0.chars().take(23).collect();
    Cow::Owned(format!("{head}_{:016x}", fnv1a(id.as_bytes())))
}

/// Prefixes `id` unless it already starts with `prefix`.
pub(crate) fn prefixed(prefix: &str, id: &str) -> String {
    if id.starts_with(prefix) {
        id.to_owned()
    } else {
        format!("{prefix}{id}")
    }
}

/// Prefix of the signature sira gives OpenAI's encrypted reasoning when a client of another
/// format carries it (a thinking block's `signature`, a `thoughtSignature`): the Responses
/// writer gives it back to OpenAI as a `reasoning` item; no other provider is sent it.
pub(crate) const OPENAI_REASONING_PREFIX: &str = "oai1.";

/// Prefix of an Anthropic thinking signature given to a Gemini client as a `thoughtSignature`:
/// it tells sira's signature from Gemini's own, so it goes back to Anthropic and never to
/// Gemini.
pub(crate) const ANTHROPIC_SIGNATURE_PREFIX: &str = "ant1.";

/// A non-Gemini signature as a Gemini client carries it.
pub(crate) fn foreign_thought_signature(signature: &str) -> Cow<'_, str> {
    if signature.starts_with(OPENAI_REASONING_PREFIX) {
        Cow::Borrowed(signature)
    } else {
        Cow::Owned(format!("{ANTHROPIC_SIGNATURE_PREFIX}{signature}"))
    }
}

/// Prefix of the opaque `encrypted_content` strings sira issues in Responses reasoning items
/// to carry Anthropic thinking across stateless turns (§11.5).
pub(crate) const CARRIER_PREFIX: &str = "sira1.";

#[derive(Serialize, Deserialize)]
pub(crate) struct Carrier<'a> {
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Str<'a>>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Str<'a>>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<Str<'a>>,
}

/// `sira1.<base64 JSON>.<base64 tag>`: the tag seals the JSON (see [`super::Seal`]).
pub(crate) fn encode_carrier(carrier: &Carrier<'_>, seal: &super::Seal) -> String {
    let json = serde_json::to_vec(carrier).unwrap_or_default();
    let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut out = String::from(CARRIER_PREFIX);
    b64.encode_string(&json, &mut out);
    out.push('.');
    b64.encode_string(seal.tag(&json), &mut out);
    out
}

/// Decodes a carrier into owned thinking data; `None` for anything sira did not issue
/// (OpenAI's own `gAAAA…` encrypted reasoning) or whose seal does not hold (made up or
/// edited by a client, or sealed under another key).
pub(crate) fn decode_carrier(encrypted: &str, seal: &super::Seal) -> Option<Carrier<'static>> {
    let (body, tag) = encrypted.strip_prefix(CARRIER_PREFIX)?.split_once('.')?;
    let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let json = b64.decode(body).ok()?;
    let tag = b64.decode(tag).ok()?;
    if !seal.verify(&json, &tag) {
        return None;
    }
    let c: Carrier<'_> = serde_json::from_slice(&json).ok()?;
    let own = |s: Option<Str<'_>>| s.map(|s| Cow::Owned(s.into_owned()));
    Some(Carrier {
        thinking: own(c.thinking),
        signature: own(c.signature),
        redacted: own(c.redacted),
    })
}

/// Line ending used between SSE fields and frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    Lf,
    /// Gemini frames with CRLF (§6.1).
    Crlf,
}

impl Framing {
    fn eol(self) -> &'static [u8] {
        match self {
            Framing::Lf => b"\n",
            Framing::Crlf => b"\r\n",
        }
    }
}

/// Appends one SSE frame `event: <name>` + `data: <json>` serialized straight into `out`.
pub(crate) fn write_sse<T: Serialize + ?Sized>(
    out: &mut BytesMut,
    framing: Framing,
    event: Option<&str>,
    data: &T,
) {
    let eol = framing.eol();
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(b"data: ");
    let start = out.len();
    // Serializing sira's own wire structs into memory cannot fail (no maps with non-string
    // keys, the writer never errors), so the result carries no information.
    let _ = serde_json::to_writer((&mut *out).writer(), data);
    // A provider's JSON kept as it came (a function call's arguments, `RawValue`) may be
    // indented: a line break there would end the `data:` line, cutting the client's JSON
    // and letting the model's arguments frame events of their own. Outside its strings
    // (where serde escapes them), a line break in JSON is whitespace, and a space is too.
    let written = &mut out[start..];
    let mut at = 0;
    while let Some(found) = memchr::memchr2(b'\n', b'\r', &written[at..]) {
        written[at + found] = b' ';
        at += found + 1;
    }
    out.extend_from_slice(eol);
    out.extend_from_slice(eol);
}

/// Appends a frame whose data is given verbatim (`[DONE]`).
pub(crate) fn write_sse_raw(out: &mut BytesMut, framing: Framing, data: &[u8]) {
    let eol = framing.eol();
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(eol);
    out.extend_from_slice(eol);
}

/// Serializes a body into a fresh buffer.
pub(crate) fn to_body<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
