//! What a TLS listener offers and refuses, through the real binary: certificates of every key
//! kind, wildcard names, TLS 1.2 and 1.3 with AEAD suites only (a raw ClientHello asks for
//! the rest), a stapled OCSP response, a client certificate matched by its alternative name
//! with its key's models and limits; and HTTP/2 flow control held while relaying a stream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use serde_json::json;
use sira_mock::MockProvider;

use crate::support::{free_port, Sira, KEY_A};
use crate::tls::{chat, client, path, peer_cert, start, start_signed, wait_listening, Ca};

/// An RSA key made by `openssl` (rcgen's ring backend cannot generate RSA keys, only sign
/// with them).
fn rsa_key() -> KeyPair {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl is installed (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    KeyPair::from_pem(std::str::from_utf8(&out.stdout).unwrap()).unwrap()
}

#[tokio::test]
async fn rsa_ecdsa_and_ed25519_certificates_by_exact_and_wildcard_names() {
    let mock = MockProvider::start();
    let ca = Ca::new("sira test CA");
    let dir = tempfile::tempdir().unwrap();
    let rsa = ca.issue_with(
        dir.path(),
        "server",
        "rsa",
        &["127.0.0.1", "x.other.test"],
        false,
        rsa_key(),
    );
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let wildcard = ca.issue_with(dir.path(), "wild", "wild", &["*.wild.test"], false, ed);
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let exact = ca.issue_with(
        dir.path(),
        "exact",
        "exact",
        &["exact.wild.test"],
        false,
        p384,
    );
    let sni = format!(
        "      sni:\n        - {{ names: [\"*.wild.test\"], cert: {}, key: {} }}\n        \
         - {{ names: [\"exact.wild.test\"], cert: {}, key: {} }}\n",
        path(dir.path(), "wild.pem"),
        path(dir.path(), "wild.key"),
        path(dir.path(), "exact.pem"),
        path(dir.path(), "exact.key"),
    );
    let s = start(&mock, dir, &sni, "");
    // Each name resolves to the listener; the certificate it gets is the one that answers.
    let cases = [
        ("127.0.0.1", &rsa, "no name: the default (RSA)"),
        ("a.wild.test", &wildcard, "the wildcard (Ed25519)"),
        (
            "exact.wild.test",
            &exact,
            "an exact name before the wildcard (P-384)",
        ),
        ("x.other.test", &rsa, "a name no entry has: the default"),
    ];
    for (host, want, why) in cases {
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .tls_info(true);
        if host != "127.0.0.1" {
            builder = builder.resolve(host, s.addr);
        }
        let client = builder.build().unwrap();
        let resp = chat(&client, &s.url(host, "/v1/chat/completions"), Some(KEY_A))
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(resp.status(), 200, "{host}");
        assert_eq!(&peer_cert(&resp), want, "{host}: {why}");
    }
    // A wildcard covers one label: `b.c.wild.test` gets the default certificate, which is not
    // valid for that name, so a verifying client refuses it.
    let deep = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve("b.c.wild.test", s.addr)
        .build()
        .unwrap();
    let refused = chat(
        &deep,
        &s.url("b.c.wild.test", "/v1/chat/completions"),
        Some(KEY_A),
    )
    .await
    .expect_err("the wildcard does not cover two labels");
    // Refused for the certificate's name, not a connection that failed otherwise.
    let mut cause: Option<&dyn std::error::Error> = Some(&refused);
    let mut chain = String::new();
    while let Some(e) = cause {
        chain.push_str(&format!("{e}; "));
        cause = e.source();
    }
    assert!(chain.contains("not valid for name"), "{chain}");
}

/// A ClientHello written by hand, for what no modern client library will offer: `version` in
/// its legacy field (no `supported_versions`, so that is the highest it speaks) and exactly
/// `suites`.
fn client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut push_ext = |kind: u16, data: &[u8]| {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    // supported_groups: x25519, secp256r1.
    push_ext(0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
    // ec_point_formats: uncompressed.
    push_ext(0x000b, &[1, 0]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256.
    push_ext(0x000d, &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // no session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null only
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![1u8]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// How a server answered a ClientHello.
#[derive(Debug, PartialEq)]
enum Answer {
    ServerHello,
    /// A fatal alert, with its description code.
    Alert(u8),
    Other,
}

/// Alert descriptions (RFC 8446 §6).
const HANDSHAKE_FAILURE: u8 = 40;
const PROTOCOL_VERSION: u8 = 70;

/// Sends `hello` and reads the first record of the answer.
async fn answer_to(addr: SocketAddr, hello: Vec<u8>) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    let mut head = [0u8; 7];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
        .await
        .expect("the server answers a ClientHello at once");
    match (read, head[0]) {
        // A handshake record whose first message is a ServerHello (type 2).
        (Ok(_), 0x16) if head[5] == 2 => Answer::ServerHello,
        // An alert record: level, then description.
        (Ok(_), 0x15) => Answer::Alert(head[6]),
        _ => Answer::Other,
    }
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_with_aead_suites() {
    let (_mock, _ca, s) = start_signed("");
    const ECDHE_ECDSA_AES128_GCM: u16 = 0xc02b;
    // The control: the same hand-made hello, TLS 1.2 with an AEAD suite, is answered; so the
    // alerts below are refusals, not a hello the server could not read (decode_error, 50).
    let hello = |version, suites: &[u16]| answer_to(s.addr, client_hello(version, suites));
    let aead = [ECDHE_ECDSA_AES128_GCM];
    assert_eq!(hello(0x0303, &aead).await, Answer::ServerHello);
    // TLS 1.1 and 1.0, even with a suite the server has.
    assert_eq!(hello(0x0302, &aead).await, Answer::Alert(PROTOCOL_VERSION));
    assert_eq!(hello(0x0301, &aead).await, Answer::Alert(PROTOCOL_VERSION));
    // TLS 1.2 with CBC, RC4, 3DES and static RSA suites only: the crypto provider sira builds
    // its listeners with offers none of them, and this keeps it so.
    let legacy = [
        0xc009, 0xc00a, 0xc023, 0xc024, 0xc013, 0x002f, 0x0035, 0x000a, 0x0005, 0x009c,
    ];
    assert_eq!(
        hello(0x0303, &legacy).await,
        Answer::Alert(HANDSHAKE_FAILURE)
    );
    // The server still serves after refusing those.
    let resp = chat(
        &client(&_ca, None),
        &s.url("127.0.0.1", "/v1/chat/completions"),
        Some(KEY_A),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Verifies as rustls does, and keeps the OCSP response the server stapled.
#[derive(Debug)]
struct StapleWitness {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    stapled: Arc<Mutex<Option<Vec<u8>>>>,
}

impl rustls::client::danger::ServerCertVerifier for StapleWitness {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.stapled.lock().unwrap() = Some(ocsp_response.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The OCSP response stapled to a handshake with `addr` over `version`.
async fn stapled(
    ca: &Ca,
    addr: SocketAddr,
    version: &'static rustls::SupportedProtocolVersion,
) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let witness = Arc::new(StapleWitness {
        inner,
        stapled: Arc::default(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(witness.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.expect("a handshake");
    let stapled = witness.stapled.lock().unwrap().take();
    stapled.expect("the certificate was verified")
}

#[tokio::test]
async fn the_ocsp_response_is_stapled_and_swapped_on_reload() {
    let mock = MockProvider::start();
    let ca = Ca::new("sira test CA");
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "server", "sira", &["127.0.0.1"], false);
    // OCSPResponse { responseStatus: successful }: rustls staples what it is given.
    let first = vec![0x30, 0x03, 0x0a, 0x01, 0x00];
    std::fs::write(dir.path().join("server.ocsp"), &first).unwrap();
    let tls = format!("      ocsp: {}\n", path(dir.path(), "server.ocsp"));
    let s = start(&mock, dir, &tls, "");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        assert_eq!(stapled(&ca, s.addr, version).await, first, "{version:?}");
    }
    // A renewed response (certbot or a cron job writes it) is stapled after a SIGHUP.
    let renewed = vec![0x30, 0x03, 0x0a, 0x01, 0x00, 0x00];
    std::fs::write(s.dir.path().join("server.ocsp"), &renewed).unwrap();
    s.sira.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stapled(&ca, s.addr, &rustls::version::TLS13).await != renewed {
        assert!(
            Instant::now() < deadline,
            "the renewed response was never stapled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_certificate_matched_by_its_dns_name_gets_its_keys_models_and_limits() {
    let mock = MockProvider::start();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let dir = tempfile::tempdir().unwrap();
    server_ca.issue(dir.path(), "server", "sira", &["127.0.0.1"], false);
    // The subject's common name matches no key: the alternative name does.
    client_ca.issue(dir.path(), "runner", "someone", &["runner.internal"], true);
    std::fs::write(dir.path().join("clients.pem"), client_ca.pem()).unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = format!(
        "  tls:\n    - {{ listen: \"{addr}\", cert: {}, key: {}, client_ca: {}, client_auth: required }}\n",
        path(dir.path(), "server.pem"),
        path(dir.path(), "server.key"),
        path(dir.path(), "clients.pem"),
    );
    let body = "providers:\n  oai: { kind: openai, endpoints: [\"{mock}\"], api_key: sk-upstream }\n\
         models:\n  gpt-4o: { targets: [{ provider: oai }] }\n  gpt-4o-mini: { targets: [{ provider: oai }] }\n\
         auth:\n  keys:\n    - { name: ci, mtls_subject: \"dns:runner.internal\", models: [gpt-4o], \
         limits: { requests_per_minute: 2 } }\n";
    let sira = Sira::start_with_server(body, &mock.url(), &server);
    wait_listening(addr);
    let runner = client(&server_ca, Some((dir.path(), "runner")));
    let url = format!("https://127.0.0.1:{port}/v1/chat/completions");
    let ask = |model: &'static str| {
        runner
            .post(&url)
            .json(&json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let resp = ask("gpt-4o").await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(sira.wait_access_log(1).pop().unwrap()["key"], "ci");
    let resp = ask("gpt-4o-mini").await.unwrap();
    assert_eq!(resp.status(), 403, "a model outside the key's list");
    let resp = ask("gpt-4o").await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = ask("gpt-4o").await.unwrap();
    assert_eq!(resp.status(), 429, "the key's limit: two requests a minute");
    assert_eq!(
        mock.requests().len(),
        2,
        "what was refused never went upstream"
    );
}

/// An HTTP/2 client that grants a stream 256 bytes of window and reads nothing for a while
/// gets no more than that; once it reads, the stream arrives whole, in order, and is
/// accounted as complete.
#[tokio::test]
async fn http2_flow_control_holds_a_relayed_stream_until_the_client_reads() {
    let mock = MockProvider::start();
    let sira = Sira::start(&crate::support::standard_config(), &mock.url());
    let tcp = tokio::net::TcpStream::connect(sira.addr).await.unwrap();
    let (h2, connection) = h2::client::Builder::new()
        .initial_window_size(256)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let body = serde_json::to_vec(
        &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .unwrap();
    let request = http::Request::post(sira.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {KEY_A}"))
        .header("content-type", "application/json")
        .header("x-mock-events", "60")
        .body(())
        .unwrap();
    let (response, mut send) = h2.send_request(request, false).unwrap();
    send.send_data(body.into(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();

    // Reading without giving capacity back: what arrives is bounded by the window.
    let mut held = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), stream.data()).await {
            Ok(Some(chunk)) => held.extend_from_slice(&chunk.unwrap()),
            Ok(None) => panic!("the whole stream fit in a 256-byte window"),
            Err(_) => break,
        }
    }
    assert!(
        held.len() <= 256,
        "{} bytes past a 256-byte window",
        held.len()
    );
    assert!(!held.is_empty(), "the window's bytes are sent");

    // Now reading, and giving the capacity back: the rest follows, whole.
    let mut all = held.clone();
    stream.flow_control().release_capacity(held.len()).unwrap();
    while let Some(chunk) = stream.data().await {
        let chunk = chunk.unwrap();
        stream.flow_control().release_capacity(chunk.len()).unwrap();
        all.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(all).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // The same stream read over HTTP/1 without any window: as many events.
    let reference = crate::support::chat_stream_body(&sira, &[("x-mock-events", "60")]).await;
    let events = |t: &str| t.matches("data: ").count();
    assert_eq!(events(&text), events(&reference.text), "{text}");
    let line = sira.wait_access_log(2).swap_remove(0);
    assert_eq!(line["status"], 200, "{line}");
    assert!(line["output_tokens"].as_u64().unwrap() > 0, "{line}");
}
