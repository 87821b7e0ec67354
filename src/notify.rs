//! systemd's readiness protocol (`sd_notify`, `Type=notify`): `READY=1` once every listener
//! accepts, `RELOADING=1` … `READY=1` around a reload, `STOPPING=1` when a shutdown begins.
//! Messages are datagrams to the socket in `NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace); without it (not under systemd) nothing is sent.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Sends `state` (newline-separated `KEY=value` lines) to systemd, if it is listening.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = target.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), &target),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// `RELOADING=1`: systemd shows the unit as reloading until the next `READY=1`.
pub fn reloading() {
    notify("RELOADING=1");
}

/// Says `READY=1` once every address in `listeners` accepts a connection (Pingora binds
/// them on its own threads, after `run_forever` starts), or after a minute regardless.
pub struct ReadyService {
    pub listeners: Vec<SocketAddr>,
    /// Started with `--upgrade`: this process becomes the unit's main process (with
    /// `NotifyAccess=all`), the old one drains and exits.
    pub upgraded: bool,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for ReadyService {
    async fn start(&self, _shutdown: pingora_core::server::ShutdownWatch) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for addr in &self.listeners {
            let addr = *addr;
            while Instant::now() < deadline {
                let connected = tokio::task::spawn_blocking(move || {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                })
                .await
                .unwrap_or(false);
                if connected {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let listening: Vec<String> = self.listeners.iter().map(ToString::to_string).collect();
        let main = if self.upgraded {
            format!("MAINPID={}\n", std::process::id())
        } else {
            String::new()
        };
        notify(&format!(
            "{main}READY=1\nSTATUS=serving on {}",
            listening.join(", ")
        ));
    }
}
