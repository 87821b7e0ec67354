//! Test harness: the real `sira` binary on ephemeral loopback ports, configured from YAML
//! written to a temporary directory.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SIRA: &str = env!("CARGO_BIN_EXE_sira");

/// The secret of the test key `team-a` (its hash is in [`KEYS`]).
pub const KEY_A: &str = "sk-test-team-a";
/// The secret of the test key `team-b`, allowed only `gpt-4o*` and `anthropic/*`.
pub const KEY_B: &str = "sk-test-team-b";

/// An `auth:` section with the two test keys.
pub fn keys_section() -> String {
    format!(
        "auth:\n  keys:\n    - {{ name: team-a, hash: \"{}\" }}\n    - {{ name: team-b, hash: \"{}\", models: [\"gpt-4o*\", \"anthropic/*\"] }}\n",
        sira::auth::hash_key(KEY_A),
        sira::auth::hash_key(KEY_B)
    )
}

/// A port that is free now and that no other test of this process will be given.
///
/// sira binds its listeners itself (Pingora takes addresses, not sockets), so the harness
/// must hand it a port number. Ports come from a range below Linux's ephemeral range (where
/// the in-process mocks get theirs), each at most once per test process, and are checked
/// free; `Sira::start` still retries with fresh ports if another program grabs one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 12_000;
    const HIGH: u32 = 32_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        LOW + (std::process::id() * 7919) % (HIGH - LOW),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let candidate = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + (candidate - LOW) % (HIGH - LOW)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running sira process; killed on drop.
pub struct Sira {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Sira {
    /// Starts sira with `body` (the config minus `server:` and `logging:`), substituting
    /// `{mock}` with `mock_url`.
    pub fn start(body: &str, mock_url: &str) -> Sira {
        Self::start_with_server(body, mock_url, "")
    }

    /// Like [`start`](Self::start) with extra `server:` keys (indented by 2, one per line).
    pub fn start_with_server(body: &str, mock_url: &str, server_extra: &str) -> Sira {
        Self::start_with_env(body, mock_url, server_extra, &[])
    }

    /// Like [`start_with_server`](Self::start_with_server) with extra environment variables.
    pub fn start_with_env(
        body: &str,
        mock_url: &str,
        server_extra: &str,
        env: &[(&str, &str)],
    ) -> Sira {
        let mut last_err = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let config_path = dir.path().join("sira.yaml");
            let config = render_config(body, mock_url, addr, admin, dir.path(), server_extra);
            std::fs::write(&config_path, config).unwrap();
            let token = server_extra
                .lines()
                .find_map(|l| l.trim().strip_prefix("admin_token:"))
                .map(|t| t.trim().to_owned());
            match spawn(&config_path, dir.path(), addr, admin, token.as_deref(), env) {
                Ok(child) => {
                    return Sira {
                        child,
                        addr,
                        admin,
                        dir,
                        config_path,
                    }
                }
                Err(e) => last_err = e,
            }
        }
        panic!("sira did not start: {last_err}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// `GET` of an admin path, read as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(self.admin_url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rewrites the config file (same listeners) for a reload.
    pub fn rewrite_config(&self, body: &str, mock_url: &str) {
        let config = render_config(body, mock_url, self.addr, self.admin, self.dir.path(), "");
        std::fs::write(&self.config_path, config).unwrap();
    }

    pub fn write_raw_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The process's exit status once it exited, waiting at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every access-log line so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("access log line is JSON"))
            .collect()
    }

