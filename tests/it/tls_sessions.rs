//! TLS sessions through the real binary: resumption from tickets however many sessions come
//! between, a resumed session refused once client certificates are required, and a client
//! that drips its handshake closed at the header timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::tls::{path, start_signed, Ca};

/// Completes a handshake with `config` and reads one answer on it (a TLS 1.3 server sends
/// its tickets after the handshake); returns how the handshake went, or `None` when the
/// connection failed before an answer.
async fn try_handshake(
    config: &std::sync::Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> Option<rustls::HandshakeKind> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.ok()?;
    let kind = tls.get_ref().1.handshake_kind()?;
    tls.write_all(b"GET /v1/models HTTP/1.1\r\nhost: sira\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1 ").then_some(kind)
}

async fn handshake_kind(
    config: &std::sync::Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> rustls::HandshakeKind {
    try_handshake(config, addr)
        .await
        .expect("a handshake and an answer")
}

/// A client config trusting `ca`, for one TLS version, remembering sessions or not.
fn session_client(
    ca: &Ca,
    version: &'static rustls::SupportedProtocolVersion,
    resume: bool,
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    std::sync::Arc::new(config)
}

/// Found in review: a session resumed from before a reload that made client certificates
/// required skipped the certificate request; it is refused now.
#[tokio::test]
async fn a_resumed_session_without_a_certificate_is_refused_once_one_is_required() {
    let (_mock, ca, s) = start_signed("");
    let client_ca = Ca::new("client CA");
    std::fs::write(s.dir.path().join("clients.pem"), client_ca.pem()).unwrap();
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut remembering = Vec::new();
    for version in versions {
        let client = session_client(&ca, version, true);
        assert_eq!(
            try_handshake(&client, s.addr).await,
            Some(rustls::HandshakeKind::Full)
        );
        remembering.push(client);
    }
    let key = path(s.dir.path(), "server.key");
    let text = std::fs::read_to_string(&s.sira.config_path).unwrap();
    let required = format!(
        "      key: {key}\n      client_ca: {}\n      client_auth: required\n",
        path(s.dir.path(), "clients.pem")
    );
    s.sira
        .write_raw_config(&text.replace(&format!("      key: {key}\n"), &required));
    s.sira.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = session_client(&ca, versions[0], false);
    while try_handshake(&fresh, s.addr).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the reload never required certificates"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (client, version) in remembering.iter().zip(versions) {
        assert_eq!(try_handshake(client, s.addr).await, None, "{version:?}");
    }
}

#[tokio::test]
async fn sessions_resume_from_tickets_however_many_sessions_came_between() {
    let (_mock, ca, s) = start_signed("");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (remembering, forgetful) = (
            session_client(&ca, version, true),
            session_client(&ca, version, false),
        );
        assert_eq!(
            handshake_kind(&remembering, s.addr).await,
            rustls::HandshakeKind::Full
        );
        // More sessions than a server-side session cache keeps (rustls's holds 256): only
        // a ticket, which the client holds, still resumes the first session after them.
        for _ in 0..300 {
            assert_eq!(
                handshake_kind(&forgetful, s.addr).await,
                rustls::HandshakeKind::Full
            );
        }
        assert_eq!(
            handshake_kind(&remembering, s.addr).await,
            rustls::HandshakeKind::Resumed,
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn a_client_dripping_its_handshake_is_closed_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A sibling of `tls:` under `server:`.
    let (_mock, _ca, s) = start_signed("  timeouts:\n    header: 1s\n");
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    // The start of a ClientHello record, a byte at a time, and never its end.
    let record = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut closed = false;
    for byte in record.iter().cycle().take(40) {
        if tcp.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(250), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    let took = started.elapsed();
    assert!(closed, "still open after {took:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}
