//! `server.tls` → [`TlsListener`]s: each listener's certificates (the default and those
//! chosen by server name) and its client verification, loaded and checked while the config
//! is built, so a reload with a bad certificate or key is refused whole.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_yaml::Value;

use super::build::Builder;
use super::section;
use crate::tls::{certified_key, CertSet, ClientAuth};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerConfig {
    listen: String,
    cert: String,
    key: String,
    /// A DER OCSP response to staple with the default certificate.
    #[serde(default)]
    ocsp: Option<String>,
    #[serde(default)]
    sni: Vec<SniConfig>,
    #[serde(default)]
    client_ca: Option<String>,
    #[serde(default)]
    client_auth: Option<ClientAuthMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SniConfig {
    names: Vec<String>,
    cert: String,
    key: String,
    #[serde(default)]
    ocsp: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ClientAuthMode {
    Required,
    Optional,
}

/// One TLS listener as this snapshot wants it.
#[derive(Clone, Debug)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub certs: Arc<CertSet>,
    pub client: Option<Arc<ClientAuth>>,
}

/// `server.tls`: one listener or a list.
pub(super) fn listeners(b: &mut Builder, value: Option<Value>) -> Vec<TlsListener> {
    let Some(value) = value else {
        return Vec::new();
    };
    let configs: Vec<(String, Value)> = match value {
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("server.tls[{i}]"), v))
            .collect(),
        other => vec![("server.tls".to_owned(), other)],
    };
    let mut out: Vec<TlsListener> = Vec::new();
    for (path, value) in configs {
        let Some(config) = section::<ListenerConfig>(value, &path, b.problems) else {
            continue;
        };
        let listen = match super::server::socket_addr(&config.listen) {
            Ok(addr) => addr,
            Err(e) => {
                b.problem(format!("{path}.listen"), e);
                continue;
            }
        };
        if out.iter().any(|l| l.listen == listen) {
            b.problem(
                format!("{path}.listen"),
                "another TLS listener has this address",
            );
            continue;
        }
        if listen.port() == 0 {
            // Its connections are told from plain ones by their port.
            b.problem(format!("{path}.listen"), "needs a port (not 0)");
            continue;
        }
        let load = |b: &mut Builder, at: String, cert: &str, key: &str, ocsp: Option<&str>| {
            match certified_key(Path::new(cert), Path::new(key), ocsp.map(Path::new)) {
                Ok(key) => Some(key),
                Err(e) => {
                    b.problem(at, e.to_string());
                    None
                }
            }
        };
        let Some(default) = load(
            b,
            path.clone(),
            &config.cert,
            &config.key,
            config.ocsp.as_deref(),
        ) else {
            continue;
        };
        let mut certs = CertSet::new(default);
        for (i, sni) in config.sni.iter().enumerate() {
            let at = format!("{path}.sni[{i}]");
            if sni.names.is_empty() {
                b.problem(format!("{at}.names"), "name at least one server name");
            }
            let Some(key) = load(b, at.clone(), &sni.cert, &sni.key, sni.ocsp.as_deref()) else {
                continue;
            };
            for name in &sni.names {
                if !certs.add(name, key.clone()) {
                    b.problem(
                        format!("{at}.names"),
                        format!(
                            "{name:?} is not a server name (`api.example.com` or `*.example.com`)"
                        ),
                    );
                }
            }
        }
        let client = match (&config.client_ca, config.client_auth) {
            (None, None) => None,
            (None, Some(_)) => {
                b.problem(
                    format!("{path}.client_auth"),
                    "needs client_ca: the CA whose certificates clients present",
                );
                None
            }
            (Some(ca), mode) => {
                let required = mode != Some(ClientAuthMode::Optional);
                match ClientAuth::load(Path::new(ca), required) {
                    Ok(auth) => Some(Arc::new(auth)),
                    Err(e) => {
                        b.problem(format!("{path}.client_ca"), e.to_string());
                        None
                    }
                }
            }
        };
        out.push(TlsListener {
            listen,
            certs: Arc::new(certs),
            client,
        });
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamConfig {
    /// PEM certificates the provider's chain must lead to, instead of the system's roots.
    #[serde(default)]
    ca: Option<String>,
    /// A client certificate (PEM chain) and its key, presented to the provider.
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// `providers.<name>.tls`.
pub(super) fn upstream(
    b: &mut Builder,
    path: &str,
    value: Option<Value>,
) -> Option<Arc<crate::tls::UpstreamTls>> {
    let config = section::<UpstreamConfig>(value?, path, b.problems)?;
    let cert_key = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some((Path::new(cert.as_str()), Path::new(key.as_str()))),
        (None, None) => None,
        _ => {
            b.problem(path, "cert and key go together");
            return None;
        }
    };
    match crate::tls::UpstreamTls::load(config.ca.as_deref().map(Path::new), cert_key) {
        Ok(tls) => Some(Arc::new(tls)),
        Err(e) => {
            b.problem(path, e.to_string());
            None
        }
    }
}
