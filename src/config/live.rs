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
    /// What the process bound and set up at start, which only a restart changes.
    started: StartOnly,
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
            started: StartOnly::of(&snapshot),
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
        // Against what is bound, not the previous file: a change reverted by a later reload
        // needs no restart, and one made by an earlier reload still does.
        let needs_restart = self.started.differences(&StartOnly::of(&next));
        let next = Arc::new(next);
        crate::limits::shared::install(&next);
        crate::tls::install(&next);
        crate::keystore::install(&next);
        self.current.store(next.clone());
        metrics().config_reloads.with_label_values(&["ok"]).inc();
        metrics().set_config(&next.meta.sha256);
        crate::models::catalog::catalog().wake.notify_one();
        Ok(Reloaded {
            snapshot: next,
            needs_restart,
        })
    }
}

/// The settings read only at start.
#[derive(Clone, PartialEq)]
struct StartOnly {
    listen: Vec<std::net::SocketAddr>,
    tls_listen: Vec<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
    threads: usize,
    grace_period: std::time::Duration,
    resolver: Vec<std::net::SocketAddr>,
    logging: (String, crate::config::LogFormat),
}

impl StartOnly {
    fn of(snap: &Snapshot) -> StartOnly {
        let s = &snap.server;
        StartOnly {
            listen: s.listen.clone(),
            tls_listen: s.tls.iter().map(|t| t.listen).collect(),
            admin: s.admin,
            threads: s.threads,
            grace_period: s.grace_period,
            resolver: s.resolver.clone(),
            logging: (snap.logging.level.clone(), snap.logging.format),
        }
    }

    fn differences(&self, new: &StartOnly) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != new.listen {
            changed.push("server.listen");
        }
        if self.tls_listen != new.tls_listen {
            changed.push("server.tls[].listen");
        }
        if self.admin != new.admin {
            changed.push("server.admin");
        }
        if self.threads != new.threads {
            changed.push("server.threads");
        }
        if self.grace_period != new.grace_period {
            changed.push("server.grace_period");
        }
        if self.resolver != new.resolver {
            changed.push("server.resolver");
        }
        if self.logging != new.logging {
            changed.push("logging.level/format");
        }
        changed
    }
}
