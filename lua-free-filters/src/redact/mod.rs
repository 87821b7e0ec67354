//! `redact`: sensitive values replaced before a provider sees them, and in what comes back.
//!
//! ```yaml
//! filters:
//!   redact-pii:
//!     kind: redact
//!     patterns: [email, phone, credit-card, iban, ip, api-key, jwt,
//!                { name: employee-id, regex: "EMP-[0-9]{6}" }]   # omitted = every built-in
//!     on: [request, response]     # default both
//!     mode: placeholder           # mask (default) | hash | placeholder
//!     restore: true               # placeholders put back in the answer (mode: placeholder)
//!     salt: ${REDACT_SALT}        # mode: hash — an HMAC key, so hashes cannot be looked up
//! ```
//!
//! The text is every string of the JSON body except the format's own fields (ids, roles,
//! model names, signatures, base64 data). `mask` writes one `*` per character; `hash`
//! writes `[EMAIL:<16 hex digits>]`, the same for the same value under the same salt;
//! `placeholder` writes `[EMAIL_1]`, numbered per request, and with `restore` the answer's
//! placeholders become the values again — so the model never sees them, and the user does.
//! On streams the answer's text is followed across events: a value split between events
//! at any byte is still found (see [`stream`]).

mod detect;
mod json;
mod raw;
mod stream;

use std::borrow::Cow;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

pub use detect::{builtin_names, Detector, Found, Pattern, MAX_HOLD};

use crate::fields::Direction;
use crate::{json_body, Filter, FilterError, Memo, StreamFilter};

/// One entry of `patterns:`: a built-in's name, or an operator's expression.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PatternSpec {
    Builtin(String),
    Custom(CustomPattern),
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// Names the placeholder (`[EMPLOYEE_ID_1]`).
    pub name: String,
    pub regex: String,
}

/// What a found value becomes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Mask,
    Hash,
    Placeholder,
}

