//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/admin/config`, `/admin/reload`,
//! `/admin/upstreams`, `/admin/usage`, `/admin/keys` ([`crate::keystore`]).
//!
//! Kept on its own listener (loopback by default) so that metrics and reload never share a
//! port with client traffic. `/admin/*` requires `server.admin_token` as a bearer token
//! when one is configured, compared in constant time.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Method};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::config::{ConfigError, Snapshot};
use crate::metrics::metrics;
use crate::reload::Reloader;

pub struct Admin {
    pub reloader: Arc<Reloader>,
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Bytes,
}

impl Reply {
    fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Bytes::from(value.to_string()),
        }
    }

    fn text(status: u16, text: &'static str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from_static(text.as_bytes()),
        }
    }
}

#[async_trait]
impl HttpServerApp for Admin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(session.read_request().await, Ok(true)) {
            return None;
        }
        let reply = self.route(&mut session).await;
        let mut header = ResponseHeader::build_no_case(reply.status, Some(3)).ok()?;
        header
            .insert_header(header::CONTENT_TYPE, reply.content_type)
            .ok()?;
        header
            .insert_header(header::CONTENT_LENGTH, reply.body.len())
            .ok()?;
        session.write_response_header(Box::new(header)).await.ok()?;
        session.write_response_body(reply.body, true).await.ok()?;
        let persistent = HttpPersistentSettings::for_session(&session);
        session
            .finish()
            .await
            .ok()
            .flatten()
            .map(|s| ReusedHttpStream::from_reusable_stream(s, persistent))
    }
}

impl Admin {
    async fn route(&self, session: &mut ServerSession) -> Reply {
        let snap = self.reloader.live.load_full();
        let (method, path) = {
            let h = session.req_header();
            (h.method.clone(), h.uri.path().to_owned())
        };
        if path.starts_with("/admin/") && !authorized(&snap, session) {
            return Reply::json(401, json!({"error": "missing or invalid admin token"}));
        }
        // Without a token the admin listener is on loopback (the config requires one beyond
        // it), and a web page the operator opens could still reach it by DNS rebinding and
        // read what it answers. The key routes answer secrets: only to loopback Host names.
        let key_route = path == "/admin/keys" || path.starts_with("/admin/keys/");
        if key_route && snap.server.admin_token.is_none() {
            let host = session
                .req_header()
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            if !crate::auth::is_loopback_host(host) {
                return Reply::json(
                    403,
                    json!({"error": "the Host is not a loopback name (set server.admin_token to reach the admin API by another name)"}),
                );
            }
        }
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                crate::pool::admin::publish_gauges(&snap);
                crate::limits::admin::publish_gauges(&snap);
                Reply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body: Bytes::from(metrics().render()),
                }
            }
            (Method::GET, "/healthz") => Reply::text(200, "ok\n"),
            (Method::GET, "/readyz") => readiness(&snap),
            (Method::GET, "/admin/config") => Reply::json(200, describe(&snap)),
            (Method::GET, "/admin/usage") => {
                let query = session.req_header().uri.query().map(str::to_owned);
                Reply::json(200, crate::limits::admin::describe(&snap, query.as_deref()))
            }
            (Method::GET, "/admin/upstreams") => {
                Reply::json(200, crate::pool::admin::describe(&snap))
            }
            (method, path) if path == "/admin/keys" || path.starts_with("/admin/keys/") => {
                let body = match read_key_request(session, &method).await {
                    Ok(body) => body,
                    Err(reply) => return reply,
                };
                match crate::keystore::handle(&snap, &method, path, &body).await {
                    Some((status, value)) => Reply::json(status, value),
                    None => Reply::json(404, json!({"error": "not found"})),
                }
            }
            (Method::POST, "/admin/reload") => {
                let _ = session.drain_request_body().await;
                let reloader = self.reloader.clone();
                match tokio::task::spawn_blocking(move || reloader.reload("admin")).await {
                    Ok(Ok(reloaded)) => Reply::json(
                        200,
                        json!({"result": "ok", "sha256": reloaded.snapshot.meta.sha256, "needs_restart": reloaded.needs_restart}),
                    ),
                    Ok(Err(ConfigError::Invalid(problems))) => Reply::json(
                        400,
                        json!({"result": "error", "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>()}),
                    ),
                    Ok(Err(e)) => {
                        Reply::json(400, json!({"result": "error", "problems": [e.to_string()]}))
                    }
                    Err(_) => Reply::json(
                        500,
                        json!({"result": "error", "problems": ["reload task failed"]}),
                    ),
                }
            }
            (
                _,
                "/metrics" | "/healthz" | "/readyz" | "/admin/config" | "/admin/reload"
                | "/admin/upstreams",
            ) => Reply::json(405, json!({"error": "method not allowed"})),
            _ => Reply::json(404, json!({"error": "not found"})),
        }
    }
}

