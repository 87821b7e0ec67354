//! TLS termination (`server.tls`): certificates chosen by the client's server name and
//! swapped on reload without touching open connections, and client certificates (mTLS)
//! verified against a CA and turned into an identity a key can claim.
//!
//! Pingora's rustls listener takes a certificate resolver and a client verifier once, when
//! the listener is built. sira gives it two of its own that read the current material
//! through an `ArcSwap`: a reload stores new material, the next handshake uses it, and a
//! connection already open keeps the session it has. A certificate or key that does not
//! load fails the config like any other mistake, so the old one keeps serving.

use std::path::Path;
use std::sync::Arc;

use ahash::AHashMap;
use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why TLS material did not load. Says which file and what is wrong with it, never what
/// is in it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("{0} holds no PEM private key")]
    NoKey(String),
    #[error("the key in {0} is not a supported type (RSA, ECDSA P-256/P-384, Ed25519)")]
    KeyType(String),
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: String, key: String },
    #[error("{0}: {1}")]
    Invalid(String, String),
}

/// One certificate chain and its key, ready to present.
pub fn certified_key(
    cert: &Path,
    key: &Path,
    ocsp: Option<&Path>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let name = |p: &Path| p.display().to_string();
    let chain = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey(name(key)),
        // Only the kind of failure: a key file's contents stay out of messages.
        _ => TlsError::Read(name(key), "not a readable PEM private key".into()),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|_| TlsError::KeyType(name(key)))?;
    let mut certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| TlsError::Mismatch {
        cert: name(cert),
        key: name(key),
    })?;
    if let Some(ocsp) = ocsp {
        let response =
            std::fs::read(ocsp).map_err(|e| TlsError::Read(name(ocsp), e.to_string()))?;
        certified.ocsp = Some(response);
    }
    Ok(Arc::new(certified))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let name = path.display().to_string();
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Read(name.clone(), e.to_string()))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Read(name.clone(), "not readable as PEM".into()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(name));
    }
    Ok(certs)
}

/// A listener's certificates: the default and those chosen by server name.
#[derive(Debug)]
pub struct CertSet {
    pub default: Arc<CertifiedKey>,
    exact: AHashMap<String, Arc<CertifiedKey>>,
    /// `*.example.org` as `example.org`: one label to the left.
    wildcard: AHashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    pub fn new(default: Arc<CertifiedKey>) -> CertSet {
        CertSet {
            default,
            exact: AHashMap::new(),
            wildcard: AHashMap::new(),
        }
    }

    /// Adds `key` for `name` (exact, or `*.` + a domain); `false` when the name is malformed.
    pub fn add(&mut self, name: &str, key: Arc<CertifiedKey>) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                self.wildcard.insert(domain.to_owned(), key);
            }
            None if !name.is_empty() && !name.contains('*') => {
                self.exact.insert(name, key);
            }
            _ => return false,
        }
        true
    }

    /// The certificate for a client that asked for `server_name` (or for none).
    pub fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        // rustls hands over the name lower-cased, but may leave a trailing dot.
        let name = name.trim_end_matches('.');
        if let Some(key) = self.exact.get(name) {
            return key.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// The certificates of one TLS listener, swapped whole on reload.
#[derive(Debug)]
pub struct Resolver(ArcSwap<CertSet>);

impl Resolver {
    pub fn new(certs: Arc<CertSet>) -> Resolver {
        Resolver(ArcSwap::new(certs))
    }

    pub fn store(&self, certs: Arc<CertSet>) {
        self.0.store(certs);
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().pick(hello.server_name()))
    }
}

/// `client_ca` + `client_auth`: how a listener checks client certificates.
#[derive(Debug)]
pub struct ClientAuth {
    verifier: Arc<dyn ClientCertVerifier>,
    pub required: bool,
}

impl ClientAuth {
    pub fn load(ca: &Path, required: bool) -> Result<ClientAuth, TlsError> {
        let name = ca.display().to_string();
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::Invalid(name.clone(), e.to_string()))?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let builder = if required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        let verifier = builder
            .build()
            .map_err(|e| TlsError::Invalid(name, e.to_string()))?;
        Ok(ClientAuth { verifier, required })
    }
}

/// A listener's client verification, swapped on reload; none asks for no certificate.
#[derive(Debug, Default)]
pub struct Verifier(ArcSwapOption<ClientAuth>);

impl Verifier {
    pub fn store(&self, auth: Option<Arc<ClientAuth>>) {
        self.0.store(auth);
    }
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        self.0.load().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.load().as_ref().is_some_and(|a| a.required)
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints live in the swapped verifier and cannot be lent out from behind the
        // swap; they are optional (RFC 8446 §4.2.4), and clients then offer any certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.0.load().as_ref() {
            Some(auth) => auth
                .verifier
                .verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General(
                "client certificates are not accepted".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Who a verified client certificate says the client is: its subject's common name as it
/// is, and its subject alternative names typed (`dns:…`, `email:…`, `uri:…`), so that a
/// name of one kind never passes for another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    pub names: Vec<String>,
}

impl ClientIdentity {
    /// The identity in a leaf certificate (DER); `None` when it cannot be parsed.
    pub fn from_der(der: &[u8]) -> Option<ClientIdentity> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names = Vec::new();
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_owned());
            }
        }
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => names.push(format!("dns:{n}")),
                    GeneralName::RFC822Name(n) => names.push(format!("email:{n}")),
                    GeneralName::URI(n) => names.push(format!("uri:{n}")),
                    _ => {}
                }
            }
        }
        Some(ClientIdentity { names })
    }
}

