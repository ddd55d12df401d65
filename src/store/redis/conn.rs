//! Where the shared store lives ([`RedisTarget`]: one Redis, or the seeds of a Redis Cluster) and
//! the one connection type the store and the cluster link talk to it through
//! ([`RedisConnection`]): a multiplexed connection to one Redis, or a cluster connection that routes
//! each command to the node owning its keys' slot. Both reconnect by themselves.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The Redis deployment `cluster.redis_url` (and `cluster.redis_cluster`) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server (with replicas behind it, if any).
    Single(String),
    /// A Redis Cluster, found through these seed nodes (any reachable one will do).
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// `urls`: one URL, or several separated by commas; `cluster`: whether they are seeds of a Redis
    /// Cluster. Several URLs without `cluster` is an error (a single Redis has one address).
    pub fn parse(urls: &str, cluster: bool) -> Result<RedisTarget, String> {
        let urls: Vec<String> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
        match (urls.len(), cluster) {
            (0, _) => Err("cluster.redis_url is empty".to_owned()),
            (1, false) => Ok(RedisTarget::Single(urls.into_iter().next().unwrap_or_default())),
            (_, false) => Err(format!(
                "cluster.redis_url names {} URLs: several URLs are the seeds of a Redis Cluster; set cluster.redis_cluster = true",
                urls.len()
            )),
            (_, true) => Ok(RedisTarget::Cluster(urls)),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }

    /// The URLs, one for a single Redis.
    pub fn urls(&self) -> &[String] {
        match self {
            RedisTarget::Single(url) => std::slice::from_ref(url),
            RedisTarget::Cluster(urls) => urls,
        }
    }
}

/// A connection to the target, shared by clones; commands are sent as they come (multiplexed).
#[derive(Clone)]
pub struct RedisConnection(Inner);

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

/// A cluster connection made on first use (so a node starts while the cluster is down); a failed
/// attempt is tried again by the next command. Once made, it follows the cluster's topology
/// (`MOVED`, failovers) by itself.
struct LazyCluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn conn(&self) -> RedisResult<ClusterConnection> {
        self.conn.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

impl RedisConnection {
    /// Configures a connection without connecting: commands fail (an I/O error, a timeout) until
    /// the target answers. Each connection attempt and each answer waits at most `timeout`. Must be
    /// called inside a tokio runtime. A URL may hold a password: it is not repeated in errors.
    pub fn lazy(target: &RedisTarget, timeout: Duration) -> RedisResult<RedisConnection> {
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // One quick retry per reconnection; while Redis stays down, each call fails fast
                    // and the next one tries again.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(timeout);
                Ok(RedisConnection(Inner::Single(ConnectionManager::new_lazy_with_config(client, config)?)))
            }
            RedisTarget::Cluster(urls) => {
                let client = ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // A few retries follow a slot's move or a failover; the caller's own timeout
                    // bounds the whole call.
                    .retries(3)
                    .build()?;
                Ok(RedisConnection(Inner::Cluster(Arc::new(LazyCluster { client, conn: OnceCell::new() }))))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Inner::Cluster(_))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Inner::Single(conn) => conn.req_packed_command(cmd),
            Inner::Cluster(lazy) => {
                let lazy = lazy.clone();
                Box::pin(async move {
                    let mut conn = lazy.conn().await?;
                    conn.req_packed_command(cmd).await
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(lazy) => {
                let lazy = lazy.clone();
                Box::pin(async move {
                    let mut conn = lazy.conn().await?;
                    conn.req_packed_commands(pipeline, offset, count).await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Single(conn) => conn.get_db(),
            // A cluster has only database 0.
            Inner::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_a_single_redis_and_several_need_cluster_mode() {
        assert_eq!(RedisTarget::parse("redis://a:6379/0", false), Ok(RedisTarget::Single("redis://a:6379/0".into())));
        assert_eq!(
            RedisTarget::parse(" redis://a:7000 , redis://b:7001,", true),
            Ok(RedisTarget::Cluster(vec!["redis://a:7000".into(), "redis://b:7001".into()]))
        );
        assert_eq!(RedisTarget::parse("redis://a:7000", true), Ok(RedisTarget::Cluster(vec!["redis://a:7000".into()])));
        let several = RedisTarget::parse("redis://a:7000,redis://b:7001", false).unwrap_err();
        assert!(several.contains("cluster.redis_cluster = true"), "{several}");
        assert!(RedisTarget::parse(" , ", true).is_err());
    }
}
