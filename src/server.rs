//! Assembles the Pingora server: main listeners, admin listener, SIGHUP reloader.

use std::path::PathBuf;
use std::sync::Arc;

use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::{L4BufferSettings, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::config::{Live, Snapshot};
use crate::proxy::edge::Edge;
use crate::proxy::Gateway;
use crate::reload::{Reloader, SighupService};
use crate::shutdown::Drain;

/// Seconds Pingora's grace period outlasts sira's (see `crate::shutdown`).
const PINGORA_GRACE_MARGIN: u64 = 5;

/// How `sira run` was asked to start.
pub struct RunOptions {
    /// `None` = the built-in default.
    pub config_path: Option<PathBuf>,
    /// Take the listening sockets over from a running instance.
    pub upgrade: bool,
}

/// Where the upgrade hand-over socket lives; overridable so that several instances (tests,
/// staging) on one host do not collide.
fn upgrade_socket() -> String {
    crate::upgrade::socket_path().to_string_lossy().into_owned()
}

/// Builds every service and runs until shutdown. Never returns on success (Pingora exits
/// the process after a graceful shutdown).
pub fn run(snapshot: Snapshot, options: RunOptions) -> std::io::Result<()> {
    let settings = snapshot.server.clone();
    // Pingora binds listeners on its service threads and, when an address is taken, retries
    // for half a minute and then panics on that thread while the process lives on, serving
    // nothing. Each address is tried here first so that startup fails at once, saying
    // which. An upgrade inherits its sockets from the running instance instead.
    if !options.upgrade {
        let tls = settings.tls.iter().map(|t| &t.listen);
        let addresses = settings
            .listen
            .iter()
            .chain(tls)
            .chain(settings.admin.iter());
        for addr in addresses {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr}: {e}"),
                ));
            }
        }
    }
    let access_log = Arc::new(AccessLog::start(snapshot.logging.access_log.clone())?);
    let live = Arc::new(Live::new(snapshot, options.config_path));
    let drain = Arc::new(Drain::default());

    let conf = ServerConf {
        threads: settings.threads,
        // sira's own drain ends the process (crate::shutdown); Pingora's period is only the
        // backstop behind it.
        grace_period_seconds: Some(settings.grace_period.as_secs() + PINGORA_GRACE_MARGIN),
        graceful_shutdown_timeout_seconds: Some(settings.grace_period.as_secs().clamp(1, 10)),
        upgrade_sock: upgrade_socket(),
        // Pingora's own timers for second-long timeouts (its "fast timeouts") need a clock
        // thread that wakes every 10 ms for the life of the process: 100 wake-ups a second
        // on the gateway's core, interrupting requests. With a threshold of 0, every timeout
        // of a second or more (all of them, unless a provider's connect timeout is set
        // shorter) is a tokio timer, driven by the worker's own event loop, and the clock
        // thread does not start.
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        // One worker thread runs a single-threaded event loop (Pingora's no-steal runtime):
        // measured on one core against the work-stealing scheduler, CPU per request fell
        // 14 % over HTTP/2 (a stream's response no longer wakes the connection's writer at
        // once, one flush per response; several go out in one write) and 3-4 % over
        // HTTP/1, TLS or not. With more threads the work-stealing scheduler stays: Pingora
        // registers every accepted socket with the event loop of its accept task's thread
        // and serves the connection on a random one, so most connections would wait on
        // another thread's loop for their reads, and a busy thread's queue could not be
        // taken over.
        work_stealing: settings.threads > 1,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut endpoints = Vec::new();
    for listener in &settings.tls {
        let handles = crate::runtime::registry().tls_handles(listener);
        let endpoint = crate::tls::Endpoint::new(&handles)
            .map_err(|e| std::io::Error::other(format!("TLS listener {}: {e}", listener.listen)))?;
        endpoints.push((listener.listen, Arc::new(endpoint)));
    }
    let mut gateway = Service::new(
        "sira".to_owned(),
        Edge {
            tls: endpoints,
            plain: settings.listen.clone(),
            gateway: Arc::new(Gateway::new(
                live.clone(),
                access_log.clone(),
                drain.clone(),
            )),
        },
    );
    for addr in &settings.listen {
        // Pingora gives every accepted connection a 64 KiB read buffer by default; its HTTP
        // parser reads into buffers of its own, so this one only costs memory (it was the
        // whole of sira's 64 KB per open stream in bench scenario e).
        let listener = ListenerConfig::tcp(addr.to_string())
            .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE));
        gateway.add_listener(listener);
    }
    for listener in &settings.tls {
        // Accepted as TCP; `Edge` makes the handshake with sira's own TLS config.
        let listener = ListenerConfig::tcp(listener.listen.to_string())
            .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE));
        gateway.add_listener(listener);
    }
    gateway.threads = Some(settings.threads);

    crate::shutdown::watch(
        server.watch_execution_phase(),
        drain,
        settings.grace_period,
        access_log.clone(),
    )?;
    let reloader = Arc::new(Reloader {
        live: live.clone(),
        access_log,
    });
    server.add_service(gateway);
    if let Some(admin_addr) = settings.admin {
        let mut admin = Service::new(
            "sira-admin".to_owned(),
            Admin {
                reloader: reloader.clone(),
            },
        );
        admin.add_tcp(&admin_addr.to_string());
        admin.threads = Some(1);
        server.add_service(admin);
    }
    server.add_service(background_service("sira-sighup", SighupService(reloader)));
    let listeners = settings
        .listen
        .iter()
        .chain(settings.tls.iter().map(|t| &t.listen))
        .chain(settings.admin.iter())
        .copied()
        .collect();
    server.add_service(background_service(
        "sira-ready",
        crate::notify::ReadyService {
            listeners,
            upgraded: options.upgrade,
        },
    ));
    server.add_service(background_service(
        "sira-health",
        crate::pool::health::HealthSupervisor,
    ));
    server.add_service(background_service(
        "sira-alerts",
        crate::limits::alerts::AlertService,
    ));
    server.add_service(background_service(
        "sira-limits",
        crate::limits::shared::LimitSyncService,
    ));
    server.add_service(background_service(
        "sira-models",
        crate::models::catalog::CatalogService { live: live.clone() },
    ));
    server.add_service(background_service(
        "sira-keys",
        crate::keystore::KeySyncService,
    ));
    server.add_service(background_service(
        "sira-jwks",
        crate::auth::jwt::JwksService,
    ));
    server.add_service(background_service(
        "sira-dns",
        crate::dns::DnsService::new(&settings.resolver),
    ));

    let listen: Vec<String> = settings.listen.iter().map(ToString::to_string).collect();
    tracing::info!(
        listen = %listen.join(","),
        admin = %settings.admin.map_or("off".to_owned(), |a| a.to_string()),
        config = %live.path().map_or("built-in default".to_owned(), |p| p.display().to_string()),
        "sira starting"
    );
    let snap = live.load_full();
    for note in &snap.notes {
        tracing::warn!("{note}");
    }
    if live.path().is_none() {
        // The built-in default serves the providers whose keys are in the environment.
        if snap.providers.is_empty() {
            tracing::warn!("no config file and no provider key in the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY): sira serves, but every model is unknown until one is set or a config file names providers");
        } else {
            let found: Vec<String> = snap
                .providers
                .keys()
                .map(|name| format!("{name} (as \"{name}/<model>\")"))
                .collect();
            tracing::info!(providers = %found.join(", "), "no config file: serving the providers whose keys are in the environment");
        }
    }
    if snap.server.reasoning_key.is_none() && snap.providers.values().all(|p| p.api_key.is_none()) {
        tracing::warn!("no server.reasoning_key and no provider credential to derive one from: the reasoning carried by Responses clients is sealed with a key of this process only, so it is dropped after a restart or on another host");
    }
    if snap.keys.is_empty()
        && snap.jwt.is_empty()
        && settings.listen.iter().any(|a| !a.ip().is_loopback())
    {
        tracing::warn!("auth.mode is open and sira listens beyond loopback: anyone who can reach it can spend your provider credit");
    }
    server.run_forever()
}
