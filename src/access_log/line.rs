//! One access-log line, written field by field.
//!
//! The line has a fixed set of keys, most values are numbers and short names that need no
//! escaping, and it is written once per request: written directly it costs about half of
//! going through serde's map serializer (callgrind, bench/profile.sh a). Keys are literals
//! made at compile time ([`key!`](crate::key)), integers go through `itoa`, times are written
//! as fixed-point decimals from integers (no float formatting), and strings are copied
//! unless they need escaping.

/// A field's key as it is written: `,"name":`. Every field starts with its comma; the
/// first one becomes the object's `{`.
#[macro_export]
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

/// A JSON object under construction; keys are trusted literals ([`key!`](crate::key)),
/// values are escaped.
pub struct JsonLine {
    buf: Vec<u8>,
}

impl JsonLine {
    pub fn with_capacity(capacity: usize) -> JsonLine {
        JsonLine {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.buf.extend_from_slice(key.as_bytes());
        write_str(&mut self.buf, value);
        self
    }

    /// `null` when absent.
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(key, value),
            None => self.raw(key, b"null"),
        }
    }

    pub fn u64(&mut self, key: &'static str, value: u64) -> &mut Self {
        self.raw(key, itoa::Buffer::new().format(value).as_bytes())
    }

    /// `units / 10^decimals`, written with exactly `decimals` digits after the point:
    /// a time in milliseconds with microsecond precision is `fixed(micros, 3)`.
    pub fn fixed(&mut self, key: &'static str, units: u64, decimals: u32) -> &mut Self {
        let scale = 10u64.pow(decimals);
        self.buf.extend_from_slice(key.as_bytes());
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(units / scale).as_bytes());
        if decimals > 0 {
            self.buf.push(b'.');
            let fraction = units % scale;
            let digits = itoa::Buffer::new().format(fraction).len() as u32;
            for _ in digits..decimals {
                self.buf.push(b'0');
            }
            self.buf
                .extend_from_slice(itoa::Buffer::new().format(fraction).as_bytes());
        }
        self
    }

    /// As serde_json writes it: shortest round-trip form, `null` when not finite.
    pub fn f64(&mut self, key: &'static str, value: f64) -> &mut Self {
        if value == 0.0 {
            return self.raw(key, b"0.0");
        }
        if !value.is_finite() {
            return self.raw(key, b"null");
        }
        self.raw(key, ryu::Buffer::new().format_finite(value).as_bytes())
    }

    pub fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        self.raw(key, if value { b"true" } else { b"false" })
    }

    fn raw(&mut self, key: &'static str, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(value);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        match self.buf.first_mut() {
            Some(first) => *first = b'{',
            None => self.buf.push(b'{'),
        }
        self.buf.push(b'}');
        self.buf
    }
}

/// A JSON string: copied as is when nothing in it needs escaping (the usual case for ids,
/// names and paths), else written by serde_json.
fn write_str(buf: &mut Vec<u8>, value: &str) {
    if !lua_free_filters::json_bytes::needs_escape(value.as_bytes()) {
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
            line.str(key!("s"), text)
                .opt_str(key!("none"), None)
                .u64(key!("n"), u64::MAX)
                .fixed(key!("ts"), 1_755_137_921_000_042, 6)
                .fixed(key!("ms"), 12_500, 3)
                .f64(key!("f"), 0.000_132_5)
                .f64(key!("zero"), 0.0)
                .f64(key!("nan"), f64::NAN)
                .bool(key!("b"), true);
            let line = line.finish();
            let ours: serde_json::Value = serde_json::from_slice(&line).unwrap();
            let theirs = serde_json::json!({
                "s": text, "none": null, "n": u64::MAX, "ts": 1755137921.000042, "ms": 12.5,
                "f": 0.0001325, "zero": 0.0, "nan": null, "b": true,
            });
            assert_eq!(ours, theirs, "{text:?}: {}", String::from_utf8_lossy(&line));
        }
        assert_eq!(JsonLine::with_capacity(0).finish(), b"{}");
    }
}
