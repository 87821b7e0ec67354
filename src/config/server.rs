//! `server:` → [`ServerSettings`]: listeners, limits and timeouts on clients, the bounds on
//! what a provider may make the gateway hold, the DNS servers.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_yaml::Value;

use super::build::Builder;
use super::file::ServerConfig;
use super::{section, Secret, ServerSettings};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
const DEFAULT_MAX_REQUEST_BODY: u64 = 8 << 20;
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// nginx's `client_header_timeout` is 60 s; a header is a few KB, so 10 s is generous.
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `send_timeout`.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);
/// nginx accepts 4 × 8 KiB of header lines; agents' headers are a few KB.
const DEFAULT_MAX_HEADER_SIZE: u64 = 64 << 10;
const DEFAULT_MAX_HEADERS: usize = 100;
/// Responses API streams end with `response.completed`, which repeats the whole answer,
/// and Gemini sends images inline: one event can be megabytes.
const DEFAULT_MAX_SSE_EVENT: u64 = 16 << 20;
const DEFAULT_MAX_RESPONSE_BODY: u64 = 64 << 20;
/// A coding agent's tool call can carry a whole file (Codex `apply_patch`).
const DEFAULT_MAX_TOOL_ARGUMENTS: u64 = 16 << 20;
/// Pingora's HTTP/1 parser reads at most 256 header fields.
const MAX_HEADERS_PARSED: usize = 256;
/// Pingora's HTTP/1 parser refuses headers over 1 MiB.
const MAX_HEADER_SIZE_PARSED: u64 = 1 << 20;

