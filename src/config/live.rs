//! The config in use, swapped atomically on reload.
//!
//! Reload is prepare-then-commit: the new file is read, parsed and compiled into a complete
//! [`Snapshot`] first (every fallible step), then one `ArcSwap::store` publishes it. A request
//! pins the snapshot it started with (`load_full` in the request context), so a stream open
//! across a reload finishes on the old config while new requests see the new one, and an
//! invalid file changes nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{builtin_default, load, ConfigError, ProcessSource, Snapshot};
use crate::metrics::metrics;

/// The swappable config handle shared by every service.
pub struct Live {
    current: ArcSwap<Snapshot>,
    /// `None` when running on the built-in default, which has nothing to reload.
    path: Option<PathBuf>,
    /// Serialises reloads (SIGHUP and `/admin/reload` may race); requests never take it.
    reloading: Mutex<()>,
}

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub snapshot: Arc<Snapshot>,
    /// Settings read only at startup that differ in the new file.
    pub needs_restart: Vec<&'static str>,
}

impl Live {
    pub fn new(snapshot: Snapshot, path: Option<PathBuf>) -> Live {
        metrics().set_config(&snapshot.meta.sha256);
        crate::limits::shared::install(&snapshot);
        crate::tls::install(&snapshot);
        let snapshot = Arc::new(snapshot);
        crate::keystore::install(&snapshot);
        Live {
            current: ArcSwap::new(snapshot),
            path,
            reloading: Mutex::new(()),
        }
    }

    /// The snapshot for a new request: one atomic refcount increment, cannot fail.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// Re-reads the config file and swaps it in if valid; counts the outcome either way.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        // A poisoned lock only means an earlier reload panicked; the guarded data is `()`.
        let _guard = self
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = match &self.path {
            Some(path) => load(path),
            // The built-in default is rebuilt from the environment as at startup.
            None => builtin_default(&ProcessSource),
        };
        let next = match result {
            Ok(next) => next,
            Err(e) => {
                metrics().config_reloads.with_label_values(&["error"]).inc();
                return Err(e);
            }
        };
        let previous = self.current.load();
        let needs_restart = restart_only_changes(&previous, &next);
        let next = Arc::new(next);
        crate::limits::shared::install(&next);
        crate::tls::install(&next);
        crate::keystore::install(&next);
        self.current.store(next.clone());
        metrics().config_reloads.with_label_values(&["ok"]).inc();
        metrics().set_config(&next.meta.sha256);
        Ok(Reloaded {
            snapshot: next,
            needs_restart,
        })
    }
}

fn restart_only_changes(old: &Snapshot, new: &Snapshot) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let mut changed = Vec::new();
    if a.listen != b.listen {
        changed.push("server.listen");
    }
    let tls_addrs =
        |s: &crate::config::ServerSettings| -> Vec<_> { s.tls.iter().map(|t| t.listen).collect() };
    if tls_addrs(a) != tls_addrs(b) {
        changed.push("server.tls[].listen");
    }
    if a.admin != b.admin {
        changed.push("server.admin");
    }
    if a.threads != b.threads {
        changed.push("server.threads");
    }
    if a.grace_period != b.grace_period {
        changed.push("server.grace_period");
    }
    if a.resolver != b.resolver {
        changed.push("server.resolver");
    }
    if old.logging.level != new.logging.level || old.logging.format != new.logging.format {
        changed.push("logging.level/format");
    }
    changed
}
