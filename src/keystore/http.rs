//! `/admin/keys`: list (never a secret, nor a hash), issue (the secret shown once), rotate
//! and revoke.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};

use super::{IssueRequest, Issued, KeyStoreError, Location};
use crate::config::keys::{format_time, IssuedKey};
use crate::config::Snapshot;

/// A status and a JSON body.
pub type Reply = (u16, Value);

/// Answers a request under `/admin/keys`; `None` for another path.
pub async fn handle(
    snap: &Arc<Snapshot>,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<Reply> {
    let rest = path.strip_prefix("/admin/keys")?;
    let reply = match (method, rest.trim_end_matches('/')) {
        (&Method::GET, "") => (200, list(snap)),
        (&Method::POST, "") => match serde_json::from_slice::<IssueRequest>(body) {
            Ok(request) => answer(super::issue(snap, request).await, 201),
            Err(e) => bad_request(format!("the body is not a key request: {e}")),
        },
        (&Method::POST, tail) if tail.ends_with("/rotate") => {
            let name = tail
                .strip_prefix('/')
                .and_then(|t| t.strip_suffix("/rotate"))
                .unwrap_or_default();
            match overlap(body) {
                Ok(overlap) => answer(super::rotate(snap, name, overlap).await, 200),
                Err(message) => bad_request(message),
            }
        }
        (&Method::DELETE, tail) if tail.len() > 1 && !tail[1..].contains('/') => {
            let name = &tail[1..];
            match super::revoke(snap, name).await {
                Ok(()) => (200, json!({"revoked": name})),
                Err(e) => failure(&e),
            }
        }
        _ => (405, json!({"error": "method not allowed"})),
    };
    Some(reply)
}

fn bad_request(message: String) -> Reply {
    (400, json!({"error": message}))
}

/// `{"overlap": "1h"}` (default): how long the old secrets keep working.
fn overlap(body: &[u8]) -> Result<Duration, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rotate {
        #[serde(default)]
        overlap: Option<String>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DEFAULT_OVERLAP);
    }
    let rotate: Rotate =
        serde_json::from_slice(body).map_err(|e| format!("the body is not a rotation: {e}"))?;
    match rotate.overlap {
        None => Ok(DEFAULT_OVERLAP),
        Some(text) => humantime::parse_duration(&text)
            .map_err(|_| format!("overlap: {text:?} is not a duration such as 1h or 0s")),
    }
}

const DEFAULT_OVERLAP: Duration = Duration::from_secs(3600);

fn answer(result: Result<Issued, KeyStoreError>, status: u16) -> Reply {
    match result {
        Ok(Issued { record, secret }) => {
            let mut body = describe_issued(&record);
            body["key"] = Value::String(secret);
            (status, body)
        }
        Err(e) => failure(&e),
    }
}

fn failure(e: &KeyStoreError) -> Reply {
    let status = match e {
        KeyStoreError::NoStore
        | KeyStoreError::Exists(_)
        | KeyStoreError::ConfigKey(_)
        | KeyStoreError::Conflict(_) => 409,
        KeyStoreError::NotFound(_) => 404,
        KeyStoreError::Invalid(_) => 400,
        KeyStoreError::Unavailable(_) => 503,
    };
    (status, json!({"error": e.to_string()}))
}

fn describe_issued(record: &IssuedKey) -> Value {
    json!({
        "name": record.name,
        "source": "issued",
        "tenant": record.tenant,
        "models": record.models,
        "filters": record.filters,
        "limits": record.limits,
        "expires_at": record.expires_at,
        "created_at": record.created_at,
        "hashes": record.hashes.iter().map(|h| json!({"expires_at": h.expires_at})).collect::<Vec<_>>(),
    })
}

/// Every key the gateway knows, config and issued, by name and settings only.
fn list(snap: &Snapshot) -> Value {
    let now = crate::auth::now_secs();
    let mut keys: Vec<Value> = snap
        .keys
        .iter()
        .map(|k| {
            json!({
                "name": &*k.name,
                "source": "config",
                "tenant": k.tenant.as_ref().map(|t| &*t.name),
                "expires_at": k.expires_at.map(format_time),
                "expired": k.expires_at.is_some_and(|end| now >= end),
                "hashes": k.hash_count(),
            })
        })
        .collect();
    let issued = snap.issued.load();
    for record in super::known() {
        let mut entry = describe_issued(&record);
        let served = issued.named(&record.name);
        entry["active"] = Value::Bool(served.is_some());
        entry["expired"] = Value::Bool(
            served
                .and_then(|k| k.expires_at)
                .is_some_and(|end| now >= end),
        );
        keys.push(entry);
    }
    let store = match &snap.key_store {
        None => json!({"kind": "none"}),
        Some(Location::File(path)) => json!({"kind": "file", "path": path.display().to_string()}),
        Some(Location::Redis(_)) => json!({"kind": "redis"}),
    };
    json!({"keys": keys, "store": store})
}
