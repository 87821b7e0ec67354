//! `sira-mock`: a fast mock LLM provider speaking the OpenAI (Chat, Responses, embeddings),
//! Azure OpenAI, Anthropic and Gemini wire formats as recorded in `tests/fixtures/`.
//!
//! Used in-process by sira's integration tests ([`MockProvider`]) and as the `sira-mock`
//! binary by the benchmarks and the demo.
//!
//! # Routes
//! | method & path | dialect |
//! |---|---|
//! | `POST /v1/chat/completions` (also `/openai/v1/chat/completions`) | OpenAI Chat, JSON or SSE (`stream: true`) |
//! | `POST /openai/deployments/{d}/chat/completions?api-version=…` | Azure OpenAI chat (404 without `api-version`, like Azure) |
//! | `POST /v1/responses` (also `/openai/v1/responses`) | OpenAI Responses, JSON or typed SSE |
//! | `POST /v1/responses/input_tokens` | OpenAI's token count (counting fields only) |
//! | `POST /v1/embeddings`, `POST /openai/deployments/{d}/embeddings?api-version=…` | OpenAI embeddings |
//! | `GET /v1/models` | OpenAI model list |
//! | `POST /v1/messages`, `POST /v1/messages/count_tokens` | Anthropic |
//! | `POST /v1beta/models/{m}:countTokens` | Gemini's token count (`contents` or `generateContentRequest`) |
//! | `POST /v1beta/models/{m}:generateContent`, `…:streamGenerateContent?alt=sse` (also `/v1/models/…` and Vertex `/v1[beta1]/projects/…/publishers/google/models/{m}:…`) | Gemini |
//! | `GET /health` | `200 ok` |
//!
//! Anything else is a 404 in the JSON error shape of the dialect the path looks like.
//!
//! # Answers
//! Synthesized in the recorded shapes, echoing the request's `model` (Gemini: the model in the
//! path; Azure: the deployment). The text is [`answer_text`]`(N)`: "Hello from the sira mock
//! provider." for the default N = 7, one word per content event. Streams:
//!
//! | dialect | events (N = content events) |
//! |---|---|
//! | OpenAI / Azure chat | [Azure: prompt-filter chunk], role chunk, N content chunks, finish chunk, [usage chunk if `stream_options.include_usage`], `[DONE]` |
//! | Responses | created, in_progress, output_item.added, content_part.added, N deltas, output_text.done, content_part.done, output_item.done, completed |
//! | Anthropic | message_start, content_block_start, ping, N deltas, content_block_stop, message_delta, message_stop |
//! | Gemini | N chunks (at least 1), the last with `finishReason` and final usage; no preamble |
//!
//! A tool call (`x-mock-tool-call` + tools in the request) streams its arguments in
//! min(N, len) fragments (Anthropic: plus an initial empty `input_json_delta`; Responses:
//! `function_call_arguments.delta`s then `.done`, no content_part events; Gemini: one chunk).
//! A request max-tokens cap below N (`max_tokens`, `max_completion_tokens`,
//! `max_output_tokens`, `generationConfig.maxOutputTokens`) shortens a text answer to that many
//! words with the dialect's length stop (`length`, `max_tokens`, `MAX_TOKENS`,
//! `response.incomplete`).
//!
//! # Usage numbers
//! * P (prompt) = `x-mock-input-tokens`, else `ceil(request body bytes / 4)`.
//! * O (output) = `x-mock-output-tokens`, else N after the max-tokens cap.
//! * C (cached) = min(`x-mock-cached-tokens`, P); W = min(`x-mock-cache-write-tokens`, P − C).
//! * OpenAI/Azure: `prompt_tokens` P, `cached_tokens` C, `completion_tokens` O, total P + O.
//!   Responses: `input_tokens` P, `cached_tokens` C, `output_tokens` O, total P + O.
//! * Anthropic: `input_tokens` P − C − W, `cache_read_input_tokens` C,
//!   `cache_creation_input_tokens` W (= `ephemeral_5m_input_tokens`), `output_tokens` O
//!   (`message_start` says 1, `message_delta` says O); count_tokens: P.
//! * Gemini: `promptTokenCount` P, `cachedContentTokenCount` C (only if > 0),
//!   `candidatesTokenCount` O and `totalTokenCount` P + O on the last chunk (earlier chunks:
//!   total = P, no candidates count).
//! * Embeddings: Σ over inputs of max(1, ceil(bytes / 4)) (token arrays: their length), or P.
//!
//! # Knobs
//! Request headers, each with a [`MockConfig`] default and a `sira-mock` flag:
//! `x-mock-events`, `x-mock-delay-ms`, `x-mock-hang-ms` (`forever`), `x-mock-status`,
//! `x-mock-error` (fixture path/name or raw JSON), `x-mock-fixture`, `x-mock-fail-after`,
//! `x-mock-error-event-after`, `x-mock-split` (`whole`|`bytes`), `x-mock-tool-call`,
//! `x-mock-tool-args`, `x-mock-input-tokens`, `x-mock-output-tokens`, `x-mock-cached-tokens`,
//! `x-mock-cache-write-tokens`, `x-mock-retry-after`. See [`MockConfig`] for each one. An
//! "event" for `fail-after`, `error-event-after`, delays and [`StreamLog`] is one SSE event of
//! the whole stream (preamble and terminator included), i.e. one blank-line-terminated unit.
//! Bad values give a 400 in the dialect's error shape naming the knob.
//!
//! # Layout
//! `server` (accept loop) → `routes` (route, knobs, dispatch) → `openai`, `azure`,
//! `responses`, `anthropic`, `gemini`, `embeddings` (bodies) → `body` (pacing, split writes,
//! abort detection). `knobs`, `errors`, `fixtures` (embedded by `build.rs`), `record` (what
//! tests read back), `wire` (JSON writing helpers).