pub(super) fn server_settings(b: &mut Builder, value: Option<Value>) -> Option<ServerSettings> {
    let config: ServerConfig = match value {
        Some(v) => section(v, "server", b.problems)?,
        None => ServerConfig::default(),
    };
    let ServerConfig {
        listen,
        tls,
        admin,
        admin_token,
        reasoning_key,
        threads,
        max_request_body,
        grace_period,
        timeouts,
        max_header_size,
        max_headers,
        max_sse_event,
        max_response_body,
        max_tool_arguments,
        resolver,
    } = config;
    let tls = super::tls::listeners(b, tls);
    let mut addrs = Vec::new();
    let listen = listen.unwrap_or_else(|| vec![DEFAULT_LISTEN.to_owned()]);
    if listen.is_empty() && tls.is_empty() {
        b.problem(
            "server.listen",
            "at least one listen address (or a server.tls listener) is needed",
        );
    }
    for (i, text) in listen.iter().enumerate() {
        match socket_addr(text) {
            Ok(addr) if tls.iter().any(|t| t.listen == addr) => b.problem(
                format!("server.listen[{i}]"),
                "a server.tls listener has this address",
            ),
            Ok(addr) => addrs.push(addr),
            Err(e) => b.problem(format!("server.listen[{i}]"), e),
        }
    }
    let admin = match admin.as_deref().unwrap_or(DEFAULT_ADMIN) {
        "off" | "" => None,
        text => match socket_addr(text) {
            Ok(addr) => Some(addr),
            Err(e) => {
                b.problem("server.admin", e);
                None
            }
        },
    };
    if let Some(admin) = admin {
        if addrs.contains(&admin) {
            b.problem(
                "server.admin",
                "must differ from every server.listen address",
            );
        }
    }
    let threads = match threads {
        Some(0) => {
            b.problem("server.threads", "must be at least 1");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let max_request_body = match max_request_body {
        Some(size) if size.0 == 0 => {
            b.problem("server.max_request_body", "must be greater than zero");
            0
        }
        Some(size) => size.0,
        None => DEFAULT_MAX_REQUEST_BODY,
    };
    let admin_token = match admin_token {
        // `${VAR:-}` with VAR unset: no token (a listener beyond loopback then refuses it).
        Some(token) if token.is_empty() => {
            b.notes.push("server.admin_token: empty (its variable is unset?), so local programs may use the admin API without a token".to_owned());
            None
        }
        Some(token) => Some(Secret::new(token)),
        None => None,
    };
    let reasoning_key = match reasoning_key {
        // `${VAR:-}` with VAR unset: derived from the provider credentials instead.
        Some(key) if key.is_empty() => None,
        Some(key) if key.len() < 16 => {
            b.problem(
                "server.reasoning_key",
                "is shorter than 16 bytes (the referenced variable may be unset): use a long random secret",
            );
            None
        }
        key => key.map(Secret::new),
    };
    let super::file::ClientTimeoutsConfig {
        header,
        body,
        write,
        keepalive,
    } = timeouts;
    let mut duration = |key: &str, value: Option<super::units::HumanDuration>, default| {
        let value = value.map_or(default, |d| d.0);
        if value.is_zero() {
            b.problem(
                format!("server.timeouts.{key}"),
                "must be greater than zero",
            );
        }
        value
    };
    let header_timeout = duration("header", header, DEFAULT_HEADER_TIMEOUT);
    let body_timeout = duration("body", body, DEFAULT_BODY_TIMEOUT);
    let write_timeout = duration("write", write, DEFAULT_WRITE_TIMEOUT);
    let keepalive = duration("keepalive", keepalive, DEFAULT_KEEPALIVE);
    if keepalive.subsec_nanos() != 0 {
        // Pingora takes the keep-alive timeout in whole seconds.
        b.problem(
            "server.timeouts.keepalive",
            "must be a whole number of seconds",
        );
    }
    let mut size = |key: &str, value: Option<super::units::ByteSize>, default: u64, max: u64| {
        let value = value.map_or(default, |s| s.0);
        if value == 0 {
            b.problem(format!("server.{key}"), "must be greater than zero");
        } else if value > max {
            b.problem(
                format!("server.{key}"),
                format!("must be at most {max} bytes"),
            );
        }
        usize::try_from(value.min(max)).unwrap_or(usize::MAX)
    };
    let max_header_size = size(
        "max_header_size",
        max_header_size,
        DEFAULT_MAX_HEADER_SIZE,
        MAX_HEADER_SIZE_PARSED,
    );
    let max_sse_event = size(
        "max_sse_event",
        max_sse_event,
        DEFAULT_MAX_SSE_EVENT,
        1 << 30,
    );
    let max_response_body = size(
        "max_response_body",
        max_response_body,
        DEFAULT_MAX_RESPONSE_BODY,
        1 << 32,
    );
    let max_tool_arguments = size(
        "max_tool_arguments",
        max_tool_arguments,
        DEFAULT_MAX_TOOL_ARGUMENTS,
        1 << 30,
    );
    let max_headers = match max_headers {
        Some(0) => {
            b.problem("server.max_headers", "must be at least 1");
            1
        }
        Some(n) if n > MAX_HEADERS_PARSED => {
            b.problem(
                "server.max_headers",
                format!("must be at most {MAX_HEADERS_PARSED}"),
            );
            MAX_HEADERS_PARSED
        }
        Some(n) => n,
        None => DEFAULT_MAX_HEADERS,
    };
    let mut resolver_addrs = Vec::new();
    for (i, text) in resolver.unwrap_or_default().iter().enumerate() {
        let parsed = text.parse::<SocketAddr>().or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match parsed {
            Ok(addr) => resolver_addrs.push(addr),
            Err(_) => b.problem(
                format!("server.resolver[{i}]"),
                format!("invalid address {text:?}: expected an IP address, with an optional :port"),
            ),
        }
    }
    Some(ServerSettings {
        listen: addrs,
        admin,
        admin_token,
        reasoning_key,
        threads,
        max_request_body,
        grace_period: grace_period.map_or(DEFAULT_GRACE_PERIOD, |d| d.0),
        header_timeout,
        body_timeout,
        write_timeout,
        keepalive,
        max_header_size,
        max_headers,
        max_sse_event,
        max_response_body,
        max_tool_arguments,
        resolver: resolver_addrs,
        tls,
    })
}

pub(super) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    // Allow "localhost:8080"; resolution of a literal host name needs no network.
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("invalid address {text:?}: expected host:port, e.g. 0.0.0.0:8080"))
}