fn both() -> Vec<Direction> {
    vec![Direction::Request, Direction::Response]
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedactSpec {
    #[serde(default)]
    pub patterns: Vec<PatternSpec>,
    #[serde(default = "both")]
    pub on: Vec<Direction>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub restore: bool,
    #[serde(default)]
    pub salt: Option<Salt>,
}

/// The HMAC key of `mode: hash`: a secret, never printed.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Salt(String);

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl RedactSpec {
    pub fn build(&self) -> Result<Redact, FilterError> {
        let option = |m: &str| Err(FilterError::InvalidOption(m.to_owned()));
        if self.restore && self.mode != Mode::Placeholder {
            return option("restore: true needs mode: placeholder");
        }
        if self.restore && !self.on.contains(&Direction::Request) {
            return option("restore: true needs `request` in on: (nothing would be replaced)");
        }
        if self.mode == Mode::Hash && self.salt.as_ref().is_none_or(|s| s.0.is_empty()) {
            return option("mode: hash needs a salt (without one a hash can be looked up)");
        }
        if self.on.is_empty() {
            return option("on: names neither request nor response");
        }
        let patterns = || -> Result<Vec<Pattern>, FilterError> {
            if self.patterns.is_empty() {
                return Ok(Pattern::all_builtins());
            }
            let mut all = Vec::new();
            for spec in &self.patterns {
                match spec {
                    PatternSpec::Builtin(name) => {
                        all.extend(Pattern::builtin(name).ok_or_else(|| {
                            FilterError::InvalidOption(format!(
                                "unknown pattern {name:?} (built-ins: {}; or {{ name, regex }})",
                                builtin_names()
                            ))
                        })?)
                    }
                    PatternSpec::Custom(custom) => {
                        all.push(Pattern::custom(&custom.name, &custom.regex))
                    }
                }
            }
            Ok(all)
        };
        let request = if self.on.contains(&Direction::Request) {
            Some(Detector::new(patterns()?)?)
        } else {
            None
        };
        let mut answer = if self.on.contains(&Direction::Response) {
            patterns()?
        } else {
            Vec::new()
        };
        let placeholder = self.restore.then_some(answer.len());
        if self.restore {
            answer.push(Pattern::placeholder());
        }
        let response = if answer.is_empty() {
            None
        } else {
            Some(Detector::new(answer)?)
        };
        Ok(Redact {
            inner: Arc::new(Rewriter {
                request,
                response,
                placeholder,
                mode: self.mode,
                salt: self
                    .salt
                    .clone()
                    .map(|s| s.0)
                    .unwrap_or_default()
                    .into_bytes(),
                placeholders: regex::Regex::new(&Pattern::placeholder().regex)
                    .map_err(|e| FilterError::InvalidOption(e.to_string()))?,
            }),
        })
    }
}

#[derive(Debug)]
pub struct Redact {
    inner: Arc<Rewriter>,
}

/// The compiled filter, shared by the streams it follows.
pub(crate) struct Rewriter {
    request: Option<Detector>,
    /// The answer's detector: the patterns when `on` has `response`, and the placeholders
    /// when `restore` is set (at index `placeholder`).
    response: Option<Detector>,
    placeholder: Option<usize>,
    mode: Mode,
    salt: Vec<u8>,
    /// What a placeholder looks like, to find those a request already holds.
    placeholders: regex::Regex,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the salt.
        f.debug_struct("Rewriter")
            .field("request", &self.request)
            .field("response", &self.response)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Fields whose string values are the format's, not text: never rewritten. Signed
/// reasoning (`thinking`, with its `signature`) is among them, since a provider refuses a
/// conversation whose reasoning was changed. (A `match`: asked of every key of every body.)
fn is_not_text(key: &[u8]) -> bool {
    matches!(
        key,
        b"id"
            | b"model"
            | b"role"
            | b"type"
            | b"object"
            | b"name"
            | b"call_id"
            | b"tool_call_id"
            | b"tool_use_id"
            | b"signature"
            | b"encrypted_content"
            | b"finish_reason"
            | b"stop_reason"
            | b"finishReason"
            | b"system_fingerprint"
            | b"data"
            | b"mime_type"
            | b"mimeType"
            | b"media_type"
            | b"thinking"
    )
}

/// Calls `f` on every string of `value` that is text (see [`is_not_text`]: only a string under
/// one of those keys is skipped, an object under one is searched like any other); whether
/// any call changed something.
pub(crate) fn each_text(value: &mut Value, f: &mut dyn FnMut(&mut String) -> bool) -> bool {
    match value {
        Value::String(text) => f(text),
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| each_text(v, f) | changed),
        Value::Object(fields) => fields
            .iter_mut()
            .filter(|(k, v)| !(v.is_string() && is_not_text(k.as_bytes())))
            .fold(false, |changed, (_, v)| each_text(v, f) | changed),
        _ => false,
    }
}

/// Most distinct values one request numbers; past it placeholders lose their number
/// (`[EMAIL]`) rather than grow the request's memory without bound.
const MAX_PLACEHOLDERS: usize = 4096;

impl Rewriter {
    /// `text` with what `detector` finds replaced; `None` when it finds nothing.
    pub(crate) fn rewrite(
        &self,
        detector: &Detector,
        text: &str,
        memo: &mut Cow<'_, Memo>,
    ) -> Option<String> {
        self.rewrite_from(detector, text, 0, memo)
    }

    /// `text[from..]` with what `detector` finds there replaced, `text[..from]` being the
    /// context before it; `None` when it finds nothing.
    pub(crate) fn rewrite_from(
        &self,
        detector: &Detector,
        text: &str,
        from: usize,
        memo: &mut Cow<'_, Memo>,
    ) -> Option<String> {
        let found = detector.find_from(text, from);
        self.rewrite_found(detector, text, from, &found, memo)
    }

    /// `text[from..]` with the values `found` there replaced; `None` when there are none.
    pub(crate) fn rewrite_found(
        &self,
        detector: &Detector,
        text: &str,
        from: usize,
        found: &[Found],
        memo: &mut Cow<'_, Memo>,
    ) -> Option<String> {
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len() + 16);
        let mut at = from;
        for f in found {
            out.push_str(&text[at..f.start]);
            let value = &text[f.start..f.end];
            if Some(f.pattern) == self.placeholder {
                out.push_str(memo.original(value).unwrap_or(value));
            } else {
                self.replace(&detector.label(f.pattern).0, value, memo, &mut out);
            }
            at = f.end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }

    fn replace(&self, label: &str, value: &str, memo: &mut Cow<'_, Memo>, out: &mut String) {
        match self.mode {
            Mode::Mask => out.extend(std::iter::repeat_n('*', value.chars().count())),
            Mode::Hash => {
                // HMAC accepts keys of any length.
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.salt) else {
                    out.push_str("[REDACTED]");
                    return;
                };
                mac.update(value.as_bytes());
                let digest = mac.finalize().into_bytes();
                out.push('[');
                out.push_str(label);
                out.push(':');
                out.push_str(&hex::encode(&digest[..8]));
                out.push(']');
            }
            Mode::Placeholder => {
                if let Some(known) = memo.placeholder_of(value) {
                    out.push_str(known);
                    return;
                }
                if memo.placeholders.len() >= MAX_PLACEHOLDERS {
                    out.push('[');
                    out.push_str(label);
                    out.push(']');
                    return;
                }
                let mut n = 1 + memo
                    .placeholders
                    .iter()
                    .filter(|(p, _)| is_placeholder_of(p, label))
                    .count();
                let mut placeholder = numbered(label, n);
                // One the client wrote itself is not ours to restore.
                while memo.reserved.contains(&placeholder) {
                    n += 1;
                    placeholder = numbered(label, n);
                }
                out.push_str(&placeholder);
                // The one write: an answer's memo is copied only when it numbers a value.
                memo.to_mut().remember(placeholder, value.to_owned());
            }
        }
    }

    /// Every text of a JSON document through `detector`; the new document if it changed.
    fn rewrite_json(
        &self,
        detector: &Detector,
        body: &[u8],
        memo: &mut Cow<'_, Memo>,
    ) -> Result<Option<Vec<u8>>, FilterError> {
        // Placeholder-like text the client wrote is recorded first, so no value is numbered
        // into it. Every such text ends in a digit and `]`: most bodies never get as far as
        // the expression.
        if self.mode == Mode::Placeholder && may_hold_placeholder(body) {
            let text = String::from_utf8_lossy(body);
            for found in self.placeholders.find_iter(&text) {
                if memo.original(found.as_str()).is_none()
                    && !memo.reserved.iter().any(|r| r == found.as_str())
                    && memo.reserved.len() < MAX_PLACEHOLDERS
                {
                    memo.to_mut().reserved.push(found.as_str().to_owned());
                }
            }
        }
        // The texts rewritten in the document's own bytes; the tree only for what the walk
        // cannot follow (which then fails to parse, as it should).
        let mut texts = json::Texts {
            may_change: &|text| detector.admit(text),
            rewrite: &mut |text, admitted| {
                let found = detector.find_admitted(text, 0, admitted);
                self.rewrite_found(detector, text, 0, &found, memo)
            },
        };
        let rewritten = json::rewrite_texts(body, is_not_text, &mut texts);
        if let Ok(result) = rewritten {
            return Ok(result);
        }
        // Not JSON (an answer in another shape): passed on as it is when it is text and
        // nothing in it could be a value or a placeholder (no escape could hide one).
        if std::str::from_utf8(body).is_ok()
            && memchr::memchr(b'\\', body).is_none()
            && !may_hold_placeholder(body)
            && !detector.any(body)
        {
            return Ok(None);
        }
        self.rewrite_tree(detector, body, memo)
    }

    /// [`Rewriter::rewrite_json`] through a parsed tree: for documents the walk cannot
    /// follow, and the reference the walk is tested against.
    fn rewrite_tree(
        &self,
        detector: &Detector,
        body: &[u8],
        memo: &mut Cow<'_, Memo>,
    ) -> Result<Option<Vec<u8>>, FilterError> {
        let mut doc = json_body(body)?;
        let changed = each_text(
            &mut doc,
            &mut |text| match self.rewrite(detector, text, memo) {
                Some(new) => {
                    *text = new;
                    true
                }
                None => false,
            },
        );
        if !changed {
            return Ok(None);
        }
        serde_json::to_vec(&doc)
            .map(Some)
            .map_err(|e| FilterError::Body(e.to_string()))
    }
}

