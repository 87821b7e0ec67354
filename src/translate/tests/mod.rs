//! Golden, split and rule tests for the translators.
//!
//! Golden files live in `tests/fixtures/expected/` and are compared as parsed JSON (SSE:
//! frame by frame, event name and parsed data). `SIRA_BLESS=1 cargo test --lib translate`
//! rewrites them; every rewritten file must be reviewed against TRANSLATION.md.

mod agents;
mod conformance;
mod golden;
mod rules;
mod split;
mod stream_rules;
mod web_search;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::{ResponseOptions, StreamTranslator};
use crate::format::Format;
use crate::usage::Usage;

pub(super) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

pub(super) const FORMATS: [Format; 4] = [
    Format::OpenAiChat,
    Format::OpenAiResponses,
    Format::Anthropic,
    Format::Gemini,
];

pub(super) fn opts() -> ResponseOptions {
    ResponseOptions {
        model: "client-model".into(),
        request_id: "req_0123456789".into(),
        created: 1_700_000_000,
    }
}

/// Fixture directories holding bodies of a format.
pub(super) fn dirs(format: Format) -> &'static [&'static str] {
    match format {
        Format::OpenAiChat => &["openai", "azure", "openai_compat"],
        Format::OpenAiResponses => &["openai_responses"],
        Format::Anthropic => &["anthropic"],
        Format::Gemini => &["gemini"],
    }
}

pub(super) struct Fixture {
    /// Name in the expected tree: the file stem, prefixed with its directory for the
    /// secondary Chat directories (azure, openai_compat).
    pub name: String,
    pub path: PathBuf,
}

/// Fixtures of `format` in `sub` ("" or "requests") with extension `ext`.
pub(super) fn fixtures(format: Format, sub: &str, ext: &str) -> Vec<Fixture> {
    let mut out = Vec::new();
    for dir in dirs(format) {
        let path = Path::new(FIXTURES).join(dir).join(sub);
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().and_then(|e| e.to_str()) != Some(ext) {
                continue;
            }
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let name = match *dir {
                "azure" | "openai_compat" => format!("{dir}_{stem}"),
                _ => stem,
            };
            out.push(Fixture { name, path: p });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub(super) fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(super) fn pair(from: Format, to: Format) -> String {
    format!("{}_to_{}", from.as_str(), to.as_str())
}

fn bless() -> bool {
    std::env::var_os("SIRA_BLESS").is_some()
}

/// Collects golden mismatches so one run reports all of them.
#[derive(Default)]
pub(super) struct Golden {
    failures: Vec<String>,
}

impl Golden {
    fn expected_path(rel: &str) -> PathBuf {
        Path::new(FIXTURES).join("expected").join(rel)
    }

    fn write(path: &Path, bytes: &[u8]) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }

    pub fn json(&mut self, rel: &str, actual: &Value) {
        let path = Self::expected_path(rel);
        if bless() {
            let mut text = serde_json::to_string_pretty(actual).unwrap();
            text.push('\n');
            return Self::write(&path, text.as_bytes());
        }
        match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            Some(expected) if expected == *actual => {}
            Some(expected) => self.failures.push(format!(
                "{rel}: differs\nexpected: {expected}\nactual:   {actual}"
            )),
            None => self
                .failures
                .push(format!("{rel}: missing (run with SIRA_BLESS=1)")),
        }
    }

    pub fn sse(&mut self, rel: &str, actual: &[u8]) {
        let path = Self::expected_path(rel);
        if bless() {
            return Self::write(&path, actual);
        }
        match std::fs::read(&path) {
            Ok(expected) => {
                let (e, a) = (sse_frames(&expected), sse_frames(actual));
                if e != a {
                    let at = e
                        .iter()
                        .zip(&a)
                        .position(|(x, y)| x != y)
                        .unwrap_or(e.len().min(a.len()));
                    self.failures.push(format!(
                        "{rel}: differs at frame {at}\nexpected: {:?}\nactual:   {:?}",
                        e.get(at),
                        a.get(at)
                    ));
                }
            }
            Err(_) => self
                .failures
                .push(format!("{rel}: missing (run with SIRA_BLESS=1)")),
        }
    }

    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} golden mismatches:\n{}",
            self.failures.len(),
            self.failures.join("\n\n")
        );
    }
}

/// An SSE body as (event name, data) pairs; data is parsed JSON when it is JSON.
pub(super) fn sse_frames(body: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut scanner = crate::sse::SseScanner::new();
    let mut frames = Vec::new();
    scanner
        .feed(Bytes::copy_from_slice(body), &mut frames)
        .unwrap();
    frames.extend(scanner.finish());
    frames
        .iter()
        .filter_map(|f| {
            let ev = crate::sse::Event::parse(f);
            let data = ev.data.as_deref()?;
            let value = serde_json::from_slice(data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()));
            Some((
                ev.event.map(|e| String::from_utf8_lossy(e).into_owned()),
                value,
            ))
        })
        .collect()
}

/// Runs a stream through a fresh translator, fed in the given pieces.
pub(super) fn run_stream<'a>(
    from: Format,
    to: Format,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (BytesMut, Usage) {
    let mut t = StreamTranslator::new(from, to, opts());
    let mut out = BytesMut::new();
    for piece in pieces {
        // Parse errors are reported but the stream goes on; goldens show the effect.
        let _ = t.feed(Bytes::copy_from_slice(piece), &mut out);
    }
    t.finish(&mut out);
    t.finish(&mut out);
    (out, t.usage())
}

pub(super) fn usage_json(u: &Usage) -> Value {
    serde_json::json!({
        "input": u.input,
        "output": u.output,
        "cached_input": u.cached_input,
        "cache_creation_input": u.cache_creation_input,
        "reasoning": u.reasoning,
    })
}

pub(super) type UsageMap = BTreeMap<String, Value>;
