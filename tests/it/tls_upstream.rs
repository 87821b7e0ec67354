//! TLS towards providers through the real binary: a provider behind a private CA that asks
//! for a client certificate.

use std::net::SocketAddr;
use std::path::Path;

use sira_mock::MockProvider;

use crate::support::{Sira, KEY_A};
use crate::tls::{chat, path, Ca};

/// A provider behind TLS with a private CA that asks for a client certificate: an https
/// front the test runs (tokio-rustls) before the mock.
async fn tls_front(mock: &MockProvider, dir: &Path, server_ca: &Ca, client_ca: &Ca) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    server_ca.issue(dir, "upstream", "upstream", &["127.0.0.1"], false);
    let certs = CertificateDer::pem_file_iter(dir.join("upstream.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("upstream.key")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = mock.url().trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
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
