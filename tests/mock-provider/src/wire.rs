//! Low-level helpers for writing provider bodies by hand.
//!
//! Bodies are written with `write!` into one buffer per response instead of going through
//! `serde_json::Value`: that keeps the exact field order of the recordings (serde_json's
//! `Value` sorts keys) and costs one allocation per response, which matters because the mock
//! is the upstream in throughput benchmarks.

use bytes::Bytes;
use std::fmt;

/// Growable output buffer. Its inherent `write_fmt` returns `()` so that `write!(out, ..)`
/// needs no `Result` handling: appending to a `Vec` cannot fail.
#[derive(Default)]
pub(crate) struct Out(pub(crate) Vec<u8>);

impl Out {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Out(Vec::with_capacity(n))
    }

    pub(crate) fn write_fmt(&mut self, args: fmt::Arguments<'_>) {
        struct Adapter<'a>(&'a mut Vec<u8>);
        impl fmt::Write for Adapter<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.extend_from_slice(s.as_bytes());
                Ok(())
            }
        }
        // Only our own Display impls run here and none of them fails.
        let _ = fmt::write(&mut Adapter(&mut self.0), args);
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// An SSE stream under construction: one buffer plus the end offset of every event, frozen
/// into zero-copy `Bytes` slices of a single allocation.
#[derive(Default)]
pub(crate) struct Events {
    pub(crate) out: Out,
    ends: Vec<usize>,
}

impl Events {
    pub(crate) fn with_capacity(bytes: usize, events: usize) -> Self {
        Events {
            out: Out::with_capacity(bytes),
            ends: Vec::with_capacity(events),
        }
    }

    /// Closes the event written since the previous `end()`.
    pub(crate) fn end(&mut self) {
        self.ends.push(self.out.len());
    }

    pub(crate) fn freeze(self) -> Vec<Bytes> {
        let all = Bytes::from(self.out.0);
        let mut start = 0;
        self.ends
            .into_iter()
            .map(|end| {
                let ev = all.slice(start..end);
                start = end;
                ev
            })
            .collect()
    }
}

/// Displays a `&str` as a JSON string literal (with quotes), escaped per RFC 8259.
pub(crate) struct Json<'a>(pub(crate) &'a str);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let s = self.0;
        let mut run = 0;
        for (i, b) in s.bytes().enumerate() {
            let esc: &str = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            f.write_str(&s[run..i])?;
            if esc.is_empty() {
                write!(f, "\\u{b:04x}")?;
            } else {
                f.write_str(esc)?;
            }
            run = i + 1;
        }
        f.write_str(&s[run..])?;
        f.write_str("\"")
    }
}

/// Alphabets of the id kinds the providers use.
#[derive(Clone, Copy)]
pub(crate) enum Alphabet {
    /// `chatcmpl-…`, `call_…`, `msg_01…`, `toolu_01…`: ASCII letters and digits.
    Base62,
    /// Responses API item ids (`resp_…`, `msg_…`, `fc_…`): lowercase hex.
    Hex,
    /// Gemini `responseId`: URL-safe base64 characters.
    Base64Url,
}

/// A deterministic, provider-looking id: `prefix` + `len` characters derived from `seed`.
/// The seed is the request sequence number (plus a salt per id kind), so ids are unique per
/// request within one mock process and reproducible across runs.
pub(crate) struct Id {
    pub(crate) prefix: &'static str,
    pub(crate) seed: u64,
    pub(crate) alphabet: Alphabet,
    pub(crate) len: usize,
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        const HEX: &[u8] = b"0123456789abcdef";
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let alphabet = match self.alphabet {
            Alphabet::Base62 => B62,
            Alphabet::Hex => HEX,
            Alphabet::Base64Url => B64,
        };
        f.write_str(self.prefix)?;
        let mut state = self.seed;
        let mut buf = [0u8; 64];
        let len = self.len.min(buf.len());
        for slot in buf.iter_mut().take(len) {
            let r = splitmix64(&mut state);
            // Modulo bias is irrelevant for ids that only need to look plausible.
            *slot = alphabet[(r % alphabet.len() as u64) as usize];
        }
        // Every alphabet byte is ASCII.
        f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
    }
}

