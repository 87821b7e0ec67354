//! TLS towards providers through the real binary: a provider behind a private CA that asks
//! for a client certificate, and a provider by host name, which must be the name sira asks
//! for (SNI) and the one its certificate is checked against.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sira_mock::MockProvider;

use crate::support::{Sira, KEY_A};
use crate::tls::{chat, path, Ca};

/// A provider behind TLS with a private CA that asks for a client certificate: an https
/// front the test runs (tokio-rustls) before the mock.
async fn tls_front(mock: &MockProvider, dir: &Path, server_ca: &Ca, client_ca: &Ca) -> SocketAddr {
    let config = |certs, key| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca.cert.der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap()
    };
    front(mock, dir, server_ca, &["127.0.0.1"], config).await.0
}

/// An https front (tokio-rustls) before the mock, with a certificate `server_ca` signs for
/// `names` and the server config `config` makes of it; the server names its clients asked
/// for (SNI), one per connection.
async fn front(
    mock: &MockProvider,
    dir: &Path,
    server_ca: &Ca,
    names: &[&str],
    config: impl FnOnce(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ) -> rustls::ServerConfig,
) -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    server_ca.issue(dir, "upstream", "upstream", names, false);
    let certs = CertificateDer::pem_file_iter(dir.join("upstream.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("upstream.key")).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config(certs, key)));
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = names.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = mock.url().trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend, seen) = (acceptor.clone(), backend.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let name = tls.get_ref().1.server_name().map(str::to_owned);
                seen.lock().unwrap().push(name);
                let Ok(mut plain) = tokio::net::TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, names)
}

#[tokio::test]
async fn a_provider_behind_a_private_ca_and_client_certificates() {
    let mock = MockProvider::start();
    let server_ca = Ca::new("provider CA");
    let client_ca = Ca::new("provider's client CA");
    let dir = tempfile::tempdir().unwrap();
    let front = tls_front(&mock, dir.path(), &server_ca, &client_ca).await;
    client_ca.issue(dir.path(), "sira-client", "sira", &["sira.internal"], true);
    std::fs::write(dir.path().join("provider-ca.pem"), server_ca.pem()).unwrap();
    let provider = |tls: &str| {
        format!(
            "providers:\n  private: {{ kind: openai-compatible, endpoints: [\"https://{front}\"], api_key: sk-upstream{tls} }}\n\
             models:\n  gpt-4o: {{ targets: [{{ provider: private }}] }}\n\
             auth:\n  keys:\n    - {{ name: team-a, hash: \"{}\" }}\n",
            sira::auth::hash_key(KEY_A)
        )
    };
    let ca = path(dir.path(), "provider-ca.pem");
    let (cert, key) = (
        path(dir.path(), "sira-client.pem"),
        path(dir.path(), "sira-client.key"),
    );
    let plain = reqwest::Client::new();
    let cases = [
        // The system's roots do not know the provider's CA.
        (String::new(), 502),
        // The CA alone: the provider still wants a client certificate.
        (format!(", tls: {{ ca: {ca} }}"), 502),
        (
            format!(", tls: {{ ca: {ca}, cert: {cert}, key: {key} }}"),
            200,
        ),
    ];
    for (tls, expected) in cases {
        let sira = Sira::start(&provider(&tls), &mock.url());
        let resp = chat(&plain, &sira.url("/v1/chat/completions"), Some(KEY_A))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(status, expected, "{tls}: {body}");
        assert!(!body.contains("BEGIN"), "{body}");
    }
}

#[tokio::test]
async fn a_provider_by_host_name_gets_it_as_sni_and_its_certificate_is_checked_against_it() {
    let mock = MockProvider::start();
    let server_ca = Ca::new("provider CA");
    let dir = tempfile::tempdir().unwrap();
    let config = |certs, key| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap()
    };
    // A certificate for the name only, not for the address it resolves to.
    let (front, names) = front(&mock, dir.path(), &server_ca, &["localhost"], config).await;
    std::fs::write(dir.path().join("provider-ca.pem"), server_ca.pem()).unwrap();
    let ca = path(dir.path(), "provider-ca.pem");
    let config = |host: &str| {
        format!(
            "providers:\n  named: {{ kind: openai-compatible, endpoints: [\"https://{host}:{}\"], \
             api_key: sk-upstream, tls: {{ ca: {ca} }} }}\n\
             models:\n  gpt-4o: {{ targets: [{{ provider: named }}] }}\n\
             auth:\n  keys:\n    - {{ name: team-a, hash: \"{}\" }}\n",
            front.port(),
            sira::auth::hash_key(KEY_A)
        )
    };
    let plain = reqwest::Client::new();
    let sira = Sira::start(&config("localhost"), &mock.url());
    let resp = chat(&plain, &sira.url("/v1/chat/completions"), Some(KEY_A))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(
        names.lock().unwrap().as_slice(),
        [Some("localhost".to_owned())],
        "the host name, sent as SNI"
    );
    drop(sira);

    // The same server by its address: its certificate does not name 127.0.0.1, so sira
    // refuses it.
    let sira = Sira::start(&config("127.0.0.1"), &mock.url());
    let resp = chat(&plain, &sira.url("/v1/chat/completions"), Some(KEY_A))
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        mock.requests().len(),
        1,
        "the refused server got no request"
    );
}
