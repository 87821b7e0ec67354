//! One access-log line, written field by field.
//!
//! The line has a fixed set of keys, most values are numbers and short names that need no
//! escaping, and it is written once per request: written directly (integers through `itoa`,
//! floats through `ryu`, strings copied unless they need escaping) it costs about a quarter
//! of going through serde's map serializer (callgrind, bench/profile.sh a).

/// A JSON object under construction; keys are trusted literals, values are escaped.
pub struct JsonLine {
    buf: Vec<u8>,
    first: bool,
}

impl JsonLine {
    pub fn with_capacity(capacity: usize) -> JsonLine {
        let mut buf = Vec::with_capacity(capacity);
        buf.push(b'{');
        JsonLine { buf, first: true }
    }

    fn key(&mut self, key: &'static str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.key(key);
        write_str(&mut self.buf, value);
        self
    }

    /// `null` when absent.
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(key, value),
            None => {
                self.key(key);
                self.buf.extend_from_slice(b"null");
                self
            }
        }
    }

    pub fn u64(&mut self, key: &'static str, value: u64) -> &mut Self {
        self.key(key);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    /// As serde_json writes it: shortest round-trip form, `null` when not finite.
    pub fn f64(&mut self, key: &'static str, value: f64) -> &mut Self {
        self.key(key);
        if value.is_finite() {
            self.buf
                .extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
        } else {
            self.buf.extend_from_slice(b"null");
        }
        self
    }

    pub fn opt_f64(&mut self, key: &'static str, value: Option<f64>) -> &mut Self {
        match value {
            Some(value) => self.f64(key, value),
            None => {
                self.key(key);
                self.buf.extend_from_slice(b"null");
                self
            }
        }
    }

    pub fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }
}

/// A JSON string: copied as is when nothing in it needs escaping (the usual case for ids,
/// names and paths), else written by serde_json.
fn write_str(buf: &mut Vec<u8>, value: &str) {
    let plain = value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        buf.push(b'"');
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'"');
    } else if serde_json::to_writer(&mut *buf, value).is_err() {
        // Writing a string into a Vec cannot fail; keep the line valid JSON regardless.
        buf.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_serde_json() {
        for text in [
            "plain",
            "with \"quotes\"",
            "back\\slash",
            "ctrl\u{1}\n",
            "ünï😀",
            "",
        ] {
            let mut line = JsonLine::with_capacity(64);
            line.str("s", text)
                .opt_str("none", None)
                .u64("n", u64::MAX)
                .f64("f", 1755137921.123456)
                .f64("nan", f64::NAN)
                .opt_f64("o", Some(0.25))
                .bool("b", true);
            let ours: serde_json::Value = serde_json::from_slice(&line.finish()).unwrap();
            let theirs = serde_json::json!({
                "s": text, "none": null, "n": u64::MAX, "f": 1755137921.123456,
                "nan": null, "o": 0.25, "b": true,
            });
            assert_eq!(ours, theirs, "{text:?}");
        }
    }
}
