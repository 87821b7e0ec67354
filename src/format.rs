//! The wire formats sira speaks, on either side of the proxy.
//!
//! A client picks a format by the route it calls (its *surface*); a provider speaks the
//! format of its kind. When the two are equal the body passes through untouched.

use std::fmt;

/// One request/response/stream dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// OpenAI Chat Completions (`/v1/chat/completions`), also Azure OpenAI and
    /// OpenAI-compatible servers.
    OpenAiChat,
    /// OpenAI Responses (`/v1/responses`), what Codex CLI speaks.
    OpenAiResponses,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// Google Gemini `generateContent` / `streamGenerateContent`.
    Gemini,
}

impl Format {
    /// Label used in metrics and access logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::OpenAiChat => "openai",
            Format::OpenAiResponses => "openai-responses",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
        }
    }

    /// The format [`Format::as_str`] names.
    pub fn parse(name: &str) -> Option<Format> {
        [
            Format::OpenAiChat,
            Format::OpenAiResponses,
            Format::Anthropic,
            Format::Gemini,
        ]
        .into_iter()
        .find(|format| format.as_str() == name)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The recorded wire examples (`tests/fixtures/<provider>/`) whose name ends in
/// `extension`, each with the format it is written in: (path, format, bytes).
#[cfg(test)]
pub fn recorded(extension: &str) -> Vec<(String, Format, Vec<u8>)> {
    let dirs = [
        ("openai", Format::OpenAiChat),
        ("openai_compat", Format::OpenAiChat),
        ("azure", Format::OpenAiChat),
        ("anthropic", Format::Anthropic),
        ("openai_responses", Format::OpenAiResponses),
        ("gemini", Format::Gemini),
    ];
    let mut found = Vec::new();
    for (dir, format) in dirs {
        let dir = format!("{}/tests/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(dir).expect("the recorded examples") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == extension) {
                let bytes = std::fs::read(&path).expect("a recorded example");
                found.push((path.display().to_string(), format, bytes));
            }
        }
    }
    found
}
