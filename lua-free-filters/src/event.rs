//! One SSE frame as the stream hooks get it: its lines, and the JSON of its `data:` line
//! to read or replace while every other line (`event:`, `id:`) and the line ending stay as
//! they were.

use bytes::{Bytes, BytesMut};
use serde_json::Value;

pub(crate) struct Frame<'a> {
    lines: Vec<&'a str>,
    data_at: usize,
    crlf: bool,
}

fn data_of(line: &str) -> Option<&str> {
    line.strip_prefix("data:")
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
}

/// The lines of an SSE frame: SSE ends a line at CRLF, LF or a lone CR, and the stream's
/// scanner cuts frames on all three (a lone-CR frame read by LF alone is one line with no
/// `data:` field, which would pass unread).
fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::with_capacity(4);
    let mut rest = text;
    while let Some(end) = rest.find(['\r', '\n']) {
        lines.push(&rest[..end]);
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    lines.push(rest);
    lines
}

impl<'a> Frame<'a> {
    /// `None` when the frame is not UTF-8 or has no `data:` line.
    pub(crate) fn parse(frame: &'a [u8]) -> Option<Frame<'a>> {
        let crlf = frame.windows(2).any(|w| w == b"\r\n");
        let text = std::str::from_utf8(frame).ok()?;
        let mut lines = split_lines(text);
        // The frame ends with its blank line: the split leaves two empty strings.
        while lines.last() == Some(&"") {
            lines.pop();
        }
        let data_at = lines.iter().position(|l| l.starts_with("data:"))?;
        Some(Frame {
            lines,
            data_at,
            crlf,
        })
    }

    /// The event's data: its `data:` lines joined by newlines, as SSE defines it.
    pub(crate) fn data(&self) -> std::borrow::Cow<'a, str> {
        let mut data = self.lines.iter().filter_map(|l| data_of(l));
        let first = data.next().unwrap_or_default();
        match data.next() {
            None => std::borrow::Cow::Borrowed(first),
            Some(second) => {
                let mut joined = format!("{first}\n{second}");
                for more in data {
                    joined.push('\n');
                    joined.push_str(more);
                }
                std::borrow::Cow::Owned(joined)
            }
        }
    }

    /// The event's data as a JSON object, if it is one.
    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_str(self.data().trim_start())
            .ok()
            .filter(Value::is_object)
    }

    /// The frame again with `json` as its data (on one `data:` line).
    pub(crate) fn with_json(&self, json: &Value) -> Option<Bytes> {
        let json = serde_json::to_string(json).ok()?;
        let newline: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        let size = self.lines.iter().map(|l| l.len() + 2).sum::<usize>() + json.len() + 8;
        let mut out = BytesMut::with_capacity(size);
        for (i, line) in self.lines.iter().enumerate() {
            if i == self.data_at {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json.as_bytes());
            } else if data_of(line).is_some() {
                continue;
            } else {
                out.extend_from_slice(line.as_bytes());
            }
            out.extend_from_slice(newline);
        }
        out.extend_from_slice(newline);
        Some(out.freeze())
    }
}
