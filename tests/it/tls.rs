//! TLS termination through the real binary, with certificates the test makes (rcgen): HTTP/1.1
//! and HTTP/2 by ALPN, certificates chosen by SNI, a certificate swapped by SIGHUP while an
//! open connection keeps its session, a broken certificate refused on reload, and client
//! certificates (mTLS) that authenticate as a key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::json;
use sira_mock::MockProvider;

use crate::support::{free_port, Sira, KEY_A};

/// A certificate authority that signs the test's server and client certificates.
pub(crate) struct Ca {
    pub(crate) cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names`, written to `dir` as `<file>.pem` and `<file>.key`; returns its DER.
    pub(crate) fn issue(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        names: &[&str],
        client: bool,
    ) -> Vec<u8> {
        self.issue_with(dir, file, cn, names, client, KeyPair::generate().unwrap())
    }

    /// [`Ca::issue`] for a leaf whose key is `key` (RSA, P-384, Ed25519: any rcgen signs with).
    pub(crate) fn issue_with(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        names: &[&str],
        client: bool,
        key: KeyPair,
    ) -> Vec<u8> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }
}

pub(crate) fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

pub(crate) fn client(ca: &Ca, identity: Option<(&Path, &str)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .tls_info(true)
        .resolve("api.example.test", "127.0.0.1:0".parse().unwrap());
    if let Some((dir, file)) = identity {
        let mut pem = std::fs::read(dir.join(format!("{file}.pem"))).unwrap();
        pem.extend(std::fs::read(dir.join(format!("{file}.key"))).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// The certificate the server presented on this response's connection.
pub(crate) fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("a TLS response carries its peer certificate")
}

pub(crate) async fn chat(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut req = client.post(url).json(
        &json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    );
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await
}

pub(crate) struct TlsSira {
    pub(crate) sira: Sira,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
}

impl TlsSira {
    pub(crate) fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }
}

/// sira with one TLS listener using `dir`'s `server.pem`/`server.key` (and `tls_extra`
/// lines under it), the standard keys and a gpt-4o model on the mock.
pub(crate) fn start(
    mock: &MockProvider,
    dir: tempfile::TempDir,
    tls_extra: &str,
    keys_extra: &str,
) -> TlsSira {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = format!(
        "  tls:\n    - listen: \"{addr}\"\n      cert: {}\n      key: {}\n{tls_extra}",
        path(dir.path(), "server.pem"),
        path(dir.path(), "server.key")
    );
    let body = format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"{{mock}}\"], api_key: sk-upstream }}\n\
         models:\n  gpt-4o: {{ targets: [{{ provider: oai }}] }}\n\
         auth:\n  keys:\n    - {{ name: team-a, hash: \"{}\" }}\n{keys_extra}",
        sira::auth::hash_key(KEY_A)
    );
    let sira = Sira::start_with_server(&body, &mock.url(), &server);
    wait_listening(addr);
    TlsSira { sira, addr, dir }
}

/// Returns once `addr` (a TLS listener sira was started with) accepts connections.
pub(crate) fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the TLS listener never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The mock, a CA, and sira with one TLS listener whose certificate (`sira`, for
/// 127.0.0.1) that CA signed, with `tls_extra` as in [`start`].
pub(crate) fn start_signed(tls_extra: &str) -> (MockProvider, Ca, TlsSira) {
    let mock = MockProvider::start();
    let ca = Ca::new("sira test CA");
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "server", "sira", &["127.0.0.1"], false);
    let s = start(&mock, dir, tls_extra, "");
    (mock, ca, s)
}

#[tokio::test]
async fn https_with_http2_and_http1_and_a_certificate_per_server_name() {
    let mock = MockProvider::start();
    let ca = Ca::new("sira test CA");
    let dir = tempfile::tempdir().unwrap();
    let default = ca.issue(
        dir.path(),
        "server",
        "default",
        &["127.0.0.1", "localhost"],
        false,
    );
    let api = ca.issue(dir.path(), "api", "api", &["api.example.test"], false);
    let sni = format!(
        "      sni:\n        - {{ names: [\"api.example.test\"], cert: {}, key: {} }}\n",
        path(dir.path(), "api.pem"),
        path(dir.path(), "api.key")
    );
    let s = start(&mock, dir, &sni, "");
    let client = client(&ca, None);
    let resp = chat(
        &client,
        &s.url("127.0.0.1", "/v1/chat/completions"),
        Some(KEY_A),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "ALPN offers h2 first"
    );
    assert_eq!(peer_cert(&resp), default);

    // SNI picks the certificate; the name resolves to the same listener.
    let by_name = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .tls_info(true)
        .resolve("api.example.test", s.addr)
        .http1_only()
        .build()
        .unwrap();
    let resp = chat(
        &by_name,
        &s.url("api.example.test", "/v1/chat/completions"),
        Some(KEY_A),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(peer_cert(&resp), api);

    // A stream over HTTP/2 arrives whole.
    let resp = client
        .post(s.url("127.0.0.1", "/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-mock-events", "5")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    drop(s.dir);
}

#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_connections_only() {
    let mock = MockProvider::start();
    let ca = Ca::new("sira test CA");
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue(dir.path(), "server", "first", &["127.0.0.1"], false);
    let s = start(&mock, dir, "", "");
    let url = s.url("127.0.0.1", "/v1/chat/completions");
    let old_client = client(&ca, None);
    let resp = chat(&old_client, &url, Some(KEY_A)).await.unwrap();
    assert_eq!(peer_cert(&resp), first);

    let second = ca.issue(s.dir.path(), "server", "second", &["127.0.0.1"], false);
    s.sira.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = chat(&client(&ca, None), &url, Some(KEY_A)).await.unwrap();
        if peer_cert(&resp) == second {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new handshakes never got the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the reload is still served, on its own session.
    let resp = chat(&old_client, &url, Some(KEY_A)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(peer_cert(&resp), first);

    // A key that does not match its certificate is refused like any bad config: the
    // current certificate keeps serving.
    let other = tempfile::tempdir().unwrap();
    ca.issue(other.path(), "stray", "stray", &["127.0.0.1"], false);
    std::fs::copy(
        other.path().join("stray.key"),
        s.dir.path().join("server.key"),
    )
    .unwrap();
    s.sira.sighup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !s
        .sira
        .stderr()
        .contains("does not belong to the certificate")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        s.sira
            .stderr()
            .contains("does not belong to the certificate"),
        "{}",
        s.sira.stderr()
    );
    let resp = chat(&client(&ca, None), &url, Some(KEY_A)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(peer_cert(&resp), second);
}

#[tokio::test]
async fn a_client_certificate_authenticates_as_its_key() {
    let mock = MockProvider::start();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let rogue_ca = Ca::new("rogue CA");
    let dir = tempfile::tempdir().unwrap();
    server_ca.issue(dir.path(), "server", "sira", &["127.0.0.1"], false);
    client_ca.issue(
        dir.path(),
        "runner",
        "ci-runner",
        &["runner.internal"],
        true,
    );
    rogue_ca.issue(dir.path(), "rogue", "ci-runner", &["runner.internal"], true);
    std::fs::write(dir.path().join("clients.pem"), client_ca.pem()).unwrap();
    let tls = format!(
        "      client_ca: {}\n      client_auth: optional\n",
        path(dir.path(), "clients.pem")
    );
    let keys = "    - { name: ci, mtls_subject: ci-runner, models: [gpt-4o] }\n";
    let s = start(&mock, dir, &tls, keys);
    let url = s.url("127.0.0.1", "/v1/chat/completions");

    let runner = client(&server_ca, Some((s.dir.path(), "runner")));
    let resp = chat(&runner, &url, None).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let line = s.sira.wait_access_log(1).pop().unwrap();
    assert_eq!(line["key"], "ci", "{line}");
    // A key presented wins over the certificate.
    let resp = chat(&runner, &url, Some(KEY_A)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(s.sira.wait_access_log(2).pop().unwrap()["key"], "team-a");

    // Optional: no certificate is no identity (401 without a key), a key still works.
    let anonymous = client(&server_ca, None);
    assert_eq!(chat(&anonymous, &url, None).await.unwrap().status(), 401);
    assert_eq!(
        chat(&anonymous, &url, Some(KEY_A)).await.unwrap().status(),
        200
    );
    // A certificate from another CA never completes the handshake.
    let rogue = client(&server_ca, Some((s.dir.path(), "rogue")));
    assert!(chat(&rogue, &url, None).await.is_err());

    // The CA is replaced: the runner's connection, open since before the reload, loses its
    // identity at its next request (a new connection could not even complete a handshake,
    // so a 401 here is the old connection answering).
    std::fs::write(s.dir.path().join("clients.pem"), rogue_ca.pem()).unwrap();
    s.sira.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .sira
        .metric("sira_config_reloads_total{result=\"ok\"}")
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the reload never happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = chat(&runner, &url, None).await.unwrap();
    assert_eq!(resp.status(), 401, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn required_client_certificates_and_check_refuses_broken_tls() {
    let mock = MockProvider::start();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let dir = tempfile::tempdir().unwrap();
    server_ca.issue(dir.path(), "server", "sira", &["127.0.0.1"], false);
    std::fs::write(dir.path().join("clients.pem"), client_ca.pem()).unwrap();
    let tls = format!("      client_ca: {}\n", path(dir.path(), "clients.pem"));
    let s = start(&mock, dir, &tls, "");
    let url = s.url("127.0.0.1", "/v1/chat/completions");
    // Required is the default with a client_ca: no certificate, no connection.
    assert!(chat(&client(&server_ca, None), &url, Some(KEY_A))
        .await
        .is_err());

    let cases: [(&str, &str); 5] = [
        (
            "cert: /nonexistent/cert.pem",
            "cannot read /nonexistent/cert.pem",
        ),
        ("client_auth: required", "needs client_ca"),
        (
            "sni: [{ names: [\"a.*.test\"], cert: CERT, key: KEY }]",
            "is not a server name",
        ),
        ("listen: nonsense", "server.tls[0].listen"),
        ("listen: \"127.0.0.1:0\"", "needs a port"),
    ];
    for (change, expected) in cases {
        let cert = path(s.dir.path(), "server.pem");
        let key = path(s.dir.path(), "server.key");
        let mut entry = format!("{{ listen: \"127.0.0.1:1\", cert: {cert}, key: {key} }}");
        let (field, _) = change.split_once(':').unwrap();
        let replaced = change.replace("CERT", &cert).replace("KEY", &key);
        entry = if ["cert", "listen"].contains(&field) {
            let pattern = if field == "cert" {
                format!("cert: {cert}")
            } else {
                "listen: \"127.0.0.1:1\"".to_owned()
            };
            entry.replace(&pattern, &replaced)
        } else {
            entry.replace(" }", &format!(", {replaced} }}"))
        };
        let config = format!(
            "server:\n  listen: []\n  tls: [{entry}]\nproviders:\n  oai: {{ kind: openai, endpoints: [\"http://127.0.0.1:9\"], api_key: k }}\n"
        );
        let file = s.dir.path().join("check.yaml");
        std::fs::write(&file, config).unwrap();
        let (code, out, err) =
            crate::support::run_cli(&["check", "-c", file.to_str().unwrap()], "", s.dir.path());
        assert_ne!(code, 0, "{change}: {out}{err}");
        assert!(out.contains(expected), "{change}: {out}{err}");
    }
}

/// `sira run --upgrade` takes the listening sockets, TLS included, from the running process
/// while clients keep connecting: no connection refused, no request failed, and the stream
/// the old process was serving ends whole before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_binary_upgrade_under_load_refuses_and_truncates_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let mock = MockProvider::start();
    let ca = Ca::new("sira test CA");
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "server", "sira", &["127.0.0.1"], false);
    let mut s = start(&mock, dir, "  grace_period: 15s\n", "");
    let tls_url = s.url("127.0.0.1", "/v1/chat/completions");
    let plain_url = s.sira.url("/v1/chat/completions");

    // A stream of 3 s on the old process, over TLS.
    let streaming = client(&ca, None);
    let stream = tokio::spawn({
        let url = tls_url.clone();
        async move {
            let resp = streaming
                .post(url)
                .bearer_auth(KEY_A)
                .header("x-mock-events", "30")
                .header("x-mock-delay-ms", "100")
                .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            resp.text().await.unwrap()
        }
    });

    // Load: every request on a new connection, plain and TLS.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for i in 0..4 {
        let url = if i % 2 == 0 {
            plain_url.clone()
        } else {
            tls_url.clone()
        };
        let fresh = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let outcome = match chat(&fresh, &url, Some(KEY_A)).await {
                    Ok(resp) if resp.status() == 200 => {
                        resp.text().await.map_err(|e| e.to_string())
                    }
                    Ok(resp) => Err(format!("status {}", resp.status())),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The new binary waits for the sockets; the old one hands them over on SIGQUIT.
    let upgraded = std::process::Command::new(crate::support::SIRA)
        .args(["run", "--upgrade", "-c"])
        .arg(&s.sira.config_path)
        .env("SIRA_UPGRADE_SOCK", s.sira.dir.path().join("upgrade.sock"))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(s.sira.dir.path().join("upgraded.log")).unwrap())
        .spawn()
        .unwrap();
    let _upgraded = crate::support::Reaped(upgraded);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let quit = std::process::Command::new("kill")
        .args(["-QUIT", &s.sira.pid().to_string()])
        .status()
        .unwrap();
    assert!(quit.success());

    // The old process exits once its stream has ended.
    let exited = tokio::task::block_in_place(|| s.sira.wait_exit(Duration::from_secs(20)));
    assert!(exited.is_some(), "the old process never exited");
    let body = stream.await.unwrap();
    assert!(
        body.trim_end().ends_with("data: [DONE]"),
        "the stream was cut: {body}"
    );
    assert_eq!(body.matches("\"delta\":{\"content\"").count(), 30, "{body}");

    // The new process serves on.
    let before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(ok > before, "nothing served after the old process left");
    eprintln!("upgrade under load: {ok} requests, 0 failed, the stream whole");
}

/// HTTP/2 over TLS: several streams multiplexed on one connection, each accounted on its
/// own; one the client resets (RST_STREAM CANCEL, sent with the h2 crate itself) stops at
/// once and is settled, and the others run on.
#[tokio::test]
async fn http2_streams_share_a_connection_and_are_accounted_one_by_one() {
    let (_mock, ca, s) = start_signed("");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (h2, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);

    let send = |events: &str| {
        let h2 = h2.clone();
        let request = http::Request::post(format!(
            "https://127.0.0.1:{}/v1/chat/completions",
            s.addr.port()
        ))
        .header("authorization", format!("Bearer {KEY_A}"))
        .header("content-type", "application/json")
        .header("x-mock-events", events)
        .header("x-mock-delay-ms", "50")
        .body(())
        .unwrap();
        async move {
            let mut h2 = h2.ready().await.unwrap();
            let (response, mut body) = h2.send_request(request, false).unwrap();
            body.send_data(
                bytes::Bytes::from(
                    json!({"model": "gpt-4o", "stream": true,
                        "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
                ),
                true,
            )
            .unwrap();
            (response.await.unwrap(), body)
        }
    };
    let read_all = |response: http::Response<h2::RecvStream>| async move {
        let mut stream = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = stream.data().await {
            let chunk = chunk.unwrap();
            let _ = stream.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        String::from_utf8(text).unwrap()
    };

    // The one to cancel: its first event, then a reset.
    let (response, mut cancel) = send("100").await;
    assert_eq!(response.status(), 200);
    let mut cancelled = response.into_body();
    assert!(cancelled.data().await.is_some());
    let others = futures_util::future::join_all((0..4).map(|_| async {
        let (response, _) = send("5").await;
        read_all(response).await
    }));
    let started = Instant::now();
    cancel.send_reset(h2::Reason::CANCEL);
    let whole = others.await;
    for text in &whole {
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    }
    let lines = s.sira.wait_access_log(5);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the reset stream ran on"
    );
    let complete: Vec<_> = lines.iter().filter(|l| l["client_gone"] == false).collect();
    assert_eq!(complete.len(), 4, "{lines:?}");
    for line in complete {
        assert_eq!(line["output_tokens"], 5, "{line}");
    }
    let gone = lines
        .iter()
        .find(|l| l["client_gone"] == true)
        .expect("the reset stream");
    // Settled to what was delivered: never zero.
    assert!(gone["input_tokens"].as_u64().unwrap() > 0, "{gone}");
    assert!(gone["output_tokens"].as_u64().unwrap() < 100, "{gone}");
    assert_eq!(gone["estimated"], true, "{gone}");
}