    /// Waits until the access log has at least `n` lines.
    pub fn wait_access_log(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.access_log();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The Prometheus text of the admin listener.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample (`name{labels}` exactly as exposed), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

impl Drop for Sira {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sira stderr ---\n{}", self.stderr());
        }
    }
}

fn render_config(
    body: &str,
    mock_url: &str,
    addr: SocketAddr,
    admin: SocketAddr,
    dir: &Path,
    server_extra: &str,
) -> String {
    // A short grace period and two worker threads unless the test sets its own.
    let grace = if server_extra.contains("grace_period:") {
        ""
    } else {
        "  grace_period: 1s\n"
    };
    let threads = if server_extra.contains("threads:") {
        ""
    } else {
        "  threads: 2\n"
    };
    format!(
        "server:\n  listen: [\"{addr}\"]\n  admin: \"{admin}\"\n{threads}{grace}{server_extra}logging:\n  level: info\n  access_log: {}\n{}",
        dir.join("access.log").display(),
        body.replace("{mock}", mock_url)
    )
}

fn spawn(
    config: &Path,
    dir: &Path,
    addr: SocketAddr,
    admin: SocketAddr,
    token: Option<&str>,
    env: &[(&str, &str)],
) -> Result<Child, String> {
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut child = Command::new(SIRA)
        .args(["run", "-c"])
        .arg(config)
        .envs(env.iter().copied())
        .env("SIRA_UPGRADE_SOCK", dir.join("upgrade.sock"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut log = String::new();
            let _ = std::fs::File::open(dir.join("stderr.log"))
                .and_then(|mut f| f.read_to_string(&mut log));
            return Err(format!("exited with {status}: {log}"));
        }
        let ready = std::net::TcpStream::connect(addr).is_ok()
            && std::net::TcpStream::connect(admin).is_ok();
        if ready {
            // Listening ports alone could belong to another process: make sure this sira
            // is alive and is the one answering.
            std::thread::sleep(Duration::from_millis(20));
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status} after binding"));
            }
            if answers_with_config(admin, config, token) {
                return Ok(child);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("not listening after 10s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the admin listener at `admin` serves the config file `config`.
fn answers_with_config(admin: SocketAddr, config: &Path, token: Option<&str>) -> bool {
    use std::io::Write;
    let Ok(mut conn) = std::net::TcpStream::connect(admin) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let request =
        format!("GET /admin/config HTTP/1.1\r\nhost: sira\r\n{auth}connection: close\r\n\r\n");
    if conn.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    response.contains(&format!("\"path\":\"{}\"", config.display()))
}

/// A child process killed and waited for when the test ends, however it ends.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the `sira` binary with `args` and stdin, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: &str, cwd: &Path) -> (i32, String, String) {
    run_cli_with_env(args, stdin, cwd, &[])
}

/// [`run_cli`] with `env` added to the binary's environment.
pub fn run_cli_with_env(
    args: &[&str],
    stdin: &str,
    cwd: &Path,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(SIRA)
        .args(args)
        .current_dir(cwd)
        .env_remove("SIRA_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A reqwest client that does not pool (each test request is independent unless a test
/// deliberately reuses a client).
pub fn client() -> reqwest::Client {
    // The tests speak plain HTTP: loading the system's root certificates for every client
    // (reqwest's rustls feature, which sira uses for JWKS URLs) would cost ~10 ms each.
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap()
}

/// A POST to `path` with the `team-a` key where the surface's SDKs put it (`x-api-key` for
/// Anthropic's routes, `x-goog-api-key` for Gemini's, a bearer token otherwise).
pub fn request(sira: &Sira, path: &str) -> reqwest::RequestBuilder {
    let builder = client().post(sira.url(path));
    if path.starts_with("/v1/messages") {
        builder.header("x-api-key", KEY_A)
    } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
        builder.header("x-goog-api-key", KEY_A)
    } else {
        builder.bearer_auth(KEY_A)
    }
}

/// A one-message chat completion for `model`, sent with the `team-a` key.
pub async fn post_chat(sira: &Sira, model: &str) -> reqwest::Response {
    client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
}

/// A response body as the client received it, and how it ended.
pub struct Received {
    pub text: String,
    /// Ended by its framing (the last chunk, or `Content-Length` reached); `false` when the
    /// connection was closed or the stream reset before that.
    pub complete: bool,
}

impl Received {
    /// Fails the test, showing the whole body, unless the body contains `needle`.
    #[track_caller]
    pub fn expect(&self, needle: &str) {
        assert!(
            self.text.contains(needle),
            "{needle:?} not in: {}",
            self.text
        );
    }
}

/// Sends `req` and reads its response body as [`receive`] does.
pub async fn send_receive(req: reqwest::RequestBuilder) -> Received {
    receive(req.send().await.unwrap()).await
}

/// Reads a response body to its end, or to the point where it broke.
pub async fn receive(mut resp: reqwest::Response) -> Received {
    let mut bytes = Vec::new();
    let complete = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    Received {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        complete,
    }
}

/// The body of a `gpt-4o` chat stream sent with the `team-a` key, the mock steered by
/// `knobs` (`x-mock-…` headers).
pub async fn chat_stream_body(sira: &Sira, knobs: &[(&str, &str)]) -> Received {
    let mut request = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A);
    for (name, value) in knobs {
        request = request.header(*name, *value);
    }
    let resp = request
        .json(&serde_json::json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    receive(resp).await
}

/// The providers and models most tests use, all pointing at the mock (`{mock}`).
/// A mock provider and sira in front of it with [`standard_config`].
pub fn start_standard() -> (sira_mock::MockProvider, Sira) {
    let mock = sira_mock::MockProvider::start();
    let sira = Sira::start(&standard_config(), &mock.url());
    (mock, sira)
}

pub fn standard_config() -> String {
    format!(
        r#"providers:
  oai: {{ kind: openai, endpoints: ["{{mock}}"], api_key: sk-upstream-openai }}
  ant: {{ kind: anthropic, endpoints: ["{{mock}}"], api_key: sk-upstream-anthropic }}
  compat: {{ kind: openai-compatible, endpoints: ["{{mock}}/v1"], api_key: sk-upstream-compat }}
  azure: {{ kind: azure, endpoints: ["{{mock}}"], api_key: sk-upstream-azure, deployments: {{ gpt-4o-az: my-deployment }} }}
  gem: {{ kind: gemini, endpoints: ["{{mock}}"], api_key: sk-upstream-gemini }}
models:
  gpt-4o:
    targets: [{{ provider: oai, model: gpt-4o-2024-08-06 }}]
    pricing: {{ input: 2.5, output: 10.0, cached_input: 1.25 }}
  claude:
    targets: [{{ provider: ant, model: claude-sonnet-4-5 }}]
  "openai/*":
    targets: [{{ provider: oai }}]
  "anthropic/*":
    targets: [{{ provider: ant }}]
  local:
    targets: [{{ provider: compat, model: llama-3 }}]
  azure-gpt:
    targets: [{{ provider: azure, model: gpt-4o-az }}]
  flash:
    targets: [{{ provider: gem, model: gemini-2.5-flash }}]
{}"#,
        keys_section()
    )
}

/// Every header value of a recorded upstream request, lowercased names.
pub fn header_values(req: &sira_mock::RecordedRequest) -> Vec<String> {
    req.headers.iter().map(|(_, v)| v.clone()).collect()
}