/// Whether `body` has a `]` right after a digit, as every placeholder does: a search for
/// one byte, where the placeholder expression would be a second pass over the body.
fn may_hold_placeholder(body: &[u8]) -> bool {
    memchr::memchr_iter(b']', body).any(|i| i > 0 && body[i - 1].is_ascii_digit())
}

/// `[LABEL_n]`, written without the formatting machinery (a request numbers every value).
fn numbered(label: &str, n: usize) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        // A digit: always ASCII.
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut placeholder = String::with_capacity(label.len() + 3 + digits.len() - at);
    placeholder.push('[');
    placeholder.push_str(label);
    placeholder.push('_');
    for &d in &digits[at..] {
        placeholder.push(char::from(d));
    }
    placeholder.push(']');
    placeholder
}

/// Whether `placeholder` is `[LABEL_n]` for this label (not a longer label sharing its
/// start).
fn is_placeholder_of(placeholder: &str, label: &str) -> bool {
    placeholder
        .strip_prefix('[')
        .and_then(|p| p.strip_prefix(label))
        .and_then(|p| p.strip_prefix('_'))
        .and_then(|p| p.strip_suffix(']'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Filter for Redact {
    fn edits_request_body(&self) -> bool {
        self.inner.request.is_some()
    }

    /// Only the texts of [`each_text`]: the walk writes back string values alone, and a
    /// valid body is always walked (the tree, which writes keys in its own order, is only
    /// for documents the walk cannot follow, and those do not parse).
    fn edits_only_texts(&self) -> bool {
        true
    }

    fn on_request_body(
        &self,
        body: &[u8],
        memo: &mut Memo,
    ) -> Result<Option<Vec<u8>>, FilterError> {
        match &self.inner.request {
            Some(detector) => {
                // Owned: what the request numbers is kept for its answer.
                let mut owned = Cow::Owned(std::mem::take(memo));
                let edited = self.inner.rewrite_json(detector, body, &mut owned);
                *memo = owned.into_owned();
                edited
            }
            None => Ok(None),
        }
    }

    fn edits_response_body(&self) -> bool {
        self.inner.response.is_some()
    }

    fn on_response_body(&self, body: &[u8], memo: &Memo) -> Result<Option<Vec<u8>>, FilterError> {
        match &self.inner.response {
            // Values first seen in the answer are numbered after the request's.
            Some(detector) => self
                .inner
                .rewrite_json(detector, body, &mut Cow::Borrowed(memo)),
            None => Ok(None),
        }
    }

    fn on_stream(&self, memo: &Memo) -> Option<Box<dyn StreamFilter>> {
        self.inner.response.as_ref()?;
        Some(Box::new(stream::RedactStream::new(
            self.inner.clone(),
            memo.clone(),
        )))
    }
}

#[cfg(test)]
mod tests;
