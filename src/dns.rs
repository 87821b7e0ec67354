//! Resolving provider host names in the background, honouring each answer's TTL, so that
//! no request waits on DNS once a name has been resolved ([`crate::runtime`] holds the
//! answers).
//!
//! Names are looked up with hickory's resolver, which reports the answer's TTL: from
//! `/etc/resolv.conf` and `/etc/hosts` by default, or from the servers in
//! `server.resolver`. A name the system resolver knows but DNS does not (an NSS module) is
//! looked up through the C library instead and refreshed every [`FALLBACK_TTL`]. A failed
//! lookup keeps the previous answer in use and is retried after [`RETRY_AFTER`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::runtime::{registry, HostState};

/// Shortest and longest wait before an answer is refreshed, whatever its TTL says: a TTL of
/// 0 must not become a lookup loop, nor a week-long TTL pin an address that moved.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(300);
/// Refresh interval of answers from the C library, which reports no TTL.
const FALLBACK_TTL: Duration = Duration::from_secs(30);
/// Wait after a failed lookup before the next.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest one lookup may take (the resolver's own retries included).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How names are resolved.
pub struct Resolver {
    dns: Option<TokioResolver>,
    /// The system's resolver is in use (so the C library is a sensible second opinion).
    system: bool,
}

impl Resolver {
    /// The system's configuration, or `servers` when given.
    pub fn new(servers: &[SocketAddr]) -> Resolver {
        if !servers.is_empty() {
            let mut group = NameServerConfigGroup::new();
            for server in servers {
                let single =
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                group.merge(single);
            }
            let config = ResolverConfig::from_parts(None, Vec::new(), group);
            let mut builder =
                TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
            *builder.options_mut() = options(ResolverOpts::default());
            return Resolver {
                dns: Some(builder.build()),
                system: false,
            };
        }
        let dns = match TokioResolver::builder_tokio() {
            Ok(mut builder) => {
                let defaults = builder.options_mut().clone();
                *builder.options_mut() = options(defaults);
                Some(builder.build())
            }
            Err(e) => {
                tracing::warn!("cannot read the system's DNS configuration ({e}); host names are resolved by the C library, refreshed every {}s", FALLBACK_TTL.as_secs());
                None
            }
        };
        Resolver { dns, system: true }
    }

    /// The addresses of `host:port` and how long they hold.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(Vec<SocketAddr>, Duration), String> {
        let mut failure = String::new();
        if let Some(dns) = &self.dns {
            match dns.lookup_ip(host).await {
                Ok(lookup) => {
                    let addrs: Vec<SocketAddr> =
                        lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                    if !addrs.is_empty() {
                        let ttl = lookup
                            .valid_until()
                            .saturating_duration_since(Instant::now());
                        return Ok((addrs, ttl.clamp(MIN_TTL, MAX_TTL)));
                    }
                    failure = "no addresses".into();
                }
                Err(e) => failure = e.to_string(),
            }
            if !self.system {
                return Err(failure);
            }
        }
        match tokio::net::lookup_host((host, port)).await {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    Err("no addresses".into())
                } else {
                    Ok((addrs, FALLBACK_TTL))
                }
            }
            Err(e) if failure.is_empty() => Err(e.to_string()),
            Err(e) => Err(format!("{failure}; {e}")),
        }
    }
}

fn options(mut opts: ResolverOpts) -> ResolverOpts {
    // The service refreshes on the TTL itself; the resolver's own cache would only answer
    // again with the same, expiring record.
    opts.cache_size = 0;
    opts
}

/// The background service that keeps every registered host name resolved.
pub struct DnsService {
    servers: Vec<SocketAddr>,
}

impl DnsService {
    pub fn new(servers: &[SocketAddr]) -> DnsService {
        DnsService {
            servers: servers.to_vec(),
        }
    }

    /// Resolves every name that is due, all at once (a name whose server does not answer
    /// must not hold the others up), each within [`LOOKUP_TIMEOUT`]; when the next one is
    /// due.
    async fn refresh(resolver: &Arc<Resolver>) -> Instant {
        let now = Instant::now();
        let mut next = now + MAX_TTL;
        let mut lookups = tokio::task::JoinSet::new();
        for state in registry().names() {
            let due = state.due().unwrap_or(now);
            if due <= now {
                let resolver = resolver.clone();
                lookups.spawn(async move { Self::refresh_one(&resolver, &state).await });
            } else {
                next = next.min(due);
            }
        }
        while let Some(done) = lookups.join_next().await {
            if let Ok(at) = done {
                next = next.min(at);
            }
        }
        next
    }

    async fn refresh_one(resolver: &Resolver, state: &Arc<HostState>) -> Instant {
        let lookup = resolver.resolve(&state.host, state.port);
        let answer = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", LOOKUP_TIMEOUT.as_secs())));
        match answer {
            Ok((addrs, ttl)) => {
                tracing::debug!(host = %state.host, ?addrs, ttl_s = ttl.as_secs_f64(), "resolved");
                state.set(addrs, ttl);
                Instant::now() + ttl
            }
            Err(reason) => {
                tracing::warn!(host = %state.host, "cannot resolve: {reason}; retrying in {}s", RETRY_AFTER.as_secs());
                state.fail(reason);
                Instant::now() + RETRY_AFTER
            }
        }
    }
}

#[async_trait]
impl BackgroundService for DnsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Built here, on the service's runtime: the resolver's connections belong to it.
        let resolver = Arc::new(Resolver::new(&self.servers));
        loop {
            let added = registry().added.notified();
            let next = Self::refresh(&resolver).await;
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {}
                _ = added => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, UdpSocket};

    use super::*;

    /// Answers every A question with 10.9.8.7 and a 42 s TTL (RFC 1035 §4.1).
    fn dns_server() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let query = &buf[..n];
                let mut at = 12;
                while query[at] != 0 {
                    at += usize::from(query[at]) + 1;
                }
                let question_end = at + 5;
                let mut reply = query[..2].to_vec();
                reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
                reply.extend_from_slice(&query[12..question_end]);
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 42, 0, 4]);
                reply.extend_from_slice(&Ipv4Addr::new(10, 9, 8, 7).octets());
                let _ = socket.send_to(&reply, from);
            }
        });
        addr
    }

    #[tokio::test]
    async fn answers_carry_their_ttl() {
        let resolver = Resolver::new(&[dns_server()]);
        let (addrs, ttl) = resolver.resolve("api.example.test", 8000).await.unwrap();
        assert_eq!(addrs, ["10.9.8.7:8000".parse().unwrap()]);
        assert!(
            ttl > Duration::from_secs(40) && ttl <= Duration::from_secs(42),
            "{ttl:?}"
        );
    }
}