/// The largest body `/admin/keys` reads.
const KEY_REQUEST_LIMIT: usize = 64 * 1024;

/// The body of a key request, bounded. A POST must say it is JSON: a web page can send a
/// form or text cross-site to a loopback admin listener without asking, JSON only after a
/// CORS preflight sira never grants.
async fn read_key_request(session: &mut ServerSession, method: &Method) -> Result<Vec<u8>, Reply> {
    if *method == Method::POST && !crate::auth::says_json(&session.req_header().headers) {
        return Err(Reply::json(
            415,
            json!({"error": "send the request as JSON (content-type: application/json)"}),
        ));
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > KEY_REQUEST_LIMIT {
                    return Err(Reply::json(413, json!({"error": "request body too large"})));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(Reply::json(
                    400,
                    json!({"error": "unreadable request body"}),
                ))
            }
        }
    }
}

fn authorized(snap: &Snapshot, session: &ServerSession) -> bool {
    let Some(token) = &snap.server.admin_token else {
        return true;
    };
    let presented = session
        .req_header()
        .headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .unwrap_or_default();
    bool::from(presented.ct_eq(token.expose().as_bytes()))
}

/// Ready when a config is loaded and every model has a target with an endpoint that can
/// take a request (healthy, circuit not open).
fn readiness(snap: &Snapshot) -> Reply {
    if snap.models.is_empty() {
        return Reply::text(503, "no models configured\n");
    }
    let stranded = crate::pool::admin::stranded_models(snap);
    if !stranded.is_empty() {
        return Reply {
            status: 503,
            content_type: "text/plain",
            body: Bytes::from(format!(
                "no healthy endpoint for: {}\n",
                stranded.join(", ")
            )),
        };
    }
    Reply::text(200, "ready\n")
}

/// What `/admin/config` shows: where the config came from and what it routes, never a
/// secret (keys are listed by name only; provider keys only as present or not).
fn describe(snap: &Snapshot) -> serde_json::Value {
    let loaded_at = snap
        .meta
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let providers: Vec<_> = snap
        .providers
        .values()
        .map(|p| {
            json!({
                "name": &*p.name,
                "kind": p.kind.as_str(),
                "endpoints": p.endpoints.iter().map(|e| &*e.url).collect::<Vec<_>>(),
                "api_key": if p.api_key.is_some() { "set" } else { "none" },
            })
        })
        .collect();
    let mut models: Vec<String> = snap.models.listed().map(|r| r.name.to_string()).collect();
    models.extend(snap.models.wildcard_patterns().map(str::to_owned));
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "path": snap.meta.path.as_ref().map(|p| p.display().to_string()),
        "sha256": snap.meta.sha256,
        "loaded_at": loaded_at,
        "providers": providers,
        "models": models,
        "keys": snap.keys.iter().map(|k| k.name.to_string()).collect::<Vec<_>>(),
        "auth": if snap.keys.is_empty() && !snap.keys.require_key { "off" } else { "api_keys" },
    })
}
