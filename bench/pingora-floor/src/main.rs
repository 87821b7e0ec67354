//! `pingora-floor LISTEN UPSTREAM`: Pingora's own `ProxyHttp` with nothing added: no auth,
//! no accounting, no access log, no header edits. The benchmark runs it beside nginx and
//! sira so that the table separates what sira's own work costs from what the Pingora
//! request cycle (HTTP/1 parse, connection pool, tokio wake-ups) costs any gateway built on
//! it. Same allocator as sira, one worker thread like sira in bench/sira.yaml.

use std::net::SocketAddr;
use std::process::ExitCode;

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: pingora-floor LISTEN_ADDR UPSTREAM_ADDR (e.g. 127.0.0.1:8081 127.0.0.1:9000)"
        );
        return ExitCode::from(2);
    };
    let upstream: SocketAddr = match upstream.trim_start_matches("http://").parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("pingora-floor: bad upstream address {upstream}: {e}");
            return ExitCode::from(2);
        }
    };
    let conf = ServerConf {
        threads: 1,
        upgrade_sock: format!("/tmp/pingora-floor-{}.sock", std::process::id()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Floor { upstream });
    proxy.add_tcp(listen);
    proxy.threads = Some(1);
    server.add_service(proxy);
    server.run_forever()
}
