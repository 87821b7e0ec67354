//! Where the shared store lives: one Redis (`redis://`, `unix://`), a Redis Cluster
//! (`redis+cluster://host:port,host:port`) or the master a set of Sentinels names
//! (`redis+sentinel://host:port,host:port/service[/db]`). A password in a cluster or
//! sentinel URL is the data nodes' (Sentinels are reached without one).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A parsed store URL, ready to connect.
pub enum Backend {
    Single(redis::Client),
    Cluster(ClusterClient),
    /// Behind a lock: the client keeps the master it last found.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.write_str(match self {
            Backend::Single(_) => "Backend::Single",
            Backend::Cluster(_) => "Backend::Cluster",
            Backend::Sentinel(_) => "Backend::Sentinel",
        })
    }
}

/// Why a store URL was refused: a fixed text, never the URL (it may hold a password).
pub const URL_FORMS: &str = "is not a Redis URL: redis://[user:password@]host:port/db, \
    unix://path, redis+cluster://[user:password@]host:port,host:port, or \
    redis+sentinel://[user:password@]host:port,host:port/service[/db]";

impl Backend {
    pub fn parse(url: &str) -> Option<Backend> {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (auth, hosts, path) = split(rest)?;
            if !path.is_empty() && path != "0" {
                // A cluster has only database 0.
                return None;
            }
            let nodes: Vec<String> = hosts
                .iter()
                .map(|host| format!("redis://{auth}{host}"))
                .collect();
            return ClusterClient::new(nodes).ok().map(Backend::Cluster);
        }
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (auth, hosts, path) = split(rest)?;
            let (service, db) = match path.split_once('/') {
                Some((service, db)) => (service, db.parse::<i64>().ok()?),
                None => (path, 0),
            };
            if service.is_empty() {
                return None;
            }
            let sentinels: Vec<String> = hosts.iter().map(|h| format!("redis://{h}")).collect();
            // The data nodes' credentials and database, read the way a plain URL is.
            let probe = redis::Client::open(format!("redis://{auth}127.0.0.1/{db}")).ok()?;
            let node = SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(probe.get_connection_info().redis_settings().clone());
            return SentinelClient::build(
                sentinels,
                service.to_owned(),
                Some(node),
                SentinelServerType::Master,
            )
            .ok()
            .map(|client| Backend::Sentinel(tokio::sync::Mutex::new(client)));
        }
        redis::Client::open(url).ok().map(Backend::Single)
    }

    pub async fn connect(&self, timeout: Duration) -> Result<Conn, redis::RedisError> {
        match self {
            Backend::Single(client) => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(0);
                client
                    .get_connection_manager_with_config(config)
                    .await
                    .map(Conn::Single)
            }
            Backend::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
            Backend::Sentinel(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                client
                    .lock()
                    .await
                    .get_async_connection_with_config(&config)
                    .await
                    .map(Conn::Sentinel)
            }
        }
    }
}

/// `user:password@` (or nothing), the `host:port` list, and what follows the first `/`.
fn split(rest: &str) -> Option<(&str, Vec<&str>, &str)> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (auth, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
    (!hosts.is_empty()).then_some((auth, hosts, path.trim_end_matches('/')))
}

/// A connection to whichever backend.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_url_is_read_and_nothing_else() {
        assert!(matches!(
            Backend::parse("redis://:pw@127.0.0.1:6379/2"),
            Some(Backend::Single(_))
        ));
        assert!(matches!(
            Backend::parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001"),
            Some(Backend::Cluster(_))
        ));
        assert!(matches!(
            Backend::parse("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/1"),
            Some(Backend::Sentinel(_))
        ));
        for bad in [
            "http://x",
            "redis+cluster://",
            "redis+cluster://h:1/3",
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/svc/x",
        ] {
            assert!(Backend::parse(bad).is_none(), "{bad}");
        }
    }
}
