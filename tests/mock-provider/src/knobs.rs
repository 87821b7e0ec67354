//! Per-request behaviour knobs: `x-mock-*` request headers over `MockConfig` defaults.

use crate::fixtures::{self, Fixture};
use crate::provider::Provider;
use http::{HeaderMap, StatusCode};
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Defaults for every knob; a request header of the same name overrides the field for that
/// request. `MockConfig::default()` is "no knobs": synthesized answers in the recorded shape.
#[derive(Clone, Debug, Default)]
pub struct MockConfig {
    /// `x-mock-events`: content delta events per stream and words per JSON answer (default 7).
    pub events: Option<usize>,
    /// `x-mock-delay-ms`: pause between consecutive stream events (none before the first).
    pub delay: Option<Duration>,
    /// `x-mock-hang-ms`: pause before the response head; `forever` never answers.
    pub hang: Option<Hang>,
    /// `x-mock-status`: answer with this HTTP status and the provider's error body.
    pub status: Option<u16>,
    /// `x-mock-error`: error body, a fixture path/name (`error_529_overloaded`) or raw JSON.
    pub error: Option<String>,
    /// `x-mock-fixture`: replay this recorded fixture (path relative to `tests/fixtures`).
    pub fixture: Option<String>,
    /// `x-mock-fail-after`: send N stream events, then cut the connection.
    pub fail_after: Option<usize>,
    /// `x-mock-error-event-after`: send N stream events, then the provider's in-stream error.
    pub error_event_after: Option<usize>,
    /// `x-mock-split`: `whole` (one write per event) or `bytes` (7-byte writes).
    pub split: Option<Split>,
    /// `x-mock-tool-call`: answer with a call of this tool (if the request declares tools).
    pub tool_call: Option<String>,
    /// `x-mock-tool-args`: the tool call's arguments, a JSON object.
    pub tool_args: Option<String>,
    /// `x-mock-input-tokens`: prompt tokens to report instead of `ceil(body_len / 4)`.
    pub input_tokens: Option<u64>,
    /// `x-mock-output-tokens`: output tokens to report instead of the number of content events.
    pub output_tokens: Option<u64>,
    /// `x-mock-cached-tokens`: cache-read prompt tokens (a subset of the prompt tokens).
    pub cached_tokens: Option<u64>,
    /// `x-mock-cache-write-tokens`: Anthropic `cache_creation_input_tokens`.
    pub cache_write_tokens: Option<u64>,
    /// `x-mock-retry-after`: seconds, sent as `retry-after` on error responses.
    pub retry_after: Option<u64>,
    /// Do not keep requests and stream logs (the benchmark binary sets this: memory would grow
    /// with every request). Aborted streams and connections are still counted.
    pub disable_recording: bool,
}

/// `x-mock-hang-ms` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hang {
    For(Duration),
    Forever,
}

/// `x-mock-split` value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// One write per event (default).
    #[default]
    Whole,
    /// Each event in 7-byte writes with a flush between them.
    Bytes,
}

/// Default number of content events: makes "Hello from the sira mock provider.".
pub const DEFAULT_EVENTS: usize = 7;
/// Pre-rendered streams cost memory; a million-event stream is a config mistake.
pub const MAX_EVENTS: usize = 100_000;
/// Tool arguments used when `x-mock-tool-args` is absent (shaped like the recorded calls).
pub const DEFAULT_TOOL_ARGS: &str = r#"{"location":"San Francisco, CA","unit":"celsius"}"#;

/// A bad knob value; answered with 400 and this message in the provider's error shape.
#[derive(Debug)]
pub struct KnobError(pub String);

impl fmt::Display for KnobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KnobError {}

/// Where an error body comes from.
#[derive(Clone, Copy)]
pub(crate) enum ErrorBody<'a> {
    Fixture(Fixture),
    Raw(&'a str),
}

/// The knobs in force for one request, validated.
pub(crate) struct Knobs<'a> {
    pub(crate) events: usize,
    pub(crate) delay: Duration,
    pub(crate) hang: Option<Hang>,
    pub(crate) status: Option<StatusCode>,
    pub(crate) error: Option<ErrorBody<'a>>,
    pub(crate) fixture: Option<Fixture>,
    pub(crate) fail_after: Option<usize>,
    pub(crate) error_event_after: Option<usize>,
    pub(crate) split: Split,
    pub(crate) tool_call: Option<&'a str>,
    pub(crate) tool_args: Cow<'a, str>,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) cached_tokens: u64,
    pub(crate) cache_write_tokens: u64,
    pub(crate) retry_after: Option<u64>,
}

