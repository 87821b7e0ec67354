//! The model names providers list, so that `GET /v1/models` can name concrete models for a
//! wildcard entry (`openai/*` lists `openai/gpt-4o`, …) instead of nothing.
//!
//! A background service asks each provider behind a `prefix*` entry for its model list
//! (the same request as its health check, through the same upstream client, TLS and DNS)
//! once a client first asks sira for its models, then after each reload and every ten
//! minutes, and keeps the last good answer: a gateway nobody asks for a list never asks
//! providers either. The first `GET /v1/models` waits (at most 3 s) for that first
//! answer; a provider unable to list contributes nothing.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;

use crate::provider::{Provider, ProviderKind};
use crate::proxy::exchange::{Destination, Exchange, RequestWire};

/// How often a list is asked for again.
const REFRESH: Duration = Duration::from_secs(600);
/// A failed list is asked for again after this.
const RETRY: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most a list may be (bytes) and name (models): a provider is not trusted to be small.
const MAX_BODY: usize = 4 << 20;
const MAX_MODELS: usize = 2_000;

#[derive(Default)]
struct Listed {
    ids: Arc<[String]>,
    asked: Option<Instant>,
    ok: bool,
}

/// What each provider listed, by provider name.
#[derive(Default)]
pub struct Catalog {
    lists: Mutex<AHashMap<Arc<str>, Listed>>,
    /// Woken by a reload or a first request: new wildcard entries are listed at once.
    pub(crate) wake: tokio::sync::Notify,
    /// A client asked for the models: from then on, lists are kept.
    wanted: std::sync::atomic::AtomicBool,
    /// Told after each provider is asked.
    asked: tokio::sync::Notify,
}

/// How long the first `GET /v1/models` waits for the providers' first lists.
const FIRST_WAIT: Duration = Duration::from_secs(3);

pub fn catalog() -> &'static Catalog {
    static CATALOG: LazyLock<Catalog> = LazyLock::new(Catalog::default);
    &CATALOG
}

impl Catalog {
    fn lists(&self) -> std::sync::MutexGuard<'_, AHashMap<Arc<str>, Listed>> {
        // A poisoned map of lists is still a map of lists.
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The models `provider` listed last, if it has.
    pub fn ids(&self, provider: &str) -> Option<Arc<[String]>> {
        self.lists()
            .get(provider)
            .filter(|l| l.ok)
            .map(|l| l.ids.clone())
    }

    /// Whether `provider` has been asked at least once.
    pub fn was_asked(&self, provider: &str) -> bool {
        self.lists()
            .get(provider)
            .is_some_and(|l| l.ok || l.asked.is_some())
    }

    /// A client wants the lists: waits (bounded) until each of `providers` was asked.
    pub async fn first_lists(&self, providers: Vec<Arc<str>>) {
        self.wanted
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
        let _ = tokio::time::timeout(FIRST_WAIT, async {
            loop {
                let asked = self.asked.notified();
                if providers.iter().all(|p| self.was_asked(p)) {
                    return;
                }
                asked.await;
            }
        })
        .await;
    }

    /// After a reload (a provider's key or endpoint may have changed): every list is asked
    /// for again at once, the last one kept until then.
    pub fn refresh_all(&self) {
        for listed in self.lists().values_mut() {
            if listed.ok {
                listed.asked = None;
            }
        }
        self.wake.notify_one();
    }

    fn due(&self, provider: &str, now: Instant) -> bool {
        self.lists().get(provider).is_none_or(|l| match l.asked {
            None => true,
            Some(at) => now.duration_since(at) >= if l.ok { REFRESH } else { RETRY },
        })
    }

    fn record(&self, provider: &Arc<str>, result: Result<Vec<String>, String>, now: Instant) {
        let mut lists = self.lists();
        let listed = lists.entry(provider.clone()).or_default();
        listed.asked = Some(now);
        match result {
            Ok(ids) => {
                listed.ids = ids.into();
                listed.ok = true;
            }
            // The last good list stays; a provider that never listed contributes nothing.
            Err(reason) => {
                tracing::debug!(provider = %provider, %reason, "model list not read");
            }
        }
        drop(lists);
        self.asked.notify_waiters();
    }
}

/// The providers whose models a wildcard entry passes on as they are named: the targets
/// without a fixed model of each `prefix*` entry.
pub fn listable(snap: &crate::config::Snapshot) -> Vec<Arc<Provider>> {
    let mut out: Vec<Arc<Provider>> = Vec::new();
    for (glob, route) in snap.models.wildcards() {
        if trailing_prefix(glob.as_str()).is_none() {
            continue;
        }
        // Azure lists the resource's base models, not its deployments (what a name
        // addresses there): nothing to list.
        let listed = route
            .targets
            .iter()
            .filter(|t| t.model.is_none() && t.provider.kind != ProviderKind::Azure);
        for target in listed {
            if !out.iter().any(|p| Arc::ptr_eq(p, &target.provider)) {
                out.push(target.provider.clone());
            }
        }
    }
    out
}