/// splitmix64: a tiny, good-enough mixer for ids and embedding vectors.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Re-indents compact JSON the way OpenAI and Google pretty-print their non-streaming bodies
/// (two spaces, `": "` after keys, `[]`/`{}` kept on one line). Whitespace outside strings in
/// the input is dropped, so the input may be compact or not.
pub(crate) fn pretty(compact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    };
    let mut i = 0;
    while i < compact.len() {
        let b = compact[i];
        i += 1;
        if in_str {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_str = true;
                out.push(b);
            }
            b'{' | b'[' => {
                let close = if b == b'{' { b'}' } else { b']' };
                let next = compact[i..].iter().position(|c| !c.is_ascii_whitespace());
                if next.map(|n| compact[i + n]) == Some(close) {
                    out.push(b);
                    out.push(close);
                    i += next.unwrap_or(0) + 1;
                } else {
                    out.push(b);
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// Drops insignificant whitespace from valid JSON text, keeping key order (serde_json's `Value`
/// would sort the keys).
pub(crate) fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_str = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

/// Standard base64 (with padding), for `encoding_format: "base64"` embeddings: the official
/// OpenAI SDKs request that format by default.
pub(crate) fn base64(bytes: &[u8], out: &mut Out) {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| T[((n >> shift) & 63) as usize];
        out.push(&[sextet(18), sextet(12)]);
        out.push(&[if chunk.len() > 1 { sextet(6) } else { b'=' }]);
        out.push(&[if chunk.len() > 2 { sextet(0) } else { b'=' }]);
    }
}

/// The deterministic assistant text: word `i` of an answer of any length.
/// Seven words make "Hello from the sira mock provider."; longer answers start over with
/// " Hello", so the concatenation of the first N words is always well defined.
pub(crate) fn word(i: usize) -> &'static str {
    const WORDS: [&str; 7] = ["Hello", " from", " the", " sira", " mock", " provider", "."];
    if i > 0 && i.is_multiple_of(WORDS.len()) {
        " Hello"
    } else {
        WORDS[i % WORDS.len()]
    }
}

/// The concatenation of the first `n` words (the JSON answer, or the `done` text of a stream).
pub(crate) fn text(n: usize) -> String {
    (0..n).map(word).collect()
}

/// Splits a tool-argument JSON text into `pieces` fragments (fewer only when the text is
/// shorter) of about equal size, on char boundaries, the way providers stream arguments.
pub(crate) fn fragments(args: &str, pieces: usize) -> Vec<&str> {
    let len = args.len();
    let pieces = pieces.clamp(1, len.max(1));
    let mut out = Vec::with_capacity(pieces);
    let mut start = 0;
    for i in 1..=pieces {
        let mut end = i * len / pieces;
        while !args.is_char_boundary(end) {
            end += 1;
        }
        if end > start || len == 0 {
            out.push(&args[start..end]);
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_escapes() {
        let s = format!("{}", Json("a\"b\\c\nd\u{1}é"));
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn pretty_matches_openai_style() {
        let p = pretty(br#"{"a":[],"b":{"c":"x,{y}:","d":[1,2]},"e":{}}"#);
        let expected = "{\n  \"a\": [],\n  \"b\": {\n    \"c\": \"x,{y}:\",\n    \"d\": [\n      1,\n      2\n    ]\n  },\n  \"e\": {}\n}";
        assert_eq!(String::from_utf8(p).unwrap(), expected);
    }

    #[test]
    fn base64_known_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            let mut out = Out::default();
            base64(input.as_bytes(), &mut out);
            assert_eq!(String::from_utf8(out.0).unwrap(), expected);
        }
    }

    #[test]
    fn words_and_fragments() {
        assert_eq!(text(7), "Hello from the sira mock provider.");
        assert_eq!(text(8), "Hello from the sira mock provider. Hello");
        let args = r#"{"city":"Zürich"}"#;
        for n in 1..30 {
            let f = fragments(args, n);
            assert_eq!(f.concat(), args);
            assert!(f.len() <= n.max(1));
            assert!(f.iter().all(|p| !p.is_empty()));
        }
        for n in 1..=17 {
            assert_eq!(
                fragments(r#"{"a":"bcdefghij"}"#, n).len(),
                n,
                "ASCII gives exactly n pieces"
            );
        }
    }

    #[test]
    fn ids_look_right() {
        let id = Id {
            prefix: "chatcmpl-",
            seed: 7,
            alphabet: Alphabet::Base62,
            len: 29,
        }
        .to_string();
        assert_eq!(id.len(), 9 + 29);
        assert!(id[9..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
