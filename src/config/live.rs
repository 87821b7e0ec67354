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
        // The file's addresses take effect only at a restart: whether the new auth leaves a
        // listener open is judged by what is bound now.
        if let Some(problem) = self.started.left_open(&next) {
            metrics().config_reloads.with_label_values(&["error"]).inc();
            return Err(ConfigError::Invalid(vec![problem]));
        }
        let next = Arc::new(next);
        crate::limits::shared::install(&next);
        crate::tls::install(&next);
        crate::keystore::install(&next);
        self.current.store(next.clone());
        metrics().config_reloads.with_label_values(&["ok"]).inc();
        metrics().set_config(&next.meta.sha256);
        crate::models::catalog::catalog().refresh_all();
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

    /// A listener bound beyond loopback that `next` would leave without authentication, or
    /// an admin listener beyond loopback it would leave without a token.
    fn left_open(&self, next: &Snapshot) -> Option<super::ConfigProblem> {
        let no_auth = next.keys.is_empty() && !next.keys.require_key && next.jwt.is_empty();
        if let Some(addr) = self
            .listen
            .iter()
            .chain(&self.tls_listen)
            .find(|a| !a.ip().is_loopback())
        {
            if no_auth && !next.auth_open {
                return Some(super::ConfigProblem::new(
                    "auth",
                    format!("{addr} is bound beyond loopback (until a restart) and this file leaves it without auth.keys or auth.jwt: add them, or set auth.mode"),
                ));
            }
        }
        if let Some(admin) = self.admin.filter(|a| !a.ip().is_loopback()) {
            if next.server.admin_token.is_none() {
                return Some(super::ConfigProblem::new(
                    "server.admin_token",
                    format!("the admin listener {admin} is bound beyond loopback (until a restart): it needs an admin_token"),
                ));
            }
        }
        None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(text: &str) -> Snapshot {
        crate::config::parse(text, None, &ProcessSource).unwrap()
    }

    #[test]
    fn a_reload_cannot_leave_what_is_bound_beyond_loopback_open() {
        let bound = StartOnly::of(&snap(
            "server: { listen: [\"0.0.0.0:8080\"], admin: \"0.0.0.0:9901\", admin_token: t0123 }\nauth: { mode: open }\n",
        ));
        // A file that moves the listeners to loopback, dropping auth and the token: its
        // addresses only apply at a restart, so it would open the bound ones.
        let next = snap("server: { listen: [\"127.0.0.1:8080\"], admin: \"127.0.0.1:9901\" }\n");
        assert_eq!(bound.left_open(&next).unwrap().path, "auth");
        let keyed = snap(
            "server: { listen: [\"127.0.0.1:8080\"], admin: \"127.0.0.1:9901\" }\nauth: { keys: [{ name: a, hash: \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\" }] }\n",
        );
        assert_eq!(bound.left_open(&keyed).unwrap().path, "server.admin_token");
        let local = StartOnly::of(&next);
        assert!(local.left_open(&next).is_none());
    }
}