/// `openai/` of `openai/*`: patterns with one `*`, at the end.
pub fn trailing_prefix(pattern: &str) -> Option<&str> {
    pattern
        .strip_suffix('*')
        .filter(|prefix| !prefix.contains('*'))
}

async fn list(exchange: &Exchange, provider: &Provider) -> Result<Vec<String>, String> {
    let endpoint = provider.endpoints.first().ok_or("no endpoint")?;
    let request = provider
        .models_request(endpoint)
        .ok_or("cannot build the request")?;
    let addr = endpoint.addr(TIMEOUT).await.map_err(|e| e.to_string())?;
    let dest = Destination {
        addr,
        endpoint,
        timeouts: crate::provider::Timeouts {
            connect: TIMEOUT,
            first_byte: TIMEOUT,
            idle: TIMEOUT,
            total: Some(TIMEOUT),
        },
    };
    let wire = RequestWire::from_header(&request, &[]).map_err(|e| e.to_string())?;
    let mut response = exchange
        .send(&dest, &wire)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.header().status.as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.read().await.map_err(|e| e.to_string())? {
        if body.len() + Bytes::len(&chunk) > MAX_BODY {
            return Err("model list too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    if !(200..300).contains(&status) {
        return Err(format!("answered {status}"));
    }
    parse(provider.kind, &body)
}

/// The model ids of a list in the provider's own shape.
pub fn parse(kind: ProviderKind, body: &[u8]) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not a model list: {e}"))?;
    let mut ids: Vec<String> = match kind {
        // `{"models": [{"name": "models/gemini-2.0-flash", "supportedGenerationMethods": […]}]}`
        ProviderKind::Gemini => value["models"]
            .as_array()
            .ok_or("no models array")?
            .iter()
            .filter(|m| {
                m["supportedGenerationMethods"]
                    .as_array()
                    .is_none_or(|methods| methods.iter().any(|x| x == "generateContent"))
            })
            .filter_map(|m| m["name"].as_str())
            .map(|name| name.strip_prefix("models/").unwrap_or(name).to_owned())
            .collect(),
        // OpenAI, Anthropic, Azure and compatible servers: `{"data": [{"id": …}]}`.
        _ => value["data"]
            .as_array()
            .ok_or("no data array")?
            .iter()
            .filter_map(|m| m["id"].as_str())
            .map(str::to_owned)
            .collect(),
    };
    // Only names a client could send back as a model. Gemini's go into the URL path: one
    // plain segment. The others go in the body, so `meta-llama/Llama-3` or `llama3:8b` are
    // names too; nothing over 256 bytes or with control characters.
    ids.retain(|id| match kind {
        ProviderKind::Gemini => crate::provider::check_path_segment(id).is_ok(),
        _ => !id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control),
    });
    ids.sort();
    ids.dedup();
    ids.truncate(MAX_MODELS);
    Ok(ids)
}

/// Keeps the catalog of the providers behind wildcard entries.
pub struct CatalogService {
    pub live: Arc<crate::config::live::Live>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for CatalogService {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let exchange = Exchange::new();
        loop {
            let wake = catalog().wake.notified();
            if !catalog().wanted.load(std::sync::atomic::Ordering::Acquire) {
                tokio::select! {
                    _ = wake => continue,
                    _ = shutdown.changed() => return,
                }
            }
            let snap = self.live.load_full();
            let now = Instant::now();
            for provider in listable(&snap) {
                if catalog().due(&provider.name, now) {
                    let result = list(&exchange, &provider).await;
                    catalog().record(&provider.name, result, now);
                }
            }
            drop(snap);
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(RETRY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_list_is_read() {
        let openai = br#"{"object":"list","data":[{"id":"gpt-4o"},{"id":"meta-llama/L-3"},{"id":"a\u0000b"},{"id":""}]}"#;
        assert_eq!(
            parse(ProviderKind::Openai, openai).unwrap(),
            ["gpt-4o", "meta-llama/L-3"]
        );
        let anthropic = br#"{"data":[{"type":"model","id":"claude-sonnet-4-5"}],"has_more":false}"#;
        assert_eq!(
            parse(ProviderKind::Anthropic, anthropic).unwrap(),
            ["claude-sonnet-4-5"]
        );
        let gemini = br#"{"models":[
            {"name":"models/gemini-2.0-flash","supportedGenerationMethods":["generateContent","countTokens"]},
            {"name":"models/text-embedding-004","supportedGenerationMethods":["embedContent"]},
            {"name":"models/a/b"}]}"#;
        assert_eq!(
            parse(ProviderKind::Gemini, gemini).unwrap(),
            ["gemini-2.0-flash"]
        );
        assert!(parse(ProviderKind::Openai, b"<html>").is_err());
        assert!(parse(ProviderKind::Openai, b"{}").is_err());
    }

    #[test]
    fn only_trailing_stars_are_listed() {
        assert_eq!(trailing_prefix("openai/*"), Some("openai/"));
        assert_eq!(trailing_prefix("*"), Some(""));
        assert_eq!(trailing_prefix("gpt-*-mini"), None);
        assert_eq!(trailing_prefix("a*b*"), None);
    }
}
