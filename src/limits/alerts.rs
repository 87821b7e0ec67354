//! Budget and limit alerts (`alerts:`): a JSON POST to each configured webhook when a
//! key's, tenant's or model's spend crosses a threshold of its budget (each threshold once
//! per budget period), and when a limit starts refusing (once per window). Sent by a
//! background task, HMAC-signed, retried with backoff: never on the request path, and a
//! full queue drops an alert (counted) rather than hold a request.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;

use super::shared::SharedStore;
use crate::config::Secret;

/// One webhook.
#[derive(Debug)]
pub struct Hook {
    pub url: String,
    /// Signs each body: `x-sira-signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub secret: Option<Secret>,
}

/// `alerts:`, compiled.
#[derive(Debug)]
pub struct Alerts {
    pub hooks: Vec<Arc<Hook>>,
    /// Percent of a budget, ascending.
    pub thresholds: Vec<u8>,
}

/// What happened.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// `budget_threshold` or `limit_refusing`.
    pub kind: &'static str,
    /// `key team-a`, `tenant acme`, `model gpt-4o`.
    pub scope: String,
    /// The limit (`budget`, `requests_per_minute`, …).
    pub limit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Seconds since the epoch.
    pub at: u64,
}

/// Alerts waiting for the sender; bounded, so a dead webhook cannot grow memory.
const QUEUE: usize = 1024;

/// An alert, its webhooks, and with a shared store the key whose first setter sends it.
type Queued = (
    Alert,
    Vec<Arc<Hook>>,
    Option<(Arc<SharedStore>, String, u64)>,
);
/// The queue's sending end, and its receiving end until the sender task takes it.
type Channel = (mpsc::Sender<Queued>, Mutex<Option<mpsc::Receiver<Queued>>>);

static CHANNEL: LazyLock<Channel> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel(QUEUE);
    (tx, Mutex::new(Some(rx)))
});

/// Queues `alert` for `alerts`' webhooks; drops it when the queue is full. With a shared
/// limits store every host sees the same crossing: the alert goes out from the host that
/// claims it first in Redis for its `window` (a budget period, or a minute).
pub fn send(alerts: &Alerts, store: Option<&Arc<SharedStore>>, window: i64, alert: Alert) {
    if alerts.hooks.is_empty() {
        return;
    }
    tracing::warn!(kind = alert.kind, scope = %alert.scope, limit = alert.limit, "alert");
    let claim = store.map(|store| {
        let threshold = alert.threshold_percent.unwrap_or(0);
        let key = format!(
            "{}:{}:{}:{window}:{threshold}",
            alert.kind, alert.scope, alert.limit
        );
        // Kept as long as its window lasts: a budget's period, or a minute.
        let ttl_ms = if alert.limit == "budget" {
            32 * 86_400_000
        } else {
            120_000
        };
        (store.clone(), key, ttl_ms)
    });
    if CHANNEL
        .0
        .try_send((alert, alerts.hooks.clone(), claim))
        .is_err()
    {
        tracing::warn!("the alert queue is full: an alert was dropped");
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Delivers queued alerts.
pub struct AlertService;

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for AlertService {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let Some(mut rx) = CHANNEL.1.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        loop {
            let queued = tokio::select! {
                queued = rx.recv() => queued,
                _ = shutdown.changed() => return,
            };
            let Some((alert, hooks, claim)) = queued else {
                return;
            };
            if let Some((store, key, ttl_ms)) = claim {
                if !store.claim_alert(&key, ttl_ms).await {
                    continue;
                }
            }
            let body = serde_json::to_vec(&alert).unwrap_or_default();
            for hook in hooks {
                let (client, body) = (client.clone(), body.clone());
                tokio::spawn(async move { deliver(&client, &hook, body).await });
            }
        }
    }
}

/// POSTs `body` to `hook`: 3 tries, 1 s then 4 s apart.
async fn deliver(client: &reqwest::Client, hook: &Hook, body: Vec<u8>) {
    let signature = hook.secret.as_ref().map(|secret| {
        let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(&body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    });
    for (attempt, pause) in [0u64, 1, 4].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(pause)).await;
        let mut req = client
            .post(&hook.url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(signature) = &signature {
            req = req.header("x-sira-signature", signature.as_str());
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => tracing::warn!(
                attempt,
                status = resp.status().as_u16(),
                "an alert webhook refused an alert"
            ),
            Err(_) => tracing::warn!(attempt, "an alert webhook could not be reached"),
        }
    }
}