/// A verified client certificate on an open connection: its identity, for as long as the
/// listener's client verification accepts its chain. A reload that removes or replaces the
/// CA withdraws the identity from connections opened before it too: the first request after
/// a change verifies the chain again against the new material (once per connection and
/// change).
pub struct VerifiedPeer {
    identity: ClientIdentity,
    chain: Vec<CertificateDer<'static>>,
    verifier: Arc<Verifier>,
    /// The material that last accepted the chain.
    accepted_by: ArcSwapOption<ClientAuth>,
}

impl VerifiedPeer {
    /// The identity, if the listener's current client verification still accepts it.
    pub fn identity(&self) -> Option<&ClientIdentity> {
        let current = self.verifier.0.load_full()?;
        let accepted = self
            .accepted_by
            .load()
            .as_ref()
            .is_some_and(|by| Arc::ptr_eq(by, &current));
        if !accepted {
            let (leaf, intermediates) = self.chain.split_first()?;
            current
                .verifier
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .ok()?;
            self.accepted_by.store(Some(current));
        }
        Some(&self.identity)
    }
}

/// Reads the client's identity after the handshake and hangs it on the connection's TLS
/// digest for the requests on it. The chain is verified here again against the listener's
/// current client verification: a resumed session skips the handshake's verification, and
/// must not keep an identity a reload has since withdrawn (a CA removed, a certificate
/// expired).
pub struct IdentityCallback(pub Arc<Verifier>);

#[async_trait::async_trait]
impl pingora_core::listeners::TlsAccept for IdentityCallback {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora_core::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let chain = tls.peer_cert_chain_der()?;
        let (leaf, intermediates) = chain.split_first()?;
        let auth = self.0 .0.load_full()?;
        auth.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .ok()?;
        let identity = ClientIdentity::from_der(leaf)?;
        Some(Arc::new(VerifiedPeer {
            identity,
            chain: chain.to_vec(),
            verifier: self.0.clone(),
            accepted_by: ArcSwapOption::from(Some(auth)),
        }))
    }
}

/// `providers.<name>.tls`: how sira checks a provider's certificate (a private `ca`
/// instead of the system's roots) and the certificate it presents to it (mTLS upstream).
pub struct UpstreamTls {
    pub ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    pub client: Option<Arc<pingora_core::utils::tls::CertKey>>,
    /// Unique in the process's life: what the upstream pool keys connections by (an address
    /// could be reused once a reload freed this).
    pub id: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("UpstreamTls")
            .field("ca", &self.ca.as_ref().map(|ca| ca.len()))
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl UpstreamTls {
    /// Loads the files, checked the way the connector will use them (it would panic on a
    /// certificate it cannot parse, or a key of an unknown kind).
    pub fn load(
        ca: Option<&Path>,
        cert_key: Option<(&Path, &Path)>,
    ) -> Result<UpstreamTls, TlsError> {
        use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
        let ca = match ca {
            None => None,
            Some(path) => {
                let name = path.display().to_string();
                let mut roots = Vec::new();
                for der in read_certs(path)? {
                    if x509_parser::parse_x509_certificate(&der).is_err() {
                        return Err(TlsError::Invalid(
                            name,
                            "a certificate does not parse".into(),
                        ));
                    }
                    roots.push(WrappedX509::new(der.to_vec(), parse_x509));
                }
                Some(Arc::from(roots.into_boxed_slice()))
            }
        };
        let client = match cert_key {
            None => None,
            Some((cert, key)) => {
                // The same checks as a listener's certificate: loads, supported, matching.
                certified_key(cert, key, None)?;
                let chain = read_certs(cert)?;
                if chain
                    .iter()
                    .any(|der| x509_parser::parse_x509_certificate(der).is_err())
                {
                    return Err(TlsError::Invalid(
                        cert.display().to_string(),
                        "a certificate does not parse".into(),
                    ));
                }
                let der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|_| TlsError::NoKey(key.display().to_string()))?;
                let der = der.secret_der().to_vec();
                Some(Arc::new(CertKey::new(
                    chain.into_iter().map(|c| c.to_vec()).collect(),
                    der,
                )))
            }
        };
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(UpstreamTls { ca, client, id })
    }
}

/// The live material of one TLS listener, shared by the listener and every snapshot.
#[derive(Debug)]
pub struct Handles {
    pub resolver: Arc<Resolver>,
    pub verifier: Arc<Verifier>,
}