impl<'a> Knobs<'a> {
    /// Reads the `x-mock-*` headers, falling back to `config`. Fixture names are resolved
    /// relative to the provider's fixture directory when they are not full paths.
    pub(crate) fn resolve(
        headers: &'a HeaderMap,
        config: &'a MockConfig,
        provider: Provider,
    ) -> Result<Self, KnobError> {
        let events = num(headers, "x-mock-events")?
            .map_or(config.events, |v| Some(v as usize))
            .unwrap_or(DEFAULT_EVENTS);
        if events > MAX_EVENTS {
            return Err(KnobError(format!(
                "x-mock-events: {events} is above the mock's limit of {MAX_EVENTS}"
            )));
        }
        let delay = num(headers, "x-mock-delay-ms")?
            .map(Duration::from_millis)
            .or(config.delay)
            .unwrap_or_default();
        let hang = match header(headers, "x-mock-hang-ms")? {
            Some(v) if v.eq_ignore_ascii_case("forever") => Some(Hang::Forever),
            Some(v) => Some(Hang::For(Duration::from_millis(parse_num(
                "x-mock-hang-ms",
                v,
            )?))),
            None => config.hang,
        };
        let status = match num(headers, "x-mock-status")?.or(config.status.map(u64::from)) {
            Some(s) => Some(
                u16::try_from(s)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| {
                        KnobError(format!(
                            "x-mock-status: {s} is not an HTTP status code (100-999)"
                        ))
                    })?,
            ),
            None => None,
        };
        let error = match header(headers, "x-mock-error")?.or(config.error.as_deref()) {
            Some(v) if v.trim_start().starts_with(['{', '[']) => Some(ErrorBody::Raw(v)),
            Some(v) => Some(ErrorBody::Fixture(find_fixture(
                "x-mock-error",
                v,
                provider,
            )?)),
            None => None,
        };
        let fixture = match header(headers, "x-mock-fixture")?.or(config.fixture.as_deref()) {
            Some(v) => Some(find_fixture("x-mock-fixture", v, provider)?),
            None => None,
        };
        let split = match header(headers, "x-mock-split")? {
            Some(v) if v.eq_ignore_ascii_case("bytes") => Split::Bytes,
            Some(v) if v.eq_ignore_ascii_case("whole") => Split::Whole,
            Some(v) => {
                return Err(KnobError(format!(
                    "x-mock-split: expected `bytes` or `whole`, got {v:?}"
                )))
            }
            None => config.split.unwrap_or_default(),
        };
        let tool_args = match header(headers, "x-mock-tool-args")?.or(config.tool_args.as_deref()) {
            Some(v) => Cow::Owned(tool_args(v)?),
            None => Cow::Borrowed(DEFAULT_TOOL_ARGS),
        };
        Ok(Knobs {
            events,
            delay,
            hang,
            status,
            error,
            fixture,
            fail_after: num(headers, "x-mock-fail-after")?
                .map(|v| v as usize)
                .or(config.fail_after),
            error_event_after: num(headers, "x-mock-error-event-after")?
                .map(|v| v as usize)
                .or(config.error_event_after),
            split,
            tool_call: header(headers, "x-mock-tool-call")?
                .or(config.tool_call.as_deref())
                .filter(|s| !s.is_empty()),
            tool_args,
            input_tokens: num(headers, "x-mock-input-tokens")?.or(config.input_tokens),
            output_tokens: num(headers, "x-mock-output-tokens")?.or(config.output_tokens),
            cached_tokens: num(headers, "x-mock-cached-tokens")?
                .or(config.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: num(headers, "x-mock-cache-write-tokens")?
                .or(config.cache_write_tokens)
                .unwrap_or(0),
            retry_after: num(headers, "x-mock-retry-after")?.or(config.retry_after),
        })
    }

    /// Whether this request gets an HTTP error instead of an answer. `x-mock-error` alone means
    /// an HTTP error too, unless `x-mock-error-event-after` asks for it inside the stream.
    pub(crate) fn wants_http_error(&self) -> bool {
        self.status.is_some() || (self.error.is_some() && self.error_event_after.is_none())
    }
}

impl MockConfig {
    /// Checks the defaults the way a request would see them (the binary refuses to start on a
    /// bad value instead of answering 400 to every request).
    pub fn validate(&self) -> Result<(), KnobError> {
        let headers = HeaderMap::new();
        Knobs::resolve(&headers, self, Provider::OpenAi).map(|_| ())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, KnobError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| KnobError(format!("{name}: value is not visible ASCII"))),
    }
}

fn num(headers: &HeaderMap, name: &'static str) -> Result<Option<u64>, KnobError> {
    header(headers, name)?
        .map(|v| parse_num(name, v))
        .transpose()
}

fn parse_num(name: &str, v: &str) -> Result<u64, KnobError> {
    v.parse().map_err(|_| {
        KnobError(format!(
            "{name}: expected a non-negative integer, got {v:?}"
        ))
    })
}

fn find_fixture(knob: &str, name: &str, provider: Provider) -> Result<Fixture, KnobError> {
    fixtures::resolve(name, provider.fixture_dir()).ok_or_else(|| {
        KnobError(format!(
            "{knob}: no embedded fixture {name:?} (give a path relative to tests/fixtures, e.g. \
             anthropic/error_529_overloaded.json, or a name inside {}/)",
            provider.fixture_dir()
        ))
    })
}

/// Validates tool arguments (a JSON object, as every provider requires) and makes them compact,
/// keeping the caller's key order, so that they can be embedded verbatim.
fn tool_args(v: &str) -> Result<String, KnobError> {
    match serde_json::from_str::<serde_json::Value>(v) {
        Ok(serde_json::Value::Object(_)) => Ok(crate::wire::compact(v)),
        Ok(_) => Err(KnobError(
            "x-mock-tool-args: expected a JSON object".to_owned(),
        )),
        Err(e) => Err(KnobError(format!("x-mock-tool-args: invalid JSON: {e}"))),
    }
}
