//! Config reload, shared by SIGHUP and `POST /admin/reload`.
//!
//! Pingora handles SIGTERM, SIGINT and SIGQUIT itself and leaves SIGHUP alone; a background
//! service listens for it. Reload work runs there or on the admin listener, never on the
//! request path.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::access_log::AccessLog;
use crate::config::live::Reloaded;
use crate::config::{ConfigError, Live};

/// Reloads the config and everything that follows it (the access log target).
pub struct Reloader {
    pub live: Arc<Live>,
    pub access_log: Arc<AccessLog>,
}

impl Reloader {
    pub fn reload(&self, trigger: &str) -> Result<Reloaded, ConfigError> {
        crate::notify::reloading();
        let result = self.reload_now(trigger);
        // Ready again either way: a refused file leaves the running config serving.
        crate::notify::notify("READY=1");
        result
    }

    fn reload_now(&self, trigger: &str) -> Result<Reloaded, ConfigError> {
        match self.live.reload() {
            Ok(reloaded) => {
                // Reopen even when unchanged: SIGHUP after log rotation expects a new file.
                self.access_log
                    .retarget(reloaded.snapshot.logging.access_log.clone());
                tracing::info!(
                    trigger,
                    sha256 = %reloaded.snapshot.meta.sha256,
                    "config reloaded"
                );
                if !reloaded.needs_restart.is_empty() {
                    tracing::warn!(
                        settings = ?reloaded.needs_restart,
                        "these settings changed but only take effect after a restart (or `sira run --upgrade`)"
                    );
                }
                Ok(reloaded)
            }
            Err(e) => {
                tracing::error!(
                    trigger,
                    "config reload failed, keeping the current config:\n{e}"
                );
                Err(e)
            }
        }
    }
}

/// Waits for SIGHUP and reloads.
pub struct SighupService(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for SighupService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::error!(
                        "cannot listen for SIGHUP, reload only via POST /admin/reload: {e}"
                    );
                    return;
                }
            };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    let reloader = self.0.clone();
                    // Parsing and building may read files: keep it off the async workers.
                    let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