/// One TLS listener's handshake: sira's own rustls `ServerConfig` (Pingora's listener
/// builds one without a ticketer, so it resumed sessions only from a per-process cache of
/// 256), with the listener's live certificates and client verification.
pub struct Endpoint {
    acceptor: pingora_core::listeners::tls::Acceptor,
    identity: IdentityCallback,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tls::Endpoint")
    }
}

/// Why a client's TLS handshake did not complete; logged at debug (scanners and health
/// probes fail handshakes all day).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not completed within {0:?}")]
    Timeout(std::time::Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(String),
    #[error("the accepted connection is not a TCP or Unix stream")]
    Transport,
    #[error("a resumed session without a verified client certificate, where one is required")]
    NoClientCertificate,
}

impl Endpoint {
    pub fn new(handles: &Handles) -> Result<Endpoint, TlsError> {
        let invalid = |e: rustls::Error| TlsError::Invalid("TLS listener".into(), e.to_string());
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(invalid)?
            .with_client_cert_verifier(handles.verifier.clone())
            .with_cert_resolver(handles.resolver.clone());
        // Stateless resumption: any worker resumes any session without a shared cache, and
        // the ticket keys rotate (a new one every 6 hours, the previous still accepted).
        // The session cache stays for clients that offer no ticket support.
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(invalid)?;
        // HTTP/2 preferred, HTTP/1.1 allowed.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Endpoint {
            acceptor: pingora_core::listeners::tls::Acceptor::from_server_config(Arc::new(config)),
            identity: IdentityCallback(handles.verifier.clone()),
        })
    }

    /// Completes the server side of the handshake on a freshly accepted connection, within
    /// `limit`.
    pub async fn accept(
        &self,
        stream: pingora_core::protocols::Stream,
        limit: std::time::Duration,
    ) -> Result<pingora_core::protocols::Stream, HandshakeError> {
        use pingora_core::protocols::l4::stream::Stream as L4Stream;
        // Pingora's plain listener hands each connection over as its L4 stream, boxed.
        let l4: Box<L4Stream> = stream
            .into_any()
            .downcast()
            .map_err(|_| HandshakeError::Transport)?;
        let handshake = pingora_core::protocols::tls::server::handshake_with_callback(
            &self.acceptor,
            *l4,
            &self.identity,
        );
        let tls = match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(HandshakeError::Failed(e.to_string())),
            Err(_) => return Err(HandshakeError::Timeout(limit)),
        };
        // A resumed session skips the certificate request: rustls restores the chain the
        // session had, or none. Where a certificate is required now (a reload may have
        // made it so since), a connection without a verified one is refused here.
        let required = self
            .identity
            .0
             .0
            .load()
            .as_ref()
            .is_some_and(|a| a.required);
        if required {
            let verified = tls
                .ssl_digest()
                .is_some_and(|d| d.extension.get::<VerifiedPeer>().is_some());
            if !verified {
                return Err(HandshakeError::NoClientCertificate);
            }
        }
        Ok(Box::new(tls))
    }
}

/// Hands a new snapshot's certificates and client verification to the listeners already
/// running: the next handshake uses them, open connections keep what they have.
pub fn install(snap: &crate::config::Snapshot) {
    for listener in &snap.server.tls {
        if let Some(handles) = crate::runtime::registry().tls_listener(listener.listen) {
            handles.resolver.store(listener.certs.clone());
            handles.verifier.store(listener.client.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(name: &str) -> Arc<CertifiedKey> {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let der = PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
        let signing = provider().key_provider.load_private_key(der).unwrap();
        Arc::new(CertifiedKey::new(vec![cert.cert.der().clone()], signing))
    }

    #[test]
    fn names_pick_exact_then_wildcard_then_the_default() {
        let (default, api, wild) = (key_for("d"), key_for("api"), key_for("w"));
        let mut set = CertSet::new(default.clone());
        assert!(set.add("API.example.com.", api.clone()));
        assert!(set.add("*.example.org", wild.clone()));
        assert!(!set.add("*", default.clone()));
        assert!(!set.add("a.*.org", default.clone()));
        let same = |a: &Arc<CertifiedKey>, b: &Arc<CertifiedKey>| Arc::ptr_eq(a, b);
        assert!(same(&set.pick(Some("api.example.com")), &api));
        assert!(same(&set.pick(Some("x.example.org")), &wild));
        // A wildcard covers one label, not the domain itself nor two labels.
        assert!(same(&set.pick(Some("example.org")), &default));
        assert!(same(&set.pick(Some("a.b.example.org")), &default));
        assert!(same(&set.pick(None), &default));
    }

    #[test]
    fn a_certificates_identity_is_its_common_name_and_alternative_names() {
        let mut params = rcgen::CertificateParams::new(vec!["agent.internal".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ci-runner");
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "ops@example.com".try_into().unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let identity = ClientIdentity::from_der(cert.der()).unwrap();
        assert_eq!(
            identity.names,
            ["ci-runner", "dns:agent.internal", "email:ops@example.com"]
        );
    }
}