mod anthropic;
mod azure;
mod body;
mod embeddings;
mod errors;
mod fixtures;
mod gemini;
mod knobs;
mod openai;
mod provider;
mod record;
mod reply;
mod responses;
mod routes;
mod server;
mod wire;

pub use embeddings::DEFAULT_DIMENSIONS;
pub use fixtures::{fixture_bytes, fixture_paths};
pub use knobs::{
    Hang, KnobError, MockConfig, Split, DEFAULT_EVENTS, DEFAULT_TOOL_ARGS, MAX_EVENTS,
};
pub use record::{AbortedStream, RecordedRequest, StreamLog, StreamOutcome};

use record::Shared;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The text of an answer with `n` content events (`n` words).
pub fn answer_text(n: usize) -> String {
    wire::text(n)
}

/// A running mock on `127.0.0.1:<random port>`, on its own thread and tokio runtime so that it
/// works from sync and async tests alike. Dropping it stops the server and closes its
/// connections.
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// `true` asks for a graceful stop.
    shutdown: Option<oneshot::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl MockProvider {
    /// Starts with default knobs.
    pub fn start() -> MockProvider {
        Self::start_with(MockConfig::default())
    }

    /// Starts with `config` as the default for every knob.
    ///
    /// # Panics
    /// If the machine cannot bind a loopback port or spawn a thread: test infrastructure is
    /// broken then, and [`MockProvider::try_start_with`] exists for callers that care.
    #[allow(clippy::panic)]
    pub fn start_with(config: MockConfig) -> MockProvider {
        match Self::try_start_with(config) {
            Ok(mock) => mock,
            Err(e) => panic!("sira-mock: cannot start on 127.0.0.1:0: {e}"),
        }
    }

    pub fn try_start_with(config: MockConfig) -> std::io::Result<MockProvider> {
        Self::try_start_on(0, config)
    }

    /// Starts on `127.0.0.1:port` (0 = any free port): a test brings an endpoint it stopped
    /// back at the same address.
    pub fn try_start_on(port: u16, config: MockConfig) -> std::io::Result<MockProvider> {
        // Bound before returning so that `addr()` is valid at once; connections made before
        // the runtime polls the listener wait in the backlog.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = oneshot::channel::<bool>();
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("sira-mock-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                        server::serve(listener, server_shared, async { rx.await.unwrap_or(false) })
                            .await;
                    }
                });
                // Cancels every connection task without waiting for hung or slow ones.
                runtime.shutdown_background();
            })?;
        Ok(MockProvider {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order (empty if recording is disabled).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Timing of every streamed response so far, in the order the streams started.
    pub fn stream_log(&self) -> Vec<StreamLog> {
        self.shared.streams()
    }

    /// Streams whose client went away before the stream ended, in the order noticed.
    pub fn aborted_streams(&self) -> Vec<AbortedStream> {
        self.shared.aborted()
    }

    /// Polls (every 5 ms) until at least `n` aborted streams were seen; false on timeout.
    /// Blocks the calling thread: from async code prefer [`MockProvider::wait_aborted_async`].
    pub fn wait_aborted(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.aborted_count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// [`MockProvider::wait_aborted`] without blocking the caller's runtime.
    pub fn wait_aborted_async(
        &self,
        n: usize,
        timeout: Duration,
    ) -> impl Future<Output = bool> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            let deadline = Instant::now() + timeout;
            loop {
                if shared.aborted_count() >= n {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// TCP connections accepted so far (keep-alive reuse shows as fewer connections than
    /// requests).
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets recorded requests, stream logs and aborted streams (not the connection count).
    pub fn clear(&self) {
        self.shared.clear();
    }
}

impl MockProvider {
    /// Stops as a model server draining for a restart does: no new connections, idle ones
    /// closed, requests in progress answered first.
    pub fn stop_gracefully(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(false);
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

/// Serves on an already bound listener until `shutdown` resolves: the binary's entry point,
/// on whatever runtime the caller built.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()>,
) {
    server::serve(listener, Arc::new(Shared::new(config)), async {
        shutdown.await;
        false
    })
    .await;
}
